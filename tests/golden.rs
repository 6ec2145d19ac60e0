//! Records as other implementations write them, served back byte for byte.
//!
//! - The go-libp2p envelope is a real one: the test vector of js-libp2p's
//!   `packages/peer-record/test/peer-record.spec.ts` ("de/serializes the same as a go record"),
//!   a standard peer record of ten addresses `/ip4/1.2.3.4/tcp/0..9` signed by go-libp2p with the
//!   ed25519 key given there.
//! - The js-libp2p envelope is written from the spec in the field order js-libp2p uses
//!   (`RecordEnvelope.marshal`: publicKey 1, payloadType 2, payload 3, signature 5;
//!   `PeerRecord.marshal`: peerId 1, seq 2, addresses 3 of `{ multiaddr 1 }`), with js's
//!   millisecond `seq` and its test address `/ip4/127.0.0.1/tcp/2000`, signed with the same key.
//!   Ed25519 signatures are deterministic, so these are the bytes js-libp2p writes for it.
//!
//! Each goes into a REGISTER written by hand, as those implementations frame it; our server
//! decodes and verifies it, and a DISCOVER_RESPONSE carries it back unchanged, inside a message
//! whose every byte the test rebuilds by hand.

mod support;

use libp2p::{identity::Keypair, Multiaddr};
use rendezvous_discovery::{
    codec::{read_frame, Message, DEFAULT_MAX_MESSAGE_SIZE},
    server, Cookie, RecordFormat, SignedRecord,
};
use support::{
    node::spawn,
    raw::{self, field},
    HANG,
};

/// The ed25519 private key of the vector, in libp2p's protobuf encoding.
const KEY: &str =
    "0801124085fbe72b6064289004a531f967898df5319ee02992fdd84021fa5052434bf6ee11bba3ed17\
                   21948cefb4e50b0a0bb5cad8a6b52dc7b1a40f4f6652105c91e2c4";

/// The envelope go-libp2p wrote.
const GO_ENVELOPE: &str =
    "0a240801122011bba3ed1721948cefb4e50b0a0bb5cad8a6b52dc7b1a40f4f6652105c91e2\
                           c4120203011aaa010a2600240801122011bba3ed1721948cefb4e50b0a0bb5cad8a6b52d\
                           c7b1a40f4f6652105c91e2c410d8b8e0bf9391b697161a0a0a0804010203040600001a0a\
                           0a0804010203040600011a0a0a0804010203040600021a0a0a0804010203040600031a0a\
                           0a0804010203040600041a0a0a0804010203040600051a0a0a0804010203040600061a0a\
                           0a0804010203040600071a0a0a0804010203040600081a0a0a0804010203040600092a40\
                           b197f76b9f288af2b467fe666f774476287049b424b73975c8860efb02372d026a799584\
                           541ad72f2654346485bca3ece36462b7d1b1391c8d276dc4ab8bca0b";

/// The envelope js-libp2p writes for `/ip4/127.0.0.1/tcp/2000`, seq 1732838400000.
const JS_ENVELOPE: &str =
    "0a240801122011bba3ed1721948cefb4e50b0a0bb5cad8a6b52dc7b1a40f4f6652105c91e2\
                           c4120203011a3b0a2600240801122011bba3ed1721948cefb4e50b0a0bb5cad8a6b52dc7\
                           b1a40f4f6652105c91e2c41080c0dea9b7321a0a0a08047f0000010607d02a40a352f4c3\
                           1cb7358ab56cc0a27c246164ec945a262875debf7e65516ef2099eda3f7eebf59b5d3606\
                           578f74877b729b4e2e4f4e83ca8d00de685b847ea712400c";

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// `Register { ns, signedPeerRecord, ttl }`, in field order, as go and js write it.
fn register_body(ns: &str, envelope: &[u8], ttl: u64) -> Vec<u8> {
    raw::register_body(ns.as_bytes(), envelope, Some(ttl))
}

/// `Message { type = 1: REGISTER (0), register = 2 }`.
fn register_message(ns: &str, envelope: &[u8], ttl: u64) -> Vec<u8> {
    raw::register_message(ns.as_bytes(), envelope, Some(ttl))
}

/// `Message { type = 1: DISCOVER_RESPONSE (4), discoverResponse = 6 { registrations = 1,
/// cookie = 2, status = 3: OK } }`.
fn discover_response_message(ns: &str, envelope: &[u8], ttl: u64, cookie: &[u8]) -> Vec<u8> {
    let mut response = field(0x0a, &register_body(ns, envelope, ttl));
    response.extend(field(0x12, cookie));
    response.extend([0x18, 0x00]);
    let mut message = vec![0x08, 0x04];
    message.extend(field(0x32, &response));
    message
}

