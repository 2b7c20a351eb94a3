//! The comparison of desired and observed state (see the [module docs](super) for
//! ownership and graceful termination).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::drain::{DrainStarts, retire};
use super::{Change, ObservedRealServer, ObservedState, ObservedVirtualServer, Plan};
use crate::model::kube_sets::{IpsetMembers, KubeSet, SetEntry, SetId};
use crate::model::{DesiredState, Family, Protocol, RealServer, VirtualServerKey};

/// The settings the diff needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffOptions {
    /// Virtual servers inside these are never deleted (`ipvs.excludeCIDRs`).
    pub exclude_cidrs: Vec<IpNet>,
    /// The longest a TCP real server drains at weight 0.
    pub max_drain: Duration,
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
            if let Some(change) = retire(
                *key,
                real_server,
                options.max_drain,
                drain_starts,
                now,
                &mut draining,
            ) {
                changes.push(change);
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
        .contains(SetId::new(KubeSet::IpvsIps, family), &SetEntry::Ip(addr))
    {
        return true;
    }
    if !desired.node_port_addresses.contains(&addr) {
        return false;
    }
    let (set, entry) = node_port_entry(key);
    observed.ipsets.contains(SetId::new(set, family), &entry)
}

/// The NodePort set entry that marks a node-address virtual server as ours (the
/// non-Local set: every NodePort is in it).
pub(super) fn node_port_entry(key: VirtualServerKey) -> (KubeSet, SetEntry) {
    match key.protocol {
        Protocol::Tcp => (KubeSet::NodePortTcp, SetEntry::Port(key.port)),
        Protocol::Udp => (KubeSet::NodePortUdp, SetEntry::Port(key.port)),
        Protocol::Sctp => (
            KubeSet::NodePortSctp,
            SetEntry::ip_port(key.addr, Protocol::Sctp, key.port),
        ),
    }
}

fn diff_ipsets(desired: &IpsetMembers, observed: &IpsetMembers, changes: &mut Vec<Change>) {
    // In kernel-name order, as `ipset list` sorts them.
    let ours: BTreeSet<SetId> = SetId::all().collect();
    let empty = BTreeSet::new();
    for set in ours {
        let want = desired.0.get(&set).unwrap_or(&empty);
        let have = observed.0.get(&set).unwrap_or(&empty);
        for entry in want.difference(have) {
            changes.push(Change::AddIpsetEntry { set, entry: *entry });
        }
        for entry in have.difference(want) {
            changes.push(Change::DeleteIpsetEntry { set, entry: *entry });
        }
    }
}
