//! Push subscriptions (docs/push.md): each one's replay and live state, and the fan-out of the
//! store's changes to them.
//!
//! A subscription is attached to the change feed as soon as it arrives, before its replay is
//! asked for, and buffers the changes of its namespace while it replays (pages of DISCOVER
//! from its cookie, one at a time: the next page is asked for when the stream has written the
//! last). When a replayed page's cookie is up to date, the buffered changes are pushed, except
//! those at or below the cookie's sequence number (the replay had them): exactly once, nothing
//! missed. From then on each change is pushed as it comes.
//!
//! Nothing here waits: a push is added to the subscription's bounded queue or, when the queue
//! is full, the subscription ends ([`SubscriptionEnd::Overflow`]) and its subscriber resumes with
//! DISCOVER from its last cookie. So a slow subscriber never slows a REGISTER. A queue that
//! fills while its stream waits for a quiet moment (the server held the pushes, the
//! subscriber did not fall behind) does not end the subscription: it is left behind
//! ([`State::Behind`]: its changes are dropped, the store has them) and, in the next quiet
//! moment, its stream asks for a replay from the last cookie it wrote, which brings what a
//! DISCOVER from there would have. Under a storm of REGISTERs that costs one replayed page per
//! subscriber after the storm, written in a quiet moment, where ending it cost a DISCOVER, a
//! new stream and a replay, that the subscriber sent whenever it was told, storm or not.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use libp2p::{swarm::ConnectionId, PeerId};

use super::{
    gate::{Bells, Gate},
    push::PushQueue,
    rules::{self, cookie, Limits, Offer, ScanEnd},
    store::{Change, Operation, OperationId},
    Config, ServedFormats, MAX_PUSH_BEHIND, MIN_PUSH_BEHIND,
};
use crate::codec::{Cookie, DiscoverPage, ErrorCode, ErrorResponse, Namespace, Push, Registration};

/// A subscription: the connection it came on and its number there.
pub(crate) type Key = (ConnectionId, u64);

/// What goes to a subscription's stream.
#[derive(Debug)]
pub struct Queued {
    /// Shared: a registration's push is made once and queued for every subscriber it goes to
    /// (a thousand subscribers of a namespace hold one page, not a thousand copies).
    pub(crate) push: Arc<Push>,
    /// A replayed page after which the replay goes on: once it is written, the stream asks for
    /// the next one.
    pub(crate) more: bool,
    /// When the change it pushes reached the server (`None`: not a change's push, such as a
    /// replayed page or an error): the stream counts how long it waited ([`PushDelays`]).
    ///
    /// [`PushDelays`]: super::PushDelays
    pub(crate) changed: Option<Instant>,
}

impl Queued {
    /// A push that is no change's.
    pub(crate) fn new(push: Push, more: bool) -> Self {
        Self {
            push: Arc::new(push),
            more,
            changed: None,
        }
    }
}

/// A subscription as the connection's handler read it, on its way to the behaviour.
#[derive(Debug)]
pub struct NewSubscription {
    /// Its number on its connection.
    pub(crate) id: u64,
    pub(crate) namespace: Option<Namespace>,
    pub(crate) cookie: Option<Cookie>,
    pub(crate) limit: Option<u64>,
    /// Where its pushes go (bounded: [`Config::with_push_queue`]).
    pub(crate) sender: PushQueue,
}

/// Why a subscription ended on the server's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscriptionEnd {
    /// Its subscriber did not keep up (its queue was full), or the server's change feed lost
    /// changes ([`StoreEvent::ChangesLost`](super::store::StoreEvent::ChangesLost)).
    Overflow,
    /// Its replay was refused (an invalid cookie, the store unavailable).
    Refused,
    /// The subscriber closed its stream, or its connection closed.
    Closed,
}

/// Where each change went.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct FanOut {
    /// Pushes queued.
    pub(crate) pushed: usize,
    /// Subscriptions that ended.
    pub(crate) ended: Vec<(PeerId, Option<Namespace>, SubscriptionEnd)>,
    /// Subscriptions left behind (they resume from their cookies).
    pub(crate) behind: Vec<(PeerId, Option<Namespace>)>,
}

