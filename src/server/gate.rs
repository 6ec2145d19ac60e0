//! Requests before pushes: a push is written only in a quiet moment, when no request waits for
//! the behaviour and none has come for [`GATE_QUIET`].
//!
//! Every request read off a rendezvous stream takes a [`Pass`] and holds it until the behaviour
//! has handled it (stored it and made its answer, or held it); every push stream takes its
//! [turn] before each write. While the server is not quiet, the stream whose turn it is waits,
//! looking again every [`GATE_QUIET`], and every other push stream waits behind it for the
//! turn: one task waits on a timer, however many subscribers there are. So under a storm of
//! requests the server spends its CPU on them, the pushes queue up, and a subscription whose
//! queue fills is left behind (changes pass it by; once the storm is over the server replays
//! to it from its cookie; docs/push.md): REGISTER is not slowed by pushing earlier ones to many
//! subscribers. When the storm is over, the turn goes round: each stream writes what waited
//! for it, in one coalesced batch.
//!
//! Why a quiet moment rather than the moment no request waits: under a storm that moment comes
//! between almost any two requests, and letting push streams through then cost a REGISTER
//! half as much CPU again with 1000 subscribers; so did a quiet moment of 1 ms, which a storm
//! from clients that stall now and then still leaves (BENCHMARKS.md, "Push"). With ordinary
//! traffic quiet moments come often (requests spread at random: at 500 a second, a gap of
//! 5 ms about 40 times a second; at 1000 a second, about 7 times), and a push waits about
//! [`GATE_QUIET`] more; with steadier traffic than that, pushes wait longer, and
//! subscriptions whose queues fill are left behind.
//!
//! A request submitted to the store holds a second pass until the store has answered it
//! ([`InFlight`](super::in_flight::InFlight)): a storm of REGISTERs on SQLite leaves the server
//! idle while each group commit syncs, and pushes written in those gaps cost the server 60 to
//! 90 ms of CPU more over a burst of 5000 REGISTERs with 1000 subscribers, where the memory
//! store spent 25 ms more (BENCHMARKS.md, "Push"). The quiet time counts from the moment a
//! pass is let go as well as from the read: a commit's sync often outlasts the quiet time, and
//! the gate then opened the moment the commit's REGISTERs were answered, in the gap before
//! their registrants sent the next ones (pushes went out in every such gap of a storm, and 1000
//! subscribers took the registrants' core to check them). So a push follows its
//! acknowledgement by the quiet time, on every store. A request held for its peer's identify
//! holds no pass while it waits, and neither does an answer its peer is slow to read (a peer
//! that does not read could otherwise keep the gate shut for as long as the stream timeout).
//!
//! Changes the store reports count too, when they come in a burst: a change that comes within
//! [`GATE_QUIET`] of the one before shuts the gate as a request read does. On one server
//! most changes come from a request, which shut the gate already (a disconnected peer's
//! registrations removed at once are changes without one, and follow the same rule); in a
//! fleet, a storm of REGISTERs at another instance reaches this one only as changes, and
//! without this its push streams would write each one to every subscriber as it came, taking
//! the CPU from its own requests (and, where instances share a machine, from the instance with
//! the storm). With it they wait, coalesce, and shed as above. A lone change does not shut the
//! gate: it is pushed at once, as before.
//!
//! A push stream is not woken when a push is queued for it, but when the gate is quiet: the
//! behaviour lists its [`Bell`] as it queues and rings every listed bell in the next quiet
//! moment ([`Bells`]). Waking a thousand subscribers' streams the moment a REGISTER's change
//! was queued, only for each to find the gate shut and wait again, cost the server a second
//! wake per push and delayed that REGISTER's own answer behind a thousand connection tasks
//! (28 ms at the median with 1000 subscribers rather than 2; BENCHMARKS.md, "A push stream
//! wakes once").
//!
//! [turn]: Gate::turn

use std::{
    future::poll_fn,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::Poll,
    time::{Duration, Instant},
};

use futures::{lock::Mutex, task::AtomicWaker, FutureExt};
use futures_timer::Delay;

/// How long the server must have read no request before a push goes out, and how often a push
/// stream waiting for such a moment looks again.
pub const GATE_QUIET: Duration = Duration::from_millis(5);

