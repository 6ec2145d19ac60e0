//! `serve --store redis://HOST:PORT/DB`: registrations in one shared Redis (or Valkey), so a
//! fleet of `rendezvous serve` instances acts as one rendezvous point.
//!
//! # Where it lives, and why
//!
//! The `redis` crate's connection manager (reconnects by itself, pipelines many requests on one
//! connection) needs tokio. The library has no tokio, so this store lives in the binary, which
//! already runs on tokio: [`RedisStore`] implements the library's poll-based
//! [`Store`] and hands each operation to one worker task
//! on the binary's runtime (`worker.rs`), which sends what has queued up as one pipeline and
//! sends the answers back over a channel that wakes the swarm.
//!
//! # Rules
//!
//! - **Redis decides.** Every REGISTER, UNREGISTER, disconnect removal, DISCOVER and expiry is
//!   one Lua script (`lua/*.lua`), so it is atomic: the limits (per peer, in total, in bytes)
//!   are checked and the registration written, and its sequence number taken from one counter,
//!   in the same step. A cookie from any instance therefore pages on any other, exactly once and
//!   in order, while others write.
//! - **One rule book.** What only Redis can decide atomically for the fleet (the counts, the
//!   bytes, the sequence number, whether a cookie is ahead of the counter) is decided in its
//!   scripts; everything else (the TTL, the record's size, signer and addresses, the page limit,
//!   what a page holds for the asker's formats and where its cookie points, every status and
//!   statusText) by the library's [rule book](rendezvous_discovery::server::rules), as the
//!   memory and SQLite stores decide it. A script's refusal comes back as a word and a number
//!   and is answered with the rule book's refusal for it. One difference of order stays: a
//!   REGISTER's record is decoded before Redis checks the counts and bytes (the library checks
//!   them first, to spare the decoding), so a request that breaks both kinds of rule is refused
//!   for its record here.
//! - **Bounded.** The jobs for the worker wait in a channel of [`MAX_QUEUED_JOBS`]; a job that
//!   finds it full is answered at once (`E_UNAVAILABLE` for a REGISTER or DISCOVER; an
//!   UNREGISTER or disconnect removal removes nothing, so its registrations live until their
//!   TTL ends, as when Redis is unreachable). The worker's answers wait in a channel of
//!   [`MAX_QUEUED_ANSWERS`] (the worker waits while it is full). A reply of Redis that is not
//!   what a script returns is answered `E_UNAVAILABLE`, never a panic.
//! - **One clock.** Deadlines and expiry are judged by Redis's `TIME` inside the scripts, never
//!   by an instance's clock.
//! - **Expiry.** Every instance runs `reap.lua` every [`REAP_INTERVAL`], removing at most
//!   [`REAP_BATCH`] expired registrations per run (again at once while it finds a full batch).
//!   Removal is idempotent, so instances reaping at the same time do no harm. DISCOVER skips
//!   expired registrations that are not reaped yet.
//! - **Remove-on-disconnect.** Each registration records the instance that took its latest
//!   REGISTER (its *owner*, a random id per process). When a peer's last connection to an
//!   instance closes, that instance removes the peer's registrations it owns, and only those: a
//!   peer connected to A and B that registered through B keeps its registrations when it leaves
//!   A. An instance that dies (or loses Redis when the peer leaves) removes nothing; those
//!   registrations live until their TTL ends.
//! - **Redis down.** Each batch of requests gets at most [`REDIS_TIMEOUT`] to be answered; past
//!   it (or on a connection error) every request in it is answered `E_UNAVAILABLE` with a
//!   statusText saying the store is unreachable. The swarm and its connections are untouched;
//!   the connection manager reconnects by itself and the next request goes through. Until a
//!   batch (a request, or the reap every [`REAP_INTERVAL`]) is answered again, the store reports
//!   itself unavailable: `serve --metrics` shows `libp2p_rendezvous_server_store_available` 0
//!   and `/health` answers 503.
//! - **Records.** Redis holds the envelope bytes as the peer signed them, verified once, by the
//!   instance that took the REGISTER; an instance reading them back decodes them without
//!   checking the signature again (`SignedRecord::from_stored_bytes`), so whoever can write to
//!   Redis is trusted as the database is. Each instance keeps each peer's last verified
//!   record (within [`VERIFIED_CACHE_BYTES`]), so a REGISTER that carries the same envelope
//!   again (a refresh, or the record in another namespace) is not verified again.
//! - **Push.** The scripts publish each registration they store and each early removal on
//!   `rdv:changes` (inside the script, so in sequence order for the fleet); every instance
//!   subscribes and reports them to its server as its change feed, so a REGISTER through one
//!   instance reaches the push subscribers of every other (`changes.rs`). When the feed's
//!   connection (re)starts, what was published meanwhile is lost: the instance ends its push
//!   subscriptions, and their subscribers resume from their cookies.
//! - **Identity.** Instances may each have their own key (`--identity`; clients then list each
//!   address with its peer id) or share one key file (one peer id behind one DNS name; a client
//!   that dials the name reaches whichever instance answers). Both work: the registrations are
//!   in Redis, not tied to the peer id.
//!
//! # Keys
//!
//! Every key starts with [`KEY_PREFIX`]; choose the database with the URL's `/DB`. No script
//! or instance ever lists keys (no `KEYS`, no `SCAN`).
//!
//! | key | type | holds | why |
//! | --- | --- | --- | --- |
//! | `rdv:counter` | string | the last sequence number given out (starts at Redis's clock in µs) | cookies: one counter for the fleet, `INCR`ed inside `register.lua` |
//! | `rdv:reg:<seq>` | hash | `ns`, `peer`, `rec` (envelope bytes), `fmt` (`s` standard, `l` legacy, `p` PeerInfo), `ttl`, `dl` (deadline, ms of Redis time), `own` (instance), `b` (bytes counted) | the registration itself, found by its sequence number from every index |
//! | `rdv:all` | sorted set | sequence numbers, scored by themselves | DISCOVER across all namespaces pages by score: O(log n + page) |
//! | `rdv:ns:<namespace>` | sorted set | sequence numbers of the namespace | DISCOVER in one namespace, the same way; deleted by Redis when empty |
//! | `rdv:exp` | sorted set | sequence numbers scored by deadline | `reap.lua` takes the earliest expired first, in bounded batches |
//! | `rdv:peer:<peer id>` | hash | `n:<namespace>` → sequence number, one per registration of the peer | refresh in place, the per-peer limit, UNREGISTER, disconnect removal; gone with the peer's last registration |
//! | `rdv:changes` | pub/sub channel | each registration stored and each early removal, as the scripts make them | push subscribers on every instance (`changes.rs`) |
//! | `rdv:stats` | hash | `bytes`: the bytes counted for all registrations | the fleet's byte budget, checked and updated in the same script |
//!
//! A registration counts `len(namespace) + len(record) +` [`ENTRY_OVERHEAD`] bytes (its keys
//! and index entries), against [`Settings::max_bytes`].
//!
//! # Scripts, each bounded
//!
//! | script | work |
//! | --- | --- |
//! | `register.lua` | O(log n): a few hash and sorted-set writes |
//! | `unregister.lua` | O(log n) |
//! | `remove_peer.lua` | O(r log n), r = the peer's registrations (at most the per-peer limit) |
//! | `discover.lua` | O(log n + s), s ≤ the page limit or [`MAX_SCANNED_PER_DISCOVER`](rendezvous_discovery::server::MAX_SCANNED_PER_DISCOVER) entries looked at |
//! | `reap.lua` | O(b log n), b ≤ [`REAP_BATCH`] |
//!
//! # Redis Cluster
//!
//! The scripts build key names from [`KEY_PREFIX`] instead of declaring them in `KEYS`, which a
//! single Redis (with replicas, or Sentinel) accepts and Cluster does not. To run on Cluster,
//! every key a script touches must be declared and live in one slot: hash-tag the per-namespace
//! keys by namespace (`rdv:{ns}:...`) so a namespace's index and registrations share a slot, and
//! keep per-peer keys with them only by making registrations per (namespace, peer) slot. What
//! cannot be split stays global and would need its own slot and a second round trip: the
//! counter (cookies across namespaces), `rdv:all`, `rdv:exp`, the total and byte budgets. A
//! Cluster port would give DISCOVER-in-a-namespace its own slot and serve all-namespace
//! DISCOVER and the fleet-wide limits from a global slot; it is not done here.

