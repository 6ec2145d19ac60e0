//! A fleet of `rendezvous serve --store redis://...` processes on one `redis-server` that each
//! test starts itself (free loopback port, temporary directory). Needs the `redis` feature and
//! `redis-server` on the PATH: `cargo test --features redis --test fleet`.
#![cfg(feature = "redis")]

mod support;

use std::collections::{HashMap, HashSet};

use libp2p::PeerId;
use rendezvous_discovery::{client, client::RequestError, ErrorCode, Namespace};
use support::{
    fleet::{client, client_with, discover, discover_all, register, serve, unregister, Redis},
    HANG,
};

const TTL: u64 = 3600;

fn refused(result: Result<impl std::fmt::Debug, RequestError>, code: ErrorCode) -> String {
    match result {
        Err(RequestError::Remote(error)) if error.code == code => error.text,
        other => panic!("expected {code}, got {other:?}"),
    }
}

#[tokio::test]
async fn registered_on_one_instance_discovered_on_the_other_refreshed_in_place_and_unregistered() {
    let redis = Redis::start();
    let (a, b) = (serve(&redis, &[]), serve(&redis, &[]));
    let mut peer = client(&[&a, &b]);
    let mut reader = client(&[&a, &b]);

    assert_eq!(register(&mut peer, a.peer, "chat", TTL).await, Ok(TTL));
    let found = discover_all(&mut reader, b.peer, Some("chat")).await;
    assert_eq!(found, vec![(peer.peer, Namespace::from_static("chat"))]);

    // A refresh through B replaces the registration: still one, with the new TTL.
    assert_eq!(
        register(&mut peer, b.peer, "chat", 2 * TTL).await,
        Ok(2 * TTL)
    );
    let (page, _) = discover(&mut reader, a.peer, Some("chat"), None, None)
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert!(page[0].ttl > TTL, "the refreshed TTL: {}", page[0].ttl);

    unregister(&mut peer, a.peer, "chat").await;
    // UNREGISTER has no answer: a DISCOVER on the same connection comes after it.
    let _ = discover(&mut peer, a.peer, Some("chat"), None, None).await;
    assert!(discover_all(&mut reader, b.peer, Some("chat"))
        .await
        .is_empty());
}

#[tokio::test]
async fn a_cookie_from_one_instance_pages_on_the_other_exactly_once() {
    let redis = Redis::start();
    let (a, b) = (serve(&redis, &[]), serve(&redis, &[]));
    let mut peers = Vec::new();
    for i in 0..12 {
        let mut peer = client(&[&a, &b]);
        let server = if i % 2 == 0 { a.peer } else { b.peer };
        register(&mut peer, server, "page", TTL).await.unwrap();
        peers.push(peer);
    }
    let mut reader = client(&[&a, &b]);
    let mut cookie = None;
    let mut seen = Vec::new();
    // Pages of 5, alternating A and B, each continuing the other's cookie.
    for round in 0.. {
        let server = if round % 2 == 0 { a.peer } else { b.peer };
        let (page, next) = discover(&mut reader, server, Some("page"), cookie, Some(5))
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 5);
        seen.extend(page.iter().map(|r| r.record.peer_id()));
        cookie = next;
    }
    let expected: Vec<PeerId> = peers.iter().map(|p| p.peer).collect();
    assert_eq!(seen, expected, "every registration once, in REGISTER order");
}

#[tokio::test]
async fn limits_hold_across_instances() {
    let redis = Redis::start();
    let limits = [
        "--max-registrations-per-peer",
        "2",
        "--max-registrations",
        "3",
    ];
    let (a, b) = (serve(&redis, &limits), serve(&redis, &limits));
    let mut first = client(&[&a, &b]);
    register(&mut first, a.peer, "one", TTL).await.unwrap();
    register(&mut first, b.peer, "two", TTL).await.unwrap();
    let text = refused(
        register(&mut first, a.peer, "three", TTL).await,
        ErrorCode::NotAuthorized,
    );
    assert!(text.contains("2 registrations"), "{text}");
    // A refresh is not a new registration.
    register(&mut first, a.peer, "two", TTL).await.unwrap();

    let mut second = client(&[&a, &b]);
    register(&mut second, b.peer, "one", TTL).await.unwrap();
    let text = refused(
        register(&mut second, a.peer, "two", TTL).await,
        ErrorCode::Unavailable,
    );
    assert!(text.contains("full"), "{text}");
    // A TTL out of range is refused before it reaches Redis.
    refused(
        register(&mut second, a.peer, "one", 10 * 24 * 3600).await,
        ErrorCode::InvalidTtl,
    );
    assert_eq!(discover_all(&mut second, b.peer, None).await.len(), 3);
}

