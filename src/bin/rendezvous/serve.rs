//! `rendezvous serve`: the rendezvous server on TCP, QUIC and WebSocket, with identify and
//! ping.

use std::{io::Write, net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use futures::StreamExt;
use libp2p::{
    connection_limits, identify, identity::Keypair, ping, swarm::NetworkBehaviour,
    swarm::SwarmEvent, Multiaddr, PeerId, StreamProtocol, Swarm,
};
use rendezvous_discovery::{
    server::{self, ServedFormats},
    Ttl,
};

use crate::{
    common::{build_swarm_with, load_or_create_identity, CliError, CliResult, Transport},
    data_dir,
    metrics::Exporter,
    output::{HeldBack, Throttle, WARN_EVERY},
    signals::Signals,
    slim::Slim,
};

/// Established connections one peer may hold: a node may reach the server over TCP and QUIC at
/// once, and reconnect before the old connection is gone.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: u32 = 4;

/// Seconds a connection with no registration and no request in flight stays open.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 30;

/// File descriptors the server needs besides one per connection: listeners, the database, the
/// metrics endpoint, logs, and connections closing.
const FILES_BESIDE_CONNECTIONS: u64 = 256;

/// QUIC receive windows: per stream and per connection, in bytes. QUIC's defaults (10 MB and
/// 15 MB) would let one connection make the server buffer 15 MB.
pub const QUIC_WINDOWS: (u32, u32) = (256 * 1024, 1024 * 1024);

/// The listen addresses of `serve` without `--listen`: TCP and QUIC on port 62649, and
/// WebSocket (for browsers) on the next port, 62650, as go- and js-libp2p nodes put WebSocket
/// on the port after TCP's; in a build with WebRTC-direct, that too (for browsers) on UDP port
/// 62650 (QUIC has UDP 62649). Every IPv4 address of the host.
pub const DEFAULT_LISTEN: &[&str] = &[
    "/ip4/0.0.0.0/tcp/62649",
    "/ip4/0.0.0.0/udp/62649/quic-v1",
    "/ip4/0.0.0.0/tcp/62650/ws",
    #[cfg(feature = "webrtc")]
    "/ip4/0.0.0.0/udp/62650/webrtc-direct",
];

/// Flags of `rendezvous serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (repeatable): TCP (/tcp/PORT), QUIC (/udp/PORT/quic-v1),
    /// WebSocket (/tcp/PORT/ws), secure WebSocket (/tcp/PORT/wss, with --tls-cert and
    /// --tls-key), or WebRTC-direct (/udp/PORT/webrtc-direct, in builds with the `webrtc`
    /// feature; its certificate is kept in the data directory). Each TCP port serves one of
    /// TCP, /ws and /wss.
    #[arg(
        long = "listen",
        value_name = "MULTIADDR",
        default_values = DEFAULT_LISTEN,
        value_parser = parse_listen
    )]
    listen: Vec<Multiaddr>,
    /// Certificate chain of /wss listeners (PEM, the server's certificate first, such as a
    /// CA's fullchain.pem).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// An address to announce (over identify) besides the listen addresses, such as the one a
    /// TLS-terminating proxy serves: /dns4/rdv.example.org/tcp/443/wss (repeatable).
    #[arg(long, value_name = "MULTIADDR", value_parser = parse_external)]
    external_address: Vec<Multiaddr>,
    /// Directory of the server's state: its identity key (`identity.key`), its registrations
    /// (`registrations.sqlite`) and its WebRTC certificate (`webrtc-certificate.pem`), so they
    /// survive a restart. Created with mode 0700 if missing.
    /// Default: `$XDG_DATA_HOME/rendezvous-discovery`, else
    /// `~/.local/share/rendezvous-discovery`.
    #[arg(long, value_name = "DIR", conflicts_with = "ephemeral")]
    data_dir: Option<PathBuf>,
    /// Keep nothing: registrations in memory only and a fresh key each run (unless --identity).
    #[arg(long)]
    ephemeral: bool,
    /// When a REGISTER is acknowledged: `full` (after its commit is fsync'd: nothing
    /// acknowledged is lost, even on power loss) or `normal` (after its commit, without fsync:
    /// safe against a crash of the server, not of the machine).
    #[arg(long, value_name = "MODE", default_value = "full", value_parser = parse_sync)]
    sync: SyncFlag,
    /// Key file, instead of the data directory's: loaded, or created (mode 0600) on first run.
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics and a JSON status at http://ADDR/health
    /// (for example 127.0.0.1:9090; off by default). The bound address is printed on stdout as
    /// `metrics http://ADDR`.
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_addr)]
    metrics: Option<SocketAddr>,
    /// Protocol id to serve.
    #[arg(long, value_name = "ID", default_value = "/rendezvous/1.0.0", value_parser = crate::common::parse_protocol)]
    protocol: StreamProtocol,
    /// Shortest TTL accepted, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = rendezvous_discovery::MIN_TTL)]
    min_ttl: Ttl,
    /// Longest TTL accepted, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = rendezvous_discovery::MAX_TTL)]
    max_ttl: Ttl,
    /// Registrations one peer may hold.
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_MAX_REGISTRATIONS_PER_PEER)]
    max_registrations_per_peer: usize,
    /// Registrations the server holds in total.
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_MAX_REGISTRATIONS)]
    max_registrations: usize,
    /// Registrations per page when a DISCOVER gives no limit.
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_PAGE)]
    default_page: usize,
    /// Most registrations per page.
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_MAX_PAGE)]
    max_page: usize,
    /// Largest message read or written, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = rendezvous_discovery::codec::DEFAULT_MAX_MESSAGE_SIZE)]
    max_message_size: usize,
    /// Inbound rendezvous streams one connection may have open at once: 8 are read at once, the
    /// others wait unread; one more is reset alone. The connection's muxer (yamux, QUIC) allows
    /// this plus 48 (streams negotiating, identify, ping), so a stream never costs the
    /// connection.
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_MAX_STREAMS_PER_CONNECTION)]
    max_streams_per_connection: usize,
    /// Seconds a stream may idle between requests.
    #[arg(long, value_name = "SECONDS", default_value_t = server::DEFAULT_STREAM_TIMEOUT.as_secs())]
    stream_timeout: u64,
    /// Requests (REGISTER, DISCOVER) per second one peer may make; 0 for no limit.
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_REQUESTS_PER_SECOND)]
    requests_per_second: u32,
    /// Requests one peer may make in a burst.
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_REQUEST_BURST)]
    request_burst: u32,
    /// Bytes the store may hold (registrations, records and their addresses, as the server
    /// counts them); over it, new registrations get E_UNAVAILABLE.
    #[arg(long, value_name = "BYTES", default_value_t = server::DEFAULT_MAX_STORE_BYTES)]
    max_store_bytes: usize,
    /// Largest signed peer record a REGISTER may carry, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = server::DEFAULT_MAX_RECORD_SIZE)]
    max_record_size: usize,
    /// Most addresses one signed peer record may list.
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_MAX_ADDRESSES_PER_RECORD)]
    max_addresses_per_record: usize,
    /// Established connections in total (each registered peer holds one). Near the cap, the
    /// server closes connections that hold nothing to make room. The open-file limit is raised
    /// to what this needs at start; where the hard limit is lower, the cap is lowered to fit, with
    /// a warning.
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Established connections one peer may hold.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_PEER)]
    max_connections_per_peer: u32,
    /// Incoming connections in their handshake at once (a quarter of them from one IP address);
    /// more wait for a slot, and beyond 4096 accepted, in the kernel's backlog. None is refused.
    #[arg(long, value_name = "N", default_value_t = server::handshakes::DEFAULT_MAX_IN_PROGRESS)]
    max_pending_incoming: usize,
    /// For tests only (hidden): how long a new connection may hold nothing before it may be
    /// closed to make room near --max-connections, in milliseconds (default 10 s).
    #[arg(long, value_name = "MS", hide = true)]
    connection_grace_ms: Option<u64>,
    /// Seconds a handshake may take once it has its slot.
    #[arg(long, value_name = "SECONDS", default_value_t = server::handshakes::DEFAULT_TIMEOUT.as_secs())]
    handshake_timeout: u64,
    /// Seconds a connection with no registration and no request in flight stays open.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_IDLE_TIMEOUT_SECS)]
    idle_timeout: u64,
    /// For tests only (hidden): the idle timeout in milliseconds, in place of --idle-timeout, so
    /// that a test of it does not wait a whole second.
    #[arg(long, value_name = "MS", hide = true)]
    idle_timeout_ms: Option<u64>,
    /// Push subscriptions (docs/push.md) served at once; 0 turns push off (the protocol is
    /// then not served or announced).
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_MAX_SUBSCRIPTIONS)]
    max_subscriptions: usize,
    /// Push subscriptions one connection may hold.
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION)]
    max_subscriptions_per_connection: usize,
    /// Pushes queued for one subscriber; a subscriber that reads slower than that has its
    /// subscription ended and resumes with DISCOVER (one whose pushes wait out a storm of
    /// requests is left behind, and caught up from its cookie after the storm).
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_PUSH_QUEUE)]
    push_queue: usize,
    /// Milliseconds without a request before pushes are written: requests come first, and
    /// under a storm of them subscriptions whose queues fill are left behind, and caught up
    /// once ten such quiet times pass (or their backoff does) (0 to 1000).
    #[arg(long, value_name = "MS", default_value_t = server::GATE_QUIET.as_millis() as u64)]
    push_quiet_ms: u64,
    /// Keep a peer's registrations when its last connection closes (until their TTL ends).
    #[arg(long)]
    keep_on_disconnect: bool,
    /// Records sent to a peer whose format is not known (it never registered and its identify
    /// did not answer): `signed` (standard and legacy, as the spec says), `standard` (for a
    /// network with js-libp2p peers that run no identify), `legacy` (for a network of
    /// rust-libp2p 0.18 clients only), `peer-info` or `all`.
    #[arg(long, value_name = "FORMATS", default_value = "signed", value_parser = parse_formats)]
    unknown_peer_formats: ServedFormats,
    /// Keep registrations in a shared Redis (`redis://HOST:PORT/DB`), so several servers act
    /// as one rendezvous point (needs the `redis` feature). Give every server the same limits.
    /// The data directory is not used: the key is --identity's, else a fresh one each run.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
}

