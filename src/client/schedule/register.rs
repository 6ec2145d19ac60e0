//! Automatic registration, per (server, namespace): when to REGISTER, refresh and retry, which
//! namespaces each server holds for us, and the record format each server takes.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Instant,
};

use libp2p::PeerId;

use super::{
    deadlines::Deadlines,
    request::{Action, Origin, Request, Requests},
};
use crate::{
    client::{Event, RequestError, RequestId},
    Namespace, RecordFormat, Ttl,
};

/// Whether `error` is how a server that only reads unsigned `PeerInfo` records (py-libp2p 0.8)
/// answers a signed one: `E_NOT_AUTHORIZED` saying a peer can only register itself (it took the
/// envelope's public key for the peer id). Our own record always names us, so no server that
/// reads signed records answers it that way.
fn refuses_signed_records(error: &crate::ErrorResponse) -> bool {
    error.code == crate::ErrorCode::NotAuthorized
        && error.text.to_ascii_lowercase().contains("register itself")
}

/// One automatic registration at one server.
#[derive(Debug, Default)]
struct Task {
    inflight: Option<RequestId>,
    failures: u32,
    /// The addresses changed while a REGISTER was in flight: register again when it ends.
    redo: bool,
}

#[derive(Debug)]
struct Server {
    tasks: BTreeMap<Namespace, Task>,
    /// The record format this server takes (see [`RegisterTasks::fall_back`]).
    format: RecordFormat,
    /// Namespaces this server holds a registration of ours in, as far as we know.
    held: BTreeSet<Namespace>,
    /// How many of `tasks` have a REGISTER in flight.
    inflight: usize,
    /// The server accepted a standard-format REGISTER: it reads that format, so a standard
    /// REGISTER it drops without a reply was refused for another reason (a stream over its
    /// cap), not for its format.
    took_standard: bool,
}

/// The automatic registrations and what each server holds.
///
/// Invariants: a task has a deadline in `due` only while no REGISTER of it is in flight and its
/// server is connected; each server's `inflight` counts its tasks with a REGISTER in flight.
#[derive(Debug)]
pub(super) struct RegisterTasks {
    servers: HashMap<PeerId, Server>,
    due: Deadlines<(PeerId, Namespace)>,
    /// Namespaces registered automatically at every server (empty when registration is off).
    namespaces: Vec<Namespace>,
    default_format: RecordFormat,
    legacy_fallback: bool,
    has_addresses: bool,
    no_addresses_reported: bool,
}

impl RegisterTasks {
    pub(super) fn new(
        namespaces: Vec<Namespace>,
        default_format: RecordFormat,
        legacy_fallback: bool,
    ) -> Self {
        Self {
            servers: HashMap::new(),
            due: Deadlines::default(),
            namespaces,
            default_format,
            legacy_fallback,
            has_addresses: false,
            no_addresses_reported: false,
        }
    }

    /// A new server: one task per namespace, none due until it is connected.
    pub(super) fn add_server(&mut self, peer: PeerId) {
        let tasks = self
            .namespaces
            .iter()
            .map(|ns| (ns.clone(), Task::default()))
            .collect();
        let server = Server {
            tasks,
            format: self.default_format,
            held: BTreeSet::new(),
            inflight: 0,
            took_standard: false,
        };
        self.servers.insert(peer, server);
    }

    /// Forgets `peer` entirely (a learned server that went away).
    pub(super) fn remove_server(&mut self, peer: &PeerId) {
        if let Some(server) = self.servers.remove(peer) {
            for ns in server.tasks.keys() {
                self.due.clear(&(*peer, ns.clone()));
            }
        }
    }

    /// Stops every automatic registration; what servers hold and their formats stay known.
    pub(super) fn stop(&mut self) {
        for (peer, server) in &mut self.servers {
            for ns in std::mem::take(&mut server.tasks).into_keys() {
                self.due.clear(&(*peer, ns));
            }
            server.inflight = 0;
        }
    }

    /// Stops the automatic registration of `namespace` at `peer`.
    pub(super) fn remove(&mut self, peer: PeerId, namespace: &Namespace) {
        let Some(server) = self.servers.get_mut(&peer) else {
            return;
        };
        if let Some(task) = server.tasks.remove(namespace) {
            if task.inflight.is_some() {
                server.inflight -= 1;
            }
        }
        self.due.clear(&(peer, namespace.clone()));
    }

