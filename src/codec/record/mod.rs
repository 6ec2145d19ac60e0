//! Peer records: [`SignedRecord`] holds what a REGISTER carries in `signedPeerRecord`, a
//! verified signed envelope in either format (bytes exactly as signed) or an unsigned
//! `PeerInfo`. Each format lives in its own module.

use std::{fmt, sync::Arc};

use libp2p::{
    core::signed_envelope::SignedEnvelope,
    identity::{Keypair, SigningError},
    Multiaddr, PeerId,
};

mod legacy;
mod peer_info;
mod standard;
mod stored;

/// The three layouts of `Register.signedPeerRecord` (field 2) in use: three generations of
/// rendezvous clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum RecordFormat {
    /// The libp2p standard signed envelope (go, js, nim, and this crate by default): domain
    /// `libp2p-peer-record`, payload type `[0x03, 0x01]`.
    #[default]
    Standard,
    /// rust-libp2p's `libp2p-rendezvous` 0.18 and earlier: a signed envelope with domain
    /// `libp2p-routing-state`, payload type `/libp2p/routing-state-record`.
    Legacy,
    /// The unsigned `PeerInfo { bytes id = 1; repeated bytes addrs = 2; }` of py-libp2p 0.8 and
    /// of go-libp2p-rendezvous before signed records. Nothing in it is signed: a server can only
    /// check that the peer on the connection (authenticated by the security handshake) is the
    /// peer it names; see [`SignedRecord`] for what that does and does not prove.
    PeerInfo,
}

impl RecordFormat {
    /// Whether records of this format are signed envelopes.
    pub fn is_signed(self) -> bool {
        self != RecordFormat::PeerInfo
    }
}

impl fmt::Display for RecordFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordFormat::Standard => f.write_str("standard"),
            RecordFormat::Legacy => f.write_str("legacy"),
            RecordFormat::PeerInfo => f.write_str("peer-info"),
        }
    }
}

/// A peer record as carried in `Register.signedPeerRecord`: a verified signed envelope
/// ([`RecordFormat::Standard`] or [`RecordFormat::Legacy`]), with its bytes kept exactly as the
/// peer signed and encoded them (re-encoding could change bytes another implementation relies
/// on), or an unsigned [`RecordFormat::PeerInfo`].
///
/// A signed record proves that the holder of the peer's key claimed these addresses, to anyone
/// who reads it. An unsigned `PeerInfo` proves nothing by itself: our server accepts one only
/// from the peer it names (the connection is authenticated by the security handshake), so it
/// means "this server saw the peer claim these addresses"; a reader trusts the server for that.
/// Neither proves that the addresses are reachable or belong to the peer; dialing one still
/// authenticates the peer id.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedRecord {
    peer: PeerId,
    addresses: Arc<[Multiaddr]>,
    seq: u64,
    format: RecordFormat,
    envelope: Arc<[u8]>,
}

impl SignedRecord {
    /// Signs a new record of `addresses` with `key` in the given `format` (a
    /// [`RecordFormat::PeerInfo`] is not signed: it only names the key's peer).
    pub fn new(
        key: &Keypair,
        addresses: Vec<Multiaddr>,
        format: RecordFormat,
    ) -> Result<Self, SigningError> {
        let record = match format {
            RecordFormat::Standard => standard::sign(key, addresses)?,
            RecordFormat::Legacy => legacy::sign(key, addresses)?,
            RecordFormat::PeerInfo => {
                return Ok(Self::peer_info(key.public().to_peer_id(), addresses.into()))
            }
        };
        let envelope = record.to_signed_envelope().into_protobuf_encoding();
        Ok(Self {
            peer: record.peer_id(),
            addresses: record.addresses().into(),
            seq: record.seq(),
            format,
            envelope: envelope.into(),
        })
    }

    /// An unsigned [`RecordFormat::PeerInfo`] record naming `peer` and `addresses`.
    fn peer_info(peer: PeerId, addresses: Arc<[Multiaddr]>) -> Self {
        let bytes = peer_info::encode(&peer, &addresses);
        Self {
            peer,
            addresses,
            seq: 0,
            format: RecordFormat::PeerInfo,
            envelope: bytes.into(),
        }
    }

    /// The same peer and addresses as an unsigned [`RecordFormat::PeerInfo`] (what a server
    /// hands out to readers of that layout); a `PeerInfo` is returned as it is.
    pub fn to_peer_info(&self) -> Self {
        if self.format == RecordFormat::PeerInfo {
            return self.clone();
        }
        Self::peer_info(self.peer, self.addresses.clone())
    }