/// The server's gate between requests and pushes (cheap to clone: one per handler).
#[derive(Debug, Clone)]
pub(crate) struct Gate(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// What [`Inner::now`] counts from, less `quiet`: a new gate is quiet at once.
    since: Instant,
    /// When the last request was read or let go of its pass (or a change came in a burst), per
    /// [`Inner::now`].
    last_request: AtomicU64,
    /// When the store last reported a change, per [`Inner::now`].
    last_change: AtomicU64,
    /// Requests read and not yet handled by the behaviour.
    busy: AtomicUsize,
    /// [`Config::with_push_quiet`](super::Config::with_push_quiet).
    quiet: Duration,
    /// Taken by one push stream at a time to pass the gate, so that only the holder waits on a
    /// timer; the others wait for the turn (woken one at a time as it is handed on).
    turn: Mutex<()>,
}

/// A request on its way to the behaviour: the gate stays shut while one exists.
#[derive(Debug)]
pub(crate) struct Pass(Gate);

impl Gate {
    /// A gate that opens after `quiet` without a request ([`Config::with_push_quiet`]).
    ///
    /// [`Config::with_push_quiet`]: super::Config::with_push_quiet
    pub(crate) fn new(quiet: Duration) -> Self {
        Self(Arc::new(Inner {
            since: Instant::now(),
            last_request: AtomicU64::new(0),
            last_change: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            quiet: quiet.min(super::MAX_PUSH_QUIET),
            turn: Mutex::new(()),
        }))
    }

    /// Shuts the gate until the pass is dropped and the quiet time has passed.
    pub(crate) fn pass(&self) -> Pass {
        self.0.busy.fetch_add(1, Ordering::SeqCst);
        self.0.shut_at(self.0.now());
        Pass(self.clone())
    }

    /// The store reported a change: within the quiet time of the one before (a burst), it
    /// shuts the gate for the quiet time as a request does.
    pub(crate) fn changed(&self) {
        let now = self.0.now();
        let last = self.0.last_change.swap(now, Ordering::Relaxed);
        if now.saturating_sub(last) < self.0.quiet.as_micros() as u64 {
            self.0.shut_at(now);
        }
    }

    /// Zero when the server is quiet; otherwise how long to wait before looking again: the
    /// rest of the quiet time, or, while a request waits for the behaviour, a quiet time (at
    /// least a millisecond: whoever looks again at once only spins, and a behaviour that did
    /// would never get to handle the request).
    pub(crate) fn look_in(&self) -> Duration {
        match self.since_request() {
            None => self.0.quiet.max(Duration::from_millis(1)),
            Some(since) => self.0.quiet.saturating_sub(since),
        }
    }

    /// How long the server has been quiet: zero while a request waits for the behaviour, or
    /// within the quiet time of the last one.
    pub(crate) fn quiet_for(&self) -> Duration {
        match self.since_request() {
            Some(since) if since >= self.0.quiet => since,
            _ => Duration::ZERO,
        }
    }

    /// How long since the last request came; `None` while a request waits for the behaviour.
    fn since_request(&self) -> Option<Duration> {
        if self.0.busy.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = self
            .0
            .now()
            .saturating_sub(self.0.last_request.load(Ordering::Relaxed));
        Some(Duration::from_micros(since))
    }

    /// Resolves in a quiet moment: at once when the server is quiet, or else when it is this
    /// caller's turn, after the push streams that were waiting before it, and the server is
    /// quiet.
    pub(crate) async fn turn(&self) {
        if self.look_in().is_zero() {
            return;
        }
        let _turn = self.0.turn.lock().await;
        let mut looking: Option<Delay> = None;
        poll_fn(|cx| loop {
            let wait = self.look_in();
            if wait.is_zero() {
                return Poll::Ready(());
            }
            let delay = looking.get_or_insert_with(|| Delay::new(wait));
            if delay.poll_unpin(cx).is_pending() {
                return Poll::Pending;
            }
            looking = None;
        })
        .await;
    }
}

/// A push stream's bell: rung, it wakes the stream to look at its queue. It also carries
/// what the stream and the behaviour tell each other besides the queue: whether the stream is
/// writing, and whether the behaviour left it behind.
#[derive(Debug, Default)]
pub(crate) struct Bell {
    waker: AtomicWaker,
    /// In a [`Bells`] list, not rung yet.
    listed: AtomicBool,
    /// The stream is writing a batch: it took pushes off its queue and has not flushed them.
    writing: AtomicBool,
    /// Its queue filled while the stream waited for a quiet moment: the behaviour stopped
    /// queuing, and the stream drops what waited.
    behind: AtomicBool,
    /// The behaviour lets the stream, left behind, catch its subscriber up from its last
    /// cookie.
    resume: AtomicBool,
}

impl Bell {
    /// The stream starts (`true`) or finished (`false`) writing a batch.
    pub(crate) fn set_writing(&self, writing: bool) {
        self.writing.store(writing, Ordering::SeqCst);
    }

