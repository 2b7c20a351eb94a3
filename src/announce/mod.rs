//! The LoadBalancer announcers: the room reserved for what comes next.
//!
//! Nothing here runs yet. The plan, so each part lands in a place of its own:
//!
//! - `model::announce` (pure): per LoadBalancer IP, whether this node may announce it,
//!   from the Service's ingress IPs, `externalTrafficPolicy` and the local endpoints,
//!   combined with the MetalLB configuration (pools, advertisements, peers).
//! - `announce::l2`: an instance task answering ARP and NDP for the IPs this node owns
//!   (owner elected per IP among the live agents), fed by a watch channel from the
//!   agent. Its frame codec is a crate with no I/O.
//! - `announce::bgp` and `announce::bfd`: one task per peer driving a sans-IO session
//!   state machine (events in, actions out), with `packet`, `network`, `tasks` and
//!   `error` modules as in holo and rustybgp; the wire codecs are crates with no I/O.
//! - LoadBalancer IPAM: a cluster-wide controller (one active allocator, elected through
//!   a Lease) whose allocation is a pure function of pools and Services.
//!
//! The agent publishes the desired state after each sync; announcers subscribe to it and
//! never touch IPVS, ipsets or iptables.

pub mod bfd;
pub mod bgp;
pub mod l2;
pub mod membership;
