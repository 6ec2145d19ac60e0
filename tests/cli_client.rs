//! `rendezvous discover` and `rendezvous register` against an in-process rust-libp2p
//! rendezvous server on 127.0.0.1 TCP.

mod support;

use std::{collections::BTreeSet, io, process::Stdio, time::Duration};

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::{
    identity::Keypair, rendezvous, request_response, swarm::SwarmEvent, Multiaddr, PeerId,
};
use rendezvous_discovery::{
    client,
    codec::{read_message, write_message, DiscoverPage, Message, DEFAULT_MAX_MESSAGE_SIZE},
    Cookie, ErrorCode, ErrorResponse, Namespace, RecordFormat, Registration, SignedRecord,
    PROTOCOL,
};
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
    registrant_in(server, &[ns.to_string()], RecordFormat::Legacy).await
}

/// Registers a peer in every namespace of `namespaces` with our client library, in process,
/// with records in `format`; returns its id once registered everywhere.
async fn registrant_in(server: &Multiaddr, namespaces: &[String], format: RecordFormat) -> PeerId {
    let Some(libp2p::multiaddr::Protocol::P2p(server_peer)) = server.iter().last() else {
        unreachable!()
    };
    let external: Multiaddr = "/ip4/127.0.0.1/tcp/4999".parse().unwrap();
    let mut config = client::Config::default()
        .with_server(server_peer, vec![server.clone()])
        .with_discovery(false)
        .with_record_format(format)
        .with_external_address(external);
    for ns in namespaces {
        config = config.with_namespace(Namespace::new(ns.clone()).unwrap());
    }
    let mut swarm = support::tcp::swarm(|key| client::Behaviour::new(key.clone(), config));
    let peer = *swarm.local_peer_id();
    let mut left: BTreeSet<&str> = namespaces.iter().map(String::as_str).collect();
    tokio::time::timeout(HANG, async {
        while !left.is_empty() {
            if let SwarmEvent::Behaviour(client::Event::Registered { namespace, .. }) =
                swarm.select_next_some().await
            {
                left.remove(namespace.as_str());
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
    tool_chain(TCP, &[]).await;
}

/// The same over WebSocket only: `serve`, `register` and `discover` dial and listen on `/ws`,
/// and the record found carries the `/ws` address.
#[tokio::test]
async fn discover_once_finds_a_register_process_over_websocket_only() {
    tool_chain("/ip4/127.0.0.1/tcp/0/ws", &[]).await;
}

/// The same on a network's own protocol id: `--protocol` on all three.
#[tokio::test]
async fn discover_once_with_protocol_finds_peers_on_a_server_with_that_id() {
    tool_chain(TCP, &["--protocol", "/canvas/rendezvous/1.0.0"]).await;
}

const TCP: &str = "/ip4/127.0.0.1/tcp/0";

/// `serve`, `register` and `discover --once`, each listening on `listen`, with `protocol` flags.
async fn tool_chain(listen: &str, protocol: &[&str]) {
    let mut serve = rendezvous()
        .args(["serve", "--ephemeral", "--listen", listen])
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
        .args(["--listen", listen])
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
            .args(["--once", "--json", "--listen", listen])
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
    let addrs = lines[0]["addrs"].as_array().expect("addresses");
    let suffix = if listen.ends_with("/ws") { "/ws" } else { "" };
    assert!(
        !addrs.is_empty()
            && addrs.iter().all(|a| {
                let a = a.as_str().unwrap();
                a.starts_with("/ip4/127.0.0.1/tcp/") && a.ends_with(suffix)
            }),
        "the register process's {listen} addresses: {addrs:?}"
    );
    let _ = register.kill().await;
    let _ = serve.kill().await;
}

/// The `discovered` lines of `discover --json` output, as (peer, namespace).
fn discovered_lines(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("every line is JSON"))
        .filter(|line| line["event"] == "discovered")
        .map(|line| {
            let field = |name: &str| line[name].as_str().unwrap().to_string();
            (field("peer"), field("namespace"))
        })
        .collect()
}

/// Issue 18: `discover --once` in the most namespaces a client takes, against `serve` on its
/// default limits (it serves a few streams per connection at once), prints every registration
/// and exits 0.
#[tokio::test]
async fn discover_once_in_64_namespaces_prints_every_registration_from_a_default_serve() {
    let mut serve = rendezvous()
        .args(["serve", "--ephemeral", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .spawn()
        .unwrap();
    let mut serve_out = BufReader::new(serve.stdout.take().unwrap()).lines();
    let server = tokio::time::timeout(HANG, serve_out.next_line())
        .await
        .expect("serve prints its address")
        .unwrap()
        .expect("an address line");
    let all: Vec<String> = (0..client::MAX_NAMESPACES)
        .map(|i| format!("many-{i}"))
        .collect();
    let peer = registrant_in(&server.parse().unwrap(), &all, RecordFormat::Standard).await;

    let mut discover = rendezvous();
    discover.args(["discover", "--server", &server, "--once", "--json"]);
    for ns in &all {
        discover.args(["--namespace", ns]);
    }
    let output = tokio::time::timeout(HANG, discover.output())
        .await
        .expect("discover --once exits")
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{:?}: {}\n{stdout}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let mut found = discovered_lines(&stdout);
    found.sort();
    let mut expected: Vec<(String, String)> = all
        .iter()
        .map(|ns| (peer.to_string(), ns.clone()))
        .collect();
    expected.sort();
    assert_eq!(found, expected, "{stdout}");
    let _ = serve.kill().await;
}

/// What the scripted server answers a DISCOVER in a namespace.
type Script = Box<dyn Fn(&Namespace) -> Message + Send>;

/// Reads and writes rendezvous messages for request-response: one request and one response per
/// stream, as our client sends them.
#[derive(Clone, Default)]
struct Codec;

impl request_response::Codec for Codec {
    type Protocol = libp2p::StreamProtocol;
    type Request = Message;
    type Response = Message;

    async fn read_request<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<Message>
    where
        T: AsyncRead + Unpin + Send,
    {
        match read_message(io, DEFAULT_MAX_MESSAGE_SIZE).await {
            Ok(Some(Ok(message))) => Ok(message),
            other => Err(io::Error::other(format!("not a request: {other:?}"))),
        }
    }

    async fn read_response<T>(&mut self, _: &Self::Protocol, _: &mut T) -> io::Result<Message>
    where
        T: AsyncRead + Unpin + Send,
    {
        Err(io::Error::other("the scripted server sends no requests"))
    }

    async fn write_request<T>(
        &mut self,
        _: &Self::Protocol,
        _: &mut T,
        _: Message,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        Err(io::Error::other("the scripted server sends no requests"))
    }

    async fn write_response<T>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        response: Message,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, &response, DEFAULT_MAX_MESSAGE_SIZE)
            .await
            .map_err(io::Error::other)?;
        io.close().await
    }
}

/// A rendezvous server on 127.0.0.1 TCP (next to identify) that answers each DISCOVER as
/// `script` says; returns its address with `/p2p/`.
async fn scripted_server(script: Script) -> Multiaddr {
    let mut swarm = support::tcp::swarm(|key| {
        WithIdentify::new(key.clone(), |_| {
            request_response::Behaviour::with_codec(
                Codec,
                [(PROTOCOL, request_response::ProtocolSupport::Inbound)],
                request_response::Config::default(),
            )
        })
    });
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let address = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    let peer = *swarm.local_peer_id();
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(WithIdentifyEvent::Rendezvous(
                request_response::Event::Message {
                    message:
                        request_response::Message::Request {
                            request:
                                Message::Discover {
                                    namespace: Some(ns),
                                    ..
                                },
                            channel,
                            ..
                        },
                    ..
                },
            )) = swarm.select_next_some().await
            {
                let _ = swarm
                    .behaviour_mut()
                    .rendezvous
                    .send_response(channel, script(&ns));
            }
        }
    });
    address.with(libp2p::multiaddr::Protocol::P2p(peer))
}

