//! Interop with js-libp2p (`@canvas-js/libp2p-rendezvous` 0.5 on js-libp2p 2) and py-libp2p 0.8,
//! both ways, over 127.0.0.1 TCP and WebSocket: their clients on `rendezvous serve` (the binary,
//! default flags) and our client on their servers; js-libp2p in a page in headless Chromium;
//! `/wss` through the nginx snippet of `docs/browsers.md`. Each direction checks what the peer received: the
//! peer ids and the addresses in the records, page by page with cookies, and that an
//! unregistered peer is gone.
//!
//! Ignored by default: the peers are `interop/js/peer.mjs`, `interop/js/browser.mjs` and
//! `interop/py/peer.py`, whose packages `interop/run` installs (pinned; chromium and nginx from
//! apt) before it runs these tests with `--ignored`.
//! rust-libp2p 0.18 is covered by `interop_our_client.rs` and `interop_their_client.rs`.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use libp2p::{Multiaddr, PeerId};
use rendezvous_discovery::{client, Cookie, Namespace, RecordFormat};
use serde_json::{json, Value};
use support::{
    client::{registered_at, ClientNode},
    foreign::{peers, without_p2p, Impl, Peer, Serve},
    node::spawn_with_identify_on_tcp,
    WithIdentify, HANG,
};

const NS: &str = "interop";

/// How often a test asks again while it waits for an UNREGISTER (which has no answer) to take
/// effect on another stream.
const POLL: Duration = Duration::from_millis(50);

/// Pages a test follows before it calls the paging endless: each test registers a handful of
/// peers.
const MAX_PAGES: usize = 20;

/// Peers and their addresses (without `/p2p/`), for comparing what was registered with what
/// was received.
type Seen = BTreeMap<PeerId, BTreeSet<Multiaddr>>;

fn seen(list: impl IntoIterator<Item = (PeerId, Vec<Multiaddr>)>) -> Seen {
    let mut seen = Seen::new();
    for (peer, addrs) in list {
        let previous = seen.insert(peer, addrs.iter().map(without_p2p).collect());
        assert!(previous.is_none(), "{peer} is listed twice");
    }
    seen
}

/// What a peer registers: its id and its listen addresses.
fn entry(peer: PeerId, addrs: &[Multiaddr]) -> (PeerId, Vec<Multiaddr>) {
    (peer, addrs.to_vec())
}

/// Our client on TCP next to identify, knowing `server` at `addr`; it registers in [`NS`] in
/// `format` when `register`, else it only asks (the manual API; no discovery loop).
async fn our_client(
    server: PeerId,
    addr: Multiaddr,
    register: bool,
    format: RecordFormat,
) -> ClientNode {
    let mut config = client::Config::default()
        .with_server(server, vec![addr])
        .with_record_format(format)
        .with_registration(register)
        .with_discovery(false)
        .with_learned_servers(false);
    if register {
        config = config.with_namespace(Namespace::from_static(NS));
    }
    let mut node = spawn_with_identify_on_tcp(support::tcp::swarm(|key| {
        WithIdentify::new(key.clone(), |key| client::Behaviour::new(key, config))
    }))
    .await;
    if register {
        assert_eq!(node.wait_for(registered_at).await, server);
    }
    node
}

/// One DISCOVER of our client in [`NS`]: the page's peers (without our own), its cookie, and
/// how many registrations it held (our own included).
async fn our_page(
    node: &mut ClientNode,
    server: PeerId,
    cookie: Option<Cookie>,
    limit: Option<u64>,
) -> (Vec<(PeerId, Vec<Multiaddr>)>, Option<Cookie>, usize) {
    let me = node.peer;
    let ns = Namespace::from_static(NS);
    let request = node
        .ask(move |swarm| {
            swarm
                .behaviour_mut()
                .rendezvous
                .discover(server, Some(ns), cookie, limit)
        })
        .await;
    node.take(|e| match e {
        client::Event::DiscoverCompleted {
            request: r,
            registrations,
            skipped,
            cookie,
            ..
        } if r == request => {
            assert_eq!(skipped, 0, "records our client could not read");
            let held = registrations.len();
            let page = registrations
                .into_iter()
                .map(|r| {
                    assert_eq!(r.namespace.as_str(), NS);
                    (r.record.peer_id(), r.record.addresses().to_vec())
                })
                .filter(|(peer, _)| *peer != me)
                .collect();
            Some((page, cookie, held))
        }
        client::Event::DiscoverFailed {
            request: r, error, ..
        } if r == request => panic!("our DISCOVER failed: {error}"),
        _ => None,
    })
    .await
}

