//! How a [`Plan`] travels to the kernel: partitioned (purely) into one IPVS batch,
//! set-entry batches per set, and address lists, plus the order the kernel adapter
//! applies them in ([`AddPhases`]), and the report of what the kernel said.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipvs_netlink as ipvs;

use super::ipvs::ipvs_change;
use super::netif::DEFAULT_NAME;
use crate::model::kube_sets::{SetEntry, SetId};
use crate::plan::{Change, Plan};

/// Set entries to add or delete, by set (one ipset batch per set).
pub type EntryBatches = BTreeMap<SetId, Vec<SetEntry>>;

/// What a failure concerns: one change of the plan, or a whole batch whose request
/// failed before the kernel could answer change by change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failed {
    /// One change.
    Change(Change),
    /// Every IPVS change of the plan.
    IpvsBatch {
        /// How many.
        changes: usize,
    },
    /// Entries of one set, or of every set when `set` is `None` (the blocking thread
    /// applying them failed).
    Entries {
        /// The set.
        set: Option<SetId>,
        /// How many entries.
        entries: usize,
        /// Adding (or deleting).
        add: bool,
    },
    /// Addresses on kube-ipvs0.
    Addresses {
        /// How many addresses.
        count: usize,
        /// Binding (or unbinding).
        add: bool,
    },
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = |add: bool| if add { "add" } else { "delete" };
        match self {
            Failed::Change(change) => write!(f, "{change}"),
            Failed::IpvsBatch { changes } => write!(f, "{changes} IPVS change(s)"),
            Failed::Entries {
                set: Some(set),
                entries,
                add,
            } => write!(f, "{} {entries} entries of {set}", verb(*add)),
            Failed::Entries {
                set: None,
                entries,
                add,
            } => write!(f, "{} {entries} set entries", verb(*add)),
            Failed::Addresses { count, add: true } => {
                write!(f, "add {count} address(es) to {DEFAULT_NAME}")
            }
            Failed::Addresses { count, add: false } => {
                write!(f, "remove {count} address(es) from {DEFAULT_NAME}")
            }
        }
    }
}

/// One change (or batch) the kernel refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedChange {
    /// What failed.
    pub change: Failed,
    /// The kernel's (or adapter's) error message.
    pub error: String,
}

/// The result of applying one plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Changes the kernel accepted.
    pub applied: usize,
    /// Changes that failed, each with its reason.
    pub failed: Vec<FailedChange>,
    /// Netlink requests sent (IPVS and ipset messages, address requests).
    pub netlink_messages: u64,
}

impl ApplyReport {
    /// Adds the counts and failures of `other`.
    pub fn merge(&mut self, other: ApplyReport) {
        self.applied += other.applied;
        self.failed.extend(other.failed);
        self.netlink_messages += other.netlink_messages;
    }
}

/// A plan split by kernel path (IPVS, nfnetlink ipset, rtnetlink addresses).
#[derive(Debug, Default)]
pub struct Batches {
    /// The IPVS changes, in plan order.
    pub ipvs: Vec<ipvs::Change>,
    /// For each IPVS change, the index of its plan change (for the message of a
    /// failure: formatting every change up front would cost a string per change).
    pub ipvs_origin: Vec<usize>,
    /// Addresses to bind on kube-ipvs0.
    pub add_addresses: Vec<IpAddr>,
    /// Addresses to unbind.
    pub remove_addresses: Vec<IpAddr>,
    /// Set entries to add.
    pub entry_adds: EntryBatches,
    /// Set entries to delete.
    pub entry_dels: EntryBatches,
}

