//! ipvs-proxy's own document, `ipvs-proxy.io/v1alpha1` `IpvsProxyConfiguration`: the
//! settings kube-proxy has no field for.

use std::time::Duration;

use serde::Deserialize;

use super::documents::Unsupported;
use super::{ConfigError, invalid};

/// ipvs-proxy's own settings (`IpvsProxyConfiguration`), resolved with defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extensions {
    /// The longest a removed TCP real server is kept at weight 0 while it still has
    /// connections (kube-proxy has no bound). Default 15 minutes.
    pub max_drain: Duration,
}

impl Default for Extensions {
    fn default() -> Self {
        Self {
            max_drain: Duration::from_secs(15 * 60),
        }
    }
}

/// Fields of the document that are reserved for features not built yet.
pub(super) const UNSUPPORTED: &[Unsupported] = &[Unsupported {
    path: "announcer",
    why: " (announcing LoadBalancer IPs comes in a later version)",
}];

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawExtensions {
    max_drain_seconds: Option<i64>,
}

impl RawExtensions {
    pub(super) fn resolve(self) -> Result<Extensions, ConfigError> {
        let max_drain = match self.max_drain_seconds {
            None => Extensions::default().max_drain,
            Some(seconds @ 1..) => Duration::from_secs(seconds as u64),
            Some(seconds) => {
                return Err(invalid(
                    "IpvsProxyConfiguration.maxDrainSeconds",
                    seconds,
                    "a whole number of seconds greater than 0",
                ));
            }
        };
        Ok(Extensions { max_drain })
    }
}
