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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::model::ipset::{self, ALL_SETS, IpsetMembers};
use crate::model::{
    DesiredState, Family, Protocol, RealServer, Touched, VirtualServer, VirtualServerKey,
};

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
    /// Members of the sets in [`ipset::ALL_SETS`] (either family) that exist.
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

/// The settings the diff needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffOptions {
    /// Virtual servers inside these are never deleted (`ipvs.excludeCIDRs`).
    pub exclude_cidrs: Vec<IpNet>,
    /// The longest a TCP real server drains at weight 0.
    pub max_drain: Duration,
}

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
        /// Full set name.
        set: String,
        /// Entry in ipset syntax.
        entry: String,
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
        /// Full set name.
        set: String,
        /// Entry in ipset syntax.
        entry: String,
    },
    /// Unbind an address from kube-ipvs0.
    DeleteAddress(IpAddr),
}

impl Change {
    /// Whether the change is made in IPVS (not on kube-ipvs0 or in an ipset).
    pub fn is_ipvs(&self) -> bool {
        matches!(
            self,
            Self::AddVirtualServer(_)
                | Self::UpdateVirtualServer(_)
                | Self::DeleteVirtualServer(_)
                | Self::AddRealServer { .. }
                | Self::UpdateRealServer { .. }
                | Self::DeleteRealServer { .. }
        )
    }

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

