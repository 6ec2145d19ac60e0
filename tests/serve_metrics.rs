//! `rendezvous serve --metrics`: a client registers, discovers, is refused once, unregisters
//! one registration and lets another expire; `/metrics` (scraped with a real HTTP client) moved
//! by exactly that, and `/health` says who and where the server is.

mod support;

use std::{collections::BTreeMap, net::SocketAddr, process::Command, time::Duration};

use futures::StreamExt;
use libp2p::{multiaddr::Protocol, swarm::SwarmEvent, Multiaddr, PeerId, Swarm};
use rendezvous_discovery::{client, ErrorCode, Namespace};
use support::{
    http::{get, scrape},
    WithIdentify, WithIdentifyEvent,
};

use support::serve::{Serve, BIN};

/// Hang guard for everything that waits on the server process.
const HANG: Duration = Duration::from_secs(30);

/// Starts `serve --ephemeral --metrics 127.0.0.1:0`; returns it, its metrics address and its
/// listen address (with `/p2p/`), read from stdout.
fn serve(extra: &[&str]) -> (Serve, SocketAddr, Multiaddr) {
    let flags = ["--ephemeral", "--metrics", "127.0.0.1:0"];
    let serve = Serve::start(flags.iter().chain(extra));
    let metrics = serve.metrics.expect("started with --metrics");
    let address = serve.addr.clone();
    (serve, metrics, address)
}

/// Our client next to identify (without it, a client that does not register automatically
/// would hold its first DISCOVER for the identify wait).
type Client = Swarm<WithIdentify<client::Behaviour>>;

