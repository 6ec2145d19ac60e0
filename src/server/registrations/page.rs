//! DISCOVER paging: the next page after a cookie, in sequence order, cut to the page limit and
//! the message cap, with the cookie to continue from.

use std::{ops::Bound, time::Instant};

use super::{cookie, Registrations};
use crate::{
    codec::{registration_wire_len, Cookie, ErrorResponse, Namespace, Registration},
    server::ServedFormats,
};

/// The most entries one DISCOVER looks at, returned or not. Records filtered out by format (or
/// expired but not yet collected) still cost a look; this bound keeps a DISCOVER at
/// O(log n + `MAX_SCANNED_PER_DISCOVER`) even when most of a namespace is filtered out. The
/// cookie then points past what was looked at, so the next DISCOVER continues from there.
pub const MAX_SCANNED_PER_DISCOVER: usize = 10_000;

impl Registrations {
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
                // `served` is within any mark the cookie had (else it was refused).
                mark = Some(served);
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
}
