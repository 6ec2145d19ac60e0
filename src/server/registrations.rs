//! The pure registration store: no IO, no clock reads; every call that depends on time takes
//! `now`. This file is the index (entries by sequence number, peer, namespace and deadline) and
//! its mutations; the checks a REGISTER passes are in `limits`, DISCOVER paging in `page`, the
//! cookie format in `cookie`, the consistency check in `invariants`.

use std::{
    borrow::Borrow,
    collections::{BTreeSet, HashMap},
    hash::{Hash, Hasher},
    time::Instant,
};

use libp2p::PeerId;

use super::{Config, RECORD_OVERHEAD_BYTES};
use crate::codec::{
    Cookie, ErrorCode, ErrorResponse, Message, Namespace, NewRegistration, RecordFormat,
    Registration, SignedRecord, Ttl, UnverifiedRegistration,
};

pub mod cookie;
mod invariants;
mod limits;
mod page;

pub use limits::Refusal;
use limits::{record_cost, registration_cost};
pub use page::MAX_SCANNED_PER_DISCOVER;

/// One stored registration.
#[derive(Debug, Clone)]
struct Entry {
    namespace: Namespace,
    record: SignedRecord,
    ttl: Ttl,
    deadline: Instant,
}

/// What the store knows of one peer with registrations.
#[derive(Debug, Default)]
struct PeerState {
    /// namespace -> sequence number of the peer's registration there.
    namespaces: HashMap<Namespace, u64>,
    /// The distinct records the peer's registrations hold, each with how many hold it: a record
    /// registered in many namespaces is stored (and counted against the byte budget) once.
    records: HashMap<HeldRecord, usize>,
    /// The format of the peer's latest REGISTER.
    format: Option<RecordFormat>,
}

/// A stored record, hashed and compared by its envelope bytes, so the store can find the record
/// a REGISTER carries by its bytes alone (before decoding or verifying it).
#[derive(Debug, Clone)]
struct HeldRecord(SignedRecord);

impl PartialEq for HeldRecord {
    fn eq(&self, other: &Self) -> bool {
        self.0.envelope_bytes() == other.0.envelope_bytes()
    }
}

impl Eq for HeldRecord {}

impl Hash for HeldRecord {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must hash like `[u8]` for the `Borrow<[u8]>` lookups.
        self.0.envelope_bytes().hash(state);
    }
}

impl Borrow<[u8]> for HeldRecord {
    fn borrow(&self) -> &[u8] {
        self.0.envelope_bytes()
    }
}

/// The registrations of a rendezvous server, with stateless cookies.
///
/// Every REGISTER (new or refresh) takes the next number of a monotonic counter. A cookie is
/// that number, big-endian, followed by the namespace asked for (empty for all namespaces); a
/// DISCOVER returns registrations with a higher number, in order, so paging with any page size
/// returns each registration exactly once and costs O(log n + page). No memory is kept per
/// cookie.
#[derive(Debug)]
pub struct Registrations {
    config: Config,
    /// The number of the latest REGISTER (or the start value).
    counter: u64,
    /// seq -> entry: the one owner of the data; every index below holds sequence numbers.
    entries: HashMap<u64, Entry>,
    peers: HashMap<PeerId, PeerState>,
    by_namespace: HashMap<Namespace, BTreeSet<u64>>,
    all: BTreeSet<u64>,
    expiry: BTreeSet<(Instant, u64)>,
    /// Bytes of a DISCOVER_RESPONSE without registrations and with the longest cookie.
    response_overhead: usize,
    /// What the registrations hold, as [`Registrations::stored_bytes`] counts it.
    bytes: usize,
}

