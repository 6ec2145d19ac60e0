//! Discovery from three sources through one aggregator: mdns on the LAN, a bootstrap list,
//! and a rendezvous server. Prints every peer it discovers, once per new peer or address, and
//! every peer no source knows any more.
//!
//! ```sh
//! # in one terminal: a rendezvous server (prints its address)
//! cargo run --release -- serve
//! # in two others (the same namespace):
//! cargo run --example discover -- /ip4/127.0.0.1/tcp/62649/p2p/<server peer id> my-app
//! ```
//!
//! Without a server address only mdns runs (try two copies on one LAN). The server address is
//! also the bootstrap list, so you see it reported by `bootstrap` first.

use std::time::Duration;

use futures::StreamExt;
use libp2p::{
    identify, multiaddr::Protocol, noise, ping, swarm::NetworkBehaviour, swarm::SwarmEvent, tcp,
    yamux, Multiaddr,
};
use rendezvous_discovery::{bootstrap, client, discovery, mdns, Namespace};

/// The sources: a derived struct, made a discovery source by delegating per variant.
#[derive(NetworkBehaviour)]
struct Sources {
    mdns: mdns::Behaviour,
    bootstrap: bootstrap::Behaviour,
    rendezvous: client::Behaviour,
}

impl discovery::Source for Sources {
    fn discoveries(&self, event: &SourcesEvent, found: &mut discovery::Found) {
        match event {
            SourcesEvent::Mdns(e) => self.mdns.discoveries(e, found),
            SourcesEvent::Bootstrap(e) => self.bootstrap.discoveries(e, found),
            SourcesEvent::Rendezvous(e) => self.rendezvous.discoveries(e, found),
        }
    }
}

/// The node: the aggregated sources next to identify and ping.
#[derive(NetworkBehaviour)]
struct Node {
    discovery: discovery::Behaviour<Sources>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let server: Option<Multiaddr> = args.next().map(|s| s.parse()).transpose()?;
    let namespace: Namespace = args.next().unwrap_or_else(|| "demo".into()).parse()?;

    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| {
            let local = key.public().to_peer_id();
            let mut rendezvous = client::Config::default()
                .with_namespace(namespace.clone())
                .with_interval(Duration::from_secs(5));
            let mut bootstrap_list = Vec::new();
            if let Some(addr) = &server {
                let Some(Protocol::P2p(server_id)) = addr.iter().last() else {
                    return Err("the server address must end in /p2p/<peer id>".into());
                };
                rendezvous = rendezvous.with_server(server_id, vec![addr.clone()]);
                bootstrap_list.push(addr.clone());
            }
            let sources = Sources {
                mdns: mdns::Behaviour::new(mdns::Config::default(), local)?,
                bootstrap: bootstrap::Behaviour::new(bootstrap::Config::new(bootstrap_list)?),
                rendezvous: client::Behaviour::new(key.clone(), rendezvous),
            };
            Ok(Node {
                discovery: discovery::Behaviour::new(sources, discovery::Config::default()),
                identify: identify::Behaviour::new(identify::Config::new(
                    "/discover-example/1.0.0".into(),
                    key.public(),
                )),
                ping: ping::Behaviour::default(),
            })
        })?
        .build();
    swarm.listen_on("/ip4/0.0.0.0/tcp/0".parse()?)?;
    println!(
        "local peer id {}, namespace \"{namespace}\"",
        swarm.local_peer_id()
    );

    loop {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { address, .. } => {
                println!("listening on {address}");
                // On a LAN our listen addresses are how others reach us; tell the client so it
                // can put them in its signed record.
                if !address
                    .iter()
                    .any(|p| p == Protocol::Ip4([127, 0, 0, 1].into()))
                {
                    swarm.add_external_address(address);
                }
            }
            SwarmEvent::Behaviour(NodeEvent::Discovery(event)) => match event {
                discovery::Event::Discovered {
                    peer,
                    addrs,
                    source,
                } => println!("discovered {peer} via {source} at {addrs:?}"),
                discovery::Event::Expired { peer, .. } => println!("expired    {peer}"),
                discovery::Event::Source(SourcesEvent::Rendezvous(e)) => match e {
                    // The raw event is passed through too: here rendezvous may confirm a
                    // peer mdns found first, which the aggregator did not report again.
                    client::Event::Discovered {
                        peer, namespace, ..
                    } => println!("  (rendezvous lists {peer} in \"{namespace}\")"),
                    client::Event::Registered { namespace, ttl, .. } => {
                        println!("registered in \"{namespace}\" for {ttl} s")
                    }
                    client::Event::RegisterFailed { error, .. } => {
                        println!("register failed: {error}")
                    }
                    client::Event::DiscoverFailed { error, .. } => {
                        println!("discover failed: {error}")
                    }
                    _ => {}
                },
                discovery::Event::Source(_) => {}
            },
            _ => {}
        }
    }
}
