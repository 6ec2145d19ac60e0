//! Signed peer records: [`SignedRecord`] holds a verified record in either envelope format,
//! with the envelope bytes exactly as signed. Each format lives in its own module.

use std::{fmt, sync::Arc};

use libp2p::{
    core::signed_envelope::SignedEnvelope,
    identity::{Keypair, SigningError},
    Multiaddr, PeerId,
};

mod legacy;
mod standard;

/// The two signed-peer-record envelope formats in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum RecordFormat {
    /// The libp2p standard (go, js, nim, and this crate by default): domain
    /// `libp2p-peer-record`, payload type `[0x03, 0x01]`.
    #[default]
    Standard,
    /// rust-libp2p's `libp2p-rendezvous` 0.18 and earlier: domain `libp2p-routing-state`,
    /// payload type `/libp2p/routing-state-record`.
    Legacy,
}

impl fmt::Display for RecordFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordFormat::Standard => f.write_str("standard"),
            RecordFormat::Legacy => f.write_str("legacy"),
        }
    }
}

/// A verified signed peer record, with the envelope bytes kept exactly as the peer signed and
/// encoded them (re-encoding could change bytes another implementation relies on).
#[derive(Clone, PartialEq, Eq)]
pub struct SignedRecord {
    peer: PeerId,
    addresses: Arc<[Multiaddr]>,
    seq: u64,
    format: RecordFormat,
    envelope: Arc<[u8]>,
}

impl SignedRecord {
    /// Signs a new record of `addresses` with `key` in the given `format`.
    pub fn new(
        key: &Keypair,
        addresses: Vec<Multiaddr>,
        format: RecordFormat,
    ) -> Result<Self, SigningError> {
        let record = match format {
            RecordFormat::Standard => standard::sign(key, addresses)?,
            RecordFormat::Legacy => legacy::sign(key, addresses)?,
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

    /// Decodes and verifies envelope bytes in either format (standard first).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, InvalidRecord> {
        let envelope = SignedEnvelope::from_protobuf_encoding(bytes)
            .map_err(|e| InvalidRecord(format!("not a signed envelope: {e}")))?;
        let (record, format) = match standard::open(envelope.clone()) {
            Ok(record) => (record, RecordFormat::Standard),
            Err(standard_err) => match legacy::open(envelope) {
                Ok(record) => (record, RecordFormat::Legacy),
                Err(legacy_err) => {
                    return Err(InvalidRecord(format!(
                        "neither a standard peer record ({standard_err}) nor a legacy \
                         routing-state record ({legacy_err})"
                    )))
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

    /// The peer that signed the record.
    pub fn peer_id(&self) -> PeerId {
        self.peer
    }

    /// The addresses in the record.
    pub fn addresses(&self) -> &[Multiaddr] {
        &self.addresses
    }

    /// The record's sequence number (a timestamp, by convention).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Which envelope format the record was signed in.
    pub fn format(&self) -> RecordFormat {
        self.format
    }

    /// The envelope bytes exactly as signed.
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

/// Bytes that are not a valid signed peer record in either format.
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
}