    /// Decodes `Register.signedPeerRecord` bytes: a signed envelope in either format (verified;
    /// standard first), else an unsigned `PeerInfo` whose id is a peer id and whose addresses
    /// are multiaddrs. The two layouts cannot be confused: an envelope's field 1 is a public key,
    /// which never parses as a peer id, and a `PeerInfo` never parses as a signed envelope.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InvalidRecord> {
        match Self::from_envelope(bytes) {
            Ok(record) => Ok(record),
            Err(envelope_err) => match peer_info::decode(bytes) {
                Ok((peer, addresses)) => Ok(Self {
                    peer,
                    addresses: addresses.into(),
                    seq: 0,
                    format: RecordFormat::PeerInfo,
                    envelope: bytes.into(),
                }),
                Err(peer_info_err) => Err(InvalidRecord(format!(
                    "{envelope_err}; nor a PeerInfo: {peer_info_err}"
                ))),
            },
        }
    }

    /// Decodes `Register.signedPeerRecord` bytes that this program verified (with
    /// [`from_bytes`](Self::from_bytes)) before it stored them, **without checking the signature
    /// again**: a store reading back its own rows, as the binary's Redis store does for the
    /// registrations it serves. It yields what [`from_bytes`](Self::from_bytes) yielded for the
    /// same bytes. Never use it on bytes from the network: a forged envelope decodes.
    pub fn from_stored_bytes(bytes: &[u8]) -> Result<Self, InvalidRecord> {
        match stored::decode(bytes) {
            Some((peer, seq, addresses, format)) => Ok(Self {
                peer,
                addresses: addresses.into(),
                seq,
                format,
                envelope: bytes.into(),
            }),
            // Not a signed envelope: a PeerInfo has no signature to skip.
            None => Self::from_bytes(bytes),
        }
    }

    fn from_envelope(bytes: &[u8]) -> Result<Self, String> {
        let envelope = SignedEnvelope::from_protobuf_encoding(bytes)
            .map_err(|e| format!("not a signed envelope: {e}"))?;
        let (record, format) = match standard::open(envelope.clone()) {
            Ok(record) => (record, RecordFormat::Standard),
            Err(standard_err) => match legacy::open(envelope) {
                Ok(record) => (record, RecordFormat::Legacy),
                Err(legacy_err) => {
                    return Err(format!(
                        "neither a standard peer record ({standard_err}) nor a legacy \
                         routing-state record ({legacy_err})"
                    ))
                }
            },
        };
        Ok(Self {
            peer: record.peer_id(),
            addresses: record.addresses().into(),
            seq: record.seq(),
            format,
            envelope: bytes.into(),
        })
    }

    /// A record this server verified before and stored (the SQLite store reloads its
    /// registrations with this, without paying a signature check per record at start-up).
    /// The caller vouches that `envelope` is a verified envelope of `peer` with these
    /// `addresses`, `seq` and `format`.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn from_verified_parts(
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        seq: u64,
        format: RecordFormat,
        envelope: &[u8],
    ) -> Self {
        Self {
            peer,
            addresses: addresses.into(),
            seq,
            format,
            envelope: envelope.into(),
        }
    }

    /// The peer that signed the record.
    pub fn peer_id(&self) -> PeerId {
        self.peer
    }

    /// The addresses in the record.
    pub fn addresses(&self) -> &[Multiaddr] {
        &self.addresses
    }

    /// The record's sequence number (a timestamp, by convention; 0 for a `PeerInfo`).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Which layout the record has.
    pub fn format(&self) -> RecordFormat {
        self.format
    }

    /// The bytes carried in `Register.signedPeerRecord`: the envelope exactly as signed, or the
    /// `PeerInfo` exactly as received.
    pub fn envelope_bytes(&self) -> &[u8] {
        &self.envelope
    }
}

impl fmt::Debug for SignedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedRecord")
            .field("peer", &self.peer)
            .field("addresses", &self.addresses)
            .field("seq", &self.seq)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// Bytes that are neither a valid signed peer record (in either envelope format) nor a
