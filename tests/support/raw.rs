//! A raw rendezvous client for tests: opens outbound streams to a peer and hands them to the
//! test, which then writes and reads codec messages or raw frames on them, so a test can send
//! several requests on one stream, oversized frames, standard-format records, and so on.

use std::{
    collections::VecDeque,
    task::{Context, Poll},
};

use libp2p::{
    core::{
        transport::PortUse,
        upgrade::{DeniedUpgrade, ReadyUpgrade},
        Endpoint,
    },
    identity::Keypair,
    swarm::{
        handler::{ConnectionEvent, DialUpgradeError, FullyNegotiatedOutbound},
        ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
        NetworkBehaviour, NotifyHandler, Stream, SubstreamProtocol, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId, StreamProtocol,
};
use rendezvous_discovery::{
    codec::{read_frame, write_frame, Message, DEFAULT_MAX_MESSAGE_SIZE},
    RecordFormat, SignedRecord,
};

/// An outbound stream was opened, or failed to open.
#[derive(Debug)]
pub enum Event {
    /// The stream, ready for the test to use.
    Opened(PeerId, Stream),
    /// Negotiation failed.
    Failed(PeerId, String),
}

/// The raw client behaviour.
pub struct Behaviour {
    /// The swarm's key, to sign records of this peer.
    pub key: Keypair,
    protocol: StreamProtocol,
    to_open: VecDeque<PeerId>,
    events: VecDeque<Event>,
}

impl Behaviour {
    pub fn new(key: Keypair) -> Self {
        Self {
            key,
            protocol: rendezvous_discovery::PROTOCOL,
            to_open: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// A record of this peer in `format`.
    pub fn record(&self, format: RecordFormat) -> SignedRecord {
        SignedRecord::new(&self.key, vec!["/memory/1234".parse().unwrap()], format).unwrap()
    }

    /// Asks for a new stream to `peer` (connected already); see [`Event::Opened`].
    pub fn open(&mut self, peer: PeerId) {
        self.to_open.push_back(peer);
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler::new(self.protocol.clone()))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler::new(self.protocol.clone()))
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.events.push_back(match event {
            Ok(stream) => Event::Opened(peer, stream),
            Err(error) => Event::Failed(peer, error),
        });
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(ToSwarm::GenerateEvent(event));
        }
        if let Some(peer) = self.to_open.pop_front() {
            return Poll::Ready(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::Any,
                event: (),
            });
        }
        Poll::Pending
    }
}

/// Opens one outbound stream per request of the behaviour.
pub struct Handler {
    protocol: StreamProtocol,
    to_open: usize,
    events: VecDeque<Result<Stream, String>>,
}

impl Handler {
    fn new(protocol: StreamProtocol) -> Self {
        Self {
            protocol,
            to_open: 0,
            events: VecDeque::new(),
        }
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = ();
    type ToBehaviour = Result<Stream, String>;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<DeniedUpgrade, ()> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn on_behaviour_event(&mut self, (): ()) {
        self.to_open += 1;
    }

    // Tests decide when connections end.
    fn connection_keep_alive(&self) -> bool {
        true
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
        }
        if self.to_open > 0 {
            self.to_open -= 1;
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(ReadyUpgrade::new(self.protocol.clone()), ()),
            });
        }
        Poll::Pending
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                ..
            }) => self.events.push_back(Ok(stream)),
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => {
                self.events.push_back(Err(error.to_string()))
            }
            _ => {}
        }
    }
}

/// Opens a stream from `client` to `server`, polling both swarms until it is ready.
pub async fn open_stream<S>(
    client: &mut libp2p::Swarm<Behaviour>,
    server: &mut libp2p::Swarm<S>,
) -> Stream
where
    S: NetworkBehaviour,
    S::ToSwarm: std::fmt::Debug,
{
    open_stream_seeing(client, server, &mut Vec::new()).await
}

/// [`open_stream`], keeping the server's behaviour events meanwhile in `seen`.
pub async fn open_stream_seeing<S>(
    client: &mut libp2p::Swarm<Behaviour>,
    server: &mut libp2p::Swarm<S>,
    seen: &mut Vec<S::ToSwarm>,
) -> Stream
where
    S: NetworkBehaviour,
    S::ToSwarm: std::fmt::Debug,
{
    use futures::StreamExt;
    use libp2p::swarm::SwarmEvent;
    let server_id = *server.local_peer_id();
    client.behaviour_mut().open(server_id);
    let opened = async {
        loop {
            tokio::select! {
                event = client.select_next_some() => match event {
                    SwarmEvent::Behaviour(Event::Opened(_, stream)) => return stream,
                    SwarmEvent::Behaviour(Event::Failed(_, error)) => {
                        panic!("stream failed: {error}")
                    }
                    _ => {}
                },
                event = server.select_next_some() => {
                    if let SwarmEvent::Behaviour(event) = event {
                        seen.push(event);
                    }
                }
            }
        }
    };
    tokio::time::timeout(super::HANG, opened)
        .await
        .expect("the stream opens before the hang guard")
}

/// Writes `message` as one frame.
pub async fn send(stream: &mut Stream, message: &Message) {
    write_frame(stream, &message.encode(), usize::MAX)
        .await
        .unwrap();
}

/// Writes `body` as one frame, whatever it holds.
pub async fn send_frame(stream: &mut Stream, body: &[u8]) {
    write_frame(stream, body, usize::MAX).await.unwrap();
}

/// Writes raw bytes (a length prefix of the test's choosing, say); errors are ignored since
/// the server may close the stream meanwhile.
pub async fn send_bytes(stream: &mut Stream, bytes: &[u8]) {
    use futures::AsyncWriteExt;
    let _ = stream.write_all(bytes).await;
    let _ = stream.flush().await;
}

/// Reads one message; `None` when the server closed the stream (cleanly or not).
pub async fn recv(stream: &mut Stream) -> Option<Message> {
    match read_frame(stream, DEFAULT_MAX_MESSAGE_SIZE).await {
        Ok(Some(body)) => Some(Message::decode(&body).expect("the server sends valid messages")),
        Ok(None) | Err(_) => None,
    }
}
