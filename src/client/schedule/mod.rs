//! The pure core of the client: who to dial, what to send when, and what was discovered.
//!
//! No sockets, no clock: it is fed `now: Instant` and the outcome of every request, asked
//! [`Schedule::poll_timeout`] for when it next wants to act, and [`Schedule::poll`] for actions.
//! Jitter comes from a seeded RNG, so tests are deterministic.
//!
//! [`Schedule`] owns one state machine per job and routes inputs to them:
//!
//! - [`servers`]: the servers and their connections (dial, redial with backoff);
//! - [`backoff`]: jittered retry and refresh delays;
//! - [`register`]: automatic registrations, what each server holds, its record format;
//! - [`discover`]: automatic discoveries, cookies and paging;
//! - [`cache`]: the discovered peers and their expiry;
//! - [`manual`]: manual requests waiting for a connection;
//! - [`deadlines`]: the time-ordered index each of them keeps, so the next deadline is found
//!   without scanning every task.

use std::{collections::VecDeque, time::Instant};

use libp2p::{Multiaddr, PeerId};

use super::{handler::Response, Config, Event, RequestError, RequestId};
use crate::{codec::ErrorCode, Cookie, Namespace, RecordFormat, Ttl};

mod backoff;
mod cache;
mod deadlines;
mod discover;
mod manual;
mod register;
mod request;
mod servers;
mod stop;
#[cfg(test)]
mod test_support;

use backoff::Backoff;
use cache::Cache;
use discover::DiscoverTasks;
use manual::ManualQueues;
use register::{Due, RegisterTasks};
use request::{unexpected, Done, Origin, Requests};
pub(crate) use request::{Action, Request};
use servers::Servers;
use stop::Stop;

/// The client's pure core.
#[derive(Debug)]
pub(crate) struct Schedule {
    config: Config,
    requests: Requests,
    backoff: Backoff,
    servers: Servers,
    regs: RegisterTasks,
    discs: DiscoverTasks,
    cache: Cache,
    manual: ManualQueues,
    out: VecDeque<Action>,
    stop: Stop,
}

impl Schedule {
    /// A schedule for `config`, started at `now`: configured servers are dialed at once.
    pub(crate) fn new(local: PeerId, config: Config, now: Instant) -> Self {
        let enabled = |on: bool| {
            if on {
                config.namespaces.clone()
            } else {
                Vec::new()
            }
        };
        let regs = RegisterTasks::new(
            enabled(config.registration),
            config.record_format,
            config.legacy_fallback,
        );
        let discs = DiscoverTasks::new(enabled(config.discovery), config.interval);
        let mut schedule = Self {
            requests: Requests::default(),
            backoff: Backoff::new(&config),
            servers: Servers::new(local),
            regs,
            discs,
            cache: Cache::new(local),
            manual: ManualQueues::default(),
            out: VecDeque::new(),
            stop: Stop::default(),
            config,
        };
        let configured: Vec<PeerId> = schedule.config.servers.iter().map(|(p, _)| *p).collect();
        for peer in configured {
            schedule.add_server(peer, true, Some(now));
        }
        schedule
    }

    /// Adds a server unless known; returns whether it is one (false at the cap).
    fn add_server(&mut self, peer: PeerId, configured: bool, dial_at: Option<Instant>) -> bool {
        match self.servers.insert(peer, configured, dial_at) {
            None => false,
            Some(false) => true,
            Some(true) => {
                self.regs.add_server(peer);
                self.discs.add_server(peer);
                true
            }
        }
    }

    fn remove_server(&mut self, peer: &PeerId) {
        self.servers.remove(peer);
        self.regs.remove_server(peer);
        self.discs.remove_server(peer);
    }

    /// Discovery at a server waits while a REGISTER is in flight there: a server may choose
    /// what to serve by the record format of the asker's registration (ours serves
    /// standard-format records only to peers that registered in that format), and a page
    /// served before that would advance the cookie past records we could not see.
    fn sync_pause(&mut self, server: PeerId) {
        self.discs.pause(server, self.regs.registering(&server));
    }

    fn report(&mut self, event: Event) {
        self.out.push_back(Action::Event(event));
    }

    /// Whether `peer` is one of our servers.
    pub(crate) fn is_server(&self, peer: &PeerId) -> bool {
        self.servers.contains(peer)
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
        self.cache.addresses(peer)
    }

