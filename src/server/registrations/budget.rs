//! [`Budget`]: the store's limits and what it holds against them: the registration counts are
//! the index's, the bytes are counted here, with what each registration and record costs.

use std::collections::HashSet;

use libp2p::PeerId;

use super::index::Index;
use crate::{
    codec::{Namespace, SignedRecord},
    server::{
        rules::{Limits, Refusal},
        ADDRESS_OVERHEAD_BYTES, RECORD_OVERHEAD_BYTES, REGISTRATION_OVERHEAD_BYTES,
    },
};

/// Bytes a record costs in the store (see [`Registrations::stored_bytes`](super::Registrations::stored_bytes)).
pub(super) fn record_cost(record: &SignedRecord) -> usize {
    record.addresses().iter().fold(
        RECORD_OVERHEAD_BYTES + record.envelope_bytes().len(),
        |sum, a| sum.saturating_add(ADDRESS_OVERHEAD_BYTES + a.len()),
    )
}

/// Bytes a registration costs in the store besides its record.
pub(super) fn registration_cost(namespace: &Namespace) -> usize {
    REGISTRATION_OVERHEAD_BYTES + namespace.as_str().len()
}

/// The limits, and the bytes held. Invariant: `bytes` is the cost of every registration plus
/// every distinct record of each peer, and (for what REGISTERs added) within the budget.
#[derive(Debug)]
pub(super) struct Budget {
    limits: Limits,
    bytes: usize,
}

impl Budget {
    pub(super) fn new(limits: Limits) -> Self {
        Self { limits, bytes: 0 }
    }

    pub(super) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The bytes held.
    pub(super) fn in_use(&self) -> usize {
        self.bytes
    }

    /// Whether a new registration fits the count limits, when its peer holds `of_peer` and the
    /// store `total`.
    pub(super) fn check_counts(&self, of_peer: usize, total: usize) -> Result<(), Refusal> {
        self.limits.check_counts(of_peer, total)
    }

    /// Whether adding `added` bytes while freeing `freed` fits the byte budget.
    pub(super) fn check_bytes(&self, added: usize, freed: usize) -> Result<(), Refusal> {
        self.limits.check_bytes(added, freed, self.bytes)
    }

    pub(super) fn charge(&mut self, bytes: usize) {
        self.bytes = self.bytes.saturating_add(bytes);
    }

    pub(super) fn release(&mut self, bytes: usize) {
        self.bytes = self.bytes.saturating_sub(bytes);
    }

    /// Checks that the bytes are what `index`'s entries cost, and that the store is within its
    /// budgets. O(n).
    pub(super) fn check(&self, index: &Index) -> Result<(), String> {
        let mut records: HashSet<(PeerId, &[u8])> = HashSet::new();
        let mut bytes = 0usize;
        for (_, entry) in index.iter() {
            bytes += registration_cost(&entry.namespace);
            if records.insert((entry.record.peer_id(), entry.record.envelope_bytes())) {
                bytes += record_cost(&entry.record);
            }
        }
        if bytes != self.bytes {
            return Err(format!(
                "byte count is {}; the entries hold {bytes}",
                self.bytes
            ));
        }
        if self.bytes > self.limits.max_store_bytes()
            || index.len() > self.limits.max_registrations()
        {
            return Err("the store is over a budget".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::Config;

    #[test]
    fn given_bytes_in_use_when_a_registration_would_pass_the_budget_then_only_a_shrinking_one_passes(
    ) {
        let mut budget = Budget::new(Limits::new(&Config::default().with_max_store_bytes(1000)));
        budget.charge(900);
        assert_eq!(budget.check_bytes(100, 0), Ok(()), "exactly at the budget");
        let refusal = budget.check_bytes(101, 0).unwrap_err();
        assert_eq!(refusal.limit, Some(crate::server::Limit::StoreBytes));
        assert!(refusal
            .error
            .text
            .contains("needs 101 bytes and 900 of 1000"));
        budget.charge(200);
        assert_eq!(budget.check_bytes(50, 60), Ok(()), "a refresh that shrinks");
        budget.release(2000);
        assert_eq!(budget.in_use(), 0, "never below zero");
    }
}
