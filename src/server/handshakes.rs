//! Incoming connections wait for a handshake slot instead of being refused.
//!
//! A handshake (noise, QUIC's TLS) costs CPU, so a server bounds how many run at once. Closing
//! the connections over that bound (what `libp2p::connection_limits`' pending cap does) refuses a
//! reconnect storm that the server could serve a moment later. [`Transport`] wraps the server's
//! transport and shapes the burst instead, as go-libp2p's upgrader does:
//!
//! - at most [`Config::with_max_in_progress`] handshakes run at once, and at most
//!   [`Config::with_max_per_ip`] of them for one source address, so one address (a flood, or a
//!   NAT full of peers) cannot take every slot from the others;
//! - connections accepted beyond that wait for a slot in arrival order, at most
//!   [`Config::with_max_accepted`] in all (a few KiB each);
//! - beyond that, the listener is not polled: new connections wait in the kernel's accept
//!   backlog (libp2p-tcp's is 1024), as they would for any busy server;
//! - a handshake must end within [`Config::with_timeout`] of getting its slot (a legitimate
//!   peer sends its handshake at once), and no connection waits for a slot longer than
//!   [`Config::with_max_wait`]: so connections that never finish their handshake hold a slot
//!   for a few seconds at most.
//!
//! Dialing is untouched.
//!
//! The queue is a pure core ([`Slots`] inside, no clock reads); the transport is its shell.

use std::{
    collections::{HashMap, VecDeque},
    future::Future,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
    time::Duration,
};

use futures::FutureExt;
use futures_timer::Delay;
use libp2p::{
    core::{
        multiaddr::Protocol,
        transport::{DialOpts, ListenerId, TransportError, TransportEvent},
    },
    Multiaddr,
};

/// Handshakes in progress at once (default of [`Config::with_max_in_progress`]): enough to keep
/// two cores busy with noise handshakes, few enough that each finishes in a fraction of a second.
pub const DEFAULT_MAX_IN_PROGRESS: usize = 128;

/// Handshakes one source address may have in progress at once (default of
/// [`Config::with_max_per_ip`]): a quarter of the slots, so others always have room.
pub const DEFAULT_MAX_PER_IP: usize = 32;

/// Connections accepted and not yet through their handshake, waiting or in progress (default of
/// [`Config::with_max_accepted`]). Beyond it, the kernel's backlog holds new connections.
pub const DEFAULT_MAX_ACCEPTED: usize = 4096;

/// How long a handshake may take once it has its slot (default of [`Config::with_timeout`]): a
/// noise handshake is one and a half round trips, so this allows for slow links.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an accepted connection may wait for a slot (default of [`Config::with_max_wait`]).
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(30);

/// The bounds of [`Transport`].
#[derive(Debug, Clone)]
pub struct Config {
    max_in_progress: usize,
    max_per_ip: usize,
    max_accepted: usize,
    timeout: Duration,
    max_wait: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_in_progress: DEFAULT_MAX_IN_PROGRESS,
            max_per_ip: DEFAULT_MAX_PER_IP,
            max_accepted: DEFAULT_MAX_ACCEPTED,
            timeout: DEFAULT_TIMEOUT,
            max_wait: DEFAULT_MAX_WAIT,
        }
    }
}

impl Config {
    /// Handshakes in progress at once (default [`DEFAULT_MAX_IN_PROGRESS`]; at least 1).
    pub fn with_max_in_progress(mut self, n: usize) -> Self {
        self.max_in_progress = n.max(1);
        self
    }

    /// Handshakes one source address may have in progress at once (default
    /// [`DEFAULT_MAX_PER_IP`]; at least 1).
    pub fn with_max_per_ip(mut self, n: usize) -> Self {
        self.max_per_ip = n.max(1);
        self
    }

    /// Connections accepted and not yet through their handshake (default
    /// [`DEFAULT_MAX_ACCEPTED`]; at least the handshakes in progress).
    pub fn with_max_accepted(mut self, n: usize) -> Self {
        self.max_accepted = n.max(1);
        self
    }

    /// How long a handshake may take once it has its slot (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long an accepted connection may wait for a slot (default [`DEFAULT_MAX_WAIT`]).
    pub fn with_max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// The longest an accepted connection may take to be established: its wait plus its
    /// handshake. Give the swarm at least this as its connection timeout.
    pub fn longest(&self) -> Duration {
        self.timeout.saturating_add(self.max_wait)
    }
}

