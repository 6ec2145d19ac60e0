use futures::channel::mpsc;
use libp2p::identity::Keypair;

use super::*;
use crate::codec::{RecordFormat, SignedRecord};
use crate::server::gate::{Bell, Gate};
use std::time::Duration;

fn ns(s: &str) -> Namespace {
    Namespace::new(s).unwrap()
}

fn connection(n: usize) -> ConnectionId {
    ConnectionId::new_unchecked(n)
}

fn registered(seq: u64, namespace: &str, format: RecordFormat) -> Change {
    let key = Keypair::generate_ed25519();
    Change::Registered {
        seq,
        registration: Registration {
            namespace: ns(namespace),
            record: SignedRecord::new(&key, vec![], format).unwrap(),
            ttl: 7200,
        },
    }
}

fn seq_of(change: &Change) -> u64 {
    match change {
        Change::Registered { seq, .. } => *seq,
        Change::Removed { .. } => panic!("not a registration"),
    }
}

fn new_sub(
    id: u64,
    namespace: Option<&str>,
    queue: usize,
) -> (NewSubscription, mpsc::Receiver<Queued>) {
    let (new, receiver, _bell) = new_sub_with_bell(id, namespace, queue);
    (new, receiver)
}

/// [`new_sub`], with the bell its stream would hold.
fn new_sub_with_bell(
    id: u64,
    namespace: Option<&str>,
    queue: usize,
) -> (NewSubscription, mpsc::Receiver<Queued>, Arc<Bell>) {
    let (sender, receiver, bell) = PushQueue::new(queue);
    let new = NewSubscription {
        id,
        namespace: namespace.map(ns),
        cookie: None,
        limit: None,
        sender,
    };
    (new, receiver, bell)
}

/// The pages queued so far: (peers' sequence numbers as the cookies say, registrations).
fn drain(receiver: &mut mpsc::Receiver<Queued>) -> Vec<Queued> {
    std::iter::from_fn(|| receiver.try_recv().ok()).collect()
}

fn cookie_seq(queued: &Queued) -> u64 {
    let Push::Page(Ok(page)) = &*queued.push else {
        panic!("not a page: {queued:?}");
    };
    let bytes = page.cookie.as_ref().unwrap().as_bytes();
    u64::from_be_bytes(bytes[..8].try_into().unwrap()) & cookie::MAX_SEQUENCE
}

fn page_len(queued: &Queued) -> usize {
    match &*queued.push {
        Push::Page(Ok(page)) => page.registrations.len(),
        other => panic!("not a page: {other:?}"),
    }
}

fn subscriptions(queue: usize) -> Subscriptions {
    Subscriptions::new(&Config::default().with_push_queue(queue))
}

#[test]
fn given_changes_during_the_replay_when_it_catches_up_then_each_is_pushed_once_in_order() {
    let mut subs = subscriptions(8);
    let (new, mut pushes) = new_sub(0, Some("chat"), 8);
    let key = subs.open(PeerId::random(), connection(1), new).unwrap();
    subs.replay(key, ServedFormats::All).expect("a replay page");
    // Registered after the subscription was attached: 11 before the store answered the replay
    // (so the page has it), 12 after.
    let (eleven, twelve) = (
        registered(11, "chat", RecordFormat::Standard),
        registered(12, "chat", RecordFormat::Standard),
    );
    subs.changed(&eleven);
    subs.changed(&registered(13, "elsewhere", RecordFormat::Standard));
    subs.changed(&twelve);
    let Change::Registered { registration, .. } = &eleven else {
        unreachable!()
    };
    let page = (
        vec![registration.clone()],
        cookie::encode(11, None, Some(&ns("chat"))),
    );
    let out = subs.replayed(key, Ok(page), true);
    assert_eq!(out.pushed, 1, "twelve, once");
    let queued = drain(&mut pushes);
    assert_eq!(queued.len(), 2);
    assert_eq!((cookie_seq(&queued[0]), page_len(&queued[0])), (11, 1));
    assert_eq!((cookie_seq(&queued[1]), page_len(&queued[1])), (12, 1));
    assert!(!queued[0].more);

    // Live: a repeat of what was pushed is dropped, a new one pushed.
    assert_eq!(subs.changed(&twelve).pushed, 0);
    let fourteen = registered(14, "chat", RecordFormat::Standard);
    assert_eq!(subs.changed(&fourteen).pushed, 1);
    assert_eq!(cookie_seq(&drain(&mut pushes)[0]), seq_of(&fourteen));
}

