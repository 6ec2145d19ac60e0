//! The SQLite store (feature `sqlite`): registrations that survive a restart and a crash.
//!
//! The in-memory [`Registrations`] index decides everything (sequence numbers, limits, cookies,
//! formats) and answers DISCOVER at once; DISCOVER never waits on disk. Every mutation is then
//! written to an SQLite database (WAL mode) by one writer thread that commits in groups:
//! many REGISTERs, UNREGISTERs and disconnect removals in one transaction, at most
//! [`MAX_COMMIT_BATCH`] of them, and no write waits more than [`MAX_COMMIT_WAIT`] for its
//! group to start. A REGISTER is answered OK only after its group committed; with
//! [`SyncMode::Full`] (the default) that commit was fsync'd, so an acknowledged registration
//! survives a crash of the process, the OS or the power.
//!
//! # What a crash can lose
//!
//! - [`SyncMode::Full`]: nothing acknowledged. A REGISTER that was not answered yet may or may
//!   not be there after the restart (the client did not get OK, and retries). An UNREGISTER or a
//!   disconnect removal not yet committed comes back after the restart, until its TTL ends or
//!   the peer connects and leaves again. A registration is visible to DISCOVER as soon as it is
//!   accepted, before its commit: a crash in between may take back a registration that was
//!   discovered but never acknowledged.
//! - [`SyncMode::Normal`]: commits are written to the WAL but not fsync'd (SQLite fsyncs at
//!   checkpoints, by default every 1000 pages). A crash of the process loses nothing (the
//!   operating system holds the written bytes); a crash of the OS or a power loss can lose the
//!   commits since the last checkpoint: at most about 4 MiB of WAL, some thousands of
//!   registrations. In exchange a commit costs no fsync.
//!
//! # Restart
//!
//! Opening the store loads every row whose TTL has not run out, with its sequence number and
//! its remaining TTL by the wall clock (the time the server was down counts). The cookie
//! counter continues above every sequence number used before: each commit also stores the
//! highest number in it, and at most [`MAX_IN_FLIGHT`] REGISTERs are ever accepted and not yet
//! committed, so the counter starts at that stored number plus [`MAX_IN_FLIGHT`] (or at the
//! wall clock in microseconds, if higher). A cookie from before the restart thus pages on with
//! no duplicate and no gap, and a cookie beyond the new counter is still refused. Expired rows
//! are deleted by the writer in batches of [`EXPIRY_BATCH`], each its own short transaction,
//! never in one long one.
//!
//! # Errors
//!
//! A database that cannot be opened, is not a database, is corrupt, or has a schema from a
//! newer version is refused with an [`OpenError`] naming the file; it is never replaced. The
//! store holds an exclusive lock on the file while open: a second server on the same file gets
//! [`OpenError::Locked`]. A commit that fails (a full or failing disk) stops the writer: the
//! REGISTERs waiting for it and every later one are answered `E_INTERNAL_ERROR`, DISCOVER goes
//! on from memory, and the error is logged; restart the server once the disk is fixed.

mod schema;
mod writer;

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    sync::{
        atomic::Ordering,
        mpsc::{sync_channel, Receiver, SyncSender, TrySendError},
        Arc,
    },
    task::{Context, Poll},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{
    memory::{apply, poll_expired, wall_clock_micros},
    Local, Operation, OperationId, Outcome, Store, StoreEvent, MAX_IN_FLIGHT,
};
use crate::codec::{ErrorCode, ErrorResponse, Namespace};
use crate::server::{
    rules::{self, Refusal},
    Config, Registrations,
};
use libp2p::PeerId;
use writer::{Numbered, Report, Shared, Write};

pub use schema::SCHEMA_VERSION;

/// Writes in one transaction, at most. A group this large spreads one commit (and its fsync)
/// over many requests; a bound keeps each transaction, and the time a request waits behind it,
/// short.
pub const MAX_COMMIT_BATCH: usize = 1024;