    /// Whether [`Schedule::stop`] was called.
    pub(crate) fn is_stopped(&self) -> bool {
        self.stop.is_stopped()
    }

    /// A connected peer supports the protocol: use it as a server. Returns whether it is one now.
    pub(crate) fn add_learned_server(&mut self, now: Instant, peer: PeerId) -> bool {
        if self.stop.is_stopped() || !self.config.learn_servers || self.servers.contains(&peer) {
            return self.servers.contains(&peer);
        }
        if !self.add_server(peer, false, None) {
            tracing::debug!(%peer, "not using a learned rendezvous server: at the server cap");
            return false;
        }
        self.report(Event::ServerAdded { server: peer });
        self.connected(now, peer);
        true
    }

    /// The first connection to `peer` was established.
    pub(crate) fn connected(&mut self, now: Instant, peer: PeerId) {
        if self.servers.connected(peer) {
            self.regs.connected(now, peer);
            self.discs.connected(now, peer);
        }
    }

    /// The last connection to `peer` closed. Requests in flight on it must have been failed
    /// with [`Schedule::on_response`] before.
    pub(crate) fn disconnected(&mut self, now: Instant, peer: PeerId) {
        if !self.servers.contains(&peer) {
            return;
        }
        if !self.servers.is_configured(&peer) && !self.manual.is_waiting(&peer) {
            // A learned server is not redialed: forget it, freeing its place under the cap.
            self.remove_server(&peer);
            return;
        }
        let redial_at = (!self.stop.is_stopped()).then_some(now + self.backoff.min());
        self.servers.disconnected(peer, redial_at);
        self.regs.disconnected(peer);
        self.discs.disconnected(peer);
    }

    /// A dial of `peer` failed.
    pub(crate) fn dial_failed(&mut self, now: Instant, peer: PeerId) {
        let redial = !self.stop.is_stopped();
        if !self
            .servers
            .dial_failed(now, peer, &mut self.backoff, redial)
        {
            return;
        }
        for (id, request) in self.manual.drain(&peer) {
            self.report(request.failed(peer, id, RequestError::NotConnected));
        }
    }

    /// The node's external addresses changed; `has_any` says whether it has one now. Every
    /// registration is made again with a new record.
    pub(crate) fn addresses_changed(&mut self, now: Instant, has_any: bool) {
        let servers = &self.servers;
        self.regs
            .addresses_changed(now, has_any, |p| servers.is_connected(p));
    }

    fn queue_manual(&mut self, server: PeerId, request: Request) -> RequestId {
        let id = self.requests.next_id();
        let refused = if self.stop.is_stopped() {
            Some((request, RequestError::Stopped))
        } else if !self.add_server(server, false, None) {
            Some((request, RequestError::TooManyPending))
        } else {
            self.manual
                .push(server, id, request)
                .err()
                .map(|r| (r, RequestError::TooManyPending))
        };
        if let Some((request, error)) = refused {
            self.report(request.failed(server, id, error));
        }
        id
    }

    /// Manual REGISTER (one-shot, not refreshed).
    pub(crate) fn register(
        &mut self,
        server: PeerId,
        namespace: Namespace,
        ttl: Option<Ttl>,
    ) -> RequestId {
        let format = self.regs.format(&server);
        let request = Request::Register {
            namespace,
            ttl,
            format,
        };
        self.queue_manual(server, request)
    }

    /// Manual UNREGISTER; also stops the automatic registration of `namespace` at `server`.
    pub(crate) fn unregister(&mut self, server: PeerId, namespace: Namespace) -> RequestId {
        self.regs.remove(server, &namespace);
        self.sync_pause(server);
        self.queue_manual(server, Request::Unregister { namespace })
    }

    /// Manual DISCOVER.
    pub(crate) fn discover(
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
        self.queue_manual(server, request)
    }

    /// Stops every loop and unregisters every namespace held by a connected server.
    pub(crate) fn stop(&mut self) {
        if !self.stop.begin() {
            return;
        }
        self.regs.stop();
        self.discs.stop();
        self.servers.stop();
        for peer in self.servers.peers() {
            for (id, request) in self.manual.drain(&peer) {
                self.report(request.failed(peer, id, RequestError::Stopped));
            }
            if self.servers.is_connected(&peer) {
                for namespace in self.regs.held(&peer) {
                    self.send_stop_unregister(peer, namespace);
                }
            }
        }
        // A REGISTER in flight may still succeed: wait for it, then unregister.
        for id in self.requests.registering() {
            self.stop.wait_for(id);
        }
        self.check_stopped();
    }

