//! `rendezvous demo`: a server and four peers in two namespaces on 127.0.0.1, all in this
//! process, registering, discovering each other through the discovery aggregator, and one
//! leaving and being seen to expire. Everyone runs identify, so the peers subscribe to the
//! server's pushes (docs/push.md): a peer that registers after another subscribed is discovered
//! within milliseconds (the demo prints how long after it registered), and the leaver's
//! departure is pushed too. Exits 0 when everything it shows happened, 1 otherwise.

use std::{
    collections::{BTreeSet, HashMap},
    process::ExitCode,
    time::{Duration, Instant},
};

use futures::StreamExt;
use libp2p::{
    identify, identity::Keypair, swarm::NetworkBehaviour, swarm::SwarmEvent, Multiaddr, PeerId,
};
use rendezvous_discovery::{client, discovery, server, Namespace, Ttl};
use tokio::sync::{mpsc, oneshot};

use crate::{
    common::{CliError, CliResult},
    node,
    output::outln,
};

/// Flags of `rendezvous demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Give up (exit 1) when not everything was seen after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_DEADLINE.as_secs())]
    deadline: u64,
}

/// The peers and their namespaces; peers see only those of their own namespace.
const PEERS: [(&str, &str); 4] = [
    ("alice", "chat"),
    ("bob", "chat"),
    ("carol", "games"),
    ("dave", "games"),
];

/// The peer that leaves once everyone has found everyone, and the peer that must see it go.
const LEAVER: &str = "bob";
const WATCHER: &str = "alice";

/// The leaver registers with a short TTL, so the others see it expire seconds after it left even
/// without push (the server's minimum TTL is lowered to allow it; with push, the server tells
/// its subscribers as soon as it unregisters). The others use a TTL long enough that their
/// refreshes (at 50-80% of it) always reach the pollers in time.
const LEAVER_TTL: Ttl = 3;
const TTL: Ttl = 60;
/// How often each peer polls the server (the client's minimum).
const INTERVAL: Duration = Duration::from_secs(1);
/// The demo fails if it has not seen everything by then (unless `--deadline` says otherwise).
const DEFAULT_DEADLINE: Duration = Duration::from_secs(9);

/// What a peer task tells the main task.
#[derive(Debug)]
enum Report {
    Registered {
        ns: Namespace,
        ttl: Ttl,
        at: Instant,
    },
    Discovered {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        source: &'static str,
        at: Instant,
    },
    Expired {
        peer: PeerId,
    },
    Left,
    Failed(String),
}

pub async fn run(args: Args) -> CliResult {
    let started = Instant::now();
    let (server_id, server_addr) = start_server().await?;
    outln!("server  {} listening on {server_addr}", short(&server_id));
    let (tx, mut rx) = mpsc::channel::<(&'static str, Report)>(64);
    let mut tally = Tally::new();
    for (name, ns) in PEERS {
        let key = Keypair::generate_ed25519();
        tally.names.insert(key.public().to_peer_id(), name);
        let (leave_tx, leave_rx) = oneshot::channel();
        if name == LEAVER {
            tally.leave = Some(leave_tx);
        }
        let swarm = node::swarm(key, node::IDLE_TIMEOUT, None, |key| {
            let config = client::Config::default()
                .with_server(server_id, vec![server_addr.clone()])
                .with_namespace(Namespace::from_static(ns))
                .with_ttl(if name == LEAVER { LEAVER_TTL } else { TTL })
                .with_interval(INTERVAL);
            Peer {
                discovery: discovery::Behaviour::new(
                    client::Behaviour::new(key.clone(), config),
                    discovery::Config::default(),
                ),
                identify: identify_for(key),
            }
        })?;
        tokio::spawn(run_peer(name, swarm, tx.clone(), leave_rx));
    }
    drop(tx);
    let deadline = tokio::time::sleep(Duration::from_secs(args.deadline));
    tokio::pin!(deadline);
    while !tally.done() {
        let (name, report) = tokio::select! {
            _ = &mut deadline => break,
            r = rx.recv() => match r { Some(r) => r, None => break },
        };
        tally.on_report(name, report);
    }
    tally.verdict(started.elapsed().as_secs_f32())
}

/// The namespace of peer `name`.
fn namespace_of(name: &str) -> Option<&'static str> {
    PEERS.iter().find(|(n, _)| *n == name).map(|(_, ns)| *ns)
}

