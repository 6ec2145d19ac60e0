//! The [libp2p rendezvous protocol](https://github.com/libp2p/specs/blob/master/rendezvous/README.md)
//! as a peer-discovery source, and an embedded rendezvous server.
//!
//! (Crate docs are completed as the client, server and aggregator land.)

#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

use libp2p::StreamProtocol;

pub mod client;
pub mod codec;
pub mod server;

pub use codec::{
    Cookie, ErrorCode, ErrorResponse, Namespace, RecordFormat, Registration, SignedRecord, Ttl,
};

/// The protocol id of rendezvous 1.0.0. Servers and clients can be configured to use another
/// id for the same protocol (some networks run it as `/vac/waku/rendezvous/1.0.0`).
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/rendezvous/1.0.0");

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
