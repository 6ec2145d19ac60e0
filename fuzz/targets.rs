//! The bodies of the fuzz targets, shared by the cargo-fuzz binaries (`fuzz_targets/`) and the
//! stable-toolchain replay test (`tests/fuzz_corpus.rs`), which runs every input checked in under
//! `fuzz/seeds/` in `cargo test`. Each target panics when an invariant breaks; decoding errors
//! are expected and fine.

#![allow(dead_code)]

use std::{
    collections::HashSet,
    pin::Pin,
    sync::OnceLock,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::{executor::block_on, AsyncRead};
use libp2p::{identity::Keypair, Multiaddr, PeerId};
use rendezvous_discovery::{
    codec::{
        read_frame, write_frame, Cookie, Message, Namespace, RecordFormat, Request, SignedRecord,
        UnverifiedRegistration,
    },
    server::{Config, Registrations, ServedFormats},
};

/// A reader that hands out at most `chunk` bytes per read, like a network stream.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = self.chunk.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(n))
    }
}

/// Framing: frames read from any bytes, in any chunking, never exceed the cap, and a body
/// written then read comes back unchanged.
pub fn frame(data: &[u8]) {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let max = 1usize << (head % 21);
    let mut reader = Chunked {
        data: rest,
        chunk: usize::from(head / 21) + 1,
    };
    block_on(async {
        while let Ok(Some(body)) = read_frame(&mut reader, max).await {
            assert!(
                body.len() <= max,
                "a {} byte frame over the {max} cap",
                body.len()
            );
        }
        let mut written = Vec::new();
        let body = &rest[..rest.len().min(max)];
        write_frame(&mut written, body, max).await.unwrap();
        let mut reader = Chunked {
            data: &written,
            chunk: 3,
        };
        let read = read_frame(&mut reader, max).await.unwrap();
        assert_eq!(read.as_deref(), Some(body));
    });
}

/// Messages: `Message::decode` and `Request::decode` never panic, agree on what a request is,
/// and what decodes re-encodes to something that decodes to itself.
pub fn message(data: &[u8]) {
    let message = Message::decode(data);
    let request = Request::decode(data);
    match (&message, &request) {
        (Ok(Message::Unregister { namespace: a, .. }), Ok(Request::Unregister(b))) => {
            assert_eq!(a, b)
        }
        (Ok(Message::Discover { namespace, .. }), Ok(Request::Discover { namespace: b, .. })) => {
            assert_eq!(namespace, b)
        }
        (Ok(Message::Register(full)), Ok(Request::Register(raw))) => {
            assert_eq!(full.namespace, raw.namespace);
            assert_eq!(full.record.envelope_bytes(), &raw.envelope[..]);
        }
        // A REGISTER whose envelope does not verify decodes as a request only.
        (Err(_), Ok(Request::Register(_))) => {}
        (Ok(Message::RegisterResponse(_) | Message::DiscoverResponse(_)), Err(_)) => {}
        (Err(_), Err(_)) => {}
        (m, r) => panic!("Message::decode {m:?} and Request::decode {r:?} disagree"),
    }
    if let Ok(message) = message {
        let once = Message::decode(&message.encode()).expect("what decoded re-encodes");
        assert_eq!(once.encoded_len(), once.encode().len());
        let twice = Message::decode(&once.encode()).expect("what decoded re-encodes");
        assert_eq!(once, twice);
    }
}

/// Records: any bytes either fail to parse or give a record whose envelope is those bytes.
pub fn record(data: &[u8]) {
    if let Ok(record) = SignedRecord::from_bytes(data) {
        assert_eq!(record.envelope_bytes(), data);
        let again = SignedRecord::from_bytes(record.envelope_bytes()).unwrap();
        assert_eq!(again, record);
    }
}

const PEERS: usize = 6;
const VARIANTS: usize = 3;
const NAMESPACES: [&str; 4] = ["a", "b", "chat", "x"];

/// Signed records of `PEERS` peers, `VARIANTS` each (0, 1 and 9 addresses), both formats; signed
/// once per process.
fn pool() -> &'static Vec<Vec<SignedRecord>> {
    static POOL: OnceLock<Vec<Vec<SignedRecord>>> = OnceLock::new();
    POOL.get_or_init(|| {
        (0..PEERS)
            .map(|p| {
                let key = Keypair::ed25519_from_bytes([p as u8 + 1; 32]).unwrap();
                (0..VARIANTS * 2)
                    .map(|v| {
                        let count = [0, 1, 9][v % VARIANTS];
                        let addrs: Vec<Multiaddr> = (0..count)
                            .map(|a| format!("/ip4/10.{p}.{v}.{a}/tcp/4001").parse().unwrap())
                            .collect();
                        let format = if v < VARIANTS {
                            RecordFormat::Standard
                        } else {
                            RecordFormat::Legacy
                        };
                        SignedRecord::new(&key, addrs, format).unwrap()
                    })
                    .collect()
            })
            .collect()
    })
}

fn peer(i: usize) -> PeerId {
    pool()[i % PEERS][0].peer_id()
}

