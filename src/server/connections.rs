//! Which connections the server keeps: a pure core (no clock reads, fed `now`) that knows each
//! peer's connections, whether they hold something (the peer's registrations, which its
//! disconnect would remove), and when each last carried a request.
//!
//! Near the cap it chooses connections to close, as go-libp2p's connection manager trims to a
//! low watermark and protects what is valuable: only connections that hold nothing, past a grace
//! period in which a new connection may register, longest idle first. A flood of idle
//! connections therefore never keeps a peer that registers out; a flood of registered
//! identities is bounded by the registration budgets.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::Waker,
    time::{Duration, Instant},
};

use futures::task::AtomicWaker;
use libp2p::{swarm::ConnectionId, PeerId};

/// Whether a connection stays alive while nothing is in flight: shared by the core, which
/// sets it when its peer's holdings change, and the connection's handler, which reads it.
///
/// A switch rather than a message through the swarm: libp2p-swarm 0.48 finds the connection
/// of a `NotifyHandler::One` by scanning every connected peer (`Pool::get_established`), so
/// one message per REGISTER would make registering O(connected peers), quadratic over a
/// reconnect storm (measured: BENCHMARKS.md, "Connections and bursts").
#[derive(Debug, Clone, Default)]
pub(crate) struct KeepAlive(Arc<KeepAliveState>);

#[derive(Debug, Default)]
struct KeepAliveState {
    on: AtomicBool,
    /// The handler's connection task, woken when the switch changes so that it looks again.
    waker: AtomicWaker,
}

impl KeepAlive {
    /// Whether the connection is to stay alive.
    pub(crate) fn get(&self) -> bool {
        self.0.on.load(Ordering::Relaxed)
    }

    /// The task to wake when the switch changes (the handler's, from its `poll`).
    pub(crate) fn register(&self, waker: &Waker) {
        self.0.waker.register(waker);
    }

    fn set(&self, on: bool) {
        if self.0.on.swap(on, Ordering::Relaxed) != on {
            self.0.waker.wake();
        }
    }
}

/// The established connections and the choice of which to close.
#[derive(Debug)]
pub(crate) struct Connections {
    max: usize,
    grace: Duration,
    peers: HashMap<PeerId, Peer>,
    /// Every established connection.
    by_id: HashMap<ConnectionId, Connection>,
    /// The connections that hold nothing and are not closing, by last activity (oldest
    /// first): the candidates to close.
    idle: BTreeSet<(Instant, ConnectionId)>,
    /// Connections the server asked the swarm to close; they count until they are gone.
    closing: usize,
}

/// The connections of one peer.
#[derive(Debug, Default)]
struct Peer {
    ids: HashSet<ConnectionId>,
    /// The peer holds registrations that its disconnect would remove (what its connections'
    /// handlers were last told: keep alive).
    holds: bool,
}

#[derive(Debug)]
struct Connection {
    peer: PeerId,
    keep_alive: KeepAlive,
    /// When it was established or last carried a request.
    active: Instant,
    closing: bool,
}

/// Whether a new connection may be established.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Below the cap.
    Admitted,
    /// At the cap: admitted in place of this connection, which holds nothing and is to be
    /// closed.
    Replacing(PeerId, ConnectionId),
    /// At the cap, and every connection holds something or is in its grace period.
    Refused,
}

impl Connections {
    pub(crate) fn new(max: usize, grace: Duration) -> Self {
        Self {
            max: max.max(1),
            grace,
            peers: HashMap::new(),
            by_id: HashMap::new(),
            idle: BTreeSet::new(),
            closing: 0,
        }
    }

    /// Established connections, closing ones included.
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Peers with at least one connection.
    pub(crate) fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// Where trimming starts: 15/16 of the cap.
    fn high_watermark(&self) -> usize {
        self.max - self.max / 16
    }

    /// Where trimming stops: 7/8 of the cap.
    fn low_watermark(&self) -> usize {
        self.max - self.max / 8
    }

    /// Connections that are not closing.
    fn open(&self) -> usize {
        self.by_id.len() - self.closing
    }

    /// Whether a new connection may come in now; [`Connections::established`] follows when the
    /// swarm establishes it. At the cap, the longest idle connection that holds nothing and is
    /// past its grace period makes room (it is marked closing here).
    pub(crate) fn admit(&mut self, now: Instant) -> Admission {
        if self.open() < self.max {
            return Admission::Admitted;
        }
        match self.take_idle(now) {
            Some((peer, id)) => Admission::Replacing(peer, id),
            None => Admission::Refused,
        }
    }

    /// A connection of `peer` was established (its handler is being made; should another
    /// behaviour deny it, [`Connections::closed`] follows); `holds` when the peer holds
    /// registrations its disconnect would remove. Returns the switch its handler reads.
    pub(crate) fn established(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        holds: bool,
        now: Instant,
    ) -> KeepAlive {
        let entry = self.peers.entry(peer).or_insert_with(|| Peer {
            ids: HashSet::new(),
            holds,
        });
        entry.ids.insert(id);
        let holds = entry.holds;
        let keep_alive = KeepAlive::default();
        keep_alive.set(holds);
        self.by_id.insert(
            id,
            Connection {
                peer,
                keep_alive: keep_alive.clone(),
                active: now,
                closing: false,
            },
        );
        if !holds {
            self.idle.insert((now, id));
        }
        keep_alive
    }

