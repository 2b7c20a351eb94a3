//! The kernel settings IPVS mode needs (`node-sysctl` decides which), applied at start,
//! after loading br_netfilter: with a bridge CNI, a pod reaching a Service whose
//! endpoint shares its bridge only gets an answer when bridged traffic passes
//! netfilter (kube-proxy leaves this to the operator).

use node_sysctl::{BR_NETFILTER, Loaded, Sysctl};
use tracing::{info, warn};

use crate::config::Config;
use crate::observe::metrics::Metrics;

/// The environment variable naming where the node's `/proc/sys/net` is mounted when
/// the container's own `/proc/sys` is read-only (an unprivileged Pod: the DaemonSet
/// mounts the host's `/proc/sys/net` at `/host/proc/sys/net` and sets this).
pub const PROC_SYS_NET_ENV: &str = "IPVS_PROXY_PROC_SYS_NET";

/// The node's sysctls: `/proc/sys`, with the `net` keys below [`PROC_SYS_NET_ENV`]'s
/// directory when it is set and not empty.
pub fn node_sysctl() -> Sysctl {
    match std::env::var_os(PROC_SYS_NET_ENV) {
        Some(dir) if !dir.is_empty() => Sysctl::default().with_net_at(dir),
        _ => Sysctl::default(),
    }
}

/// Loads br_netfilter when missing, then applies the sysctls the configuration calls
/// for (the bridge ones included) and logs each change. A module that cannot be loaded
/// or a setting that cannot be read or written is a warning and a metric, never fatal:
/// the agent still programs IPVS, the warning says what is missing and how to fix it,
/// and `ipvs-proxy check` lists it.
pub fn apply(config: &Config, metrics: &Metrics) {
    let options = node_sysctl::Options {
        strict_arp: config.ipvs.strict_arp,
        ..node_sysctl::Options::default()
    };
    let sysctl = node_sysctl();
    if options.bridge_netfilter {
        // Runs modprobe (a short blocking call) once at start, before the first sync.
        match BR_NETFILTER.ensure_loaded(&sysctl) {
            Ok(Loaded::Now) => info!(
                "loaded {}: bridged pod traffic passes iptables and IPVS",
                BR_NETFILTER.name
            ),
            Ok(Loaded::Already) => {}
            Err(err) => {
                warn!("{err}");
                metrics.error("br_netfilter");
            }
        }
    }
    let sysctls = match node_sysctl::NodeSysctls::detect(sysctl, &options) {
        Ok(sysctls) => sysctls,
        Err(err) => {
            warn!("cannot read the kernel settings: {err}");
            metrics.error("sysctl");
            return;
        }
    };
    match sysctls.apply() {
        Ok(changes) => {
            for change in &changes {
                info!("sysctl {change}");
                metrics.sysctl_changes.inc();
            }
        }
        Err(err) => {
            warn!("cannot apply the kernel settings: {err}");
            metrics.error("sysctl");
        }
    }
}