mod changes;
mod verified;
mod worker;

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use futures::{channel::mpsc as fmpsc, StreamExt};
use libp2p::PeerId;
use rendezvous_discovery::{
    codec::{ErrorCode, ErrorResponse, Namespace, SignedRecord, UnverifiedRegistration},
    server::{
        cookie,
        rules::{self, Limits, Refusal},
        store::{Operation, OperationId, Outcome, Store, StoreEvent},
        ServedFormats, MAX_IN_FLIGHT,
    },
    Ttl,
};
use tokio::sync::mpsc;

use verified::VerifiedRecords;

/// Every key this store uses starts with it.
pub const KEY_PREFIX: &str = "rdv:";

/// How long a batch of requests may wait for Redis before each is answered `E_UNAVAILABLE`
/// (also the connection timeout for each reconnect attempt).
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// How often each instance removes expired registrations.
pub const REAP_INTERVAL: Duration = Duration::from_secs(1);

/// The most expired registrations one `reap.lua` run removes (it runs again at once while it
/// finds this many).
pub const REAP_BATCH: usize = 500;

/// The most operations sent to Redis in one pipeline.
pub const MAX_BATCH: usize = 512;

/// Jobs waiting for the worker, at most: the REGISTERs and DISCOVERs the shell has in flight
/// (at most [`MAX_IN_FLIGHT`]) and as many again for UNREGISTERs, disconnect removals and the
/// reap, which the shell never refuses.
pub const MAX_QUEUED_JOBS: usize = 2 * MAX_IN_FLIGHT;

