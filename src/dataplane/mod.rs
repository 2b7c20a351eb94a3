//! The kernel adapters: everything that reads or writes node state.
//!
//! Each adapter is thin: it turns the [`crate::plan`]'s changes into system calls and
//! reports what the kernel said, never deciding what should be there.
//!
//! - [`kernel`]: reads the observed state and applies a plan (IPVS batches, set entries,
//!   addresses on `kube-ipvs0`); [`apply`] cuts a plan into those batches, [`ipvs`] and
//!   [`ipset`] convert the model's servers and set entries to the netlink crates' types.
//! - [`netif`]: the `kube-ipvs0` dummy interface and the host's own addresses.
//! - [`iptables`]: the minimal kube-proxy rule set, rendered purely and installed with
//!   `iptables-restore`.
//! - [`stale_flows`]: deletes conntrack flows left behind by removed UDP/SCTP endpoints.
//! - [`sysctls`]: the kernel settings IPVS mode needs.

pub mod apply;
pub mod ipset;
pub mod iptables;
pub mod ipvs;
pub mod kernel;
pub mod netif;
pub mod stale_flows;
pub mod sysctls;
