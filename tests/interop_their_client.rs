//! Interop: rust-libp2p's rendezvous client (`libp2p-rendezvous` 0.18) against our server.
//!
//! Their client registers, pages through a namespace with cookies, and unregisters; every
//! response it gets must decode (a response it cannot decode surfaces as `RegisterFailed` or
//! `DiscoverFailed` with `E_UNAVAILABLE`), also while standard-format peers are registered.

mod support;

use std::collections::HashMap;

use libp2p::{identity::Keypair, request_response, StreamProtocol};
use libp2p::{rendezvous, PeerId, Swarm};
use libp2p_swarm_test::SwarmExt;
use rendezvous_discovery::{
    codec::{read_message, write_message, Message, NewRegistration, DEFAULT_MAX_MESSAGE_SIZE},
    server, Namespace, RecordFormat, SignedRecord, PROTOCOL,
};
use support::{
    drive_until,
    node::{spawn_as_is, Node},
};

const NS: &str = "interop";

fn their_ns() -> rendezvous::Namespace {
    rendezvous::Namespace::from_static(NS)
}

/// Our server, listening on a memory address, driven by its own task; its events come out of
/// the returned channel.
async fn our_server() -> (Swarm<server::Behaviour>, PeerId) {
    let mut server =
        Swarm::new_ephemeral_tokio(|_| server::Behaviour::new(server::Config::default()));
    server.listen().with_memory_addr_external().await;
    let peer = *server.local_peer_id();
    (server, peer)
}

async fn their_client(
    server: &mut Swarm<server::Behaviour>,
) -> Swarm<rendezvous::client::Behaviour> {
    let mut client = Swarm::new_ephemeral_tokio(rendezvous::client::Behaviour::new);
    client.listen().with_memory_addr_external().await;
    client.connect(server).await;
    client
}

/// A raw client: request-response over our codec, for requests no ready-made client sends
/// (standard-format REGISTERs to check what rust-libp2p's client is then served).
#[derive(Clone, Default)]
struct RawCodec;

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Message;
    type Response = Message;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Message>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        self.read_response(&PROTOCOL, io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Message>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        read_message(io, DEFAULT_MAX_MESSAGE_SIZE)
            .await
            .map_err(invalid)?
            .ok_or_else(|| invalid("stream ended before a message"))?
            .map_err(invalid)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        m: Message,
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        write_message(io, &m, DEFAULT_MAX_MESSAGE_SIZE)
            .await
            .map_err(invalid)
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        m: Message,
    ) -> std::io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        write_message(io, &m, DEFAULT_MAX_MESSAGE_SIZE)
            .await
            .map_err(invalid)
    }
}

fn raw_client() -> (Swarm<request_response::Behaviour<RawCodec>>, Keypair) {
    let mut identity = None;
    let swarm = Swarm::new_ephemeral_tokio(|key| {
        identity = Some(key);
        request_response::Behaviour::with_codec(
            RawCodec,
            [(PROTOCOL, request_response::ProtocolSupport::Outbound)],
            request_response::Config::default(),
        )
    });
    (swarm, identity.expect("the behaviour closure ran"))
}

async fn register(client: &mut Swarm<rendezvous::client::Behaviour>, server: PeerId) {
    client
        .behaviour_mut()
        .register(their_ns(), server, None)
        .expect("the client has an external address");
    match client.next_behaviour_event().await {
        rendezvous::client::Event::Registered { namespace, ttl, .. } => {
            assert_eq!(namespace, their_ns());
            assert!(ttl > 0);
        }
        other => panic!("expected Registered, got {other:?}"),
    }
}

/// Pages through the namespace with cookies, `limit` at a time, until an empty page; returns
/// how often each peer was seen and how many pages it took.
async fn page_through(
    client: &mut Swarm<rendezvous::client::Behaviour>,
    server: PeerId,
    limit: u64,
) -> (HashMap<PeerId, usize>, usize) {
    let mut seen = HashMap::new();
    let mut cookie = None;
    let mut pages = 0;
    loop {
        client
            .behaviour_mut()
            .discover(Some(their_ns()), cookie.take(), Some(limit), server);
        match client.next_behaviour_event().await {
            rendezvous::client::Event::Discovered {
                registrations,
                cookie: next,
                ..
            } => {
                pages += 1;
                assert!(registrations.len() as u64 <= limit);
                if registrations.is_empty() {
                    return (seen, pages);
                }
                for registration in registrations {
                    assert_eq!(registration.namespace, their_ns());
                    *seen.entry(registration.record.peer_id()).or_insert(0) += 1;
                }
                cookie = Some(next);
            }
            other => panic!("expected a page, got {other:?} (a response it cannot decode?)"),
        }
    }
}

