//! Shared by the client's swarm tests: swarms on the memory transport (noise + yamux), each
//! run in its own task that forwards behaviour events and accepts closures to run on the swarm.

#![allow(dead_code)]

use std::{fmt::Debug, time::Duration};

use futures::StreamExt;
use libp2p::{
    core::{transport::MemoryTransport, upgrade::Version, Transport},
    identity::Keypair,
    noise,
    swarm::{NetworkBehaviour, SwarmEvent},
    yamux, Multiaddr, PeerId, Swarm,
};
use tokio::{sync::mpsc, task::JoinHandle};

/// A safety net only: every wait ends on an event; this catches a hang.
pub const HANG: Duration = Duration::from_secs(30);

type Command<B> = Box<dyn FnOnce(&mut Swarm<B>) + Send>;

/// A swarm running in a task.
pub struct Node<B: NetworkBehaviour> {
    pub peer: PeerId,
    pub addr: Option<Multiaddr>,
    pub events: mpsc::UnboundedReceiver<B::ToSwarm>,
    /// Peers a connection was established with, in order.
    pub connected: mpsc::UnboundedReceiver<PeerId>,
    listener: Option<libp2p::core::transport::ListenerId>,
    commands: mpsc::UnboundedSender<Command<B>>,
    task: JoinHandle<()>,
}

pub fn memory_addr() -> Multiaddr {
    format!("/memory/{}", rand::random::<u64>())
        .parse()
        .unwrap()
}

pub fn swarm<B: NetworkBehaviour>(key: Keypair, behaviour: impl FnOnce(&Keypair) -> B) -> Swarm<B> {
    let peer = key.public().to_peer_id();
    let transport = MemoryTransport::default()
        .upgrade(Version::V1)
        .authenticate(noise::Config::new(&key).unwrap())
        .multiplex(yamux::Config::default())
        .boxed();
    Swarm::new(
        transport,
        behaviour(&key),
        peer,
        libp2p::swarm::Config::with_tokio_executor()
            .with_idle_connection_timeout(Duration::from_secs(60)),
    )
}

/// Starts `swarm` in a task, listening on `listen` (also made an external address) if given.
pub async fn spawn<B>(mut swarm: Swarm<B>, listen: Option<Multiaddr>) -> Node<B>
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Debug + Send + 'static,
{
    let mut listener = None;
    if let Some(addr) = &listen {
        listener = Some(swarm.listen_on(addr.clone()).unwrap());
        loop {
            if let SwarmEvent::NewListenAddr { .. } = swarm.select_next_some().await {
                break;
            }
        }
        swarm.add_external_address(addr.clone());
    }
    let peer = *swarm.local_peer_id();
    let (event_tx, events) = mpsc::unbounded_channel();
    let (connected_tx, connected) = mpsc::unbounded_channel();
    let (commands, mut command_rx) = mpsc::unbounded_channel::<Command<B>>();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                event = swarm.select_next_some() => {
                    match event {
                        SwarmEvent::Behaviour(e) => {
                            let _ = event_tx.send(e);
                        }
                        SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                            let _ = connected_tx.send(peer_id);
                        }
                        _ => {}
                    }
                }
                command = command_rx.recv() => match command {
                    Some(f) => f(&mut swarm),
                    None => return,
                },
            }
        }
    });
    Node {
        peer,
        addr: listen,
        events,
        connected,
        listener,
        commands,
        task,
    }
}

impl<B> Node<B>
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Debug + Send + 'static,
{
    /// Runs `f` on the swarm inside its task.
    pub fn run(&self, f: impl FnOnce(&mut Swarm<B>) + Send + 'static) {
        let _ = self.commands.send(Box::new(f));
    }

    /// Waits for the first event `f` maps to `Some`, skipping the others.
    pub async fn wait_for<T>(&mut self, mut f: impl FnMut(&B::ToSwarm) -> Option<T>) -> T {
        let peer = self.peer;
        tokio::time::timeout(HANG, async {
            loop {
                let event = self.events.recv().await.expect("node task ended");
                if let Some(t) = f(&event) {
                    return t;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{peer}: the awaited event never came"))
    }

    /// Waits until a connection to `peer` is established.
    pub async fn wait_connected(&mut self, peer: PeerId) {
        let me = self.peer;
        tokio::time::timeout(HANG, async {
            while self.connected.recv().await.expect("node task ended") != peer {}
        })
        .await
        .unwrap_or_else(|_| panic!("{me}: no connection to {peer}"))
    }

    /// Events received so far, without waiting.
    pub fn drain(&mut self) -> Vec<B::ToSwarm> {
        std::iter::from_fn(|| self.events.try_recv().ok()).collect()
    }

    /// Stops the task and drops the swarm (its listeners and connections close).
    pub async fn kill(self) {
        // The memory transport frees a port only when its listener is removed, not on drop.
        if let Some(id) = self.listener {
            let (done, removed) = tokio::sync::oneshot::channel();
            self.run(move |swarm| {
                swarm.remove_listener(id);
                let _ = done.send(());
            });
            let _ = removed.await;
        }
        self.task.abort();
        let _ = self.task.await;
    }
}