#[derive(Debug)]
enum State {
    /// Waiting for the peer's formats to be known, or for the stream to take the last page.
    Waiting,
    /// A replay page was asked of the store.
    Replaying,
    /// Caught up: changes are pushed as they come.
    Live,
    /// Its queue filled while its stream waited for a quiet moment: out of the index, so
    /// changes pass it by (the store has them), until the stream asks for a replay from its
    /// last cookie, which it may once the server has been quiet for a while, or it has been
    /// behind for its backoff.
    Behind,
}

/// How many quiet times ([`Config::with_push_quiet`]) without a request let every subscription
/// left behind resume at once: the storm that left them behind is over.
const RESUME_QUIET: u32 = 10;

#[derive(Debug)]
struct Subscription {
    peer: PeerId,
    namespace: Option<Namespace>,
    limit: Option<u64>,
    /// Known once the replay starts.
    served: ServedFormats,
    /// What the replay continues from.
    cookie: Option<Cookie>,
    /// The sequence number the subscriber's latest cookie carries, and its mark.
    after: u64,
    mark: Option<ServedFormats>,
    state: State,
    /// Changes of its namespace that came before the replay caught up, each with the moment
    /// it came.
    buffered: VecDeque<(Change, Instant)>,
    sender: PushQueue,
    /// How long it waited when it last fell behind, and when it last resumed.
    behind_for: Duration,
    resumed: Option<Instant>,
}

impl Subscription {
    fn wants(&self, namespace: &Namespace) -> bool {
        self.namespace.as_ref().is_none_or(|ns| ns == namespace)
    }
}

/// Subscription keys by the namespace they follow; those of all namespaces apart.
#[derive(Debug, Default)]
struct Index {
    by_namespace: HashMap<Namespace, HashSet<Key>>,
    every: HashSet<Key>,
}

impl Index {
    fn insert(&mut self, key: Key, namespace: Option<&Namespace>) {
        match namespace {
            Some(ns) => self.by_namespace.entry(ns.clone()).or_default().insert(key),
            None => self.every.insert(key),
        };
    }

    fn remove(&mut self, key: Key, namespace: Option<&Namespace>) {
        let Some(ns) = namespace else {
            self.every.remove(&key);
            return;
        };
        if let Some(keys) = self.by_namespace.get_mut(ns) {
            keys.remove(&key);
            if keys.is_empty() {
                self.by_namespace.remove(ns);
            }
        }
    }

    /// The subscriptions that follow any of `namespaces`, each once.
    fn of(&self, namespaces: &[Namespace]) -> Vec<Key> {
        let mut keys: Vec<Key> = namespaces
            .iter()
            .filter_map(|ns| self.by_namespace.get(ns))
            .flatten()
            .chain(&self.every)
            .copied()
            .collect();
        if namespaces.len() > 1 {
            // A namespace named twice would name its subscriptions twice.
            keys.sort_unstable();
            keys.dedup();
        }
        keys
    }
}

/// What a subscriber's state becomes when a registration is pushed to it, and the push.
#[derive(Debug, Clone)]
struct Pushed {
    /// The sequence number and mark of its new cookie.
    after: u64,
    mark: Option<ServedFormats>,
    /// `None`: left out for its format.
    push: Option<Arc<Push>>,
}

/// Subscribers that get the same push for a registration: the formats they are served, their
/// cookie's sequence number and mark, and whether they follow one namespace (the
/// registration's) or all. Live subscribers of a namespace that got every push so far share
/// all four.
type Kind = (ServedFormats, u64, Option<ServedFormats>, bool);

/// One change's pushes, made once and shared by every subscriber they go to: a registration's
/// once per [`Kind`] of subscriber (a page cut by the rules, its cookie encoded and read back),
/// a removal's once for the subscribers that follow all of its namespaces. With a thousand
/// subscribers of a namespace, one page is made and queued a thousand times, not copied.
#[derive(Debug, Default)]
struct Made {
    pages: Vec<(Kind, Pushed)>,
    removed: Option<Arc<Push>>,
}

