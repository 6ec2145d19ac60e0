//! The thin [`NetworkBehaviour`] shell around [`Registrations`].

use std::{
    collections::{HashMap, HashSet, VecDeque},
    task::{Context, Poll},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use futures::FutureExt;
use futures_timer::Delay;
use libp2p::{
    core::{transport::PortUse, Endpoint},
    swarm::{
        ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour,
        NotifyHandler, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId,
};

use futures::channel::oneshot;

use super::{
    formats::{Decision, PeerFormats},
    handler::{FromBehaviour, Handler, InboundRequest, Request, ToBehaviour},
    Config, Event, RateLimiter, Registrations, ServedFormats,
};
use crate::codec::{
    Cookie, DiscoverPage, ErrorCode, ErrorResponse, Message, Namespace, Registration,
};

/// A DISCOVER waiting for its asker's format to be known.
#[derive(Debug)]
struct HeldDiscover {
    namespace: Option<Namespace>,
    cookie: Option<Cookie>,
    limit: Option<u64>,
    responder: Option<oneshot::Sender<Message>>,
}

/// The rendezvous server as a [`NetworkBehaviour`]. See the [module docs](super) for its rules.
pub struct Behaviour {
    config: Config,
    store: Registrations,
    rate: RateLimiter,
    /// What each peer reads, and the DISCOVERs held while the server asks.
    formats: PeerFormats<HeldDiscover>,
    /// Open connections per peer, to know when the last one closes and whom to keep alive.
    connections: HashMap<PeerId, HashSet<ConnectionId>>,
    events: VecDeque<ToSwarm<Event, FromBehaviour>>,
    /// The armed expiry timer and the deadline it was armed for.
    timer: Option<(Instant, Delay)>,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour")
            .field("registrations", &self.store.len())
            .field("connected_peers", &self.connections.len())
            .finish_non_exhaustive()
    }
}

impl Behaviour {
    /// A server with `config`. Its cookie counter starts at the wall clock in microseconds, so
    /// cookies handed out before a restart stay meaningful after it.
    pub fn new(config: Config) -> Self {
        let start = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Self {
            rate: RateLimiter::new(config.requests_per_second, config.request_burst),
            store: Registrations::new(config.clone(), start),
            formats: PeerFormats::new(config.unknown_peer_formats),
            config,
            connections: HashMap::new(),
            events: VecDeque::new(),
            timer: None,
        }
    }

    /// How many registrations are stored.
    pub fn registration_count(&self) -> usize {
        self.store.len()
    }

    /// How many namespaces have at least one registration.
    pub fn namespace_count(&self) -> usize {
        self.store.namespace_count()
    }

    /// The registrations in `namespace`, oldest first, with their remaining TTL.
    pub fn registrations_in(&self, namespace: &Namespace) -> Vec<Registration> {
        self.store.registrations_in(namespace, Instant::now())
    }

    /// The registrations of `peer`, with their remaining TTL.
    pub fn registrations_of(&self, peer: &PeerId) -> Vec<Registration> {
        self.store.registrations_of(peer, Instant::now())
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
        self.formats
            .served(peer, self.store.registered_format(peer))
    }

    /// DISCOVERs waiting for their asker's format to be known.
    pub fn held_discovers(&self) -> usize {
        self.formats.held()
    }

    /// The store, for reading.
    pub fn registrations(&self) -> &Registrations {
        &self.store
    }

    fn rate_limited(&self) -> ErrorResponse {
        ErrorResponse::new(
            ErrorCode::Unavailable,
            format!(
                "too many requests; this server allows {} per second per peer (bursts of {})",
                self.config.requests_per_second, self.config.request_burst
            ),
        )
    }

    /// Tells the connections of `peer` whether to stay alive, when the answer changed.
    fn update_keep_alive(&mut self, peer: PeerId, had_registrations: bool) {
        if !self.config.remove_on_disconnect {
            return;
        }
        let has = self.store.count_of(&peer) > 0;
        if has == had_registrations {
            return;
        }
        for connection in self.connections.get(&peer).into_iter().flatten() {
            self.events.push_back(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::One(*connection),
                event: FromBehaviour::KeepAlive(has),
            });
        }
    }

    fn handle_request(&mut self, peer: PeerId, connection: ConnectionId, request: InboundRequest) {
        let now = Instant::now();
        let had_registrations = self.store.count_of(&peer) > 0;
        let InboundRequest { request, responder } = request;
        let mut registered = false;
        let (response, event) = match request {
            Request::Register(registration) => {
                let namespace = registration.namespace.clone();
                let record = registration.record.clone();
                let result = if self.rate.try_acquire(peer, now) {
                    self.store.register(peer, registration, now)
                } else {
                    Err(self.rate_limited())
                };
                registered = result.is_ok();
                let event = match &result {
                    Ok(ttl) => Event::PeerRegistered {
                        peer,
                        registration: Registration {
                            namespace,
                            record,
                            ttl: *ttl,
                        },
                    },
                    Err(error) => Event::PeerNotRegistered {
                        peer,
                        namespace,
                        error: error.clone(),
                    },
                };
                (Some(Message::RegisterResponse(result)), Some(event))
            }
            Request::Unregister(namespace) => {
                let removed = self.store.unregister(peer, &namespace);
                (
                    None,
                    removed.map(|_| Event::PeerUnregistered { peer, namespace }),
                )
            }
            Request::Discover {
                namespace,
                cookie,
                limit,
            } => {
                let held = HeldDiscover {
                    namespace,
                    cookie,
                    limit,
                    responder,
                };
                if !self.rate.try_acquire(peer, now) {
                    let error = self.rate_limited();
                    self.refuse_discover(peer, held, error);
                    return;
                }
                let registered = self.store.registered_format(&peer);
                match self.formats.discover(peer, registered, held, now) {
                    Decision::Serve(served, held) => self.serve_discover(peer, served, held, now),
                    Decision::Held { ask } => {
                        tracing::debug!(%peer, ask, "DISCOVER held until the peer's format is known");
                        if ask {
                            self.events.push_back(ToSwarm::NotifyHandler {
                                peer_id: peer,
                                handler: NotifyHandler::One(connection),
                                event: FromBehaviour::AskIdentify,
                            });
                        }
                    }
                    Decision::Full(held) => {
                        let error = ErrorResponse::new(
                            ErrorCode::Unavailable,
                            format!(
                                "too many DISCOVERs wait for their askers' identify ({} of this \
                                 peer, {} in all); try again in a moment",
                                super::MAX_HELD_PER_PEER,
                                super::MAX_HELD
                            ),
                        );
                        self.refuse_discover(peer, held, error);
                    }
                }
                return;
            }
        };
        if let (Some(responder), Some(response)) = (responder, response) {
            // The stream may be gone already; then nobody waits for the answer.
            let _ = responder.send(response);
        }
        if let Some(event) = event {
            self.events.push_back(ToSwarm::GenerateEvent(event));
        }
        self.update_keep_alive(peer, had_registrations);
        if registered {
            let released = self.formats.registered(&peer);
            self.serve_released(peer, released);
        }
    }

    /// Answers `held` with the next page for a peer served `served`.
    fn serve_discover(
        &mut self,
        peer: PeerId,
        served: ServedFormats,
        held: HeldDiscover,
        now: Instant,
    ) {
        let HeldDiscover {
            namespace,
            cookie,
            limit,
            responder,
        } = held;
        let result = self
            .store
            .discover(served, namespace.as_ref(), cookie.as_ref(), limit, now);
        let (response, event) = match result {
            Ok((registrations, cookie)) => {
                let event = Event::DiscoverServed {
                    peer,
                    namespace,
                    count: registrations.len(),
                };
                let page = DiscoverPage {
                    registrations,
                    cookie: Some(cookie),
                    skipped: 0,
                };
                (Message::DiscoverResponse(Ok(page)), event)
            }
            Err(error) => (
                Message::DiscoverResponse(Err(error.clone())),
                Event::DiscoverNotServed {
                    peer,
                    namespace,
                    error,
                },
            ),
        };
        if let Some(responder) = responder {
            // The stream may be gone already; then nobody waits for the answer.
            let _ = responder.send(response);
        }
        self.events.push_back(ToSwarm::GenerateEvent(event));
    }

    fn refuse_discover(&mut self, peer: PeerId, held: HeldDiscover, error: ErrorResponse) {
        if let Some(responder) = held.responder {
            let _ = responder.send(Message::DiscoverResponse(Err(error.clone())));
        }
        self.events
            .push_back(ToSwarm::GenerateEvent(Event::DiscoverNotServed {
                peer,
                namespace: held.namespace,
                error,
            }));
    }

    /// Serves DISCOVERs of `peer` that no longer wait, by what is known now.
    fn serve_released(&mut self, peer: PeerId, released: Vec<HeldDiscover>) {
        if released.is_empty() {
            return;
        }
        let served = self.served_formats(&peer);
        let now = Instant::now();
        for held in released {
            self.serve_discover(peer, served, held, now);
        }
    }

    fn new_handler(&self, peer: PeerId) -> Handler {
        let keep_alive = self.config.remove_on_disconnect && self.store.count_of(&peer) > 0;
        Handler::new(&self.config, keep_alive)
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
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
                self.connections
                    .entry(established.peer_id)
                    .or_default()
                    .insert(established.connection_id);
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                remaining_established,
                ..
            }) => {
                if let Some(connections) = self.connections.get_mut(&peer_id) {
                    connections.remove(&connection_id);
                }
                if remaining_established > 0 {
                    return;
                }
                self.connections.remove(&peer_id);
                // Held DISCOVERs are dropped: their streams closed with the connection.
                drop(self.formats.forget(&peer_id));
                if self.config.remove_on_disconnect {
                    for registration in self.store.remove_peer(&peer_id) {
                        self.events
                            .push_back(ToSwarm::GenerateEvent(Event::PeerUnregistered {
                                peer: peer_id,
                                namespace: registration.namespace,
                            }));
                    }
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
                self.serve_discover(peer, served, held, now);
                continue;
            }
            if let Some(registration) = self.store.poll_expired(now) {
                let peer = registration.record.peer_id();
                self.update_keep_alive(peer, true);
                self.events
                    .push_back(ToSwarm::GenerateEvent(Event::RegistrationExpired(
                        registration,
                    )));
                continue;
            }
            let deadline = match (self.store.poll_timeout(), self.formats.poll_timeout()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
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
