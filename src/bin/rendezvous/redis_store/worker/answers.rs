//! Redis's replies read back: each script's answer turned into what the store reports
//! (REGISTER, UNREGISTER and remove-peer outcomes, reaped expiries), and DISCOVER pages cut to
//! the message cap with the cookie to continue from.

use redis::Value;
use rendezvous_discovery::{
    codec::{
        registration_wire_len, Cookie, ErrorCode, ErrorResponse, Namespace, Registration,
        SignedRecord,
    },
    server::{cookie, store::Outcome, Limit, ServedFormats},
};

use super::{
    super::{Command, Done, Job, REAP_BATCH},
    Worker,
};
use crate::output::HeldBack;

pub(super) fn text(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// Decodes registration `seq`'s envelope as Redis returned it. Redis holds only envelopes an
/// instance verified before it wrote them, so this does not verify them again; one that does
/// not decode is logged and skipped.
fn decode(seq: u64, envelope: &[u8]) -> Option<SignedRecord> {
    SignedRecord::from_stored_bytes(envelope)
        .inspect_err(|e| tracing::warn!(seq, %e, "Redis holds a record that does not decode"))
        .ok()
}

pub(super) fn int(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => std::str::from_utf8(text(other)?).ok()?.parse().ok(),
    }
}

pub(super) fn array(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) => items,
        _ => &[],
    }
}

pub(super) fn parse_namespace(value: &Value) -> Option<Namespace> {
    Namespace::new(String::from_utf8(text(value)?.to_vec()).ok()?).ok()
}

/// A registration removed by a script: `[namespace, record, ttl]` at `items`.
pub(super) fn removed(items: &[Value]) -> Option<Registration> {
    let [ns, record, ttl, ..] = items else {
        return None;
    };
    Some(Registration {
        namespace: parse_namespace(ns)?,
        record: SignedRecord::from_bytes(text(record)?).ok()?,
        ttl: int(ttl)?,
    })
}

impl Worker {
    /// Turns Redis's answer to `job` into what the store reports.
    pub(super) fn answer(&mut self, job: Job, value: Value) {
        if let Value::ServerError(error) = &value {
            if let Some(held_back) = self.script_failures.allow(std::time::Instant::now()) {
                let redis = &self.redis;
                tracing::warn!(%redis, ?error, "a Redis script failed{}", HeldBack(held_back));
            }
            let text = format!("the registration store (Redis) refused the request: {error:?}");
            return self.fail(vec![job], &text);
        }
        let Job::Op { id, peer, command } = job else {
            return self.answer_reap(&value);
        };
        let items = array(&value);
        let (outcome, count) = match command {
            Command::Register {
                namespace,
                record,
                ttl,
            } => {
                let status = items.first().and_then(text).unwrap_or_default();
                let n = items.get(1).and_then(int).unwrap_or(0);
                let count = items.get(2).and_then(int).map(|c| c as usize);
                let result = match status {
                    b"ok" => Ok(Registration {
                        namespace: namespace.clone(),
                        record,
                        ttl,
                    }),
                    b"peer_full" => Err(ErrorResponse::new(
                        ErrorCode::NotAuthorized,
                        format!(
                            "peer already has {n} registrations, the most this server allows; \
                             unregister one first"
                        ),
                    )),
                    b"full" => Err(ErrorResponse::new(
                        ErrorCode::Unavailable,
                        format!("server is full ({n} registrations); try later or another server"),
                    )),
                    b"bytes" => Err(ErrorResponse::new(
                        ErrorCode::Unavailable,
                        format!(
                            "server is full ({n} bytes of registrations, the most is {}); try \
                             later or another server",
                            self.settings.max_bytes
                        ),
                    )),
                    _ => Err(ErrorResponse::new(
                        ErrorCode::Unavailable,
                        "the registration store (Redis) gave an answer this server does not \
                         understand; try again",
                    )),
                };
                let limit = match status {
                    b"peer_full" => Some(Limit::PeerRegistrations),
                    b"full" => Some(Limit::Registrations),
                    b"bytes" => Some(Limit::StoreBytes),
                    _ => None,
                };
                let outcome = Outcome::Registered {
                    namespace,
                    result,
                    limit,
                };
                (outcome, count)
            }
            Command::Unregister { namespace } => {
                let count = items.first().and_then(int).map(|c| c as usize);
                let removed = items.get(1..).and_then(removed);
                (Outcome::Unregistered { namespace, removed }, count)
            }
            Command::RemovePeer => {
                let count = items.first().and_then(int).map(|c| c as usize);
                let removed = items
                    .get(1)
                    .map(array)
                    .unwrap_or_default()
                    .chunks(3)
                    .filter_map(removed)
                    .collect();
                (Outcome::PeerRemoved { removed }, count)
            }
            Command::Discover {
                namespace,
                served,
                mark,
                ..
            } => {
                let result = self.page(items, namespace.as_ref(), served, mark);
                (Outcome::Discovered { namespace, result }, None)
            }
        };
        self.send(Done::Completed {
            id,
            peer,
            outcome,
            count,
        });
    }

