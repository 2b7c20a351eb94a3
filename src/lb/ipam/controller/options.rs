//! How the controller runs ([`IpamOptions`], checked before it starts) and why it
//! stopped ([`IpamError`]).

use std::time::Duration;

use kube_lease_manager::LeaseManagerError;

use super::{DEFAULT_LEASE_NAME, DEFAULT_LEASE_NAMESPACE};
use crate::observe::k8s_events::EventOptions;

/// How the IPAM controller runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamOptions {
    /// This agent's identity in the Lease (the node name: unique and readable).
    pub identity: String,
    /// The Lease's namespace.
    pub lease_namespace: String,
    /// The Lease's name.
    pub lease_name: String,
    /// How long a Lease stays valid after its last renewal (whole seconds, ≥ 2).
    pub lease_duration: Duration,
    /// The holder renews this long before the Lease runs out; half of it is the clock
    /// skew tolerated between agents (whole seconds, ≥ 1, below the duration).
    pub lease_grace: Duration,
    /// How often the holder reads the Lease back to confirm it may write (below
    /// half the grace).
    pub confirm_interval: Duration,
    /// The namespace of MetalLB's objects: where the `IPAddressPool`s whose `status`
    /// the leader writes live (the agent's `loadBalancer.metallbNamespace`).
    pub pool_namespace: String,
    /// `spec.loadBalancerClass` of the Services that are ours (`None`: Services
    /// without a class, as MetalLB without `--lb-class`).
    pub load_balancer_class: Option<String>,
    /// How long to wait after a change for more before computing (bursts of changes
    /// are computed once).
    pub settle: Duration,
    /// When to try again after a write the API server refused.
    pub retry: Duration,
    /// Writes per round; between rounds the Lease is confirmed again.
    pub batch: usize,
    /// The Events' queue and timeout.
    pub events: EventOptions,
}

impl IpamOptions {
    /// The defaults for an agent named `identity`: the Lease
    /// `kube-system/ipvs-proxy-ipam`, valid 15 s and renewed 5 s before it runs out
    /// (Kubernetes' own controllers use 15 s too), confirmed every second; the pools
    /// in `metallb-system`.
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            identity: identity.into(),
            lease_namespace: DEFAULT_LEASE_NAMESPACE.to_string(),
            lease_name: DEFAULT_LEASE_NAME.to_string(),
            lease_duration: Duration::from_secs(15),
            lease_grace: Duration::from_secs(5),
            confirm_interval: Duration::from_secs(1),
            pool_namespace: metallb_config::DEFAULT_NAMESPACE.to_string(),
            load_balancer_class: None,
            settle: Duration::from_millis(200),
            retry: Duration::from_secs(5),
            batch: 64,
            events: EventOptions::default(),
        }
    }

    pub(super) fn check(&self) -> Result<(), IpamError> {
        let bad = |why: String| Err(IpamError::Options(why));
        if self.identity.is_empty() {
            return bad("the identity is empty".into());
        }
        let whole = |duration: Duration| duration.subsec_nanos() == 0;
        if !whole(self.lease_duration) || !whole(self.lease_grace) {
            return bad("the Lease duration and grace are whole seconds".into());
        }
        if self.lease_grace.is_zero() || self.lease_grace >= self.lease_duration {
            return bad(format!(
                "the Lease grace ({:?}) must be at least 1 s and below its duration ({:?})",
                self.lease_grace, self.lease_duration
            ));
        }
        if self.confirm_interval.is_zero() || self.confirm_interval >= self.lease_grace / 2 {
            return bad(format!(
                "the confirm interval ({:?}) must be below half the Lease grace ({:?})",
                self.confirm_interval, self.lease_grace
            ));
        }
        if self.batch == 0 {
            return bad("the batch size is 0".into());
        }
        Ok(())
    }
}

/// Why the IPAM controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// The options are inconsistent.
    #[error("IPAM options: {0}")]
    Options(String),
    /// The Lease manager's task ended on an error.
    #[error("the IPAM Lease manager stopped: {0}")]
    Lease(#[from] LeaseManagerError),
    /// The controller's task panicked or was aborted.
    #[error("the IPAM task ended abnormally: {0}")]
    Task(#[from] tokio::task::JoinError),
}
