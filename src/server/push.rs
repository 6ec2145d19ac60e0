//! The server's side of a push stream ([`PUSH_PROTOCOL`]; docs/push.md): the inbound upgrade
//! that accepts it beside the rendezvous protocol, and the task that reads the one
//! DISCOVER_SUBSCRIBE and then writes what the behaviour queues for it.

use std::{
    convert::Infallible,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{
    channel::mpsc,
    future::{self, Either},
    AsyncReadExt, AsyncWriteExt, SinkExt,
};
use libp2p::{
    core::{upgrade::UpgradeInfo, InboundUpgrade},
    swarm::{Stream, StreamProtocol},
};

use super::{
    gate::{Bell, Bells, Gate},
    rules::response_overhead,
    subscriptions::{NewSubscription, Queued},
    PushDelays,
};
use crate::{
    codec::{
        append_frame, read_frame, registration_wire_len, write_frame, Cookie, DecodeError,
        ErrorCode, ErrorResponse, Push, Registration, Subscribe,
    },
    PUSH_PROTOCOL,
};

/// The protocols a server connection accepts streams on: rendezvous, and push unless it is off.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub(crate) rendezvous: StreamProtocol,
    pub(crate) push: bool,
}

impl UpgradeInfo for Inbound {
    type Info = StreamProtocol;
    type InfoIter = Vec<StreamProtocol>;

    fn protocol_info(&self) -> Self::InfoIter {
        let mut protocols = vec![self.rendezvous.clone()];
        if self.push {
            protocols.push(PUSH_PROTOCOL);
        }
        protocols
    }
}

impl InboundUpgrade<Stream> for Inbound {
    type Output = (Stream, StreamProtocol);
    type Error = Infallible;
    type Future = future::Ready<Result<Self::Output, Infallible>>;

    fn upgrade_inbound(self, stream: Stream, protocol: StreamProtocol) -> Self::Future {
        future::ready(Ok((stream, protocol)))
    }
}

/// A subscription's end of its stream's queue of pushes (bounded: [`PushLimits::queue`]).
/// Adding a push does not wake the stream: it lists the stream's bell, which the behaviour
/// rings in the next quiet moment ([`Bells`]). Dropped, it closes the queue and wakes the
/// stream at once (it then writes what was queued, or the end, after its turn at the gate).
#[derive(Debug)]
pub struct PushQueue {
    sender: mpsc::Sender<Queued>,
    bell: Arc<Bell>,
}

impl PushQueue {
    /// A queue of `capacity` pushes (at least one), the stream's end of it, and its bell.
    pub(crate) fn new(capacity: usize) -> (Self, mpsc::Receiver<Queued>, Arc<Bell>) {
        // A channel holds its buffer plus one message per sender: `capacity` in all.
        let (sender, receiver) = mpsc::channel(capacity.saturating_sub(1));
        let bell = Arc::new(Bell::default());
        let queue = Self {
            sender,
            bell: bell.clone(),
        };
        (queue, receiver, bell)
    }

    /// Adds `queued`, and lists the stream's bell in `bells`; or says why not (full, or the
    /// stream is gone).
    pub(crate) fn try_send(
        &mut self,
        queued: Queued,
        bells: &mut Bells,
    ) -> Result<(), mpsc::TrySendError<Queued>> {
        self.sender.try_send(queued)?;
        bells.list(&self.bell);
        Ok(())
    }

    /// Whether the stream is writing a batch: a queue that fills meanwhile belongs to a
    /// subscriber (or a connection) slower than its pushes.
    pub(crate) fn is_writing(&self) -> bool {
        self.bell.is_writing()
    }

    /// Leaves the stream behind: its queue filled while it waited for a quiet moment, and the
    /// behaviour queues nothing more. The stream drops what is queued (but removals, which it
    /// keeps) without writing it, and waits for [`PushQueue::resume`].
    pub(crate) fn fall_behind(&mut self) {
        self.bell.set_behind();
    }

    /// Lets the stream, left behind, catch up (in a quiet moment): it writes the removals it
    /// kept and asks for a replay from the last cookie it wrote ([`FromPush::Resume`]).
    pub(crate) fn resume(&self) {
        self.bell.resume();
    }

