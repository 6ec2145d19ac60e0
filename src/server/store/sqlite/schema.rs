//! The database: opening it, its schema and migrations, and loading what it holds.
//!
//! # Schema (version 1)
//!
//! ```sql
//! CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL);
//! CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
//! CREATE TABLE registrations (
//!     peer       BLOB    NOT NULL,  -- the peer id's bytes
//!     namespace  TEXT    NOT NULL,
//!     seq        INTEGER NOT NULL,  -- the cookie sequence number (u64 as its i64 bit pattern)
//!     ttl        INTEGER NOT NULL,  -- the TTL granted, in seconds
//!     expires_at INTEGER NOT NULL,  -- wall clock, milliseconds since the Unix epoch
//!     format     INTEGER NOT NULL,  -- 0 standard, 1 legacy envelope, 2 unsigned PeerInfo
//!     record_seq INTEGER NOT NULL,  -- the peer record's own sequence number
//!     addresses  BLOB    NOT NULL,  -- the record's multiaddrs, each with a u32 length prefix
//!     envelope   BLOB    NOT NULL,  -- the record's bytes exactly as the peer sent them
//!     PRIMARY KEY (peer, namespace)
//! );
//! CREATE INDEX registrations_by_expiry ON registrations (expires_at);
//! ```
//!
//! - `schema_migrations` holds one row per migration applied; a database whose highest version
//!   is above what this build knows is refused (it was written by a newer server).
//! - `meta` holds `counter`: the cookie counter as of the latest commit (see
//!   [`super::SqliteStore`] for how the counter continues after a restart).
//! - The primary key `(peer, namespace)` is the identity of a registration: a refresh replaces
//!   its row in place (`INSERT OR REPLACE`), an UNREGISTER deletes by it, and the removal of a
//!   disconnected peer deletes by its `peer` prefix. Both are the writes of every request, so
//!   they must not scan.
//! - `registrations_by_expiry` lets expired rows be deleted in bounded batches (`LIMIT`) without
//!   scanning the table. No index on `seq`: only start-up reads in that order, once, and sorts
//!   in memory (an index would cost every REGISTER a write).
//! - The record is stored both as the envelope (served as is) and as its decoded parts, so
//!   start-up rebuilds it without one signature check per row (1M checks would take most of a
//!   minute); the envelope was verified when it was registered.

use std::{
    path::Path,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use libp2p::{Multiaddr, PeerId};
use rusqlite::{params, Connection, ErrorCode as SqlCode, OpenFlags};

use super::{OpenError, SyncMode};
use crate::codec::{Namespace, RecordFormat, Registration, SignedRecord};
use crate::server::Registrations;

/// The schema version this build writes; migrations up to it are applied at open.
pub const SCHEMA_VERSION: i64 = 1;

/// The migrations, in order: `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: [&str; 1] = ["
    CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE registrations (
        peer       BLOB    NOT NULL,
        namespace  TEXT    NOT NULL,
        seq        INTEGER NOT NULL,
        ttl        INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        format     INTEGER NOT NULL,
        record_seq INTEGER NOT NULL,
        addresses  BLOB    NOT NULL,
        envelope   BLOB    NOT NULL,
        PRIMARY KEY (peer, namespace)
    );
    CREATE INDEX registrations_by_expiry ON registrations (expires_at);
"];

/// The wall clock in milliseconds since the Unix epoch.
pub(super) fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Classifies an SQLite error met while opening or reading `path`.
pub(super) fn open_error(path: &Path, error: rusqlite::Error) -> OpenError {
    let path = path.to_owned();
    match error.sqlite_error_code() {
        Some(SqlCode::DatabaseBusy | SqlCode::DatabaseLocked) => OpenError::Locked { path },
        Some(SqlCode::NotADatabase | SqlCode::DatabaseCorrupt) => OpenError::Corrupt {
            path,
            detail: error.to_string(),
        },
        _ => OpenError::Unreadable {
            path,
            detail: error.to_string(),
        },
    }
}

/// Opens (or creates) the database at `path`, takes its lock, and brings its schema to
/// [`SCHEMA_VERSION`].
pub(super) fn open(path: &Path, sync: SyncMode) -> Result<Connection, OpenError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let err = |e| open_error(path, e);
    let mut db = Connection::open_with_flags(path, flags).map_err(err)?;
    // Exclusive locking: the first read takes a lock held until the connection closes, so a
    // second server on the same file fails at once (busy timeout 0) instead of writing beside
    // this one. It also lets WAL work without shared memory.
    db.busy_timeout(std::time::Duration::ZERO).map_err(err)?;
    db.pragma_update(None, "locking_mode", "EXCLUSIVE")
        .map_err(err)?;
    // WAL: a commit appends to the log (one fsync with synchronous=FULL) instead of rewriting
    // pages in place, and readers never block the writer.
    let mode: String = db
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError::Unreadable {
            path: path.to_owned(),
            detail: format!("cannot switch to WAL journal mode (got {mode})"),
        });
    }
    db.pragma_update(None, "synchronous", sync.pragma())
        .map_err(err)?;
    // A negative cache_size is in KiB.
    db.pragma_update(None, "cache_size", -super::PAGE_CACHE_KIB)
        .map_err(err)?;
    migrate(&mut db).map_err(|e| match e {
        MigrateError::Sql(e) => open_error(path, e),
        MigrateError::Newer(found) => OpenError::NewerSchema {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        },
    })?;
    Ok(db)
}

