//! What the allocation answers: per Service an [`Assignment`] or a [`Refusal`] (with
//! the addresses it held and lost), worded for the Service's Events.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use crate::model::ServiceKey;

/// What a Service gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The pool the addresses come from (`metallb.io/ip-allocated-from-pool`).
    pub pool: String,
    /// The addresses, one per family, in the order written to
    /// `status.loadBalancer.ingress`.
    pub ips: Vec<IpAddr>,
}

/// The result for one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceOutcome {
    /// Its addresses, or why it has none.
    pub result: Result<Assignment, Refusal>,
    /// Whether the addresses are exactly the ones it already held (nothing to write
    /// but possibly the pool annotation).
    pub kept: bool,
    /// Addresses it held that it may not keep, and why (they were released).
    pub dropped: Option<Dropped>,
}

/// Addresses a Service held and lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The addresses it held.
    pub ips: Vec<IpAddr>,
    /// Why it may not keep them.
    pub reason: Refusal,
}

/// The whole allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocation {
    /// Per Service (the frozen ones are not listed: they keep what they hold).
    pub services: BTreeMap<ServiceKey, ServiceOutcome>,
}

impl Allocation {
    /// The addresses assigned to `service`, if any.
    pub fn ips(&self, service: &ServiceKey) -> Option<&[IpAddr]> {
        match &self.services.get(service)?.result {
            Ok(assignment) => Some(&assignment.ips),
            Err(_) => None,
        }
    }

    /// Every assignment.
    pub fn assignments(&self) -> impl Iterator<Item = (&ServiceKey, &Assignment)> {
        self.services
            .iter()
            .filter_map(|(key, outcome)| Some((key, outcome.result.as_ref().ok()?)))
    }
}

/// Why two Services may not share an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SharingConflict {
    /// One of them has no `allow-shared-ip` key.
    #[error("{0} has no metallb.io/allow-shared-ip key")]
    NotShared(ServiceKey),
    /// Their sharing keys differ.
    #[error("sharing key {ours:?} differs from {other}'s {theirs:?}")]
    KeyDiffers {
        /// This Service's key.
        ours: String,
        /// The other Service.
        other: ServiceKey,
        /// The other Service's key.
        theirs: String,
    },
    /// Their backend keys differ (`externalTrafficPolicy: Local` with different
    /// selectors, or one Local and one Cluster).
    #[error(
        "backends differ from {other}'s (externalTrafficPolicy Local needs the same selector on both)"
    )]
    BackendDiffers {
        /// The other Service.
        other: ServiceKey,
    },
    /// Both use this protocol and port.
    #[error("{protocol}/{port} is already used by {other}")]
    PortInUse {
        /// The protocol.
        protocol: &'static str,
        /// The port.
        port: u16,
        /// The other Service.
        other: ServiceKey,
    },
    /// Held by a Service whose requests cannot be read.
    #[error("held by {0}, whose requests cannot be read")]
    Frozen(ServiceKey),
}

/// Why a Service gets no address (or may not keep one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The configuration has no pool at all.
    #[error("no IPAddressPool is configured")]
    NoPools,
    /// A requested address is in no pool.
    #[error("{0} is not in any IPAddressPool")]
    NotInAnyPool(IpAddr),
    /// A requested address is one its pool never hands out (`avoidBuggyIPs`).
    #[error("{ip} ends in .0 or .255 and pool {pool} has avoidBuggyIPs")]
    AvoidedAddress {
        /// The address.
        ip: IpAddr,
        /// The pool.
        pool: String,
    },
    /// The requested addresses are in different pools.
    #[error("{ips} are in different pools ({pools}); one Service's addresses come from one pool")]
    DifferentPools {
        /// The addresses.
        ips: IpList,
        /// Their pools, comma-separated.
        pools: String,
    },
    /// An address is used by another Service that may not share it.
    #[error("{ip} is in use: {conflict}")]
    InUse {
        /// The address.
        ip: IpAddr,
        /// Why it cannot be shared.
        conflict: SharingConflict,
    },
    /// The addresses do not fit the Service's IP families.
    #[error("{ips} do not fit the Service's IP families ({wanted})")]
    WrongFamily {
        /// The addresses.
        ips: IpList,
        /// What the Service wants, e.g. "IPv4 and IPv6 (RequireDualStack)".
        wanted: String,
    },
    /// `metallb.io/address-pool` names no pool.
    #[error("metallb.io/address-pool: no IPAddressPool named {0:?}")]
    UnknownPool(String),
    /// The pool's `serviceAllocation` does not let this Service in.
    #[error("pool {pool} does not allow this Service: {why}")]
    PoolNotAllowed {
        /// The pool.
        pool: String,
        /// Which restriction.
        why: String,
    },
    /// The requested addresses are not in the requested pool.
    #[error(
        "requested addresses {ips} are in pool {actual}, not in the requested pool {requested}"
    )]
    ConflictingPool {
        /// The addresses.
        ips: IpList,
        /// `metallb.io/address-pool`.
        requested: String,
        /// Where the addresses are.
        actual: String,
    },
    /// The Service requests other addresses than the ones it holds.
    #[error("the Service now requests {0}")]
    OtherAddressesRequested(IpList),
    /// The Service requests another pool than the one its addresses are in.
    #[error("the Service now requests pool {0}")]
    OtherPoolRequested(String),
    /// No pool hands out addresses to this Service without being asked.
    #[error(
        "no pool assigns addresses automatically to this Service (every pool has autoAssign: false or a serviceAllocation that does not select it); request one with metallb.io/address-pool or metallb.io/loadBalancerIPs"
    )]
    NoAutoAssignPool,
    /// The pools tried have no free address of the families wanted.
    #[error("no free {wanted} address in pool(s) {pools}")]
    Exhausted {
        /// The pools tried, comma-separated.
        pools: String,
        /// What the Service wants.
        wanted: String,
    },
}

/// Addresses, printed comma-separated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpList(pub Vec<IpAddr>);

impl fmt::Display for IpList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, ip) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{ip}")?;
        }
        Ok(())
    }
}
