//! What the schedule's tests share: peers, pages, a connected schedule, and draining actions.

use std::time::{Duration, Instant};

use libp2p::{identity::Keypair, PeerId};

use super::{Action, Request, Schedule};
use crate::{
    client::{handler::Response, Config, Event, RequestId},
    codec::{DiscoverPage, Registration},
    Cookie, Namespace, RecordFormat, SignedRecord, Ttl,
};

pub(super) const NS: &str = "ns";

/// The server every test schedule uses.
pub(super) const SERVER: u8 = 200;

pub(super) fn ns() -> Namespace {
    Namespace::from_static(NS)
}

pub(super) fn peer(seed: u8) -> PeerId {
    key(seed).public().to_peer_id()
}

pub(super) fn key(seed: u8) -> Keypair {
    Keypair::ed25519_from_bytes([seed; 32]).unwrap()
}

/// A registration in [`NS`] of peer `seed` at one address with `port`.
pub(super) fn registration(seed: u8, port: u16, ttl: Ttl) -> Registration {
    Registration {
        namespace: ns(),
        record: SignedRecord::new(
            &key(seed),
            vec![format!("/ip4/10.0.0.{seed}/tcp/{port}").parse().unwrap()],
            RecordFormat::Standard,
        )
        .unwrap(),
        ttl,
    }
}

pub(super) fn page(registrations: Vec<Registration>, cookie: &[u8]) -> Response {
    Response::Page(DiscoverPage {
        registrations,
        cookie: Some(Cookie::new(cookie.to_vec()).unwrap()),
        skipped: 0,
    })
}

/// A schedule with one connected server (identify done) and addresses, past the initial dial.
pub(super) fn connected(config: Config, t0: Instant) -> Schedule {
    let config = config.with_server(peer(SERVER), vec![]).with_seed(7);
    let mut s = Schedule::new(peer(1), config, t0);
    assert!(matches!(s.poll(t0), Some(Action::Dial { .. })));
    s.addresses_changed(t0, true);
    s.connected(t0, peer(SERVER));
    s.remote_protocols_known(t0, peer(SERVER));
    s
}

pub(super) fn drain(s: &mut Schedule, now: Instant) -> Vec<Action> {
    std::iter::from_fn(|| s.poll(now)).collect()
}

pub(super) fn sends(actions: &[Action]) -> Vec<(RequestId, Request)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { request, body, .. } => Some((*request, body.clone())),
            _ => None,
        })
        .collect()
}

/// The events, without [`Event::DiscoverPolled`] (one per automatic page; see [`polled`]).
pub(super) fn events(actions: Vec<Action>) -> Vec<Event> {
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Event(Event::DiscoverPolled { .. }) => None,
            Action::Event(e) => Some(e),
            _ => None,
        })
        .collect()
}

/// The sizes of the automatic pages reported by [`Event::DiscoverPolled`].
pub(super) fn polled(actions: &[Action]) -> Vec<usize> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Event(Event::DiscoverPolled { registrations, .. }) => Some(*registrations),
            _ => None,
        })
        .collect()
}

pub(super) fn register_only() -> Config {
    Config::default()
        .with_namespace(ns())
        .with_discovery(false)
        .with_ttl(1000)
}

pub(super) fn discover_only() -> Config {
    Config::default()
        .with_namespace(ns())
        .with_registration(false)
        .with_limit(2)
        .with_interval(Duration::from_secs(30))
}
