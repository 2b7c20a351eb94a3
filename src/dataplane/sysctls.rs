//! The kernel settings IPVS mode needs (`node-sysctl` decides which), applied at start.

use tracing::{info, warn};

use crate::config::Config;
use crate::observe::metrics::Metrics;

/// Applies the sysctls the configuration calls for and logs each change. A setting that
/// cannot be read or written is a warning and a metric, never fatal: the agent still
/// programs IPVS, and `ipvs-proxy check` names the fix.
pub fn apply(config: &Config, metrics: &Metrics) {
    let options = node_sysctl::Options {
        strict_arp: config.ipvs.strict_arp,
        ..node_sysctl::Options::default()
    };
    let sysctls = match node_sysctl::NodeSysctls::detect(node_sysctl::Sysctl::default(), &options) {
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
