//! Requests: the one request type, the actions the schedule asks for, and the requests in
//! flight with their ids.

use std::collections::HashMap;

use libp2p::{Multiaddr, PeerId};

use crate::{
    client::{handler::Response, Event, RequestError, RequestId},
    Cookie, Namespace, RecordFormat, Ttl,
};

/// A request to a server: what the schedule sends, queues and keeps in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// REGISTER with a record in `format` (for a manual request still queued, the server's
    /// format is looked up again when it is sent).
    Register {
        namespace: Namespace,
        ttl: Option<Ttl>,
        format: RecordFormat,
    },
    /// UNREGISTER.
    Unregister { namespace: Namespace },
    /// DISCOVER.
    Discover {
        namespace: Option<Namespace>,
        cookie: Option<Cookie>,
        limit: Option<u64>,
    },
}

impl Request {
    /// A manual REGISTER; the format is the server's, looked up when it is sent.
    pub(crate) fn register(namespace: Namespace, ttl: Option<Ttl>) -> Self {
        let format = RecordFormat::Standard;
        Request::Register {
            namespace,
            ttl,
            format,
        }
    }

    /// The event reporting that this request, `request` to `server`, failed.
    pub(super) fn failed(self, server: PeerId, request: RequestId, error: RequestError) -> Event {
        match self {
            Request::Register { namespace, .. } => Event::RegisterFailed {
                server,
                namespace,
                error,
                request,
            },
            Request::Unregister { namespace } => Event::UnregisterFailed {
                server,
                namespace,
                error,
                request,
            },
            Request::Discover { namespace, .. } => Event::DiscoverFailed {
                server,
                namespace,
                error,
                request,
            },
        }
    }
}

/// What the schedule wants done.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// Dial the server.
    Dial { server: PeerId },
    /// Send a request on a connection to the server.
    Send {
        server: PeerId,
        request: RequestId,
        body: Request,
    },
    /// Report an event.
    Event(Event),
    /// Tell the swarm an address of a discovered peer.
    NewAddressOfPeer { peer: PeerId, address: Multiaddr },
    /// Keep the connections to a server alive while idle (`on`), or let them close.
    KeepAlive { server: PeerId, on: bool },
    /// Subscribe to pushes of `namespace` at the server, from `cookie` (docs/push.md).
    Subscribe {
        server: PeerId,
        namespace: Namespace,
        cookie: Option<Cookie>,
        limit: u64,
    },
}

/// Who asked for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// An automatic registration or discovery.
    Auto,
    /// The application.
    Manual,
    /// [`Schedule::stop`](super::Schedule::stop), unregistering.
    Stop,
}

#[derive(Debug)]
pub(super) struct InFlight {
    pub(super) server: PeerId,
    pub(super) origin: Origin,
    pub(super) request: Request,
    /// How many times it was sent again after a refusal for a passing reason.
    pub(super) retries: u32,
}

/// A request that ended.
#[derive(Debug, Clone, Copy)]
pub(super) struct Done {
    pub(super) id: RequestId,
    pub(super) server: PeerId,
    pub(super) origin: Origin,
    /// [`Event::Stopped`] waits for it.
    pub(super) stopping: bool,
}

impl Done {
    pub(super) fn registered(&self, namespace: Namespace, ttl: Ttl) -> Event {
        let (server, request) = (self.server, self.id);
        Event::Registered {
            server,
            namespace,
            ttl,
            request,
        }
    }

    pub(super) fn register_failed(&self, namespace: Namespace, error: RequestError) -> Event {
        let (server, request) = (self.server, self.id);
        Event::RegisterFailed {
            server,
            namespace,
            error,
            request,
        }
    }

    pub(super) fn unregistered(&self, namespace: Namespace) -> Event {
        let (server, request) = (self.server, self.id);
        Event::Unregistered {
            server,
            namespace,
            request,
        }
    }

    pub(super) fn unregister_failed(&self, namespace: Namespace, error: RequestError) -> Event {
        let (server, request) = (self.server, self.id);
        Event::UnregisterFailed {
            server,
            namespace,
            error,
            request,
        }
    }

    pub(super) fn discover_failed(
        &self,
        namespace: Option<Namespace>,
        error: RequestError,
    ) -> Event {
        let (server, request) = (self.server, self.id);
        Event::DiscoverFailed {
            server,
            namespace,
            error,
            request,
        }
    }
}

/// Request ids and the requests in flight.
///
/// Invariant: every id handed out is above every id handed out before, so an id is never
/// reused.
#[derive(Debug, Default)]
pub(super) struct Requests {
    last: u64,
    inflight: HashMap<RequestId, InFlight>,
}

impl Requests {
    /// A new request id.
    pub(super) fn next_id(&mut self) -> RequestId {
        self.last += 1;
        RequestId(self.last)
    }

    /// Request `id` goes out: the action that sends it.
    pub(super) fn send(
        &mut self,
        server: PeerId,
        id: RequestId,
        origin: Origin,
        body: Request,
    ) -> Action {
        let flight = InFlight {
            server,
            origin,
            request: body.clone(),
            retries: 0,
        };
        self.inflight.insert(id, flight);
        Action::Send {
            server,
            request: id,
            body,
        }
    }

    /// Request `id`, if it is in flight.
    pub(super) fn get(&self, id: RequestId) -> Option<&InFlight> {
        self.inflight.get(&id)
    }

    /// Request `id` is to be sent again after a refusal for a passing reason: how many times
    /// it was before, now one more.
    pub(super) fn count_retry(&mut self, id: RequestId) -> Option<u32> {
        let flight = self.inflight.get_mut(&id)?;
        let before = flight.retries;
        flight.retries += 1;
        Some(before)
    }

    /// What request `id` sends, if it is in flight.
    pub(super) fn body(&self, id: RequestId) -> Option<Request> {
        self.inflight.get(&id).map(|f| f.request.clone())
    }

    /// Request `id` ended; what it was, if it was in flight.
    pub(super) fn end(&mut self, id: RequestId) -> Option<InFlight> {
        self.inflight.remove(&id)
    }

    /// The REGISTERs in flight.
    pub(super) fn registering(&self) -> Vec<RequestId> {
        self.inflight
            .iter()
            .filter(|(_, f)| matches!(f.request, Request::Register { .. }))
            .map(|(id, _)| *id)
            .collect()
    }
}

/// The error for a response of the wrong type.
pub(super) fn unexpected(response: Response, to: &str) -> RequestError {
    RequestError::UnexpectedResponse(format!("{response:?} to a {to}"))
}