impl Made {
    /// The push of registration `seq` to `sub`, made for the first subscriber of its kind.
    fn get(
        &mut self,
        limits: &Limits,
        sub: &Subscription,
        seq: u64,
        registration: &Registration,
    ) -> Pushed {
        let kind = (sub.served, sub.after, sub.mark, sub.namespace.is_some());
        if let Some((_, pushed)) = self.pages.iter().find(|(k, _)| *k == kind) {
            return pushed.clone();
        }
        let pushed = make(limits, sub, seq, registration);
        self.pages.push((kind, pushed.clone()));
        pushed
    }

    /// The removal of `peer` from `namespaces` as `sub` is told it: only the namespaces it
    /// follows.
    fn removed(&mut self, sub: &Subscription, peer: PeerId, namespaces: &[Namespace]) -> Arc<Push> {
        let wanted = |ns: &&Namespace| sub.wants(ns);
        if sub.namespace.is_some() && namespaces.len() > 1 {
            let namespaces = namespaces.iter().filter(wanted).cloned().collect();
            return Arc::new(Push::Removed { peer, namespaces });
        }
        // It follows all of them: the one it follows, or every namespace.
        self.removed
            .get_or_insert_with(|| {
                Arc::new(Push::Removed {
                    peer,
                    namespaces: namespaces.to_vec(),
                })
            })
            .clone()
    }
}

/// The push of registration `seq` to `sub`, as a DISCOVER from its cookie would page it.
fn make(limits: &Limits, sub: &Subscription, seq: u64, registration: &Registration) -> Pushed {
    let mut page = limits.page(sub.served, None, sub.after, sub.mark);
    let ttl = rules::remaining_ttl(std::time::Duration::from_secs(registration.ttl));
    let offer = page.offer(
        seq,
        &registration.namespace,
        registration.record.clone(),
        ttl,
    );
    let end = ScanEnd::Stopped { last: Some(seq) };
    let (registrations, cookie) = page.finish(end, sub.namespace.as_ref());
    let (after, mark) = cookie::parse(&cookie, sub.namespace.as_ref(), u64::MAX, sub.served)
        .unwrap_or((sub.after, sub.mark));
    let push = (offer == Offer::Taken).then(|| {
        Arc::new(Push::Page(Ok(DiscoverPage {
            registrations,
            cookie: Some(cookie),
            skipped: 0,
        })))
    });
    Pushed { after, mark, push }
}

/// Every subscription of the server. Bounded: [`Config::with_max_subscriptions`] in all,
/// [`Config::with_max_subscriptions_per_connection`] per connection, and per subscription
/// [`Config::with_push_queue`] pushes queued or changes buffered.
#[derive(Debug)]
pub(crate) struct Subscriptions {
    limits: Limits,
    max: usize,
    max_per_connection: usize,
    queue: usize,
    all: HashMap<Key, Subscription>,
    /// The keys of `all` by namespace, so that a change looks only at the subscriptions it
    /// concerns.
    index: Index,
    per_connection: HashMap<ConnectionId, usize>,
    /// The replay page each replaying subscription asked the store for (one each).
    replays: HashMap<OperationId, Key>,
    /// The streams with pushes queued, to wake in the next quiet moment.
    bells: Bells,
    /// The subscriptions left behind, each with the moment it may resume in any quiet moment.
    behind: Vec<(Instant, Key)>,
    /// How long the server must be quiet for all of them to resume.
    resume_quiet: Duration,
}

