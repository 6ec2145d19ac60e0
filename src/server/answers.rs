//! Answers out: what a completed store operation, or a refusal the shell decides itself, means
//! for the peer (its response) and for the application (the server's events). Pure: the shell
//! sends the response, emits the events, and tells the peer's connections whether to stay
//! alive.

use std::time::Duration;

use libp2p::PeerId;

use super::{rules::Refusal, store::Outcome, Event, Removal};
use crate::codec::{
    Cookie, DiscoverPage, ErrorResponse, Message, Namespace, RecordFormat, Registration,
};

/// What answering one request comes to.
#[derive(Debug, PartialEq)]
pub(crate) struct Answer {
    /// The response to the peer, if the request has one.
    pub(crate) response: Option<Message>,
    /// The events for the application.
    pub(crate) events: Vec<Event>,
    /// The format of a REGISTER that succeeded: what its peer reads from now on.
    pub(crate) registered: Option<RecordFormat>,
}

/// The answer to `outcome`, an operation of `peer` that took `duration` to answer.
pub(crate) fn completed(peer: PeerId, outcome: Outcome, duration: Duration) -> Answer {
    match outcome {
        Outcome::Registered {
            result: Ok(registration),
            ..
        } => registered(peer, registration, duration),
        Outcome::Registered {
            namespace,
            result: Err(error),
            limit,
        } => register_refused(peer, namespace, Refusal { error, limit }, duration),
        Outcome::Unregistered { namespace, removed } => {
            let removed = removed.map(|_| namespace);
            unregistered(peer, removed, Removal::Unregister)
        }
        Outcome::PeerRemoved { removed } => {
            let namespaces = removed.into_iter().map(|r| r.namespace);
            unregistered(peer, namespaces, Removal::Disconnect)
        }
        Outcome::Discovered {
            namespace,
            result: Ok((registrations, cookie)),
            ..
        } => discovered(peer, namespace, registrations, cookie, duration),
        Outcome::Discovered {
            namespace,
            result: Err(error),
            ..
        } => discover_refused(peer, namespace, error.into(), duration),
    }
}

fn registered(peer: PeerId, registration: Registration, duration: Duration) -> Answer {
    Answer {
        response: Some(Message::RegisterResponse(Ok(registration.ttl))),
        registered: Some(registration.record.format()),
        events: vec![Event::PeerRegistered {
            peer,
            registration,
            duration,
        }],
    }
}

/// The answer to a REGISTER of `peer` in `namespace` refused with `refusal`.
pub(crate) fn register_refused(
    peer: PeerId,
    namespace: Namespace,
    refusal: Refusal,
    duration: Duration,
) -> Answer {
    let Refusal { error, limit } = refusal;
    Answer {
        response: Some(Message::RegisterResponse(Err(error.clone()))),
        registered: None,
        events: vec![Event::PeerNotRegistered {
            peer,
            namespace,
            error,
            limit,
            duration,
        }],
    }
}

/// UNREGISTER has no response; each registration removed is an event.
fn unregistered(
    peer: PeerId,
    namespaces: impl IntoIterator<Item = Namespace>,
    cause: Removal,
) -> Answer {
    Answer {
        response: None,
        registered: None,
        events: namespaces
            .into_iter()
            .map(|namespace| Event::PeerUnregistered {
                peer,
                namespace,
                cause,
            })
            .collect(),
    }
}

fn discovered(
    peer: PeerId,
    namespace: Option<Namespace>,
    registrations: Vec<Registration>,
    cookie: Cookie,
    duration: Duration,
) -> Answer {
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
    Answer {
        response: Some(Message::DiscoverResponse(Ok(page))),
        registered: None,
        events: vec![event],
    }
}

/// The answer to a DISCOVER of `peer` in `namespace` refused with `refusal`.
pub(crate) fn discover_refused(
    peer: PeerId,
    namespace: Option<Namespace>,
    refusal: Refusal,
    duration: Duration,
) -> Answer {
    let Refusal { error, limit } = refusal;
    Answer {
        response: Some(Message::DiscoverResponse(
            Err::<DiscoverPage, ErrorResponse>(error.clone()),
        )),
        registered: None,
        events: vec![Event::DiscoverNotServed {
            peer,
            namespace,
            error,
            limit,
            duration,
        }],
    }
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::*;
    use crate::{codec::ErrorCode, server::Limit, SignedRecord};

    fn registration(key: &Keypair) -> Registration {
        Registration {
            namespace: Namespace::from_static("chat"),
            record: SignedRecord::new(key, Vec::new(), RecordFormat::Legacy).unwrap(),
            ttl: 7200,
        }
    }

    #[test]
    fn given_a_register_that_succeeded_then_the_peer_gets_its_ttl_and_reads_its_format() {
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let outcome = Outcome::Registered {
            namespace: Namespace::from_static("chat"),
            result: Ok(registration(&key)),
            limit: None,
        };
        let answer = completed(peer, outcome, Duration::from_millis(3));
        assert_eq!(answer.response, Some(Message::RegisterResponse(Ok(7200))));
        assert_eq!(answer.registered, Some(RecordFormat::Legacy));
        assert!(matches!(
            &answer.events[..],
            [Event::PeerRegistered { duration, .. }] if *duration == Duration::from_millis(3)
        ));
    }

    #[test]
    fn given_a_refusal_by_a_bound_then_the_response_and_the_event_carry_it() {
        let peer = PeerId::random();
        let error = ErrorResponse::new(ErrorCode::Unavailable, "full");
        let outcome = Outcome::Registered {
            namespace: Namespace::from_static("chat"),
            result: Err(error.clone()),
            limit: Some(Limit::Registrations),
        };
        let answer = completed(peer, outcome, Duration::ZERO);
        assert_eq!(answer.response, Some(Message::RegisterResponse(Err(error))));
        assert!(matches!(
            &answer.events[..],
            [Event::PeerNotRegistered {
                limit: Some(Limit::Registrations),
                ..
            }]
        ));
    }

    #[test]
    fn given_removals_then_there_is_no_response_and_one_event_per_registration() {
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let nothing = Outcome::Unregistered {
            namespace: Namespace::from_static("chat"),
            removed: None,
        };
        assert_eq!(completed(peer, nothing, Duration::ZERO).events, vec![]);
        let removed = Outcome::PeerRemoved {
            removed: vec![registration(&key), registration(&key)],
        };
        let answer = completed(peer, removed, Duration::ZERO);
        assert_eq!(answer.response, None);
        assert_eq!(answer.events.len(), 2);
        assert!(answer.events.iter().all(|e| matches!(
            e,
            Event::PeerUnregistered {
                cause: Removal::Disconnect,
                ..
            }
        )));
    }

    #[test]
    fn given_a_page_then_the_peer_gets_it_with_its_cookie_and_the_event_counts_it() {
        let key = Keypair::generate_ed25519();
        let cookie = Cookie::new(vec![0; 8]).unwrap();
        let outcome = Outcome::Discovered {
            namespace: None,
            result: Ok((vec![registration(&key)], cookie.clone())),
            up_to_date: true,
        };
        let answer = completed(PeerId::random(), outcome, Duration::ZERO);
        let Some(Message::DiscoverResponse(Ok(page))) = answer.response else {
            panic!("{answer:?}");
        };
        assert_eq!(page.cookie, Some(cookie));
        assert!(matches!(
            &answer.events[..],
            [Event::DiscoverServed { count: 1, .. }]
        ));
    }
}
