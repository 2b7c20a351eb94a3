//! Stale UDP and SCTP conntrack entries after a sync, deleted over netlink as kube-proxy
//! deletes them.
//!
//! With `net.ipv4.vs.conntrack=1` IPVS keeps a conntrack entry per UDP/SCTP flow whose
//! reply direction names the backend. Two kinds of entry outlive their use and keep a
//! client's packets going nowhere until the entry times out (UDP entries are refreshed
//! by every packet, so a chatty client never recovers by itself):
//!
//! - **Removed endpoint**: the flow was sent to a real server that is now deleted. Its
//!   entry is deleted: original destination = the virtual server's address and port,
//!   reply source = the removed real server.
//! - **Untranslated**: the flow reached the virtual address while the Service had no
//!   real server, so the node answered it itself (reply source = original
//!   destination). When a real server is added, those entries are deleted so the next
//!   packet is scheduled to it.
//!
//! kube-proxy (`pkg/proxy/conntrack/cleanup.go`) reconciles the whole table instead:
//! for every UDP Service port with serving endpoints it deletes entries to the Service
//! address and port (NodePorts: to any address on the port) whose reply source is not a
//! serving endpoint. The two rules above select the same entries, computed from the
//! sync's changes rather than the whole model: an entry pointing elsewhere was either
//! sent to a removed real server or answered untranslated. NodePort virtual servers
//! need no special case here: IPVS serves a NodePort only on the node addresses that
//! have a virtual server, every one of which gets its own change and so its own
//! cleanup. Deleting an entry is harmless to a live flow: its next packet creates a new
//! one.
//!
//! [`cleanups`] is the pure part; [`cleanup_after`] runs it against the kernel.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use conntrack_netlink::{
    ConntrackHandle, Family, FlowFilter, IPPROTO_SCTP, IPPROTO_UDP, ReplySource,
};
use tracing::{debug, info, warn};

use crate::model::{Protocol, VirtualServerKey};
use crate::plan::Change;

/// One set of conntrack entries to delete after a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cleanup {
    /// Flows to the virtual server that the node answered itself, because it had no
    /// real server when they started.
    Untranslated(VirtualServerKey),
    /// Flows to the virtual server that IPVS sent to a real server now deleted.
    RemovedEndpoint {
        /// The virtual server.
        virtual_server: VirtualServerKey,
        /// The deleted real server's address.
        addr: IpAddr,
        /// The deleted real server's port.
        port: u16,
    },
}

impl Cleanup {
    /// The virtual server whose flows are deleted.
    pub fn virtual_server(&self) -> VirtualServerKey {
        match self {
            Cleanup::Untranslated(key) => *key,
            Cleanup::RemovedEndpoint { virtual_server, .. } => *virtual_server,
        }
    }

    /// The address family of the flows.
    pub fn family(&self) -> Family {
        Family::of(self.virtual_server().addr)
    }

    /// The flows to delete, as a conntrack filter.
    pub fn filter(&self) -> FlowFilter {
        let key = self.virtual_server();
        FlowFilter {
            protocol: protocol_number(key.protocol),
            original_destination: Some(key.addr),
            original_destination_port: Some(key.port),
            reply_source: match *self {
                Cleanup::Untranslated(_) => ReplySource::Untranslated,
                Cleanup::RemovedEndpoint { addr, port, .. } => ReplySource::Endpoint {
                    addr,
                    port: Some(port),
                },
            },
        }
    }
}

impl fmt::Display for Cleanup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cleanup::Untranslated(key) => write!(f, "untranslated flows to {key}"),
            Cleanup::RemovedEndpoint {
                virtual_server,
                addr: IpAddr::V4(addr),
                port,
            } => write!(f, "flows to {virtual_server} sent to removed {addr}:{port}"),
            Cleanup::RemovedEndpoint {
                virtual_server,
                addr: IpAddr::V6(addr),
                port,
            } => write!(
                f,
                "flows to {virtual_server} sent to removed [{addr}]:{port}"
            ),
        }
    }
}

fn protocol_number(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::Tcp => conntrack_netlink::IPPROTO_TCP,
        Protocol::Udp => IPPROTO_UDP,
        Protocol::Sctp => IPPROTO_SCTP,
    }
}

