//! The push protocol against our server, through raw streams (docs/push.md): a subscriber gets
//! what it missed since its cookie, then each new registration with its new cookie, and early
//! removals; a subscriber that does not read is cut off without holding REGISTERs up.

mod support;

use libp2p::{Multiaddr, PeerId, Stream, Swarm};
use libp2p_swarm_test::SwarmExt;
use rendezvous_discovery::{
    codec::{read_frame, write_frame, DiscoverPage, Message, NewRegistration, Push, Subscribe},
    server::{self, SubscriptionEnd},
    Cookie, ErrorCode, Namespace, RecordFormat, SignedRecord, PUSH_PROTOCOL,
};

use support::{
    node::{self, Node},
    raw, HANG,
};

fn ns(s: &str) -> Namespace {
    Namespace::new(s).unwrap()
}

async fn server(config: server::Config) -> Node<server::Behaviour> {
    node::spawn(Swarm::new_ephemeral_tokio(|_| {
        server::Behaviour::new(config)
    }))
    .await
}

/// A raw client connected to `server`, opening streams on `protocol`.
async fn client(
    server: &Node<server::Behaviour>,
    protocol: libp2p::StreamProtocol,
) -> Node<raw::Behaviour> {
    let swarm = Swarm::new_ephemeral_tokio(|key| raw::Behaviour::new(key).with_protocol(protocol));
    let mut client = node::spawn(swarm).await;
    client.dial(server.addr());
    client.wait_connected(server.peer).await;
    client
}

async fn open(client: &mut Node<raw::Behaviour>, server: PeerId) -> Stream {
    client.run(move |swarm| swarm.behaviour_mut().open(server));
    client
        .take(|event| match event {
            raw::Event::Opened(_, stream) => Some(stream),
            raw::Event::Failed(_, error) => panic!("stream failed: {error}"),
        })
        .await
}

/// A registrant: a raw rendezvous client with a stream open, and its record.
struct Registrant {
    node: Node<raw::Behaviour>,
    stream: Stream,
    record: SignedRecord,
}

impl Registrant {
    async fn new(server: &Node<server::Behaviour>) -> Self {
        Self::with_addresses(server, vec!["/memory/1234".parse().unwrap()]).await
    }

    async fn with_addresses(server: &Node<server::Behaviour>, addrs: Vec<Multiaddr>) -> Self {
        let mut node = client(server, rendezvous_discovery::PROTOCOL).await;
        let stream = open(&mut node, server.peer).await;
        let record = node
            .ask(move |swarm| {
                let key = &swarm.behaviour().key;
                SignedRecord::new(key, addrs, RecordFormat::Standard).unwrap()
            })
            .await;
        Self {
            node,
            stream,
            record,
        }
    }

    fn peer(&self) -> PeerId {
        self.node.peer
    }

    async fn register(&mut self, namespace: &str) {
        let register = Message::Register(NewRegistration {
            namespace: ns(namespace),
            record: self.record.clone(),
            ttl: None,
        });
        raw::send(&mut self.stream, &register).await;
        let answer = tokio::time::timeout(HANG, raw::recv(&mut self.stream)).await;
        assert!(
            matches!(answer, Ok(Some(Message::RegisterResponse(Ok(_))))),
            "{answer:?}"
        );
    }

    async fn unregister(&mut self, namespace: &str) {
        let unregister = Message::Unregister {
            namespace: ns(namespace),
            peer: None,
        };
        raw::send(&mut self.stream, &unregister).await;
    }

    async fn discover(&mut self, namespace: &str, cookie: Option<Cookie>) -> DiscoverPage {
        let discover = Message::Discover {
            namespace: Some(ns(namespace)),
            cookie,
            limit: None,
        };
        raw::send(&mut self.stream, &discover).await;
        match tokio::time::timeout(HANG, raw::recv(&mut self.stream)).await {
            Ok(Some(Message::DiscoverResponse(Ok(page)))) => page,
            other => panic!("{other:?}"),
        }
    }
}

/// A subscriber's stream, after sending its subscription.
async fn subscribe(
    server: &Node<server::Behaviour>,
    namespace: Option<&str>,
    cookie: Option<Cookie>,
) -> (Node<raw::Behaviour>, Stream) {
    let mut node = client(server, PUSH_PROTOCOL).await;
    let mut stream = open(&mut node, server.peer).await;
    let subscribe = Subscribe {
        namespace: namespace.map(ns),
        cookie,
        limit: None,
    };
    write_frame(&mut stream, &subscribe.encode(), usize::MAX)
        .await
        .unwrap();
    (node, stream)
}

async fn next_push(stream: &mut Stream) -> Option<Push> {
    let body = tokio::time::timeout(HANG, read_frame(stream, 1 << 20))
        .await
        .expect("a push before the hang guard")
        .ok()??;
    Some(Push::decode(&body).expect("the server sends valid pushes"))
}

async fn next_page(stream: &mut Stream) -> DiscoverPage {
    match next_push(stream).await {
        Some(Push::Page(Ok(page))) => page,
        other => panic!("expected a page, got {other:?}"),
    }
}