/// Splits `plan` by kernel path, keeping the plan's order within each.
pub fn partition(plan: &Plan) -> Batches {
    let mut batches = Batches::default();
    for (index, change) in plan.changes.iter().enumerate() {
        match change {
            Change::AddAddress(addr) => batches.add_addresses.push(*addr),
            Change::DeleteAddress(addr) => batches.remove_addresses.push(*addr),
            Change::AddIpsetEntry { set, entry } => {
                batches.entry_adds.entry(*set).or_default().push(*entry)
            }
            Change::DeleteIpsetEntry { set, entry } => {
                batches.entry_dels.entry(*set).or_default().push(*entry)
            }
            _ => {
                if let Some(ipvs_change) = ipvs_change(change) {
                    batches.ipvs.push(ipvs_change);
                    batches.ipvs_origin.push(index);
                }
            }
        }
    }
    batches
}

/// The additions in the order they are applied. A VIP's address is bound only after
/// its set entries are in, so the filter and masquerade rules know a VIP before it
/// carries traffic. Binding is the long pole and each add gets slower as kube-ipvs0
/// fills up (the kernel walks its address list), so it starts early: first the
/// entries of the first quarter of the new addresses (and every entry not keyed by a
/// new address), then those addresses bind while the remaining entries go in, and the
/// remaining addresses follow once those entries are in.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AddPhases {
    /// Entries applied first.
    pub first_entries: EntryBatches,
    /// Addresses bound once `first_entries` are in.
    pub first_addresses: Vec<IpAddr>,
    /// Entries applied while `first_addresses` bind: those keyed by `later_addresses`.
    pub later_entries: EntryBatches,
    /// Addresses bound once `later_entries` are in.
    pub later_addresses: Vec<IpAddr>,
}

impl AddPhases {
    /// The phases of binding `addresses` and adding `entries`.
    pub fn of(mut addresses: Vec<IpAddr>, entries: EntryBatches) -> AddPhases {
        addresses.sort_unstable();
        let later_addresses = addresses.split_off(addresses.len().div_ceil(4));
        let (later_entries, first_entries) = split_entries_by_key(entries, &later_addresses);
        AddPhases {
            first_entries,
            first_addresses: addresses,
            later_entries,
            later_addresses,
        }
    }
}