/// Answers of the worker waiting for the store's next poll, at most: one pipeline's (the worker
/// waits while the store has not taken them).
pub const MAX_QUEUED_ANSWERS: usize = MAX_BATCH;

/// Bytes counted for one registration besides its namespace and record: its hash fields, its
/// entries in three sorted sets and its peer's hash (measured with `MEMORY USAGE`, rounded up).
pub const ENTRY_OVERHEAD: usize = 256;

/// Peers whose registration count each instance remembers (for keep-alive while Redis is
/// unreachable); beyond it a new peer's count is not remembered (it reads as 0 on a failure).
pub const MAX_COUNTED_PEERS: usize = 65_536;

/// Envelope bytes of the records an instance keeps to skip verifying a REGISTER whose envelope
/// is the one its peer registered last (16 MiB: some 50,000 typical records).
pub const VERIFIED_CACHE_BYTES: usize = 16 << 20;

/// The limits the fleet enforces, from `serve`'s flags (each instance should get the same).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Shortest TTL accepted, in seconds.
    pub min_ttl: Ttl,
    /// Longest TTL accepted, in seconds.
    pub max_ttl: Ttl,
    /// Registrations one peer may hold.
    pub max_registrations_per_peer: usize,
    /// Registrations the fleet holds in total.
    pub max_registrations: usize,
    /// Bytes the fleet's registrations may take in Redis, counted as the module docs say
    /// (`--max-store-bytes`).
    pub max_bytes: usize,
    /// The largest signed envelope a REGISTER may carry, in bytes.
    pub max_record_size: usize,
    /// Most addresses one signed peer record may list.
    pub max_addresses_per_record: usize,
    /// Registrations per page when a DISCOVER gives no limit.
    pub default_page: usize,
    /// Most registrations per page.
    pub max_page: usize,
    /// Largest message written; pages are cut to fit it.
    pub max_message_size: usize,
}

