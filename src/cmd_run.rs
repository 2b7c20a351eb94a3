//! `ipvs-proxy run` and `ipvs-proxy cleanup`.

use anyhow::{Result, bail};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `ipvs-proxy run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// KubeProxyConfiguration file (kubeproxy.config.k8s.io/v1alpha1, mode: ipvs).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Kubeconfig file; in-cluster configuration when neither this nor --manifests is given.
    #[arg(long, conflicts_with = "manifests")]
    pub kubeconfig: Option<PathBuf>,
    /// Directory of Service/EndpointSlice YAML or JSON files (static source, reloaded on change).
    #[arg(long)]
    pub manifests: Option<PathBuf>,
    /// Name of this node (defaults to the config's hostnameOverride, then the hostname).
    #[arg(long)]
    pub hostname_override: Option<String>,
}

/// Arguments of `ipvs-proxy cleanup`.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Also remove kube-proxy's leftovers (its virtual servers, sets and chains).
    #[arg(long)]
    pub kube_proxy: bool,
}

/// Runs the node agent until a signal stops it.
pub fn run(_args: RunArgs) -> Result<()> {
    bail!("`run` is not implemented yet")
}

/// Removes what ipvs-proxy owns from the kernel.
pub fn cleanup(_args: CleanupArgs) -> Result<()> {
    bail!("`cleanup` is not implemented yet")
}
