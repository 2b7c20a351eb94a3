//! Incremental syncs: the part of the node one update concerns, and the record of
//! addresses and set members kept between syncs.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::diff::node_port_entry;
use super::{Change, ObservedState, ObservedVirtualServer};
use crate::model::kube_sets::{IpsetMembers, KubeSet, SetEntry, SetId};
use crate::model::{DesiredState, Family, Protocol, Touched, VirtualServerKey};

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
    pub entries: BTreeSet<(SetId, SetEntry)>,
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
            // The ownership evidence of every protocol, as before: a TCP key's port
            // is also looked up in the UDP set and its address in the SCTP set.
            for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
                let (set, entry) = node_port_entry(VirtualServerKey { protocol, ..*key });
                scope.entries.insert((SetId::new(set, family), entry));
            }
        }
        for addr in &scope.addresses {
            scope.entries.insert((
                SetId::new(KubeSet::IpvsIps, Family::of(*addr)),
                SetEntry::Ip(*addr),
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
            if members.contains(*set, entry) {
                cut.insert(*set, entry);
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
            Change::AddIpsetEntry { set, entry } => ipsets.insert(*set, entry),
            Change::DeleteIpsetEntry { set, entry } => ipsets.remove(*set, entry),
            _ => {}
        }
    }
}
