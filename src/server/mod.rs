//! The embedded rendezvous server: a [`Behaviour`] to put in a [`libp2p::Swarm`].
//!
//! The logic lives in [`Registrations`], a pure store fed `now: Instant` (no IO, no clock
//! reads); [`Behaviour`] is a thin shell that moves requests from the connections to a
//! [`Store`] (the [store boundary](store): [`MemoryStore`] around [`Registrations`] by default),
//! answers them when the store completes them and runs one timer for expiry.
//!
//! # Rules
//!
//! - **Stateless cookies.** Every REGISTER (new or refresh) takes the next number of a
//!   monotonic counter, which starts at the wall clock in microseconds so a cookie from before
//!   a restart never hides registrations made after it. A cookie is that number (8 bytes,
//!   big-endian) followed by the namespace asked for (nothing for "all namespaces"). A DISCOVER
//!   returns registrations with a higher number, in order: O(log n + page), no memory per
//!   cookie, and paging with any page size returns every registration exactly once. Every OK
//!   response carries a cookie, empty pages included. A cookie for another namespace, bytes that
//!   do not parse, or a number ahead of the counter get `E_INVALID_COOKIE`.
//! - **Refresh.** A REGISTER for a (peer, namespace) that exists replaces the old registration
//!   everywhere: it gets a new number (so pollers see it again, with its new addresses) and a new
//!   deadline; the old deadline never fires.
//! - **Pages** hold at most `limit` registrations (default [`DEFAULT_PAGE`], at most
//!   [`DEFAULT_MAX_PAGE`]; both configurable) and are cut so the encoded response fits the
//!   message cap; the cookie then says where to go on. A DISCOVER looks at no more than
//!   [`MAX_SCANNED_PER_DISCOVER`] entries.
//! - **Errors.** Every failure is answered with its status and a `statusText` saying what was
//!   wrong and what was expected; a rejected request changes nothing. A record signed by another
//!   peer than the one on the connection: `E_NOT_AUTHORIZED`. A peer at its registration limit:
//!   `E_NOT_AUTHORIZED` (as rust-libp2p answers it: the request is refused for this peer, not
//!   because the server is failing). Server full, or a peer over its request rate:
//!   `E_UNAVAILABLE` (try later). A request that fails to decode is answered with the right
//!   response type when its type is known, then the stream is closed; a message of unknown type
//!   or over the request cap (`max_record_size` + [`REQUEST_OVERHEAD`], at most the message
//!   cap) closes the stream. A REGISTER whose envelope does not verify is answered with
//!   `E_INVALID_SIGNED_PEER_RECORD` and the stream serves on. UNREGISTER has no response; unregistering an unknown
//!   namespace does nothing. UNREGISTER does not count toward the rate limit (it only frees
//!   state, and could not be told that it was refused).
//! - **Disconnect.** With [`Config::with_remove_on_disconnect`] (default on) a peer's
//!   registrations are removed when its last connection closes, and the server keeps a
//!   connection of a peer with registrations alive. Turn it off for spec-style soft state, where
//!   registrations live until their TTL ends.
//! - **Record formats.** Three generations of clients put three layouts in
//!   `Register.signedPeerRecord` (see [`RecordFormat`](crate::RecordFormat)): standard signed
//!   envelopes (go, js, nim, this crate), legacy signed envelopes (rust-libp2p's
//!   `libp2p-rendezvous` 0.18) and unsigned `PeerInfo` (py-libp2p 0.8, go-libp2p-rendezvous before
//!   signed records). The server accepts all three (a `PeerInfo` only when it names the peer on
//!   the connection, as for signed records) and sends each asker what it reads
//!   ([`ServedFormats`]):
//!
//!   | asker | known by | served |
//!   |---|---|---|
//!   | this crate's client | it lists [`STANDARD_RECORDS_PROTOCOL`](crate::STANDARD_RECORDS_PROTOCOL) | every registration as registered ([`ServedFormats::All`]) |
//!   | a peer that registered | the layout of its latest REGISTER | what it sends: legacy only, signed records, or everything as `PeerInfo` |
//!   | rust-libp2p 0.18 client | identify agent `rust-libp2p/…` | legacy records only ([`ServedFormats::LegacyOnly`]) |
//!   | py-libp2p 0.8 | identify agent `py-libp2p/…` | every registration as `PeerInfo` ([`ServedFormats::AsPeerInfo`]) |
//!   | js-libp2p (`@canvas-js/libp2p-rendezvous`) | identify agent `js-libp2p/…` | standard records only ([`ServedFormats::Standard`]): its client fails a whole page on one legacy record |
//!   | go, nim, anyone else | any other agent, or no identify at all | standard and legacy records, as the spec says ([`ServedFormats::Signed`]) |
//!
//!   The first row beats the second (the marker says exactly what the client reads), the
//!   second beats the agent, except that a js-libp2p agent narrows a standard registrant to
//!   standard records (so a standard registrant's DISCOVER, like an unknown peer's, waits for
//!   its identify answer, below). A verified signed record is handed to `PeerInfo` readers as a
//!   `PeerInfo` of the same peer and addresses; an unsigned registration goes only to askers
//!   that read `PeerInfo` (the first and fourth rows): signed-record readers cannot decode one.
//!
//!   **Who is asked.** The server does not depend on the application's identify: when a
//!   DISCOVER comes from a peer it knows nothing of (no marker, no registration, no answer yet),
//!   it opens one `/ipfs/id/1.0.0` stream to the peer itself and reads the peer's identify
//!   message (agent and protocols; at most [`MAX_IDENTIFY_MESSAGE_SIZE`] bytes). Meanwhile the
//!   DISCOVER is held: at most [`IDENTIFY_WAIT`] ([`Config::with_identify_wait`]), at most [`MAX_HELD_PER_PEER`] per peer and
//!   [`MAX_HELD`] in all (beyond those, `E_UNAVAILABLE`: try again). The answer, a refusal
//!   (a peer without identify), a REGISTER or the end of the wait releases it; it is then served
//!   by what is known, and a peer of which nothing is known gets
//!   [`Config::with_unknown_peer_formats`] (default [`ServedFormats::Signed`], the spec). So an
//!   embedded [`Behaviour`] (or [`node::Behaviour`](crate::node::Behaviour)) decides the same as
//!   `rendezvous serve`, with or without identify in the application's swarm and in whichever
//!   order identify and the DISCOVER arrive; [`Behaviour::set_served_formats`] is for an
//!   application that knows better. A rust-libp2p 0.18 client that runs no identify cannot be
//!   told from a go or js peer: it gets the spec's default (which it cannot decode) unless it
//!   registered first, or the operator of a network of rust-libp2p 0.18 clients sets
//!   `with_unknown_peer_formats(ServedFormats::LegacyOnly)` (`serve --unknown-peer-formats
//!   legacy`). Likewise a py-libp2p peer without identify that discovers before it registers
//!   gets signed records it reads as garbage, and an old go-libp2p-rendezvous client (go agent,
//!   `PeerInfo` reader) is served signed records until it registers its `PeerInfo`; what a peer
//!   registers always decides for it.
//!
//!   **Cookies never hide a record.** Registrations left out of a page for their format still
//!   advance its cookie (a legacy reader must not see the same standard records skipped on
//!   every page), and the cookie then carries a mark: the narrowest [`ServedFormats`] under
//!   which the pages behind it left something out (the two high bits of its sequence number;
//!   the cookie stays `8 bytes ++ namespace`, as rust-libp2p 0.18 requires). When the set served
//!   to a peer widens after a page was cut (its identify answered after the wait, it
//!   registered in another layout, the application set a hint), a marked cookie of a narrower
//!   set is answered `E_INVALID_COOKIE`: the peer starts over (our client without duplicate
//!   events) and sees what was left out. Unmarked cookies and narrowing never cost a restart.
//! - **Cheap checks first.** A REGISTER is checked in this order: the peer's request rate, the
//!   TTL, the record's size, the registration limits and the store byte budget; only then is
//!   its envelope decoded, and the signature verified. An envelope equal byte for byte to one
//!   the peer already has stored (a refresh, or the same record in another namespace) is not
//!   decoded or verified again: the stored record is shared, and held and counted once.
//! - **Bytes.** The store counts what it holds ([`Registrations::stored_bytes`]) and refuses a
//!   REGISTER that would take it over [`Config::with_max_store_bytes`] with `E_UNAVAILABLE`
//!   (the statusText names the budget); a refresh that does not grow the store always passes,
//!   and nothing stored is ever dropped to make room. Records are capped in size
//!   ([`DEFAULT_MAX_RECORD_SIZE`]) and in addresses ([`DEFAULT_MAX_ADDRESSES_PER_RECORD`]), both
//!   answered with `E_INVALID_SIGNED_PEER_RECORD`.
//! - **Arithmetic.** No configuration and no input makes the server panic: deadlines, the
//!   sequence counter and sizes use checked or saturating arithmetic. [`Config::validate`]
//!   (used by [`Behaviour::try_new`] and `rendezvous serve`) refuses out-of-range values.
//! - **Push.** Beside the rendezvous protocol the server serves
//!   [`PUSH_PROTOCOL`](crate::PUSH_PROTOCOL) (docs/push.md), so identify lists it: a subscriber
//!   gets what registered since its cookie, then each new registration as the store reports it
//!   ([`store::Change`]), with its new cookie, and early removals. A subscription is attached
//!   to the changes before its replay, so each registration reaches it exactly once. Capped in
//!   all ([`Config::with_max_subscriptions`]; 0 turns push off) and per connection
//!   ([`Config::with_max_subscriptions_per_connection`]); each has a queue of
//!   [`Config::with_push_queue`] pushes, and one whose subscriber reads slower than its
//!   pushes come is ended (its subscriber resumes with DISCOVER from its last cookie): adding
//!   a push never waits, so a slow subscriber never slows a REGISTER. Requests come first:
//!   pushes are written only in a quiet moment, when no request has been read for
//!   [`Config::with_push_quiet`] ([`GATE_QUIET`], 5 ms) and none waits for the behaviour, so
//!   under a storm of requests the server spends its CPU on them. A subscription whose queue
//!   fills meanwhile is left behind ([`Event::SubscriptionBehind`]): changes pass it by until
//!   the storm is over (ten quiet times without a request) or its backoff is ([`MIN_PUSH_BEHIND`]
//!   doubling to [`MAX_PUSH_BEHIND`] while the storm goes on), and then, in a quiet moment, the
//!   server replays to it from the last cookie it was sent. So many subscribers do not slow
//!   REGISTERs down, and they miss nothing without polling. With steady traffic, pushes wait
//!   for the gaps between requests.
//! - **Bounds.** Every limit is a documented constant with a `with_*` setter on [`Config`].
//!
//! # Memory
//!
//! What the server holds is a function of its configuration, never of what peers send:
//!
//! - the store: at most [`Config::with_max_store_bytes`] as [`Registrations::stored_bytes`]
//!   counts it (default [`DEFAULT_MAX_STORE_BYTES`], 512 MiB), which includes the fixed cost of
//!   every registration and record, so the count limits are bounds on top (the SQLite store
//!   adds its page cache, at most `store::sqlite::PAGE_CACHE_KIB`, 64 MiB);
//! - per connection: [`SERVED_STREAMS_PER_CONNECTION`] (8) streams read at once, each buffering
//!   at most one request (`max_record_size` + [`REQUEST_OVERHEAD`], 9 KiB by default) and one
//!   response (at most `max_message_size`, 1 MiB; a DISCOVER_RESPONSE is only that large when
//!   the page is), and a bounded request queue; the connection's other rendezvous streams, up
//!   to `max_streams_per_connection` (default 128), wait unread, so what they hold is in the
//!   muxer (below);
//! - per peer: a rate-limiter bucket and what is known of its record format (at most
//!   [`MAX_RATE_LIMITED_PEERS`] and [`MAX_KNOWN_PEERS`] of them, about 100 bytes each), and at
//!   most [`MAX_HELD`] DISCOVERs held for identify in all;
//! - push: at most [`Config::with_max_subscriptions`] subscriptions (10,000), each with at
//!   most [`Config::with_push_queue`] pushes queued (64; a push shares its record with the store,
//!   a few hundred bytes) or changes held during its replay, and one replayed page in flight:
//!   about 300 MiB with every queue full, far less while subscribers keep up;
//! - connections: at most [`Config::with_max_connections`] (default [`DEFAULT_MAX_CONNECTIONS`],
//!   100,000), a few dozen bytes each in this behaviour. The rest of a connection's cost is the
//!   transport's (see below).
//!
//! # Limits that shape bursts, and what is refused
//!
//! A bound caps memory or CPU; legitimate traffic that arrives all at once waits within it:
//!
//! - **Handshakes** ([`handshakes::Transport`], used by `rendezvous serve`): at most 128 run at
//!   once (`--max-pending-incoming`), a quarter of them per source address; more connections
//!   wait for a slot (up to 4096). A reconnect storm of thousands of clients all gets in. A
//!   handshake has 5 s once it has its slot, and a connection waits at most 30 s for one. When
//!   the queue is full, the address with the most connections in it gives up its newest for a
//!   newcomer from another address: a flood of connections that never finish their handshake
//!   takes a quarter of the slots and none of the others' places.
//! - **Streams**: 8 read at once per connection, up to 128 open (a rust-libp2p client has up to
//!   100 requests in flight, each on its stream); the 129th is reset alone. The muxer allows
//!   [`Config::muxer_max_streams`] (240 by default: the 128, 64 push streams, [`MAX_NEGOTIATING_STREAMS`] still
//!   negotiating, [`OTHER_PROTOCOL_STREAMS`] for identify and ping), so a stream never costs its
//!   connection (yamux closes a connection whose peer opens one over its cap).
//! - **Requests**: [`DEFAULT_REQUEST_BURST`] (256) at once per peer, then
//!   [`DEFAULT_REQUESTS_PER_SECOND`] (50) a second; over it, `E_UNAVAILABLE` (our client retries
//!   later).
//! - **Connections**: near [`Config::with_max_connections`] the server closes connections that
//!   hold nothing (no registration, no request for [`DEFAULT_CONNECTION_GRACE`]), longest idle
//!   first, and a new connection at the cap takes such a connection's place. A flood of idle
//!   connections never locks a registering peer out.
//!
//! What only a hostile peer does is refused: a stream over 128 on one connection, a request
//! over the size cap, a handshake that does not finish in 5 s, thousands of handshakes pending
//! from one address while the queue is full, requests past the rate, a new connection when
//! every connection holds registrations (bounded by the registration budgets).
//!
//! The application bounds the transports: `rendezvous serve` puts the handshake queue around
//! its transports, caps connections per peer (`--max-connections-per-peer`), gives yamux and
//! QUIC [`Config::muxer_max_streams`], bounds QUIC's receive windows (1 MiB unread per
//! connection) and closes a connection that holds no registration and has no request in flight
//! after `--idle-timeout` (the server's rendezvous streams do not keep a connection alive by
//! themselves; an open push subscription does).
//! yamux gives every stream a 256 KiB window (fixed by its spec), so a peer that sends what the
//! server did not ask for can make one TCP connection hold up to 240 × 256 KiB (60 MiB) until
//! the stream timeout; legitimate waiting streams hold one request each. A server embedded in
//! another swarm should do the same with [`handshakes::Transport`], `libp2p::connection_limits`
//! and the swarm's idle timeout. Measured figures under floods and bursts are in
//! BENCHMARKS.md.
//!
//! The connection count follows from memory: an idle, registered connection of `rendezvous
//! serve` costs 14-16 KiB of RSS (BENCHMARKS.md, "Connections and bursts": libp2p-swarm's
//! connection task, the behaviours' handlers, yamux and the cipher states, and its
//! registration; its noise holds no buffer while idle), so [`DEFAULT_MAX_CONNECTIONS`]
//! (100,000) connections take about 1.6 GiB; with the store's [`DEFAULT_MAX_STORE_BYTES`]
//! (512 MiB) and the SQLite page cache (64 MiB) a full server stays under 2.2 GiB, within
//! 4 GiB with room for bursts of handshakes (each holds a
//! few KiB more until it completes). A server embedded in another swarm, with libp2p-noise
//! and identify's handler inline, pays about 35 KiB per connection. `rendezvous serve` raises the open-file limit
//! to the cap at start, and lowers the cap (with a warning) where the hard limit does not allow
//! it.

