//! [`Index`]: the stored registrations by sequence number, and the three orders DISCOVER and
//! expiry read them in (per namespace, all namespaces, by deadline).

use std::{
    collections::{BTreeSet, HashMap},
    ops::Bound,
    time::Instant,
};

use crate::codec::{Namespace, Registration, SignedRecord, Ttl};

/// One stored registration.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) namespace: Namespace,
    pub(super) record: SignedRecord,
    /// The TTL granted.
    pub(super) ttl: Ttl,
    pub(super) deadline: Instant,
}

impl Entry {
    /// The registration with the TTL it was granted.
    pub(super) fn into_granted(self) -> Registration {
        let ttl = self.ttl;
        self.into_registration(ttl)
    }

    /// The registration with `ttl`.
    pub(super) fn into_registration(self, ttl: Ttl) -> Registration {
        Registration {
            namespace: self.namespace,
            record: self.record,
            ttl,
        }
    }
}

/// The entries, each under its sequence number, and the orders over them. Invariant: every
/// sequence number in an order is an entry, and every entry is in each order (its namespace's,
/// the global one, expiry under its deadline); no namespace order is empty.
#[derive(Debug, Default)]
pub(super) struct Index {
    /// seq -> entry: the one owner of the data; the orders hold sequence numbers.
    entries: HashMap<u64, Entry>,
    by_namespace: HashMap<Namespace, BTreeSet<u64>>,
    all: BTreeSet<u64>,
    expiry: BTreeSet<(Instant, u64)>,
}

impl Index {
    /// How many entries there are.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// How many namespaces have an entry.
    pub(super) fn namespace_count(&self) -> usize {
        self.by_namespace.len()
    }

    pub(super) fn get(&self, seq: u64) -> Option<&Entry> {
        self.entries.get(&seq)
    }

    /// Adds `entry` under `seq` (which must not be taken).
    pub(super) fn insert(&mut self, seq: u64, entry: Entry) {
        self.by_namespace
            .entry(entry.namespace.clone())
            .or_default()
            .insert(seq);
        self.all.insert(seq);
        self.expiry.insert((entry.deadline, seq));
        self.entries.insert(seq, entry);
    }

    /// Removes entry `seq` from every order.
    pub(super) fn remove(&mut self, seq: u64) -> Option<Entry> {
        let entry = self.entries.remove(&seq)?;
        self.all.remove(&seq);
        self.expiry.remove(&(entry.deadline, seq));
        if let Some(order) = self.by_namespace.get_mut(&entry.namespace) {
            order.remove(&seq);
            if order.is_empty() {
                self.by_namespace.remove(&entry.namespace);
            }
        }
        Some(entry)
    }

    /// The entries after `after` in `namespace` (all namespaces when `None`), in sequence
    /// order.
    pub(super) fn after<'a>(
        &'a self,
        namespace: Option<&Namespace>,
        after: u64,
    ) -> impl Iterator<Item = (u64, &'a Entry)> + 'a {
        let order = match namespace {
            Some(ns) => self.by_namespace.get(ns),
            None => Some(&self.all),
        };
        order
            .into_iter()
            .flat_map(move |order| order.range((Bound::Excluded(after), Bound::Unbounded)))
            .filter_map(|seq| Some((*seq, self.entries.get(seq)?)))
    }

    /// Every entry, in no order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &Entry)> {
        self.entries.iter().map(|(seq, entry)| (*seq, entry))
    }

    /// The earliest deadline.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.expiry.first().map(|(deadline, _)| *deadline)
    }

    /// The entry with the earliest deadline, if that is at or before `now`.
    pub(super) fn first_expired(&self, now: Instant) -> Option<u64> {
        let &(deadline, seq) = self.expiry.first()?;
        (deadline <= now).then_some(seq)
    }

    /// Checks the invariant, and that no entry is above `counter`. O(n).
    pub(super) fn check(&self, counter: u64) -> Result<(), String> {
        for (&seq, entry) in &self.entries {
            if seq > counter {
                return Err(format!("entry {seq} is ahead of the counter {counter}"));
            }
            if !self
                .by_namespace
                .get(&entry.namespace)
                .is_some_and(|order| order.contains(&seq))
                || !self.all.contains(&seq)
                || !self.expiry.contains(&(entry.deadline, seq))
            {
                return Err(format!("entry {seq} is missing from an index"));
            }
        }
        let indexed: usize = self.by_namespace.values().map(BTreeSet::len).sum();
        if [self.all.len(), self.expiry.len(), indexed]
            .iter()
            .any(|&n| n != self.entries.len())
        {
            return Err("an index holds more or fewer entries than the store".into());
        }
        if self.by_namespace.values().any(BTreeSet::is_empty) {
            return Err("an empty namespace index was kept".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use libp2p::identity::Keypair;

    use super::*;
    use crate::RecordFormat;

    fn entry(namespace: &'static str, deadline: Instant) -> Entry {
        let key = Keypair::generate_ed25519();
        let addrs = vec!["/ip4/10.0.0.1/tcp/4001".parse().unwrap()];
        Entry {
            namespace: Namespace::from_static(namespace),
            record: SignedRecord::new(&key, addrs, RecordFormat::Standard).unwrap(),
            ttl: 60,
            deadline,
        }
    }

    #[test]
    fn given_entries_in_two_namespaces_when_one_is_removed_then_every_order_agrees() {
        let t0 = Instant::now();
        let mut index = Index::default();
        index.insert(1, entry("a", t0 + Duration::from_secs(30)));
        index.insert(2, entry("b", t0 + Duration::from_secs(10)));
        index.insert(3, entry("a", t0 + Duration::from_secs(20)));

        let in_a: Vec<u64> = index
            .after(Some(&Namespace::from_static("a")), 0)
            .map(|(seq, _)| seq)
            .collect();
        assert_eq!(in_a, [1, 3]);
        let all_after_1: Vec<u64> = index.after(None, 1).map(|(seq, _)| seq).collect();
        assert_eq!(all_after_1, [2, 3]);
        assert_eq!(index.next_deadline(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(index.first_expired(t0), None);
        assert_eq!(index.first_expired(t0 + Duration::from_secs(10)), Some(2));

        index.remove(2).unwrap();
        assert_eq!(
            index.namespace_count(),
            1,
            "b's order went with its last entry"
        );
        assert_eq!(
            index.after(Some(&Namespace::from_static("b")), 0).count(),
            0
        );
        assert_eq!(index.check(3), Ok(()));
        assert!(index.check(2).is_err(), "entry 3 is ahead of counter 2");
    }
}
