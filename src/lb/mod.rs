//! LoadBalancer Services: MetalLB's part of the job, done the way MetalLB does it.
//!
//! - [`service`]: what a `type: LoadBalancer` Service asks for (class, requested
//!   addresses, pool, sharing key) and what it holds (its ingress addresses), read
//!   from the Service and MetalLB's annotations.
//! - `ipam`: which address each Service gets from the pools ([`metallb_config`]'s
//!   validated configuration): a pure allocation, and the controller that writes it
//!   to `status.loadBalancer` while holding the cluster's allocator Lease.
//! - `decision`: per LoadBalancer IP, who announces it: the advertisements, the
//!   eligible nodes, the layer-2 owner ranked as MetalLB ranks it, and the BGP
//!   announcements per node and peer. Pure and incremental.
//! - [`dry_run`]: all of the above on a directory of exported objects, for
//!   `ipvs-proxy plan`.
//!
//! The announcers in [`crate::announce`] act on the decision; nothing here does I/O
//! except the IPAM controller.

pub mod decision;
pub mod dry_run;
pub mod ipam;
pub mod service;
pub mod static_alloc;

pub use service::{LbService, LbServiceError, ServicePort};
