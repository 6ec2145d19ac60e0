use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use futures::{executor::block_on, io::Cursor};
use libp2p::{identity::Keypair, PeerId};

use super::*;
use crate::{
    codec::{Cookie, DiscoverPage, Namespace, RecordFormat, SignedRecord},
    server::rules::cookie,
};

fn ns() -> Namespace {
    Namespace::new("chat").unwrap()
}

fn registration() -> Registration {
    let key = Keypair::generate_ed25519();
    Registration {
        namespace: ns(),
        record: SignedRecord::new(&key, vec![], RecordFormat::Standard).unwrap(),
        ttl: 7200,
    }
}

/// A live page of `n` registrations whose cookie says `seq`.
fn page(seq: u64, n: usize) -> Queued {
    let push = Push::Page(Ok(DiscoverPage {
        registrations: (0..n).map(|_| registration()).collect(),
        cookie: Some(cookie::encode(seq, None, Some(&ns()))),
        skipped: 0,
    }));
    Queued::new(push, false)
}

fn removed() -> Queued {
    let push = Push::Removed {
        peer: PeerId::random(),
        namespaces: vec![ns()],
    };
    Queued::new(push, false)
}

/// (registrations, cookie's sequence number) of a page; `None` for anything else.
fn shape(queued: &Queued) -> Option<(usize, u64)> {
    let Push::Page(Ok(page)) = &*queued.push else {
        return None;
    };
    let cookie = page.cookie.as_ref().unwrap();
    let (seq, _) = cookie::parse(
        cookie,
        Some(&ns()),
        u64::MAX,
        crate::server::ServedFormats::All,
    )
    .expect("a cookie of the namespace");
    Some((page.registrations.len(), seq))
}

