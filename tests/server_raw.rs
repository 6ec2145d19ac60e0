//! The server's wire behaviour through the raw test client: several requests per stream,
//! oversized and undecodable messages, every status code, stream and rate caps.

mod support;

use libp2p::{identity::Keypair, Stream, Swarm};
use libp2p_swarm_test::SwarmExt;
use rendezvous_discovery::{
    codec::{Message, NewRegistration},
    server, Cookie, ErrorCode, Namespace, RecordFormat, SignedRecord, Ttl,
};

use support::{raw, run_while};

struct Setup {
    server: Swarm<server::Behaviour>,
    client: Swarm<raw::Behaviour>,
    stream: Stream,
    /// Server events seen while exchanging, for [`Setup::next_stream_event`].
    seen: Vec<server::Event>,
}

async fn setup(config: server::Config) -> Setup {
    let mut server = support::our_server(config).await;
    let mut client = Swarm::new_ephemeral_tokio(raw::Behaviour::new);
    client.connect(&mut server).await;
    let stream = raw::open_stream(&mut client, &mut server).await;
    Setup {
        server,
        client,
        stream,
        seen: Vec::new(),
    }
}

impl Setup {
    /// Sends `requests` on the stream in a row, then reads `responses` answers.
    async fn exchange(
        &mut self,
        requests: Vec<Message>,
        responses: usize,
    ) -> (Vec<Option<Message>>, Vec<server::Event>) {
        let stream = &mut self.stream;
        let (answers, events) = run_while(
            async move {
                for request in &requests {
                    raw::send(stream, request).await;
                }
                let mut out = Vec::new();
                for _ in 0..responses {
                    out.push(raw::recv(stream).await);
                }
                out
            },
            &mut self.server,
            &mut self.client,
        )
        .await;
        self.seen.extend(events.iter().cloned());
        (answers, events)
    }

    /// Sends one request and returns its answer.
    async fn ask(&mut self, request: Message) -> Message {
        self.ask_with_events(request).await.0
    }

    /// Sends one request and returns its answer and the server's events meanwhile.
    async fn ask_with_events(&mut self, request: Message) -> (Message, Vec<server::Event>) {
        let (mut responses, events) = self.exchange(vec![request], 1).await;
        (responses.pop().unwrap().expect("an answer"), events)
    }

    /// Drives the server until it reports a [`server::Event::StreamRefused`] or a
    /// [`server::Event::RequestRejected`] (the handler reports them after closing the stream).
    async fn next_stream_event(&mut self) -> server::Event {
        let is_stream_event = |e: &server::Event| {
            matches!(
                e,
                server::Event::StreamRefused { .. } | server::Event::RequestRejected { .. }
            )
        };
        if let Some(i) = self.seen.iter().position(is_stream_event) {
            return self.seen.remove(i);
        }
        self.server
            .wait(|event| match event {
                libp2p::swarm::SwarmEvent::Behaviour(
                    e @ (server::Event::StreamRefused { .. }
                    | server::Event::RequestRejected { .. }),
                ) => Some(e),
                _ => None,
            })
            .await
    }

    /// Sends raw bytes, then reads once: `None` when the server closed the stream.
    async fn send_bytes_then_recv(&mut self, bytes: Vec<u8>) -> Option<Message> {
        let stream = &mut self.stream;
        let (answer, events) = run_while(
            async move {
                raw::send_bytes(stream, &bytes).await;
                raw::recv(stream).await
            },
            &mut self.server,
            &mut self.client,
        )
        .await;
        self.seen.extend(events);
        answer
    }

    fn record(&self, format: RecordFormat) -> SignedRecord {
        self.client.behaviour().record(format)
    }

    fn register(&self, namespace: &str, ttl: Option<Ttl>) -> Message {
        Message::Register(NewRegistration {
            namespace: Namespace::new(namespace).unwrap(),
            record: self.record(RecordFormat::Standard),
            ttl,
        })
    }
}

fn discover(namespace: Option<&str>, cookie: Option<Cookie>) -> Message {
    Message::Discover {
        namespace: namespace.map(|ns| Namespace::new(ns).unwrap()),
        cookie,
        limit: None,
    }
}

