//! The aggregator in a swarm, next to identify, ping, kad and gossipsub.

mod support;

use std::{
    collections::VecDeque,
    task::{Context, Poll, Waker},
};

use libp2p::{
    core::{transport::PortUse, Endpoint},
    gossipsub, identify, kad,
    multiaddr::Protocol,
    ping,
    swarm::{
        dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, SwarmEvent, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId, Swarm,
};
use libp2p_swarm_test::SwarmExt as _;
use rendezvous_discovery::{
    bootstrap,
    discovery::{self, Found, Source},
};
use support::recorder::Recorder;

// ---- A user's own source: a DNS-list-like resolver, fed by hand. --------------------------

#[derive(Debug, Clone)]
enum DnsEvent {
    Resolved { peer: PeerId, addrs: Vec<Multiaddr> },
    Removed(PeerId),
}

/// The few lines a user writes to make their behaviour a discovery source.
impl Source for DnsList {
    fn discoveries(&self, event: &DnsEvent, found: &mut Found) {
        match event {
            DnsEvent::Resolved { peer, addrs } => {
                found.discovered(self.label, *peer, addrs.clone())
            }
            DnsEvent::Removed(peer) => found.expired(self.label, *peer),
        }
    }
}

struct DnsList {
    label: &'static str,
    events: VecDeque<DnsEvent>,
    waker: Option<Waker>,
}

impl DnsList {
    fn new(label: &'static str) -> Self {
        Self {
            label,
            events: VecDeque::new(),
            waker: None,
        }
    }

    fn push(&mut self, event: DnsEvent) {
        self.events.push_back(event);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

impl NetworkBehaviour for DnsList {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = DnsEvent;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        e: THandlerOutEvent<Self>,
    ) {
        libp2p::core::util::unreachable(e)
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<DnsEvent, THandlerInEvent<Self>>> {
        match self.events.pop_front() {
            Some(e) => Poll::Ready(ToSwarm::GenerateEvent(e)),
            None => {
                self.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

// ---- The node: sources aggregated, next to the usual protocols. ----------------------------

#[derive(NetworkBehaviour)]
struct Sources {
    bootstrap: bootstrap::Behaviour,
    dns: DnsList,
    dht: DnsList,
}

impl Source for Sources {
    fn discoveries(&self, event: &SourcesEvent, found: &mut Found) {
        match event {
            SourcesEvent::Bootstrap(e) => self.bootstrap.discoveries(e, found),
            SourcesEvent::Dns(e) => self.dns.discoveries(e, found),
            SourcesEvent::Dht(e) => self.dht.discoveries(e, found),
        }
    }
}

#[derive(NetworkBehaviour)]
struct Node {
    discovery: discovery::Behaviour<Sources>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    gossipsub: gossipsub::Behaviour,
    recorder: Recorder,
}

fn node(bootstrap: Vec<Multiaddr>, config: discovery::Config) -> Swarm<Node> {
    Swarm::new_ephemeral_tokio(|key| {
        let peer = key.public().to_peer_id();
        let sources = Sources {
            bootstrap: bootstrap::Behaviour::new(bootstrap::Config::new(bootstrap).unwrap()),
            dns: DnsList::new("dns"),
            dht: DnsList::new("dht"),
        };
        Node {
            discovery: discovery::Behaviour::new(sources, config),
            identify: support::identify(&key.public()),
            ping: ping::Behaviour::default(),
            kad: kad::Behaviour::new(peer, kad::store::MemoryStore::new(peer)),
            gossipsub: gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key),
                gossipsub::Config::default(),
            )
            .unwrap(),
            recorder: Recorder::default(),
        }
    })
}

/// A peer to be discovered, listening on a memory and a TCP address, driven in the background.
async fn target() -> (PeerId, Multiaddr, Multiaddr) {
    let mut swarm = Swarm::new_ephemeral_tokio(|_| ping::Behaviour::default());
    let (memory, tcp) = swarm.listen().await;
    let peer = *swarm.local_peer_id();
    tokio::spawn(swarm.loop_on_next());
    (peer, memory, tcp)
}

type Ev = discovery::Event<SourcesEvent>;

/// The aggregator's events up to (not including) the first pass-through event `until` accepts.
async fn events_until(swarm: &mut Swarm<Node>, until: impl Fn(&SourcesEvent) -> bool) -> Vec<Ev> {
    let mut seen = Vec::new();
    loop {
        if let NodeEvent::Discovery(e) = swarm.next_behaviour_event().await {
            match e {
                discovery::Event::Source(s) if until(&s) => return seen,
                other => seen.push(other),
            }
        }
    }
}

fn discovered(events: &[Ev]) -> Vec<(PeerId, Vec<Multiaddr>, &'static str)> {
    events
        .iter()
        .filter_map(|e| match e {
            discovery::Event::Discovered {
                peer,
                addrs,
                source,
            } => Some((*peer, addrs.clone(), *source)),
            _ => None,
        })
        .collect()
}

fn expired(events: &[Ev]) -> Vec<(PeerId, &'static str)> {
    events
        .iter()
        .filter_map(|e| match e {
            discovery::Event::Expired { peer, source } => Some((*peer, *source)),
            _ => None,
        })
        .collect()
}

fn dns(swarm: &mut Swarm<Node>) -> &mut DnsList {
    &mut swarm.behaviour_mut().discovery.inner_mut().dns
}

fn dht(swarm: &mut Swarm<Node>) -> &mut DnsList {
    &mut swarm.behaviour_mut().discovery.inner_mut().dht
}

#[tokio::test]
async fn a_peer_from_two_sources_is_reported_once_and_a_second_address_is_added() {
    let (b, memory, tcp) = target().await;
    let mut a = node(
        vec![memory.clone().with(Protocol::P2p(b))],
        discovery::Config::default(),
    );

    let events = events_until(&mut a, |e| matches!(e, SourcesEvent::Bootstrap(_))).await;
    assert_eq!(
        discovered(&events),
        [(b, vec![memory.clone()], "bootstrap")]
    );

    // The second source knows the same address and a new one: only the new one is reported.
    dns(&mut a).push(DnsEvent::Resolved {
        peer: b,
        addrs: vec![memory.clone(), tcp.clone()],
    });
    let events = events_until(&mut a, |e| matches!(e, SourcesEvent::Dns(_))).await;
    assert_eq!(discovered(&events), [(b, vec![tcp.clone()], "dns")]);

    // A repetition is not news.
    dns(&mut a).push(DnsEvent::Resolved {
        peer: b,
        addrs: vec![tcp.clone(), memory.clone()],
    });
    let events = events_until(&mut a, |e| matches!(e, SourcesEvent::Dns(_))).await;
    assert!(events.is_empty(), "{events:?}");

    // The swarm heard of each address once.
    assert_eq!(
        a.behaviour().recorder.seen,
        [(b, memory.clone()), (b, tcp.clone())]
    );

    // The bootstrap list still knows b: no Expired, but the address only dns knew is gone.
    dns(&mut a).push(DnsEvent::Removed(b));
    let events = events_until(&mut a, |e| matches!(e, SourcesEvent::Dns(_))).await;
    assert!(events.is_empty(), "{events:?}");
    let book = a.behaviour().discovery.address_book();
    assert_eq!(book.sources_of(&b), ["bootstrap"]);
    assert_eq!(book.addresses_of(&b).collect::<Vec<_>>(), [&memory]);

    // Dialing is off by default.
    assert_eq!(a.behaviour().discovery.dials_in_flight(), 0);
    assert_eq!(a.connected_peers().count(), 0);
}

#[tokio::test]
async fn expired_is_reported_once_the_last_source_lets_the_peer_go() {
    let mut a = node(vec![], discovery::Config::default());
    let c = PeerId::random();
    let addr: Multiaddr = "/memory/4242".parse().unwrap();
    for source in [dns, dht] {
        source(&mut a).push(DnsEvent::Resolved {
            peer: c,
            addrs: vec![addr.clone()],
        });
    }
    let events = events_until(&mut a, |e| matches!(e, SourcesEvent::Dht(_))).await;
    assert_eq!(discovered(&events), [(c, vec![addr.clone()], "dns")]);

    dns(&mut a).push(DnsEvent::Removed(c));
    let events = events_until(&mut a, |e| matches!(e, SourcesEvent::Dns(_))).await;
    assert!(expired(&events).is_empty(), "{events:?}");

    dht(&mut a).push(DnsEvent::Removed(c));
    let events = events_until(&mut a, |e| matches!(e, SourcesEvent::Dht(_))).await;
    assert_eq!(expired(&events), [(c, "dht")]);
    assert!(a.behaviour().discovery.address_book().is_empty());
}

#[tokio::test]
async fn dial_by_peer_id_works_with_only_a_discovered_address() {
    let (b, memory, _tcp) = target().await;
    let mut a = node(vec![], discovery::Config::default());

    // Nothing is known about b yet.
    assert!(a.dial(b).is_err());

    dns(&mut a).push(DnsEvent::Resolved {
        peer: b,
        addrs: vec![memory.clone().with(Protocol::P2p(b))],
    });
    let events = events_until(&mut a, |e| matches!(e, SourcesEvent::Dns(_))).await;
    assert_eq!(discovered(&events), [(b, vec![memory.clone()], "dns")]);

    a.dial(b).unwrap();
    a.wait(|e| match e {
        SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == b => Some(()),
        SwarmEvent::OutgoingConnectionError { error, .. } => panic!("dial failed: {error}"),
        _ => None,
    })
    .await;
    // The composed protocols run over it.
    a.wait(|e| match e {
        SwarmEvent::Behaviour(NodeEvent::Ping(ping::Event {
            peer,
            result: Ok(_),
            ..
        })) if peer == b => Some(()),
        _ => None,
    })
    .await;
}

#[tokio::test]
async fn discovered_peers_are_dialed_when_asked_with_bounded_dials_in_flight() {
    let mut targets = Vec::new();
    for _ in 0..3 {
        targets.push(target().await);
    }
    let mut a = node(
        vec![],
        discovery::Config::default()
            .with_dial_discovered(true)
            .with_max_dials_in_flight(1),
    );
    for (peer, memory, _) in &targets {
        dns(&mut a).push(DnsEvent::Resolved {
            peer: *peer,
            addrs: vec![memory.clone()],
        });
    }
    let mut connected = Vec::new();
    while connected.len() < targets.len() {
        let event = a.next_swarm_event().await;
        assert!(a.behaviour().discovery.dials_in_flight() <= 1);
        match event {
            SwarmEvent::ConnectionEstablished { peer_id, .. } => connected.push(peer_id),
            SwarmEvent::OutgoingConnectionError { error, .. } => panic!("dial failed: {error}"),
            _ => {}
        }
    }
    connected.sort();
    let mut expected: Vec<_> = targets.iter().map(|(p, _, _)| *p).collect();
    expected.sort();
    assert_eq!(connected, expected);
    assert_eq!(a.behaviour().discovery.dials_in_flight(), 0);
}

#[tokio::test]
async fn a_bootstrap_list_dials_its_peers_when_asked() {
    let (b, memory, _tcp) = target().await;
    let mut a = Swarm::new_ephemeral_tokio(|_| {
        bootstrap::Behaviour::new(
            bootstrap::Config::new([memory.with(Protocol::P2p(b))])
                .unwrap()
                .with_dial(true),
        )
    });
    a.wait(|e| match e {
        SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == b => Some(()),
        SwarmEvent::OutgoingConnectionError { error, .. } => panic!("dial failed: {error}"),
        _ => None,
    })
    .await;
}
