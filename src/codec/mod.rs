//! The rendezvous wire format.
//!
//! Every message on a `/rendezvous/1.0.0` stream is an unsigned-varint length prefix followed by
//! one protobuf `Message` (proto2). This module has one file per concern:
//!
//! - `types`: the domain types with validating constructors ([`Namespace`], [`Ttl`],
//!   [`Cookie`], [`Registration`], [`ErrorCode`], [`ErrorResponse`], ...);
//! - `record`: [`SignedRecord`], what a REGISTER carries: a verified signed peer record in
//!   either envelope format, or an unsigned `PeerInfo` ([`RecordFormat`]), each format in its
//!   own file;
//! - `message`: [`Message`] and its conversion to and from the private protobuf types;
//! - `request`: [`Request`], a request as a server decodes it (a REGISTER's envelope left
//!   undecoded, so cheap checks come first);
//! - `push`: [`Subscribe`] and [`Push`], the messages of the push protocol (docs/push.md);
//! - `frame`: length-prefixed framing with a size cap ([`read_frame`], [`write_message`], ...).

mod frame;
mod message;
mod push;
mod record;
mod request;
mod types;

#[allow(clippy::all, missing_docs)]
mod proto {
    include!(concat!(env!("OUT_DIR"), "/rendezvous.pb.rs"));
}

pub(crate) use frame::append_frame;
pub use frame::{read_frame, read_message, write_frame, write_message, FrameError};
pub use message::registration_wire_len;
pub use message::{DecodeError, Message, RequestKind};
pub use push::{Push, Subscribe};
pub use record::{InvalidRecord, RecordFormat, SignedRecord};
pub use request::{Request, RequestError, UnverifiedRegistration};
pub use types::{
    Cookie, CookieTooLong, DiscoverPage, ErrorCode, ErrorResponse, InvalidNamespace, Namespace,
    NewRegistration, Registration, Ttl,
};

/// Default cap on the size of one framed message (length prefix excluded): 1 MiB, the cap
/// rust-libp2p's `libp2p-rendezvous` enforces, so nothing we send is too large for it.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1024 * 1024;

/// Largest cookie we accept or store. Our own cookies are 8 bytes plus a namespace of at most
/// 255 bytes; other servers' cookies are opaque but small. A cap keeps a hostile server from
/// making the client store megabytes per (server, namespace).
pub const MAX_COOKIE_LEN: usize = 1024;
