//! Tests of DISCOVER: cookies, page cuts, and what each reader is served.

use std::collections::HashSet;

use proptest::prelude::*;

use super::*;
use crate::codec::{DiscoverPage, Message};

#[test]
fn given_bad_cookies_then_discover_is_invalid_cookie() {
    let mut store = store();
    let now = Instant::now();
    store.register(peer(1), new_reg(1, "a", None), now).unwrap();
    let (_, cookie_a) = store
        .discover(ServedFormats::All, Some(&ns("a")), None, None, now)
        .unwrap();
    let short = Cookie::new(vec![1, 2, 3]).unwrap();
    let ahead = Cookie::new((START + 2).to_be_bytes().to_vec()).unwrap();
    for (namespace, cookie, needle) in [
        (Some(ns("b")), &cookie_a, "asks for \"b\""),
        (None, &cookie_a, "cookie is for namespace \"a\""),
        (None, &short, "3 bytes"),
        (None, &ahead, "ahead"),
    ] {
        let error = store
            .discover(
                ServedFormats::All,
                namespace.as_ref(),
                Some(cookie),
                None,
                now,
            )
            .unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidCookie);
        assert!(error.text.contains(needle), "{} lacks {needle}", error.text);
    }
    // A cookie at the counter is fine.
    let at = Cookie::new((START + 1).to_be_bytes().to_vec()).unwrap();
    assert!(store
        .discover(ServedFormats::All, None, Some(&at), None, now)
        .is_ok());
}

#[test]
fn given_nothing_new_then_the_page_is_empty_and_still_has_a_cookie() {
    let mut store = store();
    let now = Instant::now();
    let (page, cookie) = store
        .discover(ServedFormats::All, Some(&ns("a")), None, None, now)
        .unwrap();
    assert!(page.is_empty());
    assert_eq!(&cookie.as_bytes()[8..], b"a");
    store.register(peer(1), new_reg(1, "a", None), now).unwrap();
    let (page, cookie) = store
        .discover(ServedFormats::All, Some(&ns("a")), Some(&cookie), None, now)
        .unwrap();
    assert_eq!(page.len(), 1);
    let (page, again) = store
        .discover(ServedFormats::All, Some(&ns("a")), Some(&cookie), None, now)
        .unwrap();
    assert!(page.is_empty());
    assert_eq!(again, cookie);
}

#[test]
fn given_limits_then_pages_use_the_default_and_are_capped() {
    let config = Config::default().with_default_page(3).with_max_page(5);
    let mut store = Registrations::new(config, START);
    let now = Instant::now();
    for i in 0..10 {
        store.register(peer(i), new_reg(i, "a", None), now).unwrap();
    }
    let count = |limit| {
        store
            .discover(ServedFormats::All, None, None, limit, now)
            .unwrap()
            .0
            .len()
    };
    assert_eq!(count(None), 3);
    assert_eq!(count(Some(0)), 3);
    assert_eq!(count(Some(4)), 4);
    assert_eq!(count(Some(1_000_000)), 5);
}

#[test]
fn given_a_small_message_cap_then_pages_are_cut_to_fit_and_paging_goes_on() {
    let cap = 1024;
    let mut store = Registrations::new(Config::default().with_max_message_size(cap), START);
    let now = Instant::now();
    for i in 0..40 {
        store.register(peer(i), new_reg(i, "a", None), now).unwrap();
    }
    let mut cookie = None;
    let mut total = 0;
    loop {
        let (page, next) = store
            .discover(
                ServedFormats::All,
                Some(&ns("a")),
                cookie.as_ref(),
                Some(1000),
                now,
            )
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() < 40);
        total += page.len();
        let encoded = Message::DiscoverResponse(Ok(DiscoverPage {
            registrations: page,
            cookie: Some(next.clone()),
            skipped: 0,
        }))
        .encoded_len();
        assert!(encoded <= cap, "response is {encoded} bytes");
        cookie = Some(next);
    }
    assert_eq!(total, 40);
}

