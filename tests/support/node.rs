//! A swarm running in its own task: its behaviour events and established connections come out
//! of channels, and closures sent to it run on the swarm. For tests with several peers that
//! must all make progress while the test waits on one of them.

use std::fmt::Debug;

use futures::StreamExt;
use libp2p::{
    core::transport::ListenerId,
    swarm::{NetworkBehaviour, SwarmEvent},
    Multiaddr, PeerId, Swarm,
};
use tokio::{sync::mpsc, task::JoinHandle};

use super::{memory_addr, WithIdentify, WithIdentifyEvent, HANG};

type Command<B> = Box<dyn FnOnce(&mut Swarm<B>) + Send>;

/// A swarm running in a task; `E` is what it reports of its behaviour's events (all of them
/// by default).
pub struct Node<B: NetworkBehaviour, E = <B as NetworkBehaviour>::ToSwarm> {
    pub peer: PeerId,
    addr: Option<Multiaddr>,
    events: mpsc::UnboundedReceiver<E>,
    /// Peers a connection was established with, in order.
    connected: mpsc::UnboundedReceiver<PeerId>,
    listener: Option<ListenerId>,
    commands: mpsc::UnboundedSender<Command<B>>,
    task: JoinHandle<()>,
}

/// Starts `swarm` in a task, listening on a new memory address (also its external address).
pub async fn spawn<B>(swarm: Swarm<B>) -> Node<B>
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Debug + Send + 'static,
{
    spawn_at(swarm, memory_addr()).await
}

/// Starts `swarm` (rendezvous next to identify) in a task like [`spawn`], reporting only the
/// rendezvous behaviour's events.
pub async fn spawn_with_identify<B>(
    swarm: Swarm<WithIdentify<B>>,
) -> Node<WithIdentify<B>, B::ToSwarm>
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Debug + Send + 'static,
{
    spawn_with_identify_at(swarm, memory_addr()).await
}

/// [`spawn_with_identify`] at `addr` (see [`spawn_at`]).
pub async fn spawn_with_identify_at<B>(
    mut swarm: Swarm<WithIdentify<B>>,
    addr: Multiaddr,
) -> Node<WithIdentify<B>, B::ToSwarm>
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Debug + Send + 'static,
{
    let listener = listen(&mut swarm, addr.clone()).await;
    start(swarm, Some(addr), Some(listener), |e| match e {
        WithIdentifyEvent::Rendezvous(e) => Some(e),
        WithIdentifyEvent::Identify(_) => None,
    })
}

/// [`spawn_with_identify`] for a swarm on TCP ([`super::tcp::swarm`]): it listens on a free
/// 127.0.0.1 port, and the address it gets is its external address.
pub async fn spawn_with_identify_on_tcp<B>(
    swarm: Swarm<WithIdentify<B>>,
) -> Node<WithIdentify<B>, B::ToSwarm>
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Debug + Send + 'static,
{
    spawn_with_identify_on(swarm, "/ip4/127.0.0.1/tcp/0").await
}

/// [`spawn_with_identify`] listening on `listen` (an address with port 0, such as
/// `/ip4/127.0.0.1/udp/0/webrtc-direct`): the address it gets is its external address.
pub async fn spawn_with_identify_on<B>(
    mut swarm: Swarm<WithIdentify<B>>,
    listen: &str,
) -> Node<WithIdentify<B>, B::ToSwarm>
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Debug + Send + 'static,
{
    let listener = swarm
        .listen_on(listen.parse().expect("a multiaddr"))
        .expect("the swarm listens");
    let addr = tokio::time::timeout(HANG, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                return address;
            }
        }
    })
    .await
    .expect("the swarm listens");
    swarm.add_external_address(addr.clone());
    start(swarm, Some(addr), Some(listener), |e| match e {
        WithIdentifyEvent::Rendezvous(e) => Some(e),
        WithIdentifyEvent::Identify(_) => None,
    })
}

