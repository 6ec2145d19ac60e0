//! A behaviour that records the peer addresses other behaviours announce to the swarm
//! (`ToSwarm::NewExternalAddrOfPeer`, which is what makes `swarm.dial(peer_id)` work), and
//! reports each as an event.

use std::{
    collections::VecDeque,
    task::{Context, Poll},
};

use libp2p::{
    core::{transport::PortUse, Endpoint},
    swarm::{
        dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId,
};

/// Records every `(peer, address)` the swarm hears of.
#[derive(Default)]
pub struct Recorder {
    /// Everything heard so far, in order.
    pub seen: Vec<(PeerId, Multiaddr)>,
    to_report: VecDeque<(PeerId, Multiaddr)>,
}

impl NetworkBehaviour for Recorder {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = (PeerId, Multiaddr);

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::NewExternalAddrOfPeer(e) = event {
            self.seen.push((e.peer_id, e.addr.clone()));
            self.to_report.push_back((e.peer_id, e.addr.clone()));
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        e: THandlerOutEvent<Self>,
    ) {
        libp2p::core::util::unreachable(e)
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match self.to_report.pop_front() {
            Some(seen) => Poll::Ready(ToSwarm::GenerateEvent(seen)),
            None => Poll::Pending,
        }
    }
}
