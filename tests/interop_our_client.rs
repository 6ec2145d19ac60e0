//! Interop: our client against rust-libp2p's rendezvous server (`libp2p-rendezvous` 0.18), and
//! standard and legacy registrants side by side on our server.

mod support;

use std::{collections::HashSet, time::Duration};

use futures::StreamExt;
use libp2p::{rendezvous, swarm::SwarmEvent, Multiaddr, PeerId, Swarm};
use libp2p_swarm_test::SwarmExt;
use rendezvous_discovery::{client, server, Namespace, RecordFormat};

const NS: &str = "interop";

fn our_client(
    server: PeerId,
    addrs: Vec<Multiaddr>,
    format: RecordFormat,
    discovery: bool,
) -> Swarm<client::Behaviour> {
    // Our client dials its configured servers itself; the address in its record only has to
    // be well-formed (nobody dials it here).
    let own = support::memory_addr();
    Swarm::new_ephemeral_tokio(|key| {
        client::Behaviour::new(
            key,
            client::Config::default()
                .with_server(server, addrs)
                .with_external_address(own)
                .with_namespace(Namespace::from_static(NS))
                .with_record_format(format)
                .with_discovery(discovery)
                // Pages of one registration: the loop must follow cookies to see everyone.
                .with_limit(1)
                .with_interval(Duration::from_secs(3600)),
        )
    })
}

/// Drives `swarm` until it emits `Registered` for the namespace (panics on a failure event).
async fn registered(swarm: &mut Swarm<client::Behaviour>) {
    loop {
        match swarm.next_behaviour_event().await {
            client::Event::Registered { namespace, .. } => {
                assert_eq!(namespace.as_str(), NS);
                return;
            }
            client::Event::RegisterFailed { .. } => panic!("registration failed"),
            _ => {}
        }
    }
}

/// Drives `swarm` until it has discovered every peer in `want` (and nothing else but itself);
/// panics on a failed discovery or on a second `Discovered` for the same peer.
async fn discovers_each_once(swarm: &mut Swarm<client::Behaviour>, want: &HashSet<PeerId>) {
    let me = *swarm.local_peer_id();
    let mut seen = HashSet::new();
    while seen.len() < want.len() {
        match swarm.next_behaviour_event().await {
            client::Event::Discovered {
                peer, namespace, ..
            } if peer != me => {
                assert_eq!(namespace.as_str(), NS);
                assert!(want.contains(&peer), "discovered an unexpected peer {peer}");
                assert!(seen.insert(peer), "{peer} discovered twice");
            }
            client::Event::DiscoverFailed { .. } => panic!("discovery failed"),
            _ => {}
        }
    }
}

#[tokio::test]
async fn our_client_registers_and_discovers_on_their_server_in_legacy_format() {
    let mut server = Swarm::new_ephemeral_tokio(|_| {
        rendezvous::server::Behaviour::new(rendezvous::server::Config::default())
    });
    server.listen().with_memory_addr_external().await;
    let server_peer = *server.local_peer_id();
    let server_addrs: Vec<Multiaddr> = server.external_addresses().cloned().collect();

    tokio::spawn(server.loop_on_next());
    let mut registrants: Vec<_> = (0..3)
        .map(|_| {
            our_client(
                server_peer,
                server_addrs.clone(),
                RecordFormat::Legacy,
                false,
            )
        })
        .collect();

    for c in &mut registrants {
        registered(c).await;
    }
    let want: HashSet<PeerId> = registrants.iter().map(|c| *c.local_peer_id()).collect();
    // Keep the registrants' connections served while the discoverer pages.
    for c in registrants {
        tokio::spawn(c.loop_on_next());
    }
    let mut discoverer = our_client(server_peer, server_addrs, RecordFormat::Legacy, true);
    discovers_each_once(&mut discoverer, &want).await;
}

#[tokio::test]
async fn standard_and_legacy_registrants_on_our_server_are_both_discovered_by_our_client() {
    let mut server = support::our_server(server::Config::default()).await;
    let server_peer = *server.local_peer_id();
    let server_addrs: Vec<Multiaddr> = server.external_addresses().cloned().collect();

    // One of rust-libp2p's clients too (legacy, one request per stream).
    let mut theirs = support::rust_client(&mut server).await;
    let mut discoverer = our_client(
        server_peer,
        server_addrs.clone(),
        RecordFormat::Standard,
        true,
    );
    // No identify here: the server serves the discoverer as the spec says, standard and legacy.
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(server::Event::PeerNotRegistered { error, .. }) =
                server.select_next_some().await
            {
                panic!("the server refused a registration: {error:?}");
            }
        }
    });
    let mut standard = our_client(
        server_peer,
        server_addrs.clone(),
        RecordFormat::Standard,
        false,
    );
    let mut legacy = our_client(server_peer, server_addrs, RecordFormat::Legacy, false);

    registered(&mut standard).await;
    registered(&mut legacy).await;
    theirs
        .behaviour_mut()
        .register(rendezvous::Namespace::from_static(NS), server_peer, None)
        .unwrap();
    match theirs.next_behaviour_event().await {
        rendezvous::client::Event::Registered { .. } => {}
        other => panic!("expected Registered, got {other:?}"),
    }
    let want: HashSet<PeerId> = [
        *standard.local_peer_id(),
        *legacy.local_peer_id(),
        *theirs.local_peer_id(),
    ]
    .into();
    tokio::spawn(standard.loop_on_next());
    tokio::spawn(legacy.loop_on_next());
    tokio::spawn(theirs.loop_on_next());
    discovers_each_once(&mut discoverer, &want).await;
}

/// Regression: on a bare `server::Behaviour` (no identify to tell it the peer's format), a
/// standard-format client's first DISCOVER used to be answered before its own REGISTER had
/// marked it as a standard reader, so it was served legacy records only and its cookie moved
/// past the standard registrant for good. The client now holds discovery while a REGISTER is in
/// flight at that server.
#[tokio::test]
async fn a_standard_client_discovers_standard_registrants_without_a_format_hint() {
    let server = support::our_server(server::Config::default()).await;
    let server_peer = *server.local_peer_id();
    let server_addrs: Vec<Multiaddr> = server.external_addresses().cloned().collect();
    tokio::spawn(server.loop_on_next());

    let mut standard = our_client(
        server_peer,
        server_addrs.clone(),
        RecordFormat::Standard,
        false,
    );
    registered(&mut standard).await;
    let want: HashSet<PeerId> = [*standard.local_peer_id()].into();
    tokio::spawn(standard.loop_on_next());

    let mut discoverer = our_client(server_peer, server_addrs, RecordFormat::Standard, true);
    discovers_each_once(&mut discoverer, &want).await;
}