    /// Adds `queued` as the last push and closes the queue (the stream wakes at once); if the
    /// queue is full, only closes it.
    pub(crate) fn send_last(mut self, queued: Queued) {
        let _ = self.sender.try_send(queued);
    }
}

impl Drop for PushQueue {
    fn drop(&mut self) {
        // Closed before the ring, so that the woken stream sees the end.
        self.sender.close_channel();
        self.bell.ring();
    }
}

/// What a push stream waits for.
#[derive(Debug)]
enum Next {
    /// A push.
    Push(Queued),
    /// Nothing queued, and the behaviour lets the stream, left behind, catch up
    /// ([`PushQueue::resume`]).
    Resume,
    /// The queue was closed, after what it held.
    Closed,
}

/// The next push of `pushes` once `bell` rings, or that the stream may resume. A push already
/// queued is taken at once, rung or not.
async fn next(pushes: &mut mpsc::Receiver<Queued>, bell: &Bell) -> Next {
    let mut take = || match pushes.try_recv() {
        Ok(queued) => Some(Next::Push(queued)),
        Err(mpsc::TryRecvError::Closed) => Some(Next::Closed),
        Err(mpsc::TryRecvError::Empty) => bell.take_resume().then_some(Next::Resume),
    };
    future::poll_fn(|cx| {
        if let Some(next) = take() {
            return std::task::Poll::Ready(next);
        }
        bell.register(cx);
        // Queued (and rung) between the look and the registration.
        match take() {
            Some(next) => std::task::Poll::Ready(next),
            None => std::task::Poll::Pending,
        }
    })
    .await
}

/// What a push stream tells its connection's handler.
#[derive(Debug)]
pub(crate) enum FromPush {
    /// The subscription it read.
    Subscribe(NewSubscription),
    /// It wrote a replayed page after which the replay goes on: the next one, please.
    NextPage(u64),
    /// It was left behind and dropped what waited: a replay from the last cookie it wrote
    /// (`None`: it wrote none, and the subscription had none), please.
    Resume(u64, Option<Cookie>),
}

/// The limits a push stream is served with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PushLimits {
    /// The largest DISCOVER_SUBSCRIBE read.
    pub(crate) max_request_size: usize,
    /// The largest message written.
    pub(crate) max_message_size: usize,
    /// How long reading the subscription, or one write, may take.
    pub(crate) timeout: Duration,
    /// Pushes queued at most ([`super::Config::with_push_queue`]).
    pub(crate) queue: usize,
}

/// Why a push stream ended other than by its subscriber closing it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PushError {
    #[error("stream: {0}")]
    Io(String),
    #[error("the stream was idle for longer than {0:?}")]
    Timeout(Duration),
    #[error("undecodable subscription: {0}")]
    Decode(DecodeError),
    #[error("the server is shutting down this connection")]
    Gone,
}

/// Runs `future` for at most `timeout`.
async fn within<T, E: ToString>(
    timeout: Duration,
    future: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, PushError> {
    match crate::timer::within(timeout, future).await {
        Some(result) => result.map_err(|e| PushError::Io(e.to_string())),
        None => Err(PushError::Timeout(timeout)),
    }
}

impl PushLimits {
    /// Writes `push` to `stream`, within the timeout.
    async fn write<S: futures::AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        push: &Push,
    ) -> Result<(), PushError> {
        within(
            self.timeout,
            write_frame(stream, &push.encode(), self.max_message_size),
        )
        .await
    }

    /// Writes `push` as the stream's last message and closes it; the subscription is over
    /// whether the subscriber reads it or not.
    async fn write_last<S: futures::AsyncWrite + Unpin>(&self, stream: &mut S, push: &Push) {
        let _ = self.write(stream, push).await;
        let _ = stream.close().await;
    }
}

/// Reads the stream's DISCOVER_SUBSCRIBE: `None` when the subscriber closed the stream
/// first; an undecodable one is answered with its error page.
async fn read_subscribe<S: futures::AsyncRead + futures::AsyncWrite + Unpin>(
    stream: &mut S,
    limits: &PushLimits,
) -> Result<Option<Subscribe>, PushError> {
    let Some(body) = within(
        limits.timeout,
        read_frame(&mut *stream, limits.max_request_size),
    )
    .await?
    else {
        return Ok(None);
    };
    match Subscribe::decode(&body) {
        Ok(subscribe) => Ok(Some(subscribe)),
        Err(DecodeError::InvalidRequest { error, kind }) => {
            limits
                .write_last(stream, &Push::Page(Err(error.clone())))
                .await;
            Err(PushError::Decode(DecodeError::InvalidRequest {
                kind,
                error,
            }))
        }
        Err(other) => Err(PushError::Decode(other)),
    }
}

