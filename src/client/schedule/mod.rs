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
//! - [`manual`]: manual requests waiting for a connection, or for a place in the window;
//! - [`identify`]: DISCOVERs held until a new server connection has run identify;
//! - [`window`]: the requests in flight per server, at most
//!   [`MAX_IN_FLIGHT_PER_CONNECTION`](crate::client::MAX_IN_FLIGHT_PER_CONNECTION), and the
//!   sends waiting for a place;
//! - [`retry`]: requests refused for a passing reason, waiting to be sent again;
//! - [`responses`]: what each request's outcome changes in the jobs above;
//! - [`deadlines`]: the time-ordered index each of them keeps, so the next deadline is found
//!   without scanning every task.

use std::{collections::VecDeque, time::Instant};

use libp2p::{Multiaddr, PeerId};

use super::{Config, Event, RequestError, RequestId};
use crate::{
    codec::{ErrorCode, ErrorResponse, Push},
    Namespace,
};

mod backoff;
mod cache;
mod deadlines;
mod discover;
mod identify;
mod manual;
#[cfg(test)]
mod push_tests;
mod register;
mod request;
mod responses;
mod retry;
mod servers;
mod stop;
#[cfg(test)]
mod test_support;
mod window;

use backoff::Backoff;
use cache::Cache;
use discover::DiscoverTasks;
use identify::IdentifyWait;
use manual::ManualQueues;
use register::RegisterTasks;
pub(crate) use request::{Action, Request};
use request::{Origin, Requests};
use retry::Retries;
use servers::Servers;
use stop::Stop;
use window::Window;

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
    identify: IdentifyWait,
    window: Window,
    retries: Retries,
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
            config.format_fallback,
        );
        let discs = DiscoverTasks::new(enabled(config.discovery), config.interval);
        // A registering client's REGISTER tells a server its record format, and discovery
        // waits for REGISTERs in flight already.
        let registers = config.registration && !config.namespaces.is_empty();
        let mut schedule = Self {
            requests: Requests::default(),
            backoff: Backoff::new(&config),
            servers: Servers::new(local),
            regs,
            discs,
            cache: Cache::new(local),
            manual: ManualQueues::default(),
            identify: IdentifyWait::new(!registers),
            window: Window::default(),
            retries: Retries::default(),
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

    /// A connected peer supports the protocol: use it as a server, keeping its connections
    /// alive.
    pub(crate) fn add_learned_server(&mut self, now: Instant, peer: PeerId) {
        if self.stop.is_stopped() || !self.config.learn_servers || self.servers.contains(&peer) {
            return;
        }
        if !self.add_server(peer, false, None) {
            tracing::debug!(%peer, "not using a learned rendezvous server: at the server cap");
            return;
        }
        self.report(Event::ServerAdded { server: peer });
        let (server, on) = (peer, true);
        self.out.push_back(Action::KeepAlive { server, on });
        self.start_jobs(now, peer);
    }

    /// The first connection to `peer` was established. A server's DISCOVERs may wait for its
    /// identify ([`identify`]).
    pub(crate) fn connected(&mut self, now: Instant, peer: PeerId) {
        if self.servers.contains(&peer) {
            self.identify.connected(now, peer);
        }
        self.start_jobs(now, peer);
    }

    /// The connection to `peer` told us the remote's protocols (identify ran): DISCOVERs held
    /// for it go out.
    pub(crate) fn remote_protocols_known(&mut self, _now: Instant, peer: PeerId) {
        self.release_held(&peer);
    }

    /// The connection to server `peer` announced the push protocol: its discoveries subscribe
    /// (docs/push.md).
    pub(crate) fn push_supported(&mut self, now: Instant, peer: PeerId) {
        if self.servers.contains(&peer) && !self.stop.is_stopped() {
            self.discs.push_supported(now, peer);
        }
    }

    /// The subscription of `namespace` at `server` received `push`: a page goes the way of a
    /// DISCOVER page (the cache, the cookie), a removal ends the registrations it names.
    pub(crate) fn on_pushed(
        &mut self,
        now: Instant,
        server: PeerId,
        namespace: Namespace,
        push: Push,
    ) {
        if self.stop.is_stopped() {
            return;
        }
        match push {
            Push::Page(Ok(page)) => {
                let found = self
                    .cache
                    .absorb(now, server, Some(&namespace), &page.registrations);
                self.out.extend(found);
                if page.skipped > 0 {
                    self.report(Event::RecordsSkipped {
                        server,
                        namespace: Some(namespace.clone()),
                        count: page.skipped,
                    });
                }
                self.discs.pushed(server, &namespace, page.cookie);
            }
            // The handler ends the subscription on an error page.
            Push::Page(Err(_)) => {}
            Push::Removed { peer, namespaces } => {
                for ns in namespaces.iter().filter(|ns| **ns == namespace) {
                    if let Some(expired) = self.cache.remove(peer, ns) {
                        self.report(expired);
                    }
                }
            }
        }
    }

    /// The subscription of `namespace` at `server` ended (`error`: the server's reason): the
    /// discovery continues with DISCOVER from its cookie, and subscribes again after a backoff.
    /// When the server was busy (`E_UNAVAILABLE`: it shed its subscribers, or was full), that
    /// DISCOVER comes at a moment drawn within the backoff rather than at once, so that the
    /// subscribers it shed do not all poll it at the same moment.
    pub(crate) fn subscription_ended(
        &mut self,
        now: Instant,
        server: PeerId,
        namespace: Namespace,
        error: Option<ErrorResponse>,
    ) {
        let invalid_cookie = error
            .as_ref()
            .is_some_and(|e| e.code == ErrorCode::InvalidCookie);
        tracing::debug!(%server, %namespace, ?error, "push subscription ended; polling");
        let rest = self
            .backoff
            .after(self.discs.next_push_failure(&server, &namespace));
        let busy = error
            .as_ref()
            .is_some_and(|e| e.code == ErrorCode::Unavailable);
        let catch_up = if busy {
            now + self.backoff.within(rest)
        } else {
            now
        };
        let connected = self.servers.is_connected(&server);
        if self.discs.subscription_ended(
            now,
            server,
            &namespace,
            invalid_cookie,
            (catch_up, rest),
            connected,
        ) {
            self.report(Event::CookieReset { server, namespace });
        }
    }

    fn release_held(&mut self, peer: &PeerId) {
        let released = self.identify.done(peer);
        self.out.extend(released);
    }

    fn start_jobs(&mut self, now: Instant, peer: PeerId) {
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
        let mut unsent: Vec<RequestId> = self
            .identify
            .done(&peer)
            .into_iter()
            .filter_map(|held| match held {
                Action::Send { request, .. } => Some(request),
                _ => None,
            })
            .collect();
        unsent.extend(self.window.disconnected(&peer));
        unsent.extend(self.retries.disconnected(&peer));
        for request in unsent {
            self.on_response(now, request, Err(RequestError::NotConnected));
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

    /// A manual request (REGISTER is one-shot, not refreshed; UNREGISTER also stops the
    /// automatic registration of its namespace at `server`). It waits for a connection to
    /// `server`, dialed if need be; the outcome event carries the returned id.
    pub(crate) fn request(&mut self, server: PeerId, request: Request) -> RequestId {
        if let Request::Unregister { namespace } = &request {
            self.regs.remove(server, namespace);
            self.sync_pause(server);
        }
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
            // Let idle server connections close now.
            for server in self.servers.peers() {
                if self.servers.is_connected(&server) {
                    let on = false;
                    self.out.push_back(Action::KeepAlive { server, on });
                }
            }
        }
    }

    /// When the schedule next wants to act (`None`: only on input).
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        [
            self.cache.poll_timeout(),
            self.servers.poll_timeout(),
            self.regs.poll_timeout(),
            self.discs.poll_timeout(),
            self.identify.poll_timeout(),
            self.retries.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next action due at `now`, if any.
    pub(crate) fn poll(&mut self, now: Instant) -> Option<Action> {
        while let Some(server) = self.identify.poll_expired(now) {
            self.release_held(&server);
        }
        loop {
            if let Some(action) = self.window.poll() {
                return Some(action);
            }
            let action = self.next_action(now)?;
            let Some(action) = self.identify.hold(action) else {
                continue;
            };
            if let Some(action) = self.window.admit(action) {
                return Some(action);
            }
        }
    }

    /// How many more manual requests `server` may take now: its free places in the window, less
    /// the requests that will want one soon (held for identify, waiting for a retry).
    fn room(&self, server: &PeerId) -> usize {
        self.window
            .room(server)
            .saturating_sub(self.identify.held(server) + self.retries.waiting(server))
    }

    fn next_action(&mut self, now: Instant) -> Option<Action> {
        if let Some(action) = self.out.pop_front() {
            return Some(action);
        }
        if let Some(expired) = self.cache.poll_expired(now) {
            return Some(Action::Event(expired));
        }
        if let Some(server) = self.servers.poll_redial(now) {
            return Some(Action::Dial { server });
        }
        if let Some((id, server)) = self.retries.pop_due(now) {
            if let Some(body) = self.requests.body(id) {
                return Some(Action::Send {
                    server,
                    request: id,
                    body,
                });
            }
        }
        let room: Vec<PeerId> = self
            .manual
            .servers()
            .into_iter()
            .filter(|s| self.room(s) > 0)
            .collect();
        let manual = self
            .manual
            .poll(&room, &mut self.servers, &self.regs, &mut self.requests);
        if manual.is_some() {
            return manual;
        }
        let register = self.regs.poll(now, self.config.ttl, &mut self.requests);
        if let Some(Action::Send { server, .. }) = register {
            self.sync_pause(server);
        }
        register
            .or_else(|| self.discs.poll_subscribe(self.config.limit))
            .or_else(|| self.discs.poll(now, self.config.limit, &mut self.requests))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use libp2p::{Multiaddr, PeerId};

    use super::{test_support::*, Action, Request, Schedule};
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

    #[test]
    fn given_stop_when_stopped_is_reported_then_server_connections_may_close() {
        let t0 = Instant::now();
        let mut s = connected(discover_only(), t0);
        drain(&mut s, t0);
        s.stop();
        let actions = drain(&mut s, t0);
        assert!(
            matches!(&actions[..], [
                Action::Event(Event::Stopped),
                Action::KeepAlive { server, on: false },
            ] if *server == peer(SERVER)),
            "{actions:?}"
        );
    }

    #[test]
    fn given_a_connected_peer_announcing_the_protocol_then_it_is_kept_alive_and_used() {
        let t0 = Instant::now();
        let mut s = Schedule::new(peer(1), register_only().with_seed(1), t0);
        s.addresses_changed(t0, true);
        s.connected(t0, peer(SERVER));
        assert!(drain(&mut s, t0).is_empty(), "not a server yet");
        s.add_learned_server(t0, peer(SERVER));
        let actions = drain(&mut s, t0);
        assert!(
            matches!(
                &actions[..],
                [
                    Action::Event(Event::ServerAdded { .. }),
                    Action::KeepAlive { on: true, .. },
                    Action::Send {
                        body: Request::Register { .. },
                        ..
                    },
                ]
            ),
            "{actions:?}"
        );
    }

    #[test]
    fn given_a_discovered_peer_then_the_swarm_is_told_its_addresses_once() {
        let t0 = Instant::now();
        let mut s = connected(discover_only(), t0);
        let told = |actions: &[Action]| -> Vec<(PeerId, Multiaddr)> {
            actions
                .iter()
                .filter_map(|a| match a {
                    Action::NewAddressOfPeer { peer, address } => Some((*peer, address.clone())),
                    _ => None,
                })
                .collect()
        };
        let sent = sends(&drain(&mut s, t0));
        s.on_response(t0, sent[0].0, Ok(page(vec![registration(2, 1, 100)], b"c")));
        let actions = drain(&mut s, t0);
        let expected: Multiaddr = "/ip4/10.0.0.2/tcp/1".parse().unwrap();
        assert_eq!(told(&actions), vec![(peer(2), expected)]);
        let t1 = t0 + Duration::from_secs(30);
        let sent = sends(&drain(&mut s, t1));
        s.on_response(t1, sent[0].0, Ok(page(vec![registration(2, 1, 100)], b"d")));
        assert!(told(&drain(&mut s, t1)).is_empty(), "nothing new");
    }
}
