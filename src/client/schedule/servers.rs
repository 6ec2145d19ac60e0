//! The servers the client uses and their connection state: who to dial, and when to redial.

use std::{collections::BTreeMap, time::Instant};

use libp2p::PeerId;

use super::{backoff::Backoff, deadlines::Deadlines};
use crate::client::MAX_SERVERS;

/// A server's connection as the schedule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Conn {
    /// Not connected, not to be redialed (learned servers, or after stop).
    Idle,
    /// Not connected; redial at the deadline kept in [`Servers`]' `redial`.
    Redial,
    Dialing,
    Connected,
}

#[derive(Debug)]
struct Server {
    /// Configured (redialed) rather than learned from a connected peer.
    configured: bool,
    conn: Conn,
    dial_failures: u32,
}

/// The servers, configured and learned, at most [`MAX_SERVERS`].
///
/// Invariant: a server is in `redial` exactly when its state is [`Conn::Redial`].
#[derive(Debug)]
pub(super) struct Servers {
    local: PeerId,
    servers: BTreeMap<PeerId, Server>,
    redial: Deadlines<PeerId>,
}

impl Servers {
    pub(super) fn new(local: PeerId) -> Self {
        Self {
            local,
            servers: BTreeMap::new(),
            redial: Deadlines::default(),
        }
    }

    /// Adds `peer` unless it is known already (then `Some(false)`); `None` when it cannot be
    /// added (the cap is reached, or it is ourselves). `redial_at` schedules the first dial.
    pub(super) fn insert(
        &mut self,
        peer: PeerId,
        configured: bool,
        redial_at: Option<Instant>,
    ) -> Option<bool> {
        if self.servers.contains_key(&peer) {
            return Some(false);
        }
        if self.servers.len() >= MAX_SERVERS || peer == self.local {
            return None;
        }
        let server = Server {
            configured,
            conn: Conn::Idle,
            dial_failures: 0,
        };
        self.servers.insert(peer, server);
        self.set_conn(
            peer,
            redial_at.map_or(Conn::Idle, |_| Conn::Redial),
            redial_at,
        );
        Some(true)
    }

    /// Forgets `peer`.
    pub(super) fn remove(&mut self, peer: &PeerId) {
        self.servers.remove(peer);
        self.redial.clear(peer);
    }

    fn set_conn(&mut self, peer: PeerId, conn: Conn, redial_at: Option<Instant>) {
        let Some(server) = self.servers.get_mut(&peer) else {
            return;
        };
        server.conn = conn;
        match (conn, redial_at) {
            (Conn::Redial, Some(at)) => self.redial.set(peer, at),
            _ => {
                self.redial.clear(&peer);
            }
        }
    }

    pub(super) fn contains(&self, peer: &PeerId) -> bool {
        self.servers.contains_key(peer)
    }

    pub(super) fn conn(&self, peer: &PeerId) -> Option<Conn> {
        self.servers.get(peer).map(|s| s.conn)
    }

    pub(super) fn is_connected(&self, peer: &PeerId) -> bool {
        self.conn(peer) == Some(Conn::Connected)
    }

    pub(super) fn is_configured(&self, peer: &PeerId) -> bool {
        self.servers.get(peer).is_some_and(|s| s.configured)
    }

    /// Every server, in order.
    pub(super) fn peers(&self) -> Vec<PeerId> {
        self.servers.keys().copied().collect()
    }

    /// The first connection to `peer` is up; returns whether that is news.
    pub(super) fn connected(&mut self, peer: PeerId) -> bool {
        match self.servers.get_mut(&peer) {
            Some(server) if server.conn != Conn::Connected => {
                server.dial_failures = 0;
                self.set_conn(peer, Conn::Connected, None);
                true
            }
            _ => false,
        }
    }

    /// The connection to `peer` is gone: a configured server is redialed at `redial_at`
    /// (`None`: never), a learned one waits idle.
    pub(super) fn disconnected(&mut self, peer: PeerId, redial_at: Option<Instant>) {
        self.set_idle_or_redial(peer, redial_at);
    }

    fn set_idle_or_redial(&mut self, peer: PeerId, redial_at: Option<Instant>) {
        let configured = self.is_configured(&peer);
        match redial_at {
            Some(at) if configured => self.set_conn(peer, Conn::Redial, Some(at)),
            _ => self.set_conn(peer, Conn::Idle, None),
        }
    }

    /// A dial of `peer` failed; returns whether it was being dialed. Configured servers are
    /// redialed after a backoff unless `redial` is false.
    pub(super) fn dial_failed(
        &mut self,
        now: Instant,
        peer: PeerId,
        backoff: &mut Backoff,
        redial: bool,
    ) -> bool {
        let Some(server) = self.servers.get_mut(&peer) else {
            return false;
        };
        if server.conn != Conn::Dialing {
            return false;
        }
        server.dial_failures += 1;
        let delay = backoff.after(server.dial_failures);
        self.set_idle_or_redial(peer, redial.then_some(now + delay));
        true
    }

    /// Cancels every pending redial (the client stops).
    pub(super) fn stop(&mut self) {
        for peer in self.peers() {
            if self.conn(&peer) == Some(Conn::Redial) {
                self.set_conn(peer, Conn::Idle, None);
            }
        }
    }

    /// A server whose redial is due, now marked as being dialed.
    pub(super) fn poll_redial(&mut self, now: Instant) -> Option<PeerId> {
        let peer = self.redial.pop_due(now)?;
        self.set_conn(peer, Conn::Dialing, None);
        Some(peer)
    }

    /// Dials an idle `peer` (a manual request waits for it); returns whether to dial now.
    pub(super) fn dial_idle(&mut self, peer: PeerId) -> bool {
        if self.conn(&peer) != Some(Conn::Idle) {
            return false;
        }
        self.set_conn(peer, Conn::Dialing, None);
        true
    }

    /// The next redial.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.redial.first()
    }
}
