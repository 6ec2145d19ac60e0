//! The pure core of the client: who to dial, what to send when, and what was discovered.
//!
//! No sockets, no clock: it is fed `now: Instant` and the outcome of every request, asked
//! [`Schedule::poll_timeout`] for when it next wants to act, and [`Schedule::poll`] for actions.
//! Jitter comes from a seeded RNG, so tests are deterministic.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    time::{Duration, Instant},
};

use libp2p::{Multiaddr, PeerId};
use rand::{rngs::StdRng, Rng, SeedableRng};

use super::{
    handler::Response, Config, Event, RequestError, RequestId, MAX_DISCOVERED, MAX_PAGES_PER_TICK,
    MAX_QUEUED_PER_SERVER, MAX_SERVERS, REFRESH_AT_MAX, REFRESH_AT_MIN,
};
use crate::{
    codec::{ErrorCode, Registration},
    Cookie, Namespace, RecordFormat, Ttl, MAX_TTL,
};

/// A request to send to a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// REGISTER with a record in `format`.
    Register {
        namespace: Namespace,
        ttl: Option<Ttl>,
        format: RecordFormat,
    },
    /// UNREGISTER.
    Unregister { namespace: Namespace },
    /// DISCOVER.
    Discover {
        namespace: Option<Namespace>,
        cookie: Option<Cookie>,
        limit: Option<u64>,
    },
}

/// What the schedule wants done.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// Dial the server.
    Dial { server: PeerId },
    /// Send a request on a connection to the server.
    Send {
        server: PeerId,
        request: RequestId,
        body: Request,
    },
    /// Report an event.
    Event(Event),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    /// Not connected, not to be redialed (learned servers, or after stop).
    Idle,
    /// Not connected; redial at the deadline.
    RedialAt(Instant),
    Dialing,
    Connected,
}

/// A periodic request: when it is next due (`None`: not scheduled) and whether one is in flight.
#[derive(Debug, Default)]
struct Task {
    due: Option<Instant>,
    inflight: Option<RequestId>,
    failures: u32,
    /// The addresses changed while a REGISTER was in flight: register again when it ends.
    redo: bool,
}

#[derive(Debug, Default)]
struct Disc {
    task: Task,
    cookie: Option<Cookie>,
    pages: u32,
}

#[derive(Debug, Clone)]
enum Manual {
    Register {
        namespace: Namespace,
        ttl: Option<Ttl>,
    },
    Unregister {
        namespace: Namespace,
    },
    Discover {
        namespace: Option<Namespace>,
        cookie: Option<Cookie>,
        limit: Option<u64>,
    },
}

#[derive(Debug)]
struct Server {
    configured: bool,
    conn: Conn,
    dial_failures: u32,
    format: RecordFormat,
    regs: BTreeMap<Namespace, Task>,
    discs: BTreeMap<Namespace, Disc>,
    queued: VecDeque<(RequestId, Manual)>,
    /// Namespaces this server holds a registration of ours in, as far as we know.
    held: BTreeSet<Namespace>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Auto,
    Manual,
    Stop,
}

#[derive(Debug)]
struct InFlight {
    server: PeerId,
    origin: Origin,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Register {
        namespace: Namespace,
        ttl: Option<Ttl>,
        format: RecordFormat,
    },
    Unregister {
        namespace: Namespace,
    },
    Discover {
        namespace: Option<Namespace>,
        had_cookie: bool,
        limit: Option<u64>,
    },
}

#[derive(Debug)]
struct Cached {
    addrs: Vec<Multiaddr>,
    seq: u64,
    expires: Instant,
}

/// The client's pure core.
#[derive(Debug)]
pub(crate) struct Schedule {
    local: PeerId,
    config: Config,
    rng: StdRng,
    next_id: u64,
    servers: BTreeMap<PeerId, Server>,
    has_addresses: bool,
    no_addresses_reported: bool,
    inflight: HashMap<RequestId, InFlight>,
    cache: HashMap<(PeerId, Namespace), Cached>,
    expiry: BTreeSet<(Instant, PeerId, Namespace)>,
    out: VecDeque<Action>,
    stopped: bool,
    /// After stop: requests that must end before `Stopped` is reported.
    stop_pending: BTreeSet<RequestId>,
    stopped_reported: bool,
}

impl Schedule {
    /// A schedule for `config`, started at `now`: configured servers are dialed at once.
    pub(crate) fn new(local: PeerId, config: Config, now: Instant) -> Self {
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        let mut schedule = Self {
            local,
            rng,
            next_id: 0,
            servers: BTreeMap::new(),
            has_addresses: false,
            no_addresses_reported: false,
            inflight: HashMap::new(),
            cache: HashMap::new(),
            expiry: BTreeSet::new(),
            out: VecDeque::new(),
            stopped: false,
            stop_pending: BTreeSet::new(),
            stopped_reported: false,
            config,
        };
        let configured: Vec<PeerId> = schedule.config.servers.iter().map(|(p, _)| *p).collect();
        for peer in configured {
            schedule.insert_server(peer, true, Conn::RedialAt(now));
        }
        schedule
    }

    fn insert_server(&mut self, peer: PeerId, configured: bool, conn: Conn) -> bool {
        if self.servers.contains_key(&peer) {
            return true;
        }
        if self.servers.len() >= MAX_SERVERS || peer == self.local {
            return false;
        }
        let mut regs = BTreeMap::new();
        let mut discs = BTreeMap::new();
        for ns in &self.config.namespaces {
            if self.config.registration {
                regs.insert(ns.clone(), Task::default());
            }
            if self.config.discovery {
                discs.insert(ns.clone(), Disc::default());
            }
        }
        self.servers.insert(
            peer,
            Server {
                configured,
                conn,
                dial_failures: 0,
                format: self.config.record_format,
                regs,
                discs,
                queued: VecDeque::new(),
                held: BTreeSet::new(),
            },
        );
        true
    }

    fn next_id(&mut self) -> RequestId {
        self.next_id += 1;
        RequestId(self.next_id)
    }

