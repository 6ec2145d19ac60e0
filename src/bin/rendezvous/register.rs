//! `rendezvous register`: register in namespaces with a server, keep the registrations fresh
//! until Ctrl-C, then unregister.

use std::{process::ExitCode, time::Duration};

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use rendezvous_discovery::client;

use crate::{
    common::{CliError, CliResult},
    discover::{
        on_swarm_event, parse_namespaces, parse_server, render, start, NodeArgs, NodeEvent,
    },
};

/// How long to wait for the UNREGISTERs to be written after Ctrl-C.
const STOP_GRACE: Duration = Duration::from_secs(5);

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
    let mut config = client::Config::default()
        .with_server(server, vec![server_addr])
        .with_ttl(args.ttl)
        .with_discovery(false)
        .with_learned_servers(false);
    for ns in namespaces {
        config = config.with_namespace(ns);
    }
    let mut swarm = start(&args.node, config)?;
    loop {
        tokio::select! {
            event = swarm.select_next_some() => {
                on_swarm_event(&mut swarm, &event);
                if let SwarmEvent::Behaviour(NodeEvent::Rendezvous(event)) = event {
                    if let Some(line) = render(&event, args.json) {
                        println!("{line}");
                    }
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    swarm.behaviour_mut().rendezvous.stop();
    let stopped = tokio::time::timeout(STOP_GRACE, async {
        loop {
            if let SwarmEvent::Behaviour(NodeEvent::Rendezvous(event)) =
                swarm.select_next_some().await
            {
                if let Some(line) = render(&event, args.json) {
                    println!("{line}");
                }
                if matches!(event, client::Event::Stopped) {
                    return;
                }
            }
        }
    })
    .await;
    match stopped {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(_) => Err(CliError::Failed(
            "the unregistrations were not all sent in time".into(),
        )),
    }
}
