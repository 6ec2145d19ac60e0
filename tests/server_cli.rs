//! `rendezvous serve` as a process: it prints its listen addresses, and refuses bad flags.

mod support;

use std::process::Command;

use libp2p::{multiaddr::Protocol, Multiaddr};
use support::serve::{Serve, BIN};

/// Starts `rendezvous serve --ephemeral` on a free loopback TCP port; returns it and its first
/// address.
fn serve() -> (Serve, Multiaddr) {
    serve_with(&[])
}

/// [`serve`] with extra flags.
fn serve_with(args: &[&str]) -> (Serve, Multiaddr) {
    serve_on(TCP, args)
}

/// [`serve_with`] listening on `listen` only.
fn serve_on(listen: &str, args: &[&str]) -> (Serve, Multiaddr) {
    let serve = Serve::start_on(listen, ["--ephemeral"].iter().chain(args));
    let address = serve.addr.clone();
    (serve, address)
}

/// A free loopback port for TCP.
const TCP: &str = "/ip4/127.0.0.1/tcp/0";

/// A free loopback port for WebSocket.
const WS: &str = "/ip4/127.0.0.1/tcp/0/ws";

/// The TCP port of `address` (a TCP or WebSocket one).
fn tcp_port(address: &Multiaddr) -> u16 {
    address
        .iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("a TCP port")
}

#[test]
fn serve_prints_each_listen_address_with_its_peer_id() {
    let (_serve, address) = serve();
    let protocols: Vec<_> = address.iter().collect();
    assert!(
        matches!(protocols[0], Protocol::Ip4(ip) if ip.is_loopback()),
        "{address}"
    );
    assert!(
        matches!(protocols[1], Protocol::Tcp(port) if port != 0),
        "{address}"
    );
    assert!(
        matches!(protocols.last(), Some(Protocol::P2p(_))),
        "{address}"
    );
}

fn serve_fails(args: &[&str]) -> String {
    let output = Command::new(BIN)
        .arg("serve")
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    support::one_line_error(&output, &format!("{args:?}"))
}

#[test]
fn a_second_serve_on_the_same_port_exits_2_naming_it() {
    for (first, second) in [(TCP, ""), (WS, "/ws"), (TCP, "/ws"), (WS, "")] {
        let (_first, address) = serve_on(first, &[]);
        let listen = format!("/ip4/127.0.0.1/tcp/{}{second}", tcp_port(&address));
        let output = Command::new(BIN)
            .args(["serve", "--ephemeral", "--listen", &listen])
            // Not the open-file warning of a machine whose hard limit is below the default cap.
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        let line = support::one_line_error(&output, "a second serve on the same port");
        assert_eq!(output.status.code(), Some(2), "{line}");
        assert!(line.contains(&listen), "{line}");
        assert!(line.contains("in use"), "the OS reason: {line}");
    }
}

#[test]
fn no_program_can_share_serves_port_even_with_so_reuseport() {
    // libp2p-tcp's own listeners set SO_REUSEPORT: any program that sets it too (another
    // libp2p node, say) could bind the port and take half of the connections.
    for listen in [TCP, WS] {
        let (_serve, address) = serve_on(listen, &[]);
        let port = tcp_port(&address);
        let intruder = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .unwrap();
        intruder.set_reuse_address(true).unwrap();
        intruder.set_reuse_port(true).unwrap();
        let bound = intruder.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into());
        let error = bound.expect_err("the port is serve's alone");
        assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse, "{listen}");
    }
}