    fn rank(&self) -> u8 {
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

/// When each draining real server (virtual server, address, port) started draining.
pub type DrainStarts = BTreeMap<(VirtualServerKey, IpAddr, u16), Instant>;

/// The result of a diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Changes in the order to apply them.
    pub changes: Vec<Change>,
    /// The real servers still draining after this plan, with their start times; pass it
    /// to the next diff.
    pub draining: DrainStarts,
}

/// Compares desired and observed state; `drain_starts` comes from the previous plan
/// (empty after a restart) and `now` is the current time.
pub fn diff(
    desired: &DesiredState,
    observed: &ObservedState,
    options: &DiffOptions,
    drain_starts: &DrainStarts,
    now: Instant,
) -> Plan {
    let mut changes = Vec::new();
    let mut draining = DrainStarts::new();

    for addr in desired.addresses.difference(&observed.addresses) {
        changes.push(Change::AddAddress(*addr));
    }
    for addr in observed.addresses.difference(&desired.addresses) {
        // An excluded virtual server may still rely on its address.
        if !is_excluded(*addr, &options.exclude_cidrs) {
            changes.push(Change::DeleteAddress(*addr));
        }
    }

    diff_ipsets(&desired.ipsets, &observed.ipsets, &mut changes);

    let observed_by_key: BTreeMap<VirtualServerKey, &ObservedVirtualServer> = observed
        .virtual_servers
        .iter()
        .map(|vs| (vs.key, vs))
        .collect();

    for (key, vs) in &desired.virtual_servers {
        let Some(current) = observed_by_key.get(key) else {
            changes.push(Change::AddVirtualServer(vs.as_ref().into()));
            for real_server in &vs.real_servers {
                changes.push(Change::AddRealServer {
                    virtual_server: *key,
                    real_server: *real_server,
                });
            }
            continue;
        };
        if *current.scheduler != *vs.scheduler
            || current.persistence_timeout != vs.persistence_timeout
        {
            changes.push(Change::UpdateVirtualServer(vs.as_ref().into()));
        }
        let wanted: BTreeMap<(IpAddr, u16), &RealServer> = vs
            .real_servers
            .iter()
            .map(|rs| ((rs.addr, rs.port), rs))
            .collect();
        let present: BTreeMap<(IpAddr, u16), &ObservedRealServer> = current
            .real_servers
            .iter()
            .map(|rs| ((rs.addr, rs.port), rs))
            .collect();
        for (id, real_server) in &wanted {
            match present.get(id) {
                None => changes.push(Change::AddRealServer {
                    virtual_server: *key,
                    real_server: **real_server,
                }),
                Some(now_there) if now_there.weight != real_server.weight => {
                    changes.push(Change::UpdateRealServer {
                        virtual_server: *key,
                        real_server: **real_server,
                    })
                }
                Some(_) => {}
            }
        }
        for (id, real_server) in &present {
            if wanted.contains_key(id) {
                continue;
            }
            let delete = Change::DeleteRealServer {
                virtual_server: *key,
                addr: real_server.addr,
                port: real_server.port,
            };
            if key.protocol != Protocol::Tcp || real_server.active_connections == 0 {
                changes.push(delete);
                continue;
            }
            let drain_key = (*key, real_server.addr, real_server.port);
            if real_server.weight != 0 {
                changes.push(Change::UpdateRealServer {
                    virtual_server: *key,
                    real_server: RealServer {
                        addr: real_server.addr,
                        port: real_server.port,
                        weight: 0,
                    },
                });
                draining.insert(drain_key, now);
                continue;
            }
            let started = drain_starts.get(&drain_key).copied().unwrap_or(now);
            if now.saturating_duration_since(started) >= options.max_drain {
                changes.push(delete);
            } else {
                draining.insert(drain_key, started);
            }
        }
    }

    for vs in &observed.virtual_servers {
        if desired.virtual_servers.contains_key(&vs.key) {
            continue;
        }
        if is_ours(vs.key, desired, observed) && !is_excluded(vs.key.addr, &options.exclude_cidrs) {
            changes.push(Change::DeleteVirtualServer(vs.key));
        }
    }

    changes.sort_by_key(Change::rank);
    Plan { changes, draining }
}

fn is_excluded(addr: IpAddr, exclude_cidrs: &[IpNet]) -> bool {
    exclude_cidrs.iter().any(|cidr| cidr.contains(&addr))
}

/// Whether an observed virtual server that is not desired was created by us.
fn is_ours(key: VirtualServerKey, desired: &DesiredState, observed: &ObservedState) -> bool {
    let family = Family::of(key.addr);
    let addr = key.addr;
    if observed.addresses.contains(&addr) || desired.addresses.contains(&addr) {
        return true;
    }
    if observed
        .ipsets
        .contains(&ipset::set_name(ipset::IPVS_IPS, family), &addr.to_string())
    {
        return true;
    }
    if !desired.node_port_addresses.contains(&addr) {
        return false;
    }
    match key.protocol {
        Protocol::Tcp => observed.ipsets.contains(
            &ipset::set_name(ipset::NODE_PORT_TCP, family),
            &key.port.to_string(),
        ),
        Protocol::Udp => observed.ipsets.contains(
            &ipset::set_name(ipset::NODE_PORT_UDP, family),
            &key.port.to_string(),
        ),
        Protocol::Sctp => observed.ipsets.contains(
            &ipset::set_name(ipset::NODE_PORT_SCTP_HASH, family),
            &format!("{addr},sctp:{}", key.port),
        ),
    }
}

fn diff_ipsets(desired: &IpsetMembers, observed: &IpsetMembers, changes: &mut Vec<Change>) {
    let ours: BTreeSet<String> = ALL_SETS
        .iter()
        .flat_map(|base| {
            [
                ipset::set_name(base, Family::V4),
                ipset::set_name(base, Family::V6),
            ]
        })
        .collect();
    for set in &ours {
        let want = desired.get(set);
        let have = observed.get(set);
        for entry in want.difference(&have) {
            changes.push(Change::AddIpsetEntry {
                set: set.clone(),
                entry: entry.clone(),
            });
        }
        for entry in have.difference(&want) {
            changes.push(Change::DeleteIpsetEntry {
                set: set.clone(),
                entry: entry.clone(),
            });
        }
    }
}

/// The part of the node one incremental sync reads and diffs: what an update touched
/// ([`Touched`]), widened by what deciding about it needs (the ownership evidence of
/// each touched virtual server). Both sides of the diff are cut to the same scope, so
/// the plan for the scope is exactly the part of the full plan that concerns it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Virtual servers to read from the kernel and diff.
    pub virtual_servers: BTreeSet<VirtualServerKey>,
    /// kube-ipvs0 addresses to diff.
    pub addresses: BTreeSet<IpAddr>,
    /// ipset entries `(set, entry)` to diff.
    pub entries: BTreeSet<(String, String)>,
}