/// The longest the writer waits for more writes after the first of a group before it commits.
/// Each commit has a fixed cost (its WAL frames, and with `--sync full` an fsync), so under
/// load a longer wait makes larger groups and less work per REGISTER; a lone REGISTER is
/// answered at most this much later (a REGISTER is made once per TTL, so a few milliseconds do
/// not matter to a client).
pub const MAX_COMMIT_WAIT: Duration = Duration::from_millis(4);

/// SQLite's page cache, in KiB (its default is 2 MiB). A registration's writes touch pages all
/// over the primary-key index; with the default, most of them are read again from the
/// operating system on every commit. 64 MiB holds the whole database up to about 150,000
/// registrations and the upper levels of the indexes far beyond. Memory on top of the store's
/// byte budget.
pub const PAGE_CACHE_KIB: i64 = 64 * 1024;

/// Expired rows deleted in one transaction, at most: deleting a million rows at once would hold
/// the writer (and every REGISTER behind it) for seconds.
pub const EXPIRY_BATCH: usize = 1000;

/// How often the writer looks for expired rows when the last look found fewer than
/// [`EXPIRY_BATCH`]. The in-memory index drops them at their deadline; on disk they only cost
/// space until then, and start-up skips them.
pub const EXPIRY_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Writes queued for the writer thread in its channel; more wait in the store (bounded by the
/// registrations they remove and [`MAX_IN_FLIGHT`]).
const WRITE_CHANNEL: usize = 2 * MAX_COMMIT_BATCH;

/// How a commit reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// fsync before a commit counts (SQLite `synchronous = FULL`): nothing acknowledged is
    /// lost, even on power loss.
    #[default]
    Full,
    /// No fsync per commit (SQLite `synchronous = NORMAL` in WAL mode): a process crash loses
    /// nothing, an OS crash or power loss can lose the commits since the last checkpoint (see
    /// the [module docs](self)).
    Normal,
}

impl SyncMode {
    fn pragma(self) -> &'static str {
        match self {
            SyncMode::Full => "FULL",
            SyncMode::Normal => "NORMAL",
        }
    }
}

/// Why [`SqliteStore::open`] refused a database. Each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process (a second server) holds the database.
    #[error(
        "{} is in use by another rendezvous server (the database is locked); stop that server \
         or use another data directory",
        path.display()
    )]
    Locked {
        /// The database file.
        path: PathBuf,
    },
    /// The file is not an SQLite database, or is damaged.
    #[error(
        "{} is not a readable rendezvous database ({detail}); restore it from a backup, or move \
         it away to start with no registrations",
        path.display()
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// The file could not be opened or read (permissions, a missing directory, a full disk).
    #[error(
        "cannot open the database {} ({detail}); check that the directory exists and is \
         writable by this user",
        path.display()
    )]
    Unreadable {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The database was written by a newer version of this server.
    #[error(
        "{} has schema version {found}; this server knows versions up to {supported}; run a \
         newer server, or move the file away to start with no registrations",
        path.display()
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// The version found.
        found: i64,
        /// The highest version this build knows.
        supported: i64,
    },
    /// The writer thread could not be started.
    #[error("cannot start the SQLite writer thread: {0}")]
    Thread(std::io::Error),
}

impl OpenError {
    /// The database file concerned, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            OpenError::Locked { path }
            | OpenError::Corrupt { path, .. }
            | OpenError::Unreadable { path, .. }
            | OpenError::NewerSchema { path, .. } => Some(path),
            OpenError::Thread(_) => None,
        }
    }
}

