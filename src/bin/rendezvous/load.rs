//! `rendezvous load`.

use crate::common::{CliError, CliResult};

/// Flags of `rendezvous load`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args) -> CliResult {
    Err(CliError::Failed(
        "`rendezvous load` is not built yet".into(),
    ))
}
