//! The server's connection handler: inbound rendezvous streams, several requests per stream
//! served in order, [`SERVED_STREAMS_PER_CONNECTION`] streams read at once while the others wait
//! unread (up to the connection's stream cap), a cap on message size; and, when the behaviour
//! asks, one outbound identify request to learn which record formats the remote reads.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::{
    channel::{mpsc, oneshot},
    future::BoxFuture,
    stream::FuturesUnordered,
    AsyncWriteExt, FutureExt, SinkExt, StreamExt,
};
use libp2p::{
    core::upgrade::ReadyUpgrade,
    swarm::{
        handler::{
            ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
            ProtocolsChange,
        },
        ConnectionHandler, ConnectionHandlerEvent, Stream, StreamProtocol, SubstreamProtocol,
    },
};
use prost::Message as _;

use super::{
    connections::KeepAlive,
    formats::{IdentifyPb, IDENTIFY_PROTOCOL, MAX_IDENTIFY_MESSAGE_SIZE},
    gate::{Gate, Pass},
    push::{self, FromPush, Inbound, PushError, PushLimits},
    subscriptions::NewSubscription,
    Config, Limit, PushDelays, ServedFormats, SERVED_STREAMS_PER_CONNECTION,
};
use crate::codec::{
    read_frame, write_message, Cookie, DecodeError, ErrorResponse, FrameError, Message, Request,
    RequestError, RequestKind,
};
use crate::{PUSH_PROTOCOL, STANDARD_RECORDS_PROTOCOL};

/// A request read from a stream, on its way to the [`super::Behaviour`].
#[derive(Debug)]
pub struct InboundRequest {
    pub(crate) request: Request,
    /// Where the answer goes; `None` for UNREGISTER, which has no response.
    pub(crate) responder: Option<oneshot::Sender<Message>>,
    /// When the request was read off its stream, to report how long answering took.
    pub(crate) received: Instant,
    /// Keeps push writes waiting until the behaviour has handled the request (`None` for a
    /// request made up in a test).
    pub(crate) pass: Option<Pass>,
}

/// What a [`Handler`] tells the [`super::Behaviour`].
#[derive(Debug)]
pub enum ToBehaviour {
    /// A request read from a stream.
    Request(InboundRequest),
    /// The remote lists [`STANDARD_RECORDS_PROTOCOL`] (learned from identify): it reads every
    /// entry layout.
    DecodesStandardRecords,
    /// The remote's identify answer says it reads `served`.
    Identified {
        /// What the answer's agent and protocols say it reads.
        served: ServedFormats,
    },
    /// Asking the remote's identify failed (it does not run identify, or sent garbage).
    IdentifyFailed {
        /// Why.
        error: String,
    },
    /// A request did not decode; the handler answered it with `error` (not an UNREGISTER) and
    /// closed its stream.
    Rejected {
        /// The request kind.
        kind: RequestKind,
        /// The answer.
        error: ErrorResponse,
    },
    /// A stream was dropped or closed because of `0`.
    StreamRefused(Limit),
    /// A push stream read its subscription.
    Subscribe(NewSubscription),
    /// Push stream `0` wrote a replayed page after which the replay goes on.
    NextPage(u64),
    /// Push stream `0` was left behind and dropped what waited: it takes a replay from
    /// `1`, the last cookie it wrote.
    Resume(u64, Option<Cookie>),
    /// Push stream `0` ended.
    SubscriptionClosed(u64),
}

/// What the [`super::Behaviour`] tells a [`Handler`].
#[derive(Debug, Clone, Copy)]
pub enum FromBehaviour {
    /// Ask the remote's identify which record formats it reads (once per connection).
    AskIdentify,
}

/// Why a stream ended other than by the peer closing it between requests.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("the stream was idle for longer than {0:?}")]
    Timeout(Duration),
    #[error("undecodable request: {0}")]
    Decode(DecodeError),
    #[error("a {0} message is not a request")]
    NotARequest(&'static str),
    #[error("the server is shutting down this connection")]
    Gone,
}

