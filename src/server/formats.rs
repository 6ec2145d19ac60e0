//! Which record formats each peer is served, and the DISCOVERs held while the server asks a
//! peer who it is: a pure core, fed `now: Instant` (see the [module docs](super), "Record
//! formats").

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use libp2p::{PeerId, StreamProtocol};

use crate::{RecordFormat, STANDARD_RECORDS_PROTOCOL};

/// Which registrations a peer is sent in DISCOVER_RESPONSEs, and in which layout (see the
/// module docs, "Record formats"). A cookie cut under one set is not continued under a set
/// that includes a format the first left out ([`ServedFormats::covers`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ServedFormats {
    /// Legacy signed records only: all that rust-libp2p's `libp2p-rendezvous` 0.18 client
    /// decodes (one standard record fails its whole page).
    LegacyOnly,
    /// Standard signed records only: js-libp2p's `@canvas-js/libp2p-rendezvous` client verifies
    /// every record of a page with the standard domain and fails the whole page on one legacy
    /// record.
    Standard,
    /// Signed records of both formats, as they were signed: the spec, for go, js and nim
    /// clients. Unsigned (`PeerInfo`) registrations are left out: these clients cannot read them.
    #[default]
    Signed,
    /// Every registration, each as an unsigned `PeerInfo` (a signed record is handed out with
    /// the peer and addresses it proves): py-libp2p 0.8 and other third-generation clients.
    AsPeerInfo,
    /// Every registration as it was registered (signed records as signed, `PeerInfo`s as
    /// `PeerInfo`): this crate's client, which reads all three layouts.
    All,
}

impl ServedFormats {
    /// Whether a registration of `format` is served.
    pub fn includes(self, format: crate::RecordFormat) -> bool {
        use crate::RecordFormat::*;
        match self {
            ServedFormats::LegacyOnly => format == Legacy,
            ServedFormats::Standard => format == Standard,
            ServedFormats::Signed => format != PeerInfo,
            ServedFormats::AsPeerInfo | ServedFormats::All => true,
        }
    }

    /// What a peer that registers in `format` reads: what it sends.
    pub fn read_by_registrant(format: crate::RecordFormat) -> Self {
        match format {
            crate::RecordFormat::Standard => ServedFormats::Signed,
            crate::RecordFormat::Legacy => ServedFormats::LegacyOnly,
            crate::RecordFormat::PeerInfo => ServedFormats::AsPeerInfo,
        }
    }

    /// Whether every registration `other` includes, `self` includes too: a cookie whose pages
    /// were cut under `self` may be continued by a peer now served `other`.
    pub fn covers(self, other: ServedFormats) -> bool {
        use crate::RecordFormat::*;
        [Standard, Legacy, PeerInfo]
            .into_iter()
            .all(|format| !other.includes(format) || self.includes(format))
    }
}

impl std::fmt::Display for ServedFormats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServedFormats::LegacyOnly => "legacy",
            ServedFormats::Standard => "standard",
            ServedFormats::Signed => "signed",
            ServedFormats::AsPeerInfo => "peer-info",
            ServedFormats::All => "all",
        })
    }
}

impl std::str::FromStr for ServedFormats {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "legacy" => Ok(ServedFormats::LegacyOnly),
            "standard" => Ok(ServedFormats::Standard),
            "signed" => Ok(ServedFormats::Signed),
            "peer-info" => Ok(ServedFormats::AsPeerInfo),
            "all" => Ok(ServedFormats::All),
            other => Err(format!(
                "expected `legacy`, `standard`, `signed`, `peer-info` or `all`, got `{other}`"
            )),
        }
    }
}

/// The identify protocol, which every libp2p implementation answers; the server reads a peer's
/// agent and protocols with it (without depending on libp2p's identify behaviour).
pub(crate) const IDENTIFY_PROTOCOL: StreamProtocol = StreamProtocol::new("/ipfs/id/1.0.0");

/// How long a DISCOVER from a peer of unknown format may wait for the peer's identify answer.
/// One round trip on a live connection; long enough for a loaded server, short enough that a
/// peer without identify (its answer is a refusal, usually faster) is not kept waiting.
pub const IDENTIFY_WAIT: Duration = Duration::from_millis(1500);

