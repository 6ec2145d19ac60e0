//! The legacy signed routing-state record of rust-libp2p's `libp2p-rendezvous` 0.18 and earlier:
//! envelope domain `libp2p-routing-state`, payload type `/libp2p/routing-state-record`. Those
//! peers sign only this format and cannot decode the standard one.

use libp2p::{
    core::{peer_record::PeerRecord, signed_envelope::SignedEnvelope},
    identity::{Keypair, SigningError},
    Multiaddr,
};

/// Signs a legacy-format record of `addresses`.
pub(super) fn sign(key: &Keypair, addresses: Vec<Multiaddr>) -> Result<PeerRecord, SigningError> {
    PeerRecord::new(key, addresses)
}

/// Opens `envelope` as a legacy-format record; the error says why it is not one.
pub(super) fn open(envelope: SignedEnvelope) -> Result<PeerRecord, String> {
    PeerRecord::from_signed_envelope(envelope).map_err(|e| e.to_string())
}