    /// Whether the stream is writing a batch.
    pub(crate) fn is_writing(&self) -> bool {
        self.writing.load(Ordering::SeqCst)
    }

    /// The behaviour left the stream behind: it queues nothing more until the stream resumes.
    pub(crate) fn set_behind(&self) {
        self.behind.store(true, Ordering::SeqCst);
    }

    /// Whether the stream was left behind and has not resumed yet.
    pub(crate) fn is_behind(&self) -> bool {
        self.behind.load(Ordering::SeqCst)
    }

    /// The behaviour lets the stream, left behind, resume: wakes it now.
    pub(crate) fn resume(&self) {
        self.resume.store(true, Ordering::SeqCst);
        self.ring();
    }

    /// Whether the stream may resume; if so, it is no longer behind.
    pub(crate) fn take_resume(&self) -> bool {
        if !self.resume.swap(false, Ordering::SeqCst) {
            return false;
        }
        self.behind.store(false, Ordering::SeqCst);
        true
    }

    /// The stream waits for a ring: wakes `cx` at the next one.
    pub(crate) fn register(&self, cx: &std::task::Context<'_>) {
        self.waker.register(cx.waker());
    }

    /// Wakes the stream now.
    pub(crate) fn ring(&self) {
        self.listed.store(false, Ordering::Release);
        self.waker.wake();
    }
}

/// The bells of the push streams that have pushes queued and were not woken yet: each listed
/// once however many pushes wait for it, all rung in the next quiet moment.
#[derive(Debug)]
pub(crate) struct Bells {
    listed: Vec<Arc<Bell>>,
    /// When the list gets this long, the bells of streams that are gone are dropped from it
    /// (then it may grow to twice what is left): a storm that keeps the gate shut while
    /// subscriptions come and go leaves a list as long as the streams alive, not one entry per
    /// subscription ever made.
    prune_at: usize,
}

impl Default for Bells {
    fn default() -> Self {
        Self {
            listed: Vec::new(),
            prune_at: Self::MIN_PRUNE_AT,
        }
    }
}

impl Bells {
    const MIN_PRUNE_AT: usize = 64;

    /// Lists `bell` to be rung in the next quiet moment, unless it is listed already.
    pub(crate) fn list(&mut self, bell: &Arc<Bell>) {
        if bell.listed.swap(true, Ordering::AcqRel) {
            return;
        }
        if self.listed.len() >= self.prune_at {
            // Only this list holds the bell of a stream and queue both gone.
            self.listed.retain(|bell| Arc::strong_count(bell) > 1);
            self.prune_at = (2 * self.listed.len()).max(Self::MIN_PRUNE_AT);
        }
        self.listed.push(bell.clone());
    }

    /// Rings every listed bell if `gate` is quiet. Otherwise, while bells wait, how long until
    /// it may be (the caller looks again then).
    pub(crate) fn ring_if_quiet(&mut self, gate: &Gate) -> Option<Duration> {
        if self.listed.is_empty() {
            return None;
        }
        let wait = gate.look_in();
        if !wait.is_zero() {
            return Some(wait);
        }
        for bell in self.listed.drain(..) {
            bell.ring();
        }
        None
    }
}

impl Inner {
    /// Microseconds since the gate was made, plus its quiet time: a time of 0 (no request
    /// yet, no change yet) is a quiet time ago when the gate is new.
    fn now(&self) -> u64 {
        (self.since.elapsed() + self.quiet).as_micros() as u64
    }

    /// The quiet time starts again at `now` (a request read or answered, a change in a burst).
    fn shut_at(&self, now: u64) {
        self.last_request.store(now, Ordering::Relaxed);
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        // The quiet time counts from here too: a request answered after a long wait (a commit's
        // sync) is as recent as one just read. Stored before `busy` falls, so that whoever
        // sees the gate unbusy sees this time.
        let inner = &self.0 .0;
        inner.shut_at(inner.now());
        inner.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::{future::Future, pin::pin};

    use futures::{executor::block_on, task::noop_waker_ref, FutureExt};

    use super::*;

    fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
        future.poll_unpin(&mut std::task::Context::from_waker(noop_waker_ref()))
    }

    #[test]
    fn when_the_server_is_quiet_a_push_goes_at_once() {
        let gate = Gate::new(Duration::ZERO);
        assert!(poll_once(&mut pin!(gate.turn())).is_ready());
    }

    #[test]
    fn a_push_waits_while_a_request_waits_for_the_behaviour() {
        let gate = Gate::new(Duration::ZERO);
        let first = gate.pass();
        let second = gate.pass();
        let mut turn = pin!(gate.turn());
        assert!(poll_once(&mut turn).is_pending());
        drop(first);
        assert!(poll_once(&mut turn).is_pending(), "one request still waits");
        drop(second);
        block_on(turn);
    }

