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
//!   | go, js, nim, anyone else | any other agent, or no identify at all | standard and legacy records, as the spec says ([`ServedFormats::Signed`]) |
//!
//!   The first row beats the second (the marker says exactly what the client reads), the
//!   second beats the agent. A verified signed record is handed to `PeerInfo` readers as a
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
//! - **Bounds.** Every limit is a documented constant with a `with_*` setter on [`Config`].
//!
//! # Memory
//!
//! What the server holds is a function of its configuration, never of what peers send:
//!
//! - the store: at most [`Config::with_max_store_bytes`] as [`Registrations::stored_bytes`]
//!   counts it (default [`DEFAULT_MAX_STORE_BYTES`], 512 MiB), which includes the fixed cost of
//!   every registration and record, so the count limits are bounds on top;
//! - per connection: at most `max_streams_per_connection` (default 8) streams, each buffering
//!   at most one request (`max_record_size` + [`REQUEST_OVERHEAD`], 9 KiB by default) and one
//!   response (at most `max_message_size`, 1 MiB; a DISCOVER_RESPONSE is only that large when
//!   the page is), and a bounded request queue;
//! - per peer: a rate-limiter bucket and what is known of its record format (at most
//!   [`MAX_RATE_LIMITED_PEERS`] and [`MAX_KNOWN_PEERS`] of them, about 100 bytes each), and at
//!   most [`MAX_HELD`] DISCOVERs held for identify in all.
//!
//! The application bounds the connections: `rendezvous serve` caps them in total, per peer and
//! in their handshake (`--max-connections`, default 2048, `--max-connections-per-peer`,
//! `--max-pending-incoming`), bounds the transports' buffers (yamux: 32 streams of at most
//! 256 KiB unread; QUIC: 1 MiB unread per connection) and closes a connection that holds no
//! registration and has no request in flight after `--idle-timeout` (the server's streams do
//! not keep a connection alive by themselves). A server embedded in another swarm should do the
//! same with `libp2p::connection_limits` and the swarm's idle timeout. Measured figures under
//! floods are in BENCHMARKS.md.

mod behaviour;
mod formats;
mod handler;
mod rate;
mod registrations;
pub mod store;

use std::time::Duration;

use libp2p::{PeerId, StreamProtocol};

pub use behaviour::Behaviour;
pub use formats::{
    served_by_identify, IDENTIFY_WAIT, MAX_HELD, MAX_HELD_PER_PEER, MAX_IDENTIFY_MESSAGE_SIZE,
    MAX_KNOWN_PEERS,
};
pub use handler::Handler;
pub use rate::{RateLimiter, MAX_RATE_LIMITED_PEERS};
pub use registrations::{cookie, Refusal, Registrations, MAX_SCANNED_PER_DISCOVER};
pub use store::{MemoryStore, Store, MAX_IN_FLIGHT};

use crate::codec::{
    ErrorResponse, Namespace, Registration, RequestKind, Ttl, DEFAULT_MAX_MESSAGE_SIZE,
};

/// Registrations one peer may hold, by the spec.
pub const DEFAULT_MAX_REGISTRATIONS_PER_PEER: usize = 1000;

/// Registrations the server holds in total. At about 1 KiB per registration with its record this
/// is about 1 GiB; lower it on small machines.
pub const DEFAULT_MAX_REGISTRATIONS: usize = 1_000_000;

/// Registrations in a DISCOVER_RESPONSE when the request gives no limit.
pub const DEFAULT_PAGE: usize = 100;

/// The most registrations in one DISCOVER_RESPONSE, by the spec.
pub const DEFAULT_MAX_PAGE: usize = crate::MAX_DISCOVER_LIMIT as usize;

/// Inbound rendezvous streams one connection may have open at once. Clients need one or two;
/// more streams are refused (reset) so a peer cannot pin server memory with idle streams.
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: usize = 8;

/// How long an inbound stream may wait for its next request (or for a slow write) before the
/// server closes it.
pub const DEFAULT_STREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// Requests (REGISTER and DISCOVER) a peer may make per second, averaged.
pub const DEFAULT_REQUESTS_PER_SECOND: u32 = 50;

/// Requests a peer may make at once before the per-second rate applies.
pub const DEFAULT_REQUEST_BURST: u32 = 100;

