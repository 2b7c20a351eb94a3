//! The kernel settings IPVS mode needs (`node-sysctl` decides which), applied at start,
//! after loading br_netfilter: with a bridge CNI, a pod reaching a Service whose
//! endpoint shares its bridge only gets an answer when bridged traffic passes
//! netfilter (kube-proxy leaves this to the operator).

use node_sysctl::{BR_NETFILTER, Loaded};
use tracing::{info, warn};

use crate::config::Config;
use crate::observe::metrics::Metrics;

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
    let sysctl = node_sysctl::Sysctl::default();
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
