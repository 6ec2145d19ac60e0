//! One load peer: its own identity and connection, requests on fresh streams, and the paging
//! walk of a discoverer.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use futures::{
    channel::{mpsc, oneshot},
    AsyncWriteExt, SinkExt, StreamExt,
};
use libp2p::{identity::Keypair, swarm::SwarmEvent, Multiaddr, PeerId, Stream};
use rendezvous_discovery::{
    codec::{read_message, write_message, DiscoverPage, Message, DEFAULT_MAX_MESSAGE_SIZE},
    Cookie, Namespace, PROTOCOL,
};

use crate::{node, streams};

/// How long one connection (TCP, noise, yamux) may take to establish, and one request (stream
/// negotiation, request, response) before it counts as failed, for `rendezvous load`.
pub(super) const TIMEOUT: Duration = Duration::from_secs(30);

/// How long a load client's connection stays open with nothing in flight: the whole run (the
/// client decides when it ends, by dropping its swarm).
const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Stream requests a client's swarm task can have queued: backpressure for the request window.
const STREAM_REQUEST_QUEUE: usize = 32;

/// One peer with its own identity and connection, driven by its own task (ended when the client
/// is dropped). Also the clients of `rendezvous flood`.
pub(crate) struct Client {
    pub(crate) key: Keypair,
    pub(super) peer: PeerId,
    in_flight: tokio::sync::Semaphore,
    /// How long one request may take.
    timeout: Duration,
    streams: mpsc::Sender<streams::StreamReply>,
    pub(super) task: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    /// Connects a fresh identity to `server_peer` at `server` (from `source`, the kernel's
    /// choice when `None`), with at most `streams_per_client` requests in flight; connecting,
    /// and each request, may take `timeout`.
    pub(crate) async fn connect(
        server: Multiaddr,
        server_peer: PeerId,
        source: Option<IpAddr>,
        streams_per_client: usize,
        timeout: Duration,
    ) -> Result<Self, String> {
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let (streams, requests) = mpsc::channel(STREAM_REQUEST_QUEUE);
        let mut swarm = node::swarm(key.clone(), IDLE_TIMEOUT, source, |_| {
            streams::Behaviour::new(server_peer, PROTOCOL, timeout, requests)
        })
        .map_err(|e| e.to_string())?;
        swarm
            .dial(server)
            .map_err(|e| format!("cannot dial: {e}"))?;
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            while let Some(event) = swarm.next().await {
                match event {
                    SwarmEvent::ConnectionEstablished { .. } => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(Ok(()));
                        }
                    }
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(Err(error.to_string()));
                        }
                    }
                    SwarmEvent::ConnectionClosed { cause, .. } => {
                        tracing::debug!(%peer, ?cause, "connection to the server closed");
                    }
                    _ => {}
                }
            }
        });
        let outcome = tokio::time::timeout(timeout, ready_rx).await;
        match outcome {
            Ok(Ok(Ok(()))) => Ok(Self {
                key,
                peer,
                in_flight: tokio::sync::Semaphore::new(streams_per_client),
                timeout,
                streams,
                task,
            }),
            Ok(Ok(Err(e))) => {
                task.abort();
                Err(e)
            }
            Ok(Err(_)) => {
                task.abort();
                Err("the swarm ended before connecting".into())
            }
            Err(_) => {
                task.abort();
                Err(format!("no connection after {timeout:?}"))
            }
        }
    }

    /// Opens a fresh rendezvous stream to the server.
    pub(crate) async fn open(&self) -> Result<Stream, String> {
        let (tx, rx) = oneshot::channel();
        self.streams
            .clone()
            .send(tx)
            .await
            .map_err(|_| "the client's swarm has stopped".to_string())?;
        rx.await
            .map_err(|_| "the connection closed before the stream opened".to_string())?
    }

    /// Sends one request on a fresh stream and reads its response.
    pub(crate) async fn request(&self, message: &Message) -> Result<Message, String> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| "the client is shutting down".to_string())?;
        let exchange = async {
            let mut stream = self.open().await?;
            write_message(&mut stream, message, DEFAULT_MAX_MESSAGE_SIZE)
                .await
                .map_err(|e| format!("cannot send: {e}"))?;
            let response = read_message(&mut stream, DEFAULT_MAX_MESSAGE_SIZE)
                .await
                .map_err(|e| format!("cannot read the response: {e}"))?
                .ok_or_else(|| "the stream ended without a response".to_string())?
                .map_err(|e| format!("undecodable response: {e}"))?;
            // Half-close so a server waiting for a next request on this stream sees the end.
            let _ = stream.close().await;
            Ok(response)
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| format!("no response after {:?}", self.timeout))?
    }

    /// Pages through each scope with cookies until a page comes back short.
    pub(super) async fn walk(&self, scopes: &[Option<Namespace>], limit: u64) -> Walk {
        let mut walk = Walk::default();
        for scope in scopes {
            let mut cookie: Option<Cookie> = None;
            loop {
                let message = Message::Discover {
                    namespace: scope.clone(),
                    cookie: cookie.clone(),
                    limit: Some(limit),
                };
                let t = Instant::now();
                let page = match self.request(&message).await {
                    Ok(Message::DiscoverResponse(Ok(page))) => page,
                    Ok(Message::DiscoverResponse(Err(e))) => {
                        walk.fail(format!("DISCOVER refused: {} {}", e.code, e.text));
                        break;
                    }
                    Ok(other) => {
                        walk.fail(format!("DISCOVER answered with {other:?}"));
                        break;
                    }
                    Err(e) => {
                        walk.fail(e);
                        break;
                    }
                };
                walk.latencies.push(t.elapsed());
                let DiscoverPage {
                    registrations,
                    cookie: next,
                    skipped,
                } = page;
                let full = (registrations.len() + skipped) as u64 >= limit;
                walk.skipped += skipped;
                walk.received += registrations.len() as u64;
                for registration in registrations {
                    *walk
                        .seen
                        .entry((registration.record.peer_id(), registration.namespace))
                        .or_insert(0) += 1;
                }
                if !full {
                    break;
                }
                match next {
                    Some(next) => cookie = Some(next),
                    None => {
                        walk.fail("a full page came without a cookie".into());
                        break;
                    }
                }
            }
        }
        walk
    }
}

/// What one discoverer saw.
#[derive(Default)]
pub(super) struct Walk {
    pub(super) seen: HashMap<(PeerId, Namespace), u32>,
    pub(super) received: u64,
    pub(super) skipped: usize,
    pub(super) latencies: Vec<Duration>,
    pub(super) errors: u64,
    pub(super) error: Option<String>,
}

impl Walk {
    fn fail(&mut self, error: String) {
        self.errors += 1;
        self.error.get_or_insert(error);
    }
}
