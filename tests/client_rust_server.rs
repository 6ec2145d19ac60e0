//! The client against rust-libp2p's own rendezvous server (`libp2p-rendezvous` 0.18), which only
//! accepts legacy-format records.

mod support;

use std::time::Duration;

use libp2p::{identity::Keypair, rendezvous};
use rendezvous_discovery::{
    client::{self, Event},
    Namespace, RecordFormat,
};
use support::{
    client::{discovered, registered_at, spawn_client},
    memory_addr,
    node::{spawn_with_identify, Node},
    WithIdentify,
};

/// Servers and clients run identify, as applications do: a client that only discovers holds its
/// first DISCOVER until identify told it the server's protocols.
type Server = Node<WithIdentify<rendezvous::server::Behaviour>, rendezvous::server::Event>;

fn ns() -> Namespace {
    Namespace::from_static("rust-server-test")
}

fn rust_server() -> rendezvous::server::Behaviour {
    rendezvous::server::Behaviour::new(rendezvous::server::Config::default().with_min_ttl(1))
}

async fn server() -> Server {
    spawn_with_identify(support::swarm(|key| {
        WithIdentify::new(key, |_| rust_server())
    }))
    .await
}

fn config(server: &Server) -> client::Config {
    client::Config::default()
        .with_server(server.peer, vec![server.addr()])
        .with_namespace(ns())
        .with_record_format(RecordFormat::Legacy)
        .with_interval(Duration::from_secs(1))
        .with_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .with_seed(3)
}

#[tokio::test]
async fn two_clients_find_each_other() {
    let server = server().await;
    let mut a = spawn_client(config(&server)).await;
    let mut b = spawn_client(config(&server)).await;
    let a_addrs = b.wait_for(discovered(a.peer)).await;
    assert_eq!(a_addrs, vec![a.addr()]);
    let b_addrs = a.wait_for(discovered(b.peer)).await;
    assert_eq!(b_addrs, vec![b.addr()]);
}

#[tokio::test]
async fn a_standard_client_falls_back_to_legacy_on_its_own() {
    let mut server = server().await;
    let mut a = spawn_client(config(&server).with_record_format(RecordFormat::Standard)).await;
    a.wait_for(registered_at).await;
    let who = server
        .wait_for(|e| match e {
            rendezvous::server::Event::PeerRegistered { peer, .. } => Some(*peer),
            _ => None,
        })
        .await;
    assert_eq!(who, a.peer);
    assert!(
        !a.drain()
            .iter()
            .any(|e| matches!(e, Event::RegisterFailed { .. })),
        "the fallback is silent"
    );
}

#[tokio::test]
async fn stop_unregisters_and_reports_stopped() {
    let mut server = server().await;
    let mut a = spawn_client(config(&server).with_discovery(false)).await;
    a.wait_for(registered_at).await;
    a.run(|swarm| swarm.behaviour_mut().rendezvous.stop());
    a.wait_for(|e| matches!(e, Event::Stopped).then_some(()))
        .await;
    let (peer, namespace) = server
        .wait_for(|e| match e {
            rendezvous::server::Event::PeerUnregistered { peer, namespace } => {
                Some((*peer, namespace.to_string()))
            }
            _ => None,
        })
        .await;
    assert_eq!((peer, namespace.as_str()), (a.peer, ns().as_str()));
}

#[tokio::test]
async fn full_pages_are_paged_through_at_once_with_cookies() {
    let mut server = server().await;
    let mut registrants = Vec::new();
    for _ in 0..5 {
        let mut r = spawn_client(config(&server).with_discovery(false)).await;
        r.wait_for(registered_at).await;
        registrants.push(r);
    }
    // A long interval: everything must come within the first tick, by paging.
    let mut b = spawn_client(
        config(&server)
            .with_registration(false)
            .with_limit(2)
            .with_interval(Duration::from_secs(3600)),
    )
    .await;
    let mut found = std::collections::HashSet::new();
    while found.len() < 5 {
        let peer = b
            .wait_for(|e| match e {
                Event::Discovered { peer, .. } => Some(*peer),
                _ => None,
            })
            .await;
        assert!(found.insert(peer), "{peer} discovered twice");
    }
    assert!(registrants.iter().all(|r| found.contains(&r.peer)));
    let mut pages = 0;
    while pages < 3 {
        server
            .wait_for(|e| {
                matches!(e, rendezvous::server::Event::DiscoverServed { .. }).then_some(())
            })
            .await;
        pages += 1;
    }
}

#[tokio::test]
async fn a_discovered_peer_can_be_dialed_by_peer_id_alone() {
    let server = server().await;
    let a = spawn_client(config(&server).with_discovery(false)).await;
    let mut b = spawn_client(config(&server).with_registration(false)).await;
    b.wait_for(discovered(a.peer)).await;
    let a_peer = a.peer;
    b.run(move |swarm| {
        swarm
            .dial(a_peer)
            .expect("the behaviour knows A's addresses")
    });
    b.wait_connected(a.peer).await;
}

#[tokio::test]
async fn a_new_external_address_is_registered_again_with_a_new_record() {
    let mut server = server().await;
    let a = spawn_client(config(&server).with_discovery(false)).await;
    let mut b = spawn_client(config(&server).with_registration(false)).await;
    assert_eq!(b.wait_for(discovered(a.peer)).await.len(), 1);
    let extra = memory_addr();
    let added = extra.clone();
    a.run(move |swarm| swarm.add_external_address(added));
    let a_peer = a.peer;
    let registered = server
        .wait_for(|e| match e {
            rendezvous::server::Event::PeerRegistered { peer, registration }
                if *peer == a_peer && registration.record.addresses().len() == 2 =>
            {
                Some(registration.record.addresses().to_vec())
            }
            _ => None,
        })
        .await;
    assert!(registered.contains(&extra), "{registered:?}");
    // B sees it when it asks next: asked now rather than at its next poll, a second away.
    let server_peer = server.peer;
    b.run(move |swarm| {
        swarm
            .behaviour_mut()
            .rendezvous
            .discover(server_peer, Some(ns()), None, None);
    });
    let addrs = b.wait_for(discovered(a.peer)).await;
    assert_eq!(addrs.len(), 2);
    assert!(addrs.contains(&extra));
}

#[tokio::test]
async fn a_manual_request_to_an_unreachable_server_fails_with_not_connected() {
    let mut c = spawn_client(client::Config::default()).await;
    let nobody = Keypair::generate_ed25519().public().to_peer_id();
    let id = c
        .ask(move |swarm| {
            swarm
                .behaviour_mut()
                .rendezvous
                .register(nobody, ns(), None)
        })
        .await;
    let (request, error) = c
        .wait_for(|e| match e {
            Event::RegisterFailed { request, error, .. } => Some((*request, error.clone())),
            _ => None,
        })
        .await;
    assert_eq!((request, error), (id, client::RequestError::NotConnected));
}

/// Identify tells the client of a server it was not configured with.
#[tokio::test]
async fn a_connected_peer_announcing_the_protocol_becomes_a_server() {
    let server = server().await;
    let config = client::Config::default()
        .with_namespace(ns())
        .with_record_format(RecordFormat::Legacy);
    let mut c = spawn_client(config).await;
    c.dial(server.addr());
    let added = c
        .wait_for(|e| match e {
            Event::ServerAdded { server } => Some(*server),
            _ => None,
        })
        .await;
    assert_eq!(added, server.peer);
    let at = c
        .wait_for(|e| match e {
            Event::Registered { server, .. } => Some(*server),
            _ => None,
        })
        .await;
    assert_eq!(at, server.peer);
}
