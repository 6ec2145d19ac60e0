//! The SQLite store on a temporary directory: restart, TTLs, cookie continuity, expiry, the lock
//! and the refusals of bad files.

use std::{
    sync::OnceLock,
    task::Poll,
    time::{Duration, Instant},
};

use futures::{future::Either, FutureExt};
use libp2p::{identity::Keypair, PeerId};

use super::*;
use crate::codec::{
    Cookie, Namespace, RecordFormat, Registration, SignedRecord, Ttl, UnverifiedRegistration,
};

const HOUR: Ttl = 3600;

fn key(i: u8) -> Keypair {
    Keypair::ed25519_from_bytes([i; 32]).unwrap()
}

fn record(i: u8) -> SignedRecord {
    static RECORDS: OnceLock<Vec<SignedRecord>> = OnceLock::new();
    RECORDS.get_or_init(|| {
        (0..16)
            .map(|i| {
                let addrs = vec![format!("/ip4/10.0.0.{i}/tcp/4001").parse().unwrap()];
                let format = if i % 2 == 0 {
                    RecordFormat::Standard
                } else {
                    RecordFormat::Legacy
                };
                SignedRecord::new(&key(i), addrs, format).unwrap()
            })
            .collect()
    })[i as usize]
        .clone()
}

fn peer(i: u8) -> PeerId {
    record(i).peer_id()
}

fn ns(s: &str) -> Namespace {
    Namespace::new(s).unwrap()
}

fn config() -> Config {
    Config::default().with_min_ttl(1)
}

struct Db {
    dir: tempfile::TempDir,
}

impl Db {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("registrations.sqlite")
    }

    fn open(&self) -> SqliteStore {
        SqliteStore::open(&self.path(), config(), SyncMode::Full).unwrap()
    }

    /// Runs `sql` on the closed database, as an operator (or a crash) could leave it.
    fn edit(&self, sql: &str) {
        let db = rusqlite::Connection::open(self.path()).unwrap();
        db.execute_batch(sql).unwrap();
    }

    fn rows(&self) -> i64 {
        let db = rusqlite::Connection::open(self.path()).unwrap();
        db.query_row("SELECT COUNT(*) FROM registrations", [], |r| r.get(0))
            .unwrap()
    }
}

/// The next event other than a commit report or a change; a hang guard of 20 s.
fn next(store: &mut SqliteStore) -> StoreEvent {
    let event = futures::future::poll_fn(|cx| loop {
        match store.poll(cx, Instant::now()) {
            // Commits and the change feed are not what these tests wait for.
            Poll::Ready(
                StoreEvent::Committed { .. } | StoreEvent::Changed(_) | StoreEvent::ChangesLost,
            ) => continue,
            other => return other,
        }
    });
    let guard = futures_timer::Delay::new(Duration::from_secs(20));
    match futures::executor::block_on(futures::future::select(event.boxed_local(), guard)) {
        Either::Left((event, _)) => event,
        Either::Right(_) => panic!("the store did not answer within 20 s"),
    }
}

fn run(store: &mut SqliteStore, operation: Operation) -> Outcome {
    store.submit(OperationId(0), operation, Instant::now());
    match next(store) {
        StoreEvent::Completed { outcome, .. } => outcome,
        other => panic!("expected a completion, got {other:?}"),
    }
}

fn register(store: &mut SqliteStore, i: u8, namespace: &str, ttl: Ttl) -> Registration {
    let outcome = run(
        store,
        Operation::Register {
            peer: peer(i),
            registration: UnverifiedRegistration {
                namespace: ns(namespace),
                envelope: record(i).envelope_bytes().to_vec(),
                ttl: Some(ttl),
            },
        },
    );
    match outcome {
        Outcome::Registered { result, .. } => result.unwrap(),
        other => panic!("{other:?}"),
    }
}

fn discover(
    store: &mut SqliteStore,
    cookie: Option<Cookie>,
    limit: u64,
) -> Result<(Vec<(PeerId, Namespace)>, Cookie), ErrorResponse> {
    let outcome = run(
        store,
        Operation::Discover {
            peer: peer(0),
            served: crate::server::ServedFormats::All,
            namespace: None,
            cookie,
            limit: Some(limit),
        },
    );
    let Outcome::Discovered { result, .. } = outcome else {
        panic!("{outcome:?}");
    };
    result.map(|(page, cookie)| {
        let page = page
            .into_iter()
            .map(|r| (r.record.peer_id(), r.namespace))
            .collect();
        (page, cookie)
    })
}