fn parse_listen(s: &str) -> Result<Multiaddr, String> {
    s.parse().map_err(|e| {
        format!(
            "expected a multiaddr such as /ip4/0.0.0.0/tcp/62649, \
             /ip4/0.0.0.0/udp/62649/quic-v1 or /ip4/0.0.0.0/tcp/62650/ws ({e})"
        )
    })
}

fn parse_external(s: &str) -> Result<Multiaddr, String> {
    s.parse().map_err(|e| {
        format!("expected a multiaddr such as /dns4/rdv.example.org/tcp/443/wss ({e})")
    })
}

fn parse_metrics_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|e| format!("expected an IP address and port such as 127.0.0.1:9090 ({e})"))
}

/// `--sync`: when a REGISTER is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncFlag {
    Full,
    Normal,
}

fn parse_sync(s: &str) -> Result<SyncFlag, String> {
    match s {
        "full" => Ok(SyncFlag::Full),
        "normal" => Ok(SyncFlag::Normal),
        other => Err(format!("expected `full` or `normal`, got `{other}`")),
    }
}

fn parse_formats(s: &str) -> Result<ServedFormats, String> {
    s.parse()
}

impl Args {
    fn config(&self) -> Result<server::Config, CliError> {
        let config = server::Config::default()
            .with_protocol(self.protocol.clone())
            .with_min_ttl(self.min_ttl)
            .with_max_ttl(self.max_ttl)
            .with_max_registrations_per_peer(self.max_registrations_per_peer)
            .with_max_registrations(self.max_registrations)
            .with_default_page(self.default_page)
            .with_max_page(self.max_page)
            .with_max_message_size(self.max_message_size)
            .with_max_streams_per_connection(self.max_streams_per_connection)
            .with_stream_timeout(Duration::from_secs(self.stream_timeout))
            .with_requests_per_second(self.requests_per_second)
            .with_request_burst(self.request_burst)
            .with_remove_on_disconnect(!self.keep_on_disconnect)
            .with_unknown_peer_formats(self.unknown_peer_formats)
            .with_max_store_bytes(self.max_store_bytes)
            .with_max_record_size(self.max_record_size)
            .with_max_addresses_per_record(self.max_addresses_per_record)
            .with_max_connections(self.max_connections)
            .with_max_subscriptions(self.max_subscriptions)
            .with_max_subscriptions_per_connection(self.max_subscriptions_per_connection)
            .with_push_queue(self.push_queue)
            .with_push_quiet(Duration::from_millis(self.push_quiet_ms));
        let config = match self.connection_grace_ms {
            Some(ms) => config.with_connection_grace(Duration::from_millis(ms)),
            None => config,
        };
        config
            .validate()
            .map_err(|e| CliError::Usage(format!("--{} {}", e.setting, e.text)))?;
        Ok(config)
    }