/// Serves subscription `id` on `stream`: reads its DISCOVER_SUBSCRIBE, hands it to the
/// behaviour through `handler`, then writes what the behaviour queues until the subscriber
/// closes the stream or the behaviour ends the subscription (an error page; or, when it drops
/// the queue because the subscriber fell behind, an `E_UNAVAILABLE` page written here instead
/// of what was still queued).
///
/// A queue that fills while the stream waits for a quiet moment is the server's doing, not the
/// subscriber's: the behaviour then leaves the stream behind rather than ending it
/// ([`PushQueue::fall_behind`]). The stream drops the registrations that waited, unwritten
/// (stale: newer ones come and are not queued), and keeps the removals among them (at most a
/// queue's worth). When the behaviour lets it resume ([`PushQueue::resume`]), it writes those
/// removals in a quiet moment and asks for a replay from the last cookie it wrote
/// ([`FromPush::Resume`]): the subscriber gets, as replayed pages, what a DISCOVER from its
/// cookie would have brought it, and the subscription goes on. A queue that fills while the
/// stream is writing ends the subscription.
///
/// The stream wakes when the behaviour rings its bell, in a quiet moment after pushes were
/// queued ([`PushQueue`]), and each write still waits for the stream's turn through the
/// server's `gate` (a request may have come since): while any request waits for the behaviour,
/// pushes wait (gate.rs). What is queued when the stream gets to write goes
/// out as one batch ([`coalesce`]d, one write, one flush): a subscriber that reads slower than
/// registrations come, or that waited behind requests, gets fewer, larger pages rather than
/// falling further behind. Each push of a change that it writes is counted in `delays`.
pub(crate) async fn serve<S: futures::AsyncRead + futures::AsyncWrite + Unpin>(
    id: u64,
    mut stream: S,
    mut handler: mpsc::Sender<FromPush>,
    limits: PushLimits,
    gate: Gate,
    delays: PushDelays,
) -> Result<(), PushError> {
    let Some(subscribe) = read_subscribe(&mut stream, &limits).await? else {
        return Ok(());
    };
    // The cookie that covers what the subscriber has: where a replay after falling behind
    // starts.
    let mut cookie = subscribe.cookie.clone();
    let (sender, mut pushes, bell) = PushQueue::new(limits.queue);
    let new = NewSubscription {
        id,
        namespace: subscribe.namespace,
        cookie: subscribe.cookie,
        limit: subscribe.limit,
        sender,
    };
    handler
        .send(FromPush::Subscribe(new))
        .await
        .map_err(|_| PushError::Gone)?;
    let (mut reader, mut writer) = stream.split();
    // The subscriber sends nothing after its subscription: end of stream (or anything else)
    // from it ends the subscription.
    let mut closed = std::pin::pin!(async move {
        let mut byte = [0u8; 1];
        let _ = reader.read(&mut byte).await;
    });
    // Removals that waited while the stream was behind: written when it resumes.
    let mut kept: Vec<Queued> = Vec::new();
    loop {
        let first =
            match future::select(std::pin::pin!(next(&mut pushes, &bell)), closed.as_mut()).await {
                Either::Left((next, _)) => next,
                Either::Right(((), _)) => return Ok(()),
            };
        if let Next::Push(first) = first {
            // Requests first. Meanwhile more pushes queue up and go out with this one, or the
            // queue fills and the behaviour leaves the stream behind. (Dropping what waits
            // needs no turn.)
            if !bell.is_behind() {
                if let Either::Right(((), _)) =
                    future::select(std::pin::pin!(gate.turn()), closed.as_mut()).await
                {
                    return Ok(());
                }
            }
            // One more than the queue holds, to see its end behind a full queue.
            let (batch, dropped) = drain(first, &mut pushes, limits.queue + 1);
            if bell.is_behind() {
                if let Some(batch) = keep_removals(batch, dropped, &mut kept, limits.queue) {
                    ended(&mut writer, batch, dropped, &limits, &delays).await?;
                    return Ok(());
                }
                continue;
            }
            if dropped {
                ended(&mut writer, batch, dropped, &limits, &delays).await?;
                return Ok(());
            }
            match write(&mut writer, batch, &mut cookie, &limits, &delays, &bell).await? {
                Written::Ended => return Ok(()),
                Written::More => handler
                    .send(FromPush::NextPage(id))
                    .await
                    .map_err(|_| PushError::Gone)?,
                Written::Done => {}
            }
            continue;
        }
        if let Either::Right(((), _)) =
            future::select(std::pin::pin!(gate.turn()), closed.as_mut()).await
        {
            return Ok(());
        }
        if let Next::Closed = first {
            ended(&mut writer, Vec::new(), true, &limits, &delays).await?;
            return Ok(());
        }
        // Resume: the removals that waited, then a replay from the last cookie written.
        let batch = std::mem::take(&mut kept);
        if write(&mut writer, batch, &mut cookie, &limits, &delays, &bell).await? == Written::Ended
        {
            return Ok(());
        }
        handler
            .send(FromPush::Resume(id, cookie.clone()))
            .await
            .map_err(|_| PushError::Gone)?;
    }
}