/// Whether flows of `protocol` need their conntrack entries cleaned: UDP and SCTP, whose
/// entries are not ended by a handshake the backend can answer. TCP entries to a gone
/// backend die with the connection (IPVS `expire_nodest_conn`).
fn needs_cleanup(protocol: Protocol) -> bool {
    matches!(protocol, Protocol::Udp | Protocol::Sctp)
}

/// The conntrack cleanups a sync that applied `changes` calls for, sorted and without
/// duplicates. Pure.
pub fn cleanups(changes: &[Change]) -> Vec<Cleanup> {
    let mut found = BTreeSet::new();
    for change in changes {
        match change {
            Change::AddRealServer { virtual_server, .. }
                if needs_cleanup(virtual_server.protocol) =>
            {
                found.insert(Cleanup::Untranslated(*virtual_server));
            }
            Change::DeleteRealServer {
                virtual_server,
                addr,
                port,
            } if needs_cleanup(virtual_server.protocol) => {
                found.insert(Cleanup::RemovedEndpoint {
                    virtual_server: *virtual_server,
                    addr: *addr,
                    port: *port,
                });
            }
            _ => {}
        }
    }
    found.into_iter().collect()
}

/// What [`cleanup_after`] did.
#[derive(Debug, Default)]
pub struct Report {
    /// The cleanups the changes called for.
    pub cleanups: Vec<Cleanup>,
    /// Conntrack entries deleted.
    pub deleted: usize,
    /// Matching entries that were gone before their delete (expired meanwhile).
    pub already_gone: usize,
    /// What failed: a dump of a family, or the delete of an entry. The rest still ran.
    pub errors: Vec<String>,
}

impl Report {
    /// Whether everything called for was done.
    pub fn is_complete(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Deletes the conntrack entries made stale by `changes` (the changes a sync applied):
/// one dump per address family that has cleanups, then a batched delete of the
/// matches. Errors are collected in the report, not returned: a failed cleanup leaves
/// entries that time out by themselves, and must not fail the sync. Blocking.
pub fn cleanup_after(changes: &[Change], conntrack: &mut ConntrackHandle) -> Report {
    clean(cleanups(changes), conntrack)
}

/// Deletes the conntrack entries `cleanups` call for (see [`cleanup_after`]). Blocking.
fn clean(cleanups: Vec<Cleanup>, conntrack: &mut ConntrackHandle) -> Report {
    let mut report = Report {
        cleanups,
        ..Report::default()
    };
    for family in [Family::Ipv4, Family::Ipv6] {
        let filters: Vec<FlowFilter> = report
            .cleanups
            .iter()
            .filter(|cleanup| cleanup.family() == family)
            .map(Cleanup::filter)
            .collect();
        if filters.is_empty() {
            continue;
        }
        for cleanup in report.cleanups.iter().filter(|c| c.family() == family) {
            debug!(%cleanup, "conntrack cleanup");
        }
        match conntrack.delete_matching(family, &filters) {
            Ok(outcome) => {
                report.deleted += outcome.deleted;
                report.already_gone += outcome.already_gone;
                report.errors.extend(
                    outcome
                        .failures
                        .into_iter()
                        .map(|(_, error)| error.to_string()),
                );
            }
            Err(error) => report.errors.push(error.to_string()),
        }
    }
    if !report.cleanups.is_empty() {
        info!(
            cleanups = report.cleanups.len(),
            deleted = report.deleted,
            already_gone = report.already_gone,
            errors = report.errors.len(),
            "stale conntrack entries deleted"
        );
    }
    for error in &report.errors {
        warn!(%error, "conntrack cleanup");
    }
    report
}

/// Deletes stale flows off the async workers: the conntrack socket is blocking, so each
/// cleanup runs on a blocking thread (as the IPVS batch does) and health, metrics and
/// status never wait on it.
#[derive(Clone)]
pub struct StaleFlowCleaner {
    handle: std::sync::Arc<std::sync::Mutex<ConntrackHandle>>,
}

impl std::fmt::Debug for StaleFlowCleaner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaleFlowCleaner").finish_non_exhaustive()
    }
}

impl StaleFlowCleaner {
    /// Opens the kernel's conntrack netlink socket.
    pub fn open() -> Result<StaleFlowCleaner, conntrack_netlink::Error> {
        Ok(StaleFlowCleaner {
            handle: std::sync::Arc::new(std::sync::Mutex::new(ConntrackHandle::new()?)),
        })
    }

