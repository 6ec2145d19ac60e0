//! mdns through the aggregator, on the real network: needs multicast on a non-loopback
//! interface, so it is ignored by default; `.ci/run` runs it where there is one. The
//! projection of mdns events alone is covered by the mdns module's unit tests.
#![cfg(feature = "mdns")]

use libp2p::{
    multiaddr::Protocol,
    swarm::{NetworkBehaviour, SwarmEvent},
    Multiaddr, Swarm,
};
use libp2p_swarm_test::SwarmExt as _;
use rendezvous_discovery::{bootstrap, discovery, mdns};

#[derive(NetworkBehaviour)]
struct Sources {
    mdns: mdns::Behaviour,
    bootstrap: bootstrap::Behaviour,
}

impl discovery::Source for Sources {
    fn discoveries(&self, event: &SourcesEvent, found: &mut discovery::Found) {
        match event {
            SourcesEvent::Mdns(e) => self.mdns.discoveries(e, found),
            SourcesEvent::Bootstrap(e) => self.bootstrap.discoveries(e, found),
        }
    }
}

// `.ci/run` runs it (`cargo test --test mdns -- --ignored`) where there is one.
#[tokio::test]
#[ignore = "needs a multicast interface"]
async fn a_peer_found_by_mdns_and_bootstrap_is_reported_once_with_each_address_once() {
    let mut b = Swarm::new_ephemeral_tokio(|key| {
        mdns::Behaviour::new(mdns::Config::default(), key.public().to_peer_id()).unwrap()
    });
    b.listen_on("/ip4/0.0.0.0/tcp/0".parse().unwrap()).unwrap();
    let b_id = *b.local_peer_id();
    let loopback: Multiaddr = b
        .wait(|e| match e {
            SwarmEvent::NewListenAddr { address, .. }
                if address
                    .iter()
                    .any(|p| p == Protocol::Ip4([127, 0, 0, 1].into())) =>
            {
                Some(address)
            }
            _ => None,
        })
        .await;
    tokio::spawn(b.loop_on_next());

    let mut a = Swarm::new_ephemeral_tokio(|key| {
        let sources = Sources {
            mdns: mdns::Behaviour::new(mdns::Config::default(), key.public().to_peer_id()).unwrap(),
            bootstrap: bootstrap::Behaviour::new(
                bootstrap::Config::new([loopback.clone().with(Protocol::P2p(b_id))]).unwrap(),
            ),
        };
        discovery::Behaviour::new(sources, discovery::Config::default())
    });
    a.listen_on("/ip4/0.0.0.0/tcp/0".parse().unwrap()).unwrap();

    let mut reports = Vec::new();
    loop {
        match a.next_swarm_event().await {
            SwarmEvent::Behaviour(discovery::Event::Discovered {
                peer,
                addrs,
                source,
            }) if peer == b_id => reports.push((source, addrs)),
            // mdns told us about b: everything it carried has been reported before this.
            SwarmEvent::Behaviour(discovery::Event::Source(SourcesEvent::Mdns(
                libp2p::mdns::Event::Discovered(list),
            ))) if list.iter().any(|(p, _)| *p == b_id) => break,
            _ => {}
        }
    }
    assert_eq!(reports[0], (bootstrap::SOURCE, vec![loopback.clone()]));
    // mdns adds only what the bootstrap list did not know.
    for (source, addrs) in &reports[1..] {
        assert_eq!(*source, mdns::SOURCE);
        assert!(!addrs.contains(&loopback), "{reports:?}");
    }
    let known: Vec<_> = a
        .behaviour()
        .address_book()
        .addresses_of(&b_id)
        .cloned()
        .collect();
    // Every known address was reported exactly once (the book holds each address once).
    let all: Vec<_> = reports.iter().flat_map(|(_, a)| a.clone()).collect();
    assert_eq!(known, all);
    assert_eq!(
        a.behaviour().address_book().sources_of(&b_id).len(),
        2,
        "both sources know b"
    );

    // The discovered address is enough to dial b by its peer id.
    a.dial(b_id).unwrap();
    a.wait(|e| match e {
        SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == b_id => Some(()),
        _ => None,
    })
    .await;
}
