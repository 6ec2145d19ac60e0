//! The rendezvous client as a peer-discovery source.
//!
//! [`Behaviour`] sits in a libp2p `Swarm` next to mdns and a bootstrap list. It dials the
//! configured rendezvous servers, registers the node's namespaces with each of them as soon as it
//! is connected, keeps the registrations fresh, polls every server for every namespace on an
//! interval and emits [`Event::Discovered`] for peers that are new or whose addresses changed, and
//! [`Event::Expired`] when a discovered registration ends without being seen again. The
//! application writes no loop of its own: it only reads events (or lets the `discovery`
//! aggregator read them).
//!
//! ```no_run
//! use std::time::Duration;
//! use libp2p::{identity::Keypair, Multiaddr, PeerId};
//! use rendezvous_discovery::{client, Namespace};
//!
//! let key = Keypair::generate_ed25519();
//! let server: PeerId = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".parse().unwrap();
//! let addr: Multiaddr = "/ip4/127.0.0.1/tcp/62649".parse().unwrap();
//! let behaviour = client::Behaviour::new(
//!     key,
//!     client::Config::default()
//!         .with_server(server, vec![addr])
//!         .with_namespace(Namespace::from_static("my-app"))
//!         .with_interval(Duration::from_secs(30)),
//! );
//! ```
//!
//! # How it schedules
//!
//! The logic lives in a pure core (`schedule`) fed `now: Instant` and events, so all timing is
//! tested in virtual time; [`Behaviour`] is a thin shell with one timer.
//!
//! - **Registration**, per (server, namespace): REGISTER on connect; refresh at a random point
//!   between [`REFRESH_AT_MIN`] and [`REFRESH_AT_MAX`] of the granted TTL; on failure retry with
//!   exponential backoff with jitter, between [`Config::with_backoff`]'s bounds. The node never
//!   registers without an external address ([`Event::NoAddressesToRegister`]); when its external
//!   addresses change it registers again everywhere with a new signed record.
//! - **Discovery**, per (server, namespace): on each tick a DISCOVER with the stored cookie; while
//!   a page comes back full (as many entries as the limit) the next page is asked for at once, up to
//!   [`MAX_PAGES_PER_TICK`]; a shorter page ends the paging until the next tick. A server that cuts
//!   a page to fit its message size also ends the paging early: the rest comes on the next tick,
//!   since the cookie says where to go on. The cookie is kept forever, so a steady poll returns only
//!   what is new. `E_INVALID_COOKIE` (for example after a server restart) drops the cookie and starts
//!   over; peers already known with the same addresses produce no second [`Event::Discovered`].
//!   Discovery at a server waits while a REGISTER is in flight there, because a server may pick
//!   the records it serves by the format of the asker's registration (ours does), and a page
//!   served before would move the cookie past records the client could not see.
//! - **Record format**: standard by default. rust-libp2p's `libp2p-rendezvous` 0.18 servers only
//!   accept the legacy format and drop a standard REGISTER without a reply; with
//!   [`Config::with_format_fallback`] (on by default) the client notices that and switches that
//!   server, and only that server, to the legacy format. Likewise a py-libp2p 0.8 server, which
//!   reads only unsigned `PeerInfo` records, answers a signed REGISTER `E_NOT_AUTHORIZED` ("Peer
//!   can only register itself"): that server is switched to `PeerInfo` (an unsigned record
//!   proves nothing by itself; see [`SignedRecord`](crate::SignedRecord)). The client reads every layout in a
//!   DISCOVER_RESPONSE (standard, legacy, `PeerInfo`), and its connections list
//!   [`STANDARD_RECORDS_PROTOCOL`](crate::STANDARD_RECORDS_PROTOCOL), a marker that tells a server of ours so (through identify),
//!   so it is sent every registration. A server of ours that has not seen the marker yet when a
//!   DISCOVER arrives asks our identify itself and holds the DISCOVER meanwhile (see the
//!   [server docs](crate::server)), so even the first page of a client that only discovers holds
//!   everything. Besides, a client that does not register holds DISCOVERs to a newly connected
//!   configured server until the connection has told it the remote's protocols (identify
//!   finished on our side), or two seconds passed (a server without identify): other servers
//!   may pick records by what identify says too.
//! - **Requests in flight**: at most [`MAX_IN_FLIGHT_PER_CONNECTION`] (4) per server
//!   connection, each on its own stream, below the stream cap of every server we know (a server
//!   resets streams over its cap). The others wait, oldest first, and go out as earlier ones end:
//!   automatic requests (at most one REGISTER and one DISCOVER per namespace and server, so up
//!   to 2 × [`MAX_NAMESPACES`] = 128 per server, follow-up pages included), manual ones (at most
//!   [`MAX_QUEUED_PER_SERVER`], 128, per server) and the UNREGISTERs of [`Behaviour::stop`]. So
//!   a client in 64 namespaces registers and discovers in all of them at once without losing a
//!   request to a server's stream cap.
//! - **Retries**: a request refused for a passing reason, a stream reset or closed without a
//!   reply, or `E_UNAVAILABLE` (a server's rate limit, or a server busy for the moment), is sent
//!   again after a short jittered backoff (from [`REQUEST_RETRY_DELAY`], doubling), up to
//!   [`MAX_REQUEST_RETRIES`] times; only then is its failure reported. A refusal that judges the
//!   request (an invalid TTL, cookie or record, not authorized) is reported at once.
//! - **Push**: at a server whose identify lists [`PUSH_PROTOCOL`](crate::PUSH_PROTOCOL)
//!   (docs/push.md; our server does), each discovery subscribes from its cookie once a DISCOVER
//!   has caught up (a page that is not full). The server then sends what registered since and
//!   each new registration as it happens, each with its new cookie; a pushed page goes the way of
//!   a polled one (the cookie moves, [`Event::Discovered`] only for what is new), and a pushed
//!   removal (an UNREGISTER, or the server removed a peer that disconnected) emits
//!   [`Event::Expired`] at once. When a subscription ends (the server found the client too slow,
//!   restarted, the connection was lost), the discovery DISCOVERs from its cookie and subscribes
//!   again after a backoff: cookies are the truth, nothing is missed or repeated. The DISCOVER
//!   comes at once, or at a moment drawn within the backoff when the server said it was busy
//!   (`E_UNAVAILABLE`: a server sheds its subscribers under a storm of requests), so that those
//!   it shed do not all poll it at the same moment.
//!   Polling goes on at the interval meanwhile as a safety net; with push, the interval may be
//!   far longer than [`DEFAULT_INTERVAL`] (an hour, say) at no cost in freshness. Servers without
//!   push, and applications without identify, are polled as before.
//! - **Propagation**: a connected peer that announces `/rendezvous/1.0.0` (learned through identify,
//!   or any protocol that reports remote protocols) is taken as a server too: the node registers
//!   there and polls it, up to [`MAX_SERVERS`]. Learned servers are not redialed when they go away.
//! - **Stop**: [`Behaviour::stop`] unregisters every namespace on every connected server and emits
//!   [`Event::Stopped`] once every UNREGISTER has been written and flushed and the server has
//!   ended the stream (or two seconds passed: UNREGISTER has no response), so an application can
//!   wait for it before dropping the swarm without losing the UNREGISTERs in the muxer's buffers.
//!
//! # Remote input
//!
//! Nothing a server sends panics the client. Out-of-range TTLs are clamped to
//! [`crate::MAX_TTL`]; a registration with TTL 0 or without addresses is skipped; records of the
//! local peer are skipped (we do not discover ourselves); registrations in another namespace than
//! the one asked for are skipped; undecodable records are skipped by the codec (reported as
//! [`Event::RecordsSkipped`]), and the rest of the
//! page is kept; a wrong response type fails the request ([`RequestError::UnexpectedResponse`]).
//!
//! # Manual API
//!
//! [`Behaviour::register`], [`Behaviour::unregister`] and [`Behaviour::discover`] return a
//! [`RequestId`] that the outcome event carries (`request` field). A manual call for a server that is
//! not connected queues the request and dials the server; a request for a connected server
//! waits in the same queue while [`MAX_IN_FLIGHT_PER_CONNECTION`] are in flight there. At most
//! [`MAX_QUEUED_PER_SERVER`] wait per server; if the dial fails or the queue is full, the
//! outcome event carries [`RequestError::NotConnected`] or [`RequestError::TooManyPending`]. Manual registrations are
//! one-shot: they are not refreshed (configure a namespace for that), but [`Behaviour::stop`]
//! unregisters them too.