#[tokio::test]
async fn a_reader_paging_across_instances_while_both_take_writes_sees_each_once() {
    let redis = Redis::start();
    let many = ["--max-registrations-per-peer", "1000"];
    let (a, b) = (serve(&redis, &many), serve(&redis, &many));
    const EACH: usize = 40;
    let mut writers = Vec::new();
    for server in [a.peer, b.peer] {
        let mut writer = client(&[&a, &b]);
        writers.push(tokio::spawn(async move {
            for i in 0..EACH {
                register(&mut writer, server, &format!("ns-{i}"), TTL)
                    .await
                    .unwrap();
            }
            writer
        }));
    }
    let mut reader = client(&[&a, &b]);
    let mut cookie = None;
    let mut seen = Vec::new();
    let mut round = 0;
    let mut writing = true;
    // Page (limit 3) while the writers write, alternating servers; after they are done, page
    // until an empty page.
    loop {
        let server = if round % 2 == 0 { a.peer } else { b.peer };
        round += 1;
        let (page, next) = discover(&mut reader, server, None, cookie, Some(3))
            .await
            .unwrap();
        seen.extend(
            page.iter()
                .map(|r| (r.record.peer_id(), r.namespace.clone())),
        );
        cookie = next;
        if writing && writers.iter().all(|w| w.is_finished()) {
            writing = false;
            continue;
        }
        if !writing && page.is_empty() {
            break;
        }
    }
    let mut writer_peers = Vec::new();
    for writer in writers {
        writer_peers.push(writer.await.unwrap().peer);
    }
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no registration twice");
    assert_eq!(seen.len(), 2 * EACH, "no registration missed");
    // Each writer's registrations come in the order it made them.
    let mut per_writer: HashMap<PeerId, Vec<String>> = HashMap::new();
    for (peer, ns) in &seen {
        per_writer
            .entry(*peer)
            .or_default()
            .push(ns.as_str().to_owned());
    }
    for peer in writer_peers {
        let expected: Vec<String> = (0..EACH).map(|i| format!("ns-{i}")).collect();
        assert_eq!(per_writer[&peer], expected);
    }
}

#[tokio::test]
async fn redis_down_answers_unavailable_then_the_fleet_recovers_by_itself() {
    let mut redis = Redis::start();
    let a = serve(&redis, &["--metrics", "127.0.0.1:0"]);
    let metrics = a.metrics.expect("started with --metrics");
    let mut peer = client(&[&a]);
    register(&mut peer, a.peer, "chat", TTL).await.unwrap();
    assert_eq!(store_state(metrics).await, (200, 1.0));

    redis.stop();
    let text = refused(
        discover(&mut peer, a.peer, Some("chat"), None, None).await,
        ErrorCode::Unavailable,
    );
    assert!(text.contains("Redis"), "{text}");
    let text = refused(
        register(&mut peer, a.peer, "chat", TTL).await,
        ErrorCode::Unavailable,
    );
    assert!(text.contains("Redis"), "{text}");
    // The operator sees it: the gauge is 0 and /health answers 503 (a load balancer's check
    // fails) for as long as Redis is away.
    assert_eq!(store_state(metrics).await, (503, 0.0));

    // Back up (empty: this test's Redis keeps nothing): the same connection works again once
    // the server has reconnected by itself.
    redis.restart();
    let start = std::time::Instant::now();
    loop {
        match register(&mut peer, a.peer, "chat", TTL).await {
            Ok(_) => break,
            Err(RequestError::Remote(e)) if e.code == ErrorCode::Unavailable => {
                assert!(start.elapsed() < HANG, "never reconnected: {e}");
            }
            Err(other) => panic!("{other}"),
        }
    }
    let found = discover_all(&mut peer, a.peer, Some("chat")).await;
    assert_eq!(found, vec![(peer.peer, Namespace::from_static("chat"))]);
    assert_eq!(store_state(metrics).await, (200, 1.0));
}

/// `/health`'s HTTP status and the `store_available` gauge of a `serve --metrics`; the two must
/// agree with `/health`'s JSON. The fleet's registrations are in Redis, which an instance
/// cannot count at once: it reports no count (no gauge, `null`), never a false 0.
async fn store_state(metrics: std::net::SocketAddr) -> (u16, f64) {
    let (status, _, body) = support::http::get(metrics, "/health").await;
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["store_available"], status == 200, "{health}");
    assert!(health["registrations"].is_null(), "{health}");
    let scraped = support::http::scrape(metrics).await;
    for absent in ["registrations", "namespaces"] {
        let gauge = format!("libp2p_rendezvous_server_{absent}");
        assert!(!scraped.contains_key(&gauge), "{gauge} in {scraped:?}");
    }
    (status, scraped["libp2p_rendezvous_server_store_available"])
}

