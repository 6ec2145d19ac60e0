//! Reading back a record this program verified before it stored it: the envelope and the peer
//! record inside it decoded without checking the signature again (a signature check costs some
//! 40 µs; a store that serves a page of 100 records it holds must not pay it per record).

use libp2p::{Multiaddr, PeerId};
use prost::Message as _;

use super::RecordFormat;

/// The signed envelope (libp2p's `envelope.proto`), only the fields read here.
#[derive(Clone, PartialEq, prost::Message)]
struct EnvelopePb {
    #[prost(bytes = "vec", tag = "2")]
    payload_type: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    payload: Vec<u8>,
}

/// The peer record both signed formats carry (libp2p's `peer_record.proto`).
#[derive(Clone, PartialEq, prost::Message)]
struct PeerRecordPb {
    #[prost(bytes = "vec", tag = "1")]
    peer_id: Vec<u8>,
    #[prost(uint64, tag = "2")]
    seq: u64,
    #[prost(message, repeated, tag = "3")]
    addresses: Vec<AddressInfoPb>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AddressInfoPb {
    #[prost(bytes = "vec", tag = "1")]
    multiaddr: Vec<u8>,
}

/// The payload type of the standard format ([RFC 0003]).
///
/// [RFC 0003]: https://github.com/libp2p/specs/blob/master/RFC/0003-routing-records.md
const STANDARD_PAYLOAD_TYPE: &[u8] = &[0x03, 0x01];
/// The payload type of the legacy format (rust-libp2p's `libp2p-rendezvous` 0.18).
const LEGACY_PAYLOAD_TYPE: &[u8] = b"/libp2p/routing-state-record";

/// Decodes a signed envelope of either format without verifying it: the signer (as the record
/// names it), the record's sequence number, its addresses and its format. `None` when `bytes`
/// is not such an envelope.
pub(super) fn decode(bytes: &[u8]) -> Option<(PeerId, u64, Vec<Multiaddr>, RecordFormat)> {
    let envelope = EnvelopePb::decode(bytes).ok()?;
    let format = match envelope.payload_type.as_slice() {
        STANDARD_PAYLOAD_TYPE => RecordFormat::Standard,
        LEGACY_PAYLOAD_TYPE => RecordFormat::Legacy,
        _ => return None,
    };
    let record = PeerRecordPb::decode(envelope.payload.as_slice()).ok()?;
    let peer = PeerId::from_bytes(&record.peer_id).ok()?;
    let addresses = record
        .addresses
        .into_iter()
        .map(|a| Multiaddr::try_from(a.multiaddr).ok())
        .collect::<Option<Vec<_>>>()?;
    Some((peer, record.seq, addresses, format))
}
