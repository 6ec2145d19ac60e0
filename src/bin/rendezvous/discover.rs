//! `rendezvous discover`: run the rendezvous discovery source against one server and print
//! one line per event.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::ExitCode,
    time::Duration,
};

use futures::StreamExt;
use libp2p::{identify, swarm::SwarmEvent, Multiaddr, PeerId, Swarm};
use rendezvous_discovery::{client, Cookie, Namespace};

use crate::{
    common::{CliError, CliResult},
    node::{on_swarm_event, parse_namespaces, parse_server, start, Node, NodeArgs, NodeEvent},
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
    let config = config(&args, server, server_addr, &namespaces);
    let swarm = start(&args.node, config)?;
    let watch = Watch::new(server, args.json);
    match signals {
        Some(signals) => session::run(swarm, watch, args.json, false, signals).await,
        None => {
            Once::new(server, namespaces, args.register)
                .run(swarm, watch)
                .await
        }
    }
}

/// The client's configuration for `args`, with `server` at `addr` its only server.
fn config(
    args: &Args,
    server: PeerId,
    addr: Multiaddr,
    namespaces: &[Namespace],
) -> client::Config {
    let config = client::Config::default()
        .with_server(server, vec![addr])
        .with_ttl(args.ttl)
        .with_interval(Duration::from_secs(args.interval))
        .with_registration(args.register)
        .with_discovery(!args.once)
        .with_learned_servers(false);
    namespaces
        .iter()
        .fold(config, |config, ns| config.with_namespace(ns.clone()))
}

/// `--once`: pages through each namespace with the manual API, then exits; a namespace that
/// fails does not stop the others, and fails the run at the end.
struct Once {
    server: PeerId,
    namespaces: Vec<Namespace>,
    /// The page asked for in each namespace, by its request.
    paging: BTreeMap<client::RequestId, Namespace>,
    failed: BTreeMap<Namespace, client::RequestError>,
    /// With `--register`: the namespaces whose REGISTER is not answered yet.
    to_register: BTreeSet<Namespace>,
    /// Whether the pages were asked for: once the server has our identify info (or failed to
    /// get it), so it serves us records of every format.
    started: bool,
}

impl Once {
    fn new(server: PeerId, namespaces: Vec<Namespace>, register: bool) -> Self {
        let to_register = match register {
            true => namespaces.iter().cloned().collect(),
            false => BTreeSet::new(),
        };
        Self {
            server,
            namespaces,
            paging: BTreeMap::new(),
            failed: BTreeMap::new(),
            to_register,
            started: false,
        }
    }

    async fn run(mut self, mut swarm: Swarm<Node>, mut watch: Watch) -> CliResult {
        let mut stdout_open = true;
        loop {
            let event = swarm.select_next_some().await;
            on_swarm_event(&mut swarm, &event);
            let Some(event) = self.on_swarm(&mut swarm, &watch, event)? else {
                continue;
            };
            // A page that failed is said at the end, with the others that failed.
            let paged_failure = matches!(
                &event,
                client::Event::DiscoverFailed { request, .. } if self.paging.contains_key(request)
            );
            if !paged_failure && session::say(watch.on_client(&event)?, &mut stdout_open).is_err() {
                // Nobody reads on: end quietly.
                return Ok(ExitCode::SUCCESS);
            }
            self.on_client(&mut swarm, event);
            if self.started && self.paging.is_empty() && self.to_register.is_empty() {
                return self.finish(&mut watch, &mut stdout_open);
            }
        }
    }

    /// The client's event in `event`, if it is one. The pages are asked for when the server
    /// has our identify; failing to reach the server ends the run.
    fn on_swarm(
        &mut self,
        swarm: &mut Swarm<Node>,
        watch: &Watch,
        event: SwarmEvent<NodeEvent>,
    ) -> Result<Option<client::Event>, CliError> {
        match event {
            SwarmEvent::Behaviour(NodeEvent::Rendezvous(event)) => return Ok(Some(event)),
            SwarmEvent::Behaviour(NodeEvent::Identify(
                identify::Event::Sent { peer_id, .. } | identify::Event::Error { peer_id, .. },
            )) if peer_id == self.server && !self.started => self.start(swarm),
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } if peer == self.server => {
                if let libp2p::swarm::DialError::WrongPeerId { obtained, address } = &error {
                    return Err(watch.wrong_peer(obtained, address));
                }
                return Err(CliError::Failed(format!(
                    "cannot reach the server: {}",
                    crate::watch::dial_reason(&error)
                )));
            }
            _ => {}
        }
        Ok(None)
    }

    /// Asks for the first page of every namespace.
    fn start(&mut self, swarm: &mut Swarm<Node>) {
        self.started = true;
        for ns in &self.namespaces {
            let id = page(swarm, self.server, ns, None);
            self.paging.insert(id, ns.clone());
        }
    }

    /// Pages on after a full page; notes failures and answered REGISTERs.
    fn on_client(&mut self, swarm: &mut Swarm<Node>, event: client::Event) {
        match event {
            client::Event::DiscoverCompleted {
                request,
                registrations,
                skipped,
                cookie,
                ..
            } => {
                let Some(ns) = self.paging.remove(&request) else {
                    return;
                };
                let full = (registrations.len() + skipped) as u64 >= client::DEFAULT_LIMIT;
                if let (true, Some(cookie)) = (full, cookie) {
                    let id = page(swarm, self.server, &ns, Some(cookie));
                    self.paging.insert(id, ns);
                }
            }
            client::Event::DiscoverFailed { request, error, .. } => {
                if let Some(ns) = self.paging.remove(&request) {
                    self.failed.insert(ns, error);
                }
            }
            client::Event::Registered { namespace, .. }
            | client::Event::RegisterFailed { namespace, .. } => {
                self.to_register.remove(&namespace);
            }
            _ => {}
        }
    }

    /// The end of the run: the namespaces where nobody was found are said, and a failure fails
    /// it, named: one the server would repeat if there is one (its exit status says so), else
    /// the first.
    fn finish(&self, watch: &mut Watch, stdout_open: &mut bool) -> CliResult {
        let empty = self
            .namespaces
            .iter()
            .filter(|ns| !self.failed.contains_key(*ns))
            .filter_map(|ns| watch.nobody_in(ns));
        let _ = session::say(empty.collect(), stdout_open);
        let named = self
            .failed
            .iter()
            .find(|(_, error)| advice_for_good(error).is_some())
            .or_else(|| self.failed.iter().next());
        let Some((ns, error)) = named else {
            return Ok(ExitCode::SUCCESS);
        };
        let text = format!(
            "discovery failed in {} of {} namespaces; {ns}: {error}",
            self.failed.len(),
            self.namespaces.len()
        );
        Err(match advice_for_good(error) {
            Some(advice) => CliError::Refused(format!("{text}; {advice}")),
            None => CliError::Failed(text),
        })
    }
}

/// Asks `server` for the page of `ns` after `cookie`.
fn page(
    swarm: &mut Swarm<Node>,
    server: PeerId,
    ns: &Namespace,
    cookie: Option<Cookie>,
) -> client::RequestId {
    let limit = Some(client::DEFAULT_LIMIT);
    swarm
        .behaviour_mut()
        .rendezvous
        .discover(server, Some(ns.clone()), cookie, limit)
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
