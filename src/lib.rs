//! The ipvs-proxy node agent as a library.
//!
//! Read it from the sources to the kernel:
//!
//! - [`config`]: the `KubeProxyConfiguration` file and our own `IpvsProxyConfiguration`.
//! - [`source`]: where Services, EndpointSlices and the Node come from (the API server's
//!   list/watch, or a directory of manifests), as a stream of [`source::SourceEvent`]s.
//! - [`model`]: the typed desired state, merged incrementally per Service.
//! - [`plan`]: pure functions from desired and observed state to ordered changes.
//! - [`dataplane`]: the thin adapters that read and write the kernel: IPVS, ipsets,
//!   `kube-ipvs0`, iptables, conntrack, sysctls.
//! - [`agent`]: the control loop that ties them together (full, incremental, draining and
//!   early syncs).
//! - [`observe`]: what the agent tells the world: status socket, health, metrics,
//!   Kubernetes Events.
//! - [`listing`]: the `ipvsadm`-identical listing of the kernel's IPVS table.
//! - [`preflight`]: capability and node checks (`ipvs-proxy check`).
//! - [`lb`]: LoadBalancer Services: MetalLB's configuration, the address allocation
//!   (IPAM) and the announce decision.
//! - [`announce`]: the LoadBalancer announcers (layer 2, BGP).
//!
//! The binary (`src/main.rs`, `src/cli/`) only parses arguments and starts these.

pub mod agent;
pub mod announce;
pub mod config;
pub mod dataplane;
pub mod lb;
pub mod listing;
pub mod model;
pub mod observe;
pub mod plan;
pub mod preflight;
pub mod source;