impl Settings {
    /// The rule book's limits of these settings.
    fn limits(&self) -> Limits {
        Limits::new(
            &rendezvous_discovery::server::Config::default()
                .with_min_ttl(self.min_ttl)
                .with_max_ttl(self.max_ttl)
                .with_max_registrations_per_peer(self.max_registrations_per_peer)
                .with_max_registrations(self.max_registrations)
                .with_max_store_bytes(self.max_bytes)
                .with_max_record_size(self.max_record_size)
                .with_max_addresses_per_record(self.max_addresses_per_record)
                .with_default_page(self.default_page)
                .with_max_page(self.max_page)
                .with_max_message_size(self.max_message_size),
        )
    }
}

/// What the worker was asked to do. (Nearly every job is an `Op`; boxing it would only add an
/// allocation.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Job {
    Op {
        id: OperationId,
        peer: PeerId,
        command: Command,
    },
    Reap,
}

/// An operation, checked and ready for its script.
#[derive(Debug)]
enum Command {
    Register {
        namespace: Namespace,
        record: SignedRecord,
        ttl: Ttl,
    },
    Unregister {
        namespace: Namespace,
    },
    RemovePeer,
    Discover {
        namespace: Option<Namespace>,
        /// The sequence number of the cookie it came with (0 without one).
        after: u64,
        /// The page limit, by the rule book.
        limit: usize,
        /// What the shell decided the peer reads.
        served: ServedFormats,
        /// The mark of the cookie it came with (see the library's `server::cookie`).
        mark: Option<ServedFormats>,
    },
}

impl Command {
    /// The outcome of this command when it is answered with `error` instead of running
    /// (nothing changed).
    fn refused(self, error: ErrorResponse) -> Outcome {
        match self {
            Command::Register { namespace, .. } => Outcome::Registered {
                namespace,
                result: Err(error),
                limit: None,
            },
            Command::Discover { namespace, .. } => Outcome::Discovered {
                namespace,
                result: Err(error),
                up_to_date: false,
            },
            Command::Unregister { namespace } => Outcome::Unregistered {
                namespace,
                removed: None,
            },
            Command::RemovePeer => Outcome::PeerRemoved {
                removed: Vec::new(),
            },
        }
    }
}

/// What the worker sends back.
#[derive(Debug)]
enum Done {
    Completed {
        id: OperationId,
        peer: PeerId,
        outcome: Outcome,
        /// Registrations the peer holds, when Redis said (not on a failure).
        count: Option<usize>,
    },
    Expired {
        registration: rendezvous_discovery::Registration,
        count: usize,
    },
    /// A reap ended; `full`: it removed a whole batch, so more may be waiting.
    Reaped { full: bool },
}

/// The Redis store: see the [module docs](self).
pub struct RedisStore {
    limits: Arc<Limits>,
    jobs: mpsc::Sender<Job>,
    done: fmpsc::Receiver<Done>,
    /// Answers decided here (a request refused before it reaches Redis), at most the
    /// operations submitted since the last poll.
    ready: VecDeque<Done>,
    /// Woken when `ready` gets an answer.
    waker: Option<Waker>,
    /// Registrations each peer that made requests here holds, as last reported (to answer the
    /// shell's keep-alive question when Redis cannot); forgotten when its last connection
    /// closes and its registrations are removed. At most [`MAX_COUNTED_PEERS`].
    counts: HashMap<PeerId, usize>,
    /// Each peer's last verified record, so the same envelope again is not verified again;
    /// forgotten with `counts`.
    verified: VerifiedRecords,
    reaping: bool,
    next_reap: Instant,
    /// Whether Redis answered the worker's last batch (set by the worker; a reap every
    /// [`REAP_INTERVAL`] keeps it current when no requests come).
    available: Arc<AtomicBool>,
    /// The fleet's change feed (`changes.rs`), for push subscribers.
    changes: fmpsc::Receiver<changes::Feed>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// `url` as it may be logged: the password of its user info replaced by `***`
/// (`redis://user:secret@host:6379/0` becomes `redis://user:***@host:6379/0`), and its query
/// left out.
pub fn without_password(url: &str) -> String {
    let url = url.split('?').next().unwrap_or_default();
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let user = match rest[..at].split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => rest[..at].to_owned(),
    };
    format!("{scheme}://{user}@{}", &rest[at + 1..])
}

/// A `--store` value that is not a Redis URL we can use.
#[derive(Debug)]
pub struct BadUrl(pub String);