/// Most DISCOVERs of one peer held at once while its format is unknown. A client asks for a few
/// namespaces when it connects; a peer that sends more is answered `E_UNAVAILABLE` (try later).
pub const MAX_HELD_PER_PEER: usize = 16;

/// Most DISCOVERs held at once, over all peers. Beyond it a DISCOVER of a peer of unknown format
/// is answered `E_UNAVAILABLE` (try later), never with a page the peer might not decode.
pub const MAX_HELD: usize = 1024;

/// Most connected peers whose format knowledge (marker, hint, identify answer) is kept. Each
/// entry is forgotten when the peer's last connection closes; beyond the bound a new peer is
/// served [`Config::with_unknown_peer_formats`](super::Config::with_unknown_peer_formats) at
/// once, without asking it.
pub const MAX_KNOWN_PEERS: usize = 65_536;

/// The largest identify message read when the server asks a peer who it is. rust-libp2p caps
/// identify messages at 4 KiB; others send more listen addresses.
pub const MAX_IDENTIFY_MESSAGE_SIZE: usize = 64 * 1024;

/// What identify's `agentVersion` and `protocols` say a peer reads:
///
/// - it lists [`STANDARD_RECORDS_PROTOCOL`] (this crate's client): [`ServedFormats::All`];
/// - agent `rust-libp2p/…` without the marker (rust-libp2p's `libp2p-rendezvous` 0.18 client):
///   [`ServedFormats::LegacyOnly`];
/// - agent `py-libp2p/…` (py-libp2p 0.8 reads `PeerInfo`): [`ServedFormats::AsPeerInfo`];
/// - agent `js-libp2p/…` (js-libp2p's rendezvous client fails a page on a legacy record):
///   [`ServedFormats::Standard`];
/// - any other agent (go, nim, …): [`ServedFormats::Signed`], as the spec says.
pub fn served_by_identify<'a>(
    agent_version: &str,
    protocols: impl IntoIterator<Item = &'a str>,
) -> ServedFormats {
    if protocols
        .into_iter()
        .any(|p| p == STANDARD_RECORDS_PROTOCOL.as_ref())
    {
        ServedFormats::All
    } else if agent_version.starts_with("rust-libp2p/") || agent_version == "rust-libp2p" {
        ServedFormats::LegacyOnly
    } else if agent_version.starts_with("py-libp2p/") {
        ServedFormats::AsPeerInfo
    } else if agent_version.starts_with("js-libp2p/") {
        ServedFormats::Standard
    } else {
        ServedFormats::Signed
    }
}

/// The two identify fields the server reads (prost skips the others).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct IdentifyPb {
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub(crate) protocols: Vec<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "6")]
    pub(crate) agent_version: Option<Vec<u8>>,
}

impl IdentifyPb {
    /// What the identify message says the peer reads.
    pub(crate) fn served(&self) -> ServedFormats {
        let agent = String::from_utf8_lossy(self.agent_version.as_deref().unwrap_or_default());
        served_by_identify(
            &agent,
            self.protocols
                .iter()
                .filter_map(|p| std::str::from_utf8(p).ok()),
        )
    }
}

/// What the server knows of one connected peer's format.
#[derive(Debug, Default)]
struct Knowledge {
    /// The peer lists [`STANDARD_RECORDS_PROTOCOL`]: it reads every entry. Beats a REGISTER.
    marker: bool,
    /// The format of the peer's latest REGISTER answered on its connections (for a store
    /// without a local index; a local index knows it too).
    registered: Option<RecordFormat>,
    /// From the peer's identify answer or [`PeerFormats::set_hint`]; the latest wins.
    hint: Option<ServedFormats>,
    /// The server asked the peer's identify (or gave up on it).
    asked: Option<Asked>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Waiting,
    /// Answered, refused, or timed out: nothing more will be learned by waiting.
    Done,
}

/// What to do with a DISCOVER.
#[derive(Debug)]
pub(crate) enum Decision<T> {
    /// Serve it now with these formats.
    Serve(ServedFormats, T),
    /// It is held until the peer's format is known or [`IDENTIFY_WAIT`] passed; when `ask`, the
    /// server asks the peer's identify now (once per peer).
    Held { ask: bool },
    /// Too many DISCOVERs are held: answer `E_UNAVAILABLE`.
    Full(T),
}

