//! The client against our own server (`rendezvous_discovery::server`), both running identify
//! next to rendezvous so the client learns servers it was not configured with.

mod support;

use std::time::Duration;

use libp2p::{identity::Keypair, Multiaddr, PeerId};
use rendezvous_discovery::{
    client::{self, Event},
    server, Namespace,
};
use support::{
    client::{discovered, registered_at, spawn_client},
    memory_addr,
    node::{spawn_with_identify_at, Node},
    WithIdentify,
};

type Server = Node<WithIdentify<server::Behaviour>, server::Event>;

fn ns() -> Namespace {
    Namespace::from_static("our-server-test")
}

/// A server with identity `key` at `addr`, so that it can be restarted as the same server.
async fn server_at(key: Keypair, addr: Multiaddr) -> Server {
    server_with(key, addr, server::Config::default()).await
}

/// As [`server_at`], with `config` (soft state all the same).
async fn server_with(key: Keypair, addr: Multiaddr, config: server::Config) -> Server {
    let s = support::swarm_with_key(key, |key| {
        WithIdentify::new(key, |_| {
            // Soft state: an UNREGISTER seen by the server can only come from `stop()`.
            server::Behaviour::new(config.with_min_ttl(1).with_remove_on_disconnect(false))
        })
    });
    spawn_with_identify_at(s, addr).await
}

async fn server() -> Server {
    server_at(Keypair::generate_ed25519(), memory_addr()).await
}

fn config(servers: &[&Server]) -> client::Config {
    let mut config = client::Config::default()
        .with_namespace(ns())
        .with_test_interval(Duration::from_millis(50))
        .with_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .with_seed(11);
    for s in servers {
        config = config.with_server(s.peer, vec![s.addr()]);
    }
    config
}

fn server_registered(e: &server::Event) -> Option<PeerId> {
    match e {
        server::Event::PeerRegistered { peer, .. } => Some(*peer),
        _ => None,
    }
}

fn server_unregistered(e: &server::Event) -> Option<(PeerId, Namespace)> {
    match e {
        server::Event::PeerUnregistered {
            peer,
            namespace,
            cause: server::Removal::Unregister,
        } => Some((*peer, namespace.clone())),
        _ => None,
    }
}

#[tokio::test]
async fn two_clients_find_each_other() {
    let s = server().await;
    let mut a = spawn_client(config(&[&s])).await;
    let mut b = spawn_client(config(&[&s])).await;
    assert_eq!(b.wait_for(discovered(a.peer)).await, vec![a.addr()]);
    assert_eq!(a.wait_for(discovered(b.peer)).await, vec![b.addr()]);
}

#[tokio::test]
async fn a_server_connected_later_receives_the_registrations() {
    let first = server().await;
    let mut a = spawn_client(config(&[&first])).await;
    let mut b = spawn_client(config(&[&first])).await;
    a.wait_for(registered_at).await;
    b.wait_for(registered_at).await;

    let mut later = server().await;
    for c in [&a, &b] {
        c.dial(later.addr());
    }
    let mut registered = std::collections::HashSet::new();
    while registered.len() < 2 {
        registered.insert(later.wait_for(server_registered).await);
    }
    assert!(registered.contains(&a.peer) && registered.contains(&b.peer));
    // And it is polled: A learns of B through it too (B registered only there and at `first`).
    let later_peer = later.peer;
    a.wait_for(|e| match e {
        Event::ServerAdded { server } if *server == later_peer => Some(()),
        _ => None,
    })
    .await;
}

#[tokio::test]
async fn stopping_unregisters_everywhere() {
    let mut one = server().await;
    let mut two = server().await;
    let mut a = spawn_client(config(&[&one, &two]).with_discovery(false)).await;
    let mut at = std::collections::HashSet::new();
    while at.len() < 2 {
        at.insert(a.wait_for(registered_at).await);
    }
    a.run(|swarm| swarm.behaviour_mut().rendezvous.stop());
    a.wait_for(|e| matches!(e, Event::Stopped).then_some(()))
        .await;
    for s in [&mut one, &mut two] {
        assert_eq!(s.wait_for(server_unregistered).await, (a.peer, ns()));
    }
}

