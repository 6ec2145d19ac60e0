//! Swarms on 127.0.0.1 TCP and WebSocket (noise, yamux), for tests that talk to the
//! `rendezvous` binary.

use std::time::Duration;

use futures::StreamExt;
use libp2p::{
    core::{muxing::StreamMuxerBox, upgrade::Version},
    identity::Keypair,
    multiaddr::Protocol,
    noise,
    swarm::{NetworkBehaviour, SwarmEvent},
    tcp, websocket, yamux, Multiaddr, Swarm, Transport as _,
};
use tokio::sync::mpsc;

/// A swarm on TCP and WebSocket (`/ws`) with a new identity; idle connections stay open for a
/// minute, and a dial may take as long as the tests' safety net (a server under a burst makes
/// dials wait).
pub fn swarm<B: NetworkBehaviour>(behaviour: impl FnOnce(&Keypair) -> B) -> Swarm<B> {
    swarm_with_key(Keypair::generate_ed25519(), behaviour)
}

/// [`swarm`] with identity `key` (a test that compares answers naming the peer across runs).
pub fn swarm_with_key<B: NetworkBehaviour>(
    key: Keypair,
    behaviour: impl FnOnce(&Keypair) -> B,
) -> Swarm<B> {
    swarm_with_tls(key, websocket::tls::Config::client(), behaviour)
}

/// [`swarm_with_key`] that dials `/wss` with `tls` (which may trust a test's own certificate).
pub fn swarm_with_tls<B: NetworkBehaviour>(
    key: Keypair,
    tls: websocket::tls::Config,
    behaviour: impl FnOnce(&Keypair) -> B,
) -> Swarm<B> {
    libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("TCP with noise and yamux builds")
        .with_other_transport(|key| {
            let mut ws = websocket::Config::new(tcp::tokio::Transport::new(
                tcp::Config::default().nodelay(true),
            ));
            ws.set_tls_config(tls);
            ws.upgrade(Version::V1Lazy)
                .authenticate(noise::Config::new(key).expect("noise takes an ed25519 key"))
                .multiplex(yamux::Config::default())
                .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        })
        .expect("WebSocket with noise and yamux builds")
        .with_behaviour(|key| behaviour(key))
        .expect("the behaviour is given")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .with_connection_timeout(super::HANG)
        .build()
}

/// Starts the behaviour `behaviour` builds in a swarm listening on 127.0.0.1 TCP in a task;
/// returns its address with `/p2p/` and the behaviour's events.
pub async fn spawn<B>(
    behaviour: impl FnOnce(&Keypair) -> B,
) -> (Multiaddr, mpsc::UnboundedReceiver<B::ToSwarm>)
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Send,
{
    let mut swarm = swarm(behaviour);
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("a multiaddr"))
        .expect("TCP listens");
    let address = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    let peer = *swarm.local_peer_id();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(event) = swarm.select_next_some().await {
                let _ = tx.send(event);
            }
        }
    });
    (address.with(Protocol::P2p(peer)), rx)
}

/// A rust-libp2p 0.18 rendezvous client whose `/wss` dials trust the certificate `der` (a
/// test's self-signed one), besides the public roots.
pub fn rust_client_trusting(der: Vec<u8>) -> Swarm<libp2p::rendezvous::client::Behaviour> {
    let mut trusting = websocket::tls::Config::builder();
    trusting
        .add_trust(&websocket::tls::Certificate::new(der))
        .expect("the certificate is a trust anchor");
    swarm_with_tls(Keypair::generate_ed25519(), trusting.finish(), |key| {
        libp2p::rendezvous::client::Behaviour::new(key.clone())
    })
}

/// `client` (a rust-libp2p 0.18 rendezvous client) dials `serve` at `address`, registers, and
/// discovers itself.
pub async fn registers_and_discovers_itself(
    mut client: libp2p::Swarm<libp2p::rendezvous::client::Behaviour>,
    address: Multiaddr,
) {
    client.add_external_address("/ip4/127.0.0.1/tcp/9".parse().unwrap());
    let me = *client.local_peer_id();
    let found = discovered_by(&mut client, address, "chat", true).await;
    assert_eq!(found, vec![me]);
}

/// The peers `client` (a rust-libp2p 0.18 rendezvous client) finds in `namespace` on the
/// server at `address` (with its `/p2p` peer id) after dialing it, and registering there first
/// when `register` (the client needs an external address for that).
pub async fn discovered_by(
    client: &mut libp2p::Swarm<libp2p::rendezvous::client::Behaviour>,
    address: Multiaddr,
    namespace: &'static str,
    register: bool,
) -> Vec<libp2p::PeerId> {
    use libp2p::{rendezvous, swarm::SwarmEvent};

    let Some(Protocol::P2p(server)) = address.iter().last() else {
        panic!("no peer id in {address}");
    };
    client.dial(address.clone()).unwrap();
    let namespace = rendezvous::Namespace::from_static(namespace);
    tokio::time::timeout(super::HANG, async {
        loop {
            match client.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == server => {
                    if register {
                        client
                            .behaviour_mut()
                            .register(namespace.clone(), server, None)
                            .unwrap();
                    } else {
                        client.behaviour_mut().discover(
                            Some(namespace.clone()),
                            None,
                            None,
                            server,
                        );
                    }
                }
                SwarmEvent::Behaviour(rendezvous::client::Event::Registered { .. }) => {
                    client
                        .behaviour_mut()
                        .discover(Some(namespace.clone()), None, None, server);
                }
                SwarmEvent::Behaviour(rendezvous::client::Event::Discovered {
                    registrations,
                    ..
                }) => {
                    return registrations
                        .iter()
                        .map(|r| r.record.peer_id())
                        .collect::<Vec<_>>()
                }
                SwarmEvent::Behaviour(other) => panic!("unexpected {other:?}"),
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    panic!("dial {address}: {error}")
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{address}: discovered within {:?}", super::HANG))
}
