//! [`VerifiedRecords`]: each peer's last verified record, so a REGISTER that carries the same
//! envelope again (a refresh, or the record in another namespace) is not verified again.

use std::collections::HashMap;

use libp2p::PeerId;
use rendezvous_discovery::SignedRecord;

use super::{MAX_COUNTED_PEERS, VERIFIED_CACHE_BYTES};

/// The last record of each peer that passed every check here. Invariant: at most
/// [`MAX_COUNTED_PEERS`] peers, and `bytes` (their envelopes) at most [`VERIFIED_CACHE_BYTES`].
#[derive(Debug, Default)]
pub(super) struct VerifiedRecords {
    records: HashMap<PeerId, SignedRecord>,
    bytes: usize,
}

impl VerifiedRecords {
    /// `peer`'s verified record, if its envelope is `envelope` byte for byte.
    pub(super) fn get(&self, peer: &PeerId, envelope: &[u8]) -> Option<SignedRecord> {
        self.records
            .get(peer)
            .filter(|known| known.envelope_bytes() == envelope)
            .cloned()
    }

    /// Keeps `record` as `peer`'s last verified one, if it fits the bounds.
    pub(super) fn remember(&mut self, peer: PeerId, record: &SignedRecord) {
        let len = record.envelope_bytes().len();
        let replaced = self
            .records
            .get(&peer)
            .map_or(0, |r| r.envelope_bytes().len());
        let after = self.bytes - replaced + len;
        let fits = after <= VERIFIED_CACHE_BYTES;
        if fits && (replaced > 0 || self.records.len() < MAX_COUNTED_PEERS) {
            self.records.insert(peer, record.clone());
            self.bytes = after;
        }
    }

    /// Forgets `peer`'s record (its last connection here closed).
    pub(super) fn forget(&mut self, peer: &PeerId) {
        if let Some(record) = self.records.remove(peer) {
            self.bytes -= record.envelope_bytes().len();
        }
    }

    /// How many peers have a record kept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    /// The envelope bytes kept.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;
    use rendezvous_discovery::RecordFormat;

    use super::*;

    #[test]
    fn past_the_byte_cap_a_record_is_not_kept() {
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let address = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        let record = SignedRecord::new(&key, vec![address], RecordFormat::Standard).unwrap();
        let mut verified = VerifiedRecords {
            records: HashMap::new(),
            bytes: VERIFIED_CACHE_BYTES,
        };
        verified.remember(peer, &record);
        assert_eq!(verified.len(), 0);
        assert_eq!(verified.get(&peer, record.envelope_bytes()), None);
    }
}