    /// Whether a REGISTER of an automatic registration is in flight at `peer`.
    pub(super) fn registering(&self, peer: &PeerId) -> bool {
        self.servers.get(peer).is_some_and(|s| s.inflight > 0)
    }

    /// The record format `peer` takes.
    pub(super) fn format(&self, peer: &PeerId) -> RecordFormat {
        self.servers
            .get(peer)
            .map_or(self.default_format, |s| s.format)
    }

    /// The one place that decides the record-format fallback: whether a REGISTER in `sent`
    /// format that failed with `error` is to be retried in another format, and if so switches
    /// `peer` to it. rust-libp2p 0.18 servers drop a standard-format REGISTER without a reply
    /// (then: legacy); py-libp2p 0.8 servers read a signed envelope as a `PeerInfo`, find
    /// another peer id in it and answer `E_NOT_AUTHORIZED` "Peer can only register itself"
    /// (then: `PeerInfo`). A server that refuses the fallback format too gets the failure
    /// reported as usual.
    pub(super) fn fall_back(
        &mut self,
        peer: PeerId,
        sent: RecordFormat,
        error: &RequestError,
    ) -> bool {
        let Some(to) = self.fallback_for(&peer, sent, error) else {
            return false;
        };
        let Some(server) = self.servers.get_mut(&peer) else {
            return false;
        };
        if server.format == sent {
            tracing::debug!(server = %peer, from = %sent, %to, "server refused our record format; switching it");
            server.format = to;
        }
        true
    }

    /// The format [`RegisterTasks::fall_back`] would switch `peer` to after a REGISTER in `sent`
    /// format failed with `error`, if any. A standard REGISTER dropped without a reply by a
    /// server that took one before was not dropped for its format.
    pub(super) fn fallback_for(
        &self,
        peer: &PeerId,
        sent: RecordFormat,
        error: &RequestError,
    ) -> Option<RecordFormat> {
        let server = self.servers.get(peer)?;
        if !self.legacy_fallback {
            return None;
        }
        match (sent, error) {
            (RecordFormat::Standard, RequestError::NoResponse) if !server.took_standard => {
                Some(RecordFormat::Legacy)
            }
            (RecordFormat::Standard | RecordFormat::Legacy, RequestError::Remote(e))
                if refuses_signed_records(e) =>
            {
                Some(RecordFormat::PeerInfo)
            }
            _ => None,
        }
    }

    /// `peer` accepted a REGISTER in `format`.
    pub(super) fn took(&mut self, peer: PeerId, format: RecordFormat) {
        if let Some(server) = self.servers.get_mut(&peer) {
            server.took_standard |= format == RecordFormat::Standard;
        }
    }

    /// `peer` holds a registration of ours in `namespace`.
    pub(super) fn hold(&mut self, peer: PeerId, namespace: Namespace) {
        if let Some(server) = self.servers.get_mut(&peer) {
            server.held.insert(namespace);
        }
    }

    /// `peer` no longer holds our registration in `namespace`.
    pub(super) fn release(&mut self, peer: PeerId, namespace: &Namespace) {
        if let Some(server) = self.servers.get_mut(&peer) {
            server.held.remove(namespace);
        }
    }