/// Why an incoming connection did not become established.
#[derive(Debug, thiserror::Error)]
pub enum Error<E> {
    /// The wrapped transport failed.
    #[error(transparent)]
    Transport(E),
    /// The handshake did not finish within [`Config::with_timeout`] of getting its slot.
    #[error("the handshake took longer than {0:?}")]
    Timeout(Duration),
    /// The connection waited longer than [`Config::with_max_wait`] for a handshake slot.
    #[error("no handshake slot within {0:?}")]
    NoSlot(Duration),
}

/// A ticket in the queue: one accepted connection.
type Ticket = u64;

/// The pure queue of handshake slots.
#[derive(Debug)]
struct Slots {
    max_in_progress: usize,
    max_per_ip: usize,
    max_accepted: usize,
    in_progress: usize,
    per_ip: HashMap<IpAddr, usize>,
    /// Accepted connections waiting for a slot, in arrival order.
    waiting: VecDeque<(Ticket, Option<IpAddr>)>,
    next: Ticket,
}

impl Slots {
    fn new(config: &Config) -> Self {
        Self {
            max_in_progress: config.max_in_progress,
            max_per_ip: config.max_per_ip,
            max_accepted: config.max_accepted.max(config.max_in_progress),
            in_progress: 0,
            per_ip: HashMap::new(),
            waiting: VecDeque::new(),
            next: 0,
        }
    }

    /// Whether another connection may be accepted (taken from the listener).
    fn can_accept(&self) -> bool {
        self.in_progress + self.waiting.len() < self.max_accepted
    }

    /// An accepted connection from `ip` joins the queue.
    fn join(&mut self, ip: Option<IpAddr>) -> Ticket {
        let ticket = self.next;
        self.next += 1;
        self.waiting.push_back((ticket, ip));
        ticket
    }

    fn ip_has_room(&self, ip: &Option<IpAddr>) -> bool {
        ip.is_none_or(|ip| self.per_ip.get(&ip).copied().unwrap_or(0) < self.max_per_ip)
    }

    /// Gives free slots to waiting connections, oldest first, skipping those whose address
    /// has all it may have; returns the tickets that got one.
    fn grant(&mut self) -> Vec<Ticket> {
        let mut granted = Vec::new();
        let mut i = 0;
        while self.in_progress < self.max_in_progress && i < self.waiting.len() {
            let ip = self.waiting[i].1;
            if !self.ip_has_room(&ip) {
                i += 1;
                continue;
            }
            let (ticket, _) = self.waiting.remove(i).expect("i < len");
            self.in_progress += 1;
            if let Some(ip) = ip {
                *self.per_ip.entry(ip).or_insert(0) += 1;
            }
            granted.push(ticket);
        }
        granted
    }

    /// A connection left the queue without a slot (it waited too long, or was dropped).
    fn leave(&mut self, ticket: Ticket) {
        self.waiting.retain(|(t, _)| *t != ticket);
    }

    /// A handshake with a slot ended (established, failed, timed out or dropped).
    fn finish(&mut self, ip: Option<IpAddr>) {
        self.in_progress -= 1;
        if let Some(ip) = ip {
            if let Some(n) = self.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&ip);
                }
            }
        }
    }
}

/// The queue and the wakers of those waiting on it.
#[derive(Debug)]
struct Shared {
    slots: Slots,
    /// Waiting connections to wake when they get a slot.
    wakers: HashMap<Ticket, Waker>,
    /// Tickets given a slot that their connection has not seen yet.
    granted: std::collections::HashSet<Ticket>,
    /// The listener, to poll again when there is room to accept.
    listener: Option<Waker>,
}

