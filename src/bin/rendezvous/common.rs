//! What every subcommand shares: errors, logging, identity files, the swarm.

use std::{fmt, fs, io::Write, path::Path, time::Duration};

use libp2p::{
    core::{
        muxing::StreamMuxerBox,
        transport::{timeout::TransportTimeout, Boxed},
        upgrade,
    },
    dns,
    identity::Keypair,
    quic,
    swarm::NetworkBehaviour,
    tcp, websocket, yamux, PeerId, Swarm, Transport as _,
};
use rendezvous_discovery::server;

/// A failure of a subcommand, with its exit status (the table is [`crate::EXIT_CODES`]).
#[derive(Debug)]
pub enum CliError {
    /// The user gave a flag value, file or address we cannot use; the text says what was
    /// expected. Exit status 2.
    Usage(String),
    /// The command ran and failed. Exit status 1.
    Failed(String),
    /// The server refused a request with a status it would give again (the request itself is
    /// wrong for it: TTL, namespace, record, authorization). Exit status 3.
    Refused(String),
    /// The peer at the server's address is not the peer `--server` names. Exit status 4.
    WrongPeer(String),
}

impl CliError {
    pub fn exit_status(&self) -> u8 {
        match self {
            CliError::Failed(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Refused(_) => 3,
            CliError::WrongPeer(_) => 4,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(s)
            | CliError::Failed(s)
            | CliError::Refused(s)
            | CliError::WrongPeer(s) => f.write_str(s),
        }
    }
}

pub type CliResult = Result<std::process::ExitCode, CliError>;

/// Loads the keypair in `path` (protobuf encoding, as libp2p writes it), or creates an ed25519
/// key there with mode 0600 when the file does not exist, so the peer id survives restarts.
pub fn load_or_create_identity(path: &Path) -> Result<Keypair, CliError> {
    load_or_create_key(path, "--identity ")
}

/// [`load_or_create_identity`], with errors starting with `label` (a flag and a space, or
/// nothing) before the path.
pub fn load_or_create_key(path: &Path, label: &str) -> Result<Keypair, CliError> {
    match fs::read(path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| {
            CliError::Usage(format!(
                "{label}{}: not a libp2p private key in protobuf encoding ({e}); restore it \
                 from a backup, or move it away to start with a new peer id",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key
                .to_protobuf_encoding()
                .map_err(|e| CliError::Failed(format!("cannot encode the new key: {e}")))?;
            create_private_file(path, &bytes, label, "key file")?;
            Ok(key)
        }
        Err(e) => Err(CliError::Usage(format!(
            "{label}{}: cannot read the key file ({e}); check its permissions",
            path.display()
        ))),
    }
}

/// Creates `path` (which must not exist) with mode 0600, as it holds a private key, and writes
/// `bytes` to disk; errors start with `label` (a flag and a space, or nothing) and name `what`.
pub fn create_private_file(
    path: &Path,
    bytes: &[u8],
    label: &str,
    what: &str,
) -> Result<(), CliError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| {
        CliError::Usage(format!(
            "{label}{}: cannot create the {what} ({e})",
            path.display()
        ))
    })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| CliError::Failed(format!("{label}{}: cannot write ({e})", path.display())))
}

/// How the transports of a swarm are bounded.
#[derive(Debug, Clone)]
pub struct Transport {
    /// How long a connection that nothing keeps alive stays open.
    pub idle_timeout: Duration,
    /// Streams one connection may have at once (yamux and QUIC); `None` for libp2p's defaults.
    pub max_streams: Option<usize>,
    /// Inbound streams one connection may be negotiating at once; `None` for libp2p's default.
    pub max_negotiating_streams: Option<usize>,
    /// QUIC receive windows (per stream, per connection) in bytes; `None` for the defaults.
    pub quic_windows: Option<(u32, u32)>,
    /// Incoming connections wait for a handshake slot (a server); `None`: no bound (a client,
    /// which only dials).
    pub handshakes: Option<server::handshakes::Config>,
    /// The certificate and key of `/wss` listeners (a server); `None`: WebSocket listeners are
    /// plain `/ws` only. Dialing `/wss` needs none (the public roots verify the server).
    pub tls: Option<websocket::tls::Config>,
    /// The DTLS certificate of WebRTC-direct listeners (a server built with feature `webrtc`
    /// that listens on one); `None`: no WebRTC transport.
    #[cfg(feature = "webrtc")]
    pub webrtc: Option<libp2p_webrtc::tokio::Certificate>,
    /// Resolve `/dns`, `/dns4` and `/dns6` addresses when dialing (a client, which dials names
    /// such as `/dns4/<name>/tcp/443/wss/...`); a server, which never dials, needs no resolver.
    pub dns: bool,
    /// TCP and WebSocket dials to addresses of this family leave from this address (`rendezvous
    /// flood`'s attacker, on a loopback address of its own); `None`: the kernel's choice.
    pub source: Option<std::net::IpAddr>,
}