fn peers(page: &DiscoverPage) -> Vec<PeerId> {
    page.registrations
        .iter()
        .map(|r| r.record.peer_id())
        .collect()
}

#[tokio::test]
async fn a_new_registration_is_pushed_with_a_cookie_that_discover_continues_from() {
    let mut server = server(server::Config::default()).await;
    let (_sub, mut stream) = subscribe(&server, Some("chat"), None).await;
    let replay = next_page(&mut stream).await;
    assert!(replay.registrations.is_empty(), "nothing registered yet");
    server
        .wait_for(|e| matches!(e, server::Event::Subscribed { .. }).then_some(()))
        .await;

    let mut alice = Registrant::new(&server).await;
    alice.register("chat").await;
    alice.register("other").await;
    let pushed = next_page(&mut stream).await;
    assert_eq!(peers(&pushed), vec![alice.peer()]);
    assert_eq!(pushed.registrations[0].namespace, ns("chat"));

    // The pushed cookie is a DISCOVER cookie: nothing is new after it.
    let after = alice.discover("chat", pushed.cookie.clone()).await;
    assert!(after.registrations.is_empty(), "{after:?}");
    // And before it, DISCOVER finds what was pushed.
    let all = alice.discover("chat", replay.cookie).await;
    assert_eq!(peers(&all), vec![alice.peer()]);
}

/// The SQLite store answers from the same in-memory index, and reports the same changes.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn with_the_sqlite_store_a_registration_is_pushed_and_a_refresh_again() {
    use rendezvous_discovery::server::store::{SqliteStore, SyncMode};
    let dir = tempfile::tempdir().unwrap();
    let config = server::Config::default();
    let store =
        SqliteStore::open(&dir.path().join("db"), config.clone(), SyncMode::Normal).unwrap();
    let swarm = Swarm::new_ephemeral_tokio(|_| server::Behaviour::with_store(config, store));
    let server = node::spawn(swarm).await;
    let (_sub, mut stream) = subscribe(&server, Some("chat"), None).await;
    next_page(&mut stream).await;
    let mut alice = Registrant::new(&server).await;
    alice.register("chat").await;
    let first = next_page(&mut stream).await;
    assert_eq!(peers(&first), vec![alice.peer()]);
    alice.register("chat").await;
    let refreshed = next_page(&mut stream).await;
    assert_eq!(peers(&refreshed), vec![alice.peer()]);
    assert_ne!(
        first.cookie, refreshed.cookie,
        "a refresh takes a new number"
    );
}

#[tokio::test]
async fn a_subscription_from_an_old_cookie_replays_what_was_missed_then_goes_live() {
    let server = server(server::Config::default().with_default_page(1)).await;
    let mut alice = Registrant::new(&server).await;
    alice.register("chat").await;
    let cookie = alice.discover("chat", None).await.cookie;
    let mut bob = Registrant::new(&server).await;
    let mut carol = Registrant::new(&server).await;
    bob.register("chat").await;
    carol.register("chat").await;

    let (_sub, mut stream) = subscribe(&server, Some("chat"), cookie).await;
    // Pages of one (the server's default page here): Bob, then Carol, and nothing else.
    assert_eq!(peers(&next_page(&mut stream).await), vec![bob.peer()]);
    assert_eq!(peers(&next_page(&mut stream).await), vec![carol.peer()]);

    let mut dave = Registrant::new(&server).await;
    dave.register("chat").await;
    assert_eq!(peers(&next_page(&mut stream).await), vec![dave.peer()]);
}

