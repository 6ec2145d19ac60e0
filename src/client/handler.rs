//! The client's connection handler (an implementation detail of [`super::Behaviour`], public
//! only because the behaviour names it): one outbound stream per request, a request timeout, a
//! bounded number of requests in flight, and a report when the remote announces the protocol.
//!
//! The schedule hands a connection at most [`MAX_IN_FLIGHT_PER_CONNECTION`] requests at once;
//! the handler checks that bound again rather than open streams without one.

use std::{
    collections::VecDeque,
    task::{Context, Poll},
    time::Duration,
};

use futures::{
    future::BoxFuture,
    stream::{BoxStream, FuturesUnordered, SelectAll},
    AsyncWriteExt, FutureExt, StreamExt,
};
use futures_timer::Delay;
use libp2p::{
    core::upgrade::{InboundUpgrade, ReadyUpgrade, UpgradeInfo},
    swarm::{
        handler::{ConnectionEvent, DialUpgradeError, FullyNegotiatedOutbound, ProtocolsChange},
        ConnectionHandler, ConnectionHandlerEvent, Stream, StreamUpgradeError, SubstreamProtocol,
    },
    StreamProtocol,
};

use super::{RequestError, RequestId, MAX_IN_FLIGHT_PER_CONNECTION};
use crate::codec::{
    read_frame, read_message, write_frame, write_message, DiscoverPage, ErrorResponse, FrameError,
    Message, Namespace, Push, Subscribe, Ttl, DEFAULT_MAX_MESSAGE_SIZE,
};
use crate::{PUSH_PROTOCOL, STANDARD_RECORDS_PROTOCOL};

/// The successful outcome of a request.
#[derive(Debug, Clone)]
pub enum Response {
    /// REGISTER_RESPONSE OK with the granted TTL.
    Registered(Ttl),
    /// DISCOVER_RESPONSE OK.
    Page(DiscoverPage),
    /// The UNREGISTER was written and flushed.
    Sent,
}

/// From the behaviour to the handler.
#[derive(Debug)]
pub enum InEvent {
    /// Send a request on a new stream.
    Send {
        /// The request id.
        request: RequestId,
        /// The request.
        message: Message,
    },
    /// Subscribe to pushes of `namespace` on a new push stream (docs/push.md).
    Subscribe {
        /// The namespace.
        namespace: Namespace,
        /// The subscription (its namespace, the cookie held, the page limit).
        subscribe: Subscribe,
    },
    /// Keep the connection alive while idle (it is to one of our servers).
    KeepAlive(bool),
}

/// From the handler to the behaviour.
#[derive(Debug)]
pub enum OutEvent {
    /// The outcome of a request.
    Outcome {
        /// The request id.
        request: RequestId,
        /// The outcome.
        result: Result<Response, RequestError>,
    },
    /// The remote announced the rendezvous protocol.
    RemoteSupportsProtocol,
    /// The remote's protocols arrived for the first time on this connection (identify finished
    /// on our side).
    RemoteProtocolsKnown,
    /// The remote announced the push protocol ([`PUSH_PROTOCOL`]).
    RemoteSupportsPush,
    /// A subscription of `namespace` received `push` (a page, or a removal).
    Pushed {
        /// The namespace subscribed to.
        namespace: Namespace,
        /// What came.
        push: Push,
    },
    /// A subscription of `namespace` ended: the server's error page, or `None` when the stream
    /// closed or failed.
    SubscriptionEnded {
        /// The namespace subscribed to.
        namespace: Namespace,
        /// The server's reason, if it sent one.
        error: Option<ErrorResponse>,
    },
}

/// After an UNREGISTER, how long to wait for the server to end the stream before reporting it
/// sent anyway (servers that keep the stream open must not hold up `Stopped` for long).
const UNREGISTER_LINGER: Duration = Duration::from_secs(2);

type Running = BoxFuture<'static, (RequestId, Result<Response, RequestError>)>;

