//! The LoadBalancer announcers, as libraries the agent runs (`agent::announce`).
//!
//! What to announce is decided in [`crate::lb::decision`] (per LoadBalancer IP: the
//! layer-2 owner among the live agents, the BGP routes per node and peer); these
//! modules act on it, each tested against the real thing in the kernel lab:
//!
//! - [`l2`]: answers ARP and NDP for the addresses this node owns, on the interfaces
//!   the rule picks, with a gratuitous burst on takeover (frames: the `neighbor-frames`
//!   crate).
//! - [`membership`]: SWIM liveness among the agents (authenticated UDP), the live set
//!   the layer-2 election runs over.
//! - [`bgp`]: one task per peer driving `bgp-proto`'s sans-IO session (MD5, graceful
//!   restart, End-of-RIB), announcing this node's routes.
//! - [`bfd`]: BFD sessions over UDP with GTSM, driving `bfd-proto`'s state machine;
//!   a session going down tears its BGP session down.
//!
//! The agent publishes the decision's local part on watch channels after each update
//! (`agent::announce`); the announcers never touch IPVS, ipsets or iptables.

pub mod bfd;
pub mod bgp;
pub mod l2;
pub mod membership;