#[test]
fn given_a_replay_page_that_is_not_up_to_date_then_it_asks_for_more_and_the_next_page_follows() {
    let mut subs = subscriptions(8);
    let (new, mut pushes) = new_sub(0, Some("chat"), 8);
    let key = subs.open(PeerId::random(), connection(1), new).unwrap();
    subs.replay(key, ServedFormats::All).unwrap();
    assert!(
        subs.replay(key, ServedFormats::All).is_none(),
        "one page at a time"
    );
    let cookie = cookie::encode(5, None, Some(&ns("chat")));
    subs.replayed(key, Ok((vec![], cookie.clone())), false);
    assert!(drain(&mut pushes)[0].more);
    let Some(Operation::Discover { cookie: next, .. }) = subs.replay(key, ServedFormats::All)
    else {
        panic!("the next page continues from the last cookie");
    };
    assert_eq!(next, Some(cookie));
}

#[test]
fn given_a_full_queue_while_its_stream_writes_then_the_subscription_ends_by_overflow_without_waiting(
) {
    let mut subs = subscriptions(2);
    let (new, _pushes, bell) = new_sub_with_bell(0, None, 2);
    let peer = PeerId::random();
    let key = subs.open(peer, connection(1), new).unwrap();
    subs.replay(key, ServedFormats::All).unwrap();
    subs.replayed(key, Ok((vec![], cookie::encode(1, None, None))), true);
    // The empty replay page holds one place; one more push fits, the next overflows.
    assert_eq!(
        subs.changed(&registered(2, "a", RecordFormat::Standard))
            .pushed,
        1
    );
    // The stream is writing (a slow subscriber): the queue filled behind it.
    bell.set_writing(true);
    let out = subs.changed(&registered(3, "a", RecordFormat::Standard));
    assert_eq!(out.ended, vec![(peer, None, SubscriptionEnd::Overflow)]);
    assert!(out.behind.is_empty());
    assert_eq!(subs.len(), 0);
}

#[test]
fn given_a_full_queue_while_its_stream_waits_for_quiet_then_it_is_left_behind_and_replays_from_the_cookie_it_gives(
) {
    // Resumed only after the backoff: the server is never quiet for 10 of these quiet times
    // within this test. The gate opens as soon as no request waits.
    let config = Config::default()
        .with_push_queue(2)
        .with_push_quiet(crate::server::MAX_PUSH_QUIET);
    let mut subs = Subscriptions::new(&config);
    let gate = Gate::new(Duration::ZERO);
    let (new, mut pushes, bell) = new_sub_with_bell(0, Some("chat"), 2);
    let peer = PeerId::random();
    let key = subs.open(peer, connection(1), new).unwrap();
    subs.replay(key, ServedFormats::All).unwrap();
    let replayed = cookie::encode(1, None, Some(&ns("chat")));
    subs.replayed(key, Ok((vec![], replayed.clone())), true);
    let chat = |seq| registered(seq, "chat", RecordFormat::Standard);
    assert_eq!(subs.changed(&chat(2)).pushed, 1);

    // The stream waits for a quiet moment (not writing): the server held its pushes.
    let fell = Instant::now();
    let out = subs.changed(&chat(3));
    assert_eq!(out.behind, vec![(peer, Some(ns("chat")))]);
    assert!(out.ended.is_empty(), "not ended: {out:?}");
    assert_eq!(subs.len(), 1);
    assert!(bell.is_behind(), "its stream is told");
    // Changes from here on are not queued: the store has them, the replay brings them.
    let out = subs.changed(&chat(4));
    assert_eq!(out, FanOut::default());
    assert_eq!(drain(&mut pushes).len(), 2, "the replay page and seq 2");

    // Not resumed in a mere quiet moment before its backoff, nor while a request waits after.
    assert!(subs.wake_if_quiet(&gate, fell).is_some());
    assert!(!bell.take_resume());
    let request = gate.pass();
    assert!(subs.wake_if_quiet(&gate, fell + MIN_PUSH_BEHIND).is_some());
    assert!(!bell.take_resume());
    drop(request);
    // After its backoff, in a quiet moment: it may resume.
    let quiet = fell + MIN_PUSH_BEHIND + Duration::from_millis(10);
    assert_eq!(
        subs.wake_if_quiet(&gate, quiet),
        None,
        "nothing left behind"
    );
    assert!(bell.take_resume());
    assert!(!bell.is_behind());

    // The stream dropped what waited and asks for a replay from the last cookie it wrote.
    assert!(subs.resume(key, Some(replayed.clone()), quiet));
    assert!(!subs.resume(key, None, quiet), "once");
    let Some(Operation::Discover { cookie, .. }) = subs.replay(key, ServedFormats::All) else {
        panic!("a replay page");
    };
    assert_eq!(cookie, Some(replayed));
    // Changes during the replay are buffered again, and pushed after it once only.
    subs.changed(&chat(5));
    let up_to_date = cookie::encode(4, None, Some(&ns("chat")));
    let out = subs.replayed(key, Ok((vec![], up_to_date)), true);
    assert_eq!(out.pushed, 1);
    let queued = drain(&mut pushes);
    assert_eq!(
        queued.iter().map(cookie_seq).collect::<Vec<_>>(),
        vec![4, 5]
    );

    // Behind again soon after resuming (the storm goes on): it waits twice as long.
    assert_eq!(subs.changed(&chat(6)).pushed, 1);
    assert_eq!(subs.changed(&chat(7)).pushed, 1);
    assert_eq!(subs.changed(&chat(8)).behind.len(), 1);
    let fell = Instant::now();
    assert!(subs
        .wake_if_quiet(&gate, fell + MIN_PUSH_BEHIND + Duration::from_millis(10))
        .is_some());
    assert!(!bell.take_resume());
    assert_eq!(subs.wake_if_quiet(&gate, fell + 2 * MIN_PUSH_BEHIND), None);
    assert!(bell.take_resume());
}

