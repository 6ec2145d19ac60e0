//! [`Page`]: one DISCOVER_RESPONSE being filled, in sequence order, with what its asker reads,
//! cut to the page limit and the message cap, and the cookie that continues after it.

use std::sync::OnceLock;

use super::cookie;
use crate::{
    codec::{
        registration_wire_len, Cookie, DiscoverPage, Message, Namespace, Registration,
        SignedRecord, Ttl,
    },
    server::ServedFormats,
};

/// The most entries one DISCOVER looks at, returned or not. Records filtered out by format (or
/// expired but not yet collected) still cost a look; this bound keeps a DISCOVER at
/// O(log n + `MAX_SCANNED_PER_DISCOVER`) even when most of a namespace is filtered out. The
/// cookie then points past what was looked at, so the next DISCOVER continues from there.
pub const MAX_SCANNED_PER_DISCOVER: usize = 10_000;

/// What [`Page::offer`] did with a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// It is in the page.
    Taken,
    /// It was passed over for good: a format the asker is not served (the cookie is marked), or
    /// too large for any page. The cookie moves past it.
    Passed,
    /// The page is full (its limit, or the message cap): it was not taken, and nothing after it
    /// will be. Stop offering.
    Full,
}

/// How far the store looked for a page's registrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanEnd {
    /// Every registration up to `counter` (the latest sequence number given out) was looked at.
    Complete {
        /// The store's counter.
        counter: u64,
    },
    /// The store stopped looking (the page limit, or the most it looks at per DISCOVER), last at
    /// `last` (`None`: at the last registration offered or passed).
    Stopped {
        /// The last sequence number looked at, if the store knows it.
        last: Option<u64>,
    },
}

/// A DISCOVER_RESPONSE being filled. The store offers the registrations after the cookie in
/// sequence order ([`Page::offer`]; [`Page::pass`] for one it skips itself, an expired one say)
/// and [`finish`](Page::finish)es with how far it looked.
///
/// The rules: only registrations the asker is `served` are taken, in its layout (a signed
/// record goes to a `PeerInfo` reader as a `PeerInfo`); the others still advance the cookie,
/// which then carries a mark (see [`cookie`]). At most `limit` registrations, and the encoded
/// response never exceeds the message cap: a registration too large for any page on its own is
/// passed over, or paging would stop there. The cookie points after the last registration dealt
/// with, or at the counter when everything was.
#[derive(Debug)]
pub struct Page {
    served: ServedFormats,
    limit: usize,
    max_message_size: usize,
    /// Bytes of the response so far (with the longest cookie).
    size: usize,
    registrations: Vec<Registration>,
    /// The last sequence number dealt with (taken or passed); at first the cookie's.
    last: u64,
    mark: Option<ServedFormats>,
    /// A registration did not fit: the page ends before it.
    cut: bool,
}

impl Page {
    pub(super) fn new(
        served: ServedFormats,
        limit: usize,
        max_message_size: usize,
        after: u64,
        mark: Option<ServedFormats>,
    ) -> Self {
        Self {
            served,
            limit,
            max_message_size,
            size: response_overhead(),
            registrations: Vec::new(),
            last: after,
            mark,
            cut: false,
        }
    }

    /// The most registrations the page holds.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// What the asker is served.
    pub fn served(&self) -> ServedFormats {
        self.served
    }

    /// Whether the page holds its limit.
    pub fn is_full(&self) -> bool {
        self.registrations.len() >= self.limit
    }

    /// Offers registration `seq` (in `namespace`, with `record`, `ttl` seconds left), the next
    /// in sequence order.
    pub fn offer(
        &mut self,
        seq: u64,
        namespace: &Namespace,
        record: SignedRecord,
        ttl: Ttl,
    ) -> Offer {
        if self.is_full() {
            self.cut = true;
            return Offer::Full;
        }
        if !self.served.includes(record.format()) {
            self.left_out_for_format();
            self.last = seq;
            return Offer::Passed;
        }
        let record = match self.served {
            ServedFormats::AsPeerInfo => record.to_peer_info(),
            _ => record,
        };
        let wire = registration_wire_len(namespace, record.envelope_bytes().len(), ttl);
        if self.size.saturating_add(wire) > self.max_message_size {
            if !self.registrations.is_empty() {
                self.cut = true;
                return Offer::Full;
            }
            tracing::debug!(seq, "registration larger than a whole response; skipped");
            self.last = seq;
            return Offer::Passed;
        }
        self.size += wire;
        self.registrations.push(Registration {
            namespace: namespace.clone(),
            record,
            ttl,
        });
        self.last = seq;
        Offer::Taken
    }

    /// Moves past registration `seq` without sending it (expired, or unreadable).
    pub fn pass(&mut self, seq: u64) {
        self.last = seq;
    }

    /// Notes that the store left a registration out for its format (a store that filters by
    /// [`ServedFormats::includes`] itself): the cookie is marked.
    pub fn left_out_for_format(&mut self) {
        // `served` is within any mark the cookie had (else it was refused): the narrowest.
        self.mark = Some(self.served);
    }

    /// Whether the page ends at the newest registration, the store having looked as far as
    /// `end` says: its cookie is up to date (nothing registered after it yet). A push
    /// subscription's replay ends with such a page.
    pub fn is_up_to_date(&self, end: ScanEnd) -> bool {
        !self.cut && matches!(end, ScanEnd::Complete { .. })
    }

    /// The registrations and the cookie that continues after them in `namespace` (`None`: all
    /// namespaces), the store having looked as far as `end` says.
    pub fn finish(
        self,
        end: ScanEnd,
        namespace: Option<&Namespace>,
    ) -> (Vec<Registration>, Cookie) {
        let seq = match end {
            _ if self.cut => self.last,
            ScanEnd::Complete { counter } => counter,
            ScanEnd::Stopped { last } => last.map_or(self.last, |last| last.max(self.last)),
        };
        (
            self.registrations,
            cookie::encode(seq, self.mark, namespace),
        )
    }
}

/// Bytes of a DISCOVER_RESPONSE without registrations and with the longest cookie.
pub(crate) fn response_overhead() -> usize {
    static OVERHEAD: OnceLock<usize> = OnceLock::new();
    *OVERHEAD.get_or_init(|| {
        let longest_cookie = Cookie::new(vec![0xff; 8 + crate::MAX_NAMESPACE_LEN])
            .expect("8 + 255 bytes is under the cookie cap");
        Message::DiscoverResponse(Ok(DiscoverPage {
            registrations: Vec::new(),
            cookie: Some(longest_cookie),
            skipped: 0,
        }))
        .encoded_len()
    })
}
