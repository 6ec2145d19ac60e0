//! Conversion between [`Message`] and the private protobuf types: one function per message
//! type each way.
//!
//! Fields are proto2 `optional` and some implementations omit a field equal to its default, so
//! an absent `type` decodes as REGISTER and an absent `status` as OK. When encoding, every field
//! is written explicitly, because rust-libp2p's `libp2p-rendezvous` 0.18 rejects a message whose
//! `type` or `status` is absent.

use libp2p::PeerId;
use prost::Message as _;

use super::{
    proto::{
        self,
        message::{MessageType, ResponseStatus},
    },
    Cookie, DiscoverPage, ErrorCode, ErrorResponse, InvalidNamespace, Namespace, NewRegistration,
    Registration, SignedRecord, Ttl,
};
use crate::DEFAULT_TTL;

/// One rendezvous protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// REGISTER.
    Register(NewRegistration),
    /// REGISTER_RESPONSE: the granted TTL, or a failure.
    RegisterResponse(Result<Ttl, ErrorResponse>),
    /// UNREGISTER (no response).
    Unregister {
        /// The namespace to leave.
        namespace: Namespace,
        /// The deprecated `id` field: the unregistering peer's own id. Servers that follow the
        /// spec ignore it (ours does); py-libp2p 0.8's server ignores an UNREGISTER without it,
        /// and go-libp2p-rendezvous's client sends it, so our client sends it too. Decoded as
        /// `None` when absent or not a peer id.
        peer: Option<PeerId>,
    },
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
/// prefix and its body. Servers use it to cut a page to the message cap without re-encoding
/// (the in-memory index and the binary's Redis store alike).
pub fn registration_wire_len(namespace: &Namespace, envelope_len: usize, ttl: Ttl) -> usize {
    // Each of the three fields (ns, signedPeerRecord, ttl) and the entry itself has a one-byte tag.
    let ns_len = namespace.as_str().len();
    let body = 1
        + prost::length_delimiter_len(ns_len)
        + ns_len
        + 1
        + prost::length_delimiter_len(envelope_len)
        + envelope_len
        + 1
        + prost::encoding::encoded_len_varint(ttl);
    1 + prost::length_delimiter_len(body) + body
}

impl TryFrom<proto::Message> for Message {
    type Error = DecodeError;

    fn try_from(pb: proto::Message) -> Result<Self, Self::Error> {
        // Absent `type` is REGISTER (0), the proto2 default.
        let ty = pb.r#type.unwrap_or(0);
        match MessageType::try_from(ty).map_err(|_| DecodeError::UnknownType(ty))? {
            MessageType::Register => decode_register(pb.register),
            MessageType::RegisterResponse => Ok(decode_register_response(
                pb.register_response.unwrap_or_default(),
            )),
            MessageType::Unregister => decode_unregister(pb.unregister.unwrap_or_default()),
            MessageType::Discover => decode_discover(pb.discover.unwrap_or_default()),
            MessageType::DiscoverResponse => Ok(decode_discover_response(
                pb.discover_response.unwrap_or_default(),
            )),
            // Push messages (docs/push.md) never travel on a rendezvous stream.
            MessageType::DiscoverSubscribe | MessageType::DiscoverRemoved => {
                Err(DecodeError::UnknownType(ty))
            }
        }
    }
}

