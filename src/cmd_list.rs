//! `ipvs-proxy list`: the kernel's IPVS table, byte-identical to `ipvsadm -L`.

use anyhow::{Result, bail};
use clap::Args;

/// Arguments of `ipvs-proxy list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Numeric output of addresses and ports.
    #[arg(short = 'n', long)]
    pub numeric: bool,
}

/// Prints the listing.
pub fn run(_args: ListArgs) -> Result<()> {
    bail!("`list` is not implemented yet")
}
