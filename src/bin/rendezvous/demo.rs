//! `rendezvous demo`: a server and four peers in two namespaces on 127.0.0.1, all in this
//! process, registering, discovering each other through the discovery aggregator, and one
//! leaving and being seen to expire. Exits 0 when everything it shows happened, 1 otherwise.

use std::{
    collections::{BTreeSet, HashMap},
    process::ExitCode,
    time::{Duration, Instant},
};

use futures::StreamExt;
use libp2p::{identity::Keypair, swarm::SwarmEvent, Multiaddr, PeerId};
use rendezvous_discovery::{client, discovery, server, Namespace, Ttl};
use tokio::sync::{mpsc, oneshot};

use crate::{
    common::{build_swarm, CliError, CliResult},
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

/// The leaver registers with a short TTL, so the others see it expire seconds after it left
/// (the server's minimum TTL is lowered to allow it; the server drops its registration at once
/// when it disconnects, but other clients learn of a departure only when the TTL they were
/// given runs out). The others use a TTL long enough that their refreshes (at 50-80% of it)
/// always reach the pollers in time.
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
    },
    Discovered {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        source: &'static str,
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
    let mut names: HashMap<PeerId, &'static str> = HashMap::new();
    let mut leave = None;
    for (name, ns) in PEERS {
        let key = Keypair::generate_ed25519();
        names.insert(key.public().to_peer_id(), name);
        let (leave_tx, leave_rx) = oneshot::channel();
        if name == LEAVER {
            leave = Some(leave_tx);
        }
        let swarm = build_swarm(key, |key| {
            let config = client::Config::default()
                .with_server(server_id, vec![server_addr.clone()])
                .with_namespace(Namespace::from_static(ns))
                .with_ttl(if name == LEAVER { LEAVER_TTL } else { TTL })
                .with_interval(INTERVAL);
            discovery::Behaviour::new(
                client::Behaviour::new(key.clone(), config),
                discovery::Config::default(),
            )
        })?;
        tokio::spawn(run_peer(name, swarm, tx.clone(), leave_rx));
    }
    drop(tx);
    let namespace_of = |name: &str| PEERS.iter().find(|(n, _)| *n == name).map(|(_, ns)| *ns);

    let mut registered = BTreeSet::new();
    let mut discovered = BTreeSet::new();
    let expected: BTreeSet<(&str, &str)> = PEERS
        .iter()
        .flat_map(|(a, ns)| {
            PEERS
                .iter()
                .filter(move |(b, ns_b)| a != b && ns == ns_b)
                .map(move |(b, _)| (*a, *b))
        })
        .collect();
    let mut problems = Vec::new();
    let mut left = false;
    let mut expired_seen = false;

    let deadline = tokio::time::sleep(Duration::from_secs(args.deadline));
    tokio::pin!(deadline);
    while !expired_seen {
        let (name, report) = tokio::select! {
            _ = &mut deadline => break,
            r = rx.recv() => match r { Some(r) => r, None => break },
        };
        let who = |p: &PeerId| names.get(p).copied().unwrap_or("a stranger");
        match report {
            Report::Registered { ns, ttl } => {
                if registered.insert(name) {
                    outln!("{name:<7} registered in \"{ns}\" (ttl {ttl} s)");
                }
            }
            Report::Discovered {
                peer,
                addrs,
                source,
            } => {
                let other = who(&peer);
                let addr = addrs.first().map(ToString::to_string).unwrap_or_default();
                outln!(
                    "{name:<7} discovered {other} in \"{}\" at {addr} (via {source})",
                    namespace_of(other).unwrap_or("?")
                );
                if namespace_of(other) != namespace_of(name) {
                    problems.push(format!("{name} discovered {other}, of another namespace"));
                }
                discovered.insert((name, other));
                // The leaver goes as soon as it and its namespace found each other, before
                // its first refresh (at half its TTL), so its departure is what ends it.
                let leaver_done = expected
                    .iter()
                    .filter(|(a, b)| *a == LEAVER || *b == LEAVER)
                    .all(|pair| discovered.contains(pair));
                if leaver_done {
                    if let Some(leave) = leave.take() {
                        outln!(
                            "{LEAVER:<7} leaves (unregisters and disconnects; its {LEAVER_TTL} s \
                             registration runs out at the others')"
                        );
                        let _ = leave.send(());
                    }
                }
            }
            Report::Expired { peer } => {
                let other = who(&peer);
                outln!("{name:<7} saw {other} expire");
                if name == WATCHER && other == LEAVER && left {
                    expired_seen = true;
                } else if other != LEAVER || !left {
                    problems.push(format!("{name} saw {other} expire, who did not leave"));
                }
            }
            Report::Left => left = true,
            Report::Failed(e) => problems.push(format!("{name}: {e}")),
        }
    }

    let elapsed = started.elapsed().as_secs_f32();
    for (name, _) in PEERS {
        if !registered.contains(name) {
            problems.push(format!("{name} did not register"));
        }
    }
    for (a, b) in &expected {
        if !discovered.contains(&(*a, *b)) {
            problems.push(format!("{a} did not discover {b}"));
        }
    }
    if !expired_seen {
        problems.push(format!("{WATCHER} did not see {LEAVER} expire"));
    }
    if problems.is_empty() {
        outln!(
            "ok: {} peers registered, each discovered exactly the peers of its namespace, \
             and {WATCHER} saw {LEAVER} leave ({elapsed:.1} s)",
            PEERS.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CliError::Failed(format!(
            "demo failed after {elapsed:.1} s: {}",
            problems.join("; ")
        )))
    }
}

/// Starts the server on 127.0.0.1 (port chosen by the system) in the background.
async fn start_server() -> Result<(PeerId, Multiaddr), CliError> {
    let key = Keypair::generate_ed25519();
    let id = key.public().to_peer_id();
    let mut swarm = build_swarm(key, |_| {
        server::Behaviour::new(server::Config::default().with_min_ttl(1))
    })?;
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("a valid multiaddr"))
        .map_err(|e| CliError::Failed(format!("the server cannot listen: {e}")))?;
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    tokio::spawn(swarm.collect::<Vec<_>>());
    Ok((id, addr))
}

type PeerSwarm = libp2p::Swarm<discovery::Behaviour<client::Behaviour>>;

/// Drives one peer, reporting what it does, until told to leave (or the demo ends).
async fn run_peer(
    name: &'static str,
    mut swarm: PeerSwarm,
    tx: mpsc::Sender<(&'static str, Report)>,
    mut leave: oneshot::Receiver<()>,
) {
    if let Err(e) = swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("a valid multiaddr")) {
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
                    swarm.behaviour_mut().inner_mut().stop();
                }
                continue;
            }
        };
        let report = match event {
            // On loopback our listen address is the one the others can reach.
            SwarmEvent::NewListenAddr { address, .. } => {
                swarm.add_external_address(address);
                continue;
            }
            SwarmEvent::Behaviour(discovery::Event::Discovered {
                peer,
                addrs,
                source,
            }) => Report::Discovered {
                peer,
                addrs,
                source,
            },
            SwarmEvent::Behaviour(discovery::Event::Expired { peer, .. }) => {
                Report::Expired { peer }
            }
            SwarmEvent::Behaviour(discovery::Event::Source(event)) => match event {
                client::Event::Registered { namespace, ttl, .. } => {
                    Report::Registered { ns: namespace, ttl }
                }
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
            _ => continue,
        };
        if tx.send((name, report)).await.is_err() {
            return;
        }
    }
}

fn short(peer: &PeerId) -> String {
    let s = peer.to_string();
    format!("…{}", &s[s.len().saturating_sub(6)..])
}
