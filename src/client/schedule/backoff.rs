//! Jittered delays: retry backoff and refresh points, from one seeded RNG.

use std::time::Duration;

use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::{client::Config, Ttl, MAX_TTL};

use super::super::{REFRESH_AT_MAX, REFRESH_AT_MIN};

/// Draws the delays; seeded from the config so tests are deterministic.
#[derive(Debug)]
pub(super) struct Backoff {
    rng: StdRng,
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub(super) fn new(config: &Config) -> Self {
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        Self {
            rng,
            min: config.backoff_min,
            max: config.backoff_max,
        }
    }

    /// The shortest backoff: the redial delay after a connection closed.
    pub(super) fn min(&self) -> Duration {
        self.min
    }

    /// The delay after `failures` failures in a row: doubling from the minimum up to the
    /// maximum, drawn uniformly between half of that and all of it.
    pub(super) fn after(&mut self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(31);
        let base = self.min.saturating_mul(1u32 << exp).min(self.max);
        let lo = base / 2;
        if base <= lo {
            return base;
        }
        self.rng.gen_range(lo..=base)
    }

    /// A moment drawn uniformly within `span`.
    pub(super) fn within(&mut self, span: Duration) -> Duration {
        span.mul_f64(self.rng.gen_range(0.0..1.0))
    }

    /// The delay before retry `attempt` (1 for the first) of a request refused for a passing
    /// reason ([`super::retry::delay`]).
    pub(super) fn retry(&mut self, attempt: u32) -> Duration {
        super::retry::delay(attempt, self.rng.gen_range(0.0..=1.0))
    }

    /// When to refresh a registration granted `granted` seconds: a random point between
    /// [`REFRESH_AT_MIN`] and [`REFRESH_AT_MAX`] of it, at least a second.
    pub(super) fn refresh(&mut self, granted: Ttl) -> Duration {
        let ttl = granted.clamp(1, MAX_TTL) as f64;
        let fraction = self.rng.gen_range(REFRESH_AT_MIN..=REFRESH_AT_MAX);
        Duration::from_secs_f64(ttl * fraction).max(Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::test_support::*;
    use crate::{
        client::RequestError,
        codec::{ErrorCode, ErrorResponse},
    };

    #[test]
    fn given_failing_registrations_then_backoff_doubles_with_jitter_up_to_the_cap() {
        let t0 = Instant::now();
        let config = register_only().with_backoff(Duration::from_secs(1), Duration::from_secs(16));
        let mut s = connected(config, t0);
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..8 {
            let sent = sends(&drain(&mut s, now));
            assert_eq!(sent.len(), 1);
            s.on_response(
                now,
                sent[0].0,
                Err(RequestError::Remote(ErrorResponse::new(
                    ErrorCode::InternalError,
                    "broken",
                ))),
            );
            let due = s.poll_timeout().unwrap();
            delays.push(due - now);
            now = due;
        }
        for (i, d) in delays.iter().enumerate() {
            let base = Duration::from_secs(1 << i.min(4));
            assert!(
                *d >= base / 2 && *d <= base,
                "failure {i}: {d:?} not in [{:?}, {base:?}]",
                base / 2
            );
        }
        // The cap holds from the fifth failure on.
        assert!(delays[4..].iter().all(|d| *d <= Duration::from_secs(16)));
    }
}