impl Registrations {
    /// An empty store with the limits of `config`, whose counter starts at `start` (a server
    /// passes the wall clock in microseconds, so cookies stay valid across restarts), or at
    /// [`cookie::MAX_SEQUENCE`] if `start` is above it.
    pub fn new(config: Config, start: u64) -> Self {
        let longest_cookie = Cookie::new(vec![0xff; 8 + crate::MAX_NAMESPACE_LEN])
            .expect("8 + 255 bytes is under the cookie cap");
        let response_overhead = Message::DiscoverResponse(Ok(crate::codec::DiscoverPage {
            registrations: Vec::new(),
            cookie: Some(longest_cookie),
            skipped: 0,
        }))
        .encoded_len();
        Self {
            config,
            counter: start.min(cookie::MAX_SEQUENCE),
            entries: HashMap::new(),
            peers: HashMap::new(),
            by_namespace: HashMap::new(),
            all: BTreeSet::new(),
            expiry: BTreeSet::new(),
            response_overhead,
            bytes: 0,
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Handles a REGISTER from `peer` (the peer of the connection it came on) whose record is
    /// already decoded and verified. Returns the granted TTL; on an error nothing changed.
    pub fn register(
        &mut self,
        peer: PeerId,
        request: NewRegistration,
        now: Instant,
    ) -> Result<Ttl, ErrorResponse> {
        self.try_register(peer, request, now).map_err(|r| r.error)
    }

    fn try_register(
        &mut self,
        peer: PeerId,
        request: NewRegistration,
        now: Instant,
    ) -> Result<Ttl, Refusal> {
        let NewRegistration {
            namespace,
            record,
            ttl,
        } = request;
        let (ttl, deadline) = self.check_ttl(ttl, now)?;
        self.check_record_size(record.envelope_bytes().len())?;
        let existing = self.existing(&peer, &namespace);
        self.check_counts(&peer, existing)?;
        let record = self.held(&peer, record.envelope_bytes()).unwrap_or(record);
        self.check_record(peer, &record)?;
        self.check_bytes(&peer, &namespace, existing, &record)?;
        Ok(self.insert(peer, namespace, record, ttl, deadline, existing)?)
    }

    /// Handles a REGISTER from `peer` as read from the wire, cheapest checks first: TTL, record
    /// size, registration limits and the byte budget before the envelope is decoded, decoding
    /// before the signature is verified. An envelope equal (byte for byte) to one of the peer's
    /// stored records (a refresh, or the same record in another namespace) is not decoded or
    /// verified again; the stored record is shared. Returns the granted TTL and the record as
    /// stored; on an error nothing changed.
    pub fn register_unverified(
        &mut self,
        peer: PeerId,
        request: UnverifiedRegistration,
        now: Instant,
    ) -> Result<(Ttl, SignedRecord), ErrorResponse> {
        self.try_register_unverified(peer, request, now)
            .map_err(|r| r.error)
    }

    /// [`Registrations::register_unverified`], also saying which bound refused it, if one did.
    pub fn try_register_unverified(
        &mut self,
        peer: PeerId,
        request: UnverifiedRegistration,
        now: Instant,
    ) -> Result<(Ttl, SignedRecord), Refusal> {
        let UnverifiedRegistration {
            namespace,
            envelope,
            ttl,
        } = request;
        let (ttl, deadline) = self.check_ttl(ttl, now)?;
        self.check_record_size(envelope.len())?;
        let existing = self.existing(&peer, &namespace);
        self.check_counts(&peer, existing)?;
        let record = match self.held(&peer, &envelope) {
            Some(record) => record,
            None => {
                // The least a new record can cost, before paying for decoding it.
                let least = RECORD_OVERHEAD_BYTES + envelope.len();
                self.check_budget(&peer, &namespace, existing, least, None)?;
                SignedRecord::from_bytes(&envelope).map_err(|e| {
                    ErrorResponse::new(ErrorCode::InvalidSignedPeerRecord, e.to_string())
                })?
            }
        };
        self.check_record(peer, &record)?;
        self.check_bytes(&peer, &namespace, existing, &record)?;
        let ttl = self.insert(peer, namespace, record.clone(), ttl, deadline, existing)?;
        Ok((ttl, record))
    }

    fn existing(&self, peer: &PeerId, namespace: &Namespace) -> Option<u64> {
        self.peers
            .get(peer)
            .and_then(|p| p.namespaces.get(namespace))
            .copied()
    }

    /// The stored record of `peer` whose envelope is `envelope`, if any.
    fn held(&self, peer: &PeerId, envelope: &[u8]) -> Option<SignedRecord> {
        let state = self.peers.get(peer)?;
        let (held, _) = state.records.get_key_value(envelope)?;
        Some(held.0.clone())
    }

    /// Stores a checked registration, replacing `existing`.
    fn insert(
        &mut self,
        peer: PeerId,
        namespace: Namespace,
        record: SignedRecord,
        ttl: Ttl,
        deadline: Instant,
        existing: Option<u64>,
    ) -> Result<Ttl, ErrorResponse> {
        let seq = (self.counter < cookie::MAX_SEQUENCE)
            .then_some(self.counter + 1)
            .ok_or_else(|| {
                ErrorResponse::new(
                    ErrorCode::Unavailable,
                    "this server has given out every sequence number a cookie can carry",
                )
            })?;
        self.put(seq, peer, namespace, record, ttl, deadline, existing);
        Ok(ttl)
    }

    /// Puts back a registration stored before a restart, with its sequence number `seq`, the
    /// TTL it was granted and its `deadline`. Limits and budgets are not checked (they apply to
    /// new REGISTERs; what was accepted once stays until it ends). Restore in sequence order:
    /// the latest one decides the peer's record format. The counter moves up to `seq` if it was
    /// below. A registration of the same peer and namespace is replaced; a record the peer
    /// already holds elsewhere is shared. A `seq` above [`cookie::MAX_SEQUENCE`] (which no
    /// store gives out) is not restored.
    pub fn restore(&mut self, seq: u64, registration: Registration, deadline: Instant) {
        if seq > cookie::MAX_SEQUENCE {
            tracing::warn!(
                seq,
                "not restoring a registration with an impossible sequence number"
            );
            return;
        }
        let Registration {
            namespace,
            record,
            ttl,
        } = registration;
        let peer = record.peer_id();
        let record = self.held(&peer, record.envelope_bytes()).unwrap_or(record);
        let existing = self.existing(&peer, &namespace);
        if existing != Some(seq) {
            self.remove_entry(seq);
        }
        self.put(seq, peer, namespace, record, ttl, deadline, existing);
    }

    /// The sequence number of the latest REGISTER (or the start value): a REGISTER that
    /// succeeded got exactly this number.
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// Stores registration `seq`, replacing `existing`; the counter moves up to `seq`.
    #[allow(clippy::too_many_arguments)]
    fn put(
        &mut self,
        seq: u64,
        peer: PeerId,
        namespace: Namespace,
        record: SignedRecord,
        ttl: Ttl,
        deadline: Instant,
        existing: Option<u64>,
    ) {
        // Count the new holder before removing the old entry, so a refresh with the same record
        // keeps it.
        let state = self.peers.entry(peer).or_default();
        let holders = state.records.entry(HeldRecord(record.clone())).or_insert(0);
        if *holders == 0 {
            self.bytes = self.bytes.saturating_add(record_cost(&record));
        }
        *holders += 1;
        if let Some(old) = existing {
            self.remove_entry(old);
        }
        self.counter = self.counter.max(seq);
        self.bytes = self.bytes.saturating_add(registration_cost(&namespace));
        let state = self.peers.entry(peer).or_default();
        state.namespaces.insert(namespace.clone(), seq);
        state.format = Some(record.format());
        self.by_namespace
            .entry(namespace.clone())
            .or_default()
            .insert(seq);
        self.all.insert(seq);
        self.expiry.insert((deadline, seq));
        self.entries.insert(
            seq,
            Entry {
                namespace,
                record,
                ttl,
                deadline,
            },
        );
    }

    /// Handles an UNREGISTER: removes `peer`'s registration in `namespace`, if any.
    pub fn unregister(&mut self, peer: PeerId, namespace: &Namespace) -> Option<Registration> {
        let seq = *self.peers.get(&peer)?.namespaces.get(namespace)?;
        self.remove_entry(seq).map(Entry::into_granted)
    }

    /// Removes every registration of `peer` (its last connection closed).
    pub fn remove_peer(&mut self, peer: &PeerId) -> Vec<Registration> {
        let Some(state) = self.peers.get(peer) else {
            return Vec::new();
        };
        let seqs: Vec<u64> = state.namespaces.values().copied().collect();
        seqs.into_iter()
            .filter_map(|seq| self.remove_entry(seq))
            .map(Entry::into_granted)
            .collect()
    }

    /// When the next registration expires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiry.first().map(|(deadline, _)| *deadline)
    }

    /// Removes and returns one registration whose deadline is at or before `now`, earliest
    /// first. Call until `None`.
    pub fn poll_expired(&mut self, now: Instant) -> Option<Registration> {
        let &(deadline, seq) = self.expiry.first()?;
        if deadline > now {
            return None;
        }
        self.remove_entry(seq).map(Entry::into_granted)
    }

    /// The format of `peer`'s latest REGISTER, while it has registrations: what it reads.
    pub fn registered_format(&self, peer: &PeerId) -> Option<RecordFormat> {
        self.peers.get(peer).and_then(|p| p.format)
    }

    /// How many registrations are stored.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no registration is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many namespaces have at least one registration.
    pub fn namespace_count(&self) -> usize {
        self.by_namespace.len()
    }

    /// The bytes the registrations hold, as the byte budget
    /// ([`Config::with_max_store_bytes`]) counts them: for each registration
    /// [`REGISTRATION_OVERHEAD_BYTES`](super::REGISTRATION_OVERHEAD_BYTES) plus its namespace;
    /// for each distinct record of each peer (once, however many namespaces hold it)
    /// [`RECORD_OVERHEAD_BYTES`](super::RECORD_OVERHEAD_BYTES) plus its envelope plus, per
    /// address, [`ADDRESS_OVERHEAD_BYTES`](super::ADDRESS_OVERHEAD_BYTES) and its bytes. Never
    /// above the budget.
    pub fn stored_bytes(&self) -> usize {
        self.bytes
    }

    /// How many registrations `peer` has.
    pub fn count_of(&self, peer: &PeerId) -> usize {
        self.peers.get(peer).map_or(0, |p| p.namespaces.len())
    }

    /// Whether `peer` has a registration in `namespace`.
    pub fn is_registered(&self, peer: &PeerId, namespace: &Namespace) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|p| p.namespaces.contains_key(namespace))
    }

    /// The registrations in `namespace`, oldest REGISTER first, with their remaining TTL.
    pub fn registrations_in(&self, namespace: &Namespace, now: Instant) -> Vec<Registration> {
        self.by_namespace
            .get(namespace)
            .into_iter()
            .flatten()
            .map(|seq| self.registration(*seq, now))
            .collect()
    }

    /// The registrations of `peer`, with their remaining TTL, ordered by namespace.
    pub fn registrations_of(&self, peer: &PeerId, now: Instant) -> Vec<Registration> {
        let mut out: Vec<Registration> = self
            .peers
            .get(peer)
            .into_iter()
            .flat_map(|p| p.namespaces.values())
            .map(|seq| self.registration(*seq, now))
            .collect();
        out.sort_by(|a, b| a.namespace.cmp(&b.namespace));
        out
    }

    fn registration(&self, seq: u64, now: Instant) -> Registration {
        let entry = &self.entries[&seq];
        let ttl = entry.deadline.saturating_duration_since(now).as_secs();
        entry.clone().into_registration(ttl)
    }

    /// Removes the entry `seq` from every index.
    fn remove_entry(&mut self, seq: u64) -> Option<Entry> {
        let entry = self.entries.remove(&seq)?;
        self.all.remove(&seq);
        self.expiry.remove(&(entry.deadline, seq));
        if let Some(index) = self.by_namespace.get_mut(&entry.namespace) {
            index.remove(&seq);
            if index.is_empty() {
                self.by_namespace.remove(&entry.namespace);
            }
        }
        self.bytes = self
            .bytes
            .saturating_sub(registration_cost(&entry.namespace));
        let peer = entry.record.peer_id();
        if let Some(state) = self.peers.get_mut(&peer) {
            if state.namespaces.get(&entry.namespace) == Some(&seq) {
                state.namespaces.remove(&entry.namespace);
            }
            let bytes = entry.record.envelope_bytes();
            if let Some(holders) = state.records.get_mut(bytes) {
                *holders -= 1;
                if *holders == 0 {
                    state.records.remove(bytes);
                    self.bytes = self.bytes.saturating_sub(record_cost(&entry.record));
                }
            }
            if state.namespaces.is_empty() && state.records.is_empty() {
                self.peers.remove(&peer);
            }
        }
        Some(entry)
    }
}

impl Entry {
    /// The registration with the TTL it was granted.
    fn into_granted(self) -> Registration {
        let ttl = self.ttl;
        self.into_registration(ttl)
    }

    fn into_registration(self, ttl: Ttl) -> Registration {
        Registration {
            namespace: self.namespace,
            record: self.record,
            ttl,
        }
    }
}

#[cfg(test)]
mod tests;
