//! The store's consistency check: every index agrees with the entries, and the byte count and
//! limits hold. O(n); for tests and fuzzing.

use std::collections::{BTreeSet, HashMap};

use libp2p::PeerId;

use super::{
    limits::{record_cost, registration_cost},
    Registrations,
};

impl Registrations {
    /// Checks that every index agrees with the entries, that the byte count is what the entries
    /// hold and within the budget, and that the limits hold. O(n); for tests and fuzzing.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut bytes = 0usize;
        let mut records: HashMap<PeerId, HashMap<&[u8], usize>> = HashMap::new();
        for (&seq, entry) in &self.entries {
            let peer = entry.record.peer_id();
            if seq > self.counter {
                return Err(format!(
                    "entry {seq} is ahead of the counter {}",
                    self.counter
                ));
            }
            if self.existing(&peer, &entry.namespace) != Some(seq) {
                return Err(format!(
                    "entry {seq} is not the peer's registration in its namespace"
                ));
            }
            if !self
                .by_namespace
                .get(&entry.namespace)
                .is_some_and(|i| i.contains(&seq))
                || !self.all.contains(&seq)
                || !self.expiry.contains(&(entry.deadline, seq))
            {
                return Err(format!("entry {seq} is missing from an index"));
            }
            bytes += registration_cost(&entry.namespace);
            let holders = records.entry(peer).or_default();
            let count = holders.entry(entry.record.envelope_bytes()).or_insert(0);
            if *count == 0 {
                bytes += record_cost(&entry.record);
            }
            *count += 1;
        }
        let indexed: usize = self.by_namespace.values().map(BTreeSet::len).sum();
        let by_peer: usize = self.peers.values().map(|p| p.namespaces.len()).sum();
        if [self.all.len(), self.expiry.len(), indexed, by_peer]
            .iter()
            .any(|&n| n != self.entries.len())
        {
            return Err("an index holds more or fewer entries than the store".into());
        }
        if self.by_namespace.values().any(BTreeSet::is_empty) {
            return Err("an empty namespace index was kept".into());
        }
        for (peer, state) in &self.peers {
            let counted = records.remove(peer).unwrap_or_default();
            let held: HashMap<&[u8], usize> = state
                .records
                .iter()
                .map(|(r, n)| (r.0.envelope_bytes(), *n))
                .collect();
            if held != counted {
                return Err(format!(
                    "peer {peer}'s record holders disagree with its entries"
                ));
            }
            if state.namespaces.is_empty() {
                return Err(format!("peer {peer} is kept without registrations"));
            }
            if state.namespaces.len() > self.config.max_registrations_per_peer {
                return Err(format!("peer {peer} is over its registration limit"));
            }
        }
        if bytes != self.bytes {
            return Err(format!(
                "byte count is {}; the entries hold {bytes}",
                self.bytes
            ));
        }
        if self.bytes > self.config.max_store_bytes
            || self.entries.len() > self.config.max_registrations
        {
            return Err("the store is over a budget".into());
        }
        Ok(())
    }
}
