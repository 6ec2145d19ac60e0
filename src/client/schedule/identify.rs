//! Holding DISCOVERs until a new server connection has run identify.
//!
//! A server may pick the records it sends by what identify tells it (ours asks itself when it
//! must), so a client that does not register (a registering client's REGISTER tells the server
//! its format, and discovery waits for it already) holds DISCOVERs to a newly connected server
//! until the connection has told it the remote's protocols, or [`IDENTIFY_WAIT`] passes (a
//! server without identify).

use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::{
    deadlines::Deadlines,
    request::{Action, Request},
};
use crate::client::RequestId;

/// How long a client that does not register holds DISCOVERs on a new server connection while
/// waiting for identify; servers without identify get them then.
pub(super) const IDENTIFY_WAIT: Duration = Duration::from_secs(2);

/// The servers whose identify we wait for, and the DISCOVERs held for them.
///
/// Invariant: every held DISCOVER is to a server in `until`. Bounded by the servers and by the
/// requests in flight (a held DISCOVER is in flight as far as the schedule is concerned).
#[derive(Debug)]
pub(super) struct IdentifyWait {
    /// Whether to wait at all (the client does not register).
    enabled: bool,
    until: Deadlines<PeerId>,
    held: Vec<(PeerId, RequestId, Request)>,
}

impl IdentifyWait {
    pub(super) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            until: Deadlines::default(),
            held: Vec::new(),
        }
    }

    /// The first connection to server `peer` is up: wait for its identify.
    pub(super) fn connected(&mut self, now: Instant, peer: PeerId) {
        if self.enabled {
            self.until.set(peer, now + IDENTIFY_WAIT);
        }
    }

    /// `peer`'s protocols are known, or it is gone: stop waiting; returns the DISCOVERs held
    /// for it.
    pub(super) fn done(&mut self, peer: &PeerId) -> Vec<Action> {
        if self.until.clear(peer).is_none() {
            return Vec::new();
        }
        let (released, held) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(server, _, _)| server == peer);
        self.held = held;
        let released: Vec<(PeerId, RequestId, Request)> = released;
        released
            .into_iter()
            .map(|(server, request, body)| Action::Send {
                server,
                request,
                body,
            })
            .collect()
    }

    /// Holds `action` if it is a DISCOVER to a server we wait for; otherwise gives it back.
    pub(super) fn hold(&mut self, action: Action) -> Option<Action> {
        match action {
            Action::Send {
                server,
                request,
                body: body @ Request::Discover { .. },
            } if self.until.get(&server).is_some() => {
                self.held.push((server, request, body));
                None
            }
            other => Some(other),
        }
    }

    /// How many DISCOVERs are held for `server`.
    pub(super) fn held(&self, server: &PeerId) -> usize {
        self.held.iter().filter(|(s, _, _)| s == server).count()
    }

    /// A server whose wait ended by `now` (end it with [`IdentifyWait::done`]).
    pub(super) fn poll_expired(&self, now: Instant) -> Option<PeerId> {
        self.until.due(now).copied()
    }

    /// When the first wait with something held ends.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        if self.held.is_empty() {
            None
        } else {
            self.until.first()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::{test_support::*, Request, Schedule};
    use super::IDENTIFY_WAIT;
    use crate::client::{handler::Response, Config, Event, RequestError};

    /// A discover-only schedule whose server just connected; identify has not run yet.
    fn before_identify(t0: Instant) -> Schedule {
        let config = discover_only()
            .with_server(peer(SERVER), vec![])
            .with_seed(7);
        let mut s = Schedule::new(peer(1), config, t0);
        drain(&mut s, t0);
        s.connected(t0, peer(SERVER));
        s
    }

    #[test]
    fn given_a_discover_only_client_when_a_server_connects_then_discover_waits_for_its_identify() {
        let t0 = Instant::now();
        let mut s = before_identify(t0);
        assert!(sends(&drain(&mut s, t0)).is_empty(), "held until identify");
        assert_eq!(s.poll_timeout(), Some(t0 + IDENTIFY_WAIT));
        let t1 = t0 + Duration::from_millis(300);
        s.remote_protocols_known(t1, peer(SERVER));
        let sent = sends(&drain(&mut s, t1));
        assert!(
            matches!(&sent[..], [(_, Request::Discover { cookie: None, .. })]),
            "{sent:?}"
        );
    }

    #[test]
    fn given_a_server_without_identify_when_the_wait_ends_then_held_discovers_go_out() {
        let t0 = Instant::now();
        let mut s = before_identify(t0);
        drain(&mut s, t0);
        let early = t0 + IDENTIFY_WAIT - Duration::from_millis(1);
        assert!(sends(&drain(&mut s, early)).is_empty());
        assert_eq!(sends(&drain(&mut s, t0 + IDENTIFY_WAIT)).len(), 1);
        assert_eq!(s.poll_timeout(), None, "the DISCOVER is in flight");
    }

    #[test]
    fn given_a_held_manual_discover_when_the_server_disconnects_then_it_fails_not_connected() {
        let t0 = Instant::now();
        let mut s = before_identify(t0);
        let id = s.request(
            peer(SERVER),
            Request::Discover {
                namespace: Some(ns()),
                cookie: None,
                limit: None,
            },
        );
        assert!(sends(&drain(&mut s, t0)).is_empty());
        s.disconnected(t0, peer(SERVER));
        let actions = drain(&mut s, t0);
        assert!(sends(&actions).is_empty());
        let evs = events(actions);
        assert!(
            evs.iter().any(|e| matches!(e, Event::DiscoverFailed {
                request,
                error: RequestError::NotConnected,
                ..
            } if *request == id)),
            "{evs:?}"
        );
        // Identify arriving late (for the next connection) changes nothing.
        s.remote_protocols_known(t0, peer(SERVER));
        assert!(sends(&drain(&mut s, t0)).is_empty());
    }

    #[test]
    fn given_a_registering_client_then_discover_does_not_wait_for_identify() {
        let t0 = Instant::now();
        let config = Config::default()
            .with_namespace(ns())
            .with_ttl(1000)
            .with_server(peer(SERVER), vec![])
            .with_seed(7);
        let mut s = Schedule::new(peer(1), config, t0);
        drain(&mut s, t0);
        s.addresses_changed(t0, true);
        s.connected(t0, peer(SERVER));
        let first = sends(&drain(&mut s, t0));
        assert!(matches!(&first[..], [(_, Request::Register { .. })]));
        s.on_response(t0, first[0].0, Ok(Response::Registered(1000)));
        let next = sends(&drain(&mut s, t0));
        assert!(
            matches!(&next[..], [(_, Request::Discover { .. })]),
            "{next:?}"
        );
    }
}
