//! The store boundary: one interface between the server shell ([`Behaviour`](super::Behaviour))
//! and the backends that hold registrations.
//!
//! The shell never knows which backend answers. It [`submit`](Store::submit)s each request as
//! an [`Operation`] tagged with an [`OperationId`] and answers the peer when
//! [`poll`](Store::poll) reports the operation [`Completed`](StoreEvent::Completed). Answers may
//! arrive later (a disk commit, a network round trip), so the shell holds the peer's responder
//! until then; a store that knows the answer at once (the memory store) reports it on the next
//! poll.
//!
//! # Rules every backend keeps
//!
//! - **Durability before OK.** A REGISTER completes with a registration only once the store
//!   holds it as durably as it promises (memory: at once; SQLite: after its group commits). The
//!   shell answers OK only then.
//! - **Mutations** are REGISTER, UNREGISTER and the removal of a peer's registrations when its
//!   last connection closes ([`Operation::RemovePeer`]); expiry is the fourth, decided by the
//!   store at the `now` the shell passes to [`poll`](Store::poll) (local stores use the pure
//!   [`Registrations`] core; a shared store may use its own clock) and reported as
//!   [`StoreEvent::Expired`]. [`poll_timeout`](Store::poll_timeout) says when the shell must poll
//!   again without being woken (the shell arms its one timer with it).
//! - **DISCOVER** is an operation like the others, so a shared store can answer it from
//!   elsewhere. Local stores (memory, SQLite) answer it from the in-memory [`Registrations`]
//!   index at once: DISCOVER never waits on disk.
//! - **Sequence numbers, limits and cookies** are decided by the store (local stores: by
//!   [`Registrations`]), so a shared store can decide them for a fleet. Which record formats a
//!   DISCOVER is served is decided by the shell (it knows the asker's connection) and passed in
//!   [`Operation::Discover`]; the store filters by it and marks cookies with it.
//! - **Bounded.** The shell keeps at most [`MAX_IN_FLIGHT`] REGISTERs and DISCOVERs submitted and
//!   not completed; over it, the request is answered `E_UNAVAILABLE` with a statusText and never
//!   reaches the store. UNREGISTERs and disconnect removals are never refused (they only free
//!   state and have no answer that could say "try later"): a store bounds them itself (local
//!   stores: each one that needs a write removes a stored registration, so there are at most
//!   `max_registrations` of them; the others complete at once).
//! - **Poll-based, no runtime.** A store does its work in [`poll`](Store::poll) or hides a thread
//!   or runtime behind it (the SQLite store: one std thread, bounded channels and a waker). It
//!   wakes the task given to [`poll`](Store::poll) when an answer arrives.
//! - **Changes.** A store reports every REGISTER it stores and every early removal
//!   (UNREGISTER, disconnect) as [`StoreEvent::Changed`], in sequence order, so the shell can
//!   push them to subscribers (docs/push.md). A shared store also reports the changes other
//!   instances make. A store that reports none still works: its subscribers get the replay
//!   and then nothing until they resubscribe (the client's polling covers them).
//! - **Statistics**: a store that commits in groups reports each commit as
//!   [`StoreEvent::Committed`] (operations in it and how long it took), for metrics.

mod memory;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::{
    task::{Context, Poll},
    time::{Duration, Instant},
};

use libp2p::PeerId;

pub use memory::MemoryStore;
#[cfg(feature = "sqlite")]
pub use sqlite::{OpenError, SqliteStore, SyncMode};

use super::{Limit, Registrations, Removal, ServedFormats};
use crate::codec::{
    Cookie, ErrorResponse, Namespace, RecordFormat, Registration, UnverifiedRegistration,
};

/// REGISTERs and DISCOVERs submitted to the store and not yet completed, at most. A local store
/// completes a DISCOVER at once and a REGISTER within one group commit (milliseconds), so this
/// is far above what a busy server has waiting; it bounds the responders (and, for a store that
/// queues them, the records) held while a slow disk or network catches up. Over it, requests
/// are answered `E_UNAVAILABLE`.
pub const MAX_IN_FLIGHT: usize = 4096;

/// Identifies one submitted [`Operation`]; the store hands it back in
/// [`StoreEvent::Completed`]. The shell makes them unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OperationId(pub u64);