fn page(message: &Message) -> (Vec<(String, RecordFormat)>, Cookie) {
    match message {
        Message::DiscoverResponse(Ok(page)) => (
            page.registrations
                .iter()
                .map(|r| (r.namespace.to_string(), r.record.format()))
                .collect(),
            page.cookie.clone().expect("every OK page has a cookie"),
        ),
        other => panic!("expected a page, got {other:?}"),
    }
}

fn register_error(message: &Message) -> (ErrorCode, String) {
    match message {
        Message::RegisterResponse(Err(e)) => (e.code, e.text.clone()),
        other => panic!("expected a REGISTER_RESPONSE error, got {other:?}"),
    }
}

fn discover_error(message: &Message) -> (ErrorCode, String) {
    match message {
        Message::DiscoverResponse(Err(e)) => (e.code, e.text.clone()),
        other => panic!("expected a DISCOVER_RESPONSE error, got {other:?}"),
    }
}

#[tokio::test]
async fn several_requests_on_one_stream_are_served_in_order() {
    let mut s = setup(server::Config::default()).await;
    let (responses, events) = s
        .exchange(
            vec![
                s.register("a", None),
                s.register("b", Some(3 * 3600)),
                discover(None, None),
                // No response, and an unknown namespace is a no-op.
                Message::Unregister {
                    namespace: Namespace::from_static("nope"),
                    peer: None,
                },
                Message::Unregister {
                    namespace: Namespace::from_static("a"),
                    peer: None,
                },
                discover(Some("a"), None),
                discover(Some("b"), None),
            ],
            5,
        )
        .await;
    let responses: Vec<Message> = responses.into_iter().map(Option::unwrap).collect();
    assert_eq!(responses[0], Message::RegisterResponse(Ok(2 * 3600)));
    assert_eq!(responses[1], Message::RegisterResponse(Ok(3 * 3600)));
    let (all, _) = page(&responses[2]);
    assert_eq!(
        all,
        vec![
            ("a".into(), RecordFormat::Standard),
            ("b".into(), RecordFormat::Standard)
        ]
    );
    assert!(page(&responses[3]).0.is_empty(), "a was unregistered");
    assert_eq!(page(&responses[4]).0.len(), 1);
    let names: Vec<_> = events
        .iter()
        .map(|e| match e {
            server::Event::PeerRegistered { .. } => "registered",
            server::Event::PeerUnregistered { .. } => "unregistered",
            server::Event::DiscoverServed { .. } => "served",
            _ => "other",
        })
        .collect();
    assert_eq!(
        names,
        [
            "registered",
            "registered",
            "served",
            "unregistered",
            "served",
            "served"
        ]
    );
}

#[tokio::test]
async fn every_refusal_is_answered_with_its_code_and_a_reason() {
    let config = server::Config::default().with_max_registrations_per_peer(1);
    let mut s = setup(config).await;

    let foreign = SignedRecord::new(
        &Keypair::generate_ed25519(),
        vec!["/memory/9".parse().unwrap()],
        RecordFormat::Standard,
    )
    .unwrap();
    let (answer, events) = s
        .ask_with_events(Message::Register(NewRegistration {
            namespace: Namespace::from_static("a"),
            record: foreign,
            ttl: None,
        }))
        .await;
    let (code, text) = register_error(&answer);
    assert_eq!(code, ErrorCode::NotAuthorized);
    assert!(text.contains("can only register itself"), "{text}");
    assert!(
        matches!(
            &events[..],
            [server::Event::PeerNotRegistered { limit: None, .. }]
        ),
        "the signer check is not a limit: {events:?}"
    );

    let (code, text) = register_error(&s.ask(s.register("a", Some(60))).await);
    assert_eq!(code, ErrorCode::InvalidTtl);
    assert!(text.contains("expected"), "{text}");

    assert!(matches!(
        s.ask(s.register("a", None)).await,
        Message::RegisterResponse(Ok(_))
    ));
    let (answer, events) = s.ask_with_events(s.register("b", None)).await;
    let (code, text) = register_error(&answer);
    assert_eq!(code, ErrorCode::NotAuthorized);
    assert!(text.contains("already has 1"), "{text}");
    assert!(
        matches!(
            &events[..],
            [server::Event::PeerNotRegistered {
                limit: Some(server::Limit::PeerRegistrations),
                ..
            }]
        ),
        "{events:?}"
    );

    let (_, cookie_a) = page(&s.ask(discover(Some("a"), None)).await);
    let (code, text) = discover_error(&s.ask(discover(Some("b"), Some(cookie_a))).await);
    assert_eq!(code, ErrorCode::InvalidCookie);
    assert!(text.contains("namespace"), "{text}");
    let (code, _) = discover_error(
        &s.ask(discover(None, Some(Cookie::new(vec![1]).unwrap())))
            .await,
    );
    assert_eq!(code, ErrorCode::InvalidCookie);

    // The stream still serves after all that, and nothing changed.
    assert_eq!(page(&s.ask(discover(None, None)).await).0.len(), 1);
    assert_eq!(s.server.behaviour().registration_count(), Some(1));
}

