//! The schedule with push (docs/push.md): when a discovery subscribes, what a push does, and
//! how it falls back to DISCOVER when a subscription ends.

use std::time::{Duration, Instant};

use super::{test_support::*, Action, Request, Schedule};
use crate::{
    client::{handler::Response, Event},
    codec::{DiscoverPage, ErrorCode, ErrorResponse, Push},
    Cookie,
};

fn subscriptions(actions: &[Action]) -> Vec<Option<Vec<u8>>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Subscribe { cookie, .. } => {
                Some(cookie.as_ref().map(|c| c.as_bytes().to_vec()))
            }
            _ => None,
        })
        .collect()
}

fn pushed(cookie: &[u8], seed: u8) -> Push {
    Push::Page(Ok(DiscoverPage {
        registrations: vec![registration(seed, 1, 100)],
        cookie: Some(Cookie::new(cookie.to_vec()).unwrap()),
        skipped: 0,
    }))
}

/// A discover-only schedule whose first page (cookie `c1`) came back, at a server that pushes.
fn caught_up(t0: Instant) -> (Schedule, Vec<Action>) {
    let mut s = connected(discover_only(), t0);
    s.push_supported(t0, peer(SERVER));
    let sent = sends(&drain(&mut s, t0));
    let [(id, Request::Discover { .. })] = &sent[..] else {
        panic!("{sent:?}");
    };
    s.on_response(t0, *id, Ok(page(vec![registration(2, 1, 100)], b"c1")));
    let actions = drain(&mut s, t0);
    (s, actions)
}

#[test]
fn given_a_server_that_pushes_when_a_discover_caught_up_then_it_subscribes_from_that_cookie() {
    let t0 = Instant::now();
    let (_, actions) = caught_up(t0);
    assert_eq!(subscriptions(&actions), vec![Some(b"c1".to_vec())]);
}

#[test]
fn given_a_server_without_push_then_nothing_subscribes() {
    let t0 = Instant::now();
    let mut s = connected(discover_only(), t0);
    let sent = sends(&drain(&mut s, t0));
    s.on_response(t0, sent[0].0, Ok(page(vec![], b"c1")));
    assert!(subscriptions(&drain(&mut s, t0)).is_empty());
}

#[test]
fn given_a_pushed_page_then_its_peer_is_discovered_once_and_its_cookie_is_the_next_discovers() {
    let t0 = Instant::now();
    let (mut s, _) = caught_up(t0);
    s.on_pushed(t0, peer(SERVER), ns(), pushed(b"c2", 3));
    let evs = events(drain(&mut s, t0));
    assert!(matches!(&evs[..], [Event::Discovered { peer: p, .. }] if *p == peer(3)));
    // The same registration again (a refresh, say): nothing new.
    s.on_pushed(t0, peer(SERVER), ns(), pushed(b"c3", 3));
    assert!(events(drain(&mut s, t0)).is_empty());

    // The safety-net poll continues from the pushed cookie.
    let t1 = t0 + Duration::from_secs(3600);
    let sent = sends(&drain(&mut s, t1));
    let [(
        _,
        Request::Discover {
            cookie: Some(c), ..
        },
    )] = &sent[..]
    else {
        panic!("{sent:?}");
    };
    assert_eq!(c.as_bytes(), b"c3");
}

#[test]
fn given_a_pushed_removal_then_the_peer_expires_at_once() {
    let t0 = Instant::now();
    let (mut s, _) = caught_up(t0);
    let removed = Push::Removed {
        peer: peer(2),
        namespaces: vec![ns()],
    };
    s.on_pushed(t0, peer(SERVER), ns(), removed);
    let evs = events(drain(&mut s, t0));
    assert!(matches!(&evs[..], [Event::Expired { peer: p, .. }] if *p == peer(2)));
}

#[test]
fn given_a_subscription_the_server_shed_then_it_discovers_from_its_cookie_within_the_backoff_and_resubscribes_after_it(
) {
    let t0 = Instant::now();
    let (mut s, _) = caught_up(t0);
    s.on_pushed(t0, peer(SERVER), ns(), pushed(b"c2", 3));
    drain(&mut s, t0);
    let slow = ErrorResponse::new(ErrorCode::Unavailable, "too slow");
    s.subscription_ended(t0, peer(SERVER), ns(), Some(slow));
    // Not at once: the server is busy, and the subscribers it shed spread their DISCOVERs.
    assert!(sends(&drain(&mut s, t0)).is_empty());
    let catch_up = s.poll_timeout().expect("the DISCOVER is scheduled");
    assert!(
        catch_up > t0 && catch_up <= t0 + Duration::from_secs(1),
        "within the first backoff (at most the 1 s minimum)"
    );
    let t0 = catch_up;
    let sent = sends(&drain(&mut s, t0));
    let [(
        id,
        Request::Discover {
            cookie: Some(c), ..
        },
    )] = &sent[..]
    else {
        panic!("expected a DISCOVER from the pushed cookie, got {sent:?}");
    };
    assert_eq!(c.as_bytes(), b"c2");
    // It caught up, but the subscription waits for its backoff; a DISCOVER comes first then.
    s.on_response(
        t0,
        *id,
        Ok(Response::Page(DiscoverPage {
            registrations: vec![registration(3, 1, 100)],
            cookie: Some(Cookie::new(b"c2".to_vec()).unwrap()),
            skipped: 0,
        })),
    );
    let actions = drain(&mut s, t0);
    assert!(subscriptions(&actions).is_empty());
    assert!(events(actions).is_empty(), "peer 3 is not news");
    let due = s.poll_timeout().expect("the next DISCOVER is scheduled");
    assert!(
        due < t0 + Duration::from_secs(60),
        "within the backoff, not the interval"
    );
    let sent = sends(&drain(&mut s, due));
    s.on_response(due, sent[0].0, Ok(page(vec![], b"c4")));
    assert_eq!(
        subscriptions(&drain(&mut s, due)),
        vec![Some(b"c4".to_vec())]
    );
}

#[test]
fn given_an_invalid_cookie_from_a_subscription_then_discovery_starts_over() {
    let t0 = Instant::now();
    let (mut s, _) = caught_up(t0);
    let invalid = ErrorResponse::new(ErrorCode::InvalidCookie, "restarted");
    s.subscription_ended(t0, peer(SERVER), ns(), Some(invalid));
    let actions = drain(&mut s, t0);
    assert!(events(actions.clone())
        .iter()
        .any(|e| matches!(e, Event::CookieReset { .. })));
    let sent = sends(&actions);
    assert!(
        matches!(&sent[..], [(_, Request::Discover { cookie: None, .. })]),
        "{sent:?}"
    );
}

#[test]
fn given_a_disconnect_then_the_subscription_is_made_again_after_reconnecting() {
    let t0 = Instant::now();
    let (mut s, _) = caught_up(t0);
    s.disconnected(t0, peer(SERVER));
    drain(&mut s, t0);
    s.connected(t0, peer(SERVER));
    s.remote_protocols_known(t0, peer(SERVER));
    s.push_supported(t0, peer(SERVER));
    let sent = sends(&drain(&mut s, t0));
    s.on_response(t0, sent[0].0, Ok(page(vec![], b"c5")));
    assert_eq!(
        subscriptions(&drain(&mut s, t0)),
        vec![Some(b"c5".to_vec())]
    );
}