#[tokio::test]
async fn a_restarted_server_is_recovered_from_without_duplicates() {
    let key = Keypair::generate_ed25519();
    let addr = memory_addr();
    let first = server_at(key.clone(), addr.clone()).await;
    let mut a = spawn_client(config(&[&first]).with_discovery(false)).await;
    let mut b = spawn_client(config(&[&first])).await;
    b.wait_for(discovered(a.peer)).await;

    first.kill().await;
    // Push off on the restarted server: this is the polling path's recovery, and with push B
    // could learn of A by a push rather than a page, and the page awaited below never come.
    // (The push path's recovery, from its cookie without repeats, is in tests/client_push.rs.)
    let mut second = server_with(
        key,
        addr,
        server::Config::default().with_max_subscriptions(0),
    )
    .await;
    let (a_peer, b_peer) = (a.peer, b.peer);
    // A registers again with the new server on its own.
    while second.wait_for(server_registered).await != a_peer {}
    a.wait_for(registered_at).await;
    // B polls until a page with A was served, then asks again: by then it has handled that page.
    second
        .wait_for(|e| match e {
            server::Event::DiscoverServed { peer, count, .. } => {
                (*peer == b_peer && *count > 0).then_some(())
            }
            _ => None,
        })
        .await;
    second
        .wait_for(|e| match e {
            server::Event::DiscoverServed { peer, .. } => (*peer == b_peer).then_some(()),
            _ => None,
        })
        .await;
    let again: Vec<_> = b
        .drain()
        .into_iter()
        .filter(|e| matches!(e, Event::Discovered { peer, .. } if *peer == a_peer))
        .collect();
    assert!(again.is_empty(), "A was reported again: {again:?}");
}

/// Namespaces `ns-0` to `ns-{n-1}`.
fn namespaces(n: usize) -> Vec<Namespace> {
    (0..n)
        .map(|i| Namespace::new(format!("ns-{i}")).unwrap())
        .collect()
}

/// Issue 18: a client in the most namespaces it takes registers and discovers in all of them at
/// once (128 requests) on our server with its default config (a stream cap per connection, a
/// request rate per peer), in one pass: no request is lost to a reset stream or reported
/// refused by the rate limit.
#[tokio::test]
async fn a_client_in_64_namespaces_registers_and_discovers_all_at_once_on_a_default_server() {
    let s = spawn_with_identify_at(
        support::swarm(|key| {
            WithIdentify::new(key, |_| server::Behaviour::new(Default::default()))
        }),
        memory_addr(),
    )
    .await;
    let all = namespaces(client::MAX_NAMESPACES);
    let config = |register: bool, discover: bool| {
        let mut config = client::Config::default()
            .with_server(s.peer, vec![s.addr()])
            .with_registration(register)
            .with_discovery(discover)
            // One pass: nothing is asked twice within the test.
            .with_interval(Duration::from_secs(3600))
            .with_seed(18);
        for ns in &all {
            config = config.with_namespace(ns.clone());
        }
        config
    };
    let failed = |e: &Event| {
        matches!(
            e,
            Event::RegisterFailed { .. } | Event::DiscoverFailed { .. }
        )
        .then(|| format!("{e:?}"))
    };

    // A registers in every namespace first.
    let mut a = spawn_client(config(true, false)).await;
    let mut registered = std::collections::BTreeSet::new();
    while registered.len() < all.len() {
        let event = a.wait_for(|e| Some(e.clone())).await;
        assert_eq!(failed(&event), None);
        if let Event::Registered { namespace, .. } = event {
            registered.insert(namespace);
        }
    }

    // B registers in every namespace and discovers every one, all at once.
    let mut b = spawn_client(config(true, true)).await;
    let (mut b_registered, mut found) = (std::collections::BTreeSet::new(), Vec::new());
    while b_registered.len() < all.len() || found.len() < all.len() {
        let event = b.wait_for(|e| Some(e.clone())).await;
        assert_eq!(failed(&event), None);
        match event {
            Event::Registered { namespace, .. } => {
                b_registered.insert(namespace);
            }
            Event::Discovered {
                peer, namespace, ..
            } => found.push((peer, namespace)),
            _ => {}
        }
    }
    found.sort();
    let expected: Vec<(PeerId, Namespace)> = {
        let mut e: Vec<_> = all.iter().map(|ns| (a.peer, ns.clone())).collect();
        e.sort();
        e
    };
    assert_eq!(found, expected, "A in every namespace, once each");
}