    fn connection_limits(&self) -> Result<connection_limits::ConnectionLimits, CliError> {
        for (flag, value) in [
            ("--max-connections", self.max_connections),
            (
                "--max-connections-per-peer",
                self.max_connections_per_peer as usize,
            ),
            ("--max-pending-incoming", self.max_pending_incoming),
        ] {
            if value == 0 {
                return Err(CliError::Usage(format!("{flag} is 0; expected at least 1")));
            }
        }
        // The total is the server's own (it makes room near the cap); handshakes wait in the
        // transport's queue instead of being refused.
        Ok(connection_limits::ConnectionLimits::default()
            .with_max_established_per_peer(Some(self.max_connections_per_peer)))
    }

    fn transport(&self, config: &server::Config) -> Result<Transport, CliError> {
        check_ports_distinct(&self.listen)?;
        #[cfg(not(feature = "webrtc"))]
        if let Some(address) = self.listen.iter().find(|a| is_webrtc_direct(a)) {
            return Err(CliError::Usage(format!(
                "--listen {address}: this build has no WebRTC-direct; build with --features \
                 webrtc"
            )));
        }
        if self.idle_timeout == 0 || self.idle_timeout > 24 * 60 * 60 {
            return Err(CliError::Usage(format!(
                "--idle-timeout is {} s; expected 1 to 86400",
                self.idle_timeout
            )));
        }
        if self.handshake_timeout == 0 || self.handshake_timeout > 600 {
            return Err(CliError::Usage(format!(
                "--handshake-timeout is {} s; expected 1 to 600",
                self.handshake_timeout
            )));
        }
        let handshakes = server::handshakes::Config::default()
            .with_max_in_progress(self.max_pending_incoming)
            .with_max_per_ip(self.max_pending_incoming.div_ceil(4))
            .with_timeout(Duration::from_secs(self.handshake_timeout));
        Ok(Transport {
            idle_timeout: self.idle_timeout_ms.map_or(
                Duration::from_secs(self.idle_timeout),
                Duration::from_millis,
            ),
            max_streams: Some(config.muxer_max_streams()),
            max_negotiating_streams: Some(server::MAX_NEGOTIATING_STREAMS),
            quic_windows: Some(QUIC_WINDOWS),
            handshakes: Some(handshakes),
            tls: self.tls()?,
            // The certificate is the data directory's, read with the rest of the state.
            #[cfg(feature = "webrtc")]
            webrtc: None,
            dns: false,
            source: None,
        })
    }