/// The [`libp2p::swarm::ConnectionHandler`] of the rendezvous server.
pub struct Handler {
    protocol: StreamProtocol,
    max_request_size: usize,
    max_message_size: usize,
    /// Rendezvous streams open at once, read or waiting.
    max_streams: usize,
    /// Streams read at once.
    max_served: usize,
    timeout: Duration,
    /// The streams being read and answered (at most `max_served`).
    streams: FuturesUnordered<BoxFuture<'static, Result<(), StreamError>>>,
    /// Streams waiting, unread, for a place in `streams`, with when they came: the muxer holds
    /// what their peer sent (one window per stream), so a burst of requests waits instead of
    /// being refused. At most `max_streams - streams.len()`.
    waiting: VecDeque<(Stream, Instant)>,
    requests_tx: mpsc::Sender<InboundRequest>,
    requests_rx: mpsc::Receiver<InboundRequest>,
    /// Set by the behaviour while the peer has registrations that would be removed when the
    /// connection closes.
    keep_alive: KeepAlive,
    /// Requests read and not yet answered, over all streams: while one is, the connection stays.
    in_flight: Arc<AtomicUsize>,
    /// Whether [`ToBehaviour::DecodesStandardRecords`] was reported (once per connection).
    marker_seen: bool,
    /// At most one marker report and one identify outcome per connection.
    events: VecDeque<ToBehaviour>,
    /// Streams dropped over the stream cap and not yet reported as [`ToBehaviour::StreamRefused`]
    /// (a count, so a flood of streams costs no memory).
    refused_streams: usize,
    identify: IdentifyState,
    identify_wait: Duration,
    /// Whether push streams are accepted ([`Config::with_max_subscriptions`] above 0).
    push: bool,
    push_limits: PushLimits,
    /// Push streams open at most (beyond, one is reset).
    max_push_streams: usize,
    /// The push streams, each with its number on this connection.
    push_streams: FuturesUnordered<BoxFuture<'static, (u64, Result<(), PushError>)>>,
    push_tx: mpsc::Sender<FromPush>,
    push_rx: mpsc::Receiver<FromPush>,
    next_push_id: u64,
    /// The server's gate: requests read here shut it, push streams take turns through it.
    gate: Gate,
    /// Where push streams count how long their pushes waited.
    push_delays: PushDelays,
}

/// The one identify request a connection may make.
enum IdentifyState {
    NotAsked,
    /// Asked by the behaviour; the outbound stream is to be requested.
    Wanted,
    /// The outbound stream was requested.
    Opening,
    Reading(BoxFuture<'static, Result<ServedFormats, String>>),
    Done,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("streams", &self.streams.len())
            .field("keep_alive", &self.keep_alive.get())
            .finish_non_exhaustive()
    }
}