#[test]
fn given_a_5000_record_page_of_big_records_then_the_response_stays_under_1_mib() {
    let config = Config::default()
        .with_max_page(5000)
        .with_max_registrations_per_peer(100);
    let mut store = Registrations::new(config, START);
    let now = Instant::now();
    let addrs: Vec<libp2p::Multiaddr> = (0..10)
        .map(|i| {
            format!("/dns4/host-{i:02}.example.com/tcp/4001")
                .parse()
                .unwrap()
        })
        .collect();
    for i in 0..64u16 {
        let record = SignedRecord::new(&key(i), addrs.clone(), RecordFormat::Legacy).unwrap();
        for n in 0..80 {
            let request = NewRegistration {
                namespace: ns(&format!("ns-{n}")),
                record: record.clone(),
                ttl: None,
            };
            store.register(peer(i), request, now).unwrap();
        }
    }
    let (page, cookie) = store
        .discover(ServedFormats::All, None, None, Some(5000), now)
        .unwrap();
    let encoded = Message::DiscoverResponse(Ok(DiscoverPage {
        registrations: page.clone(),
        cookie: Some(cookie),
        skipped: 0,
    }))
    .encoded_len();
    assert!(
        encoded <= crate::codec::DEFAULT_MAX_MESSAGE_SIZE,
        "{encoded} bytes"
    );
    assert!(page.len() < 5000, "cut at {} registrations", page.len());
    assert_eq!(
        page_all(&store, ServedFormats::All, None, 5000, now).len(),
        64 * 80
    );
}

fn peer_info(i: u16, namespace: &str) -> NewRegistration {
    NewRegistration {
        namespace: ns(namespace),
        record: SignedRecord::new(
            &key(i),
            vec![format!("/memory/{i}").parse().unwrap()],
            RecordFormat::PeerInfo,
        )
        .unwrap(),
        ttl: None,
    }
}

fn standard(i: u16, namespace: &str) -> NewRegistration {
    NewRegistration {
        namespace: ns(namespace),
        record: record(i, RecordFormat::Standard),
        ttl: None,
    }
}

#[test]
fn given_three_generations_then_each_asker_gets_what_it_reads_in_its_layout() {
    let mut store = store();
    let now = Instant::now();
    store.register(peer(1), new_reg(1, "a", None), now).unwrap();
    store.register(peer(2), standard(2, "a"), now).unwrap();
    store.register(peer(3), peer_info(3, "a"), now).unwrap();
    let page = |served| {
        let (page, _) = store.discover(served, None, None, None, now).unwrap();
        page.into_iter()
            .map(|r| (r.record.peer_id(), r.record.format()))
            .collect::<Vec<_>>()
    };
    use RecordFormat::*;
    assert_eq!(page(ServedFormats::LegacyOnly), [(peer(1), Legacy)]);
    assert_eq!(
        page(ServedFormats::Signed),
        [(peer(1), Legacy), (peer(2), Standard)]
    );
    assert_eq!(
        page(ServedFormats::All),
        [(peer(1), Legacy), (peer(2), Standard), (peer(3), PeerInfo)]
    );
    assert_eq!(
        page(ServedFormats::AsPeerInfo),
        [
            (peer(1), PeerInfo),
            (peer(2), PeerInfo),
            (peer(3), PeerInfo)
        ]
    );
    // Handed out as PeerInfo, a signed record keeps its peer and addresses.
    let (as_info, _) = store
        .discover(ServedFormats::AsPeerInfo, None, None, None, now)
        .unwrap();
    let (signed, _) = store
        .discover(ServedFormats::All, None, None, None, now)
        .unwrap();
    for (info, signed) in as_info.iter().zip(&signed) {
        assert_eq!(info.record.addresses(), signed.record.addresses());
        let decoded = SignedRecord::from_bytes(info.record.envelope_bytes()).unwrap();
        assert_eq!(decoded.peer_id(), signed.record.peer_id());
    }
    // Filtered records still advance the cookie: a legacy pager with limit 1 never loops.
    let seen = page_all(&store, ServedFormats::LegacyOnly, None, 1, now);
    assert_eq!(seen, vec![(peer(1), ns("a"))]);
}

