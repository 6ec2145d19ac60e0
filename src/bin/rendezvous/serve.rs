//! `rendezvous serve`.

use crate::common::{CliError, CliResult};

/// Flags of `rendezvous serve`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args) -> CliResult {
    Err(CliError::Failed(
        "`rendezvous serve` is not built yet".into(),
    ))
}