use std::{fmt, time::Duration};

use libp2p::{Multiaddr, PeerId, StreamProtocol};

use crate::{
    codec::{ErrorResponse, Registration},
    Cookie, Namespace, RecordFormat, Ttl, DEFAULT_TTL, PROTOCOL,
};

mod behaviour;
mod handler;
pub(crate) mod schedule;

pub use behaviour::Behaviour;

/// Most rendezvous servers one client tracks, configured and learned together. Each costs a
/// few small maps and a poll per interval; a node that meets many peers announcing the protocol
/// must not grow without limit.
pub const MAX_SERVERS: usize = 64;

/// Most namespaces configured for automatic registration and discovery; every namespace costs a
/// request per server per interval.
pub const MAX_NAMESPACES: usize = 64;

/// Most (peer, namespace) entries in the discovered-peer cache. When it is full, newly
/// discovered registrations are dropped (with a debug log) until entries expire; known entries
/// are still refreshed.
pub const MAX_DISCOVERED: usize = 10_000;

/// Most requests the client has in flight on one connection (one stream each); the others wait
/// their turn. A server serves a bounded number of streams per connection at once and resets the
/// streams over it: ours served 8 before it learnt to let them wait, rust-libp2p's takes 100.
/// Four stays under every server we know, with room for the streams a server still counts for a
/// moment after answering them (until it sees our end of the stream), and keeps a burst from
/// one client (64 namespaces: 128 requests) from taking a server's whole share at once.
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 4;

