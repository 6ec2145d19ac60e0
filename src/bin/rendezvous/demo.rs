//! `rendezvous demo`.

use crate::common::{CliError, CliResult};

/// Flags of `rendezvous demo`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args) -> CliResult {
    Err(CliError::Failed(
        "`rendezvous demo` is not built yet".into(),
    ))
}