/// Registrations in memory and in an SQLite database. See the [module docs](self).
pub struct SqliteStore {
    index: Registrations,
    path: PathBuf,
    writes: Option<SyncSender<Numbered>>,
    /// Writes that did not fit the channel yet, in order.
    overflow: VecDeque<Numbered>,
    reports: Receiver<Report>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// The number of the latest write sent.
    last_write: u64,
    /// Completions that need no commit.
    ready: VecDeque<StoreEvent>,
    /// REGISTER completions waiting for the commit of their write, in write order.
    waiting: VecDeque<(u64, StoreEvent)>,
    /// Why the writer stopped, once the store has seen it.
    failed: Option<String>,
    restored: usize,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("registrations", &self.index.len())
            .field("waiting", &self.waiting.len())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (or creates) the database at `path` with the limits of `config`, loads the
    /// registrations whose TTL has not run out, and starts the writer thread. Holds the file's
    /// lock until dropped.
    pub fn open(path: &Path, config: Config, sync: SyncMode) -> Result<Self, OpenError> {
        let now = Instant::now();
        let db = schema::open(path, sync)?;
        let err = |e| schema::open_error(path, e);
        let stored = schema::stored_counter(&db).map_err(err)?;
        let start = stored
            .saturating_add(MAX_IN_FLIGHT as u64)
            .max(wall_clock_micros());
        // Durable before the first cookie with it goes out.
        db.execute(schema::RAISE_COUNTER, [start as i64])
            .map_err(err)?;
        let mut index = Registrations::new(config, start);
        let loaded = schema::load(&db, &mut index, now).map_err(|detail| OpenError::Corrupt {
            path: path.to_owned(),
            detail,
        })?;
        let (writes, writes_rx) = sync_channel(WRITE_CHANNEL);
        let (reports_tx, reports) = sync_channel(writer::MAX_UNREAD_REPORTS);
        let shared = Arc::new(Shared::default());
        let thread = std::thread::Builder::new()
            .name("rendezvous-sqlite".into())
            .spawn({
                let shared = shared.clone();
                move || writer::run(db, writes_rx, reports_tx, &shared)
            })
            .map_err(OpenError::Thread)?;
        tracing::debug!(path = %path.display(), restored = loaded.restored, "SQLite store open");
        Ok(Self {
            index,
            path: path.to_owned(),
            writes: Some(writes),
            overflow: VecDeque::new(),
            reports,
            shared,
            thread: Some(thread),
            last_write: 0,
            ready: VecDeque::new(),
            waiting: VecDeque::new(),
            failed: None,
            restored: loaded.restored,
        })
    }

    /// Registrations loaded from the database when it was opened.
    pub fn restored(&self) -> usize {
        self.restored
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The in-memory index, for the tests.
    #[cfg(test)]
    fn index(&self) -> &Registrations {
        &self.index
    }

    fn write(&mut self, write: Write) -> u64 {
        self.last_write += 1;
        self.overflow.push_back(Numbered {
            number: self.last_write,
            write,
        });
        self.flush();
        self.last_write
    }

    /// Moves queued writes into the writer's channel while it has room.
    fn flush(&mut self) {
        let Some(writes) = &self.writes else {
            return;
        };
        while let Some(write) = self.overflow.pop_front() {
            match writes.try_send(write) {
                Ok(()) => {}
                Err(TrySendError::Full(write)) => {
                    self.overflow.push_front(write);
                    return;
                }
                // The writer stopped; `poll` reports why.
                Err(TrySendError::Disconnected(_)) => {
                    self.overflow.clear();
                    return;
                }
            }
        }
    }

    fn failure(&self, text: &str) -> ErrorResponse {
        ErrorResponse::new(
            ErrorCode::InternalError,
            format!("the server cannot store registrations now ({text}); try another server"),
        )
    }

    /// Takes in a failure of the writer: the REGISTERs waiting for a commit are refused and
    /// taken out of the index.
    fn on_failed(&mut self, error: String) {
        let response = self.failure(&error);
        for (_, mut event) in std::mem::take(&mut self.waiting) {
            if let StoreEvent::Completed {
                peer,
                outcome:
                    Outcome::Registered {
                        namespace, result, ..
                    },
                peer_registrations,
                ..
            } = &mut event
            {
                if result.is_ok() {
                    self.index.unregister(*peer, namespace);
                    *peer_registrations = self.index.count_of(peer);
                    *result = Err(response.clone());
                }
            }
            self.ready.push_back(event);
        }
        self.failed = Some(error);
    }
}

impl SqliteStore {
    /// The refusal of a REGISTER the store cannot take now: the writer failed, or
    /// [`MAX_IN_FLIGHT`] wait for their commit.
    fn refusal(&self, operation: &Operation) -> Option<(Namespace, Refusal)> {
        let Operation::Register { registration, .. } = operation else {
            return None;
        };
        let refusal = if let Some(error) = &self.failed {
            self.failure(error).into()
        } else if self.waiting.len() >= MAX_IN_FLIGHT {
            // The shell keeps to this bound; holding to it here too keeps the counter promise
            // of the module docs whoever submits.
            rules::store_busy(MAX_IN_FLIGHT)
        } else {
            return None;
        };
        Some((registration.namespace.clone(), refusal))
    }