    /// The TLS configuration of the /wss listeners; a /wss listener without one, or one
    /// without a /wss listener, is a mistake in the flags.
    fn tls(&self) -> Result<Option<libp2p::websocket::tls::Config>, CliError> {
        let secure = self.listen.iter().find(|a| is_secure_websocket(a));
        match (&self.tls_cert, &self.tls_key, secure) {
            (Some(cert), Some(key), Some(_)) => crate::tls::load(cert, key).map(Some),
            (Some(cert), _, None) => Err(CliError::Usage(format!(
                "--tls-cert {}: no --listen address is secure WebSocket; add one such as \
                 --listen /ip4/0.0.0.0/tcp/443/wss",
                cert.display()
            ))),
            (_, _, Some(address)) if self.tls_cert.is_none() || self.tls_key.is_none() => {
                Err(CliError::Usage(format!(
                    "--listen {address}: secure WebSocket needs --tls-cert FILE and \
                     --tls-key FILE (PEM); or listen on /ws behind a TLS-terminating proxy"
                )))
            }
            _ => Ok(None),
        }
    }
}

/// Whether `address` is a secure WebSocket one (`/wss`, or `/tls/ws`).
fn is_secure_websocket(address: &Multiaddr) -> bool {
    use libp2p::multiaddr::Protocol;
    address
        .iter()
        .any(|p| matches!(p, Protocol::Wss(_) | Protocol::Tls))
}