/// Drives `swarm` until `f` picks an event of the client.
async fn next<T>(swarm: &mut Client, mut f: impl FnMut(&client::Event) -> Option<T>) -> T {
    tokio::time::timeout(HANG, async {
        loop {
            if let SwarmEvent::Behaviour(WithIdentifyEvent::Rendezvous(event)) =
                swarm.select_next_some().await
            {
                if let Some(t) = f(&event) {
                    return t;
                }
            }
        }
    })
    .await
    .expect("the event comes before the hang guard")
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_exactly_what_a_client_did_and_health_reports_the_server() {
    let (_serve, metrics, address) = serve(&["--min-ttl", "1"]);
    let Some(Protocol::P2p(server)) = address.iter().last() else {
        panic!("{address}")
    };
    let before = scrape(metrics).await;
    let p = "libp2p_rendezvous_server_";
    let requests = |s: &BTreeMap<String, f64>, t: &str, st: &str| {
        s[&format!("{p}requests_total{{type=\"{t}\",status=\"{st}\"}}")]
    };
    assert_eq!(requests(&before, "register", "ok"), 0.0);
    assert_eq!(before[&format!("{p}registrations")], 0.0);

    let config = client::Config::default()
        .with_server(server, vec![address.clone()])
        .with_registration(false)
        .with_discovery(false);
    let mut swarm: Client = support::tcp::swarm(|key| {
        WithIdentify::new(key.clone(), |key| client::Behaviour::new(key, config))
    });
    swarm.add_external_address("/ip4/127.0.0.1/tcp/4001".parse().unwrap());
    swarm.dial(address.clone()).unwrap();

    // Three registrations (one unregistered again, one left to expire after its 1 s TTL: the
    // one wait of a second in this test, as TTLs are whole seconds and the expiry must be the
    // server process's own), one refused (a TTL above the server's maximum), one discover.
    let ns = |s: &'static str| Namespace::from_static(s);
    for (namespace, ttl) in [("kept", None), ("gone", None), ("brief", Some(1))] {
        swarm
            .behaviour_mut()
            .rendezvous
            .register(server, ns(namespace), ttl);
        next(&mut swarm, |e| {
            matches!(e, client::Event::Registered { .. }).then_some(())
        })
        .await;
    }
    swarm.behaviour_mut().rendezvous.register(
        server,
        ns("refused"),
        Some(rendezvous_discovery::MAX_TTL + 1),
    );
    let code = next(&mut swarm, |e| match e {
        client::Event::RegisterFailed {
            error: client::RequestError::Remote(e),
            ..
        } => Some(e.code),
        _ => None,
    })
    .await;
    assert_eq!(code, ErrorCode::InvalidTtl);
    swarm
        .behaviour_mut()
        .rendezvous
        .discover(server, Some(ns("kept")), None, None);
    let page = next(&mut swarm, |e| match e {
        client::Event::DiscoverCompleted { registrations, .. } => Some(registrations.len()),
        _ => None,
    })
    .await;
    assert_eq!(page, 1);
    // UNREGISTER has no answer; scrape until the server counted it (hang guard only).
    swarm
        .behaviour_mut()
        .rendezvous
        .unregister(server, ns("gone"));
    let removed = format!("{p}registrations_removed_total{{cause=\"unregister\"}}");
    let expired = format!("{p}registrations_removed_total{{cause=\"expired\"}}");
    let after = support::drive_until(&mut swarm, async {
        loop {
            let s = scrape(metrics).await;
            if s[&removed] == 1.0 && s.get(&expired) == Some(&1.0) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let moved = |s: &str| after[s] - before.get(s).copied().unwrap_or(0.0);
    assert_eq!(requests(&after, "register", "ok"), 3.0);
    assert_eq!(requests(&after, "register", "e_invalid_ttl"), 1.0);
    assert_eq!(requests(&after, "discover", "ok"), 1.0);
    let all_requests: f64 = after
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{p}requests_total")))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(all_requests, 5.0, "nothing else was counted");
    assert_eq!(
        moved(&format!(
            "{p}request_duration_seconds_count{{type=\"register\"}}"
        )),
        4.0
    );
    assert_eq!(
        moved(&format!(
            "{p}request_duration_seconds_count{{type=\"discover\"}}"
        )),
        1.0
    );
    assert_eq!(moved(&format!("{p}discover_page_size_count")), 1.0);
    assert_eq!(moved(&format!("{p}discover_page_size_sum")), 1.0);
    assert_eq!(
        moved(&format!(
            "{p}registrations_removed_total{{cause=\"expired\"}}"
        )),
        1.0
    );
    assert_eq!(after[&format!("{p}registrations")], 1.0);
    assert_eq!(after[&format!("{p}namespaces")], 1.0);
    // A local store is always available (tests/fleet.rs covers a Redis that goes away).
    assert_eq!(after[&format!("{p}store_available")], 1.0);
    let rejected: f64 = after
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{p}rejected_total")))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(rejected, 0.0, "a bad TTL is no limit");
    // No subscriber, so no push: the histogram is there, empty.
    assert_eq!(after[&format!("{p}push_delay_seconds_count")], 0.0);
    assert_eq!(
        after[&format!("{p}push_delay_seconds_bucket{{le=\"+Inf\"}}")],
        0.0
    );
    // libp2p-metrics' swarm metrics are in the same registry.
    assert!(
        after
            .keys()
            .any(|k| k.starts_with("libp2p_swarm_connections_established_total")),
        "swarm metrics beside ours"
    );

    let (status, content_type, body) = get(metrics, "/health").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/json");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["peer_id"], server.to_string());
    assert_eq!(health["registrations"], 1);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["store_available"], true);
    assert_eq!(
        health["listen_addresses"],
        serde_json::json!([address.to_string()])
    );
    assert!(health["uptime_seconds"].is_u64(), "{health}");

    let (status, _, _) = get(metrics, "/nowhere").await;
    assert_eq!(status, 404);
    let _: PeerId = server;
}

#[test]
fn a_metrics_address_in_use_is_one_line_and_exit_status_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = Command::new(BIN)
        .args(["serve", "--ephemeral", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .args(["--metrics", &address])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let stderr = support::one_line_error(&output, "--metrics on a taken port");
    assert!(stderr.contains("--metrics"), "{stderr}");
    let output = Command::new(BIN)
        .args(["serve", "--ephemeral", "--metrics", "nine-thousand"])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    let stderr = support::one_line_error(&output, "--metrics nine-thousand");
    assert!(stderr.contains("127.0.0.1:9090"), "{stderr}");
}

/// How often a test scrapes again while it waits for the server to handle a connection event.
const SCRAPE_AGAIN: Duration = Duration::from_millis(20);

/// Scrapes `metrics` until `libp2p_rendezvous_server_connections` has `want` open on each
/// transport (every other transport at 0).
async fn wait_for_connections(metrics: SocketAddr, want: &[(&str, f64)]) {
    let series = |t: &str| format!("libp2p_rendezvous_server_connections{{transport=\"{t}\"}}");
    let mut last = BTreeMap::new();
    let reached = tokio::time::timeout(HANG, async {
        loop {
            let scraped = scrape(metrics).await;
            last = ["tcp", "quic", "ws", "wss", "webrtc-direct", "other"]
                .into_iter()
                .map(|t| (t, scraped.get(&series(t)).copied()))
                .collect::<BTreeMap<_, _>>();
            let expected = |t: &str| want.iter().find(|(w, _)| *w == t).map_or(0.0, |(_, n)| *n);
            if last.iter().all(|(t, n)| *n == Some(expected(t))) {
                return;
            }
            tokio::time::sleep(SCRAPE_AGAIN).await;
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "connections by transport: want {want:?}, last scraped {last:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_are_counted_by_transport_while_they_are_open() {
    use libp2p::swarm::dummy;

    for (listen, transport) in [
        ("/ip4/127.0.0.1/tcp/0", "tcp"),
        ("/ip4/127.0.0.1/tcp/0/ws", "ws"),
    ] {
        let serve = Serve::start_on(listen, ["--ephemeral", "--metrics", "127.0.0.1:0"]);
        let metrics = serve.metrics.expect("started with --metrics");
        wait_for_connections(metrics, &[]).await;
        let mut clients = Vec::new();
        for _ in 0..2 {
            let mut client = support::tcp::swarm(|_| dummy::Behaviour);
            client.dial(serve.addr.clone()).unwrap();
            tokio::time::timeout(HANG, async {
                loop {
                    if let SwarmEvent::ConnectionEstablished { .. } =
                        client.select_next_some().await
                    {
                        return;
                    }
                }
            })
            .await
            .expect("connected");
            clients.push(client);
        }
        wait_for_connections(metrics, &[(transport, 2.0)]).await;
        drop(clients.pop());
        wait_for_connections(metrics, &[(transport, 1.0)]).await;
    }
}
