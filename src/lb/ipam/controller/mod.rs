//! The cluster's LoadBalancer IPAM: one allocator for the whole cluster, elected
//! through a `coordination.k8s.io` Lease, writing each Service's addresses.
//!
//! Every agent runs [`spawn_ipam`]; all of them compete for the Lease (the
//! `kube-lease-manager` crate renews and takes it over), and only the holder works:
//!
//! 1. It confirms the Lease by reading it back: it writes only while the Lease names
//!    it and was renewed less than `duration − grace/2` ago. A failed read, a failed
//!    write that did not reach the API server, or the time running out stops the
//!    writes at once, before another agent may take the Lease over (the other agents
//!    wait for the whole `duration`; `grace/2` is the clock skew tolerated).
//! 2. Once confirmed it lists and watches Services and Namespaces afresh (a
//!    quorum read): the addresses already written, by itself or a previous leader,
//!    are read back before anything is written, so a takeover never moves an
//!    address in use. Each Service is projected to an [`LbService`](crate::lb::service::LbService) as it arrives;
//!    no copy of the object is kept (a cluster may have 10 000 Services).
//! 3. On every change (debounced by `settle`) it runs the pure [`allocate`](crate::lb::ipam::allocate()) and
//!    writes only the differences: `status.loadBalancer.ingress` through the status
//!    subresource and the `metallb.io/ip-allocated-from-pool` annotation (JSON merge
//!    patches), at most `batch` writes before it looks at the Lease again. Events:
//!    `IPAllocated` for each new assignment, `AllocationFailed` for each refusal,
//!    `ClearAssignment` when a Service loses its addresses, `LoadBalancerFailed` for
//!    a Service whose requests cannot be read (it keeps what it holds).
//! 4. After a round that wrote everything, each `IPAddressPool`'s `status` gets
//!    MetalLB's counters (`assignedIPv4`, `availableIPv4`, ...: [`pool_usage`](crate::lb::ipam::pool_usage())) through
//!    the status subresource when they changed, and the leader sets MetalLB's
//!    `metallb_allocator_*` metrics ([`IpamMetrics`]). A pool without an object of its
//!    own (from the legacy ConfigMap) has no status to write.
//! 5. A Service deleted frees its addresses; one no longer a LoadBalancer of ours
//!    that still carries the pool annotation of one of our pools gets its status and
//!    annotation cleared.
//!
//! An empty configuration (no `IPAddressPool` at all) writes nothing: it is also what
//! the agent holds before MetalLB's objects are read, and clearing every Service's
//! addresses then would break every LoadBalancer in the cluster on each restart.
//! MetalLB clears them; here the addresses stay until pools exist again.
//!
//! When the controller loses the Lease it drops its view of the cluster and stops
//!
//! # Modules
//! - `options`: [`IpamOptions`] and [`IpamError`].
//! - `leader`: the Lease, its confirmation, and when a session starts and stops.
//! - `session`: one leadership's view of the cluster (watched Services and
//!   Namespaces) and the reconcile that computes and writes.
//! - `writes`: the differences to write per Service, and how they are written.
//! - `pool_status`: the `IPAddressPool` status counters and the allocator metrics.
//! - `reporter`: the Events, published once per distinct message.

mod leader;
mod options;
mod pool_status;
mod reporter;
mod session;
#[cfg(test)]
mod tests;
mod writes;

use std::sync::Arc;

use kube::Client;
use metallb_config::LbConfig;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::lb::ipam::metrics::IpamMetrics;
use crate::observe::metrics::Metrics;
use leader::run;

pub use options::{IpamError, IpamOptions};

/// Where the Lease lives unless configured: the namespace ipvs-proxy's DaemonSet runs
/// in (manifests/base/daemonset.yaml), beside the Leases of the other kube-system
/// components. (MetalLB's controller is a Deployment of its own and keeps its objects
/// in `metallb-system`; ipvs-proxy reads MetalLB's objects there but needs no write
/// access to it.)
pub const DEFAULT_LEASE_NAMESPACE: &str = "kube-system";
/// The Lease's name unless configured.
pub const DEFAULT_LEASE_NAME: &str = "ipvs-proxy-ipam";
/// The field manager of the IPAM's writes to Services.
pub const FIELD_MANAGER: &str = "ipvs-proxy-ipam";
/// Event reason: a Service was given addresses.
pub const REASON_ALLOCATED: &str = "IPAllocated";
/// Event reason: a Service gets no address.
pub const REASON_FAILED: &str = "AllocationFailed";
/// Event reason: a Service lost the addresses it held.
pub const REASON_CLEARED: &str = "ClearAssignment";
/// Event reason: a Service's requests cannot be read.
pub const REASON_BAD_REQUEST: &str = "LoadBalancerFailed";
/// The Events' action.
pub const ACTION: &str = "AllocateLoadBalancerIP";
/// The error kind counted in `ipvs_proxy_errors_total` for a failed IPAM write.
const WRITE_ERROR_KIND: &str = "ipam-write";
/// The running controller.
#[derive(Debug)]
pub struct IpamHandle {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), IpamError>>,
    writing: watch::Receiver<bool>,
}

impl IpamHandle {
    /// Whether this agent currently holds a confirmed Lease and writes (for the
    /// status page and for tests to wait on).
    pub fn writing(&self) -> watch::Receiver<bool> {
        self.writing.clone()
    }

    /// Whether the controller's task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the controller: no more writes, and the Lease is released so another
    /// agent takes over without waiting for it to run out.
    pub async fn stop(mut self) -> Result<(), IpamError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await?
    }

    /// Stops the controller without waiting. Its writes stop at once; the Lease
    /// manager (a task of its own) still releases the Lease when it notices.
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// Starts the IPAM controller. `config` is the validated MetalLB configuration,
/// updated by the agent's MetalLB source. Must be called inside a Tokio runtime.
///
/// The pools' allocator metrics go nowhere: [`spawn_ipam_with_metrics`] takes them
/// registered.
pub fn spawn_ipam(
    client: Client,
    options: IpamOptions,
    config: watch::Receiver<Arc<LbConfig>>,
    metrics: Arc<Metrics>,
) -> IpamHandle {
    spawn_ipam_with_metrics(client, options, config, metrics, IpamMetrics::default())
}

/// [`spawn_ipam`], the leader setting MetalLB's allocator metrics in `pool_metrics`
/// (registered with [`IpamMetrics::register`] before the registry is shared).
pub fn spawn_ipam_with_metrics(
    client: Client,
    options: IpamOptions,
    config: watch::Receiver<Arc<LbConfig>>,
    metrics: Arc<Metrics>,
    pool_metrics: IpamMetrics,
) -> IpamHandle {
    let (stop, stopped) = oneshot::channel();
    let (writing_tx, writing) = watch::channel(false);
    let task = tokio::spawn(async move {
        options.check()?;
        run(
            client,
            options,
            config,
            metrics,
            pool_metrics,
            stopped,
            writing_tx,
        )
        .await
    });
    IpamHandle {
        stop: Some(stop),
        task,
        writing,
    }
}