    /// Whether `peer` is one of our servers.
    pub(crate) fn is_server(&self, peer: &PeerId) -> bool {
        self.servers.contains_key(peer)
    }

    /// The addresses configured for a server.
    pub(crate) fn server_addresses(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.config
            .servers
            .iter()
            .filter(|(p, _)| p == peer)
            .flat_map(|(_, a)| a.iter().cloned())
            .collect()
    }

    /// The configured namespaces.
    pub(crate) fn namespaces(&self) -> &[Namespace] {
        &self.config.namespaces
    }

    /// Every address discovered for `peer`, over all namespaces.
    pub(crate) fn discovered_addresses(&self, peer: &PeerId) -> Vec<Multiaddr> {
        let mut out: Vec<Multiaddr> = Vec::new();
        for ((p, _), cached) in &self.cache {
            if p == peer {
                for a in &cached.addrs {
                    if !out.contains(a) {
                        out.push(a.clone());
                    }
                }
            }
        }
        out
    }

    /// Whether [`Schedule::stop`] was called.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// A connected peer supports the protocol: use it as a server. Returns whether it is one now.
    pub(crate) fn add_learned_server(&mut self, now: Instant, peer: PeerId) -> bool {
        if self.stopped || !self.config.learn_servers {
            return self.servers.contains_key(&peer);
        }
        if self.servers.contains_key(&peer) {
            return true;
        }
        if !self.insert_server(peer, false, Conn::Idle) {
            tracing::debug!(%peer, "not using a learned rendezvous server: at the server cap");
            return false;
        }
        self.out
            .push_back(Action::Event(Event::ServerAdded { server: peer }));
        self.connected(now, peer);
        true
    }

    /// The first connection to `peer` was established.
    pub(crate) fn connected(&mut self, now: Instant, peer: PeerId) {
        let Some(server) = self.servers.get_mut(&peer) else {
            return;
        };
        if server.conn == Conn::Connected {
            return;
        }
        server.conn = Conn::Connected;
        server.dial_failures = 0;
        for task in server.regs.values_mut() {
            if task.inflight.is_none() {
                task.due = Some(now);
            }
        }
        for disc in server.discs.values_mut() {
            if disc.task.inflight.is_none() {
                disc.task.due = Some(now);
                disc.pages = 0;
            }
        }
    }

    /// The last connection to `peer` closed. Requests in flight on it must have been failed
    /// with [`Schedule::on_response`] before.
    pub(crate) fn disconnected(&mut self, now: Instant, peer: PeerId) {
        let stopped = self.stopped;
        let delay = self.config.backoff_min;
        let Some(server) = self.servers.get_mut(&peer) else {
            return;
        };
        if !server.configured && server.queued.is_empty() {
            // A learned server is not redialed: forget it, freeing its place under the cap.
            self.servers.remove(&peer);
            return;
        }
        server.conn = if server.configured && !stopped {
            Conn::RedialAt(now + delay)
        } else {
            Conn::Idle
        };
        for task in server.regs.values_mut() {
            task.due = None;
        }
        for disc in server.discs.values_mut() {
            disc.task.due = None;
        }
    }

    /// A dial of `peer` failed.
    pub(crate) fn dial_failed(&mut self, now: Instant, peer: PeerId) {
        let Some(server) = self.servers.get(&peer) else {
            return;
        };
        if server.conn != Conn::Dialing {
            return;
        }
        let failures = server.dial_failures + 1;
        let delay = self.backoff(failures);
        let stopped = self.stopped;
        let Some(server) = self.servers.get_mut(&peer) else {
            return;
        };
        server.dial_failures = failures;
        server.conn = if server.configured && !stopped {
            Conn::RedialAt(now + delay)
        } else {
            Conn::Idle
        };
        let queued: Vec<_> = server.queued.drain(..).collect();
        for (id, manual) in queued {
            self.fail_manual(peer, id, manual, RequestError::NotConnected);
        }
    }

    fn fail_manual(&mut self, server: PeerId, request: RequestId, manual: Manual, e: RequestError) {
        let event = match manual {
            Manual::Register { namespace, .. } => Event::RegisterFailed {
                server,
                namespace,
                error: e,
                request,
            },
            Manual::Unregister { namespace } => Event::UnregisterFailed {
                server,
                namespace,
                error: e,
                request,
            },
            Manual::Discover { namespace, .. } => Event::DiscoverFailed {
                server,
                namespace,
                error: e,
                request,
            },
        };
        self.out.push_back(Action::Event(event));
    }

    /// The node's external addresses changed; `has_any` says whether it has one now. Every
    /// registration is made again with a new record.
    pub(crate) fn addresses_changed(&mut self, now: Instant, has_any: bool) {
        self.has_addresses = has_any;
        if !has_any {
            return;
        }
        self.no_addresses_reported = false;
        for server in self.servers.values_mut() {
            if server.conn != Conn::Connected {
                continue;
            }
            for task in server.regs.values_mut() {
                if task.inflight.is_some() {
                    task.redo = true;
                } else {
                    task.due = Some(now);
                }
            }
        }
    }

    fn queue_manual(&mut self, server: PeerId, manual: Manual) -> RequestId {
        let id = self.next_id();
        if self.stopped {
            self.fail_manual(server, id, manual, RequestError::Stopped);
            return id;
        }
        if !self.insert_server(server, false, Conn::Idle) {
            self.fail_manual(server, id, manual, RequestError::TooManyPending);
            return id;
        }
        let Some(s) = self.servers.get_mut(&server) else {
            return id;
        };
        if s.queued.len() >= MAX_QUEUED_PER_SERVER {
            self.fail_manual(server, id, manual, RequestError::TooManyPending);
            return id;
        }
        s.queued.push_back((id, manual));
        id
    }

    /// Manual REGISTER (one-shot, not refreshed).
    pub(crate) fn register(
        &mut self,
        server: PeerId,
        namespace: Namespace,
        ttl: Option<Ttl>,
    ) -> RequestId {
        self.queue_manual(server, Manual::Register { namespace, ttl })
    }

