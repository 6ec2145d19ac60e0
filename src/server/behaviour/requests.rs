//! Requests in: the refusals the shell decides itself (rate, requests in flight, held
//! DISCOVERs over their bounds), holding a DISCOVER until its asker's format is known, and
//! submitting the rest to the store.

use std::time::Instant;

use futures::channel::oneshot;
use libp2p::{
    swarm::{ConnectionId, NotifyHandler, ToSwarm},
    PeerId,
};

use super::{Behaviour, Waiting};
use crate::{
    codec::{Cookie, ErrorCode, ErrorResponse, Message, Namespace, Request},
    server::{
        formats::Decision,
        handler::{FromBehaviour, InboundRequest},
        store::{Operation, OperationId, MAX_IN_FLIGHT},
        Event, Limit, ServedFormats,
    },
};

/// A DISCOVER waiting for its asker's format to be known.
#[derive(Debug)]
pub(super) struct HeldDiscover {
    pub(super) namespace: Option<Namespace>,
    pub(super) cookie: Option<Cookie>,
    pub(super) limit: Option<u64>,
    pub(super) responder: Option<oneshot::Sender<Message>>,
    /// When the handler read the request, to report how long answering took.
    pub(super) received: Instant,
}

impl Behaviour {
    pub(super) fn rate_limited(&self) -> ErrorResponse {
        ErrorResponse::new(
            ErrorCode::Unavailable,
            format!(
                "too many requests; this server allows {} per second per peer (bursts of {})",
                self.config.requests_per_second, self.config.request_burst
            ),
        )
    }

    pub(super) fn store_busy() -> ErrorResponse {
        ErrorResponse::new(
            ErrorCode::Unavailable,
            format!(
                "server busy: {MAX_IN_FLIGHT} requests are waiting for its store; try again \
                 shortly"
            ),
        )
    }

    pub(super) fn submit(
        &mut self,
        operation: Operation,
        responder: Option<oneshot::Sender<Message>>,
        received: Instant,
    ) {
        let id = OperationId(self.next_id);
        self.next_id += 1;
        if let Some(responder) = responder {
            self.in_flight += 1;
            self.waiting.insert(
                id,
                Waiting {
                    responder,
                    received,
                },
            );
        }
        self.store.submit(id, operation, Instant::now());
    }

    pub(super) fn handle_request(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        request: InboundRequest,
    ) {
        let now = Instant::now();
        let InboundRequest {
            request,
            responder,
            received,
        } = request;
        // Refusals the shell decides itself: the rate, then the store's capacity.
        let refusal = match &request {
            Request::Unregister(_) => None,
            _ if !self.rate.try_acquire(peer, now) => Some((self.rate_limited(), Limit::Rate)),
            _ if self.in_flight >= MAX_IN_FLIGHT => Some((Self::store_busy(), Limit::InFlight)),
            _ => None,
        };
        let operation = match request {
            Request::Register(registration) => {
                if let Some((error, limit)) = refusal {
                    let namespace = registration.namespace;
                    self.answer(responder, Message::RegisterResponse(Err(error.clone())));
                    self.events
                        .push_back(ToSwarm::GenerateEvent(Event::PeerNotRegistered {
                            peer,
                            namespace,
                            error,
                            limit: Some(limit),
                            duration: Instant::now().saturating_duration_since(received),
                        }));
                    return;
                }
                Operation::Register { peer, registration }
            }
            Request::Unregister(namespace) => Operation::Unregister { peer, namespace },
            Request::Discover {
                namespace,
                cookie,
                limit,
            } => {
                let held = HeldDiscover {
                    namespace,
                    cookie,
                    limit,
                    responder,
                    received,
                };
                if let Some((error, limit)) = refusal {
                    self.refuse_discover(peer, held, error, limit);
                    return;
                }
                let registered = self.registered_format(&peer);
                match self.formats.discover(peer, registered, held, now) {
                    Decision::Serve(served, held) => self.submit_discover(peer, served, held),
                    Decision::Held { ask } => {
                        tracing::debug!(%peer, ask, "DISCOVER held until the peer's format is known");
                        if ask {
                            self.events.push_back(ToSwarm::NotifyHandler {
                                peer_id: peer,
                                handler: NotifyHandler::One(connection),
                                event: FromBehaviour::AskIdentify,
                            });
                        }
                    }
                    Decision::Full(held) => {
                        let error = ErrorResponse::new(
                            ErrorCode::Unavailable,
                            format!(
                                "too many DISCOVERs wait for their askers' identify ({} of this \
                                 peer, {} in all); try again in a moment",
                                crate::server::MAX_HELD_PER_PEER,
                                crate::server::MAX_HELD
                            ),
                        );
                        self.refuse_discover(peer, held, error, Limit::HeldDiscovers);
                    }
                }
                return;
            }
        };
        self.submit(operation, responder, received);
    }

    /// Submits a DISCOVER for a peer served `served`, unless the store has too much in flight.
    pub(super) fn submit_discover(
        &mut self,
        peer: PeerId,
        served: ServedFormats,
        held: HeldDiscover,
    ) {
        if self.in_flight >= MAX_IN_FLIGHT {
            self.refuse_discover(peer, held, Self::store_busy(), Limit::InFlight);
            return;
        }
        let HeldDiscover {
            namespace,
            cookie,
            limit,
            responder,
            received,
        } = held;
        let operation = Operation::Discover {
            peer,
            served,
            namespace,
            cookie,
            limit,
        };
        self.submit(operation, responder, received);
    }

    pub(super) fn refuse_discover(
        &mut self,
        peer: PeerId,
        held: HeldDiscover,
        error: ErrorResponse,
        limit: Limit,
    ) {
        self.answer(
            held.responder,
            Message::DiscoverResponse(Err(error.clone())),
        );
        self.events
            .push_back(ToSwarm::GenerateEvent(Event::DiscoverNotServed {
                peer,
                namespace: held.namespace,
                error,
                limit: Some(limit),
                duration: Instant::now().saturating_duration_since(held.received),
            }));
    }

    /// Serves DISCOVERs of `peer` that no longer wait, by what is known now.
    pub(super) fn serve_released(&mut self, peer: PeerId, released: Vec<HeldDiscover>) {
        if released.is_empty() {
            return;
        }
        let served = self.served_formats(&peer);
        for held in released {
            self.submit_discover(peer, served, held);
        }
    }

    pub(super) fn answer(&self, responder: Option<oneshot::Sender<Message>>, response: Message) {
        if let Some(responder) = responder {
            // The stream may be gone already; then nobody waits for the answer.
            let _ = responder.send(response);
        }
    }
}