/// A REGISTER frame for namespace `ns` whose envelope is `envelope` (not necessarily valid).
fn register_frame(ns: &[u8], envelope: &[u8]) -> Vec<u8> {
    let body = raw::register_message(ns, envelope, None);
    let mut frame = raw::varint(body.len() as u64);
    frame.extend_from_slice(&body);
    frame
}

#[tokio::test]
async fn an_invalid_register_is_answered_then_the_stream_closes() {
    let mut s = setup(server::Config::default()).await;
    let answer = s
        .send_bytes_then_recv(register_frame(b"", b"garbage"))
        .await
        .expect("an answer");
    let (code, text) = register_error(&answer);
    assert_eq!(code, ErrorCode::InvalidNamespace);
    assert!(text.contains("namespace is empty"), "{text}");
    assert_eq!(s.send_bytes_then_recv(Vec::new()).await, None, "closed");
    assert_eq!(s.server.behaviour().registration_count(), Some(0));
}

#[tokio::test]
async fn a_register_with_a_bad_envelope_is_answered_and_the_stream_serves_on() {
    let mut s = setup(server::Config::default()).await;
    let answer = s
        .send_bytes_then_recv(register_frame(b"chat", b"garbage"))
        .await
        .expect("an answer");
    let (code, text) = register_error(&answer);
    assert_eq!(code, ErrorCode::InvalidSignedPeerRecord);
    assert!(text.contains("signed envelope"), "{text}");
    assert_eq!(s.server.behaviour().registration_count(), Some(0));
    assert!(
        s.seen.iter().any(|e| matches!(
            e,
            server::Event::PeerNotRegistered { error, limit: None, .. }
                if error.code == ErrorCode::InvalidSignedPeerRecord
        )),
        "a bad envelope is no limit: {:?}",
        s.seen
    );
    assert!(matches!(
        s.ask(s.register("a", None)).await,
        Message::RegisterResponse(Ok(_))
    ));
}

#[tokio::test]
async fn a_peer_over_its_rate_is_refused_before_its_envelope_is_decoded() {
    let config = server::Config::default()
        .with_requests_per_second(1)
        .with_request_burst(1);
    let mut s = setup(config).await;
    assert_eq!(page(&s.ask(discover(None, None)).await).0.len(), 0);
    // The bucket is empty: the rate answers, not the (undecodable) envelope.
    let answer = s
        .send_bytes_then_recv(register_frame(b"chat", b"garbage"))
        .await
        .expect("an answer");
    let (code, text) = register_error(&answer);
    assert_eq!(code, ErrorCode::Unavailable);
    assert!(text.contains("too many requests"), "{text}");
}

