//! Requests that failed for a passing reason, waiting to be sent again.
//!
//! A server that is busy refuses without judging the request: it resets a stream over its
//! per-connection cap (we see no reply, or a failed stream), or answers `E_UNAVAILABLE` when the
//! peer is over its request rate or the server is out of room for the moment. Such a failure is
//! not the request's outcome: the request keeps its id and is sent again after a short jittered
//! backoff, up to [`MAX_REQUEST_RETRIES`](crate::client::MAX_REQUEST_RETRIES) times, and only the last failure is reported.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use libp2p::PeerId;

use super::deadlines::Deadlines;
use crate::{
    client::{RequestError, RequestId, REQUEST_RETRY_DELAY},
    codec::ErrorCode,
};

/// Whether `error` is a refusal that says nothing about the request itself, so that sending it
/// again later may succeed: a stream the server (or its muxer) reset or closed without a reply,
/// or `E_UNAVAILABLE` (a rate limit, a full queue: "try again").
pub(super) fn is_passing(error: &RequestError) -> bool {
    match error {
        RequestError::NoResponse | RequestError::Stream(_) => true,
        RequestError::Remote(e) => e.code == ErrorCode::Unavailable,
        _ => false,
    }
}

/// The delay before retry number `attempt` (1 for the first): [`REQUEST_RETRY_DELAY`],
/// doubled for each retry after the first; `jitter` in `0.0..=1.0` picks a point between half of
/// that and all of it, so requests refused together do not come back together.
pub(super) fn delay(attempt: u32, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(16);
    let base = REQUEST_RETRY_DELAY.saturating_mul(1 << exp);
    base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// The requests waiting for their retry.
///
/// Invariant: `servers` and `due` hold the same ids. Bounded by the requests in flight: a
/// request is here instead of in flight, never both.
#[derive(Debug, Default)]
pub(super) struct Retries {
    due: Deadlines<RequestId>,
    servers: HashMap<RequestId, PeerId>,
}

impl Retries {
    /// Request `id` to `server` is to be sent again at `at`.
    pub(super) fn schedule(&mut self, id: RequestId, server: PeerId, at: Instant) {
        self.due.set(id, at);
        self.servers.insert(id, server);
    }

    /// A request whose retry is due at `now`, removed.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<(RequestId, PeerId)> {
        let id = self.due.pop_due(now)?;
        let server = self.servers.remove(&id)?;
        Some((id, server))
    }

    /// How many requests to `server` wait for their retry.
    pub(super) fn waiting(&self, server: &PeerId) -> usize {
        self.servers.values().filter(|s| *s == server).count()
    }

    /// `server` is gone: the ids of its requests that waited for a retry, removed.
    pub(super) fn disconnected(&mut self, server: &PeerId) -> Vec<RequestId> {
        let ids: Vec<RequestId> = self
            .servers
            .iter()
            .filter(|(_, s)| *s == server)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            self.servers.remove(id);
            self.due.clear(id);
        }
        ids
    }

    /// The next retry.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.due.first()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::{test_support::*, Request};
    use crate::{
        client::{
            handler::Response, Event, RequestError, MAX_REQUEST_RETRIES, REQUEST_RETRY_DELAY,
        },
        codec::{ErrorCode, ErrorResponse},
    };

    fn rate_limited() -> RequestError {
        RequestError::Remote(ErrorResponse::new(
            ErrorCode::Unavailable,
            "too many requests; this server allows 50 per second per peer (bursts of 100)",
        ))
    }

    #[test]
    fn given_a_rate_limited_discover_then_it_is_retried_after_a_short_backoff_not_reported() {
        let t0 = Instant::now();
        let mut s = connected(discover_only(), t0);
        let sent = sends(&drain(&mut s, t0));
        let [(id, Request::Discover { .. })] = sent[..] else {
            panic!("{sent:?}")
        };
        s.on_response(t0, id, Err(rate_limited()));
        let actions = drain(&mut s, t0);
        assert!(
            actions.is_empty(),
            "neither reported nor sent yet: {actions:?}"
        );
        let due = s.poll_timeout().expect("a retry is scheduled");
        assert!(
            due - t0 >= REQUEST_RETRY_DELAY / 2 && due - t0 <= REQUEST_RETRY_DELAY,
            "{:?}",
            due - t0
        );
        assert!(drain(&mut s, due - Duration::from_millis(1)).is_empty());
        let again = sends(&drain(&mut s, due));
        assert!(
            matches!(&again[..], [(i, Request::Discover { .. })] if *i == id),
            "the same request, under the same id: {again:?}"
        );
        s.on_response(due, id, Ok(page(vec![registration(2, 1, 100)], b"c")));
        let evs = events(drain(&mut s, due));
        assert!(
            matches!(&evs[..], [Event::Discovered { .. }]),
            "only the outcome: {evs:?}"
        );
    }

    #[test]
    fn given_reset_streams_then_a_manual_request_is_retried_with_doubling_delays_up_to_the_bound() {
        let t0 = Instant::now();
        let mut s = connected(register_only().with_registration(false), t0);
        let id = s.request(
            peer(SERVER),
            Request::Discover {
                namespace: Some(ns()),
                cookie: None,
                limit: None,
            },
        );
        let mut now = t0;
        let mut delays = Vec::new();
        for attempt in 0..=MAX_REQUEST_RETRIES {
            let actions = drain(&mut s, now);
            assert!(
                matches!(&sends(&actions)[..], [(i, _)] if *i == id),
                "attempt {attempt}: {actions:?}"
            );
            assert!(events(actions).is_empty(), "attempt {attempt}");
            let error = if attempt % 2 == 0 {
                RequestError::NoResponse
            } else {
                RequestError::Stream("connection reset".into())
            };
            s.on_response(now, id, Err(error));
            if attempt < MAX_REQUEST_RETRIES {
                let due = s.poll_timeout().expect("a retry is scheduled");
                delays.push(due - now);
                now = due;
            }
        }
        for (i, d) in delays.iter().enumerate() {
            let base = REQUEST_RETRY_DELAY * (1 << i);
            assert!(
                *d >= base / 2 && *d <= base,
                "retry {i}: {d:?}, base {base:?}"
            );
        }
        // The last failure is the outcome, and nothing more is scheduled.
        let evs = events(drain(&mut s, now));
        assert!(
            matches!(&evs[..], [Event::DiscoverFailed { request, error: RequestError::Stream(_), .. }] if *request == id),
            "{evs:?}"
        );
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn given_a_refusal_that_judges_the_request_then_it_is_reported_at_once() {
        let t0 = Instant::now();
        let mut s = connected(register_only().with_legacy_fallback(false), t0);
        let sent = sends(&drain(&mut s, t0));
        let invalid = RequestError::Remote(ErrorResponse::new(ErrorCode::InvalidTtl, "ttl 1"));
        s.on_response(t0, sent[0].0, Err(invalid.clone()));
        let evs = events(drain(&mut s, t0));
        assert!(
            matches!(&evs[..], [Event::RegisterFailed { error, .. }] if *error == invalid),
            "{evs:?}"
        );
    }

    #[test]
    fn given_a_server_that_took_standard_records_then_a_reset_register_is_retried_not_switched() {
        let t0 = Instant::now();
        let mut s = connected(register_only(), t0);
        let sent = sends(&drain(&mut s, t0));
        s.on_response(t0, sent[0].0, Ok(Response::Registered(1000)));
        drain(&mut s, t0);
        let refresh_at = s.poll_timeout().unwrap();
        let sent = sends(&drain(&mut s, refresh_at));
        s.on_response(refresh_at, sent[0].0, Err(RequestError::NoResponse));
        assert!(drain(&mut s, refresh_at).is_empty(), "waits for the retry");
        let retry_at = s.poll_timeout().unwrap();
        let again = sends(&drain(&mut s, retry_at));
        assert!(
            matches!(
                &again[..],
                [(
                    _,
                    Request::Register {
                        format: crate::RecordFormat::Standard,
                        ..
                    }
                )]
            ),
            "{again:?}"
        );
    }
}