#[tokio::test]
async fn a_killed_instance_leaves_its_registrations_discoverable_and_a_closed_connection_removes_them(
) {
    let redis = Redis::start();
    let (a, b) = (serve(&redis, &[]), serve(&redis, &[]));
    let mut stays = client(&[&a]);
    register(&mut stays, a.peer, "chat", TTL).await.unwrap();
    let mut leaves = client(&[&b]);
    register(&mut leaves, b.peer, "chat", TTL).await.unwrap();
    let mut reader = client(&[&b]);
    assert_eq!(
        discover_all(&mut reader, b.peer, Some("chat")).await.len(),
        2
    );

    // The peer's last connection to B (which holds its registration) closes: B removes it.
    leaves.kill().await;
    let start = std::time::Instant::now();
    while discover_all(&mut reader, b.peer, Some("chat")).await.len() != 1 {
        assert!(
            start.elapsed() < HANG,
            "the closed peer's registration stayed"
        );
    }

    // A dies without a word: what it held stays until its TTL.
    a.kill();
    let found = discover_all(&mut reader, b.peer, Some("chat")).await;
    assert_eq!(found, vec![(stays.peer, Namespace::from_static("chat"))]);
}

#[tokio::test]
async fn expired_registrations_are_gone_by_redis_time() {
    let redis = Redis::start();
    let a = serve(&redis, &[]);
    let mut peer = client(&[&a]);
    register(&mut peer, a.peer, "short", 1).await.unwrap();
    register(&mut peer, a.peer, "long", TTL).await.unwrap();
    // Polled until the 1 s TTL has run out by Redis's clock (DISCOVER skips it from then on, and
    // a reap removes it).
    let start = std::time::Instant::now();
    while discover_all(&mut peer, a.peer, None).await.len() != 1 {
        assert!(start.elapsed() < HANG, "the 1 s registration never expired");
    }
    let found = discover_all(&mut peer, a.peer, None).await;
    assert_eq!(found, vec![(peer.peer, Namespace::from_static("long"))]);
}

#[tokio::test]
async fn our_client_with_two_instances_keeps_discovering_when_one_dies() {
    let redis = Redis::start();
    let (a, b) = (serve(&redis, &[]), serve(&redis, &[]));
    let chat = Namespace::from_static("chat");
    let mut watcher = client_with(&[&a, &b], |config| {
        config
            .with_registration(false)
            .with_namespace(chat.clone())
            .with_test_interval(std::time::Duration::from_millis(50))
    });
    let mut first = client(&[&a]);
    register(&mut first, a.peer, "chat", TTL).await.unwrap();
    let discovered = |peer: PeerId| {
        move |event: &client::Event| match event {
            client::Event::Discovered { peer: found, .. } if *found == peer => Some(()),
            _ => None,
        }
    };
    watcher.wait_for(discovered(first.peer)).await;

    a.kill();
    let mut second = client(&[&b]);
    register(&mut second, b.peer, "chat", TTL).await.unwrap();
    watcher.wait_for(discovered(second.peer)).await;
}

#[tokio::test]
async fn a_rust_libp2p_reader_gets_only_legacy_records_from_the_fleet() {
    use libp2p::rendezvous;

    let redis = Redis::start();
    let legacy_only = ["--unknown-peer-formats", "legacy"];
    let (a, b) = (serve(&redis, &legacy_only), serve(&redis, &legacy_only));
    let mut standard = client(&[&a]);
    register(&mut standard, a.peer, "chat", TTL).await.unwrap();
    let mut legacy = client_with(&[&a], |config| {
        config
            .with_registration(false)
            .with_discovery(false)
            .with_record_format(rendezvous_discovery::RecordFormat::Legacy)
    });
    register(&mut legacy, a.peer, "chat", TTL).await.unwrap();

    // rust-libp2p's client (no identify: the server cannot learn more) fails a whole page that
    // holds one standard record; through B it gets the legacy one only.
    let mut reader = support::tcp::swarm(|key| rendezvous::client::Behaviour::new(key.clone()));
    let found = support::tcp::discovered_by(&mut reader, b.addr.clone(), "chat", false).await;
    assert_eq!(found, vec![legacy.peer]);
}

