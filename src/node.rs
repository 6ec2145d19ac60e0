//! A node that is a rendezvous client and, when configured, a rendezvous server at once (the
//! original design's `server: { enabled }` switch).
//!
//! [`Behaviour`] holds a [`client::Behaviour`] and a [`server::Behaviour`] behind a
//! [`Toggle`]: [`Config::with_server`] turns the embedded server on. The node is a discovery
//! [`Source`]: peers its client discovers (label [`client::SOURCE`]) and, with the server on,
//! peers that register at the embedded server in one of the client's namespaces (label
//! [`SERVER_SOURCE`]), so two such nodes that register with each other discover each other.
//!
//! ```
//! use libp2p::identity::Keypair;
//! use rendezvous_discovery::{client, discovery, node, server, Namespace};
//!
//! let key = Keypair::generate_ed25519();
//! let config = node::Config::new(
//!     client::Config::default().with_namespace(Namespace::from_static("my-app")),
//! )
//! .with_server(server::Config::default());
//! let behaviour = discovery::Behaviour::new(node::Behaviour::new(key, config), discovery::Config::default());
//! assert!(behaviour.inner().server().is_some());
//! ```

use libp2p::{
    identity::Keypair,
    swarm::{behaviour::toggle::Toggle, NetworkBehaviour},
    PeerId,
};

use crate::{
    client,
    discovery::{Found, Source},
    server,
};

/// The label of discoveries made by the embedded server: peers that registered with it.
pub const SERVER_SOURCE: &str = "rendezvous-server";

/// Configuration of a [`Behaviour`]: the client's, and the server's when it is enabled.
#[derive(Debug, Clone)]
pub struct Config {
    client: client::Config,
    server: Option<server::Config>,
}

impl Config {
    /// A client-only node.
    pub fn new(client: client::Config) -> Self {
        Self {
            client,
            server: None,
        }
    }

    /// Turns the embedded server on, with `server`.
    pub fn with_server(mut self, server: server::Config) -> Self {
        self.server = Some(server);
        self
    }

    /// Turns the embedded server on (`Some`) or off (`None`).
    pub fn with_server_enabled(mut self, server: Option<server::Config>) -> Self {
        self.server = server;
        self
    }
}

/// What the node reports: its client's and its server's events.
#[derive(Debug)]
pub enum Event {
    /// An event of the client.
    Client(client::Event),
    /// An event of the embedded server.
    Server(server::Event),
}

impl From<client::Event> for Event {
    fn from(e: client::Event) -> Self {
        Event::Client(e)
    }
}

impl From<server::Event> for Event {
    fn from(e: server::Event) -> Self {
        Event::Server(e)
    }
}

/// A rendezvous client with an optional embedded server. See the [module docs](self).
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "Event", prelude = "libp2p::swarm::derive_prelude")]
pub struct Behaviour {
    client: client::Behaviour,
    server: Toggle<server::Behaviour>,
}

impl Behaviour {
    /// A node signing its records with `key`.
    pub fn new(key: Keypair, config: Config) -> Self {
        Self {
            client: client::Behaviour::new(key, config.client),
            server: config.server.map(server::Behaviour::new).into(),
        }
    }

    /// The client.
    pub fn client(&self) -> &client::Behaviour {
        &self.client
    }

    /// The client, to register, discover or stop by hand.
    pub fn client_mut(&mut self) -> &mut client::Behaviour {
        &mut self.client
    }

    /// The embedded server, when enabled.
    pub fn server(&self) -> Option<&server::Behaviour> {
        self.server.as_ref()
    }

    /// The embedded server, when enabled.
    pub fn server_mut(&mut self) -> Option<&mut server::Behaviour> {
        self.server.as_mut()
    }

