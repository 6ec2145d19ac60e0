//! The writer thread: takes the store's writes from a bounded channel, commits them in groups,
//! deletes expired rows in bounded batches, and tells the store how far it has committed.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError},
        Mutex,
    },
    time::{Duration, Instant},
};

use futures::task::AtomicWaker;
use libp2p::PeerId;
use rusqlite::{params, Connection};

use super::{
    schema::{encode_addresses, format_code, now_millis, RAISE_COUNTER},
    EXPIRY_BATCH, EXPIRY_SWEEP_INTERVAL, MAX_COMMIT_BATCH, MAX_COMMIT_WAIT,
};
use crate::codec::{Namespace, SignedRecord, Ttl};

/// Commit reports the store has not collected yet, at most; more are dropped (they only feed
/// statistics).
pub(super) const MAX_UNREAD_REPORTS: usize = 256;

/// One change to the database.
#[derive(Debug)]
pub(super) enum Write {
    /// A REGISTER: insert, or replace the peer's row in the namespace.
    Put {
        seq: u64,
        namespace: Namespace,
        record: SignedRecord,
        ttl: Ttl,
        /// Wall clock, milliseconds since the Unix epoch.
        expires_at: i64,
    },
    /// An UNREGISTER that removed a registration.
    Delete { peer: PeerId, namespace: Namespace },
    /// The removal of a disconnected peer's registrations.
    DeletePeer { peer: PeerId },
}

/// A write with its number: writes are numbered 1, 2, 3, … in the order the store sends them.
#[derive(Debug)]
pub(super) struct Numbered {
    pub(super) number: u64,
    pub(super) write: Write,
}

/// One group commit, for statistics.
#[derive(Debug, Clone, Copy)]
pub(super) struct Report {
    pub(super) operations: usize,
    pub(super) latency: Duration,
}

/// What the writer and the store share.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// Every write numbered at or below this is committed.
    pub(super) committed: AtomicU64,
    /// Why the writer stopped, when a commit failed; nothing is committed after it.
    pub(super) failed: Mutex<Option<String>>,
    /// Woken after each commit, and when the writer fails.
    pub(super) waker: AtomicWaker,
}

/// Runs the writer on `db` until the store drops its sender; then commits what is left.
pub(super) fn run(
    mut db: Connection,
    writes: Receiver<Numbered>,
    reports: SyncSender<Report>,
    shared: &Shared,
) {
    let mut batch: Vec<Numbered> = Vec::with_capacity(MAX_COMMIT_BATCH);
    let mut next_sweep = Instant::now();
    let mut open = true;
    while open {
        let wait = next_sweep.saturating_duration_since(Instant::now());
        match writes.recv_timeout(wait) {
            Ok(first) => {
                batch.push(first);
                open = fill(&writes, &mut batch);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => open = false,
        }
        if !batch.is_empty() {
            let started = Instant::now();
            let result = commit(&mut db, &batch);
            let last = batch.last().map_or(0, |w| w.number);
            let operations = batch.len();
            batch.clear();
            if let Err(error) = result {
                fail(shared, format!("commit failed: {error}"));
                return;
            }
            shared.committed.store(last, Ordering::Release);
            shared.waker.wake();
            let report = Report {
                operations,
                latency: started.elapsed(),
            };
            if let Err(TrySendError::Disconnected(_)) = reports.try_send(report) {
                open = false;
            }
        }
        if Instant::now() >= next_sweep {
            match sweep(&mut db) {
                // A full batch: more may be left; sweep again after the next group.
                Ok(deleted) if deleted >= EXPIRY_BATCH => {}
                Ok(_) => next_sweep = Instant::now() + EXPIRY_SWEEP_INTERVAL,
                Err(error) => {
                    fail(shared, format!("deleting expired rows failed: {error}"));
                    return;
                }
            }
        }
    }
}

/// Adds writes to `batch` until it holds [`MAX_COMMIT_BATCH`] or [`MAX_COMMIT_WAIT`] has passed
/// since the first. Returns `false` when the store has gone.
fn fill(writes: &Receiver<Numbered>, batch: &mut Vec<Numbered>) -> bool {
    let deadline = Instant::now() + MAX_COMMIT_WAIT;
    while batch.len() < MAX_COMMIT_BATCH {
        match writes.try_recv() {
            Ok(write) => batch.push(write),
            Err(TryRecvError::Disconnected) => return false,
            Err(TryRecvError::Empty) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match writes.recv_timeout(left) {
                    Ok(write) => batch.push(write),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => return false,
                }
            }
        }
    }
    true
}

fn fail(shared: &Shared, error: String) {
    tracing::error!(%error, "the SQLite store stopped writing");
    *shared.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    shared.waker.wake();
}

/// Commits `batch` in one transaction, with the highest sequence number in it.
fn commit(db: &mut Connection, batch: &[Numbered]) -> rusqlite::Result<()> {
    let tx = db.transaction()?;
    let mut highest = None;
    {
        let mut put = tx.prepare_cached(
            "INSERT OR REPLACE INTO registrations
                (peer, namespace, seq, ttl, expires_at, format, record_seq, addresses, envelope)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        let mut delete =
            tx.prepare_cached("DELETE FROM registrations WHERE peer = ?1 AND namespace = ?2")?;
        let mut delete_peer = tx.prepare_cached("DELETE FROM registrations WHERE peer = ?1")?;
        for Numbered { write, .. } in batch {
            match write {
                Write::Put {
                    seq,
                    namespace,
                    record,
                    ttl,
                    expires_at,
                } => {
                    highest = highest.max(Some(*seq));
                    put.execute(params![
                        record.peer_id().to_bytes(),
                        namespace.as_str(),
                        *seq as i64,
                        *ttl as i64,
                        expires_at,
                        format_code(record.format()),
                        record.seq() as i64,
                        encode_addresses(record.addresses()),
                        record.envelope_bytes(),
                    ])?;
                }
                Write::Delete { peer, namespace } => {
                    delete.execute(params![peer.to_bytes(), namespace.as_str()])?;
                }
                Write::DeletePeer { peer } => {
                    delete_peer.execute(params![peer.to_bytes()])?;
                }
            }
        }
        if let Some(highest) = highest {
            tx.execute(RAISE_COUNTER, params![highest as i64])?;
        }
    }
    tx.commit()
}

/// Deletes at most [`EXPIRY_BATCH`] expired rows in one short transaction; returns how many.
pub(super) fn sweep(db: &mut Connection) -> rusqlite::Result<usize> {
    db.execute(
        "DELETE FROM registrations WHERE rowid IN (
            SELECT rowid FROM registrations WHERE expires_at <= ?1 LIMIT ?2)",
        params![now_millis(), EXPIRY_BATCH as i64],
    )
}
