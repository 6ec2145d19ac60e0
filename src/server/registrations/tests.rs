//! Tests of the pure store: given/when/then in virtual time.

use std::{
    collections::HashSet,
    sync::OnceLock,
    time::{Duration, Instant},
};

use libp2p::identity::Keypair;
use proptest::prelude::*;

use super::*;
use crate::{
    codec::{ErrorCode, RecordFormat},
    server::ServedFormats,
};

mod budgets;
mod paging;

const START: u64 = 1_000;
const HOUR: u64 = 3600;

fn key(i: u16) -> Keypair {
    let mut seed = [7u8; 32];
    seed[..2].copy_from_slice(&i.to_be_bytes());
    Keypair::ed25519_from_bytes(seed).unwrap()
}

/// Signed records of peers 0..64 in both formats, signed once for all tests.
fn record(i: u16, format: RecordFormat) -> SignedRecord {
    static RECORDS: OnceLock<Vec<(SignedRecord, SignedRecord)>> = OnceLock::new();
    let records = RECORDS.get_or_init(|| {
        (0..64)
            .map(|i| {
                let addrs = vec![format!("/ip4/10.0.0.{i}/tcp/4001").parse().unwrap()];
                (
                    SignedRecord::new(&key(i), addrs.clone(), RecordFormat::Standard).unwrap(),
                    SignedRecord::new(&key(i), addrs, RecordFormat::Legacy).unwrap(),
                )
            })
            .collect()
    });
    let (standard, legacy) = &records[usize::from(i)];
    match format {
        RecordFormat::Standard => standard.clone(),
        RecordFormat::Legacy => legacy.clone(),
        RecordFormat::PeerInfo => legacy.to_peer_info(),
    }
}

fn peer(i: u16) -> PeerId {
    record(i, RecordFormat::Legacy).peer_id()
}

fn ns(name: &str) -> Namespace {
    Namespace::new(name).unwrap()
}

fn new_reg(i: u16, namespace: &str, ttl: Option<Ttl>) -> NewRegistration {
    NewRegistration {
        namespace: ns(namespace),
        record: record(i, RecordFormat::Legacy),
        ttl,
    }
}

fn store() -> Registrations {
    Registrations::new(Config::default(), START)
}

fn code(result: Result<impl std::fmt::Debug, ErrorResponse>) -> ErrorCode {
    result.unwrap_err().code
}

/// Pages through `namespace` with `limit` until a page comes back empty; returns every
/// (peer, namespace) seen, in order.
fn page_all(
    store: &Registrations,
    asker: ServedFormats,
    namespace: Option<&Namespace>,
    limit: u64,
    now: Instant,
) -> Vec<(PeerId, Namespace)> {
    let mut seen = Vec::new();
    let mut cookie = None;
    loop {
        let (page, next) = store
            .discover(asker, namespace, cookie.as_ref(), Some(limit), now)
            .unwrap();
        assert!(page.len() as u64 <= limit);
        if page.is_empty() {
            return seen;
        }
        seen.extend(
            page.iter()
                .map(|r| (r.record.peer_id(), r.namespace.clone())),
        );
        cookie = Some(next);
    }
}

#[test]
fn given_a_valid_register_then_it_is_stored_with_the_granted_ttl() {
    let mut store = store();
    let now = Instant::now();
    assert_eq!(
        store.register(peer(1), new_reg(1, "a", None), now),
        Ok(crate::DEFAULT_TTL)
    );
    assert_eq!(
        store.register(peer(1), new_reg(1, "b", Some(3 * HOUR)), now),
        Ok(3 * HOUR)
    );
    assert_eq!(store.len(), 2);
    assert_eq!(store.namespace_count(), 2);
    let of_peer = store.registrations_of(&peer(1), now);
    assert_eq!(of_peer.len(), 2);
    assert_eq!(of_peer[1].ttl, 3 * HOUR);
    assert_eq!(store.registrations_in(&ns("a"), now).len(), 1);
}

#[test]
fn given_a_record_of_another_peer_then_register_is_not_authorized_and_nothing_changes() {
    let mut store = store();
    let result = store.register(peer(2), new_reg(1, "a", None), Instant::now());
    let error = result.unwrap_err();
    assert_eq!(error.code, ErrorCode::NotAuthorized);
    assert!(
        error.text.contains("can only register itself"),
        "{}",
        error.text
    );
    assert!(store.is_empty());
}

