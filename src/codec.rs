//! The rendezvous wire format: domain types with validating constructors, conversion to and
//! from the private protobuf types, and length-prefixed framing with a size cap.
//!
//! Every message on a `/rendezvous/1.0.0` stream is an unsigned-varint length prefix followed by
//! one protobuf `Message` (proto2). Fields are `optional` and some implementations omit a field
//! equal to its default, so an absent `type` decodes as REGISTER and an absent `status` as OK.
//! When encoding, every field is written explicitly, because rust-libp2p's `libp2p-rendezvous`
//! 0.18 rejects a message whose `type` or `status` is absent.

use std::{fmt, io, sync::Arc};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{
    core::{peer_record::PeerRecord, signed_envelope::SignedEnvelope},
    identity::Keypair,
    Multiaddr, PeerId,
};
use prost::Message as _;

use crate::{DEFAULT_TTL, MAX_NAMESPACE_LEN};

#[allow(clippy::all, missing_docs)]
mod proto {
    include!(concat!(env!("OUT_DIR"), "/rendezvous.pb.rs"));
}

use proto::message::{MessageType, ResponseStatus};

/// Default cap on the size of one framed message (length prefix excluded): 1 MiB, the cap
/// rust-libp2p's `libp2p-rendezvous` enforces, so nothing we send is too large for it.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1024 * 1024;

/// Largest cookie we accept or store. Our own cookies are 8 bytes plus a namespace of at most
/// 255 bytes; other servers' cookies are opaque but small. A cap keeps a hostile server from
/// making the client store megabytes per (server, namespace).
pub const MAX_COOKIE_LEN: usize = 1024;

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

/// The three layouts of `Register.signedPeerRecord` (field 2) in use: three generations of
/// rendezvous clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum RecordFormat {
    /// The libp2p standard signed envelope (go, js, nim, and this crate by default): domain
    /// `libp2p-peer-record`, payload type `[0x03, 0x01]`.
    #[default]
    Standard,
    /// rust-libp2p's `libp2p-rendezvous` 0.18 and earlier: a signed envelope with domain
    /// `libp2p-routing-state`, payload type `/libp2p/routing-state-record`.
    Legacy,
    /// The unsigned `PeerInfo { bytes id = 1; repeated bytes addrs = 2; }` of py-libp2p 0.8 and
    /// of go-libp2p-rendezvous before signed records. Nothing in it is signed: a server can only
    /// check that the peer on the connection (authenticated by the security handshake) is the
    /// peer it names; see [`SignedRecord`] for what that does and does not prove.
    PeerInfo,
}

impl RecordFormat {
    /// Whether records of this format are signed envelopes.
    pub fn is_signed(self) -> bool {
        self != RecordFormat::PeerInfo
    }
}

impl fmt::Display for RecordFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordFormat::Standard => f.write_str("standard"),
            RecordFormat::Legacy => f.write_str("legacy"),
            RecordFormat::PeerInfo => f.write_str("peer-info"),
        }
    }
}

/// The unsigned record of the third generation, as py-libp2p 0.8 defines it.
#[derive(Clone, PartialEq, prost::Message)]
struct PeerInfoPb {
    #[prost(bytes = "vec", optional, tag = "1")]
    id: Option<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    addrs: Vec<Vec<u8>>,
}

/// A peer record as carried in `Register.signedPeerRecord`: a verified signed envelope
/// ([`RecordFormat::Standard`] or [`RecordFormat::Legacy`]), with its bytes kept exactly as the
/// peer signed and encoded them (re-encoding could change bytes another implementation relies
/// on), or an unsigned [`RecordFormat::PeerInfo`].
///
/// A signed record proves that the holder of the peer's key claimed these addresses, to anyone
/// who reads it. An unsigned `PeerInfo` proves nothing by itself: our server accepts one only
/// from the peer it names (the connection is authenticated by the security handshake), so it
/// means "this server saw the peer claim these addresses"; a reader trusts the server for that.
/// Neither proves that the addresses are reachable or belong to the peer; dialing one still
/// authenticates the peer id.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedRecord {
    peer: PeerId,
    addresses: Arc<[Multiaddr]>,
    seq: u64,
    format: RecordFormat,
    envelope: Arc<[u8]>,
}