fn addrs(list: &[&str]) -> Vec<Multiaddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

fn vectors() -> [(&'static str, Vec<u8>, Vec<Multiaddr>); 2] {
    let go_addrs: Vec<String> = (0..10).map(|p| format!("/ip4/1.2.3.4/tcp/{p}")).collect();
    let go_addrs: Vec<&str> = go_addrs.iter().map(String::as_str).collect();
    [
        ("go", hex(GO_ENVELOPE), addrs(&go_addrs)),
        ("js", hex(JS_ENVELOPE), addrs(&["/ip4/127.0.0.1/tcp/2000"])),
    ]
}

#[test]
fn go_and_js_envelopes_decode_and_verify_as_standard_records() {
    let key = Keypair::from_protobuf_encoding(&hex(KEY)).unwrap();
    for (name, envelope, addresses) in vectors() {
        let record = SignedRecord::from_bytes(&envelope).unwrap();
        assert_eq!(record.format(), RecordFormat::Standard, "{name}");
        assert_eq!(record.peer_id(), key.public().to_peer_id(), "{name}");
        assert_eq!(record.addresses(), addresses, "{name}");
        assert_eq!(record.envelope_bytes(), envelope, "{name}");
        // A REGISTER and a DISCOVER_RESPONSE as a go or js peer and server write them.
        let Message::Register(registration) =
            Message::decode(&register_message(name, &envelope, 7200)).unwrap()
        else {
            panic!("{name}: not a REGISTER");
        };
        assert_eq!(registration.record, record, "{name}");
        assert_eq!(registration.ttl, Some(7200));
        let Message::DiscoverResponse(Ok(page)) =
            Message::decode(&discover_response_message(name, &envelope, 60, b"c")).unwrap()
        else {
            panic!("{name}: not a DISCOVER_RESPONSE page");
        };
        assert_eq!(page.skipped, 0);
        assert_eq!(page.registrations[0].record, record, "{name}");
        assert_eq!(page.cookie, Some(Cookie::new(b"c".to_vec()).unwrap()));
        // Rebuilding a registration never touches the envelope.
        assert_eq!(
            Message::Register(registration.clone()).encode(),
            register_message(name, &envelope, 7200),
            "{name}: our REGISTER encoding is theirs, byte for byte"
        );
    }
}

#[tokio::test]
async fn our_server_serves_go_and_js_envelopes_back_byte_for_byte() {
    let key = Keypair::from_protobuf_encoding(&hex(KEY)).unwrap();
    let server = spawn(support::swarm(|_| {
        server::Behaviour::new(server::Config::default())
    }))
    .await;
    let mut client = support::node::spawn_as_is(support::swarm_with_key(key, raw::Behaviour::new));
    client.dial(server.addr());
    client.wait_connected(server.peer).await;
    let server_peer = server.peer;
    for (name, envelope, _) in vectors() {
        client.run(move |s| s.behaviour_mut().open(server_peer));
        let mut stream = client
            .take(|e| match e {
                raw::Event::Opened(_, stream) => Some(stream),
                raw::Event::Failed(_, error) => panic!("no stream: {error}"),
            })
            .await;
        raw::send_frame(&mut stream, &register_message(name, &envelope, 7200)).await;
        let answer = tokio::time::timeout(HANG, raw::recv(&mut stream))
            .await
            .unwrap();
        assert_eq!(answer, Some(Message::RegisterResponse(Ok(7200))), "{name}");

        // type DISCOVER (3), discover { ns = 1 }
        let mut discover = vec![0x08, 0x03];
        discover.extend(field(0x2a, &field(0x0a, name.as_bytes())));
        raw::send_frame(&mut stream, &discover).await;
        let body = tokio::time::timeout(HANG, read_frame(&mut stream, DEFAULT_MAX_MESSAGE_SIZE))
            .await
            .unwrap()
            .unwrap()
            .expect("a DISCOVER_RESPONSE");
        let Ok(Message::DiscoverResponse(Ok(page))) = Message::decode(&body) else {
            panic!("{name}: not a page");
        };
        let (ttl, cookie) = (page.registrations[0].ttl, page.cookie.unwrap());
        assert!(ttl == 7200 || ttl == 7199, "{name}: remaining ttl {ttl}");
        assert_eq!(
            body,
            discover_response_message(name, &envelope, ttl, cookie.as_bytes()),
            "{name}: the response carries the envelope exactly as it was registered"
        );
    }
}
