//! Checks that tell whether this node can run the agent, and what to fix when not.
//!
//! - [`caps`]: the process's capabilities and a writable `/proc/sys/net`.
//! - [`checks`]: the node checks behind `ipvs-proxy check` (kernel modules, sysctls,
//!   iptables, capabilities).

pub mod caps;
pub mod checks;