    /// [`cleanup_after`] on a blocking thread; nothing is spawned when `changes` call
    /// for no cleanup (the common case: TCP, or no endpoint change).
    pub async fn clean_after(&self, changes: &[Change]) -> Report {
        // Only the cleanups cross to the blocking thread, not a copy of the plan (a
        // first sync's holds every change of the node).
        let found = cleanups(changes);
        if found.is_empty() {
            return Report::default();
        }
        let handle = self.handle.clone();
        let task = tokio::task::spawn_blocking(move || {
            let mut handle = handle
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            clean(found, &mut handle)
        });
        match task.await {
            Ok(report) => report,
            Err(err) => Report {
                errors: vec![format!("the conntrack cleanup task failed: {err}")],
                ..Report::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RealServer;
    use crate::plan::VirtualServerSpec;
    use conntrack_netlink::{Flow, FlowTuple, IPPROTO_TCP};

    fn vs(addr: &str, port: u16, protocol: Protocol) -> VirtualServerKey {
        VirtualServerKey {
            addr: addr.parse().unwrap(),
            port,
            protocol,
        }
    }

    fn add_rs(key: VirtualServerKey, addr: &str, port: u16) -> Change {
        Change::AddRealServer {
            virtual_server: key,
            real_server: RealServer {
                addr: addr.parse().unwrap(),
                port,
                weight: 1,
            },
        }
    }

    fn delete_rs(key: VirtualServerKey, addr: &str, port: u16) -> Change {
        Change::DeleteRealServer {
            virtual_server: key,
            addr: addr.parse().unwrap(),
            port,
        }
    }

    /// A flow client:sport → vip:vport answered by reply_src:reply_sport.
    fn flow(
        protocol: u8,
        client: &str,
        sport: u16,
        vip: &str,
        vport: u16,
        reply_src: &str,
        reply_sport: u16,
    ) -> Flow {
        let client = client.parse().unwrap();
        let vip: IpAddr = vip.parse().unwrap();
        Flow {
            family: Family::of(vip),
            original: FlowTuple {
                source: client,
                destination: vip,
                protocol,
                source_port: Some(sport),
                destination_port: Some(vport),
            },
            reply: FlowTuple {
                source: reply_src.parse().unwrap(),
                destination: client,
                protocol,
                source_port: Some(reply_sport),
                destination_port: Some(sport),
            },
            id: None,
            zone: None,
        }
    }

    fn doomed(changes: &[Change], flows: &[Flow]) -> Vec<Flow> {
        let filters: Vec<FlowFilter> = cleanups(changes).iter().map(Cleanup::filter).collect();
        flows
            .iter()
            .filter(|f| filters.iter().any(|filter| filter.matches(f)))
            .cloned()
            .collect()
    }

    #[test]
    fn deleted_udp_real_server_selects_only_its_flows_to_that_virtual_server() {
        let dns = vs("10.96.0.10", 53, Protocol::Udp);
        let changes = [delete_rs(dns, "10.244.1.5", 5353)];
        assert_eq!(
            cleanups(&changes),
            vec![Cleanup::RemovedEndpoint {
                virtual_server: dns,
                addr: "10.244.1.5".parse().unwrap(),
                port: 5353
            }]
        );
        let to_removed = flow(
            IPPROTO_UDP,
            "10.0.1.2",
            40000,
            "10.96.0.10",
            53,
            "10.244.1.5",
            5353,
        );
        let to_kept = flow(
            IPPROTO_UDP,
            "10.0.1.2",
            40001,
            "10.96.0.10",
            53,
            "10.244.1.6",
            5353,
        );
        let other_vip = flow(
            IPPROTO_UDP,
            "10.0.1.2",
            40002,
            "10.96.0.20",
            53,
            "10.244.1.5",
            5353,
        );
        let tcp = flow(
            IPPROTO_TCP,
            "10.0.1.2",
            40003,
            "10.96.0.10",
            53,
            "10.244.1.5",
            5353,
        );
        let other_port = flow(
            IPPROTO_UDP,
            "10.0.1.2",
            40004,
            "10.96.0.10",
            54,
            "10.244.1.5",
            5353,
        );
        let same_ip_other_backend_port = flow(
            IPPROTO_UDP,
            "10.0.1.2",
            40005,
            "10.96.0.10",
            53,
            "10.244.1.5",
            5354,
        );
        let all = [
            to_removed.clone(),
            to_kept,
            other_vip,
            tcp,
            other_port,
            same_ip_other_backend_port,
        ];
        assert_eq!(doomed(&changes, &all), vec![to_removed]);
    }

    #[test]
    fn added_real_server_selects_untranslated_flows_only() {
        let dns = vs("10.96.0.10", 53, Protocol::Udp);
        let changes = [add_rs(dns, "10.244.1.5", 5353)];
        assert_eq!(cleanups(&changes), vec![Cleanup::Untranslated(dns)]);
        let black_holed = flow(
            IPPROTO_UDP,
            "10.0.1.2",
            40000,
            "10.96.0.10",
            53,
            "10.96.0.10",
            53,
        );
        let served = flow(
            IPPROTO_UDP,
            "10.0.1.2",
            40001,
            "10.96.0.10",
            53,
            "10.244.1.6",
            5353,
        );
        let other_vip = flow(
            IPPROTO_UDP,
            "10.0.1.2",
            40002,
            "10.96.0.11",
            53,
            "10.96.0.11",
            53,
        );
        assert_eq!(
            doomed(&changes, &[black_holed.clone(), served, other_vip]),
            vec![black_holed]
        );
    }

    #[test]
    fn tcp_changes_call_for_no_cleanup() {
        let web = vs("10.96.0.1", 443, Protocol::Tcp);
        let changes = [
            add_rs(web, "10.244.1.5", 6443),
            delete_rs(web, "10.244.1.6", 6443),
        ];
        assert!(cleanups(&changes).is_empty());
    }

    #[test]
    fn sctp_is_cleaned_like_udp() {
        let diameter = vs("10.96.0.30", 3868, Protocol::Sctp);
        let changes = [delete_rs(diameter, "10.244.1.5", 3868)];
        let found = cleanups(&changes);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].filter().protocol, IPPROTO_SCTP);
    }

    #[test]
    fn node_port_virtual_servers_are_cleaned_per_node_address() {
        let on_eth0 = vs("192.168.1.10", 30053, Protocol::Udp);
        let on_eth1 = vs("172.16.0.10", 30053, Protocol::Udp);
        let changes = [
            delete_rs(on_eth0, "10.244.1.5", 53),
            delete_rs(on_eth1, "10.244.1.5", 53),
        ];
        let via_eth0 = flow(
            IPPROTO_UDP,
            "192.168.1.2",
            40000,
            "192.168.1.10",
            30053,
            "10.244.1.5",
            53,
        );
        let via_eth1 = flow(
            IPPROTO_UDP,
            "172.16.0.2",
            40000,
            "172.16.0.10",
            30053,
            "10.244.1.5",
            53,
        );
        let cluster_ip = flow(
            IPPROTO_UDP,
            "10.0.1.2",
            40000,
            "10.96.0.10",
            53,
            "10.244.1.5",
            53,
        );
        assert_eq!(
            doomed(&changes, &[via_eth0.clone(), via_eth1.clone(), cluster_ip]),
            vec![via_eth0, via_eth1]
        );
    }

    #[test]
    fn cleanups_are_deduplicated_sorted_and_split_by_family() {
        let v4 = vs("10.96.0.10", 53, Protocol::Udp);
        let v6 = vs("fd00::10", 53, Protocol::Udp);
        let changes = [
            add_rs(v6, "fd00:1::5", 53),
            add_rs(v6, "fd00:1::6", 53),
            add_rs(v4, "10.244.1.5", 53),
            delete_rs(v4, "10.244.1.4", 53),
            Change::AddVirtualServer(VirtualServerSpec {
                key: v4,
                scheduler: "rr".into(),
                persistence_timeout: None,
            }),
            Change::DeleteVirtualServer(vs("10.96.0.99", 53, Protocol::Udp)),
            Change::AddAddress("10.96.0.10".parse().unwrap()),
        ];
        let found = cleanups(&changes);
        assert_eq!(
            found,
            vec![
                Cleanup::Untranslated(v4),
                Cleanup::Untranslated(v6),
                Cleanup::RemovedEndpoint {
                    virtual_server: v4,
                    addr: "10.244.1.4".parse().unwrap(),
                    port: 53
                },
            ]
        );
        let families: Vec<Family> = found.iter().map(Cleanup::family).collect();
        assert_eq!(families, vec![Family::Ipv4, Family::Ipv6, Family::Ipv4]);
        assert_eq!(
            found[2].to_string(),
            "flows to 10.96.0.10:53/udp sent to removed 10.244.1.4:53"
        );
    }
}
