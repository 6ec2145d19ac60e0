//! The pure registration store: no IO, no clock reads; every call that depends on time takes
//! `now`. [`Registrations`] routes each request to the parts that own the state: the `index`
//! (entries by sequence number, and their orders by namespace, overall and by deadline), the
//! `peers` (each peer's registrations and distinct records) and the `budget` (the limits, and
//! the bytes held). What is valid, which limit refuses and how a page is cut is the
//! [rule book](super::rules)'s.

use std::time::Instant;

use libp2p::PeerId;

use super::{
    rules::{self, cookie, Limits, Offer, Refusal, ScanEnd},
    Config, MAX_SCANNED_PER_DISCOVER, RECORD_OVERHEAD_BYTES,
};
use crate::codec::{
    Cookie, ErrorResponse, Namespace, NewRegistration, Registration, SignedRecord, Ttl,
    UnverifiedRegistration,
};

mod budget;
mod index;
mod peers;

use budget::{record_cost, registration_cost, Budget};
use index::{Entry, Index};
use peers::Peers;

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
    index: Index,
    peers: Peers,
    budget: Budget,
}

impl Registrations {
    /// An empty store with the limits of `config`, whose counter starts at `start` (a server
    /// passes the wall clock in microseconds, so cookies stay valid across restarts), or at
    /// [`cookie::MAX_SEQUENCE`] if `start` is above it.
    pub fn new(config: Config, start: u64) -> Self {
        Self {
            budget: Budget::new(Limits::new(&config)),
            config,
            counter: start.min(cookie::MAX_SEQUENCE),
            index: Index::default(),
            peers: Peers::default(),
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
        let (ttl, deadline) = self.granted(ttl, now)?;
        self.limits()
            .check_record_size(record.envelope_bytes().len())?;
        let existing = self.check_counts(&peer, &namespace)?;
        let record = self
            .peers
            .held(&peer, record.envelope_bytes())
            .unwrap_or(record);
        self.limits().check_record(peer, &record)?;
        self.check_bytes(&peer, &namespace, existing, &record)?;
        self.insert(namespace, record, ttl, deadline, existing)
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
        let (ttl, deadline) = self.granted(ttl, now)?;
        self.limits().check_record_size(envelope.len())?;
        let existing = self.check_counts(&peer, &namespace)?;
        let record = match self.peers.held(&peer, &envelope) {
            Some(record) => record,
            None => {
                // The least a new record can cost, before paying for decoding it.
                let least = RECORD_OVERHEAD_BYTES + envelope.len();
                self.check_budget(&peer, &namespace, existing, least, None)?;
                rules::decode_record(&envelope)?
            }
        };
        self.limits().check_record(peer, &record)?;
        self.check_bytes(&peer, &namespace, existing, &record)?;
        let ttl = self.insert(namespace, record.clone(), ttl, deadline, existing)?;
        Ok((ttl, record))
    }

    fn limits(&self) -> &Limits {
        self.budget.limits()
    }

    /// The TTL granted for `asked` and its deadline.
    fn granted(&self, asked: Option<Ttl>, now: Instant) -> Result<(Ttl, Instant), Refusal> {
        let ttl = self.limits().granted_ttl(asked)?;
        Ok((ttl, Limits::deadline(ttl, now)?))
    }

    /// The registration of `peer` in `namespace` that a REGISTER would refresh, after checking
    /// that a new one fits the count limits (a refresh never counts as new).
    fn check_counts(&self, peer: &PeerId, namespace: &Namespace) -> Result<Option<u64>, Refusal> {
        let existing = self.peers.existing(peer, namespace);
        if existing.is_none() {
            self.budget
                .check_counts(self.peers.count_of(peer), self.index.len())?;
        }
        Ok(existing)
    }

    /// The byte budget for storing `record` in `namespace` for `peer`, replacing `existing`.
    fn check_bytes(
        &self,
        peer: &PeerId,
        namespace: &Namespace,
        existing: Option<u64>,
        record: &SignedRecord,
    ) -> Result<(), Refusal> {
        let held = self.peers.held(peer, record.envelope_bytes()).is_some();
        let record_bytes = if held { 0 } else { record_cost(record) };
        self.check_budget(peer, namespace, existing, record_bytes, Some(record))
    }

    /// The byte budget for a registration in `namespace` whose record adds `record_bytes`, with
    /// what replacing `existing` (by one holding `new_record`) frees.
    fn check_budget(
        &self,
        peer: &PeerId,
        namespace: &Namespace,
        existing: Option<u64>,
        record_bytes: usize,
        new_record: Option<&SignedRecord>,
    ) -> Result<(), Refusal> {
        let added = registration_cost(namespace).saturating_add(record_bytes);
        let freed = existing.map_or(0, |seq| self.freed_by_replacing(peer, seq, new_record));
        self.budget.check_bytes(added, freed)
    }

    /// Bytes removing registration `seq` of `peer` would free, when it is replaced by one holding
    /// `replacement` (its record stays if the replacement is the same record).
    fn freed_by_replacing(
        &self,
        peer: &PeerId,
        seq: u64,
        replacement: Option<&SignedRecord>,
    ) -> usize {
        let Some(entry) = self.index.get(seq) else {
            return 0;
        };
        let bytes = entry.record.envelope_bytes();
        let kept = replacement.is_some_and(|r| r.envelope_bytes() == bytes);
        let record_freed = self.peers.is_last_holder(peer, bytes) && !kept;
        registration_cost(&entry.namespace)
            + if record_freed {
                record_cost(&entry.record)
            } else {
                0
            }
    }

    /// Stores a checked registration under the next sequence number, replacing `existing`.
    fn insert(
        &mut self,
        namespace: Namespace,
        record: SignedRecord,
        ttl: Ttl,
        deadline: Instant,
        existing: Option<u64>,
    ) -> Result<Ttl, Refusal> {
        if self.counter >= cookie::MAX_SEQUENCE {
            return Err(rules::sequence_exhausted());
        }
        let entry = Entry {
            namespace,
            record,
            ttl,
            deadline,
        };
        self.put(self.counter + 1, entry, existing);
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
        let record = self
            .peers
            .held(&peer, record.envelope_bytes())
            .unwrap_or(record);
        let existing = self.peers.existing(&peer, &namespace);
        if existing != Some(seq) {
            self.remove_entry(seq);
        }
        let entry = Entry {
            namespace,
            record,
            ttl,
            deadline,
        };
        self.put(seq, entry, existing);
    }

    /// The sequence number of the latest REGISTER (or the start value): a REGISTER that
    /// succeeded got exactly this number.
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// Stores `entry` as registration `seq` of its record's peer, replacing `existing`; the
    /// counter moves up to `seq`.
    fn put(&mut self, seq: u64, entry: Entry, existing: Option<u64>) {
        let peer = entry.record.peer_id();
        // Count the new holder before removing the old entry, so a refresh with the same record
        // keeps it.
        if self.peers.hold(peer, &entry.record) {
            self.budget.charge(record_cost(&entry.record));
        }
        if let Some(old) = existing {
            self.remove_entry(old);
        }
        self.counter = self.counter.max(seq);
        self.budget.charge(registration_cost(&entry.namespace));
        self.peers
            .registered(peer, entry.namespace.clone(), seq, entry.record.format());
        self.index.insert(seq, entry);
    }

    /// Removes registration `seq` from every part.
    fn remove_entry(&mut self, seq: u64) -> Option<Entry> {
        let entry = self.index.remove(seq)?;
        self.budget.release(registration_cost(&entry.namespace));
        let peer = entry.record.peer_id();
        let envelope = entry.record.envelope_bytes();
        if self.peers.removed(&peer, &entry.namespace, seq, envelope) {
            self.budget.release(record_cost(&entry.record));
        }
        Some(entry)
    }

    /// Handles an UNREGISTER: removes `peer`'s registration in `namespace`, if any.
    pub fn unregister(&mut self, peer: PeerId, namespace: &Namespace) -> Option<Registration> {
        let seq = self.peers.existing(&peer, namespace)?;
        self.remove_entry(seq).map(Entry::into_granted)
    }

    /// Removes every registration of `peer` (its last connection closed).
    pub fn remove_peer(&mut self, peer: &PeerId) -> Vec<Registration> {
        self.peers
            .registrations_of(peer)
            .into_iter()
            .filter_map(|seq| self.remove_entry(seq))
            .map(Entry::into_granted)
            .collect()
    }

    /// When the next registration expires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.index.next_deadline()
    }

