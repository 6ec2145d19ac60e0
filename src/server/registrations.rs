//! The pure registration store: no IO, no clock reads; every call that depends on time takes
//! `now`.

use std::{
    collections::{BTreeSet, HashMap},
    ops::Bound,
    time::{Duration, Instant},
};

use libp2p::PeerId;

use super::{Config, ServedFormats};

use crate::codec::{
    registration_wire_len, Cookie, ErrorCode, ErrorResponse, Message, Namespace, NewRegistration,
    RecordFormat, Registration, SignedRecord, Ttl,
};

mod cookie;

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
    /// The format of the peer's latest REGISTER.
    format: Option<RecordFormat>,
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
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Handles a REGISTER from `peer` (the peer of the connection it came on). Returns the
    /// granted TTL; on an error nothing changed.
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
        if record.peer_id() != peer {
            return Err(ErrorResponse::new(
                ErrorCode::NotAuthorized,
                format!(
                    "the signed peer record is for peer {}; a peer can only register itself ({peer})",
                    record.peer_id()
                ),
            ));
        }
        let ttl = ttl.unwrap_or(crate::DEFAULT_TTL);
        let (min, max) = (self.config.min_ttl, self.config.max_ttl);
        if ttl < min || ttl > max {
            return Err(ErrorResponse::new(
                ErrorCode::InvalidTtl,
                format!("ttl is {ttl} s; expected {min}..={max} s"),
            ));
        }
        let existing = self
            .peers
            .get(&peer)
            .and_then(|p| p.namespaces.get(&namespace))
            .copied();
        if existing.is_none() {
            let of_peer = self.peers.get(&peer).map_or(0, |p| p.namespaces.len());
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
        }
        if let Some(seq) = existing {
            self.remove_entry(seq);
        }
        self.counter += 1;
        let seq = self.counter;
        let deadline = now + Duration::from_secs(ttl);
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
            Some(cookie) => cookie::parse(cookie, namespace, self.counter)?,
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
                None => return Ok((Vec::new(), cookie::encode(self.counter, namespace))),
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
            if size + wire > self.config.max_message_size {
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
        Ok((page, cookie::encode(seq, namespace)))
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
        let peer = entry.record.peer_id();
        if let Some(state) = self.peers.get_mut(&peer) {
            state.namespaces.remove(&entry.namespace);
            if state.namespaces.is_empty() {
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
