//! kube-proxy's sets in ipset-netlink's terms: creation specs from the catalog
//! ([`crate::model::kube_sets`]), typed entries to netlink entries and back (no text
//! on the way), and the set operations of the kernel adapter.
//!
//! Every function here takes the blocking [`ipset::IpsetHandle`]: the kernel adapter
//! calls them on a blocking thread, never on an async worker.

use std::collections::BTreeSet;

use ipset_netlink as ipset;

use super::apply::{ApplyReport, EntryBatches, Failed, FailedChange};
use crate::model::kube_sets::{IpsetMembers, SetEntry, SetId, SetType};
use crate::model::{Family, Protocol};
use crate::plan::Change;

/// The creation spec of one of kube-proxy's sets (kube-proxy's sizes: hashsize 1024,
/// maxelem 65536; bitmap sets cover every port).
pub(crate) fn set_spec(set: SetId) -> ipset::SetSpec {
    let name = set.name();
    let family = match set.family {
        Family::V4 => ipset::Family::Inet,
        Family::V6 => ipset::Family::Inet6,
    };
    let set_type = match set.set.set_type() {
        SetType::BitmapPort => return ipset::SetSpec::bitmap_port(name, 0, 65535),
        SetType::HashIp => ipset::SetType::HashIp,
        SetType::HashIpPort => ipset::SetType::HashIpPort,
        SetType::HashIpPortIp => ipset::SetType::HashIpPortIp,
        SetType::HashIpPortNet => ipset::SetType::HashIpPortNet,
    };
    ipset::SetSpec::new(name, set_type, family)
        .hashsize(1024)
        .maxelem(65536)
}

fn netlink_protocol(protocol: Protocol) -> ipset::Protocol {
    match protocol {
        Protocol::Tcp => ipset::Protocol::Tcp,
        Protocol::Udp => ipset::Protocol::Udp,
        Protocol::Sctp => ipset::Protocol::Sctp,
    }
}

fn model_protocol(protocol: ipset::Protocol) -> Option<Protocol> {
    match protocol {
        ipset::Protocol::Tcp => Some(Protocol::Tcp),
        ipset::Protocol::Udp => Some(Protocol::Udp),
        ipset::Protocol::Sctp => Some(Protocol::Sctp),
        ipset::Protocol::Other(_) => None,
    }
}

/// A typed entry as ipset-netlink sends it.
pub(crate) fn to_netlink(entry: &SetEntry) -> ipset::Entry {
    match *entry {
        SetEntry::Ip(ip) => ipset::Entry::Ip(ip),
        SetEntry::IpPort { addr, proto, port } => ipset::Entry::IpPort {
            ip: addr,
            proto: netlink_protocol(proto),
            port,
        },
        SetEntry::IpPortIp {
            addr,
            proto,
            port,
            addr2,
        } => ipset::Entry::IpPortIp {
            ip: addr,
            proto: netlink_protocol(proto),
            port,
            ip2: addr2,
        },
        SetEntry::IpPortNet {
            addr,
            proto,
            port,
            net,
        } => ipset::Entry::IpPortNet {
            ip: addr,
            proto: netlink_protocol(proto),
            port,
            net,
        },
        SetEntry::Port(port) => ipset::Entry::Port(port),
    }
}

/// An entry the kernel listed, typed; `None` for a shape kube-proxy's sets never hold
/// (another protocol, another set type).
pub(crate) fn from_netlink(entry: &ipset::Entry) -> Option<SetEntry> {
    Some(match *entry {
        ipset::Entry::Ip(ip) => SetEntry::Ip(ip),
        ipset::Entry::IpPort { ip, proto, port } => SetEntry::IpPort {
            addr: ip,
            proto: model_protocol(proto)?,
            port,
        },
        ipset::Entry::IpPortIp {
            ip,
            proto,
            port,
            ip2,
        } => SetEntry::IpPortIp {
            addr: ip,
            proto: model_protocol(proto)?,
            port,
            addr2: ip2,
        },
        ipset::Entry::IpPortNet {
            ip,
            proto,
            port,
            net,
        } => SetEntry::IpPortNet {
            addr: ip,
            proto: model_protocol(proto)?,
            port,
            net,
        },
        ipset::Entry::Port(port) => SetEntry::Port(port),
        ipset::Entry::Net(_) | ipset::Entry::Unmodelled(_) => return None,
    })
}

/// Creates every kube-proxy set of `families` that is missing (existing ones are
/// adopted as they are: a set kube-proxy created has the same name, type and meaning).
pub(crate) fn ensure_sets(
    handle: &mut ipset::IpsetHandle,
    families: &BTreeSet<Family>,
) -> Result<(), ipset::Error> {
    for set in SetId::all().filter(|set| families.contains(&set.family)) {
        handle.create(&set_spec(set), true)?;
    }
    Ok(())
}

