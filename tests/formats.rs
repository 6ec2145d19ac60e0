//! Record formats at the swarm level: the server decides what each asker reads (three record
//! generations), asks the asker's identify itself when it does not know, holds a DISCOVER
//! meanwhile, and never lets a cookie move past a record the asker could read.
//!
//! Peers announcing js-libp2p and go-libp2p agents are raw rendezvous clients with identify
//! (the agent is what the server reads); rust-libp2p's own 0.18 client is the real crate.

mod support;

use std::{collections::HashMap, time::Duration};

use libp2p::{
    identify,
    identity::Keypair,
    rendezvous,
    swarm::{behaviour::toggle::Toggle, NetworkBehaviour, Stream},
    Multiaddr, PeerId,
};
use rendezvous_discovery::{
    client::{self, Event},
    codec::{DiscoverPage, Message, NewRegistration},
    server::{self, ServedFormats},
    Cookie, ErrorCode, ErrorResponse, Namespace, RecordFormat, SignedRecord,
};
use support::{
    memory_addr,
    node::{spawn, spawn_as_is, Node},
    raw, HANG,
};

#[derive(NetworkBehaviour)]
struct ServerNode {
    identify: Toggle<identify::Behaviour>,
    rendezvous: server::Behaviour,
}

#[derive(NetworkBehaviour)]
struct ClientNode {
    identify: identify::Behaviour,
    rendezvous: client::Behaviour,
}

#[derive(NetworkBehaviour)]
struct RustClientNode {
    identify: identify::Behaviour,
    rendezvous: rendezvous::client::Behaviour,
}

/// rust-libp2p's client in `r` asks `server` for namespace "formats": what `pick` takes of each
/// registration it decoded, or its error.
async fn rust_discover<T>(
    r: &mut Node<RustClientNode>,
    server: PeerId,
    pick: impl Fn(&rendezvous::Registration) -> T,
) -> Result<Vec<T>, String> {
    r.run(move |s| {
        s.behaviour_mut().rendezvous.discover(
            Some(rendezvous::Namespace::from_static("formats")),
            None,
            None,
            server,
        )
    });
    r.wait_for(|e| match e {
        RustClientNodeEvent::Rendezvous(rendezvous::client::Event::Discovered {
            registrations,
            ..
        }) => Some(Ok(registrations.iter().map(&pick).collect())),
        RustClientNodeEvent::Rendezvous(rendezvous::client::Event::DiscoverFailed {
            error,
            ..
        }) => Some(Err(format!("{error:?}"))),
        _ => None,
    })
    .await
}

/// A raw rendezvous client, with identify announcing some agent or without identify.
#[derive(NetworkBehaviour)]
struct RawNode {
    identify: Toggle<identify::Behaviour>,
    raw: raw::Behaviour,
}

/// Identify announcing `agent` (`None`: rust-libp2p's default, "rust-libp2p/…").
fn identify(key: &Keypair, agent: Option<&str>) -> identify::Behaviour {
    let config = identify::Config::new("/ipfs/id/1.0.0".into(), key.public());
    identify::Behaviour::new(match agent {
        Some(agent) => config.with_agent_version(agent.into()),
        None => config,
    })
}

const JS: &str = "js-libp2p/2.8.2 UserAgent=v22.14.0";
const GO: &str = "github.com/libp2p/go-libp2p";
const PY: &str = "py-libp2p/0.8.1";

fn ns() -> Namespace {
    Namespace::from_static("formats")
}

/// A server like `rendezvous serve` (identify beside it when `with_identify`). Its wait for an
/// asker's identify is long: every test peer answers or refuses, and a loaded machine must not
/// make an answer late.
async fn server(config: server::Config, with_identify: bool) -> Node<ServerNode> {
    let config = config.with_identify_wait(HANG);
    let server = support::swarm(|key| ServerNode {
        identify: Toggle::from(with_identify.then(|| identify(&key, Some("rendezvous-server")))),
        rendezvous: server::Behaviour::new(config),
    });
    spawn(server).await
}

/// What the server serves `peer` now.
async fn served_now(server: &Node<ServerNode>, peer: PeerId) -> ServedFormats {
    server
        .ask(move |s| s.behaviour().rendezvous.served_formats(&peer))
        .await
}