/// The client's connection handler.
pub struct Handler {
    protocol: StreamProtocol,
    timeout: Duration,
    keep_alive: bool,
    to_open: VecDeque<(RequestId, Message)>,
    opening: usize,
    running: FuturesUnordered<Running>,
    events: VecDeque<OutEvent>,
    remote_supports: bool,
    remote_protocols_known: bool,
    remote_supports_push: bool,
    standard_marker: bool,
    /// Push subscriptions asked for and not yet open.
    to_subscribe: VecDeque<(Namespace, Subscribe)>,
    /// The open push subscriptions, each a stream of what its server sends.
    subscriptions: SelectAll<BoxStream<'static, OutEvent>>,
}

/// What an outbound stream is for.
#[derive(Debug)]
pub enum Open {
    /// A request.
    Request(RequestId, Message),
    /// A push subscription of a namespace.
    Subscribe(Namespace, Subscribe),
}

/// The inbound side: [`STANDARD_RECORDS_PROTOCOL`] (a stream on it is accepted and dropped), or
/// nothing.
#[derive(Debug, Clone)]
pub struct Marker(Option<StreamProtocol>);

impl UpgradeInfo for Marker {
    type Info = StreamProtocol;
    type InfoIter = std::option::IntoIter<StreamProtocol>;

    fn protocol_info(&self) -> Self::InfoIter {
        self.0.clone().into_iter()
    }
}

impl InboundUpgrade<Stream> for Marker {
    type Output = ();
    type Error = std::convert::Infallible;
    type Future = futures::future::Ready<Result<(), Self::Error>>;

    fn upgrade_inbound(self, _stream: Stream, _: StreamProtocol) -> Self::Future {
        // The marker carries nothing: the stream is dropped (closed) here.
        futures::future::ready(Ok(()))
    }
}

impl Handler {
    /// Runs `request`'s exchange on its newly opened `stream`, bounded by the request timeout.
    fn start_exchange(&mut self, request: RequestId, stream: Stream, message: Message) {
        self.opening = self.opening.saturating_sub(1);
        let timeout = self.timeout;
        let exchange = exchange(stream, message);
        self.running.push(
            async move {
                let result = crate::timer::within(timeout, exchange)
                    .await
                    .unwrap_or(Err(RequestError::Timeout));
                (request, result)
            }
            .boxed(),
        );
    }

    pub(crate) fn new(protocol: StreamProtocol, timeout: Duration, keep_alive: bool) -> Self {
        Self {
            protocol,
            timeout,
            keep_alive,
            to_open: VecDeque::new(),
            opening: 0,
            running: FuturesUnordered::new(),
            events: VecDeque::new(),
            remote_supports: false,
            remote_protocols_known: false,
            remote_supports_push: false,
            standard_marker: false,
            to_subscribe: VecDeque::new(),
            subscriptions: SelectAll::new(),
        }
    }

    /// Lists [`STANDARD_RECORDS_PROTOCOL`] on this connection.
    pub(crate) fn with_standard_marker(mut self, on: bool) -> Self {
        self.standard_marker = on;
        self
    }