impl SignedRecord {
    /// Signs a new record of `addresses` with `key` in the given `format` (a
    /// [`RecordFormat::PeerInfo`] is not signed: it only names the key's peer).
    pub fn new(
        key: &Keypair,
        addresses: Vec<Multiaddr>,
        format: RecordFormat,
    ) -> Result<Self, libp2p::identity::SigningError> {
        let record = match format {
            RecordFormat::Standard => PeerRecord::new_interop(key, addresses)?,
            RecordFormat::Legacy => PeerRecord::new(key, addresses)?,
            RecordFormat::PeerInfo => {
                return Ok(Self::peer_info(key.public().to_peer_id(), addresses.into()))
            }
        };
        let envelope = record.to_signed_envelope().into_protobuf_encoding();
        Ok(Self {
            peer: record.peer_id(),
            addresses: record.addresses().into(),
            seq: record.seq(),
            format,
            envelope: envelope.into(),
        })
    }

    /// An unsigned [`RecordFormat::PeerInfo`] record naming `peer` and `addresses`.
    fn peer_info(peer: PeerId, addresses: Arc<[Multiaddr]>) -> Self {
        let bytes = PeerInfoPb {
            id: Some(peer.to_bytes()),
            addrs: addresses.iter().map(|a| a.to_vec()).collect(),
        }
        .encode_to_vec();
        Self {
            peer,
            addresses,
            seq: 0,
            format: RecordFormat::PeerInfo,
            envelope: bytes.into(),
        }
    }

    /// The same peer and addresses as an unsigned [`RecordFormat::PeerInfo`] (what a server
    /// hands out to readers of that layout); a `PeerInfo` is returned as it is.
    pub fn to_peer_info(&self) -> Self {
        if self.format == RecordFormat::PeerInfo {
            return self.clone();
        }
        Self::peer_info(self.peer, self.addresses.clone())
    }

    /// Decodes `Register.signedPeerRecord` bytes: a signed envelope in either format (verified;
    /// standard first), else an unsigned `PeerInfo` whose id is a peer id and whose addresses
    /// are multiaddrs. The two layouts cannot be confused: an envelope's field 1 is a public key,
    /// which never parses as a peer id, and a `PeerInfo` never parses as a signed envelope.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InvalidRecord> {
        match Self::from_envelope(bytes) {
            Ok(record) => Ok(record),
            Err(envelope_err) => Self::from_peer_info(bytes).map_err(|peer_info_err| {
                InvalidRecord(format!("{envelope_err}; nor a PeerInfo: {peer_info_err}"))
            }),
        }
    }

    fn from_peer_info(bytes: &[u8]) -> Result<Self, String> {
        let pb = PeerInfoPb::decode(bytes).map_err(|e| format!("not a protobuf: {e}"))?;
        let id = pb.id.ok_or("no id (field 1)")?;
        let peer = PeerId::from_bytes(&id).map_err(|e| format!("id is not a peer id: {e}"))?;
        let addresses = pb
            .addrs
            .into_iter()
            .map(|a| {
                Multiaddr::try_from(a).map_err(|e| format!("an address is not a multiaddr: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            peer,
            addresses: addresses.into(),
            seq: 0,
            format: RecordFormat::PeerInfo,
            envelope: bytes.into(),
        })
    }

    fn from_envelope(bytes: &[u8]) -> Result<Self, String> {
        let envelope = SignedEnvelope::from_protobuf_encoding(bytes)
            .map_err(|e| format!("not a signed envelope: {e}"))?;
        let (record, format) = match PeerRecord::from_signed_envelope_interop(envelope.clone()) {
            Ok(record) => (record, RecordFormat::Standard),
            Err(standard_err) => match PeerRecord::from_signed_envelope(envelope) {
                Ok(record) => (record, RecordFormat::Legacy),
                Err(legacy_err) => {
                    return Err(format!(
                        "neither a standard peer record ({standard_err}) nor a legacy \
                         routing-state record ({legacy_err})"
                    ))
                }
            },
        };
        Ok(Self {
            peer: record.peer_id(),
            addresses: record.addresses().into(),
            seq: record.seq(),
            format,
            envelope: bytes.into(),
        })
    }

    /// The peer that signed the record.
    pub fn peer_id(&self) -> PeerId {
        self.peer
    }

    /// The addresses in the record.
    pub fn addresses(&self) -> &[Multiaddr] {
        &self.addresses
    }

    /// The record's sequence number (a timestamp, by convention; 0 for a `PeerInfo`).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Which layout the record has.
    pub fn format(&self) -> RecordFormat {
        self.format
    }

    /// The bytes carried in `Register.signedPeerRecord`: the envelope exactly as signed, or the
    /// `PeerInfo` exactly as received.
    pub fn envelope_bytes(&self) -> &[u8] {
        &self.envelope
    }
}

impl fmt::Debug for SignedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedRecord")
            .field("peer", &self.peer)
            .field("addresses", &self.addresses)
            .field("seq", &self.seq)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// Bytes that are neither a valid signed peer record (in either envelope format) nor a
/// `PeerInfo`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid signed peer record: {0}")]
pub struct InvalidRecord(String);

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

    fn wire_status(&self) -> i32 {
        match self {
            // An unknown status is not ours to send; the closest generic one is.
            ErrorCode::Other(_) => ResponseStatus::EInternalError as i32,
            known => known.code(),
        }
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

/// One rendezvous protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// REGISTER.
    Register(NewRegistration),
    /// REGISTER_RESPONSE: the granted TTL, or a failure.
    RegisterResponse(Result<Ttl, ErrorResponse>),
    /// UNREGISTER (no response).
    Unregister(Namespace),
    /// DISCOVER.
    Discover {
        /// The namespace to look in; `None` means all namespaces.
        namespace: Option<Namespace>,
        /// The cookie of the previous response, to get only what is new.
        cookie: Option<Cookie>,
        /// The most registrations wanted.
        limit: Option<u64>,
    },
    /// DISCOVER_RESPONSE.
    DiscoverResponse(Result<DiscoverPage, ErrorResponse>),
}

/// The request kinds a server answers, used to pick the response type of a rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// A REGISTER (answered with REGISTER_RESPONSE).
    Register,
    /// An UNREGISTER (never answered).
    Unregister,
    /// A DISCOVER (answered with DISCOVER_RESPONSE).
    Discover,
}