/// What the demo saw, and what it expects to see: every peer registered, each pair in a
/// namespace discovered each other, and the watcher saw the leaver expire.
struct Tally {
    names: HashMap<PeerId, &'static str>,
    /// When each peer's registration was acknowledged.
    registered_at: HashMap<&'static str, Instant>,
    /// Tells the leaver to leave; taken when it is told.
    leave: Option<oneshot::Sender<()>>,
    registered: BTreeSet<&'static str>,
    discovered: BTreeSet<(&'static str, &'static str)>,
    /// The pairs (discoverer, discovered) of each namespace.
    expected: BTreeSet<(&'static str, &'static str)>,
    problems: Vec<String>,
    left: bool,
    expired_seen: bool,
}

impl Tally {
    fn new() -> Self {
        let expected = PEERS
            .iter()
            .flat_map(|(a, ns)| {
                PEERS
                    .iter()
                    .filter(move |(b, ns_b)| a != b && ns == ns_b)
                    .map(move |(b, _)| (*a, *b))
            })
            .collect();
        Self {
            names: HashMap::new(),
            registered_at: HashMap::new(),
            leave: None,
            registered: BTreeSet::new(),
            discovered: BTreeSet::new(),
            expected,
            problems: Vec::new(),
            left: false,
            expired_seen: false,
        }
    }

    fn who(&self, peer: &PeerId) -> &'static str {
        self.names.get(peer).copied().unwrap_or("a stranger")
    }

    fn on_report(&mut self, name: &'static str, report: Report) {
        match report {
            Report::Registered { ns, ttl, at } => {
                if self.registered.insert(name) {
                    self.registered_at.insert(name, at);
                    outln!("{name:<7} registered in \"{ns}\" (ttl {ttl} s)");
                }
            }
            Report::Discovered {
                peer,
                addrs,
                source,
                at,
            } => self.discovered(name, peer, &addrs, source, at),
            Report::Expired { peer } => {
                let other = self.who(&peer);
                outln!("{name:<7} saw {other} expire");
                if name == WATCHER && other == LEAVER && self.left {
                    self.expired_seen = true;
                } else if other != LEAVER || !self.left {
                    let problem = format!("{name} saw {other} expire, who did not leave");
                    self.problems.push(problem);
                }
            }
            Report::Left => self.left = true,
            Report::Failed(e) => self.problems.push(format!("{name}: {e}")),
        }
    }

    fn discovered(
        &mut self,
        name: &'static str,
        peer: PeerId,
        addrs: &[Multiaddr],
        source: &str,
        at: Instant,
    ) {
        let other = self.who(&peer);
        let addr = addrs.first().map(ToString::to_string).unwrap_or_default();
        let ns = namespace_of(other).unwrap_or("?");
        // A push may arrive before the registrant has read its own acknowledgement.
        let delay = match self.registered_at.get(other) {
            Some(registered) => format!(
                ", {} ms after {other} registered",
                at.saturating_duration_since(*registered).as_millis()
            ),
            None => format!(", as {other} registered"),
        };
        outln!("{name:<7} discovered {other} in \"{ns}\" at {addr} (via {source}{delay})");
        if namespace_of(other) != namespace_of(name) {
            let problem = format!("{name} discovered {other}, of another namespace");
            self.problems.push(problem);
        }
        self.discovered.insert((name, other));
        // The leaver goes as soon as it and its namespace found each other, before its first
        // refresh (at half its TTL), so its departure is what ends it.
        let leaver_done = self
            .expected
            .iter()
            .filter(|(a, b)| *a == LEAVER || *b == LEAVER)
            .all(|pair| self.discovered.contains(pair));
        if let Some(leave) = leaver_done.then(|| self.leave.take()).flatten() {
            outln!(
                "{LEAVER:<7} leaves (unregisters and disconnects: the server pushes its \
                 departure; without push, its {LEAVER_TTL} s registration runs out at the others')"
            );
            // Left from here on: the server may push the departure to the others before the
            // leaver reports that it left.
            self.left = true;
            let _ = leave.send(());
        }
    }

    /// Whether everything the demo waits for was seen: every expected discovery (pushes are
    /// fast enough that the leaver may be gone before the others found each other) and the
    /// leaver's expiry.
    fn done(&self) -> bool {
        self.expired_seen
            && self
                .expected
                .iter()
                .all(|pair| self.discovered.contains(pair))
    }

    /// Exit 0 when everything expected was seen and nothing else, `elapsed` seconds in.
    fn verdict(mut self, elapsed: f32) -> CliResult {
        for (name, _) in PEERS {
            if !self.registered.contains(name) {
                self.problems.push(format!("{name} did not register"));
            }
        }
        for (a, b) in &self.expected {
            if !self.discovered.contains(&(*a, *b)) {
                self.problems.push(format!("{a} did not discover {b}"));
            }
        }
        if !self.expired_seen {
            self.problems
                .push(format!("{WATCHER} did not see {LEAVER} expire"));
        }
        if !self.problems.is_empty() {
            return Err(CliError::Failed(format!(
                "demo failed after {elapsed:.1} s: {}",
                self.problems.join("; ")
            )));
        }
        outln!(
            "ok: {} peers registered, each discovered exactly the peers of its namespace, \
             and {WATCHER} saw {LEAVER} leave ({elapsed:.1} s)",
            PEERS.len()
        );
        Ok(ExitCode::SUCCESS)
    }
}

