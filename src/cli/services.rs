//! `ipvs-proxy services`: what the running agent programmed for each Service, what
//! is wrong (drift, stale kernel state, skipped Services) and, per LoadBalancer
//! address, who announces it (pool, layer-2 owner and eligible nodes, BGP routes per
//! node and peer) or why nobody does. It asks the agent on its read-only status
//! socket; the report format is described in `ipvs_proxy::observe::status`.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ipvs_proxy::observe::status::{self, Filter};

/// Arguments of `ipvs-proxy services`.
#[derive(Debug, Args)]
pub struct ServicesArgs {
    /// The agent's status socket (`run --status-socket`).
    #[arg(long, default_value = status::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Only Services of this namespace.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Only Services of this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Only virtual servers and load-balancer announcements on this address (a
    /// ClusterIP, node, external or load-balancer IP).
    #[arg(long, value_name = "ADDRESS")]
    pub vip: Option<IpAddr>,
}

/// Prints the agent's report.
pub fn run(args: ServicesArgs) -> Result<()> {
    let report = status::query(&args.socket, status::CLIENT_TIMEOUT)?;
    let report = report.filtered(&Filter {
        namespace: args.namespace,
        name: args.name,
        vip: args.vip,
    });
    let text = if args.json {
        format!("{}\n", serde_json::to_string_pretty(&report)?)
    } else {
        status::render_text(&report)
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing the report to standard output"),
    }
}
