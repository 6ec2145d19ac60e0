//! Byte budgets, record caps, shared records, check order and arithmetic of the store.

use super::*;
use crate::server::{
    InvalidConfig, ADDRESS_OVERHEAD_BYTES, RECORD_OVERHEAD_BYTES, REGISTRATION_OVERHEAD_BYTES,
};

/// What a test compares before and after a refused request: nothing may change.
fn snapshot(store: &Registrations, now: Instant) -> (usize, usize, Vec<(PeerId, Namespace)>) {
    let all = page_all(store, ServedFormats::All, None, 1000, now);
    (store.len(), store.stored_bytes(), all)
}

fn record_with(i: u16, addresses: usize) -> SignedRecord {
    let addrs = (0..addresses)
        .map(|a| {
            format!("/ip4/10.1.{}.{}/tcp/4001", a / 256, a % 256)
                .parse()
                .unwrap()
        })
        .collect();
    SignedRecord::new(&key(i), addrs, RecordFormat::Legacy).unwrap()
}

fn unverified(namespace: &str, envelope: &[u8], ttl: Option<Ttl>) -> UnverifiedRegistration {
    UnverifiedRegistration {
        namespace: ns(namespace),
        envelope: envelope.to_vec(),
        ttl,
    }
}

fn cost(record: &SignedRecord, namespaces: &[&str]) -> usize {
    let record_bytes = RECORD_OVERHEAD_BYTES
        + record.envelope_bytes().len()
        + record
            .addresses()
            .iter()
            .map(|a| ADDRESS_OVERHEAD_BYTES + a.len())
            .sum::<usize>();
    record_bytes
        + namespaces
            .iter()
            .map(|n| REGISTRATION_OVERHEAD_BYTES + n.len())
            .sum::<usize>()
}

#[test]
fn given_registrations_then_stored_bytes_count_each_record_once_per_peer() {
    let mut store = store();
    let now = Instant::now();
    let names = ["a", "bb", "ccc", "dddd"];
    for name in names {
        store
            .register(peer(1), new_reg(1, name, None), now)
            .unwrap();
    }
    let record = record(1, RecordFormat::Legacy);
    assert_eq!(store.stored_bytes(), cost(&record, &names));
    // The four registrations share one record: the same envelope allocation.
    let held = store.registrations_of(&peer(1), now);
    let pointers: HashSet<_> = held
        .iter()
        .map(|r| r.record.envelope_bytes().as_ptr())
        .collect();
    assert_eq!(pointers.len(), 1);
    // A second record of the same peer is held (and counted) once more while registrations
    // hold it; unregistering every holder frees it.
    let other = record_with(1, 3);
    let request = NewRegistration {
        namespace: ns("e"),
        record: other.clone(),
        ttl: None,
    };
    store.register(peer(1), request, now).unwrap();
    assert_eq!(
        store.stored_bytes(),
        cost(&record, &names) + cost(&other, &["e"])
    );
    store.unregister(peer(1), &ns("e"));
    assert_eq!(store.stored_bytes(), cost(&record, &names));
    store.check_invariants().unwrap();
    store.remove_peer(&peer(1));
    assert_eq!(store.stored_bytes(), 0);
    store.check_invariants().unwrap();
}

#[test]
fn given_a_full_byte_budget_then_register_is_unavailable_naming_the_budget_and_nothing_changes() {
    let one = cost(&record(0, RecordFormat::Legacy), &["a"]);
    let config = Config::default().with_max_store_bytes(3 * one + one / 2);
    let mut store = Registrations::new(config, START);
    let now = Instant::now();
    for i in 0..3 {
        store.register(peer(i), new_reg(i, "a", None), now).unwrap();
    }
    let before = snapshot(&store, now);
    let error = store
        .register(peer(3), new_reg(3, "a", None), now)
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert!(error.text.contains("store byte budget"), "{}", error.text);
    assert!(error.text.contains("max-store-bytes"), "{}", error.text);
    // The same refusal before the envelope is decoded.
    let envelope = record(3, RecordFormat::Legacy).envelope_bytes().to_vec();
    let error = store
        .register_unverified(peer(3), unverified("a", &envelope, None), now)
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert!(error.text.contains("max-store-bytes"), "{}", error.text);
    assert_eq!(snapshot(&store, now), before);
    store.check_invariants().unwrap();
}