    /// Removes and returns one registration whose deadline is at or before `now`, earliest
    /// first. Call until `None`.
    pub fn poll_expired(&mut self, now: Instant) -> Option<Registration> {
        let seq = self.index.first_expired(now)?;
        self.remove_entry(seq).map(Entry::into_granted)
    }

    /// The format of `peer`'s latest REGISTER, while it has registrations: what it reads.
    pub fn registered_format(&self, peer: &PeerId) -> Option<crate::codec::RecordFormat> {
        self.peers.format(peer)
    }

    /// How many registrations are stored.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no registration is stored.
    pub fn is_empty(&self) -> bool {
        self.index.len() == 0
    }

    /// How many namespaces have at least one registration.
    pub fn namespace_count(&self) -> usize {
        self.index.namespace_count()
    }

    /// The bytes the registrations hold, as the byte budget
    /// ([`Config::with_max_store_bytes`]) counts them: for each registration
    /// [`REGISTRATION_OVERHEAD_BYTES`](super::REGISTRATION_OVERHEAD_BYTES) plus its namespace;
    /// for each distinct record of each peer (once, however many namespaces hold it)
    /// [`RECORD_OVERHEAD_BYTES`] plus its envelope plus, per
    /// address, [`ADDRESS_OVERHEAD_BYTES`](super::ADDRESS_OVERHEAD_BYTES) and its bytes. Never
    /// above the budget.
    pub fn stored_bytes(&self) -> usize {
        self.budget.in_use()
    }

