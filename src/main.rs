//! ipvs-proxy: a kube-proxy replacement node agent that programs kernel IPVS.
//!
//! This binary is a thin command line over the `ipvs_proxy` library and the
//! workspace crates; each subcommand lives in its own module under `cli/`.

mod cli;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Command line of the `ipvs-proxy` binary.
#[derive(Debug, Parser)]
#[command(
    name = "ipvs-proxy",
    version,
    about = "Kubernetes service proxy on kernel IPVS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node agent.
    Run(cli::run::RunArgs),
    /// Remove the kernel state ipvs-proxy owns (and, with a flag, kube-proxy's leftovers).
    Cleanup(cli::cleanup::CleanupArgs),
    /// List the kernel's IPVS table, like `ipvsadm -L`.
    List(cli::list::ListArgs),
    /// Show what the running agent programmed for each Service, and what is wrong.
    Services(cli::services::ServicesArgs),
    /// Show what the agent would do with a directory of exported objects (LoadBalancer
    /// addresses, announcements, invalid MetalLB objects), touching nothing.
    Plan(cli::plan::PlanArgs),
    /// Show this node's BGP neighbours: state, uptime, prefixes sent, BFD.
    Bgp(cli::bgp::BgpArgs),
    /// Check that this node is ready for IPVS mode.
    Check(cli::check::CheckArgs),
    /// Print the version.
    Version,
}

/// jemalloc returns memory freed after a burst to the system (see .cargo/config.toml).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn init_logging(default_level: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: container logs and files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> Result<()> {
    // Installed as (or linked to) `ipvsadm`, the binary lists like ipvsadm.
    let argv: Vec<String> = std::env::args().collect();
    if argv.first().and_then(|a| a.rsplit('/').next()) == Some("ipvsadm") {
        init_logging("info");
        return cli::list::ipvsadm_main(argv);
    }
    let cli = Cli::parse();
    // `plan` reports everything itself; the library's logs would only repeat it.
    init_logging(match cli.command {
        Command::Plan(_) => "error",
        _ => "info",
    });
    match cli.command {
        Command::Version => {
            println!("ipvs-proxy {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Run(args) => cli::run::run(args),
        Command::Cleanup(args) => cli::cleanup::run(args),
        Command::List(args) => cli::list::run(args),
        Command::Check(args) => cli::check::run(args),
        Command::Services(args) => cli::services::run(args),
        Command::Plan(args) => cli::plan::run(args),
        Command::Bgp(args) => cli::bgp::run(args),
    }
}
