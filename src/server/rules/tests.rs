//! Tests of the rule book: each rule's answer, status and limit, and how a page is cut.

use std::time::{Duration, Instant};

use libp2p::identity::Keypair;

use super::*;
use crate::{
    codec::{Namespace, RecordFormat},
    server::{Config, ServedFormats},
};

fn limits() -> Limits {
    Limits::new(
        &Config::default()
            .with_min_ttl(10)
            .with_max_ttl(100)
            .with_max_record_size(2000)
            .with_max_addresses_per_record(2)
            .with_max_registrations_per_peer(3)
            .with_max_registrations(5)
            .with_default_page(4)
            .with_max_page(6),
    )
}

fn record(key: &Keypair, addresses: usize, format: RecordFormat) -> SignedRecord {
    let addrs = (0..addresses)
        .map(|i| format!("/ip4/10.0.0.1/tcp/{}", 4000 + i).parse().unwrap())
        .collect();
    SignedRecord::new(key, addrs, format).unwrap()
}

#[test]
fn given_ttl_bounds_then_an_absent_ttl_is_the_default_and_outside_ones_are_invalid_ttl() {
    let limits = limits();
    assert_eq!(limits.granted_ttl(Some(10)), Ok(10));
    assert_eq!(limits.granted_ttl(Some(100)), Ok(100));
    for asked in [Some(9), Some(101), None] {
        let refusal = limits.granted_ttl(asked).unwrap_err();
        assert_eq!(refusal.error.code, ErrorCode::InvalidTtl);
        assert_eq!(refusal.limit, None);
    }
    assert_eq!(
        limits.granted_ttl(Some(9)).unwrap_err().error.text,
        "ttl is 9 s; expected 10..=100 s"
    );
    let wide = Limits::new(&Config::default());
    assert_eq!(wide.granted_ttl(None), Ok(crate::DEFAULT_TTL));
    assert!(Limits::deadline(u64::MAX, Instant::now()).is_err());
}

#[test]
fn given_record_caps_then_size_and_addresses_are_refused_by_the_record_limit() {
    let limits = limits();
    assert_eq!(limits.check_record_size(2000), Ok(()));
    let too_big = limits.check_record_size(2001).unwrap_err();
    assert_eq!(too_big.limit, Some(Limit::Record));
    assert_eq!(too_big.error.code, ErrorCode::InvalidSignedPeerRecord);

    let key = Keypair::generate_ed25519();
    let peer = key.public().to_peer_id();
    assert_eq!(
        limits.check_record(peer, &record(&key, 2, RecordFormat::Standard)),
        Ok(())
    );
    let many = limits
        .check_record(peer, &record(&key, 3, RecordFormat::Standard))
        .unwrap_err();
    assert_eq!(many.limit, Some(Limit::Record));
    assert!(many.error.text.contains("lists 3 addresses"), "{many:?}");
}

#[test]
fn given_a_record_of_another_peer_then_it_is_not_authorized_and_no_limit_is_named() {
    let key = Keypair::generate_ed25519();
    let other = Keypair::generate_ed25519().public().to_peer_id();
    let refusal = limits()
        .check_record(other, &record(&key, 1, RecordFormat::Legacy))
        .unwrap_err();
    assert_eq!(refusal.error.code, ErrorCode::NotAuthorized);
    assert_eq!(refusal.limit, None);
}

#[test]
fn given_bytes_that_are_not_an_envelope_then_decoding_is_an_invalid_record() {
    let refusal = decode_record(b"not an envelope").unwrap_err();
    assert_eq!(refusal.error.code, ErrorCode::InvalidSignedPeerRecord);
    assert_eq!(refusal.limit, None);
    let key = Keypair::generate_ed25519();
    let signed = record(&key, 1, RecordFormat::Standard);
    assert_eq!(decode_record(signed.envelope_bytes()), Ok(signed));
}

#[test]
fn given_count_limits_then_the_peer_limit_comes_before_the_total() {
    let limits = limits();
    assert_eq!(limits.check_counts(2, 4), Ok(()));
    let peer_full = limits.check_counts(3, 5).unwrap_err();
    assert_eq!(peer_full, Limits::peer_full(3));
    assert_eq!(peer_full.limit, Some(Limit::PeerRegistrations));
    assert_eq!(peer_full.error.code, ErrorCode::NotAuthorized);
    let full = limits.check_counts(0, 5).unwrap_err();
    assert_eq!(full, Limits::server_full(5));
    assert_eq!(full.limit, Some(Limit::Registrations));
    assert_eq!(full.error.code, ErrorCode::Unavailable);
}

#[test]
fn given_page_bounds_then_the_limit_is_the_default_or_the_ask_capped() {
    let limits = limits();
    assert_eq!(limits.page_limit(None), 4);
    assert_eq!(limits.page_limit(Some(0)), 4);
    assert_eq!(limits.page_limit(Some(5)), 5);
    assert_eq!(limits.page_limit(Some(u64::MAX)), 6);
}

#[test]
fn given_refusals_of_the_shell_then_each_names_its_limit() {
    assert_eq!(rate_limited(50, 100).limit, Some(Limit::Rate));
    assert!(rate_limited(50, 100).error.text.contains("50 per second"));
    assert_eq!(store_busy(7).limit, Some(Limit::InFlight));
    assert_eq!(too_many_held().limit, Some(Limit::HeldDiscovers));
    assert_eq!(sequence_exhausted().error.code, ErrorCode::Unavailable);
    assert_eq!(remaining_ttl(Duration::from_millis(300)), 1);
    assert_eq!(remaining_ttl(Duration::from_secs(42)), 42);
}