/// Whether `address` is a WebRTC-direct one.
fn is_webrtc_direct(address: &Multiaddr) -> bool {
    use libp2p::multiaddr::Protocol;
    address.iter().any(|p| matches!(p, Protocol::WebRTCDirect))
}

/// The IP address and TCP port of a TCP, `/ws` or `/wss` listen address; `None` for others
/// (QUIC, memory).
fn tcp_socket(address: &Multiaddr) -> Option<std::net::SocketAddr> {
    use libp2p::multiaddr::Protocol;
    let mut ip = None;
    for protocol in address.iter() {
        match protocol {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
            Protocol::Tcp(port) => return ip.map(|ip| (ip, port).into()),
            Protocol::Udp(_) => return None,
            _ => {}
        }
    }
    None
}

/// Refuses two listen addresses on one TCP port (TCP and /ws, say) before listening: the second
/// bind would fail, and this says which flags clash.
fn check_ports_distinct(addresses: &[Multiaddr]) -> Result<(), CliError> {
    let mut seen: Vec<(std::net::SocketAddr, &Multiaddr)> = Vec::new();
    for address in addresses {
        let Some(socket) = tcp_socket(address).filter(|s| s.port() != 0) else {
            continue;
        };
        // IPv4 and IPv6 sockets do not share ports (libp2p's IPv6 sockets are IPv6 only).
        let clash = seen.iter().find(|(other, _)| {
            other.port() == socket.port()
                && other.is_ipv4() == socket.is_ipv4()
                && (other.ip() == socket.ip()
                    || other.ip().is_unspecified()
                    || socket.ip().is_unspecified())
        });
        if let Some((_, other)) = clash {
            return Err(CliError::Usage(format!(
                "--listen {address}: TCP port {} is also in --listen {other}; give each of TCP, \
                 /ws and /wss its own port",
                socket.port()
            )));
        }
        seen.push((socket, address));
    }
    Ok(())
}

/// Raises the open-file limit to what `connections` need, as far as the hard limit allows (or
/// beyond it, where the process may raise that too). Returns the connections that fit.
fn raise_file_limit(connections: usize) -> usize {
    let wanted = (connections as u64).saturating_add(FILES_BESIDE_CONNECTIONS);
    let (soft, hard) = match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok(limits) => limits,
        Err(error) => {
            tracing::warn!(%error, "cannot read the open-file limit; leaving it as it is");
            return connections;
        }
    };
    if soft >= wanted {
        return connections;
    }
    // Root (or CAP_SYS_RESOURCE) may raise the hard limit too; others get up to it.
    let target = if rlimit::setrlimit(rlimit::Resource::NOFILE, wanted, wanted.max(hard)).is_ok() {
        wanted
    } else {
        let _ = rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard);
        hard
    };
    let fits =
        usize::try_from(target.saturating_sub(FILES_BESIDE_CONNECTIONS)).unwrap_or(usize::MAX);
    if fits < connections {
        tracing::warn!(
            max_connections = connections,
            open_file_limit = target,
            serving = fits,
            "the open-file limit is too low for --max-connections; serving fewer connections \
             (raise the hard limit: `ulimit -Hn`, or LimitNOFILE= in a systemd unit)"
        );
        return fits.max(1);
    }
    tracing::debug!(open_file_limit = target, "open-file limit raised");
    connections
}