/// Our client's pages of `limit` from the start until an empty or short page: every peer
/// seen, each exactly once.
async fn our_pages(node: &mut ClientNode, server: PeerId, limit: u64) -> (Seen, Option<Cookie>) {
    let mut all = Vec::new();
    let mut cookie = None;
    for _ in 0..MAX_PAGES {
        let (page, next, held) = our_page(node, server, cookie.clone(), Some(limit)).await;
        all.extend(page);
        // A short page is the last; so is a page without a cookie (py-libp2p's server ends
        // paging so).
        let next = next.filter(|c| !c.as_bytes().is_empty());
        if (held as u64) < limit || next.is_none() {
            return (seen(all), next.or(cookie));
        }
        cookie = next;
    }
    panic!("our client paged {MAX_PAGES} times without reaching the end");
}

/// A foreign client's pages of one registration (`page` in js, `discover` in py) from the
/// start until an empty page: every peer seen (each once) and the last cookie (hex).
async fn their_pages(peer: &mut Peer, op: &str, server: &Multiaddr) -> (Seen, String) {
    let mut all = Vec::new();
    let mut cookie = String::new();
    for _ in 0..MAX_PAGES {
        let answer = peer
            .call(
                op,
                json!({"server": server.to_string(), "ns": NS, "limit": 1, "cookie": cookie}),
            )
            .await;
        let page = peers(&answer);
        assert!(page.len() <= 1, "a page of {} for a limit of 1", page.len());
        let next = answer["cookie"].as_str().unwrap_or_default().to_owned();
        if page.is_empty() {
            return (seen(all), cookie);
        }
        all.extend(page);
        if next.is_empty() {
            // A server that ends paging by sending no cookie (py-libp2p's).
            return (seen(all), cookie);
        }
        cookie = next;
    }
    panic!("{op} paged {MAX_PAGES} times without reaching the end");
}

