//! The pure, bounded address book behind the aggregator.

use std::collections::{hash_map::Entry, HashMap};

use libp2p::{multiaddr::Protocol, Multiaddr, PeerId};

/// How many peers the book holds by default. Discoveries of further peers are ignored until
/// some expire: a remote source (a rendezvous server, a LAN full of mdns responders) must not
/// grow our memory without limit, and evicting peers that sources still know would break the
/// rule that `Expired` means "no source knows this peer any more".
pub const MAX_PEERS: usize = 4096;

/// How many addresses of one peer the book holds by default. Real peers have a handful (one
/// per transport and interface); further addresses are ignored.
pub const MAX_ADDRS_PER_PEER: usize = 16;

/// What [`AddressBook::discovered`] learned from one report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// The peer was not in the book; these are its addresses (possibly none).
    NewPeer(Vec<Multiaddr>),
    /// The peer was known; these addresses are new.
    NewAddresses(Vec<Multiaddr>),
    /// Nothing new: the source, the peer and every address were known already (or ignored
    /// because a bound is reached).
    Unchanged,
    /// The peer is new but the book is full ([`AddressBook::max_peers`]); it was not added.
    Full,
}

#[derive(Debug, Clone)]
struct Address {
    addr: Multiaddr,
    /// The sources that reported this address.
    sources: Vec<&'static str>,
}

#[derive(Debug, Clone, Default)]
struct Entry_ {
    /// The sources that still know the peer. Labels are `&'static str` chosen in code, so this
    /// set is bounded by the program, not by remote input.
    sources: Vec<&'static str>,
    addrs: Vec<Address>,
}

/// Which peers the discovery sources know, at which addresses, according to which sources.
///
/// A plain struct: no I/O, no clock. It deduplicates by peer and by address across sources,
/// tells what a report adds ([`Update`]) and says a peer expired only when the last source that
/// knew it lets it go. Addresses are stored without a trailing `/p2p/<peer>`; an address naming
/// another peer is dropped.
///
/// ```
/// use rendezvous_discovery::discovery::{AddressBook, Update};
/// # let peer = libp2p::PeerId::random();
/// let mut book = AddressBook::default();
/// let addr: libp2p::Multiaddr = "/ip4/10.0.0.1/tcp/4001".parse().unwrap();
/// assert_eq!(book.discovered("mdns", peer, [addr.clone()]), Update::NewPeer(vec![addr.clone()]));
/// assert_eq!(book.discovered("rendezvous", peer, [addr.clone()]), Update::Unchanged);
/// assert!(!book.expired("mdns", &peer)); // rendezvous still knows it
/// assert!(book.expired("rendezvous", &peer));
/// ```
#[derive(Debug, Clone)]
pub struct AddressBook {
    peers: HashMap<PeerId, Entry_>,
    max_peers: usize,
    max_addrs_per_peer: usize,
}

impl Default for AddressBook {
    fn default() -> Self {
        Self::new(MAX_PEERS, MAX_ADDRS_PER_PEER)
    }
}

impl AddressBook {
    /// An empty book holding at most `max_peers` peers with at most `max_addrs_per_peer`
    /// addresses each.
    pub fn new(max_peers: usize, max_addrs_per_peer: usize) -> Self {
        Self {
            peers: HashMap::new(),
            max_peers,
            max_addrs_per_peer,
        }
    }

    /// The most peers this book holds.
    pub fn max_peers(&self) -> usize {
        self.max_peers
    }

    /// The most addresses per peer this book holds.
    pub fn max_addrs_per_peer(&self) -> usize {
        self.max_addrs_per_peer
    }