/// Why a received message could not be turned into a [`Message`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not a protobuf `Message`.
    #[error("not a rendezvous protobuf message: {0}")]
    Protobuf(String),
    /// The `type` field has a value outside the five message types.
    #[error("unknown message type {0}; expected 0 to 4")]
    UnknownType(i32),
    /// A request whose content is invalid: the server answers it with `code` (an UNREGISTER is
    /// never answered).
    #[error("invalid {kind:?} request: {error}")]
    InvalidRequest {
        /// What kind of request it was.
        kind: RequestKind,
        /// The status and text to answer with.
        error: ErrorResponse,
    },
    /// A response whose content is invalid as a whole.
    #[error("invalid response: {0}")]
    InvalidResponse(String),
}

fn invalid(kind: RequestKind, code: ErrorCode, text: impl Into<String>) -> DecodeError {
    DecodeError::InvalidRequest {
        kind,
        error: ErrorResponse::new(code, text),
    }
}

fn decode_namespace(ns: Option<String>) -> Result<Namespace, InvalidNamespace> {
    Namespace::new(ns.ok_or(InvalidNamespace::Empty)?)
}

fn status_of(status: Option<i32>, text: Option<String>) -> Result<(), ErrorResponse> {
    match ErrorCode::from_code(status.unwrap_or(0)) {
        None => Ok(()),
        Some(code) => Err(ErrorResponse::new(code, text.unwrap_or_default())),
    }
}

impl Message {
    /// Decodes one protobuf message body (without its length prefix).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let pb = proto::Message::decode(bytes).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
        Self::try_from(pb)
    }

    /// Encodes the message body (without its length prefix).
    pub fn encode(&self) -> Vec<u8> {
        proto::Message::from(self).encode_to_vec()
    }

    /// The size of the encoded body in bytes, without encoding it.
    pub fn encoded_len(&self) -> usize {
        proto::Message::from(self).encoded_len()
    }
}

/// Bytes a registration adds to an encoded DISCOVER_RESPONSE: the field tag, its length
/// prefix and its body. Servers use it to cut a page to the message cap without re-encoding.
pub fn registration_wire_len(namespace: &Namespace, envelope_len: usize, ttl: Ttl) -> usize {
    let body = proto::message::Register {
        ns: Some(String::new()),
        signed_peer_record: Some(Vec::new()),
        ttl: Some(ttl),
    }
    .encoded_len()
        + namespace.as_str().len()
        + varint_len(namespace.as_str().len() as u64)
        - 1
        + envelope_len
        + varint_len(envelope_len as u64)
        - 1;
    1 + varint_len(body as u64) + body
}

/// Bytes an unsigned varint of `n` takes.
pub fn varint_len(n: u64) -> usize {
    (64 - (n | 1).leading_zeros() as usize).div_ceil(7)
}

impl TryFrom<proto::Message> for Message {
    type Error = DecodeError;

