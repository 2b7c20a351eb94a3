//! ipvs-proxy: a kube-proxy replacement node agent that programs kernel IPVS.

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Command line of the `ipvs-proxy` binary.
#[derive(Debug, Parser)]
#[command(name = "ipvs-proxy", version, about = "Kubernetes service proxy on kernel IPVS")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node agent.
    Run,
    /// List the kernel's IPVS table, like `ipvsadm -Ln`.
    List,
    /// Print the version.
    Version,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("ipvs-proxy {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Run => anyhow::bail!("`run` is not implemented yet"),
        Command::List => anyhow::bail!("`list` is not implemented yet"),
    }
}