/// A batch taken while the stream is behind: its removals are kept (the latest `max` of all
/// kept), its registrations dropped; or, when the behaviour ended the subscription meanwhile
/// (`dropped`, or an error page in it), the batch to end with.
fn keep_removals(
    batch: Vec<Queued>,
    dropped: bool,
    kept: &mut Vec<Queued>,
    max: usize,
) -> Option<Vec<Queued>> {
    if dropped || has_error_page(&batch) {
        return Some(batch);
    }
    kept.extend(
        batch
            .into_iter()
            .filter(|q| matches!(*q.push, Push::Removed { .. })),
    );
    if kept.len() > max {
        kept.drain(..kept.len() - max);
    }
    None
}

/// Whether `batch` holds an error page (the behaviour ended the subscription with it).
fn has_error_page(batch: &[Queued]) -> bool {
    batch.iter().any(|q| matches!(*q.push, Push::Page(Err(_))))
}

/// Ends the stream with `batch`, in which the behaviour ended the subscription: its error page
/// when it has one (written after what comes before it); else (the behaviour dropped the queue:
/// the subscriber fell behind) an `E_UNAVAILABLE` page alone. What waited is stale then: the
/// subscriber's last cookie covers what it received, and DISCOVER from it brings the rest;
/// writing the queue would only cost the server (and a subscriber that does not read would
/// not take it).
async fn ended<S: futures::AsyncWrite + Unpin>(
    writer: &mut S,
    batch: Vec<Queued>,
    dropped: bool,
    limits: &PushLimits,
    delays: &PushDelays,
) -> Result<(), PushError> {
    if dropped && !has_error_page(&batch) {
        limits.write_last(writer, &fell_behind(limits)).await;
        return Ok(());
    }
    limits.write_batch(writer, batch, delays).await?;
    Ok(())
}

/// Writes `batch` (nothing when it is empty), the stream's bell saying it is writing
/// meanwhile; once written, `cookie` is its last OK page's.
async fn write<S: futures::AsyncWrite + Unpin>(
    writer: &mut S,
    batch: Vec<Queued>,
    cookie: &mut Option<Cookie>,
    limits: &PushLimits,
    delays: &PushDelays,
    bell: &Bell,
) -> Result<Written, PushError> {
    if batch.is_empty() {
        return Ok(Written::Done);
    }
    let covered = last_cookie(&batch);
    bell.set_writing(true);
    let written = limits.write_batch(writer, batch, delays).await;
    bell.set_writing(false);
    if covered.is_some() {
        *cookie = covered;
    }
    written
}

/// The cookie of the last OK page of `batch`: once it is written, what covers everything the
/// subscriber received.
fn last_cookie(batch: &[Queued]) -> Option<Cookie> {
    batch.iter().rev().find_map(|q| match &*q.push {
        Push::Page(Ok(page)) => page.cookie.clone(),
        _ => None,
    })
}

/// The page that ends a subscription whose queue the behaviour dropped.
fn fell_behind(limits: &PushLimits) -> Push {
    Push::Page(Err(ErrorResponse::new(
        ErrorCode::Unavailable,
        format!(
            "push subscription ended: this stream fell {} pushes behind (or the server's \
             change feed did); continue with DISCOVER from your last cookie",
            limits.queue
        ),
    )))
}