fn registrations(batch: &[Queued]) -> Vec<Registration> {
    batch
        .iter()
        .filter_map(|q| match &*q.push {
            Push::Page(Ok(page)) => Some(page.registrations.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn given_consecutive_live_pages_when_coalesced_then_one_page_with_all_and_the_last_cookie() {
    let batch = vec![page(11, 1), page(12, 1), page(15, 1)];
    let before = registrations(&batch);
    let out = coalesce(batch, 64 * 1024);
    assert_eq!(out.len(), 1);
    assert_eq!(shape(&out[0]), Some((3, 15)));
    assert!(!out[0].more);
    assert_eq!(registrations(&out), before, "in order");
}

#[test]
fn given_removals_between_pages_when_coalesced_then_they_keep_their_place() {
    let batch = vec![
        page(1, 1),
        page(2, 1),
        removed(),
        page(3, 1),
        removed(),
        removed(),
        page(4, 1),
        page(5, 1),
    ];
    let out = coalesce(batch, 64 * 1024);
    let shapes: Vec<_> = out.iter().map(shape).collect();
    assert_eq!(
        shapes,
        vec![Some((2, 2)), None, Some((1, 3)), None, None, Some((2, 5))]
    );
}

#[test]
fn given_pages_over_the_message_cap_when_coalesced_then_each_merged_page_fits() {
    let one = wire_len(&[registration()]);
    // Room for three registrations per message, not four.
    let cap = response_overhead() + 3 * one + one / 2;
    let batch: Vec<Queued> = (1..=8).map(|seq| page(seq, 1)).collect();
    let out = coalesce(batch, cap);
    let shapes: Vec<_> = out.iter().map(shape).collect();
    assert_eq!(shapes, vec![Some((3, 3)), Some((3, 6)), Some((2, 8))]);
    for queued in &out {
        assert!(
            queued.push.encoded_len() <= cap,
            "{}",
            queued.push.encoded_len()
        );
    }
}

#[test]
fn given_a_replay_page_with_more_to_come_or_an_error_when_coalesced_then_neither_merges() {
    let mut replay = page(3, 2);
    replay.more = true;
    let error = Push::Page(Err(ErrorResponse::new(ErrorCode::Unavailable, "full")));
    let error = Queued::new(error, false);
    let out = coalesce(
        vec![page(1, 1), replay, page(4, 1), error, page(5, 1)],
        1 << 16,
    );
    let shapes: Vec<_> = out.iter().map(|q| (shape(q), q.more)).collect();
    assert_eq!(
        shapes,
        vec![
            (Some((1, 1)), false),
            (Some((2, 3)), true),
            (Some((1, 4)), false),
            (None, false),
            (Some((1, 5)), false),
        ]
    );
}

/// What a subscriber reads from `bytes`: every frame, decoded.
fn read_all(bytes: Vec<u8>) -> Vec<Push> {
    let mut reader = Cursor::new(bytes);
    let mut pushes = Vec::new();
    while let Some(body) = block_on(read_frame(&mut reader, 1 << 16)).unwrap() {
        pushes.push(Push::decode(&body).unwrap());
    }
    pushes
}

fn limits() -> PushLimits {
    PushLimits {
        max_request_size: 1024,
        max_message_size: 1 << 16,
        timeout: Duration::from_secs(1),
        queue: 64,
    }
}

#[test]
fn given_a_batch_when_written_then_the_subscriber_reads_the_coalesced_pushes() {
    let batch = vec![page(1, 1), page(2, 1), removed(), page(3, 1)];
    let expected: Vec<Push> = coalesce(
        batch
            .iter()
            .map(|q| Queued {
                push: q.push.clone(),
                more: q.more,
                changed: q.changed,
            })
            .collect(),
        1 << 16,
    )
    .into_iter()
    .map(|q| Push::clone(&q.push))
    .collect();
    let mut stream = Cursor::new(Vec::new());
    let written =
        block_on(limits().write_batch(&mut stream, batch, &PushDelays::default())).unwrap();
    assert_eq!(written, Written::Done);
    let read = read_all(stream.into_inner());
    assert_eq!(read.len(), 3);
    assert_eq!(read, expected);
}

#[test]
fn given_an_error_page_in_a_batch_when_written_then_nothing_after_it_goes_out() {
    let error = Push::Page(Err(ErrorResponse::new(ErrorCode::Unavailable, "full")));
    let batch = vec![page(1, 1), Queued::new(error.clone(), false), page(2, 1)];
    let mut stream = Cursor::new(Vec::new());
    let written =
        block_on(limits().write_batch(&mut stream, batch, &PushDelays::default())).unwrap();
    assert_eq!(written, Written::Ended);
    let read = read_all(stream.into_inner());
    assert_eq!(read.len(), 2);
    assert_eq!(read[1], error);
}

#[test]
fn given_a_replay_page_with_more_when_written_then_the_next_page_is_asked_for() {
    let mut replay = page(3, 2);
    replay.more = true;
    let mut stream = Cursor::new(Vec::new());
    let written =
        block_on(limits().write_batch(&mut stream, vec![replay], &PushDelays::default())).unwrap();
    assert_eq!(written, Written::More);
}

#[test]
fn given_queued_pushes_and_a_dropped_queue_when_drained_then_all_come_before_the_end() {
    let (mut sender, mut receiver) = futures::channel::mpsc::channel(8);
    for seq in 2..=4 {
        sender.try_send(page(seq, 1)).unwrap();
    }
    drop(sender);
    let (batch, dropped) = drain(page(1, 1), &mut receiver, 64);
    assert_eq!(batch.len(), 4);
    assert!(dropped);
    let (mut sender, mut receiver) = futures::channel::mpsc::channel(8);
    for seq in 2..=9 {
        sender.try_send(page(seq, 1)).unwrap();
    }
    let (batch, dropped) = drain(page(1, 1), &mut receiver, 5);
    assert_eq!(
        (batch.len(), dropped),
        (5, false),
        "at most the queue's bound"
    );
}

#[test]
fn a_cookie_in_a_merged_page_continues_where_a_discover_would() {
    // The merged page's cookie is the last page's: a DISCOVER from it returns what came
    // after the last registration sent, as it would after the separate pages.
    let out = coalesce(vec![page(7, 1), page(9, 1)], 1 << 16);
    let Push::Page(Ok(merged)) = &*out[0].push else {
        panic!("a page");
    };
    let expected: Cookie = cookie::encode(9, None, Some(&ns()));
    assert_eq!(merged.cookie.as_ref(), Some(&expected));
}

#[test]
fn given_a_page_shared_with_other_queues_when_merged_then_theirs_stays_as_it_was() {
    let shared = page(7, 1);
    let other = Queued {
        push: std::sync::Arc::clone(&shared.push),
        more: false,
        changed: None,
    };
    let out = coalesce(vec![shared, page(9, 2)], 1 << 16);
    assert_eq!(
        out.iter().map(shape).collect::<Vec<_>>(),
        vec![Some((3, 9))]
    );
    assert_eq!(shape(&other), Some((1, 7)), "the other queue's page");
}

/// A subscriber's end of a push stream: it sent its subscription and then keeps its side open
/// (reads after it never complete); what the server writes lands in `written`.
struct Subscriber {
    sent: Cursor<Vec<u8>>,
    written: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Subscriber {
    fn subscribed_to(namespace: Namespace) -> Self {
        let subscribe = Subscribe {
            namespace: Some(namespace),
            cookie: None,
            limit: None,
        };
        let mut sent = Vec::new();
        append_frame(&mut sent, &subscribe.encode(), 1024).unwrap();
        Self {
            sent: Cursor::new(sent),
            written: Default::default(),
        }
    }
}

impl futures::AsyncRead for Subscriber {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.sent.position() == self.sent.get_ref().len() as u64 {
            return Poll::Pending;
        }
        Pin::new(&mut self.sent).poll_read(cx, buf)
    }
}

impl futures::AsyncWrite for Subscriber {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.written.lock().unwrap().extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// [`serve`] for a [`Subscriber`] of `ns()` through a gate, polled by hand.
struct Served {
    serving: Pin<Box<dyn Future<Output = Result<(), PushError>>>>,
    written: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    /// What the stream counted of its pushes' waits.
    delays: PushDelays,
    /// What the stream told the handler after the subscription.
    from_push: mpsc::Receiver<FromPush>,
}

impl Served {
    /// Serves subscription `id` through `gate` until it has read the subscription; returns it
    /// with what the behaviour was handed.
    fn start(id: u64, gate: &Gate) -> (Self, NewSubscription) {
        let subscriber = Subscriber::subscribed_to(ns());
        let written = subscriber.written.clone();
        let (to_handler, from_push) = mpsc::channel(4);
        let delays = PushDelays::default();
        let serving = Box::pin(serve(
            id,
            subscriber,
            to_handler,
            limits(),
            gate.clone(),
            delays.clone(),
        ));
        let mut served = Self {
            serving,
            written,
            delays,
            from_push,
        };
        assert!(served.poll().is_pending());
        let Ok(FromPush::Subscribe(new)) = served.from_push.try_recv() else {
            panic!("the subscription reaches the handler");
        };
        (served, new)
    }

    fn poll(&mut self) -> Poll<Result<(), PushError>> {
        self.poll_with(futures::task::noop_waker_ref())
    }

    fn poll_with(&mut self, waker: &std::task::Waker) -> Poll<Result<(), PushError>> {
        self.serving.as_mut().poll(&mut Context::from_waker(waker))
    }

    /// What it wrote since the last call.
    fn read(&self) -> Vec<Push> {
        read_all(std::mem::take(&mut *self.written.lock().unwrap()))
    }
}

#[test]
fn while_a_request_waits_for_the_behaviour_pushes_wait_then_go_out_together() {
    let gate = Gate::new(Duration::ZERO);
    let (mut served, new) = Served::start(7, &gate);
    assert_eq!((new.id, new.namespace), (7, Some(ns())));
    let mut queue = new.sender;
    let mut bells = Bells::default();

    // A request was read and waits for the behaviour: what is queued meanwhile waits.
    let request = gate.pass();
    for seq in 1..=3 {
        queue.try_send(page(seq, 1), &mut bells).unwrap();
        assert!(served.poll().is_pending());
    }
    assert!(
        served.read().is_empty(),
        "nothing written while the request waits"
    );

    drop(request);
    assert!(served.poll().is_pending());
    let read = served.read();
    assert_eq!(
        read.len(),
        1,
        "the three pushes go out as one page: {read:?}"
    );
    let Push::Page(Ok(page)) = &read[0] else {
        panic!("a page: {read:?}");
    };
    assert_eq!(page.registrations.len(), 3);
    assert_eq!(page.cookie, Some(cookie::encode(3, None, Some(&ns()))));

    // The behaviour ends the subscription: its end page, and the stream is done.
    drop(queue);
    assert!(matches!(served.poll(), Poll::Ready(Ok(()))));
    let read = served.read();
    assert!(matches!(read[..], [Push::Page(Err(_))]), "{read:?}");
}

/// `queued` as the push of a change that reached the server `ago`.
fn changed_ago(mut queued: Queued, ago: Duration) -> Queued {
    queued.changed = Some(Instant::now() - ago);
    queued
}

#[test]
fn the_pushes_of_changes_it_writes_are_counted_by_how_long_they_waited() {
    let gate = Gate::new(Duration::ZERO);
    let (mut served, new) = Served::start(5, &gate);
    let mut queue = new.sender;
    let mut bells = Bells::default();
    let request = gate.pass();
    let ago = Duration::from_millis(3);
    queue
        .try_send(changed_ago(page(1, 1), ago), &mut bells)
        .unwrap();
    queue
        .try_send(changed_ago(removed(), ago), &mut bells)
        .unwrap();
    // A page that is no change's push (a replayed one): not counted.
    queue.try_send(page(2, 1), &mut bells).unwrap();
    assert!(served.poll().is_pending());
    assert_eq!(served.delays.snapshot().count(), 0, "nothing written yet");

    drop(request);
    assert!(served.poll().is_pending());
    assert_eq!(served.read().len(), 3, "written");
    let counted = served.delays.snapshot();
    assert_eq!(counted.count(), 2, "the two changes' pushes: {counted:?}");
    assert!(
        counted.quantile(0.0).unwrap() >= Duration::from_millis(4),
        "both waited at least 3 ms, the 4 ms bucket or later: {counted:?}"
    );
    assert!(counted.sum >= 2 * ago);
}

#[test]
fn pushes_dropped_when_their_subscription_ended_are_not_counted() {
    let gate = Gate::new(Duration::ZERO);
    let (mut served, new) = Served::start(6, &gate);
    let mut queue = new.sender;
    let mut bells = Bells::default();
    let request = gate.pass();
    queue
        .try_send(changed_ago(page(1, 1), Duration::ZERO), &mut bells)
        .unwrap();
    assert!(served.poll().is_pending());
    drop(queue);
    drop(request);
    assert!(matches!(served.poll(), Poll::Ready(Ok(()))));
    assert_eq!(served.delays.snapshot().count(), 0);
}

#[test]
fn a_subscription_ended_while_its_pushes_waited_gets_only_its_end() {
    let gate = Gate::new(Duration::ZERO);
    let (mut served, new) = Served::start(1, &gate);
    let mut queue = new.sender;
    let mut bells = Bells::default();
    let request = gate.pass();
    for seq in 1..=3 {
        queue.try_send(page(seq, 1), &mut bells).unwrap();
    }
    assert!(served.poll().is_pending());
    // The behaviour drops the queue: the subscriber fell behind.
    drop(queue);
    assert!(served.poll().is_pending(), "the end waits for the gate too");
    drop(request);
    assert!(matches!(served.poll(), Poll::Ready(Ok(()))));
    let read = served.read();
    let [Push::Page(Err(end))] = &read[..] else {
        panic!("only the end: {read:?}");
    };
    assert_eq!(end.code, ErrorCode::Unavailable);
}

/// A waker that counts its wakes.
#[derive(Default)]
struct Wakes(std::sync::atomic::AtomicUsize);

impl futures::task::ArcWake for Wakes {
    fn wake_by_ref(this: &std::sync::Arc<Self>) {
        this.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Wakes {
    fn waker() -> (std::sync::Arc<Self>, std::task::Waker) {
        let wakes = std::sync::Arc::new(Self::default());
        (wakes.clone(), futures::task::waker(wakes))
    }

    fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn a_push_queued_while_the_gate_is_shut_wakes_its_stream_only_once_it_is_quiet() {
    let gate = Gate::new(Duration::ZERO);
    let (mut served, new) = Served::start(3, &gate);
    let (wakes, waker) = Wakes::waker();
    assert!(served.poll_with(&waker).is_pending(), "nothing queued yet");
    let mut queue = new.sender;
    let mut bells = Bells::default();

    let request = gate.pass();
    queue.try_send(page(1, 1), &mut bells).unwrap();
    queue.try_send(page(2, 1), &mut bells).unwrap();
    assert_eq!(wakes.count(), 0, "queuing does not wake the stream");
    assert!(
        bells.ring_if_quiet(&gate).is_some(),
        "a request waits: the behaviour looks again later"
    );
    assert_eq!(wakes.count(), 0, "not while a request waits");

    drop(request);
    assert_eq!(
        bells.ring_if_quiet(&gate),
        None,
        "rung: nothing left to ring"
    );
    assert_eq!(wakes.count(), 1, "one wake for both pushes");
    assert!(served.poll_with(&waker).is_pending());
    let read = served.read();
    let [Push::Page(Ok(written))] = &read[..] else {
        panic!("the two pushes as one page: {read:?}");
    };
    assert_eq!(written.registrations.len(), 2);

    // Quiet now: the next push's bell rings at the behaviour's next look.
    queue.try_send(page(3, 1), &mut bells).unwrap();
    assert_eq!(wakes.count(), 1);
    assert_eq!(bells.ring_if_quiet(&gate), None);
    assert_eq!(wakes.count(), 2);
}

#[test]
fn a_dropped_queue_wakes_its_stream_at_once() {
    let gate = Gate::new(Duration::ZERO);
    let (mut served, new) = Served::start(4, &gate);
    let (wakes, waker) = Wakes::waker();
    assert!(served.poll_with(&waker).is_pending());
    drop(new.sender);
    assert_eq!(
        wakes.count(),
        1,
        "no bell list needed to end a subscription"
    );
    assert!(matches!(served.poll_with(&waker), Poll::Ready(Ok(()))));
    let read = served.read();
    assert!(matches!(read[..], [Push::Page(Err(_))]), "{read:?}");
}

/// The cookie of a page [`page`] made with `seq`.
fn cookie_of(seq: u64) -> Cookie {
    cookie::encode(seq, None, Some(&ns()))
}

#[test]
fn a_stream_left_behind_writes_only_the_removals_that_waited_and_asks_for_a_replay_from_its_last_cookie(
) {
    let gate = Gate::new(Duration::ZERO);
    let (mut served, new) = Served::start(2, &gate);
    let mut queue = new.sender;
    let mut bells = Bells::default();
    queue.try_send(page(1, 1), &mut bells).unwrap();
    assert!(served.poll().is_pending());
    assert_eq!(
        served.read().len(),
        1,
        "written at once: the server is quiet"
    );

    // A request waits; pushes queue up until the behaviour leaves the stream behind.
    let request = gate.pass();
    queue.try_send(page(2, 1), &mut bells).unwrap();
    let removal = removed();
    let expected = removal.push.clone();
    queue.try_send(removal, &mut bells).unwrap();
    queue.try_send(page(3, 1), &mut bells).unwrap();
    queue.fall_behind();
    assert!(served.poll().is_pending());
    assert!(served.read().is_empty(), "nothing written, only dropped");
    assert!(
        queue.try_send(page(4, 1), &mut bells).is_ok(),
        "the queue was emptied without waiting for the gate"
    );
    assert!(served.poll().is_pending());

    // The behaviour lets it resume: in a quiet moment, the removal it kept, and the ask.
    queue.resume();
    assert!(served.poll().is_pending());
    assert!(served.read().is_empty(), "not while the request waits");
    assert!(served.from_push.try_recv().is_err());
    drop(request);
    assert!(served.poll().is_pending());
    let read = served.read();
    assert_eq!(read, vec![(*expected).clone()], "only the removal");
    match served.from_push.try_recv() {
        Ok(FromPush::Resume(2, cookie)) => assert_eq!(cookie, Some(cookie_of(1))),
        other => panic!("expected a resume, got {other:?}"),
    }

    // The replay goes out as any page, and the subscription goes on.
    queue.try_send(page(3, 2), &mut bells).unwrap();
    assert!(served.poll().is_pending());
    let read = served.read();
    assert!(
        matches!(&read[..], [Push::Page(Ok(p))] if p.registrations.len() == 2),
        "{read:?}"
    );
    assert!(served.from_push.try_recv().is_err(), "nothing more to ask");
}

#[test]
fn a_stream_left_behind_with_nothing_queued_asks_from_the_subscriptions_own_cookie() {
    let gate = Gate::new(Duration::ZERO);
    let (mut served, new) = Served::start(3, &gate);
    let mut queue = new.sender;
    let request = gate.pass();
    queue.fall_behind();
    queue.resume();
    assert!(served.poll().is_pending());
    assert!(
        served.from_push.try_recv().is_err(),
        "not while a request waits"
    );
    drop(request);
    assert!(served.poll().is_pending());
    assert!(served.read().is_empty(), "nothing to write");
    match served.from_push.try_recv() {
        // It wrote nothing and subscribed without a cookie.
        Ok(FromPush::Resume(3, None)) => {}
        other => panic!("expected a resume, got {other:?}"),
    }
}
