//! `libp2p_rendezvous_server_connections{transport}`: the connections open now, by transport.
//!
//! libp2p-metrics counts connections established and closed (`protocols` label: the address
//! stack, such as `/ip4/tcp/ws`), which makes the connections open now a difference of two
//! series; this is that number as a gauge, with one bounded label an operator reads at once.

use libp2p::{core::ConnectedPoint, multiaddr::Protocol, Multiaddr};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabels {
    transport: &'static str,
}

/// The `transport` labels, all present from the start (at 0).
pub(super) const TRANSPORTS: [&str; 8] = [
    "tcp",
    "quic",
    "ws",
    "wss",
    "webrtc-direct",
    "webtransport",
    "circuit",
    "other",
];

/// The transport a connection runs on, from its remote address: the outermost transport of
/// the address (`/ip4/.../tcp/.../ws` is `ws`; `/tls/ws` and `/wss` are `wss`; a relayed
/// address is `circuit`); `other` for what none of the labels names (memory, unix sockets).
pub(super) fn transport_label(address: &Multiaddr) -> &'static str {
    let mut label = "other";
    for protocol in address.iter() {
        label = match protocol {
            Protocol::Tcp(_) => "tcp",
            Protocol::Quic | Protocol::QuicV1 => "quic",
            Protocol::Tls => "wss",
            Protocol::Ws(_) if label == "wss" => "wss",
            Protocol::Ws(_) => "ws",
            Protocol::Wss(_) => "wss",
            Protocol::WebRTCDirect => "webrtc-direct",
            Protocol::WebTransport => "webtransport",
            Protocol::P2pCircuit => "circuit",
            Protocol::Memory(_) | Protocol::Unix(_) => "other",
            _ => continue,
        };
    }
    label
}

/// The gauge family, one gauge per label.
#[derive(Debug)]
pub(super) struct Connections {
    open: [Gauge; TRANSPORTS.len()],
}

impl Connections {
    pub(super) fn new(registry: &mut Registry) -> Self {
        let family = Family::<TransportLabels, Gauge>::default();
        registry.register(
            "connections",
            "Connections open now, by transport: tcp, quic, ws, wss (also /tls/ws), \
             webrtc-direct, webtransport, circuit (relayed), other",
            family.clone(),
        );
        Self {
            open: TRANSPORTS
                .map(|transport| family.get_or_create_owned(&TransportLabels { transport })),
        }
    }

    fn gauge(&self, endpoint: &ConnectedPoint) -> &Gauge {
        let label = transport_label(endpoint.get_remote_address());
        let i = TRANSPORTS
            .iter()
            .position(|t| *t == label)
            .expect("transport_label returns one of TRANSPORTS");
        &self.open[i]
    }

    pub(super) fn established(&self, endpoint: &ConnectedPoint) {
        self.gauge(endpoint).inc();
    }

    pub(super) fn closed(&self, endpoint: &ConnectedPoint) {
        self.gauge(endpoint).dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_addresses_of_each_transport_then_the_label_is_the_outermost_transport() {
        for (address, label) in [
            ("/ip4/1.2.3.4/tcp/62649", "tcp"),
            ("/ip6/::1/tcp/62649/p2p/12D3KooWLrDxhD7GJ7VEN2bbkn6QiHvHBDp3xpbtmvMGDgWWxpnR", "tcp"),
            ("/ip4/1.2.3.4/udp/62649/quic-v1", "quic"),
            ("/ip4/1.2.3.4/tcp/62650/ws", "ws"),
            ("/dns4/rdv.example.org/tcp/443/wss", "wss"),
            ("/ip4/1.2.3.4/tcp/443/tls/ws", "wss"),
            ("/ip4/1.2.3.4/tcp/443/tls/sni/rdv.example.org/ws", "wss"),
            ("/ip4/1.2.3.4/udp/9/webrtc-direct", "webrtc-direct"),
            ("/ip4/1.2.3.4/udp/9/quic-v1/webtransport", "webtransport"),
            (
                "/ip4/1.2.3.4/tcp/62650/ws/p2p/12D3KooWLrDxhD7GJ7VEN2bbkn6QiHvHBDp3xpbtmvMGDgWWxpnR/p2p-circuit",
                "circuit",
            ),
            ("/memory/7", "other"),
            ("/ip4/1.2.3.4", "other"),
        ] {
            let address: Multiaddr = address.parse().unwrap();
            assert_eq!(transport_label(&address), label, "{address}");
        }
    }
}