/// Issue 18: a namespace the server refuses does not keep `discover --once` from printing what
/// the others hold; the run still fails, at the end, and says which namespace failed (with
/// exit status 3, issue 23: the server would refuse that namespace again).
#[tokio::test]
async fn discover_once_prints_every_namespace_that_answers_and_then_fails_for_the_refused_one() {
    let key = Keypair::generate_ed25519();
    let peer = key.public().to_peer_id();
    let server = scripted_server(Box::new(move |ns: &Namespace| {
        if ns.as_str() == "refused" {
            return Message::DiscoverResponse(Err(ErrorResponse::new(
                ErrorCode::InvalidNamespace,
                "scripted refusal",
            )));
        }
        let record = SignedRecord::new(
            &key,
            vec!["/ip4/127.0.0.1/tcp/4999".parse().unwrap()],
            RecordFormat::Standard,
        )
        .unwrap();
        Message::DiscoverResponse(Ok(DiscoverPage {
            registrations: vec![Registration {
                namespace: ns.clone(),
                record,
                ttl: 600,
            }],
            cookie: Some(Cookie::new(b"c".to_vec()).unwrap()),
            skipped: 0,
        }))
    }))
    .await;
    let output = tokio::time::timeout(
        HANG,
        rendezvous()
            .args([
                "discover",
                "--server",
                &server.to_string(),
                "--once",
                "--json",
            ])
            .args([
                "--namespace",
                "refused",
                "--namespace",
                "a",
                "--namespace",
                "b",
            ])
            .output(),
    )
    .await
    .expect("discover --once exits")
    .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // E_INVALID_NAMESPACE would come again: exit status 3 (1 for a failure that may pass).
    assert_eq!(output.status.code(), Some(3), "{stderr}\n{stdout}");
    let mut found = discovered_lines(&stdout);
    found.sort();
    assert_eq!(
        found,
        [
            (peer.to_string(), "a".to_string()),
            (peer.to_string(), "b".to_string())
        ],
        "{stdout}"
    );
    assert!(stderr.contains("1 of 3 namespaces; refused:"), "{stderr}");
}