impl Args {
    /// The Redis store at `url`, with this server's limits.
    #[cfg(feature = "redis")]
    fn shared_store(&self, url: &str) -> Result<crate::redis_store::RedisStore, CliError> {
        if !url.starts_with("redis://") {
            return Err(CliError::Usage(format!(
                "--store {url}: expected redis://HOST:PORT/DB, such as redis://127.0.0.1:6379/0"
            )));
        }
        let settings = crate::redis_store::Settings {
            min_ttl: self.min_ttl,
            max_ttl: self.max_ttl,
            max_registrations_per_peer: self.max_registrations_per_peer,
            max_registrations: self.max_registrations,
            max_bytes: self.max_store_bytes,
            max_record_size: self.max_record_size,
            max_addresses_per_record: self.max_addresses_per_record,
            default_page: self.default_page.max(1),
            max_page: self.max_page.max(1),
            max_message_size: self.max_message_size,
        };
        crate::redis_store::RedisStore::new(url, settings)
            .map_err(|e| CliError::Usage(format!("--store {url}: {}", e.0)))
    }

    /// Without the `redis` feature there is no shared store.
    #[cfg(not(feature = "redis"))]
    fn shared_store(&self, url: &str) -> Result<server::MemoryStore, CliError> {
        Err(CliError::Usage(format!(
            "--store {url}: this build has no Redis support; build with --features redis"
        )))
    }
}