impl Default for Transport {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(60),
            max_streams: None,
            max_negotiating_streams: None,
            quic_windows: None,
            handshakes: None,
            tls: None,
            #[cfg(feature = "webrtc")]
            webrtc: None,
            dns: true,
            source: None,
        }
    }
}

/// Largest WebSocket message a connection may send us, in bytes. libp2p peers carry noise
/// frames (at most 64 KiB each) in WebSocket messages, a few at a time at most; the default of
/// libp2p-websocket (256 MiB) would let one connection make the server buffer that much.
pub const MAX_WEBSOCKET_MESSAGE: usize = 1024 * 1024;

/// How long a dial or an incoming connection may take to be established, unless the handshake
/// bound of a server says longer (libp2p's default).
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// The transports: TCP and WebSocket (both noise + yamux), QUIC, and WebRTC-direct when
/// `settings` has its certificate, bounded by `settings`, behind the handshake queue when there
/// is one: every limit of the queue applies to each transport alike, the WebSocket handshake
/// (TLS, HTTP upgrade) and WebRTC's (ICE, DTLS, noise) included.
fn transports(
    key: &Keypair,
    settings: &Transport,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, CliError> {
    let mut yamux = yamux::Config::default();
    if let Some(n) = settings.max_streams {
        yamux.set_max_num_streams(n);
    }
    let noise = || {
        crate::noise::Config::new(key)
            .map_err(|e| CliError::Failed(format!("cannot set up noise: {e}")))
    };
    let tcp = tcp_socket(settings)?
        .upgrade(upgrade::Version::V1Lazy)
        .authenticate(noise()?)
        .multiplex(yamux.clone())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
    // The WebSocket transport takes the server name for TLS from a `/dns*` address itself, so
    // it resolves names below it, not above.
    let mut ws = websocket::Config::new(tcp_socket(settings)?);
    ws.set_max_data_size(MAX_WEBSOCKET_MESSAGE);
    if let Some(tls) = &settings.tls {
        ws.set_tls_config(tls.clone());
    }
    let ws = ws
        .upgrade(upgrade::Version::V1Lazy)
        .authenticate(noise()?)
        .multiplex(yamux)
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)));
    let mut quic_config = quic::Config::new(key);
    if let Some(n) = settings.max_streams {
        quic_config.max_concurrent_stream_limit = u32::try_from(n).unwrap_or(u32::MAX);
    }
    if let Some((stream, connection)) = settings.quic_windows {
        quic_config.max_stream_data = stream;
        quic_config.max_connection_data = connection;
    }
    let quic = resolving(
        quic::tokio::Transport::new(quic_config)
            .map(|(peer, connection), _| (peer, StreamMuxerBox::new(connection))),
        settings.dns,
    )?;
    // WebSocket first: it refuses other addresses at once, where a resolver would take a
    // `/dns4/.../wss` address and fail it later.
    let all = ws
        .or_transport(tcp)
        .map(|either, _| either.into_inner())
        .or_transport(quic)
        .map(|either, _| either.into_inner())
        .boxed();
    #[cfg(feature = "webrtc")]
    let all = match &settings.webrtc {
        Some(certificate) => {
            crate::webrtc::install_crypto_provider();
            all.or_transport(
                libp2p_webrtc::tokio::Transport::new(key.clone(), certificate.clone())
                    .map(|(peer, connection), _| (peer, StreamMuxerBox::new(connection))),
            )
            .map(|either, _| either.into_inner())
            .boxed()
        }
        None => all,
    };
    Ok(match &settings.handshakes {
        Some(config) => server::handshakes::Transport::new(all, config.clone()).boxed(),
        None => all,
    })
}

