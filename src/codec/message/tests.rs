//! Round trips, golden bytes and decoding rules of every message type.

use libp2p::identity::Keypair;
use prost::Message as _;

use super::*;
use crate::codec::{RecordFormat, MAX_COOKIE_LEN};

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

fn varint(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encode_length_delimiter(n, &mut out).unwrap();
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
    round_trip(Message::Unregister {
        namespace: Namespace::from_static("chat"),
        peer: None,
    });
    round_trip(Message::Unregister {
        namespace: Namespace::from_static("chat"),
        peer: Some(PeerId::random()),
    });
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
        Message::Unregister {
            namespace: Namespace::from_static("a"),
            peer: None
        }
        .encode(),
        [0x08, 0x02, 0x22, 0x03, 0x0a, 0x01, b'a']
    );
    // type=UNREGISTER(2), unregister{ns="a", id=<peer id>}: the deprecated field, which
    // py-libp2p 0.8's server requires.
    let peer = PeerId::random();
    let id = peer.to_bytes();
    let mut expected = vec![0x08, 0x02, 0x22, 5 + id.len() as u8, 0x0a, 0x01, b'a', 0x12];
    expected.push(id.len() as u8);
    expected.extend_from_slice(&id);
    assert_eq!(
        Message::Unregister {
            namespace: Namespace::from_static("a"),
            peer: Some(peer)
        }
        .encode(),
        expected
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
        Message::DiscoverResponse(Err(ErrorResponse::new(ErrorCode::Unavailable, "y"))).encode(),
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
    let inner_len = 3 + 1 + prost::length_delimiter_len(env.len()) + env.len() + 2;
    expected.extend(varint(inner_len));
    expected.extend_from_slice(&[0x0a, 0x01, b'a', 0x12]);
    expected.extend(varint(env.len()));
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
fn bad_requests_map_to_their_status_codes() {
    let expect = |pb: proto::Message, code: ErrorCode| match Message::decode(&pb.encode_to_vec()) {
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
    let Message::DiscoverResponse(Ok(page)) = Message::decode(&pb.encode_to_vec()).unwrap() else {
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