    /// A connection closed; returns whether it was the peer's last.
    pub(crate) fn closed(&mut self, peer: PeerId, id: ConnectionId) -> bool {
        if let Some(connection) = self.by_id.remove(&id) {
            if connection.closing {
                self.closing -= 1;
            } else {
                self.idle.remove(&(connection.active, id));
            }
        }
        let Some(entry) = self.peers.get_mut(&peer) else {
            return true;
        };
        entry.ids.remove(&id);
        if entry.ids.is_empty() {
            self.peers.remove(&peer);
            return true;
        }
        false
    }

    /// Connection `id` carried a request at `now`: it is the most recently active.
    pub(crate) fn active(&mut self, id: ConnectionId, now: Instant) {
        let Some(connection) = self.by_id.get_mut(&id) else {
            return;
        };
        if !connection.closing && self.idle.remove(&(connection.active, id)) {
            self.idle.insert((now, id));
        }
        connection.active = now;
    }

    /// Records whether `peer` holds registrations its disconnect would remove, and sets the
    /// keep-alive switch of each of its connections.
    pub(crate) fn set_holds(&mut self, peer: PeerId, holds: bool) {
        let Some(entry) = self.peers.get_mut(&peer) else {
            return;
        };
        if entry.holds == holds {
            return;
        }
        entry.holds = holds;
        for id in &entry.ids {
            let Some(connection) = self.by_id.get(id) else {
                continue;
            };
            connection.keep_alive.set(holds);
            if connection.closing {
                continue;
            }
            if holds {
                self.idle.remove(&(connection.active, *id));
            } else {
                self.idle.insert((connection.active, *id));
            }
        }
    }