    /// The write that makes `outcome` of `peer` durable, if it changed anything.
    fn write_for(&self, peer: PeerId, outcome: &Outcome) -> Option<Write> {
        match outcome {
            Outcome::Registered {
                namespace,
                result: Ok(registration),
                ..
            } => Some(Write::Put {
                seq: self.index.counter(),
                namespace: namespace.clone(),
                record: registration.record.clone(),
                ttl: registration.ttl,
                expires_at: schema::now_millis()
                    .saturating_add((registration.ttl as i64).saturating_mul(1000)),
            }),
            Outcome::Unregistered {
                namespace,
                removed: Some(_),
            } => Some(Write::Delete {
                peer,
                namespace: namespace.clone(),
            }),
            Outcome::PeerRemoved { removed } if !removed.is_empty() => {
                Some(Write::DeletePeer { peer })
            }
            _ => None,
        }
    }
}

impl Store for SqliteStore {
    fn submit(&mut self, id: OperationId, operation: Operation, now: Instant) {
        let peer = operation.peer();
        if let Some((namespace, Refusal { error, limit })) = self.refusal(&operation) {
            self.ready.push_back(StoreEvent::Completed {
                id,
                peer,
                outcome: Outcome::Registered {
                    namespace,
                    result: Err(error),
                    limit,
                },
                peer_registrations: self.index.count_of(&peer),
            });
            self.shared.waker.wake();
            return;
        }
        let (outcome, peer_registrations, change) = apply(&mut self.index, operation, now);
        // Subscribers hear of a change as the index makes it, as DISCOVER sees it.
        self.ready.extend(change.map(StoreEvent::Changed));
        let write = self.write_for(peer, &outcome);
        let event = StoreEvent::Completed {
            id,
            peer,
            outcome,
            peer_registrations,
        };
        match write {
            // After a failure, removals stay in memory only (logged once, when it failed).
            Some(_) if self.failed.is_some() => self.ready.push_back(event),
            Some(write @ Write::Put { .. }) => {
                let number = self.write(write);
                self.waiting.push_back((number, event));
            }
            // UNREGISTER and removals have no answer to hold; their write follows in order.
            Some(write) => {
                self.write(write);
                self.ready.push_back(event);
            }
            None => self.ready.push_back(event),
        }
        self.shared.waker.wake();
    }

    fn poll(&mut self, cx: &mut Context<'_>, now: Instant) -> Poll<StoreEvent> {
        self.shared.waker.register(cx.waker());
        self.flush();
        if let Some(event) = self.ready.pop_front() {
            return Poll::Ready(event);
        }
        let committed = self.shared.committed.load(Ordering::Acquire);
        if self.waiting.front().is_some_and(|(n, _)| *n <= committed) {
            let (_, event) = self.waiting.pop_front().expect("front exists");
            return Poll::Ready(event);
        }
        if self.failed.is_none() {
            let failed = self
                .shared
                .failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(error) = failed {
                self.on_failed(error);
                if let Some(event) = self.ready.pop_front() {
                    return Poll::Ready(event);
                }
            }
        }
        if let Ok(report) = self.reports.try_recv() {
            return Poll::Ready(StoreEvent::Committed {
                operations: report.operations,
                latency: report.latency,
            });
        }
        if let Some(event) = poll_expired(&mut self.index, now) {
            return Poll::Ready(event);
        }
        Poll::Pending
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.index.poll_timeout()
    }

    fn local(&self) -> Option<&dyn Local> {
        Some(&self.index)
    }
}

impl Drop for SqliteStore {
    /// Hands the queued writes to the writer, lets it commit them, and waits for it to close
    /// the database (and release its lock).
    fn drop(&mut self) {
        if let Some(writes) = self.writes.take() {
            for write in self.overflow.drain(..) {
                if writes.send(write).is_err() {
                    break;
                }
            }
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests;
