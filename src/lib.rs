//! The [libp2p rendezvous protocol](https://github.com/libp2p/specs/blob/master/rendezvous/README.md)
//! as a peer-discovery source, and an embedded rendezvous server.
//!
//! Rendezvous servers keep registrations per namespace; clients register themselves and ask who
//! else is there. This crate writes the loop every application would otherwise write around a
//! rendezvous client (register, refresh before the TTL ends, poll with cookies, follow full
//! pages, back off, unregister on stop) once, as a [`client::Behaviour`] that sits in a libp2p
//! `Swarm` and emits [`client::Event::Discovered`]. Beside it:
//!
//! - [`server`]: a rendezvous server with stateless cookies, O(log n + page) work per request,
//!   memory bounded by its configuration (see [server's memory bound](server#memory)) and every
//!   status code of the spec;
//! - [`codec`]: the wire types and framing, both signed-peer-record formats.
//!
//! The `rendezvous` binary runs the server (`rendezvous serve`) and offers `discover`,
//! `register`, `load` (a load generator for any rendezvous server) and `demo`.
//!
//! # Example
//!
//! A server and two clients in one process, on libp2p's memory transport: Alice registers in
//! `chat`, Bob registers too and discovers Alice.
//!
//! ```
//! use futures::StreamExt;
//! use libp2p::{swarm::SwarmEvent, Swarm};
//! use libp2p_swarm_test::SwarmExt;
//! use rendezvous_discovery::{client, server, Namespace};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mut server = Swarm::new_ephemeral_tokio(|_| server::Behaviour::new(server::Config::default()));
//! let (server_addr, _) = server.listen().with_memory_addr_external().await;
//! let server_id = *server.local_peer_id();
//! tokio::spawn(server.loop_on_next());
//!
//! let config = client::Config::default()
//!     .with_server(server_id, vec![server_addr])
//!     .with_namespace(Namespace::from_static("chat"));
//!
//! let mut alice = Swarm::new_ephemeral_tokio(|key| client::Behaviour::new(key, config.clone()));
//! alice.listen_on("/memory/0".parse().unwrap()).unwrap();
//! let alice_id = *alice.local_peer_id();
//! // Alice dials the server and registers on her own once she has an address to announce.
//! loop {
//!     match alice.select_next_some().await {
//!         SwarmEvent::NewListenAddr { address, .. } => alice.add_external_address(address),
//!         SwarmEvent::Behaviour(client::Event::Registered { .. }) => break,
//!         _ => {}
//!     }
//! }
//! tokio::spawn(alice.loop_on_next());
//!
//! let mut bob = Swarm::new_ephemeral_tokio(|key| client::Behaviour::new(key, config));
//! bob.listen_on("/memory/0".parse().unwrap()).unwrap();
//! loop {
//!     match bob.select_next_some().await {
//!         SwarmEvent::NewListenAddr { address, .. } => bob.add_external_address(address),
//!         SwarmEvent::Behaviour(client::Event::Discovered { peer, addrs, namespace, .. }) => {
//!             assert_eq!(peer, alice_id);
//!             assert_eq!(namespace.as_str(), "chat");
//!             assert!(!addrs.is_empty());
//!             break;
//!         }
//!         _ => {}
//!     }
//! }
//! # }
//! ```
//!
//! # Discovery from several sources
//!
//! Rendezvous is one discovery source among others: [`discovery::Behaviour`] aggregates any
//! number of sources ([`mdns`], a [`bootstrap`] list, the rendezvous [`client`], your own via
//! [`discovery::Source`]) into one stream of `Discovered { peer, addrs, source }` and
//! `Expired { peer }`, deduplicated by peer and address. [`node::Behaviour`] is a client with an
//! optional embedded server. `examples/discover.rs` puts mdns, a bootstrap list and rendezvous
//! together; `rendezvous demo` shows a server and peers on loopback.
//!
//! # Features
//!
//! - `cli` (default): the `rendezvous` binary and what only it needs (tokio, clap,
//!   tracing-subscriber, serde_json, libp2p's TCP, QUIC, yamux, identify and ping, and the
//!   crates of its own noise: snow, curve25519-dalek, zeroize).
//!   A library does not need it: depend with `default-features = false`.
//! - `mdns` (default): the [`mdns`] source, rust-libp2p's mdns on tokio.
//!
//! Without features the library depends on libp2p's swarm, its derive macro and ed25519 only
//! (no tokio, no transport): bring the transports your application uses.
//!
//! # Where we differ from the spec or from rust-libp2p
//!
//! - **Cookies** are stateless: a big-endian sequence number followed by the namespace. A
//!   DISCOVER returns what registered (or refreshed) after the cookie's number, so a steady poll
//!   returns only what is new, and paging is exactly-once whatever the page size. The counter
//!   starts from the wall clock, so cookies from before a server restart stay valid.
//! - **Pages** are cut to fit the message size cap (1 MiB by default); the cookie says where to
//!   go on. A client therefore treats any page shorter than its limit as the end of the paging
//!   for this tick.
//! - **Disconnect**: by default a peer's registrations are removed when its last connection to
//!   the server closes (`server::Config::with_remove_on_disconnect(false)` keeps the spec's soft
//!   state until the TTL ends).
//! - **Record formats**: three generations of clients put three layouts in
//!   `Register.signedPeerRecord`: the standard signed envelope (go, js, nim; the spec), the
//!   legacy signed envelope of rust-libp2p's `libp2p-rendezvous` 0.18 (`libp2p-routing-state`;
//!   its client rejects a whole DISCOVER_RESPONSE holding one standard record), and the unsigned
//!   `PeerInfo { id, addrs }` of py-libp2p 0.8 and early go-libp2p-rendezvous
//!   ([`RecordFormat`]). Our server accepts all three and sends each asker what it reads: the
//!   spec's standard and legacy records to go, js, nim and unknown peers; legacy records only to
//!   rust-libp2p 0.18 clients; every registration as `PeerInfo` to py-libp2p; everything to our
//!   client (the [`server`] docs have the table and how the server tells them apart). Our
//!   client reads all three, registers in the standard format and falls back, per server, to
//!   the legacy format when a rust-libp2p 0.18 server drops its REGISTER.
//! - **Several requests per stream** are served in order (go's client does that); our client
//!   sends one request per stream, which every server accepts.
//! - **Limits** the spec leaves open are bounded and configurable: requests per peer per second
//!   (`E_UNAVAILABLE` when exceeded), streams per connection, registrations per peer and in
//!   total, store bytes, record size and addresses per record.
//! - **`Unregister.id`** (deprecated) is ignored when received; our client sends its own peer id
//!   in it, as go's client does, because py-libp2p 0.8's server ignores an UNREGISTER without it.

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use libp2p::StreamProtocol;

