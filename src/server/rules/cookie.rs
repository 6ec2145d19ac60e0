//! The stateless cookie: a sequence number, big-endian, followed by the namespace asked for
//! (empty for all namespaces). A DISCOVER with a cookie returns what registered after that
//! number, so the server keeps no memory per cookie.
//!
//! The two high bits of the number are a mark: whether the pages that led to the cookie left
//! registrations out for their format, and under which [`ServedFormats`]. Sequence
//! numbers start at the wall clock in microseconds and grow by one per REGISTER, so they stay
//! far below 2^62 and the cookie stays `8 bytes ++ namespace`, as rust-libp2p 0.18 requires.
//!
//! Public so that a store outside the crate (the binary's Redis store) hands out the same
//! cookies as [`Registrations`](crate::server::Registrations).

use crate::{
    codec::{Cookie, ErrorCode, ErrorResponse, Namespace},
    server::ServedFormats,
};

const MARK_SHIFT: u32 = 62;
const SEQ_MASK: u64 = (1 << MARK_SHIFT) - 1;

/// The highest sequence number a cookie can carry (2^62 - 1): the two bits above it are the
/// mark. A store never gives out a number above it.
pub const MAX_SEQUENCE: u64 = SEQ_MASK;

/// The cookie that continues `namespace` after sequence number `seq`, marked with the narrowest
/// formats under which a registration was left out for its format (`None`: nothing was).
pub fn encode(seq: u64, mark: Option<ServedFormats>, namespace: Option<&Namespace>) -> Cookie {
    // 0 means unmarked; sets that leave nothing out never mark a cookie.
    let mark: u64 = match mark {
        None | Some(ServedFormats::All | ServedFormats::AsPeerInfo) => 0,
        Some(ServedFormats::Signed) => 1,
        Some(ServedFormats::LegacyOnly) => 2,
        Some(ServedFormats::Standard) => 3,
    };
    let mut bytes = (seq | (mark << MARK_SHIFT)).to_be_bytes().to_vec();
    if let Some(ns) = namespace {
        bytes.extend_from_slice(ns.as_str().as_bytes());
    }
    Cookie::new(bytes).expect("8 + at most 255 bytes is under the cookie cap")
}

/// The refusal of a cookie whose sequence number `seq` is ahead of the store's `counter` (a
/// store that checks the counter elsewhere, as the Redis store does inside Redis, parses with
/// `counter` `u64::MAX` and answers with this).
pub fn ahead(seq: u64, counter: u64) -> ErrorResponse {
    ErrorResponse::new(
        ErrorCode::InvalidCookie,
        format!(
            "cookie is ahead of this server (sequence {seq}, server at {counter}); discover \
             without a cookie to start over"
        ),
    )
}

/// The sequence number in `cookie` and its mark, if it is one of ours for `namespace`, not
/// ahead of `counter` (the last number given out), and not cut under narrower formats than the
/// asker is `served` now; else `E_INVALID_COOKIE` saying what is wrong.
pub fn parse(
    cookie: &Cookie,
    namespace: Option<&Namespace>,
    counter: u64,
    served: ServedFormats,
) -> Result<(u64, Option<ServedFormats>), ErrorResponse> {
    let bytes = cookie.as_bytes();
    let invalid = |text: String| Err(ErrorResponse::new(ErrorCode::InvalidCookie, text));
    if bytes.len() < 8 {
        return invalid(format!(
            "cookie is {} bytes; expected a cookie from this server (8 bytes of sequence \
             number followed by the namespace)",
            bytes.len()
        ));
    }
    let (seq, ns) = bytes.split_at(8);
    let raw = u64::from_be_bytes(seq.try_into().expect("split at 8"));
    let seq = raw & SEQ_MASK;
    let mark = match raw >> MARK_SHIFT {
        0 => None,
        1 => Some(ServedFormats::Signed),
        2 => Some(ServedFormats::LegacyOnly),
        _ => Some(ServedFormats::Standard),
    };
    let asked = namespace.map_or(&[][..], |ns| ns.as_str().as_bytes());
    if ns != asked {
        return invalid(format!(
            "cookie is for namespace {:?}; this DISCOVER asks for {:?} (a cookie only \
             continues the namespace it came from)",
            String::from_utf8_lossy(ns),
            namespace.map_or("", |ns| ns.as_str()),
        ));
    }
    if seq > counter {
        return Err(ahead(seq, counter));
    }
    if let Some(cut) = mark {
        if !cut.covers(served) {
            return invalid(format!(
                "this server now sends you {served} records, more than when this cookie was cut \
                 (records it left out would stay hidden); discover without a cookie to start over"
            ));
        }
    }
    Ok((seq, mark))
}
