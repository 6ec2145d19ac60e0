//! The aggregator: a thin shell around the sources and the address book.

use std::{
    collections::{HashSet, VecDeque},
    task::{Context, Poll, Waker},
};

use libp2p::{
    core::{transport::PortUse, Endpoint},
    swarm::{
        behaviour::ConnectionEstablished,
        dial_opts::{DialOpts, PeerCondition},
        ConnectionClosed, ConnectionDenied, ConnectionId, DialFailure, FromSwarm, NetworkBehaviour,
        THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId,
};

use super::{AddressBook, Discovery, Found, Source, Update, MAX_ADDRS_PER_PEER, MAX_PEERS};

/// How many dials the aggregator has in flight at most by default, when it dials what it
/// discovers: enough to connect to a LAN quickly, few enough not to flood the node with
/// handshakes when a rendezvous server returns a thousand peers.
pub const DEFAULT_MAX_DIALS_IN_FLIGHT: usize = 8;

/// How many discovered peers wait for a dial slot at most; further ones are not dialed (they
/// stay in the address book, so the application can still dial them by peer id).
pub const MAX_QUEUED_DIALS: usize = 256;

/// Configuration of the aggregator [`Behaviour`].
#[derive(Debug, Clone)]
pub struct Config {
    dial_discovered: bool,
    max_dials_in_flight: usize,
    max_peers: usize,
    max_addrs_per_peer: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            dial_discovered: false,
            max_dials_in_flight: DEFAULT_MAX_DIALS_IN_FLIGHT,
            max_peers: MAX_PEERS,
            max_addrs_per_peer: MAX_ADDRS_PER_PEER,
        }
    }
}

impl Config {
    /// Whether to dial every newly discovered peer (or known peer at a new address) that is
    /// not connected. Off by default: the application decides whom to connect to.
    pub fn with_dial_discovered(mut self, dial: bool) -> Self {
        self.dial_discovered = dial;
        self
    }

    /// How many of its own dials the aggregator keeps in flight at most (at least 1).
    /// Default [`DEFAULT_MAX_DIALS_IN_FLIGHT`].
    pub fn with_max_dials_in_flight(mut self, max: usize) -> Self {
        self.max_dials_in_flight = max.max(1);
        self
    }

    /// How many peers the address book holds. Default [`MAX_PEERS`].
    pub fn with_max_peers(mut self, max: usize) -> Self {
        self.max_peers = max;
        self
    }

    /// How many addresses per peer the address book holds. Default [`MAX_ADDRS_PER_PEER`].
    pub fn with_max_addrs_per_peer(mut self, max: usize) -> Self {
        self.max_addrs_per_peer = max;
        self
    }
}

/// What the aggregator reports.
#[derive(Debug)]
pub enum Event<E> {
    /// A peer no source knew before, or new addresses of a known peer.
    Discovered {
        /// The peer.
        peer: PeerId,
        /// The addresses that are new (all its addresses when the peer is new), without a
        /// trailing `/p2p/<peer>`.
        addrs: Vec<Multiaddr>,
        /// The label of the source that reported them.
        source: &'static str,
    },
    /// No source knows `peer` any more.
    Expired {
        /// The peer.
        peer: PeerId,
        /// The label of the source whose expiry was the last (the others had expired it
        /// already).
        source: &'static str,
    },
    /// An event of the wrapped source, passed through untouched (discoveries included), right
    /// after the `Discovered`/`Expired` events it caused.
    Source(E),
}

/// The aggregator: wraps a [`Source`] (one, or a derived struct of several), deduplicates what
/// they discover and reports it once. See the [module docs](super).
pub struct Behaviour<S: Source> {
    inner: S,
    config: Config,
    book: AddressBook,
    /// Scratch space for projecting one event; empty between events.
    found: Found,
    /// What to hand the swarm next. Filled only from one inner event at a time and drained
    /// before the inner source is polled again, so bounded by what one event carries.
    pending: VecDeque<ToSwarm<Event<S::ToSwarm>, THandlerInEvent<S>>>,
    /// Peers waiting for a dial slot, at most [`MAX_QUEUED_DIALS`].
    dial_queue: VecDeque<PeerId>,
    /// Our own dials in flight, at most `config.max_dials_in_flight`.
    dials_in_flight: HashSet<ConnectionId>,
    /// Peers with at least one connection (bounded by the swarm's connections), not dialed.
    connected: HashSet<PeerId>,
    waker: Option<Waker>,
}

