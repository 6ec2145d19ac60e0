//! [`Timer`]: the one timer a behaviour owns, re-armed from its cores' next deadline.

use std::{
    task::{Context, Poll},
    time::Instant,
};

use futures::FutureExt;
use futures_timer::Delay;

/// A [`Delay`] armed for the earliest deadline of a behaviour's cores. Re-armed only when the
/// deadline changes, so polling it again and again costs nothing.
#[derive(Debug, Default)]
pub(crate) struct Timer {
    /// The armed delay and the deadline it was armed for.
    armed: Option<(Instant, Delay)>,
}

impl Timer {
    /// Ready once `deadline` (the earliest of the cores', `None`: nothing to wait for) has
    /// passed; else registers `cx` to be woken then. `now` is the caller's clock reading.
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
            Some((armed, delay)) if *armed == deadline => delay,
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

/// Runs `future` for at most `timeout`: `None` when it took longer.
///
/// A future that is ready when first polled (most writes to a stream with room, most reads of
/// a request that came with its stream) never arms a timer: arming a [`Delay`] and dropping it
/// each wake futures-timer's helper thread, which cost a server more than the write itself
/// when it pushed one record to a thousand subscribers.
pub(crate) async fn within<F: std::future::Future>(
    timeout: std::time::Duration,
    future: F,
) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    if let Poll::Ready(output) = futures::poll!(future.as_mut()) {
        return Some(output);
    }
    match futures::future::select(future, Delay::new(timeout)).await {
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
