//! The server's configuration: the protocol id and every limit, their defaults as named
//! constants, and the check that refuses values out of range.

use std::time::Duration;

use libp2p::StreamProtocol;

use super::{ServedFormats, IDENTIFY_WAIT, MAX_SCANNED_PER_DISCOVER};
use crate::codec::{Ttl, DEFAULT_MAX_MESSAGE_SIZE};

/// Registrations one peer may hold, by the spec.
pub const DEFAULT_MAX_REGISTRATIONS_PER_PEER: usize = 1000;

/// Registrations the server holds in total. At about 1 KiB per registration with its record this
/// is about 1 GiB; lower it on small machines.
pub const DEFAULT_MAX_REGISTRATIONS: usize = 1_000_000;

/// Registrations in a DISCOVER_RESPONSE when the request gives no limit.
pub const DEFAULT_PAGE: usize = 100;

/// The most registrations in one DISCOVER_RESPONSE, by the spec.
pub const DEFAULT_MAX_PAGE: usize = crate::MAX_DISCOVER_LIMIT as usize;

/// Inbound rendezvous streams one connection may have open at once, read or waiting. A
/// rust-libp2p client has up to 100 requests in flight, each on its own stream, so 128 serves
/// every legitimate client; a stream over it is reset alone (never its connection: the muxer
/// allows [`Config::muxer_max_streams`], which is more). What the waiting streams can hold is
/// bounded by the muxer's window per stream (see the module docs, "Memory").
pub const DEFAULT_MAX_STREAMS_PER_CONNECTION: usize = 128;

/// Inbound rendezvous streams of one connection that are read at once; the others wait unread,
/// in the order they came, for one of these to end. Each read stream buffers at most one request
/// and one response, so this bounds what a connection's answers can hold (a page is up to the
/// message cap).
pub const SERVED_STREAMS_PER_CONNECTION: usize = 8;

/// The most [`Config::with_max_streams_per_connection`] accepts: with the muxer's own streams on
/// top, yamux's 1 GiB connection window must still hold 256 KiB for each.
pub const MAX_CONFIGURABLE_STREAMS_PER_CONNECTION: usize = 2048;

/// Inbound streams of one connection that may be negotiating their protocol at once (the swarm
/// takes no more from the muxer until one is done). Give it to the swarm with
/// `libp2p::swarm::Config::with_max_negotiating_inbound_streams`; [`Config::muxer_max_streams`]
/// counts it.
pub const MAX_NEGOTIATING_STREAMS: usize = 32;

/// Streams of one connection for the protocols beside rendezvous (identify, ping, the identify
/// stream the server opens itself), counted in [`Config::muxer_max_streams`].
pub const OTHER_PROTOCOL_STREAMS: usize = 16;

/// Established connections the server keeps at once (see [`Config::with_max_connections`]).
/// An idle connection costs about 33 KiB with `rendezvous serve`'s transports (measured), so
/// 100,000 of them about 3.2 GiB: with the 512 MiB store budget that fits a 4 GiB server (the
/// module docs, "Memory", do the sum). With remove-on-disconnect, this is also how many peers can hold
/// registrations at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;

/// How long a new connection may hold nothing (no registration, no request) before the server
/// may close it to make room near [`Config::with_max_connections`]: time for a client to
/// connect, identify and register.
pub const DEFAULT_CONNECTION_GRACE: Duration = Duration::from_secs(10);

/// How long an inbound stream may wait for its next request (or for a slow write) before the
/// server closes it.
pub const DEFAULT_STREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// Requests (REGISTER and DISCOVER) a peer may make per second, averaged.
pub const DEFAULT_REQUESTS_PER_SECOND: u32 = 50;

/// Requests a peer may make at once before the per-second rate applies: room for a client in
/// [`crate::client::MAX_NAMESPACES`] namespaces that registers and discovers in every one at
/// start (128 requests), twice over.
pub const DEFAULT_REQUEST_BURST: u32 = 256;

/// Bytes the store may hold, counted as [`Registrations::stored_bytes`](super::Registrations::stored_bytes) counts them (each
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

/// Push subscriptions (docs/push.md) the server serves at once, over all connections. Each
/// holds at most [`DEFAULT_PUSH_QUEUE`] pushes waiting for its stream (a push shares its record
/// with the store, so a queued push is a few hundred bytes): 10,000 subscriptions with full
/// queues hold about 300 MiB, and far less while subscribers keep up. Over it, a subscription is
/// answered `E_UNAVAILABLE` and its subscriber polls.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 10_000;