#[test]
fn given_registrations_then_the_latest_register_format_is_what_the_peer_reads() {
    let mut store = store();
    let now = Instant::now();
    assert_eq!(store.registered_format(&peer(2)), None);
    store.register(peer(2), standard(2, "a"), now).unwrap();
    assert_eq!(
        store.registered_format(&peer(2)),
        Some(RecordFormat::Standard)
    );
    store.register(peer(2), new_reg(2, "b", None), now).unwrap();
    assert_eq!(
        store.registered_format(&peer(2)),
        Some(RecordFormat::Legacy)
    );
    store.register(peer(2), peer_info(2, "c"), now).unwrap();
    assert_eq!(
        store.registered_format(&peer(2)),
        Some(RecordFormat::PeerInfo)
    );
    store.remove_peer(&peer(2));
    assert_eq!(store.registered_format(&peer(2)), None);
}

#[test]
fn given_a_peer_info_of_another_peer_then_register_is_not_authorized() {
    let mut store = store();
    let result = store.register(peer(1), peer_info(2, "a"), Instant::now());
    assert_eq!(code(result), ErrorCode::NotAuthorized);
    assert!(store.is_empty());
}

#[test]
fn given_a_cookie_cut_under_narrower_formats_when_the_asker_is_served_more_then_it_starts_over() {
    let mut store = store();
    let now = Instant::now();
    store.register(peer(1), standard(1, "a"), now).unwrap();
    store.register(peer(2), new_reg(2, "a", None), now).unwrap();
    let a = Some(ns("a"));
    // Served legacy only (say identify had not answered yet): the standard record is left out.
    let (page, cookie) = store
        .discover(ServedFormats::LegacyOnly, a.as_ref(), None, None, now)
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(cookie.as_bytes().len(), 8 + 1, "still 8 bytes ++ namespace");
    // The same reader continues with it...
    assert!(store
        .discover(
            ServedFormats::LegacyOnly,
            a.as_ref(),
            Some(&cookie),
            None,
            now
        )
        .is_ok());
    // ...a reader now served more is told to start over, and then sees both.
    for wider in [
        ServedFormats::Signed,
        ServedFormats::All,
        ServedFormats::AsPeerInfo,
    ] {
        let refused = store.discover(wider, a.as_ref(), Some(&cookie), None, now);
        assert_eq!(code(refused), ErrorCode::InvalidCookie);
    }
    let (page, _) = store
        .discover(ServedFormats::Signed, a.as_ref(), None, None, now)
        .unwrap();
    assert_eq!(page.len(), 2);

    // The mark survives pages that leave nothing out.
    store.register(peer(3), new_reg(3, "a", None), now).unwrap();
    let (page, next) = store
        .discover(
            ServedFormats::LegacyOnly,
            a.as_ref(),
            Some(&cookie),
            None,
            now,
        )
        .unwrap();
    assert_eq!(page.len(), 1);
    let refused = store.discover(ServedFormats::Signed, a.as_ref(), Some(&next), None, now);
    assert_eq!(code(refused), ErrorCode::InvalidCookie);
}

#[test]
fn given_a_cookie_that_left_nothing_out_then_any_reader_continues_with_it() {
    let mut store = store();
    let now = Instant::now();
    store.register(peer(1), new_reg(1, "a", None), now).unwrap();
    let (_, cookie) = store
        .discover(ServedFormats::LegacyOnly, None, None, None, now)
        .unwrap();
    store.register(peer(2), standard(2, "a"), now).unwrap();
    let (page, _) = store
        .discover(ServedFormats::All, None, Some(&cookie), None, now)
        .unwrap();
    assert_eq!(
        page.len(),
        1,
        "the standard record registered after the cookie"
    );
    // Narrowing never needs a restart: a signed reader's mark allows a legacy reader.
    store.register(peer(3), peer_info(3, "a"), now).unwrap();
    let (_, cookie) = store
        .discover(ServedFormats::Signed, None, None, None, now)
        .unwrap();
    assert!(store
        .discover(ServedFormats::LegacyOnly, None, Some(&cookie), None, now)
        .is_ok());
    let refused = store.discover(ServedFormats::AsPeerInfo, None, Some(&cookie), None, now);
    assert_eq!(code(refused), ErrorCode::InvalidCookie);
}

