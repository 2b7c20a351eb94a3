//! `ipvs-proxy check`: is this node ready for IPVS mode?

use anyhow::{Result, bail};
use clap::Args;

/// Arguments of `ipvs-proxy check`.
#[derive(Debug, Args)]
pub struct CheckArgs {}

/// Runs every check and prints one line per check.
pub fn run(_args: CheckArgs) -> Result<()> {
    bail!("`check` is not implemented yet")
}