/// A raw peer (identify with `agent` when `Some`), connected to `server`, and a stream to it.
async fn raw_peer(
    server: &Node<ServerNode>,
    agent: Option<&str>,
) -> (Node<RawNode>, Keypair, Stream) {
    let (mut node, key) = connected_raw_peer(server, agent).await;
    let stream = open(&mut node, server.peer).await;
    (node, key, stream)
}

/// A raw peer (identify with `agent` when `Some`), connected to `server`.
async fn connected_raw_peer(
    server: &Node<ServerNode>,
    agent: Option<&str>,
) -> (Node<RawNode>, Keypair) {
    let key = Keypair::generate_ed25519();
    let node = support::swarm_with_key(key.clone(), |key| RawNode {
        identify: Toggle::from(agent.map(|agent| identify(&key, Some(agent)))),
        raw: raw::Behaviour::new(key.clone()),
    });
    let mut node = spawn_as_is(node);
    node.dial(server.addr());
    node.wait_connected(server.peer).await;
    (node, key)
}

/// Opens a new rendezvous stream from `node` to `server`.
async fn open(node: &mut Node<RawNode>, server: PeerId) -> Stream {
    node.run(move |s| s.behaviour_mut().raw.open(server));
    node.take(|e| match e {
        RawNodeEvent::Raw(raw::Event::Opened(_, stream)) => Some(stream),
        RawNodeEvent::Raw(raw::Event::Failed(_, error)) => panic!("no stream: {error}"),
        _ => None,
    })
    .await
}

async fn request(stream: &mut Stream, message: Message) -> Message {
    raw::send(stream, &message).await;
    tokio::time::timeout(HANG, raw::recv(stream))
        .await
        .expect("no answer")
        .expect("the stream closed without an answer")
}

async fn discover(
    stream: &mut Stream,
    cookie: Option<Cookie>,
) -> Result<DiscoverPage, ErrorResponse> {
    let message = Message::Discover {
        namespace: Some(ns()),
        cookie,
        limit: None,
    };
    match request(stream, message).await {
        Message::DiscoverResponse(result) => result,
        other => panic!("expected a DISCOVER_RESPONSE, got {other:?}"),
    }
}

async fn register(stream: &mut Stream, record: SignedRecord) {
    let message = Message::Register(NewRegistration {
        namespace: ns(),
        record,
        ttl: None,
    });
    let response = request(stream, message).await;
    assert!(
        matches!(response, Message::RegisterResponse(Ok(_))),
        "{response:?}"
    );
}

/// A peer registered in [`ns`] with one address, in `format`.
struct Registrant {
    _node: Node<RawNode>,
    peer: PeerId,
    addr: Multiaddr,
    format: RecordFormat,
}

async fn registrant(server: &Node<ServerNode>, format: RecordFormat) -> Registrant {
    let (node, key, mut stream) = raw_peer(server, None).await;
    let addr: Multiaddr = format!("/ip4/10.0.0.{}/tcp/4001", rand::random::<u8>())
        .parse()
        .unwrap();
    register(
        &mut stream,
        SignedRecord::new(&key, vec![addr.clone()], format).unwrap(),
    )
    .await;
    Registrant {
        peer: node.peer,
        _node: node,
        addr,
        format,
    }
}

/// Three standard registrants (go, js, nim, ours) and one legacy one (rust-libp2p 0.18).
async fn signed_registrants(server: &Node<ServerNode>) -> Vec<Registrant> {
    let mut out = Vec::new();
    for format in [
        RecordFormat::Standard,
        RecordFormat::Standard,
        RecordFormat::Standard,
        RecordFormat::Legacy,
    ] {
        out.push(registrant(server, format).await);
    }
    out
}

fn peers_of(page: &DiscoverPage) -> Vec<(PeerId, RecordFormat)> {
    let mut peers: Vec<_> = page
        .registrations
        .iter()
        .map(|r| (r.record.peer_id(), r.record.format()))
        .collect();
    peers.sort();
    peers
}

fn expected(registrants: &[Registrant], served: ServedFormats) -> Vec<(PeerId, RecordFormat)> {
    let mut peers: Vec<_> = registrants
        .iter()
        .filter(|r| served.includes(r.format))
        .map(|r| match served {
            ServedFormats::AsPeerInfo => (r.peer, RecordFormat::PeerInfo),
            _ => (r.peer, r.format),
        })
        .collect();
    peers.sort();
    peers
}

