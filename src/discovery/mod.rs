//! One discovery vocabulary for every source, and the aggregator that merges them.
//!
//! A *source* is any [`NetworkBehaviour`] whose events say, among other things, that a peer was
//! discovered at some addresses or has expired: rust-libp2p's mdns, the [`bootstrap`](crate::bootstrap)
//! list, our rendezvous client, or your own (kad, a DNS list). The [`Source`] trait projects a
//! source's events onto [`Discovery`] values labelled with the source's name. That is all a
//! behaviour needs to take part.
//!
//! [`Behaviour<S>`] wraps a source `S` (usually a `#[derive(NetworkBehaviour)]` struct of
//! sources), passes every event of `S` through untouched as [`Event::Source`], and on top of
//! that deduplicates by peer and address across sources in an [`AddressBook`]:
//! [`Event::Discovered`] comes once per new peer or new address, [`Event::Expired`] only when no
//! source knows the peer any more. It tells the swarm each new address
//! ([`ToSwarm::NewExternalAddrOfPeer`](libp2p::swarm::ToSwarm::NewExternalAddrOfPeer)), answers
//! the swarm's address lookups so `swarm.dial(peer_id)` works with a discovered peer id alone,
//! and can dial what it discovers ([`Config::with_dial_discovered`]).
//!
//! # Several sources
//!
//! Derive `NetworkBehaviour` for a struct of sources and implement [`Source`] for it by
//! delegating each variant of the generated event enum to the field that produced it:
//!
//! ```
//! use libp2p::{swarm::NetworkBehaviour, PeerId};
//! use rendezvous_discovery::{bootstrap, client, discovery};
//!
//! #[derive(NetworkBehaviour)]
//! struct Sources {
//!     rendezvous: client::Behaviour,
//!     bootstrap: bootstrap::Behaviour,
//! }
//!
//! impl discovery::Source for Sources {
//!     fn discoveries(&self, event: &SourcesEvent, found: &mut discovery::Found) {
//!         match event {
//!             SourcesEvent::Rendezvous(e) => self.rendezvous.discoveries(e, found),
//!             SourcesEvent::Bootstrap(e) => self.bootstrap.discoveries(e, found),
//!         }
//!     }
//! }
//!
//! // Then, in the swarm, next to identify, ping, kad, ...:
//! #[derive(NetworkBehaviour)]
//! struct Node {
//!     discovery: discovery::Behaviour<Sources>,
//!     ping: libp2p::ping::Behaviour,
//! }
//! ```
//!
//! # Your own source
//!
//! Implement [`Source`] for your behaviour and say what each event means. Both the trait and
//! rust-libp2p's behaviours are foreign to your crate, so wrap one in a derived struct:
//!
//! ```
//! use libp2p::{kad, swarm::NetworkBehaviour};
//! use rendezvous_discovery::discovery::{Found, Source};
//!
//! #[derive(NetworkBehaviour)]
//! struct Kad {
//!     kad: kad::Behaviour<kad::store::MemoryStore>,
//! }
//!
//! impl Source for Kad {
//!     fn discoveries(&self, event: &KadEvent, found: &mut Found) {
//!         let KadEvent::Kad(kad::Event::RoutingUpdated { peer, addresses, .. }) = event else {
//!             return;
//!         };
//!         found.discovered("kad", *peer, addresses.iter().cloned());
//!     }
//! }
//! ```

mod address_book;
mod behaviour;

use libp2p::{
    swarm::{behaviour::toggle::Toggle, NetworkBehaviour},
    Multiaddr, PeerId,
};

pub use address_book::{AddressBook, Update, MAX_ADDRS_PER_PEER, MAX_PEERS};
pub use behaviour::{Behaviour, Config, Event, DEFAULT_MAX_DIALS_IN_FLIGHT, MAX_QUEUED_DIALS};

/// What a source says about a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovery {
    /// The source knows `peer` at `addrs` (possibly a repetition of an earlier report).
    Discovered {
        /// The peer.
        peer: PeerId,
        /// Its addresses, with or without a trailing `/p2p/<peer>`.
        addrs: Vec<Multiaddr>,
    },
    /// The source no longer knows `peer`.
    Expired {
        /// The peer.
        peer: PeerId,
    },
}

/// The discoveries one source event carries, each labelled with the source that made it.
///
/// [`Source::discoveries`] fills it; the aggregator reads it.
#[derive(Debug, Default)]
pub struct Found {
    items: Vec<(&'static str, Discovery)>,
}

impl Found {
    /// An empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    /// `source` knows `peer` at `addrs`.
    pub fn discovered(
        &mut self,
        source: &'static str,
        peer: PeerId,
        addrs: impl IntoIterator<Item = Multiaddr>,
    ) {
        self.push(
            source,
            Discovery::Discovered {
                peer,
                addrs: addrs.into_iter().collect(),
            },
        );
    }

    /// `source` no longer knows `peer`.
    pub fn expired(&mut self, source: &'static str, peer: PeerId) {
        self.push(source, Discovery::Expired { peer });
    }

    /// Adds one labelled discovery.
    pub fn push(&mut self, source: &'static str, discovery: Discovery) {
        self.items.push((source, discovery));
    }

    /// Whether nothing was found.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The discoveries, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = &(&'static str, Discovery)> + '_ {
        self.items.iter()
    }

    /// Takes the discoveries out, leaving the collection empty.
    pub fn drain(&mut self) -> impl Iterator<Item = (&'static str, Discovery)> + '_ {
        self.items.drain(..)
    }
}

/// A [`NetworkBehaviour`] whose events can say that peers were discovered or expired.
///
/// `discoveries` is called with every event the behaviour emits, right after it was emitted
/// (so `self` is already in the state the event describes). Add what the event means to `found`,
/// labelled with a short, fixed name of the source (`"mdns"`, `"bootstrap"`, `"rendezvous"`);
/// add nothing for events that are not about discovery. Labels are how the aggregator knows
/// which sources still know a peer, so one source uses one label.
///
/// For a `#[derive(NetworkBehaviour)]` struct of sources, delegate per variant of the generated
/// event enum; see the [module docs](self).
pub trait Source: NetworkBehaviour {
    /// Adds the discoveries `event` carries to `found`.
    fn discoveries(&self, event: &Self::ToSwarm, found: &mut Found);
}

/// A disabled source discovers nothing.
impl<S: Source> Source for Toggle<S> {
    fn discoveries(&self, event: &Self::ToSwarm, found: &mut Found) {
        if let Some(inner) = self.as_ref() {
            inner.discoveries(event, found);
        }
    }
}
