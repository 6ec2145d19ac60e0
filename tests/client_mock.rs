//! The client against a scripted mock server: a small behaviour that accepts inbound
//! `/rendezvous/1.0.0` streams, reports each request it reads, and answers as the test's script
//! says (a crafted message, raw bytes, a close without reply, or silence).

mod support;

use std::{
    collections::VecDeque,
    convert::Infallible,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use futures::{future::BoxFuture, stream::FuturesUnordered, AsyncWriteExt, FutureExt, StreamExt};
use libp2p::{
    core::{
        transport::PortUse,
        upgrade::{DeniedUpgrade, ReadyUpgrade},
        Endpoint,
    },
    identity::Keypair,
    swarm::{
        handler::{ConnectionEvent, FullyNegotiatedInbound},
        ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
        NetworkBehaviour, Stream, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent,
        ToSwarm,
    },
    Multiaddr, PeerId, StreamProtocol,
};
use rendezvous_discovery::{
    client::{self, Event, RequestError},
    codec::{read_message, write_frame, DiscoverPage, Message, DEFAULT_MAX_MESSAGE_SIZE},
    Cookie, ErrorCode, ErrorResponse, Namespace, RecordFormat, Registration, SignedRecord,
    PROTOCOL,
};
use support::{
    client::spawn_client,
    node::{spawn, spawn_with_identify, Node},
    recorder::Recorder,
    WithIdentify,
};

// ---- the mock server ----

/// What the mock does with a request.
enum Reply {
    Message(Message),
    /// A framed body of raw bytes.
    Raw(Vec<u8>),
    /// Close the stream without a reply.
    Close,
    /// Keep the stream open and say nothing.
    Silence,
    /// Send the message once the future is done.
    Later(BoxFuture<'static, Message>),
}

type Script = Arc<dyn Fn(&Message) -> Reply + Send + Sync>;

struct Mock {
    script: Script,
    events: VecDeque<Message>,
}

struct MockHandler {
    script: Script,
    running: FuturesUnordered<BoxFuture<'static, Option<(Message, Stream)>>>,
    replying: FuturesUnordered<BoxFuture<'static, ()>>,
}

async fn read_request(mut stream: Stream) -> Option<(Message, Stream)> {
    match read_message(&mut stream, DEFAULT_MAX_MESSAGE_SIZE).await {
        Ok(Some(Ok(message))) => Some((message, stream)),
        _ => None,
    }
}

async fn answer(mut stream: Stream, reply: Reply) {
    let max = DEFAULT_MAX_MESSAGE_SIZE;
    match reply {
        Reply::Message(m) => {
            let _ = write_frame(&mut stream, &m.encode(), max).await;
        }
        Reply::Raw(bytes) => {
            let _ = write_frame(&mut stream, &bytes, max).await;
        }
        Reply::Later(message) => {
            let m = message.await;
            let _ = write_frame(&mut stream, &m.encode(), max).await;
        }
        Reply::Close => {}
        Reply::Silence => {
            futures_timer::Delay::new(Duration::from_secs(60)).await;
        }
    }
    let _ = stream.close().await;
}

impl ConnectionHandler for MockHandler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Message;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = DeniedUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(ReadyUpgrade::new(PROTOCOL), ())
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<DeniedUpgrade, (), Message>> {
        while let Poll::Ready(Some(())) = self.replying.poll_next_unpin(cx) {}
        while let Poll::Ready(Some(read)) = self.running.poll_next_unpin(cx) {
            if let Some((message, stream)) = read {
                let reply = (self.script)(&message);
                self.replying.push(answer(stream, reply).boxed());
                let _ = self.replying.poll_next_unpin(cx);
                return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(message));
            }
        }
        Poll::Pending
    }

    fn on_behaviour_event(&mut self, event: Infallible) {
        match event {}
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
        if let ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
            protocol: stream,
            ..
        }) = event
        {
            self.running.push(read_request(stream).boxed());
        }
    }
}

