//! The client and push (docs/push.md): it subscribes where the server lists the push protocol,
//! so a registration is discovered without a poll (the tests poll once an hour, so anything
//! found after the first poll came by push); removals end registrations; after a subscription
//! ends it resumes with DISCOVER from its cookie, without repeats; and at a server without push
//! it polls as before.

mod support;

use std::time::Duration;

use libp2p::{rendezvous, PeerId};
use rendezvous_discovery::{
    client::{self, Event},
    server, Namespace, RecordFormat,
};
use support::{
    client::{discovered, registered_at, spawn_client, ClientNode},
    node::{spawn_with_identify, Node},
    WithIdentify,
};

type Server = Node<WithIdentify<server::Behaviour>, server::Event>;

fn ns() -> Namespace {
    Namespace::from_static("push-test")
}

async fn server(config: server::Config) -> Server {
    spawn_with_identify(support::swarm(|key| {
        WithIdentify::new(key, |_| server::Behaviour::new(config))
    }))
    .await
}

/// A client of `server` in [`ns`] that polls once an hour: what it finds after its first poll
/// came by push.
fn config(server: PeerId, addr: libp2p::Multiaddr) -> client::Config {
    client::Config::default()
        .with_server(server, vec![addr])
        .with_namespace(ns())
        .with_interval(Duration::from_secs(3600))
        .with_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .with_seed(5)
}

fn watcher_config(s: &Server) -> client::Config {
    config(s.peer, s.addr()).with_registration(false)
}

fn registrant_config(s: &Server) -> client::Config {
    config(s.peer, s.addr()).with_discovery(false)
}

fn subscribed(of: PeerId) -> impl FnMut(&server::Event) -> Option<()> {
    move |e| matches!(e, server::Event::Subscribed { peer, .. } if *peer == of).then_some(())
}

fn expired(of: PeerId) -> impl FnMut(&Event) -> Option<()> {
    move |e| matches!(e, Event::Expired { peer, .. } if *peer == of).then_some(())
}

async fn registrant(s: &Server) -> ClientNode {
    let mut r = spawn_client(registrant_config(s)).await;
    r.wait_for(registered_at).await;
    r
}

#[tokio::test]
async fn a_registration_reaches_a_subscribed_client_without_a_poll() {
    let mut s = server(server::Config::default()).await;
    let mut watcher = spawn_client(watcher_config(&s)).await;
    s.wait_for(subscribed(watcher.peer)).await;

    let alice = registrant(&s).await;
    assert_eq!(
        watcher.wait_for(discovered(alice.peer)).await,
        vec![alice.addr()]
    );
}

#[tokio::test]
async fn the_server_counts_each_push_it_wrote_by_how_long_it_waited() {
    let mut s = server(server::Config::default()).await;
    let delays = s
        .ask(|swarm| swarm.behaviour().rendezvous.push_delays().clone())
        .await;
    let mut watcher = spawn_client(watcher_config(&s)).await;
    s.wait_for(subscribed(watcher.peer)).await;
    assert_eq!(delays.snapshot().count(), 0, "a replay is not a push");

    let alice = registrant(&s).await;
    watcher.wait_for(discovered(alice.peer)).await;
    // Counted once its write was flushed, which the watcher's read may overtake.
    tokio::time::timeout(Duration::from_secs(10), async {
        while delays.snapshot().count() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the push is counted");
    let counted = delays.snapshot();
    assert_eq!(
        counted.count(),
        1,
        "one change, one subscriber: {counted:?}"
    );
    assert!(counted.sum > Duration::ZERO, "{counted:?}");
}

#[tokio::test]
async fn an_unregister_reaches_a_subscribed_client_as_expired() {
    let mut s = server(server::Config::default()).await;
    let mut watcher = spawn_client(watcher_config(&s)).await;
    s.wait_for(subscribed(watcher.peer)).await;
    let alice = registrant(&s).await;
    watcher.wait_for(discovered(alice.peer)).await;

    alice.run(|swarm| swarm.behaviour_mut().rendezvous.stop());
    // The TTL is two hours: only the pushed removal ends it now.
    watcher.wait_for(expired(alice.peer)).await;
}

#[tokio::test]
async fn after_a_lost_connection_the_client_resumes_from_its_cookie_without_repeats() {
    // Soft state: the registrations stay while the watcher is away.
    let mut s = server(server::Config::default().with_remove_on_disconnect(false)).await;
    let mut watcher = spawn_client(watcher_config(&s)).await;
    let w = watcher.peer;
    s.wait_for(subscribed(w)).await;
    let alice = registrant(&s).await;
    watcher.wait_for(discovered(alice.peer)).await;

    // The server drops the watcher; it redials, DISCOVERs from the cookie it was pushed, and
    // subscribes again.
    s.run(move |swarm| {
        let _ = swarm.disconnect_peer_id(w);
    });
    let bob = registrant(&s).await;
    watcher.wait_for(discovered(bob.peer)).await;
    // Until it subscribed again, what each of its DISCOVERs was served.
    let mut served = Vec::new();
    s.wait_for(|e| match e {
        server::Event::DiscoverServed { peer, count, .. } if *peer == w => {
            served.push(*count);
            None
        }
        server::Event::Subscribed { peer, .. } if *peer == w => Some(()),
        _ => None,
    })
    .await;
    let carol = registrant(&s).await;
    watcher.wait_for(discovered(carol.peer)).await;

    // Alice was never served to the watcher again: its DISCOVER after the drop started at the
    // cookie pushed with her (Bob came by that DISCOVER or by push).
    assert!(!served.is_empty(), "the watcher polled after the drop");
    assert!(
        served.iter().sum::<usize>() <= 1,
        "only Bob, if any: {served:?}"
    );
    let seen: Vec<PeerId> = watcher
        .drain()
        .into_iter()
        .filter_map(|e| match e {
            Event::Discovered { peer, .. } => Some(peer),
            _ => None,
        })
        .collect();
    assert!(!seen.contains(&alice.peer), "no repeat: {seen:?}");
}

/// rust-libp2p's server has no push: the client polls it as before.
#[tokio::test]
async fn a_client_of_a_server_without_push_polls_as_before() {
    let rust = spawn_with_identify(support::swarm(|key| {
        WithIdentify::new(key, |_| {
            rendezvous::server::Behaviour::new(
                rendezvous::server::Config::default().with_min_ttl(1),
            )
        })
    }))
    .await;
    let legacy = |c: client::Config| {
        c.with_record_format(RecordFormat::Legacy)
            .with_interval(Duration::from_secs(1))
    };
    let mut watcher = spawn_client(legacy(
        config(rust.peer, rust.addr()).with_registration(false),
    ))
    .await;
    let mut alice =
        spawn_client(legacy(config(rust.peer, rust.addr()).with_discovery(false))).await;
    alice.wait_for(registered_at).await;
    watcher.wait_for(discovered(alice.peer)).await;
}
