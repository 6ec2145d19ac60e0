//! `rendezvous discover`.

use crate::common::{CliError, CliResult};

/// Flags of `rendezvous discover`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args) -> CliResult {
    Err(CliError::Failed(
        "`rendezvous discover` is not built yet".into(),
    ))
}
