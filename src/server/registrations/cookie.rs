//! The stateless cookie: a sequence number, big-endian, followed by the namespace asked for
//! (empty for all namespaces). A DISCOVER with a cookie returns what registered after that
//! number, so the server keeps no memory per cookie.

use crate::codec::{Cookie, ErrorCode, ErrorResponse, Namespace};

/// The cookie that continues `namespace` after sequence number `seq`.
pub(super) fn encode(seq: u64, namespace: Option<&Namespace>) -> Cookie {
    let mut bytes = seq.to_be_bytes().to_vec();
    if let Some(ns) = namespace {
        bytes.extend_from_slice(ns.as_str().as_bytes());
    }
    Cookie::new(bytes).expect("8 + at most 255 bytes is under the cookie cap")
}

/// The sequence number in `cookie`, if it is one of ours for `namespace` and not ahead of
/// `counter` (the last number given out); else `E_INVALID_COOKIE` saying what is wrong.
pub(super) fn parse(
    cookie: &Cookie,
    namespace: Option<&Namespace>,
    counter: u64,
) -> Result<u64, ErrorResponse> {
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
    let seq = u64::from_be_bytes(seq.try_into().expect("split at 8"));
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
        return invalid(format!(
            "cookie is ahead of this server (sequence {seq}, server at {counter}); discover \
             without a cookie to start over"
        ));
    }
    Ok(seq)
}
