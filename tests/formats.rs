//! Record formats over identify: our standard-format client lists the marker protocol, so a
//! server of ours serves it every record even when it only discovers; rust-libp2p's own 0.18
//! client (default identify agent) still never gets a page it cannot decode.

mod support;

use std::time::Duration;

use libp2p::{rendezvous, PeerId};
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
                        .served_formats(&peer)
                })
                .await;
            if now == formats {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
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
        .with_registration(false)
        .with_interval(Duration::from_millis(300));
    let mut d = spawn_as_is(support::swarm(|key| {
        WithIdentify::new(key, |key| client::Behaviour::new(key, config))
    }));
    d.dial(server.addr());
    served(&server, d.peer, ServedFormats::All).await;

    let registrant = standard_registrant(&server).await;
    let found = d
        .wait_for(|e| match e {
            ClientNodeEvent::Rendezvous(Event::Discovered { peer, .. }) => Some(*peer),
            _ => None,
        })
        .await;
    assert_eq!(found, registrant.peer);
}

#[tokio::test]
async fn a_rust_libp2p_client_never_gets_an_undecodable_page() {
    let server = server().await;
    let _registrant = standard_registrant(&server).await;
    let mut r = spawn_as_is(support::swarm(|key| {
        WithIdentify::new(key, rendezvous::client::Behaviour::new)
    }));
    r.dial(server.addr());
    r.wait_connected(server.peer).await;
    // Once identify has run on both sides, and also before (default).
    for _ in 0..2 {
        let peer = server.peer;
        r.run(move |s| {
            s.behaviour_mut().rendezvous.discover(
                Some(rendezvous::Namespace::from_static("formats")),
                None,
                None,
                peer,
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
        served(&server, r.peer, ServedFormats::LegacyOnly).await;
    }
}

#[tokio::test]
async fn a_discover_only_client_holds_its_first_discover_until_identify_and_sees_all() {
    let server = server().await;
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
            ClientNodeEvent::Rendezvous(Event::DiscoverCompleted { registrations, .. }) => {
                assert!(
                    !registrations.is_empty(),
                    "the first page missed the record"
                );
                None
            }
            _ => None,
        })
        .await;
    assert_eq!(found, registrant.peer);
}