/// Store operations: any sequence of registers (valid, foreign, garbage and oversized
/// envelopes), unregisters, disconnects, discovers with any cookie and time passing keeps the
/// indexes consistent and the store within its limits and byte budget, never panics, and paging
/// with any limit returns every live registration exactly once.
pub fn store(data: &[u8]) {
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();
    let (Some(a), Some(b), Some(c)) = (next(), next(), next()) else {
        return;
    };
    let max_page = usize::from(b % 7) + 1;
    let config = Config::default()
        .with_min_ttl(1)
        .with_max_ttl(u64::from(a % 200) + 1)
        .with_max_registrations_per_peer(usize::from(a % 3) + 1)
        .with_max_registrations(usize::from(b % 16) + 1)
        .with_max_store_bytes(usize::from(c) * 64 + 768)
        .with_max_record_size(if c % 2 == 0 { 8192 } else { 300 })
        .with_max_addresses_per_record(if b % 2 == 0 { 64 } else { 4 })
        .with_max_page(max_page);
    let mut store = Registrations::new(config, u64::from(a) << 56);
    let t0 = Instant::now();
    let mut now = t0;
    let mut cookie: Option<Cookie> = None;
    while let (Some(op), Some(x), Some(y)) = (next(), next(), next()) {
        let p = usize::from(x) % PEERS;
        let namespace = Namespace::new(NAMESPACES[usize::from(y) % NAMESPACES.len()]).unwrap();
        let ttl = match y / 64 {
            0 => None,
            1 => Some(u64::from(x)),
            2 => Some(u64::MAX),
            _ => Some(u64::from(y % 50)),
        };
        let before = (store.len(), store.stored_bytes());
        match op % 8 {
            0 | 1 => {
                // The peer's own record, another peer's, garbage, or an oversized envelope.
                let envelope = match x / PEERS as u8 % 4 {
                    0 | 1 => pool()[p][usize::from(y) % (VARIANTS * 2)]
                        .envelope_bytes()
                        .to_vec(),
                    2 => pool()[(p + 1) % PEERS][0].envelope_bytes().to_vec(),
                    _ => vec![y; usize::from(x) * 40],
                };
                let request = UnverifiedRegistration {
                    namespace,
                    envelope,
                    ttl,
                };
                if store.register_unverified(peer(p), request, now).is_err() {
                    assert_eq!(
                        (store.len(), store.stored_bytes()),
                        before,
                        "a refusal changed the store"
                    );
                }
            }
            2 => {
                store.unregister(peer(p), &namespace);
            }
            3 => {
                store.remove_peer(&peer(p));
                assert_eq!(store.count_of(&peer(p)), 0);
            }
            4 => {
                now += Duration::from_secs(u64::from(x % 64));
                while let Some(expired) = store.poll_expired(now) {
                    assert!(now >= t0);
                    let _ = expired;
                }
                if let Some(deadline) = store.poll_timeout() {
                    assert!(deadline > now);
                }
            }
            5 => {
                // Any cookie: ours, a stale one, or bytes.
                let asked = if y % 2 == 0 { Some(&namespace) } else { None };
                let given = match x % 3 {
                    0 => cookie.clone(),
                    1 => Cookie::new(data[..data.len().min(usize::from(y))].to_vec()).ok(),
                    _ => None,
                };
                if let Ok((page, next_cookie)) = store.discover(
                    ServedFormats::All,
                    asked,
                    given.as_ref(),
                    Some(u64::from(x)),
                    now,
                ) {
                    assert!(page.len() <= max_page);
                    cookie = Some(next_cookie);
                }
            }
            6 => check_paging(&mut store, now, u64::from(x % 5) + 1),
            _ => {
                let _ = store.discover(ServedFormats::All, None, None, Some(u64::MAX), now);
            }
        }
        store.check_invariants().unwrap();
    }
    check_paging(&mut store, now, 2);
}

/// Paging through everything and through each namespace returns every live registration
/// exactly once.
fn check_paging(store: &mut Registrations, now: Instant, limit: u64) {
    while store.poll_expired(now).is_some() {}
    for namespace in
        std::iter::once(None).chain(NAMESPACES.iter().map(|n| Some(Namespace::new(*n).unwrap())))
    {
        let mut seen = Vec::new();
        let mut cookie = None;
        loop {
            let (page, next) = store
                .discover(
                    ServedFormats::All,
                    namespace.as_ref(),
                    cookie.as_ref(),
                    Some(limit),
                    now,
                )
                .unwrap();
            assert!(page.len() as u64 <= limit);
            if page.is_empty() {
                break;
            }
            seen.extend(page.into_iter().map(|r| (r.record.peer_id(), r.namespace)));
            cookie = Some(next);
        }
        let unique: HashSet<_> = seen.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "a registration was returned twice"
        );
        let expected: usize = match &namespace {
            Some(ns) => store.registrations_in(ns, now).len(),
            None => store.len(),
        };
        assert_eq!(seen.len(), expected, "paging missed registrations");
    }
}
