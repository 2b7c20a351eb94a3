//! The pools' side of a reconcile: MetalLB's counters written into each
//! `IPAddressPool`'s `status` (through the status subresource, only when they changed
//! since this leadership last wrote them) and MetalLB's allocator metrics.
//!
//! A status write refused with `403` means the agent's RBAC predates the rule
//! (`ipaddresspools/status`, verb `patch`): one warning, and no more status writes
//! this leadership, so the Services' writes are not held up by a retry loop. A `404`
//! is a pool without an object of its own (converted from the legacy ConfigMap).

use std::collections::BTreeMap;

use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use metallb_config::crd::IPAddressPool;
use serde_json::json;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::{FIELD_MANAGER, WRITE_ERROR_KIND};
use crate::lb::ipam::metrics::IpamMetrics;
use crate::lb::ipam::pool_usage::PoolUsage;
use crate::observe::metrics::Metrics;

/// How a round of status writes ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Published {
    /// Every changed status is written (or cannot be).
    Done,
    /// The API server refused a write: try again later.
    Retry,
    /// A write did not reach the API server, or the Lease ran out: writes stop.
    Stop,
}

/// One leadership's pool statuses and metrics.
#[derive(Debug)]
pub(super) struct PoolStatus {
    metrics: IpamMetrics,
    /// The counters each pool's status holds as this leadership wrote them.
    written: BTreeMap<String, PoolUsage>,
    /// The API server refused a status write for want of permission.
    forbidden: bool,
}

impl PoolStatus {
    pub(super) fn new(metrics: IpamMetrics) -> PoolStatus {
        PoolStatus {
            metrics,
            written: BTreeMap::new(),
            forbidden: false,
        }
    }

    /// Sets the allocator metrics to `usage` (every configured pool).
    pub(super) fn set_metrics(&self, usage: &BTreeMap<String, PoolUsage>) {
        self.metrics.set(usage);
    }

    /// Writes the statuses that differ from what this leadership wrote.
    pub(super) async fn publish(
        &mut self,
        client: &Client,
        namespace: &str,
        usage: &BTreeMap<String, PoolUsage>,
        confirmed_until: Option<Instant>,
        metrics: &Metrics,
    ) -> Published {
        self.written.retain(|pool, _| usage.contains_key(pool));
        if self.forbidden {
            return Published::Done;
        }
        let api: Api<IPAddressPool> = Api::namespaced(client.clone(), namespace);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        let mut published = Published::Done;
        for (pool, counters) in usage {
            if self.written.get(pool) == Some(counters) {
                continue;
            }
            if confirmed_until.is_none_or(|until| Instant::now() >= until) {
                return Published::Stop;
            }
            let patch = json!({"status": {
                "assignedIPv4": counters.assigned_ipv4,
                "assignedIPv6": counters.assigned_ipv6,
                "availableIPv4": counters.available_ipv4,
                "availableIPv6": counters.available_ipv6,
            }});
            match api.patch_status(pool, &params, &Patch::Merge(&patch)).await {
                Ok(_) => {
                    self.written.insert(pool.clone(), *counters);
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    debug!(%pool, "IPAM: no IPAddressPool object in {namespace} to write the status of");
                    self.written.insert(pool.clone(), *counters);
                }
                Err(kube::Error::Api(status)) if status.code == 403 => {
                    metrics.error(WRITE_ERROR_KIND);
                    warn!(%pool, "IPAM: the API server refuses the IPAddressPool status write ({}); the pools' status counters are not written: grant patch on ipaddresspools/status in {namespace}", status.message);
                    self.forbidden = true;
                    return Published::Done;
                }
                Err(kube::Error::Api(status)) => {
                    metrics.error(WRITE_ERROR_KIND);
                    warn!(%pool, "IPAM: the API server refused the IPAddressPool status write: {} {}", status.code, status.message);
                    published = Published::Retry;
                }
                Err(error) => {
                    metrics.error(WRITE_ERROR_KIND);
                    warn!(%pool, "IPAM: the IPAddressPool status write failed: {error}; writes stop until the Lease is confirmed again");
                    return Published::Stop;
                }
            }
        }
        published
    }
}

impl Drop for PoolStatus {
    /// The leadership ends: the series go with it (only the leader reports them).
    fn drop(&mut self) {
        self.metrics.clear();
    }
}