#[tokio::test]
async fn their_client_registers_pages_with_cookies_and_unregisters_on_our_server() {
    let (mut server, server_peer) = our_server().await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(their_client(&mut server).await);
    }
    let mut server: Node<_> = spawn_as_is(server);
    for client in &mut clients {
        register(client, server_peer).await;
    }
    let registrants: Vec<PeerId> = clients.iter().map(|c| *c.local_peer_id()).collect();

    // 5 registrations, pages of 2: 2 + 2 + 1 + an empty page.
    let (seen, pages) = page_through(&mut clients[0], server_peer, 2).await;
    assert_eq!(pages, 4);
    assert_eq!(seen.len(), 5);
    for peer in &registrants {
        assert_eq!(seen.get(peer), Some(&1), "{peer} seen exactly once");
    }

    // A cookie taken after the last page returns only what is new.
    clients[1]
        .behaviour_mut()
        .unregister(their_ns(), server_peer);
    let unregistered = drive_until(
        &mut clients[1],
        server.wait_for(|e| match e {
            server::Event::PeerUnregistered { peer, .. } => Some(*peer),
            _ => None,
        }),
    )
    .await;
    assert_eq!(unregistered, registrants[1]);

    let (seen, _) = page_through(&mut clients[2], server_peer, 10).await;
    assert_eq!(seen.len(), 4);
    assert!(!seen.contains_key(&registrants[1]));
}

#[tokio::test]
async fn their_client_never_gets_an_undecodable_page_while_standard_peers_are_registered() {
    let (mut server, server_peer) = our_server().await;

    // Two peers register in the standard format (which rust-libp2p 0.18 cannot decode),
    // through a raw request-response client speaking our codec.
    let mut standard = Vec::new();
    for _ in 0..2 {
        let (mut raw, key) = raw_client();
        raw.connect(&mut server).await;
        standard.push((raw, key));
    }
    let mut legacy = Vec::new();
    for _ in 0..3 {
        legacy.push(their_client(&mut server).await);
    }
    let mut server: Node<_> = spawn_as_is(server);
    for (raw, key) in &mut standard {
        let record = SignedRecord::new(
            key,
            vec!["/memory/1".parse().unwrap()],
            RecordFormat::Standard,
        )
        .unwrap();
        raw.behaviour_mut().send_request(
            &server_peer,
            Message::Register(NewRegistration {
                namespace: Namespace::from_static(NS),
                record,
                ttl: None,
            }),
        );
        match raw.next_behaviour_event().await {
            request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            } => assert!(
                matches!(response, Message::RegisterResponse(Ok(_))),
                "{response:?}"
            ),
            other => panic!("expected a REGISTER_RESPONSE, got {other:?}"),
        }
    }
    let registered = drive_until(&mut standard[0].0, async {
        let mut formats = Vec::new();
        while formats.len() < 2 {
            formats.push(
                server
                    .wait_for(|e| match e {
                        server::Event::PeerRegistered { registration, .. } => {
                            Some(registration.record.format())
                        }
                        _ => None,
                    })
                    .await,
            );
        }
        formats
    })
    .await;
    assert_eq!(registered, [RecordFormat::Standard; 2]);
    for client in &mut legacy {
        register(client, server_peer).await;
    }

    // Every page decodes; their client sees the legacy registrations, each once, and none of
    // the standard ones.
    let (seen, _) = page_through(&mut legacy[0], server_peer, 2).await;
    let legacy_peers: Vec<PeerId> = legacy.iter().map(|c| *c.local_peer_id()).collect();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for peer in &legacy_peers {
        assert_eq!(seen.get(peer), Some(&1));
    }
    // All namespaces at once, too.
    legacy[1]
        .behaviour_mut()
        .discover(None, None, None, server_peer);
    match legacy[1].next_behaviour_event().await {
        rendezvous::client::Event::Discovered { registrations, .. } => {
            assert_eq!(registrations.len(), 3);
        }
        other => panic!("expected a page, got {other:?}"),
    }
}
