//! One table of requests against every store `rendezvous serve` has: memory (`--ephemeral`),
//! SQLite (`--data-dir`) and, with feature `redis`, Redis (`--store`). Every answer (status,
//! statusText, granted TTL, page) and every request and refusal metric is the same on each:
//! the stores decide by one rule book.

mod support;

use std::{collections::BTreeMap, time::Duration};

use libp2p::{identity::Keypair, PeerId};
use rendezvous_discovery::{
    codec::{Cookie, ErrorCode, Message, Namespace},
    server::cookie,
    RecordFormat, SignedRecord,
};
use support::{http::scrape, node::Node, raw, serve::Serve, HANG};

/// Limits small enough for the table to reach each one.
const LIMITS: &[&str] = &[
    "--min-ttl",
    "10",
    "--max-ttl",
    "100",
    "--max-record-size",
    "1024",
    "--max-addresses-per-record",
    "2",
    "--max-registrations-per-peer",
    "2",
    "--max-registrations",
    "4",
    "--requests-per-second",
    "0",
    "--metrics",
    "127.0.0.1:0",
];

/// The least byte budget `serve` takes, and room for records with long addresses.
const BYTE_LIMITS: &[&str] = &[
    "--max-store-bytes",
    "768",
    "--requests-per-second",
    "0",
    "--metrics",
    "127.0.0.1:0",
];

/// Where a server keeps its registrations, and what must live as long as it does.
enum Backend {
    Memory,
    Sqlite(tempfile::TempDir),
    #[cfg(feature = "redis")]
    Redis(support::fleet::Redis),
}

impl Backend {
    /// Each store, named.
    fn all() -> Vec<(&'static str, Backend)> {
        vec![
            ("memory", Backend::Memory),
            (
                "sqlite",
                Backend::Sqlite(tempfile::tempdir().expect("a temporary directory")),
            ),
            #[cfg(feature = "redis")]
            ("redis", Backend::Redis(support::fleet::Redis::start())),
        ]
    }

    /// `serve` with this store and `limits`.
    fn serve(&self, limits: &[&str]) -> Serve {
        let mut args: Vec<String> = match self {
            Backend::Memory => vec!["--ephemeral".into()],
            Backend::Sqlite(dir) => vec!["--data-dir".into(), dir.path().display().to_string()],
            #[cfg(feature = "redis")]
            Backend::Redis(redis) => vec!["--store".into(), redis.url()],
        };
        args.extend(limits.iter().map(|s| s.to_string()));
        Serve::start(args)
    }
}

/// The same peers in every run, so answers that name a peer are the same.
fn key(i: u8) -> Keypair {
    Keypair::ed25519_from_bytes([i + 1; 32]).expect("32 bytes")
}

/// A record of `key` listing `addresses` addresses, each `/dns4/<label>.example/tcp/4001`.
fn record(key: &Keypair, addresses: usize, label: &str) -> SignedRecord {
    let addrs = (0..addresses)
        .map(|i| {
            format!("/dns4/{label}{i}.example/tcp/4001")
                .parse()
                .unwrap()
        })
        .collect();
    SignedRecord::new(key, addrs, RecordFormat::Standard).expect("a signed record")
}

/// What a server answered, as the table compares it.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Registered(u64),
    /// The peers of a page, in order.
    Page(Vec<PeerId>),
    Refused(ErrorCode, String),
}

/// A raw peer connected to the server.
struct Peer {
    key: Keypair,
    node: Node<raw::Behaviour>,
    server: PeerId,
}

impl Peer {
    async fn connect(key: Keypair, serve: &Serve) -> Self {
        let swarm = support::tcp::swarm_with_key(key.clone(), |k| raw::Behaviour::new(k.clone()));
        let mut node = support::node::spawn_as_is(swarm);
        node.dial(serve.addr.clone());
        node.wait_connected(serve.peer).await;
        Self {
            key,
            node,
            server: serve.peer,
        }
    }

