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