    /// Whether `peer` holds registrations, as last recorded.
    #[cfg(test)]
    pub(crate) fn holds(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|p| p.holds)
    }

    /// The next connection to close to come back down to the low watermark, once the count
    /// passed the high one: the longest idle that holds nothing and is past its grace period.
    pub(crate) fn poll_trim(&mut self, now: Instant) -> Option<(PeerId, ConnectionId)> {
        let trimming = self.open() > self.high_watermark()
            || (self.closing > 0 && self.open() > self.low_watermark());
        if !trimming {
            return None;
        }
        self.take_idle(now)
    }

    /// When [`Connections::poll_trim`] may have something to close: the end of the grace
    /// period of the oldest idle connection, while over the high watermark.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.open() <= self.high_watermark() {
            return None;
        }
        self.idle
            .first()
            .and_then(|(active, _)| active.checked_add(self.grace))
    }

    /// Marks the longest idle connection past its grace period as closing and returns it.
    fn take_idle(&mut self, now: Instant) -> Option<(PeerId, ConnectionId)> {
        let &(active, id) = self.idle.first()?;
        if now.saturating_duration_since(active) < self.grace {
            return None;
        }
        self.idle.remove(&(active, id));
        let connection = self.by_id.get_mut(&id)?;
        connection.closing = true;
        self.closing += 1;
        Some((connection.peer, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(10);

    fn connect(c: &mut Connections, holds: bool, now: Instant) -> (PeerId, ConnectionId) {
        let peer = PeerId::random();
        let id = ConnectionId::new_unchecked(rand::random::<u32>() as usize);
        c.established(peer, id, holds, now);
        (peer, id)
    }

    #[test]
    fn given_room_when_a_connection_comes_then_it_is_admitted() {
        let now = Instant::now();
        let mut c = Connections::new(4, GRACE);
        for _ in 0..3 {
            assert_eq!(c.admit(now), Admission::Admitted);
            connect(&mut c, false, now);
        }
        assert_eq!(c.admit(now), Admission::Admitted);
    }

    #[test]
    fn given_a_full_cap_of_idle_connections_past_grace_when_one_comes_then_the_longest_idle_makes_room(
    ) {
        let start = Instant::now();
        let mut c = Connections::new(3, GRACE);
        let (oldest_peer, oldest) = connect(&mut c, false, start);
        let (_, middle) = connect(&mut c, false, start + Duration::from_secs(1));
        let (_, newest) = connect(&mut c, false, start + Duration::from_secs(2));
        // The oldest carried a request since: the middle one is now the longest idle.
        c.active(oldest, start + Duration::from_secs(3));
        let later = start + Duration::from_secs(20);
        let Admission::Replacing(peer, replaced) = c.admit(later) else {
            panic!("expected a replacement");
        };
        assert_eq!(replaced, middle);
        // It counts until the swarm says it closed, but its place is the newcomer's already.
        assert_eq!(c.len(), 3);
        assert_eq!(c.admit(later), Admission::Admitted);
        assert!(c.closed(peer, middle));
        assert_eq!(c.len(), 2);
        assert!(!c.holds(&oldest_peer));
        let _ = newest;
    }

    #[test]
    fn given_a_full_cap_in_grace_or_holding_when_one_comes_then_it_is_refused() {
        let start = Instant::now();
        let mut c = Connections::new(2, GRACE);
        connect(&mut c, true, start);
        connect(&mut c, false, start + Duration::from_secs(5));
        // The idle one is in its grace period, the other holds registrations.
        assert_eq!(c.admit(start + Duration::from_secs(6)), Admission::Refused);
        // Registrations protect a connection however long it idles: only the idle one goes.
        let much_later = start + Duration::from_secs(3600);
        let Admission::Replacing(peer, id) = c.admit(much_later) else {
            panic!("expected a replacement");
        };
        c.closed(peer, id);
        connect(&mut c, false, much_later);
        assert_eq!(c.admit(much_later), Admission::Refused);
    }

    #[test]
    fn given_a_peer_that_registers_when_the_cap_fills_then_its_connection_is_kept() {
        let start = Instant::now();
        let mut c = Connections::new(2, GRACE);
        let peer = PeerId::random();
        let id = ConnectionId::new_unchecked(1);
        let keep_alive = c.established(peer, id, false, start);
        assert!(!keep_alive.get());
        c.set_holds(peer, true);
        assert!(keep_alive.get(), "the handler reads the change");
        let second = c.established(peer, ConnectionId::new_unchecked(2), false, start);
        assert!(
            second.get(),
            "a new connection of a holding peer starts kept"
        );
        c.closed(peer, ConnectionId::new_unchecked(2));
        connect(&mut c, false, start);
        let later = start + Duration::from_secs(60);
        let Admission::Replacing(other, replaced) = c.admit(later) else {
            panic!("expected a replacement");
        };
        assert_ne!(replaced, id);
        c.closed(other, replaced);
        connect(&mut c, false, later);
        // Unregistered again: it may go, and it is now the longest idle.
        c.set_holds(peer, false);
        assert!(!keep_alive.get());
        assert_eq!(c.admit(later), Admission::Replacing(peer, id));
    }

    /// The swarm asks a handler whether to keep its connection only when it polls it: an idle
    /// connection whose peer's last registration expired must be woken to close.
    #[test]
    fn given_an_idle_handler_when_its_peer_stops_holding_then_its_task_is_woken() {
        struct Woken(std::sync::atomic::AtomicUsize);
        impl futures::task::ArcWake for Woken {
            fn wake_by_ref(arc_self: &Arc<Self>) {
                arc_self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let now = Instant::now();
        let mut c = Connections::new(4, GRACE);
        let peer = PeerId::random();
        let keep_alive = c.established(peer, ConnectionId::new_unchecked(1), false, now);
        let woken = Arc::new(Woken(std::sync::atomic::AtomicUsize::new(0)));
        keep_alive.register(&futures::task::waker(woken.clone()));
        c.set_holds(peer, true);
        assert!(keep_alive.get());
        assert_eq!(woken.0.load(Ordering::Relaxed), 1);
        keep_alive.register(&futures::task::waker(woken.clone()));
        c.set_holds(peer, false);
        assert!(!keep_alive.get());
        assert_eq!(woken.0.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn given_more_than_the_high_watermark_when_polled_then_idle_connections_are_trimmed_to_the_low_one(
    ) {
        let start = Instant::now();
        let mut c = Connections::new(32, GRACE);
        let mut holding = Vec::new();
        for i in 0..31 {
            let holds = i % 2 == 0;
            let (peer, id) = connect(&mut c, holds, start + Duration::from_millis(i));
            if holds {
                holding.push(id);
            }
            let _ = peer;
        }
        // 31 > 30 (15/16 of 32): trimming, but not before the grace period ends.
        assert_eq!(c.poll_trim(start + Duration::from_secs(1)), None);
        assert_eq!(
            c.poll_timeout(),
            Some(start + Duration::from_millis(1) + GRACE)
        );
        let later = start + Duration::from_secs(11);
        let mut trimmed = Vec::new();
        while let Some((peer, id)) = c.poll_trim(later) {
            trimmed.push((peer, id));
        }
        // Down to 28 (7/8 of 32): three closed, the oldest idle ones, none holding.
        assert_eq!(trimmed.len(), 3);
        assert!(trimmed.iter().all(|(_, id)| !holding.contains(id)));
        for (peer, id) in trimmed {
            c.closed(peer, id);
        }
        assert_eq!(c.len(), 28);
        assert_eq!(c.poll_trim(later), None);
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn given_two_connections_of_a_peer_when_both_close_then_the_second_is_the_last() {
        let now = Instant::now();
        let mut c = Connections::new(8, GRACE);
        let (peer, first) = connect(&mut c, false, now);
        let second = ConnectionId::new_unchecked(usize::MAX);
        c.established(peer, second, false, now);
        assert_eq!(c.peer_count(), 1);
        assert!(!c.closed(peer, first));
        assert!(c.closed(peer, second));
        assert_eq!(c.peer_count(), 0);
        assert_eq!(c.len(), 0);
    }
}