impl NetworkBehaviour for Mock {
    type ConnectionHandler = MockHandler;
    type ToSwarm = Message;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(MockHandler {
            script: self.script.clone(),
            running: FuturesUnordered::new(),
            replying: FuturesUnordered::new(),
        })
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Err(ConnectionDenied::new("the mock does not dial"))
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        m: THandlerOutEvent<Self>,
    ) {
        self.events.push_back(m);
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Message, THandlerInEvent<Self>>> {
        match self.events.pop_front() {
            Some(m) => Poll::Ready(ToSwarm::GenerateEvent(m)),
            None => Poll::Pending,
        }
    }
}

/// The mock server, next to identify (a client that only discovers holds its first DISCOVER
/// until identify told it the server's protocols); it reports the requests it read.
type MockNode = Node<WithIdentify<Mock>, Message>;

async fn mock(script: impl Fn(&Message) -> Reply + Send + Sync + 'static) -> MockNode {
    let script: Script = Arc::new(script);
    spawn_with_identify(support::swarm(|key| {
        WithIdentify::new(key, |_| Mock {
            script,
            events: VecDeque::new(),
        })
    }))
    .await
}

// ---- helpers ----

fn ns() -> Namespace {
    Namespace::from_static("mock")
}

fn config(server: &MockNode) -> client::Config {
    client::Config::default()
        .with_server(server.peer, vec![server.addr()])
        .with_namespace(ns())
        .with_interval(Duration::from_secs(1))
        .with_limit(2)
        .with_backoff(Duration::from_millis(20), Duration::from_millis(200))
        // Long enough that no test but the one about timeouts ever sees one, even on a loaded
        // 2-core machine (a short timeout here made other tests flaky).
        .with_request_timeout(Duration::from_secs(20))
        .with_seed(5)
}

fn discover_only(server: &MockNode) -> client::Config {
    config(server).with_registration(false)
}

fn register_only(server: &MockNode) -> client::Config {
    config(server).with_discovery(false)
}

fn peer_registration(key: &Keypair, port: u16) -> Registration {
    Registration {
        namespace: ns(),
        record: SignedRecord::new(
            key,
            vec![format!("/memory/{port}").parse().unwrap()],
            RecordFormat::Standard,
        )
        .unwrap(),
        ttl: 3600,
    }
}

fn page(registrations: Vec<Registration>, cookie: &str) -> Reply {
    Reply::Message(Message::DiscoverResponse(Ok(DiscoverPage {
        registrations,
        cookie: Some(Cookie::new(cookie.as_bytes().to_vec()).unwrap()),
        skipped: 0,
    })))
}

fn failure(code: ErrorCode) -> Reply {
    Reply::Message(Message::DiscoverResponse(Err(ErrorResponse::new(
        code, "scripted",
    ))))
}

fn cookie_of(m: &Message) -> Option<Option<String>> {
    match m {
        Message::Discover { cookie, .. } => Some(
            cookie
                .as_ref()
                .map(|c| String::from_utf8_lossy(c.as_bytes()).into_owned()),
        ),
        _ => None,
    }
}

fn discovered(e: &Event) -> Option<PeerId> {
    match e {
        Event::Discovered { peer, .. } => Some(*peer),
        _ => None,
    }
}

fn discover_failed(e: &Event) -> Option<RequestError> {
    match e {
        Event::DiscoverFailed { error, .. } => Some(error.clone()),
        _ => None,
    }
}

// ---- the tests ----

#[tokio::test]
async fn unavailable_is_retried_without_being_reported() {
    let calls = Arc::new(Mutex::new(0));
    let mut server = mock(move |_| {
        let mut n = calls.lock().unwrap();
        *n += 1;
        if *n == 1 {
            failure(ErrorCode::Unavailable)
        } else {
            page(vec![], "c")
        }
    })
    .await;
    let mut c = spawn_client(discover_only(&server)).await;
    let outcome = c
        .wait_for(|e| match e {
            Event::DiscoverPolled { .. } => Some(Ok(())),
            Event::DiscoverFailed { error, .. } => Some(Err(error.clone())),
            _ => None,
        })
        .await;
    assert_eq!(outcome, Ok(()), "retried, not reported");
    // The same first DISCOVER twice: the retry, not a loop starting over.
    assert_eq!(server.wait_for(cookie_of).await, None);
    assert_eq!(server.wait_for(cookie_of).await, None);
}