/// Starts the server on 127.0.0.1 (port chosen by the system) in the background.
async fn start_server() -> Result<(PeerId, Multiaddr), CliError> {
    let key = Keypair::generate_ed25519();
    let id = key.public().to_peer_id();
    let mut swarm = node::swarm(key, node::IDLE_TIMEOUT, None, |key| DemoServer {
        rendezvous: server::Behaviour::new(server::Config::default().with_min_ttl(1)),
        identify: identify_for(key),
    })?;
    swarm
        .listen_on(loopback())
        .map_err(|e| CliError::Failed(format!("the server cannot listen: {e}")))?;
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    tokio::spawn(swarm.collect::<Vec<_>>());
    Ok((id, addr))
}

/// The server, with identify so the peers learn that it serves push.
#[derive(NetworkBehaviour)]
struct DemoServer {
    rendezvous: server::Behaviour,
    identify: identify::Behaviour,
}

/// A peer: the discovery aggregator around our client, with identify (it tells the peer that
/// the server serves push, and the server what the peer reads).
#[derive(NetworkBehaviour)]
struct Peer {
    discovery: discovery::Behaviour<client::Behaviour>,
    identify: identify::Behaviour,
}

fn identify_for(key: &Keypair) -> identify::Behaviour {
    identify::Behaviour::new(identify::Config::new("/ipfs/id/1.0.0".into(), key.public()))
}

type PeerSwarm = libp2p::Swarm<Peer>;

/// Drives one peer, reporting what it does, until told to leave (or the demo ends).
async fn run_peer(
    name: &'static str,
    mut swarm: PeerSwarm,
    tx: mpsc::Sender<(&'static str, Report)>,
    mut leave: oneshot::Receiver<()>,
) {
    if let Err(e) = swarm.listen_on(loopback()) {
        let _ = tx
            .send((name, Report::Failed(format!("cannot listen: {e}"))))
            .await;
        return;
    }
    let mut leaving = false;
    loop {
        let event = tokio::select! {
            e = swarm.select_next_some() => e,
            told = &mut leave, if !leaving => {
                // Only the leaver is told; the others' senders are dropped (an error here).
                leaving = true;
                if told.is_ok() {
                    swarm.behaviour_mut().discovery.inner_mut().stop();
                }
                continue;
            }
        };
        node::on_swarm_event(&mut swarm, &event);
        let SwarmEvent::Behaviour(PeerEvent::Discovery(event)) = event else {
            continue;
        };
        let report = match event {
            discovery::Event::Discovered {
                peer,
                addrs,
                source,
            } => Report::Discovered {
                peer,
                addrs,
                source,
                at: Instant::now(),
            },
            discovery::Event::Expired { peer, .. } => Report::Expired { peer },
            discovery::Event::Source(event) => match event {
                client::Event::Registered { namespace, ttl, .. } => Report::Registered {
                    ns: namespace,
                    ttl,
                    at: Instant::now(),
                },
                client::Event::RegisterFailed { error, .. } => {
                    Report::Failed(format!("register failed: {error}"))
                }
                client::Event::DiscoverFailed { error, .. } => {
                    Report::Failed(format!("discover failed: {error}"))
                }
                client::Event::Stopped => {
                    let _ = tx.send((name, Report::Left)).await;
                    // Dropping the swarm closes its connections.
                    return;
                }
                _ => continue,
            },
        };
        if tx.send((name, report)).await.is_err() {
            return;
        }
    }
}

/// A loopback address on a port the system picks.
fn loopback() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().expect("a valid multiaddr")
}

fn short(peer: &PeerId) -> String {
    let s = peer.to_string();
    format!("…{}", &s[s.len().saturating_sub(6)..])
}