#[test]
fn given_a_full_byte_budget_then_a_refresh_that_does_not_grow_the_store_succeeds() {
    let small = record(0, RecordFormat::Legacy);
    let big = record_with(0, 20);
    let one = cost(&small, &["a"]);
    let config = Config::default().with_max_store_bytes(2 * one + 10);
    let mut store = Registrations::new(config, START);
    let t0 = Instant::now();
    store.register(peer(0), new_reg(0, "a", None), t0).unwrap();
    store.register(peer(1), new_reg(1, "a", None), t0).unwrap();
    // Same record, same size: a refresh passes and gets a new deadline.
    let t1 = t0 + Duration::from_secs(60);
    assert_eq!(
        store.register(peer(0), new_reg(0, "a", None), t1),
        Ok(crate::DEFAULT_TTL)
    );
    assert_eq!(
        store.registrations_of(&peer(0), t1)[0].ttl,
        crate::DEFAULT_TTL
    );
    // A bigger record does not fit: refused, the old registration stays as it was.
    let before = snapshot(&store, t1);
    let grow = NewRegistration {
        namespace: ns("a"),
        record: big.clone(),
        ttl: None,
    };
    let error = store.register(peer(0), grow, t1).unwrap_err();
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert_eq!(snapshot(&store, t1), before);
    assert_eq!(
        store.registrations_of(&peer(0), t1)[0].record,
        small,
        "the stored record is unchanged"
    );
    store.check_invariants().unwrap();
}

#[test]
fn given_a_record_over_the_size_cap_then_register_is_refused_before_decoding() {
    let config = Config::default().with_max_record_size(200);
    let mut store = Registrations::new(config, START);
    let now = Instant::now();
    store.register(peer(1), new_reg(1, "a", None), now).unwrap();
    let before = snapshot(&store, now);
    let big = record_with(2, 20);
    assert!(big.envelope_bytes().len() > 200);
    let request = NewRegistration {
        namespace: ns("a"),
        record: big.clone(),
        ttl: None,
    };
    let error = store.register(peer(2), request, now).unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidSignedPeerRecord);
    assert!(error.text.contains("at most 200"), "{}", error.text);
    // Garbage of that size gets the same answer: the size is checked before decoding.
    let error = store
        .register_unverified(peer(2), unverified("a", &[0xAB; 300], None), now)
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidSignedPeerRecord);
    assert!(error.text.contains("300 bytes"), "{}", error.text);
    assert_eq!(snapshot(&store, now), before);
}

#[test]
fn given_a_record_with_too_many_addresses_then_register_is_refused() {
    let config = Config::default().with_max_addresses_per_record(4);
    let mut store = Registrations::new(config, START);
    let now = Instant::now();
    let five = record_with(2, 5);
    let error = store
        .register_unverified(peer(2), unverified("a", five.envelope_bytes(), None), now)
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidSignedPeerRecord);
    assert!(error.text.contains("5 addresses"), "{}", error.text);
    assert!(error.text.contains("at most 4"), "{}", error.text);
    assert!(store.is_empty());
    assert_eq!(store.stored_bytes(), 0);
    let four = record_with(2, 4);
    assert!(store
        .register_unverified(peer(2), unverified("a", four.envelope_bytes(), None), now)
        .is_ok());
}

#[test]
fn given_undecodable_envelopes_then_cheaper_checks_answer_first() {
    let config = Config::default().with_max_registrations_per_peer(1);
    let mut store = Registrations::new(config, START);
    let now = Instant::now();
    let garbage = [0x55u8; 64];
    // A bad TTL is reported before the envelope is looked at.
    let error = store
        .register_unverified(peer(1), unverified("a", &garbage, Some(1)), now)
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidTtl);
    // With a good TTL, the envelope is decoded: invalid.
    let error = store
        .register_unverified(peer(1), unverified("a", &garbage, None), now)
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidSignedPeerRecord);
    // A peer at its limit is refused before its envelope is decoded.
    store.register(peer(1), new_reg(1, "a", None), now).unwrap();
    let error = store
        .register_unverified(peer(1), unverified("b", &garbage, None), now)
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::NotAuthorized);
    // A record signed by another peer: not authorized, after decoding.
    let error = store
        .register_unverified(
            peer(2),
            unverified("a", record(3, RecordFormat::Legacy).envelope_bytes(), None),
            now,
        )
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::NotAuthorized);
    store.check_invariants().unwrap();
}

