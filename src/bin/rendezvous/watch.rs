//! What `register` and `discover` say about their server: results on stdout only when they
//! change, each failure once on stderr (again only when it changes, and a word when it is
//! over), and the failures that would only repeat turned into the command's end.
//!
//! Pure: fed swarm and client events, it returns what to say; the command loop says it.

use std::collections::{BTreeMap, BTreeSet};

use libp2p::{
    multiaddr::Protocol,
    swarm::{DialError, SwarmEvent},
    Multiaddr, PeerId,
};
use rendezvous_discovery::{client, ErrorCode, Namespace, Ttl};

use crate::{
    common::CliError,
    discover::render,
    node::NodeEvent,
    output::{chain, root_cause},
};

/// One thing to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Say {
    /// A result line for stdout.
    Out(String),
    /// A problem, for stderr (a warning).
    Warn(String),
    /// News about a problem or the run, for stderr (information).
    Info(String),
}

/// What a problem is about; each says its latest problem, once.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Topic {
    Connection,
    Register(Namespace),
    Discover(Option<Namespace>),
    Unregister(Namespace),
}

/// The state behind what was said.
#[derive(Debug)]
pub struct Watch {
    server: PeerId,
    json: bool,
    /// The TTL last printed as `registered`, per namespace.
    registered: BTreeMap<Namespace, Ttl>,
    /// The problem last said, per topic, until it is over.
    problems: BTreeMap<Topic, String>,
    /// Namespaces in which a peer was discovered, or whose emptiness was said.
    heard_of: BTreeSet<Namespace>,
}

impl Watch {
    pub fn new(server: PeerId, json: bool) -> Self {
        Self {
            server,
            json,
            registered: BTreeMap::new(),
            problems: BTreeMap::new(),
            heard_of: BTreeSet::new(),
        }
    }