    fn try_from(pb: proto::Message) -> Result<Self, Self::Error> {
        // Absent `type` is REGISTER (0), the proto2 default.
        let ty = pb.r#type.unwrap_or(0);
        let ty = MessageType::try_from(ty).map_err(|_| DecodeError::UnknownType(ty))?;
        Ok(match ty {
            MessageType::Register => {
                use RequestKind::Register as K;
                let reg = pb.register.ok_or_else(|| {
                    invalid(
                        K,
                        ErrorCode::InvalidSignedPeerRecord,
                        "REGISTER without a register field",
                    )
                })?;
                let namespace = decode_namespace(reg.ns)
                    .map_err(|e| invalid(K, ErrorCode::InvalidNamespace, e.to_string()))?;
                let envelope = reg.signed_peer_record.ok_or_else(|| {
                    invalid(
                        K,
                        ErrorCode::InvalidSignedPeerRecord,
                        "REGISTER without a signedPeerRecord",
                    )
                })?;
                let record = SignedRecord::from_bytes(&envelope)
                    .map_err(|e| invalid(K, ErrorCode::InvalidSignedPeerRecord, e.to_string()))?;
                Message::Register(NewRegistration {
                    namespace,
                    record,
                    ttl: reg.ttl,
                })
            }
            MessageType::RegisterResponse => {
                let resp = pb.register_response.unwrap_or_default();
                Message::RegisterResponse(
                    status_of(resp.status, resp.status_text)
                        .map(|()| resp.ttl.unwrap_or(DEFAULT_TTL)),
                )
            }
            MessageType::Unregister => {
                let unreg = pb.unregister.unwrap_or_default();
                // `id` (field 2) is deprecated and ignored.
                let namespace = decode_namespace(unreg.ns).map_err(|e| {
                    invalid(
                        RequestKind::Unregister,
                        ErrorCode::InvalidNamespace,
                        e.to_string(),
                    )
                })?;
                Message::Unregister(namespace)
            }
            MessageType::Discover => {
                use RequestKind::Discover as K;
                let disc = pb.discover.unwrap_or_default();
                let namespace = match disc.ns {
                    // An empty namespace is how some clients say "all namespaces".
                    None => None,
                    Some(ns) if ns.is_empty() => None,
                    Some(ns) => Some(
                        Namespace::new(ns)
                            .map_err(|e| invalid(K, ErrorCode::InvalidNamespace, e.to_string()))?,
                    ),
                };
                let cookie = disc
                    .cookie
                    .map(Cookie::new)
                    .transpose()
                    .map_err(|e| invalid(K, ErrorCode::InvalidCookie, e.to_string()))?;
                Message::Discover {
                    namespace,
                    cookie,
                    limit: disc.limit,
                }
            }
            MessageType::DiscoverResponse => {
                let resp = pb.discover_response.unwrap_or_default();
                Message::DiscoverResponse(status_of(resp.status, resp.status_text).and_then(|()| {
                    let cookie =
                        resp.cookie.map(Cookie::new).transpose().map_err(|e| {
                            ErrorResponse::new(ErrorCode::InvalidCookie, e.to_string())
                        })?;
                    let mut skipped = 0;
                    let registrations = resp
                        .registrations
                        .into_iter()
                        .filter_map(|reg| {
                            let decoded = decode_registration(reg);
                            skipped += usize::from(decoded.is_none());
                            decoded
                        })
                        .collect();
                    Ok(DiscoverPage {
                        registrations,
                        cookie,
                        skipped,
                    })
                }))
            }
        })
    }
}

fn decode_registration(reg: proto::message::Register) -> Option<Registration> {
    let namespace = decode_namespace(reg.ns).ok()?;
    let record = SignedRecord::from_bytes(reg.signed_peer_record.as_deref()?).ok()?;
    Some(Registration {
        namespace,
        record,
        ttl: reg.ttl?,
    })
}

fn register_pb(
    namespace: &Namespace,
    record: &SignedRecord,
    ttl: Option<Ttl>,
) -> proto::message::Register {
    proto::message::Register {
        ns: Some(namespace.to_string()),
        signed_peer_record: Some(record.envelope_bytes().to_vec()),
        ttl,
    }
}

