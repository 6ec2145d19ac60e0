//! `rendezvous discover`: run the rendezvous discovery source against one server and print
//! one line per event.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::ExitCode,
    time::Duration,
};

use futures::StreamExt;
use libp2p::{
    identify, identity::Keypair, multiaddr::Protocol, swarm::NetworkBehaviour, swarm::SwarmEvent,
    Multiaddr, PeerId, Swarm,
};
use rendezvous_discovery::{client, Cookie, Namespace, RecordFormat};

use crate::{
    common::{build_swarm, load_or_create_identity, CliError, CliResult},
    session,
    signals::Signals,
    watch::{advice_for_good, Watch},
};

/// Flags of `rendezvous discover`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server's multiaddr, ending in /p2p/PEER_ID.
    #[arg(long)]
    server: String,
    /// A namespace to discover in (repeatable).
    #[arg(long = "namespace", required = true)]
    namespaces: Vec<String>,
    /// Also register in the namespaces.
    #[arg(long)]
    register: bool,
    /// TTL to ask for when registering, in seconds.
    #[arg(long, default_value_t = rendezvous_discovery::DEFAULT_TTL)]
    ttl: u64,
    /// Seconds between polls.
    #[arg(long, default_value_t = 60)]
    interval: u64,
    /// Page through everything once, print it, and exit.
    #[arg(long)]
    once: bool,
    /// Print JSON lines instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    node: NodeArgs,
}

/// Flags shared by `discover` and `register`.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// Address to listen on (repeatable); its addresses go into our signed record.
    #[arg(long = "listen", default_value = "/ip4/127.0.0.1/tcp/0")]
    pub listen: Vec<String>,
    /// An address to announce in our signed record in addition (repeatable).
    #[arg(long = "external")]
    pub external: Vec<String>,
    /// The server's protocol id (some networks run rendezvous under their own, such as
    /// /vac/waku/rendezvous/1.0.0 or /canvas/rendezvous/1.0.0).
    #[arg(long, value_name = "ID", default_value = "/rendezvous/1.0.0", value_parser = crate::common::parse_protocol)]
    pub protocol: libp2p::StreamProtocol,
    /// Record format: standard, legacy (rust-libp2p 0.18 servers) or peer-info (unsigned;
    /// py-libp2p 0.8 servers). The client falls back from standard by itself.
    #[arg(long, default_value = "standard", value_parser = crate::common::parse_record_format)]
    pub record_format: RecordFormat,
    /// Key file (created if absent); without it a new identity is used.
    #[arg(long)]
    pub identity: Option<std::path::PathBuf>,
}

/// The agent version announced over identify. Servers may pick the records they send by it
/// (ours sends this client every record anyway: it lists the standard-records marker).
const AGENT_VERSION: &str = concat!("rendezvous-discovery/", env!("CARGO_PKG_VERSION"));

/// The client behaviour with identify beside it, so servers learn what we decode.
#[derive(NetworkBehaviour)]
pub struct Node {
    pub rendezvous: client::Behaviour,
    pub identify: identify::Behaviour,
}

/// The peer id and address of `--server`.
pub fn parse_server(value: &str) -> Result<(PeerId, Multiaddr), CliError> {
    let addr: Multiaddr = value
        .parse()
        .map_err(|e| CliError::Usage(format!("--server {value}: not a multiaddr ({e})")))?;
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Ok((peer, addr)),
        _ => Err(CliError::Usage(format!(
            "--server {value}: expected a multiaddr ending in /p2p/<peer id>"
        ))),
    }
}

pub fn parse_namespaces(values: &[String]) -> Result<Vec<Namespace>, CliError> {
    values
        .iter()
        .map(|v| {
            Namespace::new(v.clone())
                .map_err(|e| CliError::Usage(format!("--namespace {v:?}: {e}")))
        })
        .collect()
}

fn parse_addrs(flag: &str, values: &[String]) -> Result<Vec<Multiaddr>, CliError> {
    values
        .iter()
        .map(|v| {
            v.parse()
                .map_err(|e| CliError::Usage(format!("--{flag} {v}: not a multiaddr ({e})")))
        })
        .collect()
}

