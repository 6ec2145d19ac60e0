//! Requests as a server decodes them: a REGISTER's signed envelope is left undecoded, so the
//! server can check the cheap things first (rate, TTL, limits, byte budgets) and pay for
//! decoding and verifying the envelope only when the request may be stored.

use prost::Message as _;

use super::{
    proto::{self, message::MessageType},
    Cookie, DecodeError, ErrorCode, ErrorResponse, Message, Namespace, RequestKind, Ttl,
};

/// A REGISTER as read from the wire, before its envelope is decoded or verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnverifiedRegistration {
    /// The namespace to register in.
    pub namespace: Namespace,
    /// The signed envelope bytes, not yet decoded.
    pub envelope: Vec<u8>,
    /// The requested TTL; `None` means the server's default (2 h by the spec).
    pub ttl: Option<Ttl>,
}

/// A request received by a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// REGISTER, its envelope not yet decoded.
    Register(UnverifiedRegistration),
    /// UNREGISTER (no response).
    Unregister(Namespace),
    /// DISCOVER.
    Discover {
        /// The namespace to look in; `None` means all namespaces.
        namespace: Option<Namespace>,
        /// The cookie of the previous response.
        cookie: Option<Cookie>,
        /// The most registrations wanted.
        limit: Option<u64>,
    },
}

/// Why bytes a server received are not a request it serves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The bytes are not a valid message, or an invalid request (see
    /// [`DecodeError::InvalidRequest`] for the answer it gets).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A valid message that only a server sends (`REGISTER_RESPONSE`, `DISCOVER_RESPONSE`).
    #[error("a {0} message is not a request")]
    NotARequest(&'static str),
}

impl Request {
    /// Decodes one protobuf message body (without its length prefix) as a request. The
    /// envelope of a REGISTER is only checked to be present.
    pub fn decode(bytes: &[u8]) -> Result<Self, RequestError> {
        let pb = proto::Message::decode(bytes).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
        // Absent `type` is REGISTER (0), the proto2 default.
        let ty = pb.r#type.unwrap_or(0);
        if MessageType::try_from(ty) == Ok(MessageType::Register) {
            return Ok(Request::Register(decode_register(pb.register)?));
        }
        match Message::try_from(pb)? {
            // The deprecated `id` is not acted on: a peer only ever unregisters itself.
            Message::Unregister { namespace, .. } => Ok(Request::Unregister(namespace)),
            Message::Discover {
                namespace,
                cookie,
                limit,
            } => Ok(Request::Discover {
                namespace,
                cookie,
                limit,
            }),
            Message::RegisterResponse(_) => Err(RequestError::NotARequest("REGISTER_RESPONSE")),
            Message::DiscoverResponse(_) => Err(RequestError::NotARequest("DISCOVER_RESPONSE")),
            Message::Register(_) => unreachable!("REGISTER is decoded above"),
        }
    }
}

fn decode_register(
    register: Option<proto::message::Register>,
) -> Result<UnverifiedRegistration, DecodeError> {
    let invalid = |code, text: String| DecodeError::InvalidRequest {
        kind: RequestKind::Register,
        error: ErrorResponse::new(code, text),
    };
    let register = register.ok_or_else(|| {
        invalid(
            ErrorCode::InvalidSignedPeerRecord,
            "REGISTER without a register field".into(),
        )
    })?;
    let namespace = Namespace::new(register.ns.unwrap_or_default())
        .map_err(|e| invalid(ErrorCode::InvalidNamespace, e.to_string()))?;
    let envelope = register.signed_peer_record.ok_or_else(|| {
        invalid(
            ErrorCode::InvalidSignedPeerRecord,
            "REGISTER without a signedPeerRecord".into(),
        )
    })?;
    Ok(UnverifiedRegistration {
        namespace,
        envelope,
        ttl: register.ttl,
    })
}

#[cfg(test)]
mod tests {
    use libp2p::{identity::Keypair, PeerId};

    use super::*;
    use crate::codec::{NewRegistration, RecordFormat, SignedRecord};

    #[test]
    fn a_register_decodes_without_its_envelope_being_verified() {
        let key = Keypair::generate_ed25519();
        let record = SignedRecord::new(&key, Vec::new(), RecordFormat::Standard).unwrap();
        let message = Message::Register(NewRegistration {
            namespace: Namespace::from_static("a"),
            record: record.clone(),
            ttl: Some(7200),
        });
        let Request::Register(register) = Request::decode(&message.encode()).unwrap() else {
            panic!("not a REGISTER");
        };
        assert_eq!(register.envelope, record.envelope_bytes());
        assert_eq!(register.ttl, Some(7200));
        // Garbage envelope bytes still decode as a request: verification comes later.
        let mut bytes = message.encode();
        let at = bytes.len() - 20;
        bytes[at] ^= 0xff;
        assert!(matches!(
            Request::decode(&bytes),
            Ok(Request::Register(_)) | Err(_)
        ));
    }

    #[test]
    fn other_requests_decode_like_messages_and_responses_are_refused() {
        let discover = Message::Discover {
            namespace: Some(Namespace::from_static("a")),
            cookie: None,
            limit: Some(3),
        };
        assert_eq!(
            Request::decode(&discover.encode()),
            Ok(Request::Discover {
                namespace: Some(Namespace::from_static("a")),
                cookie: None,
                limit: Some(3)
            })
        );
        let unregister = Message::Unregister {
            namespace: Namespace::from_static("b"),
            peer: Some(PeerId::random()),
        };
        assert_eq!(
            Request::decode(&unregister.encode()),
            Ok(Request::Unregister(Namespace::from_static("b")))
        );
        let response = Message::RegisterResponse(Ok(7200));
        assert_eq!(
            Request::decode(&response.encode()),
            Err(RequestError::NotARequest("REGISTER_RESPONSE"))
        );
        let no_envelope = Message::decode(&[8, 0, 18, 3, 10, 1, b'a']);
        assert!(no_envelope.is_err());
        assert!(matches!(
            Request::decode(&[8, 0, 18, 3, 10, 1, b'a']),
            Err(RequestError::Decode(DecodeError::InvalidRequest { .. }))
        ));
    }
}