#[test]
fn given_a_cookie_cut_under_standard_only_then_no_reader_of_legacy_records_continues_it() {
    let mut store = store();
    let now = Instant::now();
    store.register(peer(1), standard(1, "a"), now).unwrap();
    store.register(peer(2), new_reg(2, "a", None), now).unwrap();
    // A js-libp2p reader: the legacy record is left out, and the cookie says so.
    let (page, cookie) = store
        .discover(ServedFormats::Standard, None, None, None, now)
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].record.format(), crate::RecordFormat::Standard);
    assert!(store
        .discover(ServedFormats::Standard, None, Some(&cookie), None, now)
        .is_ok());
    for wider in [
        ServedFormats::LegacyOnly,
        ServedFormats::Signed,
        ServedFormats::All,
    ] {
        let refused = store.discover(wider, None, Some(&cookie), None, now);
        assert_eq!(code(refused), ErrorCode::InvalidCookie, "{wider}");
    }
    // A cookie cut under legacy only is no good to a standard reader either.
    let (_, cookie) = store
        .discover(ServedFormats::LegacyOnly, None, None, None, now)
        .unwrap();
    let refused = store.discover(ServedFormats::Standard, None, Some(&cookie), None, now);
    assert_eq!(code(refused), ErrorCode::InvalidCookie);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Paging with any page size returns every registration exactly once, with and without
    /// namespace, also when registrations and refreshes arrive between pages.
    #[test]
    fn paging_returns_each_registration_exactly_once(
        regs in proptest::collection::vec((0u16..40, 0usize..4), 1..120),
        later in proptest::collection::vec((0u16..40, 0usize..4), 0..30),
        limit in 1u64..12,
    ) {
        let names = ["a", "b", "c", "d"];
        let mut store = store();
        let now = Instant::now();
        for (i, n) in &regs {
            store.register(peer(*i), new_reg(*i, names[*n], None), now).unwrap();
        }
        let expected: HashSet<(PeerId, Namespace)> =
            regs.iter().map(|(i, n)| (peer(*i), ns(names[*n]))).collect();
        let all = page_all(&store, ServedFormats::All, None, limit, now);
        prop_assert_eq!(all.len(), expected.len());
        prop_assert_eq!(all.iter().cloned().collect::<HashSet<_>>(), expected.clone());
        for name in names {
            let in_ns = page_all(&store, ServedFormats::All, Some(&ns(name)), limit, now);
            let want = expected.iter().filter(|(_, n)| n.as_str() == name).count();
            prop_assert_eq!(in_ns.len(), want);
            prop_assert!(in_ns.iter().all(|(_, n)| n.as_str() == name));
        }
        // Interleaved: one page, then new registrations and refreshes, then the rest.
        let (first, cookie) =
            store.discover(ServedFormats::All, None, None, Some(limit), now).unwrap();
        for (i, n) in &later {
            store.register(peer(*i), new_reg(*i, names[*n], None), now).unwrap();
        }
        let mut seen: Vec<(PeerId, Namespace)> =
            first.iter().map(|r| (r.record.peer_id(), r.namespace.clone())).collect();
        let mut cookie = Some(cookie);
        loop {
            let (page, next) =
                store.discover(ServedFormats::All, None, cookie.as_ref(), Some(limit), now).unwrap();
            if page.is_empty() { break; }
            seen.extend(page.iter().map(|r| (r.record.peer_id(), r.namespace.clone())));
            cookie = Some(next);
        }
        // Everything now stored was seen; duplicates only for what was refreshed after
        // being seen.
        let refreshed: HashSet<(PeerId, Namespace)> =
            later.iter().map(|(i, n)| (peer(*i), ns(names[*n]))).collect();
        let unique: HashSet<_> = seen.iter().cloned().collect();
        prop_assert_eq!(unique.len(), store.len());
        prop_assert!(seen.len() <= store.len() + refreshed.len());
    }
}
