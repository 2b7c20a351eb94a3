//! LoadBalancer IPAM: which address each LoadBalancer Service gets from MetalLB's
//! pools.
//!
//! - [`allocate`]: the allocation as a pure function of the pools, the Services and
//!   the namespaces' labels. The static source runs it on every node (same inputs,
//!   same answer); the controller runs it in the cluster.
//! - [`controller`]: the cluster's one active allocator, elected through a
//!   `coordination.k8s.io` Lease, writing `status.loadBalancer.ingress` and the
//!   `metallb.io/ip-allocated-from-pool` annotation.

pub mod allocate;
pub mod controller;

pub use allocate::{
    Allocation, Assignment, Dropped, IpList, NamespaceLabels, Refusal, ServiceOutcome,
    SharingConflict, allocate, allocate_objects,
};
pub use controller::{IpamError, IpamHandle, IpamOptions, spawn_ipam};