impl Handler {
    pub(crate) fn new(
        config: &Config,
        keep_alive: KeepAlive,
        gate: Gate,
        push_delays: PushDelays,
    ) -> Self {
        let max_served = SERVED_STREAMS_PER_CONNECTION.min(config.max_streams_per_connection);
        // Each read stream has at most one request in flight, so this never fills for long.
        let (requests_tx, requests_rx) = mpsc::channel(max_served);
        let max_push_streams = config.max_subscriptions_per_connection;
        // Each push stream has at most one message for the handler in flight.
        let (push_tx, push_rx) = mpsc::channel(max_push_streams.clamp(1, 1024));
        Self {
            protocol: config.protocol.clone(),
            max_request_size: config.max_request_size(),
            max_message_size: config.max_message_size,
            max_streams: config.max_streams_per_connection,
            max_served,
            waiting: VecDeque::new(),
            // A timer deadline past what `Instant` holds would panic; validation refuses such
            // a timeout, this keeps an unvalidated one harmless.
            timeout: config
                .stream_timeout
                .min(super::MAX_CONFIGURABLE_STREAM_TIMEOUT),
            streams: FuturesUnordered::new(),
            requests_tx,
            requests_rx,
            keep_alive,
            in_flight: Arc::new(AtomicUsize::new(0)),
            marker_seen: false,
            events: VecDeque::new(),
            refused_streams: 0,
            identify: IdentifyState::NotAsked,
            identify_wait: config.identify_wait,
            push: config.max_subscriptions > 0,
            push_limits: PushLimits {
                max_request_size: config.max_request_size(),
                max_message_size: config.max_message_size,
                timeout: config
                    .stream_timeout
                    .min(super::MAX_CONFIGURABLE_STREAM_TIMEOUT),
                queue: config.push_queue.max(1),
            },
            max_push_streams,
            push_streams: FuturesUnordered::new(),
            push_tx,
            push_rx,
            next_push_id: 0,
            gate,
            push_delays,
        }
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = FromBehaviour;
    type ToBehaviour = ToBehaviour;
    type InboundProtocol = Inbound;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, Self::InboundOpenInfo> {
        let inbound = Inbound {
            rendezvous: self.protocol.clone(),
            push: self.push,
        };
        SubstreamProtocol::new(inbound, ())
    }

    fn on_behaviour_event(&mut self, event: FromBehaviour) {
        match event {
            FromBehaviour::AskIdentify => {
                if matches!(self.identify, IdentifyState::NotAsked) {
                    self.identify = IdentifyState::Wanted;
                }
            }
        }
    }

    /// Kept while the peer holds registrations (the behaviour says so), a request is being
    /// served, or a stream waits to be read. An open stream alone does not keep the connection (streams are
    /// ignored for keep-alive), so a connection with nothing registered and nothing asked
    /// closes after the swarm's idle timeout.
    fn connection_keep_alive(&self) -> bool {
        self.keep_alive.get()
            || self.in_flight.load(Ordering::Relaxed) > 0
            || !self.waiting.is_empty()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, Self::OutboundOpenInfo, ToBehaviour>>
    {
        // The swarm asks `connection_keep_alive` again after each poll: a changed switch
        // wakes it.
        self.keep_alive.register(cx.waker());
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
            }
            if self.refused_streams > 0 {
                self.refused_streams -= 1;
                return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(
                    ToBehaviour::StreamRefused(Limit::Streams),
                ));
            }
            if matches!(self.identify, IdentifyState::Wanted) {
                self.identify = IdentifyState::Opening;
                return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                    protocol: SubstreamProtocol::new(ReadyUpgrade::new(IDENTIFY_PROTOCOL), ())
                        .with_timeout(self.identify_wait),
                });
            }
            if let IdentifyState::Reading(reading) = &mut self.identify {
                if let Poll::Ready(result) = reading.poll_unpin(cx) {
                    self.identify = IdentifyState::Done;
                    let event = match result {
                        Ok(served) => ToBehaviour::Identified { served },
                        Err(error) => ToBehaviour::IdentifyFailed { error },
                    };
                    return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
                }
            }
            self.serve_waiting();
            if let Poll::Ready(Some(from_push)) = self.push_rx.poll_next_unpin(cx) {
                let event = match from_push {
                    FromPush::Subscribe(new) => ToBehaviour::Subscribe(new),
                    FromPush::NextPage(id) => ToBehaviour::NextPage(id),
                    FromPush::Resume(id, cookie) => ToBehaviour::Resume(id, cookie),
                };
                return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
            }
            if let Poll::Ready(Some((id, result))) = self.push_streams.poll_next_unpin(cx) {
                if let Err(error) = result {
                    tracing::debug!(%error, "push stream closed");
                }
                return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(
                    ToBehaviour::SubscriptionClosed(id),
                ));
            }
            if let Poll::Ready(Some(request)) = self.requests_rx.poll_next_unpin(cx) {
                return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(
                    ToBehaviour::Request(request),
                ));
            }
            match self.streams.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(()))) => continue,
                Poll::Ready(Some(Err(error))) => {
                    tracing::debug!(%error, "rendezvous stream closed");
                    let event = match error {
                        StreamError::Decode(DecodeError::InvalidRequest { kind, error }) => {
                            ToBehaviour::Rejected { kind, error }
                        }
                        StreamError::Frame(FrameError::TooLarge { .. }) => {
                            ToBehaviour::StreamRefused(Limit::MessageSize)
                        }
                        _ => continue,
                    };
                    return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
                }
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
        if let ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
            protocol: stream,
            ..
        }) = event
        {
            self.identify =
                IdentifyState::Reading(read_identify(stream, self.identify_wait).boxed());
            return;
        }
        if let ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) = event {
            self.identify = IdentifyState::Done;
            self.events.push_back(ToBehaviour::IdentifyFailed {
                error: error.to_string(),
            });
            return;
        }
        if let ConnectionEvent::RemoteProtocolsChange(ProtocolsChange::Added(mut added)) = event {
            if !self.marker_seen && added.any(|p| *p == STANDARD_RECORDS_PROTOCOL) {
                self.marker_seen = true;
                self.events.push_back(ToBehaviour::DecodesStandardRecords);
            }
            return;
        }
        if let ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
            protocol: (mut stream, protocol),
            ..
        }) = event
        {
            if protocol == PUSH_PROTOCOL {
                self.accept_push(stream);
                return;
            }
            stream.ignore_for_keep_alive();
            if self.streams.len() + self.waiting.len() >= self.max_streams {
                tracing::debug!(
                    max = self.max_streams,
                    "too many rendezvous streams on one connection; resetting the new one"
                );
                self.refused_streams = self.refused_streams.saturating_add(1);
                return;
            }
            self.waiting.push_back((stream, Instant::now()));
        }
    }
}

