//! A raw rendezvous client for tests: opens outbound streams to a peer and hands them to the
//! test, which then writes and reads codec messages or raw frames on them, so a test can send
//! several requests on one stream, oversized frames, standard-format records, and so on.

use std::{
    collections::VecDeque,
    task::{Context, Poll},
};

use futures::{
    channel::oneshot, future::BoxFuture, stream::FuturesUnordered, FutureExt, StreamExt,
};
use libp2p::{
    core::{transport::PortUse, Endpoint},
    identity::Keypair,
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, NotifyHandler, Stream,
        THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId, StreamProtocol,
};
use rendezvous_discovery::{
    codec::{read_frame, write_frame, Message, DEFAULT_MAX_MESSAGE_SIZE},
    RecordFormat, SignedRecord,
};

/// The binary's stream opener (`rendezvous load` and `flood` use it): its connection handler
/// opens the streams here too.
#[path = "../../src/bin/rendezvous/streams.rs"]
mod streams;

/// An outbound stream was opened, or failed to open.
#[derive(Debug)]
pub enum Event {
    /// The stream, ready for the test to use.
    Opened(PeerId, Stream),
    /// Negotiation failed (or the peer was not connected).
    Failed(PeerId, String),
}

/// The raw client behaviour.
pub struct Behaviour {
    /// The swarm's key, to sign records of this peer.
    pub key: Keypair,
    protocol: StreamProtocol,
    to_open: VecDeque<PeerId>,
    /// Streams asked of the handlers, until they are delivered.
    opening: FuturesUnordered<BoxFuture<'static, Event>>,
}

impl Behaviour {
    pub fn new(key: Keypair) -> Self {
        Self {
            key,
            protocol: rendezvous_discovery::PROTOCOL,
            to_open: VecDeque::new(),
            opening: FuturesUnordered::new(),
        }
    }

    /// Opens streams on `protocol` instead of rendezvous (the push protocol, say).
    pub fn with_protocol(mut self, protocol: StreamProtocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// A record of this peer in `format`.
    pub fn record(&self, format: RecordFormat) -> SignedRecord {
        SignedRecord::new(&self.key, vec!["/memory/1234".parse().unwrap()], format).unwrap()
    }

    /// Asks for a new stream to `peer` (connected already); see [`Event::Opened`].
    pub fn open(&mut self, peer: PeerId) {
        self.to_open.push_back(peer);
    }

    fn handler(&self) -> streams::Handler {
        // Negotiation is bounded by the tests' hang guard only.
        streams::Handler::new(self.protocol.clone(), super::HANG)
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = streams::Handler;
    type ToSwarm = Event;

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

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        if let Poll::Ready(Some(event)) = self.opening.poll_next_unpin(cx) {
            return Poll::Ready(ToSwarm::GenerateEvent(event));
        }
        if let Some(peer) = self.to_open.pop_front() {
            let (reply, opened) = oneshot::channel();
            self.opening.push(
                async move {
                    match opened.await {
                        Ok(Ok(stream)) => Event::Opened(peer, stream),
                        Ok(Err(error)) => Event::Failed(peer, error),
                        // The swarm dropped the request: no connection to `peer`.
                        Err(_) => Event::Failed(peer, "not connected".into()),
                    }
                }
                .boxed(),
            );
            return Poll::Ready(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::Any,
                event: reply,
            });
        }
        Poll::Pending
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

/// Sends `message` and reads the answer; `None` when the server closed the stream.
pub async fn request(stream: &mut Stream, message: &Message) -> Option<Message> {
    send(stream, message).await;
    recv(stream).await
}

/// `n` as a protobuf varint.
pub fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Protobuf field `tag` (wire type 2) holding `bytes`.
pub fn field(tag: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(varint(bytes.len() as u64));
    out.extend_from_slice(bytes);
    out
}

/// `Register { ns = 1, signedPeerRecord = 2, ttl = 3 }` in field order (as go and js write
/// it), the TTL left out when `None`; the envelope is sent as given, valid or not.
pub fn register_body(ns: &[u8], envelope: &[u8], ttl: Option<u64>) -> Vec<u8> {
    let mut body = field(0x0a, ns);
    body.extend(field(0x12, envelope));
    if let Some(ttl) = ttl {
        body.push(0x18);
        body.extend(varint(ttl));
    }
    body
}

/// `Message { type = REGISTER (0), register = 2 }` holding [`register_body`].
pub fn register_message(ns: &[u8], envelope: &[u8], ttl: Option<u64>) -> Vec<u8> {
    let mut message = vec![0x08, 0x00];
    message.extend(field(0x12, &register_body(ns, envelope, ttl)));
    message
}