    /// The namespaces `peer` holds a registration of ours in.
    pub(super) fn held(&self, peer: &PeerId) -> Vec<Namespace> {
        self.servers
            .get(peer)
            .map(|s| s.held.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every task at `peer` without a REGISTER in flight is due at `at` (`None`: not scheduled).
    fn reschedule_idle(&mut self, peer: PeerId, at: Option<Instant>) {
        let Some(server) = self.servers.get(&peer) else {
            return;
        };
        for (ns, task) in &server.tasks {
            let key = (peer, ns.clone());
            match at {
                Some(at) if task.inflight.is_none() => self.due.set(key, at),
                _ => {
                    self.due.clear(&key);
                }
            }
        }
    }

    /// `peer` is connected: register everything not in flight at once.
    pub(super) fn connected(&mut self, now: Instant, peer: PeerId) {
        self.reschedule_idle(peer, Some(now));
    }

    /// `peer` is gone: nothing is due there until it is back.
    pub(super) fn disconnected(&mut self, peer: PeerId) {
        self.reschedule_idle(peer, None);
    }

    /// Whether we have an address to put in a record.
    pub(super) fn has_addresses(&self) -> bool {
        self.has_addresses
    }

    /// Our addresses changed; `has_any` says whether there is one now. Every registration at
    /// a connected server is made again (after the one in flight, if any).
    pub(super) fn addresses_changed(
        &mut self,
        now: Instant,
        has_any: bool,
        connected: impl Fn(&PeerId) -> bool,
    ) {
        self.has_addresses = has_any;
        if !has_any {
            return;
        }
        self.no_addresses_reported = false;
        let peers: Vec<PeerId> = self.servers.keys().copied().filter(connected).collect();
        for peer in peers {
            let Some(server) = self.servers.get_mut(&peer) else {
                continue;
            };
            for (ns, task) in &mut server.tasks {
                if task.inflight.is_some() {
                    task.redo = true;
                } else {
                    self.due.set((peer, ns.clone()), now);
                }
            }
        }
    }

    /// The REGISTER of a registration due at `now`, asking for `ttl`, now in flight. Without
    /// an address nothing is sent: what is due is dropped until addresses appear, and that is
    /// reported once.
    pub(super) fn poll(
        &mut self,
        now: Instant,
        ttl: Ttl,
        requests: &mut Requests,
    ) -> Option<Action> {
        loop {
            let (peer, namespace) = self.due.due(now).cloned()?;
            if !self.has_addresses {
                self.reschedule_idle(peer, None);
                if !std::mem::replace(&mut self.no_addresses_reported, true) {
                    return Some(Action::Event(Event::NoAddressesToRegister));
                }
                continue;
            }
            self.due.clear(&(peer, namespace.clone()));
            let id = requests.next_id();
            let server = self.servers.get_mut(&peer)?;
            if let Some(task) = server.tasks.get_mut(&namespace) {
                task.inflight = Some(id);
                server.inflight += 1;
            }
            let format = server.format;
            let request = Request::Register {
                namespace,
                ttl: Some(ttl),
                format,
            };
            return Some(requests.send(peer, id, Origin::Auto, request));
        }
    }

    /// Ends the REGISTER in flight of a task, returning the task when it still exists.
    fn end(&mut self, peer: PeerId, namespace: &Namespace) -> Option<&mut Task> {
        let server = self.servers.get_mut(&peer)?;
        let task = server.tasks.get_mut(namespace)?;
        if task.inflight.take().is_some() {
            server.inflight -= 1;
        }
        Some(task)
    }

    /// The automatic REGISTER of `namespace` at `peer` succeeded: refresh after `refresh`, or
    /// at once if the addresses changed meanwhile; nothing while `peer` is not `connected`.
    pub(super) fn registered(
        &mut self,
        now: Instant,
        peer: PeerId,
        namespace: &Namespace,
        refresh: std::time::Duration,
        connected: bool,
    ) {
        let Some(task) = self.end(peer, namespace) else {
            return;
        };
        task.failures = 0;
        let at = if std::mem::take(&mut task.redo) {
            now
        } else {
            now + refresh
        };
        if connected {
            self.due.set((peer, namespace.clone()), at);
        }
    }

    /// The automatic REGISTER failed and is retried in another format at once.
    pub(super) fn retry_now(&mut self, now: Instant, peer: PeerId, namespace: &Namespace) {
        if self.end(peer, namespace).is_some() {
            self.due.set((peer, namespace.clone()), now);
        }
    }

    /// How many times in a row the registration failed, counting one more failure.
    pub(super) fn next_failure(&self, peer: &PeerId, namespace: &Namespace) -> u32 {
        self.servers
            .get(peer)
            .and_then(|s| s.tasks.get(namespace))
            .map_or(1, |t| t.failures.saturating_add(1))
    }

    /// The automatic REGISTER failed for the `failures`th time; retry at `retry_at`.
    pub(super) fn failed(
        &mut self,
        peer: PeerId,
        namespace: &Namespace,
        failures: u32,
        retry_at: Option<Instant>,
    ) {
        let Some(task) = self.end(peer, namespace) else {
            return;
        };
        task.failures = failures;
        task.redo = false;
        let key = (peer, namespace.clone());
        match retry_at {
            Some(at) => self.due.set(key, at),
            None => {
                self.due.clear(&key);
            }
        }
    }

    /// The next registration due, if we have an address to register.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        if self.has_addresses {
            self.due.first()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::{test_support::*, Request, Schedule};
    use crate::{
        client::{handler::Response, Event, RequestError},
        RecordFormat,
    };

    #[test]
    fn given_a_granted_ttl_when_registered_then_refresh_falls_between_70_and_80_percent() {
        for seed in 0..20 {
            let t0 = Instant::now();
            let mut s = connected(register_only().with_seed(seed), t0);
            let sent = sends(&drain(&mut s, t0));
            assert_eq!(sent.len(), 1);
            s.on_response(t0, sent[0].0, Ok(Response::Registered(1000)));
            let due = s.poll_timeout().expect("a refresh is scheduled");
            let after = due - t0;
            assert!(
                after >= Duration::from_secs(700) && after <= Duration::from_secs(800),
                "{after:?}"
            );
            assert!(sends(&drain(&mut s, due - Duration::from_millis(1))).is_empty());
            let refresh = sends(&drain(&mut s, due));
            assert!(matches!(&refresh[..], [(_, Request::Register { .. })]));
        }
    }

    #[test]
    fn given_a_standard_register_dropped_without_reply_then_the_server_is_switched_to_legacy() {
        let t0 = Instant::now();
        let mut s = connected(register_only(), t0);
        let sent = sends(&drain(&mut s, t0));
        assert!(matches!(
            &sent[..],
            [(
                _,
                Request::Register {
                    format: RecordFormat::Standard,
                    ..
                }
            )]
        ));
        s.on_response(t0, sent[0].0, Err(RequestError::NoResponse));
        let actions = drain(&mut s, t0);
        let retry = sends(&actions);
        assert!(events(actions).is_empty());
        assert!(matches!(
            &retry[..],
            [(
                _,
                Request::Register {
                    format: RecordFormat::Legacy,
                    ..
                }
            )]
        ));
        // Without the fallback it is retried in the same format, as a stream refused for a
        // passing reason.
        let mut s = connected(register_only().with_legacy_fallback(false), t0);
        let sent = sends(&drain(&mut s, t0));
        s.on_response(t0, sent[0].0, Err(RequestError::NoResponse));
        assert!(drain(&mut s, t0).is_empty());
        let retry_at = s.poll_timeout().unwrap();
        let retry = sends(&drain(&mut s, retry_at));
        assert!(matches!(
            &retry[..],
            [(
                _,
                Request::Register {
                    format: RecordFormat::Standard,
                    ..
                }
            )]
        ));
    }

    #[test]
    fn given_a_server_that_refuses_signed_records_then_it_is_switched_to_peer_info() {
        let t0 = Instant::now();
        let mut s = connected(register_only(), t0);
        let sent = sends(&drain(&mut s, t0));
        // What py-libp2p 0.8's server answers a signed REGISTER.
        let refusal = crate::ErrorResponse::new(
            crate::ErrorCode::NotAuthorized,
            "Peer can only register itself",
        );
        s.on_response(t0, sent[0].0, Err(RequestError::Remote(refusal.clone())));
        let actions = drain(&mut s, t0);
        let retry = sends(&actions);
        assert!(events(actions).is_empty());
        assert!(matches!(
            &retry[..],
            [(
                _,
                Request::Register {
                    format: RecordFormat::PeerInfo,
                    ..
                }
            )]
        ));
        // Refused as PeerInfo too: reported, not retried in yet another format.
        s.on_response(t0, retry[0].0, Err(RequestError::Remote(refusal)));
        let evs = events(drain(&mut s, t0));
        assert!(matches!(&evs[..], [Event::RegisterFailed { .. }]));
        // Another refusal (a limit) is not a format problem.
        let mut s = connected(register_only(), t0);
        let sent = sends(&drain(&mut s, t0));
        let limit = crate::ErrorResponse::new(crate::ErrorCode::NotAuthorized, "too many");
        s.on_response(t0, sent[0].0, Err(RequestError::Remote(limit)));
        let evs = events(drain(&mut s, t0));
        assert!(matches!(&evs[..], [Event::RegisterFailed { .. }]));
    }

    #[test]
    fn given_no_addresses_then_it_says_so_once_and_registers_when_one_appears() {
        let t0 = Instant::now();
        let config = register_only()
            .with_server(peer(SERVER), vec![])
            .with_seed(1);
        let mut s = Schedule::new(peer(1), config, t0);
        drain(&mut s, t0);
        s.connected(t0, peer(SERVER));
        let evs = events(drain(&mut s, t0));
        assert!(matches!(&evs[..], [Event::NoAddressesToRegister]));
        assert_eq!(s.poll_timeout(), None);
        s.addresses_changed(t0, true);
        assert_eq!(sends(&drain(&mut s, t0)).len(), 1);
    }
}