fn decode_register(reg: Option<proto::message::Register>) -> Result<Message, DecodeError> {
    use RequestKind::Register as K;
    let reg = reg.ok_or_else(|| {
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
    Ok(Message::Register(NewRegistration {
        namespace,
        record,
        ttl: reg.ttl,
    }))
}

fn decode_register_response(resp: proto::message::RegisterResponse) -> Message {
    Message::RegisterResponse(
        decode_status(resp.status, resp.status_text).map(|()| resp.ttl.unwrap_or(DEFAULT_TTL)),
    )
}

fn decode_unregister(unreg: proto::message::Unregister) -> Result<Message, DecodeError> {
    // `id` (field 2) is deprecated: kept when it is a peer id, never acted on by our server.
    let peer = unreg.id.and_then(|id| PeerId::from_bytes(&id).ok());
    let namespace = decode_namespace(unreg.ns).map_err(|e| {
        invalid(
            RequestKind::Unregister,
            ErrorCode::InvalidNamespace,
            e.to_string(),
        )
    })?;
    Ok(Message::Unregister { namespace, peer })
}

pub(super) fn decode_discover(disc: proto::message::Discover) -> Result<Message, DecodeError> {
    use RequestKind::Discover as K;
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
    Ok(Message::Discover {
        namespace,
        cookie,
        limit: disc.limit,
    })
}

pub(super) fn decode_discover_response(resp: proto::message::DiscoverResponse) -> Message {
    Message::DiscoverResponse(decode_status(resp.status, resp.status_text).and_then(|()| {
        let cookie = resp
            .cookie
            .map(Cookie::new)
            .transpose()
            .map_err(|e| ErrorResponse::new(ErrorCode::InvalidCookie, e.to_string()))?;
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

/// One entry of a DISCOVER_RESPONSE; `None` when it is malformed (the page skips it).
fn decode_registration(reg: proto::message::Register) -> Option<Registration> {
    let namespace = decode_namespace(reg.ns).ok()?;
    let record = SignedRecord::from_bytes(reg.signed_peer_record.as_deref()?).ok()?;
    Some(Registration {
        namespace,
        record,
        ttl: reg.ttl?,
    })
}

pub(super) fn decode_namespace(ns: Option<String>) -> Result<Namespace, InvalidNamespace> {
    Namespace::new(ns.ok_or(InvalidNamespace::Empty)?)
}

fn decode_status(status: Option<i32>, text: Option<String>) -> Result<(), ErrorResponse> {
    match ErrorCode::from_code(status.unwrap_or(0)) {
        None => Ok(()),
        Some(code) => Err(ErrorResponse::new(code, text.unwrap_or_default())),
    }
}

impl From<&Message> for proto::Message {
    fn from(message: &Message) -> Self {
        let (ty, mut pb) = match message {
            Message::Register(reg) => (
                MessageType::Register,
                proto::Message {
                    register: Some(encode_register(&reg.namespace, &reg.record, reg.ttl)),
                    ..Default::default()
                },
            ),
            Message::RegisterResponse(result) => (
                MessageType::RegisterResponse,
                proto::Message {
                    register_response: Some(encode_register_response(result)),
                    ..Default::default()
                },
            ),
            Message::Unregister { namespace, peer } => (
                MessageType::Unregister,
                proto::Message {
                    unregister: Some(proto::message::Unregister {
                        ns: Some(namespace.to_string()),
                        id: peer.map(|p| p.to_bytes()),
                    }),
                    ..Default::default()
                },
            ),
            Message::Discover {
                namespace,
                cookie,
                limit,
            } => (
                MessageType::Discover,
                proto::Message {
                    discover: Some(proto::message::Discover {
                        ns: namespace.as_ref().map(|ns| ns.to_string()),
                        limit: *limit,
                        cookie: cookie.as_ref().map(|c| c.as_bytes().to_vec()),
                    }),
                    ..Default::default()
                },
            ),
            Message::DiscoverResponse(result) => (
                MessageType::DiscoverResponse,
                proto::Message {
                    discover_response: Some(encode_discover_response(result)),
                    ..Default::default()
                },
            ),
        };
        // Written even for REGISTER (0): rust-libp2p 0.18 rejects a message without `type`.
        pb.r#type = Some(ty as i32);
        pb
    }
}

fn encode_register(
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

fn encode_register_response(
    result: &Result<Ttl, ErrorResponse>,
) -> proto::message::RegisterResponse {
    match result {
        Ok(ttl) => proto::message::RegisterResponse {
            status: Some(ResponseStatus::Ok as i32),
            status_text: None,
            ttl: Some(*ttl),
        },
        Err(e) => proto::message::RegisterResponse {
            status: Some(encode_status(e.code)),
            status_text: Some(e.text.clone()),
            ttl: None,
        },
    }
}

pub(super) fn encode_discover_response(
    result: &Result<DiscoverPage, ErrorResponse>,
) -> proto::message::DiscoverResponse {
    match result {
        Ok(page) => proto::message::DiscoverResponse {
            registrations: page
                .registrations
                .iter()
                .map(|r| encode_register(&r.namespace, &r.record, Some(r.ttl)))
                .collect(),
            cookie: page.cookie.as_ref().map(|c| c.as_bytes().to_vec()),
            status: Some(ResponseStatus::Ok as i32),
            status_text: None,
        },
        Err(e) => proto::message::DiscoverResponse {
            registrations: Vec::new(),
            cookie: None,
            status: Some(encode_status(e.code)),
            status_text: Some(e.text.clone()),
        },
    }
}

fn encode_status(code: ErrorCode) -> i32 {
    match code {
        // An unknown status is not ours to send; the closest generic one is.
        ErrorCode::Other(_) => ResponseStatus::EInternalError as i32,
        known => known.code(),
    }
}

#[cfg(test)]
mod tests;