#[tokio::test]
/// js-libp2p's rendezvous client fails a whole page on one legacy record: a js agent is sent
/// standard records only; go's client skips what it cannot verify, and gets the spec's set.
async fn js_and_go_discover_only_peers_get_the_signed_records_they_read_on_the_first_page() {
    let server = server(server::Config::default(), true).await;
    let registrants = signed_registrants(&server).await;
    assert_eq!(expected(&registrants, ServedFormats::Signed).len(), 4);
    for (agent, served) in [(JS, ServedFormats::Standard), (GO, ServedFormats::Signed)] {
        let readable = expected(&registrants, served);
        // DISCOVER at once, before either side's identify has run.
        let (node, _, mut stream) = raw_peer(&server, Some(agent)).await;
        let page = discover(&mut stream, None).await.unwrap();
        assert_eq!(peers_of(&page), readable, "{agent}, before identify");
        assert_eq!(served_now(&server, node.peer).await, served);

        // DISCOVER after identify ran both ways.
        let (mut node, _) = connected_raw_peer(&server, Some(agent)).await;
        let server_peer = server.peer;
        node.wait_for(|e| match e {
            RawNodeEvent::Identify(identify::Event::Sent { peer_id, .. })
                if *peer_id == server_peer =>
            {
                Some(())
            }
            _ => None,
        })
        .await;
        let mut stream = open(&mut node, server.peer).await;
        let page = discover(&mut stream, None).await.unwrap();
        assert_eq!(peers_of(&page), readable, "{agent}, after identify");
    }
}

#[tokio::test]
async fn a_discover_only_peer_without_identify_gets_every_signed_record_on_the_first_page() {
    for server_identify in [true, false] {
        let server = server(server::Config::default(), server_identify).await;
        let registrants = signed_registrants(&server).await;
        let (_node, _, mut stream) = raw_peer(&server, None).await;
        let page = discover(&mut stream, None).await.unwrap();
        assert_eq!(
            peers_of(&page),
            expected(&registrants, ServedFormats::Signed),
            "server identify: {server_identify}"
        );
    }
}

#[tokio::test]
async fn a_rust_libp2p_client_never_gets_an_undecodable_page() {
    let server = server(server::Config::default(), true).await;
    let registrants = signed_registrants(&server).await;
    let legacy = registrants
        .iter()
        .find(|r| r.format == RecordFormat::Legacy)
        .unwrap()
        .peer;
    let r = support::swarm(|key| RustClientNode {
        identify: identify(&key, None),
        rendezvous: rendezvous::client::Behaviour::new(key.clone()),
    });
    let mut r = spawn_as_is(r);
    let addr = server.addr();
    let server_peer = server.peer;
    r.run(move |s| s.dial(addr).unwrap());
    r.wait_connected(server_peer).await;
    // The first DISCOVER goes out as soon as the connection is up, before identify has run;
    // the second after it.
    for round in 0..2 {
        let page = rust_discover(&mut r, server_peer, |r| r.record.peer_id()).await;
        assert_eq!(page, Ok(vec![legacy]), "round {round}");
        assert_eq!(served_now(&server, r.peer).await, ServedFormats::LegacyOnly);
    }
}

#[tokio::test]
async fn a_discover_only_client_of_ours_is_served_every_entry() {
    let server = server(server::Config::default(), true).await;
    // Discovers only; learns the server from identify.
    let config = client::Config::default()
        .with_namespace(ns())
        .with_registration(false);
    let d = support::swarm(|key| ClientNode {
        identify: identify(&key, None),
        rendezvous: client::Behaviour::new(key.clone(), config),
    });
    let mut d = spawn_as_is(d);
    d.dial(server.addr());
    let server_peer = server.peer;
    d.wait_for(|e| match e {
        ClientNodeEvent::Rendezvous(Event::ServerAdded { server }) if *server == server_peer => {
            Some(())
        }
        _ => None,
    })
    .await;
    let registrant = registrant(&server, RecordFormat::Standard).await;
    // Asked now rather than at the next automatic DISCOVER (a second away).
    d.run(move |s| {
        s.behaviour_mut()
            .rendezvous
            .discover(server_peer, Some(ns()), None, None);
    });
    let found = d
        .wait_for(|e| match e {
            ClientNodeEvent::Rendezvous(Event::Discovered { peer, .. }) => Some(*peer),
            _ => None,
        })
        .await;
    assert_eq!(found, registrant.peer);
    assert_eq!(served_now(&server, d.peer).await, ServedFormats::All);
}