impl RedisStore {
    /// A store on the Redis at `url` (`redis://HOST:PORT/DB`). It connects lazily: a Redis that
    /// is down at start makes requests fail with `E_UNAVAILABLE` until it is up. Must be called
    /// on the tokio runtime (it spawns the worker).
    pub fn new(url: &str, settings: Settings) -> Result<Self, BadUrl> {
        let client = redis::Client::open(url).map_err(|e| {
            BadUrl(format!(
                "expected redis://HOST:PORT/DB, such as redis://127.0.0.1:6379/0 ({e})"
            ))
        })?;
        let owner = format!("{:016x}", rand::random::<u64>());
        let redis = without_password(url);
        tracing::info!(%redis, %owner, "registrations in Redis; this instance's owner id");
        let limits = Arc::new(settings.limits());
        let (jobs, jobs_rx) = mpsc::channel(MAX_QUEUED_JOBS);
        let (done_tx, done) = fmpsc::channel(MAX_QUEUED_ANSWERS);
        let available = Arc::new(AtomicBool::new(true));
        let (feed, changes) = fmpsc::channel(changes::MAX_QUEUED_CHANGES);
        tokio::spawn(changes::run(client.clone(), redis.clone(), feed));
        tokio::spawn(worker::run(
            client,
            redis,
            owner,
            limits.clone(),
            jobs_rx,
            done_tx,
            available.clone(),
        ));
        Ok(Self {
            limits,
            available,
            jobs,
            done,
            ready: VecDeque::new(),
            waker: None,
            counts: HashMap::new(),
            verified: VerifiedRecords::default(),
            reaping: false,
            next_reap: Instant::now(),
            changes,
        })
    }

    /// The rule book's checks of a REGISTER that need no fleet state, cheapest first: TTL,
    /// record size, then decoding and verifying the record, its signer and its addresses,
    /// unless the envelope is byte for byte the one this peer's last REGISTER here carried (a
    /// refresh, or the same record in another namespace: verified then). (The limits and the
    /// byte budget need the fleet's state: Redis checks them.)
    fn check_register(
        &mut self,
        peer: PeerId,
        registration: UnverifiedRegistration,
    ) -> Result<Command, Refusal> {
        let UnverifiedRegistration {
            namespace,
            envelope,
            ttl,
        } = registration;
        let ttl = self.limits.granted_ttl(ttl)?;
        self.limits.check_record_size(envelope.len())?;
        let record = match self.verified.get(&peer, &envelope) {
            Some(record) => record,
            None => rules::decode_record(&envelope)?,
        };
        self.limits.check_record(peer, &record)?;
        self.verified.remember(peer, &record);
        Ok(Command::Register {
            namespace,
            record,
            ttl,
        })
    }

    /// The command for a DISCOVER, or its refusal (a cookie that is not ours for the namespace
    /// or was cut for narrower formats; whether it is ahead of the counter only Redis can tell).
    fn check_discover(
        &self,
        served: ServedFormats,
        namespace: Option<Namespace>,
        cookie: Option<&rendezvous_discovery::Cookie>,
        limit: Option<u64>,
    ) -> Result<Command, (Option<Namespace>, ErrorResponse)> {
        let (after, mark) = match cookie {
            None => (0, None),
            Some(c) => match cookie::parse(c, namespace.as_ref(), u64::MAX, served) {
                Ok(parsed) => parsed,
                Err(error) => return Err((namespace, error)),
            },
        };
        Ok(Command::Discover {
            limit: self.limits.page_limit(limit),
            served,
            mark,
            namespace,
            after,
        })
    }