    /// How many registrations `peer` has.
    pub fn count_of(&self, peer: &PeerId) -> usize {
        self.peers.count_of(peer)
    }

    /// Whether `peer` has a registration in `namespace`.
    pub fn is_registered(&self, peer: &PeerId, namespace: &Namespace) -> bool {
        self.peers.existing(peer, namespace).is_some()
    }

    /// The registrations in `namespace`, oldest REGISTER first, with their remaining TTL.
    pub fn registrations_in(&self, namespace: &Namespace, now: Instant) -> Vec<Registration> {
        self.index
            .after(Some(namespace), 0)
            .map(|(_, entry)| remaining(entry, now))
            .collect()
    }

    /// The registrations of `peer`, with their remaining TTL, ordered by namespace.
    pub fn registrations_of(&self, peer: &PeerId, now: Instant) -> Vec<Registration> {
        let mut out: Vec<Registration> = self
            .peers
            .registrations_of(peer)
            .into_iter()
            .filter_map(|seq| self.index.get(seq))
            .map(|entry| remaining(entry, now))
            .collect();
        out.sort_by(|a, b| a.namespace.cmp(&b.namespace));
        out
    }

    /// Handles a DISCOVER: the next page after `cookie` in `namespace` (all namespaces when
    /// `None`), for an asker served `served`, and the cookie to continue with (see
    /// [`Page`](rules::Page) for what a page holds). A DISCOVER looks at no more than
    /// [`MAX_SCANNED_PER_DISCOVER`] entries, expired ones (not yet collected) included.
    pub fn discover(
        &self,
        served: super::ServedFormats,
        namespace: Option<&Namespace>,
        cookie: Option<&Cookie>,
        limit: Option<u64>,
        now: Instant,
    ) -> Result<(Vec<Registration>, Cookie), ErrorResponse> {
        self.discover_up_to_date(served, namespace, cookie, limit, now)
            .map(|(registrations, cookie, _)| (registrations, cookie))
    }

    /// [`Registrations::discover`], also saying whether the page's cookie is up to date
    /// (nothing registered after it yet; see [`Page::is_up_to_date`](rules::Page::is_up_to_date)).
    pub fn discover_up_to_date(
        &self,
        served: super::ServedFormats,
        namespace: Option<&Namespace>,
        cookie: Option<&Cookie>,
        limit: Option<u64>,
        now: Instant,
    ) -> Result<(Vec<Registration>, Cookie, bool), ErrorResponse> {
        let (after, mark) = match cookie {
            Some(cookie) => cookie::parse(cookie, namespace, self.counter, served)?,
            None => (0, None),
        };
        let mut page = self.limits().page(served, limit, after, mark);
        let mut end = ScanEnd::Complete {
            counter: self.counter,
        };
        for (scanned, (seq, entry)) in self.index.after(namespace, after).enumerate() {
            if page.is_full() || scanned >= MAX_SCANNED_PER_DISCOVER {
                end = ScanEnd::Stopped { last: None };
                break;
            }
            if entry.deadline <= now {
                page.pass(seq);
                continue;
            }
            let ttl = rules::remaining_ttl(entry.deadline.duration_since(now));
            if page.offer(seq, &entry.namespace, entry.record.clone(), ttl) == Offer::Full {
                break;
            }
        }
        let up_to_date = page.is_up_to_date(end);
        let (registrations, cookie) = page.finish(end, namespace);
        Ok((registrations, cookie, up_to_date))
    }

    /// Checks that every index agrees with the entries, that the byte count is what the entries
    /// hold and within the budget, and that the limits hold. O(n); for tests and fuzzing.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.index.check(self.counter)?;
        self.peers
            .check(&self.index, self.limits().max_registrations_per_peer())?;
        self.budget.check(&self.index)
    }
}

/// `entry` with its remaining TTL at `now`.
fn remaining(entry: &Entry, now: Instant) -> Registration {
    let ttl = entry.deadline.saturating_duration_since(now).as_secs();
    entry.clone().into_registration(ttl)
}

#[cfg(test)]
mod tests;
