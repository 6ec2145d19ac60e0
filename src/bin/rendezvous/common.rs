//! What every subcommand shares: errors, logging, identity files, the swarm.

use std::{fmt, fs, io::Write, path::Path, time::Duration};

use libp2p::{identity::Keypair, noise, swarm::NetworkBehaviour, tcp, yamux, Swarm};

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
            let mut options = fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path).map_err(|e| {
                CliError::Usage(format!(
                    "{label}{}: cannot create the key file ({e})",
                    path.display()
                ))
            })?;
            file.write_all(&bytes)
                .and_then(|()| file.sync_all())
                .map_err(|e| {
                    CliError::Failed(format!("{label}{}: cannot write ({e})", path.display()))
                })?;
            Ok(key)
        }
        Err(e) => Err(CliError::Usage(format!(
            "{label}{}: cannot read the key file ({e}); check its permissions",
            path.display()
        ))),
    }
}

/// A tokio swarm on TCP (noise + yamux) and QUIC for `behaviour`, with the client defaults.
pub fn build_swarm<B: NetworkBehaviour>(
    key: Keypair,
    behaviour: impl FnOnce(&Keypair) -> B,
) -> Result<Swarm<B>, CliError> {
    build_swarm_with(key, &Transport::default(), behaviour)
}

/// How the transports of a swarm are bounded.
#[derive(Debug, Clone)]
pub struct Transport {
    /// How long a connection that nothing keeps alive stays open.
    pub idle_timeout: Duration,
    /// Streams one connection may have at once (yamux and QUIC); `None` for libp2p's defaults.
    pub max_streams: Option<usize>,
    /// QUIC receive windows (per stream, per connection) in bytes; `None` for the defaults.
    pub quic_windows: Option<(u32, u32)>,
}

impl Default for Transport {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(60),
            max_streams: None,
            quic_windows: None,
        }
    }
}

/// [`build_swarm`] with the transports bounded by `transport`.
pub fn build_swarm_with<B: NetworkBehaviour>(
    key: Keypair,
    transport: &Transport,
    behaviour: impl FnOnce(&Keypair) -> B,
) -> Result<Swarm<B>, CliError> {
    let streams = transport.max_streams;
    let windows = transport.quic_windows;
    let idle = transport.idle_timeout;
    Ok(libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            move || {
                let mut config = yamux::Config::default();
                if let Some(n) = streams {
                    config.set_max_num_streams(n);
                }
                config
            },
        )
        .map_err(|e| CliError::Failed(format!("cannot set up TCP: {e}")))?
        .with_quic_config(|mut config| {
            if let Some(n) = streams {
                config.max_concurrent_stream_limit = u32::try_from(n).unwrap_or(u32::MAX);
            }
            if let Some((stream, connection)) = windows {
                config.max_stream_data = stream;
                config.max_connection_data = connection;
            }
            config
        })
        .with_behaviour(|key| behaviour(key))
        .map_err(|e| CliError::Failed(format!("cannot build the behaviour: {e}")))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build())
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