#[test]
fn given_registrations_when_the_store_reopens_then_they_are_back_with_their_ttls_and_formats() {
    let db = Db::new();
    {
        let mut store = db.open();
        assert_eq!(store.restored(), 0);
        register(&mut store, 1, "a", HOUR);
        register(&mut store, 2, "a", 2 * HOUR);
        register(&mut store, 1, "b", HOUR);
        // A refresh replaces; an unregister and a removal delete.
        register(&mut store, 1, "a", 3 * HOUR);
        register(&mut store, 3, "c", HOUR);
        run(
            &mut store,
            Operation::Unregister {
                peer: peer(1),
                namespace: ns("b"),
            },
        );
        register(&mut store, 4, "d", HOUR);
        run(&mut store, Operation::RemovePeer { peer: peer(4) });
    }
    let store = db.open();
    assert_eq!(store.restored(), 3);
    let index = store.index();
    let now = Instant::now();
    let ttls: Vec<(PeerId, Ttl)> = index
        .registrations_in(&ns("a"), now)
        .iter()
        .map(|r| (r.record.peer_id(), r.ttl))
        .collect();
    // Oldest REGISTER first: peer 2, then peer 1's refresh. Remaining TTLs within a second.
    assert_eq!(ttls.len(), 2);
    assert_eq!(ttls[0].0, peer(2));
    assert!((2 * HOUR - 1..=2 * HOUR).contains(&ttls[0].1), "{ttls:?}");
    assert_eq!(ttls[1].0, peer(1));
    assert!((3 * HOUR - 1..=3 * HOUR).contains(&ttls[1].1), "{ttls:?}");
    assert_eq!(index.count_of(&peer(3)), 1);
    assert_eq!(index.count_of(&peer(4)), 0);
    let restored = &index.registrations_of(&peer(1), now)[0];
    assert_eq!(
        restored.record,
        record(1),
        "the record comes back byte for byte"
    );
    // The format of each peer's latest REGISTER comes back with it (it decides what it is
    // served).
    assert_eq!(
        index.registered_format(&peer(1)),
        Some(RecordFormat::Legacy)
    );
    assert_eq!(
        index.registered_format(&peer(2)),
        Some(RecordFormat::Standard)
    );
}

#[test]
fn given_a_cookie_from_before_a_restart_then_it_pages_on_with_no_duplicate_and_no_gap() {
    let db = Db::new();
    let (cookie, at_end, counter) = {
        let mut store = db.open();
        for i in 1..=4 {
            register(&mut store, i, "a", HOUR);
        }
        let (page, cookie) = discover(&mut store, None, 2).unwrap();
        assert_eq!(page.len(), 2);
        let (rest, at_end) = discover(&mut store, Some(cookie.clone()), 100).unwrap();
        assert_eq!(rest.len(), 2);
        (cookie, at_end, store.index().counter())
    };
    let mut store = db.open();
    let after = store.index().counter();
    assert!(after >= counter, "the counter never goes back");
    register(&mut store, 5, "a", HOUR);
    register(&mut store, 1, "a", HOUR); // a refresh after the restart is seen again

    let mut seen = Vec::new();
    let mut next_cookie = Some(cookie);
    loop {
        let (page, cookie) = discover(&mut store, next_cookie, 1).unwrap();
        if page.is_empty() {
            break;
        }
        seen.extend(page);
        next_cookie = Some(cookie);
    }
    assert_eq!(
        seen,
        vec![
            (peer(3), ns("a")),
            (peer(4), ns("a")),
            (peer(5), ns("a")),
            (peer(1), ns("a"))
        ]
    );
    // The cookie that had seen everything sees exactly what came after.
    let (page, _) = discover(&mut store, Some(at_end), 100).unwrap();
    assert_eq!(page, vec![(peer(5), ns("a")), (peer(1), ns("a"))]);
    // A cookie beyond every number this server used is still refused.
    let future = store.index().counter() + 1;
    let error = discover(
        &mut store,
        Some(Cookie::new(future.to_be_bytes().to_vec()).unwrap()),
        10,
    )
    .unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidCookie);
}

#[test]
fn given_the_stored_counter_then_the_next_start_is_above_it_by_the_in_flight_bound() {
    let db = Db::new();
    drop(db.open());
    // A counter far above the wall clock (as a fast server could reach) is what the next start
    // continues from.
    let high: u64 = 1 << 60;
    db.edit(&format!(
        "UPDATE meta SET value = {high} WHERE key = 'counter'"
    ));
    let store = db.open();
    assert_eq!(store.index().counter(), high + MAX_IN_FLIGHT as u64);
}

#[test]
fn given_rows_that_expired_while_down_then_they_are_not_loaded_and_are_deleted() {
    let db = Db::new();
    {
        let mut store = db.open();
        register(&mut store, 1, "gone", HOUR);
        register(&mut store, 2, "left", HOUR);
    }
    let now = schema::now_millis();
    db.edit(&format!(
        "UPDATE registrations SET expires_at = {} WHERE namespace = 'gone';
         UPDATE registrations SET expires_at = {} WHERE namespace = 'left';",
        now - 1,
        now + 5_000
    ));
    {
        let store = db.open();
        assert_eq!(store.restored(), 1);
        let left = store.index().registrations_in(&ns("left"), Instant::now());
        assert!(
            (4..=5).contains(&left[0].ttl),
            "remaining TTL {}",
            left[0].ttl
        );
        assert!(store
            .index()
            .registrations_in(&ns("gone"), Instant::now())
            .is_empty());
    }
    // The writer's first look deleted the expired row.
    assert_eq!(db.rows(), 1);
}

