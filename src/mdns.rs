//! rust-libp2p's mdns as a discovery source (feature `mdns`, on by default).
//!
//! [`libp2p::mdns::tokio::Behaviour`] (re-exported here as [`Behaviour`]) implements
//! [`discovery::Source`](crate::discovery::Source): `mdns::Event::Discovered` becomes one discovery per
//! peer with its addresses; `mdns::Event::Expired` becomes `Expired` for a peer only when mdns
//! has no address of that peer left (mdns expires addresses one by one).
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! # let local_peer_id = libp2p::PeerId::random();
//! use rendezvous_discovery::{discovery, mdns};
//!
//! let lan = mdns::Behaviour::new(mdns::Config::default(), local_peer_id)?;
//! let discovery = discovery::Behaviour::new(lan, discovery::Config::default());
//! # Ok(()) }
//! ```

use libp2p::{mdns::Event, Multiaddr, PeerId};

use crate::discovery::{Found, Source};

pub use libp2p::mdns::{tokio::Behaviour, Config};

/// The label of this source in [`discovery::Event::Discovered`](crate::discovery::Event).
pub const SOURCE: &str = "mdns";

impl Source for Behaviour {
    fn discoveries(&self, event: &Event, found: &mut Found) {
        project(
            event,
            |peer| self.discovered_nodes().any(|p| p == peer),
            found,
        );
    }
}

/// Projects an mdns event; `still_known` says whether mdns still has an address of a peer.
fn project(event: &Event, still_known: impl Fn(&PeerId) -> bool, found: &mut Found) {
    match event {
        Event::Discovered(list) => {
            for (peer, addrs) in group_by_peer(list) {
                found.discovered(SOURCE, peer, addrs);
            }
        }
        Event::Expired(list) => {
            for (peer, _) in group_by_peer(list) {
                if !still_known(&peer) {
                    found.expired(SOURCE, peer);
                }
            }
        }
    }
}

/// mdns lists (peer, address) pairs; one discovery per peer, in first-seen order.
fn group_by_peer(list: &[(PeerId, Multiaddr)]) -> Vec<(PeerId, Vec<Multiaddr>)> {
    let mut peers: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
    for (peer, addr) in list {
        match peers.iter_mut().find(|(p, _)| p == peer) {
            Some((_, addrs)) => addrs.push(addr.clone()),
            None => peers.push((*peer, vec![addr.clone()])),
        }
    }
    peers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::Discovery;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn discovered_pairs_become_one_discovery_per_peer() {
        let [p, q] = [PeerId::random(), PeerId::random()];
        let (a, b, c) = (
            addr("/ip4/10.0.0.1/tcp/1"),
            addr("/ip4/10.0.0.2/tcp/1"),
            addr("/ip4/10.0.0.3/tcp/1"),
        );
        let event = Event::Discovered(vec![(p, a.clone()), (q, c.clone()), (p, b.clone())]);
        let mut found = Found::new();
        project(&event, |_| true, &mut found);
        assert_eq!(
            found.drain().collect::<Vec<_>>(),
            [
                (
                    SOURCE,
                    Discovery::Discovered {
                        peer: p,
                        addrs: vec![a, b]
                    }
                ),
                (
                    SOURCE,
                    Discovery::Discovered {
                        peer: q,
                        addrs: vec![c]
                    }
                ),
            ]
        );
    }

    #[test]
    fn a_peer_expires_only_when_mdns_has_no_address_of_it_left() {
        let [p, q] = [PeerId::random(), PeerId::random()];
        let event = Event::Expired(vec![
            (p, addr("/ip4/10.0.0.1/tcp/1")),
            (q, addr("/ip4/10.0.0.2/tcp/1")),
            (p, addr("/ip4/10.0.0.3/tcp/1")),
        ]);
        let mut found = Found::new();
        // mdns still has another address of q.
        project(&event, |peer| *peer == q, &mut found);
        assert_eq!(
            found.drain().collect::<Vec<_>>(),
            [(SOURCE, Discovery::Expired { peer: p })]
        );
    }
}