#[tokio::test]
async fn over_the_store_byte_budget_register_is_unavailable_and_nothing_is_stored() {
    let config = server::Config::default().with_max_store_bytes(800);
    let mut s = setup(config).await;
    let (answer, events) = s.ask_with_events(s.register("a", None)).await;
    let (code, text) = register_error(&answer);
    assert_eq!(code, ErrorCode::Unavailable);
    assert!(text.contains("max-store-bytes"), "{text}");
    assert!(
        matches!(
            &events[..],
            [server::Event::PeerNotRegistered {
                limit: Some(server::Limit::StoreBytes),
                ..
            }]
        ),
        "{events:?}"
    );
    assert_eq!(s.server.behaviour().registration_count(), Some(0));
    assert_eq!(s.server.behaviour().stored_bytes().unwrap(), 0);
}

#[tokio::test]
async fn an_invalid_discover_namespace_is_answered_then_the_stream_closes() {
    let mut s = setup(server::Config::default()).await;
    let long = vec![b'x'; 256];
    // type DISCOVER, discover { ns 256 × "x" }: two-byte lengths, so built by hand.
    let mut discover = vec![0x0a, 0x80, 0x02];
    discover.extend_from_slice(&long);
    let mut body = vec![0x08, 0x03, 0x2a, 0x83, 0x02];
    body.extend_from_slice(&discover);
    let mut frame = vec![(body.len() as u8) | 0x80, (body.len() >> 7) as u8];
    frame.extend_from_slice(&body);
    let (code, text) = discover_error(&s.send_bytes_then_recv(frame).await.expect("an answer"));
    assert_eq!(code, ErrorCode::InvalidNamespace);
    assert!(text.contains("256"), "{text}");
    assert_eq!(s.send_bytes_then_recv(Vec::new()).await, None, "closed");
}

#[tokio::test]
async fn a_message_of_unknown_type_closes_the_stream_without_an_answer() {
    let mut s = setup(server::Config::default()).await;
    assert_eq!(s.send_bytes_then_recv(vec![2, 0x08, 0x09]).await, None);
}

#[tokio::test]
async fn an_oversized_message_closes_the_stream_and_the_connection_still_serves() {
    let mut s = setup(server::Config::default().with_max_message_size(1024)).await;
    // A length prefix of 2000 bytes (over the 1024 cap), then some of the body.
    let mut frame = vec![0xd0, 0x0f];
    frame.extend_from_slice(&[0u8; 64]);
    assert_eq!(s.send_bytes_then_recv(frame).await, None);
    assert!(matches!(
        s.next_stream_event().await,
        server::Event::StreamRefused {
            limit: server::Limit::MessageSize,
            ..
        }
    ));

    // A REGISTER just over the cap, sent as a well-formed frame: refused the same way.
    let big = SignedRecord::new(
        &s.client.behaviour().key,
        (0..40)
            .map(|i| {
                format!("/dns4/host-{i:04}.example.com/tcp/4001")
                    .parse()
                    .unwrap()
            })
            .collect(),
        RecordFormat::Standard,
    )
    .unwrap();
    let register = Message::Register(NewRegistration {
        namespace: Namespace::from_static("a"),
        record: big,
        ttl: None,
    });
    assert!(register.encoded_len() > 1024);
    s.stream = raw::open_stream(&mut s.client, &mut s.server).await;
    let (answers, _) = s.exchange(vec![register], 1).await;
    assert_eq!(answers, vec![None]);

    s.stream = raw::open_stream(&mut s.client, &mut s.server).await;
    assert!(matches!(
        s.ask(s.register("a", None)).await,
        Message::RegisterResponse(Ok(_))
    ));
}

#[tokio::test]
async fn streams_over_the_per_connection_cap_are_refused() {
    let mut s = setup(server::Config::default().with_max_streams_per_connection(1)).await;
    // The first stream is in use (the server has seen a request on it).
    assert_eq!(page(&s.ask(discover(None, None)).await).0.len(), 0);
    let mut second = raw::open_stream_seeing(&mut s.client, &mut s.server, &mut s.seen).await;
    let (answer, events) = run_while(
        async {
            // Writing may fail already: the server dropped the stream.
            let frame = [vec![2], vec![0x08, 0x03]].concat();
            raw::send_bytes(&mut second, &frame).await;
            raw::recv(&mut second).await
        },
        &mut s.server,
        &mut s.client,
    )
    .await;
    assert_eq!(answer, None, "the second stream is refused");
    // Reported as soon as the stream is dropped: while opening it or while the client waited.
    s.seen.extend(events);
    let refused = s.next_stream_event().await;
    assert!(
        matches!(
            refused,
            server::Event::StreamRefused {
                limit: server::Limit::Streams,
                ..
            }
        ),
        "{refused:?}"
    );
    assert_eq!(page(&s.ask(discover(None, None)).await).0.len(), 0);
}