#[tokio::test]
async fn a_discover_only_client_of_ours_sees_everything_on_its_first_discover() {
    let mut server = server(server::Config::default(), true).await;
    let registrant = registrant(&server, RecordFormat::PeerInfo).await;
    // Configured with the server: it dials and discovers at once. A long interval: only the
    // first DISCOVER can find the record.
    let config = client::Config::default()
        .with_server(server.peer, vec![server.addr()])
        .with_namespace(ns())
        .with_registration(false)
        .with_interval(Duration::from_secs(3600));
    let d = support::swarm(|key| ClientNode {
        identify: identify(&key, None),
        rendezvous: client::Behaviour::new(key.clone(), config),
    });
    let mut d = spawn_as_is(d);
    let found = d
        .wait_for(|e| match e {
            ClientNodeEvent::Rendezvous(Event::Discovered { peer, addrs, .. }) => {
                Some((*peer, addrs.clone()))
            }
            _ => None,
        })
        .await;
    assert_eq!(found, (registrant.peer, vec![registrant.addr.clone()]));
    let d_peer = d.peer;
    let first_page =
        server
            .wait_for(|e| match e {
                ServerNodeEvent::Rendezvous(server::Event::DiscoverServed {
                    peer, count, ..
                }) if *peer == d_peer => Some(*count),
                _ => None,
            })
            .await;
    assert_eq!(first_page, 1, "the first page has the record");
}

#[tokio::test]
async fn a_cookie_cut_before_the_formats_widened_starts_over_and_hides_nothing() {
    // A rust-only network's setting, and a peer without identify: legacy records only, until
    // the application says otherwise (as a late identify answer would).
    let config = server::Config::default().with_unknown_peer_formats(ServedFormats::LegacyOnly);
    let server = server(config, false).await;
    let registrants = signed_registrants(&server).await;
    let (node, _, mut stream) = raw_peer(&server, None).await;
    let page = discover(&mut stream, None).await.unwrap();
    assert_eq!(
        peers_of(&page),
        expected(&registrants, ServedFormats::LegacyOnly)
    );
    let cookie = page.cookie.unwrap();

    let peer = node.peer;
    server.run(move |s| {
        s.behaviour_mut()
            .rendezvous
            .set_served_formats(peer, ServedFormats::Signed)
    });
    let refused = discover(&mut stream, Some(cookie)).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::InvalidCookie, "{refused}");
    let page = discover(&mut stream, None).await.unwrap();
    assert_eq!(
        peers_of(&page),
        expected(&registrants, ServedFormats::Signed)
    );
}

#[tokio::test]
async fn a_register_in_another_format_after_paging_starts_the_pager_over() {
    let server = server(server::Config::default(), true).await;
    let mut registrants = signed_registrants(&server).await;
    registrants.push(registrant(&server, RecordFormat::PeerInfo).await);
    // A go peer: signed records, the PeerInfo registration left out.
    let (node, key, mut stream) = raw_peer(&server, Some(GO)).await;
    let page = discover(&mut stream, None).await.unwrap();
    assert_eq!(
        peers_of(&page),
        expected(&registrants, ServedFormats::Signed)
    );
    let cookie = page.cookie.unwrap();
    // It registers a PeerInfo (an old go-libp2p-rendezvous): it reads PeerInfo from now on.
    register(
        &mut stream,
        SignedRecord::new(&key, vec![memory_addr()], RecordFormat::PeerInfo).unwrap(),
    )
    .await;
    assert_eq!(
        served_now(&server, node.peer).await,
        ServedFormats::AsPeerInfo
    );
    let refused = discover(&mut stream, Some(cookie)).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::InvalidCookie, "{refused}");
    let page = discover(&mut stream, None).await.unwrap();
    let mut want = expected(&registrants, ServedFormats::AsPeerInfo);
    want.push((node.peer, RecordFormat::PeerInfo));
    want.sort();
    assert_eq!(peers_of(&page), want);
    // Handed out as PeerInfo, every entry keeps its addresses.
    let addrs: HashMap<PeerId, Vec<Multiaddr>> = page
        .registrations
        .iter()
        .map(|r| (r.record.peer_id(), r.record.addresses().to_vec()))
        .collect();
    for r in &registrants {
        assert_eq!(addrs[&r.peer], vec![r.addr.clone()]);
    }
}

