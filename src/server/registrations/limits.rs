//! The limits and the byte budget a REGISTER is checked against, cheapest first (TTL, record
//! size, counts, then the bytes it would add), and what a registration costs in the store.

use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::Registrations;
use crate::{
    codec::{ErrorCode, ErrorResponse, Namespace, SignedRecord, Ttl},
    server::{Limit, ADDRESS_OVERHEAD_BYTES, RECORD_OVERHEAD_BYTES, REGISTRATION_OVERHEAD_BYTES},
};

/// Bytes a record costs in the store (see [`Registrations::stored_bytes`]).
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

/// A refused REGISTER: the answer, and the bound that refused it, if a bound did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status and text to answer with.
    pub error: ErrorResponse,
    /// The bound, if one refused it (not for a bad TTL, record or signer).
    pub limit: Option<Limit>,
}

impl Refusal {
    fn by(limit: Limit, error: ErrorResponse) -> Self {
        Self {
            error,
            limit: Some(limit),
        }
    }
}

impl From<ErrorResponse> for Refusal {
    fn from(error: ErrorResponse) -> Self {
        Self { error, limit: None }
    }
}

impl Registrations {
    /// The granted TTL and its deadline, or `E_INVALID_TTL`.
    pub(super) fn check_ttl(
        &self,
        ttl: Option<Ttl>,
        now: Instant,
    ) -> Result<(Ttl, Instant), ErrorResponse> {
        let ttl = ttl.unwrap_or(crate::DEFAULT_TTL);
        let (min, max) = (self.config.min_ttl, self.config.max_ttl);
        if ttl < min || ttl > max {
            return Err(ErrorResponse::new(
                ErrorCode::InvalidTtl,
                format!("ttl is {ttl} s; expected {min}..={max} s"),
            ));
        }
        // Only reachable with a configuration that `Config::validate` refuses.
        let deadline = now.checked_add(Duration::from_secs(ttl)).ok_or_else(|| {
            ErrorResponse::new(
                ErrorCode::InvalidTtl,
                format!("ttl is {ttl} s; this server cannot keep a registration that long"),
            )
        })?;
        Ok((ttl, deadline))
    }

    pub(super) fn check_record_size(&self, len: usize) -> Result<(), Refusal> {
        let max = self.config.max_record_size;
        if len > max {
            return Err(Refusal::by(
                Limit::Record,
                ErrorResponse::new(
                    ErrorCode::InvalidSignedPeerRecord,
                    format!("signed peer record is {len} bytes; this server accepts at most {max}"),
                ),
            ));
        }
        Ok(())
    }

    /// The per-peer and total registration limits; a refresh never counts as new.
    pub(super) fn check_counts(&self, peer: &PeerId, existing: Option<u64>) -> Result<(), Refusal> {
        if existing.is_some() {
            return Ok(());
        }
        let of_peer = self.count_of(peer);
        if of_peer >= self.config.max_registrations_per_peer {
            return Err(Refusal::by(
                Limit::PeerRegistrations,
                ErrorResponse::new(
                    ErrorCode::NotAuthorized,
                    format!(
                        "peer already has {of_peer} registrations, the most this server allows; \
                         unregister one first"
                    ),
                ),
            ));
        }
        if self.entries.len() >= self.config.max_registrations {
            return Err(Refusal::by(
                Limit::Registrations,
                ErrorResponse::new(
                    ErrorCode::Unavailable,
                    format!(
                        "server is full ({} registrations); try later or another server",
                        self.entries.len()
                    ),
                ),
            ));
        }
        Ok(())
    }

    /// The record is the peer's own and lists few enough addresses.
    pub(super) fn check_record(&self, peer: PeerId, record: &SignedRecord) -> Result<(), Refusal> {
        if record.peer_id() != peer {
            return Err(ErrorResponse::new(
                ErrorCode::NotAuthorized,
                format!(
                    "the signed peer record is for peer {}; a peer can only register itself ({peer})",
                    record.peer_id()
                ),
            )
            .into());
        }
        let (count, max) = (
            record.addresses().len(),
            self.config.max_addresses_per_record,
        );
        if count > max {
            return Err(Refusal::by(
                Limit::Record,
                ErrorResponse::new(
                    ErrorCode::InvalidSignedPeerRecord,
                    format!(
                        "signed peer record lists {count} addresses; this server accepts at most {max}"
                    ),
                ),
            ));
        }
        Ok(())
    }

    /// The store byte budget for storing `record` in `namespace` for `peer`.
    pub(super) fn check_bytes(
        &self,
        peer: &PeerId,
        namespace: &Namespace,
        existing: Option<u64>,
        record: &SignedRecord,
    ) -> Result<(), Refusal> {
        let held = self
            .peers
            .get(peer)
            .is_some_and(|p| p.records.contains_key(record.envelope_bytes()));
        let record_bytes = if held { 0 } else { record_cost(record) };
        self.check_budget(peer, namespace, existing, record_bytes, Some(record))
    }

    /// Refuses with `E_UNAVAILABLE` when adding a registration in `namespace` whose record adds
    /// `record_bytes` would take the store over its byte budget. What replacing `existing`
    /// frees counts: a refresh that does not grow the store always passes.
    pub(super) fn check_budget(
        &self,
        peer: &PeerId,
        namespace: &Namespace,
        existing: Option<u64>,
        record_bytes: usize,
        new_record: Option<&SignedRecord>,
    ) -> Result<(), Refusal> {
        let added = registration_cost(namespace).saturating_add(record_bytes);
        let freed = existing.map_or(0, |seq| self.freed_by_removing(peer, seq, new_record));
        let after = self.bytes.saturating_sub(freed).saturating_add(added);
        if added <= freed || after <= self.config.max_store_bytes {
            return Ok(());
        }
        Err(Refusal::by(
            Limit::StoreBytes,
            ErrorResponse::new(
                ErrorCode::Unavailable,
                format!(
                    "store byte budget exhausted: this registration needs {added} bytes and {} of \
                     {} bytes (max-store-bytes) are in use; try later or another server",
                    self.bytes, self.config.max_store_bytes
                ),
            ),
        ))
    }

    /// Bytes removing registration `seq` of `peer` would free, when it is replaced by one holding
    /// `replacement` (its record stays if the replacement is the same record).
    fn freed_by_removing(
        &self,
        peer: &PeerId,
        seq: u64,
        replacement: Option<&SignedRecord>,
    ) -> usize {
        let Some(entry) = self.entries.get(&seq) else {
            return 0;
        };
        let bytes = entry.record.envelope_bytes();
        let last_holder = self
            .peers
            .get(peer)
            .and_then(|p| p.records.get(bytes))
            .is_some_and(|holders| *holders <= 1);
        let kept = replacement.is_some_and(|r| r.envelope_bytes() == bytes);
        registration_cost(&entry.namespace)
            + if last_holder && !kept {
                record_cost(&entry.record)
            } else {
                0
            }
    }
}
