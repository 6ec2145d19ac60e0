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
    Config, ServedFormats, ADDRESS_OVERHEAD_BYTES, RECORD_OVERHEAD_BYTES,
    REGISTRATION_OVERHEAD_BYTES,
};
use crate::codec::{
    registration_wire_len, Cookie, ErrorCode, ErrorResponse, Message, Namespace, NewRegistration,
    RecordFormat, Registration, SignedRecord, Ttl, UnverifiedRegistration,
};

/// The most entries one DISCOVER looks at, returned or not. Records filtered out by format (or
/// expired but not yet collected) still cost a look; this bound keeps a DISCOVER at
/// O(log n + `MAX_SCANNED_PER_DISCOVER`) even when most of a namespace is filtered out. The
/// cookie then points past what was looked at, so the next DISCOVER continues from there.
pub const MAX_SCANNED_PER_DISCOVER: usize = 10_000;

/// The most peers whose record format is remembered without them having registrations (set by
/// [`Registrations::set_peer_record_format`], typically from identify). Beyond it, new peers get
/// [`Config::with_unknown_peer_formats`]'s formats, which is safe for every client.
pub const MAX_PEER_FORMAT_OVERRIDES: usize = 65_536;

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
    format_overrides: HashMap<PeerId, RecordFormat>,
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
            format_overrides: HashMap::new(),
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
        self.insert(peer, namespace, record, ttl, deadline, existing)
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

    fn check_record_size(&self, len: usize) -> Result<(), ErrorResponse> {
        let max = self.config.max_record_size;
        if len > max {
            return Err(ErrorResponse::new(
                ErrorCode::InvalidSignedPeerRecord,
                format!("signed peer record is {len} bytes; this server accepts at most {max}"),
            ));
        }
        Ok(())
    }

    /// The per-peer and total registration limits; a refresh never counts as new.
    fn check_counts(&self, peer: &PeerId, existing: Option<u64>) -> Result<(), ErrorResponse> {
        if existing.is_some() {
            return Ok(());
        }
        let of_peer = self.count_of(peer);
        if of_peer >= self.config.max_registrations_per_peer {
            return Err(ErrorResponse::new(
                ErrorCode::NotAuthorized,
                format!(
                    "peer already has {of_peer} registrations, the most this server allows; \
                     unregister one first"
                ),
            ));
        }
        if self.entries.len() >= self.config.max_registrations {
            return Err(ErrorResponse::new(
                ErrorCode::Unavailable,
                format!(
                    "server is full ({} registrations); try later or another server",
                    self.entries.len()
                ),
            ));
        }
        Ok(())
    }

    /// The record is the peer's own and lists few enough addresses.
    fn check_record(&self, peer: PeerId, record: &SignedRecord) -> Result<(), ErrorResponse> {
        if record.peer_id() != peer {
            return Err(ErrorResponse::new(
                ErrorCode::NotAuthorized,
                format!(
                    "the signed peer record is for peer {}; a peer can only register itself ({peer})",
                    record.peer_id()
                ),
            ));
        }
        let (count, max) = (
            record.addresses().len(),
            self.config.max_addresses_per_record,
        );
        if count > max {
            return Err(ErrorResponse::new(
                ErrorCode::InvalidSignedPeerRecord,
                format!(
                    "signed peer record lists {count} addresses; this server accepts at most {max}"
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
    ) -> Result<(), ErrorResponse> {
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
    ) -> Result<(), ErrorResponse> {
        let added = registration_cost(namespace).saturating_add(record_bytes);
        let freed = existing.map_or(0, |seq| self.freed_by_removing(peer, seq, new_record));
        let after = self.bytes.saturating_sub(freed).saturating_add(added);
        if added <= freed || after <= self.config.max_store_bytes {
            return Ok(());
        }
        Err(ErrorResponse::new(
            ErrorCode::Unavailable,
            format!(
                "store byte budget exhausted: this registration needs {added} bytes and {} of \
                 {} bytes (max-store-bytes) are in use; try later or another server",
                self.bytes, self.config.max_store_bytes
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
        self.counter = seq;
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
        Ok(ttl)
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

    /// Handles a DISCOVER from `peer`: the next page after `cookie` in `namespace` (all
    /// namespaces when `None`), and the cookie to continue with.
    ///
    /// Only records in a format `peer` can decode are returned (see the module docs); the
    /// others still advance the cookie. The page holds at most `limit` (default and cap from
    /// the config) registrations and is cut so the encoded response fits the message cap.
    pub fn discover(
        &self,
        peer: PeerId,
        namespace: Option<&Namespace>,
        cookie: Option<&Cookie>,
        limit: Option<u64>,
        now: Instant,
    ) -> Result<(Vec<Registration>, Cookie), ErrorResponse> {
        let after = match cookie {
            Some(cookie) => self.parse_cookie(cookie, namespace)?,
            None => 0,
        };
        let limit = match limit {
            None | Some(0) => self.config.default_page,
            Some(n) => (n.min(self.config.max_page as u64)) as usize,
        };
        let served = self.served_formats(&peer);
        let index = match namespace {
            Some(ns) => match self.by_namespace.get(ns) {
                Some(index) => index,
                None => return Ok((Vec::new(), self.cookie(self.counter, namespace))),
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
            if entry.deadline <= now || !served.includes(entry.record.format()) {
                last = Some(seq);
                continue;
            }
            let ttl = entry.deadline.duration_since(now).as_secs().max(1);
            let wire =
                registration_wire_len(&entry.namespace, entry.record.envelope_bytes().len(), ttl);
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
            page.push(entry.clone().into_registration(ttl));
            last = Some(seq);
        }
        let seq = if complete {
            // Everything up to the counter has been seen.
            self.counter
        } else {
            last.unwrap_or(after)
        };
        Ok((page, self.cookie(seq, namespace)))
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

    /// Hints which record format `peer` decodes, for when it has not registered (the format of
    /// its latest REGISTER wins; see the module docs). At most [`MAX_PEER_FORMAT_OVERRIDES`] hints
    /// are kept; beyond that the call is ignored and the peer gets the configured default.
    pub fn set_peer_record_format(&mut self, peer: PeerId, format: RecordFormat) {
        if self.format_overrides.len() < MAX_PEER_FORMAT_OVERRIDES
            || self.format_overrides.contains_key(&peer)
        {
            self.format_overrides.insert(peer, format);
        }
    }

    /// Forgets the hint for `peer` (its last connection closed).
    pub fn forget_peer_record_format(&mut self, peer: &PeerId) {
        self.format_overrides.remove(peer);
    }

    /// The formats served to `peer`: the format of its latest REGISTER (what it sends is what it
    /// decodes), else a hint (the client marker protocol or
    /// [`set_peer_record_format`](Self::set_peer_record_format)), else the configured default for
    /// unknown peers.
    pub fn served_formats(&self, peer: &PeerId) -> ServedFormats {
        let format = self
            .peers
            .get(peer)
            .and_then(|p| p.format)
            .or_else(|| self.format_overrides.get(peer).copied());
        match format {
            Some(RecordFormat::Standard) => ServedFormats::All,
            Some(RecordFormat::Legacy) => ServedFormats::LegacyOnly,
            None => self.config.unknown_peer_formats,
        }
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

    fn cookie(&self, seq: u64, namespace: Option<&Namespace>) -> Cookie {
        let mut bytes = seq.to_be_bytes().to_vec();
        if let Some(ns) = namespace {
            bytes.extend_from_slice(ns.as_str().as_bytes());
        }
        Cookie::new(bytes).expect("8 + at most 255 bytes is under the cookie cap")
    }

    fn parse_cookie(
        &self,
        cookie: &Cookie,
        namespace: Option<&Namespace>,
    ) -> Result<u64, ErrorResponse> {
        let bytes = cookie.as_bytes();
        let invalid = |text: String| Err(ErrorResponse::new(ErrorCode::InvalidCookie, text));
        if bytes.len() < 8 {
            return invalid(format!(
                "cookie is {} bytes; expected a cookie from this server (8 bytes of sequence \
                 number followed by the namespace)",
                bytes.len()
            ));
        }
        let (seq, ns) = bytes.split_at(8);
        let seq = u64::from_be_bytes(seq.try_into().expect("split at 8"));
        let asked = namespace.map_or(&[][..], |ns| ns.as_str().as_bytes());
        if ns != asked {
            return invalid(format!(
                "cookie is for namespace {:?}; this DISCOVER asks for {:?} (a cookie only \
                 continues the namespace it came from)",
                String::from_utf8_lossy(ns),
                namespace.map_or("", |ns| ns.as_str()),
            ));
        }
        if seq > self.counter {
            return invalid(format!(
                "cookie is ahead of this server (sequence {seq}, server at {}); discover \
                 without a cookie to start over",
                self.counter
            ));
        }
        Ok(seq)
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
mod tests {
    use std::{collections::HashSet, sync::OnceLock};

    use libp2p::identity::Keypair;
    use proptest::prelude::*;

    use super::*;
    use crate::codec::DiscoverPage;

    mod budgets;

    const START: u64 = 1_000;
    const HOUR: u64 = 3600;

    fn key(i: u16) -> Keypair {
        let mut seed = [7u8; 32];
        seed[..2].copy_from_slice(&i.to_be_bytes());
        Keypair::ed25519_from_bytes(seed).unwrap()
    }

    /// Signed records of peers 0..64 in both formats, signed once for all tests.
    fn record(i: u16, format: RecordFormat) -> SignedRecord {
        static RECORDS: OnceLock<Vec<(SignedRecord, SignedRecord)>> = OnceLock::new();
        let records = RECORDS.get_or_init(|| {
            (0..64)
                .map(|i| {
                    let addrs = vec![format!("/ip4/10.0.0.{i}/tcp/4001").parse().unwrap()];
                    (
                        SignedRecord::new(&key(i), addrs.clone(), RecordFormat::Standard).unwrap(),
                        SignedRecord::new(&key(i), addrs, RecordFormat::Legacy).unwrap(),
                    )
                })
                .collect()
        });
        let (standard, legacy) = &records[usize::from(i)];
        match format {
            RecordFormat::Standard => standard.clone(),
            RecordFormat::Legacy => legacy.clone(),
        }
    }

    fn peer(i: u16) -> PeerId {
        record(i, RecordFormat::Legacy).peer_id()
    }

    fn ns(name: &str) -> Namespace {
        Namespace::new(name).unwrap()
    }

    fn new_reg(i: u16, namespace: &str, ttl: Option<Ttl>) -> NewRegistration {
        NewRegistration {
            namespace: ns(namespace),
            record: record(i, RecordFormat::Legacy),
            ttl,
        }
    }

    fn store() -> Registrations {
        Registrations::new(Config::default(), START)
    }

    fn code(result: Result<impl std::fmt::Debug, ErrorResponse>) -> ErrorCode {
        result.unwrap_err().code
    }

    /// Pages through `namespace` with `limit` until a page comes back empty; returns every
    /// (peer, namespace) seen, in order.
    fn page_all(
        store: &Registrations,
        asker: PeerId,
        namespace: Option<&Namespace>,
        limit: u64,
        now: Instant,
    ) -> Vec<(PeerId, Namespace)> {
        let mut seen = Vec::new();
        let mut cookie = None;
        loop {
            let (page, next) = store
                .discover(asker, namespace, cookie.as_ref(), Some(limit), now)
                .unwrap();
            assert!(page.len() as u64 <= limit);
            if page.is_empty() {
                return seen;
            }
            seen.extend(
                page.iter()
                    .map(|r| (r.record.peer_id(), r.namespace.clone())),
            );
            cookie = Some(next);
        }
    }

    #[test]
    fn given_a_valid_register_then_it_is_stored_with_the_granted_ttl() {
        let mut store = store();
        let now = Instant::now();
        assert_eq!(
            store.register(peer(1), new_reg(1, "a", None), now),
            Ok(crate::DEFAULT_TTL)
        );
        assert_eq!(
            store.register(peer(1), new_reg(1, "b", Some(3 * HOUR)), now),
            Ok(3 * HOUR)
        );
        assert_eq!(store.len(), 2);
        assert_eq!(store.namespace_count(), 2);
        let of_peer = store.registrations_of(&peer(1), now);
        assert_eq!(of_peer.len(), 2);
        assert_eq!(of_peer[1].ttl, 3 * HOUR);
        assert_eq!(store.registrations_in(&ns("a"), now).len(), 1);
    }

    #[test]
    fn given_a_record_of_another_peer_then_register_is_not_authorized_and_nothing_changes() {
        let mut store = store();
        let result = store.register(peer(2), new_reg(1, "a", None), Instant::now());
        let error = result.unwrap_err();
        assert_eq!(error.code, ErrorCode::NotAuthorized);
        assert!(
            error.text.contains("can only register itself"),
            "{}",
            error.text
        );
        assert!(store.is_empty());
    }

    #[test]
    fn given_a_ttl_out_of_bounds_then_register_is_invalid_ttl() {
        let mut store = store();
        let now = Instant::now();
        let low = store
            .register(peer(1), new_reg(1, "a", Some(60)), now)
            .unwrap_err();
        assert_eq!(low.code, ErrorCode::InvalidTtl);
        assert!(low.text.contains("expected 7200..=259200"), "{}", low.text);
        let high = store.register(peer(1), new_reg(1, "a", Some(crate::MAX_TTL + 1)), now);
        assert_eq!(code(high), ErrorCode::InvalidTtl);
        assert!(store.is_empty());
        // An operator may lower the minimum.
        let mut store = Registrations::new(Config::default().with_min_ttl(10), START);
        assert_eq!(
            store.register(peer(1), new_reg(1, "a", Some(60)), now),
            Ok(60)
        );
    }

    #[test]
    fn given_a_peer_at_its_limit_then_new_namespaces_are_refused_but_refreshes_pass() {
        let config = Config::default().with_max_registrations_per_peer(2);
        let mut store = Registrations::new(config, START);
        let now = Instant::now();
        store.register(peer(1), new_reg(1, "a", None), now).unwrap();
        store.register(peer(1), new_reg(1, "b", None), now).unwrap();
        let error = store
            .register(peer(1), new_reg(1, "c", None), now)
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::NotAuthorized);
        assert!(
            error.text.contains("already has 2 registrations"),
            "{}",
            error.text
        );
        assert!(store.register(peer(1), new_reg(1, "a", None), now).is_ok());
        assert!(store.register(peer(2), new_reg(2, "c", None), now).is_ok());
        assert_eq!(store.len(), 3);
    }

    #[test]
    fn given_a_full_server_then_new_registrations_are_unavailable_but_refreshes_pass() {
        let mut store = Registrations::new(Config::default().with_max_registrations(2), START);
        let now = Instant::now();
        store.register(peer(1), new_reg(1, "a", None), now).unwrap();
        store.register(peer(2), new_reg(2, "a", None), now).unwrap();
        let error = store
            .register(peer(3), new_reg(3, "a", None), now)
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::Unavailable);
        assert!(error.text.contains("full"), "{}", error.text);
        assert_eq!(
            store.register(peer(2), new_reg(2, "a", Some(3 * HOUR)), now),
            Ok(3 * HOUR)
        );
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn given_a_refresh_then_the_old_entry_is_gone_everywhere_and_never_expires() {
        let mut store = store();
        let t0 = Instant::now();
        store
            .register(peer(1), new_reg(1, "a", Some(2 * HOUR)), t0)
            .unwrap();
        store
            .register(peer(2), new_reg(2, "a", Some(2 * HOUR)), t0)
            .unwrap();
        let (_, cookie) = store
            .discover(peer(9), Some(&ns("a")), None, None, t0)
            .unwrap();
        let t1 = t0 + Duration::from_secs(HOUR);
        store
            .register(peer(1), new_reg(1, "a", Some(2 * HOUR)), t1)
            .unwrap();
        assert_eq!(store.len(), 2);
        // The refresh shows up again after the old cookie, once.
        let (page, _) = store
            .discover(peer(9), Some(&ns("a")), Some(&cookie), None, t1)
            .unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].record.peer_id(), peer(1));
        assert_eq!(page[0].ttl, 2 * HOUR);
        // A fresh pager sees each registration once.
        assert_eq!(page_all(&store, peer(9), None, 1, t1).len(), 2);
        // The old deadline does not fire.
        let t2 = t0 + Duration::from_secs(2 * HOUR);
        assert_eq!(
            store.poll_expired(t2).map(|r| r.record.peer_id()),
            Some(peer(2))
        );
        assert_eq!(store.poll_expired(t2), None);
        assert_eq!(
            store.poll_timeout(),
            Some(t1 + Duration::from_secs(2 * HOUR))
        );
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn given_registrations_when_time_passes_then_they_expire_in_deadline_order() {
        let mut store = Registrations::new(Config::default().with_min_ttl(1), START);
        let t0 = Instant::now();
        assert_eq!(store.poll_timeout(), None);
        store
            .register(peer(1), new_reg(1, "a", Some(30)), t0)
            .unwrap();
        store
            .register(peer(2), new_reg(2, "b", Some(10)), t0)
            .unwrap();
        store
            .register(peer(3), new_reg(3, "a", Some(20)), t0)
            .unwrap();
        assert_eq!(store.poll_timeout(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(store.poll_expired(t0 + Duration::from_secs(9)), None);
        let t = t0 + Duration::from_secs(25);
        let expired: Vec<_> = std::iter::from_fn(|| store.poll_expired(t))
            .map(|r| (r.record.peer_id(), r.ttl))
            .collect();
        assert_eq!(expired, vec![(peer(2), 10), (peer(3), 20)]);
        assert_eq!(store.namespace_count(), 1);
        assert_eq!(store.registrations_in(&ns("a"), t)[0].ttl, 5);
        // Remaining TTLs are what DISCOVER reports.
        let (page, _) = store.discover(peer(9), None, None, None, t).unwrap();
        assert_eq!(page[0].ttl, 5);
    }

    #[test]
    fn given_an_expired_but_uncollected_registration_then_discover_skips_it() {
        let mut store = Registrations::new(Config::default().with_min_ttl(1), START);
        let t0 = Instant::now();
        store
            .register(peer(1), new_reg(1, "a", Some(10)), t0)
            .unwrap();
        let (page, _) = store
            .discover(peer(9), None, None, None, t0 + Duration::from_secs(10))
            .unwrap();
        assert!(page.is_empty());
    }

    #[test]
    fn given_unregister_then_the_registration_is_gone_and_unknown_namespaces_are_a_no_op() {
        let mut store = store();
        let now = Instant::now();
        store.register(peer(1), new_reg(1, "a", None), now).unwrap();
        assert_eq!(store.unregister(peer(1), &ns("b")), None);
        assert_eq!(store.unregister(peer(2), &ns("a")), None);
        assert_eq!(
            store.unregister(peer(1), &ns("a")).unwrap().namespace,
            ns("a")
        );
        assert!(store.is_empty());
        assert_eq!(store.poll_timeout(), None);
        assert_eq!(store.namespace_count(), 0);
    }

    #[test]
    fn given_remove_peer_then_all_its_registrations_go_and_others_stay() {
        let mut store = store();
        let now = Instant::now();
        for namespace in ["a", "b", "c"] {
            store
                .register(peer(1), new_reg(1, namespace, None), now)
                .unwrap();
        }
        store.register(peer(2), new_reg(2, "a", None), now).unwrap();
        assert_eq!(store.remove_peer(&peer(1)).len(), 3);
        assert_eq!(store.remove_peer(&peer(1)).len(), 0);
        assert_eq!(store.len(), 1);
        assert_eq!(store.count_of(&peer(1)), 0);
        assert_eq!(
            page_all(&store, peer(9), None, 10, now),
            vec![(peer(2), ns("a"))]
        );
    }

    #[test]
    fn given_bad_cookies_then_discover_is_invalid_cookie() {
        let mut store = store();
        let now = Instant::now();
        store.register(peer(1), new_reg(1, "a", None), now).unwrap();
        let (_, cookie_a) = store
            .discover(peer(9), Some(&ns("a")), None, None, now)
            .unwrap();
        let short = Cookie::new(vec![1, 2, 3]).unwrap();
        let ahead = Cookie::new((START + 2).to_be_bytes().to_vec()).unwrap();
        for (namespace, cookie, needle) in [
            (Some(ns("b")), &cookie_a, "asks for \"b\""),
            (None, &cookie_a, "cookie is for namespace \"a\""),
            (None, &short, "3 bytes"),
            (None, &ahead, "ahead"),
        ] {
            let error = store
                .discover(peer(9), namespace.as_ref(), Some(cookie), None, now)
                .unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidCookie);
            assert!(error.text.contains(needle), "{} lacks {needle}", error.text);
        }
        // A cookie at the counter is fine.
        let at = Cookie::new((START + 1).to_be_bytes().to_vec()).unwrap();
        assert!(store.discover(peer(9), None, Some(&at), None, now).is_ok());
    }

    #[test]
    fn given_nothing_new_then_the_page_is_empty_and_still_has_a_cookie() {
        let mut store = store();
        let now = Instant::now();
        let (page, cookie) = store
            .discover(peer(9), Some(&ns("a")), None, None, now)
            .unwrap();
        assert!(page.is_empty());
        assert_eq!(&cookie.as_bytes()[8..], b"a");
        store.register(peer(1), new_reg(1, "a", None), now).unwrap();
        let (page, cookie) = store
            .discover(peer(9), Some(&ns("a")), Some(&cookie), None, now)
            .unwrap();
        assert_eq!(page.len(), 1);
        let (page, again) = store
            .discover(peer(9), Some(&ns("a")), Some(&cookie), None, now)
            .unwrap();
        assert!(page.is_empty());
        assert_eq!(again, cookie);
    }

    #[test]
    fn given_limits_then_pages_use_the_default_and_are_capped() {
        let config = Config::default().with_default_page(3).with_max_page(5);
        let mut store = Registrations::new(config, START);
        let now = Instant::now();
        for i in 0..10 {
            store.register(peer(i), new_reg(i, "a", None), now).unwrap();
        }
        let count = |limit| {
            store
                .discover(peer(9), None, None, limit, now)
                .unwrap()
                .0
                .len()
        };
        assert_eq!(count(None), 3);
        assert_eq!(count(Some(0)), 3);
        assert_eq!(count(Some(4)), 4);
        assert_eq!(count(Some(1_000_000)), 5);
    }

    #[test]
    fn given_a_small_message_cap_then_pages_are_cut_to_fit_and_paging_goes_on() {
        let cap = 1024;
        let mut store = Registrations::new(Config::default().with_max_message_size(cap), START);
        let now = Instant::now();
        for i in 0..40 {
            store.register(peer(i), new_reg(i, "a", None), now).unwrap();
        }
        let mut cookie = None;
        let mut total = 0;
        loop {
            let (page, next) = store
                .discover(peer(9), Some(&ns("a")), cookie.as_ref(), Some(1000), now)
                .unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() < 40);
            total += page.len();
            let encoded = Message::DiscoverResponse(Ok(DiscoverPage {
                registrations: page,
                cookie: Some(next.clone()),
                skipped: 0,
            }))
            .encoded_len();
            assert!(encoded <= cap, "response is {encoded} bytes");
            cookie = Some(next);
        }
        assert_eq!(total, 40);
    }

    #[test]
    fn given_a_5000_record_page_of_big_records_then_the_response_stays_under_1_mib() {
        let config = Config::default()
            .with_max_page(5000)
            .with_max_registrations_per_peer(100);
        let mut store = Registrations::new(config, START);
        let now = Instant::now();
        let addrs: Vec<libp2p::Multiaddr> = (0..10)
            .map(|i| {
                format!("/dns4/host-{i:02}.example.com/tcp/4001")
                    .parse()
                    .unwrap()
            })
            .collect();
        for i in 0..64u16 {
            let record = SignedRecord::new(&key(i), addrs.clone(), RecordFormat::Legacy).unwrap();
            for n in 0..80 {
                let request = NewRegistration {
                    namespace: ns(&format!("ns-{n}")),
                    record: record.clone(),
                    ttl: None,
                };
                store.register(peer(i), request, now).unwrap();
            }
        }
        let (page, cookie) = store
            .discover(peer(9), None, None, Some(5000), now)
            .unwrap();
        let encoded = Message::DiscoverResponse(Ok(DiscoverPage {
            registrations: page.clone(),
            cookie: Some(cookie),
            skipped: 0,
        }))
        .encoded_len();
        assert!(
            encoded <= crate::codec::DEFAULT_MAX_MESSAGE_SIZE,
            "{encoded} bytes"
        );
        assert!(page.len() < 5000, "cut at {} registrations", page.len());
        assert_eq!(page_all(&store, peer(9), None, 5000, now).len(), 64 * 80);
    }

    #[test]
    fn given_mixed_formats_then_each_peer_gets_only_what_it_can_decode() {
        let mut store = store();
        let now = Instant::now();
        let standard = |i, namespace: &str| NewRegistration {
            namespace: ns(namespace),
            record: record(i, RecordFormat::Standard),
            ttl: None,
        };
        store.register(peer(1), new_reg(1, "a", None), now).unwrap();
        store.register(peer(2), standard(2, "a"), now).unwrap();
        store.register(peer(3), new_reg(3, "a", None), now).unwrap();
        let peers = |store: &Registrations, asker| {
            let (page, _) = store.discover(asker, None, None, None, now).unwrap();
            page.iter().map(|r| r.record.peer_id()).collect::<Vec<_>>()
        };
        // Registered legacy: legacy only. Registered standard: everything.
        assert_eq!(peers(&store, peer(1)), vec![peer(1), peer(3)]);
        assert_eq!(peers(&store, peer(2)), vec![peer(1), peer(2), peer(3)]);
        // Never registered: the configured default, legacy only.
        assert_eq!(peers(&store, peer(9)), vec![peer(1), peer(3)]);
        // Filtered records still advance the cookie: a legacy pager with limit 1 never loops.
        let seen = page_all(&store, peer(9), None, 1, now);
        assert_eq!(seen, vec![(peer(1), ns("a")), (peer(3), ns("a"))]);
        // A hint decides for a peer that never registered, and can be forgotten.
        store.set_peer_record_format(peer(9), RecordFormat::Standard);
        assert_eq!(peers(&store, peer(9)).len(), 3);
        store.forget_peer_record_format(&peer(9));
        assert_eq!(peers(&store, peer(9)).len(), 2);
        // The latest REGISTER decides: peer 2 re-registers legacy.
        store.register(peer(2), new_reg(2, "b", None), now).unwrap();
        assert_eq!(
            peers(&store, peer(2)).len(),
            3,
            "peer 2's standard record in a is filtered"
        );
        let config = Config::default().with_unknown_peer_formats(ServedFormats::All);
        let mut open = Registrations::new(config, START);
        open.register(peer(2), standard(2, "a"), now).unwrap();
        assert_eq!(
            open.discover(peer(9), None, None, None, now)
                .unwrap()
                .0
                .len(),
            1
        );
    }

    #[test]
    fn given_a_hint_and_a_register_then_the_register_format_wins_over_the_hint() {
        let mut store = store();
        let now = Instant::now();
        let standard = NewRegistration {
            namespace: ns("a"),
            record: record(2, RecordFormat::Standard),
            ttl: None,
        };
        store.register(peer(1), new_reg(1, "a", None), now).unwrap();
        store.register(peer(2), standard, now).unwrap();
        // Peer 1 registered legacy: a Standard hint (say from a marker) does not change that.
        store.set_peer_record_format(peer(1), RecordFormat::Standard);
        assert_eq!(store.served_formats(&peer(1)), ServedFormats::LegacyOnly);
        // Peer 2 registered standard: a Legacy hint (say from its agent) does not change that.
        store.set_peer_record_format(peer(2), RecordFormat::Legacy);
        assert_eq!(store.served_formats(&peer(2)), ServedFormats::All);
    }

    #[test]
    fn given_no_register_then_the_hint_beats_the_default_and_is_forgotten() {
        let open = Config::default().with_unknown_peer_formats(ServedFormats::All);
        let mut open = Registrations::new(open, START);
        assert_eq!(open.served_formats(&peer(9)), ServedFormats::All);
        open.set_peer_record_format(peer(9), RecordFormat::Legacy);
        assert_eq!(open.served_formats(&peer(9)), ServedFormats::LegacyOnly);
        open.forget_peer_record_format(&peer(9));
        assert_eq!(open.served_formats(&peer(9)), ServedFormats::All);

        let mut store = store();
        store.set_peer_record_format(peer(9), RecordFormat::Standard);
        assert_eq!(store.served_formats(&peer(9)), ServedFormats::All);
        store.forget_peer_record_format(&peer(9));
        assert_eq!(store.served_formats(&peer(9)), ServedFormats::LegacyOnly);
    }

    #[test]
    fn given_the_hint_map_is_full_then_new_peers_get_the_default() {
        let mut store = store();
        for _ in 0..MAX_PEER_FORMAT_OVERRIDES {
            store.set_peer_record_format(PeerId::random(), RecordFormat::Standard);
        }
        store.set_peer_record_format(peer(9), RecordFormat::Standard);
        assert_eq!(store.served_formats(&peer(9)), ServedFormats::LegacyOnly);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Paging with any page size returns every registration exactly once, with and without
        /// namespace, also when registrations and refreshes arrive between pages.
        #[test]
        fn paging_returns_each_registration_exactly_once(
            regs in proptest::collection::vec((0u16..40, 0usize..4), 1..120),
            later in proptest::collection::vec((0u16..40, 0usize..4), 0..30),
            limit in 1u64..12,
        ) {
            let names = ["a", "b", "c", "d"];
            let mut store = store();
            let now = Instant::now();
            for (i, n) in &regs {
                store.register(peer(*i), new_reg(*i, names[*n], None), now).unwrap();
            }
            let expected: HashSet<(PeerId, Namespace)> =
                regs.iter().map(|(i, n)| (peer(*i), ns(names[*n]))).collect();
            let all = page_all(&store, peer(63), None, limit, now);
            prop_assert_eq!(all.len(), expected.len());
            prop_assert_eq!(all.iter().cloned().collect::<HashSet<_>>(), expected.clone());
            for name in names {
                let in_ns = page_all(&store, peer(63), Some(&ns(name)), limit, now);
                let want = expected.iter().filter(|(_, n)| n.as_str() == name).count();
                prop_assert_eq!(in_ns.len(), want);
                prop_assert!(in_ns.iter().all(|(_, n)| n.as_str() == name));
            }
            // Interleaved: one page, then new registrations and refreshes, then the rest.
            let (first, cookie) =
                store.discover(peer(63), None, None, Some(limit), now).unwrap();
            for (i, n) in &later {
                store.register(peer(*i), new_reg(*i, names[*n], None), now).unwrap();
            }
            let mut seen: Vec<(PeerId, Namespace)> =
                first.iter().map(|r| (r.record.peer_id(), r.namespace.clone())).collect();
            let mut cookie = Some(cookie);
            loop {
                let (page, next) =
                    store.discover(peer(63), None, cookie.as_ref(), Some(limit), now).unwrap();
                if page.is_empty() { break; }
                seen.extend(page.iter().map(|r| (r.record.peer_id(), r.namespace.clone())));
                cookie = Some(next);
            }
            // Everything now stored was seen; duplicates only for what was refreshed after
            // being seen.
            let refreshed: HashSet<(PeerId, Namespace)> =
                later.iter().map(|(i, n)| (peer(*i), ns(names[*n]))).collect();
            let unique: HashSet<_> = seen.iter().cloned().collect();
            prop_assert_eq!(unique.len(), store.len());
            prop_assert!(seen.len() <= store.len() + refreshed.len());
        }
    }
}
