//! `rendezvous register`: register in namespaces with a server, keep the registrations fresh
//! until Ctrl-C or SIGTERM, then unregister.

use rendezvous_discovery::client;

use crate::{
    common::CliResult,
    discover::{parse_namespaces, parse_server, start, NodeArgs},
    session,
    signals::Signals,
    watch::Watch,
};

/// Flags of `rendezvous register`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server's multiaddr, ending in /p2p/PEER_ID.
    #[arg(long)]
    server: String,
    /// A namespace to register in (repeatable).
    #[arg(long = "namespace", required = true)]
    namespaces: Vec<String>,
    /// TTL to ask for, in seconds.
    #[arg(long, default_value_t = rendezvous_discovery::DEFAULT_TTL)]
    ttl: u64,
    /// Print JSON lines instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    node: NodeArgs,
}

pub async fn run(args: Args) -> CliResult {
    let (server, server_addr) = parse_server(&args.server)?;
    let namespaces = parse_namespaces(&args.namespaces)?;
    let signals = Signals::install()?;
    let mut config = client::Config::default()
        .with_server(server, vec![server_addr])
        .with_ttl(args.ttl)
        .with_discovery(false)
        .with_learned_servers(false);
    for ns in namespaces {
        config = config.with_namespace(ns);
    }
    let swarm = start(&args.node, config)?;
    session::run(
        swarm,
        Watch::new(server, args.json),
        args.json,
        true,
        signals,
    )
    .await
}
