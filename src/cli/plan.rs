//! `ipvs-proxy plan`: what the agent would do with a directory of exported objects
//! (Services, EndpointSlices, Nodes, Namespaces, MetalLB's objects or its legacy
//! ConfigMap), without the kernel or an API server. The computation is
//! [`ipvs_proxy::lb::dry_run`]; this module reads the directory and prints.
//!
//! Exit status 1 when an object is invalid (a MetalLB object left out, a Service
//! whose LoadBalancer request cannot be read, a document that does not parse).

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ipvs_proxy::lb::dry_run::{self, AllocationOutcome, PlanOptions, PlanReport};
use ipvs_proxy::source::SourceError;
use ipvs_proxy::source::static_dir::load_dir;

/// Arguments of `ipvs-proxy plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The directory of exported objects (`*.yaml`, `*.yml`, `*.json`).
    #[arg(long, value_name = "DIR")]
    pub manifests: PathBuf,
    /// The agent's configuration file (for `loadBalancer.loadBalancerClass` and
    /// `loadBalancer.metallbNamespace`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Show only this node's announcements (allocations and problems stay whole).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Prints the plan; exits with status 1 when an object is invalid.
pub fn run(args: PlanArgs) -> Result<()> {
    let config = super::load_config(args.config.as_deref())?;
    let settings = &config.extensions.load_balancer;
    let options = PlanOptions {
        class: settings.load_balancer_class.clone(),
        metallb_namespace: settings.metallb_namespace.clone(),
        node: args.node,
    };
    let report = match load_dir(&args.manifests) {
        Ok(manifests) => dry_run::plan(&manifests, &options),
        Err(SourceError::Parse { .. }) => PlanReport::unreadable(
            ipvs_proxy::source::static_dir::parse_errors(&args.manifests),
            &options,
        ),
        Err(error) => {
            return Err(error).context("cannot read the manifests directory");
        }
    };
    let text = if args.json {
        format!("{}\n", serde_json::to_string_pretty(&report)?)
    } else {
        render_text(&report)
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.context("writing the plan to standard output")?,
    }
    if !report.valid {
        std::process::exit(1);
    }
    Ok(())
}

