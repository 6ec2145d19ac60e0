//! Our client in a [`Node`], next to identify (a client that only discovers holds its first
//! DISCOVER until identify told it the server's protocols), and matchers for its events.

use libp2p::{Multiaddr, PeerId};
use rendezvous_discovery::client::{self, Event};

use super::{
    node::{spawn_with_identify, Node},
    WithIdentify,
};

/// Our client running in a task, reporting the client's events.
pub type ClientNode = Node<WithIdentify<client::Behaviour>, Event>;

/// Starts our client with `config`, listening on a new memory address (its external address).
pub async fn spawn_client(config: client::Config) -> ClientNode {
    spawn_with_identify(super::swarm(|key| {
        WithIdentify::new(key, |key| client::Behaviour::new(key, config))
    }))
    .await
}

/// Matches `Discovered` of peer `of`, giving its addresses.
pub fn discovered(of: PeerId) -> impl FnMut(&Event) -> Option<Vec<Multiaddr>> {
    move |e| match e {
        Event::Discovered { peer, addrs, .. } if *peer == of => Some(addrs.clone()),
        _ => None,
    }
}

/// Matches `Registered`, giving the server.
pub fn registered_at(e: &Event) -> Option<PeerId> {
    match e {
        Event::Registered { server, .. } => Some(*server),
        _ => None,
    }
}