    /// A swarm event: connection trouble with the server. A peer id other than `--server`'s
    /// at its address ends the command.
    pub fn on_swarm(&mut self, event: &SwarmEvent<NodeEvent>) -> Result<Vec<Say>, CliError> {
        let mut say = Vec::new();
        match event {
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } if *peer == self.server => {
                if let DialError::WrongPeerId { obtained, address } = error {
                    return Err(self.wrong_peer(obtained, address));
                }
                let text = format!(
                    "cannot reach the server: {}; trying again with backoff",
                    dial_reason(error)
                );
                self.problem(Topic::Connection, text, &mut say);
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } if *peer_id == self.server => {
                self.over(Topic::Connection, "reached the server again", &mut say);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                cause: Some(cause),
                ..
            } if *peer_id == self.server => {
                let text = format!(
                    "lost the connection to the server ({}); reconnecting",
                    root_cause(cause)
                );
                self.problem(Topic::Connection, text, &mut say);
            }
            _ => {}
        }
        Ok(say)
    }

    /// `DialError::WrongPeerId` as the command's end.
    pub fn wrong_peer(&self, obtained: &PeerId, address: &Multiaddr) -> CliError {
        let mut address = address.clone();
        if matches!(address.iter().last(), Some(Protocol::P2p(_))) {
            address.pop();
        }
        CliError::WrongPeer(format!(
            "the peer at {address} is {obtained}, not {} as --server says; correct the \
             /p2p/ part of --server",
            self.server
        ))
    }

    /// A client event: results, and failures of requests. A refusal the server would repeat
    /// ends the command.
    pub fn on_client(&mut self, event: &client::Event) -> Result<Vec<Say>, CliError> {
        use client::Event as E;
        let mut say = Vec::new();
        let watched = self.server;
        let ours = |server: &PeerId| *server == watched;
        let render_too = match event {
            E::Registered {
                server,
                namespace,
                ttl,
                ..
            } if ours(server) => self.registered(namespace, *ttl, &mut say),
            E::RegisterFailed {
                server,
                namespace,
                error,
                ..
            } if ours(server) => {
                self.register_failed(namespace, error, &mut say)?;
                false
            }
            E::Unregistered {
                server, namespace, ..
            } if ours(server) => {
                self.registered.remove(namespace);
                true
            }
            E::UnregisterFailed {
                server,
                namespace,
                error,
                ..
            } if ours(server) => {
                let text = format!("cannot unregister from {namespace}: {error}");
                self.problem(Topic::Unregister(namespace.clone()), text, &mut say);
                false
            }
            E::DiscoverFailed {
                server,
                namespace,
                error,
                ..
            } if ours(server) => {
                self.discover_failed(namespace.as_ref(), error, &mut say)?;
                false
            }
            E::DiscoverPolled {
                server, namespace, ..
            } if ours(server) => {
                self.discovery_works(Some(namespace), &mut say);
                say.extend(self.nobody_in(namespace));
                true
            }
            E::DiscoverCompleted {
                server, namespace, ..
            } if ours(server) => {
                self.discovery_works(namespace.as_ref(), &mut say);
                true
            }
            E::Discovered { namespace, .. } => {
                self.heard_of.insert(namespace.clone());
                true
            }
            _ => true,
        };
        if render_too {
            say.extend(render(event, self.json).map(Say::Out));
        }
        Ok(say)
    }

    /// A registration granted: a problem it ends is over; false for a refresh that changed
    /// nothing (nothing to print).
    fn registered(&mut self, namespace: &Namespace, ttl: Ttl, say: &mut Vec<Say>) -> bool {
        self.over(
            Topic::Register(namespace.clone()),
            &format!("registered in {namespace} again"),
            say,
        );
        self.registered.insert(namespace.clone(), ttl) != Some(ttl)
    }

    fn register_failed(
        &mut self,
        namespace: &Namespace,
        error: &client::RequestError,
        say: &mut Vec<Say>,
    ) -> Result<(), CliError> {
        if let Some(end) = for_good(&format!("to register in {namespace}"), error) {
            return Err(end);
        }
        if let Some(error) = worth_saying(error) {
            let text =
                format!("cannot register in {namespace}: {error}; trying again with backoff");
            self.problem(Topic::Register(namespace.clone()), text, say);
        }
        Ok(())
    }

    fn discover_failed(
        &mut self,
        namespace: Option<&Namespace>,
        error: &client::RequestError,
        say: &mut Vec<Say>,
    ) -> Result<(), CliError> {
        let ns = namespace.map_or("every namespace", |n| n.as_str());
        if let Some(end) = for_good(&format!("to discover in {ns}"), error) {
            return Err(end);
        }
        if let Some(error) = worth_saying(error) {
            let text = format!("cannot discover in {ns}: {error}; trying again later");
            self.problem(Topic::Discover(namespace.cloned()), text, say);
        }
        Ok(())
    }

    fn discovery_works(&mut self, namespace: Option<&Namespace>, say: &mut Vec<Say>) {
        let ns = namespace.map_or("every namespace", |n| n.as_str());
        let text = format!("discovery in {ns} works again");
        self.over(Topic::Discover(namespace.cloned()), &text, say);
    }

    /// Once, for a namespace where no peer was discovered: that it is empty (so far).
    pub fn nobody_in(&mut self, namespace: &Namespace) -> Option<Say> {
        self.heard_of
            .insert(namespace.clone())
            .then(|| Say::Info(format!("found no other peer registered in {namespace}")))
    }

    fn problem(&mut self, topic: Topic, text: String, say: &mut Vec<Say>) {
        if self.problems.get(&topic) != Some(&text) {
            self.problems.insert(topic, text.clone());
            say.push(Say::Warn(text));
        }
    }

    fn over(&mut self, topic: Topic, text: &str, say: &mut Vec<Say>) {
        if self.problems.remove(&topic).is_some() {
            say.push(Say::Info(text.to_owned()));
        }
    }
}

/// The command's end if the server would answer the same request the same way again: it
/// refused the request itself (its TTL, namespace, record, or who sends it), or it does not
/// speak the protocol id. `what` is the request (`to register in chat`).
pub fn for_good(what: &str, error: &client::RequestError) -> Option<CliError> {
    let advice = advice_for_good(error)?;
    let reason = match error {
        client::RequestError::Remote(refusal) if refusal.text.is_empty() => {
            format!("{} (no statusText)", refusal.code)
        }
        client::RequestError::Remote(refusal) => format!("{}: {}", refusal.code, refusal.text),
        other => other.to_string(),
    };
    Some(CliError::Refused(format!(
        "the server refused {what}: {reason}; {advice}"
    )))
}

/// What to change when the server would answer the same request the same way again (see
/// [`for_good`]); `None` for a failure that may pass.
pub fn advice_for_good(error: &client::RequestError) -> Option<&'static str> {
    match error {
        client::RequestError::Remote(refusal) => match refusal.code {
            ErrorCode::InvalidTtl => Some("give a --ttl within the server's bounds"),
            ErrorCode::InvalidNamespace => Some("use a namespace this server accepts"),
            ErrorCode::InvalidSignedPeerRecord => Some(
                "check --external and --record-format (this server may read another record \
                 format)",
            ),
            ErrorCode::NotAuthorized => {
                Some("this server does not let this peer do that; ask its operator")
            }
            _ => None,
        },
        client::RequestError::Unsupported => Some(
            "give the network's rendezvous protocol id with --protocol (the default is \
             /rendezvous/1.0.0)",
        ),
        _ => None,
    }
}