    /// Answers operation `id` here, without Redis, on the next poll.
    fn answer_here(&mut self, id: OperationId, peer: PeerId, outcome: Outcome) {
        self.ready.push_back(Done::Completed {
            id,
            peer,
            outcome,
            count: None,
        });
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Hands `id`'s command to the worker, or answers it here when the queue is full.
    fn send(&mut self, id: OperationId, peer: PeerId, command: Command) {
        match self.jobs.try_send(Job::Op { id, peer, command }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(Job::Op { command, .. })) => {
                tracing::debug!(%peer, "the Redis worker's queue is full; answered at once");
                let error = ErrorResponse::new(
                    ErrorCode::Unavailable,
                    format!(
                        "server busy: {MAX_QUEUED_JOBS} requests are waiting for the \
                         registration store (Redis); try again shortly"
                    ),
                );
                self.answer_here(id, peer, command.refused(error));
            }
            // The worker ends only with the runtime; then nobody waits for an answer.
            Err(_) => {}
        }
    }

    /// The registrations `peer` holds after an answer saying `count` (`None`: Redis did not
    /// say), remembering it for when Redis cannot say.
    fn peer_count(&mut self, peer: PeerId, outcome: &Outcome, count: Option<usize>) -> usize {
        match (count, outcome) {
            (_, Outcome::PeerRemoved { .. }) => {
                self.counts.remove(&peer);
                self.verified.forget(&peer);
                count.unwrap_or(0)
            }
            (Some(count), _) => {
                if self.counts.len() < MAX_COUNTED_PEERS || self.counts.contains_key(&peer) {
                    self.counts.insert(peer, count);
                }
                count
            }
            (None, _) => self.counts.get(&peer).copied().unwrap_or(0),
        }
    }

    /// What the store reports for `done`, if anything.
    fn on_done(&mut self, done: Done, now: Instant) -> Option<StoreEvent> {
        match done {
            Done::Completed {
                id,
                peer,
                outcome,
                count,
            } => {
                let peer_registrations = self.peer_count(peer, &outcome, count);
                Some(StoreEvent::Completed {
                    id,
                    peer,
                    outcome,
                    peer_registrations,
                })
            }
            Done::Expired {
                registration,
                count,
            } => {
                let peer = registration.record.peer_id();
                if let Some(known) = self.counts.get_mut(&peer) {
                    *known = count;
                }
                Some(StoreEvent::Expired {
                    registration,
                    peer_registrations: count,
                })
            }
            Done::Reaped { full } => {
                self.reaping = false;
                self.next_reap = if full { now } else { now + REAP_INTERVAL };
                None
            }
        }
    }
}

impl Store for RedisStore {
    fn submit(&mut self, id: OperationId, operation: Operation, _now: Instant) {
        let peer = operation.peer();
        let command = match operation {
            Operation::Register { peer, registration } => {
                let namespace = registration.namespace.clone();
                match self.check_register(peer, registration) {
                    Ok(command) => command,
                    Err(Refusal { error, limit }) => {
                        let result = Err(error);
                        let outcome = Outcome::Registered {
                            namespace,
                            result,
                            limit,
                        };
                        return self.answer_here(id, peer, outcome);
                    }
                }
            }
            Operation::Unregister { namespace, .. } => Command::Unregister { namespace },
            Operation::RemovePeer { .. } => Command::RemovePeer,
            Operation::Discover {
                namespace,
                cookie,
                limit,
                served,
                ..
            } => match self.check_discover(served, namespace, cookie.as_ref(), limit) {
                Ok(command) => command,
                Err((namespace, error)) => {
                    let outcome = Outcome::Discovered {
                        namespace,
                        result: Err(error),
                        up_to_date: false,
                    };
                    return self.answer_here(id, peer, outcome);
                }
            },
        };
        self.send(id, peer, command);
    }

    fn poll(&mut self, cx: &mut Context<'_>, now: Instant) -> Poll<StoreEvent> {
        loop {
            let done = match self.ready.pop_front() {
                Some(done) => done,
                None => match self.done.poll_next_unpin(cx) {
                    Poll::Ready(Some(done)) => done,
                    // The worker is gone only when the runtime shuts down.
                    Poll::Ready(None) | Poll::Pending => break,
                },
            };
            if let Some(event) = self.on_done(done, now) {
                return Poll::Ready(event);
            }
        }
        if let Poll::Ready(Some(feed)) = self.changes.poll_next_unpin(cx) {
            return Poll::Ready(match feed {
                changes::Feed::Change(change) => StoreEvent::Changed(change),
                changes::Feed::Lost => StoreEvent::ChangesLost,
            });
        }
        self.waker = Some(cx.waker().clone());
        if !self.reaping && now >= self.next_reap {
            // A full queue: the next poll tries again.
            self.reaping = self.jobs.try_send(Job::Reap).is_ok();
        }
        Poll::Pending
    }