    fn send_stop_unregister(&mut self, server: PeerId, namespace: Namespace) {
        let id = self.requests.next_id();
        let body = Request::Unregister { namespace };
        self.stop.wait_for(id);
        let send = self.requests.send(server, id, Origin::Stop, body);
        self.out.push_back(send);
    }

    fn check_stopped(&mut self) {
        if self.stop.poll_stopped() {
            self.report(Event::Stopped);
        }
    }

    /// The outcome of request `id`.
    pub(crate) fn on_response(
        &mut self,
        now: Instant,
        id: RequestId,
        result: Result<Response, RequestError>,
    ) {
        let Some(flight) = self.requests.end(id) else {
            return;
        };
        let done = Done {
            id,
            server: flight.server,
            origin: flight.origin,
            stopping: self.stop.ended(id),
        };
        match flight.request {
            Request::Register {
                namespace,
                ttl,
                format,
            } => {
                let result = result.and_then(|r| match r {
                    Response::Registered(granted) => Ok(granted),
                    other => Err(unexpected(other, "REGISTER")),
                });
                self.on_register(now, done, namespace, ttl, format, result);
            }
            Request::Unregister { namespace } => self.on_unregister(done, namespace, result),
            Request::Discover {
                namespace,
                cookie,
                limit,
            } => self.on_discover(now, done, namespace, cookie.is_some(), limit, result),
        }
        self.sync_pause(done.server);
        self.check_stopped();
    }

    fn on_register(
        &mut self,
        now: Instant,
        done: Done,
        namespace: Namespace,
        ttl: Option<Ttl>,
        format: RecordFormat,
        result: Result<Ttl, RequestError>,
    ) {
        if self.stop.is_stopped() {
            return self.on_register_while_stopped(done, namespace, result);
        }
        let error = match result {
            Ok(granted) => return self.on_registered(now, done, namespace, granted),
            Err(error) => error,
        };
        let server = done.server;
        if !self.servers.contains(&server) {
            return;
        }
        let connected = self.servers.is_connected(&server);
        if connected && self.regs.fall_back(server, format, &error) {
            if done.origin == Origin::Auto {
                self.regs.retry_now(now, server, &namespace);
            } else {
                let format = self.regs.format(&server);
                let retry = Request::Register {
                    namespace,
                    ttl,
                    format,
                };
                self.manual.push_front(server, done.id, retry);
            }
            return;
        }
        if done.origin == Origin::Auto {
            let failures = self.regs.next_failure(&server, &namespace);
            let retry_at = connected.then_some(now + self.backoff.after(failures));
            self.regs.failed(server, &namespace, failures, retry_at);
        }
        self.report(done.register_failed(namespace, error));
    }

    fn on_registered(&mut self, now: Instant, done: Done, namespace: Namespace, granted: Ttl) {
        let refresh = self.backoff.refresh(granted);
        if !self.servers.contains(&done.server) {
            return;
        }
        self.regs.hold(done.server, namespace.clone());
        if done.origin == Origin::Auto {
            let connected = self.servers.is_connected(&done.server);
            self.regs
                .registered(now, done.server, &namespace, refresh, connected);
        }
        self.report(done.registered(namespace, granted));
    }

    /// After stop a REGISTER that still succeeds is undone if `Stopped` waits for it.
    fn on_register_while_stopped(
        &mut self,
        done: Done,
        namespace: Namespace,
        result: Result<Ttl, RequestError>,
    ) {
        match result {
            Err(error) => self.report(done.register_failed(namespace, error)),
            Ok(ttl) => {
                self.report(done.registered(namespace.clone(), ttl));
                if done.stopping {
                    self.regs.hold(done.server, namespace.clone());
                    self.send_stop_unregister(done.server, namespace);
                }
            }
        }
    }

    fn on_unregister(
        &mut self,
        done: Done,
        namespace: Namespace,
        result: Result<Response, RequestError>,
    ) {
        match result {
            Ok(_) => {
                self.regs.release(done.server, &namespace);
                self.report(done.unregistered(namespace));
            }
            Err(error) => self.report(done.unregister_failed(namespace, error)),
        }
    }

