//! Automatic discovery, per (server, namespace): when to DISCOVER, the cookie to send, paging
//! through full pages, and retrying; and, at servers that serve push (docs/push.md), when to
//! subscribe.
//!
//! Push rides on the cookie: a task subscribes from its cookie once a DISCOVER has caught up
//! (a page that is not full), each pushed page moves the cookie as a polled one does, and when a
//! subscription ends the task DISCOVERs at once from its cookie and subscribes again after a
//! backoff. Polling goes on at the interval meanwhile, as a safety net.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    time::{Duration, Instant},
};

use libp2p::PeerId;

use super::{
    deadlines::Deadlines,
    request::{Action, Origin, Request, Requests},
};
use crate::{
    client::{RequestId, MAX_PAGES_PER_TICK},
    Cookie, Namespace,
};

/// One automatic discovery at one server.
#[derive(Debug, Default)]
struct Task {
    /// When the next DISCOVER is due (`None`: not scheduled).
    due: Option<Instant>,
    inflight: Option<RequestId>,
    failures: u32,
    /// The latest cookie the server gave; kept for ever so a steady poll gets only what is new.
    cookie: Option<Cookie>,
    /// Pages asked for in a row in this tick.
    pages: u32,
    push: PushState,
    /// Subscriptions that ended in a row without a push.
    push_failures: u32,
    /// The last DISCOVER's page was not full, and nothing since called for another at once:
    /// a subscription may start from the cookie.
    caught_up: bool,
}

/// A task's push subscription.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum PushState {
    /// None open.
    #[default]
    Off,
    /// Asked for, or open.
    Subscribed,
    /// The last one ended: none until then.
    Resting(Instant),
}

/// The automatic discoveries.
///
/// Invariants: a task with `due` set has no DISCOVER in flight; `ready` holds exactly the due
/// tasks of the servers not in `paused`.
#[derive(Debug)]
pub(super) struct DiscoverTasks {
    servers: HashMap<PeerId, BTreeMap<Namespace, Task>>,
    ready: Deadlines<(PeerId, Namespace)>,
    /// Servers whose discoveries wait (for a REGISTER in flight there).
    paused: HashSet<PeerId>,
    /// Namespaces discovered automatically at every server (empty when discovery is off).
    namespaces: Vec<Namespace>,
    interval: Duration,
    /// Servers that serve push.
    push_servers: HashSet<PeerId>,
    /// Subscriptions to ask for (each (server, namespace) at most once: its task is then
    /// [`PushState::Subscribed`]).
    subscribe: VecDeque<(PeerId, Namespace)>,
}

impl DiscoverTasks {
    pub(super) fn new(namespaces: Vec<Namespace>, interval: Duration) -> Self {
        Self {
            servers: HashMap::new(),
            ready: Deadlines::default(),
            paused: HashSet::new(),
            namespaces,
            interval,
            push_servers: HashSet::new(),
            subscribe: VecDeque::new(),
        }
    }

    /// A new server: one task per namespace, none due until it is connected.
    pub(super) fn add_server(&mut self, peer: PeerId) {
        let tasks = self
            .namespaces
            .iter()
            .map(|ns| (ns.clone(), Task::default()))
            .collect();
        self.servers.insert(peer, tasks);
    }

    /// Forgets `peer`.
    pub(super) fn remove_server(&mut self, peer: &PeerId) {
        if let Some(tasks) = self.servers.remove(peer) {
            for ns in tasks.into_keys() {
                self.ready.clear(&(*peer, ns));
            }
        }
        self.paused.remove(peer);
        self.push_servers.remove(peer);
        self.subscribe.retain(|(p, _)| p != peer);
    }

    /// Stops every automatic discovery.
    pub(super) fn stop(&mut self) {
        for peer in self.servers.keys().copied().collect::<Vec<_>>() {
            self.remove_server(&peer);
            self.servers.insert(peer, BTreeMap::new());
        }
    }

    fn task_mut(&mut self, peer: PeerId, namespace: &Namespace) -> Option<&mut Task> {
        self.servers.get_mut(&peer)?.get_mut(namespace)
    }

    fn set_due(&mut self, peer: PeerId, namespace: &Namespace, due: Option<Instant>) {
        let Some(task) = self.task_mut(peer, namespace) else {
            return;
        };
        task.due = due;
        let key = (peer, namespace.clone());
        match due {
            Some(at) if !self.paused.contains(&peer) => self.ready.set(key, at),
            _ => {
                self.ready.clear(&key);
            }
        }
    }