    /// Records that `source` knows `peer` at `addrs`; returns what is new.
    pub fn discovered(
        &mut self,
        source: &'static str,
        peer: PeerId,
        addrs: impl IntoIterator<Item = Multiaddr>,
    ) -> Update {
        let max_addrs = self.max_addrs_per_peer;
        let is_full = self.peers.len() >= self.max_peers;
        let (entry, is_new_peer) = match self.peers.entry(peer) {
            Entry::Occupied(e) => (e.into_mut(), false),
            Entry::Vacant(_) if is_full => return Update::Full,
            Entry::Vacant(e) => (e.insert(Entry_::default()), true),
        };
        if !entry.sources.contains(&source) {
            entry.sources.push(source);
        }
        let mut new = Vec::new();
        for addr in addrs {
            let Some(addr) = normalize(addr, &peer) else {
                continue;
            };
            if let Some(known) = entry.addrs.iter_mut().find(|a| a.addr == addr) {
                if !known.sources.contains(&source) {
                    known.sources.push(source);
                }
                continue;
            }
            if entry.addrs.len() >= max_addrs {
                continue;
            }
            entry.addrs.push(Address {
                addr: addr.clone(),
                sources: vec![source],
            });
            new.push(addr);
        }
        if is_new_peer {
            Update::NewPeer(new)
        } else if new.is_empty() {
            Update::Unchanged
        } else {
            Update::NewAddresses(new)
        }
    }

    /// Records that `source` no longer knows `peer`. Addresses only that source reported are
    /// forgotten. Returns `true` when no source knows the peer any more: it is removed and has
    /// expired.
    pub fn expired(&mut self, source: &'static str, peer: &PeerId) -> bool {
        let Some(entry) = self.peers.get_mut(peer) else {
            return false;
        };
        if !entry.sources.contains(&source) {
            return false;
        }
        entry.sources.retain(|s| *s != source);
        if entry.sources.is_empty() {
            self.peers.remove(peer);
            return true;
        }
        for addr in &mut entry.addrs {
            addr.sources.retain(|s| *s != source);
        }
        entry.addrs.retain(|a| !a.sources.is_empty());
        false
    }

    /// The known addresses of `peer`, in the order they were learned.
    pub fn addresses_of(&self, peer: &PeerId) -> impl Iterator<Item = &Multiaddr> + '_ {
        self.peers
            .get(peer)
            .into_iter()
            .flat_map(|e| e.addrs.iter().map(|a| &a.addr))
    }

    /// The sources that still know `peer` (empty when the peer is unknown).
    pub fn sources_of(&self, peer: &PeerId) -> &[&'static str] {
        self.peers
            .get(peer)
            .map(|e| e.sources.as_slice())
            .unwrap_or_default()
    }

    /// Whether any source knows `peer`.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// The known peers.
    pub fn peers(&self) -> impl Iterator<Item = &PeerId> + '_ {
        self.peers.keys()
    }

    /// How many peers are known.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is known.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