/// Left-aligned columns, each as wide as its widest cell; the last is not padded.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|cell| cell.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::from("  ");
        for (index, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if index + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

fn or_dash(text: Option<&str>) -> String {
    text.filter(|text| !text.is_empty())
        .unwrap_or("-")
        .to_string()
}

fn addresses(ips: &[IpAddr]) -> String {
    if ips.is_empty() {
        return "-".to_string();
    }
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The text view: the problems first (what blocks a switch), then the pools, the
/// Services' addresses, the layer-2 owners, the BGP routes and what is not announced.
fn render_text(report: &PlanReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Plan for {} (loadBalancerClass {}, metallbNamespace {})",
        match &report.node {
            Some(node) => format!("node {node}"),
            None => "every node".to_string(),
        },
        report.load_balancer_class.as_deref().unwrap_or("none"),
        report.metallb_namespace
    );
    if !report.unreadable.is_empty() {
        let _ = writeln!(out, "Unreadable documents:");
        for error in &report.unreadable {
            let _ = writeln!(out, "  {error}");
        }
        let _ = writeln!(
            out,
            "Result: INVALID: {} unreadable document(s); the agent would not load this directory",
            report.unreadable.len()
        );
        return out;
    }
    if report.problems.is_empty() {
        let _ = writeln!(out, "Problems: none");
    } else {
        let _ = writeln!(out, "Problems (these objects are left out):");
        let rows: Vec<Vec<String>> = report
            .problems
            .iter()
            .map(|problem| {
                vec![
                    problem.kind.clone(),
                    if problem.namespace.is_empty() {
                        problem.name.clone()
                    } else {
                        format!("{}/{}", problem.namespace, problem.name)
                    },
                    or_dash(Some(&problem.field)),
                    problem.message.clone(),
                ]
            })
            .collect();
        table(&mut out, &["Kind", "Object", "Field", "Message"], &rows);
    }
    if !report.warnings.is_empty() {
        let _ = writeln!(out, "Warnings:");
        for warning in &report.warnings {
            let _ = writeln!(out, "  {warning}");
        }
    }
    if report.pools.is_empty() {
        let _ = writeln!(
            out,
            "Pools: none (no IPAddressPool: LoadBalancer Services keep the addresses their manifests give)"
        );
    } else {
        let _ = writeln!(out, "Pools:");
        let rows: Vec<Vec<String>> = report
            .pools
            .iter()
            .map(|pool| {
                vec![
                    pool.name.clone(),
                    pool.in_use.to_string(),
                    if pool.auto_assign { "yes" } else { "no" }.to_string(),
                    if pool.avoid_buggy_ips { "yes" } else { "no" }.to_string(),
                    pool.ranges.join(","),
                ]
            })
            .collect();
        table(
            &mut out,
            &["Pool", "InUse", "AutoAssign", "AvoidBuggyIPs", "Ranges"],
            &rows,
        );
    }
    if report.services.is_empty() {
        let _ = writeln!(out, "LoadBalancer Services: none");
    } else {
        let _ = writeln!(out, "LoadBalancer Services:");
        let rows: Vec<Vec<String>> = report
            .services
            .iter()
            .map(|service| {
                vec![
                    format!("{}/{}", service.namespace, service.name),
                    addresses(&service.addresses),
                    or_dash(service.pool.as_deref()),
                    match service.outcome {
                        AllocationOutcome::Kept => "kept",
                        AllocationOutcome::Assigned => "assigned",
                        AllocationOutcome::Refused => "refused",
                        AllocationOutcome::Frozen => "frozen",
                        AllocationOutcome::AsWritten => "as-written",
                    }
                    .to_string(),
                    service.reason.clone().unwrap_or_default(),
                ]
            })
            .collect();
        table(
            &mut out,
            &["Service", "Addresses", "Pool", "Allocation", "Reason"],
            &rows,
        );
    }
    if !report.layer2.is_empty() {
        let _ = writeln!(out, "Layer 2 (owner answers ARP/NDP):");
        let rows: Vec<Vec<String>> = report
            .layer2
            .iter()
            .map(|l2| {
                vec![
                    l2.ip.to_string(),
                    l2.service.clone(),
                    or_dash(l2.owner.as_deref()),
                    match &l2.interfaces {
                        _ if l2.owner.is_none() => "-".to_string(),
                        None => "all".to_string(),
                        Some(names) => names.join(","),
                    },
                    match &l2.why {
                        Some(why) => why.clone(),
                        None => l2
                            .candidates
                            .iter()
                            .map(|candidate| match candidate.score {
                                0 => candidate.node.clone(),
                                score => format!("{}({score})", candidate.node),
                            })
                            .collect::<Vec<_>>()
                            .join(","),
                    },
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "Address",
                "Service",
                "Owner",
                "Interfaces",
                "Eligible (election order)",
            ],
            &rows,
        );
    }
    if !report.bgp.is_empty() {
        let _ = writeln!(out, "BGP:");
        let rows: Vec<Vec<String>> = report
            .bgp
            .iter()
            .map(|route| {
                vec![
                    route.node.clone(),
                    route
                        .peer
                        .clone()
                        .unwrap_or_else(|| "(no session)".to_string()),
                    or_dash(route.peer_address.as_deref()),
                    or_dash(route.peer_asn.as_deref()),
                    route.prefix.to_string(),
                    or_dash(Some(&route.communities.join(","))),
                    route
                        .local_pref
                        .map(|pref| pref.to_string())
                        .unwrap_or_else(|| "-".to_string()),
                    route.services.join(","),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "Node",
                "Peer",
                "PeerAddress",
                "PeerASN",
                "Prefix",
                "Communities",
                "LocalPref",
                "Services",
            ],
            &rows,
        );
    }
    if !report.not_announced.is_empty() {
        let _ = writeln!(out, "Not announced:");
        for service in &report.not_announced {
            let ips = addresses(&service.addresses);
            if let Some(why) = &service.layer2 {
                let _ = writeln!(out, "  {} {ips}: layer 2: {why}", service.service);
            }
            if let Some(why) = &service.bgp {
                let _ = writeln!(out, "  {} {ips}: BGP: {why}", service.service);
            }
        }
    }
    if report.valid {
        let _ = writeln!(out, "Result: valid");
    } else {
        let _ = writeln!(
            out,
            "Result: INVALID: {} problem(s); the objects named are left out",
            report.problems.len()
        );
    }
    out
}
