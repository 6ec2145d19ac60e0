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
}