/// A request to the store, on behalf of `peer` (the peer of the connection it came on).
#[derive(Debug, Clone)]
pub enum Operation {
    /// A REGISTER (new or refresh), its envelope not yet decoded: the store checks its limits
    /// and budgets first, then decodes and verifies the envelope (see
    /// [`Registrations::register_unverified`]).
    Register {
        /// The peer of the connection.
        peer: PeerId,
        /// What it asked for.
        registration: UnverifiedRegistration,
    },
    /// An UNREGISTER. Unregistering an unknown namespace does nothing.
    Unregister {
        /// The peer of the connection.
        peer: PeerId,
        /// The namespace to leave.
        namespace: Namespace,
    },
    /// Removes every registration of `peer`: its last connection closed (with
    /// [`Config::with_remove_on_disconnect`](super::Config::with_remove_on_disconnect)).
    RemovePeer {
        /// The peer whose last connection closed.
        peer: PeerId,
    },
    /// A DISCOVER.
    Discover {
        /// The peer that asks.
        peer: PeerId,
        /// What the shell decided it reads (see the [server docs](super), "Record formats").
        served: ServedFormats,
        /// The namespace asked for; `None` for all namespaces.
        namespace: Option<Namespace>,
        /// Where the last page ended.
        cookie: Option<Cookie>,
        /// The page size asked for.
        limit: Option<u64>,
    },
}

impl Operation {
    /// The peer the operation is for.
    pub fn peer(&self) -> PeerId {
        match self {
            Operation::Register { peer, .. }
            | Operation::Unregister { peer, .. }
            | Operation::RemovePeer { peer }
            | Operation::Discover { peer, .. } => *peer,
        }
    }
}

/// How an [`Operation`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A REGISTER: the registration as stored, with the TTL granted, or why it was refused
    /// (then nothing changed).
    Registered {
        /// The namespace asked for.
        namespace: Namespace,
        /// The stored registration, or the status and text to answer with.
        result: Result<Registration, ErrorResponse>,
        /// On a refusal by a bound (registration counts, byte budget, record caps): which.
        limit: Option<Limit>,
    },
    /// An UNREGISTER: the registration removed, if there was one.
    Unregistered {
        /// The namespace left.
        namespace: Namespace,
        /// The registration removed, with the TTL it was granted.
        removed: Option<Registration>,
    },
    /// A [`Operation::RemovePeer`]: the registrations removed.
    PeerRemoved {
        /// The registrations removed, with the TTLs they were granted.
        removed: Vec<Registration>,
    },
    /// A DISCOVER: a page and the cookie to continue with, or why it was refused.
    Discovered {
        /// The namespace asked for; `None` for all namespaces.
        namespace: Option<Namespace>,
        /// The page and its cookie, or the status and text to answer with.
        result: Result<(Vec<Registration>, Cookie), ErrorResponse>,
        /// Whether the page's cookie is up to date: nothing registered after it yet (see
        /// [`Page::is_up_to_date`](super::rules::Page::is_up_to_date)). A push subscription's
        /// replay goes on until it is.
        up_to_date: bool,
    },
}

/// A change to the registrations, reported as it happens: the feed that push subscriptions
/// (docs/push.md) are served from. Every store reports the changes it makes; a shared store
/// also reports those that other instances make, in sequence order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A REGISTER (new or refresh) stored `registration` (with the TTL granted) under sequence
    /// number `seq`.
    Registered {
        /// The registration's sequence number (what its cookie carries).
        seq: u64,
        /// The registration.
        registration: Registration,
    },
    /// Registrations of `peer` ended before their TTL. Expiry is not a change: subscribers
    /// know each registration's TTL.
    Removed {
        /// The peer.
        peer: PeerId,
        /// The namespaces it no longer is in.
        namespaces: Vec<Namespace>,
        /// What removed them.
        cause: Removal,
    },
}

impl Change {
    /// The change `outcome` made, if it made one; `seq` is the sequence number a successful
    /// REGISTER got (for local stores: [`Registrations::counter`] right after it).
    pub fn of(peer: PeerId, outcome: &Outcome, seq: u64) -> Option<Change> {
        match outcome {
            Outcome::Registered {
                result: Ok(registration),
                ..
            } => Some(Change::Registered {
                seq,
                registration: registration.clone(),
            }),
            Outcome::Unregistered {
                namespace,
                removed: Some(_),
            } => Some(Change::Removed {
                peer,
                namespaces: vec![namespace.clone()],
                cause: Removal::Unregister,
            }),
            Outcome::PeerRemoved { removed } if !removed.is_empty() => Some(Change::Removed {
                peer,
                namespaces: removed.iter().map(|r| r.namespace.clone()).collect(),
                cause: Removal::Disconnect,
            }),
            _ => None,
        }
    }
}