#[test]
fn given_subscriptions_left_behind_when_the_server_stays_quiet_then_all_resume_before_their_backoff(
) {
    // A quiet time of zero: the server is quiet long enough as soon as it is quiet.
    let config = Config::default()
        .with_push_queue(1)
        .with_push_quiet(Duration::ZERO);
    let mut subs = Subscriptions::new(&config);
    let gate = Gate::new(Duration::ZERO);
    let mut bells = Vec::new();
    for id in 0..3 {
        let (new, pushes, bell) = new_sub_with_bell(id, Some("chat"), 1);
        let key = subs.open(PeerId::random(), connection(1), new).unwrap();
        subs.replay(key, ServedFormats::All).unwrap();
        let cookie = cookie::encode(1, None, Some(&ns("chat")));
        subs.replayed(key, Ok((vec![], cookie)), true);
        bells.push((bell, pushes));
    }
    let out = subs.changed(&registered(2, "chat", RecordFormat::Standard));
    assert_eq!(out.behind.len(), 3);
    let request = gate.pass();
    assert!(subs.wake_if_quiet(&gate, Instant::now()).is_some());
    drop(request);
    assert_eq!(subs.wake_if_quiet(&gate, Instant::now()), None);
    assert!(bells.iter().all(|(bell, _)| bell.take_resume()));
}

#[test]
fn given_a_replay_that_lags_then_more_buffered_changes_than_the_queue_end_it() {
    let mut subs = subscriptions(2);
    let (new, _pushes) = new_sub(0, Some("chat"), 2);
    let key = subs.open(PeerId::random(), connection(1), new).unwrap();
    subs.replay(key, ServedFormats::All).unwrap();
    for seq in 1..=2 {
        assert!(subs
            .changed(&registered(seq, "chat", RecordFormat::Standard))
            .ended
            .is_empty());
    }
    let out = subs.changed(&registered(3, "chat", RecordFormat::Standard));
    assert_eq!(out.ended.len(), 1);
}

#[test]
fn given_the_caps_then_subscriptions_over_them_are_refused_and_closing_frees_a_place() {
    let config = Config::default()
        .with_max_subscriptions(3)
        .with_max_subscriptions_per_connection(2);
    let mut subs = Subscriptions::new(&config);
    let peer = PeerId::random();
    let first = subs
        .open(peer, connection(1), new_sub(0, None, 4).0)
        .unwrap();
    subs.open(peer, connection(1), new_sub(1, None, 4).0)
        .unwrap();
    let (refused, mut answer) = new_sub(2, None, 4);
    let error = subs.open(peer, connection(1), refused).unwrap_err();
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert!(matches!(*drain(&mut answer)[0].push, Push::Page(Err(_))));
    subs.open(peer, connection(2), new_sub(0, None, 4).0)
        .unwrap();
    assert!(subs
        .open(peer, connection(3), new_sub(0, None, 4).0)
        .is_err());

    assert!(subs.closed(first).is_some());
    subs.open(peer, connection(1), new_sub(3, None, 4).0)
        .unwrap();
    assert_eq!(subs.connection_closed(connection(1)).len(), 2);
    assert_eq!(subs.len(), 1);
}

