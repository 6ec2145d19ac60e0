//! The discovered-peer cache: who was discovered in which namespace, at which addresses, until
//! when; what a page adds; and expiry.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use libp2p::{Multiaddr, PeerId};

use super::{deadlines::Deadlines, request::Action};
use crate::{
    client::{Event, MAX_DISCOVERED},
    codec::Registration,
    discovery::MAX_ADDRS_PER_PEER,
    Namespace, MAX_TTL,
};

#[derive(Debug)]
struct Cached {
    addrs: Vec<Multiaddr>,
    seq: u64,
}

/// The discovered registrations, at most [`MAX_DISCOVERED`] (peer, namespace) entries of at
/// most [`MAX_ADDRS_PER_PEER`] addresses each (a remote record may list any number).
///
/// Invariants: every entry has exactly one deadline in `expiry`; `len` counts the entries.
#[derive(Debug)]
pub(super) struct Cache {
    local: PeerId,
    peers: HashMap<PeerId, BTreeMap<Namespace, Cached>>,
    len: usize,
    expiry: Deadlines<(PeerId, Namespace)>,
}

impl Cache {
    pub(super) fn new(local: PeerId) -> Self {
        Self {
            local,
            peers: HashMap::new(),
            len: 0,
            expiry: Deadlines::default(),
        }
    }

    /// Every address discovered for `peer`, over all namespaces, at most
    /// [`MAX_ADDRS_PER_PEER`] like the discovery address book holds.
    pub(super) fn addresses(&self, peer: &PeerId) -> Vec<Multiaddr> {
        let mut out: Vec<Multiaddr> = Vec::new();
        for cached in self.peers.get(peer).into_iter().flat_map(|n| n.values()) {
            for a in &cached.addrs {
                if out.len() < MAX_ADDRS_PER_PEER && !out.contains(a) {
                    out.push(a.clone());
                }
            }
        }
        out
    }

    /// Puts a page's registrations, from `server` in answer to a DISCOVER for `asked`, into the
    /// cache; returns a [`Event::Discovered`] for each peer that is new or whose addresses
    /// changed, each followed by its addresses for the swarm. Our own records, registrations in a namespace not asked for, and ones with TTL
    /// 0 or no address are skipped; TTLs are clamped to [`MAX_TTL`].
    pub(super) fn absorb(
        &mut self,
        now: Instant,
        server: PeerId,
        asked: Option<&Namespace>,
        registrations: &[Registration],
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        for reg in registrations {
            let peer = reg.record.peer_id();
            if peer == self.local {
                continue;
            }
            if asked.is_some_and(|ns| *ns != reg.namespace) {
                tracing::debug!(%server, %peer, namespace = %reg.namespace, "skipping a registration in a namespace not asked for");
                continue;
            }
            if reg.ttl == 0 || reg.record.addresses().is_empty() {
                continue;
            }
            let expires = now + Duration::from_secs(reg.ttl.min(MAX_TTL));
            let mut addrs = reg.record.addresses().to_vec();
            addrs.dedup();
            addrs.truncate(MAX_ADDRS_PER_PEER);
            if self.update(peer, &reg.namespace, &addrs, reg.record.seq(), expires) {
                // The swarm learns the addresses too (other behaviours may dial them).
                let told = addrs.iter().map(|address| Action::NewAddressOfPeer {
                    peer,
                    address: address.clone(),
                });
                let told: Vec<Action> = told.collect();
                actions.push(Action::Event(Event::Discovered {
                    peer,
                    addrs,
                    namespace: reg.namespace.clone(),
                    server,
                }));
                actions.extend(told);
            }
        }
        actions
    }

    /// Stores one registration; returns whether it is news (a new entry, or a changed address
    /// set in a record at least as recent as the stored one). The deadline only moves later.
    fn update(
        &mut self,
        peer: PeerId,
        namespace: &Namespace,
        addrs: &[Multiaddr],
        seq: u64,
        expires: Instant,
    ) -> bool {
        let key = (peer, namespace.clone());
        let known = self.peers.get_mut(&peer).and_then(|n| n.get_mut(namespace));
        let Some(cached) = known else {
            if self.len >= MAX_DISCOVERED {
                tracing::debug!(%peer, "discovered-peer cache full; skipping");
                return false;
            }
            let cached = Cached {
                addrs: addrs.to_vec(),
                seq,
            };
            self.peers
                .entry(peer)
                .or_default()
                .insert(namespace.clone(), cached);
            self.len += 1;
            self.expiry.set(key, expires);
            return true;
        };
        let changed = seq >= cached.seq && !same_set(&cached.addrs, addrs);
        if seq >= cached.seq {
            cached.seq = seq;
        }
        if changed {
            cached.addrs = addrs.to_vec();
        }
        if self.expiry.get(&key).is_some_and(|old| expires > old) {
            self.expiry.set(key, expires);
        }
        changed
    }