    fn pending(&self) -> usize {
        self.to_open.len() + self.opening + self.running.len()
    }
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

async fn exchange(mut stream: Stream, message: Message) -> Result<Response, RequestError> {
    let max = DEFAULT_MAX_MESSAGE_SIZE;
    write_message(&mut stream, &message, max)
        .await
        .map_err(|e| RequestError::Stream(e.to_string()))?;
    if matches!(message, Message::Unregister { .. }) {
        // No response. Closing flushes our side; the frames may still sit in the muxer's
        // buffers, so wait (briefly) for the server to end the stream too: then it has read the
        // UNREGISTER, and an application that drops the swarm on `Stopped` loses nothing.
        let _ = stream.close().await;
        let _ = futures::future::select(
            Box::pin(read_frame(&mut stream, max)),
            Delay::new(UNREGISTER_LINGER),
        )
        .await;
        return Ok(Response::Sent);
    }
    let reply = match read_message(&mut stream, max).await {
        Ok(None) => return Err(RequestError::NoResponse),
        // A reset stream (how a server that rejects the request without a reply drops it) is
        // an I/O error here.
        Err(FrameError::Io(_)) => return Err(RequestError::NoResponse),
        Err(e) => return Err(RequestError::UnexpectedResponse(e.to_string())),
        Ok(Some(Err(e))) => return Err(RequestError::UnexpectedResponse(e.to_string())),
        Ok(Some(Ok(reply))) => reply,
    };
    let _ = stream.close().await;
    match (&message, reply) {
        (Message::Register(_), Message::RegisterResponse(Ok(ttl))) => Ok(Response::Registered(ttl)),
        (Message::Register(_), Message::RegisterResponse(Err(e))) => Err(RequestError::Remote(e)),
        (Message::Discover { .. }, Message::DiscoverResponse(Ok(page))) => Ok(Response::Page(page)),
        (Message::Discover { .. }, Message::DiscoverResponse(Err(e))) => {
            Err(RequestError::Remote(e))
        }
        (_, other) => Err(RequestError::UnexpectedResponse(format!(
            "a {} in reply to a {}",
            kind_name(&other),
            kind_name(&message)
        ))),
    }
}

fn kind_name(message: &Message) -> &'static str {
    match message {
        Message::Register(_) => "REGISTER",
        Message::RegisterResponse(_) => "REGISTER_RESPONSE",
        Message::Unregister { .. } => "UNREGISTER",
        Message::Discover { .. } => "DISCOVER",
        Message::DiscoverResponse(_) => "DISCOVER_RESPONSE",
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = InEvent;
    type ToBehaviour = OutEvent;
    type InboundProtocol = Marker;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = Open;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, Self::InboundOpenInfo> {
        let marker = self.standard_marker.then_some(STANDARD_RECORDS_PROTOCOL);
        SubstreamProtocol::new(Marker(marker), ())
    }

    fn connection_keep_alive(&self) -> bool {
        self.keep_alive || self.pending() > 0 || !self.subscriptions.is_empty()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<
        ConnectionHandlerEvent<Self::OutboundProtocol, Self::OutboundOpenInfo, Self::ToBehaviour>,
    > {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
            }
            if let Some((request, message)) = self.to_open.pop_front() {
                self.opening += 1;
                return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                    protocol: SubstreamProtocol::new(
                        ReadyUpgrade::new(self.protocol.clone()),
                        Open::Request(request, message),
                    )
                    .with_timeout(self.timeout),
                });
            }
            if let Some((namespace, subscribe)) = self.to_subscribe.pop_front() {
                return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                    protocol: SubstreamProtocol::new(
                        ReadyUpgrade::new(PUSH_PROTOCOL),
                        Open::Subscribe(namespace, subscribe),
                    )
                    .with_timeout(self.timeout),
                });
            }
            if let Poll::Ready(Some(event)) = self.subscriptions.poll_next_unpin(cx) {
                return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
            }
            match self.running.poll_next_unpin(cx) {
                Poll::Ready(Some((request, result))) => {
                    self.events.push_back(OutEvent::Outcome { request, result });
                    continue;
                }
                Poll::Ready(None) | Poll::Pending => {}
            }
            return Poll::Pending;
        }
    }

    fn on_behaviour_event(&mut self, event: InEvent) {
        match event {
            InEvent::Send { request, message } => {
                // The schedule never sends more; a request over the bound fails rather than
                // open a stream the server would reset.
                if self.pending() >= MAX_IN_FLIGHT_PER_CONNECTION {
                    self.events.push_back(OutEvent::Outcome {
                        request,
                        result: Err(RequestError::TooManyPending),
                    });
                } else {
                    self.to_open.push_back((request, message));
                }
            }
            InEvent::Subscribe {
                namespace,
                subscribe,
            } => {
                // One per namespace of the schedule; the bound is the schedule's namespaces.
                if self.to_subscribe.len() + self.subscriptions.len() >= super::MAX_NAMESPACES {
                    self.events.push_back(OutEvent::SubscriptionEnded {
                        namespace,
                        error: None,
                    });
                } else {
                    self.to_subscribe.push_back((namespace, subscribe));
                }
            }
            InEvent::KeepAlive(on) => {
                self.keep_alive = on;
                // Off when the client stopped: its subscriptions end with it.
                if !on {
                    self.subscriptions.clear();
                    self.to_subscribe.clear();
                }
            }
        }
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<
            Self::InboundProtocol,
            Self::OutboundProtocol,
            Self::InboundOpenInfo,
            Self::OutboundOpenInfo,
        >,
    ) {
        if matches!(event, ConnectionEvent::RemoteProtocolsChange(_))
            && !self.remote_protocols_known
        {
            self.remote_protocols_known = true;
            self.events.push_back(OutEvent::RemoteProtocolsKnown);
        }
        match event {
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                info: Open::Subscribe(namespace, subscribe),
            }) => {
                self.subscriptions
                    .push(subscription(stream, namespace, subscribe));
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError {
                info: Open::Subscribe(namespace, _),
                ..
            }) => {
                self.events.push_back(OutEvent::SubscriptionEnded {
                    namespace,
                    error: None,
                });
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                info: Open::Request(request, message),
            }) => self.start_exchange(request, stream, message),
            ConnectionEvent::DialUpgradeError(DialUpgradeError {
                info: Open::Request(request, _),
                error,
            }) => {
                self.opening = self.opening.saturating_sub(1);
                let error = match error {
                    StreamUpgradeError::NegotiationFailed => RequestError::Unsupported,
                    StreamUpgradeError::Timeout => RequestError::Timeout,
                    StreamUpgradeError::Io(e) => RequestError::Stream(e.to_string()),
                    StreamUpgradeError::Apply(never) => match never {},
                };
                self.events.push_back(OutEvent::Outcome {
                    request,
                    result: Err(error),
                });
            }
            ConnectionEvent::RemoteProtocolsChange(ProtocolsChange::Added(added)) => {
                if !self.remote_supports && added.clone().any(|p| *p == self.protocol) {
                    self.remote_supports = true;
                    self.events.push_back(OutEvent::RemoteSupportsProtocol);
                }
                if !self.remote_supports_push && added.clone().any(|p| *p == PUSH_PROTOCOL) {
                    self.remote_supports_push = true;
                    self.events.push_back(OutEvent::RemoteSupportsPush);
                }
            }
            _ => {}
        }
    }
}

