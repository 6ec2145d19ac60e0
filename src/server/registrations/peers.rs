//! [`Peers`]: what the store knows of each peer with registrations: which namespace holds which
//! of its registrations, the distinct records they hold (each stored once), its latest format.

use std::{
    borrow::Borrow,
    collections::HashMap,
    hash::{Hash, Hasher},
};

use libp2p::PeerId;

use super::index::Index;
use crate::codec::{Namespace, RecordFormat, SignedRecord};

/// What the store knows of one peer with registrations.
#[derive(Debug, Default)]
struct PeerState {
    /// namespace -> sequence number of the peer's registration there.
    namespaces: HashMap<Namespace, u64>,
    /// The distinct records the peer's registrations hold, each with how many hold it: a record
    /// registered in many namespaces is stored (and counted against the byte budget) once.
    records: HashMap<HeldRecord, usize>,
    /// The format of the peer's latest REGISTER.
    format: Option<RecordFormat>,
}

/// A stored record, hashed and compared by its envelope bytes, so the store can find the record
/// a REGISTER carries by its bytes alone (before decoding or verifying it).
#[derive(Debug, Clone)]
struct HeldRecord(SignedRecord);

impl PartialEq for HeldRecord {
    fn eq(&self, other: &Self) -> bool {
        self.0.envelope_bytes() == other.0.envelope_bytes()
    }
}

impl Eq for HeldRecord {}

impl Hash for HeldRecord {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must hash like `[u8]` for the `Borrow<[u8]>` lookups.
        self.0.envelope_bytes().hash(state);
    }
}

impl Borrow<[u8]> for HeldRecord {
    fn borrow(&self) -> &[u8] {
        self.0.envelope_bytes()
    }
}

/// The peers with registrations. Invariant: a peer is kept only while it holds a registration
/// or a record, and each record's holder count is the number of its registrations holding it.
#[derive(Debug, Default)]
pub(super) struct Peers {
    peers: HashMap<PeerId, PeerState>,
}

impl Peers {
    /// The sequence number of `peer`'s registration in `namespace`.
    pub(super) fn existing(&self, peer: &PeerId, namespace: &Namespace) -> Option<u64> {
        self.peers
            .get(peer)
            .and_then(|p| p.namespaces.get(namespace))
            .copied()
    }

    /// The sequence numbers of `peer`'s registrations.
    pub(super) fn registrations_of(&self, peer: &PeerId) -> Vec<u64> {
        self.peers
            .get(peer)
            .map(|p| p.namespaces.values().copied().collect())
            .unwrap_or_default()
    }

    /// How many registrations `peer` has.
    pub(super) fn count_of(&self, peer: &PeerId) -> usize {
        self.peers.get(peer).map_or(0, |p| p.namespaces.len())
    }

    /// The format of `peer`'s latest REGISTER.
    pub(super) fn format(&self, peer: &PeerId) -> Option<RecordFormat> {
        self.peers.get(peer).and_then(|p| p.format)
    }

    /// The stored record of `peer` whose envelope is `envelope`, if any.
    pub(super) fn held(&self, peer: &PeerId, envelope: &[u8]) -> Option<SignedRecord> {
        let (held, _) = self.peers.get(peer)?.records.get_key_value(envelope)?;
        Some(held.0.clone())
    }

    /// Whether `peer`'s registrations hold a record with `envelope` exactly once.
    pub(super) fn is_last_holder(&self, peer: &PeerId, envelope: &[u8]) -> bool {
        self.peers
            .get(peer)
            .and_then(|p| p.records.get(envelope))
            .is_some_and(|holders| *holders <= 1)
    }

    /// One more registration of `peer` holds `record`; `true` when the peer held no such
    /// record before (it is now stored, and costs its bytes).
    pub(super) fn hold(&mut self, peer: PeerId, record: &SignedRecord) -> bool {
        let state = self.peers.entry(peer).or_default();
        let holders = state.records.entry(HeldRecord(record.clone())).or_insert(0);
        *holders += 1;
        *holders == 1
    }

    /// `peer`'s registration in `namespace` is now `seq`, in `format` (its latest REGISTER).
    pub(super) fn registered(
        &mut self,
        peer: PeerId,
        namespace: Namespace,
        seq: u64,
        format: RecordFormat,
    ) {
        let state = self.peers.entry(peer).or_default();
        state.namespaces.insert(namespace, seq);
        state.format = Some(format);
    }

