//! `ipvs-proxy run`: parses the flags, resolves the configuration and the node name, and
//! starts [`ipvs_proxy::agent::run`] on a two-worker runtime until SIGINT or SIGTERM.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use ipvs_proxy::agent::{self, AgentOptions, SourceChoice};
use ipvs_proxy::config::Config;

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
    /// Unix socket answering `ipvs-proxy services` (read-only, mode 0600).
    #[arg(long, default_value = ipvs_proxy::observe::status::DEFAULT_SOCKET)]
    pub status_socket: PathBuf,
}

/// This node's name: the flag, the config's `hostnameOverride`, then the hostname.
fn node_name(args: &RunArgs, config: &Config) -> String {
    args.hostname_override
        .clone()
        .or_else(|| config.hostname_override.clone())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_string())
        })
        .unwrap_or_default()
        .to_lowercase()
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    match terminate {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("interrupted"),
                _ = terminate.recv() => tracing::info!("terminated"),
            }
        }
        Err(err) => {
            tracing::warn!("cannot watch SIGTERM, only SIGINT stops the agent: {err}");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs the node agent until SIGINT or SIGTERM.
pub fn run(args: RunArgs) -> Result<()> {
    let config = super::load_config(args.config.as_deref())?;
    let options = AgentOptions {
        node_name: node_name(&args, &config),
        source: match args.manifests {
            Some(dir) => SourceChoice::Static(dir),
            None => SourceChoice::Kubernetes {
                kubeconfig: args.kubeconfig,
            },
        },
        status_socket: Some(args.status_socket),
        config,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(agent::run(options, shutdown_signal()))?;
    Ok(())
}