/// Builds the swarm for `config` and starts listening; announces the listen addresses.
pub fn start(node: &NodeArgs, config: client::Config) -> Result<Swarm<Node>, CliError> {
    let listen = parse_addrs("listen", &node.listen)?;
    let external = parse_addrs("external", &node.external)?;
    let key = match &node.identity {
        Some(path) => load_or_create_identity(path)?,
        None => Keypair::generate_ed25519(),
    };
    let mut config = config
        .with_record_format(node.record_format)
        .with_protocol(node.protocol.clone());
    for addr in external {
        config = config.with_external_address(addr);
    }
    let mut swarm = build_swarm(key, |key| Node {
        rendezvous: client::Behaviour::new(key.clone(), config),
        identify: identify::Behaviour::new(
            identify::Config::new("/ipfs/id/1.0.0".into(), key.public())
                .with_agent_version(AGENT_VERSION.into()),
        ),
    })?;
    for addr in listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| CliError::Usage(format!("--listen {addr}: cannot listen ({e})")))?;
    }
    Ok(swarm)
}

/// What to do with a swarm event common to both commands: listen addresses become external
/// addresses (this tool has no other way to learn them).
pub fn on_swarm_event(swarm: &mut Swarm<Node>, event: &SwarmEvent<NodeEvent>) {
    if let SwarmEvent::NewListenAddr { address, .. } = event {
        swarm.add_external_address(address.clone());
    }
}

/// One output line for an event, or `None` for events that are not results (failures are
/// said on stderr, by [`crate::watch::Watch`]). Text lines start with what happened and the
/// namespace: `discovered NS PEER ADDR...`, `expired NS PEER`, `registered NS at SERVER ttl
/// SECONDS`, `unregistered NS at SERVER`.
pub fn render(event: &client::Event, json: bool) -> Option<String> {
    use client::Event as E;
    let value = match event {
        E::Discovered {
            peer,
            addrs,
            namespace,
            server,
        } => {
            if !json {
                let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
                return Some(format!("discovered {namespace} {peer} {}", addrs.join(" ")));
            }
            serde_json::json!({
                "event": "discovered",
                "peer": peer.to_string(),
                "addrs": addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "namespace": namespace.as_str(),
                "server": server.to_string(),
            })
        }
        E::Expired { peer, namespace } => {
            if !json {
                return Some(format!("expired {namespace} {peer}"));
            }
            serde_json::json!({"event": "expired", "peer": peer.to_string(), "namespace": namespace.as_str()})
        }
        E::Registered {
            server,
            namespace,
            ttl,
            ..
        } => {
            if !json {
                return Some(format!("registered {namespace} at {server} ttl {ttl}"));
            }
            serde_json::json!({"event": "registered", "namespace": namespace.as_str(), "server": server.to_string(), "ttl": ttl})
        }
        E::Unregistered {
            server, namespace, ..
        } => {
            if !json {
                return Some(format!("unregistered {namespace} at {server}"));
            }
            serde_json::json!({"event": "unregistered", "namespace": namespace.as_str(), "server": server.to_string()})
        }
        E::RecordsSkipped {
            server,
            namespace,
            count,
        } => {
            let ns = namespace.as_ref().map_or("*", |n| n.as_str());
            if !json {
                return Some(format!(
                    "skipped {count} undecodable record(s) in {ns} at {server}"
                ));
            }
            serde_json::json!({"event": "skipped", "count": count, "namespace": ns, "server": server.to_string()})
        }
        _ => return None,
    };
    Some(value.to_string())
}

