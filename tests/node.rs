//! Client+server nodes: two of them serve and discover each other.

mod support;

use futures::StreamExt;
use libp2p::{identify, swarm::NetworkBehaviour, swarm::SwarmEvent, PeerId, Swarm};
use libp2p_swarm_test::SwarmExt as _;
use rendezvous_discovery::{client, discovery, node, server, Namespace};

#[derive(NetworkBehaviour)]
struct Peer {
    node: discovery::Behaviour<node::Behaviour>,
    // Tells each node that the other speaks rendezvous, so it registers there.
    identify: identify::Behaviour,
}

fn peer(namespace: &'static str, serve: bool) -> Swarm<Peer> {
    Swarm::new_ephemeral_tokio(|key| {
        let client = client::Config::default().with_namespace(Namespace::from_static(namespace));
        let config =
            node::Config::new(client).with_server_enabled(serve.then(server::Config::default));
        Peer {
            identify: support::identify(&key.public()),
            node: discovery::Behaviour::new(
                node::Behaviour::new(key, config),
                discovery::Config::default(),
            ),
        }
    })
}

/// The peers `swarm` discovered, with the labels of the sources.
fn record(event: SwarmEvent<PeerEvent>, into: &mut Vec<(PeerId, &'static str)>) {
    if let SwarmEvent::Behaviour(PeerEvent::Node(discovery::Event::Discovered {
        peer,
        source,
        ..
    })) = event
    {
        into.push((peer, source));
    }
}

#[tokio::test]
async fn two_nodes_with_embedded_servers_serve_and_discover_each_other() {
    let mut a = peer("chat", true);
    let mut b = peer("chat", true);
    a.listen().with_memory_addr_external().await;
    b.listen().with_memory_addr_external().await;
    let (a_id, b_id) = (*a.local_peer_id(), *b.local_peer_id());
    assert!(a.behaviour().node.inner().server().is_some());

    a.connect(&mut b).await;
    let (mut seen_by_a, mut seen_by_b) = (Vec::new(), Vec::new());
    tokio::time::timeout(support::HANG, async {
        while !(seen_by_a.contains(&(b_id, node::SERVER_SOURCE))
            && seen_by_b.contains(&(a_id, node::SERVER_SOURCE)))
        {
            tokio::select! {
                e = a.select_next_some() => record(e, &mut seen_by_a),
                e = b.select_next_some() => record(e, &mut seen_by_b),
            }
        }
    })
    .await
    .expect("both nodes discover each other");

    // Each registered at the other's embedded server.
    let chat = Namespace::from_static("chat");
    let registered_at = |node: &Swarm<Peer>| {
        let peers: Vec<PeerId> = node
            .behaviour()
            .node
            .inner()
            .server()
            .unwrap()
            .registrations_in(&chat)
            .expect("a memory store")
            .iter()
            .map(|r| r.record.peer_id())
            .collect();
        peers
    };
    assert_eq!(registered_at(&a), vec![b_id]);
    assert_eq!(registered_at(&b), vec![a_id]);
}

#[tokio::test]
async fn a_node_without_a_server_registers_elsewhere_and_ignores_other_namespaces() {
    let mut hub = peer("chat", true);
    let mut alice = peer("chat", false);
    let mut carol = peer("games", false);
    hub.listen().with_memory_addr_external().await;
    alice.listen().with_memory_addr_external().await;
    carol.listen().with_memory_addr_external().await;
    assert!(alice.behaviour().node.inner().server().is_none());
    let (alice_id, carol_id) = (*alice.local_peer_id(), *carol.local_peer_id());

    alice.connect(&mut hub).await;
    carol.connect(&mut hub).await;
    let mut seen_by_hub = Vec::new();
    let mut registered = 0;
    tokio::time::timeout(support::HANG, async {
        // Both register at the hub; the hub's node only reports the one in its namespace.
        while registered < 2 || !seen_by_hub.contains(&(alice_id, node::SERVER_SOURCE)) {
            tokio::select! {
                e = hub.select_next_some() => {
                    if let SwarmEvent::Behaviour(PeerEvent::Node(discovery::Event::Source(
                        node::Event::Server(server::Event::PeerRegistered { .. }),
                    ))) = &e
                    {
                        registered += 1;
                    }
                    record(e, &mut seen_by_hub)
                }
                _ = alice.select_next_some() => {}
                _ = carol.select_next_some() => {}
            }
        }
    })
    .await
    .expect("alice and carol register at the hub");
    assert!(
        !seen_by_hub.iter().any(|(p, _)| *p == carol_id),
        "{seen_by_hub:?}"
    );
    assert_eq!(
        hub.behaviour()
            .node
            .inner()
            .server()
            .unwrap()
            .registration_count(),
        Some(2)
    );
}