    /// Holds (`true`) or releases the discoveries at `peer`.
    pub(super) fn pause(&mut self, peer: PeerId, paused: bool) {
        let changed = if paused {
            self.paused.insert(peer)
        } else {
            self.paused.remove(&peer)
        };
        let Some(tasks) = self.servers.get(&peer).filter(|_| changed) else {
            return;
        };
        for (ns, task) in tasks {
            let key = (peer, ns.clone());
            match task.due {
                Some(at) if !paused => self.ready.set(key, at),
                _ => {
                    self.ready.clear(&key);
                }
            }
        }
    }

    /// Sets every task at `peer` without a DISCOVER in flight due at `at`, from the first page.
    fn reschedule_idle(&mut self, peer: PeerId, at: Option<Instant>) {
        let Some(tasks) = self.servers.get_mut(&peer) else {
            return;
        };
        let idle: Vec<Namespace> = tasks
            .iter_mut()
            .filter(|(_, t)| t.inflight.is_none() || at.is_none())
            .map(|(ns, t)| {
                if at.is_some() {
                    t.pages = 0;
                }
                t.caught_up = false;
                ns.clone()
            })
            .collect();
        for ns in idle {
            self.set_due(peer, &ns, at);
        }
    }

    /// `peer` is connected: discover everything not in flight at once.
    pub(super) fn connected(&mut self, now: Instant, peer: PeerId) {
        self.reschedule_idle(peer, Some(now));
    }

    /// `peer` is gone: nothing is due there until it is back, and its subscriptions are gone.
    pub(super) fn disconnected(&mut self, peer: PeerId) {
        self.reschedule_idle(peer, None);
        self.push_servers.remove(&peer);
        self.subscribe.retain(|(p, _)| *p != peer);
        for task in self
            .servers
            .get_mut(&peer)
            .into_iter()
            .flat_map(|t| t.values_mut())
        {
            task.push = PushState::Off;
        }
    }

    /// `peer` serves push: its tasks that are not polling now subscribe.
    pub(super) fn push_supported(&mut self, now: Instant, peer: PeerId) {
        if !self.push_servers.insert(peer) {
            return;
        }
        let idle: Vec<Namespace> = self
            .servers
            .get(&peer)
            .into_iter()
            .flatten()
            .filter(|(_, t)| t.inflight.is_none() && t.caught_up)
            .map(|(ns, _)| ns.clone())
            .collect();
        for namespace in idle {
            self.maybe_subscribe(now, peer, &namespace);
        }
    }

    /// Subscribes `namespace` at `peer` if the server serves push and the task has no
    /// subscription and is not resting after one.
    fn maybe_subscribe(&mut self, now: Instant, peer: PeerId, namespace: &Namespace) {
        if !self.push_servers.contains(&peer) {
            return;
        }
        let Some(task) = self.task_mut(peer, namespace) else {
            return;
        };
        let may = match task.push {
            PushState::Off => true,
            PushState::Subscribed => false,
            PushState::Resting(until) => until <= now,
        };
        if may {
            task.push = PushState::Subscribed;
            self.subscribe.push_back((peer, namespace.clone()));
        }
    }

    /// The next subscription to ask for, from its task's cookie, with `limit`.
    pub(super) fn poll_subscribe(&mut self, limit: u64) -> Option<Action> {
        while let Some((server, namespace)) = self.subscribe.pop_front() {
            let Some(task) = self.servers.get(&server).and_then(|t| t.get(&namespace)) else {
                continue;
            };
            return Some(Action::Subscribe {
                server,
                cookie: task.cookie.clone(),
                namespace,
                limit,
            });
        }
        None
    }

    /// A page was pushed to the subscription of `namespace` at `peer`: its cookie is the
    /// task's.
    pub(super) fn pushed(&mut self, peer: PeerId, namespace: &Namespace, cookie: Option<Cookie>) {
        let Some(task) = self.task_mut(peer, namespace) else {
            return;
        };
        task.push_failures = 0;
        if cookie.is_some() {
            task.cookie = cookie;
        }
    }

