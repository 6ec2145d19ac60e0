//! The shell against the store boundary: answers wait for the store, and the in-flight bound.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Instant,
};

use futures::{channel::oneshot, task::noop_waker_ref};
use libp2p::{
    identity::Keypair,
    swarm::{ConnectionId, NetworkBehaviour, ToSwarm},
    PeerId,
};

use super::*;
use crate::codec::{ErrorCode, Message, RecordFormat, Request, SignedRecord};
use crate::server::{
    handler::{InboundRequest, ToBehaviour},
    Behaviour, Config, Event,
};

/// A memory store whose completions wait until the test opens the gate: a disk that has not
/// committed yet.
struct Gated {
    inner: MemoryStore,
    open: Arc<AtomicBool>,
    held: VecDeque<StoreEvent>,
}

impl Store for Gated {
    fn submit(&mut self, id: OperationId, operation: Operation, now: Instant) {
        self.inner.submit(id, operation, now);
    }

    fn poll(&mut self, cx: &mut Context<'_>, now: Instant) -> Poll<StoreEvent> {
        while let Poll::Ready(event) = self.inner.poll(cx, now) {
            self.held.push_back(event);
        }
        if self.open.load(Ordering::SeqCst) {
            if let Some(event) = self.held.pop_front() {
                return Poll::Ready(event);
            }
        }
        Poll::Pending
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }

    fn local(&self) -> Option<&dyn Local> {
        self.inner.local()
    }
}

fn gated() -> (Behaviour, Arc<AtomicBool>) {
    let open = Arc::new(AtomicBool::new(false));
    let config = Config::default().with_requests_per_second(0);
    let store = Gated {
        inner: MemoryStore::new(config.clone()),
        open: open.clone(),
        held: VecDeque::new(),
    };
    (Behaviour::with_store(config, store), open)
}

fn register(key: &Keypair, namespace: &str) -> Request {
    let record = SignedRecord::new(key, Vec::new(), RecordFormat::Legacy).unwrap();
    Request::Register(UnverifiedRegistration {
        namespace: Namespace::new(namespace).unwrap(),
        envelope: record.envelope_bytes().to_vec(),
        ttl: None,
    })
}

fn discover() -> Request {
    Request::Discover {
        namespace: None,
        cookie: None,
        limit: None,
    }
}

/// Hands `request` to the server as if it came from `peer`; returns where its answer arrives.
fn send(server: &mut Behaviour, peer: PeerId, request: Request) -> oneshot::Receiver<Message> {
    let (tx, rx) = oneshot::channel();
    let request = InboundRequest {
        request,
        responder: Some(tx),
        received: Instant::now(),
        pass: None,
    };
    server.on_connection_handler_event(
        peer,
        ConnectionId::new_unchecked(0),
        ToBehaviour::Request(request),
    );
    rx
}

/// Polls the server until it has nothing more to do; returns its events.
fn drain(server: &mut Behaviour) -> Vec<Event> {
    let mut cx = Context::from_waker(noop_waker_ref());
    let mut events = Vec::new();
    while let Poll::Ready(event) = server.poll(&mut cx) {
        if let ToSwarm::GenerateEvent(event) = event {
            events.push(event);
        }
    }
    events
}

#[test]
fn given_a_store_that_has_not_confirmed_then_register_is_answered_only_when_it_does() {
    let (mut server, open) = gated();
    let key = Keypair::generate_ed25519();
    let mut answer = send(&mut server, key.public().to_peer_id(), register(&key, "a"));
    assert!(drain(&mut server).is_empty());
    assert_eq!(
        answer.try_recv().unwrap(),
        None,
        "answered before the store confirmed"
    );
    assert_eq!(server.operations_in_flight(), 1);

    open.store(true, Ordering::SeqCst);
    let events = drain(&mut server);
    assert!(matches!(events[..], [Event::PeerRegistered { .. }]));
    assert_eq!(
        answer.try_recv().unwrap(),
        Some(Message::RegisterResponse(Ok(crate::DEFAULT_TTL)))
    );
    assert_eq!(server.operations_in_flight(), 0);
}

#[test]
fn given_max_in_flight_waiting_then_register_and_discover_get_unavailable_and_unregister_goes_on() {
    let (mut server, open) = gated();
    let key = Keypair::generate_ed25519();
    let peer = key.public().to_peer_id();
    // Known, so its DISCOVERs go to the store at once (see server::formats).
    server.set_served_formats(peer, crate::server::ServedFormats::Signed);
    let mut waiting: Vec<_> = (0..MAX_IN_FLIGHT)
        .map(|_| send(&mut server, peer, discover()))
        .collect();
    assert_eq!(server.operations_in_flight(), MAX_IN_FLIGHT);

    let mut refused = send(&mut server, peer, register(&key, "a"));
    let Some(Message::RegisterResponse(Err(error))) = refused.try_recv().unwrap() else {
        panic!("a REGISTER over the bound is answered at once");
    };
    assert_eq!(error.code, ErrorCode::Unavailable);
    assert!(error.text.contains("server busy"), "{}", error.text);
    let mut refused = send(&mut server, peer, discover());
    let Some(Message::DiscoverResponse(Err(error))) = refused.try_recv().unwrap() else {
        panic!("a DISCOVER over the bound is answered at once");
    };
    assert_eq!(error.code, ErrorCode::Unavailable);
    let events = drain(&mut server);
    assert!(matches!(
        events[..],
        [
            Event::PeerNotRegistered { .. },
            Event::DiscoverNotServed { .. }
        ]
    ));
    assert_eq!(
        server.registration_count(),
        Some(0),
        "the refused REGISTER changed nothing"
    );

    // An UNREGISTER has no answer to refuse with: it reaches the store.
    server.on_connection_handler_event(
        peer,
        ConnectionId::new_unchecked(0),
        ToBehaviour::Request(InboundRequest {
            request: Request::Unregister(Namespace::new("a").unwrap()),
            responder: None,
            received: Instant::now(),
            pass: None,
        }),
    );
    assert_eq!(server.operations_in_flight(), MAX_IN_FLIGHT);

    open.store(true, Ordering::SeqCst);
    drain(&mut server);
    assert_eq!(server.operations_in_flight(), 0);
    for answer in &mut waiting {
        assert!(matches!(
            answer.try_recv().unwrap(),
            Some(Message::DiscoverResponse(Ok(_)))
        ));
    }
    // Room again.
    let mut answer = send(&mut server, peer, register(&key, "a"));
    drain(&mut server);
    assert!(matches!(
        answer.try_recv().unwrap(),
        Some(Message::RegisterResponse(Ok(_)))
    ));
}