    fn poll_timeout(&self) -> Option<Instant> {
        // While a reap runs, its answer wakes the shell.
        (!self.reaping).then_some(self.next_reap)
    }

    fn available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;
    use rendezvous_discovery::{server::Limit, RecordFormat};

    use super::*;

    #[test]
    fn a_logged_redis_url_has_no_password() {
        for (url, logged) in [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            (
                "redis://:s3cret@10.0.0.1:6379/0",
                "redis://:***@10.0.0.1:6379/0",
            ),
            ("redis://app:p@ss:w@rd@h:1/2", "redis://app:***@h:1/2"),
            ("redis://app@h:1", "redis://app@h:1"),
            ("redis://h:1/0?password=x", "redis://h:1/0"),
        ] {
            assert_eq!(without_password(url), logged, "{url}");
        }
    }

    fn settings() -> Settings {
        Settings {
            min_ttl: 1,
            max_ttl: 7200,
            max_registrations_per_peer: 10,
            max_registrations: 100,
            max_bytes: 1 << 20,
            max_record_size: 8192,
            max_addresses_per_record: 64,
            default_page: 100,
            max_page: 1000,
            max_message_size: 1 << 20,
        }
    }

    fn register(envelope: &SignedRecord, namespace: &str) -> UnverifiedRegistration {
        UnverifiedRegistration {
            namespace: Namespace::new(namespace.to_owned()).unwrap(),
            envelope: envelope.envelope_bytes().to_vec(),
            ttl: Some(60),
        }
    }

    fn record(key: &Keypair, port: u16) -> SignedRecord {
        let address = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
        SignedRecord::new(key, vec![address], RecordFormat::Standard).unwrap()
    }

    #[tokio::test]
    async fn a_peer_s_last_verified_record_is_kept_within_its_bounds_and_forgotten_with_the_peer() {
        // Nothing listens on port 1: the store connects lazily and this test never sends.
        let mut store = RedisStore::new("redis://127.0.0.1:1/0", settings()).unwrap();
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let first = record(&key, 1000);

        let checked = store.check_register(peer, register(&first, "a")).unwrap();
        assert!(matches!(checked, Command::Register { record, .. } if record == first));
        assert_eq!(store.verified.bytes(), first.envelope_bytes().len());
        // The same envelope in another namespace is taken as verified: nothing new is kept.
        store.check_register(peer, register(&first, "b")).unwrap();
        assert_eq!(store.verified.len(), 1);
        assert_eq!(store.verified.bytes(), first.envelope_bytes().len());

        // Another peer cannot pass off this peer's verified envelope as its own.
        let other = Keypair::generate_ed25519().public().to_peer_id();
        let refused = store
            .check_register(other, register(&first, "a"))
            .unwrap_err();
        assert_eq!(refused.error.code, ErrorCode::NotAuthorized);

        // A new record replaces the old one; forgetting the peer frees its bytes.
        let second = record(&key, 2000);
        store.check_register(peer, register(&second, "a")).unwrap();
        assert_eq!(store.verified.len(), 1);
        assert_eq!(store.verified.bytes(), second.envelope_bytes().len());
        store.verified.forget(&peer);
        assert_eq!((store.verified.len(), store.verified.bytes()), (0, 0));
    }

    #[tokio::test]
    async fn a_record_over_the_size_cap_is_refused_by_the_record_limit_as_the_library_refuses_it() {
        let mut store = RedisStore::new("redis://127.0.0.1:1/0", settings()).unwrap();
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let mut request = register(&record(&key, 1000), "a");
        request.envelope = vec![0; 8193];
        let refusal = store.check_register(peer, request).unwrap_err();
        assert_eq!(refusal.limit, Some(Limit::Record));
        assert_eq!(refusal.error.code, ErrorCode::InvalidSignedPeerRecord);
    }
}
