//! Helpers shared by the swarm-level tests.

// Each test file uses a different part of the helpers.
#![allow(dead_code)]

pub mod raw;

use std::{fmt::Debug, future::Future};

use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, Swarm, SwarmEvent};

/// Runs `io` to completion while polling `a` and `b`; returns its output and the behaviour
/// events `a` emitted meanwhile.
pub async fn run_while<A, B, T>(
    io: impl Future<Output = T>,
    a: &mut Swarm<A>,
    b: &mut Swarm<B>,
) -> (T, Vec<A::ToSwarm>)
where
    A: NetworkBehaviour,
    B: NetworkBehaviour,
    A::ToSwarm: Debug,
    B::ToSwarm: Debug,
{
    let mut io = std::pin::pin!(io);
    let mut events = Vec::new();
    let output = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        loop {
            tokio::select! {
                output = &mut io => return output,
                event = a.select_next_some() => {
                    if let SwarmEvent::Behaviour(event) = event {
                        events.push(event);
                    }
                }
                _ = b.select_next_some() => {}
            }
        }
    })
    .await
    .expect("the exchange finishes within 20 s");
    (output, events)
}

/// Starts `behaviour` in a swarm listening on 127.0.0.1 TCP (noise + yamux) in a task; returns
/// its address with `/p2p/` and the behaviour's events.
pub async fn spawn_on_tcp<B>(
    behaviour: B,
) -> (
    libp2p::Multiaddr,
    tokio::sync::mpsc::UnboundedReceiver<B::ToSwarm>,
)
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Send,
{
    use libp2p::{multiaddr::Protocol, noise, tcp, yamux};
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("TCP with noise and yamux builds")
        .with_behaviour(|_| behaviour)
        .expect("the behaviour is given")
        .with_swarm_config(|c| c.with_idle_connection_timeout(std::time::Duration::from_secs(60)))
        .build();
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let address = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    let peer = *swarm.local_peer_id();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(event) = swarm.select_next_some().await {
                let _ = tx.send(event);
            }
        }
    });
    (address.with(Protocol::P2p(peer)), rx)
}