/// A failure worth a line of its own: not one the connection's state already explains.
fn worth_saying(error: &client::RequestError) -> Option<&client::RequestError> {
    match error {
        client::RequestError::NotConnected | client::RequestError::Stopped => None,
        other => Some(other),
    }
}

/// Why a dial failed, in few words: each address tried with the innermost reason it gave
/// ("Connection refused (os error 111)"), not libp2p's layers of wrapping.
pub fn dial_reason(error: &DialError) -> String {
    match error {
        DialError::Transport(errors) if !errors.is_empty() => errors
            .iter()
            .map(|(address, error)| format!("{address}: {}", root_cause(error)))
            .collect::<Vec<_>>()
            .join("; "),
        other => chain(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use client::{Event, RequestError};
    use rendezvous_discovery::ErrorResponse;

    fn watch() -> (Watch, PeerId) {
        let server = PeerId::random();
        (Watch::new(server, false), server)
    }

    fn registered(server: PeerId, ttl: Ttl) -> Event {
        Event::Registered {
            server,
            namespace: Namespace::from_static("chat"),
            ttl,
            request: dummy_request(),
        }
    }

    fn register_failed(server: PeerId, error: RequestError) -> Event {
        Event::RegisterFailed {
            server,
            namespace: Namespace::from_static("chat"),
            error,
            request: dummy_request(),
        }
    }

    /// Any request id: the watch does not look at it.
    fn dummy_request() -> client::RequestId {
        let mut ids = client::Behaviour::new(
            libp2p::identity::Keypair::generate_ed25519(),
            client::Config::default(),
        );
        ids.discover(PeerId::random(), None, None, None)
    }

    #[test]
    fn given_a_second_identical_registration_then_it_is_not_printed_again() {
        let (mut watch, server) = watch();
        let first = watch.on_client(&registered(server, 7200)).unwrap();
        assert!(matches!(&first[..], [Say::Out(l)] if l.starts_with("registered chat")));
        assert_eq!(watch.on_client(&registered(server, 7200)).unwrap(), vec![]);
        // A changed TTL is news.
        assert_eq!(watch.on_client(&registered(server, 3600)).unwrap().len(), 1);
    }

    #[test]
    fn given_the_same_transient_failure_twice_then_it_is_said_once_and_its_end_too() {
        let (mut watch, server) = watch();
        let busy = RequestError::Remote(ErrorResponse::new(ErrorCode::Unavailable, "busy"));
        let said = watch
            .on_client(&register_failed(server, busy.clone()))
            .unwrap();
        assert!(
            matches!(&said[..], [Say::Warn(w)] if w.contains("busy")),
            "{said:?}"
        );
        assert_eq!(
            watch.on_client(&register_failed(server, busy)).unwrap(),
            vec![]
        );
        let said = watch.on_client(&registered(server, 7200)).unwrap();
        assert!(
            matches!(&said[0], Say::Info(i) if i.contains("again")),
            "{said:?}"
        );
        assert!(matches!(&said[1], Say::Out(_)), "{said:?}");
    }

    #[test]
    fn given_a_refusal_the_server_would_repeat_then_the_command_ends_with_its_text() {
        let (mut watch, server) = watch();
        let ttl = RequestError::Remote(ErrorResponse::new(
            ErrorCode::InvalidTtl,
            "ttl is 60 s; expected 7200..=259200 s",
        ));
        let Err(error) = watch.on_client(&register_failed(server, ttl)) else {
            panic!("a bad TTL ends the command");
        };
        assert_eq!(error.exit_status(), 3);
        let text = error.to_string();
        assert!(
            text.contains("ttl is 60 s; expected 7200..=259200 s"),
            "{text}"
        );
        assert!(text.contains("--ttl"), "{text}");
    }

    #[test]
    fn given_an_empty_namespace_then_it_is_said_once_and_never_after_a_discovery() {
        let (mut watch, server) = watch();
        let polled = Event::DiscoverPolled {
            server,
            namespace: Namespace::from_static("chat"),
            registrations: 0,
        };
        let said = watch.on_client(&polled).unwrap();
        assert!(
            matches!(&said[..], [Say::Info(i)] if i.contains("chat")),
            "{said:?}"
        );
        assert_eq!(watch.on_client(&polled).unwrap(), vec![]);
        let found = Event::Discovered {
            peer: PeerId::random(),
            addrs: vec![],
            namespace: Namespace::from_static("games"),
            server,
        };
        let said = watch.on_client(&found).unwrap();
        assert!(matches!(&said[..], [Say::Out(l)] if l.starts_with("discovered games ")));
        let polled = Event::DiscoverPolled {
            server,
            namespace: Namespace::from_static("games"),
            registrations: 1,
        };
        assert_eq!(watch.on_client(&polled).unwrap(), vec![]);
    }
}