impl<S: Source> Behaviour<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, config: Config) -> Self {
        Self {
            inner,
            book: AddressBook::new(config.max_peers, config.max_addrs_per_peer),
            config,
            found: Found::new(),
            pending: VecDeque::new(),
            dial_queue: VecDeque::new(),
            dials_in_flight: HashSet::new(),
            connected: HashSet::new(),
            waker: None,
        }
    }

    /// The wrapped source.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The wrapped source, to call its methods.
    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// What the sources currently know.
    pub fn address_book(&self) -> &AddressBook {
        &self.book
    }

    /// How many of the aggregator's own dials are in flight.
    pub fn dials_in_flight(&self) -> usize {
        self.dials_in_flight.len()
    }

    fn handle_source_event(&mut self, event: S::ToSwarm) {
        self.inner.discoveries(&event, &mut self.found);
        let mut found = std::mem::take(&mut self.found);
        for (source, discovery) in found.drain() {
            match discovery {
                Discovery::Discovered { peer, addrs } => {
                    let new = match self.book.discovered(source, peer, addrs) {
                        Update::NewPeer(new) => new,
                        Update::NewAddresses(new) => new,
                        Update::Unchanged => continue,
                        Update::Full => {
                            tracing::debug!(%peer, source, "address book full; peer ignored");
                            continue;
                        }
                    };
                    for address in &new {
                        self.pending.push_back(ToSwarm::NewExternalAddrOfPeer {
                            peer_id: peer,
                            address: address.clone(),
                        });
                    }
                    if self.config.dial_discovered && !new.is_empty() {
                        self.queue_dial(peer);
                    }
                    self.pending
                        .push_back(ToSwarm::GenerateEvent(Event::Discovered {
                            peer,
                            addrs: new,
                            source,
                        }));
                }
                Discovery::Expired { peer } => {
                    if self.book.expired(source, &peer) {
                        self.dial_queue.retain(|p| *p != peer);
                        self.pending
                            .push_back(ToSwarm::GenerateEvent(Event::Expired { peer, source }));
                    }
                }
            }
        }
        // Give the allocation back for the next event.
        self.found = found;
        // After what it means, so an application that sees the source's event has seen the
        // discoveries it carried.
        self.pending
            .push_back(ToSwarm::GenerateEvent(Event::Source(event)));
    }

    fn queue_dial(&mut self, peer: PeerId) {
        if self.connected.contains(&peer) || self.dial_queue.contains(&peer) {
            return;
        }
        if self.dial_queue.len() >= MAX_QUEUED_DIALS {
            tracing::debug!(%peer, "dial queue full; not dialing the discovered peer");
            return;
        }
        self.dial_queue.push_back(peer);
    }

    fn next_dial(&mut self) -> Option<DialOpts> {
        while self.dials_in_flight.len() < self.config.max_dials_in_flight {
            let peer = self.dial_queue.pop_front()?;
            if self.connected.contains(&peer) || !self.book.contains(&peer) {
                continue;
            }
            // No addresses here: the swarm asks `handle_pending_outbound_connection`, which
            // answers with every address the book (and the sources) know at that moment.
            let opts = DialOpts::peer_id(peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            self.dials_in_flight.insert(opts.connection_id());
            return Some(opts);
        }
        None
    }

    fn dial_finished(&mut self, connection_id: ConnectionId) {
        if self.dials_in_flight.remove(&connection_id) && !self.dial_queue.is_empty() {
            if let Some(waker) = self.waker.take() {
                waker.wake();
            }
        }
    }
}

impl<S: Source> NetworkBehaviour for Behaviour<S> {
    type ConnectionHandler = S::ConnectionHandler;
    type ToSwarm = Event<S::ToSwarm>;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let mut addrs = self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )?;
        if let Some(peer) = maybe_peer {
            for addr in self.book.addresses_of(&peer) {
                if !addrs.contains(addr) && !addresses.contains(addr) {
                    addrs.push(addr.clone());
                }
            }
        }
        Ok(addrs)
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id,
                connection_id,
                ..
            }) => {
                self.connected.insert(peer_id);
                self.dial_finished(connection_id);
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                remaining_established: 0,
                ..
            }) => {
                self.connected.remove(&peer_id);
            }
            FromSwarm::DialFailure(DialFailure { connection_id, .. }) => {
                self.dial_finished(connection_id);
            }
            _ => {}
        }
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner
            .on_connection_handler_event(peer_id, connection_id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Poll::Ready(event);
            }
            if let Some(opts) = self.next_dial() {
                return Poll::Ready(ToSwarm::Dial { opts });
            }
            match self.inner.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(event)) => {
                    self.handle_source_event(event);
                    continue;
                }
                Poll::Ready(other) => return Poll::Ready(other.map_out(Event::Source)),
                Poll::Pending => {
                    self.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        }
    }
}