/// Most manual requests waiting per server, for a connection or for a place among the requests
/// in flight ([`MAX_IN_FLIGHT_PER_CONNECTION`]): enough to register and discover in
/// [`MAX_NAMESPACES`] namespaces by hand at once (a follow-up page is asked for only once its
/// previous page came back, so it takes that one's place). A further request fails at once
/// with [`RequestError::TooManyPending`]. Automatic requests wait too, but they need no bound
/// of their own: each (server, namespace) has at most one REGISTER and one DISCOVER at a time.
pub const MAX_QUEUED_PER_SERVER: usize = 2 * MAX_NAMESPACES;

/// Most times one request is sent again after a refusal that says nothing about the request
/// itself: a stream the server or its muxer reset or closed without a reply (over its stream
/// cap), or `E_UNAVAILABLE` (over its request rate, or busy for the moment). Only the last
/// failure is reported. With [`REQUEST_RETRY_DELAY`] doubling, the retries span about six
/// seconds, more than a server's rate limit needs to let a burst of [`MAX_QUEUED_PER_SERVER`]
/// requests through (ours: 50 per second).
pub const MAX_REQUEST_RETRIES: u32 = 5;

/// The backoff before the first retry of a refused request ([`MAX_REQUEST_RETRIES`]); doubled
/// for each retry after it, and drawn between half of that and all of it so that requests
/// refused together do not come back together.
pub const REQUEST_RETRY_DELAY: Duration = Duration::from_millis(200);

/// Most pages asked for in a row in one discovery tick, so a server that always answers full
/// pages cannot keep the client busy for ever.
pub const MAX_PAGES_PER_TICK: u32 = 100;

/// Earliest refresh point, as a fraction of the granted TTL.
pub const REFRESH_AT_MIN: f64 = 0.7;

/// Latest refresh point, as a fraction of the granted TTL. The refresh time is drawn uniformly
/// between the two, so many clients that registered together do not refresh together.
pub const REFRESH_AT_MAX: f64 = 0.8;

/// Default request timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Default discovery interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// Default page limit asked for in DISCOVER.
pub const DEFAULT_LIMIT: u64 = 100;

