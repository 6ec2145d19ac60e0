//! The node the client commands run (`register`, `discover`, and the peers of `demo` and
//! `load`): their flags, how a swarm is built for them, and what every one of them does with its
//! listen addresses.

use std::time::Duration;

use libp2p::{
    identify, identity::Keypair, multiaddr::Protocol, swarm::NetworkBehaviour, swarm::SwarmEvent,
    Multiaddr, PeerId, Swarm,
};
use rendezvous_discovery::{client, Namespace, RecordFormat};

use crate::common::{build_swarm_with, load_or_create_identity, CliError, Transport};

/// How long a client node keeps a connection that nothing keeps alive.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A swarm for a node of a client command on TCP, QUIC and WebSocket (`/ws`, and `/wss` with
/// the public roots; names resolved by the system resolver), with its connections kept
/// `idle_timeout` while nothing else keeps them alive, its TCP dials leaving from `source`
/// (the kernel's choice when `None`).
pub fn swarm<B: NetworkBehaviour>(
    key: Keypair,
    idle_timeout: Duration,
    source: Option<std::net::IpAddr>,
    behaviour: impl FnOnce(&Keypair) -> B,
) -> Result<Swarm<B>, CliError> {
    let transport = Transport {
        idle_timeout,
        source,
        ..Transport::default()
    };
    build_swarm_with(key, &transport, behaviour)
}

/// Listens on each of `addrs`; `flag` names them in a refusal.
pub fn listen<B: NetworkBehaviour>(
    swarm: &mut Swarm<B>,
    flag: &str,
    addrs: Vec<Multiaddr>,
) -> Result<(), CliError> {
    for addr in addrs {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| CliError::Usage(format!("--{flag} {addr}: cannot listen ({e})")))?;
    }
    Ok(())
}

/// What every client node does with a swarm event first: a listen address becomes an external
/// address (the command has no other way to learn one: on loopback, it is the one the others
/// reach).
pub fn on_swarm_event<B: NetworkBehaviour>(swarm: &mut Swarm<B>, event: &SwarmEvent<B::ToSwarm>) {
    if let SwarmEvent::NewListenAddr { address, .. } = event {
        swarm.add_external_address(address.clone());
    }
}

/// Flags of a client node (`discover` and `register`).
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// Address to listen on (repeatable); its addresses go into our signed record.
    #[arg(long = "listen", default_value = "/ip4/127.0.0.1/tcp/0")]
    pub listen: Vec<String>,
    /// An address to announce in our signed record in addition (repeatable).
    #[arg(long = "external")]
    pub external: Vec<String>,
    /// The server's protocol id (some networks run rendezvous under their own, such as
    /// /vac/waku/rendezvous/1.0.0 or /canvas/rendezvous/1.0.0).
    #[arg(long, value_name = "ID", default_value = "/rendezvous/1.0.0", value_parser = crate::common::parse_protocol)]
    pub protocol: libp2p::StreamProtocol,
    /// Record format: standard, legacy (rust-libp2p 0.18 servers) or peer-info (unsigned;
    /// py-libp2p 0.8 servers). The client falls back from standard by itself.
    #[arg(long, default_value = "standard", value_parser = crate::common::parse_record_format)]
    pub record_format: RecordFormat,
    /// Key file (created if absent); without it a new identity is used.
    #[arg(long)]
    pub identity: Option<std::path::PathBuf>,
}

/// The agent version announced over identify. Servers may pick the records they send by it
/// (ours sends this client every record anyway: it lists the standard-records marker).
const AGENT_VERSION: &str = concat!("rendezvous-discovery/", env!("CARGO_PKG_VERSION"));

/// The client behaviour with identify beside it, so servers learn what we decode.
#[derive(NetworkBehaviour)]
pub struct Node {
    pub rendezvous: client::Behaviour,
    pub identify: identify::Behaviour,
}

/// The peer id and address of `--server`.
pub fn parse_server(value: &str) -> Result<(PeerId, Multiaddr), CliError> {
    let addr: Multiaddr = value
        .parse()
        .map_err(|e| CliError::Usage(format!("--server {value}: not a multiaddr ({e})")))?;
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Ok((peer, addr)),
        _ => Err(CliError::Usage(format!(
            "--server {value}: expected a multiaddr ending in /p2p/<peer id>"
        ))),
    }
}

/// The namespaces of `--namespace`.
pub fn parse_namespaces(values: &[String]) -> Result<Vec<Namespace>, CliError> {
    values
        .iter()
        .map(|v| {
            Namespace::new(v.clone())
                .map_err(|e| CliError::Usage(format!("--namespace {v:?}: {e}")))
        })
        .collect()
}

fn parse_addrs(flag: &str, values: &[String]) -> Result<Vec<Multiaddr>, CliError> {
    values
        .iter()
        .map(|v| {
            v.parse()
                .map_err(|e| CliError::Usage(format!("--{flag} {v}: not a multiaddr ({e})")))
        })
        .collect()
}

/// Builds the swarm for `config` and starts listening; announces the listen addresses.
pub fn start(node: &NodeArgs, config: client::Config) -> Result<Swarm<Node>, CliError> {
    let listen_addrs = parse_addrs("listen", &node.listen)?;
    let external = parse_addrs("external", &node.external)?;
    let key = match &node.identity {
        Some(path) => load_or_create_identity(path)?,
        None => Keypair::generate_ed25519(),
    };
    let mut config = config
        .with_record_format(node.record_format)
        .with_protocol(node.protocol.clone());
    for addr in external {
        config = config.with_external_address(addr);
    }
    let mut swarm = swarm(key, IDLE_TIMEOUT, None, |key| Node {
        rendezvous: client::Behaviour::new(key.clone(), config),
        identify: identify::Behaviour::new(
            identify::Config::new("/ipfs/id/1.0.0".into(), key.public())
                .with_agent_version(AGENT_VERSION.into()),
        ),
    })?;
    listen(&mut swarm, "listen", listen_addrs)?;
    Ok(swarm)
}
