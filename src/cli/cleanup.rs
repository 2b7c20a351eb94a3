//! `ipvs-proxy cleanup`: removes the kernel state ipvs-proxy owns, and nothing else.
//!
//! Ownership is decided exactly as in a sync (see `ipvs_proxy::plan`): virtual servers
//! whose address is bound on kube-ipvs0 or listed in `KUBE-IPVS-IPS`, and NodePort
//! virtual servers whose port is in our NodePort sets. Cleanup diffs the kernel against
//! an empty desired state, applies that plan, then removes our iptables chains, the
//! kube-proxy sets and kube-ipvs0. Because ipvs-proxy uses kube-proxy's names, this also
//! removes the IPVS-mode leftovers of a kube-proxy that ran before; anything else
//! (keepalived's virtual servers, other chains and sets) is left alone.

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use tracing::{info, warn};

use ipvs_proxy::dataplane::iptables::{self, Backend, Iptables};
use ipvs_proxy::dataplane::kernel::Kernel;
use ipvs_proxy::dataplane::netif::{DEFAULT_NAME, host_addresses};
use ipvs_proxy::model::{DesiredState, Family};
use ipvs_proxy::plan::{self, DiffOptions, DrainStarts};

/// Arguments of `ipvs-proxy cleanup`.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// KubeProxyConfiguration file; its `ipvs.excludeCIDRs` are never touched.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
}

/// Removes what ipvs-proxy owns.
pub fn run(args: CleanupArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(cleanup(args))
}

async fn cleanup(args: CleanupArgs) -> Result<()> {
    let config = super::load_config(args.config.as_deref())?;
    let families = BTreeSet::from([Family::V4, Family::V6]);
    let mut kernel = Kernel::open(families.clone())
        .await
        .context("cannot open the kernel interfaces")?;
    let observed = kernel
        .observe()
        .await
        .context("cannot read the kernel state")?;
    let options = DiffOptions {
        exclude_cidrs: config.ipvs.exclude_cidrs.clone(),
        // Cleanup does not wait for connections to drain.
        max_drain: std::time::Duration::ZERO,
    };
    // Nothing is desired; the node's addresses are named so that NodePort virtual
    // servers on them are recognised as ours through the NodePort sets.
    let nothing = DesiredState {
        node_port_addresses: host_addresses(DEFAULT_NAME)
            .await
            .context("cannot list this host's addresses")?
            .into_iter()
            .collect(),
        ..DesiredState::default()
    };
    let plan = plan::diff(
        &nothing,
        &observed,
        &options,
        &DrainStarts::new(),
        Instant::now(),
    );
    let report = kernel.apply(&plan).await;
    info!(
        removed = report.applied,
        failed = report.failed.len(),
        "removed owned virtual servers, addresses and set entries"
    );
    for failed in &report.failed {
        warn!(change = %failed.change, "not removed: {}", failed.error);
    }
    let backend = Backend::detect();
    for family in [iptables::Family::V4, iptables::Family::V6] {
        if let Err(err) = Iptables::new(backend, family).cleanup() {
            warn!(%family, "iptables chains not removed: {err}");
        }
    }
    for (set, reason) in kernel
        .teardown()
        .await
        .context("cannot delete kube-ipvs0")?
    {
        warn!(set = %set, "set not destroyed: {reason}");
    }
    println!(
        "cleanup: removed {} kernel objects, our iptables chains, the KUBE-* sets and kube-ipvs0",
        report.applied
    );
    Ok(())
}
