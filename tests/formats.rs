//! Record formats over identify: our standard-format client lists the marker protocol, so a
//! server of ours serves it every record even when it only discovers; rust-libp2p's own 0.18
//! client (default identify agent, no marker) is still served legacy records only.

mod support;

use std::time::Duration;

use libp2p::{identify, rendezvous, PeerId};
use rendezvous_discovery::{
    client::{self, Event},
    server::{self, ServedFormats},
    Namespace,
};
use support::{
    node::{spawn, spawn_as_is, Node},
    WithIdentify, WithIdentifyEvent, HANG,
};

type ServerNode = WithIdentify<server::Behaviour>;
type ClientNode = WithIdentify<client::Behaviour>;
type ServerNodeEvent = WithIdentifyEvent<server::Behaviour>;
type ClientNodeEvent = WithIdentifyEvent<client::Behaviour>;
type RustClientNodeEvent = WithIdentifyEvent<rendezvous::client::Behaviour>;

fn ns() -> Namespace {
    Namespace::from_static("formats")
}

async fn server() -> Node<ServerNode> {
    spawn(support::swarm(|key| {
        WithIdentify::new(key, |_| server::Behaviour::new(server::Config::default()))
    }))
    .await
}

/// Waits until the server serves `peer` `formats` (the marker arrives with identify).
async fn served(server: &Node<ServerNode>, peer: PeerId, formats: ServedFormats) {
    tokio::time::timeout(HANG, async {
        loop {
            let now = server
                .ask(move |s| {
                    s.behaviour()
                        .rendezvous
                        .registrations()
                        .expect("the memory store has an index")
                        .served_formats(&peer)
                })
                .await;
            if now == formats {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the server never served {peer} {formats:?}"));
}

/// Our standard-format client registers in [`ns`] at `server`.
async fn standard_registrant(server: &Node<ServerNode>) -> Node<ClientNode> {
    let config = client::Config::default()
        .with_server(server.peer, vec![server.addr()])
        .with_namespace(ns())
        .with_discovery(false);
    let mut c = spawn(support::swarm(|key| {
        WithIdentify::new(key, |key| client::Behaviour::new(key, config))
    }))
    .await;
    c.wait_for(|e| match e {
        ClientNodeEvent::Rendezvous(Event::Registered { .. }) => Some(()),
        _ => None,
    })
    .await;
    c
}

#[tokio::test]
async fn a_discover_only_client_of_ours_gets_standard_records() {
    let server = server().await;
    // Discovers only; learns the server from identify.
    let config = client::Config::default()
        .with_namespace(ns())
        .with_registration(false);
    let mut d = spawn_as_is(support::swarm(|key| {
        WithIdentify::new(key, |key| client::Behaviour::new(key, config))
    }));
    d.dial(server.addr());
    served(&server, d.peer, ServedFormats::All).await;

    let registrant = standard_registrant(&server).await;
    // Asked now rather than at the next automatic DISCOVER (a second away).
    let server_peer = server.peer;
    d.run(move |s| {
        s.behaviour_mut()
            .rendezvous
            .discover(server_peer, Some(ns()), None, None);
    });
    let found = d
        .wait_for(|e| match e {
            ClientNodeEvent::Rendezvous(Event::DiscoverCompleted { registrations, .. }) => Some(
                registrations
                    .iter()
                    .map(|r| r.record.peer_id())
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .await;
    assert_eq!(found, [registrant.peer]);
}

/// rust-libp2p's 0.18 client runs identify with the default agent and without the marker: once
/// identify has run, the server still serves it legacy records only and its page decodes. (The
/// same without identify, and why the rule exists: `server_swarm.rs`.)
#[tokio::test]
async fn a_rust_libp2p_client_is_still_served_legacy_records_only_after_identify() {
    let mut server = server().await;
    let _registrant = standard_registrant(&server).await;
    let mut r = spawn_as_is(support::swarm(|key| {
        WithIdentify::new(key, rendezvous::client::Behaviour::new)
    }));
    r.dial(server.addr());
    let r_peer = r.peer;
    server
        .wait_for(|e| match e {
            WithIdentifyEvent::Identify(identify::Event::Received { peer_id, .. })
                if *peer_id == r_peer =>
            {
                Some(())
            }
            _ => None,
        })
        .await;
    let formats = server
        .ask(move |s| {
            s.behaviour()
                .rendezvous
                .registrations()
                .expect("the memory store has an index")
                .served_formats(&r_peer)
        })
        .await;
    assert_eq!(formats, ServedFormats::LegacyOnly);

    let server_peer = server.peer;
    r.run(move |s| {
        s.behaviour_mut().rendezvous.discover(
            Some(rendezvous::Namespace::from_static("formats")),
            None,
            None,
            server_peer,
        )
    });
    let page = r
        .wait_for(|e| match e {
            RustClientNodeEvent::Rendezvous(rendezvous::client::Event::Discovered {
                registrations,
                ..
            }) => Some(Ok(registrations.len())),
            RustClientNodeEvent::Rendezvous(rendezvous::client::Event::DiscoverFailed {
                error,
                ..
            }) => Some(Err(format!("{error:?}"))),
            _ => None,
        })
        .await;
    assert_eq!(page, Ok(0), "the standard record must be left out");
}

#[tokio::test]
async fn a_discover_only_client_holds_its_first_discover_until_identify_and_sees_all() {
    let mut server = server().await;
    let registrant = standard_registrant(&server).await;
    // Configured with the server: it dials and discovers at once, racing identify but for the
    // hold. A long interval: only the first DISCOVER can find the record.
    let config = client::Config::default()
        .with_server(server.peer, vec![server.addr()])
        .with_namespace(ns())
        .with_registration(false)
        .with_interval(Duration::from_secs(3600));
    let mut d = spawn_as_is(support::swarm(|key| {
        WithIdentify::new(key, |key| client::Behaviour::new(key, config))
    }));
    let found = d
        .wait_for(|e| match e {
            ClientNodeEvent::Rendezvous(Event::Discovered { peer, .. }) => Some(*peer),
            _ => None,
        })
        .await;
    assert_eq!(found, registrant.peer);
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