impl From<&Message> for proto::Message {
    fn from(message: &Message) -> Self {
        let mut pb = proto::Message::default();
        match message {
            Message::Register(reg) => {
                pb.r#type = Some(MessageType::Register as i32);
                pb.register = Some(register_pb(&reg.namespace, &reg.record, reg.ttl));
            }
            Message::RegisterResponse(result) => {
                pb.r#type = Some(MessageType::RegisterResponse as i32);
                pb.register_response = Some(match result {
                    Ok(ttl) => proto::message::RegisterResponse {
                        status: Some(ResponseStatus::Ok as i32),
                        status_text: None,
                        ttl: Some(*ttl),
                    },
                    Err(e) => proto::message::RegisterResponse {
                        status: Some(e.code.wire_status()),
                        status_text: Some(e.text.clone()),
                        ttl: None,
                    },
                });
            }
            Message::Unregister(namespace) => {
                pb.r#type = Some(MessageType::Unregister as i32);
                pb.unregister = Some(proto::message::Unregister {
                    ns: Some(namespace.to_string()),
                    id: None,
                });
            }
            Message::Discover {
                namespace,
                cookie,
                limit,
            } => {
                pb.r#type = Some(MessageType::Discover as i32);
                pb.discover = Some(proto::message::Discover {
                    ns: namespace.as_ref().map(|ns| ns.to_string()),
                    limit: *limit,
                    cookie: cookie.as_ref().map(|c| c.as_bytes().to_vec()),
                });
            }
            Message::DiscoverResponse(result) => {
                pb.r#type = Some(MessageType::DiscoverResponse as i32);
                pb.discover_response = Some(match result {
                    Ok(page) => proto::message::DiscoverResponse {
                        registrations: page
                            .registrations
                            .iter()
                            .map(|r| register_pb(&r.namespace, &r.record, Some(r.ttl)))
                            .collect(),
                        cookie: page.cookie.as_ref().map(|c| c.as_bytes().to_vec()),
                        status: Some(ResponseStatus::Ok as i32),
                        status_text: None,
                    },
                    Err(e) => proto::message::DiscoverResponse {
                        registrations: Vec::new(),
                        cookie: None,
                        status: Some(e.code.wire_status()),
                        status_text: Some(e.text.clone()),
                    },
                });
            }
        }
        pb
    }
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed or ended inside a frame.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The length prefix announces more than the cap.
    #[error("message is {len} bytes; at most {max} allowed")]
    TooLarge {
        /// The announced or actual size.
        len: u64,
        /// The cap in force.
        max: usize,
    },
    /// The length prefix is not a valid unsigned varint.
    #[error("malformed length prefix")]
    BadLength,
}

/// Reads one length-prefixed message body, at most `max_size` bytes.
///
/// Returns `Ok(None)` when the stream ends cleanly before the first byte of a frame, which is
/// how a peer says it has no more requests on this stream.
pub async fn read_frame<R: AsyncRead + Unpin>(
    io: &mut R,
    max_size: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len: u64 = 0;
    let mut byte = [0u8; 1];
    for i in 0..10 {
        match io.read(&mut byte).await? {
            0 if i == 0 => return Ok(None),
            0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            _ => {}
        }
        len |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            if len > max_size as u64 {
                return Err(FrameError::TooLarge { len, max: max_size });
            }
            let mut buf = vec![0u8; len as usize];
            io.read_exact(&mut buf).await?;
            return Ok(Some(buf));
        }
    }
    Err(FrameError::BadLength)
}

/// Writes one length-prefixed message body and flushes, refusing bodies over `max_size`.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    io: &mut W,
    body: &[u8],
    max_size: usize,
) -> Result<(), FrameError> {
    if body.len() > max_size {
        return Err(FrameError::TooLarge {
            len: body.len() as u64,
            max: max_size,
        });
    }
    let mut frame = Vec::with_capacity(body.len() + 10);
    let mut n = body.len() as u64;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            frame.push(byte);
            break;
        }
        frame.push(byte | 0x80);
    }
    frame.extend_from_slice(body);
    io.write_all(&frame).await?;
    io.flush().await?;
    Ok(())
}

/// Reads and decodes one message; `Ok(None)` on a clean end of stream.
pub async fn read_message<R: AsyncRead + Unpin>(
    io: &mut R,
    max_size: usize,
) -> Result<Option<Result<Message, DecodeError>>, FrameError> {
    Ok(read_frame(io, max_size)
        .await?
        .map(|body| Message::decode(&body)))
}

/// Encodes and writes one message.
pub async fn write_message<W: AsyncWrite + Unpin>(
    io: &mut W,
    message: &Message,
    max_size: usize,
) -> Result<(), FrameError> {
    write_frame(io, &message.encode(), max_size).await
}

#[cfg(test)]
mod tests {
    use futures::executor::block_on;

    use super::*;

    fn key(seed: u8) -> Keypair {
        Keypair::ed25519_from_bytes([seed; 32]).unwrap()
    }

    fn record(format: RecordFormat) -> SignedRecord {
        SignedRecord::new(
            &key(1),
            vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
            format,
        )
        .unwrap()
    }

    fn varint(mut n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
        out
    }

    fn round_trip(message: Message) {
        let bytes = message.encode();
        assert_eq!(bytes.len(), message.encoded_len());
        assert_eq!(Message::decode(&bytes).unwrap(), message);
    }