#[test]
fn serve_refuses_two_listen_addresses_on_one_tcp_port() {
    let stderr = serve_fails(&[
        "--ephemeral",
        "--listen",
        "/ip4/0.0.0.0/tcp/62649",
        "--listen",
        "/ip4/127.0.0.1/tcp/62649/ws",
    ]);
    assert!(
        stderr.contains("TCP port 62649 is also in --listen /ip4/0.0.0.0/tcp/62649"),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_a_bad_flag_with_one_line_and_status_2() {
    let stderr = serve_fails(&["--no-such-flag"]);
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
    let stderr = serve_fails(&["--listen", "not-a-multiaddr"]);
    assert!(stderr.contains("--listen"), "{stderr}");
    assert!(stderr.contains("expected a multiaddr such as"), "{stderr}");
    let stderr = serve_fails(&["--min-ttl", "100", "--max-ttl", "10"]);
    assert!(stderr.contains("expected min <= max"), "{stderr}");
}

#[test]
fn serve_refuses_out_of_range_limits_with_one_line_and_status_2() {
    for (args, needle) in [
        (
            &["--max-ttl", "18446744073709551615"][..],
            "--max-ttl is 18446744073709551615 s; at most 31536000 s",
        ),
        (&["--min-ttl", "0"][..], "--min-ttl is 0 s"),
        (&["--max-store-bytes", "0"][..], "--max-store-bytes is 0"),
        (&["--stream-timeout", "0"][..], "--stream-timeout is 0ns"),
        (
            &["--stream-timeout", "18446744073709551615"][..],
            "--stream-timeout is",
        ),
        (
            &["--max-message-size", "100"][..],
            "--max-message-size is 100 bytes",
        ),
        (&["--max-record-size", "0"][..], "--max-record-size is 0"),
        (
            &["--push-quiet-ms", "5000"][..],
            "--push-quiet-ms is 5000 ms; expected 0 to 1000 ms",
        ),
        (&["--max-page", "20000"][..], "--max-page is 20000"),
        (
            &["--max-registrations", "0"][..],
            "--max-registrations is 0",
        ),
    ] {
        let stderr = serve_fails(args);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn serve_refuses_an_unreadable_key_file_with_status_2() {
    let path = std::env::temp_dir().join(format!("rdv-serve-badkey-{}", std::process::id()));
    std::fs::write(&path, b"not a key").unwrap();
    let stderr = serve_fails(&["--ephemeral", "--identity", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    assert!(stderr.contains("--identity"), "{stderr}");
    assert!(stderr.contains("not a libp2p private key"), "{stderr}");
}

#[tokio::test]
async fn serve_answers_a_rust_libp2p_client_over_tcp_and_websocket() {
    for listen in [TCP, WS] {
        let (_serve, address) = serve_on(listen, &[]);
        let client =
            support::tcp::swarm(|key| libp2p::rendezvous::client::Behaviour::new(key.clone()));
        support::tcp::registers_and_discovers_itself(client, address).await;
    }
}

#[tokio::test]
async fn serve_answers_over_wss_with_the_certificate_of_its_flags() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = support::serve::self_signed(dir.path());
    let (_serve, address) = serve_on(
        "/ip4/127.0.0.1/tcp/0/wss",
        &["--tls-cert", &cert, "--tls-key", &key],
    );
    assert!(
        address.iter().any(|p| matches!(p, Protocol::Wss(_))),
        "{address}"
    );
    let client = support::tcp::rust_client_trusting(der);
    support::tcp::registers_and_discovers_itself(client, address).await;
}

#[test]
fn serve_refuses_missing_bad_or_unmatched_tls_files_with_one_line_and_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = support::serve::self_signed(dir.path());
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (_, other_key, _) = support::serve::self_signed(&other);
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM at all").unwrap();
    let garbage = garbage.to_str().unwrap();
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    let wss = "/ip4/127.0.0.1/tcp/0/wss";
    for (args, needle) in [
        (
            vec!["--listen", wss, "--tls-cert", missing, "--tls-key", &key],
            format!("--tls-cert {missing}: cannot read"),
        ),
        (
            vec!["--listen", wss, "--tls-cert", &cert, "--tls-key", missing],
            format!("--tls-key {missing}: cannot read"),
        ),
        (
            vec!["--listen", wss, "--tls-cert", garbage, "--tls-key", &key],
            format!("--tls-cert {garbage}: no certificate in it"),
        ),
        (
            vec!["--listen", wss, "--tls-cert", &cert, "--tls-key", garbage],
            format!("--tls-key {garbage}: no private key in it"),
        ),
        (
            vec![
                "--listen",
                wss,
                "--tls-cert",
                &cert,
                "--tls-key",
                &other_key,
            ],
            "cannot be used together".to_owned(),
        ),
        (
            vec!["--listen", wss],
            format!("--listen {wss}: secure WebSocket needs --tls-cert FILE and --tls-key FILE"),
        ),
        (
            vec!["--listen", WS, "--tls-cert", &cert, "--tls-key", &key],
            "no --listen address is secure WebSocket".to_owned(),
        ),
    ] {
        let stderr = serve_fails(&[&["--ephemeral"][..], &args].concat());
        assert!(stderr.contains(&needle), "{args:?}: {stderr}");
    }
}

fn peer_of(address: &Multiaddr) -> libp2p::PeerId {
    match address.iter().last() {
        Some(Protocol::P2p(peer)) => peer,
        _ => panic!("no peer id in {address}"),
    }
}

/// A rust-libp2p client connected to `address`, registered in `chat` there. A REGISTER that
/// fails because the server closed the connection first (a server told to close idle
/// connections after 50 ms, on a loaded machine) is made again on a new connection.
async fn registered_rust_client(
    address: &Multiaddr,
) -> libp2p::Swarm<libp2p::rendezvous::client::Behaviour> {
    use futures::StreamExt;
    use libp2p::{rendezvous, swarm::SwarmEvent};

    let server = peer_of(address);
    let mut registered = support::tcp::swarm(|key| rendezvous::client::Behaviour::new(key.clone()));
    registered.add_external_address("/ip4/127.0.0.1/tcp/9".parse().unwrap());
    registered.dial(address.clone()).unwrap();
    let chat = rendezvous::Namespace::from_static("chat");
    tokio::time::timeout(support::HANG, async {
        loop {
            match registered.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => registered
                    .behaviour_mut()
                    .register(chat.clone(), server, None)
                    .unwrap(),
                SwarmEvent::Behaviour(rendezvous::client::Event::Registered { .. }) => {
                    return;
                }
                SwarmEvent::Behaviour(rendezvous::client::Event::RegisterFailed { .. }) => {}
                SwarmEvent::ConnectionClosed { .. } => registered.dial(address.clone()).unwrap(),
                SwarmEvent::Behaviour(other) => panic!("unexpected {other:?}"),
                _ => {}
            }
        }
    })
    .await
    .expect("registered");
    registered
}

#[tokio::test]
async fn serve_closes_idle_connections_and_keeps_those_of_registered_peers() {
    use futures::StreamExt;
    use libp2p::{rendezvous, swarm::dummy, swarm::SwarmEvent};

    // The hidden test knob: idle for 50 ms rather than --idle-timeout's least, a second.
    let (_serve, address) = serve_with(&["--idle-timeout-ms", "50"]);
    let mut registered = registered_rust_client(&address).await;
    // A peer that connects and asks nothing: the server closes its connection after 50 ms (its
    // own side would keep it for a minute).
    let mut idle = support::tcp::swarm(|_| dummy::Behaviour);
    idle.dial(address.clone()).unwrap();
    tokio::time::timeout(support::HANG, async {
        loop {
            tokio::select! {
                event = idle.select_next_some() => {
                    if let SwarmEvent::ConnectionClosed { .. } = event {
                        return;
                    }
                }
                event = registered.select_next_some() => {
                    assert!(
                        !matches!(event, SwarmEvent::ConnectionClosed { .. }),
                        "the registered peer's connection closed: {event:?}"
                    );
                }
            }
        }
    })
    .await
    .expect("the idle connection was closed by the server");
    // The registered peer, connected since before, is still served on the same connection.
    registered.behaviour_mut().discover(
        Some(rendezvous::Namespace::from_static("chat")),
        None,
        None,
        peer_of(&address),
    );
    let found = tokio::time::timeout(support::HANG, async {
        loop {
            match registered.select_next_some().await {
                SwarmEvent::Behaviour(rendezvous::client::Event::Discovered {
                    registrations,
                    ..
                }) => return registrations.len(),
                SwarmEvent::ConnectionClosed { .. } => panic!("the registered peer was closed"),
                _ => {}
            }
        }
    })
    .await
    .expect("discovered");
    assert_eq!(found, 1);
}

/// [`second_connection_is_refused_on`] over TCP, then over WebSocket.
async fn second_connection_is_refused(args: &[&str], same_peer: bool) {
    for listen in [TCP, WS] {
        second_connection_is_refused_on(listen, args, same_peer).await;
    }
}

/// Connects once with a client, then a second time (from the same client or another one), and
/// returns once the server refused the second connection; the first must stay open.
async fn second_connection_is_refused_on(listen: &str, args: &[&str], same_peer: bool) {
    use futures::StreamExt;
    use libp2p::{
        swarm::SwarmEvent,
        swarm::{dial_opts::DialOpts, dial_opts::PeerCondition, dummy},
    };

    // Idle connections stay for an hour: only a cap can close the second one.
    let args = [args, &["--idle-timeout", "3600"]].concat();
    let (_serve, address) = serve_on(listen, &args);
    let server = peer_of(&address);
    let mut first = support::tcp::swarm(|_| dummy::Behaviour);
    first.dial(address.clone()).unwrap();
    let established = tokio::time::timeout(support::HANG, async {
        loop {
            if let SwarmEvent::ConnectionEstablished { connection_id, .. } =
                first.select_next_some().await
            {
                return connection_id;
            }
        }
    })
    .await
    .expect("the first connection is accepted");
    let mut other = support::tcp::swarm(|_| dummy::Behaviour);
    let second = if same_peer { &mut first } else { &mut other };
    second
        .dial(
            DialOpts::peer_id(server)
                .addresses(vec![address])
                .condition(PeerCondition::Always)
                .build(),
        )
        .unwrap();
    tokio::time::timeout(support::HANG, async {
        loop {
            match second.select_next_some().await {
                SwarmEvent::ConnectionClosed { connection_id, .. } => {
                    assert_ne!(connection_id, established, "the first connection closed");
                    return;
                }
                SwarmEvent::OutgoingConnectionError { .. } => return,
                _ => {}
            }
        }
    })
    .await
    .expect("the second connection is refused");
}

#[tokio::test]
async fn serve_refuses_connections_over_its_total_cap() {
    // The first connection holds nothing but is in its grace period (10 s): it is kept.
    second_connection_is_refused(&["--max-connections", "1"], false).await;
}

#[tokio::test]
async fn serve_refuses_connections_over_its_per_peer_cap() {
    second_connection_is_refused(&["--max-connections-per-peer", "1"], true).await;
}

/// Dials `address` from `client` and waits for the connection to be established; panics on a
/// refusal.
async fn established<B: libp2p::swarm::NetworkBehaviour>(client: &mut libp2p::Swarm<B>) {
    use futures::StreamExt;
    use libp2p::swarm::SwarmEvent;
    loop {
        match client.select_next_some().await {
            SwarmEvent::ConnectionEstablished { .. } => return,
            SwarmEvent::OutgoingConnectionError { error, .. } => panic!("refused: {error}"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn serve_holds_handshakes_over_its_pending_cap_until_a_slot_frees() {
    for listen in [TCP, WS] {
        holds_handshakes_over_the_pending_cap(listen).await;
    }
}

async fn holds_handshakes_over_the_pending_cap(listen: &str) {
    use libp2p::swarm::dummy;

    let (_serve, address) = serve_on(listen, &["--max-pending-incoming", "1"]);
    // A TCP connection that never starts its handshake (noise, or WebSocket's HTTP upgrade)
    // holds the one slot.
    let stalled = std::net::TcpStream::connect(("127.0.0.1", tcp_port(&address))).unwrap();
    let mut client = support::tcp::swarm(|_| dummy::Behaviour);
    client.dial(address.clone()).unwrap();
    // The dial waits: not refused, not through, while the slot is held (a wait for an event
    // that must not come; the handshake timeout, 5 s, is far off).
    let early = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        established(&mut client),
    )
    .await;
    assert!(
        early.is_err(),
        "{listen}: a handshake over the cap waits for its slot"
    );
    drop(stalled);
    tokio::time::timeout(support::HANG, established(&mut client))
        .await
        .expect("the waiting handshake runs once the slot is free");
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_takes_a_burst_of_dials_far_over_its_pending_cap() {
    for listen in [TCP, WS] {
        takes_a_burst_of_dials(listen).await;
    }
}

async fn takes_a_burst_of_dials(listen: &str) {
    use libp2p::swarm::dummy;

    // A reconnect storm: 200 clients dial at once; 16 handshakes run at a time (4 for one
    // address, and they all come from 127.0.0.1), all get in.
    let (_serve, address) = serve_on(listen, &["--max-pending-incoming", "16"]);
    let dials = (0..200).map(|_| {
        let address = address.clone();
        tokio::spawn(async move {
            let mut client = support::tcp::swarm(|_| dummy::Behaviour);
            client.dial(address).unwrap();
            established(&mut client).await;
            client
        })
    });
    let clients = tokio::time::timeout(support::HANG, futures::future::join_all(dials))
        .await
        .expect("every dial ends within the safety net");
    let connected = clients.into_iter().filter(|c| c.is_ok()).count();
    assert_eq!(
        connected, 200,
        "{listen}: every client of the burst connects"
    );
}

/// A rust-libp2p 0.18 client registers in `n` namespaces at once (request-response: up to 100
/// streams in flight) on `serve` with default flags; returns how many were registered and how
/// many failed, and panics if its connection closes.
async fn rust_client_registers_at_once(n: usize) -> (usize, usize) {
    use futures::StreamExt;
    use libp2p::{rendezvous, swarm::SwarmEvent};

    let (_serve, address) = serve();
    let server = peer_of(&address);
    let mut client = support::tcp::swarm(|key| rendezvous::client::Behaviour::new(key.clone()));
    client.add_external_address("/ip4/127.0.0.1/tcp/9".parse().unwrap());
    client.dial(address).unwrap();
    tokio::time::timeout(support::HANG, async {
        let (mut registered, mut failed) = (0, 0);
        loop {
            if registered + failed == n {
                return (registered, failed);
            }
            match client.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => {
                    for i in 0..n {
                        let namespace = rendezvous::Namespace::new(format!("ns-{i}")).unwrap();
                        client
                            .behaviour_mut()
                            .register(namespace, server, None)
                            .unwrap();
                    }
                }
                SwarmEvent::Behaviour(rendezvous::client::Event::Registered { .. }) => {
                    registered += 1;
                }
                // rust-libp2p's client fails, on its own side, a request over its 100 streams
                // ("max sub-streams reached"), and reports any failure as `Unavailable`.
                SwarmEvent::Behaviour(rendezvous::client::Event::RegisterFailed { .. }) => {
                    failed += 1;
                }
                SwarmEvent::ConnectionClosed { cause, .. } => {
                    panic!("the connection closed after {registered} registrations: {cause:?}")
                }
                _ => {}
            }
        }
    })
    .await
    .expect("every REGISTER answered")
}

#[tokio::test]
async fn serve_answers_64_concurrent_registers_of_a_rust_libp2p_client() {
    assert_eq!(rust_client_registers_at_once(64).await, (64, 0));
}

#[tokio::test]
async fn serve_answers_110_concurrent_registers_of_a_rust_libp2p_client() {
    // Every stream the client could open (100) is answered; at most the 10 over its own
    // stream cap fail, in the client; the connection stays.
    let (registered, failed) = rust_client_registers_at_once(110).await;
    assert!(
        registered >= 100 && failed <= 10,
        "{registered} registered, {failed} failed"
    );
}

#[tokio::test]
async fn serve_makes_room_at_its_cap_by_closing_an_idle_connection_not_a_registered_one() {
    use futures::StreamExt;
    use libp2p::{swarm::dummy, swarm::SwarmEvent};

    // Two connections at most; a connection holding nothing may be closed at once.
    let (_serve, address) = serve_with(&[
        "--max-connections",
        "2",
        "--connection-grace-ms",
        "0",
        "--idle-timeout",
        "3600",
    ]);
    let mut registered = registered_rust_client(&address).await;
    // The cap is full with an idle peer beside the registered one.
    let mut idle = support::tcp::swarm(|_| dummy::Behaviour);
    idle.dial(address.clone()).unwrap();
    tokio::time::timeout(support::HANG, established(&mut idle))
        .await
        .unwrap();
    // A newcomer takes the idle peer's place; the registered peer keeps its connection.
    let mut newcomer = support::tcp::swarm(|_| dummy::Behaviour);
    newcomer.dial(address.clone()).unwrap();
    tokio::time::timeout(support::HANG, async {
        let mut newcomer_in = false;
        let mut idle_out = false;
        while !(newcomer_in && idle_out) {
            tokio::select! {
                event = newcomer.select_next_some() => match event {
                    SwarmEvent::ConnectionEstablished { .. } => newcomer_in = true,
                    SwarmEvent::OutgoingConnectionError { error, .. } => panic!("refused: {error}"),
                    _ => {}
                },
                event = idle.select_next_some() => {
                    if let SwarmEvent::ConnectionClosed { .. } = event {
                        idle_out = true;
                    }
                }
                event = registered.select_next_some() => {
                    assert!(
                        !matches!(event, SwarmEvent::ConnectionClosed { .. }),
                        "the registered peer's connection closed: {event:?}"
                    );
                }
            }
        }
    })
    .await
    .expect("the newcomer got the idle connection's place");
}