#[tokio::test]
async fn an_unregister_and_a_disconnect_reach_the_subscriber() {
    let server = server(server::Config::default()).await;
    let (_sub, mut stream) = subscribe(&server, None, None).await;
    next_page(&mut stream).await;
    let mut alice = Registrant::new(&server).await;
    alice.register("chat").await;
    alice.register("files").await;
    // In one page or two: pushes that wait for the same quiet moment go out together.
    let mut pushed = Vec::new();
    while pushed.len() < 2 {
        let page = next_page(&mut stream).await;
        pushed.extend(
            page.registrations
                .iter()
                .map(|r| (r.record.peer_id(), r.namespace.clone())),
        );
    }
    assert_eq!(
        pushed,
        vec![(alice.peer(), ns("chat")), (alice.peer(), ns("files"))]
    );

    alice.unregister("chat").await;
    match next_push(&mut stream).await {
        Some(Push::Removed { peer, namespaces }) => {
            assert_eq!((peer, namespaces), (alice.peer(), vec![ns("chat")]));
        }
        other => panic!("expected a removal, got {other:?}"),
    }
    let peer = alice.peer();
    alice.node.kill().await;
    match next_push(&mut stream).await {
        Some(Push::Removed {
            peer: p,
            namespaces,
        }) => {
            assert_eq!((p, namespaces), (peer, vec![ns("files")]));
        }
        other => panic!("expected a removal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_subscriber_that_does_not_read_is_cut_off_and_registers_are_answered_meanwhile() {
    // Pushes go out between any two REGISTERs (no quiet time), so the stream is writing, not
    // waiting for a quiet moment, when its queue fills: the subscriber is the slow one.
    let config = server::Config::default()
        .with_push_queue(2)
        .with_push_quiet(std::time::Duration::ZERO);
    let mut server = server(config).await;
    let (_sub, mut stream) = subscribe(&server, Some("chat"), None).await;
    next_page(&mut stream).await;
    // Records near the size cap, so the stream's window fills after a few dozen pushes and
    // the queue behind it fills next: the subscriber reads nothing from here on.
    let addrs: Vec<Multiaddr> = (0..60)
        .map(|i| {
            format!("/dns4/{}.example/tcp/{i}", "a".repeat(90))
                .parse()
                .unwrap()
        })
        .collect();
    let mut alice = Registrant::with_addresses(&server, addrs).await;
    for _ in 0..200 {
        alice.register("chat").await;
    }
    let reason = server
        .wait_for(|e| match e {
            server::Event::SubscriptionEnded { reason, .. } => Some(*reason),
            _ => None,
        })
        .await;
    assert_eq!(reason, SubscriptionEnd::Overflow);

    // The subscriber then reads what was queued, and an E_UNAVAILABLE that tells it to poll.
    let last = loop {
        match next_push(&mut stream).await {
            Some(Push::Page(Ok(_))) => continue,
            other => break other,
        }
    };
    match last {
        Some(Push::Page(Err(error))) => assert_eq!(error.code, ErrorCode::Unavailable),
        other => panic!("expected E_UNAVAILABLE, got {other:?}"),
    }
}

#[tokio::test]
async fn a_subscriber_whose_pushes_waited_out_a_burst_is_caught_up_from_its_cookie_not_cut_off() {
    // A quiet time no burst of REGISTERs one after the other leaves: every push waits for the
    // burst's end, and the queue of two fills within it.
    let config = server::Config::default()
        .with_push_queue(2)
        .with_push_quiet(server::MAX_PUSH_QUIET);
    let mut server = server(config).await;
    let (_sub, mut stream) = subscribe(&server, Some("chat"), None).await;
    let first = next_page(&mut stream).await;
    assert!(first.registrations.is_empty());
    let mut alice = Registrant::new(&server).await;
    let mut bob = Registrant::new(&server).await;
    for _ in 0..3 {
        alice.register("chat").await;
        bob.register("chat").await;
    }
    server
        .wait_for(|e| match e {
            server::Event::SubscriptionBehind { namespace, .. } => {
                assert_eq!(namespace.as_ref(), Some(&ns("chat")));
                Some(())
            }
            server::Event::SubscriptionEnded { reason, .. } => panic!("ended: {reason:?}"),
            _ => None,
        })
        .await;

    // After the burst: a replay from the cookie of the first page, each registrant once in
    // its latest state, not the six pushes (two of which were queued).
    let page = next_page(&mut stream).await;
    let mut got = peers(&page);
    got.sort();
    let mut want = vec![alice.peer(), bob.peer()];
    want.sort();
    assert_eq!(got, want, "{page:?}");
    let caught_up = page.cookie.clone().expect("a cookie");
    assert!(
        alice
            .discover("chat", Some(caught_up))
            .await
            .registrations
            .is_empty(),
        "its cookie is up to date"
    );

    // The subscription goes on: the next registration is pushed.
    let mut carol = Registrant::new(&server).await;
    carol.register("chat").await;
    assert_eq!(peers(&next_page(&mut stream).await), vec![carol.peer()]);
}

#[tokio::test]
async fn subscriptions_over_the_cap_are_refused_with_unavailable() {
    let server = server(server::Config::default().with_max_subscriptions(1)).await;
    let (_first, mut first) = subscribe(&server, Some("chat"), None).await;
    next_page(&mut first).await;
    let (_second, mut second) = subscribe(&server, Some("chat"), None).await;
    match next_push(&mut second).await {
        Some(Push::Page(Err(error))) => {
            assert_eq!(error.code, ErrorCode::Unavailable);
            assert!(error.text.contains("push subscriptions"), "{}", error.text);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_bad_cookie_is_answered_invalid_cookie_and_ends_the_subscription() {
    let server = server(server::Config::default()).await;
    let other = Cookie::new(b"\0\0\0\0\0\0\0\x01files".to_vec()).unwrap();
    let (_sub, mut stream) = subscribe(&server, Some("chat"), Some(other)).await;
    match next_push(&mut stream).await {
        Some(Push::Page(Err(error))) => assert_eq!(error.code, ErrorCode::InvalidCookie),
        other => panic!("expected E_INVALID_COOKIE, got {other:?}"),
    }
    assert!(next_push(&mut stream).await.is_none(), "the stream ends");
}

#[tokio::test]
async fn with_push_off_the_protocol_is_not_served() {
    let server = server(server::Config::default().with_max_subscriptions(0)).await;
    let mut node = client(&server, PUSH_PROTOCOL).await;
    let peer = server.peer;
    node.run(move |swarm| swarm.behaviour_mut().open(peer));
    let failed = node
        .take(|event| match event {
            raw::Event::Failed(_, error) => Some(error),
            raw::Event::Opened(..) => panic!("the push protocol is off"),
        })
        .await;
    assert!(!failed.is_empty());
}