/// Push subscriptions one connection may hold: one per namespace of a client in
/// [`crate::client::MAX_NAMESPACES`] namespaces. Over it, `E_UNAVAILABLE`.
pub const DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = crate::client::MAX_NAMESPACES;

/// Pushes one subscription may have waiting for its stream. A subscriber that falls this far
/// behind while the server writes to it has its subscription ended (it resumes with DISCOVER
/// from its last cookie); one whose pushes waited this long for a quiet moment is left behind
/// and caught up from its cookie later ([`super::Event::SubscriptionBehind`]). So a slow
/// subscriber never holds more, and never slows a REGISTER: the server only ever adds to a
/// queue without waiting. 64 absorbs a burst of 64 registrations in one namespace between two
/// writes to the subscriber.
pub const DEFAULT_PUSH_QUEUE: usize = 64;

/// How long a push subscription left behind ([`super::Event::SubscriptionBehind`]) waits
/// before the server catches it up in any quiet moment, unless the server is quiet for ten
/// quiet times ([`Config::with_push_quiet`]) first, the storm over; doubled each time it falls
/// behind again within twice that of being caught up (a storm that goes on), up to
/// [`MAX_PUSH_BEHIND`]. So under a long storm each subscriber costs a replayed page now and
/// then, fewer and fewer, and after it is caught up within ten quiet times.
pub const MIN_PUSH_BEHIND: Duration = Duration::from_secs(1);

/// The longest a push subscription left behind waits before the server catches it up in any
/// quiet moment ([`MIN_PUSH_BEHIND`]).
pub const MAX_PUSH_BEHIND: Duration = Duration::from_secs(30);

/// The longest quiet moment a server may wait for before it pushes
/// ([`Config::with_push_quiet`]): a second.
pub const MAX_PUSH_QUIET: Duration = Duration::from_secs(1);

/// The longest TTL an operator may configure: one year. Deadlines are `now + ttl`; the cap keeps
/// them far from any overflow of `Instant`.
pub const MAX_CONFIGURABLE_TTL: Ttl = 365 * 24 * 60 * 60;