/// `PeerInfo`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid signed peer record: {0}")]
pub struct InvalidRecord(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_record_formats_decode_and_keep_their_bytes() {
        for format in [RecordFormat::Standard, RecordFormat::Legacy] {
            let key = Keypair::ed25519_from_bytes([1; 32]).unwrap();
            let addrs = vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()];
            let rec = SignedRecord::new(&key, addrs, format).unwrap();
            let decoded = SignedRecord::from_bytes(rec.envelope_bytes()).unwrap();
            assert_eq!(decoded.format(), format);
            assert_eq!(decoded.peer_id(), key.public().to_peer_id());
            assert_eq!(decoded.envelope_bytes(), rec.envelope_bytes());
        }
    }

    fn key() -> Keypair {
        Keypair::ed25519_from_bytes([1; 32]).unwrap()
    }

    #[test]
    fn a_stored_record_reads_back_as_it_was_verified_in_every_format_without_a_check() {
        let addrs: Vec<Multiaddr> = vec![
            "/ip4/127.0.0.1/tcp/4001".parse().unwrap(),
            "/ip6/::1/udp/4001/quic-v1".parse().unwrap(),
        ];
        for format in [
            RecordFormat::Standard,
            RecordFormat::Legacy,
            RecordFormat::PeerInfo,
        ] {
            let record = SignedRecord::new(&key(), addrs.clone(), format).unwrap();
            let verified = SignedRecord::from_bytes(record.envelope_bytes()).unwrap();
            let stored = SignedRecord::from_stored_bytes(record.envelope_bytes()).unwrap();
            assert_eq!(stored, verified, "{format:?}");
            assert_eq!(stored.seq(), record.seq(), "{format:?}");
        }
        // It does not check the signature (that is its point): a flipped signature byte still
        // reads back, where the network's decoder refuses it.
        let record = signed(RecordFormat::Standard);
        let mut forged = record.envelope_bytes().to_vec();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(SignedRecord::from_bytes(&forged).is_err());
        assert_eq!(
            SignedRecord::from_stored_bytes(&forged).unwrap().peer_id(),
            record.peer_id()
        );
        assert!(SignedRecord::from_stored_bytes(b"not a record").is_err());
    }

    fn signed(format: RecordFormat) -> SignedRecord {
        let addrs = vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()];
        SignedRecord::new(&key(), addrs, format).unwrap()
    }

    #[test]
    fn a_peer_info_as_py_libp2p_writes_it_decodes_and_keeps_its_bytes() {
        // PeerInfo { id = 1: peer id bytes; addrs = 2: multiaddr bytes }, written by hand.
        let peer = key().public().to_peer_id();
        let addr: Multiaddr = "/ip4/10.0.0.1/tcp/4001".parse().unwrap();
        let mut bytes = vec![0x0a, peer.to_bytes().len() as u8];
        bytes.extend(peer.to_bytes());
        bytes.extend([0x12, addr.to_vec().len() as u8]);
        bytes.extend(addr.to_vec());
        let decoded = SignedRecord::from_bytes(&bytes).unwrap();
        assert_eq!(decoded.format(), RecordFormat::PeerInfo);
        assert_eq!(decoded.peer_id(), peer);
        assert_eq!(decoded.addresses(), std::slice::from_ref(&addr));
        assert_eq!(decoded.envelope_bytes(), bytes);
        // Ours is byte for byte the same.
        let ours = SignedRecord::new(&key(), vec![addr], RecordFormat::PeerInfo).unwrap();
        assert_eq!(ours.envelope_bytes(), bytes);
        assert!(!ours.format().is_signed());
        // A signed record handed out as PeerInfo keeps peer and addresses.
        for format in [RecordFormat::Standard, RecordFormat::Legacy] {
            let signed = signed(format);
            let info = signed.to_peer_info();
            assert_eq!(info.format(), RecordFormat::PeerInfo);
            let decoded = SignedRecord::from_bytes(info.envelope_bytes()).unwrap();
            assert_eq!(decoded.peer_id(), signed.peer_id());
            assert_eq!(decoded.addresses(), signed.addresses());
        }
    }

    #[test]
    fn the_layouts_are_never_confused() {
        // An envelope never decodes as a PeerInfo (its field 1 is a public key, not a peer id),
        // and a tampered envelope is refused rather than taken for one.
        for format in [RecordFormat::Standard, RecordFormat::Legacy] {
            let bytes = signed(format).envelope_bytes().to_vec();
            assert_eq!(SignedRecord::from_bytes(&bytes).unwrap().format(), format);
            let mut tampered = bytes.clone();
            let last = tampered.len() - 1;
            tampered[last] ^= 1;
            assert!(SignedRecord::from_bytes(&tampered).is_err());
        }
        // A PeerInfo whose id is not a peer id, or whose address is not a multiaddr, is refused.
        assert!(SignedRecord::from_bytes(&[0x0a, 0x02, 0x01, 0x02]).is_err());
        let peer = key().public().to_peer_id().to_bytes();
        let mut bad_addr = vec![0x0a, peer.len() as u8];
        bad_addr.extend(&peer);
        bad_addr.extend([0x12, 0x02, 0xff, 0xff]);
        assert!(SignedRecord::from_bytes(&bad_addr).is_err());
        // No id at all.
        assert!(SignedRecord::from_bytes(&[]).is_err());
    }
}
