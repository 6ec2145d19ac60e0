//! Test support shared by the integration tests (each test file has `mod support;`).
//!
//! - this module: swarms on the memory transport, identify, driving two swarms around a future;
//! - [`node`]: a swarm running in its own task, with its events on a channel;
//! - [`raw`]: a raw rendezvous client that hands the test bare streams;
//! - [`client`]: our client in a [`node::Node`], next to identify, and matchers for its events;
//! - [`recorder`]: a behaviour that records what other behaviours tell the swarm;
//! - [`tcp`]: swarms on 127.0.0.1 TCP, for tests that talk to the `rendezvous` binary;
//! - [`serve`]: a `rendezvous serve` process, killed when the test ends;
//! - [`http`]: a real HTTP client for `serve --metrics` (`/metrics`, `/health`);
//! - [`foreign`]: js-libp2p and py-libp2p peers and `rendezvous serve` as processes (the
//!   interop suite, `interop/run`).
//!
//! Tests that drive swarms directly use `libp2p-swarm-test` (`Swarm::new_ephemeral_tokio`,
//! `listen().with_memory_addr_external()`, `connect`, `drive`); [`swarm_with_key`] is for the
//! few that need a given identity (a server restarted under the same peer id) or connections
//! that stay open while idle.

// Each test file uses a different part of the support.
#![allow(dead_code)]

pub mod client;
#[cfg(feature = "redis")]
pub mod fleet;
#[cfg(feature = "cli")]
pub mod foreign;
pub mod http;
pub mod node;
pub mod raw;
pub mod recorder;
#[cfg(feature = "cli")]
pub mod serve;
pub mod tcp;

use std::{fmt::Debug, future::Future, time::Duration};

use futures::StreamExt;
use libp2p::{
    core::{transport::MemoryTransport, upgrade::Version, Transport},
    identify,
    identity::{Keypair, PublicKey},
    multiaddr::Protocol,
    noise, rendezvous,
    swarm::{NetworkBehaviour, SwarmEvent},
    yamux, Multiaddr, Swarm,
};
use libp2p_swarm_test::SwarmExt as _;
use rendezvous_discovery::server;

/// A safety net only: every wait in a test ends on an event; this catches a hang.
pub const HANG: Duration = Duration::from_secs(30);

/// How long a connection with nothing to do stays open. Long, so that tests which ask for
/// something later (a manual request, a dial) find the connection still there; the tests end
/// their swarms themselves.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// A fresh memory-transport address.
pub fn memory_addr() -> Multiaddr {
    Multiaddr::empty().with(Protocol::Memory(rand::random::<u64>() >> 1))
}

/// A swarm on the memory transport (noise, yamux) with a new identity; see [`swarm_with_key`].
pub fn swarm<B: NetworkBehaviour>(behaviour: impl FnOnce(Keypair) -> B) -> Swarm<B> {
    swarm_with_key(Keypair::generate_ed25519(), behaviour)
}

/// A swarm on the memory transport (noise, yamux) with identity `key`, keeping idle
/// connections open for [`IDLE_CONNECTION_TIMEOUT`].
pub fn swarm_with_key<B: NetworkBehaviour>(
    key: Keypair,
    behaviour: impl FnOnce(Keypair) -> B,
) -> Swarm<B> {
    let peer = key.public().to_peer_id();
    let transport = MemoryTransport::default()
        .upgrade(Version::V1)
        .authenticate(noise::Config::new(&key).expect("an ed25519 key suits noise"))
        .multiplex(yamux::Config::default())
        .boxed();
    Swarm::new(
        transport,
        behaviour(key),
        peer,
        libp2p::swarm::Config::with_tokio_executor()
            .with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT),
    )
}

/// Our server in a swarm of `libp2p-swarm-test`, listening on a memory address (external too),
/// for the test to drive.
pub async fn our_server(config: server::Config) -> Swarm<server::Behaviour> {
    let mut server = Swarm::new_ephemeral_tokio(|_| server::Behaviour::new(config));
    server.listen().with_memory_addr_external().await;
    server
}

/// rust-libp2p's own rendezvous client (0.18, legacy records), connected to `server`.
pub async fn rust_client<S>(server: &mut Swarm<S>) -> Swarm<rendezvous::client::Behaviour>
where
    S: NetworkBehaviour + Send,
    S::ToSwarm: Debug,
{
    let mut client = Swarm::new_ephemeral_tokio(rendezvous::client::Behaviour::new);
    client.listen().with_memory_addr_external().await;
    client.connect(server).await;
    client
}

/// Identify with rust-libp2p's default agent version, as the CLI and most applications run it
/// next to rendezvous: it tells each side the other's protocols (and so whether it is a
/// rendezvous server, or lists the standard-records marker).
pub fn identify(key: &PublicKey) -> identify::Behaviour {
    identify::Behaviour::new(identify::Config::new("/ipfs/id/1.0.0".into(), key.clone()))
}

/// A behaviour next to identify (see [`identify`]).
#[derive(NetworkBehaviour)]
pub struct WithIdentify<B: NetworkBehaviour> {
    pub identify: identify::Behaviour,
    pub rendezvous: B,
}

impl<B: NetworkBehaviour> WithIdentify<B> {
    /// Identify with `key`, next to what `rendezvous` builds from it.
    pub fn new(key: Keypair, rendezvous: impl FnOnce(Keypair) -> B) -> Self {
        Self {
            identify: identify(&key.public()),
            rendezvous: rendezvous(key),
        }
    }
}

/// Runs `until` to completion while polling `swarm`. Panics after [`HANG`].
pub async fn drive_until<B, T>(swarm: &mut Swarm<B>, until: impl Future<Output = T>) -> T
where
    B: NetworkBehaviour,
{
    let mut until = std::pin::pin!(until);
    let driven = async {
        loop {
            tokio::select! {
                out = &mut until => return out,
                _ = swarm.select_next_some() => {}
            }
        }
    };
    tokio::time::timeout(HANG, driven)
        .await
        .expect("done before the hang guard")
}

/// Runs `io` to completion while polling `a` and `b`; returns its output and the behaviour
/// events `a` emitted meanwhile. Panics after [`HANG`].
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
    let output = tokio::time::timeout(HANG, async {
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
    .expect("the exchange finishes before the hang guard");
    (output, events)
}

/// The stderr of a `rendezvous` run that must have failed as a usage or setup error: exit
/// status 2, nothing on stdout, one line on stderr (`context` names the case in failures).
pub fn one_line_error(output: &std::process::Output, context: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{context}: {stderr}");
    assert!(output.stdout.is_empty(), "{context}: stdout not empty");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{context}: {stderr}");
    stderr
}