/// Asks `op` of `peer` (their client's discover) until `gone` is not in the answer: an
/// UNREGISTER has no answer, so its effect is seen on a later stream.
async fn wait_until_gone(peer: &mut Peer, op: &str, fields: Value, gone: PeerId) -> Seen {
    tokio::time::timeout(HANG, async {
        loop {
            let now = seen(peers(&peer.call(op, fields.clone()).await));
            if !now.contains_key(&gone) {
                return now;
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{gone} is still listed after it unregistered"))
}

fn ns_at(server: &Multiaddr) -> Value {
    json!({"server": server.to_string(), "ns": NS})
}

#[tokio::test]
#[ignore = "needs the js and py peers that interop/run installs"]
async fn js_clients_register_page_with_cookies_and_unregister_on_our_server() {
    their_clients_on_our_server(Impl::Js, TCP, &[]).await;
}

/// The same with js peers that speak WebSocket only (as browsers do), on a server that listens
/// on WebSocket only.
#[tokio::test]
#[ignore = "needs the js and py peers that interop/run installs"]
async fn js_clients_over_websocket_only_register_page_and_unregister_on_our_server() {
    their_clients_on_our_server(Impl::Js, "/ip4/127.0.0.1/tcp/0/ws", &["--transport", "ws"]).await;
}

/// A free 127.0.0.1 TCP port.
const TCP: &str = "/ip4/127.0.0.1/tcp/0";

/// Their clients (`kind`, started with `flags`) on `serve` listening on `listen`: register,
/// discover every record (js: also through their client's own discover), page with our cookies
/// (js: through their wire codec; py: their discover, PeerInfo records), get only what is new
/// after a cookie, unregister; our client reads their records.
async fn their_clients_on_our_server(kind: Impl, listen: &str, flags: &[&str]) {
    let serve = Serve::start_on(listen, &[]).await;
    let at = ns_at(&serve.addr);

    let mut c1 = Peer::start(kind, flags).await;
    let registered = c1.call("register", at.clone()).await;
    assert_eq!(registered["ttl"], rendezvous_discovery::DEFAULT_TTL);
    let mut ours = our_client(serve.peer, serve.addr.clone(), true, RecordFormat::Standard).await;
    let expected = seen([entry(c1.peer, &c1.addrs), entry(ours.peer, &[ours.addr()])]);

    let mut c2 = Peer::start(kind, flags).await;
    let page = match kind {
        Impl::Js => {
            // Their client's discover: both records, as each peer signed them.
            let found = c2.call("discover", at.clone()).await;
            assert_eq!(seen(peers(&found)), expected);
            "page"
        }
        _ => "discover",
    };
    // Page by page, one registration at a time, with our cookies.
    let (paged, cookie) = their_pages(&mut c2, page, &serve.addr).await;
    assert_eq!(paged, expected);
    let mut c3 = Peer::start(kind, flags).await;
    c3.call("register", at.clone()).await;
    let after = c2
        .call(
            page,
            json!({"server": serve.addr.to_string(), "ns": NS, "limit": 10, "cookie": cookie}),
        )
        .await;
    assert_eq!(
        seen(peers(&after)),
        seen([entry(c3.peer, &c3.addrs)]),
        "the cookie brings only what is new"
    );

    // Our client reads their records (py's: unsigned).
    let (ours_saw, _) = our_pages(&mut ours, serve.peer, 1).await;
    assert_eq!(
        ours_saw,
        seen([entry(c1.peer, &c1.addrs), entry(c3.peer, &c3.addrs)])
    );

    c1.call("unregister", at.clone()).await;
    let left = wait_until_gone(&mut c2, "discover", at, c1.peer).await;
    assert_eq!(
        left,
        seen([entry(c3.peer, &c3.addrs), entry(ours.peer, &[ours.addr()])])
    );
}

#[tokio::test]
#[ignore = "needs the js and py peers that interop/run installs"]
async fn js_peers_are_sent_only_the_standard_records_their_client_reads() {
    // With identify, the server knows a js-libp2p peer by its agent; without it, only a server
    // told to send unknown peers standard records serves it right when legacy records exist.
    for (flags, discoverer) in [
        (&[][..], &["--no-listen"][..]),
        (
            &["--unknown-peer-formats", "standard"][..],
            &["--no-listen", "--no-identify"][..],
        ),
    ] {
        let serve = Serve::start(flags).await;
        let at = ns_at(&serve.addr);
        // One registrant of each record format: standard (js, ours), legacy (as rust-libp2p
        // 0.18 signs it) and unsigned PeerInfo (py). Their client fails a whole page on a
        // legacy record and cannot read a PeerInfo: it must be sent neither.
        let mut js1 = Peer::start(Impl::Js, &[]).await;
        js1.call("register", at.clone()).await;
        let ours = our_client(serve.peer, serve.addr.clone(), true, RecordFormat::Standard).await;
        let legacy = our_client(serve.peer, serve.addr.clone(), true, RecordFormat::Legacy).await;
        let mut py = Peer::start(Impl::Py, &[]).await;
        py.call("register", at.clone()).await;

        // A js peer that only discovers (no listen address, as in a browser).
        let mut js = Peer::start(Impl::Js, discoverer).await;
        let answer = js.try_call("discover", at.clone()).await;
        assert_eq!(
            answer["ok"], true,
            "serve {flags:?}, js peer {discoverer:?}: their client refuses the page: {}",
            answer["error"]
        );
        assert_eq!(
            seen(peers(&answer)),
            seen([
                entry(js1.peer, &js1.addrs),
                entry(ours.peer, &[ours.addr()])
            ]),
            "serve {flags:?}, js peer {discoverer:?}"
        );
        // A js peer that registered (standard) is known by its agent too.
        let answer = js1.try_call("discover", at).await;
        assert_eq!(answer["ok"], true, "js registrant: {}", answer["error"]);
        assert_eq!(
            seen(peers(&answer)),
            seen([entry(ours.peer, &[ours.addr()])])
        );
        drop(legacy);
    }
}

#[tokio::test]
#[ignore = "needs the js and py peers that interop/run installs"]
async fn our_client_registers_discovers_with_cookies_and_unregisters_on_a_js_server() {
    let mut server = Peer::start(Impl::Js, &["--server"]).await;
    let at = ns_at(&server.addr());

    let mut a = our_client(server.peer, server.addr(), true, RecordFormat::Standard).await;
    let mut js1 = Peer::start(Impl::Js, &[]).await;
    js1.call("register", at.clone()).await;

    // Their client reads our record.
    assert_eq!(
        seen(peers(&js1.call("discover", at.clone()).await)),
        seen([entry(a.peer, &[a.addr()])])
    );

    // Our client reads theirs, and comes back with the cookie it was given.
    let mut b = our_client(server.peer, server.addr(), false, RecordFormat::Standard).await;
    let (first, cookie, _) = our_page(&mut b, server.peer, None, None).await;
    assert_eq!(
        seen(first),
        seen([entry(a.peer, &[a.addr()]), entry(js1.peer, &js1.addrs)])
    );
    let cookie = cookie.expect("their server sends a cookie");
    let js1_peer = js1.peer;
    let addrs = b
        .ask(move |swarm| swarm.behaviour().rendezvous.discovered_addresses(&js1_peer))
        .await;
    assert_eq!(
        seen([(js1.peer, addrs)]),
        seen([entry(js1.peer, &js1.addrs)]),
        "what our client's discovery reports"
    );

    let mut js2 = Peer::start(Impl::Js, &[]).await;
    js2.call("register", at.clone()).await;
    let (second, _, _) = our_page(&mut b, server.peer, Some(cookie.clone()), None).await;
    assert!(
        seen(second).contains_key(&js2.peer),
        "a registration made after the cookie is in the next page"
    );
    let cookies: Vec<String> = server
        .events()
        .into_iter()
        .filter(|e| e["event"] == "discover")
        .map(|e| e["cookie"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        cookies.last(),
        Some(&hex(cookie.as_bytes())),
        "their server received our cookie: {cookies:?}"
    );

    let ns = Namespace::from_static(NS);
    let server_peer = server.peer;
    a.ask(move |swarm| swarm.behaviour_mut().rendezvous.unregister(server_peer, ns))
        .await;
    a.wait_for(|e| matches!(e, client::Event::Unregistered { .. }).then_some(()))
        .await;
    let left = wait_until_gone(&mut js1, "discover", at, a.peer).await;
    assert_eq!(left, seen([entry(js2.peer, &js2.addrs)]));
}

#[tokio::test]
#[ignore = "needs the js and py peers that interop/run installs"]
async fn py_clients_register_page_with_cookies_and_unregister_on_our_server() {
    their_clients_on_our_server(Impl::Py, TCP, &[]).await;
}

/// The same with py peers on py-libp2p 0.8's WebSocket transport only, on a server that listens
/// on WebSocket only.
#[tokio::test]
#[ignore = "needs the js and py peers that interop/run installs"]
async fn py_clients_over_websocket_only_register_page_and_unregister_on_our_server() {
    their_clients_on_our_server(Impl::Py, "/ip4/127.0.0.1/tcp/0/ws", &["--transport", "ws"]).await;
}

#[tokio::test]
#[ignore = "needs the js and py peers that interop/run installs"]
async fn our_client_registers_discovers_with_cookies_and_unregisters_on_a_py_server() {
    let mut server = Peer::start(Impl::Py, &["--server"]).await;
    let at = ns_at(&server.addr());

    // Our client signs a standard record, is refused, and registers a PeerInfo instead.
    let mut a = our_client(server.peer, server.addr(), true, RecordFormat::Standard).await;
    let mut py1 = Peer::start(Impl::Py, &[]).await;
    py1.call("register", at.clone()).await;

    // Their client reads our record.
    let expected = seen([entry(a.peer, &[a.addr()]), entry(py1.peer, &py1.addrs)]);
    assert_eq!(
        seen(peers(&py1.call("discover", at.clone()).await)),
        expected
    );

    // Our client reads theirs, one registration a page, with their cookies.
    let mut b = our_client(server.peer, server.addr(), false, RecordFormat::Standard).await;
    let (paged, _) = our_pages(&mut b, server.peer, 1).await;
    assert_eq!(paged, expected);
    let cookies: Vec<String> = server
        .events()
        .into_iter()
        .filter(|e| e["event"] == "discover" && e["returned"] == 1)
        .map(|e| e["cookie"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        cookies.len() >= 2 && !cookies[1].is_empty(),
        "the second page was asked for with their cookie: {cookies:?}"
    );

    let ns = Namespace::from_static(NS);
    let server_peer = server.peer;
    a.ask(move |swarm| swarm.behaviour_mut().rendezvous.unregister(server_peer, ns))
        .await;
    a.wait_for(|e| matches!(e, client::Event::Unregistered { .. }).then_some(()))
        .await;
    let left = wait_until_gone(&mut py1, "discover", at, a.peer).await;
    assert_eq!(left, seen([entry(py1.peer, &py1.addrs)]));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A page in headless Chromium running js-libp2p over WebSocket only, on `rendezvous serve`
/// with its default flags but for the listen address (one WebSocket port): it discovers what
/// others registered, registers (the circuit-relay address a browser peer announces), is
/// discovered by a js peer and by our client at that address, and unregisters.
#[tokio::test]
#[ignore = "needs the js peers and chromium that interop/run installs"]
async fn a_browser_page_registers_and_discovers_through_our_server_over_websocket() {
    let serve = Serve::start_on("/ip4/127.0.0.1/tcp/0/ws", &[]).await;
    let at = ns_at(&serve.addr);
    let mut js = Peer::start(Impl::Js, &["--transport", "ws"]).await;
    js.call("register", at.clone()).await;
    let mut ours = our_client(serve.peer, serve.addr.clone(), true, RecordFormat::Standard).await;

    let relayed = format!("{}/p2p-circuit", serve.addr);
    let mut browser = Peer::start(Impl::Browser, &["--announce", &relayed]).await;
    assert_eq!(
        seen(peers(&browser.call("discover", at.clone()).await)),
        seen([entry(js.peer, &js.addrs), entry(ours.peer, &[ours.addr()])]),
        "what the browser received"
    );
    let registered = browser.call("register", at.clone()).await;
    assert_eq!(registered["ttl"], rendezvous_discovery::DEFAULT_TTL);
    let browser_at = seen([entry(browser.peer, &browser.addrs)]);
    assert_eq!(
        browser_at.values().flatten().collect::<Vec<_>>(),
        vec![&relayed.parse::<Multiaddr>().unwrap()],
        "the browser announces the relayed address"
    );

    let (ours_saw, _) = our_pages(&mut ours, serve.peer, 10).await;
    assert_eq!(
        ours_saw,
        seen([
            entry(js.peer, &js.addrs),
            entry(browser.peer, &browser.addrs)
        ])
    );
    assert_eq!(
        seen(peers(&js.call("discover", at.clone()).await)),
        seen([
            entry(browser.peer, &browser.addrs),
            entry(ours.peer, &[ours.addr()])
        ])
    );

    browser.call("unregister", at.clone()).await;
    let left = wait_until_gone(&mut js, "discover", at, browser.peer).await;
    assert_eq!(left, seen([entry(ours.peer, &[ours.addr()])]));
    browser.call("stop", json!({})).await;
}

/// The nginx block of `docs/browsers.md`, as it is written there but for the port, the
/// certificate paths and the upstream port, terminates TLS in front of `serve` on plain `/ws`:
/// a client that trusts the test's certificate dials `/wss` on nginx, registers and discovers
/// itself.
#[tokio::test]
#[ignore = "needs the nginx that interop/run installs"]
async fn wss_through_the_nginx_snippet_of_the_docs() {
    use libp2p::multiaddr::Protocol;

    let serve = Serve::start_on("/ip4/127.0.0.1/tcp/0/ws", &[]).await;
    let upstream = serve
        .addr
        .iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("a TCP port");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = support::serve::self_signed(dir.path());
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/browsers.md"),
    )
    .unwrap();
    let snippet = docs
        .split("```nginx\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/browsers.md has an nginx block");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut replaced = snippet.to_owned();
    for (from, to) in [
        ("listen 443 ssl;", format!("listen 127.0.0.1:{port} ssl;")),
        (
            "/etc/letsencrypt/live/rdv.example.org/fullchain.pem",
            cert.clone(),
        ),
        ("/etc/letsencrypt/live/rdv.example.org/privkey.pem", key),
        (
            "http://127.0.0.1:62650",
            format!("http://127.0.0.1:{upstream}"),
        ),
    ] {
        assert!(replaced.contains(from), "the snippet has {from}");
        replaced = replaced.replace(from, &to);
    }
    let prefix = dir.path().display();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\npid {prefix}/nginx.pid;\nerror_log stderr;\n\
             events {{}}\nhttp {{\naccess_log off;\nclient_body_temp_path {prefix}/body;\n\
             proxy_temp_path {prefix}/proxy;\n{replaced}}}\n"
        ),
    )
    .unwrap();
    let nginx = ["/usr/sbin/nginx", "nginx"]
        .into_iter()
        .find(|n| !n.starts_with('/') || std::path::Path::new(n).exists())
        .unwrap();
    let _nginx = tokio::process::Command::new(nginx)
        .arg("-p")
        .arg(dir.path())
        .arg("-e")
        .arg("stderr")
        .arg("-c")
        .arg(&conf)
        .kill_on_drop(true)
        .spawn()
        .expect("nginx runs (interop/run installs it)");
    tokio::time::timeout(support::HANG, async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            tokio::time::sleep(POLL).await;
        }
    })
    .await
    .expect("nginx listens");

    let client = support::tcp::rust_client_trusting(der);
    let through_nginx: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}/wss/p2p/{}", serve.peer)
        .parse()
        .unwrap();
    support::tcp::registers_and_discovers_itself(client, through_nginx).await;
}
