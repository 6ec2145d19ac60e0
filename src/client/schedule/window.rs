//! The requests in flight at each server, at most [`MAX_IN_FLIGHT_PER_CONNECTION`], and the
//! sends that wait for a free place.
//!
//! A server serves a bounded number of streams per connection at once and refuses (resets) the
//! rest; a client that opens them all at once loses requests to that cap. So every request the
//! schedule sends passes through here: it goes out while the server has fewer than
//! [`MAX_IN_FLIGHT_PER_CONNECTION`] in flight, else it waits, oldest first, and goes out as soon
//! as one in flight ends.

use std::collections::{BTreeSet, HashMap, VecDeque};

use libp2p::PeerId;

use super::request::{Action, Request};
use crate::client::{RequestId, MAX_IN_FLIGHT_PER_CONNECTION};

/// Per server, the requests in flight and those waiting for a place.
///
/// Invariants: a server has at most [`MAX_IN_FLIGHT_PER_CONNECTION`] requests in flight; a
/// server has sends waiting only while it has that many in flight (or they are `released`, in
/// flight already, to be handed out by [`Window::poll`]). The waiting sends are bounded by what
/// puts them here: each automatic task has at most one request at a time, the manual queue
/// hands a request over only when [`Window::room`] says there is a place, and stopping sends
/// one UNREGISTER per namespace held.
#[derive(Debug, Default)]
pub(super) struct Window {
    in_flight: HashMap<PeerId, BTreeSet<RequestId>>,
    waiting: HashMap<PeerId, VecDeque<(RequestId, Request)>>,
    /// Sends taken from `waiting` into a free place, to hand out.
    released: VecDeque<Action>,
}

impl Window {
    /// Lets a send go out if its server has a free place (it is then in flight), else keeps it
    /// waiting. Any other action passes.
    pub(super) fn admit(&mut self, action: Action) -> Option<Action> {
        let Action::Send {
            server,
            request,
            body,
        } = action
        else {
            return Some(action);
        };
        let in_flight = self.in_flight.entry(server).or_default();
        if in_flight.len() < MAX_IN_FLIGHT_PER_CONNECTION {
            in_flight.insert(request);
            return Some(Action::Send {
                server,
                request,
                body,
            });
        }
        self.waiting
            .entry(server)
            .or_default()
            .push_back((request, body));
        None
    }

    /// Request `id` to `server` ended (answered, failed, or to be retried later): its place
    /// goes to the oldest send waiting, if any.
    pub(super) fn ended(&mut self, server: PeerId, id: RequestId) {
        let Some(in_flight) = self.in_flight.get_mut(&server) else {
            return;
        };
        if !in_flight.remove(&id) {
            return;
        }
        let next = self.waiting.get_mut(&server).and_then(VecDeque::pop_front);
        if let Some((request, body)) = next {
            in_flight.insert(request);
            self.released.push_back(Action::Send {
                server,
                request,
                body,
            });
        }
        if self.waiting.get(&server).is_some_and(VecDeque::is_empty) {
            self.waiting.remove(&server);
        }
        if in_flight.is_empty() {
            self.in_flight.remove(&server);
        }
    }

    /// A send that got a place since the last call.
    pub(super) fn poll(&mut self) -> Option<Action> {
        self.released.pop_front()
    }

    /// How many more requests `server` could take now without any waiting.
    pub(super) fn room(&self, server: &PeerId) -> usize {
        let busy = self.in_flight.get(server).map_or(0, BTreeSet::len)
            + self.waiting.get(server).map_or(0, VecDeque::len);
        MAX_IN_FLIGHT_PER_CONNECTION.saturating_sub(busy)
    }

    /// `server` is gone: forgets its requests in flight (the shell fails them) and returns the
    /// ids of those not sent yet, waiting or released, for the caller to fail.
    pub(super) fn disconnected(&mut self, server: &PeerId) -> Vec<RequestId> {
        self.in_flight.remove(server);
        let mut unsent: Vec<RequestId> = self
            .waiting
            .remove(server)
            .unwrap_or_default()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        self.released.retain(|action| match action {
            Action::Send {
                server: to,
                request,
                ..
            } if to == server => {
                unsent.push(*request);
                false
            }
            _ => true,
        });
        unsent
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::{test_support::*, Action, Request, Schedule};
    use crate::{
        client::{handler::Response, Config, Event, RequestError, MAX_IN_FLIGHT_PER_CONNECTION},
        Namespace,
    };

    /// A connected schedule registering and discovering in `n` namespaces.
    fn with_namespaces(n: usize, t0: Instant) -> Schedule {
        let mut config = Config::default()
            .with_ttl(1000)
            .with_interval(Duration::from_secs(30));
        for i in 0..n {
            config = config.with_namespace(Namespace::new(format!("ns{i}")).unwrap());
        }
        connected(config, t0)
    }

    #[test]
    fn given_64_namespaces_then_at_most_the_bound_is_in_flight_and_the_rest_follow() {
        let t0 = Instant::now();
        let mut s = with_namespaces(64, t0);
        let mut registered = 0;
        let mut polled = 0;
        let mut in_flight = sends(&drain(&mut s, t0));
        while !in_flight.is_empty() {
            assert!(
                in_flight.len() <= MAX_IN_FLIGHT_PER_CONNECTION,
                "{in_flight:?}"
            );
            // The oldest answers first; what it frees goes out at once.
            let (id, request) = in_flight.remove(0);
            let response = match request {
                Request::Register { .. } => {
                    registered += 1;
                    Response::Registered(1000)
                }
                Request::Discover { .. } => {
                    polled += 1;
                    page(vec![], b"c")
                }
                other => panic!("unexpected {other:?}"),
            };
            s.on_response(t0, id, Ok(response));
            let actions = drain(&mut s, t0);
            assert!(
                !events(actions.clone()).iter().any(|e| matches!(
                    e,
                    Event::RegisterFailed { .. } | Event::DiscoverFailed { .. }
                )),
                "{actions:?}"
            );
            in_flight.extend(sends(&actions));
        }
        assert_eq!((registered, polled), (64, 64));
    }

    #[test]
    fn given_a_full_window_when_the_server_disconnects_then_waiting_requests_fail_not_connected() {
        let t0 = Instant::now();
        let mut s = with_namespaces(8, t0);
        let sent = sends(&drain(&mut s, t0));
        assert_eq!(sent.len(), MAX_IN_FLIGHT_PER_CONNECTION);
        // The shell fails what is in flight on the closed connection, then reports the
        // disconnection; the ones still waiting fail then.
        for (id, _) in &sent {
            s.on_response(t0, *id, Err(RequestError::NotConnected));
        }
        s.disconnected(t0, peer(SERVER));
        let actions = drain(&mut s, t0);
        assert!(sends(&actions).is_empty(), "nothing goes out: {actions:?}");
        let failed = events(actions)
            .into_iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::RegisterFailed {
                        error: RequestError::NotConnected,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(failed, 8);
        // Back: all eight register again, the bound still holding.
        let t1 = t0 + Duration::from_secs(2);
        assert!(matches!(drain(&mut s, t1)[..], [Action::Dial { .. }, ..]));
        s.connected(t1, peer(SERVER));
        assert_eq!(
            sends(&drain(&mut s, t1)).len(),
            MAX_IN_FLIGHT_PER_CONNECTION
        );
    }
}
