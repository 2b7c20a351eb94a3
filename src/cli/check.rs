//! `ipvs-proxy check`: is this node ready for IPVS mode? (The checks themselves are
//! [`ipvs_proxy::preflight::checks`].)

use anyhow::Result;
use clap::Args;
use ipvs_proxy::preflight::checks::{CheckOptions, Report, checks, render};

/// Arguments of `ipvs-proxy check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Schedulers the agent is configured to use (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "rr")]
    pub schedulers: Vec<String>,
    /// Require strict ARP (`ipvs.strictARP`, needed for L2 load-balancer announcements).
    #[arg(long = "strict-arp", default_value_t = true, action = clap::ArgAction::Set)]
    pub strict_arp: bool,
    /// Name of the dummy interface holding service addresses.
    #[arg(long, default_value = "kube-ipvs0")]
    pub interface: String,
    /// Require bridged pod traffic to pass iptables and IPVS (br_netfilter loaded,
    /// `net.bridge.bridge-nf-call-ip(6)tables=1`), needed with a bridge CNI.
    #[arg(long = "bridge-netfilter", default_value_t = true, action = clap::ArgAction::Set)]
    pub bridge_netfilter: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs every check and prints one line per check; exits with status 1 when any
/// check failed.
pub fn run(args: CheckArgs) -> Result<()> {
    let checks = checks(&CheckOptions {
        schedulers: args.schedulers,
        strict_arp: args.strict_arp,
        interface: args.interface,
        bridge_netfilter: args.bridge_netfilter,
    });
    let ok = checks.iter().all(|check| check.ok);
    if args.json {
        let report = Report {
            ok,
            checks: &checks,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&checks));
        let failed = checks.iter().filter(|check| !check.ok).count();
        if failed > 0 {
            println!("{failed} of {} checks failed", checks.len());
        } else {
            println!("all {} checks passed", checks.len());
        }
    }
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