#[tokio::test]
async fn no_reply_times_out() {
    let server = mock(|_| Reply::Silence).await;
    let mut c =
        spawn_client(discover_only(&server).with_request_timeout(Duration::from_millis(50))).await;
    assert_eq!(c.wait_for(discover_failed).await, RequestError::Timeout);
}

#[tokio::test]
async fn malformed_and_mistyped_replies_fail_the_request_without_panic() {
    let calls = Arc::new(Mutex::new(0));
    let server = mock(move |_| {
        let mut n = calls.lock().unwrap();
        *n += 1;
        match *n {
            1 => Reply::Raw(vec![0xff, 0xff, 0xff]),
            2 => Reply::Message(Message::RegisterResponse(Ok(10))),
            3 => Reply::Close,
            _ => page(vec![], "c"),
        }
    })
    .await;
    let mut c = spawn_client(discover_only(&server)).await;
    for _ in 0..2 {
        let error = c.wait_for(discover_failed).await;
        assert!(
            matches!(error, RequestError::UnexpectedResponse(_)),
            "{error:?}"
        );
    }
    // A stream closed without a reply is sent again, not reported.
    let outcome = c
        .wait_for(|e| match e {
            Event::DiscoverPolled { .. } => Some(Ok(())),
            Event::DiscoverFailed { error, .. } => Some(Err(error.clone())),
            _ => None,
        })
        .await;
    assert_eq!(outcome, Ok(()));
}

#[tokio::test]
async fn a_bad_record_in_a_page_is_skipped_and_the_rest_kept() {
    let good = Keypair::generate_ed25519();
    let reg = peer_registration(&good, 3);
    let server = mock(move |m| {
        if cookie_of(m) != Some(None) {
            return page(vec![], "c");
        }
        let Reply::Message(message) = page(vec![reg.clone()], "c") else {
            unreachable!()
        };
        let mut bytes = message.encode();
        // A second discoverResponse (field 6) merges into the first: one more registration
        // whose signed record is garbage.
        let bad_register = [
            &[0x0a, 0x04][..],
            b"mock",
            &[0x12, 0x03, 1, 2, 3, 0x18, 0x10],
        ]
        .concat();
        let registrations = [&[0x0a, bad_register.len() as u8][..], &bad_register].concat();
        bytes.extend_from_slice(&[0x32, registrations.len() as u8]);
        bytes.extend_from_slice(&registrations);
        Reply::Raw(bytes)
    })
    .await;
    let mut c = spawn_client(discover_only(&server)).await;
    assert_eq!(c.wait_for(discovered).await, good.public().to_peer_id());
    // Nothing is dropped in silence.
    let skipped = c
        .wait_for(|e| match e {
            Event::RecordsSkipped { count, .. } => Some(*count),
            _ => None,
        })
        .await;
    assert_eq!(skipped, 1);
}

#[tokio::test]
async fn out_of_range_ttls_and_refusals_do_not_break_registration() {
    let calls = Arc::new(Mutex::new(0));
    let server = mock(move |m| {
        let Message::Register(_) = m else {
            return Reply::Close;
        };
        let mut n = calls.lock().unwrap();
        *n += 1;
        Reply::Message(Message::RegisterResponse(match *n {
            1 => Err(ErrorResponse::new(ErrorCode::InvalidTtl, "scripted")),
            2 => Ok(u64::MAX),
            _ => Ok(0),
        }))
    })
    .await;
    let mut c = spawn_client(register_only(&server)).await;
    let error = c
        .wait_for(|e| match e {
            Event::RegisterFailed { error, .. } => Some(error.clone()),
            _ => None,
        })
        .await;
    assert!(matches!(error, RequestError::Remote(e) if e.code == ErrorCode::InvalidTtl));
    let granted = c
        .wait_for(|e| match e {
            Event::Registered { ttl, .. } => Some(*ttl),
            _ => None,
        })
        .await;
    assert_eq!(granted, u64::MAX, "reported as granted, clamped inside");
}