/// Splits set entries in two: those whose first address is one of `addresses`
/// (sorted), and the rest.
fn split_entries_by_key(
    entries: EntryBatches,
    addresses: &[IpAddr],
) -> (EntryBatches, EntryBatches) {
    let mut keyed = EntryBatches::new();
    let mut rest = EntryBatches::new();
    for (set, entries) in entries {
        let (with_key, without): (Vec<SetEntry>, Vec<SetEntry>) =
            entries.into_iter().partition(|entry| {
                entry
                    .addr()
                    .is_some_and(|addr| addresses.binary_search(&addr).is_ok())
            });
        if !with_key.is_empty() {
            keyed.insert(set, with_key);
        }
        if !without.is_empty() {
            rest.insert(set, without);
        }
    }
    (keyed, rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kube_sets::KubeSet;
    use crate::model::{Family, Protocol, RealServer, VirtualServerKey};
    use crate::plan::{DrainStarts, VirtualServerSpec};

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn flat(batches: &EntryBatches) -> Vec<String> {
        batches
            .iter()
            .flat_map(|(set, entries)| entries.iter().map(move |e| format!("{set} {e}")))
            .collect()
    }

    #[test]
    fn entries_keyed_by_later_addresses_wait_for_the_later_phase() {
        let set = |set: KubeSet, family| SetId::new(set, family);
        let tcp = |addr: &str, port| SetEntry::ip_port(ip(addr), Protocol::Tcp, port);
        let hairpin = |addr: &str, port| SetEntry::IpPortIp {
            addr: ip(addr),
            proto: Protocol::Tcp,
            port,
            addr2: ip(addr),
        };
        let entries: EntryBatches = [
            (
                set(KubeSet::ClusterIp, Family::V4),
                vec![
                    tcp("10.96.0.1", 443),
                    SetEntry::ip_port(ip("10.96.0.9"), Protocol::Udp, 53),
                    tcp("10.96.0.10", 80),
                ],
            ),
            (
                set(KubeSet::ClusterIp, Family::V6),
                vec![tcp("fd00::a", 80), tcp("fd00::1", 80)],
            ),
            (
                set(KubeSet::LoopBack, Family::V4),
                vec![hairpin("10.96.0.9", 53), hairpin("10.244.1.5", 80)],
            ),
            (
                set(KubeSet::NodePortTcp, Family::V4),
                vec![SetEntry::Port(30080)],
            ),
            (
                set(KubeSet::LoadBalancerSourceCidr, Family::V4),
                vec![SetEntry::ip_port_net(
                    ip("10.96.0.10"),
                    Protocol::Tcp,
                    80,
                    "192.0.2.0/24".parse().unwrap(),
                )],
            ),
        ]
        .into_iter()
        .collect();
        // 4 new addresses: the lowest one binds first, the other three later.
        let addresses = ["fd00::a", "10.96.0.10", "10.96.0.9", "10.96.0.1"]
            .map(ip)
            .to_vec();
        let phases = AddPhases::of(addresses, entries);
        assert_eq!(phases.first_addresses, [ip("10.96.0.1")]);
        assert_eq!(
            phases.later_addresses,
            [ip("10.96.0.9"), ip("10.96.0.10"), ip("fd00::a")]
        );
        assert_eq!(
            flat(&phases.later_entries),
            [
                "KUBE-6-CLUSTER-IP fd00::a,tcp:80",
                "KUBE-CLUSTER-IP 10.96.0.9,udp:53",
                "KUBE-CLUSTER-IP 10.96.0.10,tcp:80",
                "KUBE-LOAD-BALANCER-SOURCE-CIDR 10.96.0.10,tcp:80,192.0.2.0/24",
                "KUBE-LOOP-BACK 10.96.0.9,tcp:53,10.96.0.9",
            ]
        );
        assert_eq!(
            flat(&phases.first_entries),
            [
                "KUBE-6-CLUSTER-IP fd00::1,tcp:80",
                "KUBE-CLUSTER-IP 10.96.0.1,tcp:443",
                "KUBE-LOOP-BACK 10.244.1.5,tcp:80,10.244.1.5",
                "KUBE-NODE-PORT-TCP 30080",
            ]
        );
    }

    #[test]
    fn a_plan_splits_by_kernel_path_in_plan_order() {
        let key = VirtualServerKey {
            addr: ip("10.96.0.10"),
            port: 80,
            protocol: Protocol::Tcp,
        };
        let cluster_ip = SetId::new(KubeSet::ClusterIp, Family::V4);
        let entry = SetEntry::ip_port(key.addr, Protocol::Tcp, 80);
        let plan = Plan {
            changes: vec![
                Change::AddAddress(key.addr),
                Change::AddIpsetEntry {
                    set: cluster_ip,
                    entry,
                },
                Change::AddVirtualServer(VirtualServerSpec {
                    key,
                    scheduler: "rr".into(),
                    persistence_timeout: None,
                }),
                Change::AddRealServer {
                    virtual_server: key,
                    real_server: RealServer {
                        addr: ip("10.244.1.5"),
                        port: 8080,
                        weight: 1,
                    },
                },
                Change::DeleteIpsetEntry {
                    set: cluster_ip,
                    entry: SetEntry::ip_port(ip("10.96.0.11"), Protocol::Tcp, 80),
                },
                Change::DeleteAddress(ip("10.96.0.11")),
            ],
            draining: DrainStarts::new(),
        };
        let batches = partition(&plan);
        assert_eq!(batches.add_addresses, [key.addr]);
        assert_eq!(batches.remove_addresses, [ip("10.96.0.11")]);
        assert_eq!(
            flat(&batches.entry_adds),
            ["KUBE-CLUSTER-IP 10.96.0.10,tcp:80"]
        );
        assert_eq!(
            flat(&batches.entry_dels),
            ["KUBE-CLUSTER-IP 10.96.0.11,tcp:80"]
        );
        assert_eq!(batches.ipvs_origin, [2, 3]);
        assert!(matches!(batches.ipvs[0], ipvs::Change::AddService(_)));
        assert!(matches!(batches.ipvs[1], ipvs::Change::AddDestination(..)));
    }
}