    #[test]
    fn every_message_type_round_trips() {
        for format in [RecordFormat::Standard, RecordFormat::Legacy] {
            let ns = Namespace::from_static("chat");
            round_trip(Message::Register(NewRegistration {
                namespace: ns.clone(),
                record: record(format),
                ttl: Some(7200),
            }));
            round_trip(Message::DiscoverResponse(Ok(DiscoverPage {
                registrations: vec![Registration {
                    namespace: ns.clone(),
                    record: record(format),
                    ttl: 60,
                }],
                cookie: Some(Cookie::new(vec![0, 0, 0, 0, 0, 0, 0, 1, b'c']).unwrap()),
                skipped: 0,
            })));
        }
        round_trip(Message::RegisterResponse(Ok(3600)));
        round_trip(Message::RegisterResponse(Err(ErrorResponse::new(
            ErrorCode::InvalidTtl,
            "ttl is 1 s; expected 7200..=259200",
        ))));
        round_trip(Message::Unregister(Namespace::from_static("chat")));
        round_trip(Message::Discover {
            namespace: Some(Namespace::from_static("chat")),
            cookie: Some(Cookie::new(b"abc".to_vec()).unwrap()),
            limit: Some(10),
        });
        round_trip(Message::Discover {
            namespace: None,
            cookie: None,
            limit: None,
        });
        round_trip(Message::DiscoverResponse(Err(ErrorResponse::new(
            ErrorCode::Unavailable,
            "rate limit",
        ))));
    }