#[test]
fn given_a_record_the_subscriber_does_not_read_then_it_is_skipped_and_the_next_cookie_is_marked() {
    let mut subs = subscriptions(8);
    let (new, mut pushes) = new_sub(0, Some("chat"), 8);
    let key = subs.open(PeerId::random(), connection(1), new).unwrap();
    subs.replay(key, ServedFormats::LegacyOnly).unwrap();
    let start = cookie::encode(1, None, Some(&ns("chat")));
    subs.replayed(key, Ok((vec![], start)), true);
    drain(&mut pushes);
    assert_eq!(
        subs.changed(&registered(2, "chat", RecordFormat::Standard))
            .pushed,
        0
    );
    assert_eq!(
        subs.changed(&registered(3, "chat", RecordFormat::Legacy))
            .pushed,
        1
    );
    let queued = drain(&mut pushes);
    let Push::Page(Ok(page)) = &*queued[0].push else {
        panic!()
    };
    let (seq, mark) = cookie::parse(
        page.cookie.as_ref().unwrap(),
        Some(&ns("chat")),
        u64::MAX,
        ServedFormats::LegacyOnly,
    )
    .unwrap();
    assert_eq!((seq, mark), (3, Some(ServedFormats::LegacyOnly)));
}

#[test]
fn given_a_removal_then_subscribers_of_its_namespaces_get_only_theirs() {
    let mut subs = subscriptions(8);
    let (chat, mut chat_pushes) = new_sub(0, Some("chat"), 8);
    let (all, mut all_pushes) = new_sub(1, None, 8);
    let (files, mut files_pushes) = new_sub(2, Some("files"), 8);
    for new in [chat, all, files] {
        let key = subs.open(PeerId::random(), connection(1), new).unwrap();
        subs.replay(key, ServedFormats::All).unwrap();
        let namespace = subs.all[&key].namespace.clone();
        let cookie = cookie::encode(1, None, namespace.as_ref());
        subs.replayed(key, Ok((vec![], cookie)), true);
    }
    let peer = PeerId::random();
    let removed = Change::Removed {
        peer,
        namespaces: vec![ns("chat"), ns("other")],
        cause: crate::server::Removal::Disconnect,
    };
    assert_eq!(subs.changed(&removed).pushed, 2);
    let namespaces = |queued: Vec<Queued>| match &*queued.last().unwrap().push {
        Push::Removed { namespaces, .. } => namespaces.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(namespaces(drain(&mut chat_pushes)), vec![ns("chat")]);
    assert_eq!(
        namespaces(drain(&mut all_pushes)),
        vec![ns("chat"), ns("other")]
    );
    assert_eq!(drain(&mut files_pushes).len(), 1, "only its replay page");
}

#[test]
fn given_a_lost_change_feed_then_every_subscription_ends_as_fallen_behind() {
    let mut subs = subscriptions(8);
    for id in 0..3 {
        subs.open(PeerId::random(), connection(1), new_sub(id, None, 8).0)
            .unwrap();
    }
    let out = subs.lost();
    assert_eq!(out.ended.len(), 3);
    assert!(out
        .ended
        .iter()
        .all(|(_, _, why)| *why == SubscriptionEnd::Overflow));
    assert_eq!(subs.len(), 0);
}

/// Opens a live subscription of `namespace` (`None`: all) served `served`, caught up at `seq`.
fn live(
    subs: &mut Subscriptions,
    id: u64,
    namespace: Option<&str>,
    served: ServedFormats,
    seq: u64,
) -> mpsc::Receiver<Queued> {
    let (new, pushes) = new_sub(id, namespace, 8);
    let key = subs.open(PeerId::random(), connection(1), new).unwrap();
    subs.replay(key, served).unwrap();
    let cookie = cookie::encode(seq, None, namespace.map(ns).as_ref());
    subs.replayed(key, Ok((vec![], cookie)), true);
    pushes
}

#[test]
fn given_subscribers_of_several_kinds_then_each_gets_the_page_a_discover_from_its_cookie_would() {
    let mut subs = subscriptions(8);
    let mut chat_a = live(&mut subs, 0, Some("chat"), ServedFormats::All, 10);
    let mut chat_b = live(&mut subs, 1, Some("chat"), ServedFormats::All, 10);
    let mut every = live(&mut subs, 2, None, ServedFormats::All, 10);
    let mut legacy = live(&mut subs, 3, Some("chat"), ServedFormats::LegacyOnly, 10);
    let mut other = live(&mut subs, 4, Some("files"), ServedFormats::All, 10);
    for pushes in [
        &mut chat_a,
        &mut chat_b,
        &mut every,
        &mut legacy,
        &mut other,
    ] {
        drain(pushes);
    }

    let out = subs.changed(&registered(11, "chat", RecordFormat::Standard));
    assert_eq!(
        out.pushed, 3,
        "both chat subscribers and the one of all namespaces"
    );
    let page = |pushes: &mut mpsc::Receiver<Queued>| {
        let queued = drain(pushes);
        assert_eq!(queued.len(), 1);
        let Push::Page(Ok(page)) = &*queued[0].push else {
            panic!("a page");
        };
        page.clone()
    };
    let (a, b, all) = (page(&mut chat_a), page(&mut chat_b), page(&mut every));
    assert_eq!(a, b, "the same page");
    assert_eq!(a.cookie, Some(cookie::encode(11, None, Some(&ns("chat")))));
    assert_eq!(all.registrations, a.registrations);
    assert_eq!(
        all.cookie,
        Some(cookie::encode(11, None, None)),
        "its own cookie"
    );
    assert!(drain(&mut other).is_empty());
    assert!(drain(&mut legacy).is_empty(), "a record it does not read");

    // The legacy reader's next page carries the mark of what it was not sent.
    subs.changed(&registered(12, "chat", RecordFormat::Legacy));
    let marked = cookie::encode(12, Some(ServedFormats::LegacyOnly), Some(&ns("chat")));
    assert_eq!(page(&mut legacy).cookie, Some(marked));
    assert_eq!(page(&mut chat_a).cookie, page(&mut chat_b).cookie);
}

#[test]
fn given_many_subscribers_of_a_namespace_then_they_share_one_page_and_one_removal() {
    let mut subs = subscriptions(8);
    let mut queues: Vec<_> = (0..3)
        .map(|id| live(&mut subs, id, Some("chat"), ServedFormats::All, 10))
        .collect();
    let mut every = live(&mut subs, 3, None, ServedFormats::All, 10);
    queues.iter_mut().chain([&mut every]).for_each(|q| {
        drain(q);
    });
    let mut one = |subs: &mut Subscriptions, change: &Change| {
        assert_eq!(subs.changed(change).pushed, 4);
        let mut pushes = queues.iter_mut().map(|q| drain(q).remove(0).push);
        let first = pushes.next().unwrap();
        assert!(pushes.all(|p| Arc::ptr_eq(&p, &first)), "one page, shared");
        let all = drain(&mut every).remove(0).push;
        (first, all)
    };
    let (page, all) = one(&mut subs, &registered(11, "chat", RecordFormat::Standard));
    assert!(!Arc::ptr_eq(&page, &all), "its cookie names no namespace");
    let removed = Change::Removed {
        peer: PeerId::random(),
        namespaces: vec![ns("chat")],
        cause: crate::server::Removal::Unregister,
    };
    let (removal, all) = one(&mut subs, &removed);
    assert!(matches!(*removal, Push::Removed { .. }));
    assert!(Arc::ptr_eq(&removal, &all), "the same news for all of them");
}

#[test]
fn given_closed_subscriptions_then_changes_no_longer_look_at_them() {
    let mut subs = subscriptions(8);
    let (new, _pushes) = new_sub(0, Some("chat"), 8);
    let key = subs.open(PeerId::random(), connection(1), new).unwrap();
    let (new, _all) = new_sub(1, None, 8);
    let every = subs.open(PeerId::random(), connection(1), new).unwrap();
    assert_eq!(subs.index.of(&[ns("chat")]).len(), 2);
    subs.closed(key);
    assert_eq!(subs.index.of(&[ns("chat"), ns("files")]), vec![every]);
    subs.closed(every);
    assert!(subs.index.of(&[ns("chat")]).is_empty());
    assert!(subs.index.by_namespace.is_empty());
}
