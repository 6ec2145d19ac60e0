//! Answers out: turning what the store completed (or expired) into responses, events, and
//! keep-alive notices to the peer's connections.

use std::time::Instant;

use libp2p::{
    swarm::{NotifyHandler, ToSwarm},
    PeerId,
};

use super::Behaviour;
use crate::{
    codec::{DiscoverPage, Message},
    server::{
        handler::FromBehaviour,
        store::{OperationId, Outcome, StoreEvent},
        Event, Removal,
    },
};

impl Behaviour {
    /// Tells the connections of `peer` whether to stay alive, when the answer changed.
    pub(super) fn update_keep_alive(&mut self, peer: PeerId, peer_registrations: usize) {
        if !self.config.remove_on_disconnect {
            return;
        }
        let keep = peer_registrations > 0;
        for connection in self.connections.set_holds(peer, keep) {
            self.events.push_back(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::One(connection),
                event: FromBehaviour::KeepAlive(keep),
            });
        }
    }

    /// Answers a completed operation and reports it.
    pub(super) fn on_completed(
        &mut self,
        id: OperationId,
        peer: PeerId,
        outcome: Outcome,
        count: usize,
    ) {
        let waiting = self.waiting.remove(&id);
        if waiting.is_some() {
            self.in_flight -= 1;
        }
        // Read after the store answered, so the duration includes its work (a commit, say).
        let now = Instant::now();
        let duration = waiting.as_ref().map_or_else(Default::default, |w| {
            now.saturating_duration_since(w.received)
        });
        let responder = waiting.map(|w| w.responder);
        let (response, events) = match outcome {
            Outcome::Registered {
                namespace,
                result,
                limit,
            } => match result {
                Ok(registration) => {
                    let released = self.formats.registered(peer, registration.record.format());
                    self.serve_released(peer, released);
                    (
                        Some(Message::RegisterResponse(Ok(registration.ttl))),
                        vec![Event::PeerRegistered {
                            peer,
                            registration,
                            duration,
                        }],
                    )
                }
                Err(error) => (
                    Some(Message::RegisterResponse(Err(error.clone()))),
                    vec![Event::PeerNotRegistered {
                        peer,
                        namespace,
                        error,
                        limit,
                        duration,
                    }],
                ),
            },
            Outcome::Unregistered { namespace, removed } => (
                None,
                removed
                    .map(|_| Event::PeerUnregistered {
                        peer,
                        namespace,
                        cause: Removal::Unregister,
                    })
                    .into_iter()
                    .collect(),
            ),
            Outcome::PeerRemoved { removed } => (
                None,
                removed
                    .into_iter()
                    .map(|registration| Event::PeerUnregistered {
                        peer,
                        namespace: registration.namespace,
                        cause: Removal::Disconnect,
                    })
                    .collect(),
            ),
            Outcome::Discovered { namespace, result } => match result {
                Ok((registrations, cookie)) => {
                    let event = Event::DiscoverServed {
                        peer,
                        namespace,
                        count: registrations.len(),
                        duration,
                    };
                    let page = DiscoverPage {
                        registrations,
                        cookie: Some(cookie),
                        skipped: 0,
                    };
                    (Some(Message::DiscoverResponse(Ok(page))), vec![event])
                }
                Err(error) => (
                    Some(Message::DiscoverResponse(Err(error.clone()))),
                    vec![Event::DiscoverNotServed {
                        peer,
                        namespace,
                        error,
                        limit: None,
                        duration,
                    }],
                ),
            },
        };
        if let Some(response) = response {
            self.answer(responder, response);
        }
        self.events
            .extend(events.into_iter().map(ToSwarm::GenerateEvent));
        self.update_keep_alive(peer, count);
    }

    pub(super) fn on_store_event(&mut self, event: StoreEvent) {
        match event {
            StoreEvent::Completed {
                id,
                peer,
                outcome,
                peer_registrations,
            } => self.on_completed(id, peer, outcome, peer_registrations),
            StoreEvent::Expired {
                registration,
                peer_registrations,
            } => {
                let peer = registration.record.peer_id();
                self.update_keep_alive(peer, peer_registrations);
                self.events
                    .push_back(ToSwarm::GenerateEvent(Event::RegistrationExpired(
                        registration,
                    )));
            }
            StoreEvent::Committed {
                operations,
                latency,
            } => self
                .events
                .push_back(ToSwarm::GenerateEvent(Event::StoreCommitted {
                    operations,
                    latency,
                })),
        }
    }
}