/// What a [`Store`] reports from [`poll`](Store::poll).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// The registrations changed (see [`Change`]): reported as the change is made, which for a
    /// REGISTER may be before it is committed and answered.
    Changed(Change),
    /// The change feed lost changes (a shared store's feed disconnected, or fell behind): every
    /// push subscription ends, and its subscriber resumes with DISCOVER from its cookie, so
    /// nothing is missed.
    ChangesLost,
    /// An operation completed (for a REGISTER: durably, as far as the store promises).
    Completed {
        /// The id it was submitted with.
        id: OperationId,
        /// The peer it was for.
        peer: PeerId,
        /// How it ended.
        outcome: Outcome,
        /// Registrations `peer` holds after it (the shell keeps the peer's connections alive
        /// while this is above zero).
        peer_registrations: usize,
    },
    /// A registration reached the end of its TTL and was removed.
    Expired {
        /// The registration, with the TTL it was granted.
        registration: Registration,
        /// Registrations its peer still holds.
        peer_registrations: usize,
    },
    /// A group of mutations was committed (stores that commit in groups).
    Committed {
        /// Operations in the commit.
        operations: usize,
        /// From the start of the commit to its end (for SQLite with `--sync full`: including
        /// the fsync).
        latency: Duration,
    },
}

/// The interface between the server shell and a registration store. See the
/// [module docs](self) for the rules.
pub trait Store: Send + 'static {
    /// Starts `operation`. Its outcome is reported by [`poll`](Self::poll) as
    /// [`StoreEvent::Completed`] with `id`, exactly once.
    fn submit(&mut self, id: OperationId, operation: Operation, now: Instant);

    /// The next event: a completed operation, an expired registration or a commit. Expiry is
    /// judged at `now`. Returns `Pending` after registering `cx`'s waker for when an answer
    /// arrives; the shell polls again at [`poll_timeout`](Self::poll_timeout) in any case.
    fn poll(&mut self, cx: &mut Context<'_>, now: Instant) -> Poll<StoreEvent>;

    /// When the store next needs to be polled without being woken (the next expiry), if ever.
    fn poll_timeout(&self) -> Option<Instant>;

    /// What the store answers at once about the registrations it holds, for a store that keeps
    /// them in this process; `None` for a store whose registrations live elsewhere (counting
    /// them would be a round trip: the shell then reports no count, rather than 0).
    fn local(&self) -> Option<&dyn Local> {
        None
    }

    /// Whether the store answered its last request: `false` while a store whose registrations
    /// live elsewhere cannot reach them (its requests are then refused with `E_UNAVAILABLE`).
    /// A local store is always available.
    fn available(&self) -> bool {
        true
    }
}

/// What a store that keeps its registrations in this process answers at once: counts for
/// gauges, and what the shell asks about a peer. Read-only: every change goes through
/// [`Store::submit`].
pub trait Local {
    /// Registrations held.
    fn registration_count(&self) -> usize;

    /// Namespaces with at least one registration.
    fn namespace_count(&self) -> usize;

    /// Bytes held, as the byte budget counts them ([`Registrations::stored_bytes`]).
    fn stored_bytes(&self) -> usize;

    /// Registrations `peer` holds.
    fn count_of(&self, peer: &PeerId) -> usize;

    /// Whether `peer` holds a registration in `namespace`.
    fn is_registered(&self, peer: &PeerId, namespace: &Namespace) -> bool;

    /// The format of `peer`'s latest REGISTER, while it holds registrations.
    fn registered_format(&self, peer: &PeerId) -> Option<RecordFormat>;

    /// The registrations in `namespace`, oldest first, with their TTL remaining at `now`.
    fn registrations_in(&self, namespace: &Namespace, now: Instant) -> Vec<Registration>;

    /// The registrations of `peer`, by namespace, with their TTL remaining at `now`.
    fn registrations_of(&self, peer: &PeerId, now: Instant) -> Vec<Registration>;
}

impl Local for Registrations {
    fn registration_count(&self) -> usize {
        self.len()
    }

    fn namespace_count(&self) -> usize {
        Registrations::namespace_count(self)
    }

    fn stored_bytes(&self) -> usize {
        Registrations::stored_bytes(self)
    }

    fn count_of(&self, peer: &PeerId) -> usize {
        Registrations::count_of(self, peer)
    }

    fn is_registered(&self, peer: &PeerId, namespace: &Namespace) -> bool {
        Registrations::is_registered(self, peer, namespace)
    }

    fn registered_format(&self, peer: &PeerId) -> Option<RecordFormat> {
        Registrations::registered_format(self, peer)
    }

    fn registrations_in(&self, namespace: &Namespace, now: Instant) -> Vec<Registration> {
        Registrations::registrations_in(self, namespace, now)
    }

    fn registrations_of(&self, peer: &PeerId, now: Instant) -> Vec<Registration> {
        Registrations::registrations_of(self, peer, now)
    }
}

#[cfg(test)]
mod tests;
