//! The unsigned `PeerInfo { bytes id = 1; repeated bytes addrs = 2; }` of py-libp2p 0.8 and of
//! go-libp2p-rendezvous before signed records, carried in the same field as the signed envelope
//! (`Register.signedPeerRecord`, field 2). Nothing in it is signed.

use libp2p::{Multiaddr, PeerId};
use prost::Message as _;

/// The message as py-libp2p 0.8 defines it.
#[derive(Clone, PartialEq, prost::Message)]
struct PeerInfoPb {
    #[prost(bytes = "vec", optional, tag = "1")]
    id: Option<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    addrs: Vec<Vec<u8>>,
}

/// Encodes `peer` and `addresses` as a `PeerInfo`, fields in number order as py-libp2p writes
/// them.
pub(super) fn encode(peer: &PeerId, addresses: &[Multiaddr]) -> Vec<u8> {
    PeerInfoPb {
        id: Some(peer.to_bytes()),
        addrs: addresses.iter().map(|a| a.to_vec()).collect(),
    }
    .encode_to_vec()
}

/// Decodes a `PeerInfo` whose id is a peer id and whose addresses are multiaddrs; the error says
/// why `bytes` is not one.
pub(super) fn decode(bytes: &[u8]) -> Result<(PeerId, Vec<Multiaddr>), String> {
    let pb = PeerInfoPb::decode(bytes).map_err(|e| format!("not a protobuf: {e}"))?;
    let id = pb.id.ok_or("no id (field 1)")?;
    let peer = PeerId::from_bytes(&id).map_err(|e| format!("id is not a peer id: {e}"))?;
    let addresses = pb
        .addrs
        .into_iter()
        .map(|a| Multiaddr::try_from(a).map_err(|e| format!("an address is not a multiaddr: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((peer, addresses))
}
