//! TCP with listeners of our own: libp2p's TCP transport dials; listening sockets are made
//! here, without `SO_REUSEPORT`; dials from a chosen source address are made here too.
//!
//! libp2p-tcp sets `SO_REUSEPORT` on every listening socket (so that dials may leave from the
//! listening port). With it, a second process that sets it too binds the same port, and the
//! kernel shares the incoming connections between the two: two `serve` on one port took half
//! the clients each, and clients that knew one server's peer id failed on the other. Without
//! it, a second bind of the port fails, whoever tries: one server per port. Dials keep their
//! own ephemeral ports (a server has no NAT to punch through).
//!
//! libp2p-tcp dials from the address the kernel picks, or (port reuse) from a listening
//! socket's address: a client that must leave from another loopback address (`rendezvous
//! flood`'s attacker, which plays a machine other than the legitimate client's) would need a
//! listener of its own, one more file descriptor per connection. With a source address set,
//! this transport binds the dialing socket to it (an ephemeral port) before connecting.

use std::{
    collections::VecDeque,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures::{
    future::{self, BoxFuture, Ready},
    stream::SelectAll,
    FutureExt, Stream, StreamExt,
};
use futures_timer::Delay;
use if_watch::{tokio::IfWatcher, IfEvent};
use libp2p::{
    core::transport::{DialOpts, ListenerId, TransportError, TransportEvent},
    multiaddr::Protocol,
    tcp, Multiaddr,
};

/// Connections the kernel holds for a listener before `accept`: libp2p-tcp's default.
const LISTEN_BACKLOG: i32 = 1024;

/// How long a listener rests after a failed `accept` (out of file descriptors, say), which
/// would fail again at once: libp2p-tcp's pause.
const PAUSE_ON_ERROR: Duration = Duration::from_millis(100);

type Event = TransportEvent<Ready<Result<tcp::tokio::TcpStream, io::Error>>, io::Error>;

/// TCP: dials through libp2p's transport (or from a source address of our choosing), listens
/// on sockets without `SO_REUSEPORT`.
pub struct Transport {
    dialer: tcp::tokio::Transport,
    /// Dials to an address of this family leave from this address.
    source: Option<IpAddr>,
    listeners: SelectAll<Listener>,
    /// Listeners' first events (their address when it is not a wildcard).
    pending: VecDeque<Event>,
}

impl Transport {
    /// TCP with `nodelay` on every connection; dials to addresses of `source`'s family leave
    /// from `source` (the kernel's choice when `None`).
    pub fn new(source: Option<IpAddr>) -> Self {
        Self {
            dialer: tcp::tokio::Transport::new(tcp::Config::default().nodelay(true)),
            source,
            listeners: SelectAll::new(),
            pending: VecDeque::new(),
        }
    }
}

/// Connects to `to` from `source` (an ephemeral port), with `nodelay`.
async fn dial_from(source: IpAddr, to: SocketAddr) -> io::Result<tcp::tokio::TcpStream> {
    let socket = match to {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_nodelay(true)?;
    socket.bind(SocketAddr::new(source, 0))?;
    Ok(tcp::tokio::TcpStream(socket.connect(to).await?))
}

impl libp2p::Transport for Transport {
    type Output = tcp::tokio::TcpStream;
    type Error = io::Error;
    type ListenerUpgrade = Ready<Result<Self::Output, Self::Error>>;
    type Dial = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        let Some(socket_addr) = socket_address(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        let listener = Listener::bind(id, socket_addr).map_err(TransportError::Other)?;
        if listener.interfaces.is_none() {
            self.pending.push_back(TransportEvent::NewAddress {
                listener_id: id,
                listen_addr: tcp_multiaddr(listener.address.ip(), listener.address.port()),
            });
        }
        self.listeners.push(listener);
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        match self.listeners.iter_mut().find(|l| l.id == id) {
            Some(listener) => {
                listener.closing = true;
                true
            }
            None => false,
        }
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        let to = socket_address(&addr).filter(|to| to.port() != 0 && !to.ip().is_unspecified());
        match (self.source, to) {
            (Some(source), Some(to)) if source.is_ipv4() == to.is_ipv4() => {
                Ok(dial_from(source, to).boxed())
            }
            _ => self.dialer.dial(addr, opts),
        }
    }

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Event> {
        if let Some(event) = self.pending.pop_front() {
            return Poll::Ready(event);
        }
        match self.listeners.poll_next_unpin(cx) {
            Poll::Ready(Some(event)) => Poll::Ready(event),
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}

/// One listening socket, and the interfaces' addresses when it listens on a wildcard.
struct Listener {
    id: ListenerId,
    socket: tokio::net::TcpListener,
    address: SocketAddr,
    /// For `0.0.0.0` or `::`: each interface address is a listen address.
    interfaces: Option<IfWatcher>,
    /// After a failed accept.
    pause: Option<Delay>,
    /// Removed: `ListenerClosed` is the last event.
    closing: bool,
    closed: bool,
}

impl Listener {
    fn bind(id: ListenerId, address: SocketAddr) -> io::Result<Self> {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(
            Domain::for_address(address),
            Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        if address.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        // SO_REUSEADDR only lets a restarted server bind while old connections linger in
        // TIME_WAIT; unlike SO_REUSEPORT, it lets no second listener share the port.
        socket.set_reuse_address(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&address.into())?;
        socket.listen(LISTEN_BACKLOG)?;
        let socket = tokio::net::TcpListener::from_std(socket.into())?;
        let address = socket.local_addr()?;
        let interfaces = match address.ip().is_unspecified() {
            true => Some(IfWatcher::new()?),
            false => None,
        };
        Ok(Self {
            id,
            socket,
            address,
            interfaces,
            pause: None,
            closing: false,
            closed: false,
        })
    }

    /// An interface address came or went: a listen address of ours when of our family.
    fn on_interface(&self, event: io::Result<IfEvent>) -> Option<Event> {
        let listener_id = self.id;
        let ours = |ip: IpAddr| ip.is_ipv4() == self.address.is_ipv4();
        match event {
            Ok(IfEvent::Up(net)) if ours(net.addr()) => Some(TransportEvent::NewAddress {
                listener_id,
                listen_addr: tcp_multiaddr(net.addr(), self.address.port()),
            }),
            Ok(IfEvent::Down(net)) if ours(net.addr()) => Some(TransportEvent::AddressExpired {
                listener_id,
                listen_addr: tcp_multiaddr(net.addr(), self.address.port()),
            }),
            Ok(_) => None,
            Err(error) => Some(TransportEvent::ListenerError { listener_id, error }),
        }
    }
}

impl Stream for Listener {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if self.closed {
            return Poll::Ready(None);
        }
        if self.closing {
            self.closed = true;
            return Poll::Ready(Some(TransportEvent::ListenerClosed {
                listener_id: self.id,
                reason: Ok(()),
            }));
        }
        if let Some(pause) = &mut self.pause {
            if pause.poll_unpin(cx).is_pending() {
                return Poll::Pending;
            }
            self.pause = None;
        }
        while let Some(Poll::Ready(event)) = self
            .interfaces
            .as_mut()
            .map(|interfaces| interfaces.poll_next_unpin(cx))
        {
            let Some(event) = event else {
                self.interfaces = None;
                break;
            };
            if let Some(event) = self.on_interface(event) {
                return Poll::Ready(Some(event));
            }
        }
        match self.socket.poll_accept(cx) {
            Poll::Ready(Ok((stream, remote))) => {
                // Best effort, as libp2p-tcp does it on the socket before connecting.
                let _ = stream.set_nodelay(true);
                let local = stream.local_addr().unwrap_or(self.address);
                Poll::Ready(Some(TransportEvent::Incoming {
                    listener_id: self.id,
                    upgrade: future::ok(tcp::tokio::TcpStream(stream)),
                    local_addr: tcp_multiaddr(local.ip(), local.port()),
                    send_back_addr: tcp_multiaddr(remote.ip(), remote.port()),
                }))
            }
            Poll::Ready(Err(error)) => {
                let mut pause = Delay::new(PAUSE_ON_ERROR);
                // Registers the waker: the listener is polled again when the pause is over.
                let _ = pause.poll_unpin(cx);
                self.pause = Some(pause);
                Poll::Ready(Some(TransportEvent::ListenerError {
                    listener_id: self.id,
                    error,
                }))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The socket address of `/ip4|ip6/<ip>/tcp/<port>` (a trailing `/p2p/<peer>` allowed); `None`
/// for anything else, such as a WebSocket or QUIC address.
fn socket_address(address: &Multiaddr) -> Option<SocketAddr> {
    let mut parts = address.iter();
    let ip = match parts.next()? {
        Protocol::Ip4(ip) => IpAddr::from(ip),
        Protocol::Ip6(ip) => IpAddr::from(ip),
        _ => return None,
    };
    let Protocol::Tcp(port) = parts.next()? else {
        return None;
    };
    match (parts.next(), parts.next()) {
        (None, _) | (Some(Protocol::P2p(_)), None) => Some(SocketAddr::new(ip, port)),
        _ => None,
    }
}

fn tcp_multiaddr(ip: IpAddr, port: u16) -> Multiaddr {
    Multiaddr::empty().with(ip.into()).with(Protocol::Tcp(port))
}

#[cfg(test)]
mod tests {
    // That no other socket can share a listener's port: tests/server_cli.rs, through `serve`.
    use super::*;

    #[test]
    fn only_plain_tcp_addresses_are_ours() {
        let ours = |s: &str| socket_address(&s.parse().unwrap());
        assert_eq!(
            ours("/ip4/127.0.0.1/tcp/4001"),
            Some("127.0.0.1:4001".parse().unwrap())
        );
        assert_eq!(ours("/ip6/::1/tcp/0"), Some("[::1]:0".parse().unwrap()));
        assert_eq!(
            ours(
                "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWBwq3fAnRFu3LSCMfFCtwNBvCsySTQHYFqB4nAV58M2A5"
            ),
            Some("127.0.0.1:4001".parse().unwrap())
        );
        for other in [
            "/ip4/127.0.0.1/tcp/4001/ws",
            "/ip4/127.0.0.1/udp/4001/quic-v1",
            "/dns4/example.com/tcp/4001",
            "/ip4/127.0.0.1",
        ] {
            assert_eq!(ours(other), None, "{other}");
        }
    }

    #[tokio::test]
    async fn a_dial_with_a_source_address_leaves_from_it() {
        use libp2p::Transport as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = listener.local_addr().unwrap();
        let source: IpAddr = "127.0.0.2".parse().unwrap();
        let mut transport = Transport::new(Some(source));
        let dial = transport
            .dial(
                tcp_multiaddr(to.ip(), to.port()),
                DialOpts {
                    role: libp2p::core::Endpoint::Dialer,
                    port_use: libp2p::core::transport::PortUse::New,
                },
            )
            .unwrap();
        let (dialed, accepted) = tokio::join!(dial, listener.accept());
        let (_, from) = accepted.unwrap();
        assert_eq!(from.ip(), source);
        assert_eq!(dialed.unwrap().0.local_addr().unwrap().ip(), source);
    }
}
