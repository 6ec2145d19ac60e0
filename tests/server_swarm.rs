//! The server in a swarm, against rust-libp2p's own rendezvous client (0.18, legacy records)
//! and the raw test client.

mod support;

use libp2p::{
    rendezvous::{self, client::Event as ClientEvent},
    swarm::SwarmEvent,
    PeerId, Swarm,
};
use libp2p_swarm_test::{drive, SwarmExt};
use rendezvous_discovery::{
    codec::{Message, NewRegistration},
    server, Namespace, RecordFormat,
};

use support::{our_server as server, raw, rust_client};

fn chat() -> rendezvous::Namespace {
    rendezvous::Namespace::from_static("chat")
}

/// Registers `client` in "chat" and waits for both sides to report it.
async fn register(
    client: &mut Swarm<rendezvous::client::Behaviour>,
    server: &mut Swarm<server::Behaviour>,
) {
    let server_id = *server.local_peer_id();
    client
        .behaviour_mut()
        .register(chat(), server_id, None)
        .unwrap();
    let ([registered], [server_event]): ([ClientEvent; 1], [server::Event; 1]) =
        drive(client, server).await;
    assert!(
        matches!(registered, ClientEvent::Registered { ttl, .. } if ttl == rendezvous_discovery::DEFAULT_TTL),
        "{registered:?}"
    );
    match server_event {
        server::Event::PeerRegistered {
            peer, registration, ..
        } => {
            assert_eq!(peer, *client.local_peer_id());
            assert_eq!(registration.namespace.as_str(), "chat");
            assert_eq!(registration.record.format(), RecordFormat::Legacy);
        }
        other => panic!("expected PeerRegistered, got {other:?}"),
    }
}

/// Discovers in "chat" from `client`; returns the peers and the cookie.
async fn discover(
    client: &mut Swarm<rendezvous::client::Behaviour>,
    server: &mut Swarm<server::Behaviour>,
    cookie: Option<rendezvous::Cookie>,
) -> (Vec<PeerId>, rendezvous::Cookie, server::Event) {
    let server_id = *server.local_peer_id();
    client
        .behaviour_mut()
        .discover(Some(chat()), cookie, None, server_id);
    let ([discovered], [served]): ([ClientEvent; 1], [server::Event; 1]) =
        drive(client, server).await;
    match discovered {
        ClientEvent::Discovered {
            registrations,
            cookie,
            ..
        } => (
            registrations.iter().map(|r| r.record.peer_id()).collect(),
            cookie,
            served,
        ),
        other => panic!("expected Discovered, got {other:?}"),
    }
}

#[tokio::test]
async fn a_rust_libp2p_client_registers_discovers_and_unregisters() {
    let mut server = server(server::Config::default()).await;
    let mut alice = rust_client(&mut server).await;
    let mut bob = rust_client(&mut server).await;
    let alice_id = *alice.local_peer_id();

    register(&mut alice, &mut server).await;
    assert_eq!(server.behaviour().registration_count(), Some(1));
    assert_eq!(
        server
            .behaviour()
            .registrations_of(&alice_id)
            .map(|r| r.len()),
        Some(1)
    );

    let (peers, cookie, served) = discover(&mut bob, &mut server, None).await;
    assert_eq!(peers, vec![alice_id]);
    assert!(
        matches!(served, server::Event::DiscoverServed { count: 1, ref namespace, .. } if namespace.as_ref().map(|n| n.as_str()) == Some("chat")),
        "{served:?}"
    );

    // With the cookie, nothing new.
    let (peers, cookie, _) = discover(&mut bob, &mut server, Some(cookie)).await;
    assert!(peers.is_empty());

    let server_id = *server.local_peer_id();
    alice.behaviour_mut().unregister(chat(), server_id);
    let ([], [unregistered]): ([ClientEvent; 0], [server::Event; 1]) =
        drive(&mut alice, &mut server).await;
    assert_eq!(
        unregistered,
        server::Event::PeerUnregistered {
            peer: alice_id,
            namespace: Namespace::from_static("chat"),
            cause: server::Removal::Unregister,
        }
    );
    assert_eq!(server.behaviour().registration_count(), Some(0));
    let (peers, _, _) = discover(&mut bob, &mut server, Some(cookie)).await;
    assert!(peers.is_empty());
}

#[tokio::test]
async fn given_remove_on_disconnect_when_the_last_connection_closes_then_registrations_go() {
    let mut server = server(server::Config::default()).await;
    let mut alice = rust_client(&mut server).await;
    let alice_id = *alice.local_peer_id();
    register(&mut alice, &mut server).await;

    alice.disconnect_peer_id(*server.local_peer_id()).unwrap();
    tokio::spawn(alice.loop_on_next());
    let namespace = server
        .wait(|event| match event {
            SwarmEvent::Behaviour(server::Event::PeerUnregistered {
                peer,
                namespace,
                cause: server::Removal::Disconnect,
            }) if peer == alice_id => Some(namespace),
            _ => None,
        })
        .await;
    assert_eq!(namespace.as_str(), "chat");
    assert_eq!(server.behaviour().registration_count(), Some(0));
}