#[tokio::test]
async fn three_generations_in_one_namespace_each_see_every_peer_they_can_read() {
    let server = server(server::Config::default(), true).await;
    let client = |format| {
        let config = client::Config::default()
            .with_server(server.peer, vec![server.addr()])
            .with_namespace(ns())
            .with_record_format(format)
            .with_test_interval(Duration::from_millis(50));
        support::swarm(|key| ClientNode {
            identify: identify(&key, None),
            rendezvous: client::Behaviour::new(key.clone(), config),
        })
    };
    // Ours, registering standard records and legacy ones (as at a rust-libp2p 0.18 server).
    let mut standard = spawn(client(RecordFormat::Standard)).await;
    let mut legacy = spawn(client(RecordFormat::Legacy)).await;
    // A py-libp2p 0.8 peer: registers a PeerInfo, reads PeerInfo.
    let (py, py_key, mut py_stream) = raw_peer(&server, Some(PY)).await;
    let py_addr = memory_addr();
    register(
        &mut py_stream,
        SignedRecord::new(&py_key, vec![py_addr.clone()], RecordFormat::PeerInfo).unwrap(),
    )
    .await;
    // rust-libp2p's own 0.18 client: registers and reads legacy records only.
    let r = support::swarm(|key| RustClientNode {
        identify: identify(&key, None),
        rendezvous: rendezvous::client::Behaviour::new(key.clone()),
    });
    let mut r = spawn(r).await;
    let (server_peer, server_addr) = (server.peer, server.addr());
    r.run(move |s| s.dial(server_addr).unwrap());
    r.wait_connected(server_peer).await;
    r.run(move |s| {
        s.behaviour_mut()
            .rendezvous
            .register(
                rendezvous::Namespace::from_static("formats"),
                server_peer,
                None,
            )
            .unwrap()
    });
    r.wait_for(|e| match e {
        RustClientNodeEvent::Rendezvous(rendezvous::client::Event::Registered { .. }) => Some(()),
        _ => None,
    })
    .await;

    let mut want = HashMap::from([
        (standard.peer, vec![standard.addr()]),
        (legacy.peer, vec![legacy.addr()]),
        (py.peer, vec![py_addr]),
        (r.peer, vec![r.addr()]),
    ]);
    // Our clients see every other peer, with its addresses.
    for node in [&mut standard, &mut legacy] {
        let mut seen = HashMap::new();
        while seen.len() < 3 {
            let (peer, addrs) = node
                .wait_for(|e| match e {
                    ClientNodeEvent::Rendezvous(Event::Discovered { peer, addrs, .. }) => {
                        Some((*peer, addrs.clone()))
                    }
                    _ => None,
                })
                .await;
            seen.insert(peer, addrs);
        }
        let mut others = want.clone();
        others.remove(&node.peer);
        assert_eq!(seen, others);
    }
    // The py peer reads every registration, each as a PeerInfo, with its addresses.
    let page = discover(&mut py_stream, None).await.unwrap();
    assert_eq!(page.skipped, 0);
    let seen: HashMap<PeerId, Vec<Multiaddr>> = page
        .registrations
        .iter()
        .inspect(|r| assert_eq!(r.record.format(), RecordFormat::PeerInfo))
        .map(|r| (r.record.peer_id(), r.record.addresses().to_vec()))
        .collect();
    assert_eq!(seen, want);
    // rust-libp2p's client decodes its page: the legacy records, its own among them.
    let page = rust_discover(&mut r, server_peer, |r| {
        (r.record.peer_id(), r.record.addresses().to_vec())
    })
    .await
    .map(|page| page.into_iter().collect::<HashMap<_, _>>());
    want.retain(|peer, _| *peer == legacy.peer || *peer == r.peer);
    assert_eq!(page, Ok(want));
}