#[test]
fn given_many_expired_rows_then_each_delete_takes_at_most_one_batch() {
    let db = Db::new();
    drop(db.open());
    let past = schema::now_millis() - 1;
    let total = 2 * EXPIRY_BATCH + 10;
    let mut conn = schema::open(&db.path(), SyncMode::Full).unwrap();
    {
        let tx = conn.transaction().unwrap();
        for i in 0..total {
            tx.execute(
                "INSERT INTO registrations VALUES (?1, 'x', ?2, 1, ?3, 0, 0, x'', x'')",
                rusqlite::params![(i as u64).to_be_bytes().to_vec(), i as i64, past],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let deleted: Vec<usize> = (0..4).map(|_| writer::sweep(&mut conn).unwrap()).collect();
    assert_eq!(deleted, vec![EXPIRY_BATCH, EXPIRY_BATCH, 10, 0]);
}

#[test]
fn given_a_second_store_on_the_same_file_then_it_is_refused_as_locked() {
    let db = Db::new();
    let first = db.open();
    let error = SqliteStore::open(&db.path(), config(), SyncMode::Full).unwrap_err();
    assert!(matches!(error, OpenError::Locked { .. }), "{error}");
    assert!(error
        .to_string()
        .contains("in use by another rendezvous server"));
    drop(first);
    drop(db.open());
}

#[test]
fn given_a_file_that_is_not_a_database_then_open_names_it_and_leaves_it_alone() {
    let db = Db::new();
    let garbage = b"this is not an SQLite database, it is a shopping list".repeat(100);
    std::fs::write(db.path(), &garbage).unwrap();
    let error = SqliteStore::open(&db.path(), config(), SyncMode::Full).unwrap_err();
    assert!(matches!(error, OpenError::Corrupt { .. }), "{error}");
    let text = error.to_string();
    assert!(text.contains(&db.path().display().to_string()), "{text}");
    assert!(text.contains("restore it from a backup"), "{text}");
    assert_eq!(std::fs::read(db.path()).unwrap(), garbage, "never replaced");
}

#[test]
fn given_a_database_from_a_newer_version_then_open_refuses_it() {
    let db = Db::new();
    drop(db.open());
    db.edit("INSERT INTO schema_migrations VALUES (99, 0)");
    let error = SqliteStore::open(&db.path(), config(), SyncMode::Full).unwrap_err();
    assert!(
        matches!(error, OpenError::NewerSchema { found: 99, .. }),
        "{error}"
    );
}

#[test]
fn given_a_new_database_then_the_migration_table_records_the_schema_version() {
    let db = Db::new();
    drop(SqliteStore::open(&db.path(), config(), SyncMode::Normal).unwrap());
    let conn = rusqlite::Connection::open(db.path()).unwrap();
    let versions: Vec<i64> = conn
        .prepare("SELECT version FROM schema_migrations ORDER BY version")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(versions, vec![SCHEMA_VERSION]);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn given_a_group_of_registers_then_they_commit_together_and_are_answered_after() {
    let db = Db::new();
    let mut store = db.open();
    let n = 50u8;
    for i in 0..n {
        store.submit(
            OperationId(u64::from(i)),
            Operation::Register {
                peer: peer(i % 16),
                registration: UnverifiedRegistration {
                    namespace: ns(&format!("ns-{i}")),
                    envelope: record(i % 16).envelope_bytes().to_vec(),
                    ttl: None,
                },
            },
            Instant::now(),
        );
    }
    let mut completed: u64 = 0;
    let mut committed = 0;
    let mut commits = 0;
    let event = futures::future::poll_fn(|cx| loop {
        match store.poll(cx, Instant::now()) {
            Poll::Ready(StoreEvent::Completed { outcome, .. }) => {
                assert!(matches!(outcome, Outcome::Registered { result: Ok(_), .. }));
                completed += 1;
                // Every answer follows the commit that holds it.
                assert!(
                    store.shared.committed.load(Ordering::Acquire) >= completed,
                    "answered before its commit"
                );
            }
            Poll::Ready(StoreEvent::Changed(_) | StoreEvent::ChangesLost) => {}
            Poll::Ready(StoreEvent::Committed { operations, .. }) => {
                committed += operations;
                commits += 1;
            }
            Poll::Ready(StoreEvent::Expired { .. }) => unreachable!("nothing expires"),
            Poll::Pending if completed == u64::from(n) && committed == usize::from(n) => {
                return Poll::Ready(())
            }
            Poll::Pending => return Poll::Pending,
        }
    });
    let guard = futures_timer::Delay::new(Duration::from_secs(20));
    let finished = futures::executor::block_on(futures::future::select(event.boxed_local(), guard));
    assert!(matches!(finished, Either::Left(_)), "hung");
    drop(finished);
    assert!(commits <= usize::from(n));
    drop(store);
    assert_eq!(db.rows(), i64::from(n));
}