    /// Whether the embedded server still holds a registration of `peer` in one of our
    /// namespaces. Asked once per `PeerUnregistered` or `RegistrationExpired` event, so it
    /// must not depend on how many registrations the peer has (a peer with n registrations
    /// that disconnects brings n events): one lookup per namespace of ours, none once the peer
    /// has no registration left.
    fn server_knows(&self, peer: &PeerId) -> bool {
        let Some(index) = self.server.as_ref().and_then(|s| s.local()) else {
            return false;
        };
        index.count_of(peer) > 0
            && self
                .client
                .namespaces()
                .iter()
                .any(|namespace| index.is_registered(peer, namespace))
    }
}

impl Source for Behaviour {
    fn discoveries(&self, event: &Event, found: &mut Found) {
        match event {
            Event::Client(e) => self.client.discoveries(e, found),
            Event::Server(server::Event::PeerRegistered {
                peer, registration, ..
            }) if self.client.namespaces().contains(&registration.namespace) => {
                found.discovered(
                    SERVER_SOURCE,
                    *peer,
                    registration.record.addresses().iter().cloned(),
                );
            }
            Event::Server(server::Event::PeerUnregistered { peer, .. })
                if !self.server_knows(peer) =>
            {
                found.expired(SERVER_SOURCE, *peer);
            }
            Event::Server(server::Event::RegistrationExpired(registration))
                if !self.server_knows(&registration.record.peer_id()) =>
            {
                found.expired(SERVER_SOURCE, registration.record.peer_id());
            }
            Event::Server(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use libp2p::identity::Keypair;

    use super::*;
    use crate::{codec::NewRegistration, Namespace, RecordFormat, SignedRecord};

    /// A node whose client discovers in `ours` and whose server holds `peer`'s registrations in
    /// `namespaces`.
    fn node_holding(key: &Keypair, ours: &Namespace, namespaces: &[Namespace]) -> Behaviour {
        let addrs = vec!["/ip4/10.0.0.1/tcp/1".parse().unwrap()];
        let record = SignedRecord::new(key, addrs, RecordFormat::Standard).unwrap();
        let peer = key.public().to_peer_id();
        let mut index = server::Registrations::new(server::Config::default(), 0);
        for namespace in namespaces {
            let registration = NewRegistration {
                namespace: namespace.clone(),
                record: record.clone(),
                ttl: None,
            };
            index.register(peer, registration, Instant::now()).unwrap();
        }
        let store = server::MemoryStore::from_index(index);
        let client = client::Config::default().with_namespace(ours.clone());
        Behaviour {
            client: client::Behaviour::new(Keypair::generate_ed25519(), client),
            server: Some(server::Behaviour::with_store(
                server::Config::default(),
                store,
            ))
            .into(),
        }
    }

    /// What the node reports for `peer`'s unregistration from `namespace`.
    fn found_after_unregistered(node: &Behaviour, peer: PeerId, namespace: Namespace) -> Found {
        let cause = server::Removal::Disconnect;
        let event = Event::Server(server::Event::PeerUnregistered {
            peer,
            namespace,
            cause,
        });
        let mut found = Found::new();
        node.discoveries(&event, &mut found);
        found
    }

    #[test]
    fn given_a_peer_with_the_most_registrations_then_it_expires_only_when_none_in_our_namespaces_is_left(
    ) {
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let ours = Namespace::from_static("ours");
        // The most a peer may hold, one of them in our namespace; each of its n events is
        // answered by one lookup per namespace of ours, not by copying its n registrations.
        let mut namespaces: Vec<Namespace> = (1..server::DEFAULT_MAX_REGISTRATIONS_PER_PEER)
            .map(|i| Namespace::new(format!("other-{i}")).unwrap())
            .collect();
        namespaces.push(ours.clone());
        let node = node_holding(&key, &ours, &namespaces);
        let other = namespaces[0].clone();
        assert!(found_after_unregistered(&node, peer, other.clone()).is_empty());
        // Nothing left in our namespaces (all of it left, as after a disconnect): expired.
        let node = node_holding(&key, &ours, &namespaces[..10]);
        assert!(!found_after_unregistered(&node, peer, ours.clone()).is_empty());
        let node = node_holding(&key, &ours, &[]);
        assert!(!found_after_unregistered(&node, peer, ours).is_empty());
    }
}
