//! The ipvs-proxy node agent as a library: configuration, the desired-state model,
//! the diff against kernel state, and the adapters that apply it.
//!
//! The binary (`src/main.rs`) is a thin command line over these modules.

pub mod caps;
pub mod config;
pub mod conntrack;
pub mod diff;
pub mod events;
pub mod health;
pub mod iptables;
pub mod listing;
pub mod metrics;
pub mod model;
pub mod netif;
pub mod reconcile;
pub mod source;
pub mod status;
