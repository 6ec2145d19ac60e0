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
//!   [`Config::with_max_accepted`] (4096) in all, a few KiB each;
//! - when that queue is full, the address with the most connections in it gives up its newest
//!   waiting one for a newcomer from another address, and a newcomer whose own address has the
//!   most is closed at once. This is the one refusal: it takes an address with thousands of
//!   handshakes pending (a flood; a reconnect storm from one address fits in the queue), and it
//!   keeps a flood from one address, or a few, from locking the others out;
//! - a handshake must end within [`Config::with_timeout`] of getting its slot (a legitimate
//!   peer sends its handshake at once), and no connection waits for a slot longer than
//!   [`Config::with_max_wait`]: so connections that never finish their handshake hold a slot
//!   for a few seconds at most.
//!
//! Dialing is untouched.
//!
//! The queue is a pure core (`Slots` inside, no clock reads); the transport is its shell.

use std::{
    collections::{HashMap, HashSet, VecDeque},
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
/// [`Config::with_max_accepted`]): a reconnect storm of a few thousand clients fits.
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
    /// The queue was full and the connection's source address had the most connections in it
    /// (refused at once, or later to make room for another address's).
    #[error("the handshake queue is full and this address has the most connections in it")]
    QueueFull,
}

/// A ticket in the queue: one accepted connection.
type Ticket = u64;

/// What [`Slots::join`] did with a new connection.
#[derive(Debug, PartialEq, Eq)]
enum Join {
    /// Queued, in place of `evicted` when the queue was full.
    Queued {
        ticket: Ticket,
        evicted: Option<Ticket>,
    },
    /// The queue is full and the connection's address has the most connections in it.
    Refused,
}

/// What one source address holds.
#[derive(Debug, Default, Clone, Copy)]
struct PerIp {
    /// Handshakes running.
    in_progress: usize,
    /// Connections accepted and not through: waiting or running.
    accepted: usize,
}

/// The pure queue of handshake slots.
#[derive(Debug)]
struct Slots {
    max_in_progress: usize,
    max_per_ip: usize,
    max_accepted: usize,
    in_progress: usize,
    per_ip: HashMap<IpAddr, PerIp>,
    /// Accepted connections waiting for a slot, in arrival order.
    waiting: VecDeque<(Ticket, Option<IpAddr>)>,
    next: Ticket,
}

impl Slots {
    fn new(config: &Config) -> Self {
        let max_accepted = config.max_accepted.max(config.max_in_progress);
        Self {
            max_in_progress: config.max_in_progress,
            max_per_ip: config.max_per_ip,
            max_accepted,
            in_progress: 0,
            per_ip: HashMap::new(),
            waiting: VecDeque::new(),
            next: 0,
        }
    }

    /// An accepted connection from `ip` joins the queue. When the queue is full, the address
    /// with the most connections in it gives up its newest waiting one for the newcomer, unless
    /// the newcomer's address would then have the most: then the newcomer is refused.
    fn join(&mut self, ip: Option<IpAddr>) -> Join {
        let mut evicted = None;
        if self.in_progress + self.waiting.len() >= self.max_accepted {
            let ours = ip.map_or(0, |ip| self.per_ip.get(&ip).map_or(0, |h| h.accepted));
            let busiest = self
                .waiting
                .iter()
                .filter_map(|(_, ip)| *ip)
                .map(|ip| (self.per_ip.get(&ip).map_or(0, |h| h.accepted), ip))
                .max();
            match busiest {
                Some((most, busiest)) if ours + 1 < most => {
                    let i = self
                        .waiting
                        .iter()
                        .rposition(|(_, ip)| *ip == Some(busiest))
                        .expect("the busiest address has a waiting connection");
                    let (ticket, _) = self.waiting.remove(i).expect("found at i");
                    self.release_ip(Some(busiest), false);
                    evicted = Some(ticket);
                }
                _ => return Join::Refused,
            }
        }
        if let Some(ip) = ip {
            self.per_ip.entry(ip).or_default().accepted += 1;
        }
        let ticket = self.next;
        self.next += 1;
        self.waiting.push_back((ticket, ip));
        Join::Queued { ticket, evicted }
    }

