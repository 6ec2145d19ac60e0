//! The standard signed peer record (go, js, nim, and this crate by default): envelope domain
//! `libp2p-peer-record`, payload type `[0x03, 0x01]`, as in libp2p's RFC 0003.

use libp2p::{
    core::{peer_record::PeerRecord, signed_envelope::SignedEnvelope},
    identity::{Keypair, SigningError},
    Multiaddr,
};

/// Signs a standard-format record of `addresses`.
pub(super) fn sign(key: &Keypair, addresses: Vec<Multiaddr>) -> Result<PeerRecord, SigningError> {
    PeerRecord::new_interop(key, addresses)
}

/// Opens `envelope` as a standard-format record; the error says why it is not one.
pub(super) fn open(envelope: SignedEnvelope) -> Result<PeerRecord, String> {
    PeerRecord::from_signed_envelope_interop(envelope).map_err(|e| e.to_string())
}
