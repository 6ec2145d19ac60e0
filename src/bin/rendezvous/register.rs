//! `rendezvous register`.

use crate::common::{CliError, CliResult};

/// Flags of `rendezvous register`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(_args: Args) -> CliResult {
    Err(CliError::Failed(
        "`rendezvous register` is not built yet".into(),
    ))
}