impl Scope {
    /// The scope of `touched`.
    pub fn of(touched: &Touched) -> Scope {
        let mut scope = Scope {
            virtual_servers: touched.virtual_servers.clone(),
            addresses: touched.addresses.clone(),
            entries: touched.entries.clone(),
        };
        for key in &touched.virtual_servers {
            let family = Family::of(key.addr);
            scope.addresses.insert(key.addr);
            let port = key.port.to_string();
            scope
                .entries
                .insert((ipset::set_name(ipset::NODE_PORT_TCP, family), port.clone()));
            scope
                .entries
                .insert((ipset::set_name(ipset::NODE_PORT_UDP, family), port));
            scope.entries.insert((
                ipset::set_name(ipset::NODE_PORT_SCTP_HASH, family),
                format!("{},sctp:{}", key.addr, key.port),
            ));
        }
        for addr in &scope.addresses {
            scope.entries.insert((
                ipset::set_name(ipset::IPVS_IPS, Family::of(*addr)),
                addr.to_string(),
            ));
        }
        scope
    }

    /// The desired state cut to this scope (NodePort addresses are kept whole: the
    /// ownership test needs them and they are few).
    pub fn desired(&self, desired: &DesiredState) -> DesiredState {
        DesiredState {
            virtual_servers: self
                .virtual_servers
                .iter()
                .filter_map(|key| {
                    desired
                        .virtual_servers
                        .get(key)
                        .map(|vs| (*key, vs.clone()))
                })
                .collect(),
            addresses: self
                .addresses
                .iter()
                .filter(|addr| desired.addresses.contains(addr))
                .copied()
                .collect(),
            ipsets: self.members(&desired.ipsets),
            node_port_addresses: desired.node_port_addresses.clone(),
            ..DesiredState::default()
        }
    }

    /// The observed state cut to this scope: `virtual_servers` as read from the kernel
    /// for [`Scope::virtual_servers`], addresses and set members from what is known of
    /// the whole node.
    pub fn observed(
        &self,
        virtual_servers: Vec<ObservedVirtualServer>,
        addresses: &BTreeSet<IpAddr>,
        ipsets: &IpsetMembers,
    ) -> ObservedState {
        ObservedState {
            virtual_servers,
            addresses: self
                .addresses
                .iter()
                .filter(|addr| addresses.contains(addr))
                .copied()
                .collect(),
            ipsets: self.members(ipsets),
        }
    }

    fn members(&self, members: &IpsetMembers) -> IpsetMembers {
        let mut cut = IpsetMembers::default();
        for (set, entry) in &self.entries {
            if members.contains(set, entry) {
                cut.0.entry(set.clone()).or_default().insert(entry.clone());
            }
        }
        cut
    }
}

/// Updates a record of kube-ipvs0 addresses and set members with the changes of an
/// applied plan, so the next incremental sync need not read them back.
pub fn record_applied(
    changes: &[Change],
    addresses: &mut BTreeSet<IpAddr>,
    ipsets: &mut IpsetMembers,
) {
    for change in changes {
        match change {
            Change::AddAddress(addr) => {
                addresses.insert(*addr);
            }
            Change::DeleteAddress(addr) => {
                addresses.remove(addr);
            }
            Change::AddIpsetEntry { set, entry } => {
                ipsets
                    .0
                    .entry(set.clone())
                    .or_default()
                    .insert(entry.clone());
            }
            Change::DeleteIpsetEntry { set, entry } => {
                if let Some(entries) = ipsets.0.get_mut(set) {
                    entries.remove(entry);
                    if entries.is_empty() {
                        ipsets.0.remove(set);
                    }
                }
            }
            _ => {}
        }
    }
}