#[test]
fn given_a_refresh_with_the_stored_envelope_then_the_stored_record_is_reused() {
    let mut store = store();
    let t0 = Instant::now();
    let envelope = record(1, RecordFormat::Legacy).envelope_bytes().to_vec();
    let (_, first) = store
        .register_unverified(peer(1), unverified("a", &envelope, None), t0)
        .unwrap();
    let t1 = t0 + Duration::from_secs(10);
    let (_, again) = store
        .register_unverified(peer(1), unverified("a", &envelope, None), t1)
        .unwrap();
    let (_, elsewhere) = store
        .register_unverified(peer(1), unverified("b", &envelope, None), t1)
        .unwrap();
    // Not decoded again: the very record stored first, not a copy.
    assert_eq!(
        first.envelope_bytes().as_ptr(),
        again.envelope_bytes().as_ptr()
    );
    assert_eq!(
        first.envelope_bytes().as_ptr(),
        elsewhere.envelope_bytes().as_ptr()
    );
    assert_eq!(store.len(), 2);
    assert_eq!(store.stored_bytes(), cost(&first, &["a", "b"]));
    store.check_invariants().unwrap();
}

#[test]
fn given_extreme_ttls_and_counters_then_nothing_panics_and_nothing_changes() {
    // An unvalidated configuration allowing any TTL.
    let config = Config::default().with_min_ttl(1).with_max_ttl(u64::MAX);
    let mut store = Registrations::new(config, START);
    let now = Instant::now();
    let error = store
        .register(peer(1), new_reg(1, "a", Some(u64::MAX)), now)
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::InvalidTtl);
    assert!(store.is_empty());
    // A counter at its end: refused, nothing stored.
    let mut store = Registrations::new(Config::default(), u64::MAX);
    let error = store
        .register(peer(1), new_reg(1, "a", None), now)
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert!(store.is_empty());
    assert_eq!(store.stored_bytes(), 0);
    store.check_invariants().unwrap();
    // Any limit, any cookie number.
    let (page, _) = store
        .discover(ServedFormats::All, None, None, Some(u64::MAX), now)
        .unwrap();
    assert!(page.is_empty());
}

#[test]
fn config_validation_refuses_every_out_of_range_value() {
    assert_eq!(Config::default().validate(), Ok(()));
    let cases = [
        (Config::default().with_min_ttl(0), "min-ttl"),
        (Config::default().with_max_ttl(u64::MAX), "max-ttl"),
        (
            Config::default().with_min_ttl(10).with_max_ttl(5),
            "min-ttl",
        ),
        (
            Config::default().with_max_registrations(0),
            "max-registrations",
        ),
        (
            Config::default().with_max_registrations_per_peer(0),
            "max-registrations",
        ),
        (
            Config::default().with_default_page(500).with_max_page(100),
            "default-page",
        ),
        (Config::default().with_max_page(1_000_000), "max-page"),
        (Config::default().with_max_record_size(0), "max-record-size"),
        (
            Config::default().with_max_message_size(100),
            "max-message-size",
        ),
        (
            Config::default().with_max_message_size(usize::MAX),
            "max-message-size",
        ),
        (
            Config::default().with_max_addresses_per_record(0),
            "max-addresses-per-record",
        ),
        (
            Config::default().with_max_store_bytes(10),
            "max-store-bytes",
        ),
        (
            Config::default().with_stream_timeout(Duration::ZERO),
            "stream-timeout",
        ),
        (
            Config::default().with_stream_timeout(Duration::MAX),
            "stream-timeout",
        ),
    ];
    for (config, setting) in cases {
        let error: InvalidConfig = config.validate().unwrap_err();
        assert_eq!(error.setting, setting, "{error}");
        assert!(
            error.text.contains("expected") || error.text.contains("at most"),
            "{error}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any sequence of registers, refreshes with other records, unregisters and expiry keeps
    /// the indexes consistent and the store within its budgets.
    #[test]
    fn any_sequence_keeps_the_store_consistent_and_within_budget(
        ops in proptest::collection::vec((0u8..4, 0u16..6, 0usize..3, 0usize..4), 1..80),
        budget in 1usize..12,
    ) {
        let one = cost(&record(0, RecordFormat::Legacy), &["a"]);
        let config = Config::default()
            .with_min_ttl(1)
            .with_max_store_bytes(budget * one)
            .with_max_registrations_per_peer(2);
        let mut store = Registrations::new(config, START);
        let t0 = Instant::now();
        for (step, (op, i, n, addresses)) in ops.into_iter().enumerate() {
            let now = t0 + Duration::from_secs(step as u64);
            let namespace = ["a", "b", "c"][n];
            match op {
                0 => { let _ = store.register(peer(i), new_reg(i, namespace, Some(20)), now); }
                1 => {
                    let request = NewRegistration {
                        namespace: ns(namespace),
                        record: record_with(i, addresses),
                        ttl: Some(30),
                    };
                    let _ = store.register(peer(i), request, now);
                }
                2 => { store.unregister(peer(i), &ns(namespace)); }
                _ => while store.poll_expired(now).is_some() {},
            }
            prop_assert_eq!(store.check_invariants(), Ok(()));
        }
    }
}
