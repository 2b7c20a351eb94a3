//! The changes that turn the observed kernel state into the desired state: a pure
//! function of both, ordered so that traffic is never sent to a virtual server before
//! its address and backends exist, and removed state goes last.
//!
//! Ownership: the node may hold IPVS state that is not ours (keepalived, another
//! proxy). A virtual server not in the desired set is deleted only when it is ours:
//! its address is bound on kube-ipvs0 or listed in `KUBE-IPVS-IPS`, or it is a node
//! address serving a port listed in our NodePort ipsets. Anything inside
//! `ipvs.excludeCIDRs` is never deleted. Both tests use kernel state, so ownership is
//! recognised again after a restart.
//!
//! Graceful termination: a real server that is no longer desired is set to weight 0
//! while it has active connections and deleted when they reach zero or after
//! `maxDrainSeconds`. The drain is recognised from kernel state (weight 0 and not
//! desired), so it resumes after a restart instead of being reset; only its start time
//! lives in memory ([`DrainStarts`]), and after a restart the clock starts again from
//! the first sync. UDP and SCTP real servers are deleted at once, as there is no
//! connection to finish.

mod change;
mod diff;
mod drain;
mod observed;
mod scope;

pub use change::{Change, VirtualServerSpec};
pub use diff::{DiffOptions, diff};
pub use drain::DrainStarts;
pub use observed::{ObservedRealServer, ObservedState, ObservedVirtualServer};
pub use scope::{Scope, record_applied};

/// The result of a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Changes in the order to apply them.
    pub changes: Vec<Change>,
    /// The real servers still draining after this plan, with their start times; pass it
    /// to the next diff.
    pub draining: DrainStarts,
}
