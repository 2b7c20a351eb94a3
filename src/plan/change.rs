//! The changes a plan is made of, in the order they are applied.

use std::fmt;
use std::net::IpAddr;

use crate::model::kube_sets::{SetEntry, SetId};
use crate::model::{RealServer, VirtualServer, VirtualServerKey};

#[cfg(doc)]
use super::Plan;

/// The virtual-server fields set on add and update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualServerSpec {
    /// Address, port and protocol.
    pub key: VirtualServerKey,
    /// Scheduler name.
    pub scheduler: String,
    /// Persistence timeout (sessionAffinity ClientIP).
    pub persistence_timeout: Option<u32>,
}

impl From<&VirtualServer> for VirtualServerSpec {
    fn from(vs: &VirtualServer) -> Self {
        Self {
            key: vs.key,
            scheduler: vs.scheduler.to_string(),
            persistence_timeout: vs.persistence_timeout,
        }
    }
}

/// One change to apply, in the order of [`Plan::changes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Bind an address on kube-ipvs0.
    AddAddress(IpAddr),
    /// Add an ipset entry.
    AddIpsetEntry {
        /// The set.
        set: SetId,
        /// The entry.
        entry: SetEntry,
    },
    /// Create a virtual server.
    AddVirtualServer(VirtualServerSpec),
    /// Change a virtual server's scheduler or persistence.
    UpdateVirtualServer(VirtualServerSpec),
    /// Add a real server.
    AddRealServer {
        /// The virtual server.
        virtual_server: VirtualServerKey,
        /// The real server.
        real_server: RealServer,
    },
    /// Change a real server's weight (to 1 when desired again, to 0 to drain it).
    UpdateRealServer {
        /// The virtual server.
        virtual_server: VirtualServerKey,
        /// The real server with its new weight.
        real_server: RealServer,
    },
    /// Delete a real server.
    DeleteRealServer {
        /// The virtual server.
        virtual_server: VirtualServerKey,
        /// Address.
        addr: IpAddr,
        /// Port.
        port: u16,
    },
    /// Delete a virtual server (and its real servers).
    DeleteVirtualServer(VirtualServerKey),
    /// Delete an ipset entry.
    DeleteIpsetEntry {
        /// The set.
        set: SetId,
        /// The entry.
        entry: SetEntry,
    },
    /// Unbind an address from kube-ipvs0.
    DeleteAddress(IpAddr),
}

impl Change {
    /// Whether the change only adds or restores: it removes nothing and starts no
    /// drain. The only changes a partial desired state (one that does not hold every
    /// Service, see [`crate::model::Model::apply_early`]) may make, since what it
    /// lacks is merely unknown, not unwanted.
    pub fn is_additive(&self) -> bool {
        match self {
            Self::AddAddress(_)
            | Self::AddIpsetEntry { .. }
            | Self::AddVirtualServer(_)
            | Self::UpdateVirtualServer(_)
            | Self::AddRealServer { .. } => true,
            Self::UpdateRealServer { real_server, .. } => real_server.weight > 0,
            Self::DeleteRealServer { .. }
            | Self::DeleteVirtualServer(_)
            | Self::DeleteIpsetEntry { .. }
            | Self::DeleteAddress(_) => false,
        }
    }

    /// The change's place in a plan: additions first (addresses, then set entries,
    /// then IPVS), removals last, in reverse.
    pub(super) fn rank(&self) -> u8 {
        match self {
            Self::AddAddress(_) => 0,
            Self::AddIpsetEntry { .. } => 1,
            Self::AddVirtualServer(_) => 2,
            Self::UpdateVirtualServer(_) => 3,
            Self::AddRealServer { .. } => 4,
            Self::UpdateRealServer { .. } => 5,
            Self::DeleteRealServer { .. } => 6,
            Self::DeleteVirtualServer(_) => 7,
            Self::DeleteIpsetEntry { .. } => 8,
            Self::DeleteAddress(_) => 9,
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rs = |addr: &IpAddr, port: &u16| match addr {
            IpAddr::V4(a) => format!("{a}:{port}"),
            IpAddr::V6(a) => format!("[{a}]:{port}"),
        };
        match self {
            Self::AddAddress(addr) => write!(f, "bind {addr} on kube-ipvs0"),
            Self::AddIpsetEntry { set, entry } => write!(f, "add {entry} to ipset {set}"),
            Self::AddVirtualServer(spec) => {
                write!(f, "add virtual server {} ({})", spec.key, spec.scheduler)
            }
            Self::UpdateVirtualServer(spec) => {
                write!(f, "update virtual server {} ({})", spec.key, spec.scheduler)
            }
            Self::AddRealServer {
                virtual_server,
                real_server,
            } => write!(
                f,
                "add real server {} to {virtual_server}",
                rs(&real_server.addr, &real_server.port)
            ),
            Self::UpdateRealServer {
                virtual_server,
                real_server,
            } => write!(
                f,
                "set weight {} on real server {} of {virtual_server}",
                real_server.weight,
                rs(&real_server.addr, &real_server.port)
            ),
            Self::DeleteRealServer {
                virtual_server,
                addr,
                port,
            } => {
                write!(
                    f,
                    "delete real server {} of {virtual_server}",
                    rs(addr, port)
                )
            }
            Self::DeleteVirtualServer(key) => write!(f, "delete virtual server {key}"),
            Self::DeleteIpsetEntry { set, entry } => write!(f, "delete {entry} from ipset {set}"),
            Self::DeleteAddress(addr) => write!(f, "unbind {addr} from kube-ipvs0"),
        }
    }
}