/// Bytes the store may hold, counted as [`Registrations::stored_bytes`] counts them (each
/// registration's fixed cost and namespace, each distinct record once per peer with its parsed
/// addresses). 512 MiB suits a server with 1 to 4 GiB of memory; see the module docs for the
/// whole bound.
pub const DEFAULT_MAX_STORE_BYTES: usize = 512 * 1024 * 1024;

/// The largest signed envelope a REGISTER may carry, in bytes. A record with 20 addresses is
/// about 1 KiB; 8 KiB leaves room for many more (quic, webtransport certhashes, relays).
pub const DEFAULT_MAX_RECORD_SIZE: usize = 8 * 1024;

/// The most addresses one signed record may list. Parsed addresses cost more memory than their
/// encoded bytes, so their count is capped as well as the record's size.
pub const DEFAULT_MAX_ADDRESSES_PER_RECORD: usize = 64;

/// Bytes a REGISTER adds to its envelope on the wire at most: message and field tags, length
/// prefixes, a namespace of 255 bytes and a TTL. The server reads requests up to
/// `max_record_size + REQUEST_OVERHEAD` bytes (never more than the message cap), so a peer
/// cannot make it buffer more than a maximal REGISTER per stream.
pub const REQUEST_OVERHEAD: usize = 1024;

/// What one registration costs in the store besides its namespace bytes and its record: the
/// entry and its place in the four indexes (by peer, by namespace, global order, expiry),
/// with hash-map and B-tree slack, rounded up.
pub const REGISTRATION_OVERHEAD_BYTES: usize = 512;

/// What one distinct record costs besides its envelope bytes and addresses: the parsed record,
/// its key in the peer's record table and the allocation headers.
pub const RECORD_OVERHEAD_BYTES: usize = 256;

/// What one parsed address costs besides its bytes (a shared `Multiaddr` allocation and its
/// slot in the record).
pub const ADDRESS_OVERHEAD_BYTES: usize = 64;

/// The longest TTL an operator may configure: one year. Deadlines are `now + ttl`; the cap keeps
/// them far from any overflow of `Instant`.
pub const MAX_CONFIGURABLE_TTL: Ttl = 365 * 24 * 60 * 60;

/// The longest stream timeout an operator may configure: one day.
pub const MAX_CONFIGURABLE_STREAM_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// The largest message cap an operator may configure: 64 MiB.
pub const MAX_CONFIGURABLE_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// Which registrations a peer is sent in DISCOVER_RESPONSEs, and in which layout (see the
/// module docs, "Record formats"). Ordered by how much they cover: a cookie cut under a
/// narrower set is not continued under a wider one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ServedFormats {
    /// Legacy signed records only: all that rust-libp2p's `libp2p-rendezvous` 0.18 client
    /// decodes (one standard record fails its whole page).
    LegacyOnly,
    /// Signed records of both formats, as they were signed: the spec, for go, js and nim
    /// clients. Unsigned (`PeerInfo`) registrations are left out: these clients cannot read them.
    #[default]
    Signed,
    /// Every registration, each as an unsigned `PeerInfo` (a signed record is handed out with
    /// the peer and addresses it proves): py-libp2p 0.8 and other third-generation clients.
    AsPeerInfo,
    /// Every registration as it was registered (signed records as signed, `PeerInfo`s as
    /// `PeerInfo`): this crate's client, which reads all three layouts.
    All,
}

impl ServedFormats {
    /// Whether a registration of `format` is served.
    pub fn includes(self, format: crate::RecordFormat) -> bool {
        use crate::RecordFormat::*;
        match self {
            ServedFormats::LegacyOnly => format == Legacy,
            ServedFormats::Signed => format != PeerInfo,
            ServedFormats::AsPeerInfo | ServedFormats::All => true,
        }
    }

    /// What a peer that registers in `format` reads: what it sends.
    pub fn read_by_registrant(format: crate::RecordFormat) -> Self {
        match format {
            crate::RecordFormat::Standard => ServedFormats::Signed,
            crate::RecordFormat::Legacy => ServedFormats::LegacyOnly,
            crate::RecordFormat::PeerInfo => ServedFormats::AsPeerInfo,
        }
    }

