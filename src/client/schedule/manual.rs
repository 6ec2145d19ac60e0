//! Manual requests ([`super::Schedule::request`]) waiting for their server's connection, or for
//! a place among the requests in flight there ([`super::window`]).

use std::collections::{BTreeMap, VecDeque};

use libp2p::PeerId;

use super::{
    register::RegisterTasks,
    request::{Action, Origin, Request, Requests},
    servers::{Conn, Servers},
};
use crate::client::{RequestError, RequestId, MAX_QUEUED_PER_SERVER};

/// Per server, the manual requests not yet sent, oldest first.
///
/// Invariant: no empty queue is kept, so the keys are exactly the servers with requests
/// waiting.
#[derive(Debug, Default)]
pub(super) struct ManualQueues {
    queues: BTreeMap<PeerId, VecDeque<(RequestId, Request)>>,
}

impl ManualQueues {
    /// Queues a request for `server`; gives it back when [`MAX_QUEUED_PER_SERVER`] wait already.
    pub(super) fn push(
        &mut self,
        server: PeerId,
        id: RequestId,
        request: Request,
    ) -> Result<(), Request> {
        let queue = self.queues.entry(server).or_default();
        if queue.len() >= MAX_QUEUED_PER_SERVER {
            return Err(request);
        }
        queue.push_back((id, request));
        Ok(())
    }

    /// Puts a request back at the head of `server`'s queue (a retry in another format). It was
    /// counted when first queued, so the bound is not checked again.
    pub(super) fn push_front(&mut self, server: PeerId, id: RequestId, request: Request) {
        self.queues
            .entry(server)
            .or_default()
            .push_front((id, request));
    }

    /// The oldest request waiting for `server`.
    pub(super) fn pop(&mut self, server: &PeerId) -> Option<(RequestId, Request)> {
        let queue = self.queues.get_mut(server)?;
        let next = queue.pop_front();
        if queue.is_empty() {
            self.queues.remove(server);
        }
        next
    }

    /// Every request waiting for `server`, removed.
    pub(super) fn drain(&mut self, server: &PeerId) -> VecDeque<(RequestId, Request)> {
        self.queues.remove(server).unwrap_or_default()
    }

    /// Whether a request waits for `server`.
    pub(super) fn is_waiting(&self, server: &PeerId) -> bool {
        self.queues.contains_key(server)
    }

    /// The servers with requests waiting.
    pub(super) fn servers(&self) -> Vec<PeerId> {
        self.queues.keys().copied().collect()
    }

    /// Sends a manual request to a connected server with a free place in the window (one of
    /// `room`), or dials an idle server that has some waiting.
    pub(super) fn poll(
        &mut self,
        room: &[PeerId],
        servers: &mut Servers,
        regs: &RegisterTasks,
        requests: &mut Requests,
    ) -> Option<Action> {
        for server in self.servers() {
            match servers.conn(&server) {
                Some(Conn::Connected) if room.contains(&server) => {
                    let (id, request) = self.pop(&server)?;
                    return Some(send(server, id, request, regs, requests));
                }
                Some(Conn::Idle) if servers.dial_idle(server) => {
                    return Some(Action::Dial { server });
                }
                _ => {}
            }
        }
        None
    }
}

/// Sends a manual request; a REGISTER goes in the server's current format, or fails without
/// an address to register.
fn send(
    server: PeerId,
    id: RequestId,
    request: Request,
    regs: &RegisterTasks,
    requests: &mut Requests,
) -> Action {
    let request = match request {
        Request::Register { .. } if !regs.has_addresses() => {
            return Action::Event(request.failed(server, id, RequestError::NoAddresses));
        }
        Request::Register { namespace, ttl, .. } => Request::Register {
            namespace,
            ttl,
            format: regs.format(&server),
        },
        other => other,
    };
    requests.send(server, id, Origin::Manual, request)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::{test_support::*, Action, Request, Schedule};
    use crate::client::{
        Config, Event, RequestError, RequestId, MAX_IN_FLIGHT_PER_CONNECTION, MAX_QUEUED_PER_SERVER,
    };

    #[test]
    fn given_more_manual_requests_than_the_queue_holds_then_the_excess_fails_at_once() {
        let t0 = Instant::now();
        let mut s = Schedule::new(peer(1), Config::default().with_seed(1), t0);
        let ids: Vec<RequestId> = (0..MAX_QUEUED_PER_SERVER + 3)
            .map(|_| {
                s.request(
                    peer(SERVER),
                    Request::Discover {
                        namespace: Some(ns()),
                        cookie: None,
                        limit: None,
                    },
                )
            })
            .collect();
        let actions = drain(&mut s, t0);
        let failed: Vec<RequestId> = events(actions.clone())
            .into_iter()
            .filter_map(|e| match e {
                Event::DiscoverFailed {
                    request,
                    error: RequestError::TooManyPending,
                    ..
                } => Some(request),
                _ => None,
            })
            .collect();
        assert_eq!(failed, ids[MAX_QUEUED_PER_SERVER..].to_vec());
        assert!(actions.iter().any(|a| matches!(a, Action::Dial { .. })));
        // The queued ones go out once connected (DISCOVERs after identify: this client does
        // not register), a window's worth at a time, each answer letting the next one go.
        s.connected(t0, peer(SERVER));
        s.remote_protocols_known(t0, peer(SERVER));
        let mut in_flight = sends(&drain(&mut s, t0));
        let mut answered = Vec::new();
        while let Some((id, _)) = in_flight.first().cloned() {
            assert!(in_flight.len() <= MAX_IN_FLIGHT_PER_CONNECTION);
            in_flight.remove(0);
            s.on_response(t0, id, Ok(page(vec![], b"c")));
            in_flight.extend(sends(&drain(&mut s, t0)));
            answered.push(id);
        }
        assert_eq!(answered, ids[..MAX_QUEUED_PER_SERVER].to_vec(), "in order");
    }

    #[test]
    fn given_a_connected_server_then_manual_requests_wait_while_its_window_is_full() {
        let t0 = Instant::now();
        let mut s = connected(Config::default().with_seed(1), t0);
        let discover = || Request::Discover {
            namespace: Some(ns()),
            cookie: None,
            limit: None,
        };
        let ids: Vec<RequestId> = (0..MAX_IN_FLIGHT_PER_CONNECTION + 2)
            .map(|_| s.request(peer(SERVER), discover()))
            .collect();
        let sent = sends(&drain(&mut s, t0));
        assert_eq!(
            sent.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            ids[..MAX_IN_FLIGHT_PER_CONNECTION].to_vec()
        );
        // A refusal for a passing reason keeps the place taken until the retry went out.
        s.on_response(t0, ids[0], Err(RequestError::NoResponse));
        assert!(
            sends(&drain(&mut s, t0)).is_empty(),
            "the retry comes first"
        );
        let retry_at = s.poll_timeout().unwrap();
        let next = sends(&drain(&mut s, retry_at));
        assert_eq!(next.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [ids[0]]);
        s.on_response(retry_at, ids[1], Ok(page(vec![], b"c")));
        let next = sends(&drain(&mut s, retry_at));
        assert_eq!(
            next.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            [ids[MAX_IN_FLIGHT_PER_CONNECTION]]
        );
    }
}