#[test]
fn given_a_ttl_out_of_bounds_then_register_is_invalid_ttl() {
    let mut store = store();
    let now = Instant::now();
    let low = store
        .register(peer(1), new_reg(1, "a", Some(60)), now)
        .unwrap_err();
    assert_eq!(low.code, ErrorCode::InvalidTtl);
    assert!(low.text.contains("expected 7200..=259200"), "{}", low.text);
    let high = store.register(peer(1), new_reg(1, "a", Some(crate::MAX_TTL + 1)), now);
    assert_eq!(code(high), ErrorCode::InvalidTtl);
    assert!(store.is_empty());
    // An operator may lower the minimum.
    let mut store = Registrations::new(Config::default().with_min_ttl(10), START);
    assert_eq!(
        store.register(peer(1), new_reg(1, "a", Some(60)), now),
        Ok(60)
    );
}

#[test]
fn given_a_peer_at_its_limit_then_new_namespaces_are_refused_but_refreshes_pass() {
    let config = Config::default().with_max_registrations_per_peer(2);
    let mut store = Registrations::new(config, START);
    let now = Instant::now();
    store.register(peer(1), new_reg(1, "a", None), now).unwrap();
    store.register(peer(1), new_reg(1, "b", None), now).unwrap();
    let error = store
        .register(peer(1), new_reg(1, "c", None), now)
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::NotAuthorized);
    assert!(
        error.text.contains("already has 2 registrations"),
        "{}",
        error.text
    );
    assert!(store.register(peer(1), new_reg(1, "a", None), now).is_ok());
    assert!(store.register(peer(2), new_reg(2, "c", None), now).is_ok());
    assert_eq!(store.len(), 3);
}

#[test]
fn given_a_full_server_then_new_registrations_are_unavailable_but_refreshes_pass() {
    let mut store = Registrations::new(Config::default().with_max_registrations(2), START);
    let now = Instant::now();
    store.register(peer(1), new_reg(1, "a", None), now).unwrap();
    store.register(peer(2), new_reg(2, "a", None), now).unwrap();
    let error = store
        .register(peer(3), new_reg(3, "a", None), now)
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert!(error.text.contains("full"), "{}", error.text);
    assert_eq!(
        store.register(peer(2), new_reg(2, "a", Some(3 * HOUR)), now),
        Ok(3 * HOUR)
    );
    assert_eq!(store.len(), 2);
}

#[test]
fn given_a_refresh_then_the_old_entry_is_gone_everywhere_and_never_expires() {
    let mut store = store();
    let t0 = Instant::now();
    store
        .register(peer(1), new_reg(1, "a", Some(2 * HOUR)), t0)
        .unwrap();
    store
        .register(peer(2), new_reg(2, "a", Some(2 * HOUR)), t0)
        .unwrap();
    let (_, cookie) = store
        .discover(ServedFormats::All, Some(&ns("a")), None, None, t0)
        .unwrap();
    let t1 = t0 + Duration::from_secs(HOUR);
    store
        .register(peer(1), new_reg(1, "a", Some(2 * HOUR)), t1)
        .unwrap();
    assert_eq!(store.len(), 2);
    // The refresh shows up again after the old cookie, once.
    let (page, _) = store
        .discover(ServedFormats::All, Some(&ns("a")), Some(&cookie), None, t1)
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].record.peer_id(), peer(1));
    assert_eq!(page[0].ttl, 2 * HOUR);
    // A fresh pager sees each registration once.
    assert_eq!(page_all(&store, ServedFormats::All, None, 1, t1).len(), 2);
    // The old deadline does not fire.
    let t2 = t0 + Duration::from_secs(2 * HOUR);
    assert_eq!(
        store.poll_expired(t2).map(|r| r.record.peer_id()),
        Some(peer(2))
    );
    assert_eq!(store.poll_expired(t2), None);
    assert_eq!(
        store.poll_timeout(),
        Some(t1 + Duration::from_secs(2 * HOUR))
    );
    assert_eq!(store.len(), 1);
}