    /// How much of the registrations it covers: legacy ones (0), signed ones (1), all (2).
    pub fn coverage(self) -> u8 {
        match self {
            ServedFormats::LegacyOnly => 0,
            ServedFormats::Signed => 1,
            ServedFormats::AsPeerInfo | ServedFormats::All => 2,
        }
    }
}

impl std::fmt::Display for ServedFormats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServedFormats::LegacyOnly => "legacy",
            ServedFormats::Signed => "signed",
            ServedFormats::AsPeerInfo => "peer-info",
            ServedFormats::All => "all",
        })
    }
}

impl std::str::FromStr for ServedFormats {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "legacy" => Ok(ServedFormats::LegacyOnly),
            "signed" => Ok(ServedFormats::Signed),
            "peer-info" => Ok(ServedFormats::AsPeerInfo),
            "all" => Ok(ServedFormats::All),
            other => Err(format!(
                "expected `legacy`, `signed`, `peer-info` or `all`, got `{other}`"
            )),
        }
    }
}

/// The server's configuration: protocol id and every limit.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) protocol: StreamProtocol,
    pub(crate) min_ttl: Ttl,
    pub(crate) max_ttl: Ttl,
    pub(crate) max_registrations_per_peer: usize,
    pub(crate) max_registrations: usize,
    pub(crate) default_page: usize,
    pub(crate) max_page: usize,
    pub(crate) max_message_size: usize,
    pub(crate) max_streams_per_connection: usize,
    pub(crate) stream_timeout: Duration,
    pub(crate) requests_per_second: u32,
    pub(crate) request_burst: u32,
    pub(crate) remove_on_disconnect: bool,
    pub(crate) unknown_peer_formats: ServedFormats,
    pub(crate) identify_wait: Duration,
    pub(crate) max_store_bytes: usize,
    pub(crate) max_record_size: usize,
    pub(crate) max_addresses_per_record: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            protocol: crate::PROTOCOL,
            min_ttl: crate::MIN_TTL,
            max_ttl: crate::MAX_TTL,
            max_registrations_per_peer: DEFAULT_MAX_REGISTRATIONS_PER_PEER,
            max_registrations: DEFAULT_MAX_REGISTRATIONS,
            default_page: DEFAULT_PAGE,
            max_page: DEFAULT_MAX_PAGE,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
            stream_timeout: DEFAULT_STREAM_TIMEOUT,
            requests_per_second: DEFAULT_REQUESTS_PER_SECOND,
            request_burst: DEFAULT_REQUEST_BURST,
            remove_on_disconnect: true,
            unknown_peer_formats: ServedFormats::Signed,
            identify_wait: IDENTIFY_WAIT,
            max_store_bytes: DEFAULT_MAX_STORE_BYTES,
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
            max_addresses_per_record: DEFAULT_MAX_ADDRESSES_PER_RECORD,
        }
    }
}