/// TCP sockets (nodelay; listeners without `SO_REUSEPORT`; dials from `settings.source`),
/// resolving names first when `settings.dns`.
fn tcp_socket(settings: &Transport) -> Result<Boxed<tcp::tokio::TcpStream>, CliError> {
    resolving(crate::tcp::Transport::new(settings.source), settings.dns)
}

/// `inner`, behind the system's DNS resolver when `dns`.
fn resolving<T>(inner: T, dns: bool) -> Result<Boxed<T::Output>, CliError>
where
    T: libp2p::Transport + Send + Unpin + 'static,
    T::Output: Send + 'static,
    T::Error: Send + Sync + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
{
    if !dns {
        return Ok(inner.boxed());
    }
    let resolver = dns::tokio::Transport::system(inner).map_err(|e| {
        CliError::Failed(format!(
            "cannot read the system's DNS configuration (/etc/resolv.conf): {e}"
        ))
    })?;
    Ok(resolver.boxed())
}

/// A tokio swarm on TCP, WebSocket (noise + yamux) and QUIC for `behaviour`, the transports
/// bounded by `transport` (its default: a client's).
///
/// Built with `Swarm::new` rather than `SwarmBuilder`: the builder's `with_other_transport`
/// boxes an already boxed muxer again, which costs every connection and every stream one more
/// allocation and every read and write one more dynamic call.
pub fn build_swarm_with<B: NetworkBehaviour>(
    key: Keypair,
    transport: &Transport,
    behaviour: impl FnOnce(&Keypair) -> B,
) -> Result<Swarm<B>, CliError> {
    // The handshake queue bounds each incoming connection itself; the swarm's timeout must
    // not cut a connection that is still within those bounds.
    let timeout = transport
        .handshakes
        .as_ref()
        .map_or(CONNECTION_TIMEOUT, |h| h.longest().max(CONNECTION_TIMEOUT));
    let transports = TransportTimeout::new(transports(&key, transport)?, timeout).boxed();
    let mut config = libp2p::swarm::Config::with_tokio_executor()
        .with_idle_connection_timeout(transport.idle_timeout);
    if let Some(n) = transport.max_negotiating_streams {
        config = config.with_max_negotiating_inbound_streams(n);
    }
    let behaviour = behaviour(&key);
    Ok(Swarm::new(
        transports,
        behaviour,
        key.public().to_peer_id(),
        config,
    ))
}

/// Parses a `--protocol` value (a clap value parser).
pub fn parse_protocol(s: &str) -> Result<libp2p::StreamProtocol, String> {
    libp2p::StreamProtocol::try_from_owned(s.to_owned())
        .map_err(|e| format!("expected a protocol id starting with '/' ({e})"))
}

/// Parses a `--record-format` value (a clap value parser).
pub fn parse_record_format(s: &str) -> Result<rendezvous_discovery::RecordFormat, String> {
    match s {
        "standard" => Ok(rendezvous_discovery::RecordFormat::Standard),
        "legacy" => Ok(rendezvous_discovery::RecordFormat::Legacy),
        "peer-info" => Ok(rendezvous_discovery::RecordFormat::PeerInfo),
        other => Err(format!("{other:?}: expected standard, legacy or peer-info")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_file_is_created_once_and_reloaded() {
        let dir = std::env::temp_dir().join(format!("rdv-id-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        let _ = fs::remove_file(&path);
        let first = load_or_create_identity(&path).unwrap();
        let second = load_or_create_identity(&path).unwrap();
        assert_eq!(first.public(), second.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::write(&path, b"not a key").unwrap();
        assert!(matches!(
            load_or_create_identity(&path),
            Err(CliError::Usage(_))
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
