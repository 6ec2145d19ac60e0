//! The push protocol's messages ([`PUSH_PROTOCOL`](crate::PUSH_PROTOCOL); docs/push.md): a
//! subscriber sends one [`Subscribe`], the server answers with a stream of [`Push`]es. They use
//! the rendezvous framing (varint length + protobuf `Message`) and schema: pages are
//! DISCOVER_RESPONSEs, the subscription is DISCOVER_SUBSCRIBE (100) and removals are
//! DISCOVER_REMOVED (102).

use libp2p::PeerId;
use prost::Message as _;

use super::{
    message::{decode_discover, decode_discover_response, encode_discover_response},
    proto::{self, message::MessageType},
    Cookie, DecodeError, DiscoverPage, ErrorResponse, Message, Namespace,
};

/// A subscription: what a subscriber sends, once, on a push stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// The namespace; `None` for all namespaces.
    pub namespace: Option<Namespace>,
    /// The cookie the subscriber holds: the server first sends what registered after it.
    pub cookie: Option<Cookie>,
    /// The most registrations per replayed page, as DISCOVER's `limit`.
    pub limit: Option<u64>,
}

/// What a server sends on a push stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    /// A DISCOVER_RESPONSE: a replayed page, or one new registration with its new cookie; an
    /// error status ends the subscription.
    Page(Result<DiscoverPage, ErrorResponse>),
    /// The registrations of `peer` in `namespaces` ended before their TTL (UNREGISTER, or the
    /// server removed them when the peer disconnected).
    Removed {
        /// The peer.
        peer: PeerId,
        /// The namespaces it left.
        namespaces: Vec<Namespace>,
    },
}

