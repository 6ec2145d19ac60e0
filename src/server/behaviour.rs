//! The thin [`NetworkBehaviour`] shell: moves requests from the connections to a [`Store`],
//! answers them when the store completes them, decides which record formats each DISCOVER is
//! served (holding it while the asker's identify is read), and runs one timer for the store's
//! expiry and the held DISCOVERs. This file is the behaviour and its connections; requests in
//! (refusals, held DISCOVERs, submission) are in `requests`, answers out in `answers`.

mod answers;
mod requests;

use std::{
    collections::{HashMap, VecDeque},
    task::{Context, Poll},
    time::Instant,
};

use futures::{channel::oneshot, FutureExt};
use futures_timer::Delay;
use libp2p::{
    core::{transport::PortUse, Endpoint},
    swarm::{
        CloseConnection, ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm,
        NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId,
};

use self::requests::HeldDiscover;
use super::{
    connections::{Admission, Connections},
    formats::PeerFormats,
    handler::{FromBehaviour, Handler, ToBehaviour},
    store::{MemoryStore, Operation, OperationId, Store},
    Config, Event, InvalidConfig, Limit, RateLimiter, Registrations, ServedFormats,
};
use crate::codec::{Message, Namespace, RecordFormat, Registration};

/// A REGISTER or DISCOVER submitted to the store, waiting for its answer.
#[derive(Debug)]
struct Waiting {
    responder: oneshot::Sender<Message>,
    /// When the handler read the request, to report how long answering took.
    received: Instant,
}

/// The rendezvous server as a [`NetworkBehaviour`]. See the [module docs](super) for its rules.
pub struct Behaviour {
    config: Config,
    store: Box<dyn Store>,
    rate: RateLimiter,
    /// What each peer reads, and the DISCOVERs held while the server asks.
    formats: PeerFormats<HeldDiscover>,
    /// Open connections per peer: when the last one closes, whom to keep alive, and which to
    /// close near the connection cap.
    connections: Connections,
    /// Responders of the REGISTERs and DISCOVERs submitted to the store and not completed (at
    /// most [`MAX_IN_FLIGHT`](super::MAX_IN_FLIGHT)).
    waiting: HashMap<OperationId, Waiting>,
    /// Operations submitted and not completed that count toward [`MAX_IN_FLIGHT`](super::MAX_IN_FLIGHT).
    in_flight: usize,
    next_id: u64,
    events: VecDeque<ToSwarm<Event, FromBehaviour>>,
    /// The armed expiry timer and the deadline it was armed for.
    timer: Option<(Instant, Delay)>,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour")
            .field("registrations", &self.registration_count())
            .field("connected_peers", &self.connections.peer_count())
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl Behaviour {
    /// A server with `config`, keeping registrations in memory ([`MemoryStore`]) (see
    /// [`Behaviour::try_new`] to have `config` validated first; an unvalidated configuration
    /// never makes the server panic, out-of-range values are clamped where they are used). Its
    /// cookie counter starts at the wall clock in microseconds, so cookies handed out before a
    /// restart stay meaningful after it.
    pub fn new(config: Config) -> Self {
        let store = MemoryStore::new(config.clone());
        Self::with_store(config, store)
    }

    /// A server with `config` whose registrations live in `store` (for example a
    /// [`SqliteStore`](super::store) that survives restarts). The store enforces the
    /// registration limits it was made with; `config` gives the shell's (rate, streams,
    /// disconnect removal).
    pub fn with_store(config: Config, store: impl Store) -> Self {
        Self {
            rate: RateLimiter::new(config.requests_per_second, config.request_burst),
            formats: PeerFormats::new(config.unknown_peer_formats, config.identify_wait),
            store: Box::new(store),
            connections: Connections::new(config.max_connections, config.connection_grace),
            config,
            waiting: HashMap::new(),
            in_flight: 0,
            next_id: 0,
            events: VecDeque::new(),
            timer: None,
        }
    }

    /// A server with `config` after [`Config::validate`] accepted it, keeping registrations in
    /// memory.
    pub fn try_new(config: Config) -> Result<Self, InvalidConfig> {
        config.validate()?;
        Ok(Self::new(config))
    }

    /// How many registrations are stored (0 for a store without a local index).
    pub fn registration_count(&self) -> usize {
        self.store.index().map_or(0, Registrations::len)
    }

    /// Established connections, including those the server is closing to make room (see
    /// [`Config::with_max_connections`]).
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Whether the store can serve requests (see [`Store::available`]): `false` while a shared
    /// store cannot reach its backend.
    pub fn store_available(&self) -> bool {
        self.store.available()
    }

    /// How many namespaces have at least one registration (0 for a store without a local
    /// index).
    pub fn namespace_count(&self) -> usize {
        self.store.index().map_or(0, Registrations::namespace_count)
    }

    /// The registrations in `namespace`, oldest first, with their remaining TTL (empty for a
    /// store without a local index).
    pub fn registrations_in(&self, namespace: &Namespace) -> Vec<Registration> {
        self.store
            .index()
            .map(|index| index.registrations_in(namespace, Instant::now()))
            .unwrap_or_default()
    }

    /// The registrations of `peer`, with their remaining TTL (empty for a store without a local
    /// index).
    pub fn registrations_of(&self, peer: &PeerId) -> Vec<Registration> {
        self.store
            .index()
            .map(|index| index.registrations_of(peer, Instant::now()))
            .unwrap_or_default()
    }

    /// Tells the server what `peer` reads, when the application knows better than the peer's
    /// identify answer (the server asks that itself; the latest of the two wins). The marker
    /// protocol and the peer's latest REGISTER still come first. Forgotten when the peer's last
    /// connection closes. See the [module docs](super), "Record formats".
    pub fn set_served_formats(&mut self, peer: PeerId, formats: ServedFormats) {
        let released = self.formats.set_hint(peer, formats);
        self.serve_released(peer, released);
    }

    /// What `peer` is served now (see the [module docs](super), "Record formats").
    pub fn served_formats(&self, peer: &PeerId) -> ServedFormats {
        self.formats.served(peer, self.registered_format(peer))
    }

    /// DISCOVERs waiting for their asker's format to be known.
    pub fn held_discovers(&self) -> usize {
        self.formats.held()
    }

    /// The format of `peer`'s latest REGISTER, as far as the store's index knows (the shell
    /// also remembers the REGISTERs it answered on the peer's connections).
    fn registered_format(&self, peer: &PeerId) -> Option<RecordFormat> {
        self.store
            .index()
            .and_then(|index| index.registered_format(peer))
    }

    /// The store's in-memory index, for reading; `None` for a store without one.
    pub fn registrations(&self) -> Option<&Registrations> {
        self.store.index()
    }

    /// Operations submitted to the store and not yet completed that count toward
    /// [`MAX_IN_FLIGHT`](super::MAX_IN_FLIGHT).
    pub fn operations_in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether a new connection of `peer` starts kept alive (it holds registrations, as far as
    /// the store's index knows; a store without one tells on the peer's first request).
    fn holds_registrations(&self, peer: &PeerId) -> bool {
        self.config.remove_on_disconnect
            && self
                .store
                .index()
                .is_some_and(|index| index.count_of(peer) > 0)
    }

    fn new_handler(&self, peer: PeerId) -> Handler {
        Handler::new(&self.config, self.holds_registrations(&peer))
    }

    /// Closes a connection that holds nothing, to make room near the connection cap.
    fn close_idle(&mut self, peer: PeerId, connection: ConnectionId) {
        tracing::debug!(%peer, ?connection, "closing an idle connection to make room");
        self.events.push_back(ToSwarm::CloseConnection {
            peer_id: peer,
            connection: CloseConnection::One(connection),
        });
        self.events
            .push_back(ToSwarm::GenerateEvent(Event::IdleConnectionClosed { peer }));
    }
}

/// Why a connection was denied: the server holds as many as it may, each holding something.
#[derive(Debug, thiserror::Error)]
#[error(
    "the server holds {max} connections, each with registrations or in its grace period; \
     try again later"
)]
struct ConnectionCapReached {
    max: usize,
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    /// Admits the connection below the cap; at the cap, in place of a connection that holds
    /// nothing (closed now), else refuses it.
    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        match self.connections.admit(Instant::now()) {
            Admission::Admitted => {}
            Admission::Replacing(idle_peer, idle) => self.close_idle(idle_peer, idle),
            Admission::Refused => {
                self.events
                    .push_back(ToSwarm::GenerateEvent(Event::ConnectionRefused {
                        peer,
                        limit: Limit::Connections,
                    }));
                return Err(ConnectionDenied::new(ConnectionCapReached {
                    max: self.config.max_connections,
                }));
            }
        }
        Ok(self.new_handler(peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.new_handler(peer))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(established) => {
                let holds = self.holds_registrations(&established.peer_id);
                self.connections.established(
                    established.peer_id,
                    established.connection_id,
                    holds,
                    Instant::now(),
                );
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                ..
            }) => {
                if !self.connections.closed(peer_id, connection_id) {
                    return;
                }
                // Held DISCOVERs are dropped: their streams closed with the connection.
                drop(self.formats.forget(&peer_id));
                if self.config.remove_on_disconnect {
                    self.submit(
                        Operation::RemovePeer { peer: peer_id },
                        None,
                        Instant::now(),
                    );
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        let released = match event {
            ToBehaviour::Request(request) => {
                self.connections.active(connection, Instant::now());
                self.handle_request(peer, connection, request);
                return;
            }
            ToBehaviour::DecodesStandardRecords => {
                tracing::debug!(%peer, "peer lists the standard-records marker");
                self.formats.marker_seen(peer)
            }
            ToBehaviour::Identified { served } => {
                tracing::debug!(%peer, %served, "peer's identify answered");
                self.formats.identified(peer, Some(served))
            }
            ToBehaviour::IdentifyFailed { error } => {
                tracing::debug!(%peer, %error, "peer's identify did not answer");
                self.formats.identified(peer, None)
            }
            ToBehaviour::Rejected { kind, error } => {
                self.events
                    .push_back(ToSwarm::GenerateEvent(Event::RequestRejected {
                        peer,
                        kind,
                        error,
                    }));
                return;
            }
            ToBehaviour::StreamRefused(limit) => {
                self.events
                    .push_back(ToSwarm::GenerateEvent(Event::StreamRefused { peer, limit }));
                return;
            }
        };
        self.serve_released(peer, released);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(event);
            }
            let now = Instant::now();
            if let Some((peer, held)) = self.formats.poll_expired(now) {
                let served = self.served_formats(&peer);
                tracing::debug!(%peer, %served, "DISCOVER waited long enough for identify");
                self.submit_discover(peer, served, held);
                continue;
            }
            if let Poll::Ready(event) = self.store.poll(cx, now) {
                self.on_store_event(event);
                continue;
            }
            if let Some((peer, connection)) = self.connections.poll_trim(now) {
                self.close_idle(peer, connection);
                continue;
            }
            let deadline = [
                self.store.poll_timeout(),
                self.formats.poll_timeout(),
                self.connections.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(deadline) = deadline else {
                self.timer = None;
                return Poll::Pending;
            };
            let timer = match &mut self.timer {
                Some((armed, timer)) if *armed == deadline => timer,
                slot => {
                    let (_, timer) = slot.insert((
                        deadline,
                        Delay::new(deadline.saturating_duration_since(now)),
                    ));
                    timer
                }
            };
            if timer.poll_unpin(cx).is_ready() {
                self.timer = None;
                continue;
            }
            return Poll::Pending;
        }
    }
}
