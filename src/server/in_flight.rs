//! The requests the server has read and not yet answered: the DISCOVERs held until their
//! asker's format is known ([`HeldDiscover`]), and the REGISTERs and DISCOVERs submitted to the
//! store ([`InFlight`]), at most [`MAX_IN_FLIGHT`] of them.

use std::{collections::HashMap, time::Instant};

use futures::channel::oneshot;

use super::{
    gate::{Gate, Pass},
    store::{OperationId, MAX_IN_FLIGHT},
    subscriptions::Key,
};
use crate::codec::{Cookie, Message, Namespace};

/// A DISCOVER read and not yet submitted (its asker's format is not known yet).
#[derive(Debug)]
pub(crate) struct HeldDiscover {
    pub(crate) namespace: Option<Namespace>,
    pub(crate) cookie: Option<Cookie>,
    pub(crate) limit: Option<u64>,
    pub(crate) responder: Option<oneshot::Sender<Message>>,
    /// When the handler read the request, to report how long answering took.
    pub(crate) received: Instant,
}

/// What waits for its asker's format to be known: a DISCOVER, or a push subscription's replay.
#[derive(Debug)]
pub(crate) enum Held {
    Discover(HeldDiscover),
    Subscription(Key),
}

/// Where the answer to a submitted request goes.
#[derive(Debug)]
pub(crate) struct Waiting {
    pub(crate) responder: oneshot::Sender<Message>,
    /// When the handler read the request.
    pub(crate) received: Instant,
    /// Pushes wait while the request waits for the store (gate.rs).
    _pass: Pass,
}

/// The operations submitted to the store: each gets a new [`OperationId`]; those with an
/// answer to send wait here until the store completes them. Invariant: at most
/// [`MAX_IN_FLIGHT`] wait, when the shell checks [`InFlight::is_full`] before each REGISTER
/// and DISCOVER (UNREGISTERs and disconnect removals have no answer and never wait here).
/// Each one waiting holds a [`Pass`] of the server's gate: pushes wait for the store's answers.
#[derive(Debug)]
pub(crate) struct InFlight {
    waiting: HashMap<OperationId, Waiting>,
    next_id: u64,
    gate: Gate,
}

impl InFlight {
    pub(crate) fn new(gate: Gate) -> Self {
        Self {
            waiting: HashMap::new(),
            next_id: 0,
            gate,
        }
    }

    /// Requests waiting for the store.
    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether [`MAX_IN_FLIGHT`] requests wait: a new REGISTER or DISCOVER is refused.
    pub(crate) fn is_full(&self) -> bool {
        self.waiting.len() >= MAX_IN_FLIGHT
    }

    /// A new operation, whose answer goes to `responder` (none: nobody waits for it).
    pub(crate) fn start(
        &mut self,
        responder: Option<oneshot::Sender<Message>>,
        received: Instant,
    ) -> OperationId {
        let id = OperationId(self.next_id);
        self.next_id += 1;
        if let Some(responder) = responder {
            self.waiting.insert(
                id,
                Waiting {
                    responder,
                    received,
                    _pass: self.gate.pass(),
                },
            );
        }
        id
    }

    /// Operation `id` completed: where its answer goes, if anywhere.
    pub(crate) fn finish(&mut self, id: OperationId) -> Option<Waiting> {
        self.waiting.remove(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_requests_with_and_without_answers_then_only_those_with_one_wait() {
        let mut in_flight = InFlight::new(Gate::new(std::time::Duration::ZERO));
        let now = Instant::now();
        let (tx, mut rx) = oneshot::channel();
        let answered = in_flight.start(Some(tx), now);
        let silent = in_flight.start(None, now);
        assert_ne!(answered, silent, "every operation gets its own id");
        assert_eq!(in_flight.len(), 1);

        assert!(in_flight.finish(silent).is_none());
        let waiting = in_flight.finish(answered).expect("it waited");
        assert_eq!(waiting.received, now);
        waiting
            .responder
            .send(Message::RegisterResponse(Ok(7200)))
            .unwrap();
        assert!(rx.try_recv().unwrap().is_some());
        assert_eq!(in_flight.len(), 0);
        assert!(in_flight.finish(answered).is_none(), "answered once");
    }

    #[test]
    fn given_a_request_waiting_for_the_store_then_pushes_wait_until_it_is_answered() {
        use futures::FutureExt;
        let gate = Gate::new(std::time::Duration::ZERO);
        let mut in_flight = InFlight::new(gate.clone());
        let (tx, _rx) = oneshot::channel();
        let id = in_flight.start(Some(tx), Instant::now());
        assert!(gate.turn().now_or_never().is_none(), "shut while it waits");
        drop(in_flight.finish(id));
        assert!(gate.turn().now_or_never().is_some(), "open once answered");
    }

    #[test]
    fn given_the_bound_of_waiting_requests_then_it_is_full_until_one_completes() {
        let mut in_flight = InFlight::new(Gate::new(std::time::Duration::ZERO));
        let now = Instant::now();
        let mut receivers = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..MAX_IN_FLIGHT {
            let (tx, rx) = oneshot::channel();
            receivers.push(rx);
            ids.push(in_flight.start(Some(tx), now));
        }
        assert!(in_flight.is_full());
        in_flight.finish(ids[0]);
        assert!(!in_flight.is_full());
    }
}