impl Subscribe {
    /// Decodes one protobuf message body (without its length prefix). An invalid namespace or
    /// cookie is [`DecodeError::InvalidRequest`] (answered as a DISCOVER would be).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let pb = proto::Message::decode(bytes).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
        let ty = pb.r#type.unwrap_or(0);
        if ty != MessageType::DiscoverSubscribe as i32 {
            return Err(DecodeError::UnknownType(ty));
        }
        let sub = pb.discover_subscribe.unwrap_or_default();
        let discover = proto::message::Discover {
            ns: sub.ns,
            limit: sub.limit,
            cookie: sub.cookie,
        };
        match decode_discover(discover)? {
            Message::Discover {
                namespace,
                cookie,
                limit,
            } => Ok(Self {
                namespace,
                cookie,
                limit,
            }),
            _ => unreachable!("decode_discover returns a DISCOVER"),
        }
    }

    /// Encodes the message body (without its length prefix).
    pub fn encode(&self) -> Vec<u8> {
        proto::Message {
            r#type: Some(MessageType::DiscoverSubscribe as i32),
            discover_subscribe: Some(proto::message::DiscoverSubscribe {
                ns: self.namespace.as_ref().map(|ns| ns.to_string()),
                cookie: self.cookie.as_ref().map(|c| c.as_bytes().to_vec()),
                limit: self.limit,
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }
}

impl Push {
    /// Decodes one protobuf message body (without its length prefix).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let pb = proto::Message::decode(bytes).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
        let ty = pb.r#type.unwrap_or(0);
        if ty == MessageType::DiscoverResponse as i32 {
            return match decode_discover_response(pb.discover_response.unwrap_or_default()) {
                Message::DiscoverResponse(page) => Ok(Push::Page(page)),
                _ => unreachable!("decode_discover_response returns a DISCOVER_RESPONSE"),
            };
        }
        if ty != MessageType::DiscoverRemoved as i32 {
            return Err(DecodeError::UnknownType(ty));
        }
        let removed = pb.discover_removed.unwrap_or_default();
        let peer = removed
            .peer
            .and_then(|bytes| PeerId::from_bytes(&bytes).ok())
            .ok_or_else(|| {
                DecodeError::InvalidResponse("DISCOVER_REMOVED without a valid peer id".into())
            })?;
        let namespaces = removed
            .ns
            .into_iter()
            .map(Namespace::new)
            .collect::<Result<_, _>>()
            .map_err(|e| DecodeError::InvalidResponse(format!("DISCOVER_REMOVED: {e}")))?;
        Ok(Push::Removed { peer, namespaces })
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

impl From<&Push> for proto::Message {
    fn from(push: &Push) -> Self {
        match push {
            Push::Page(page) => proto::Message {
                r#type: Some(MessageType::DiscoverResponse as i32),
                discover_response: Some(encode_discover_response(page)),
                ..Default::default()
            },
            Push::Removed { peer, namespaces } => proto::Message {
                r#type: Some(MessageType::DiscoverRemoved as i32),
                discover_removed: Some(proto::message::DiscoverRemoved {
                    peer: Some(peer.to_bytes()),
                    ns: namespaces.iter().map(|ns| ns.to_string()).collect(),
                }),
                ..Default::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::*;
    use crate::codec::{ErrorCode, RecordFormat, Registration, SignedRecord};

    fn ns(s: &str) -> Namespace {
        Namespace::new(s).unwrap()
    }

    #[test]
    fn subscribe_round_trips() {
        let sub = Subscribe {
            namespace: Some(ns("chat")),
            cookie: Some(Cookie::new(vec![0, 0, 0, 0, 0, 0, 0, 7, b'c']).unwrap()),
            limit: Some(10),
        };
        assert_eq!(Subscribe::decode(&sub.encode()), Ok(sub));
        let all = Subscribe {
            namespace: None,
            cookie: None,
            limit: None,
        };
        assert_eq!(Subscribe::decode(&all.encode()), Ok(all));
    }

    #[test]
    fn a_subscribe_is_not_a_rendezvous_message_and_a_discover_is_not_a_subscribe() {
        let sub = Subscribe {
            namespace: None,
            cookie: None,
            limit: None,
        };
        assert_eq!(
            Message::decode(&sub.encode()),
            Err(DecodeError::UnknownType(100))
        );
        let discover = Message::Discover {
            namespace: None,
            cookie: None,
            limit: None,
        };
        assert_eq!(
            Subscribe::decode(&discover.encode()),
            Err(DecodeError::UnknownType(3))
        );
    }

    #[test]
    fn subscribe_with_a_bad_namespace_is_an_invalid_request() {
        let bytes = proto::Message {
            r#type: Some(100),
            discover_subscribe: Some(proto::message::DiscoverSubscribe {
                ns: Some("x".repeat(300)),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec();
        let Err(DecodeError::InvalidRequest { error, .. }) = Subscribe::decode(&bytes) else {
            panic!("expected an invalid request");
        };
        assert_eq!(error.code, ErrorCode::InvalidNamespace);
    }

    #[test]
    fn pushes_round_trip() {
        let key = Keypair::generate_ed25519();
        let record = SignedRecord::new(&key, vec![], RecordFormat::Standard).unwrap();
        let page = Push::Page(Ok(DiscoverPage {
            registrations: vec![Registration {
                namespace: ns("chat"),
                record,
                ttl: 7200,
            }],
            cookie: Some(Cookie::new(vec![1; 12]).unwrap()),
            skipped: 0,
        }));
        assert_eq!(Push::decode(&page.encode()), Ok(page.clone()));
        assert_eq!(page.encoded_len(), page.encode().len());
        let error = Push::Page(Err(ErrorResponse::new(ErrorCode::Unavailable, "slow")));
        assert_eq!(Push::decode(&error.encode()), Ok(error));
        let removed = Push::Removed {
            peer: key.public().to_peer_id(),
            namespaces: vec![ns("chat"), ns("files")],
        };
        assert_eq!(Push::decode(&removed.encode()), Ok(removed));
    }

    #[test]
    fn a_removal_without_a_peer_is_invalid() {
        let bytes = proto::Message {
            r#type: Some(102),
            discover_removed: Some(proto::message::DiscoverRemoved {
                peer: Some(vec![1, 2, 3]),
                ns: vec!["chat".into()],
            }),
            ..Default::default()
        }
        .encode_to_vec();
        assert!(matches!(
            Push::decode(&bytes),
            Err(DecodeError::InvalidResponse(_))
        ));
    }
}
