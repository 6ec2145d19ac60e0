//! A static bootstrap list as a discovery source, like js-libp2p's `bootstrap`.
//!
//! Give it `/p2p/` multiaddrs; at start it reports each peer as discovered (one
//! [`Event::Discovered`] per peer, its addresses merged), answers the swarm's address lookups
//! for those peers so `swarm.dial(peer_id)` works, and, when asked, dials them.
//!
//! ```
//! use rendezvous_discovery::bootstrap;
//!
//! let config = bootstrap::Config::new([
//!     "/ip4/104.131.131.82/tcp/4001/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ"
//!         .parse()
//!         .unwrap(),
//! ])
//! .unwrap()
//! .with_dial(true);
//! let behaviour = bootstrap::Behaviour::new(config);
//! assert_eq!(behaviour.peers().count(), 1);
//! ```

use std::{
    collections::VecDeque,
    task::{Context, Poll},
};

use libp2p::{
    core::{transport::PortUse, Endpoint},
    multiaddr::Protocol,
    swarm::{
        dial_opts::{DialOpts, PeerCondition},
        dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId,
};

use crate::discovery::{Found, Source};

/// The label of this source in [`discovery::Event::Discovered`](crate::discovery::Event).
pub const SOURCE: &str = "bootstrap";

/// A bootstrap address that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The address does not end in `/p2p/<peer id>`.
    #[error("bootstrap address {0} has no peer id; expected it to end in /p2p/<peer id>, e.g. /ip4/192.0.2.1/tcp/4001/p2p/12D3KooW...")]
    MissingPeerId(Multiaddr),
    /// The address is only `/p2p/<peer id>`: there is nothing to dial.
    #[error("bootstrap address {0} has only a peer id; expected a transport address before /p2p/<peer id>")]
    MissingTransport(Multiaddr),
}

/// Configuration of the bootstrap [`Behaviour`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Peers in first-seen order, each with its addresses (without `/p2p/`).
    peers: Vec<(PeerId, Vec<Multiaddr>)>,
    dial: bool,
}

impl Config {
    /// A list of `/p2p/` multiaddrs; several addresses of one peer are merged. Fails on the
    /// first address that does not end in `/p2p/<peer id>`.
    pub fn new(addrs: impl IntoIterator<Item = Multiaddr>) -> Result<Self, ConfigError> {
        let mut peers: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
        for full in addrs {
            let mut addr = full.clone();
            let Some(Protocol::P2p(peer)) = addr.pop() else {
                return Err(ConfigError::MissingPeerId(full));
            };
            if addr.is_empty() {
                return Err(ConfigError::MissingTransport(full));
            }
            match peers.iter_mut().find(|(p, _)| *p == peer) {
                Some((_, known)) if !known.contains(&addr) => known.push(addr),
                Some(_) => {}
                None => peers.push((peer, vec![addr])),
            }
        }
        Ok(Self { peers, dial: false })
    }

    /// Whether to dial every bootstrap peer at start (off by default).
    pub fn with_dial(mut self, dial: bool) -> Self {
        self.dial = dial;
        self
    }
}

/// What the bootstrap list reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A bootstrap peer and its addresses (reported once, at start).
    Discovered {
        /// The peer.
        peer: PeerId,
        /// Its addresses from the list, without `/p2p/`.
        addrs: Vec<Multiaddr>,
    },
}

/// A static bootstrap list as a [`NetworkBehaviour`] and a discovery [`Source`].
pub struct Behaviour {
    peers: Vec<(PeerId, Vec<Multiaddr>)>,
    /// Bounded by the list: one event per peer, queued once at start.
    events: VecDeque<Event>,
    /// Bounded by the list: each peer is queued at most once at a time.
    dials: VecDeque<PeerId>,
}

impl Behaviour {
    /// A bootstrap source for `config`'s list.
    pub fn new(config: Config) -> Self {
        let events = config
            .peers
            .iter()
            .map(|(peer, addrs)| Event::Discovered {
                peer: *peer,
                addrs: addrs.clone(),
            })
            .collect();
        let mut behaviour = Self {
            peers: config.peers,
            events,
            dials: VecDeque::new(),
        };
        if config.dial {
            behaviour.dial_all();
        }
        behaviour
    }

    /// Dials every bootstrap peer not connected (or being dialed) now.
    pub fn dial_all(&mut self) {
        for (peer, _) in &self.peers {
            if !self.dials.contains(peer) {
                self.dials.push_back(*peer);
            }
        }
    }

    /// The bootstrap peers.
    pub fn peers(&self) -> impl Iterator<Item = &PeerId> + '_ {
        self.peers.iter().map(|(p, _)| p)
    }

    /// The addresses of a bootstrap peer (empty if `peer` is not one).
    pub fn addresses_of(&self, peer: &PeerId) -> &[Multiaddr] {
        self.peers
            .iter()
            .find(|(p, _)| p == peer)
            .map(|(_, a)| a.as_slice())
            .unwrap_or_default()
    }
}

impl Source for Behaviour {
    fn discoveries(&self, event: &Event, found: &mut Found) {
        let Event::Discovered { peer, addrs } = event;
        found.discovered(SOURCE, *peer, addrs.iter().cloned());
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        maybe_peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        Ok(maybe_peer
            .map(|peer| self.addresses_of(&peer).to_vec())
            .unwrap_or_default())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        libp2p::core::util::unreachable(event)
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(ToSwarm::GenerateEvent(event));
        }
        if let Some(peer) = self.dials.pop_front() {
            let opts = DialOpts::peer_id(peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            return Poll::Ready(ToSwarm::Dial { opts });
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_without_p2p_is_rejected_with_a_clear_error() {
        let addr: Multiaddr = "/ip4/10.0.0.1/tcp/4001".parse().unwrap();
        let err = Config::new([addr.clone()]).unwrap_err();
        assert_eq!(err, ConfigError::MissingPeerId(addr));
        assert!(err.to_string().contains("/p2p/<peer id>"), "{err}");

        let only_peer = Multiaddr::empty().with(Protocol::P2p(PeerId::random()));
        assert_eq!(
            Config::new([only_peer.clone()]).unwrap_err(),
            ConfigError::MissingTransport(only_peer)
        );
    }

    #[test]
    fn addresses_of_one_peer_are_merged_and_reported_once() {
        let peer = PeerId::random();
        let a: Multiaddr = "/ip4/10.0.0.1/tcp/1".parse().unwrap();
        let b: Multiaddr = "/ip4/10.0.0.2/tcp/1".parse().unwrap();
        let p2p = |m: &Multiaddr| m.clone().with(Protocol::P2p(peer));
        let behaviour = Behaviour::new(Config::new([p2p(&a), p2p(&b), p2p(&a)]).unwrap());
        assert_eq!(behaviour.peers().collect::<Vec<_>>(), [&peer]);
        assert_eq!(behaviour.addresses_of(&peer), [a.clone(), b.clone()]);
        assert_eq!(
            behaviour.events.iter().collect::<Vec<_>>(),
            [&Event::Discovered {
                peer,
                addrs: vec![a, b]
            }]
        );
    }
}