/// `first` and what else is queued already (at most `max` in all), and whether the behaviour
/// dropped the queue (after what was taken).
fn drain(first: Queued, pushes: &mut mpsc::Receiver<Queued>, max: usize) -> (Vec<Queued>, bool) {
    let mut batch = vec![first];
    while batch.len() < max {
        match pushes.try_recv() {
            Ok(queued) => batch.push(queued),
            Err(mpsc::TryRecvError::Closed) => return (batch, true),
            Err(mpsc::TryRecvError::Empty) => break,
        }
    }
    (batch, false)
}

/// What writing a batch left to do.
#[derive(Debug, PartialEq, Eq)]
enum Written {
    /// Nothing: wait for the next pushes.
    Done,
    /// A replayed page after which the replay goes on: ask for the next one.
    More,
    /// An error page ended the subscription (the stream is closed).
    Ended,
}

impl PushLimits {
    /// Writes `batch`, [`coalesce`]d, in one write and one flush, within the timeout; an
    /// error page ends it (and the stream). Once flushed, its pushes of changes are counted in
    /// `delays`.
    async fn write_batch<S: futures::AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        batch: Vec<Queued>,
        delays: &PushDelays,
    ) -> Result<Written, PushError> {
        // Read before coalescing, which keeps one push's moment of a merged run.
        let changed: Vec<Instant> = batch.iter().filter_map(|q| q.changed).collect();
        let mut bytes = Vec::new();
        let mut written = Written::Done;
        for Queued { push, more, .. } in coalesce(batch, self.max_message_size) {
            append_frame(&mut bytes, &push.encode(), self.max_message_size)
                .map_err(|e| PushError::Io(e.to_string()))?;
            if let Push::Page(Err(_)) = *push {
                written = Written::Ended;
                break;
            }
            if more {
                written = Written::More;
            }
        }
        within(self.timeout, async {
            stream.write_all(&bytes).await?;
            stream.flush().await
        })
        .await?;
        if !changed.is_empty() {
            let now = Instant::now();
            for at in changed {
                delays.observe(at, now);
            }
        }
        if written == Written::Ended {
            let _ = stream.close().await;
        }
        Ok(written)
    }
}

/// Merges each run of consecutive OK pages that end no replay step (`more` false) into one
/// page, as long as it stays within `max_message_size` (counted as a DISCOVER page is cut,
/// [`response_overhead`] plus each registration's wire length): their registrations in order
/// and the last page's cookie, which covers everything sent up to it, so the merged page is a
/// DISCOVER page from the first one's cookie. Everything else (removals, error pages, a replay
/// page with more to come) stays as it is, in its place.
pub(crate) fn coalesce(batch: Vec<Queued>, max_message_size: usize) -> Vec<Queued> {
    let mut out: Vec<Queued> = Vec::with_capacity(batch.len());
    // The size of `out`'s last page, while more may be merged into it.
    let mut open: Option<usize> = None;
    for queued in batch {
        let page = match (&*queued.push, queued.more) {
            (Push::Page(Ok(page)), false) => page,
            _ => {
                open = None;
                out.push(queued);
                continue;
            }
        };
        let size = wire_len(&page.registrations);
        if let (Some(open_size), Some(last)) = (open.as_mut(), out.last_mut()) {
            if *open_size + size <= max_message_size {
                *open_size += size;
                // The open page is shared with other subscribers' queues until it grows: it
                // is copied once, at its first merge.
                if let Push::Page(Ok(last)) = Arc::make_mut(&mut last.push) {
                    last.registrations.extend_from_slice(&page.registrations);
                    last.cookie.clone_from(&page.cookie);
                    last.skipped += page.skipped;
                }
                continue;
            }
        }
        open = Some(response_overhead() + size);
        out.push(queued);
    }
    out
}

/// The bytes `registrations` take in a DISCOVER_RESPONSE.
fn wire_len(registrations: &[Registration]) -> usize {
    registrations
        .iter()
        .map(|r| registration_wire_len(&r.namespace, r.record.envelope_bytes().len(), r.ttl))
        .sum()
}

#[cfg(test)]
mod tests;