impl Handler {
    /// Serves a push stream (it keeps the connection alive while it is open), or resets it
    /// when the connection has as many as it may hold.
    fn accept_push(&mut self, stream: Stream) {
        if self.push_streams.len() >= self.max_push_streams {
            tracing::debug!(
                max = self.max_push_streams,
                "too many push streams on one connection; resetting the new one"
            );
            self.refused_streams = self.refused_streams.saturating_add(1);
            return;
        }
        let id = self.next_push_id;
        self.next_push_id += 1;
        let serving = push::serve(
            id,
            stream,
            self.push_tx.clone(),
            self.push_limits,
            self.gate.clone(),
            self.push_delays.clone(),
        );
        self.push_streams
            .push(async move { (id, serving.await) }.boxed());
    }

    /// Moves waiting streams, oldest first, into the read ones while there is room. A stream
    /// that waited longer than the stream timeout is dropped (its peer has given up on it, or
    /// the read streams are held by a slow peer).
    fn serve_waiting(&mut self) {
        while self.streams.len() < self.max_served {
            let Some((stream, since)) = self.waiting.pop_front() else {
                return;
            };
            if since.elapsed() > self.timeout {
                tracing::debug!(timeout = ?self.timeout, "a rendezvous stream waited too long; dropping it");
                continue;
            }
            self.streams.push(
                serve_stream(
                    stream,
                    self.requests_tx.clone(),
                    Limits {
                        max_request_size: self.max_request_size,
                        max_message_size: self.max_message_size,
                        timeout: self.timeout,
                    },
                    self.in_flight.clone(),
                    self.gate.clone(),
                )
                .boxed(),
            );
        }
    }
}

/// Reads the remote's identify message from an outbound `/ipfs/id/1.0.0` stream: what it says
/// the remote reads.
async fn read_identify(mut stream: Stream, wait: Duration) -> Result<ServedFormats, String> {
    let body = within(wait, read_frame(&mut stream, MAX_IDENTIFY_MESSAGE_SIZE))
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the stream closed before the identify message")?;
    let _ = stream.close().await;
    let info =
        IdentifyPb::decode(body.as_slice()).map_err(|e| format!("not an identify message: {e}"))?;
    Ok(info.served())
}

/// Runs `future`, failing with [`StreamError::Timeout`] when it takes longer than `timeout`.
async fn within<T>(
    timeout: Duration,
    future: impl std::future::Future<Output = Result<T, FrameError>>,
) -> Result<T, StreamError> {
    match crate::timer::within(timeout, future).await {
        Some(result) => Ok(result?),
        None => Err(StreamError::Timeout(timeout)),
    }
}

/// The limits one stream is served with.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// The largest request read.
    max_request_size: usize,
    /// The largest response written.
    max_message_size: usize,
    /// How long a read or write may take.
    timeout: Duration,
}

/// Counts a request in flight for as long as it lives.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves the requests of one stream, in order, until the peer closes it.
async fn serve_stream(
    mut stream: Stream,
    mut requests: mpsc::Sender<InboundRequest>,
    limits: Limits,
    in_flight: Arc<AtomicUsize>,
    gate: Gate,
) -> Result<(), StreamError> {
    let Limits {
        max_request_size,
        max_message_size: max_size,
        timeout,
    } = limits;
    loop {
        let Some(body) = within(timeout, read_frame(&mut stream, max_request_size)).await? else {
            return Ok(());
        };
        let received = Instant::now();
        let _in_flight = InFlight::new(&in_flight);
        let pass = gate.pass();
        let request = match Request::decode(&body) {
            Ok(request) => request,
            Err(RequestError::NotARequest(kind)) => return Err(StreamError::NotARequest(kind)),
            Err(RequestError::Decode(DecodeError::InvalidRequest { kind, error })) => {
                let response = match kind {
                    RequestKind::Register => Some(Message::RegisterResponse(Err(error.clone()))),
                    RequestKind::Discover => Some(Message::DiscoverResponse(Err(error.clone()))),
                    RequestKind::Unregister => None,
                };
                if let Some(response) = response {
                    within(timeout, write_message(&mut stream, &response, max_size)).await?;
                }
                let _ = stream.close().await;
                return Err(StreamError::Decode(DecodeError::InvalidRequest {
                    kind,
                    error,
                }));
            }
            Err(RequestError::Decode(other)) => return Err(StreamError::Decode(other)),
        };
        let (responder, response) = match request {
            Request::Unregister(_) => (None, None),
            _ => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
        };
        requests
            .send(InboundRequest {
                request,
                responder,
                received,
                pass: Some(pass),
            })
            .await
            .map_err(|_| StreamError::Gone)?;
        if let Some(response) = response {
            let response = response.await.map_err(|_| StreamError::Gone)?;
            within(timeout, write_message(&mut stream, &response, max_size)).await?;
        }
    }
}