    /// Registration `seq` of `peer` in `namespace`, holding the record with `envelope`, is
    /// gone; `true` when that was the record's last holder (it is no longer stored).
    pub(super) fn removed(
        &mut self,
        peer: &PeerId,
        namespace: &Namespace,
        seq: u64,
        envelope: &[u8],
    ) -> bool {
        let Some(state) = self.peers.get_mut(peer) else {
            return false;
        };
        if state.namespaces.get(namespace) == Some(&seq) {
            state.namespaces.remove(namespace);
        }
        let mut released = false;
        if let Some(holders) = state.records.get_mut(envelope) {
            *holders -= 1;
            if *holders == 0 {
                state.records.remove(envelope);
                released = true;
            }
        }
        if state.namespaces.is_empty() && state.records.is_empty() {
            self.peers.remove(peer);
        }
        released
    }

    /// Checks the invariant against `index`, and that no peer holds more than
    /// `max_per_peer` registrations. O(n).
    pub(super) fn check(&self, index: &Index, max_per_peer: usize) -> Result<(), String> {
        let mut counted: HashMap<PeerId, HashMap<&[u8], usize>> = HashMap::new();
        for (seq, entry) in index.iter() {
            let peer = entry.record.peer_id();
            if self.existing(&peer, &entry.namespace) != Some(seq) {
                return Err(format!(
                    "entry {seq} is not the peer's registration in its namespace"
                ));
            }
            *counted
                .entry(peer)
                .or_default()
                .entry(entry.record.envelope_bytes())
                .or_insert(0) += 1;
        }
        let by_peer: usize = self.peers.values().map(|p| p.namespaces.len()).sum();
        if by_peer != index.len() {
            return Err("an index holds more or fewer entries than the store".into());
        }
        for (peer, state) in &self.peers {
            let counted = counted.remove(peer).unwrap_or_default();
            let held: HashMap<&[u8], usize> = state
                .records
                .iter()
                .map(|(r, n)| (r.0.envelope_bytes(), *n))
                .collect();
            if held != counted {
                return Err(format!(
                    "peer {peer}'s record holders disagree with its entries"
                ));
            }
            if state.namespaces.is_empty() {
                return Err(format!("peer {peer} is kept without registrations"));
            }
            if state.namespaces.len() > max_per_peer {
                return Err(format!("peer {peer} is over its registration limit"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::*;

    fn record(key: &Keypair, port: u16) -> SignedRecord {
        let addrs = vec![format!("/ip4/10.0.0.1/tcp/{port}").parse().unwrap()];
        SignedRecord::new(key, addrs, RecordFormat::Standard).unwrap()
    }

    #[test]
    fn given_a_record_in_two_namespaces_when_both_go_then_it_is_released_once_and_the_peer_forgotten(
    ) {
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let shared = record(&key, 1);
        let (a, b) = (Namespace::from_static("a"), Namespace::from_static("b"));
        let mut peers = Peers::default();

        assert!(peers.hold(peer, &shared), "the first holder stores it");
        peers.registered(peer, a.clone(), 1, RecordFormat::Standard);
        assert!(!peers.hold(peer, &shared), "the second shares it");
        peers.registered(peer, b.clone(), 2, RecordFormat::Standard);
        assert_eq!(peers.count_of(&peer), 2);
        assert_eq!(
            peers.held(&peer, shared.envelope_bytes()),
            Some(shared.clone())
        );
        assert!(!peers.is_last_holder(&peer, shared.envelope_bytes()));

        assert!(!peers.removed(&peer, &a, 1, shared.envelope_bytes()));
        assert!(peers.is_last_holder(&peer, shared.envelope_bytes()));
        assert!(peers.removed(&peer, &b, 2, shared.envelope_bytes()));
        assert_eq!(peers.count_of(&peer), 0);
        assert_eq!(peers.format(&peer), None, "the peer is forgotten");
    }

    #[test]
    fn given_a_replaced_registration_when_its_old_number_goes_then_the_new_one_stays() {
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let first = record(&key, 1);
        let ns = Namespace::from_static("a");
        let mut peers = Peers::default();
        peers.hold(peer, &first);
        peers.registered(peer, ns.clone(), 1, RecordFormat::Standard);
        // A refresh with the same record: the new holder is counted before the old goes.
        peers.hold(peer, &first);
        peers.registered(peer, ns.clone(), 2, RecordFormat::Standard);

        assert!(!peers.removed(&peer, &ns, 1, first.envelope_bytes()));
        assert_eq!(peers.existing(&peer, &ns), Some(2));
    }
}
