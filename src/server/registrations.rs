//! The pure registration store: no IO, no clock reads; every call that depends on time takes
//! `now`.

use std::{
    borrow::Borrow,
    collections::{BTreeSet, HashMap},
    hash::{Hash, Hasher},
    ops::Bound,
    time::{Duration, Instant},
};

use libp2p::PeerId;

use super::{
    Config, Limit, ServedFormats, ADDRESS_OVERHEAD_BYTES, RECORD_OVERHEAD_BYTES,
    REGISTRATION_OVERHEAD_BYTES,
};
use crate::codec::{
    registration_wire_len, Cookie, ErrorCode, ErrorResponse, Message, Namespace, NewRegistration,
    RecordFormat, Registration, SignedRecord, Ttl, UnverifiedRegistration,
};

pub mod cookie;

/// The most entries one DISCOVER looks at, returned or not. Records filtered out by format (or
/// expired but not yet collected) still cost a look; this bound keeps a DISCOVER at
/// O(log n + `MAX_SCANNED_PER_DISCOVER`) even when most of a namespace is filtered out. The
/// cookie then points past what was looked at, so the next DISCOVER continues from there.
pub const MAX_SCANNED_PER_DISCOVER: usize = 10_000;

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

/// Bytes a record costs in the store (see [`Registrations::stored_bytes`]).
fn record_cost(record: &SignedRecord) -> usize {
    record.addresses().iter().fold(
        RECORD_OVERHEAD_BYTES + record.envelope_bytes().len(),
        |sum, a| sum.saturating_add(ADDRESS_OVERHEAD_BYTES + a.len()),
    )
}

/// Bytes a registration costs in the store besides its record.
fn registration_cost(namespace: &Namespace) -> usize {
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
    /// passes the wall clock in microseconds, so cookies stay valid across restarts).
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
            counter: start,
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

    /// The granted TTL and its deadline, or `E_INVALID_TTL`.
    fn check_ttl(&self, ttl: Option<Ttl>, now: Instant) -> Result<(Ttl, Instant), ErrorResponse> {
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

    fn check_record_size(&self, len: usize) -> Result<(), Refusal> {
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
    fn check_counts(&self, peer: &PeerId, existing: Option<u64>) -> Result<(), Refusal> {
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
    fn check_record(&self, peer: PeerId, record: &SignedRecord) -> Result<(), Refusal> {
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
    fn check_bytes(
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
    fn check_budget(
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
        let seq = self.counter.checked_add(1).ok_or_else(|| {
            ErrorResponse::new(
                ErrorCode::Unavailable,
                "this server has used every sequence number; it needs a restart",
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
    /// already holds elsewhere is shared.
    pub fn restore(&mut self, seq: u64, registration: Registration, deadline: Instant) {
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

    /// Handles a DISCOVER: the next page after `cookie` in `namespace` (all namespaces when
    /// `None`), for an asker served `served`, and the cookie to continue with.
    ///
    /// Only registrations `served` includes are returned, in its layout (see the module docs);
    /// the others still advance the cookie, which then carries a mark saying under which
    /// formats it was cut. A marked cookie sent back by a peer now served more (its format
    /// became known after the page was cut) is refused with `E_INVALID_COOKIE`, so the peer
    /// starts over and nothing it can read stays hidden. The page holds at most `limit` (default
    /// and cap from the config) registrations and is cut so the encoded response fits the
    /// message cap.
    pub fn discover(
        &self,
        served: ServedFormats,
        namespace: Option<&Namespace>,
        cookie: Option<&Cookie>,
        limit: Option<u64>,
        now: Instant,
    ) -> Result<(Vec<Registration>, Cookie), ErrorResponse> {
        let (after, mut mark) = match cookie {
            Some(cookie) => cookie::parse(cookie, namespace, self.counter, served)?,
            None => (0, None),
        };
        let limit = match limit {
            None | Some(0) => self.config.default_page.min(self.config.max_page),
            Some(n) => (n.min(self.config.max_page as u64)) as usize,
        };
        let index = match namespace {
            Some(ns) => match self.by_namespace.get(ns) {
                Some(index) => index,
                None => return Ok((Vec::new(), cookie::encode(self.counter, mark, namespace))),
            },
            None => &self.all,
        };
        let mut page = Vec::new();
        let mut size = self.response_overhead;
        let mut last = None;
        let mut complete = true;
        for (scanned, &seq) in index
            .range((Bound::Excluded(after), Bound::Unbounded))
            .enumerate()
        {
            if page.len() >= limit || scanned >= MAX_SCANNED_PER_DISCOVER {
                complete = false;
                break;
            }
            let entry = &self.entries[&seq];
            if entry.deadline <= now {
                last = Some(seq);
                continue;
            }
            if !served.includes(entry.record.format()) {
                mark = Some(mark.map_or(served.coverage(), |m| m.min(served.coverage())));
                last = Some(seq);
                continue;
            }
            let record = match served {
                ServedFormats::AsPeerInfo => entry.record.to_peer_info(),
                _ => entry.record.clone(),
            };
            let ttl = entry.deadline.duration_since(now).as_secs().max(1);
            let wire = registration_wire_len(&entry.namespace, record.envelope_bytes().len(), ttl);
            if size.saturating_add(wire) > self.config.max_message_size {
                if page.is_empty() {
                    // Alone it does not fit any page: skip it, or paging would stop here.
                    tracing::debug!(%seq, "registration larger than a whole response; skipped");
                    last = Some(seq);
                    continue;
                }
                complete = false;
                break;
            }
            size += wire;
            page.push(Registration {
                namespace: entry.namespace.clone(),
                record,
                ttl,
            });
            last = Some(seq);
        }
        let seq = if complete {
            // Everything up to the counter has been seen.
            self.counter
        } else {
            last.unwrap_or(after)
        };
        Ok((page, cookie::encode(seq, mark, namespace)))
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