    #[test]
    fn golden_bytes_of_requests_and_responses() {
        // type=UNREGISTER(2), unregister{ns="a"}
        assert_eq!(
            Message::Unregister(Namespace::from_static("a")).encode(),
            [0x08, 0x02, 0x22, 0x03, 0x0a, 0x01, b'a']
        );
        // type=DISCOVER(3), discover{ns="a", limit=5, cookie=[1]}
        assert_eq!(
            Message::Discover {
                namespace: Some(Namespace::from_static("a")),
                cookie: Some(Cookie::new(vec![1]).unwrap()),
                limit: Some(5),
            }
            .encode(),
            [0x08, 0x03, 0x2a, 0x08, 0x0a, 0x01, b'a', 0x10, 0x05, 0x1a, 0x01, 0x01]
        );
        // type=REGISTER_RESPONSE(1), registerResponse{status=OK, ttl=7200}
        assert_eq!(
            Message::RegisterResponse(Ok(7200)).encode(),
            [0x08, 0x01, 0x1a, 0x05, 0x08, 0x00, 0x18, 0xa0, 0x38]
        );
        // type=REGISTER_RESPONSE(1), registerResponse{status=102, statusText="x"}
        assert_eq!(
            Message::RegisterResponse(Err(ErrorResponse::new(ErrorCode::InvalidTtl, "x"))).encode(),
            [0x08, 0x01, 0x1a, 0x05, 0x08, 0x66, 0x12, 0x01, b'x']
        );
        // type=DISCOVER_RESPONSE(4), discoverResponse{cookie=[9], status=OK}
        assert_eq!(
            Message::DiscoverResponse(Ok(DiscoverPage {
                registrations: vec![],
                cookie: Some(Cookie::new(vec![9]).unwrap()),
                skipped: 0
            }))
            .encode(),
            [0x08, 0x04, 0x32, 0x05, 0x12, 0x01, 0x09, 0x18, 0x00]
        );
        // type=DISCOVER_RESPONSE(4), discoverResponse{status=400, statusText="y"}
        assert_eq!(
            Message::DiscoverResponse(Err(ErrorResponse::new(ErrorCode::Unavailable, "y")))
                .encode(),
            [0x08, 0x04, 0x32, 0x06, 0x18, 0x90, 0x03, 0x22, 0x01, b'y']
        );
        // type=REGISTER(0) is written explicitly; the record is the envelope, byte for byte.
        let rec = record(RecordFormat::Standard);
        let bytes = Message::Register(NewRegistration {
            namespace: Namespace::from_static("a"),
            record: rec.clone(),
            ttl: Some(1),
        })
        .encode();
        let env = rec.envelope_bytes();
        let mut expected = vec![0x08, 0x00, 0x12];
        let inner_len = 3 + 1 + varint_len(env.len() as u64) + env.len() + 2;
        expected.extend(varint(inner_len as u64));
        expected.extend_from_slice(&[0x0a, 0x01, b'a', 0x12]);
        expected.extend(varint(env.len() as u64));
        expected.extend_from_slice(env);
        expected.extend_from_slice(&[0x18, 0x01]);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn absent_type_and_status_decode_as_their_defaults() {
        // No `type` field: REGISTER. Build one by hand without field 1.
        let rec = record(RecordFormat::Standard);
        let mut pb = proto::Message::from(&Message::Register(NewRegistration {
            namespace: Namespace::from_static("x"),
            record: rec,
            ttl: None,
        }));
        pb.r#type = None;
        assert!(matches!(
            Message::decode(&pb.encode_to_vec()).unwrap(),
            Message::Register(NewRegistration { ttl: None, .. })
        ));
        // REGISTER_RESPONSE with no status: OK.
        let bytes = [0x08, 0x01, 0x1a, 0x02, 0x18, 0x05];
        assert_eq!(
            Message::decode(&bytes).unwrap(),
            Message::RegisterResponse(Ok(5))
        );
    }

    #[test]
    fn both_record_formats_decode_and_keep_their_bytes() {
        for format in [RecordFormat::Standard, RecordFormat::Legacy] {
            let rec = record(format);
            let decoded = SignedRecord::from_bytes(rec.envelope_bytes()).unwrap();
            assert_eq!(decoded.format(), format);
            assert_eq!(decoded.peer_id(), key(1).public().to_peer_id());
            assert_eq!(decoded.envelope_bytes(), rec.envelope_bytes());
        }
    }

    #[test]
    fn a_peer_info_as_py_libp2p_writes_it_decodes_and_keeps_its_bytes() {
        // PeerInfo { id = 1: peer id bytes; addrs = 2: multiaddr bytes }, written by hand.
        let peer = key(1).public().to_peer_id();
        let addr: Multiaddr = "/ip4/10.0.0.1/tcp/4001".parse().unwrap();
        let mut bytes = vec![0x0a, peer.to_bytes().len() as u8];
        bytes.extend(peer.to_bytes());
        bytes.extend([0x12, addr.to_vec().len() as u8]);
        bytes.extend(addr.to_vec());
        let decoded = SignedRecord::from_bytes(&bytes).unwrap();
        assert_eq!(decoded.format(), RecordFormat::PeerInfo);
        assert_eq!(decoded.peer_id(), peer);
        assert_eq!(decoded.addresses(), std::slice::from_ref(&addr));
        assert_eq!(decoded.envelope_bytes(), bytes);
        // Ours is byte for byte the same.
        let ours = SignedRecord::new(&key(1), vec![addr], RecordFormat::PeerInfo).unwrap();
        assert_eq!(ours.envelope_bytes(), bytes);
        assert!(!ours.format().is_signed());
        // A signed record handed out as PeerInfo keeps peer and addresses.
        for format in [RecordFormat::Standard, RecordFormat::Legacy] {
            let signed = record(format);
            let info = signed.to_peer_info();
            assert_eq!(info.format(), RecordFormat::PeerInfo);
            let decoded = SignedRecord::from_bytes(info.envelope_bytes()).unwrap();
            assert_eq!(decoded.peer_id(), signed.peer_id());
            assert_eq!(decoded.addresses(), signed.addresses());
        }
    }

    #[test]
    fn the_layouts_are_never_confused() {
        // An envelope never decodes as a PeerInfo (its field 1 is a public key, not a peer id),
        // and a tampered envelope is refused rather than taken for one.
        for format in [RecordFormat::Standard, RecordFormat::Legacy] {
            let bytes = record(format).envelope_bytes().to_vec();
            assert_eq!(SignedRecord::from_bytes(&bytes).unwrap().format(), format);
            let mut tampered = bytes.clone();
            let last = tampered.len() - 1;
            tampered[last] ^= 1;
            assert!(SignedRecord::from_bytes(&tampered).is_err());
        }
        // A PeerInfo whose id is not a peer id, or whose address is not a multiaddr, is refused.
        assert!(SignedRecord::from_bytes(&[0x0a, 0x02, 0x01, 0x02]).is_err());
        let peer = key(1).public().to_peer_id().to_bytes();
        let mut bad_addr = vec![0x0a, peer.len() as u8];
        bad_addr.extend(&peer);
        bad_addr.extend([0x12, 0x02, 0xff, 0xff]);
        assert!(SignedRecord::from_bytes(&bad_addr).is_err());
        // No id at all.
        assert!(SignedRecord::from_bytes(&[]).is_err());
    }

    #[test]
    fn bad_requests_map_to_their_status_codes() {
        let expect =
            |pb: proto::Message, code: ErrorCode| match Message::decode(&pb.encode_to_vec()) {
                Err(DecodeError::InvalidRequest { error, .. }) => assert_eq!(error.code, code),
                other => panic!("expected {code}, got {other:?}"),
            };
        let mut pb = proto::Message::from(&Message::Register(NewRegistration {
            namespace: Namespace::from_static("x"),
            record: record(RecordFormat::Standard),
            ttl: None,
        }));
        let good = pb.clone();
        pb.register.as_mut().unwrap().ns = Some("n".repeat(256));
        expect(pb.clone(), ErrorCode::InvalidNamespace);
        pb.register.as_mut().unwrap().ns = Some(String::new());
        expect(pb.clone(), ErrorCode::InvalidNamespace);
        let mut pb = good.clone();
        pb.register.as_mut().unwrap().signed_peer_record = Some(vec![1, 2, 3]);
        expect(pb, ErrorCode::InvalidSignedPeerRecord);
        let mut pb = good;
        pb.register.as_mut().unwrap().signed_peer_record = None;
        expect(pb, ErrorCode::InvalidSignedPeerRecord);
        let pb = proto::Message::from(&Message::Discover {
            namespace: None,
            cookie: None,
            limit: None,
        });
        let mut long_cookie = pb.clone();
        long_cookie.discover.as_mut().unwrap().cookie = Some(vec![0; MAX_COOKIE_LEN + 1]);
        expect(long_cookie, ErrorCode::InvalidCookie);
        assert_eq!(
            Message::decode(&[0x08, 0x09]),
            Err(DecodeError::UnknownType(9))
        );
        assert!(matches!(
            Message::decode(&[0xff, 0xff]),
            Err(DecodeError::Protobuf(_))
        ));
    }

    #[test]
    fn a_bad_registration_in_a_page_is_skipped_and_the_rest_kept() {
        let good = Registration {
            namespace: Namespace::from_static("chat"),
            record: record(RecordFormat::Legacy),
            ttl: 100,
        };
        let mut pb = proto::Message::from(&Message::DiscoverResponse(Ok(DiscoverPage {
            registrations: vec![good.clone(), good.clone()],
            cookie: None,
            skipped: 0,
        })));
        let regs = &mut pb.discover_response.as_mut().unwrap().registrations;
        regs[0].signed_peer_record = Some(b"garbage".to_vec());
        regs.push(proto::message::Register::default());
        let Message::DiscoverResponse(Ok(page)) = Message::decode(&pb.encode_to_vec()).unwrap()
        else {
            panic!("expected a page")
        };
        assert_eq!(page.registrations, vec![good]);
        assert_eq!(page.skipped, 2);
    }

    #[test]
    fn registration_wire_len_matches_the_encoding() {
        for (ns_len, ttl) in [(1, 0), (200, 7200), (255, u64::MAX)] {
            let ns = Namespace::new("n".repeat(ns_len)).unwrap();
            let rec = record(RecordFormat::Standard);
            let page = |regs: Vec<Registration>| {
                Message::DiscoverResponse(Ok(DiscoverPage {
                    registrations: regs,
                    cookie: None,
                    skipped: 0,
                }))
                .encoded_len()
            };
            let one = Registration {
                namespace: ns.clone(),
                record: rec.clone(),
                ttl,
            };
            let delta = page(vec![one.clone(), one.clone()]) - page(vec![one]);
            assert_eq!(
                registration_wire_len(&ns, rec.envelope_bytes().len(), ttl),
                delta
            );
        }
    }

    #[test]
    fn frames_round_trip_and_enforce_the_cap() {
        let mut buf = Vec::new();
        block_on(write_frame(&mut buf, &[7; 300], 1000)).unwrap();
        assert_eq!(&buf[..2], [0xac, 0x02]);
        let mut two = buf.clone();
        two.extend_from_slice(&buf);
        let mut reader = &two[..];
        assert_eq!(
            block_on(read_frame(&mut reader, 1000)).unwrap(),
            Some(vec![7; 300])
        );
        assert_eq!(
            block_on(read_frame(&mut reader, 1000)).unwrap(),
            Some(vec![7; 300])
        );
        assert_eq!(block_on(read_frame(&mut reader, 1000)).unwrap(), None);
        assert!(matches!(
            block_on(read_frame(&mut &buf[..], 299)),
            Err(FrameError::TooLarge { len: 300, max: 299 })
        ));
        assert!(matches!(
            block_on(write_frame(&mut Vec::new(), &[0; 11], 10)),
            Err(FrameError::TooLarge { len: 11, max: 10 })
        ));
        assert!(matches!(
            block_on(read_frame(&mut &[0xff; 11][..], usize::MAX)),
            Err(FrameError::BadLength)
        ));
        assert!(matches!(
            block_on(read_frame(&mut &[0x05, 1, 2][..], 100)),
            Err(FrameError::Io(_))
        ));
    }

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

    #[test]
    fn varint_len_is_exact() {
        for (n, len) in [
            (0, 1),
            (127, 1),
            (128, 2),
            (16383, 2),
            (16384, 3),
            (u64::MAX, 10),
        ] {
            assert_eq!(varint_len(n), len, "{n}");
        }
    }
}