impl Subscriptions {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            limits: Limits::new(config),
            max: config.max_subscriptions,
            max_per_connection: config.max_subscriptions_per_connection,
            queue: config.push_queue.max(1),
            all: HashMap::new(),
            index: Index::default(),
            per_connection: HashMap::new(),
            replays: HashMap::new(),
            bells: Bells::default(),
            behind: Vec::new(),
            resume_quiet: config.push_quiet.min(super::MAX_PUSH_QUIET) * RESUME_QUIET,
        }
    }

    /// Wakes the streams that have pushes queued if `gate` is quiet, and lets those left
    /// behind resume if it has been quiet for [`RESUME_QUIET`] quiet times, or their backoff is
    /// over; while some wait, how long until that may change (the behaviour calls again then).
    pub(crate) fn wake_if_quiet(&mut self, gate: &Gate, now: Instant) -> Option<Duration> {
        let queued = self.bells.ring_if_quiet(gate);
        [queued, self.resume_if_quiet(gate, now)]
            .into_iter()
            .flatten()
            .min()
    }

    fn resume_if_quiet(&mut self, gate: &Gate, now: Instant) -> Option<Duration> {
        if self.behind.is_empty() {
            return None;
        }
        let wait = gate.look_in();
        if !wait.is_zero() {
            return Some(wait);
        }
        let quiet_for = gate.quiet_for();
        let over = quiet_for >= self.resume_quiet;
        let all = &self.all;
        let mut next: Option<Instant> = None;
        self.behind.retain(|(at, key)| {
            if over || *at <= now {
                if let Some(sub) = all.get(key).filter(|s| matches!(s.state, State::Behind)) {
                    sub.sender.resume();
                }
                return false;
            }
            next = Some(next.map_or(*at, |n| n.min(*at)));
            true
        });
        let until_over = self.resume_quiet.saturating_sub(quiet_for);
        next.map(|at| (at - now).min(until_over))
    }

    /// Subscriptions open.
    pub(crate) fn len(&self) -> usize {
        self.all.len()
    }

    /// Opens `new` for `peer` on `connection`, or refuses it (over a bound: the refusal is
    /// sent on its stream, and `Err` says which bound).
    pub(crate) fn open(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        new: NewSubscription,
    ) -> Result<Key, ErrorResponse> {
        let NewSubscription {
            id,
            namespace,
            cookie,
            limit,
            sender,
        } = new;
        let on_connection = self.per_connection.get(&connection).copied().unwrap_or(0);
        let refusal = if self.all.len() >= self.max {
            Some(format!(
                "this server serves {} push subscriptions at most; poll with DISCOVER",
                self.max
            ))
        } else if on_connection >= self.max_per_connection {
            Some(format!(
                "a connection may hold {} push subscriptions; poll with DISCOVER",
                self.max_per_connection
            ))
        } else {
            None
        };
        if let Some(text) = refusal {
            let error = ErrorResponse::new(ErrorCode::Unavailable, text);
            let push = Push::Page(Err(error.clone()));
            sender.send_last(Queued::new(push, false));
            return Err(error);
        }
        let key = (connection, id);
        *self.per_connection.entry(connection).or_default() += 1;
        self.index.insert(key, namespace.as_ref());
        self.all.insert(
            key,
            Subscription {
                peer,
                namespace,
                limit,
                served: ServedFormats::All,
                cookie,
                after: 0,
                mark: None,
                state: State::Waiting,
                buffered: VecDeque::new(),
                sender,
                behind_for: Duration::ZERO,
                resumed: None,
            },
        );
        Ok(key)
    }

    /// The next replay page of `key`, for an asker served `served`: the DISCOVER to submit.
    /// `None` if the subscription is gone or not waiting.
    pub(crate) fn replay(&mut self, key: Key, served: ServedFormats) -> Option<Operation> {
        let sub = self.all.get_mut(&key)?;
        if !matches!(sub.state, State::Waiting) {
            return None;
        }
        sub.served = served;
        sub.state = State::Replaying;
        Some(Operation::Discover {
            peer: sub.peer,
            served,
            namespace: sub.namespace.clone(),
            cookie: sub.cookie.clone(),
            limit: sub.limit,
        })
    }

    /// The replay page of `key` was submitted to the store as `id`.
    pub(crate) fn submitted(&mut self, id: OperationId, key: Key) {
        self.replays.insert(id, key);
    }

    /// The subscription whose replay page `id` is, if it is one.
    pub(crate) fn take_replay(&mut self, id: OperationId) -> Option<Key> {
        self.replays.remove(&id)
    }

    /// What the served formats of `key` are, once its replay started.
    pub(crate) fn served(&self, key: Key) -> Option<ServedFormats> {
        self.all.get(&key).map(|s| s.served)
    }

    /// The store answered a replay page of `key`: it is queued, and when its cookie is up to
    /// date the buffered changes after it follow.
    pub(crate) fn replayed(
        &mut self,
        key: Key,
        result: Result<(Vec<Registration>, Cookie), ErrorResponse>,
        up_to_date: bool,
    ) -> FanOut {
        let mut out = FanOut::default();
        let Some(sub) = self.all.get_mut(&key) else {
            return out;
        };
        let ended = match result {
            Err(error) => {
                let push = Push::Page(Err(error));
                let _ = sub
                    .sender
                    .try_send(Queued::new(push, false), &mut self.bells);
                Some(SubscriptionEnd::Refused)
            }
            Ok((registrations, cookie)) => {
                match cookie::parse(&cookie, sub.namespace.as_ref(), u64::MAX, sub.served) {
                    Err(_) => Some(SubscriptionEnd::Refused),
                    Ok((after, mark)) => {
                        sub.after = after;
                        sub.mark = mark;
                        sub.cookie = Some(cookie.clone());
                        let page = DiscoverPage {
                            registrations,
                            cookie: Some(cookie),
                            skipped: 0,
                        };
                        let queued = Queued::new(Push::Page(Ok(page)), !up_to_date);
                        match sub.sender.try_send(queued, &mut self.bells) {
                            Err(_) => Some(SubscriptionEnd::Overflow),
                            Ok(()) => {
                                sub.state = if up_to_date {
                                    State::Live
                                } else {
                                    State::Waiting
                                };
                                None
                            }
                        }
                    }
                }
            }
        };
        if let Some(why) = ended {
            self.end(key, why, &mut out);
            return out;
        }
        if !up_to_date {
            return out;
        }
        let buffered = std::mem::take(&mut sub.buffered);
        for (change, at) in &buffered {
            self.push_to(key, change, *at, &mut out, &mut Made::default());
        }
        out
    }

    /// Refuses `key` after it was opened (its replay could not start): `error` goes on its
    /// stream, which then ends.
    pub(crate) fn refuse(&mut self, key: Key, error: ErrorResponse) -> FanOut {
        let mut out = FanOut::default();
        if let Some(sub) = self.all.get_mut(&key) {
            let push = Push::Page(Err(error));
            let _ = sub
                .sender
                .try_send(Queued::new(push, false), &mut self.bells);
            self.end(key, SubscriptionEnd::Refused, &mut out);
        }
        out
    }

    /// [`Subscriptions::changed_at`] now.
    #[cfg(test)]
    pub(crate) fn changed(&mut self, change: &Change) -> FanOut {
        self.changed_at(change, Instant::now())
    }

    /// Pushes `change`, which reached the server `at`, to every subscription of its namespace
    /// (buffered while they replay).
    pub(crate) fn changed_at(&mut self, change: &Change, at: Instant) -> FanOut {
        let mut out = FanOut::default();
        let keys = match change {
            Change::Registered { registration, .. } => {
                self.index.of(std::slice::from_ref(&registration.namespace))
            }
            Change::Removed { namespaces, .. } => self.index.of(namespaces),
        };
        let mut made = Made::default();
        for key in keys {
            self.push_to(key, change, at, &mut out, &mut made);
        }
        out
    }

    /// Pushes `change` (of its namespace, come `at`) to `key`, or buffers it while it replays.
    fn push_to(
        &mut self,
        key: Key,
        change: &Change,
        at: Instant,
        out: &mut FanOut,
        made: &mut Made,
    ) {
        let Some(sub) = self.all.get_mut(&key) else {
            return;
        };
        if !matches!(sub.state, State::Live) {
            if sub.buffered.len() >= self.queue {
                self.end(key, SubscriptionEnd::Overflow, out);
            } else {
                sub.buffered.push_back((change.clone(), at));
            }
            return;
        }
        let push = match change {
            Change::Registered { seq, registration } => {
                // The replay, or an earlier push, had it.
                if *seq <= sub.after {
                    return;
                }
                let made = made.get(&self.limits, sub, *seq, registration);
                sub.after = made.after;
                sub.mark = made.mark;
                // Left out for its format: the next push's cookie carries the mark.
                let Some(push) = made.push else {
                    return;
                };
                push
            }
            Change::Removed {
                peer, namespaces, ..
            } => made.removed(sub, *peer, namespaces),
        };
        let queued = Queued {
            push,
            more: false,
            changed: Some(at),
        };
        match sub.sender.try_send(queued, &mut self.bells) {
            Ok(()) => out.pushed += 1,
            // Full while the stream writes: the subscriber reads slower than its pushes come.
            Err(e) if e.is_full() && sub.sender.is_writing() => {
                self.end(key, SubscriptionEnd::Overflow, out)
            }
            // Full while the stream waits for a quiet moment: the server held its pushes.
            Err(e) if e.is_full() => {
                let again = sub.resumed.is_some_and(|resumed| {
                    at.saturating_duration_since(resumed) < 2 * sub.behind_for
                });
                sub.behind_for = if again {
                    (2 * sub.behind_for).min(MAX_PUSH_BEHIND)
                } else {
                    MIN_PUSH_BEHIND
                };
                sub.state = State::Behind;
                sub.sender.fall_behind();
                // Changes no longer look at it (under a storm, a thousand subscribers left
                // behind cost each REGISTER nothing), until it resumes.
                self.index.remove(key, sub.namespace.as_ref());
                out.behind.push((sub.peer, sub.namespace.clone()));
                let resume_at = at + sub.behind_for;
                if self.behind.len() >= 2 * self.all.len() + 64 {
                    // Entries of subscriptions gone since they fell behind.
                    let all = &self.all;
                    self.behind.retain(|(_, k)| all.contains_key(k));
                }
                self.behind.push((resume_at, key));
            }
            Err(_) => self.end(key, SubscriptionEnd::Closed, out),
        }
    }

    /// The stream of `key`, left behind, dropped what waited and takes a replay from `cookie`
    /// (the last it wrote), `now`: `true` if `key` was behind, and its replay is to be asked
    /// for.
    pub(crate) fn resume(&mut self, key: Key, cookie: Option<Cookie>, now: Instant) -> bool {
        let Some(sub) = self.all.get_mut(&key) else {
            return false;
        };
        if !matches!(sub.state, State::Behind) {
            return false;
        }
        sub.cookie = cookie;
        sub.state = State::Waiting;
        sub.resumed = Some(now);
        self.index.insert(key, sub.namespace.as_ref());
        true
    }

    /// Ends `key`: its sender is dropped, so its stream ends once it wrote what was queued.
    fn end(&mut self, key: Key, why: SubscriptionEnd, out: &mut FanOut) {
        if let Some(sub) = self.remove(key) {
            out.ended.push((sub.peer, sub.namespace, why));
        }
    }

    fn remove(&mut self, key: Key) -> Option<Subscription> {
        let sub = self.all.remove(&key)?;
        self.index.remove(key, sub.namespace.as_ref());
        if let Some(n) = self.per_connection.get_mut(&key.0) {
            *n -= 1;
            if *n == 0 {
                self.per_connection.remove(&key.0);
            }
        }
        Some(sub)
    }

    /// The change feed lost changes: every subscription ends as if it had fallen behind (its
    /// subscriber resumes from its cookie).
    pub(crate) fn lost(&mut self) -> FanOut {
        let mut out = FanOut::default();
        let keys: Vec<Key> = self.all.keys().copied().collect();
        for key in keys {
            self.end(key, SubscriptionEnd::Overflow, &mut out);
        }
        out
    }

    /// The stream of `key` ended (the subscriber closed it, or it failed).
    pub(crate) fn closed(&mut self, key: Key) -> Option<(PeerId, Option<Namespace>)> {
        self.remove(key).map(|sub| (sub.peer, sub.namespace))
    }

    /// `connection` closed: its subscriptions end.
    pub(crate) fn connection_closed(
        &mut self,
        connection: ConnectionId,
    ) -> Vec<(PeerId, Option<Namespace>)> {
        if !self.per_connection.contains_key(&connection) {
            return Vec::new();
        }
        let keys: Vec<Key> = self
            .all
            .keys()
            .filter(|(c, _)| *c == connection)
            .copied()
            .collect();
        keys.into_iter()
            .filter_map(|key| self.closed(key))
            .collect()
    }
}

#[cfg(test)]
mod tests;
