//! The protocol's domain types, validated on construction: namespaces, TTLs, cookies,
//! registrations, status codes.

use std::{fmt, sync::Arc};

use super::{SignedRecord, MAX_COOKIE_LEN};
use crate::{DEFAULT_TTL, MAX_NAMESPACE_LEN};

/// A rendezvous namespace: 1 to 255 bytes of UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(Arc<str>);

impl Namespace {
    /// Validates `value` as a namespace.
    pub fn new(value: impl Into<String>) -> Result<Self, InvalidNamespace> {
        let value = value.into();
        if value.is_empty() {
            return Err(InvalidNamespace::Empty);
        }
        if value.len() > MAX_NAMESPACE_LEN {
            return Err(InvalidNamespace::TooLong(value.len()));
        }
        Ok(Self(value.into()))
    }

    /// Like [`Namespace::new`] for a literal.
    ///
    /// # Panics
    ///
    /// If `value` is empty or longer than 255 bytes: a literal is a programming error.
    pub fn from_static(value: &'static str) -> Self {
        Self::new(value).expect("a static namespace literal is 1..=255 bytes")
    }

    /// The namespace as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for Namespace {
    type Err = InvalidNamespace;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl AsRef<str> for Namespace {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Why a string is not a valid [`Namespace`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidNamespace {
    /// The namespace was empty.
    #[error("namespace is empty; expected 1 to 255 bytes of UTF-8")]
    Empty,
    /// The namespace was longer than 255 bytes.
    #[error("namespace is {0} bytes; at most 255 allowed")]
    TooLong(usize),
    /// The namespace bytes were not UTF-8.
    #[error("namespace is not valid UTF-8")]
    NotUtf8,
}

/// A registration lifetime in seconds, as carried on the wire.
pub type Ttl = u64;

/// An opaque discovery cookie as sent by a server: the client hands it back unchanged to get
/// only what is new. At most [`MAX_COOKIE_LEN`] bytes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Cookie(Arc<[u8]>);

impl Cookie {
    /// Wraps cookie bytes received from the wire or built by a server.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, CookieTooLong> {
        let bytes = bytes.into();
        if bytes.len() > MAX_COOKIE_LEN {
            return Err(CookieTooLong(bytes.len()));
        }
        Ok(Self(bytes.into()))
    }

    /// The cookie bytes, exactly as the server sent them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cookie(")?;
        for b in self.0.iter() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// A cookie longer than [`MAX_COOKIE_LEN`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cookie is {0} bytes; at most 1024 allowed")]
pub struct CookieTooLong(pub usize);

/// A registration as carried in a DISCOVER_RESPONSE: namespace, record and remaining TTL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The namespace the peer registered in.
    pub namespace: Namespace,
    /// The peer's verified signed record.
    pub record: SignedRecord,
    /// Seconds the registration has left.
    pub ttl: Ttl,
}

/// A REGISTER request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRegistration {
    /// The namespace to register in.
    pub namespace: Namespace,
    /// The registrant's signed record.
    pub record: SignedRecord,
    /// The requested TTL; `None` means the server's default (2 h by the spec).
    pub ttl: Option<Ttl>,
}

impl NewRegistration {
    /// The TTL asked for, with the spec's default when absent.
    pub fn effective_ttl(&self) -> Ttl {
        self.ttl.unwrap_or(DEFAULT_TTL)
    }
}

/// A response status other than OK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `E_INVALID_NAMESPACE` (100).
    InvalidNamespace,
    /// `E_INVALID_SIGNED_PEER_RECORD` (101).
    InvalidSignedPeerRecord,
    /// `E_INVALID_TTL` (102).
    InvalidTtl,
    /// `E_INVALID_COOKIE` (103).
    InvalidCookie,
    /// `E_NOT_AUTHORIZED` (200).
    NotAuthorized,
    /// `E_INTERNAL_ERROR` (300).
    InternalError,
    /// `E_UNAVAILABLE` (400).
    Unavailable,
    /// A status value this crate does not know, kept as received.
    Other(i32),
}

impl ErrorCode {
    /// The numeric status code on the wire.
    pub fn code(&self) -> i32 {
        match self {
            ErrorCode::InvalidNamespace => 100,
            ErrorCode::InvalidSignedPeerRecord => 101,
            ErrorCode::InvalidTtl => 102,
            ErrorCode::InvalidCookie => 103,
            ErrorCode::NotAuthorized => 200,
            ErrorCode::InternalError => 300,
            ErrorCode::Unavailable => 400,
            ErrorCode::Other(code) => *code,
        }
    }

    /// Maps a numeric status to an error code; `None` for OK (0).
    pub fn from_code(code: i32) -> Option<Self> {
        Some(match code {
            0 => return None,
            100 => ErrorCode::InvalidNamespace,
            101 => ErrorCode::InvalidSignedPeerRecord,
            102 => ErrorCode::InvalidTtl,
            103 => ErrorCode::InvalidCookie,
            200 => ErrorCode::NotAuthorized,
            300 => ErrorCode::InternalError,
            400 => ErrorCode::Unavailable,
            other => ErrorCode::Other(other),
        })
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ErrorCode::InvalidNamespace => "E_INVALID_NAMESPACE",
            ErrorCode::InvalidSignedPeerRecord => "E_INVALID_SIGNED_PEER_RECORD",
            ErrorCode::InvalidTtl => "E_INVALID_TTL",
            ErrorCode::InvalidCookie => "E_INVALID_COOKIE",
            ErrorCode::NotAuthorized => "E_NOT_AUTHORIZED",
            ErrorCode::InternalError => "E_INTERNAL_ERROR",
            ErrorCode::Unavailable => "E_UNAVAILABLE",
            ErrorCode::Other(code) => return write!(f, "status {code}"),
        };
        write!(f, "{name} ({})", self.code())
    }
}

/// A failure status with its human-readable `statusText`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {text}")]
pub struct ErrorResponse {
    /// The status code.
    pub code: ErrorCode,
    /// The `statusText` (possibly empty when the remote sent none).
    pub text: String,
}

impl ErrorResponse {
    /// A failure with the given code and text.
    pub fn new(code: ErrorCode, text: impl Into<String>) -> Self {
        Self {
            code,
            text: text.into(),
        }
    }
}

/// A successful DISCOVER_RESPONSE as decoded by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverPage {
    /// The registrations that decoded and verified.
    pub registrations: Vec<Registration>,
    /// The cookie to send with the next DISCOVER; `None` when the server sent none.
    pub cookie: Option<Cookie>,
    /// How many entries of the page were dropped because they were malformed (missing
    /// namespace, bad record, ...). One bad entry never spoils the rest of the page.
    pub skipped: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_bounds() {
        assert_eq!(Namespace::new(""), Err(InvalidNamespace::Empty));
        assert!(Namespace::new("é".repeat(127)).is_ok()); // 254 bytes
        assert_eq!(
            Namespace::new("n".repeat(256)),
            Err(InvalidNamespace::TooLong(256))
        );
        assert_eq!(
            InvalidNamespace::TooLong(300).to_string(),
            "namespace is 300 bytes; at most 255 allowed"
        );
    }
}