#[tokio::test]
async fn streams_over_the_read_ones_wait_unread_and_are_answered_in_turn() {
    use futures::AsyncWriteExt;

    let served = server::SERVED_STREAMS_PER_CONNECTION;
    let mut s = setup(server::Config::default().with_max_streams_per_connection(served + 4)).await;
    // The setup's stream and `served + 3` more: four over the streams read at once.
    let mut more = Vec::new();
    while more.len() < served + 3 {
        more.push(raw::open_stream_seeing(&mut s.client, &mut s.server, &mut s.seen).await);
    }
    let first = &mut s.stream;
    let (answers, events) = run_while(
        async move {
            let mut streams: Vec<&mut libp2p::Stream> =
                std::iter::once(first).chain(more.iter_mut()).collect();
            // A DISCOVER on every stream at once; the last four wait for a read one to end.
            for stream in &mut streams {
                raw::send(stream, &discover(None, None)).await;
            }
            let mut answers = Vec::new();
            for stream in &mut streams[..served] {
                answers.push(raw::recv(stream).await);
                stream.close().await.unwrap();
            }
            for stream in &mut streams[served..] {
                answers.push(raw::recv(stream).await);
            }
            answers
        },
        &mut s.server,
        &mut s.client,
    )
    .await;
    assert_eq!(answers.len(), served + 4);
    for answer in answers {
        assert!(
            matches!(answer, Some(Message::DiscoverResponse(Ok(_)))),
            "{answer:?}"
        );
    }
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, server::Event::StreamRefused { .. })),
        "no stream refused: {events:?}"
    );
}

#[tokio::test]
async fn a_peer_over_its_request_rate_gets_unavailable() {
    let config = server::Config::default()
        .with_requests_per_second(1)
        .with_request_burst(2);
    let mut s = setup(config).await;
    let (answers, events) = s.exchange(vec![discover(None, None); 10], 10).await;
    let answers: Vec<Message> = answers.into_iter().map(Option::unwrap).collect();
    // The burst passes; refusals follow (ten requests cannot take 8 s).
    assert!(matches!(answers[0], Message::DiscoverResponse(Ok(_))));
    assert!(matches!(answers[1], Message::DiscoverResponse(Ok(_))));
    let refused: Vec<_> = answers[2..]
        .iter()
        .filter(|a| matches!(a, Message::DiscoverResponse(Err(_))))
        .collect();
    assert!(!refused.is_empty());
    let (code, text) = discover_error(refused[0]);
    assert_eq!(code, ErrorCode::Unavailable);
    assert!(text.contains("too many requests"), "{text}");
    assert!(events.iter().any(|e| matches!(
        e,
        server::Event::DiscoverNotServed {
            limit: Some(server::Limit::Rate),
            ..
        }
    )));
}

#[tokio::test]
async fn a_full_server_refuses_new_registrations_as_over_its_total_limit() {
    let mut s = setup(server::Config::default().with_max_registrations(1)).await;
    assert!(matches!(
        s.ask(s.register("a", None)).await,
        Message::RegisterResponse(Ok(_))
    ));
    let (answer, events) = s.ask_with_events(s.register("b", None)).await;
    assert_eq!(register_error(&answer).0, ErrorCode::Unavailable);
    assert!(
        matches!(
            &events[..],
            [server::Event::PeerNotRegistered {
                limit: Some(server::Limit::Registrations),
                ..
            }]
        ),
        "{events:?}"
    );
}
