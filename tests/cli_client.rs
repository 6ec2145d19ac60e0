//! `rendezvous discover` and `rendezvous register` against an in-process rust-libp2p
//! rendezvous server on 127.0.0.1 TCP.

mod support;

use std::{process::Stdio, time::Duration};

use futures::StreamExt;
use libp2p::{rendezvous, swarm::SwarmEvent, Multiaddr, PeerId};
use rendezvous_discovery::{client, Namespace, RecordFormat};
use support::{WithIdentify, WithIdentifyEvent};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
    sync::mpsc,
};

const HANG: Duration = Duration::from_secs(60);

/// Starts rust-libp2p's rendezvous server on 127.0.0.1, next to identify (which tells
/// `discover`, a client that does not register, that it is a rendezvous server: it holds its
/// first DISCOVER until then); returns its address and its rendezvous events.
async fn server() -> (
    Multiaddr,
    mpsc::UnboundedReceiver<WithIdentifyEvent<rendezvous::server::Behaviour>>,
) {
    let config = rendezvous::server::Config::default().with_min_ttl(1);
    support::tcp::spawn(|key| {
        WithIdentify::new(key.clone(), |_| rendezvous::server::Behaviour::new(config))
    })
    .await
}

/// Registers a peer with our client library, in process; returns its id once registered.
async fn registrant(server: &Multiaddr, ns: &str) -> PeerId {
    let Some(libp2p::multiaddr::Protocol::P2p(server_peer)) = server.iter().last() else {
        unreachable!()
    };
    let external: Multiaddr = "/ip4/127.0.0.1/tcp/4999".parse().unwrap();
    let config = client::Config::default()
        .with_server(server_peer, vec![server.clone()])
        .with_namespace(Namespace::new(ns).unwrap())
        .with_discovery(false)
        .with_record_format(RecordFormat::Legacy)
        .with_external_address(external);
    let mut swarm = support::tcp::swarm(|key| client::Behaviour::new(key.clone(), config));
    let peer = *swarm.local_peer_id();
    tokio::time::timeout(HANG, async {
        loop {
            if let SwarmEvent::Behaviour(client::Event::Registered { .. }) =
                swarm.select_next_some().await
            {
                return;
            }
        }
    })
    .await
    .expect("the registrant registered");
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    peer
}

fn rendezvous() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rendezvous"));
    cmd.env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn discover_once_json_prints_the_registered_peer_and_exits_0() {
    let (server, _events) = server().await;
    let peer = registrant(&server, "cli").await;
    let output = tokio::time::timeout(
        HANG,
        rendezvous()
            .args(["discover", "--server", &server.to_string()])
            .args(["--namespace", "cli", "--once", "--json"])
            .output(),
    )
    .await
    .expect("discover --once exits")
    .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert_eq!(lines[0]["event"], "discovered");
    assert_eq!(lines[0]["peer"], peer.to_string());
    assert_eq!(lines[0]["namespace"], "cli");
    assert_eq!(lines[0]["addrs"][0], "/ip4/127.0.0.1/tcp/4999");
}

#[tokio::test]
async fn bad_flags_exit_2_with_one_line() {
    for args in [
        &[
            "discover",
            "--server",
            "/ip4/127.0.0.1/tcp/1",
            "--namespace",
            "x",
        ][..],
        &["discover", "--server", "not an address", "--namespace", "x"][..],
        &[
            "register",
            "--server",
            "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN",
            "--namespace",
            "x",
            "--record-format",
            "fancy",
        ][..],
    ] {
        let output = rendezvous().args(args).output().await.unwrap();
        support::one_line_error(&output, &format!("{args:?}"));
    }
}

#[tokio::test]
async fn register_keeps_registered_until_interrupted_then_unregisters() {
    let (server, mut events) = server().await;
    let mut child = rendezvous()
        .args(["register", "--server", &server.to_string()])
        .args(["--namespace", "cli-reg", "--record-format", "legacy"])
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Our peer id comes first, then the registration.
    let (first, second) = tokio::time::timeout(HANG, async {
        let first = lines.next_line().await.unwrap().expect("a line");
        let second = lines.next_line().await.unwrap().expect("a line");
        (first, second)
    })
    .await
    .expect("two lines");
    assert!(first.starts_with("peer 12D3KooW"), "{first}");
    assert!(second.starts_with("registered cli-reg at "), "{second}");
    let pid = child.id().unwrap().to_string();
    let killed = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(HANG, child.wait())
        .await
        .expect("register exits after Ctrl-C")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let unregistered = tokio::time::timeout(HANG, async {
        loop {
            if let Some(WithIdentifyEvent::Rendezvous(
                rendezvous::server::Event::PeerUnregistered { namespace, .. },
            )) = events.recv().await
            {
                return namespace.to_string();
            }
        }
    })
    .await
    .expect("the server saw the UNREGISTER");
    assert_eq!(unregistered, "cli-reg");
}

/// The whole tool chain: `serve`, `register` (standard records) and `discover --once` without
/// registering, which the server must still serve standard records to.
#[tokio::test]
async fn discover_once_finds_a_register_process_through_a_serve_process() {
    tool_chain(&[]).await;
}

/// The same on a network's own protocol id: `--protocol` on all three.
#[tokio::test]
async fn discover_once_with_protocol_finds_peers_on_a_server_with_that_id() {
    tool_chain(&["--protocol", "/canvas/rendezvous/1.0.0"]).await;
}

async fn tool_chain(protocol: &[&str]) {
    let mut serve = rendezvous()
        .args(["serve", "--ephemeral", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .args(protocol)
        .spawn()
        .unwrap();
    let mut serve_out = BufReader::new(serve.stdout.take().unwrap()).lines();
    let server = tokio::time::timeout(HANG, serve_out.next_line())
        .await
        .expect("serve prints its address")
        .unwrap()
        .expect("an address line");
    assert!(server.contains("/p2p/"), "{server}");

    let mut register = rendezvous()
        .args(["register", "--server", &server, "--namespace", "e2e"])
        .args(protocol)
        .spawn()
        .unwrap();
    let mut register_out = BufReader::new(register.stdout.take().unwrap()).lines();
    tokio::time::timeout(HANG, async {
        loop {
            let line = register_out.next_line().await.unwrap().expect("a line");
            if line.starts_with("registered e2e") {
                return;
            }
        }
    })
    .await
    .expect("register registered");

    let output = tokio::time::timeout(
        HANG,
        rendezvous()
            .args(["discover", "--server", &server, "--namespace", "e2e"])
            .args(["--once", "--json"])
            .args(protocol)
            .output(),
    )
    .await
    .expect("discover --once exits")
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert_eq!(lines[0]["event"], "discovered");
    assert_eq!(lines[0]["namespace"], "e2e");
    let _ = register.kill().await;
    let _ = serve.kill().await;
}