    fn ip_has_room(&self, ip: &Option<IpAddr>) -> bool {
        ip.is_none_or(|ip| {
            self.per_ip
                .get(&ip)
                .is_none_or(|held| held.in_progress < self.max_per_ip)
        })
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
                self.per_ip.entry(ip).or_default().in_progress += 1;
            }
            granted.push(ticket);
        }
        granted
    }

    /// Counts one connection of `ip` less, `running` if it had a slot.
    fn release_ip(&mut self, ip: Option<IpAddr>, running: bool) {
        let Some(ip) = ip else {
            return;
        };
        if let Some(held) = self.per_ip.get_mut(&ip) {
            held.accepted = held.accepted.saturating_sub(1);
            if running {
                held.in_progress = held.in_progress.saturating_sub(1);
            }
            if held.accepted == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// A connection left the queue without a slot (it waited too long, or was dropped).
    fn leave(&mut self, ticket: Ticket) {
        if let Some(i) = self.waiting.iter().position(|(t, _)| *t == ticket) {
            let (_, ip) = self.waiting.remove(i).expect("found at i");
            self.release_ip(ip, false);
        }
    }

    /// A handshake with a slot ended (established, failed, timed out or dropped).
    fn finish(&mut self, ip: Option<IpAddr>) {
        self.in_progress -= 1;
        self.release_ip(ip, true);
    }
}

/// The queue and the wakers of those waiting on it.
#[derive(Debug)]
struct Shared {
    slots: Slots,
    /// Waiting connections to wake when they get a slot.
    wakers: HashMap<Ticket, Waker>,
    /// Tickets given a slot that their connection has not seen yet.
    granted: HashSet<Ticket>,
    /// Tickets that lost their place to a newcomer and have not seen it yet.
    evicted: HashSet<Ticket>,
}

impl Shared {
    /// Runs [`Slots::grant`] and wakes the connections that got a slot.
    fn grant(&mut self) {
        for ticket in self.slots.grant() {
            self.granted.insert(ticket);
            self.wake(ticket);
        }
    }

    fn wake(&mut self, ticket: Ticket) {
        if let Some(waker) = self.wakers.remove(&ticket) {
            waker.wake();
        }
    }

    /// A new connection from `ip` joins the queue; `None` when it is refused.
    fn join(&mut self, ip: Option<IpAddr>) -> Option<Ticket> {
        let Join::Queued { ticket, evicted } = self.slots.join(ip) else {
            return None;
        };
        if let Some(evicted) = evicted {
            self.evicted.insert(evicted);
            self.wake(evicted);
        }
        self.grant();
        Some(ticket)
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
            granted: HashSet::new(),
            evicted: HashSet::new(),
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
                let ticket = lock(&this.shared).join(ip);
                let state = match ticket {
                    Some(_) => State::Waiting {
                        upgrade: Some(upgrade),
                        deadline: Delay::new(this.config.max_wait),
                    },
                    // Dropped at once: the connection closes.
                    None => State::Refused,
                };
                TransportEvent::Incoming {
                    listener_id,
                    upgrade: Handshake {
                        shared: this.shared.clone(),
                        ticket: ticket.unwrap_or(Ticket::MAX),
                        ip,
                        state,
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
    /// Its address had a quarter of the queue already.
    Refused,
    Done,
}

impl<U> std::fmt::Debug for Handshake<U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Waiting { .. } => "waiting",
            State::Running { .. } => "running",
            State::Refused => "refused",
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
                    let (granted, evicted) = {
                        let mut shared = lock(&this.shared);
                        let granted = shared.granted.remove(&this.ticket);
                        let evicted = shared.evicted.remove(&this.ticket);
                        if !granted && !evicted {
                            shared.wakers.insert(this.ticket, cx.waker().clone());
                        }
                        (granted, evicted)
                    };
                    if evicted {
                        this.state = State::Done;
                        return Poll::Ready(Err(Error::QueueFull));
                    }
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
                State::Refused => {
                    this.state = State::Done;
                    return Poll::Ready(Err(Error::QueueFull));
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
            shared.evicted.remove(&self.ticket);
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
            State::Refused | State::Done => {}
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

    fn queued(join: Join) -> Ticket {
        match join {
            Join::Queued { ticket, .. } => ticket,
            Join::Refused => panic!("refused"),
        }
    }

    #[test]
    fn given_a_burst_over_the_slots_when_handshakes_end_then_the_waiting_start_in_order() {
        let mut s = slots(2, 2, 8);
        let tickets: Vec<Ticket> = (0..5).map(|_| queued(s.join(ip(1)))).collect();
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
        let flood: Vec<Ticket> = (0..6).map(|_| queued(s.join(ip(2)))).collect();
        assert_eq!(s.grant(), flood[..2], "one address gets its share only");
        let legit = queued(s.join(ip(1)));
        assert_eq!(
            s.grant(),
            vec![legit],
            "a free slot goes past the flood's queue"
        );
        s.finish(ip(2));
        assert_eq!(s.grant(), flood[2..3]);
    }

    #[test]
    fn given_a_full_queue_when_another_address_comes_then_the_busiest_gives_up_its_newest() {
        let mut s = slots(1, 1, 4);
        let flood: Vec<Ticket> = (0..4).map(|_| queued(s.join(ip(2)))).collect();
        assert_eq!(s.grant(), flood[..1]);
        // Full: the flood's own newcomer is refused, another address's takes a place.
        assert_eq!(s.join(ip(2)), Join::Refused);
        let Join::Queued {
            ticket: legit,
            evicted,
        } = s.join(ip(1))
        else {
            panic!("the newcomer of another address is refused");
        };
        assert_eq!(
            evicted,
            Some(flood[3]),
            "the busiest address's newest waiting one goes"
        );
        // A second address with one connection cannot push the first's out: it is not busier.
        let Join::Queued { evicted, .. } = s.join(ip(3)) else {
            panic!("refused");
        };
        assert_eq!(evicted, Some(flood[2]));
        assert_eq!(
            s.join(ip(3)),
            Join::Refused,
            "ties refuse: 2 + 1 is not below 2"
        );
        s.finish(ip(2));
        assert_eq!(s.grant(), vec![flood[1]]);
        s.finish(ip(2));
        assert_eq!(s.grant(), vec![legit]);
    }

    #[test]
    fn given_waiting_connections_when_they_leave_then_their_address_is_forgotten() {
        let mut s = slots(1, 1, 8);
        let a = queued(s.join(ip(1)));
        let b = queued(s.join(ip(2)));
        assert_eq!(s.grant(), vec![a]);
        s.leave(b);
        s.leave(b);
        assert_eq!(s.per_ip.len(), 1, "only the running address is counted");
        s.finish(ip(1));
        assert!(s.per_ip.is_empty() && s.waiting.is_empty() && s.in_progress == 0);
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