#[tokio::test]
async fn manual_requests_carry_their_id_and_return_the_page() {
    let key = Keypair::generate_ed25519();
    let reg = peer_registration(&key, 9);
    let server = mock(move |m| match m {
        Message::Discover { .. } => page(vec![reg.clone()], "m1"),
        Message::Register(_) => Reply::Message(Message::RegisterResponse(Ok(100))),
        _ => Reply::Close,
    })
    .await;
    let server_peer = server.peer;
    let mut c = spawn_client(
        config(&server)
            .with_registration(false)
            .with_discovery(false),
    )
    .await;
    let (d, r) = c
        .ask(move |swarm| {
            let d =
                swarm
                    .behaviour_mut()
                    .rendezvous
                    .discover(server_peer, Some(ns()), None, Some(10));
            let r = swarm
                .behaviour_mut()
                .rendezvous
                .register(server_peer, ns(), Some(100));
            (d, r)
        })
        .await;
    // The two outcomes may come in either order.
    let (mut completed, mut registered) = (None, None);
    while completed.is_none() || registered.is_none() {
        let event = c.wait_for(|e| Some(e.clone())).await;
        match event {
            Event::DiscoverCompleted {
                request,
                registrations,
                cookie,
                ..
            } => completed = Some((request, registrations.len(), cookie)),
            Event::Registered { request, .. } => registered = Some(request),
            _ => {}
        }
    }
    let (request, count, cookie) = completed.unwrap();
    assert_eq!((request, count), (d, 1));
    assert_eq!(cookie.unwrap().as_bytes(), b"m1");
    assert_eq!(registered, Some(r));
    // Discovered addresses make `swarm.dial(peer_id)` work.
    let peer = key.public().to_peer_id();
    assert_eq!(
        c.ask(move |swarm| swarm.behaviour().rendezvous.discovered_addresses(&peer))
            .await,
        vec!["/memory/9".parse::<Multiaddr>().unwrap()]
    );
}

#[derive(NetworkBehaviour)]
struct Recorded {
    identify: libp2p::identify::Behaviour,
    client: client::Behaviour,
    recorder: Recorder,
}

#[tokio::test]
async fn discovered_addresses_are_announced_to_the_swarm() {
    let key = Keypair::generate_ed25519();
    let reg = peer_registration(&key, 11);
    let server = mock(move |m| match cookie_of(m) {
        Some(None) => page(vec![reg.clone()], "c"),
        _ => page(vec![], "c"),
    })
    .await;
    let config = discover_only(&server);
    let mut node = spawn(support::swarm(|k| Recorded {
        identify: support::identify(&k.public()),
        client: client::Behaviour::new(k, config),
        recorder: Recorder::default(),
    }))
    .await;
    // Identify announces the server's addresses too; the client announces the discovered peer's.
    let discovered = key.public().to_peer_id();
    let seen = node
        .wait_for(|e| match e {
            RecordedEvent::Recorder((peer, addr)) if *peer == discovered => Some(addr.clone()),
            _ => None,
        })
        .await;
    assert_eq!(seen, "/memory/11".parse::<Multiaddr>().unwrap());
}

/// Requests that a gate holds until `size` of them are open at once, then answers together.
#[derive(Default)]
struct Gate {
    open: usize,
    most_open: usize,
    held: Vec<futures::channel::oneshot::Sender<()>>,
}

impl Gate {
    /// A request arrived: its reply waits for the gate.
    fn arrive(gate: &Arc<Mutex<Gate>>, size: usize, reply: Message) -> Reply {
        let (tx, rx) = futures::channel::oneshot::channel();
        let mut g = gate.lock().unwrap();
        g.open += 1;
        g.most_open = g.most_open.max(g.open);
        g.held.push(tx);
        if g.held.len() == size {
            // Closed before the replies go: a request the client sends after one of them is
            // counted after.
            g.open -= size;
            for tx in g.held.drain(..) {
                let _ = tx.send(());
            }
        }
        Reply::Later(
            async move {
                let _ = rx.await;
                reply
            }
            .boxed(),
        )
    }
}

