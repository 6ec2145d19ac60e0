//! WebRTC-direct (feature `webrtc`): `rendezvous serve` listens on `/udp/PORT/webrtc-direct`,
//! prints the address with its `/certhash`, keeps its certificate across restarts, and
//! rust-libp2p peers on libp2p-webrtc register and discover through it; so does js-libp2p in a
//! page in headless Chromium (ignored by default: `interop/run` installs the page's packages and
//! runs it).
#![cfg(feature = "webrtc")]

mod support;

use std::time::Duration;

use libp2p::{
    core::muxing::StreamMuxerBox, identity::Keypair, multiaddr::Protocol, swarm::NetworkBehaviour,
    Multiaddr, Swarm, Transport as _,
};
use rendezvous_discovery::{client, Namespace};
use serde_json::json;
use support::{
    client::{discovered, registered_at, ClientNode},
    foreign::{peers, without_p2p, Impl, Peer},
    node::spawn_with_identify_on,
    serve::Serve,
    WithIdentify,
};

const LISTEN: &str = "/ip4/127.0.0.1/udp/0/webrtc-direct";
const NS: &str = "browsers";

/// A swarm on WebRTC-direct only (libp2p-webrtc dials only from a swarm that listens: the
/// connection leaves from its listener's UDP socket).
fn webrtc_swarm<B: NetworkBehaviour>(behaviour: impl FnOnce(Keypair) -> B) -> Swarm<B> {
    // As `serve` does (see its `webrtc` module): DTLS needs the process's rustls provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certificate = libp2p_webrtc::tokio::Certificate::generate(&mut rand_webrtc::rng())
        .expect("a WebRTC certificate");
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| {
            libp2p_webrtc::tokio::Transport::new(key.clone(), certificate)
                .map(|(peer, connection), _| (peer, StreamMuxerBox::new(connection)))
        })
        .expect("the WebRTC transport builds")
        .with_behaviour(|key| behaviour(key.clone()))
        .expect("the behaviour is given")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// Our client on WebRTC-direct, knowing `serve`: registering in [`NS`] or discovering it.
async fn peer(serve: &Serve, register: bool) -> ClientNode {
    let config = client::Config::default()
        .with_server(serve.peer, vec![serve.addr.clone()])
        .with_namespace(Namespace::from_static(NS))
        .with_registration(register)
        .with_discovery(!register)
        .with_learned_servers(false);
    let swarm =
        webrtc_swarm(|key| WithIdentify::new(key, |key| client::Behaviour::new(key, config)));
    spawn_with_identify_on(swarm, LISTEN).await
}

/// The `/certhash` of `address`.
fn certhash(address: &Multiaddr) -> Option<Protocol<'static>> {
    address
        .iter()
        .find(|p| matches!(p, Protocol::Certhash(_)))
        .map(|p| p.acquire())
}

#[tokio::test]
async fn peers_on_webrtc_direct_register_and_discover_through_serve() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().expect("a UTF-8 temp path");
    let serve = Serve::start_on(LISTEN, ["--data-dir", data_dir, "--metrics", "127.0.0.1:0"]);
    assert!(
        certhash(&serve.addr).is_some(),
        "serve printed {} without /certhash",
        serve.addr
    );

    let mut alice = peer(&serve, true).await;
    assert_eq!(alice.wait_for(registered_at).await, serve.peer);
    let mut bob = peer(&serve, false).await;
    let addrs = bob.wait_for(discovered(alice.peer)).await;
    assert_eq!(
        addrs,
        vec![alice.addr()],
        "alice's WebRTC-direct address, certhash included"
    );

    let metrics = support::http::scrape(serve.metrics.expect("--metrics")).await;
    assert_eq!(
        metrics.get(r#"libp2p_rendezvous_server_connections{transport="webrtc-direct"}"#),
        Some(&2.0)
    );
}

#[tokio::test]
async fn the_certificate_and_so_the_address_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().expect("a UTF-8 temp path");
    let first = Serve::start_on(LISTEN, ["--data-dir", data_dir]);
    let (peer, hash) = (first.peer, certhash(&first.addr));
    first.kill();
    let second = Serve::start_on(LISTEN, ["--data-dir", data_dir]);
    assert_eq!(second.peer, peer);
    assert_eq!(certhash(&second.addr), hash);
    assert!(hash.is_some());

    let third = Serve::start_on(LISTEN, ["--ephemeral"]);
    assert_ne!(
        certhash(&third.addr),
        hash,
        "--ephemeral makes a new certificate"
    );
}

/// js-libp2p 2.10 with `@libp2p/webrtc`'s `webRTCDirect()` as its only transport, in a page in
/// headless Chromium (`interop/js/browser.mjs`), dials the `/webrtc-direct/certhash` address
/// `serve` printed: it discovers a rust-libp2p peer registered over WebRTC-direct (its
/// certhash address, as that peer registered it), registers itself, and the rust peer
/// discovers the page's record.
#[tokio::test]
#[ignore = "needs the browser page that interop/run installs"]
async fn a_browser_page_registers_and_discovers_through_serve_over_webrtc_direct() {
    let serve = Serve::start_on(LISTEN, ["--ephemeral"]);
    let at = json!({"server": serve.addr.to_string(), "ns": NS});
    let mut alice = peer(&serve, true).await;
    assert_eq!(alice.wait_for(registered_at).await, serve.peer);

    // A browser listens on nothing; it announces a relayed address, as browser peers do.
    let relayed: Multiaddr = format!("{}/p2p-circuit", serve.addr).parse().unwrap();
    let mut browser = Peer::start(
        Impl::Browser,
        &[
            "--transport",
            "webrtc-direct",
            "--announce",
            &relayed.to_string(),
        ],
    )
    .await;
    let found = peers(&browser.call("discover", at.clone()).await);
    let found: Vec<_> = found
        .into_iter()
        .map(|(peer, addrs)| (peer, addrs.iter().map(without_p2p).collect::<Vec<_>>()))
        .collect();
    assert_eq!(
        found,
        vec![(alice.peer, vec![alice.addr()])],
        "what the browser received: alice's WebRTC-direct address, certhash included"
    );

    let registered = browser.call("register", at.clone()).await;
    assert_eq!(registered["ttl"], rendezvous_discovery::DEFAULT_TTL);
    let mut bob = peer(&serve, false).await;
    let addrs = bob.wait_for(discovered(browser.peer)).await;
    assert_eq!(
        addrs.iter().map(without_p2p).collect::<Vec<_>>(),
        vec![relayed],
        "the browser's record, as the page announced it"
    );
    browser.call("stop", json!({})).await;
}