    /// A registration whose TTL ended by `now`, now removed.
    pub(super) fn poll_expired(&mut self, now: Instant) -> Option<Event> {
        let (peer, namespace) = self.expiry.pop_due(now)?;
        if let Some(namespaces) = self.peers.get_mut(&peer) {
            if namespaces.remove(&namespace).is_some() {
                self.len -= 1;
            }
            if namespaces.is_empty() {
                self.peers.remove(&peer);
            }
        }
        Some(Event::Expired { peer, namespace })
    }

    /// The registration of `peer` in `namespace` ended before its TTL (a server pushed its
    /// removal): removed now, reported as [`Event::Expired`] if it was discovered.
    pub(super) fn remove(&mut self, peer: PeerId, namespace: &Namespace) -> Option<Event> {
        let namespaces = self.peers.get_mut(&peer)?;
        namespaces.remove(namespace)?;
        self.len -= 1;
        if namespaces.is_empty() {
            self.peers.remove(&peer);
        }
        self.expiry.clear(&(peer, namespace.clone()));
        let namespace = namespace.clone();
        Some(Event::Expired { peer, namespace })
    }

    /// The next expiry.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.expiry.first()
    }
}

fn same_set(a: &[Multiaddr], b: &[Multiaddr]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::{test_support::*, Request};
    use crate::{
        client::Event, codec::Registration, discovery::MAX_ADDRS_PER_PEER, Namespace, RecordFormat,
        SignedRecord, MAX_TTL,
    };

    #[test]
    fn given_a_discovered_registration_when_its_ttl_ends_unseen_then_it_expires() {
        let t0 = Instant::now();
        let mut s = connected(discover_only().with_interval(Duration::from_secs(100)), t0);
        let sent = sends(&drain(&mut s, t0));
        s.on_response(t0, sent[0].0, Ok(page(vec![registration(2, 1, 10)], b"c1")));
        assert_eq!(events(drain(&mut s, t0)).len(), 1);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        assert!(events(drain(&mut s, t0 + Duration::from_secs(9))).is_empty());
        let evs = events(drain(&mut s, t0 + Duration::from_secs(10)));
        assert!(matches!(&evs[..], [Event::Expired { peer: p, .. }] if *p == peer(2)));
        assert!(s.discovered_addresses(&peer(2)).is_empty());
    }

    #[test]
    fn given_hostile_pages_then_self_foreign_namespace_zero_ttl_and_huge_ttl_are_handled() {
        let t0 = Instant::now();
        let mut s = connected(discover_only(), t0);
        let sent = sends(&drain(&mut s, t0));
        let mut foreign = registration(3, 1, 100);
        foreign.namespace = Namespace::from_static("other");
        let regs = vec![
            registration(1, 1, 100), // ourselves
            foreign,
            registration(4, 1, 0),
            registration(5, 1, u64::MAX),
        ];
        s.on_response(t0, sent[0].0, Ok(page(regs, b"c")));
        let evs = events(drain(&mut s, t0));
        assert!(
            matches!(&evs[..], [Event::Discovered { peer: p, .. }] if *p == peer(5)),
            "{evs:?}"
        );
        // The huge TTL is clamped to MAX_TTL rather than overflowing the clock.
        let cap = t0 + Duration::from_secs(MAX_TTL);
        assert!(events(drain(&mut s, cap - Duration::from_secs(1))).is_empty());
        let evs = events(drain(&mut s, cap));
        assert!(matches!(&evs[..], [Event::Expired { peer: p, .. }] if *p == peer(5)));
    }

    #[test]
    fn given_records_with_too_many_addresses_then_a_peer_keeps_at_most_the_address_book_cap() {
        let t0 = Instant::now();
        let mut s = connected(
            discover_only().with_namespace(Namespace::from_static("b")),
            t0,
        );
        let record = |first: u16| {
            let addrs = (first..first + 40)
                .map(|port| format!("/ip4/10.0.0.2/tcp/{port}").parse().unwrap())
                .collect();
            SignedRecord::new(&key(2), addrs, RecordFormat::Standard).unwrap()
        };
        let sent = sends(&drain(&mut s, t0));
        assert_eq!(sent.len(), 2, "one DISCOVER per namespace");
        for (i, (id, request)) in sent.into_iter().enumerate() {
            let Request::Discover {
                namespace: Some(namespace),
                ..
            } = request
            else {
                panic!("{request:?}");
            };
            let registration = Registration {
                namespace,
                record: record(1000 * (i as u16 + 1)),
                ttl: 100,
            };
            s.on_response(t0, id, Ok(page(vec![registration], b"c")));
        }
        let evs = events(drain(&mut s, t0));
        assert_eq!(evs.len(), 2);
        for e in &evs {
            let Event::Discovered { addrs, .. } = e else {
                panic!("{e:?}");
            };
            assert_eq!(addrs.len(), MAX_ADDRS_PER_PEER);
        }
        assert_eq!(s.discovered_addresses(&peer(2)).len(), MAX_ADDRS_PER_PEER);
    }
}