/// An identifier of one request, carried by the event that reports its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub(crate) u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request #{}", self.0)
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The server answered with a failure status.
    #[error("server refused: {0}")]
    Remote(ErrorResponse),
    /// The server closed or reset the stream without a reply.
    #[error("the server closed the stream without a reply")]
    NoResponse,
    /// No reply within the configured request timeout.
    #[error("no reply within the request timeout")]
    Timeout,
    /// The reply was not the response type the request expects, or did not decode.
    #[error("unexpected reply: {0}")]
    UnexpectedResponse(String),
    /// The stream failed (I/O error) while writing or reading.
    #[error("stream failed: {0}")]
    Stream(String),
    /// The remote does not support the rendezvous protocol.
    #[error("the remote does not support the rendezvous protocol")]
    Unsupported,
    /// The server is not connected (the dial failed, or the connection closed first).
    #[error("the server is not connected")]
    NotConnected,
    /// Too many manual requests wait for the server (at most [`MAX_QUEUED_PER_SERVER`]), or
    /// the server would be one more than [`MAX_SERVERS`].
    #[error(
        "too many requests wait for this server (at most {MAX_QUEUED_PER_SERVER}), or the client \
         already uses the most servers it may ({MAX_SERVERS})"
    )]
    TooManyPending,
    /// The node has no external address to put in a signed record.
    #[error("no external address to register")]
    NoAddresses,
    /// The client is stopped.
    #[error("the client is stopped")]
    Stopped,
    /// Signing the peer record failed.
    #[error("cannot sign the peer record: {0}")]
    Signing(String),
}

/// What the client reports.
#[derive(Debug, Clone)]
pub enum Event {
    /// A peer was discovered in a namespace for the first time, or with a changed address set.
    Discovered {
        /// The discovered peer.
        peer: PeerId,
        /// Its addresses, from its signed record.
        addrs: Vec<Multiaddr>,
        /// The namespace it is registered in.
        namespace: Namespace,
        /// The server that told us.
        server: PeerId,
    },
    /// A discovered registration's TTL ended without the peer being seen again.
    Expired {
        /// The peer.
        peer: PeerId,
        /// The namespace of the registration.
        namespace: Namespace,
    },
    /// A REGISTER was accepted.
    Registered {
        /// The server.
        server: PeerId,
        /// The namespace.
        namespace: Namespace,
        /// The TTL the server granted, in seconds.
        ttl: Ttl,
        /// The request.
        request: RequestId,
    },
    /// A REGISTER failed. A refusal for a passing reason was retried first (see
    /// [`MAX_REQUEST_RETRIES`]); automatic registrations are then tried again with
    /// [`Config::with_backoff`]'s backoff.
    RegisterFailed {
        /// The server.
        server: PeerId,
        /// The namespace.
        namespace: Namespace,
        /// Why.
        error: RequestError,
        /// The request.
        request: RequestId,
    },
    /// An UNREGISTER was written to the server (it has no response).
    Unregistered {
        /// The server.
        server: PeerId,
        /// The namespace.
        namespace: Namespace,
        /// The request.
        request: RequestId,
    },
    /// An UNREGISTER could not be sent.
    UnregisterFailed {
        /// The server.
        server: PeerId,
        /// The namespace.
        namespace: Namespace,
        /// Why.
        error: RequestError,
        /// The request.
        request: RequestId,
    },
    /// A manual DISCOVER ([`Behaviour::discover`]) was answered. New peers in it are also
    /// reported as [`Event::Discovered`].
    DiscoverCompleted {
        /// The server.
        server: PeerId,
        /// The namespace asked for (`None`: all).
        namespace: Option<Namespace>,
        /// The registrations of the page that decoded and verified.
        registrations: Vec<Registration>,
        /// Entries of the page that did not decode (also reported as
        /// [`Event::RecordsSkipped`]); a caller paging by hand counts them with
        /// `registrations` to tell a full page.
        skipped: usize,
        /// The cookie to pass to the next call to get only what is new.
        cookie: Option<Cookie>,
        /// The request.
        request: RequestId,
    },
    /// Entries of a DISCOVER_RESPONSE were left out because they did not decode (a record in a
    /// layout or format this client cannot read, a bad signature, a missing field). The rest of
    /// the page was used.
    RecordsSkipped {
        /// The server.
        server: PeerId,
        /// The namespace asked for (`None`: all).
        namespace: Option<Namespace>,
        /// How many entries of the page were left out.
        count: usize,
    },
    /// A DISCOVER failed. A refusal for a passing reason was retried first (see
    /// [`MAX_REQUEST_RETRIES`]); the automatic loop then tries again with
    /// [`Config::with_backoff`]'s backoff.
    DiscoverFailed {
        /// The server.
        server: PeerId,
        /// The namespace asked for (`None`: all).
        namespace: Option<Namespace>,
        /// Why.
        error: RequestError,
        /// The request.
        request: RequestId,
    },
    /// A DISCOVER of the automatic discovery loop was answered with a page. New peers in it
    /// are also reported as [`Event::Discovered`].
    DiscoverPolled {
        /// The server.
        server: PeerId,
        /// The namespace asked for.
        namespace: Namespace,
        /// How many registrations the page held (before dropping our own and duplicates).
        registrations: usize,
    },
    /// The server refused the discovery loop's cookie (`E_INVALID_COOKIE`, for example after
    /// it restarted): the loop dropped the cookie and discovers this namespace from the start,
    /// without reporting known peers again.
    CookieReset {
        /// The server.
        server: PeerId,
        /// The namespace.
        namespace: Namespace,
    },
    /// A connected peer supports rendezvous and is now used as a server.
    ServerAdded {
        /// The server.
        server: PeerId,
    },
    /// Registrations are due but the node has no external address to put in its signed record.
    /// Reported once until addresses appear; registration starts as soon as one is confirmed.
    NoAddressesToRegister,
    /// After [`Behaviour::stop`]: every UNREGISTER was written (or its server went away).
    Stopped,
}

