//! Interop: rust-libp2p's rendezvous client (`libp2p-rendezvous` 0.18) against our server.
//!
//! Their client registers, pages through a namespace with cookies, and unregisters; every
//! response it gets must decode (a response it cannot decode surfaces as `RegisterFailed` or
//! `DiscoverFailed` with `E_UNAVAILABLE`). With standard-format peers registered too, see
//! `server_swarm.rs` (`a_rust_libp2p_client_never_receives_a_standard_record_it_cannot_decode`).

mod support;

use std::collections::HashMap;

use libp2p::{rendezvous, PeerId, Swarm};
use libp2p_swarm_test::SwarmExt;
use rendezvous_discovery::server;
use support::{
    drive_until,
    node::{spawn_as_is, Node},
    rust_client,
};

const NS: &str = "interop";

fn their_ns() -> rendezvous::Namespace {
    rendezvous::Namespace::from_static(NS)
}

async fn register(client: &mut Swarm<rendezvous::client::Behaviour>, server: PeerId) {
    client
        .behaviour_mut()
        .register(their_ns(), server, None)
        .expect("the client has an external address");
    match client.next_behaviour_event().await {
        rendezvous::client::Event::Registered { namespace, ttl, .. } => {
            assert_eq!(namespace, their_ns());
            assert!(ttl > 0);
        }
        other => panic!("expected Registered, got {other:?}"),
    }
}

/// Pages through the namespace with cookies, `limit` at a time, until an empty page; returns
/// how often each peer was seen and how many pages it took.
async fn page_through(
    client: &mut Swarm<rendezvous::client::Behaviour>,
    server: PeerId,
    limit: u64,
) -> (HashMap<PeerId, usize>, usize) {
    let mut seen = HashMap::new();
    let mut cookie = None;
    let mut pages = 0;
    loop {
        client
            .behaviour_mut()
            .discover(Some(their_ns()), cookie.take(), Some(limit), server);
        match client.next_behaviour_event().await {
            rendezvous::client::Event::Discovered {
                registrations,
                cookie: next,
                ..
            } => {
                pages += 1;
                assert!(registrations.len() as u64 <= limit);
                if registrations.is_empty() {
                    return (seen, pages);
                }
                for registration in registrations {
                    assert_eq!(registration.namespace, their_ns());
                    *seen.entry(registration.record.peer_id()).or_insert(0) += 1;
                }
                cookie = Some(next);
            }
            other => panic!("expected a page, got {other:?} (a response it cannot decode?)"),
        }
    }
}

#[tokio::test]
async fn their_client_registers_pages_with_cookies_and_unregisters_on_our_server() {
    let mut server = support::our_server(server::Config::default()).await;
    let server_peer = *server.local_peer_id();
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(rust_client(&mut server).await);
    }
    let mut server: Node<_> = spawn_as_is(server);
    for client in &mut clients {
        register(client, server_peer).await;
    }
    let registrants: Vec<PeerId> = clients.iter().map(|c| *c.local_peer_id()).collect();

    // 5 registrations, pages of 2: 2 + 2 + 1 + an empty page.
    let (seen, pages) = page_through(&mut clients[0], server_peer, 2).await;
    assert_eq!(pages, 4);
    assert_eq!(seen.len(), 5);
    for peer in &registrants {
        assert_eq!(seen.get(peer), Some(&1), "{peer} seen exactly once");
    }

    // A cookie taken after the last page returns only what is new.
    clients[1]
        .behaviour_mut()
        .unregister(their_ns(), server_peer);
    let unregistered = drive_until(
        &mut clients[1],
        server.wait_for(|e| match e {
            server::Event::PeerUnregistered { peer, .. } => Some(*peer),
            _ => None,
        }),
    )
    .await;
    assert_eq!(unregistered, registrants[1]);

    let (seen, _) = page_through(&mut clients[2], server_peer, 10).await;
    assert_eq!(seen.len(), 4);
    assert!(!seen.contains_key(&registrants[1]));
}