/// Issue 18: 64 requests at once reach the server at most `MAX_IN_FLIGHT_PER_CONNECTION` at a
/// time (the server holds each until that many are open, so fewer would hang), and every one
/// is answered.
#[tokio::test]
async fn a_connection_carries_at_most_the_in_flight_bound_and_the_rest_wait_their_turn() {
    use rendezvous_discovery::client::{MAX_IN_FLIGHT_PER_CONNECTION, MAX_NAMESPACES};
    let gate = Arc::new(Mutex::new(Gate::default()));
    let at_server = gate.clone();
    let server = mock(move |_| {
        let Reply::Message(reply) = page(vec![], "c") else {
            unreachable!()
        };
        Gate::arrive(&at_server, MAX_IN_FLIGHT_PER_CONNECTION, reply)
    })
    .await;
    let server_peer = server.peer;
    let mut c = spawn_client(
        config(&server)
            .with_registration(false)
            .with_discovery(false),
    )
    .await;
    let ids: std::collections::BTreeSet<_> = c
        .ask(move |swarm| {
            (0..MAX_NAMESPACES)
                .map(|_| {
                    swarm.behaviour_mut().rendezvous.discover(
                        server_peer,
                        Some(ns()),
                        None,
                        Some(10),
                    )
                })
                .collect()
        })
        .await;
    let mut answered = std::collections::BTreeSet::new();
    while answered.len() < ids.len() {
        let request = c
            .wait_for(|e| match e {
                Event::DiscoverCompleted { request, .. } => Some(Ok(*request)),
                Event::DiscoverFailed { error, .. } => Some(Err(error.clone())),
                _ => None,
            })
            .await
            .expect("every request is answered");
        answered.insert(request);
    }
    assert_eq!(answered, ids);
    assert_eq!(gate.lock().unwrap().most_open, MAX_IN_FLIGHT_PER_CONNECTION);
}

#[tokio::test]
async fn at_a_server_that_reads_only_peer_info_the_client_registers_and_reads_peer_info() {
    let other = Keypair::generate_ed25519();
    let other_addr: libp2p::Multiaddr = "/memory/77".parse().unwrap();
    let other_info = Registration {
        namespace: ns(),
        record: SignedRecord::new(&other, vec![other_addr.clone()], RecordFormat::PeerInfo)
            .unwrap(),
        ttl: 3600,
    };
    let formats = Arc::new(Mutex::new(Vec::new()));
    let seen = formats.clone();
    // py-libp2p 0.8's server: it reads a signed envelope as a PeerInfo, finds another peer id
    // in it and refuses; a PeerInfo it takes; its pages hold PeerInfo entries.
    let server = mock(move |m| match m {
        Message::Register(r) => {
            seen.lock().unwrap().push(r.record.format());
            Reply::Message(Message::RegisterResponse(
                if r.record.format().is_signed() {
                    Err(ErrorResponse::new(
                        ErrorCode::NotAuthorized,
                        "Peer can only register itself",
                    ))
                } else {
                    Ok(7200)
                },
            ))
        }
        Message::Discover { .. } => page(vec![other_info.clone()], "c"),
        _ => Reply::Close,
    })
    .await;
    let mut c = spawn_client(config(&server)).await;
    c.wait_for(|e| matches!(e, Event::Registered { .. }).then_some(()))
        .await;
    assert_eq!(
        formats.lock().unwrap()[..],
        [RecordFormat::Standard, RecordFormat::PeerInfo]
    );
    let found = c
        .wait_for(|e| match e {
            Event::Discovered { peer, addrs, .. } => Some((*peer, addrs.clone())),
            _ => None,
        })
        .await;
    assert_eq!(found, (other.public().to_peer_id(), vec![other_addr]));
}
