//! [`Timer`]: the one timer a behaviour owns, re-armed from its cores' next deadline; and
//! [`within`], the timeout of one stream exchange.
//!
//! Both spare futures-timer's helper thread: arming a [`Delay`] and dropping it each wake that
//! thread, and a server that armed one per request spent about a third of its CPU there and
//! in switching to it (BENCHMARKS.md, "Push").

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{Mutex, OnceLock, PoisonError},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::{
    future::{Shared, WeakShared},
    FutureExt,
};
use futures_timer::Delay;

/// A [`Delay`] armed for the earliest deadline of a behaviour's cores. Re-armed only when the
/// deadline comes sooner than the armed one: a later deadline (a registration refreshed, a
/// connection active again) lets the armed delay fire early, and the caller, finding nothing
/// due, arms the next. So a deadline that moves with every request arms one delay, not one per
/// request.
#[derive(Debug, Default)]
pub(crate) struct Timer {
    /// The armed delay and the deadline it was armed for.
    armed: Option<(Instant, Delay)>,
}

impl Timer {
    /// Ready once `deadline` (the earliest of the cores', `None`: nothing to wait for), or an
    /// earlier deadline it was armed for, has passed; else registers `cx` to be woken then.
    /// `now` is the caller's clock reading. Ready is a hint: the caller looks at what is due.
    pub(crate) fn poll(
        &mut self,
        cx: &mut Context<'_>,
        deadline: Option<Instant>,
        now: Instant,
    ) -> Poll<()> {
        let Some(deadline) = deadline else {
            self.armed = None;
            return Poll::Pending;
        };
        let delay = match &mut self.armed {
            Some((armed, delay)) if *armed <= deadline => delay,
            slot => {
                let wait = deadline.saturating_duration_since(now);
                &mut slot.insert((deadline, Delay::new(wait))).1
            }
        };
        if delay.poll_unpin(cx).is_ready() {
            self.armed = None;
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

/// How finely [`within`] keeps time: a timeout ends at the first tick after it is due, so that
/// every timeout ending in the same tick waits on one [`Delay`].
pub(crate) const TICK: Duration = Duration::from_millis(10);

/// The delays [`within`] shares: one per tick that a timeout waits for, held only by the
/// timeouts waiting (a tick no one waits for any more is armed again if asked for).
struct Ticks {
    origin: Instant,
    delays: Mutex<BTreeMap<u64, WeakShared<Delay>>>,
}

static TICKS: OnceLock<Ticks> = OnceLock::new();

/// A delay that ends at the first tick at least `timeout` after `now`, shared with every
/// other timeout that ends then.
fn tick_after(now: Instant, timeout: Duration) -> Shared<Delay> {
    let ticks = TICKS.get_or_init(|| Ticks {
        origin: now,
        delays: Mutex::new(BTreeMap::new()),
    });
    let since = now.saturating_duration_since(ticks.origin);
    let tick_of = |d: Duration| d.as_nanos().div_ceil(TICK.as_nanos()) as u64;
    let tick = tick_of(since.saturating_add(timeout));
    let mut delays = ticks.delays.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(shared) = delays.get(&tick).and_then(WeakShared::upgrade) {
        return shared;
    }
    // The ticks that have passed go: the map holds at most one entry per tick ahead.
    *delays = delays.split_off(&tick_of(since));
    let at = ticks.origin + Duration::from_nanos(tick.saturating_mul(TICK.as_nanos() as u64));
    let shared = Delay::new(at.saturating_duration_since(now)).shared();
    if let Some(weak) = shared.downgrade() {
        delays.insert(tick, weak);
    }
    shared
}

/// Runs `future` for at most `timeout` (and less than [`TICK`] more): `None` when it took
/// longer.
///
/// A future that is ready when first polled (most writes to a stream with room, most reads of
/// a request that came with its stream) never waits on a timer, and the others wait on one
/// shared per [`TICK`] ([`tick_after`]), not a [`Delay`] each.
pub(crate) async fn within<F: Future>(timeout: Duration, future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    if let Poll::Ready(output) = futures::poll!(future.as_mut()) {
        return Some(output);
    }
    match futures::future::select(future, tick_after(Instant::now(), timeout)).await {
        futures::future::Either::Left((output, _)) => Some(output),
        futures::future::Either::Right(((), _)) => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::task::noop_waker_ref;

    use super::*;

    #[test]
    fn no_deadline_and_a_far_one_are_pending_and_a_passed_one_fires() {
        let mut cx = Context::from_waker(noop_waker_ref());
        let mut timer = Timer::default();
        let now = Instant::now();
        assert!(timer.poll(&mut cx, None, now).is_pending());
        let far = now + Duration::from_secs(3600);
        assert!(timer.poll(&mut cx, Some(far), now).is_pending());
        // A deadline already passed: the delay's timer thread wakes the task at once.
        futures::executor::block_on(futures::future::poll_fn(|cx| {
            timer.poll(cx, Some(now), Instant::now())
        }));
    }

    #[test]
    fn a_later_deadline_keeps_the_armed_delay_and_a_sooner_one_rearms_it() {
        let mut cx = Context::from_waker(noop_waker_ref());
        let mut timer = Timer::default();
        let now = Instant::now();
        let hour = now + Duration::from_secs(3600);
        assert!(timer.poll(&mut cx, Some(hour), now).is_pending());
        let later = hour + Duration::from_secs(1);
        assert!(timer.poll(&mut cx, Some(later), now).is_pending());
        let armed = |timer: &Timer| timer.armed.as_ref().map(|(at, _)| *at);
        assert_eq!(armed(&timer), Some(hour), "kept: it fires first");
        let sooner = now + Duration::from_secs(60);
        assert!(timer.poll(&mut cx, Some(sooner), now).is_pending());
        assert_eq!(armed(&timer), Some(sooner));
    }

    #[test]
    fn timeouts_that_end_in_the_same_tick_share_one_delay() {
        let now = Instant::now();
        let minutes = Duration::from_secs(600);
        let a = tick_after(now, minutes);
        let b = tick_after(now + TICK / 4, minutes - TICK / 4);
        let c = tick_after(now, minutes + TICK);
        assert!(a.ptr_eq(&b), "they end at the same moment");
        assert!(!a.ptr_eq(&c), "a tick later");
        // Once no timeout holds a tick's delay, it goes.
        let weak = c.downgrade().unwrap();
        drop(c);
        assert!(weak.upgrade().is_none());
    }

    #[test]
    fn within_gives_what_completes_in_time_and_none_for_what_does_not() {
        use futures::executor::block_on;
        let timeout = Duration::from_millis(20);
        assert_eq!(block_on(within(timeout, async { 7 })), Some(7));
        // Pending at the first poll: the timer is armed, and the future still wins.
        let mut yielded = false;
        let later = futures::future::poll_fn(|cx| {
            if yielded {
                return Poll::Ready(8);
            }
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        });
        assert_eq!(block_on(within(timeout, later)), Some(8));
        assert_eq!(
            block_on(within(timeout, futures::future::pending::<()>())),
            None
        );
    }
}