/// Listens on `addr`, made an external address too.
async fn listen<B: NetworkBehaviour>(swarm: &mut Swarm<B>, addr: Multiaddr) -> ListenerId {
    let listener = swarm.listen_on(addr.clone()).expect("a memory address");
    tokio::time::timeout(HANG, async {
        loop {
            if let SwarmEvent::NewListenAddr { .. } = swarm.select_next_some().await {
                return;
            }
        }
    })
    .await
    .expect("the swarm listens");
    swarm.add_external_address(addr);
    listener
}

/// Starts `swarm` in a task, listening on `addr` (also its external address): a restarted
/// server comes back at the address of the one it replaces.
pub async fn spawn_at<B>(mut swarm: Swarm<B>, addr: Multiaddr) -> Node<B>
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Debug + Send + 'static,
{
    let listener = listen(&mut swarm, addr.clone()).await;
    start(swarm, Some(addr), Some(listener), Some)
}

/// Starts `swarm` in a task as it is: listening or not (then it only dials); its address is
/// its first external address, if any.
pub fn spawn_as_is<B>(swarm: Swarm<B>) -> Node<B>
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Debug + Send + 'static,
{
    let addr = swarm.external_addresses().next().cloned();
    start(swarm, addr, None, Some)
}

fn start<B, E>(
    mut swarm: Swarm<B>,
    addr: Option<Multiaddr>,
    listener: Option<ListenerId>,
    report: impl Fn(B::ToSwarm) -> Option<E> + Send + 'static,
) -> Node<B, E>
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Debug + Send + 'static,
    E: Send + 'static,
{
    let peer = *swarm.local_peer_id();
    let (event_tx, events) = mpsc::unbounded_channel();
    let (connected_tx, connected) = mpsc::unbounded_channel();
    let (commands, mut command_rx) = mpsc::unbounded_channel::<Command<B>>();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                event = swarm.select_next_some() => match event {
                    SwarmEvent::Behaviour(e) => {
                        if let Some(e) = report(e) {
                            let _ = event_tx.send(e);
                        }
                    }
                    SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                        let _ = connected_tx.send(peer_id);
                    }
                    _ => {}
                },
                command = command_rx.recv() => match command {
                    Some(f) => f(&mut swarm),
                    None => return,
                },
            }
        }
    });
    Node {
        peer,
        addr,
        events,
        connected,
        listener,
        commands,
        task,
    }
}

impl<B, E> Node<B, E>
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Debug + Send + 'static,
{
    /// The address it listens on (and announces).
    pub fn addr(&self) -> Multiaddr {
        self.addr.clone().expect("the node listens")
    }

    /// Runs `f` on the swarm inside its task.
    pub fn run(&self, f: impl FnOnce(&mut Swarm<B>) + Send + 'static) {
        let _ = self.commands.send(Box::new(f));
    }

    /// Runs `f` on the swarm inside its task and returns what it returned.
    pub async fn ask<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Swarm<B>) -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.run(move |swarm| {
            let _ = tx.send(f(swarm));
        });
        rx.await.expect("the node task runs")
    }

    /// Dials `addr` from inside the task.
    pub fn dial(&self, addr: Multiaddr) {
        self.run(move |swarm| swarm.dial(addr).expect("the address is dialable"));
    }

    /// Waits for the first event `f` maps to `Some`, skipping the others.
    pub async fn wait_for<T>(&mut self, mut f: impl FnMut(&E) -> Option<T>) -> T {
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

    /// Waits for the first event `f` takes (maps to `Some`), dropping the others: for events
    /// that carry something the test must own, such as a raw stream.
    pub async fn take<T>(&mut self, mut f: impl FnMut(E) -> Option<T>) -> T {
        let peer = self.peer;
        tokio::time::timeout(HANG, async {
            loop {
                let event = self.events.recv().await.expect("node task ended");
                if let Some(t) = f(event) {
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
    pub fn drain(&mut self) -> Vec<E> {
        std::iter::from_fn(|| self.events.try_recv().ok()).collect()
    }

    /// Stops the task and drops the swarm (its listeners and connections close).
    pub async fn kill(self) {
        // The memory transport frees a port only when its listener is removed, not on drop.
        if let Some(id) = self.listener {
            self.ask(move |swarm| swarm.remove_listener(id)).await;
        }
        self.task.abort();
        let _ = self.task.await;
    }
}