/// Configuration of the client [`Behaviour`].
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) servers: Vec<(PeerId, Vec<Multiaddr>)>,
    pub(crate) namespaces: Vec<Namespace>,
    pub(crate) ttl: Ttl,
    pub(crate) registration: bool,
    pub(crate) discovery: bool,
    pub(crate) interval: Duration,
    pub(crate) limit: u64,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) record_format: RecordFormat,
    pub(crate) format_fallback: bool,
    pub(crate) protocol: StreamProtocol,
    pub(crate) learn_servers: bool,
    pub(crate) seed: Option<u64>,
    pub(crate) external_addresses: Vec<Multiaddr>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            namespaces: Vec::new(),
            ttl: DEFAULT_TTL,
            registration: true,
            discovery: true,
            interval: DEFAULT_INTERVAL,
            limit: DEFAULT_LIMIT,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            record_format: RecordFormat::Standard,
            format_fallback: true,
            protocol: PROTOCOL,
            learn_servers: true,
            seed: None,
            external_addresses: Vec::new(),
        }
    }
}

impl Config {
    /// Adds a rendezvous server to dial, register with and poll. `addrs` may be empty when the
    /// swarm knows how to reach the peer otherwise. At most [`MAX_SERVERS`]; more are ignored.
    pub fn with_server(mut self, peer: PeerId, addrs: Vec<Multiaddr>) -> Self {
        if let Some((_, known)) = self.servers.iter_mut().find(|(p, _)| *p == peer) {
            known.extend(addrs);
        } else if self.servers.len() < MAX_SERVERS {
            self.servers.push((peer, addrs));
        }
        self
    }

    /// Adds a namespace to register in and discover in (each as enabled). At most
    /// [`MAX_NAMESPACES`]; more are ignored.
    pub fn with_namespace(mut self, namespace: Namespace) -> Self {
        if !self.namespaces.contains(&namespace) && self.namespaces.len() < MAX_NAMESPACES {
            self.namespaces.push(namespace);
        }
        self
    }

    /// The TTL to ask for, in seconds (default [`DEFAULT_TTL`], 2 h).
    pub fn with_ttl(mut self, ttl: Ttl) -> Self {
        self.ttl = ttl;
        self
    }