/// A push subscription on `stream`: sends `subscribe`, then yields what the server sends until
/// the subscription ends (its last item is [`OutEvent::SubscriptionEnded`]). A live
/// subscription may idle for as long as nothing registers, so reads have no timeout; the
/// write of the subscription has the message cap.
fn subscription(
    stream: Stream,
    namespace: Namespace,
    subscribe: Subscribe,
) -> BoxStream<'static, OutEvent> {
    enum State {
        Start(Stream, Subscribe),
        Reading(Stream),
        Done,
    }
    futures::stream::unfold(State::Start(stream, subscribe), move |state| {
        let namespace = namespace.clone();
        async move {
            let ended = |error| {
                let namespace = namespace.clone();
                Some((
                    OutEvent::SubscriptionEnded { namespace, error },
                    State::Done,
                ))
            };
            let mut stream = match state {
                State::Done => return None,
                State::Reading(stream) => stream,
                State::Start(mut stream, subscribe) => {
                    let max = DEFAULT_MAX_MESSAGE_SIZE;
                    if write_frame(&mut stream, &subscribe.encode(), max)
                        .await
                        .is_err()
                    {
                        return ended(None);
                    }
                    stream
                }
            };
            let body = match read_frame(&mut stream, DEFAULT_MAX_MESSAGE_SIZE).await {
                Ok(Some(body)) => body,
                Ok(None) | Err(_) => return ended(None),
            };
            match Push::decode(&body) {
                Ok(Push::Page(Err(error))) => ended(Some(error)),
                Ok(push) => Some((OutEvent::Pushed { namespace, push }, State::Reading(stream))),
                Err(error) => {
                    tracing::debug!(%error, "undecodable push; ending the subscription");
                    ended(None)
                }
            }
        }
    })
    .boxed()
}