/// The formats each peer is served, and the DISCOVERs held while that is being learned.
///
/// Priority, highest first: the marker protocol (the reader says exactly what it reads), the
/// format of the peer's latest REGISTER (what it sends is what it reads), a hint (its identify
/// agent, or the application's), the configured default for unknown peers. A DISCOVER of a
/// peer with none of the first three is held (bounded by [`MAX_HELD_PER_PEER`], [`MAX_HELD`],
/// [`IDENTIFY_WAIT`]) while the server asks the peer's identify, once.
#[derive(Debug)]
pub(crate) struct PeerFormats<T> {
    default: ServedFormats,
    /// How long a DISCOVER is held at most ([`IDENTIFY_WAIT`] by default).
    wait: Duration,
    peers: HashMap<PeerId, Knowledge>,
    /// (deadline, arrival number) -> held DISCOVER.
    held: BTreeMap<(Instant, u64), (PeerId, T)>,
    held_per_peer: HashMap<PeerId, usize>,
    arrivals: u64,
}

impl<T> PeerFormats<T> {
    pub(crate) fn new(default: ServedFormats, wait: Duration) -> Self {
        Self {
            default,
            wait,
            peers: HashMap::new(),
            held: BTreeMap::new(),
            held_per_peer: HashMap::new(),
            arrivals: 0,
        }
    }

    /// The formats served to `peer`, whose latest REGISTER (if it has registrations) was in
    /// `registered` as far as the store knows.
    pub(crate) fn served(&self, peer: &PeerId, registered: Option<RecordFormat>) -> ServedFormats {
        let known = self.peers.get(peer);
        if known.is_some_and(|k| k.marker) {
            return ServedFormats::All;
        }
        let hint = known.and_then(|k| k.hint);
        match registered
            .or(known.and_then(|k| k.registered))
            .map(ServedFormats::read_by_registrant)
        {
            // A js-libp2p peer registers standard records and reads nothing else: its agent
            // narrows what its REGISTER says.
            Some(ServedFormats::Signed) if hint == Some(ServedFormats::Standard) => {
                ServedFormats::Standard
            }
            Some(served) => served,
            None => hint.unwrap_or(self.default),
        }
    }

    /// A DISCOVER (`item`) of `peer` arrived at `now`.
    pub(crate) fn discover(
        &mut self,
        peer: PeerId,
        registered: Option<RecordFormat>,
        item: T,
        now: Instant,
    ) -> Decision<T> {
        let known = self.peers.get(&peer);
        let registered = registered.or(known.and_then(|k| k.registered));
        let settled = match known {
            Some(k) if k.marker || k.hint.is_some() || k.asked == Some(Asked::Done) => true,
            None if self.peers.len() >= MAX_KNOWN_PEERS => true,
            // A standard registrant may be a js-libp2p peer, which reads standard records only:
            // its identify decides, asked once like a peer of unknown format.
            _ if registered == Some(RecordFormat::Standard) => false,
            _ => registered.is_some(),
        };
        if settled {
            return Decision::Serve(self.served(&peer, registered), item);
        }
        let of_peer = self.held_per_peer.get(&peer).copied().unwrap_or(0);
        if of_peer >= MAX_HELD_PER_PEER || self.held.len() >= MAX_HELD {
            return Decision::Full(item);
        }
        let knowledge = self.peers.entry(peer).or_default();
        let ask = knowledge.asked.is_none();
        knowledge.asked = Some(Asked::Waiting);
        self.arrivals += 1;
        self.held
            .insert((now + self.wait, self.arrivals), (peer, item));
        *self.held_per_peer.entry(peer).or_default() += 1;
        Decision::Held { ask }
    }

    /// `peer` lists the marker protocol. Returns its held DISCOVERs, to serve now.
    pub(crate) fn marker_seen(&mut self, peer: PeerId) -> Vec<T> {
        if let Some(k) = self.knowledge(peer) {
            k.marker = true;
        }
        self.release(&peer)
    }

