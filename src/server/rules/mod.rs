//! The rule book: every decision about a request that does not depend on where the
//! registrations are kept. Is a REGISTER's TTL, record and signer acceptable; which bound
//! refuses it, with which status and statusText; how large a page may be and what it may hold
//! for the asker's formats; what a cookie means.
//!
//! Every store decides by these functions: the memory and SQLite stores through
//! [`Registrations`](super::Registrations), the Redis store of `rendezvous serve` directly. A
//! store keeps only what must run where its data is (the counts and bytes it holds, its
//! sequence counter; for Redis, the atomic fleet-wide checks inside its scripts, whose answers
//! it turns into refusals with [`Limits::peer_full`], [`Limits::server_full`] and
//! [`Limits::over_byte_budget`]). So a rule changes in one place, and every backend answers the
//! same request with the same status, statusText and [`Limit`].

pub mod cookie;
mod limits;
mod page;

use std::time::Duration;

pub use limits::Limits;
pub(crate) use page::response_overhead;
pub use page::{Offer, Page, ScanEnd, MAX_SCANNED_PER_DISCOVER};

use super::Limit;
use crate::codec::{ErrorCode, ErrorResponse, SignedRecord, Ttl};

/// A refused request: the answer, and the bound that refused it, if a bound did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status and text to answer with.
    pub error: ErrorResponse,
    /// The bound, if one refused it (not for a bad TTL, record, signer or cookie).
    pub limit: Option<Limit>,
}

impl Refusal {
    /// A refusal by `limit`.
    pub fn by(limit: Limit, error: ErrorResponse) -> Self {
        Self {
            error,
            limit: Some(limit),
        }
    }
}

impl From<ErrorResponse> for Refusal {
    fn from(error: ErrorResponse) -> Self {
        Self { error, limit: None }
    }
}

/// The record a REGISTER's envelope holds, decoded and its signature verified, or
/// `E_INVALID_SIGNED_PEER_RECORD` saying why not.
pub fn decode_record(envelope: &[u8]) -> Result<SignedRecord, Refusal> {
    SignedRecord::from_bytes(envelope)
        .map_err(|e| ErrorResponse::new(ErrorCode::InvalidSignedPeerRecord, e.to_string()).into())
}

/// The refusal of a REGISTER when every sequence number a cookie can carry is used up.
pub fn sequence_exhausted() -> Refusal {
    ErrorResponse::new(
        ErrorCode::Unavailable,
        "this server has given out every sequence number a cookie can carry",
    )
    .into()
}

/// The TTL a DISCOVER_RESPONSE gives a registration with `remaining` time to live: whole
/// seconds, at least 1 (a registration not yet expired is never sent with TTL 0).
pub fn remaining_ttl(remaining: Duration) -> Ttl {
    remaining.as_secs().max(1)
}

/// The refusal of a request over the peer's request rate (`E_UNAVAILABLE`, [`Limit::Rate`]).
pub fn rate_limited(requests_per_second: u32, burst: u32) -> Refusal {
    Refusal::by(
        Limit::Rate,
        ErrorResponse::new(
            ErrorCode::Unavailable,
            format!(
                "too many requests; this server allows {requests_per_second} per second per \
                 peer (bursts of {burst})"
            ),
        ),
    )
}

/// The refusal of a request when `in_flight` requests already wait for the store
/// (`E_UNAVAILABLE`, [`Limit::InFlight`]).
pub fn store_busy(in_flight: usize) -> Refusal {
    Refusal::by(
        Limit::InFlight,
        ErrorResponse::new(
            ErrorCode::Unavailable,
            format!(
                "server busy: {in_flight} requests are waiting for its store; try again shortly"
            ),
        ),
    )
}

/// The refusal of a DISCOVER when too many wait for their askers' identify (`E_UNAVAILABLE`,
/// [`Limit::HeldDiscovers`]).
pub fn too_many_held() -> Refusal {
    Refusal::by(
        Limit::HeldDiscovers,
        ErrorResponse::new(
            ErrorCode::Unavailable,
            format!(
                "too many DISCOVERs wait for their askers' identify ({} of this peer, {} in all); \
                 try again in a moment",
                super::MAX_HELD_PER_PEER,
                super::MAX_HELD
            ),
        ),
    )
}

#[cfg(test)]
mod tests;