#[tokio::test]
async fn given_keep_on_disconnect_when_the_connection_closes_then_registrations_stay() {
    let mut server = server(server::Config::default().with_remove_on_disconnect(false)).await;
    let mut alice = rust_client(&mut server).await;
    let alice_id = *alice.local_peer_id();
    register(&mut alice, &mut server).await;

    alice.disconnect_peer_id(*server.local_peer_id()).unwrap();
    tokio::spawn(alice.loop_on_next());
    server
        .wait(|event| match event {
            SwarmEvent::ConnectionClosed { peer_id, .. } if peer_id == alice_id => Some(()),
            SwarmEvent::Behaviour(server::Event::PeerUnregistered { .. }) => {
                panic!("registration removed despite keep-on-disconnect")
            }
            _ => None,
        })
        .await;
    assert_eq!(
        server
            .behaviour()
            .registrations_of(&alice_id)
            .map(|r| r.len()),
        Some(1)
    );
}

/// When registrations expire is the store's business (`registrations.rs`,
/// `given_registrations_when_time_passes_then_they_expire_in_deadline_order`, in virtual time);
/// this checks that the behaviour's timer collects them: a TTL of 0 (a minimum of 0 allows it)
/// is due at once.
#[tokio::test]
async fn a_registration_expires_through_the_behaviours_timer() {
    let mut server = server(server::Config::default().with_min_ttl(0)).await;
    let mut alice = rust_client(&mut server).await;
    let server_id = *server.local_peer_id();
    alice
        .behaviour_mut()
        .register(chat(), server_id, Some(0))
        .unwrap();
    tokio::spawn(alice.loop_on_next());
    let expired = server
        .wait(|event| match event {
            SwarmEvent::Behaviour(server::Event::RegistrationExpired(registration)) => {
                Some(registration)
            }
            _ => None,
        })
        .await;
    assert_eq!(expired.ttl, 0);
    assert_eq!(server.behaviour().registration_count(), Some(0));
}

#[tokio::test]
async fn a_rust_libp2p_client_never_receives_a_standard_record_it_cannot_decode() {
    // These rust-libp2p clients run no identify, so nothing tells the server what they are:
    // the setting for a network of rust-libp2p 0.18 clients (see tests/formats.rs for the
    // default, with identify).
    let mut server = server(
        server::Config::default().with_unknown_peer_formats(server::ServedFormats::LegacyOnly),
    )
    .await;
    // A standard-format registrant (go, js, nim, this crate) through the raw client.
    let mut go = Swarm::new_ephemeral_tokio(raw::Behaviour::new);
    go.connect(&mut server).await;
    let go_id = *go.local_peer_id();
    let standard = go.behaviour().record(RecordFormat::Standard);
    let mut stream = raw::open_stream(&mut go, &mut server).await;
    let register_chat = Message::Register(NewRegistration {
        namespace: Namespace::from_static("chat"),
        record: standard,
        ttl: None,
    });
    let (response, _) = support::run_while(
        raw::request(&mut stream, &register_chat),
        &mut server,
        &mut go,
    )
    .await;
    assert!(
        matches!(response, Some(Message::RegisterResponse(Ok(_)))),
        "{response:?}"
    );

    // A legacy registrant (rust-libp2p 0.18).
    let mut alice = rust_client(&mut server).await;
    let alice_id = *alice.local_peer_id();
    register(&mut alice, &mut server).await;
    // A rust-libp2p client that never registered: legacy only, and the page decodes.
    let mut bob = rust_client(&mut server).await;
    let (peers, _, _) = discover(&mut bob, &mut server, None).await;
    assert_eq!(peers, vec![alice_id]);
    let (peers, _, _) = discover(&mut alice, &mut server, None).await;
    assert_eq!(peers, vec![alice_id]);

    // The standard registrant gets both.
    let discover_chat = Message::Discover {
        namespace: Some(Namespace::from_static("chat")),
        cookie: None,
        limit: None,
    };
    let (page, _) = support::run_while(
        raw::request(&mut stream, &discover_chat),
        &mut server,
        &mut go,
    )
    .await;
    let Some(Message::DiscoverResponse(Ok(page))) = page else {
        panic!("expected a page, got {page:?}");
    };
    let formats: Vec<_> = page
        .registrations
        .iter()
        .map(|r| (r.record.peer_id(), r.record.format()))
        .collect();
    assert_eq!(
        formats,
        vec![
            (go_id, RecordFormat::Standard),
            (alice_id, RecordFormat::Legacy)
        ]
    );

    assert_eq!(
        server
            .behaviour()
            .registrations_in(&Namespace::from_static("chat"))
            .map(|r| r.len()),
        Some(2)
    );

    // Why the rule exists: once the app (wrongly) says bob decodes standard records, bob's
    // rust-libp2p client rejects the whole page.
    server
        .behaviour_mut()
        .set_served_formats(*bob.local_peer_id(), server::ServedFormats::Signed);
    let server_id = *server.local_peer_id();
    bob.behaviour_mut()
        .discover(Some(chat()), None, None, server_id);
    let ([failed], [_served]): ([ClientEvent; 1], [server::Event; 1]) =
        drive(&mut bob, &mut server).await;
    assert!(
        matches!(failed, ClientEvent::DiscoverFailed { .. }),
        "{failed:?}"
    );
}