/// Lists the members of every kube-proxy set of `families`. A set that cannot be
/// listed is logged and left out (the diff then re-adds its entries, harmlessly).
pub(crate) fn read_members(
    handle: &mut ipset::IpsetHandle,
    families: &BTreeSet<Family>,
) -> IpsetMembers {
    let mut members = IpsetMembers::default();
    for set in SetId::all().filter(|set| families.contains(&set.family)) {
        let info = match handle.list(set.name()) {
            Ok(info) => info,
            Err(error) => {
                tracing::warn!(%set, %error, "cannot list ipset");
                continue;
            }
        };
        let entries = members.0.entry(set).or_default();
        for member in info.members {
            match from_netlink(&member.entry) {
                Some(entry) => {
                    entries.insert(entry);
                }
                None => {
                    tracing::warn!(%set, entry = %member.entry, "ignoring an ipset entry kube-proxy never writes")
                }
            }
        }
    }
    members
}

/// Destroys every kube-proxy set of `families`; returns those that could not be
/// destroyed, with the reason.
pub(crate) fn destroy_sets(
    handle: &mut ipset::IpsetHandle,
    families: &BTreeSet<Family>,
) -> Vec<(String, String)> {
    SetId::all()
        .filter(|set| families.contains(&set.family))
        .filter_map(|set| {
            handle
                .destroy(set.name(), true)
                .err()
                .map(|error| (set.name().to_string(), error.to_string()))
        })
        .collect()
}

/// Adds (or deletes) entries, one batch per set. A refused entry is reported on its
/// own and never stops the others.
pub(crate) fn write_entries(
    handle: &mut ipset::IpsetHandle,
    batches: &EntryBatches,
    add: bool,
) -> ApplyReport {
    let mut report = ApplyReport::default();
    let change = |set: SetId, entry: SetEntry| {
        if add {
            Change::AddIpsetEntry { set, entry }
        } else {
            Change::DeleteIpsetEntry { set, entry }
        }
    };
    for (set, entries) in batches {
        if entries.is_empty() {
            continue;
        }
        report.netlink_messages += entries.len() as u64;
        let outcome = if add {
            let members: Vec<ipset::Member> = entries
                .iter()
                .map(|entry| ipset::Member::from(to_netlink(entry)))
                .collect();
            handle.add_batch(set.name(), &members, true)
        } else {
            let entries: Vec<ipset::Entry> = entries.iter().map(to_netlink).collect();
            handle.del_batch(set.name(), &entries, true)
        };
        match outcome {
            Ok(outcome) => {
                report.applied += outcome.applied;
                for (index, error) in outcome.failures {
                    report.failed.push(FailedChange {
                        change: match entries.get(index) {
                            Some(entry) => Failed::Change(change(*set, *entry)),
                            None => Failed::Entries {
                                set: Some(*set),
                                entries: 1,
                                add,
                            },
                        },
                        error: error.to_string(),
                    });
                }
            }
            Err(error) => report.failed.push(FailedChange {
                change: Failed::Entries {
                    set: Some(*set),
                    entries: entries.len(),
                    add,
                },
                error: error.to_string(),
            }),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kube_sets::KubeSet;

    #[test]
    fn typed_entries_reach_netlink_and_come_back_unchanged() {
        let ip = |text: &str| text.parse().unwrap();
        let entries = [
            SetEntry::ip_port(ip("10.96.0.1"), Protocol::Tcp, 443),
            SetEntry::ip_port(ip("fd00::1"), Protocol::Udp, 53),
            SetEntry::IpPortIp {
                addr: ip("10.244.1.5"),
                proto: Protocol::Sctp,
                port: 8080,
                addr2: ip("10.244.1.5"),
            },
            SetEntry::ip_port_net(
                ip("192.0.2.10"),
                Protocol::Tcp,
                80,
                "203.0.113.0/24".parse().unwrap(),
            ),
            SetEntry::Port(30080),
            SetEntry::Ip(ip("10.96.0.10")),
        ];
        for entry in entries {
            let netlink = to_netlink(&entry);
            // Both sides print ipset's syntax, so `ipset list` shows what status shows.
            assert_eq!(netlink.to_string(), entry.to_string());
            assert_eq!(from_netlink(&netlink), Some(entry));
        }
        let icmp = ipset::Entry::IpPort {
            ip: ip("10.96.0.1"),
            proto: ipset::Protocol::Other(1),
            port: 0,
        };
        assert_eq!(from_netlink(&icmp), None);
    }

    #[test]
    fn set_specs_follow_the_catalog() {
        let cut = set_spec(SetId::new(KubeSet::LoadBalancerSourceCidr, Family::V6));
        assert_eq!(cut.name, "KUBE-6-LOAD-BALANCER-SOURCE-CID");
        assert_eq!(cut.set_type, ipset::SetType::HashIpPortNet);
        let ports = set_spec(SetId::new(KubeSet::NodePortUdp, Family::V6));
        assert_eq!(ports.set_type, ipset::SetType::BitmapPort);
        assert_eq!(ports.port_range, Some((0, 65535)));
        for set in SetId::all() {
            assert_eq!(
                set_spec(set).set_type.name(),
                set.set.set_type().name(),
                "{set}"
            );
        }
    }
}
