//! The thin `NetworkBehaviour` shell around the schedule.

use std::{
    collections::{HashMap, VecDeque},
    task::{Context, Poll},
    time::Instant,
};

use libp2p::{
    core::{transport::PortUse, Endpoint},
    identity::Keypair,
    swarm::{
        behaviour::{ExternalAddrConfirmed, ExternalAddrExpired},
        dial_opts::{DialOpts, PeerCondition},
        ConnectionClosed, ConnectionDenied, ConnectionId, DialError, DialFailure, FromSwarm,
        NetworkBehaviour, NotifyHandler, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId,
};

use super::{
    handler::{Handler, InEvent, OutEvent},
    schedule::{Action, Request, Schedule},
    Config, Event, RequestError, RequestId,
};
use crate::{
    codec::{Message, NewRegistration, Subscribe},
    timer::Timer,
    Cookie, Namespace, RecordFormat, SignedRecord, Ttl,
};

/// Most addresses we keep in our own signed record; more would only bloat every REGISTER.
const MAX_OWN_ADDRESSES: usize = 32;

/// The rendezvous client: registers, keeps registrations fresh, polls servers and reports
/// discovered peers. See the [module docs](super).
pub struct Behaviour {
    key: Keypair,
    config_protocol: libp2p::StreamProtocol,
    request_timeout: std::time::Duration,
    /// Whether handlers list [`crate::STANDARD_RECORDS_PROTOCOL`].
    standard_marker: bool,
    schedule: Schedule,
    /// Armed for the schedule's next deadline; kept while an earlier one than needed is armed
    /// (it fires early and is armed again), so that an event does not re-arm it: arming a
    /// futures-timer delay wakes its helper thread.
    timer: Timer,
    /// Open connections per peer, first one used for requests.
    connections: HashMap<PeerId, Vec<ConnectionId>>,
    /// Which connection carries each request in flight.
    requests: HashMap<RequestId, (PeerId, ConnectionId)>,
    /// Our addresses: configured ones and the swarm's confirmed external ones.
    static_addresses: Vec<Multiaddr>,
    external: Vec<Multiaddr>,
    records: HashMap<RecordFormat, SignedRecord>,
    /// What to hand the swarm; bounded by what one schedule action produces (a poll drains it
    /// before asking the schedule again).
    queue: VecDeque<ToSwarm<Event, InEvent>>,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Behaviour")
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

impl Behaviour {
    /// A client signing its records with `key`.
    pub fn new(key: Keypair, config: Config) -> Self {
        let local = key.public().to_peer_id();
        let static_addresses = config.external_addresses.clone();
        let protocol = config.protocol.clone();
        let timeout = config.request_timeout;
        // The client reads all three layouts whatever it registers with, so a server of ours
        // may send it every entry.
        let standard_marker = true;
        let now = Instant::now();
        let mut schedule = Schedule::new(local, config, now);
        if !static_addresses.is_empty() {
            schedule.addresses_changed(now, true);
        }
        Self {
            key,
            config_protocol: protocol,
            request_timeout: timeout,
            standard_marker,
            schedule,
            timer: Timer::default(),
            connections: HashMap::new(),
            requests: HashMap::new(),
            static_addresses,
            external: Vec::new(),
            records: HashMap::new(),
            queue: VecDeque::new(),
        }
    }

    /// Registers in `namespace` at `server` once (not refreshed). `ttl` `None` asks for the
    /// server's default. The outcome is [`Event::Registered`] or [`Event::RegisterFailed`] with
    /// the returned id.
    pub fn register(
        &mut self,
        server: PeerId,
        namespace: Namespace,
        ttl: Option<Ttl>,
    ) -> RequestId {
        self.schedule
            .request(server, Request::register(namespace, ttl))
    }

    /// Unregisters from `namespace` at `server`, and stops refreshing that registration. The
    /// outcome is [`Event::Unregistered`] (once written) or [`Event::UnregisterFailed`].
    pub fn unregister(&mut self, server: PeerId, namespace: Namespace) -> RequestId {
        self.schedule
            .request(server, Request::Unregister { namespace })
    }

    /// Asks `server` for one page of registrations in `namespace` (`None`: all), starting after
    /// `cookie`. The outcome is [`Event::DiscoverCompleted`] or [`Event::DiscoverFailed`].
    pub fn discover(
        &mut self,
        server: PeerId,
        namespace: Option<Namespace>,
        cookie: Option<Cookie>,
        limit: Option<u64>,
    ) -> RequestId {
        let request = Request::Discover {
            namespace,
            cookie,
            limit,
        };
        self.schedule.request(server, request)
    }

    /// Stops the loops and unregisters every namespace on every connected server;
    /// [`Event::Stopped`] follows once every UNREGISTER is written.
    pub fn stop(&mut self) {
        self.schedule.stop();
    }

    /// Whether [`Behaviour::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        self.schedule.is_stopped()
    }

    /// The namespaces this client registers in and discovers (from its configuration).
    pub fn namespaces(&self) -> &[Namespace] {
        self.schedule.namespaces()
    }

    /// The addresses discovered for `peer` (over all namespaces).
    pub fn discovered_addresses(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.schedule.discovered_addresses(peer)
    }

    fn own_addresses(&self) -> Vec<Multiaddr> {
        let mut out = self.static_addresses.clone();
        for a in &self.external {
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        out.truncate(MAX_OWN_ADDRESSES);
        out
    }

    fn addresses_changed(&mut self) {
        self.records.clear();
        let has_any = !self.own_addresses().is_empty();
        self.schedule.addresses_changed(Instant::now(), has_any);
    }

    fn record(&mut self, format: RecordFormat) -> Result<SignedRecord, RequestError> {
        if let Some(record) = self.records.get(&format) {
            return Ok(record.clone());
        }
        let record = SignedRecord::new(&self.key, self.own_addresses(), format)
            .map_err(|e| RequestError::Signing(e.to_string()))?;
        self.records.insert(format, record.clone());
        Ok(record)
    }

    fn fail_requests_on(&mut self, connection: ConnectionId) {
        let now = Instant::now();
        let ids: Vec<RequestId> = self
            .requests
            .iter()
            .filter(|(_, (_, c))| *c == connection)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.requests.remove(&id);
            self.schedule
                .on_response(now, id, Err(RequestError::NotConnected));
        }
    }

    fn notify_all(&mut self, peer: PeerId, event: impl Fn() -> InEvent) {
        for &c in self.connections.get(&peer).into_iter().flatten() {
            self.queue.push_back(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::One(c),
                event: event(),
            });
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Event(event) => self.queue.push_back(ToSwarm::GenerateEvent(event)),
            Action::NewAddressOfPeer { peer, address } => {
                self.queue.push_back(ToSwarm::NewExternalAddrOfPeer {
                    peer_id: peer,
                    address,
                })
            }
            Action::KeepAlive { server, on } => self.notify_all(server, || InEvent::KeepAlive(on)),
            Action::Dial { server } => {
                let opts = DialOpts::peer_id(server)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .addresses(self.schedule.server_addresses(&server))
                    .extend_addresses_through_behaviour()
                    .build();
                self.queue.push_back(ToSwarm::Dial { opts });
            }
            Action::Send {
                server,
                request,
                body,
            } => self.send(server, request, body),
            Action::Subscribe {
                server,
                namespace,
                cookie,
                limit,
            } => self.subscribe(server, namespace, cookie, limit),
        }
    }

    /// Subscribes to pushes of `namespace` on the first connection to `server`.
    fn subscribe(
        &mut self,
        server: PeerId,
        namespace: Namespace,
        cookie: Option<Cookie>,
        limit: u64,
    ) {
        let Some(&connection) = self.connections.get(&server).and_then(|c| c.first()) else {
            let now = Instant::now();
            return self
                .schedule
                .subscription_ended(now, server, namespace, None);
        };
        let subscribe = Subscribe {
            namespace: Some(namespace.clone()),
            cookie,
            limit: Some(limit),
        };
        self.queue.push_back(ToSwarm::NotifyHandler {
            peer_id: server,
            handler: NotifyHandler::One(connection),
            event: InEvent::Subscribe {
                namespace,
                subscribe,
            },
        });
    }

    /// Sends a request on the first connection to `server`; a request that cannot go out
    /// fails at once.
    fn send(&mut self, server: PeerId, request: RequestId, body: Request) {
        let now = Instant::now();
        let Some(&connection) = self.connections.get(&server).and_then(|c| c.first()) else {
            return self
                .schedule
                .on_response(now, request, Err(RequestError::NotConnected));
        };
        match self.message(body) {
            Ok(message) => {
                self.requests.insert(request, (server, connection));
                self.queue.push_back(ToSwarm::NotifyHandler {
                    peer_id: server,
                    handler: NotifyHandler::One(connection),
                    event: InEvent::Send { request, message },
                });
            }
            Err(e) => self.schedule.on_response(now, request, Err(e)),
        }
    }

    fn message(&mut self, body: Request) -> Result<Message, RequestError> {
        Ok(match body {
            Request::Register {
                namespace,
                ttl,
                format,
            } => Message::Register(NewRegistration {
                namespace,
                record: self.record(format)?,
                ttl,
            }),
            Request::Unregister { namespace } => Message::Unregister {
                namespace,
                peer: Some(self.key.public().to_peer_id()),
            },
            Request::Discover {
                namespace,
                cookie,
                limit,
            } => Message::Discover {
                namespace,
                cookie,
                limit,
            },
        })
    }

    fn new_handler(&self, peer: PeerId) -> Handler {
        Handler::new(
            self.config_protocol.clone(),
            self.request_timeout,
            self.schedule.is_server(&peer) && !self.schedule.is_stopped(),
        )
        .with_standard_marker(self.standard_marker)
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

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        maybe_peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let Some(peer) = maybe_peer else {
            return Ok(Vec::new());
        };
        let mut addrs = self.schedule.server_addresses(&peer);
        for a in self.schedule.discovered_addresses(&peer) {
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        Ok(addrs)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        let now = Instant::now();
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                let conns = self.connections.entry(e.peer_id).or_default();
                conns.push(e.connection_id);
                if conns.len() == 1 {
                    self.schedule.connected(now, e.peer_id);
                }
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                remaining_established,
                ..
            }) => {
                self.fail_requests_on(connection_id);
                if let Some(conns) = self.connections.get_mut(&peer_id) {
                    conns.retain(|c| *c != connection_id);
                    if conns.is_empty() {
                        self.connections.remove(&peer_id);
                    }
                }
                if remaining_established == 0 {
                    self.schedule.disconnected(now, peer_id);
                }
            }
            FromSwarm::DialFailure(DialFailure {
                peer_id: Some(peer),
                error,
                ..
            }) => {
                if matches!(error, DialError::DialPeerConditionFalse(_)) {
                    return;
                }
                if !self.connections.contains_key(&peer) {
                    self.schedule.dial_failed(now, peer);
                }
            }
            FromSwarm::ExternalAddrConfirmed(ExternalAddrConfirmed { addr })
                if !self.external.contains(addr) =>
            {
                self.external.push(addr.clone());
                self.addresses_changed();
            }
            FromSwarm::ExternalAddrExpired(ExternalAddrExpired { addr }) => {
                if let Some(i) = self.external.iter().position(|a| a == addr) {
                    self.external.remove(i);
                    self.addresses_changed();
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
        let now = Instant::now();
        match event {
            OutEvent::Outcome { request, result } => {
                self.requests.remove(&request);
                self.schedule.on_response(now, request, result);
            }
            OutEvent::RemoteProtocolsKnown => self.schedule.remote_protocols_known(now, peer),
            OutEvent::RemoteSupportsProtocol => self.schedule.add_learned_server(now, peer),
            OutEvent::RemoteSupportsPush => self.schedule.push_supported(now, peer),
            OutEvent::Pushed { namespace, push } => {
                self.schedule.on_pushed(now, peer, namespace, push)
            }
            OutEvent::SubscriptionEnded { namespace, error } => self
                .schedule
                .subscription_ended(now, peer, namespace, error),
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        loop {
            if let Some(out) = self.queue.pop_front() {
                return Poll::Ready(out);
            }
            let now = Instant::now();
            if let Some(action) = self.schedule.poll(now) {
                self.act(action);
                continue;
            }
            // Whatever is due was acted on above, so the swarm needs waking only at the next
            // deadline; calls and events in between are followed by a poll anyway.
            if self
                .timer
                .poll(cx, self.schedule.poll_timeout(), now)
                .is_pending()
            {
                return Poll::Pending;
            }
        }
    }
}