/// The server with identify and ping beside it.
#[derive(NetworkBehaviour)]
pub(crate) struct Serve {
    limits: connection_limits::Behaviour,
    pub(crate) rendezvous: server::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

/// `serve`'s swarm: its behaviours with their connection handlers (and their events) boxed, one
/// box per connection instead of 616 bytes held inline, several times, in each connection's
/// task (see [`Slim`]).
pub(crate) type ServeSwarm = Swarm<Slim<Serve>>;

/// The agent version this server announces over identify.
const AGENT_VERSION: &str = concat!("rendezvous-discovery/", env!("CARGO_PKG_VERSION"));

/// The rendezvous behaviour, the key and the data directory (`None` with `--ephemeral` or
/// `--store`): the behaviour and key from the data directory, or fresh.
fn state(
    args: &Args,
    config: server::Config,
) -> Result<(server::Behaviour, Keypair, Option<PathBuf>), CliError> {
    let identity = |fallback: &dyn Fn() -> Result<Keypair, CliError>| match &args.identity {
        Some(path) => load_or_create_identity(path),
        None => fallback(),
    };
    if let Some(url) = &args.store {
        // The registrations are in Redis; the key is --identity's, else a fresh one.
        let key = identity(&|| Ok(Keypair::generate_ed25519()))?;
        return Ok((
            server::Behaviour::with_store(config, args.shared_store(url)?),
            key,
            None,
        ));
    }
    if args.ephemeral {
        let key = identity(&|| Ok(Keypair::generate_ed25519()))?;
        tracing::info!("ephemeral: registrations in memory only");
        return Ok((server::Behaviour::new(config), key, None));
    }
    let dir = match &args.data_dir {
        Some(dir) => dir.clone(),
        None => data_dir::default_dir().ok_or_else(|| {
            CliError::Usage(
                "no data directory: HOME and XDG_DATA_HOME are unset; give --data-dir DIR \
                 or --ephemeral"
                    .into(),
            )
        })?,
    };
    data_dir::create(&dir)?;
    // The database first: its lock keeps a second server away from the key file too.
    let store = open_store(&dir, config.clone(), args.sync)?;
    let key = identity(&|| data_dir::key(&dir))?;
    Ok((server::Behaviour::with_store(config, store), key, Some(dir)))
}

#[cfg(feature = "sqlite")]
fn open_store(
    dir: &std::path::Path,
    config: server::Config,
    sync: SyncFlag,
) -> Result<server::store::SqliteStore, CliError> {
    let sync = match sync {
        SyncFlag::Full => server::store::SyncMode::Full,
        SyncFlag::Normal => server::store::SyncMode::Normal,
    };
    let store = data_dir::open_store(dir, config, sync)?;
    tracing::info!(
        path = %store.path().display(),
        restored = store.restored(),
        "registrations loaded"
    );
    Ok(store)
}

#[cfg(not(feature = "sqlite"))]
fn open_store(
    _: &std::path::Path,
    _: server::Config,
    _: SyncFlag,
) -> Result<server::MemoryStore, CliError> {
    Err(CliError::Usage(
        "this build has no SQLite store (cargo feature `sqlite`); run with --ephemeral".into(),
    ))
}

pub async fn run(mut args: Args) -> CliResult {
    let signals = Signals::install()?;
    let limits = args.connection_limits()?;
    let config = args.config()?;
    #[cfg_attr(not(feature = "webrtc"), allow(unused_mut))]
    let mut transport = args.transport(&config)?;
    // After every flag is checked: a usage error is then the only line.
    args.max_connections = raise_file_limit(args.max_connections);
    let config = config.with_max_connections(args.max_connections);
    #[cfg_attr(not(feature = "webrtc"), allow(unused_variables))]
    let (rendezvous, key, dir) = state(&args, config)?;
    #[cfg(feature = "webrtc")]
    if args.listen.iter().any(is_webrtc_direct) {
        transport.webrtc = Some(match &dir {
            Some(dir) => crate::webrtc::load_or_create(&dir.join(crate::webrtc::CERTIFICATE_FILE))?,
            None => {
                tracing::info!(
                    "no data directory: a new WebRTC certificate, so a new /certhash address"
                );
                crate::webrtc::generate()?
            }
        });
    }
    let mut swarm = build_swarm_with(key, &transport, |key| {
        Slim(Serve {
            limits: connection_limits::Behaviour::new(limits),
            rendezvous,
            identify: identify::Behaviour::new(
                identify::Config::new("/ipfs/id/1.0.0".into(), key.public())
                    .with_agent_version(AGENT_VERSION.into()),
            ),
            ping: ping::Behaviour::default(),
        })
    })?;
    let local = *swarm.local_peer_id();
    let exporter = match args.metrics {
        Some(address) => Some(Exporter::start(address, local).await?),
        None => None,
    };
    // The state gauges hold from the first scrape on, not from the loop's first tick (which may
    // come after the listen address is printed and scraped).
    if let Some(exporter) = &exporter {
        exporter
            .ours
            .record_server_state(&swarm.behaviour().rendezvous);
    }
    let mut listeners = listen_all(&mut swarm, &args.listen)?;
    for address in &args.external_address {
        swarm.add_external_address(address.clone());
    }
    tracing::info!(peer = %local, "rendezvous server starting");
    let mut signal = std::pin::pin!(signals.first());
    let mut state_tick = tokio::time::interval(STATE_INTERVAL);
    let mut listener_errors = Throttle::new(WARN_EVERY);
    loop {
        let event = tokio::select! {
            signal = &mut signal => {
                tracing::info!("stopping on {signal}");
                // Dropping the swarm closes the connections and the store: the SQLite store
                // commits what it has queued and closes the database, releasing its lock.
                drop(swarm);
                tracing::info!("stopped");
                return Ok(ExitCode::SUCCESS);
            }
            _ = state_tick.tick() => {
                if let Some(exporter) = &exporter {
                    exporter.ours.record_server_state(&swarm.behaviour().rendezvous);
                }
                continue;
            }
            event = swarm.select_next_some() => event,
        };
        if let Some(exporter) = &exporter {
            exporter.record(&swarm, &event);
        }
        on_event(event, local, &mut listeners, &mut listener_errors)?;
    }
}

/// Listens on every address; a TCP port already in use (by anything: our listeners set no
/// `SO_REUSEPORT`, see `tcp.rs`) fails here. Returns how many listeners there are.
fn listen_all(swarm: &mut ServeSwarm, addresses: &[Multiaddr]) -> Result<usize, CliError> {
    for address in addresses {
        swarm.listen_on(address.clone()).map_err(|e| {
            let reason = crate::output::chain(&e);
            let advice = match reason.contains("in use") {
                true => "; is another server running on this port? Stop it or choose another port",
                false => "",
            };
            CliError::Usage(format!(
                "--listen {address}: cannot listen there: {reason}{advice}"
            ))
        })?;
    }
    Ok(addresses.len())
}

/// What the server says about one swarm event; an error when no listener is left.
fn on_event(
    event: SwarmEvent<ServeEvent>,
    local: PeerId,
    listeners: &mut usize,
    listener_errors: &mut Throttle,
) -> Result<(), CliError> {
    match event {
        SwarmEvent::NewListenAddr { address, .. } => {
            let mut out = std::io::stdout().lock();
            // A closed stdout must not stop the server; the address is logged too.
            let _ = writeln!(out, "{address}/p2p/{local}").and_then(|()| out.flush());
            tracing::info!(%address, "listening");
        }
        SwarmEvent::ListenerClosed {
            addresses, reason, ..
        } => {
            *listeners = listeners.saturating_sub(1);
            if let Err(error) = reason {
                tracing::warn!(?addresses, error = %crate::output::chain(&error), "listener failed");
            }
            if *listeners == 0 {
                return Err(CliError::Failed("every listener closed".into()));
            }
        }
        // An accept that fails (out of file descriptors, say) fails again at once: said once
        // a minute, not once per connection.
        SwarmEvent::ListenerError { error, .. } => {
            if let Some(held_back) = listener_errors.allow(std::time::Instant::now()) {
                tracing::warn!(
                    error = %crate::output::chain(&error),
                    "listener error{}",
                    HeldBack(held_back)
                );
            }
        }
        SwarmEvent::Behaviour(ServeEvent::Rendezvous(event)) => log_event(event),
        _ => {}
    }
    Ok(())
}

/// How often `serve --metrics` refreshes its state gauges when no event does (a store that
/// becomes available again, with no request to tell).
const STATE_INTERVAL: Duration = Duration::from_secs(1);

/// Per-request events are logged at debug: at info, a busy server spends more time writing
/// logs than serving (measured with `rendezvous load`: half the REGISTER throughput at 100k).
fn log_event(event: server::Event) {
    use server::Event::*;
    match event {
        PeerRegistered {
            peer,
            registration,
            duration,
        } => tracing::debug!(
            %peer,
            namespace = %registration.namespace,
            ttl = registration.ttl,
            format = %registration.record.format(),
            ?duration,
            "registered"
        ),
        PeerNotRegistered {
            peer,
            namespace,
            error,
            limit,
            ..
        } => tracing::debug!(%peer, %namespace, %error, ?limit, "registration refused"),
        PeerUnregistered {
            peer,
            namespace,
            cause,
        } => {
            tracing::debug!(%peer, %namespace, ?cause, "unregistered")
        }
        DiscoverServed {
            peer,
            namespace,
            count,
            duration,
        } => tracing::debug!(%peer, ?namespace, count, ?duration, "discover served"),
        DiscoverNotServed {
            peer,
            namespace,
            error,
            limit,
            ..
        } => tracing::debug!(%peer, ?namespace, %error, ?limit, "discover refused"),
        RegistrationExpired(registration) => tracing::debug!(
            peer = %registration.record.peer_id(),
            namespace = %registration.namespace,
            "registration expired"
        ),
        RequestRejected { peer, kind, error } => {
            tracing::debug!(%peer, ?kind, %error, "undecodable request rejected")
        }
        StreamRefused { peer, limit } => tracing::debug!(%peer, ?limit, "stream refused"),
        ConnectionRefused { peer, limit } => {
            tracing::debug!(%peer, ?limit, "connection refused")
        }
        IdleConnectionClosed { peer } => {
            tracing::debug!(%peer, "idle connection closed to make room")
        }
        StoreCommitted {
            operations,
            latency,
        } => tracing::trace!(operations, ?latency, "store commit"),
        Subscribed { peer, namespace } => tracing::debug!(%peer, ?namespace, "subscribed"),
        SubscriptionRefused {
            peer,
            namespace,
            limit,
        } => tracing::debug!(%peer, ?namespace, ?limit, "subscription refused"),
        SubscriptionBehind { peer, namespace } => {
            tracing::debug!(%peer, ?namespace, "subscription left behind; replayed from its cookie")
        }
        SubscriptionEnded {
            peer,
            namespace,
            reason,
        } => tracing::debug!(%peer, ?namespace, ?reason, "subscription ended"),
        Pushed { subscribers } => tracing::trace!(subscribers, "pushed"),
    }
}
