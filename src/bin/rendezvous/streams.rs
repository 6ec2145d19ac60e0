//! The smallest behaviour that hands out outbound rendezvous streams to async code.
//!
//! `rendezvous load` speaks the wire protocol itself (its own framing from the `codec` module,
//! one stream per request) so that it measures the server and not a client state machine, and
//! so that it works against any server. The main `libp2p` dependency has no `request-response`
//! or `stream` feature; rather than add one, this handler opens a stream when asked and passes
//! the negotiated [`Stream`] back through a oneshot channel. Inbound streams are refused.

use std::{
    collections::VecDeque,
    convert::Infallible,
    task::{Context, Poll},
    time::Duration,
};

use futures::{
    channel::{mpsc, oneshot},
    StreamExt,
};
use libp2p::{
    core::{transport::PortUse, upgrade::DeniedUpgrade, upgrade::ReadyUpgrade, Endpoint},
    swarm::{
        handler::{ConnectionEvent, DialUpgradeError, FullyNegotiatedOutbound},
        ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
        NetworkBehaviour, NotifyHandler, SubstreamProtocol, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId, Stream, StreamProtocol,
};

/// Where a requested stream (or the reason there is none) is delivered.
pub type StreamReply = oneshot::Sender<Result<Stream, String>>;

/// Opens outbound streams of one protocol to one peer, on request from a channel.
pub struct Behaviour {
    peer: PeerId,
    protocol: StreamProtocol,
    timeout: Duration,
    requests: mpsc::Receiver<StreamReply>,
}

impl Behaviour {
    /// A behaviour opening `protocol` streams to `peer`, one per reply sender read from
    /// `requests`; a negotiation taking longer than `timeout` fails.
    pub fn new(
        peer: PeerId,
        protocol: StreamProtocol,
        timeout: Duration,
        requests: mpsc::Receiver<StreamReply>,
    ) -> Self {
        Self {
            peer,
            protocol,
            timeout,
            requests,
        }
    }

    fn handler(&self) -> Handler {
        Handler::new(self.protocol.clone(), self.timeout)
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler())
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        // A request for a peer without a connection is dropped by the swarm, and with it the
        // reply sender: the caller sees the channel cancelled.
        match self.requests.poll_next_unpin(cx) {
            Poll::Ready(Some(reply)) => Poll::Ready(ToSwarm::NotifyHandler {
                peer_id: self.peer,
                handler: NotifyHandler::Any,
                event: reply,
            }),
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}

/// The per-connection half: opens a stream for each reply sender it is given. The tests' raw
/// client (`tests/support/raw.rs`) uses it too.
pub struct Handler {
    protocol: StreamProtocol,
    timeout: Duration,
    pending: VecDeque<StreamReply>,
}

impl Handler {
    /// A handler opening `protocol` streams; a negotiation taking longer than `timeout` fails.
    pub fn new(protocol: StreamProtocol, timeout: Duration) -> Self {
        Self {
            protocol,
            timeout,
            pending: VecDeque::new(),
        }
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = StreamReply;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = StreamReply;

    fn listen_protocol(&self) -> SubstreamProtocol<DeniedUpgrade, ()> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    /// The load generator decides when its connections end (by dropping the swarm), so a
    /// connection stays open between phases.
    fn connection_keep_alive(&self) -> bool {
        true
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, StreamReply, Infallible>> {
        match self.pending.pop_front() {
            Some(reply) => Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(ReadyUpgrade::new(self.protocol.clone()), reply)
                    .with_timeout(self.timeout),
            }),
            None => Poll::Pending,
        }
    }

    fn on_behaviour_event(&mut self, reply: StreamReply) {
        self.pending.push_back(reply);
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<DeniedUpgrade, Self::OutboundProtocol, (), StreamReply>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                info: reply,
            }) => {
                let _ = reply.send(Ok(stream));
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { info: reply, error }) => {
                let _ = reply.send(Err(format!("cannot open a stream: {error}")));
            }
            _ => {}
        }
    }
}