impl Shared {
    /// Runs [`Slots::grant`] and wakes the connections that got a slot, and the listener when
    /// there is room to accept again.
    fn grant(&mut self) {
        for ticket in self.slots.grant() {
            self.granted.insert(ticket);
            if let Some(waker) = self.wakers.remove(&ticket) {
                waker.wake();
            }
        }
        if self.slots.can_accept() {
            if let Some(waker) = self.listener.take() {
                waker.wake();
            }
        }
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    // A panic while holding the lock leaves counts that are still consistent enough to go on.
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A transport whose incoming connections wait for a handshake slot (see the module docs).
#[derive(Debug)]
pub struct Transport<T> {
    inner: T,
    config: Config,
    shared: Arc<Mutex<Shared>>,
}

impl<T> Transport<T> {
    /// Wraps `inner` (the whole upgraded transport: its listener upgrades are the handshakes).
    pub fn new(inner: T, config: Config) -> Self {
        let shared = Shared {
            slots: Slots::new(&config),
            wakers: HashMap::new(),
            granted: Default::default(),
            listener: None,
        };
        Self {
            inner,
            config,
            shared: Arc::new(Mutex::new(shared)),
        }
    }

    /// Handshakes in progress now.
    pub fn in_progress(&self) -> usize {
        lock(&self.shared).slots.in_progress
    }
}

/// The source IP of a connection, from its `send_back_addr`.
fn source_ip(address: &Multiaddr) -> Option<IpAddr> {
    address.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

impl<T> libp2p::core::Transport for Transport<T>
where
    T: libp2p::core::Transport + Unpin,
    T::ListenerUpgrade: Send + Unpin + 'static,
    T::Error: 'static,
{
    type Output = T::Output;
    type Error = Error<T::Error>;
    type ListenerUpgrade = Handshake<T::ListenerUpgrade>;
    type Dial = futures::future::MapErr<T::Dial, fn(T::Error) -> Self::Error>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.inner
            .listen_on(id, addr)
            .map_err(|e| e.map(Error::Transport))
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        use futures::TryFutureExt;
        let dial = self
            .inner
            .dial(addr, opts)
            .map_err(|e| e.map(Error::Transport))?;
        Ok(dial.map_err(Error::Transport as fn(T::Error) -> Self::Error))
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        let this = self.get_mut();
        {
            let mut shared = lock(&this.shared);
            if !shared.slots.can_accept() {
                // Woken by `Shared::grant` when a handshake ends. Meanwhile the kernel holds
                // new connections in its backlog.
                shared.listener = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        let event = match Pin::new(&mut this.inner).poll(cx) {
            Poll::Ready(event) => event,
            Poll::Pending => return Poll::Pending,
        };
        Poll::Ready(match event {
            TransportEvent::Incoming {
                listener_id,
                upgrade,
                local_addr,
                send_back_addr,
            } => {
                let ip = source_ip(&send_back_addr);
                let ticket = {
                    let mut shared = lock(&this.shared);
                    let ticket = shared.slots.join(ip);
                    shared.grant();
                    ticket
                };
                TransportEvent::Incoming {
                    listener_id,
                    upgrade: Handshake {
                        shared: this.shared.clone(),
                        ticket,
                        ip,
                        state: State::Waiting {
                            upgrade: Some(upgrade),
                            deadline: Delay::new(this.config.max_wait),
                        },
                        config: this.config.clone(),
                    },
                    local_addr,
                    send_back_addr,
                }
            }
            other => other
                .map_upgrade(|_| unreachable!("only `Incoming` carries an upgrade"))
                .map_err(Error::Transport),
        })
    }
}

/// An incoming connection's handshake: first waiting for a slot, then running with a deadline.
pub struct Handshake<U> {
    shared: Arc<Mutex<Shared>>,
    ticket: Ticket,
    ip: Option<IpAddr>,
    state: State<U>,
    config: Config,
}

enum State<U> {
    Waiting {
        /// Taken when the slot is granted.
        upgrade: Option<U>,
        deadline: Delay,
    },
    Running {
        upgrade: U,
        deadline: Delay,
    },
    Done,
}

impl<U> std::fmt::Debug for Handshake<U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Waiting { .. } => "waiting",
            State::Running { .. } => "running",
            State::Done => "done",
        };
        f.debug_struct("Handshake")
            .field("ticket", &self.ticket)
            .field("state", &state)
            .finish()
    }
}

impl<U, O, E> Future for Handshake<U>
where
    U: Future<Output = Result<O, E>> + Unpin,
{
    type Output = Result<O, Error<E>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Waiting { upgrade, deadline } => {
                    let granted = {
                        let mut shared = lock(&this.shared);
                        let granted = shared.granted.remove(&this.ticket);
                        if !granted {
                            shared.wakers.insert(this.ticket, cx.waker().clone());
                        }
                        granted
                    };
                    if granted {
                        let upgrade = upgrade.take().expect("taken only here, once");
                        this.state = State::Running {
                            upgrade,
                            deadline: Delay::new(this.config.timeout),
                        };
                        continue;
                    }
                    if deadline.poll_unpin(cx).is_ready() {
                        this.abandon();
                        return Poll::Ready(Err(Error::NoSlot(this.config.max_wait)));
                    }
                    return Poll::Pending;
                }
                State::Running { upgrade, deadline } => {
                    if let Poll::Ready(result) = upgrade.poll_unpin(cx) {
                        this.release();
                        return Poll::Ready(result.map_err(Error::Transport));
                    }
                    if deadline.poll_unpin(cx).is_ready() {
                        this.release();
                        return Poll::Ready(Err(Error::Timeout(this.config.timeout)));
                    }
                    return Poll::Pending;
                }
                State::Done => return Poll::Pending,
            }
        }
    }
}