pub mod client;
pub mod codec;
pub mod server;
mod timer;

pub use codec::{
    Cookie, ErrorCode, ErrorResponse, Namespace, RecordFormat, Registration, SignedRecord, Ttl,
};

/// The protocol id of rendezvous 1.0.0. Servers and clients can be configured to use another
/// id for the same protocol (some networks run it as `/vac/waku/rendezvous/1.0.0`).
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/rendezvous/1.0.0");

/// The marker protocol our client lists (over identify): it tells a server of ours that this
/// peer reads every entry layout (standard and legacy signed records, unsigned `PeerInfo`), so
/// it is sent every registration, whether it registers or only discovers (see the
/// [server docs](crate::server)). The client accepts a stream on it and drops it at once; it
/// never keeps a connection alive for it.
pub const STANDARD_RECORDS_PROTOCOL: StreamProtocol =
    StreamProtocol::new("/rendezvous-discovery/standard-records/1.0.0");

/// The push protocol (docs/push.md): a subscriber names a namespace and the cookie it holds;
/// the server sends what registered since that cookie, then each new registration as it
/// happens (each with its new cookie) and registrations that end early. Our server serves it
/// beside [`PROTOCOL`] (so identify announces it); our client subscribes where a server lists
/// it and polls everywhere else. [`PROTOCOL`] is unchanged.
pub const PUSH_PROTOCOL: StreamProtocol = StreamProtocol::new("/rendezvous-discovery/push/1.0.0");

/// The TTL a REGISTER without a `ttl` gets, by the spec: 2 hours, in seconds.
pub const DEFAULT_TTL: Ttl = 2 * 60 * 60;

/// The spec's recommended lower TTL bound: 2 hours, in seconds.
pub const MIN_TTL: Ttl = 2 * 60 * 60;

/// The spec's recommended upper TTL bound: 72 hours, in seconds.
pub const MAX_TTL: Ttl = 72 * 60 * 60;

/// The longest namespace, in bytes of UTF-8, by the spec.
pub const MAX_NAMESPACE_LEN: usize = 255;

/// The most registrations one DISCOVER returns, by the spec.
pub const MAX_DISCOVER_LIMIT: u64 = 1000;

pub mod bootstrap;
pub mod discovery;
#[cfg(feature = "mdns")]
#[cfg_attr(docsrs, doc(cfg(feature = "mdns")))]
pub mod mdns;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
pub mod node;

/// The README's Rust snippets, compiled as doctests so they stay true.
#[cfg(all(doctest, feature = "mdns"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