impl Config {
    /// The protocol id to serve (default [`crate::PROTOCOL`], `/rendezvous/1.0.0`).
    pub fn with_protocol(mut self, protocol: StreamProtocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// The shortest TTL accepted, in seconds (default [`crate::MIN_TTL`], 2 h). An operator may
    /// lower it, for example for tests or short-lived networks.
    pub fn with_min_ttl(mut self, seconds: Ttl) -> Self {
        self.min_ttl = seconds;
        self
    }

    /// The longest TTL accepted, in seconds (default [`crate::MAX_TTL`], 72 h).
    pub fn with_max_ttl(mut self, seconds: Ttl) -> Self {
        self.max_ttl = seconds;
        self
    }

    /// Registrations one peer may hold (default [`DEFAULT_MAX_REGISTRATIONS_PER_PEER`]).
    pub fn with_max_registrations_per_peer(mut self, n: usize) -> Self {
        self.max_registrations_per_peer = n;
        self
    }

    /// Registrations the server holds in total (default [`DEFAULT_MAX_REGISTRATIONS`]). A
    /// refresh never counts as new.
    pub fn with_max_registrations(mut self, n: usize) -> Self {
        self.max_registrations = n;
        self
    }

    /// Registrations per page when a DISCOVER gives no limit (default [`DEFAULT_PAGE`]).
    pub fn with_default_page(mut self, n: usize) -> Self {
        self.default_page = n.max(1);
        self
    }

    /// The most registrations per page (default [`DEFAULT_MAX_PAGE`]); larger limits are
    /// lowered to it.
    pub fn with_max_page(mut self, n: usize) -> Self {
        self.max_page = n.max(1);
        self
    }

    /// The largest message read or written, in bytes (default
    /// [`crate::codec::DEFAULT_MAX_MESSAGE_SIZE`], 1 MiB). Pages are cut to fit it.
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Inbound streams one connection may have open at once (default
    /// [`DEFAULT_MAX_STREAMS_PER_CONNECTION`]).
    pub fn with_max_streams_per_connection(mut self, n: usize) -> Self {
        self.max_streams_per_connection = n.max(1);
        self
    }

    /// How long a stream may idle between requests (default [`DEFAULT_STREAM_TIMEOUT`]).
    pub fn with_stream_timeout(mut self, timeout: Duration) -> Self {
        self.stream_timeout = timeout;
        self
    }

    /// Requests per second one peer may make, averaged (default
    /// [`DEFAULT_REQUESTS_PER_SECOND`]); 0 turns the rate limit off.
    pub fn with_requests_per_second(mut self, n: u32) -> Self {
        self.requests_per_second = n;
        self
    }

    /// Requests one peer may make in a burst (default [`DEFAULT_REQUEST_BURST`]).
    pub fn with_request_burst(mut self, n: u32) -> Self {
        self.request_burst = n.max(1);
        self
    }

    /// Whether a peer's registrations are removed when its last connection closes (default
    /// `true`). With `false`, registrations live until their TTL ends.
    pub fn with_remove_on_disconnect(mut self, remove: bool) -> Self {
        self.remove_on_disconnect = remove;
        self
    }

    /// The formats served to a peer whose format is not known: it never registered, does not
    /// list the marker protocol, and its identify did not answer (default
    /// [`ServedFormats::Signed`], as the spec says). A network of rust-libp2p 0.18 clients only,
    /// some without identify, sets [`ServedFormats::LegacyOnly`]. See the module docs.
    pub fn with_unknown_peer_formats(mut self, formats: ServedFormats) -> Self {
        self.unknown_peer_formats = formats;
        self
    }

    /// How long a DISCOVER of a peer of unknown format waits for the peer's identify answer
    /// (default [`IDENTIFY_WAIT`]; at most [`MAX_CONFIGURABLE_STREAM_TIMEOUT`], longer is
    /// lowered to it). The answer or a refusal ends the wait sooner; only a peer that neither
    /// answers nor refuses makes a DISCOVER wait this long.
    pub fn with_identify_wait(mut self, wait: Duration) -> Self {
        self.identify_wait = wait.min(MAX_CONFIGURABLE_STREAM_TIMEOUT);
        self
    }

    /// Bytes the store may hold (default [`DEFAULT_MAX_STORE_BYTES`]), counted as
    /// [`Registrations::stored_bytes`] counts them. Over it, a REGISTER that would grow the store
    /// gets `E_UNAVAILABLE`; a refresh that does not grow it still succeeds.
    pub fn with_max_store_bytes(mut self, bytes: usize) -> Self {
        self.max_store_bytes = bytes;
        self
    }

    /// The largest signed envelope a REGISTER may carry, in bytes (default
    /// [`DEFAULT_MAX_RECORD_SIZE`]). Larger records get `E_INVALID_SIGNED_PEER_RECORD`, before
    /// the envelope is decoded. Requests are read up to this plus [`REQUEST_OVERHEAD`].
    pub fn with_max_record_size(mut self, bytes: usize) -> Self {
        self.max_record_size = bytes;
        self
    }

    /// The most addresses one record may list (default [`DEFAULT_MAX_ADDRESSES_PER_RECORD`]).
    pub fn with_max_addresses_per_record(mut self, n: usize) -> Self {
        self.max_addresses_per_record = n;
        self
    }

    /// Checks every limit against its range; [`Behaviour::try_new`] and `rendezvous serve` refuse
    /// a configuration that fails. (An unchecked configuration never panics the server either:
    /// out-of-range values are clamped where they are used.)
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let fail = |setting, text: String| Err(InvalidConfig { setting, text });
        if self.min_ttl == 0 {
            return fail("min-ttl", "is 0 s; expected at least 1 s".into());
        }
        if self.max_ttl > MAX_CONFIGURABLE_TTL {
            return fail(
                "max-ttl",
                format!(
                    "is {} s; at most {MAX_CONFIGURABLE_TTL} s (one year) allowed",
                    self.max_ttl
                ),
            );
        }
        if self.min_ttl > self.max_ttl {
            return fail(
                "min-ttl",
                format!(
                    "{} s is above max-ttl {} s; expected min <= max",
                    self.min_ttl, self.max_ttl
                ),
            );
        }
        if self.max_registrations_per_peer == 0 || self.max_registrations == 0 {
            return fail("max-registrations", "is 0; expected at least 1".into());
        }
        if self.default_page > self.max_page {
            return fail(
                "default-page",
                format!(
                    "{} is above max-page {}; expected default <= max",
                    self.default_page, self.max_page
                ),
            );
        }
        if self.max_page > MAX_SCANNED_PER_DISCOVER {
            return fail(
                "max-page",
                format!(
                    "is {}; at most {MAX_SCANNED_PER_DISCOVER} allowed",
                    self.max_page
                ),
            );
        }
        if self.max_record_size == 0 {
            return fail("max-record-size", "is 0; expected at least 1 byte".into());
        }
        let smallest_message = self.max_record_size.saturating_add(REQUEST_OVERHEAD);
        if self.max_message_size < smallest_message
            || self.max_message_size > MAX_CONFIGURABLE_MESSAGE_SIZE
        {
            return fail(
                "max-message-size",
                format!(
                    "is {} bytes; expected {smallest_message} (max-record-size + {REQUEST_OVERHEAD}) \
                     to {MAX_CONFIGURABLE_MESSAGE_SIZE}",
                    self.max_message_size
                ),
            );
        }
        if self.max_addresses_per_record == 0 {
            return fail(
                "max-addresses-per-record",
                "is 0; expected at least 1".into(),
            );
        }
        let one_registration = REGISTRATION_OVERHEAD_BYTES + RECORD_OVERHEAD_BYTES;
        if self.max_store_bytes < one_registration {
            return fail(
                "max-store-bytes",
                format!(
                    "is {}; expected at least {one_registration} (one registration)",
                    self.max_store_bytes
                ),
            );
        }
        if self.stream_timeout.is_zero() || self.stream_timeout > MAX_CONFIGURABLE_STREAM_TIMEOUT {
            return fail(
                "stream-timeout",
                format!(
                    "is {:?}; expected 1 s to {} s",
                    self.stream_timeout,
                    MAX_CONFIGURABLE_STREAM_TIMEOUT.as_secs()
                ),
            );
        }
        Ok(())
    }

    /// The largest request read: a REGISTER with a record of the maximal size, capped by the
    /// message size.
    pub(crate) fn max_request_size(&self) -> usize {
        self.max_record_size
            .saturating_add(REQUEST_OVERHEAD)
            .min(self.max_message_size)
    }

    /// The protocol id served.
    pub fn protocol(&self) -> &StreamProtocol {
        &self.protocol
    }

    /// The largest message read or written, in bytes.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }
}

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
    /// A connection already had [`Config::with_max_streams_per_connection`] streams open; the new
    /// stream was dropped.
    Streams,
    /// [`MAX_IN_FLIGHT`] requests were waiting for the store.
    InFlight,
    /// Too many DISCOVERs were waiting for their askers' identify ([`MAX_HELD_PER_PEER`],
    /// [`MAX_HELD`]).
    HeldDiscovers,
}

/// Why a registration was removed before its TTL ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Removal {
    /// The peer sent an UNREGISTER.
    Unregister,
    /// The peer's last connection closed (see [`Config::with_remove_on_disconnect`]).
    Disconnect,
}

/// A [`Config`] value out of its range: which setting (named as `rendezvous serve`'s flag,
/// without the dashes) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting} {text}")]
pub struct InvalidConfig {
    /// The setting, as the flag is named (`max-ttl`, `max-store-bytes`, ...).
    pub setting: &'static str,
    /// What was wrong and what was expected.
    pub text: String,
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
    /// The store committed a group of mutations (stores that commit in groups, such as SQLite).
    StoreCommitted {
        /// Operations in the commit.
        operations: usize,
        /// How long the commit took (with `--sync full`, including the fsync).
        latency: Duration,
    },
}