/// The longest stream timeout an operator may configure: one day.
pub const MAX_CONFIGURABLE_STREAM_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// The largest message cap an operator may configure: 64 MiB.
pub const MAX_CONFIGURABLE_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

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
    pub(crate) max_connections: usize,
    pub(crate) connection_grace: Duration,
    pub(crate) max_subscriptions: usize,
    pub(crate) max_subscriptions_per_connection: usize,
    pub(crate) push_queue: usize,
    pub(crate) push_quiet: Duration,
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
            max_connections: DEFAULT_MAX_CONNECTIONS,
            connection_grace: DEFAULT_CONNECTION_GRACE,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            max_subscriptions_per_connection: DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION,
            push_queue: DEFAULT_PUSH_QUEUE,
            push_quiet: super::GATE_QUIET,
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

    /// Inbound rendezvous streams one connection may have open at once (default
    /// [`DEFAULT_MAX_STREAMS_PER_CONNECTION`]): [`SERVED_STREAMS_PER_CONNECTION`] of them are
    /// read, the rest wait unread; one more is reset. Give the muxer
    /// [`Config::muxer_max_streams`] so that it never closes a connection for a stream the
    /// server would refuse alone.
    pub fn with_max_streams_per_connection(mut self, n: usize) -> Self {
        self.max_streams_per_connection = n.max(1);
        self
    }

    /// The stream cap to give the connection's muxer (yamux `set_max_num_streams`, QUIC
    /// `max_concurrent_stream_limit`): the rendezvous streams
    /// ([`Config::with_max_streams_per_connection`]), those still negotiating
    /// ([`MAX_NEGOTIATING_STREAMS`]), the push streams
    /// ([`Config::with_max_subscriptions_per_connection`], when push is on) and the other
    /// protocols' ([`OTHER_PROTOCOL_STREAMS`]). yamux closes the whole connection when a peer
    /// opens a stream over its cap, so its cap is above every bound the server applies to a
    /// stream alone.
    pub fn muxer_max_streams(&self) -> usize {
        let push = if self.max_subscriptions > 0 {
            self.max_subscriptions_per_connection
                .min(MAX_CONFIGURABLE_STREAMS_PER_CONNECTION)
        } else {
            0
        };
        self.max_streams_per_connection
            .min(MAX_CONFIGURABLE_STREAMS_PER_CONNECTION)
            + MAX_NEGOTIATING_STREAMS
            + push
            + OTHER_PROTOCOL_STREAMS
    }

    /// Established connections the server keeps (default [`DEFAULT_MAX_CONNECTIONS`]). Near
    /// the cap (from 15/16 of it) the server closes connections that hold nothing (no
    /// registration, no request in flight, older than [`Config::with_connection_grace`]),
    /// longest idle first, down to 7/8 of it; at the cap, a new connection takes the place of
    /// such a connection, and is refused only when every connection holds something. The
    /// swarm's per-peer and handshake bounds are the application's (`rendezvous serve` sets
    /// them).
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long a new connection may hold nothing before it may be closed to make room
    /// (default [`DEFAULT_CONNECTION_GRACE`]).
    pub fn with_connection_grace(mut self, grace: Duration) -> Self {
        self.connection_grace = grace.min(MAX_CONFIGURABLE_STREAM_TIMEOUT);
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
    /// some without identify, sets [`ServedFormats::LegacyOnly`]; one with js-libp2p peers
    /// that run no identify, [`ServedFormats::Standard`]. See the module docs.
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
    /// [`Registrations::stored_bytes`](super::Registrations::stored_bytes) counts them. Over it, a REGISTER that would grow the store
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

    /// Push subscriptions served at once over all connections (default
    /// [`DEFAULT_MAX_SUBSCRIPTIONS`]); 0 turns push off (the protocol is then not served, so
    /// identify does not list it).
    pub fn with_max_subscriptions(mut self, n: usize) -> Self {
        self.max_subscriptions = n;
        self
    }

    /// Push subscriptions one connection may hold (default
    /// [`DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION`]).
    pub fn with_max_subscriptions_per_connection(mut self, n: usize) -> Self {
        self.max_subscriptions_per_connection = n;
        self
    }

    /// Pushes one subscription may have waiting before it is ended, or left behind (default
    /// [`DEFAULT_PUSH_QUEUE`]; at least 1).
    pub fn with_push_queue(mut self, n: usize) -> Self {
        self.push_queue = n;
        self
    }

    /// How long no request must have come before pushes are written (default
    /// [`GATE_QUIET`](super::GATE_QUIET); 0 to [`MAX_PUSH_QUIET`]). Requests come first: under
    /// a storm of them, pushes wait and subscriptions whose queues fill are left behind (ten
    /// quiet times without a request end the storm for them). Shorter,
    /// pushes go out sooner on a server with steady traffic; longer, a storm is told from
    /// ordinary traffic more surely (module docs, "Push").
    pub fn with_push_quiet(mut self, quiet: Duration) -> Self {
        self.push_quiet = quiet;
        self
    }

    /// Checks every limit against its range; [`Behaviour::try_new`](super::Behaviour::try_new) and `rendezvous serve` refuse
    /// a configuration that fails. (An unchecked configuration never panics the server either:
    /// out-of-range values are clamped where they are used.)
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        self.validate_ttls()?;
        self.validate_counts()?;
        self.validate_sizes()?;
        self.validate_streams()
    }

    fn validate_ttls(&self) -> Result<(), InvalidConfig> {
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
        Ok(())
    }

    fn validate_counts(&self) -> Result<(), InvalidConfig> {
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
        Ok(())
    }

    fn validate_sizes(&self) -> Result<(), InvalidConfig> {
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
        Ok(())
    }

    fn validate_streams(&self) -> Result<(), InvalidConfig> {
        if self.max_streams_per_connection > MAX_CONFIGURABLE_STREAMS_PER_CONNECTION {
            return fail(
                "max-streams-per-connection",
                format!(
                    "is {}; expected 1 to {MAX_CONFIGURABLE_STREAMS_PER_CONNECTION}",
                    self.max_streams_per_connection
                ),
            );
        }
        if self.max_subscriptions_per_connection > MAX_CONFIGURABLE_STREAMS_PER_CONNECTION {
            return fail(
                "max-subscriptions-per-connection",
                format!(
                    "is {}; expected 0 to {MAX_CONFIGURABLE_STREAMS_PER_CONNECTION}",
                    self.max_subscriptions_per_connection
                ),
            );
        }
        if self.push_queue == 0 {
            return fail("push-queue", "is 0; expected at least 1".into());
        }
        if self.push_quiet > MAX_PUSH_QUIET {
            return fail(
                "push-quiet-ms",
                format!(
                    "is {} ms; expected 0 to {} ms",
                    self.push_quiet.as_millis(),
                    MAX_PUSH_QUIET.as_millis()
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

/// The refusal of `setting`, saying `text`.
fn fail(setting: &'static str, text: String) -> Result<(), InvalidConfig> {
    Err(InvalidConfig { setting, text })
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