    /// Sends `requests` (encoded messages) on a new stream; the answer to the last.
    async fn ask(&mut self, requests: Vec<Vec<u8>>) -> Message {
        let server = self.server;
        self.node.run(move |s| s.behaviour_mut().open(server));
        let mut stream = self
            .node
            .take(|e| match e {
                raw::Event::Opened(_, stream) => Some(stream),
                raw::Event::Failed(_, error) => panic!("no stream: {error}"),
            })
            .await;
        for request in requests {
            raw::send_frame(&mut stream, &request).await;
        }
        tokio::time::timeout(HANG, raw::recv(&mut stream))
            .await
            .expect("answered before the hang guard")
            .expect("an answer")
    }

    async fn register_envelope(&mut self, ns: &str, envelope: &[u8], ttl: Option<u64>) -> Answer {
        let message = raw::register_message(ns.as_bytes(), envelope, ttl);
        match self.ask(vec![message]).await {
            Message::RegisterResponse(Ok(ttl)) => Answer::Registered(ttl),
            Message::RegisterResponse(Err(e)) => Answer::Refused(e.code, e.text),
            other => panic!("not a REGISTER_RESPONSE: {other:?}"),
        }
    }

    /// REGISTER of this peer's one-address record.
    async fn register(&mut self, ns: &str, ttl: Option<u64>) -> Answer {
        let envelope = record(&self.key, 1, "peer").envelope_bytes().to_vec();
        self.register_envelope(ns, &envelope, ttl).await
    }

    /// DISCOVER, after `before` (UNREGISTERs, say) on the same stream; the page's peers and
    /// its cookie.
    async fn discover(
        &mut self,
        before: Vec<Message>,
        ns: Option<&str>,
        cookie: Option<Cookie>,
        limit: Option<u64>,
    ) -> (Answer, Option<Cookie>) {
        let discover = Message::Discover {
            namespace: ns.map(|ns| Namespace::new(ns).unwrap()),
            cookie,
            limit,
        };
        let requests = before.iter().chain([&discover]).map(Message::encode);
        match self.ask(requests.collect()).await {
            Message::DiscoverResponse(Ok(page)) => {
                let peers = page.registrations.iter().map(|r| r.record.peer_id());
                (Answer::Page(peers.collect()), page.cookie)
            }
            Message::DiscoverResponse(Err(e)) => (Answer::Refused(e.code, e.text), None),
            other => panic!("not a DISCOVER_RESPONSE: {other:?}"),
        }
    }
}