fn ns() -> Namespace {
    Namespace::from_static("chat")
}

#[test]
fn given_a_page_limit_then_the_page_ends_at_it_and_the_cookie_after_the_last_taken() {
    let key = Keypair::generate_ed25519();
    let rec = record(&key, 1, RecordFormat::Standard);
    let mut page = limits().page(ServedFormats::All, Some(2), 10, None);
    assert_eq!(page.offer(11, &ns(), rec.clone(), 60), Offer::Taken);
    page.pass(12);
    assert_eq!(page.offer(13, &ns(), rec.clone(), 60), Offer::Taken);
    assert_eq!(page.offer(14, &ns(), rec, 60), Offer::Full);
    let (registrations, cookie) = page.finish(ScanEnd::Complete { counter: 99 }, Some(&ns()));
    assert_eq!(registrations.len(), 2);
    assert_eq!(cookie, cookie::encode(13, None, Some(&ns())));
}

#[test]
fn given_a_reader_of_legacy_records_then_standard_ones_are_passed_and_the_cookie_marked() {
    let key = Keypair::generate_ed25519();
    let mut page = limits().page(ServedFormats::LegacyOnly, None, 0, None);
    let standard = record(&key, 1, RecordFormat::Standard);
    let legacy = record(&key, 1, RecordFormat::Legacy);
    assert_eq!(page.offer(1, &ns(), standard, 60), Offer::Passed);
    assert_eq!(page.offer(2, &ns(), legacy, 60), Offer::Taken);
    let (registrations, cookie) = page.finish(ScanEnd::Complete { counter: 5 }, None);
    assert_eq!(registrations.len(), 1);
    assert_eq!(
        cookie,
        cookie::encode(5, Some(ServedFormats::LegacyOnly), None)
    );
    assert_eq!(
        cookie::parse(&cookie, None, 5, ServedFormats::Signed)
            .unwrap_err()
            .code,
        ErrorCode::InvalidCookie,
        "a wider reader must start over"
    );
}

#[test]
fn given_a_peer_info_reader_then_signed_records_are_sent_as_peer_info() {
    let key = Keypair::generate_ed25519();
    let mut page = limits().page(ServedFormats::AsPeerInfo, None, 0, None);
    page.offer(1, &ns(), record(&key, 1, RecordFormat::Standard), 60);
    let (registrations, _) = page.finish(ScanEnd::Complete { counter: 1 }, None);
    assert_eq!(registrations[0].record.format(), RecordFormat::PeerInfo);
}

#[test]
fn given_the_message_cap_then_a_page_is_cut_and_a_lone_oversized_registration_is_passed() {
    let key = Keypair::generate_ed25519();
    let small = record(&key, 1, RecordFormat::Standard);
    let large = record(&key, 2, RecordFormat::Standard);
    // Room for one small registration beside the response's own bytes, not for a large one.
    let cap = response_room_for(&small);
    let limits = Limits::new(
        &Config::default()
            .with_max_record_size(100)
            .with_max_message_size(cap),
    );
    let mut page = limits.page(ServedFormats::All, None, 0, None);
    assert_eq!(page.offer(1, &ns(), large.clone(), 60), Offer::Passed);
    assert_eq!(page.offer(2, &ns(), small.clone(), 60), Offer::Taken);
    assert_eq!(page.offer(3, &ns(), small, 60), Offer::Full);
    let (registrations, cookie) = page.finish(ScanEnd::Complete { counter: 9 }, None);
    assert_eq!(registrations.len(), 1);
    assert_eq!(
        cookie,
        cookie::encode(2, None, None),
        "the cut page goes on at 3"
    );
}

/// A message cap that fits exactly one registration of `record` in the namespace "chat".
fn response_room_for(record: &SignedRecord) -> usize {
    let page = limits().page(ServedFormats::All, None, 0, None);
    let empty = page.finish(ScanEnd::Complete { counter: 0 }, None).0;
    assert!(empty.is_empty());
    let one = crate::codec::registration_wire_len(&ns(), record.envelope_bytes().len(), 60);
    page::response_overhead() + one
}

#[test]
fn given_a_store_that_stopped_looking_then_the_cookie_is_where_it_stopped() {
    let page = limits().page(ServedFormats::All, None, 10, None);
    let (_, cookie) = page.finish(ScanEnd::Stopped { last: Some(40) }, None);
    assert_eq!(cookie, cookie::encode(40, None, None));
    let page = limits().page(ServedFormats::All, None, 10, None);
    let (_, cookie) = page.finish(ScanEnd::Stopped { last: None }, None);
    assert_eq!(cookie, cookie::encode(10, None, None), "nothing skipped");
}

#[test]
fn given_a_cookie_ahead_of_the_counter_then_it_is_invalid_saying_both_numbers() {
    let cookie = cookie::encode(8, None, None);
    let refusal = cookie::parse(&cookie, None, 7, ServedFormats::All).unwrap_err();
    assert_eq!(refusal, cookie::ahead(8, 7));
    assert!(refusal.text.contains("sequence 8, server at 7"));
}