    fn answer_reap(&mut self, value: &Value) {
        let entries = array(value);
        for entry in entries {
            let items = array(entry);
            let (Some(registration), Some(count)) =
                (items.get(1..).and_then(removed), items.get(4).and_then(int))
            else {
                continue;
            };
            self.send(Done::Expired {
                registration,
                count: count as usize,
            });
        }
        self.send(Done::Reaped {
            full: entries.len() >= REAP_BATCH,
        });
    }

    /// The page and cookie from `discover.lua`'s answer, cut to the message cap.
    fn page(
        &mut self,
        items: &[Value],
        namespace: Option<&Namespace>,
        served: ServedFormats,
        mark: Option<ServedFormats>,
    ) -> Result<(Vec<Registration>, Cookie), ErrorResponse> {
        let unexpected = || {
            ErrorResponse::new(
                ErrorCode::Unavailable,
                "the registration store (Redis) gave an answer this server does not \
                 understand; try again",
            )
        };
        let status = items.first().and_then(text).ok_or_else(unexpected)?;
        let counter = items.get(1).and_then(int).ok_or_else(unexpected)?;
        if status == b"ahead" {
            return Err(ErrorResponse::new(
                ErrorCode::InvalidCookie,
                format!(
                    "cookie is ahead of this server (server at {counter}); discover without a \
                     cookie to start over"
                ),
            ));
        }
        let complete = items.get(2).and_then(int).ok_or_else(unexpected)? == 1;
        let last_scanned = items.get(3).and_then(int);
        let now = items.get(4).and_then(int).ok_or_else(unexpected)?;
        let entries = items.get(5).map(array).unwrap_or_default();
        // Entries left out for their format mark the cookie, as the library's cookies do.
        let mark = match items.get(6).and_then(int) {
            // `served` is within any mark the cookie had (else it was refused).
            Some(1) => Some(served),
            _ => mark,
        };
        let mut page = Vec::new();
        let mut size = self.response_overhead;
        // The last entry dealt with (sent or skipped), and whether all of them were.
        let mut last = None;
        let mut all_taken = true;
        for entry in entries.chunks(4) {
            let [seq, ns, record, deadline] = entry else {
                return Err(unexpected());
            };
            let (Some(seq), Some(ns), Some(envelope), Some(deadline)) =
                (int(seq), parse_namespace(ns), text(record), int(deadline))
            else {
                return Err(unexpected());
            };
            let ttl = (deadline.saturating_sub(now) / 1000).max(1);
            // A PeerInfo reader gets each signed record as the peer and addresses it proves.
            let record = if served == ServedFormats::AsPeerInfo {
                match decode(seq, envelope) {
                    Some(record) => Some(record.to_peer_info()),
                    None => {
                        last = Some(seq);
                        continue;
                    }
                }
            } else {
                None
            };
            let len = record
                .as_ref()
                .map_or(envelope.len(), |r| r.envelope_bytes().len());
            let wire = registration_wire_len(&ns, len, ttl);
            if size + wire > self.settings.max_message_size && !page.is_empty() {
                all_taken = false;
                break;
            }
            last = Some(seq);
            if size + wire > self.settings.max_message_size {
                // Alone it does not fit any page: skip it, or paging would stop here.
                tracing::debug!(seq, "registration larger than a whole response; skipped");
                continue;
            }
            // A record that does not decode is skipped (and logged) like one in a format the
            // peer cannot decode.
            let Some(record) = record.or_else(|| decode(seq, envelope)) else {
                continue;
            };
            size += wire;
            page.push(Registration {
                namespace: ns,
                record,
                ttl,
            });
        }
        let seq = match (all_taken, complete) {
            // Everything up to the counter has been seen.
            (true, true) => counter,
            // Redis looked further than the page (entries it filtered out).
            (true, false) => last_scanned.unwrap_or(counter),
            (false, _) => last.unwrap_or(counter),
        };
        Ok((page, cookie::encode(seq, mark, namespace)))
    }
}
