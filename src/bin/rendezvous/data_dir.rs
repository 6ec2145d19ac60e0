//! Where `rendezvous serve` keeps its state: the data directory, holding the identity key and
//! the registration database.

use std::path::{Path, PathBuf};

use libp2p::identity::Keypair;
#[cfg(feature = "sqlite")]
use rendezvous_discovery::server;

use crate::common::{load_or_create_key, CliError};

/// The identity key's file in the data directory.
pub const KEY_FILE: &str = "identity.key";

/// The registration database's file in the data directory.
#[cfg(feature = "sqlite")]
pub const DATABASE_FILE: &str = "registrations.sqlite";

/// The data directory when `--data-dir` is not given: `$XDG_DATA_HOME/rendezvous-discovery`,
/// else `$HOME/.local/share/rendezvous-discovery`.
pub fn default_dir() -> Option<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    std::env::var_os("XDG_DATA_HOME")
        .and_then(absolute)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(absolute)
                .map(|home| home.join(".local").join("share"))
        })
        .map(|base| base.join("rendezvous-discovery"))
}

/// Creates `dir` (and its parents) if missing, the directory itself with mode 0700: it holds
/// the server's private key.
pub fn create(dir: &Path) -> Result<(), CliError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| {
        CliError::Usage(format!(
            "--data-dir {}: cannot create the directory ({e})",
            dir.display()
        ))
    })
}

/// The server's key: the data directory's key file, created on first run.
pub fn key(dir: &Path) -> Result<Keypair, CliError> {
    load_or_create_key(&dir.join(KEY_FILE), "")
}

/// Opens the registration database of `dir`, holding its lock until the store is dropped.
#[cfg(feature = "sqlite")]
pub fn open_store(
    dir: &Path,
    config: server::Config,
    sync: server::store::SyncMode,
) -> Result<server::store::SqliteStore, CliError> {
    server::store::SqliteStore::open(&dir.join(DATABASE_FILE), config, sync)
        .map_err(|e| CliError::Usage(e.to_string()))
}
