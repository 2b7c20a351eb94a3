//! LoadBalancer IPAM: which address each LoadBalancer Service gets from MetalLB's
//! pools.
//!
//! - [`allocate`](mod@allocate): the allocation as a pure function of the pools, the
//!   Services and the namespaces' labels ([`allocate_objects`] on whole objects). The
//!   static source runs it on every node (same inputs, same answer); the controller
//!   runs it in the cluster. Without an API server nothing is written back, so there
//!   a Service keeps its address only as long as the inputs do not change the order
//!   of service (oldest first by `creationTimestamp`, then by name): manifests that
//!   must keep their addresses carry them (`status.loadBalancer.ingress`, or
//!   `metallb.io/loadBalancerIPs`).
//! - [`controller`]: the cluster's one active allocator, elected through a
//!   `coordination.k8s.io` Lease, writing `status.loadBalancer.ingress` and the
//!   `metallb.io/ip-allocated-from-pool` annotation, and each `IPAddressPool`'s
//!   `status` counters ([`pool_usage`](mod@pool_usage)) and MetalLB's allocator
//!   metrics ([`IpamMetrics`]).

pub mod allocate;
pub mod controller;
pub mod metrics;
pub mod pool_usage;

pub use allocate::{
    Allocation, Assignment, Dropped, IpList, NamespaceLabels, OurServices, Refusal, ServiceOutcome,
    SharingConflict, Unreadable, allocate, allocate_objects,
};
pub use controller::{IpamError, IpamHandle, IpamOptions, spawn_ipam, spawn_ipam_with_metrics};
pub use metrics::IpamMetrics;
pub use pool_usage::{PoolUsage, pool_usage};