    fn on_discover(
        &mut self,
        now: Instant,
        done: Done,
        namespace: Option<Namespace>,
        had_cookie: bool,
        limit: Option<u64>,
        result: Result<Response, RequestError>,
    ) {
        if self.stop.is_stopped() && done.origin == Origin::Auto {
            return;
        }
        let page = match result.and_then(|r| match r {
            Response::Page(page) => Ok(page),
            other => Err(unexpected(other, "DISCOVER")),
        }) {
            Ok(page) => page,
            Err(error) => return self.on_discover_failed(now, done, namespace, had_cookie, error),
        };
        let server = done.server;
        let found = self
            .cache
            .absorb(now, server, namespace.as_ref(), &page.registrations);
        found.into_iter().for_each(|event| self.report(event));
        if page.skipped > 0 {
            tracing::debug!(%server, skipped = page.skipped, "undecodable entries left out of a page");
            self.report(Event::RecordsSkipped {
                server,
                namespace: namespace.clone(),
                count: page.skipped,
            });
        }
        if done.origin == Origin::Manual {
            return self.report(Event::DiscoverCompleted {
                server,
                namespace,
                registrations: page.registrations,
                skipped: page.skipped,
                cookie: page.cookie,
                request: done.id,
            });
        }
        let Some(namespace) = namespace else { return };
        let entries = (page.registrations.len() + page.skipped) as u64;
        let full = limit.is_some_and(|l| entries >= l);
        let connected = self.servers.is_connected(&server);
        self.discs
            .page(now, server, &namespace, full, page.cookie, connected);
    }

    fn on_discover_failed(
        &mut self,
        now: Instant,
        done: Done,
        namespace: Option<Namespace>,
        had_cookie: bool,
        error: RequestError,
    ) {
        let report = match (&namespace, done.origin) {
            (Some(ns), Origin::Auto) => {
                let failures = self.discs.next_failure(&done.server, ns);
                let invalid_cookie = had_cookie
                    && matches!(&error, RequestError::Remote(e) if e.code == ErrorCode::InvalidCookie);
                let delay = self.backoff.after(failures);
                let retry_at = if invalid_cookie { now } else { now + delay };
                let retry_at = self.servers.is_connected(&done.server).then_some(retry_at);
                self.discs
                    .failed(done.server, ns, failures, invalid_cookie, retry_at)
            }
            (None, Origin::Auto) => false,
            _ => true,
        };
        if report {
            self.report(done.discover_failed(namespace, error));
        }
    }

    /// When the schedule next wants to act (`None`: only on input).
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        [
            self.cache.poll_timeout(),
            self.servers.poll_timeout(),
            self.regs.poll_timeout(),
            self.discs.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next action due at `now`, if any.
    pub(crate) fn poll(&mut self, now: Instant) -> Option<Action> {
        if let Some(action) = self.out.pop_front() {
            return Some(action);
        }
        if let Some(expired) = self.cache.poll_expired(now) {
            return Some(Action::Event(expired));
        }
        if let Some(server) = self.servers.poll_redial(now) {
            return Some(Action::Dial { server });
        }
        let manual = self
            .manual
            .poll(&mut self.servers, &self.regs, &mut self.requests);
        manual
            .or_else(|| self.poll_register(now))
            .or_else(|| self.poll_discover(now))
    }

    fn poll_register(&mut self, now: Instant) -> Option<Action> {
        loop {
            let id = self.requests.peek_id();
            match self.regs.poll_due(now, id) {
                Due::Nothing => return None,
                Due::NoAddresses { report: true } => {
                    return Some(Action::Event(Event::NoAddressesToRegister))
                }
                Due::NoAddresses { report: false } => continue,
                Due::Register(server, namespace) => {
                    self.requests.take_id(id);
                    self.sync_pause(server);
                    let request = Request::Register {
                        namespace,
                        ttl: Some(self.config.ttl),
                        format: self.regs.format(&server),
                    };
                    return Some(self.requests.send(server, id, Origin::Auto, request));
                }
            }
        }
    }

    fn poll_discover(&mut self, now: Instant) -> Option<Action> {
        let id = self.requests.peek_id();
        let (server, namespace, cookie) = self.discs.poll_due(now, id)?;
        self.requests.take_id(id);
        let request = Request::Discover {
            namespace: Some(namespace),
            cookie,
            limit: Some(self.config.limit),
        };
        Some(self.requests.send(server, id, Origin::Auto, request))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::{test_support::*, Request};
    use crate::{
        client::{handler::Response, Event},
        Namespace,
    };

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
}