    #[test]
    fn a_push_waits_for_a_quiet_moment_after_the_last_request() {
        let gate = Gate::new(Duration::from_secs(3600));
        drop(gate.pass());
        let mut turn = pin!(gate.turn());
        assert!(poll_once(&mut turn).is_pending(), "a request came just now");
        let gate = Gate::new(Duration::from_millis(5));
        drop(gate.pass());
        let mut turn = pin!(gate.turn());
        assert!(poll_once(&mut turn).is_pending());
        block_on(turn);
    }

    #[test]
    fn the_quiet_time_counts_from_the_request_s_answer_too() {
        let gate = Gate::new(Duration::from_secs(3600));
        let pass = gate.pass();
        // As if the request had been read an hour ago and waited for the store since.
        gate.0.last_request.store(0, Ordering::Relaxed);
        assert!(poll_once(&mut pin!(gate.turn())).is_pending(), "it waits");
        drop(pass);
        assert!(
            poll_once(&mut pin!(gate.turn())).is_pending(),
            "answered just now: the quiet time starts again"
        );
    }

    #[test]
    fn a_new_gate_is_quiet() {
        let gate = Gate::new(Duration::from_secs(3600));
        assert!(poll_once(&mut pin!(gate.turn())).is_ready());
    }

    #[test]
    fn a_lone_change_is_pushed_at_once() {
        let gate = Gate::new(Duration::from_secs(3600));
        gate.changed();
        assert!(poll_once(&mut pin!(gate.turn())).is_ready());
    }

    #[test]
    fn changes_in_a_burst_shut_the_gate_as_a_request_does() {
        let gate = Gate::new(Duration::from_secs(3600));
        gate.changed();
        gate.changed();
        assert!(
            poll_once(&mut pin!(gate.turn())).is_pending(),
            "a second change within the quiet time"
        );
        let gate = Gate::new(Duration::from_millis(5));
        gate.changed();
        gate.changed();
        let mut turn = pin!(gate.turn());
        assert!(poll_once(&mut turn).is_pending());
        block_on(turn);
    }

    #[test]
    fn streams_behind_the_waiting_one_wait_for_their_turn() {
        let gate = Gate::new(Duration::ZERO);
        let pass = gate.pass();
        let mut first = pin!(gate.turn());
        let mut second = pin!(gate.turn());
        assert!(poll_once(&mut first).is_pending());
        assert!(poll_once(&mut second).is_pending());
        drop(pass);
        assert!(
            poll_once(&mut second).is_pending(),
            "the first holds the turn"
        );
        assert!(poll_once(&mut first).is_ready());
        assert!(poll_once(&mut second).is_ready());
    }

    #[test]
    fn a_bell_is_listed_once_until_it_is_rung() {
        let gate = Gate::new(Duration::ZERO);
        let mut bells = Bells::default();
        let bell = Arc::new(Bell::default());
        bells.list(&bell);
        bells.list(&bell);
        assert_eq!(bells.listed.len(), 1);
        assert_eq!(bells.ring_if_quiet(&gate), None);
        assert!(bells.listed.is_empty());
        bells.list(&bell);
        assert_eq!(bells.listed.len(), 1, "rung, it is listed again");
    }

    #[test]
    fn the_bells_of_streams_that_are_gone_do_not_pile_up() {
        let mut bells = Bells::default();
        let alive: Vec<Arc<Bell>> = (0..10).map(|_| Arc::new(Bell::default())).collect();
        for bell in &alive {
            bells.list(bell);
        }
        // A storm keeps the gate shut while subscriptions come and go.
        for _ in 0..10_000 {
            bells.list(&Arc::new(Bell::default()));
        }
        assert!(
            bells.listed.len() <= Bells::MIN_PRUNE_AT + 1,
            "{} listed",
            bells.listed.len()
        );
        for bell in &alive {
            assert!(bells.listed.iter().any(|b| Arc::ptr_eq(b, bell)), "kept");
        }
    }

    #[test]
    fn a_stream_dropped_while_it_waits_does_not_keep_the_others_waiting() {
        let gate = Gate::new(Duration::ZERO);
        let pass = gate.pass();
        let mut second = Box::pin(gate.turn());
        {
            let mut first = Box::pin(gate.turn());
            assert!(poll_once(&mut first).is_pending());
            assert!(poll_once(&mut second).is_pending());
        }
        drop(pass);
        block_on(second);
    }
}
