//! A per-peer token bucket, pure (fed `now`).

use std::{collections::HashMap, time::Instant};

use libp2p::PeerId;

/// The most peers with a bucket at once. A bucket that has refilled carries no information (a
/// new one starts full), so full buckets are dropped when the map reaches this size; if every
/// bucket is still in use, a new peer is refused until some refill.
pub const MAX_RATE_LIMITED_PEERS: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets limiting the requests of each peer: `rate` per second, `burst` at once.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<PeerId, Bucket>,
}

impl RateLimiter {
    /// Buckets refilling `per_second` tokens per second up to `burst`; `per_second == 0` admits
    /// everything.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
        }
    }

    /// Takes a token for a request of `peer`; `false` when it has none left.
    pub fn try_acquire(&mut self, peer: PeerId, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        if !self.buckets.contains_key(&peer) && self.buckets.len() >= MAX_RATE_LIMITED_PEERS {
            let (rate, burst) = (self.rate, self.burst);
            self.buckets
                .retain(|_, b| Self::refilled(rate, burst, b, now) < burst);
            if self.buckets.len() >= MAX_RATE_LIMITED_PEERS {
                return false;
            }
        }
        let bucket = self.buckets.entry(peer).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        bucket.tokens = Self::refilled(self.rate, self.burst, bucket, now);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How many peers have a bucket.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no peer has a bucket.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    fn refilled(rate: f64, burst: f64, bucket: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * rate).min(burst)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn given_an_empty_bucket_when_time_passes_then_it_refills_at_the_rate() {
        let mut limiter = RateLimiter::new(2, 3);
        let peer = PeerId::random();
        let t0 = Instant::now();
        assert!((0..3).all(|_| limiter.try_acquire(peer, t0)));
        assert!(!limiter.try_acquire(peer, t0));
        assert!(limiter.try_acquire(peer, t0 + Duration::from_millis(500)));
        assert!(!limiter.try_acquire(peer, t0 + Duration::from_millis(500)));
        // Another peer has its own bucket.
        assert!(limiter.try_acquire(PeerId::random(), t0));
    }

    #[test]
    fn given_rate_zero_then_everything_is_admitted() {
        let mut limiter = RateLimiter::new(0, 1);
        let peer = PeerId::random();
        let t0 = Instant::now();
        assert!((0..1000).all(|_| limiter.try_acquire(peer, t0)));
        assert!(limiter.is_empty());
    }

    #[test]
    fn given_the_map_is_full_then_refilled_buckets_make_room() {
        let mut limiter = RateLimiter::new(1, 1);
        let t0 = Instant::now();
        for _ in 0..MAX_RATE_LIMITED_PEERS {
            assert!(limiter.try_acquire(PeerId::random(), t0));
        }
        // All buckets are empty now: a new peer is refused, the map does not grow.
        assert!(!limiter.try_acquire(PeerId::random(), t0));
        assert_eq!(limiter.len(), MAX_RATE_LIMITED_PEERS);
        // A second later every bucket is full again and carries no information.
        assert!(limiter.try_acquire(PeerId::random(), t0 + Duration::from_secs(1)));
        assert_eq!(limiter.len(), 1);
    }
}