mod answers;
mod behaviour;
mod config;
mod connections;
mod delays;
mod formats;
mod gate;
mod handler;
pub mod handshakes;
mod in_flight;
mod push;
mod rate;
mod registrations;
pub mod rules;
pub mod store;
mod subscriptions;

use std::time::Duration;

use libp2p::PeerId;

pub use behaviour::Behaviour;
pub use config::*;
pub use delays::{PushDelaySnapshot, PushDelays, PUSH_DELAY_BUCKETS};
pub use formats::{
    served_by_identify, ServedFormats, IDENTIFY_WAIT, MAX_HELD, MAX_HELD_PER_PEER,
    MAX_IDENTIFY_MESSAGE_SIZE, MAX_KNOWN_PEERS,
};
pub use gate::GATE_QUIET;
pub use handler::Handler;
pub use rate::{RateLimiter, MAX_RATE_LIMITED_PEERS};
pub use registrations::Registrations;
pub use rules::{cookie, Refusal, MAX_SCANNED_PER_DISCOVER};
pub use store::{MemoryStore, Store, MAX_IN_FLIGHT};
pub use subscriptions::SubscriptionEnd;

use crate::codec::{ErrorResponse, Namespace, Registration, RequestKind};

/// A bound that refused a request or a stream (see [`Event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// The peer made more requests per second than [`Config::with_requests_per_second`] allows.
    Rate,
    /// The peer holds as many registrations as [`Config::with_max_registrations_per_peer`]
    /// allows.
    PeerRegistrations,
    /// The server holds as many registrations as [`Config::with_max_registrations`] allows.
    Registrations,
    /// A message was larger than the server reads (a request: the record cap plus room for the
    /// rest); its stream was closed.
    MessageSize,
    /// The store's byte budget (`max-store-bytes`) had no room for the registration.
    StoreBytes,
    /// The signed record was over the record size or address count cap.
    Record,
    /// A connection already had [`Config::with_max_streams_per_connection`] streams open (read
    /// or waiting); the new stream was reset, the connection kept.
    Streams,
    /// [`MAX_IN_FLIGHT`] requests were waiting for the store.
    InFlight,
    /// Too many DISCOVERs were waiting for their askers' identify ([`MAX_HELD_PER_PEER`],
    /// [`MAX_HELD`]).
    HeldDiscovers,
    /// The server held [`Config::with_max_connections`] connections, each with registrations
    /// or in its grace period; a new connection was refused.
    Connections,
    /// The server held [`Config::with_max_subscriptions`] push subscriptions, or the connection
    /// [`Config::with_max_subscriptions_per_connection`]; a new one was refused.
    Subscriptions,
}