impl<U> Handshake<U> {
    /// Gives the slot back (once), letting the next connection start.
    fn release(&mut self) {
        if matches!(self.state, State::Running { .. }) {
            let mut shared = lock(&self.shared);
            shared.slots.finish(self.ip);
            shared.grant();
        }
        self.state = State::Done;
    }
}

impl<U> Handshake<U> {
    /// Leaves the queue without running (waited too long, or dropped while waiting); a slot
    /// granted meanwhile goes to the next connection.
    fn abandon(&mut self) {
        if matches!(self.state, State::Waiting { .. }) {
            let mut shared = lock(&self.shared);
            shared.wakers.remove(&self.ticket);
            if shared.granted.remove(&self.ticket) {
                shared.slots.finish(self.ip);
            } else {
                shared.slots.leave(self.ticket);
            }
            shared.grant();
        }
        self.state = State::Done;
    }
}

impl<U> Drop for Handshake<U> {
    fn drop(&mut self) {
        match self.state {
            State::Running { .. } => self.release(),
            State::Waiting { .. } => self.abandon(),
            State::Done => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(in_progress: usize, per_ip: usize, accepted: usize) -> Slots {
        Slots::new(
            &Config::default()
                .with_max_in_progress(in_progress)
                .with_max_per_ip(per_ip)
                .with_max_accepted(accepted),
        )
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, last]))
    }

    #[test]
    fn given_a_burst_over_the_slots_when_handshakes_end_then_the_waiting_start_in_order() {
        let mut s = slots(2, 2, 8);
        let tickets: Vec<Ticket> = (0..5).map(|_| s.join(ip(1))).collect();
        assert_eq!(s.grant(), tickets[..2]);
        assert_eq!(s.grant(), Vec::<Ticket>::new(), "no slot is free");
        s.finish(ip(1));
        assert_eq!(s.grant(), tickets[2..3]);
        s.finish(ip(1));
        s.finish(ip(1));
        assert_eq!(s.grant(), tickets[3..5]);
        assert_eq!(s.in_progress, 2);
    }

    #[test]
    fn given_one_address_holding_its_share_when_another_address_comes_then_it_goes_first() {
        let mut s = slots(4, 2, 16);
        let flood: Vec<Ticket> = (0..6).map(|_| s.join(ip(2))).collect();
        assert_eq!(s.grant(), flood[..2], "one address gets its share only");
        let legit = s.join(ip(1));
        assert_eq!(
            s.grant(),
            vec![legit],
            "a free slot goes past the flood's queue"
        );
        s.finish(ip(2));
        assert_eq!(s.grant(), flood[2..3]);
    }

    #[test]
    fn given_the_accept_bound_when_full_then_no_more_is_accepted_until_one_leaves() {
        let mut s = slots(1, 1, 3);
        let a = s.join(ip(1));
        let b = s.join(ip(1));
        assert!(s.can_accept());
        let c = s.join(ip(1));
        assert!(
            !s.can_accept(),
            "3 accepted and not through: the backlog holds the rest"
        );
        assert_eq!(s.grant(), vec![a]);
        assert!(!s.can_accept());
        s.leave(c);
        assert!(s.can_accept());
        s.finish(ip(1));
        assert_eq!(s.grant(), vec![b]);
        assert!(s.per_ip.len() == 1 && s.waiting.is_empty());
        s.finish(ip(1));
        assert!(
            s.per_ip.is_empty(),
            "counts of addresses without a handshake are dropped"
        );
    }

    #[test]
    fn an_address_is_read_from_the_send_back_address() {
        let address: Multiaddr = "/ip4/10.1.2.3/tcp/4001".parse().unwrap();
        assert_eq!(source_ip(&address), Some(IpAddr::from([10, 1, 2, 3])));
        let address: Multiaddr = "/ip6/::1/udp/4001/quic-v1".parse().unwrap();
        assert_eq!(source_ip(&address), Some("::1".parse().unwrap()));
        let address: Multiaddr = "/memory/1234".parse().unwrap();
        assert_eq!(source_ip(&address), None);
    }
}
