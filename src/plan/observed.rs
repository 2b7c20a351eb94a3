//! What the kernel holds, in the plan's terms: the other side of the diff.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::model::kube_sets::IpsetMembers;
use crate::model::{DesiredState, VirtualServerKey};

/// A real server as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObservedRealServer {
    /// Address.
    pub addr: IpAddr,
    /// Port.
    pub port: u16,
    /// Current weight.
    pub weight: u32,
    /// Active (established) connections.
    pub active_connections: u32,
    /// Inactive connections (e.g. TIME_WAIT).
    pub inactive_connections: u32,
}

/// A virtual server as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedVirtualServer {
    /// Address, port and protocol.
    pub key: VirtualServerKey,
    /// Scheduler name.
    pub scheduler: String,
    /// Persistence timeout when the persistent flag is set.
    pub persistence_timeout: Option<u32>,
    /// Its real servers.
    pub real_servers: Vec<ObservedRealServer>,
}

/// What the node holds now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedState {
    /// Every IPVS virtual server (ours and others').
    pub virtual_servers: Vec<ObservedVirtualServer>,
    /// Addresses bound on kube-ipvs0.
    pub addresses: BTreeSet<IpAddr>,
    /// Members of the sets in [`crate::model::KubeSet::ALL`] (either family) that exist.
    pub ipsets: IpsetMembers,
}

impl ObservedState {
    /// What the kernel holds right after `desired` was programmed faithfully: every
    /// virtual and real server as desired, no connections yet, the addresses and set
    /// members. The reference point for tests and for "what would change" reasoning.
    pub fn programmed(desired: &DesiredState) -> ObservedState {
        ObservedState {
            virtual_servers: desired
                .virtual_servers
                .values()
                .map(|vs| ObservedVirtualServer {
                    key: vs.key,
                    scheduler: vs.scheduler.to_string(),
                    persistence_timeout: vs.persistence_timeout,
                    real_servers: vs
                        .real_servers
                        .iter()
                        .map(|rs| ObservedRealServer {
                            addr: rs.addr,
                            port: rs.port,
                            weight: rs.weight,
                            active_connections: 0,
                            inactive_connections: 0,
                        })
                        .collect(),
                })
                .collect(),
            addresses: desired.addresses.clone(),
            ipsets: desired.ipsets.clone(),
        }
    }
}
