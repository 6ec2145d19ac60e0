//! The memory store: the pure [`Registrations`] core, answering every operation at once.

use std::{
    collections::VecDeque,
    task::{Context, Poll, Waker},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use super::{Change, Local, Operation, OperationId, Outcome, Store, StoreEvent};
use crate::codec::Registration;
use crate::server::{Config, Registrations};

/// Registrations in memory only: what tests and `serve --ephemeral` use. A restart loses them.
///
/// Every operation completes on the next [`poll`](Store::poll); the completions waiting are at
/// most the operations the shell has in flight.
#[derive(Debug)]
pub struct MemoryStore {
    index: Registrations,
    ready: VecDeque<StoreEvent>,
    waker: Option<Waker>,
}

impl MemoryStore {
    /// An empty store with the limits of `config`. Its cookie counter starts at the wall clock
    /// in microseconds, so cookies handed out before a restart never hide registrations made
    /// after it.
    pub fn new(config: Config) -> Self {
        Self::from_index(Registrations::new(config, wall_clock_micros()))
    }

    /// A store around `index` (for example one filled by a test).
    pub fn from_index(index: Registrations) -> Self {
        Self {
            index,
            ready: VecDeque::new(),
            waker: None,
        }
    }
}

/// The wall clock in microseconds since the Unix epoch (0 before it).
pub(crate) fn wall_clock_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Applies `operation` to `index`, as every local store does first: the outcome, the
/// registrations `peer` holds after it, and the change it made.
pub(crate) fn apply(
    index: &mut Registrations,
    operation: Operation,
    now: Instant,
) -> (Outcome, usize, Option<Change>) {
    let peer = operation.peer();
    let outcome = match operation {
        Operation::Register { peer, registration } => {
            let namespace = registration.namespace.clone();
            let (result, limit) = match index.try_register_unverified(peer, registration, now) {
                Ok((ttl, record)) => (
                    Ok(Registration {
                        namespace: namespace.clone(),
                        record,
                        ttl,
                    }),
                    None,
                ),
                Err(refusal) => (Err(refusal.error), refusal.limit),
            };
            Outcome::Registered {
                namespace,
                result,
                limit,
            }
        }
        Operation::Unregister { peer, namespace } => {
            let removed = index.unregister(peer, &namespace);
            Outcome::Unregistered { namespace, removed }
        }
        Operation::RemovePeer { peer } => Outcome::PeerRemoved {
            removed: index.remove_peer(&peer),
        },
        Operation::Discover {
            served,
            namespace,
            cookie,
            limit,
            ..
        } => {
            let result =
                index.discover_up_to_date(served, namespace.as_ref(), cookie.as_ref(), limit, now);
            let up_to_date = matches!(result, Ok((_, _, true)));
            let result = result.map(|(registrations, cookie, _)| (registrations, cookie));
            Outcome::Discovered {
                namespace,
                result,
                up_to_date,
            }
        }
    };
    let change = Change::of(peer, &outcome, index.counter());
    (outcome, index.count_of(&peer), change)
}

/// The next registration of `index` expired at `now`, as a [`StoreEvent::Expired`].
pub(crate) fn poll_expired(index: &mut Registrations, now: Instant) -> Option<StoreEvent> {
    let registration = index.poll_expired(now)?;
    let peer_registrations = index.count_of(&registration.record.peer_id());
    Some(StoreEvent::Expired {
        registration,
        peer_registrations,
    })
}

impl Store for MemoryStore {
    fn submit(&mut self, id: OperationId, operation: Operation, now: Instant) {
        let peer = operation.peer();
        let (outcome, peer_registrations, change) = apply(&mut self.index, operation, now);
        self.ready.extend(change.map(StoreEvent::Changed));
        self.ready.push_back(StoreEvent::Completed {
            id,
            peer,
            outcome,
            peer_registrations,
        });
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>, now: Instant) -> Poll<StoreEvent> {
        if let Some(event) = self.ready.pop_front() {
            return Poll::Ready(event);
        }
        if let Some(event) = poll_expired(&mut self.index, now) {
            return Poll::Ready(event);
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.index.poll_timeout()
    }

    fn local(&self) -> Option<&dyn Local> {
        Some(&self.index)
    }
}