    /// Whether to register the configured namespaces automatically (default true).
    pub fn with_registration(mut self, on: bool) -> Self {
        self.registration = on;
        self
    }

    /// Whether to poll the configured namespaces automatically (default true).
    pub fn with_discovery(mut self, on: bool) -> Self {
        self.discovery = on;
        self
    }

    /// How often to poll each (server, namespace) (default [`DEFAULT_INTERVAL`]). At least one
    /// second is used. At servers that push (see the module docs, "Push"), polling is only a
    /// safety net, and a long interval costs nothing in freshness.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_secs(1));
        self
    }

    /// For tests only: [`Config::with_interval`] without its one-second floor, so that a swarm
    /// test sees the next poll without waiting a second of real time. A real client polling
    /// this often would load its servers for nothing.
    #[doc(hidden)]
    pub fn with_test_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The page limit sent with DISCOVER (default [`DEFAULT_LIMIT`]); clamped to
    /// `1..=`[`crate::MAX_DISCOVER_LIMIT`].
    pub fn with_limit(mut self, limit: u64) -> Self {
        self.limit = limit.clamp(1, crate::MAX_DISCOVER_LIMIT);
        self
    }

    /// Bounds of the retry backoff (default 1 s to 5 min). The delay doubles with each failure
    /// and is drawn uniformly between its half and its full value.
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min.max(Duration::from_millis(1));
        self.backoff_max = max.max(self.backoff_min);
        self
    }

    /// How long to wait for a response (default [`DEFAULT_REQUEST_TIMEOUT`]).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The record format to register with (default [`RecordFormat::Standard`]; use
    /// [`RecordFormat::Legacy`] for rust-libp2p `libp2p-rendezvous` 0.18 servers and
    /// [`RecordFormat::PeerInfo`] for py-libp2p 0.8 servers, though the client falls back to
    /// both by itself, see [`Config::with_format_fallback`]).
    pub fn with_record_format(mut self, format: RecordFormat) -> Self {
        self.record_format = format;
        self
    }

    /// Whether a server is switched to the record format it takes, and the REGISTER retried,
    /// when its answer shows it cannot read ours (default true): a server that drops a
    /// standard-format REGISTER without a reply (rust-libp2p 0.18) to the legacy format; a server
    /// that refuses signed records as py-libp2p 0.8's does (`E_NOT_AUTHORIZED` "Peer can only
    /// register itself") to the unsigned `PeerInfo` layout.
    pub fn with_format_fallback(mut self, on: bool) -> Self {
        self.format_fallback = on;
        self
    }

    /// The protocol id (default [`PROTOCOL`]).
    pub fn with_protocol(mut self, protocol: StreamProtocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Whether connected peers that announce the protocol are used as servers too (default true).
    pub fn with_learned_servers(mut self, on: bool) -> Self {
        self.learn_servers = on;
        self
    }

    /// Seeds the jitter, for reproducible schedules (default: a random seed).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Addresses to put in the signed record from the start, in addition to the swarm's
    /// confirmed external addresses (useful when nothing confirms them, for example on a LAN).
    pub fn with_external_address(mut self, addr: Multiaddr) -> Self {
        if !self.external_addresses.contains(&addr) {
            self.external_addresses.push(addr);
        }
        self
    }
}

/// The label of the client's discoveries in
/// [`discovery::Event::Discovered`](crate::discovery::Event).
pub const SOURCE: &str = "rendezvous";

/// `Discovered` and `Expired` are discoveries; a peer expires only when no namespace on any
/// server still lists it.
impl crate::discovery::Source for Behaviour {
    fn discoveries(&self, event: &Event, found: &mut crate::discovery::Found) {
        match event {
            Event::Discovered { peer, addrs, .. } => {
                found.discovered(SOURCE, *peer, addrs.iter().cloned())
            }
            Event::Expired { peer, .. } if self.discovered_addresses(peer).is_empty() => {
                found.expired(SOURCE, *peer)
            }
            _ => {}
        }
    }
}