    /// The subscription of `namespace` at `peer` ended: the task DISCOVERs from its cookie at
    /// `catch_up` (from the start after an invalid cookie) and subscribes again after a backoff
    /// (`rest`, from [`DiscoverTasks::next_push_failure`]). Returns whether the cookie was
    /// dropped.
    pub(super) fn subscription_ended(
        &mut self,
        now: Instant,
        peer: PeerId,
        namespace: &Namespace,
        invalid_cookie: bool,
        (catch_up, rest): (Instant, Duration),
        connected: bool,
    ) -> bool {
        let Some(task) = self.task_mut(peer, namespace) else {
            return false;
        };
        task.push = PushState::Resting(now + rest);
        task.push_failures = task.push_failures.saturating_add(1);
        task.caught_up = false;
        let dropped = invalid_cookie && task.cookie.take().is_some();
        if task.inflight.is_none() && connected {
            task.pages = 0;
            self.set_due(peer, namespace, Some(catch_up));
        }
        dropped
    }

    /// How many subscriptions of `namespace` at `peer` ended in a row, counting one more.
    pub(super) fn next_push_failure(&self, peer: &PeerId, namespace: &Namespace) -> u32 {
        self.servers
            .get(peer)
            .and_then(|t| t.get(namespace))
            .map_or(1, |t| t.push_failures.saturating_add(1))
    }

    /// The DISCOVER of a discovery due at `now`, with the stored cookie and `limit`, now in
    /// flight.
    pub(super) fn poll(
        &mut self,
        now: Instant,
        limit: u64,
        requests: &mut Requests,
    ) -> Option<Action> {
        let (peer, namespace) = self.ready.pop_due(now)?;
        let task = self.servers.get_mut(&peer)?.get_mut(&namespace)?;
        let id = requests.next_id();
        task.due = None;
        task.inflight = Some(id);
        let request = Request::Discover {
            namespace: Some(namespace),
            cookie: task.cookie.clone(),
            limit: Some(limit),
        };
        Some(requests.send(peer, id, Origin::Auto, request))
    }

    /// A page came back for the DISCOVER in flight of `namespace` at `peer`. A `full` page
    /// means more may be waiting: with a cookie the next page is asked for at once, up to
    /// [`MAX_PAGES_PER_TICK`]; a shorter one (also one the server cut to fit its size cap) ends
    /// the paging until the next tick.
    pub(super) fn page(
        &mut self,
        now: Instant,
        peer: PeerId,
        namespace: &Namespace,
        full: bool,
        cookie: Option<Cookie>,
        connected: bool,
    ) {
        let (interval, pushes) = (self.interval, self.push_servers.contains(&peer));
        let Some(task) = self.task_mut(peer, namespace) else {
            return;
        };
        task.inflight = None;
        task.failures = 0;
        let has_cookie = cookie.is_some();
        if cookie.is_some() {
            task.cookie = cookie;
        }
        let caught_up = !(full && has_cookie);
        task.caught_up = caught_up;
        let mut at = if !caught_up && task.pages + 1 < MAX_PAGES_PER_TICK {
            task.pages += 1;
            now
        } else {
            task.pages = 0;
            now + interval
        };
        // Caught up: subscribe now, or poll again when the rest after the last one ends.
        if let PushState::Resting(until) = task.push {
            if pushes {
                at = at.min(until.max(now));
            }
        }
        self.set_due(peer, namespace, connected.then_some(at));
        if caught_up && connected {
            self.maybe_subscribe(now, peer, namespace);
        }
    }

    /// How many times in a row the discovery failed, counting one more failure.
    pub(super) fn next_failure(&self, peer: &PeerId, namespace: &Namespace) -> u32 {
        self.servers
            .get(peer)
            .and_then(|t| t.get(namespace))
            .map_or(1, |t| t.failures.saturating_add(1))
    }

    /// The DISCOVER in flight failed; retry at `retry_at`. A rejected cookie (the server
    /// forgot us: restart, cookie expiry) is dropped so discovery starts over; peers already
    /// known with the same addresses produce no new event then. Returns `None` for a task that
    /// no longer exists, else whether the cookie was dropped (a reset, not a failure to
    /// report).
    pub(super) fn failed(
        &mut self,
        peer: PeerId,
        namespace: &Namespace,
        failures: u32,
        invalid_cookie: bool,
        retry_at: Option<Instant>,
    ) -> Option<bool> {
        let task = self.task_mut(peer, namespace)?;
        task.inflight = None;
        task.pages = 0;
        task.caught_up = false;
        if invalid_cookie {
            tracing::debug!(server = %peer, %namespace, "cookie rejected; discovering from the start");
            task.cookie = None;
        } else {
            task.failures = failures;
        }
        self.set_due(peer, namespace, retry_at);
        Some(invalid_cookie)
    }

    /// The next discovery due.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.ready.first()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::{test_support::*, Request};
    use crate::{
        client::{handler::Response, Config, Event, RequestError},
        codec::{ErrorCode, ErrorResponse},
    };

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