enum MigrateError {
    Sql(rusqlite::Error),
    Newer(i64),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        MigrateError::Sql(e)
    }
}

fn migrate(db: &mut Connection) -> Result<(), MigrateError> {
    let tx = db.transaction()?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )?;
    let version: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |row| row.get(0),
    )?;
    if version > SCHEMA_VERSION {
        return Err(MigrateError::Newer(version));
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(migration)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            params![i as i64 + 1, now_millis()],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// The `counter` stored in `meta` (0 in a new database).
pub(super) fn stored_counter(db: &Connection) -> rusqlite::Result<u64> {
    let value: Option<i64> = db
        .query_row("SELECT value FROM meta WHERE key = 'counter'", [], |row| {
            row.get(0)
        })
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    Ok(value.map_or(0, |v| v as u64))
}

/// The SQL that moves the stored counter up to `?1` (never down).
pub(super) const RAISE_COUNTER: &str = "INSERT INTO meta (key, value) VALUES ('counter', ?1)
     ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)";

/// The `addresses` column of `record`.
pub(super) fn encode_addresses(addresses: &[Multiaddr]) -> Vec<u8> {
    let mut out = Vec::new();
    for address in addresses {
        let bytes = address.as_ref();
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

fn decode_addresses(mut bytes: &[u8]) -> Result<Vec<Multiaddr>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or("truncated address length")?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return Err("truncated address".into());
        }
        let (address, rest) = rest.split_at(len);
        out.push(Multiaddr::try_from(address.to_vec()).map_err(|e| e.to_string())?);
        bytes = rest;
    }
    Ok(out)
}

/// The `format` column of `format`.
pub(super) fn format_code(format: RecordFormat) -> i64 {
    match format {
        RecordFormat::Standard => 0,
        RecordFormat::Legacy => 1,
        RecordFormat::PeerInfo => 2,
    }
}

/// Registrations restored by [`load`].
pub(super) struct Loaded {
    /// Registrations whose TTL had not run out.
    pub(super) restored: usize,
}

/// Puts every registration of `db` whose TTL has not run out into `index`, with its sequence
/// number and its remaining TTL (measured by the wall clock, so the time the server was down
/// counts). Expired rows are left for the writer's bounded deletes.
pub(super) fn load(
    db: &Connection,
    index: &mut Registrations,
    now: Instant,
) -> Result<Loaded, String> {
    let wall = now_millis();
    let mut statement = db
        .prepare(
            "SELECT seq, peer, namespace, ttl, expires_at, format, record_seq, addresses,
                    envelope
             FROM registrations WHERE expires_at > ?1",
        )
        .map_err(|e| e.to_string())?;
    let mut rows = statement.query([wall]).map_err(|e| e.to_string())?;
    let mut loaded: Vec<(u64, Registration, i64)> = Vec::new();
    // One record shared by a peer's registrations in many namespaces, as it was in memory.
    let mut last: Option<SignedRecord> = None;
    while let Some(row) = rows.next().map_err(|e| e.to_string())? {
        let bad = |what: &str, e: &dyn std::fmt::Display| format!("row with bad {what}: {e}");
        let seq: i64 = row.get(0).map_err(|e| bad("seq", &e))?;
        let peer: Vec<u8> = row.get(1).map_err(|e| bad("peer", &e))?;
        let peer = PeerId::from_bytes(&peer).map_err(|e| bad("peer", &e))?;
        let namespace: String = row.get(2).map_err(|e| bad("namespace", &e))?;
        let namespace = Namespace::new(namespace).map_err(|e| bad("namespace", &e))?;
        let ttl: i64 = row.get(3).map_err(|e| bad("ttl", &e))?;
        let expires_at: i64 = row.get(4).map_err(|e| bad("expires_at", &e))?;
        let format = match row.get::<_, i64>(5).map_err(|e| bad("format", &e))? {
            0 => RecordFormat::Standard,
            1 => RecordFormat::Legacy,
            2 => RecordFormat::PeerInfo,
            other => return Err(bad("format", &other)),
        };
        let record_seq: i64 = row.get(6).map_err(|e| bad("record_seq", &e))?;
        let addresses = row
            .get_ref(7)
            .and_then(|v| v.as_blob().map_err(Into::into))
            .map_err(|e| bad("addresses", &e))?;
        let envelope = row
            .get_ref(8)
            .and_then(|v| v.as_blob().map_err(Into::into))
            .map_err(|e| bad("envelope", &e))?;
        let record = match &last {
            Some(record) if record.peer_id() == peer && record.envelope_bytes() == envelope => {
                record.clone()
            }
            _ => {
                let addresses = decode_addresses(addresses).map_err(|e| bad("addresses", &e))?;
                SignedRecord::from_verified_parts(
                    peer,
                    addresses,
                    record_seq as u64,
                    format,
                    envelope,
                )
            }
        };
        last = Some(record.clone());
        let registration = Registration {
            namespace,
            record,
            ttl: ttl.max(0) as u64,
        };
        loaded.push((seq as u64, registration, expires_at));
    }
    // In sequence order, so the latest REGISTER of each peer decides its record format.
    loaded.sort_unstable_by_key(|(seq, ..)| *seq);
    let restored = loaded.len();
    for (seq, registration, expires_at) in loaded {
        let remaining = std::time::Duration::from_millis((expires_at - wall).max(0) as u64);
        index.restore(seq, registration, now + remaining);
    }
    Ok(Loaded { restored })
}
