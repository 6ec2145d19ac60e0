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

use super::{
    handler::{FromBehaviour, Handler, InboundRequest, Request, ToBehaviour},
    Config, Event, Limit, RateLimiter, Registrations, Removal,
};
use crate::codec::{
    DiscoverPage, ErrorCode, ErrorResponse, Message, Namespace, RecordFormat, Registration,
};

/// The rendezvous server as a [`NetworkBehaviour`]. See the [module docs](super) for its rules.
pub struct Behaviour {
    config: Config,
    store: Registrations,
    rate: RateLimiter,
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

    /// Hints which record format `peer` decodes (for example from identify's agent version), for
    /// as long as it has not registered: the format of its latest REGISTER wins. The server sets
    /// a Standard hint itself when the peer lists
    /// [`STANDARD_RECORDS_PROTOCOL`](crate::STANDARD_RECORDS_PROTOCOL); the
    /// latest hint wins. Forgotten when the peer's last connection closes. See the
    /// [module docs](super).
    pub fn set_peer_record_format(&mut self, peer: PeerId, format: RecordFormat) {
        self.store.set_peer_record_format(peer, format);
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

    fn handle_request(&mut self, peer: PeerId, request: InboundRequest) {
        let now = Instant::now();
        let had_registrations = self.store.count_of(&peer) > 0;
        let InboundRequest {
            request,
            responder,
            received,
        } = request;
        // Read after the store answered, so the duration includes its work.
        let duration = || Instant::now().saturating_duration_since(received);
        let (response, event) = match request {
            Request::Register(registration) => {
                let namespace = registration.namespace.clone();
                let record = registration.record.clone();
                let result = if self.rate.try_acquire(peer, now) {
                    self.store
                        .register(peer, registration, now)
                        .map_err(|error| {
                            let limit = register_limit(&error, record.peer_id() == peer);
                            (error, limit)
                        })
                } else {
                    Err((self.rate_limited(), Some(Limit::Rate)))
                };
                let (result, event) = match result {
                    Ok(ttl) => (
                        Ok(ttl),
                        Event::PeerRegistered {
                            peer,
                            registration: Registration {
                                namespace,
                                record,
                                ttl,
                            },
                            duration: duration(),
                        },
                    ),
                    Err((error, limit)) => (
                        Err(error.clone()),
                        Event::PeerNotRegistered {
                            peer,
                            namespace,
                            error,
                            limit,
                            duration: duration(),
                        },
                    ),
                };
                (Some(Message::RegisterResponse(result)), Some(event))
            }
            Request::Unregister(namespace) => {
                let removed = self.store.unregister(peer, &namespace);
                (
                    None,
                    removed.map(|_| Event::PeerUnregistered {
                        peer,
                        namespace,
                        cause: Removal::Unregister,
                    }),
                )
            }
            Request::Discover {
                namespace,
                cookie,
                limit,
            } => {
                let result = if self.rate.try_acquire(peer, now) {
                    self.store
                        .discover(peer, namespace.as_ref(), cookie.as_ref(), limit, now)
                        .map_err(|error| (error, None))
                } else {
                    Err((self.rate_limited(), Some(Limit::Rate)))
                };
                match result {
                    Ok((registrations, cookie)) => {
                        let event = Event::DiscoverServed {
                            peer,
                            namespace,
                            count: registrations.len(),
                            duration: duration(),
                        };
                        let page = DiscoverPage {
                            registrations,
                            cookie: Some(cookie),
                            skipped: 0,
                        };
                        (Some(Message::DiscoverResponse(Ok(page))), Some(event))
                    }
                    Err((error, limit)) => (
                        Some(Message::DiscoverResponse(Err(error.clone()))),
                        Some(Event::DiscoverNotServed {
                            peer,
                            namespace,
                            error,
                            limit,
                            duration: duration(),
                        }),
                    ),
                }
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
                self.store.forget_peer_record_format(&peer_id);
                if self.config.remove_on_disconnect {
                    for registration in self.store.remove_peer(&peer_id) {
                        self.events
                            .push_back(ToSwarm::GenerateEvent(Event::PeerUnregistered {
                                peer: peer_id,
                                namespace: registration.namespace,
                                cause: Removal::Disconnect,
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
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            ToBehaviour::Request(request) => self.handle_request(peer, request),
            ToBehaviour::DecodesStandardRecords => {
                tracing::debug!(%peer, "peer lists the standard-records marker");
                self.store
                    .set_peer_record_format(peer, RecordFormat::Standard);
            }
            ToBehaviour::Rejected { kind, error } => {
                self.events
                    .push_back(ToSwarm::GenerateEvent(Event::RequestRejected {
                        peer,
                        kind,
                        error,
                    }));
            }
            ToBehaviour::StreamRefused(limit) => {
                self.events
                    .push_back(ToSwarm::GenerateEvent(Event::StreamRefused { peer, limit }));
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(event);
            }
            let now = Instant::now();
            if let Some(registration) = self.store.poll_expired(now) {
                let peer = registration.record.peer_id();
                self.update_keep_alive(peer, true);
                self.events
                    .push_back(ToSwarm::GenerateEvent(Event::RegistrationExpired(
                        registration,
                    )));
                continue;
            }
            let Some(deadline) = self.store.poll_timeout() else {
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

/// The bound behind a REGISTER the store refused, by [`Registrations::register`]'s rules:
/// `E_NOT_AUTHORIZED` for a record of the connection's own peer is its per-peer limit (for
/// another peer's record it is the signer check), and `E_UNAVAILABLE` is the total limit.
fn register_limit(error: &ErrorResponse, own_record: bool) -> Option<Limit> {
    match error.code {
        ErrorCode::NotAuthorized if own_record => Some(Limit::PeerRegistrations),
        ErrorCode::Unavailable => Some(Limit::Registrations),
        _ => None,
    }
}