    /// The peer's identify answer arrived (`Some`: what it reads), or asking failed (`None`).
    /// Returns its held DISCOVERs, to serve now.
    pub(crate) fn identified(&mut self, peer: PeerId, served: Option<ServedFormats>) -> Vec<T> {
        if let Some(k) = self.knowledge(peer) {
            k.asked = Some(Asked::Done);
            if served.is_some() {
                k.hint = served;
            }
        }
        self.release(&peer)
    }

    /// The application's hint for `peer` (the latest hint wins). Returns its held DISCOVERs.
    pub(crate) fn set_hint(&mut self, peer: PeerId, served: ServedFormats) -> Vec<T> {
        if let Some(k) = self.knowledge(peer) {
            k.hint = Some(served);
        }
        self.release(&peer)
    }

    /// `peer` registered in `format`: what it reads is known, but for a standard registrant
    /// whose identify answer is awaited (see [`PeerFormats::discover`]). Returns its held
    /// DISCOVERs, to serve now.
    pub(crate) fn registered(&mut self, peer: PeerId, format: RecordFormat) -> Vec<T> {
        let mut waiting = false;
        if let Some(k) = self.knowledge(peer) {
            k.registered = Some(format);
            waiting = k.asked == Some(Asked::Waiting) && !k.marker && k.hint.is_none();
        }
        if waiting && format == RecordFormat::Standard {
            return Vec::new();
        }
        self.release(&peer)
    }

    /// The last connection of `peer` closed: forgets it. Returns its held DISCOVERs (nobody
    /// waits for them any more).
    pub(crate) fn forget(&mut self, peer: &PeerId) -> Vec<T> {
        self.peers.remove(peer);
        self.release(peer)
    }

