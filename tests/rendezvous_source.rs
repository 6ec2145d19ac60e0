//! The rendezvous client as one discovery source among others.

mod support;

use futures::StreamExt;
use libp2p::{multiaddr::Protocol, swarm::NetworkBehaviour, swarm::SwarmEvent, Swarm};
use libp2p_swarm_test::SwarmExt as _;
use rendezvous_discovery::{bootstrap, client, discovery, server, Namespace};
use support::{WithIdentify, WithIdentifyEvent};

#[derive(NetworkBehaviour)]
struct Sources {
    rendezvous: client::Behaviour,
    bootstrap: bootstrap::Behaviour,
}

impl discovery::Source for Sources {
    fn discoveries(&self, event: &SourcesEvent, found: &mut discovery::Found) {
        match event {
            SourcesEvent::Rendezvous(e) => self.rendezvous.discoveries(e, found),
            SourcesEvent::Bootstrap(e) => self.bootstrap.discoveries(e, found),
        }
    }
}

#[tokio::test]
async fn a_peer_from_bootstrap_and_rendezvous_is_reported_once() {
    let ns = Namespace::from_static("chat");
    // Identify on the server and on a: a only discovers, and holds its first DISCOVER until
    // identify told it the server's protocols.
    let mut rendezvous_server = Swarm::new_ephemeral_tokio(|key| {
        WithIdentify::new(key, |_| {
            // a never registers; serve it every record without waiting for its identify (its
            // marker; see formats.rs), so the test does not depend on identify's timing.
            server::Behaviour::new(
                server::Config::default().with_unknown_peer_formats(server::ServedFormats::All),
            )
        })
    });
    let (server_addr, _) = rendezvous_server.listen().with_memory_addr_external().await;
    let server_id = *rendezvous_server.local_peer_id();
    tokio::spawn(rendezvous_server.loop_on_next());

    // t registers in "chat" at the server, with its memory address.
    let t_addr = support::memory_addr();
    let mut t = Swarm::new_ephemeral_tokio(|key| {
        client::Behaviour::new(
            key,
            client::Config::default()
                .with_server(server_id, vec![server_addr.clone()])
                .with_namespace(ns.clone())
                .with_discovery(false),
        )
    });
    t.listen_on(t_addr.clone()).unwrap();
    t.add_external_address(t_addr.clone());
    let t_id = *t.local_peer_id();
    tokio::spawn(t.loop_on_next());

    // a knows t from its bootstrap list too.
    let mut a = Swarm::new_ephemeral_tokio(|key| {
        WithIdentify::new(key, |key| {
            let sources = Sources {
                rendezvous: client::Behaviour::new(
                    key,
                    client::Config::default()
                        .with_server(server_id, vec![server_addr.clone()])
                        .with_namespace(ns.clone())
                        .with_registration(false),
                ),
                bootstrap: bootstrap::Behaviour::new(
                    bootstrap::Config::new([t_addr.clone().with(Protocol::P2p(t_id))]).unwrap(),
                ),
            };
            discovery::Behaviour::new(sources, discovery::Config::default())
        })
    });

    let mut reports = Vec::new();
    tokio::time::timeout(support::HANG, async {
        loop {
            match a.select_next_some().await {
                SwarmEvent::Behaviour(WithIdentifyEvent::Rendezvous(
                    discovery::Event::Discovered {
                        peer,
                        addrs,
                        source,
                    },
                )) => reports.push((peer, addrs, source)),
                SwarmEvent::Behaviour(WithIdentifyEvent::Rendezvous(discovery::Event::Source(
                    SourcesEvent::Rendezvous(client::Event::Discovered { peer, .. }),
                ))) if peer == t_id => return,
                _ => {}
            }
        }
    })
    .await
    .expect("a discovers t through rendezvous");

    assert_eq!(reports, [(t_id, vec![t_addr.clone()], bootstrap::SOURCE)]);
    let book = a.behaviour().rendezvous.address_book();
    assert_eq!(book.sources_of(&t_id), [bootstrap::SOURCE, client::SOURCE]);
    assert_eq!(book.addresses_of(&t_id).collect::<Vec<_>>(), [&t_addr]);
}