pub async fn run(args: Args) -> CliResult {
    let (server, server_addr) = parse_server(&args.server)?;
    let namespaces = parse_namespaces(&args.namespaces)?;
    if args.interval == 0 {
        return Err(CliError::Usage(
            "--interval 0: expected at least 1 second".into(),
        ));
    }
    // Without --once the command runs until stopped: Ctrl-C and SIGTERM stop it cleanly.
    let signals = (!args.once).then(Signals::install).transpose()?;
    let mut config = client::Config::default()
        .with_server(server, vec![server_addr])
        .with_ttl(args.ttl)
        .with_interval(Duration::from_secs(args.interval))
        .with_registration(args.register)
        .with_discovery(!args.once)
        .with_learned_servers(false);
    for ns in &namespaces {
        config = config.with_namespace(ns.clone());
    }
    let mut swarm = start(&args.node, config)?;
    let mut watch = Watch::new(server, args.json);
    if let Some(signals) = signals {
        return session::run(swarm, watch, args.json, false, signals).await;
    }
    let limit = client::DEFAULT_LIMIT;

    // --once: page through each namespace with the manual API, then exit; a namespace that
    // fails does not stop the others, and fails the run at the end.
    let mut paging: BTreeMap<client::RequestId, Namespace> = BTreeMap::new();
    let mut failed: BTreeMap<Namespace, client::RequestError> = BTreeMap::new();
    let mut to_register: BTreeSet<Namespace> = if args.register {
        namespaces.iter().cloned().collect()
    } else {
        BTreeSet::new()
    };
    // The pages are asked for once the server has our identify info (or failed to get it),
    // so it serves us records of both formats.
    let mut started = false;
    let mut stdout_open = true;
    loop {
        let event = swarm.select_next_some().await;
        on_swarm_event(&mut swarm, &event);
        let event = match event {
            SwarmEvent::Behaviour(NodeEvent::Rendezvous(event)) => event,
            SwarmEvent::Behaviour(NodeEvent::Identify(
                identify::Event::Sent { peer_id, .. } | identify::Event::Error { peer_id, .. },
            )) if peer_id == server && !started => {
                started = true;
                for ns in &namespaces {
                    let id = swarm.behaviour_mut().rendezvous.discover(
                        server,
                        Some(ns.clone()),
                        None,
                        Some(limit),
                    );
                    paging.insert(id, ns.clone());
                }
                continue;
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(p),
                error,
                ..
            } if p == server => {
                if let libp2p::swarm::DialError::WrongPeerId { obtained, address } = &error {
                    return Err(watch.wrong_peer(obtained, address));
                }
                return Err(CliError::Failed(format!(
                    "cannot reach the server: {}",
                    crate::watch::dial_reason(&error)
                )));
            }
            _ => continue,
        };
        // A page that failed is said at the end, with the others that failed.
        let paged_failure = matches!(
            &event,
            client::Event::DiscoverFailed { request, .. } if paging.contains_key(request)
        );
        if !paged_failure && session::say(watch.on_client(&event)?, &mut stdout_open).is_err() {
            // Nobody reads on: end quietly.
            return Ok(ExitCode::SUCCESS);
        }
        match event {
            client::Event::DiscoverCompleted {
                request,
                registrations,
                skipped,
                cookie,
                ..
            } => {
                let Some(ns) = paging.remove(&request) else {
                    continue;
                };
                if (registrations.len() + skipped) as u64 >= limit {
                    if let Some(cookie) = cookie {
                        let id = next_page(&mut swarm, server, &ns, cookie, limit);
                        paging.insert(id, ns);
                    }
                }
            }
            client::Event::DiscoverFailed { request, error, .. } => {
                if let Some(ns) = paging.remove(&request) {
                    failed.insert(ns, error);
                }
            }
            client::Event::Registered { namespace, .. }
            | client::Event::RegisterFailed { namespace, .. } => {
                to_register.remove(&namespace);
            }
            _ => {}
        }
        if started && paging.is_empty() && to_register.is_empty() {
            let empty = namespaces
                .iter()
                .filter(|ns| !failed.contains_key(*ns))
                .filter_map(|ns| watch.nobody_in(ns));
            let _ = session::say(empty.collect(), &mut stdout_open);
            // Named: a failure the server would repeat if there is one (its exit status says
            // so), else the first.
            let named = failed
                .iter()
                .find(|(_, error)| advice_for_good(error).is_some())
                .or_else(|| failed.iter().next());
            let Some((ns, error)) = named else {
                return Ok(ExitCode::SUCCESS);
            };
            let text = format!(
                "discovery failed in {} of {} namespaces; {ns}: {error}",
                failed.len(),
                namespaces.len()
            );
            return Err(match advice_for_good(error) {
                Some(advice) => CliError::Refused(format!("{text}; {advice}")),
                None => CliError::Failed(text),
            });
        }
    }
}

fn next_page(
    swarm: &mut Swarm<Node>,
    server: PeerId,
    ns: &Namespace,
    cookie: Cookie,
    limit: u64,
) -> client::RequestId {
    swarm
        .behaviour_mut()
        .rendezvous
        .discover(server, Some(ns.clone()), Some(cookie), Some(limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_records_are_printed_in_text_and_json() {
        let server = PeerId::random();
        let event = client::Event::RecordsSkipped {
            server,
            namespace: Some(Namespace::from_static("chat")),
            count: 3,
        };
        assert_eq!(
            render(&event, false).unwrap(),
            format!("skipped 3 undecodable record(s) in chat at {server}")
        );
        let json: serde_json::Value = serde_json::from_str(&render(&event, true).unwrap()).unwrap();
        assert_eq!(json["event"], "skipped");
        assert_eq!(json["count"], 3);
        assert_eq!(json["namespace"], "chat");
    }
}
