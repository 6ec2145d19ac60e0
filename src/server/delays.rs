//! [`PushDelays`]: how long pushes waited on the server, from the change to its write.
//!
//! A push waits for the server's quiet moment (requests first, gate.rs), behind the other push
//! streams' turns, and for its own write; under a storm of requests, for as long as the storm
//! lasts. What an operator wants to know is how long, so every push stream counts each push it
//! writes by how long ago its change reached the server: lock-free counters shared by the
//! behaviour and every push stream, read at any time ([`PushDelays::snapshot`]), exported as
//! the histogram `libp2p_rendezvous_server_push_delay_seconds` (crate::metrics).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

/// How many buckets [`PushDelays`] has with an upper bound (one more counts the slower).
const BOUNDED: usize = 16;

/// The upper bounds of [`PushDelays`]' buckets: 0.25 ms, doubling up to 8.192 s. A push slower
/// than the last is counted above it.
pub const PUSH_DELAY_BUCKETS: [Duration; BOUNDED] = {
    let mut bounds = [Duration::ZERO; BOUNDED];
    let mut i = 0;
    while i < BOUNDED {
        bounds[i] = Duration::from_micros(250 << i);
        i += 1;
    }
    bounds
};

/// Pushes written by a server, counted by how long each waited: from the moment its change
/// reached the server (the REGISTER or UNREGISTER was stored, the peer's registrations were
/// removed, or, in a fleet, the instance heard of the change) until the stream had written it
/// and flushed it to the connection. Pushes dropped when their subscription ended are not
/// counted; replayed pages are not pushes. Cheap to clone: every clone counts into the same
/// counters.
#[derive(Debug, Clone, Default)]
pub struct PushDelays(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    /// Per bucket of [`PUSH_DELAY_BUCKETS`], then one for the slower.
    buckets: [AtomicU64; BOUNDED + 1],
    /// Every delay counted, summed, in microseconds.
    sum_micros: AtomicU64,
}

impl PushDelays {
    /// Counts a push written at `now` whose change came at `changed`.
    pub(crate) fn observe(&self, changed: Instant, now: Instant) {
        let delay = now.saturating_duration_since(changed);
        let bucket = PUSH_DELAY_BUCKETS
            .iter()
            .position(|bound| delay <= *bound)
            .unwrap_or(BOUNDED);
        self.0.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.0.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> PushDelaySnapshot {
        let counts = self.0.buckets.iter().map(|n| n.load(Ordering::Relaxed));
        let bounds = PUSH_DELAY_BUCKETS.iter().copied().chain([Duration::MAX]);
        PushDelaySnapshot {
            buckets: bounds.zip(counts).collect(),
            sum: Duration::from_micros(self.0.sum_micros.load(Ordering::Relaxed)),
        }
    }
}

/// What [`PushDelays`] counted, at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushDelaySnapshot {
    /// Each bucket's upper bound and the pushes in it (not cumulative), in the order of
    /// [`PUSH_DELAY_BUCKETS`]; the last bucket's bound is [`Duration::MAX`]: the pushes that
    /// waited longer than every bound.
    pub buckets: Vec<(Duration, u64)>,
    /// Every delay counted, summed (to the microsecond).
    pub sum: Duration,
}

impl PushDelaySnapshot {
    /// How many pushes were counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|(_, n)| n).sum()
    }

    /// The upper bound of the bucket that holds quantile `q` (clamped to 0..=1) of the
    /// pushes: `q` of them waited at most that long. `None` when nothing was counted;
    /// [`Duration::MAX`] when the quantile is beyond the last bound.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        // The rank of the quantile's push, 1-based: at least the first, at most the last.
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        self.buckets.iter().find_map(|(bound, n)| {
            seen += n;
            (seen >= rank).then_some(*bound)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_push_is_counted_in_the_first_bucket_that_holds_its_delay() {
        let delays = PushDelays::default();
        let changed = Instant::now();
        delays.observe(changed, changed + Duration::from_micros(250));
        delays.observe(changed, changed + Duration::from_micros(251));
        delays.observe(changed, changed + ms(100));
        delays.observe(changed, changed + Duration::from_secs(60));
        // Written before its change was seen (clocks read in another order): no delay.
        delays.observe(changed + ms(1), changed);
        let snapshot = delays.snapshot();
        let count_at = |bound: Duration| {
            snapshot
                .buckets
                .iter()
                .find(|(b, _)| *b == bound)
                .map(|(_, n)| *n)
        };
        assert_eq!(count_at(Duration::from_micros(250)), Some(2));
        assert_eq!(count_at(Duration::from_micros(500)), Some(1));
        assert_eq!(count_at(ms(128)), Some(1));
        assert_eq!(count_at(Duration::MAX), Some(1));
        assert_eq!(snapshot.count(), 5);
        assert_eq!(snapshot.buckets.len(), PUSH_DELAY_BUCKETS.len() + 1);
        assert_eq!(
            snapshot.sum,
            Duration::from_micros(250 + 251) + ms(100) + Duration::from_secs(60)
        );
    }

    #[test]
    fn the_quantile_is_the_bound_of_the_bucket_that_holds_it() {
        let delays = PushDelays::default();
        assert_eq!(delays.snapshot().quantile(0.5), None);
        let changed = Instant::now();
        for _ in 0..98 {
            delays.observe(changed, changed + ms(3));
        }
        delays.observe(changed, changed + ms(40));
        delays.observe(changed, changed + ms(9000));
        let snapshot = delays.snapshot();
        assert_eq!(snapshot.quantile(0.0), Some(ms(4)));
        assert_eq!(snapshot.quantile(0.5), Some(ms(4)));
        assert_eq!(snapshot.quantile(0.98), Some(ms(4)));
        assert_eq!(snapshot.quantile(0.99), Some(ms(64)));
        assert_eq!(snapshot.quantile(1.0), Some(Duration::MAX));
    }

    #[test]
    fn clones_count_into_the_same_counters() {
        let delays = PushDelays::default();
        let stream = delays.clone();
        let changed = Instant::now();
        stream.observe(changed, changed + ms(1));
        assert_eq!(delays.snapshot().count(), 1);
    }
}