#[test]
fn given_registrations_when_time_passes_then_they_expire_in_deadline_order() {
    let mut store = Registrations::new(Config::default().with_min_ttl(1), START);
    let t0 = Instant::now();
    assert_eq!(store.poll_timeout(), None);
    store
        .register(peer(1), new_reg(1, "a", Some(30)), t0)
        .unwrap();
    store
        .register(peer(2), new_reg(2, "b", Some(10)), t0)
        .unwrap();
    store
        .register(peer(3), new_reg(3, "a", Some(20)), t0)
        .unwrap();
    assert_eq!(store.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    assert_eq!(store.poll_expired(t0 + Duration::from_secs(9)), None);
    let t = t0 + Duration::from_secs(25);
    let expired: Vec<_> = std::iter::from_fn(|| store.poll_expired(t))
        .map(|r| (r.record.peer_id(), r.ttl))
        .collect();
    assert_eq!(expired, vec![(peer(2), 10), (peer(3), 20)]);
    assert_eq!(store.namespace_count(), 1);
    assert_eq!(store.registrations_in(&ns("a"), t)[0].ttl, 5);
    // Remaining TTLs are what DISCOVER reports.
    let (page, _) = store
        .discover(ServedFormats::All, None, None, None, t)
        .unwrap();
    assert_eq!(page[0].ttl, 5);
}

#[test]
fn given_an_expired_but_uncollected_registration_then_discover_skips_it() {
    let mut store = Registrations::new(Config::default().with_min_ttl(1), START);
    let t0 = Instant::now();
    store
        .register(peer(1), new_reg(1, "a", Some(10)), t0)
        .unwrap();
    let (page, _) = store
        .discover(
            ServedFormats::All,
            None,
            None,
            None,
            t0 + Duration::from_secs(10),
        )
        .unwrap();
    assert!(page.is_empty());
}

#[test]
fn given_unregister_then_the_registration_is_gone_and_unknown_namespaces_are_a_no_op() {
    let mut store = store();
    let now = Instant::now();
    store.register(peer(1), new_reg(1, "a", None), now).unwrap();
    assert_eq!(store.unregister(peer(1), &ns("b")), None);
    assert_eq!(store.unregister(peer(2), &ns("a")), None);
    assert_eq!(
        store.unregister(peer(1), &ns("a")).unwrap().namespace,
        ns("a")
    );
    assert!(store.is_empty());
    assert_eq!(store.poll_timeout(), None);
    assert_eq!(store.namespace_count(), 0);
}

#[test]
fn given_remove_peer_then_all_its_registrations_go_and_others_stay() {
    let mut store = store();
    let now = Instant::now();
    for namespace in ["a", "b", "c"] {
        store
            .register(peer(1), new_reg(1, namespace, None), now)
            .unwrap();
    }
    store.register(peer(2), new_reg(2, "a", None), now).unwrap();
    assert_eq!(store.remove_peer(&peer(1)).len(), 3);
    assert_eq!(store.remove_peer(&peer(1)).len(), 0);
    assert_eq!(store.len(), 1);
    assert_eq!(store.count_of(&peer(1)), 0);
    assert_eq!(
        page_all(&store, ServedFormats::All, None, 10, now),
        vec![(peer(2), ns("a"))]
    );
}

/// Found by the `store` fuzz target (fuzz/seeds/store/crash-invalid-cookie-all-formats): a
/// counter started in the mark bits gave out sequence numbers that read back as marked
/// cookies, so paging refused its own cookies.
#[test]
fn given_a_start_above_the_sequence_space_then_numbers_stay_in_it_and_paging_works() {
    let mut store = Registrations::new(Config::default(), u64::MAX);
    let now = Instant::now();
    assert_eq!(store.counter(), cookie::MAX_SEQUENCE);
    assert_eq!(
        code(store.register(peer(1), new_reg(1, "a", None), now)),
        ErrorCode::Unavailable
    );
    assert!(store.is_empty());

    let mut store = Registrations::new(Config::default(), cookie::MAX_SEQUENCE - 2);
    for i in 1..=2 {
        store.register(peer(i), new_reg(i, "a", None), now).unwrap();
    }
    assert_eq!(store.counter(), cookie::MAX_SEQUENCE);
    assert_eq!(
        code(store.register(peer(3), new_reg(3, "a", None), now)),
        ErrorCode::Unavailable
    );
    let seen = page_all(&store, ServedFormats::All, None, 1, now);
    assert_eq!(seen, vec![(peer(1), ns("a")), (peer(2), ns("a"))]);
}
