//! The thin [`NetworkBehaviour`] shell: a router over the parts that own the server's state,
//! each in its own file with its own invariants.
//!
//! - `connections` (`Connections`): each peer's connections, which to keep alive, which to
//!   close near the connection cap;
//! - `formats` (`PeerFormats`): what each peer reads, and the DISCOVERs held while the server
//!   asks a peer's identify;
//! - `rate` ([`RateLimiter`]): each peer's request rate;
//! - `in_flight` (`InFlight`): the requests submitted to the store and not yet answered;
//! - `store`: the registrations, behind the [store boundary](super::store);
//! - `timer`: the one timer, armed for the earliest deadline of the store, `formats` and
//!   `connections`.
//!
//! A request read by a connection's handler passes the refusals the shell decides itself (the
//! peer's rate, the requests in flight, by the [rule book](super::rules)); a DISCOVER then waits
//! in `formats` until its asker's format is known; then it goes to the store. What the store
//! completes goes out as `answers` say.

use std::{
    collections::VecDeque,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::channel::oneshot;
use libp2p::{
    core::{transport::PortUse, Endpoint},
    swarm::{
        CloseConnection, ConnectionClosed, ConnectionDenied, ConnectionId, DialFailure, FromSwarm,
        ListenFailure, NetworkBehaviour, NotifyHandler, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId,
};

use super::{
    answers::{self, Answer},
    connections::{Admission, Connections},
    formats::{Decision, PeerFormats},
    gate::Gate,
    handler::{FromBehaviour, Handler, InboundRequest, ToBehaviour},
    in_flight::{Held, HeldDiscover, InFlight},
    rules::{self, Refusal},
    store::{Local, MemoryStore, Operation, Outcome, Store, StoreEvent, MAX_IN_FLIGHT},
    subscriptions::{FanOut, Key, NewSubscription, Queued, SubscriptionEnd, Subscriptions},
    Config, Event, InvalidConfig, Limit, PushDelays, RateLimiter, ServedFormats,
};
use crate::{
    codec::{Message, Namespace, Push, RecordFormat, Registration, Request},
    timer::Timer,
};

/// The rendezvous server as a [`NetworkBehaviour`]. See the [module docs](super) for its rules.
pub struct Behaviour {
    config: Config,
    store: Box<dyn Store>,
    rate: RateLimiter,
    formats: PeerFormats<Held>,
    connections: Connections,
    subscriptions: Subscriptions,
    /// Requests before pushes: push writes wait for a quiet moment (gate.rs).
    gate: Gate,
    /// How long pushes waited, counted by the push streams.
    push_delays: PushDelays,
    in_flight: InFlight,
    events: VecDeque<ToSwarm<Event, FromBehaviour>>,
    timer: Timer,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour")
            .field("registrations", &self.registration_count())
            .field("connected_peers", &self.connections.peer_count())
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

/// Time since `received`.
fn since(received: Instant) -> Duration {
    Instant::now().saturating_duration_since(received)
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
        let gate = Gate::new(config.push_quiet);
        Self {
            rate: RateLimiter::new(config.requests_per_second, config.request_burst),
            formats: PeerFormats::new(config.unknown_peer_formats, config.identify_wait),
            store: Box::new(store),
            connections: Connections::new(config.max_connections, config.connection_grace),
            subscriptions: Subscriptions::new(&config),
            in_flight: InFlight::new(gate.clone()),
            gate,
            push_delays: PushDelays::default(),
            config,
            events: VecDeque::new(),
            timer: Timer::default(),
        }
    }

    /// A server with `config` after [`Config::validate`] accepted it, keeping registrations in
    /// memory.
    pub fn try_new(config: Config) -> Result<Self, InvalidConfig> {
        config.validate()?;
        Ok(Self::new(config))
    }

    /// What the store answers at once about its registrations; `None` for a store whose
    /// registrations live elsewhere (see [`Store::local`]).
    pub fn local(&self) -> Option<&dyn Local> {
        self.store.local()
    }

    /// How long the pushes this server wrote waited, from their change to their write
    /// (`libp2p_rendezvous_server_push_delay_seconds`). The counters are shared: a clone
    /// keeps counting.
    pub fn push_delays(&self) -> &PushDelays {
        &self.push_delays
    }

    /// How many registrations are stored; `None` when the store cannot say at once (its
    /// registrations live elsewhere).
    pub fn registration_count(&self) -> Option<usize> {
        self.local().map(Local::registration_count)
    }

    /// How many namespaces have at least one registration; `None` when the store cannot say at
    /// once.
    pub fn namespace_count(&self) -> Option<usize> {
        self.local().map(Local::namespace_count)
    }

    /// The bytes the registrations hold, as the byte budget counts them; `None` when the store
    /// cannot say at once.
    pub fn stored_bytes(&self) -> Option<usize> {
        self.local().map(Local::stored_bytes)
    }

    /// The registrations in `namespace`, oldest first, with their remaining TTL; `None` when
    /// the store cannot say at once.
    pub fn registrations_in(&self, namespace: &Namespace) -> Option<Vec<Registration>> {
        let now = Instant::now();
        self.local()
            .map(|local| local.registrations_in(namespace, now))
    }

    /// The registrations of `peer`, with their remaining TTL; `None` when the store cannot say
    /// at once.
    pub fn registrations_of(&self, peer: &PeerId) -> Option<Vec<Registration>> {
        let now = Instant::now();
        self.local().map(|local| local.registrations_of(peer, now))
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

    /// Push subscriptions open (replaying or live).
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    /// Operations submitted to the store and not yet completed that count toward
    /// [`MAX_IN_FLIGHT`].
    pub fn operations_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The format of `peer`'s latest REGISTER, as far as the store knows at once (the shell
    /// also remembers the REGISTERs it answered on the peer's connections).
    fn registered_format(&self, peer: &PeerId) -> Option<RecordFormat> {
        self.local().and_then(|local| local.registered_format(peer))
    }

    /// Whether a new connection of `peer` starts kept alive (it holds registrations, as far as
    /// the store knows at once; a store that cannot say tells on the peer's first request).
    fn holds_registrations(&self, peer: &PeerId) -> bool {
        self.config.remove_on_disconnect
            && self.local().is_some_and(|local| local.count_of(peer) > 0)
    }

    /// Records the connection and makes its handler, which reads its keep-alive switch.
    fn new_handler(&mut self, peer: PeerId, connection: ConnectionId) -> Handler {
        let holds = self.holds_registrations(&peer);
        let keep_alive = self
            .connections
            .established(peer, connection, holds, Instant::now());
        Handler::new(
            &self.config,
            keep_alive,
            self.gate.clone(),
            self.push_delays.clone(),
        )
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

    /// Tells the connections of `peer` whether to stay alive, when the answer changed.
    fn update_keep_alive(&mut self, peer: PeerId, peer_registrations: usize) {
        if !self.config.remove_on_disconnect {
            return;
        }
        self.connections.set_holds(peer, peer_registrations > 0);
    }
}

/// Requests in.
impl Behaviour {
    fn on_request(&mut self, peer: PeerId, connection: ConnectionId, request: InboundRequest) {
        let InboundRequest {
            request,
            responder,
            received,
            // Given back when this returns: the request is handled (stored and answered, or
            // held), so pushes may go.
            pass: _pass,
        } = request;
        let now = Instant::now();
        match request {
            // UNREGISTER only frees state, and could not be told it was refused.
            Request::Unregister(namespace) => self.submit(
                Operation::Unregister { peer, namespace },
                responder,
                received,
            ),
            Request::Register(registration) => match self.refusal(peer, now) {
                Some(refusal) => {
                    let namespace = registration.namespace;
                    let answer =
                        answers::register_refused(peer, namespace, refusal, since(received));
                    self.send_answer(responder, answer);
                }
                None => self.submit(
                    Operation::Register { peer, registration },
                    responder,
                    received,
                ),
            },
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
                    received,
                };
                match self.refusal(peer, now) {
                    Some(refusal) => self.refuse_discover(peer, held, refusal),
                    None => self.route(peer, connection, Held::Discover(held), now),
                }
            }
        }
    }

    /// The refusal the shell decides itself for a REGISTER or DISCOVER, cheapest first: the
    /// peer's rate, then the requests waiting for the store.
    fn refusal(&mut self, peer: PeerId, now: Instant) -> Option<Refusal> {
        if !self.rate.try_acquire(peer, now) {
            let (rate, burst) = (self.config.requests_per_second, self.config.request_burst);
            return Some(rules::rate_limited(rate, burst));
        }
        self.in_flight
            .is_full()
            .then(|| rules::store_busy(MAX_IN_FLIGHT))
    }

    /// Serves a DISCOVER (or a subscription's replay) by what is known of its asker, or holds
    /// it until more is known.
    fn route(&mut self, peer: PeerId, connection: ConnectionId, held: Held, now: Instant) {
        let registered = self.registered_format(&peer);
        match self.formats.discover(peer, registered, held, now) {
            Decision::Serve(served, held) => self.serve_held(peer, served, held),
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
            Decision::Full(Held::Discover(held)) => {
                self.refuse_discover(peer, held, rules::too_many_held())
            }
            Decision::Full(Held::Subscription(key)) => {
                self.refuse_subscription(key, rules::too_many_held())
            }
        }
    }

    /// Serves what waited for `peer`'s format, now served `served`.
    fn serve_held(&mut self, peer: PeerId, served: ServedFormats, held: Held) {
        match held {
            Held::Discover(held) => self.submit_discover(peer, served, held),
            Held::Subscription(key) => self.start_replay(key, served),
        }
    }

    /// Submits a DISCOVER for a peer served `served`, unless the store has too much in flight.
    fn submit_discover(&mut self, peer: PeerId, served: ServedFormats, held: HeldDiscover) {
        if self.in_flight.is_full() {
            self.refuse_discover(peer, held, rules::store_busy(MAX_IN_FLIGHT));
            return;
        }
        let HeldDiscover {
            namespace,
            cookie,
            limit,
            responder,
            received,
        } = held;
        let operation = Operation::Discover {
            peer,
            served,
            namespace,
            cookie,
            limit,
        };
        self.submit(operation, responder, received);
    }

    fn refuse_discover(&mut self, peer: PeerId, held: HeldDiscover, refusal: Refusal) {
        let duration = since(held.received);
        let answer = answers::discover_refused(peer, held.namespace, refusal, duration);
        self.send_answer(held.responder, answer);
    }

    /// Serves DISCOVERs of `peer` that no longer wait, by what is known now.
    fn serve_released(&mut self, peer: PeerId, released: Vec<Held>) {
        if released.is_empty() {
            return;
        }
        let served = self.served_formats(&peer);
        for held in released {
            self.serve_held(peer, served, held);
        }
    }

    fn submit(
        &mut self,
        operation: Operation,
        responder: Option<oneshot::Sender<Message>>,
        received: Instant,
    ) {
        let id = self.in_flight.start(responder, received);
        self.store.submit(id, operation, Instant::now());
    }
}

/// Push subscriptions (docs/push.md).
impl Behaviour {
    fn on_subscribe(&mut self, peer: PeerId, connection: ConnectionId, new: NewSubscription) {
        let now = Instant::now();
        let namespace = new.namespace.clone();
        if let Some(refusal) = self.refusal(peer, now) {
            let push = Push::Page(Err(refusal.error));
            new.sender.send_last(Queued::new(push, false));
            if let Some(limit) = refusal.limit {
                let event = Event::SubscriptionRefused {
                    peer,
                    namespace,
                    limit,
                };
                self.events.push_back(ToSwarm::GenerateEvent(event));
            }
            return;
        }
        match self.subscriptions.open(peer, connection, new) {
            Ok(key) => {
                tracing::debug!(%peer, namespace = ?namespace, "push subscription opened");
                let event = Event::Subscribed { peer, namespace };
                self.events.push_back(ToSwarm::GenerateEvent(event));
                self.route(peer, connection, Held::Subscription(key), now);
            }
            Err(_) => {
                let limit = Limit::Subscriptions;
                let event = Event::SubscriptionRefused {
                    peer,
                    namespace,
                    limit,
                };
                self.events.push_back(ToSwarm::GenerateEvent(event));
            }
        }
    }

    /// Asks the store for the next replay page of `key`, its asker served `served`.
    fn start_replay(&mut self, key: Key, served: ServedFormats) {
        if self.in_flight.is_full() {
            self.refuse_subscription(key, rules::store_busy(MAX_IN_FLIGHT));
            return;
        }
        if let Some(operation) = self.subscriptions.replay(key, served) {
            let id = self.in_flight.start(None, Instant::now());
            self.subscriptions.submitted(id, key);
            self.store.submit(id, operation, Instant::now());
        }
    }

    fn refuse_subscription(&mut self, key: Key, refusal: Refusal) {
        let out = self.subscriptions.refuse(key, refusal.error);
        self.fanned_out(out);
    }

    /// The stream of `key` wrote a replayed page and takes the next.
    fn next_page(&mut self, key: Key) {
        if let Some(served) = self.subscriptions.served(key) {
            self.start_replay(key, served);
        }
    }

    /// Queues the events of what a change or a replayed page did to the subscriptions.
    fn fanned_out(&mut self, out: FanOut) {
        if out.pushed > 0 {
            let event = Event::Pushed {
                subscribers: out.pushed,
            };
            self.events.push_back(ToSwarm::GenerateEvent(event));
        }
        for (peer, namespace) in out.behind {
            tracing::debug!(%peer, "push subscription left behind; it resumes from its cookie");
            let event = Event::SubscriptionBehind { peer, namespace };
            self.events.push_back(ToSwarm::GenerateEvent(event));
        }
        for (peer, namespace, reason) in out.ended {
            tracing::debug!(%peer, ?reason, "push subscription ended");
            let event = Event::SubscriptionEnded {
                peer,
                namespace,
                reason,
            };
            self.events.push_back(ToSwarm::GenerateEvent(event));
        }
    }

    fn subscription_closed(&mut self, closed: Option<(PeerId, Option<Namespace>)>) {
        if let Some((peer, namespace)) = closed {
            let event = Event::SubscriptionEnded {
                peer,
                namespace,
                reason: SubscriptionEnd::Closed,
            };
            self.events.push_back(ToSwarm::GenerateEvent(event));
        }
    }
}

/// Answers out.
impl Behaviour {
    fn on_store_event(&mut self, event: StoreEvent) {
        if let StoreEvent::Completed { id, outcome, .. } = &event {
            if let Some(key) = self.subscriptions.take_replay(*id) {
                if let Outcome::Discovered {
                    result, up_to_date, ..
                } = outcome
                {
                    let out = self
                        .subscriptions
                        .replayed(key, result.clone(), *up_to_date);
                    self.fanned_out(out);
                }
                return;
            }
        }
        match event {
            StoreEvent::Changed(change) => {
                self.gate.changed();
                let out = self.subscriptions.changed_at(&change, Instant::now());
                self.fanned_out(out);
            }
            StoreEvent::ChangesLost => {
                tracing::debug!("the store's change feed lost changes; ending subscriptions");
                let out = self.subscriptions.lost();
                self.fanned_out(out);
            }
            StoreEvent::Completed {
                id,
                peer,
                outcome,
                peer_registrations,
            } => {
                let waiting = self.in_flight.finish(id);
                // Read after the store answered, so the duration includes its work (a commit).
                let duration = waiting
                    .as_ref()
                    .map_or(Duration::ZERO, |w| since(w.received));
                let answer = answers::completed(peer, outcome, duration);
                if let Some(format) = answer.registered {
                    let released = self.formats.registered(peer, format);
                    self.serve_released(peer, released);
                }
                self.send_answer(waiting.map(|w| w.responder), answer);
                self.update_keep_alive(peer, peer_registrations);
            }
            StoreEvent::Expired {
                registration,
                peer_registrations,
            } => {
                let peer = registration.record.peer_id();
                self.update_keep_alive(peer, peer_registrations);
                let event = Event::RegistrationExpired(registration);
                self.events.push_back(ToSwarm::GenerateEvent(event));
            }
            StoreEvent::Committed {
                operations,
                latency,
            } => {
                let event = Event::StoreCommitted {
                    operations,
                    latency,
                };
                self.events.push_back(ToSwarm::GenerateEvent(event));
            }
        }
    }

    /// Sends `answer`'s response to `responder` and queues its events.
    fn send_answer(&mut self, responder: Option<oneshot::Sender<Message>>, answer: Answer) {
        if let (Some(responder), Some(response)) = (responder, answer.response) {
            // The stream may be gone already; then nobody waits for the answer.
            let _ = responder.send(response);
        }
        self.events
            .extend(answer.events.into_iter().map(ToSwarm::GenerateEvent));
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
        connection: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        match self.connections.admit(Instant::now()) {
            Admission::Admitted => {}
            Admission::Replacing(idle_peer, idle) => self.close_idle(idle_peer, idle),
            Admission::Refused => {
                let limit = Limit::Connections;
                let event = Event::ConnectionRefused { peer, limit };
                self.events.push_back(ToSwarm::GenerateEvent(event));
                let max = self.config.max_connections;
                return Err(ConnectionDenied::new(ConnectionCapReached { max }));
            }
        }
        Ok(self.new_handler(peer, connection))
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.new_handler(peer, connection))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            // Recorded when its handler was made; another behaviour denied it after.
            FromSwarm::ListenFailure(ListenFailure {
                peer_id: Some(peer),
                connection_id,
                ..
            })
            | FromSwarm::DialFailure(DialFailure {
                peer_id: Some(peer),
                connection_id,
                ..
            }) => {
                self.connections.closed(peer, connection_id);
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                ..
            }) => {
                for closed in self.subscriptions.connection_closed(connection_id) {
                    self.subscription_closed(Some(closed));
                }
                if !self.connections.closed(peer_id, connection_id) {
                    return;
                }
                // Held DISCOVERs are dropped: their streams closed with the connection.
                drop(self.formats.forget(&peer_id));
                if self.config.remove_on_disconnect {
                    let operation = Operation::RemovePeer { peer: peer_id };
                    self.submit(operation, None, Instant::now());
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
                self.on_request(peer, connection, request);
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
                let event = Event::RequestRejected { peer, kind, error };
                self.events.push_back(ToSwarm::GenerateEvent(event));
                return;
            }
            ToBehaviour::StreamRefused(limit) => {
                let event = Event::StreamRefused { peer, limit };
                self.events.push_back(ToSwarm::GenerateEvent(event));
                return;
            }
            ToBehaviour::Subscribe(new) => {
                self.connections.active(connection, Instant::now());
                self.on_subscribe(peer, connection, new);
                return;
            }
            ToBehaviour::NextPage(id) => {
                self.next_page((connection, id));
                return;
            }
            ToBehaviour::Resume(id, cookie) => {
                let key = (connection, id);
                if self.subscriptions.resume(key, cookie, Instant::now()) {
                    self.next_page(key);
                }
                return;
            }
            ToBehaviour::SubscriptionClosed(id) => {
                let closed = self.subscriptions.closed((connection, id));
                self.subscription_closed(closed);
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
                self.serve_held(peer, served, held);
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
            // After every change and replayed page of this poll: their streams wake together.
            let wake_at = self
                .subscriptions
                .wake_if_quiet(&self.gate, now)
                .map(|in_| now + in_);
            let deadline = [
                self.store.poll_timeout(),
                self.formats.poll_timeout(),
                self.connections.poll_timeout(),
                wake_at,
            ]
            .into_iter()
            .flatten()
            .min();
            if self.timer.poll(cx, deadline, now).is_ready() {
                continue;
            }
            return Poll::Pending;
        }
    }
}