    /// Manual UNREGISTER; also stops the automatic registration of `namespace` at `server`.
    pub(crate) fn unregister(&mut self, server: PeerId, namespace: Namespace) -> RequestId {
        if let Some(s) = self.servers.get_mut(&server) {
            s.regs.remove(&namespace);
        }
        self.queue_manual(server, Manual::Unregister { namespace })
    }

    /// Manual DISCOVER.
    pub(crate) fn discover(
        &mut self,
        server: PeerId,
        namespace: Option<Namespace>,
        cookie: Option<Cookie>,
        limit: Option<u64>,
    ) -> RequestId {
        self.queue_manual(
            server,
            Manual::Discover {
                namespace,
                cookie,
                limit,
            },
        )
    }

    /// Stops every loop and unregisters every namespace held by a connected server.
    pub(crate) fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let peers: Vec<PeerId> = self.servers.keys().copied().collect();
        for peer in peers {
            let Some(server) = self.servers.get_mut(&peer) else {
                continue;
            };
            server.regs.clear();
            server.discs.clear();
            if matches!(server.conn, Conn::RedialAt(_)) {
                server.conn = Conn::Idle;
            }
            let queued: Vec<_> = server.queued.drain(..).collect();
            let held: Vec<Namespace> = if server.conn == Conn::Connected {
                server.held.iter().cloned().collect()
            } else {
                Vec::new()
            };
            for (id, manual) in queued {
                self.fail_manual(peer, id, manual, RequestError::Stopped);
            }
            for namespace in held {
                self.send_stop_unregister(peer, namespace);
            }
        }
        // A REGISTER in flight may still succeed: wait for it, then unregister.
        let registering: Vec<RequestId> = self
            .inflight
            .iter()
            .filter(|(_, f)| matches!(f.kind, Kind::Register { .. }))
            .map(|(id, _)| *id)
            .collect();
        self.stop_pending.extend(registering);
        self.check_stopped();
    }

    fn send_stop_unregister(&mut self, server: PeerId, namespace: Namespace) {
        let id = self.next_id();
        self.inflight.insert(
            id,
            InFlight {
                server,
                origin: Origin::Stop,
                kind: Kind::Unregister {
                    namespace: namespace.clone(),
                },
            },
        );
        self.stop_pending.insert(id);
        self.out.push_back(Action::Send {
            server,
            request: id,
            body: Request::Unregister { namespace },
        });
    }

    fn check_stopped(&mut self) {
        if self.stopped && !self.stopped_reported && self.stop_pending.is_empty() {
            self.stopped_reported = true;
            self.out.push_back(Action::Event(Event::Stopped));
        }
    }

    /// The outcome of request `id`.
    pub(crate) fn on_response(
        &mut self,
        now: Instant,
        id: RequestId,
        result: Result<Response, RequestError>,
    ) {
        let Some(flight) = self.inflight.remove(&id) else {
            return;
        };
        let was_stop_pending = self.stop_pending.remove(&id);
        let server = flight.server;
        match flight.kind {
            Kind::Register {
                namespace,
                ttl,
                format,
            } => self.on_register(
                now,
                id,
                server,
                flight.origin,
                namespace,
                ttl,
                format,
                result,
                was_stop_pending,
            ),
            Kind::Unregister { namespace } => {
                let event = match result {
                    Ok(_) => {
                        if let Some(s) = self.servers.get_mut(&server) {
                            s.held.remove(&namespace);
                        }
                        Event::Unregistered {
                            server,
                            namespace,
                            request: id,
                        }
                    }
                    Err(error) => Event::UnregisterFailed {
                        server,
                        namespace,
                        error,
                        request: id,
                    },
                };
                self.out.push_back(Action::Event(event));
            }
            Kind::Discover {
                namespace,
                had_cookie,
                limit,
            } => self.on_discover(
                now,
                id,
                server,
                flight.origin,
                namespace,
                had_cookie,
                limit,
                result,
            ),
        }
        self.check_stopped();
    }

    #[allow(clippy::too_many_arguments)]
    fn on_register(
        &mut self,
        now: Instant,
        id: RequestId,
        server: PeerId,
        origin: Origin,
        namespace: Namespace,
        ttl: Option<Ttl>,
        format: RecordFormat,
        result: Result<Response, RequestError>,
        stopping: bool,
    ) {
        let result = match result {
            Ok(Response::Registered(ttl)) => Ok(ttl),
            Ok(other) => Err(RequestError::UnexpectedResponse(format!(
                "{other:?} to a REGISTER"
            ))),
            Err(e) => Err(e),
        };
        if self.stopped {
            if let Err(error) = result {
                self.out.push_back(Action::Event(Event::RegisterFailed {
                    server,
                    namespace,
                    error,
                    request: id,
                }));
                return;
            }
            if let Ok(granted) = result {
                self.out.push_back(Action::Event(Event::Registered {
                    server,
                    namespace: namespace.clone(),
                    ttl: granted,
                    request: id,
                }));
                if stopping {
                    if let Some(s) = self.servers.get_mut(&server) {
                        s.held.insert(namespace.clone());
                    }
                    self.send_stop_unregister(server, namespace);
                }
            }
            return;
        }
        match result {
            Ok(granted) => {
                let refresh = self.refresh_delay(granted);
                let Some(s) = self.servers.get_mut(&server) else {
                    return;
                };
                s.held.insert(namespace.clone());
                if origin == Origin::Auto {
                    if let Some(task) = s.regs.get_mut(&namespace) {
                        task.inflight = None;
                        task.failures = 0;
                        task.due = Some(if std::mem::take(&mut task.redo) {
                            now
                        } else {
                            now + refresh
                        });
                    }
                }
                self.out.push_back(Action::Event(Event::Registered {
                    server,
                    namespace,
                    ttl: granted,
                    request: id,
                }));
            }
            Err(error) => {
                let fallback = self.config.legacy_fallback;
                let connected = self
                    .servers
                    .get(&server)
                    .is_some_and(|s| s.conn == Conn::Connected);
                let Some(s) = self.servers.get_mut(&server) else {
                    return;
                };
                // rust-libp2p 0.18 servers drop a standard-format REGISTER without a reply.
                let retry_legacy = error == RequestError::NoResponse
                    && format == RecordFormat::Standard
                    && fallback
                    && connected;
                if retry_legacy {
                    if s.format == RecordFormat::Standard {
                        tracing::debug!(%server, "server dropped a standard-format REGISTER; switching it to the legacy format");
                        s.format = RecordFormat::Legacy;
                    }
                    match origin {
                        Origin::Auto => {
                            if let Some(task) = s.regs.get_mut(&namespace) {
                                task.inflight = None;
                                task.due = Some(now);
                            }
                        }
                        _ => s
                            .queued
                            .push_front((id, Manual::Register { namespace, ttl })),
                    }
                    return;
                }
                if origin == Origin::Auto {
                    let failures = s
                        .regs
                        .get(&namespace)
                        .map_or(1, |t| t.failures.saturating_add(1));
                    let delay = self.backoff(failures);
                    if let Some(task) = self
                        .servers
                        .get_mut(&server)
                        .and_then(|s| s.regs.get_mut(&namespace))
                    {
                        task.inflight = None;
                        task.failures = failures;
                        task.redo = false;
                        task.due = connected.then_some(now + delay);
                    }
                }
                self.out.push_back(Action::Event(Event::RegisterFailed {
                    server,
                    namespace,
                    error,
                    request: id,
                }));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_discover(
        &mut self,
        now: Instant,
        id: RequestId,
        server: PeerId,
        origin: Origin,
        namespace: Option<Namespace>,
        had_cookie: bool,
        limit: Option<u64>,
        result: Result<Response, RequestError>,
    ) {
        if self.stopped && origin == Origin::Auto {
            return;
        }
        let result = match result {
            Ok(Response::Page(page)) => Ok(page),
            Ok(other) => Err(RequestError::UnexpectedResponse(format!(
                "{other:?} to a DISCOVER"
            ))),
            Err(e) => Err(e),
        };
        let connected = self
            .servers
            .get(&server)
            .is_some_and(|s| s.conn == Conn::Connected);
        match result {
            Ok(page) => {
                self.absorb(now, server, namespace.as_ref(), &page.registrations);
                if origin == Origin::Manual {
                    self.out.push_back(Action::Event(Event::DiscoverCompleted {
                        server,
                        namespace,
                        registrations: page.registrations,
                        cookie: page.cookie,
                        request: id,
                    }));
                    return;
                }
                let interval = self.config.interval;
                let Some(ns) = namespace else { return };
                self.out.push_back(Action::Event(Event::DiscoverPolled {
                    server,
                    namespace: ns.clone(),
                    registrations: page.registrations.len(),
                }));
                let Some(disc) = self
                    .servers
                    .get_mut(&server)
                    .and_then(|s| s.discs.get_mut(&ns))
                else {
                    return;
                };
                disc.task.inflight = None;
                disc.task.failures = 0;
                let entries = (page.registrations.len() + page.skipped) as u64;
                let full = limit.is_some_and(|l| entries >= l);
                let has_cookie = page.cookie.is_some();
                if page.cookie.is_some() {
                    disc.cookie = page.cookie;
                }
                // A full page means more may be waiting; a shorter one (also one the server cut
                // to fit its size cap) ends the paging until the next tick.
                if full && has_cookie && disc.pages + 1 < MAX_PAGES_PER_TICK {
                    disc.pages += 1;
                    disc.task.due = connected.then_some(now);
                } else {
                    disc.pages = 0;
                    disc.task.due = connected.then_some(now + interval);
                }
            }
            Err(error) => {
                if origin == Origin::Manual {
                    self.out.push_back(Action::Event(Event::DiscoverFailed {
                        server,
                        namespace,
                        error,
                        request: id,
                    }));
                    return;
                }
                let Some(ns) = namespace.clone() else { return };
                let failures = self
                    .servers
                    .get(&server)
                    .and_then(|s| s.discs.get(&ns))
                    .map_or(1, |d| d.task.failures.saturating_add(1));
                let invalid_cookie = matches!(&error, RequestError::Remote(e) if e.code == ErrorCode::InvalidCookie)
                    && had_cookie;
                let delay = self.backoff(failures);
                let Some(disc) = self
                    .servers
                    .get_mut(&server)
                    .and_then(|s| s.discs.get_mut(&ns))
                else {
                    return;
                };
                disc.task.inflight = None;
                disc.pages = 0;
                if invalid_cookie {
                    // The server forgot us (restart, cookie expiry): start over. Peers already
                    // known with the same addresses produce no new event.
                    tracing::debug!(%server, namespace = %ns, "cookie rejected; discovering from the start");
                    disc.cookie = None;
                    disc.task.due = connected.then_some(now);
                    self.out.push_back(Action::Event(Event::CookieReset {
                        server,
                        namespace: ns,
                    }));
                    return;
                }
                disc.task.failures = failures;
                disc.task.due = connected.then_some(now + delay);
                self.out.push_back(Action::Event(Event::DiscoverFailed {
                    server,
                    namespace,
                    error,
                    request: id,
                }));
            }
        }
    }

    /// Puts a page's registrations into the cache and reports what is new.
    fn absorb(
        &mut self,
        now: Instant,
        server: PeerId,
        asked: Option<&Namespace>,
        registrations: &[Registration],
    ) {
        for reg in registrations {
            let peer = reg.record.peer_id();
            if peer == self.local {
                continue;
            }
            if asked.is_some_and(|ns| *ns != reg.namespace) {
                tracing::debug!(%server, %peer, namespace = %reg.namespace, "skipping a registration in a namespace not asked for");
                continue;
            }
            if reg.ttl == 0 || reg.record.addresses().is_empty() {
                continue;
            }
            let expires = now + Duration::from_secs(reg.ttl.min(MAX_TTL));
            let mut addrs = reg.record.addresses().to_vec();
            addrs.dedup();
            let key = (peer, reg.namespace.clone());
            match self.cache.get_mut(&key) {
                Some(cached) => {
                    let old_deadline = cached.expires;
                    if expires > cached.expires {
                        cached.expires = expires;
                    }
                    let changed =
                        reg.record.seq() >= cached.seq && !same_set(&cached.addrs, &addrs);
                    if reg.record.seq() >= cached.seq {
                        cached.seq = reg.record.seq();
                    }
                    if changed {
                        cached.addrs = addrs.clone();
                    }
                    let new_deadline = cached.expires;
                    if new_deadline != old_deadline {
                        self.expiry.remove(&(old_deadline, key.0, key.1.clone()));
                        self.expiry.insert((new_deadline, key.0, key.1.clone()));
                    }
                    if changed {
                        self.out.push_back(Action::Event(Event::Discovered {
                            peer,
                            addrs,
                            namespace: key.1,
                            server,
                        }));
                    }
                }
                None => {
                    if self.cache.len() >= MAX_DISCOVERED {
                        tracing::debug!(%peer, "discovered-peer cache full; skipping");
                        continue;
                    }
                    self.expiry.insert((expires, peer, key.1.clone()));
                    self.cache.insert(
                        key.clone(),
                        Cached {
                            addrs: addrs.clone(),
                            seq: reg.record.seq(),
                            expires,
                        },
                    );
                    self.out.push_back(Action::Event(Event::Discovered {
                        peer,
                        addrs,
                        namespace: key.1,
                        server,
                    }));
                }
            }
        }
    }

    fn backoff(&mut self, failures: u32) -> Duration {
        let min = self.config.backoff_min;
        let max = self.config.backoff_max;
        let exp = failures.saturating_sub(1).min(31);
        let base = min.saturating_mul(1u32 << exp).min(max);
        let lo = base / 2;
        if base <= lo {
            return base;
        }
        self.rng.gen_range(lo..=base)
    }

    fn refresh_delay(&mut self, granted: Ttl) -> Duration {
        let ttl = granted.clamp(1, MAX_TTL) as f64;
        let fraction = self.rng.gen_range(REFRESH_AT_MIN..=REFRESH_AT_MAX);
        Duration::from_secs_f64(ttl * fraction).max(Duration::from_secs(1))
    }

    /// When the schedule next wants to act (`None`: only on input).
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        let mut consider = |t: Instant| {
            earliest = Some(earliest.map_or(t, |e: Instant| e.min(t)));
        };
        if let Some((t, _, _)) = self.expiry.first() {
            consider(*t);
        }
        for server in self.servers.values() {
            match server.conn {
                Conn::RedialAt(t) => consider(t),
                Conn::Connected => {
                    let waiting_for_addresses = !self.has_addresses;
                    if !waiting_for_addresses {
                        for task in server.regs.values() {
                            if let (Some(t), None) = (task.due, task.inflight) {
                                consider(t);
                            }
                        }
                    }
                    if !registering(server) {
                        for disc in server.discs.values() {
                            if let (Some(t), None) = (disc.task.due, disc.task.inflight) {
                                consider(t);
                            }
                        }
                    }
                }
                Conn::Idle | Conn::Dialing => {}
            }
        }
        earliest
    }

    /// The next action due at `now`, if any.
    pub(crate) fn poll(&mut self, now: Instant) -> Option<Action> {
        if let Some(action) = self.out.pop_front() {
            return Some(action);
        }
        if let Some((t, peer, ns)) = self.expiry.first().cloned() {
            if t <= now {
                self.expiry.pop_first();
                self.cache.remove(&(peer, ns.clone()));
                return Some(Action::Event(Event::Expired {
                    peer,
                    namespace: ns,
                }));
            }
        }
        let peers: Vec<PeerId> = self.servers.keys().copied().collect();
        for peer in peers {
            if let Some(action) = self.poll_server(now, peer) {
                return Some(action);
            }
        }
        self.out.pop_front()
    }

    fn poll_server(&mut self, now: Instant, peer: PeerId) -> Option<Action> {
        let has_addresses = self.has_addresses;
        let limit = self.config.limit;
        let ttl = self.config.ttl;
        let server = self.servers.get_mut(&peer)?;
        match server.conn {
            Conn::RedialAt(t) if t <= now => {
                server.conn = Conn::Dialing;
                return Some(Action::Dial { server: peer });
            }
            Conn::Idle if !server.queued.is_empty() => {
                server.conn = Conn::Dialing;
                return Some(Action::Dial { server: peer });
            }
            Conn::Connected => {}
            _ => return None,
        }
        if let Some((id, manual)) = server.queued.pop_front() {
            let (kind, body) = match manual {
                Manual::Register { namespace, ttl } => {
                    if !has_addresses {
                        self.fail_manual(
                            peer,
                            id,
                            Manual::Register { namespace, ttl },
                            RequestError::NoAddresses,
                        );
                        return self.out.pop_front();
                    }
                    let format = server.format;
                    (
                        Kind::Register {
                            namespace: namespace.clone(),
                            ttl,
                            format,
                        },
                        Request::Register {
                            namespace,
                            ttl,
                            format,
                        },
                    )
                }
                Manual::Unregister { namespace } => (
                    Kind::Unregister {
                        namespace: namespace.clone(),
                    },
                    Request::Unregister { namespace },
                ),
                Manual::Discover {
                    namespace,
                    cookie,
                    limit,
                } => (
                    Kind::Discover {
                        namespace: namespace.clone(),
                        had_cookie: cookie.is_some(),
                        limit,
                    },
                    Request::Discover {
                        namespace,
                        cookie,
                        limit,
                    },
                ),
            };
            self.inflight.insert(
                id,
                InFlight {
                    server: peer,
                    origin: Origin::Manual,
                    kind,
                },
            );
            return Some(Action::Send {
                server: peer,
                request: id,
                body,
            });
        }
        let due_reg = server
            .regs
            .iter()
            .find(|(_, t)| t.inflight.is_none() && t.due.is_some_and(|d| d <= now))
            .map(|(ns, _)| ns.clone());
        if let Some(namespace) = due_reg {
            if !has_addresses {
                for task in server.regs.values_mut() {
                    if task.inflight.is_none() {
                        task.due = None;
                    }
                }
                if !self.no_addresses_reported {
                    self.no_addresses_reported = true;
                    return Some(Action::Event(Event::NoAddressesToRegister));
                }
                return None;
            }
            let format = server.format;
            self.next_id += 1;
            let id = RequestId(self.next_id);
            if let Some(task) = server.regs.get_mut(&namespace) {
                task.inflight = Some(id);
                task.due = None;
            }
            self.inflight.insert(
                id,
                InFlight {
                    server: peer,
                    origin: Origin::Auto,
                    kind: Kind::Register {
                        namespace: namespace.clone(),
                        ttl: Some(ttl),
                        format,
                    },
                },
            );
            return Some(Action::Send {
                server: peer,
                request: id,
                body: Request::Register {
                    namespace,
                    ttl: Some(ttl),
                    format,
                },
            });
        }
        // Discovery waits for REGISTERs in flight at this server: a server may choose what to
        // serve by the record format of the asker's registration (ours serves standard-format
        // records only to peers that registered in that format), and a page served before that
        // would advance the cookie past records we could not see.
        if registering(server) {
            return None;
        }
        let due_disc = server
            .discs
            .iter()
            .find(|(_, d)| d.task.inflight.is_none() && d.task.due.is_some_and(|t| t <= now))
            .map(|(ns, _)| ns.clone());
        if let Some(namespace) = due_disc {
            self.next_id += 1;
            let id = RequestId(self.next_id);
            let disc = server.discs.get_mut(&namespace)?;
            disc.task.inflight = Some(id);
            disc.task.due = None;
            let cookie = disc.cookie.clone();
            self.inflight.insert(
                id,
                InFlight {
                    server: peer,
                    origin: Origin::Auto,
                    kind: Kind::Discover {
                        namespace: Some(namespace.clone()),
                        had_cookie: cookie.is_some(),
                        limit: Some(limit),
                    },
                },
            );
            return Some(Action::Send {
                server: peer,
                request: id,
                body: Request::Discover {
                    namespace: Some(namespace),
                    cookie,
                    limit: Some(limit),
                },
            });
        }
        None
    }
}

fn registering(server: &Server) -> bool {
    server.regs.values().any(|t| t.inflight.is_some())
}

fn same_set(a: &[Multiaddr], b: &[Multiaddr]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::*;
    use crate::codec::ErrorResponse;

    const NS: &str = "ns";

    fn ns() -> Namespace {
        Namespace::from_static(NS)
    }

    fn peer(seed: u8) -> PeerId {
        key(seed).public().to_peer_id()
    }

    fn key(seed: u8) -> Keypair {
        Keypair::ed25519_from_bytes([seed; 32]).unwrap()
    }

    fn registration(seed: u8, port: u16, ttl: Ttl) -> Registration {
        Registration {
            namespace: ns(),
            record: SignedRecord::new(
                &key(seed),
                vec![format!("/ip4/10.0.0.{seed}/tcp/{port}").parse().unwrap()],
                RecordFormat::Standard,
            )
            .unwrap(),
            ttl,
        }
    }

    use crate::SignedRecord;

    fn page(registrations: Vec<Registration>, cookie: &[u8]) -> Response {
        Response::Page(DiscoverPage {
            registrations,
            cookie: Some(Cookie::new(cookie.to_vec()).unwrap()),
            skipped: 0,
        })
    }

    use crate::codec::DiscoverPage;

    const SERVER: u8 = 200;

    /// A schedule with one connected server and addresses, past the initial dial.
    fn connected(config: Config, t0: Instant) -> Schedule {
        let config = config.with_server(peer(SERVER), vec![]).with_seed(7);
        let mut s = Schedule::new(peer(1), config, t0);
        assert!(matches!(s.poll(t0), Some(Action::Dial { .. })));
        s.addresses_changed(t0, true);
        s.connected(t0, peer(SERVER));
        s
    }

    fn drain(s: &mut Schedule, now: Instant) -> Vec<Action> {
        std::iter::from_fn(|| s.poll(now)).collect()
    }

    fn sends(actions: &[Action]) -> Vec<(RequestId, Request)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { request, body, .. } => Some((*request, body.clone())),
                _ => None,
            })
            .collect()
    }

    /// The events, without [`Event::DiscoverPolled`] (one per automatic page; see
    /// [`polled`]).
    fn events(actions: Vec<Action>) -> Vec<Event> {
        actions
            .into_iter()
            .filter_map(|a| match a {
                Action::Event(Event::DiscoverPolled { .. }) => None,
                Action::Event(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    /// The sizes of the automatic pages reported by [`Event::DiscoverPolled`].
    fn polled(actions: &[Action]) -> Vec<usize> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Event(Event::DiscoverPolled { registrations, .. }) => Some(*registrations),
                _ => None,
            })
            .collect()
    }

    fn register_only() -> Config {
        Config::default()
            .with_namespace(ns())
            .with_discovery(false)
            .with_ttl(1000)
    }

    fn discover_only() -> Config {
        Config::default()
            .with_namespace(ns())
            .with_registration(false)
            .with_limit(2)
            .with_interval(Duration::from_secs(30))
    }

    #[test]
    fn given_a_granted_ttl_when_registered_then_refresh_falls_between_70_and_80_percent() {
        for seed in 0..20 {
            let t0 = Instant::now();
            let mut s = connected(register_only().with_seed(seed), t0);
            let sent = sends(&drain(&mut s, t0));
            assert_eq!(sent.len(), 1);
            s.on_response(t0, sent[0].0, Ok(Response::Registered(1000)));
            let due = s.poll_timeout().expect("a refresh is scheduled");
            let after = due - t0;
            assert!(
                after >= Duration::from_secs(700) && after <= Duration::from_secs(800),
                "{after:?}"
            );
            assert!(sends(&drain(&mut s, due - Duration::from_millis(1))).is_empty());
            let refresh = sends(&drain(&mut s, due));
            assert!(matches!(&refresh[..], [(_, Request::Register { .. })]));
        }
    }

    #[test]
    fn given_failing_registrations_then_backoff_doubles_with_jitter_up_to_the_cap() {
        let t0 = Instant::now();
        let config = register_only().with_backoff(Duration::from_secs(1), Duration::from_secs(16));
        let mut s = connected(config, t0);
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..8 {
            let sent = sends(&drain(&mut s, now));
            assert_eq!(sent.len(), 1);
            s.on_response(
                now,
                sent[0].0,
                Err(RequestError::Remote(ErrorResponse::new(
                    ErrorCode::Unavailable,
                    "busy",
                ))),
            );
            let due = s.poll_timeout().unwrap();
            delays.push(due - now);
            now = due;
        }
        for (i, d) in delays.iter().enumerate() {
            let base = Duration::from_secs(1 << i.min(4));
            assert!(
                *d >= base / 2 && *d <= base,
                "failure {i}: {d:?} not in [{:?}, {base:?}]",
                base / 2
            );
        }
        // The cap holds from the fifth failure on.
        assert!(delays[4..].iter().all(|d| *d <= Duration::from_secs(16)));
    }

    #[test]
    fn given_full_pages_when_discovering_then_next_page_is_asked_at_once_with_the_cookie() {
        let t0 = Instant::now();
        let mut s = connected(discover_only(), t0);
        let sent = sends(&drain(&mut s, t0));
        assert!(matches!(
            &sent[..],
            [(
                _,
                Request::Discover {
                    cookie: None,
                    limit: Some(2),
                    ..
                }
            )]
        ));
        s.on_response(
            t0,
            sent[0].0,
            Ok(page(
                vec![registration(2, 1, 100), registration(3, 1, 100)],
                b"c1",
            )),
        );
        let actions = drain(&mut s, t0);
        let next = sends(&actions);
        assert_eq!(polled(&actions), [2], "one page of two reported");
        assert_eq!(events(actions).len(), 2, "two peers discovered");
        let [(
            id,
            Request::Discover {
                cookie: Some(c), ..
            },
        )] = &next[..]
        else {
            panic!("expected an immediate second page, got {next:?}");
        };
        assert_eq!(c.as_bytes(), b"c1");
        // A short page ends the paging until the next tick.
        s.on_response(t0, *id, Ok(page(vec![registration(4, 1, 100)], b"c2")));
        assert!(sends(&drain(&mut s, t0)).is_empty());
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(30)));
        let tick = sends(&drain(&mut s, t0 + Duration::from_secs(30)));
        let [(
            _,
            Request::Discover {
                cookie: Some(c), ..
            },
        )] = &tick[..]
        else {
            panic!("expected a tick with the stored cookie, got {tick:?}");
        };
        assert_eq!(c.as_bytes(), b"c2", "the latest cookie is reused");
    }

    #[test]
    fn given_an_invalid_cookie_then_discovery_starts_over_without_duplicate_events() {
        let t0 = Instant::now();
        let mut s = connected(discover_only(), t0);
        let sent = sends(&drain(&mut s, t0));
        s.on_response(
            t0,
            sent[0].0,
            Ok(page(vec![registration(2, 1, 100)], b"c1")),
        );
        assert_eq!(events(drain(&mut s, t0)).len(), 1);
        let t1 = t0 + Duration::from_secs(30);
        let sent = sends(&drain(&mut s, t1));
        s.on_response(
            t1,
            sent[0].0,
            Err(RequestError::Remote(ErrorResponse::new(
                ErrorCode::InvalidCookie,
                "restarted",
            ))),
        );
        let actions = drain(&mut s, t1);
        let retry = sends(&actions);
        let evs = events(actions);
        assert!(
            matches!(&evs[..], [Event::CookieReset { namespace, .. }] if *namespace == ns()),
            "a cookie reset is reported as such, not as a failure: {evs:?}"
        );
        let [(id, Request::Discover { cookie: None, .. })] = &retry[..] else {
            panic!("expected an immediate DISCOVER without cookie, got {retry:?}");
        };
        // The same peer with the same addresses: nothing new. A changed address: reported.
        s.on_response(t1, *id, Ok(page(vec![registration(2, 1, 100)], b"d1")));
        assert!(events(drain(&mut s, t1)).is_empty());
        let t2 = t1 + Duration::from_secs(30);
        let sent = sends(&drain(&mut s, t2));
        s.on_response(
            t2,
            sent[0].0,
            Ok(page(vec![registration(2, 9, 100)], b"d2")),
        );
        let evs = events(drain(&mut s, t2));
        assert!(matches!(&evs[..], [Event::Discovered { peer: p, .. }] if *p == peer(2)));
    }

    #[test]
    fn given_a_discovered_registration_when_its_ttl_ends_unseen_then_it_expires() {
        let t0 = Instant::now();
        let mut s = connected(discover_only().with_interval(Duration::from_secs(100)), t0);
        let sent = sends(&drain(&mut s, t0));
        s.on_response(t0, sent[0].0, Ok(page(vec![registration(2, 1, 10)], b"c1")));
        assert_eq!(events(drain(&mut s, t0)).len(), 1);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        assert!(events(drain(&mut s, t0 + Duration::from_secs(9))).is_empty());
        let evs = events(drain(&mut s, t0 + Duration::from_secs(10)));
        assert!(matches!(&evs[..], [Event::Expired { peer: p, .. }] if *p == peer(2)));
        assert!(s.discovered_addresses(&peer(2)).is_empty());
    }

    #[test]
    fn given_hostile_pages_then_self_foreign_namespace_zero_ttl_and_huge_ttl_are_handled() {
        let t0 = Instant::now();
        let mut s = connected(discover_only(), t0);
        let sent = sends(&drain(&mut s, t0));
        let mut foreign = registration(3, 1, 100);
        foreign.namespace = Namespace::from_static("other");
        let regs = vec![
            registration(1, 1, 100), // ourselves
            foreign,
            registration(4, 1, 0),
            registration(5, 1, u64::MAX),
        ];
        s.on_response(t0, sent[0].0, Ok(page(regs, b"c")));
        let evs = events(drain(&mut s, t0));
        assert!(
            matches!(&evs[..], [Event::Discovered { peer: p, .. }] if *p == peer(5)),
            "{evs:?}"
        );
        // The huge TTL is clamped to MAX_TTL rather than overflowing the clock.
        let cap = t0 + Duration::from_secs(MAX_TTL);
        assert!(events(drain(&mut s, cap - Duration::from_secs(1))).is_empty());
        let evs = events(drain(&mut s, cap));
        assert!(matches!(&evs[..], [Event::Expired { peer: p, .. }] if *p == peer(5)));
    }

    #[test]
    fn given_a_standard_register_dropped_without_reply_then_the_server_is_switched_to_legacy() {
        let t0 = Instant::now();
        let mut s = connected(register_only(), t0);
        let sent = sends(&drain(&mut s, t0));
        assert!(matches!(
            &sent[..],
            [(
                _,
                Request::Register {
                    format: RecordFormat::Standard,
                    ..
                }
            )]
        ));
        s.on_response(t0, sent[0].0, Err(RequestError::NoResponse));
        let actions = drain(&mut s, t0);
        let retry = sends(&actions);
        assert!(events(actions).is_empty());
        assert!(matches!(
            &retry[..],
            [(
                _,
                Request::Register {
                    format: RecordFormat::Legacy,
                    ..
                }
            )]
        ));
        // Without the fallback the failure is reported and backed off.
        let mut s = connected(register_only().with_legacy_fallback(false), t0);
        let sent = sends(&drain(&mut s, t0));
        s.on_response(t0, sent[0].0, Err(RequestError::NoResponse));
        let evs = events(drain(&mut s, t0));
        assert!(matches!(
            &evs[..],
            [Event::RegisterFailed {
                error: RequestError::NoResponse,
                ..
            }]
        ));
    }

    #[test]
    fn given_no_addresses_then_it_says_so_once_and_registers_when_one_appears() {
        let t0 = Instant::now();
        let config = register_only()
            .with_server(peer(SERVER), vec![])
            .with_seed(1);
        let mut s = Schedule::new(peer(1), config, t0);
        drain(&mut s, t0);
        s.connected(t0, peer(SERVER));
        let evs = events(drain(&mut s, t0));
        assert!(matches!(&evs[..], [Event::NoAddressesToRegister]));
        assert_eq!(s.poll_timeout(), None);
        s.addresses_changed(t0, true);
        assert_eq!(sends(&drain(&mut s, t0)).len(), 1);
    }

    #[test]
    fn given_registrations_when_stopped_then_each_is_unregistered_and_stopped_follows() {
        let t0 = Instant::now();
        let mut s = connected(
            register_only().with_namespace(Namespace::from_static("b")),
            t0,
        );
        let sent = sends(&drain(&mut s, t0));
        assert_eq!(sent.len(), 2);
        for (id, _) in &sent {
            s.on_response(t0, *id, Ok(Response::Registered(1000)));
        }
        drain(&mut s, t0);
        s.stop();
        let actions = drain(&mut s, t0);
        let unregs = sends(&actions);
        assert_eq!(unregs.len(), 2);
        assert!(unregs
            .iter()
            .all(|(_, r)| matches!(r, Request::Unregister { .. })));
        assert!(!events(actions).iter().any(|e| matches!(e, Event::Stopped)));
        s.on_response(t0, unregs[0].0, Ok(Response::Sent));
        assert!(!events(drain(&mut s, t0))
            .iter()
            .any(|e| matches!(e, Event::Stopped)));
        s.on_response(t0, unregs[1].0, Ok(Response::Sent));
        let evs = events(drain(&mut s, t0));
        assert!(matches!(evs.last(), Some(Event::Stopped)));
        assert_eq!(s.poll_timeout(), None, "nothing more is scheduled");
    }

    #[test]
    fn given_more_manual_requests_than_the_queue_holds_then_the_excess_fails_at_once() {
        let t0 = Instant::now();
        let mut s = Schedule::new(peer(1), Config::default().with_seed(1), t0);
        let ids: Vec<RequestId> = (0..MAX_QUEUED_PER_SERVER + 3)
            .map(|_| s.discover(peer(SERVER), Some(ns()), None, None))
            .collect();
        let actions = drain(&mut s, t0);
        let failed: Vec<RequestId> = events(actions.clone())
            .into_iter()
            .filter_map(|e| match e {
                Event::DiscoverFailed {
                    request,
                    error: RequestError::TooManyPending,
                    ..
                } => Some(request),
                _ => None,
            })
            .collect();
        assert_eq!(failed, ids[MAX_QUEUED_PER_SERVER..].to_vec());
        assert!(actions.iter().any(|a| matches!(a, Action::Dial { .. })));
        // The queued ones go out once connected.
        s.connected(t0, peer(SERVER));
        assert_eq!(sends(&drain(&mut s, t0)).len(), MAX_QUEUED_PER_SERVER);
    }

    #[test]
    fn given_registration_and_discovery_then_discovery_waits_for_the_register_outcome() {
        let t0 = Instant::now();
        let config = Config::default().with_namespace(ns()).with_ttl(1000);
        let mut s = connected(config, t0);
        let first = sends(&drain(&mut s, t0));
        assert!(
            matches!(&first[..], [(_, Request::Register { .. })]),
            "{first:?}"
        );
        assert_eq!(
            s.poll_timeout(),
            None,
            "nothing else until the REGISTER ends"
        );
        s.on_response(t0, first[0].0, Ok(Response::Registered(1000)));
        let next = sends(&drain(&mut s, t0));
        assert!(
            matches!(&next[..], [(_, Request::Discover { .. })]),
            "{next:?}"
        );
    }
}