/// Why a registration was removed before its TTL ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Removal {
    /// The peer sent an UNREGISTER.
    Unregister,
    /// The peer's last connection closed (see [`Config::with_remove_on_disconnect`]).
    Disconnect,
}

/// What the server did.
///
/// The events of answered requests carry `duration`: the time from reading the request off its
/// stream to handing the answer to the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A peer registered (or refreshed a registration).
    PeerRegistered {
        /// The peer.
        peer: PeerId,
        /// The registration as stored, with the granted TTL.
        registration: Registration,
        /// How long answering took.
        duration: Duration,
    },
    /// A REGISTER was refused.
    PeerNotRegistered {
        /// The peer.
        peer: PeerId,
        /// The namespace it asked for.
        namespace: Namespace,
        /// The status and text it was answered with.
        error: ErrorResponse,
        /// The bound that refused it, if a bound did.
        limit: Option<Limit>,
        /// How long answering took.
        duration: Duration,
    },
    /// A peer unregistered from a namespace, or its registration was removed because its last
    /// connection closed.
    PeerUnregistered {
        /// The peer.
        peer: PeerId,
        /// The namespace.
        namespace: Namespace,
        /// What removed it.
        cause: Removal,
    },
    /// A DISCOVER was answered with a page.
    DiscoverServed {
        /// The peer that asked.
        peer: PeerId,
        /// The namespace asked for; `None` for all namespaces.
        namespace: Option<Namespace>,
        /// Registrations in the page.
        count: usize,
        /// How long answering took.
        duration: Duration,
    },
    /// A DISCOVER was refused.
    DiscoverNotServed {
        /// The peer that asked.
        peer: PeerId,
        /// The namespace asked for; `None` for all namespaces.
        namespace: Option<Namespace>,
        /// The status and text it was answered with.
        error: ErrorResponse,
        /// The bound that refused it, if a bound did.
        limit: Option<Limit>,
        /// How long answering took.
        duration: Duration,
    },
    /// A registration reached the end of its TTL without a refresh (its `ttl` is the one granted).
    RegistrationExpired(Registration),
    /// A request that could not be decoded (bad namespace, TTL field, cookie or signed record)
    /// was answered with `error` (an UNREGISTER is not answered), and its stream closed.
    RequestRejected {
        /// The peer that sent it.
        peer: PeerId,
        /// What kind of request it was.
        kind: RequestKind,
        /// The status and text it was answered with.
        error: ErrorResponse,
    },
    /// A stream was refused or closed because of `limit` ([`Limit::MessageSize`] or
    /// [`Limit::Streams`]), without an answer.
    StreamRefused {
        /// The peer on the other end.
        peer: PeerId,
        /// The bound.
        limit: Limit,
    },
    /// A new connection was refused: the server held [`Config::with_max_connections`]
    /// connections, each with registrations or in its grace period ([`Limit::Connections`]).
    ConnectionRefused {
        /// The peer of the refused connection.
        peer: PeerId,
        /// The bound.
        limit: Limit,
    },
    /// A connection that held nothing (no registration, no recent request) was closed to make
    /// room near [`Config::with_max_connections`].
    IdleConnectionClosed {
        /// The peer on the other end.
        peer: PeerId,
    },
    /// A peer subscribed to pushes ([`PUSH_PROTOCOL`](crate::PUSH_PROTOCOL)); its replay
    /// starts.
    Subscribed {
        /// The subscriber.
        peer: PeerId,
        /// The namespace; `None` for all namespaces.
        namespace: Option<Namespace>,
    },
    /// A subscription was refused by `limit` (answered `E_UNAVAILABLE`; the subscriber polls).
    SubscriptionRefused {
        /// The subscriber.
        peer: PeerId,
        /// The namespace; `None` for all namespaces.
        namespace: Option<Namespace>,
        /// The bound.
        limit: Limit,
    },
    /// A subscription's queue filled while its pushes waited for a quiet moment (the server
    /// busy with requests): the server dropped what waited and, in the next quiet moment,
    /// replays to it from the last cookie it was sent. It is not ended: its subscriber misses
    /// nothing, and does not have to poll.
    SubscriptionBehind {
        /// The subscriber.
        peer: PeerId,
        /// The namespace; `None` for all namespaces.
        namespace: Option<Namespace>,
    },
    /// A subscription ended.
    SubscriptionEnded {
        /// The subscriber.
        peer: PeerId,
        /// The namespace; `None` for all namespaces.
        namespace: Option<Namespace>,
        /// Why.
        reason: SubscriptionEnd,
    },
    /// A change (a registration, or registrations that ended early) was pushed to `subscribers`
    /// subscriptions (queued on their streams).
    Pushed {
        /// Subscriptions it was queued for.
        subscribers: usize,
    },
    /// The store committed a group of mutations (stores that commit in groups, such as SQLite).
    StoreCommitted {
        /// Operations in the commit.
        operations: usize,
        /// How long the commit took (with `--sync full`, including the fsync).
        latency: Duration,
    },
}