/// `addr` without a trailing `/p2p/<peer>`; `None` if it names another peer or is empty.
fn normalize(mut addr: Multiaddr, peer: &PeerId) -> Option<Multiaddr> {
    if let Some(Protocol::P2p(id)) = addr.iter().last() {
        if id != *peer {
            return None;
        }
        addr.pop();
    }
    (!addr.is_empty()).then_some(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn given_an_empty_book_when_a_peer_is_discovered_then_it_is_new_with_its_addresses() {
        let mut book = AddressBook::default();
        let peer = PeerId::random();
        let a = addr("/ip4/10.0.0.1/tcp/1");
        assert_eq!(
            book.discovered("mdns", peer, [a.clone()]),
            Update::NewPeer(vec![a.clone()])
        );
        assert_eq!(book.addresses_of(&peer).collect::<Vec<_>>(), [&a]);
        assert_eq!(book.sources_of(&peer), ["mdns"]);
    }

    #[test]
    fn given_a_known_peer_when_another_source_reports_the_same_address_then_nothing_is_new() {
        let mut book = AddressBook::default();
        let peer = PeerId::random();
        let a = addr("/ip4/10.0.0.1/tcp/1");
        book.discovered("mdns", peer, [a.clone()]);
        assert_eq!(
            book.discovered("rendezvous", peer, [a.clone()]),
            Update::Unchanged
        );
        assert_eq!(
            book.discovered("mdns", peer, [a.clone(), a.clone()]),
            Update::Unchanged
        );
        assert_eq!(book.addresses_of(&peer).count(), 1);
        assert_eq!(book.sources_of(&peer), ["mdns", "rendezvous"]);
    }

    #[test]
    fn given_a_known_peer_when_a_source_reports_a_new_address_then_only_it_is_returned() {
        let mut book = AddressBook::default();
        let peer = PeerId::random();
        let a = addr("/ip4/10.0.0.1/tcp/1");
        let b = addr("/ip4/10.0.0.2/tcp/1");
        book.discovered("mdns", peer, [a.clone()]);
        assert_eq!(
            book.discovered("rendezvous", peer, [a.clone(), b.clone()]),
            Update::NewAddresses(vec![b.clone()])
        );
        assert_eq!(book.addresses_of(&peer).collect::<Vec<_>>(), [&a, &b]);
    }

    #[test]
    fn addresses_with_the_peers_own_p2p_suffix_are_merged_and_other_peers_are_dropped() {
        let mut book = AddressBook::default();
        let peer = PeerId::random();
        let other = PeerId::random();
        let a = addr("/ip4/10.0.0.1/tcp/1");
        let with_suffix = a.clone().with(Protocol::P2p(peer));
        let foreign = addr("/ip4/10.0.0.9/tcp/1").with(Protocol::P2p(other));
        assert_eq!(
            book.discovered("bootstrap", peer, [with_suffix, foreign]),
            Update::NewPeer(vec![a.clone()])
        );
        assert_eq!(
            book.discovered("mdns", peer, [a.clone()]),
            Update::Unchanged
        );
        assert_eq!(book.addresses_of(&peer).collect::<Vec<_>>(), [&a]);
    }

    #[test]
    fn given_two_sources_when_one_expires_the_peer_then_it_stays_until_the_other_does() {
        let mut book = AddressBook::default();
        let peer = PeerId::random();
        let a = addr("/ip4/10.0.0.1/tcp/1");
        let b = addr("/ip4/10.0.0.2/tcp/1");
        book.discovered("mdns", peer, [a.clone()]);
        book.discovered("rendezvous", peer, [a.clone(), b.clone()]);

        assert!(!book.expired("rendezvous", &peer));
        assert!(book.contains(&peer));
        // b was known only through rendezvous; a is still vouched for by mdns.
        assert_eq!(book.addresses_of(&peer).collect::<Vec<_>>(), [&a]);
        assert_eq!(book.sources_of(&peer), ["mdns"]);

        assert!(book.expired("mdns", &peer));
        assert!(!book.contains(&peer));
        assert!(book.is_empty());
    }

    #[test]
    fn expiry_by_a_source_that_never_knew_the_peer_changes_nothing() {
        let mut book = AddressBook::default();
        let peer = PeerId::random();
        book.discovered("mdns", peer, [addr("/ip4/10.0.0.1/tcp/1")]);
        assert!(!book.expired("rendezvous", &peer));
        assert!(!book.expired("mdns", &PeerId::random()));
        assert_eq!(book.sources_of(&peer), ["mdns"]);
        assert!(book.expired("mdns", &peer));
        assert!(!book.expired("mdns", &peer), "expires once");
    }

    #[test]
    fn given_a_full_book_when_a_new_peer_is_discovered_then_it_is_refused_until_one_expires() {
        let mut book = AddressBook::new(2, MAX_ADDRS_PER_PEER);
        let [p1, p2, p3] = [PeerId::random(), PeerId::random(), PeerId::random()];
        let a = addr("/ip4/10.0.0.1/tcp/1");
        book.discovered("s", p1, [a.clone()]);
        book.discovered("s", p2, [a.clone()]);
        assert_eq!(book.discovered("s", p3, [a.clone()]), Update::Full);
        assert_eq!(book.len(), 2);
        // Known peers still take new addresses.
        let b = addr("/ip4/10.0.0.2/tcp/1");
        assert_eq!(
            book.discovered("s", p1, [b.clone()]),
            Update::NewAddresses(vec![b])
        );
        assert!(book.expired("s", &p2));
        assert_eq!(
            book.discovered("s", p3, [a.clone()]),
            Update::NewPeer(vec![a])
        );
    }

    #[test]
    fn given_a_peer_at_its_address_bound_then_further_addresses_are_ignored() {
        let mut book = AddressBook::new(MAX_PEERS, 2);
        let peer = PeerId::random();
        let addrs: Vec<Multiaddr> = (1..=4)
            .map(|i| addr(&format!("/ip4/10.0.0.{i}/tcp/1")))
            .collect();
        assert_eq!(
            book.discovered("s", peer, addrs.clone()),
            Update::NewPeer(addrs[..2].to_vec())
        );
        assert_eq!(book.discovered("t", peer, addrs.clone()), Update::Unchanged);
        assert_eq!(book.addresses_of(&peer).count(), 2);
    }
}