    /// When the earliest held DISCOVER stops waiting.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.held
            .first_key_value()
            .map(|((deadline, _), _)| *deadline)
    }

    /// A held DISCOVER whose wait ended at or before `now`, earliest first; its peer is then
    /// served by what is known (the identify answer is not waited for again). Call until `None`.
    pub(crate) fn poll_expired(&mut self, now: Instant) -> Option<(PeerId, T)> {
        let (&(deadline, _), _) = self.held.first_key_value()?;
        if deadline > now {
            return None;
        }
        let (_, (peer, item)) = self.held.pop_first()?;
        self.unhold(&peer);
        if let Some(k) = self.peers.get_mut(&peer) {
            k.asked = Some(Asked::Done);
        }
        Some((peer, item))
    }

    /// DISCOVERs held now.
    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }

    fn knowledge(&mut self, peer: PeerId) -> Option<&mut Knowledge> {
        let full = self.peers.len() >= MAX_KNOWN_PEERS;
        match self.peers.entry(peer) {
            std::collections::hash_map::Entry::Occupied(e) => Some(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(_) if full => None,
            std::collections::hash_map::Entry::Vacant(e) => Some(e.insert(Knowledge::default())),
        }
    }

    fn release(&mut self, peer: &PeerId) -> Vec<T> {
        if self.held_per_peer.remove(peer).is_none() {
            return Vec::new();
        }
        let keys: Vec<(Instant, u64)> = self
            .held
            .iter()
            .filter(|(_, (p, _))| p == peer)
            .map(|(key, _)| *key)
            .collect();
        keys.into_iter()
            .filter_map(|key| self.held.remove(&key))
            .map(|(_, item)| item)
            .collect()
    }

    fn unhold(&mut self, peer: &PeerId) {
        if let Some(n) = self.held_per_peer.get_mut(peer) {
            *n -= 1;
            if *n == 0 {
                self.held_per_peer.remove(peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn formats() -> PeerFormats<u32> {
        PeerFormats::new(ServedFormats::Signed, IDENTIFY_WAIT)
    }

    fn held(d: Decision<u32>) -> bool {
        match d {
            Decision::Held { ask } => ask,
            other => panic!("expected Held, got {other:?}"),
        }
    }

    #[test]
    fn identify_agents_map_to_what_each_client_reads() {
        let marker = STANDARD_RECORDS_PROTOCOL;
        let marker = [marker.as_ref()];
        assert_eq!(
            served_by_identify("rust-libp2p/0.48.0", []),
            ServedFormats::LegacyOnly
        );
        assert_eq!(
            served_by_identify("rust-libp2p/0.48.0", marker),
            ServedFormats::All
        );
        assert_eq!(
            served_by_identify("py-libp2p/0.8.1", []),
            ServedFormats::AsPeerInfo
        );
        assert_eq!(
            served_by_identify("js-libp2p/2.10.0 UserAgent=node/20.20.2", []),
            ServedFormats::Standard
        );
        assert_eq!(served_by_identify("", []), ServedFormats::Signed);
        assert_eq!(
            served_by_identify("rust-libp2p-server/0.1", []),
            ServedFormats::Signed,
            "only rust-libp2p's own default agent means its 0.18 rendezvous client"
        );
    }

    #[test]
    fn given_a_standard_registrant_when_it_discovers_then_its_identify_decides() {
        let (mut f, now) = (formats(), Instant::now());
        let (js, go) = (PeerId::random(), PeerId::random());
        for p in [js, go] {
            assert!(f.registered(p, RecordFormat::Standard).is_empty());
            assert!(held(f.discover(p, Some(RecordFormat::Standard), 1, now)));
        }
        // A REGISTER answered meanwhile does not release it: the agent is awaited.
        assert!(f.registered(js, RecordFormat::Standard).is_empty());
        assert_eq!(f.identified(js, Some(ServedFormats::Standard)), vec![1]);
        assert_eq!(
            f.served(&js, Some(RecordFormat::Standard)),
            ServedFormats::Standard,
            "a js-libp2p agent narrows what its REGISTER says"
        );
        assert_eq!(f.identified(go, Some(ServedFormats::Signed)), vec![1]);
        assert_eq!(
            f.served(&go, Some(RecordFormat::Standard)),
            ServedFormats::Signed
        );
        // Other layouts decide at once; the agent does not narrow them.
        let rust = PeerId::random();
        assert!(matches!(
            f.discover(rust, Some(RecordFormat::Legacy), 2, now),
            Decision::Serve(ServedFormats::LegacyOnly, 2)
        ));
        f.set_hint(rust, ServedFormats::Standard);
        assert_eq!(
            f.served(&rust, Some(RecordFormat::Legacy)),
            ServedFormats::LegacyOnly
        );
    }

    #[test]
    fn covering_is_inclusion_of_the_formats_served() {
        use ServedFormats::*;
        let all = [LegacyOnly, Standard, Signed, AsPeerInfo, All];
        let covered = |a: ServedFormats, b: ServedFormats| a.covers(b);
        for a in all {
            assert!(covered(a, a));
            assert!(covered(All, a) && covered(AsPeerInfo, a));
        }
        assert!(covered(Signed, Standard) && covered(Signed, LegacyOnly));
        assert!(!covered(Standard, LegacyOnly) && !covered(LegacyOnly, Standard));
        assert!(!covered(Standard, Signed) && !covered(Signed, All));
        for a in all {
            assert_eq!(a.to_string().parse::<ServedFormats>(), Ok(a));
        }
    }

    #[test]
    fn given_an_unknown_peer_when_it_discovers_then_it_is_held_and_asked_once() {
        let (mut f, now, p) = (formats(), Instant::now(), PeerId::random());
        assert!(held(f.discover(p, None, 1, now)));
        assert!(!held(f.discover(p, None, 2, now)), "asked only once");
        assert_eq!(f.held(), 2);
        assert_eq!(f.poll_timeout(), Some(now + IDENTIFY_WAIT));
        let released = f.identified(p, Some(ServedFormats::LegacyOnly));
        assert_eq!(released, vec![1, 2]);
        assert_eq!(f.served(&p, None), ServedFormats::LegacyOnly);
        assert_eq!(f.poll_timeout(), None);
        assert!(matches!(
            f.discover(p, None, 3, now),
            Decision::Serve(ServedFormats::LegacyOnly, 3)
        ));
    }

    #[test]
    fn given_no_answer_when_the_wait_ends_then_the_default_is_served_and_not_waited_for_again() {
        let (mut f, now, p) = (formats(), Instant::now(), PeerId::random());
        held(f.discover(p, None, 1, now));
        assert!(f.poll_expired(now + IDENTIFY_WAIT / 2).is_none());
        assert_eq!(f.poll_expired(now + IDENTIFY_WAIT), Some((p, 1)));
        assert_eq!(f.served(&p, None), ServedFormats::Signed);
        assert!(matches!(
            f.discover(p, None, 2, now + IDENTIFY_WAIT),
            Decision::Serve(ServedFormats::Signed, 2)
        ));
        // A late answer still counts (the cookie marks keep it from hiding records).
        assert!(f.identified(p, Some(ServedFormats::AsPeerInfo)).is_empty());
        assert_eq!(f.served(&p, None), ServedFormats::AsPeerInfo);
    }

    #[test]
    fn given_a_failed_ask_then_held_discovers_are_served_by_the_default() {
        let (mut f, now, p) = (formats(), Instant::now(), PeerId::random());
        held(f.discover(p, None, 1, now));
        assert_eq!(f.identified(p, None), vec![1]);
        assert_eq!(f.served(&p, None), ServedFormats::Signed);
    }

    #[test]
    fn given_the_marker_then_everything_is_served_even_over_a_register() {
        let (mut f, now, p) = (formats(), Instant::now(), PeerId::random());
        held(f.discover(p, None, 1, now));
        assert_eq!(f.marker_seen(p), vec![1]);
        assert_eq!(f.served(&p, Some(RecordFormat::Legacy)), ServedFormats::All);
    }

    #[test]
    fn given_a_register_then_it_beats_hints_and_releases_held_discovers() {
        let (mut f, now, p) = (formats(), Instant::now(), PeerId::random());
        held(f.discover(p, None, 1, now));
        assert_eq!(f.registered(p, RecordFormat::PeerInfo), vec![1]);
        assert_eq!(f.served(&p, None), ServedFormats::AsPeerInfo);
        assert!(matches!(
            f.discover(p, Some(RecordFormat::PeerInfo), 2, now),
            Decision::Serve(ServedFormats::AsPeerInfo, 2)
        ));
        f.set_hint(p, ServedFormats::LegacyOnly);
        assert_eq!(
            f.served(&p, Some(RecordFormat::Standard)),
            ServedFormats::Signed
        );
        // The shell remembers the REGISTER it answered, for a store without an index.
        assert_eq!(f.served(&p, None), ServedFormats::AsPeerInfo);
        let q = PeerId::random();
        f.set_hint(q, ServedFormats::LegacyOnly);
        assert_eq!(f.served(&q, None), ServedFormats::LegacyOnly);
        assert_eq!(
            f.served(&q, Some(RecordFormat::Standard)),
            ServedFormats::Signed
        );
    }

    #[test]
    fn given_the_per_peer_and_total_bounds_then_further_discovers_are_refused() {
        let (mut f, now, p) = (formats(), Instant::now(), PeerId::random());
        for i in 0..MAX_HELD_PER_PEER as u32 {
            let _ = held(f.discover(p, None, i, now));
        }
        assert!(matches!(f.discover(p, None, 99, now), Decision::Full(99)));
        let mut peers = 1;
        while f.held() < MAX_HELD {
            let _ = held(f.discover(PeerId::random(), None, 0, now));
            peers += 1;
        }
        assert!(peers > 1);
        assert!(matches!(
            f.discover(PeerId::random(), None, 7, now),
            Decision::Full(7)
        ));
        // A peer whose format is known is served whatever is held.
        f.set_hint(p, ServedFormats::Signed);
        assert!(matches!(
            f.discover(p, None, 8, now),
            Decision::Serve(ServedFormats::Signed, 8)
        ));
    }

    #[test]
    fn given_a_closed_peer_then_it_is_forgotten_with_its_held_discovers() {
        let (mut f, now, p) = (formats(), Instant::now(), PeerId::random());
        held(f.discover(p, None, 1, now));
        f.marker_seen(p);
        held(f.discover(PeerId::random(), None, 2, now));
        assert!(f.forget(&p).is_empty());
        assert_eq!(f.served(&p, None), ServedFormats::Signed);
        assert_eq!(f.held(), 1);
        assert!(
            held(f.discover(p, None, 3, now)),
            "asked again on a new connection"
        );
    }
}
