//! Redis's replies read back: each script's answer turned into what the store reports
//! (REGISTER, UNREGISTER and remove-peer outcomes, reaped expiries), and DISCOVER pages cut to
//! the message cap with the cookie to continue from.

use redis::Value;
use rendezvous_discovery::{
    codec::{Cookie, ErrorCode, ErrorResponse, Namespace, Registration, SignedRecord},
    server::{
        rules::{self, Limits, Offer, Refusal, ScanEnd},
        store::Outcome,
    },
};

use super::{
    super::{Command, Done, Job, ENTRY_OVERHEAD, REAP_BATCH},
    Worker,
};
use crate::output::HeldBack;

/// The answer to a reply that is not what the script returns.
fn unexpected() -> ErrorResponse {
    ErrorResponse::new(
        ErrorCode::Unavailable,
        "the registration store (Redis) gave an answer this server does not understand; try \
         again",
    )
}

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
pub(crate) fn decode(seq: u64, envelope: &[u8]) -> Option<SignedRecord> {
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
                let count = items.get(2).and_then(int).map(|c| c as usize);
                let registration = Registration {
                    namespace,
                    record,
                    ttl,
                };
                (self.registered_outcome(items, registration), count)
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
                after,
                limit,
                served,
                mark,
            } => {
                let page = self.limits.page(served, Some(limit as u64), after, mark);
                let result = page_from(items, page, after, namespace.as_ref());
                let up_to_date = matches!(result, Ok((_, _, true)));
                let result = result.map(|(registrations, cookie, _)| (registrations, cookie));
                let outcome = Outcome::Discovered {
                    namespace,
                    result,
                    up_to_date,
                };
                (outcome, None)
            }
        };
        self.answers.push(Done::Completed {
            id,
            peer,
            outcome,
            count,
        });
    }

    /// What REGISTER of `registration` came to, from `register.lua`'s answer `items`.
    fn registered_outcome(&self, items: &[Value], registration: Registration) -> Outcome {
        let bytes = registration_bytes(&registration.namespace, &registration.record);
        let namespace = registration.namespace.clone();
        let (result, limit) = match self.registered(items, bytes) {
            Ok(()) => (Ok(registration), None),
            Err(Refusal { error, limit }) => (Err(error), limit),
        };
        Outcome::Registered {
            namespace,
            result,
            limit,
        }
    }

    /// `register.lua`'s answer: registered, or the rule book's refusal for the bound it names
    /// (a registration of `bytes`, as Redis counts them).
    fn registered(&self, items: &[Value], bytes: usize) -> Result<(), Refusal> {
        let status = items.first().and_then(text).unwrap_or_default();
        let n = items.get(1).and_then(int).unwrap_or(0) as usize;
        match status {
            b"ok" => Ok(()),
            b"peer_full" => Err(Limits::peer_full(n)),
            b"full" => Err(Limits::server_full(n)),
            b"bytes" => Err(self.limits.over_byte_budget(bytes, n)),
            _ => Err(unexpected().into()),
        }
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
            self.answers.push(Done::Expired {
                registration,
                count: count as usize,
            });
        }
        self.answers.push(Done::Reaped {
            full: entries.len() >= REAP_BATCH,
        });
    }
}

/// Bytes a registration of `record` in `namespace` counts in Redis.
pub(super) fn registration_bytes(namespace: &Namespace, record: &SignedRecord) -> usize {
    namespace.as_str().len() + record.envelope_bytes().len() + ENTRY_OVERHEAD
}

/// The page and cookie from `discover.lua`'s answer to a DISCOVER after sequence number
/// `after`, filled into `page` by the rule book.
fn page_from(
    items: &[Value],
    mut page: rules::Page,
    after: u64,
    namespace: Option<&Namespace>,
) -> Result<(Vec<Registration>, Cookie, bool), ErrorResponse> {
    let status = items.first().and_then(text).ok_or_else(unexpected)?;
    let counter = items.get(1).and_then(int).ok_or_else(unexpected)?;
    if status == b"ahead" {
        return Err(rules::cookie::ahead(after, counter));
    }
    let complete = items.get(2).and_then(int).ok_or_else(unexpected)? == 1;
    let last_scanned = items.get(3).and_then(int);
    let now = items.get(4).and_then(int).ok_or_else(unexpected)?;
    let entries = items.get(5).map(array).unwrap_or_default();
    if items.get(6).and_then(int) == Some(1) {
        page.left_out_for_format();
    }
    for entry in entries.chunks(4) {
        let [seq, ns, record, deadline] = entry else {
            return Err(unexpected());
        };
        let (Some(seq), Some(ns), Some(envelope), Some(deadline)) =
            (int(seq), parse_namespace(ns), text(record), int(deadline))
        else {
            return Err(unexpected());
        };
        // A record that does not decode is skipped (and logged).
        let Some(record) = decode(seq, envelope) else {
            page.pass(seq);
            continue;
        };
        let ttl = rules::remaining_ttl(std::time::Duration::from_millis(
            deadline.saturating_sub(now),
        ));
        if page.offer(seq, &ns, record, ttl) == Offer::Full {
            break;
        }
    }
    let end = if complete {
        ScanEnd::Complete { counter }
    } else {
        ScanEnd::Stopped { last: last_scanned }
    };
    let up_to_date = page.is_up_to_date(end);
    let (registrations, cookie) = page.finish(end, namespace);
    Ok((registrations, cookie, up_to_date))
}