/// The request and refusal series of `/metrics` (the store's own gauges differ by store), once
/// `answered` requests are counted.
async fn request_metrics(serve: &Serve, answered: f64) -> BTreeMap<String, f64> {
    let address = serve.metrics.expect("started with --metrics");
    let counted = |metrics: &BTreeMap<String, f64>| -> f64 {
        metrics
            .iter()
            .filter(|(name, _)| name.starts_with("libp2p_rendezvous_server_requests_total"))
            .map(|(_, value)| value)
            .sum()
    };
    let metrics = tokio::time::timeout(HANG, async {
        loop {
            let metrics = scrape(address).await;
            if counted(&metrics) >= answered {
                return metrics;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every answer is counted before the hang guard");
    metrics
        .into_iter()
        .filter(|(name, value)| {
            *value != 0.0
                && [
                    "requests_total",
                    "rejected_total",
                    "registrations_removed_total",
                ]
                .iter()
                .any(|series| name.starts_with(&format!("libp2p_rendezvous_server_{series}")))
        })
        .collect()
}

/// The limits table against one server: each step's answer, and the request metrics.
async fn limits_table(serve: &Serve) -> (Vec<(&'static str, Answer)>, BTreeMap<String, f64>) {
    let [a, b, c, d] = [0, 1, 2, 3].map(key).map(|k| Peer::connect(k, serve));
    let (mut a, mut b, mut c, mut d) = (a.await, b.await, c.await, d.await);
    let mut steps = vec![
        ("register", a.register("a", Some(50)).await),
        ("ttl below the minimum", a.register("a", Some(5)).await),
        ("ttl above the maximum", a.register("a", Some(500)).await),
        (
            "no ttl: the default, above the maximum",
            a.register("a", None).await,
        ),
    ];
    let three_addresses = record(&a.key, 3, "peer").envelope_bytes().to_vec();
    steps.push((
        "three addresses",
        a.register_envelope("a", &three_addresses, Some(50)).await,
    ));
    steps.push((
        "a record over the size cap",
        a.register_envelope("a", &[0; 1025], Some(50)).await,
    ));
    steps.push((
        "an envelope that does not decode",
        a.register_envelope("a", b"garbage", Some(50)).await,
    ));
    let of_b = record(&b.key, 1, "peer").envelope_bytes().to_vec();
    steps.push((
        "another peer's record",
        a.register_envelope("a", &of_b, Some(50)).await,
    ));
    steps.push(("a second namespace", a.register("b", Some(50)).await));
    steps.push((
        "a third, over the per-peer limit",
        a.register("c", Some(50)).await,
    ));
    steps.push(("a refresh", a.register("a", Some(60)).await));
    steps.push(("a second peer", b.register("a", Some(50)).await));
    steps.push(("a third peer", c.register("a", Some(50)).await));
    steps.push((
        "a fifth registration, over the total",
        d.register("a", Some(50)).await,
    ));
    let (first, cookie) = d.discover(vec![], Some("a"), None, Some(2)).await;
    steps.push(("a page of two", first));
    let (rest, _) = d.discover(vec![], Some("a"), cookie.clone(), None).await;
    steps.push(("the rest after its cookie", rest));
    let (other, _) = d.discover(vec![], Some("b"), cookie, None).await;
    steps.push(("a cookie of another namespace", other));
    let ahead = cookie::encode(cookie::MAX_SEQUENCE, None, None);
    let (ahead, _) = d.discover(vec![], None, Some(ahead), None).await;
    steps.push(("a cookie ahead of the counter", ahead));
    let leave_b = Message::Unregister {
        namespace: Namespace::new("b").unwrap(),
        peer: None,
    };
    let (after, _) = a.discover(vec![leave_b], Some("b"), None, None).await;
    steps.push(("unregistered", after));
    steps.push(("room again for the peer", a.register("c", Some(50)).await));
    let metrics = request_metrics(serve, 20.0).await;
    (steps, metrics)
}

/// The byte-budget table against one server (`--max-store-bytes` its least): a record with long
/// addresses is over the budget in every store's count.
async fn bytes_table(serve: &Serve) -> (Vec<(&'static str, Answer)>, BTreeMap<String, f64>) {
    let mut a = Peer::connect(key(0), serve).await;
    let label = "x".repeat(200);
    let large = record(&a.key, 2, &label).envelope_bytes().to_vec();
    let steps = vec![(
        "over the byte budget",
        a.register_envelope("a", &large, None).await,
    )];
    (steps, request_metrics(serve, 1.0).await)
}

fn refused(code: ErrorCode, text: &str) -> Answer {
    Answer::Refused(code, text.to_owned())
}

/// Checks the table's answers against what the rules say, to the statusText.
fn check_limits_answers(store: &str, steps: &[(&str, Answer)]) {
    let peer = |i| key(i).public().to_peer_id();
    let a = peer(0);
    let expected = vec![
        Answer::Registered(50),
        refused(ErrorCode::InvalidTtl, "ttl is 5 s; expected 10..=100 s"),
        refused(ErrorCode::InvalidTtl, "ttl is 500 s; expected 10..=100 s"),
        refused(ErrorCode::InvalidTtl, "ttl is 7200 s; expected 10..=100 s"),
        refused(
            ErrorCode::InvalidSignedPeerRecord,
            "signed peer record lists 3 addresses; this server accepts at most 2",
        ),
        refused(
            ErrorCode::InvalidSignedPeerRecord,
            "signed peer record is 1025 bytes; this server accepts at most 1024",
        ),
        // The decoder's own words: compared across stores below.
        steps[6].1.clone(),
        refused(
            ErrorCode::NotAuthorized,
            &format!(
                "the signed peer record is for peer {}; a peer can only register itself ({a})",
                peer(1)
            ),
        ),
        Answer::Registered(50),
        refused(
            ErrorCode::NotAuthorized,
            "peer already has 2 registrations, the most this server allows; unregister one first",
        ),
        Answer::Registered(60),
        Answer::Registered(50),
        Answer::Registered(50),
        refused(
            ErrorCode::Unavailable,
            "server is full (4 registrations); try later or another server",
        ),
        // A's refresh (before B and C registered) moved it behind its other namespace.
        Answer::Page(vec![a, peer(1)]),
        Answer::Page(vec![peer(2)]),
        steps[16].1.clone(),
        steps[17].1.clone(),
        Answer::Page(vec![]),
        Answer::Registered(50),
    ];
    assert_eq!(steps.len(), expected.len(), "{store}");
    for ((name, answer), expected) in steps.iter().zip(expected) {
        assert_eq!(answer, &expected, "{store}: {name}");
    }
    let refused_with = |i: usize, code| matches!(&steps[i].1, Answer::Refused(c, _) if *c == code);
    assert!(
        refused_with(6, ErrorCode::InvalidSignedPeerRecord),
        "{store}"
    );
    assert!(refused_with(16, ErrorCode::InvalidCookie), "{store}");
    assert!(refused_with(17, ErrorCode::InvalidCookie), "{store}");
}

/// The answers of `steps`, the numbers of their statusTexts left out: they count what a store
/// holds its own way (its counter, its bytes).
fn alike(steps: &[(&str, Answer)]) -> Vec<(String, Answer)> {
    steps
        .iter()
        .map(|(name, answer)| {
            let answer = match answer {
                Answer::Refused(code, text) => {
                    Answer::Refused(*code, text.replace(|c: char| c.is_ascii_digit(), ""))
                }
                other => other.clone(),
            };
            (name.to_string(), answer)
        })
        .collect()
}

/// One store's run of a table: its name, each step's answer, the metrics after.
type Run<M> = (&'static str, Vec<(&'static str, Answer)>, M);

/// Every store answered and counted as the first did.
fn assert_all_alike<M: PartialEq + std::fmt::Debug>(runs: &[Run<M>]) {
    let (first, first_steps, first_metrics) = &runs[0];
    for (store, steps, metrics) in &runs[1..] {
        assert_eq!(
            alike(steps),
            alike(first_steps),
            "{store} answers as {first} does"
        );
        assert_eq!(metrics, first_metrics, "{store} counts as {first} does");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_store_answers_the_table_alike() {
    let mut runs = Vec::new();
    for (store, backend) in Backend::all() {
        let serve = backend.serve(LIMITS);
        let (steps, metrics) = limits_table(&serve).await;
        check_limits_answers(store, &steps);
        runs.push((store, steps, metrics));
    }
    let (_, _, first_metrics) = &runs[0];
    let series =
        |limit: &str| format!("libp2p_rendezvous_server_rejected_total{{limit=\"{limit}\"}}");
    assert_eq!(
        first_metrics.get(&series("record")),
        Some(&2.0),
        "{first_metrics:?}"
    );
    assert_eq!(first_metrics.get(&series("per_peer")), Some(&1.0));
    assert_eq!(first_metrics.get(&series("total")), Some(&1.0));
    assert_all_alike(&runs);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_store_refuses_what_its_byte_budget_cannot_hold_alike() {
    let mut runs = Vec::new();
    for (store, backend) in Backend::all() {
        let serve = backend.serve(BYTE_LIMITS);
        let (steps, metrics) = bytes_table(&serve).await;
        let Answer::Refused(code, text) = &steps[0].1 else {
            panic!("{store}: {steps:?}");
        };
        assert_eq!(*code, ErrorCode::Unavailable, "{store}");
        assert!(
            text.starts_with("store byte budget exhausted"),
            "{store}: {text}"
        );
        let bytes = "libp2p_rendezvous_server_rejected_total{limit=\"bytes\"}";
        assert_eq!(metrics.get(bytes), Some(&1.0), "{store}: {metrics:?}");
        runs.push((store, steps, metrics));
    }
    assert_all_alike(&runs);
}