#[test]
fn a_store_url_that_is_not_redis_is_refused_with_one_line_and_status_2() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_rendezvous"))
        .args(["serve", "--store", "postgres://localhost/x"])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let stderr = support::one_line_error(&output, "--store postgres://");
    assert!(stderr.contains("redis://HOST:PORT/DB"), "{stderr}");
}

/// Push through the fleet (docs/push.md): a subscriber on B hears of a REGISTER and an
/// UNREGISTER made through A, each registration with a cookie that pages on either instance.
#[tokio::test]
async fn a_registration_through_one_instance_is_pushed_to_a_subscriber_on_the_other() {
    use rendezvous_discovery::{
        codec::{write_frame, Push, Subscribe},
        PUSH_PROTOCOL,
    };
    use support::{node, raw};

    let redis = Redis::start();
    let metrics = ["--metrics", "127.0.0.1:0"];
    let (a, b) = (serve(&redis, &metrics), serve(&redis, &metrics));
    // Both instances listen to the change feed (an instance that subscribes to it later ends
    // the push subscriptions it has, which would end ours before the test starts).
    feed_listeners(&redis, 2).await;
    let swarm =
        support::tcp::swarm(|key| raw::Behaviour::new(key.clone()).with_protocol(PUSH_PROTOCOL));
    let mut subscriber = node::spawn_as_is(swarm);
    subscriber.dial(b.addr.clone());
    subscriber.wait_connected(b.peer).await;
    let server = b.peer;
    subscriber.run(move |swarm| swarm.behaviour_mut().open(server));
    let mut stream = subscriber
        .take(|event| match event {
            raw::Event::Opened(_, stream) => Some(stream),
            raw::Event::Failed(_, error) => panic!("no push stream: {error}"),
        })
        .await;
    let subscribe = Subscribe {
        namespace: Some(Namespace::from_static("chat")),
        cookie: None,
        limit: None,
    };
    write_frame(&mut stream, &subscribe.encode(), usize::MAX)
        .await
        .unwrap();
    // The replay (nothing yet).
    let Push::Page(Ok(replay)) = next_push(&mut stream).await else {
        panic!("expected the replay page");
    };
    assert!(replay.registrations.is_empty());

    let mut peer = client(&[&a, &b]);
    assert_eq!(register(&mut peer, a.peer, "chat", TTL).await, Ok(TTL));
    let Push::Page(Ok(page)) = next_push(&mut stream).await else {
        panic!("expected a pushed page");
    };
    let found: Vec<PeerId> = page
        .registrations
        .iter()
        .map(|r| r.record.peer_id())
        .collect();
    assert_eq!(found, vec![peer.peer]);
    // Its cookie pages on A: nothing after it.
    let (after, _) = discover(&mut peer, a.peer, Some("chat"), page.cookie, None)
        .await
        .unwrap();
    assert!(after.is_empty());

    unregister(&mut peer, a.peer, "chat").await;
    match next_push(&mut stream).await {
        Push::Removed {
            peer: p,
            namespaces,
        } => {
            assert_eq!(
                (p, namespaces),
                (peer.peer, vec![Namespace::from_static("chat")])
            );
        }
        other => panic!("expected the removal, got {other:?}"),
    }

    // B counted the two pushes it wrote (not the replay) by how long each waited from the
    // moment B heard of its change; A, which pushed nothing, none.
    let count = "libp2p_rendezvous_server_push_delay_seconds_count";
    let at_b = tokio::time::timeout(HANG, async {
        loop {
            let scraped = support::http::scrape(b.metrics.unwrap()).await;
            if scraped[count] >= 2.0 {
                return scraped;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("B counts its pushes once written");
    assert_eq!(at_b[count], 2.0);
    assert_eq!(
        at_b["libp2p_rendezvous_server_push_delay_seconds_bucket{le=\"+Inf\"}"],
        2.0
    );
    let at_a = support::http::scrape(a.metrics.unwrap()).await;
    assert_eq!(at_a[count], 0.0);
}

/// The next message on a push stream.
async fn next_push(stream: &mut libp2p::Stream) -> rendezvous_discovery::codec::Push {
    use rendezvous_discovery::codec::{read_frame, Push};
    let body = tokio::time::timeout(HANG, read_frame(stream, 1 << 20))
        .await
        .expect("a push before the hang guard")
        .unwrap()
        .expect("the stream stays open");
    Push::decode(&body).unwrap()
}

/// Waits until `n` instances listen to the fleet's change feed.
async fn feed_listeners(redis: &Redis, n: usize) {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    tokio::time::timeout(HANG, async {
        loop {
            let (_, listening): (String, usize) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg("rdv:changes")
                .query_async(&mut connection)
                .await
                .unwrap();
            if listening >= n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the instances listen to the change feed");
}
