//! The kernel adapter: reads the observed state (IPVS, kube-ipvs0 addresses, our
//! ipsets) and applies a [`Plan`] with as few system calls as possible.
//!
//! IPVS changes of one plan travel in batched `sendmsg` calls (the `ipvs-netlink`
//! crate pipelines them and collects one ack per change); ipset entries likewise
//! through `ipset-netlink`; addresses through pipelined rtnetlink requests. A change
//! the kernel refuses is reported on its own and never stops the others.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, StreamExt};

use ipset_netlink as ipset;
use ipvs_netlink as ipvs;

use crate::dataplane::netif::{DEFAULT_NAME, NetifError, ServiceInterface};
use crate::model::ipset::{self as sets, ALL_SETS, IpsetMembers};
use crate::model::{Family, Protocol, RealServer, VirtualServerKey};
use crate::plan::{Change, ObservedRealServer, ObservedState, ObservedVirtualServer, Plan};

/// What went wrong talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The IPVS family failed (missing module, socket error).
    #[error(transparent)]
    Ipvs(#[from] ipvs::Error),
    /// The ipset subsystem failed.
    #[error(transparent)]
    Ipset(#[from] ipset::Error),
    /// kube-ipvs0 or its addresses failed.
    #[error(transparent)]
    Netif(#[from] NetifError),
    /// An ipset entry of the desired state is not in the set's syntax.
    #[error("ipset entry {entry:?} for set {set} is not valid for a {set_type} set")]
    BadEntry {
        /// The set.
        set: String,
        /// The entry text.
        entry: String,
        /// The set's type.
        set_type: String,
    },
}

/// One change the kernel refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedChange {
    /// The change, as [`Change`] displays it.
    pub change: String,
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

/// The type of one of kube-proxy's sets, by its base name (an IPv6 name cut to 31
/// bytes, such as `KUBE-LOAD-BALANCER-SOURCE-CID`, maps like the full one).
pub fn set_type(base: &str) -> ipset::SetType {
    match base {
        "KUBE-LOAD-BALANCER-SOURCE-CID" => ipset::SetType::HashIpPortNet,
        "KUBE-NODE-PORT-LOCAL-SCTP-HAS" => ipset::SetType::HashIpPort,
        sets::LOOP_BACK | sets::LOAD_BALANCER_SOURCE_IP => ipset::SetType::HashIpPortIp,
        sets::LOAD_BALANCER_SOURCE_CIDR => ipset::SetType::HashIpPortNet,
        sets::NODE_PORT_TCP
        | sets::NODE_PORT_LOCAL_TCP
        | sets::NODE_PORT_UDP
        | sets::NODE_PORT_LOCAL_UDP
        | sets::HEALTH_CHECK_NODE_PORT => ipset::SetType::BitmapPort,
        sets::IPVS_IPS => ipset::SetType::HashIp,
        _ => ipset::SetType::HashIpPort,
    }
}

/// The creation spec of one of kube-proxy's sets (kube-proxy's sizes: hashsize 1024,
/// maxelem 65536; bitmap sets cover every port).
pub fn set_spec(base: &str, family: Family) -> ipset::SetSpec {
    let name = sets::set_name(base, family);
    match set_type(base) {
        ipset::SetType::BitmapPort => ipset::SetSpec::bitmap_port(name, 0, 65535),
        set_type => ipset::SetSpec::new(name, set_type, ipset_family(family))
            .hashsize(1024)
            .maxelem(65536),
    }
}

fn ipset_family(family: Family) -> ipset::Family {
    match family {
        Family::V4 => ipset::Family::Inet,
        Family::V6 => ipset::Family::Inet6,
    }
}

fn ipset_protocol(text: &str) -> Option<ipset::Protocol> {
    match text.to_ascii_lowercase().as_str() {
        "tcp" => Some(ipset::Protocol::Tcp),
        "udp" => Some(ipset::Protocol::Udp),
        "sctp" => Some(ipset::Protocol::Sctp),
        _ => None,
    }
}

fn proto_port(text: &str) -> Option<(ipset::Protocol, u16)> {
    let (proto, port) = text.split_once(':')?;
    Some((ipset_protocol(proto)?, port.parse().ok()?))
}

/// Parses an entry in ipset's text syntax for a set of type `set_type`.
pub fn parse_entry(set_type: &ipset::SetType, text: &str) -> Option<ipset::Entry> {
    let parts: Vec<&str> = text.split(',').collect();
    match (set_type, parts.as_slice()) {
        (ipset::SetType::HashIp, [ip]) => Some(ipset::Entry::Ip(ip.parse().ok()?)),
        (ipset::SetType::BitmapPort, [port]) => Some(ipset::Entry::Port(port.parse().ok()?)),
        (ipset::SetType::HashNet, [net]) => Some(ipset::Entry::Net(parse_net(net)?)),
        (ipset::SetType::HashIpPort, [ip, pp]) => {
            let (proto, port) = proto_port(pp)?;
            Some(ipset::Entry::IpPort {
                ip: ip.parse().ok()?,
                proto,
                port,
            })
        }
        (ipset::SetType::HashIpPortIp, [ip, pp, ip2]) => {
            let (proto, port) = proto_port(pp)?;
            Some(ipset::Entry::IpPortIp {
                ip: ip.parse().ok()?,
                proto,
                port,
                ip2: ip2.parse().ok()?,
            })
        }
        (ipset::SetType::HashIpPortNet, [ip, pp, net]) => {
            let (proto, port) = proto_port(pp)?;
            Some(ipset::Entry::IpPortNet {
                ip: ip.parse().ok()?,
                proto,
                port,
                net: parse_net(net)?,
            })
        }
        _ => None,
    }
}

fn parse_net(text: &str) -> Option<ipset::IpNet> {
    if text.contains('/') {
        ipset::IpNet::from_str(text).ok()
    } else {
        let ip: IpAddr = text.parse().ok()?;
        Some(ipset::IpNet::from(ip))
    }
}

fn ipvs_protocol(protocol: Protocol) -> ipvs::Protocol {
    match protocol {
        Protocol::Tcp => ipvs::Protocol::Tcp,
        Protocol::Udp => ipvs::Protocol::Udp,
        Protocol::Sctp => ipvs::Protocol::Sctp,
    }
}

fn model_protocol(protocol: ipvs::Protocol) -> Option<Protocol> {
    match protocol {
        ipvs::Protocol::Tcp => Some(Protocol::Tcp),
        ipvs::Protocol::Udp => Some(Protocol::Udp),
        ipvs::Protocol::Sctp => Some(Protocol::Sctp),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// The IPVS service key of a virtual server.
pub fn ipvs_key(key: &VirtualServerKey) -> ipvs::ServiceKey {
    ipvs::ServiceKey::Inet {
        protocol: ipvs_protocol(key.protocol),
        addr: key.addr,
        port: key.port,
    }
}

fn ipvs_service(
    key: &VirtualServerKey,
    scheduler: &str,
    persistence_timeout: Option<u32>,
) -> ipvs::Service {
    let service = ipvs::Service::new(ipvs_key(key), ipvs::Scheduler::from_name(scheduler));
    match persistence_timeout {
        Some(timeout) => service.persistent(timeout),
        None => service,
    }
}

fn ipvs_destination(real_server: &RealServer) -> ipvs::Destination {
    ipvs::Destination::new(
        real_server.addr,
        real_server.port,
        ipvs::ForwardMethod::Masquerade,
    )
    .weight(real_server.weight)
}

/// The observed state of one IPVS table, in the model's terms (fwmark services,
/// which ipvs-proxy never creates, are left out).
pub fn observed_virtual_servers(
    table: Vec<(ipvs::Service, Vec<ipvs::Destination>)>,
) -> Vec<ObservedVirtualServer> {
    table
        .into_iter()
        .filter_map(|(service, destinations)| {
            let ipvs::ServiceKey::Inet {
                protocol,
                addr,
                port,
            } = service.key
            else {
                return None;
            };
            let persistent = service.flags.contains(ipvs::ServiceFlags::PERSISTENT);
            Some(ObservedVirtualServer {
                key: VirtualServerKey {
                    addr,
                    port,
                    protocol: model_protocol(protocol)?,
                },
                scheduler: service.scheduler.name().to_string(),
                persistence_timeout: persistent.then_some(service.timeout),
                real_servers: destinations
                    .into_iter()
                    .map(|d| ObservedRealServer {
                        addr: d.addr,
                        port: d.port,
                        weight: d.weight,
                        active_connections: d.active_connections,
                        inactive_connections: d.inactive_connections,
                    })
                    .collect(),
            })
        })
        .collect()
}

/// Splits set entries in two: those whose first field is one of `addresses` (sorted),
/// and the rest.
fn split_entries_by_key(
    entries: BTreeMap<String, Vec<String>>,
    addresses: &[IpAddr],
) -> (BTreeMap<String, Vec<String>>, BTreeMap<String, Vec<String>>) {
    let mut keyed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut rest: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (set, texts) in entries {
        let (with_key, without): (Vec<String>, Vec<String>) = texts.into_iter().partition(|text| {
            let first = text.split(',').next().unwrap_or_default();
            IpAddr::from_str(first).is_ok_and(|addr| addresses.binary_search(&addr).is_ok())
        });
        if !with_key.is_empty() {
            keyed.insert(set.clone(), with_key);
        }
        if !without.is_empty() {
            rest.insert(set, without);
        }
    }
    (keyed, rest)
}

/// Handles on every kernel subsystem the agent programs.
pub struct Kernel {
    ipvs: ipvs::AsyncIpvsHandle,
    /// A second IPVS socket for change batches, used from a blocking thread: the kernel
    /// does a batch's work inside `sendmsg`, which would hold a runtime worker (and the
    /// tasks queued on it) for as long as the kernel takes.
    ipvs_batches: Arc<Mutex<ipvs::IpvsHandle>>,
    ipset: ipset::IpsetHandle,
    iface: ServiceInterface,
    families: BTreeSet<Family>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("interface", &self.iface.name())
            .field("families", &self.families)
            .finish_non_exhaustive()
    }
}

impl Kernel {
    /// Opens the IPVS and ipset sockets and makes sure `kube-ipvs0` and kube-proxy's
    /// sets exist for `families`. Fails with the subsystem's own advice when IPVS or
    /// ipset is missing from the kernel.
    pub async fn open(families: BTreeSet<Family>) -> Result<Kernel, KernelError> {
        let ipvs = ipvs::AsyncIpvsHandle::new().await?;
        let ipvs_batches = Arc::new(Mutex::new(ipvs::IpvsHandle::new()?));
        let ipset = ipset::IpsetHandle::new()?;
        let iface = ServiceInterface::ensure(DEFAULT_NAME).await?;
        let mut kernel = Kernel {
            ipvs,
            ipvs_batches,
            ipset,
            iface,
            families,
        };
        kernel.ensure_sets()?;
        Ok(kernel)
    }

    /// The service interface.
    pub fn interface(&self) -> &ServiceInterface {
        &self.iface
    }

    /// The IPVS handle, for reads the reconciler does not cover.
    pub fn ipvs(&mut self) -> &mut ipvs::AsyncIpvsHandle {
        &mut self.ipvs
    }

    /// Creates every kube-proxy set that is missing (existing ones are adopted as
    /// they are: a set kube-proxy created has the same name, type and meaning).
    pub fn ensure_sets(&mut self) -> Result<(), KernelError> {
        for family in &self.families {
            for base in ALL_SETS {
                self.ipset.create(&set_spec(base, *family), true)?;
            }
        }
        Ok(())
    }

    /// Reads IPVS, the addresses on kube-ipvs0 and the members of our sets.
    pub async fn observe(&mut self) -> Result<ObservedState, KernelError> {
        let table = self.ipvs.services_with_destinations().await?;
        let addresses = self.iface.addresses().await?;
        let mut ipsets = IpsetMembers::default();
        for family in &self.families {
            for base in ALL_SETS {
                let name = sets::set_name(base, *family);
                let info = match self.ipset.list(&name) {
                    Ok(info) => info,
                    Err(error) => {
                        tracing::warn!(set = %name, %error, "cannot list ipset");
                        continue;
                    }
                };
                let members = ipsets.0.entry(name).or_default();
                for member in info.members {
                    members.insert(member.entry.to_string());
                }
            }
        }
        Ok(ObservedState {
            virtual_servers: observed_virtual_servers(table),
            addresses,
            ipsets,
        })
    }

    /// Reads only the given virtual servers with their real servers (two requests
    /// each), for an incremental sync. Returns those that exist and the number of
    /// netlink requests sent.
    pub async fn observe_virtual_servers(
        &mut self,
        keys: &BTreeSet<VirtualServerKey>,
    ) -> Result<(Vec<ObservedVirtualServer>, u64), KernelError> {
        let mut table = Vec::with_capacity(keys.len());
        let mut requests = 0;
        for key in keys {
            let key = ipvs_key(key);
            requests += 1;
            let service = match self.ipvs.service(&key).await {
                Ok(service) => service,
                Err(error) if error.is_not_found() => continue,
                Err(error) => return Err(error.into()),
            };
            requests += 1;
            let destinations = match self.ipvs.destinations(&key).await {
                Ok(destinations) => destinations,
                // Deleted by someone else between the two reads.
                Err(error) if error.is_not_found() => continue,
                Err(error) => return Err(error.into()),
            };
            table.push((service, destinations));
        }
        Ok((observed_virtual_servers(table), requests))
    }

    /// Applies `plan`: the IPVS batch (on a blocking thread) beside set entries and
    /// addresses (each address after its set entries), then removals of entries and
    /// addresses.
    pub async fn apply(&mut self, plan: &Plan) -> ApplyReport {
        let mut report = ApplyReport::default();
        // The IPVS changes, and for each the index of its plan change (for the message of a
        // failure: formatting every change up front would cost a string per change).
        let mut ipvs_changes: Vec<ipvs::Change> = Vec::new();
        let mut ipvs_origin: Vec<usize> = Vec::new();
        let mut add_addresses = Vec::new();
        let mut remove_addresses = Vec::new();
        let mut ipset_adds: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut ipset_dels: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (index, change) in plan.changes.iter().enumerate() {
            if change.is_ipvs() {
                ipvs_origin.push(index);
            }
            match change {
                Change::AddAddress(addr) => add_addresses.push(*addr),
                Change::DeleteAddress(addr) => remove_addresses.push(*addr),
                Change::AddIpsetEntry { set, entry } => ipset_adds
                    .entry(set.clone())
                    .or_default()
                    .push(entry.clone()),
                Change::DeleteIpsetEntry { set, entry } => ipset_dels
                    .entry(set.clone())
                    .or_default()
                    .push(entry.clone()),
                Change::AddVirtualServer(spec) => ipvs_changes.push(ipvs::Change::AddService(
                    ipvs_service(&spec.key, &spec.scheduler, spec.persistence_timeout),
                )),
                Change::UpdateVirtualServer(spec) => ipvs_changes.push(ipvs::Change::EditService(
                    ipvs_service(&spec.key, &spec.scheduler, spec.persistence_timeout),
                )),
                Change::DeleteVirtualServer(key) => {
                    ipvs_changes.push(ipvs::Change::DeleteService(ipvs_key(key)))
                }
                Change::AddRealServer {
                    virtual_server,
                    real_server,
                } => ipvs_changes.push(ipvs::Change::AddDestination(
                    ipvs_key(virtual_server),
                    ipvs_destination(real_server),
                )),
                Change::UpdateRealServer {
                    virtual_server,
                    real_server,
                } => ipvs_changes.push(ipvs::Change::EditDestination(
                    ipvs_key(virtual_server),
                    ipvs_destination(real_server),
                )),
                Change::DeleteRealServer {
                    virtual_server,
                    addr,
                    port,
                } => {
                    let destination =
                        ipvs::Destination::new(*addr, *port, ipvs::ForwardMethod::Masquerade);
                    ipvs_changes.push(ipvs::Change::DeleteDestination(
                        ipvs_key(virtual_server),
                        destination.key(),
                    ))
                }
            }
        }

        // IPVS, set entries and addresses are three independent kernel paths (IPVS
        // mutex, nfnetlink, rtnl), so they run at once: the IPVS batch on a blocking
        // thread from the start, set entries and addresses meanwhile. A VIP's address
        // is bound only after its set entries are in, so the filter and masquerade rules
        // know a VIP before it carries traffic (until its IPVS service is in too, a new
        // VIP is simply not served yet).
        let started = std::time::Instant::now();
        let ipvs_count = ipvs_changes.len();
        let ipvs_task = (!ipvs_changes.is_empty()).then(|| {
            let handle = self.ipvs_batches.clone();
            tokio::task::spawn_blocking(move || {
                let mut handle = handle
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let result = handle.apply_batch(&ipvs_changes);
                (result, started.elapsed())
            })
        });
        // Binding is the long pole and each add gets slower as kube-ipvs0 fills up (the
        // kernel walks its address list), so it starts early: first the entries of the
        // first quarter of the new addresses (and every entry not keyed by a new
        // address), then those addresses bind while the remaining entries go in, and the
        // remaining addresses follow once those entries are in.
        add_addresses.sort_unstable();
        let (first_addresses, later_addresses) =
            add_addresses.split_at(add_addresses.len().div_ceil(4));
        let (later_adds, first_adds) = split_entries_by_key(ipset_adds, later_addresses);
        self.apply_ipset(&first_adds, true, &mut report);
        let add_count = add_addresses.len();
        let (later_entries_in, later_entries_done) = tokio::sync::oneshot::channel::<()>();
        // The addresses run as their own task, which hands them to the batch binder's
        // blocking thread as they become ready while this one applies the remaining
        // entries. Batched rather than pipelined: on a small node the first sync's
        // kernel work (IPVS, ipset, addresses) competes for the same CPUs, and the
        // batches spend far less user time per address.
        let addresses = (!add_addresses.is_empty()).then(|| {
            let iface = self.iface.clone();
            let first = first_addresses.to_vec();
            let later = later_addresses.to_vec();
            tokio::spawn(async move {
                let after_entries = async move {
                    // Without the signal (applying the entries panicked, so the sender
                    // was dropped unsent) the later addresses stay unbound: a VIP never
                    // goes before its entries. The next sync binds them.
                    let later = match later_entries_done.await {
                        Ok(()) => later,
                        Err(_) => Vec::new(),
                    };
                    stream::iter(later)
                };
                let ordered = stream::iter(first).chain(stream::once(after_entries).flatten());
                let result = iface.add_batched(ordered).await.map_err(|e| e.to_string());
                (result, started.elapsed())
            })
        });
        self.apply_ipset(&later_adds, true, &mut report);
        let ipset_done = started.elapsed();
        let _ = later_entries_in.send(());
        let ipvs_result = match ipvs_task {
            None => None,
            Some(task) => Some(match task.await {
                Ok((result, done)) => (result.map_err(|error| error.to_string()), done),
                Err(error) => (
                    Err(format!("the IPVS batch task failed: {error}")),
                    started.elapsed(),
                ),
            }),
        };
        let address_result = match addresses {
            None => None,
            Some(task) => Some(task.await.unwrap_or_else(|error| {
                let reason = format!("the address task failed: {error}");
                (Err(reason), started.elapsed())
            })),
        };
        if let Some((result, done)) = address_result {
            report.netlink_messages += add_count as u64;
            tracing::debug!(
                addresses = add_count,
                ms = done.as_millis() as u64,
                "addresses bound"
            );
            match result {
                Ok(_) => report.applied += add_count,
                Err(error) => report.failed.push(FailedChange {
                    change: format!("add {add_count} address(es) to {DEFAULT_NAME}"),
                    error,
                }),
            }
        }
        if let Some((result, done)) = ipvs_result {
            report.netlink_messages += ipvs_count as u64;
            tracing::debug!(
                changes = ipvs_count,
                ms = done.as_millis() as u64,
                ipset_ms = ipset_done.as_millis() as u64,
                "IPVS programmed"
            );
            match result {
                Ok(results) => {
                    for (index, result) in ipvs_origin.iter().zip(results) {
                        match result {
                            Ok(()) => report.applied += 1,
                            Err(error) => report.failed.push(FailedChange {
                                change: plan.changes[*index].to_string(),
                                error: error.to_string(),
                            }),
                        }
                    }
                }
                Err(error) => report.failed.push(FailedChange {
                    change: format!("{ipvs_count} IPVS change(s)"),
                    error,
                }),
            }
        }

        self.apply_ipset(&ipset_dels, false, &mut report);
        if !remove_addresses.is_empty() {
            report.netlink_messages += remove_addresses.len() as u64;
            match self.iface.remove(remove_addresses.iter().copied()).await {
                Ok(_) => report.applied += remove_addresses.len(),
                Err(error) => report.failed.push(FailedChange {
                    change: format!(
                        "remove {} address(es) from {DEFAULT_NAME}",
                        remove_addresses.len()
                    ),
                    error: error.to_string(),
                }),
            }
        }
        report
    }

    /// Destroys every kube-proxy set (after the iptables rules that reference them are
    /// gone) and deletes kube-ipvs0 with its addresses. For `ipvs-proxy cleanup`.
    /// Returns the sets that could not be destroyed, with the reason.
    pub async fn teardown(mut self) -> Result<Vec<(String, String)>, KernelError> {
        let mut kept = Vec::new();
        for family in self.families.clone() {
            for base in ALL_SETS {
                let name = sets::set_name(base, family);
                if let Err(error) = self.ipset.destroy(&name, true) {
                    kept.push((name, error.to_string()));
                }
            }
        }
        self.iface.delete().await?;
        Ok(kept)
    }

    fn apply_ipset(
        &mut self,
        changes: &BTreeMap<String, Vec<String>>,
        add: bool,
        report: &mut ApplyReport,
    ) {
        for (set, texts) in changes {
            let base = base_name(set);
            let set_type = set_type(&base);
            let mut entries = Vec::with_capacity(texts.len());
            for text in texts {
                match parse_entry(&set_type, text) {
                    Some(entry) => entries.push(entry),
                    None => report.failed.push(FailedChange {
                        change: format!("{} {set} {text}", if add { "add" } else { "del" }),
                        error: KernelError::BadEntry {
                            set: set.clone(),
                            entry: text.clone(),
                            set_type: set_type.name().to_string(),
                        }
                        .to_string(),
                    }),
                }
            }
            if entries.is_empty() {
                continue;
            }
            report.netlink_messages += entries.len() as u64;
            let outcome = if add {
                let members: Vec<ipset::Member> =
                    entries.into_iter().map(ipset::Member::from).collect();
                self.ipset.add_batch(set, &members, true)
            } else {
                self.ipset.del_batch(set, &entries, true)
            };
            match outcome {
                Ok(outcome) => {
                    report.applied += outcome.applied;
                    for (index, error) in outcome.failures {
                        report.failed.push(FailedChange {
                            change: format!(
                                "{} {set} {}",
                                if add { "add" } else { "del" },
                                texts.get(index).map(String::as_str).unwrap_or("?")
                            ),
                            error: error.to_string(),
                        });
                    }
                }
                Err(error) => report.failed.push(FailedChange {
                    change: format!(
                        "{} {} entries of {set}",
                        if add { "add" } else { "del" },
                        texts.len()
                    ),
                    error: error.to_string(),
                }),
            }
        }
    }
}

/// The base (IPv4) name of a set: `KUBE-6-CLUSTER-IP` → `KUBE-CLUSTER-IP`.
pub fn base_name(set: &str) -> String {
    match set.strip_prefix("KUBE-6-") {
        Some(rest) => format!("KUBE-{rest}"),
        None => set.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_keyed_by_later_addresses_are_split_off() {
        let sets: BTreeMap<String, Vec<String>> = [
            (
                "KUBE-CLUSTER-IP",
                vec!["10.96.0.1,tcp:443", "10.96.0.9,udp:53", "10.96.0.10,tcp:80"],
            ),
            (
                "KUBE-6-CLUSTER-IP",
                vec!["fd00::a,tcp:80", "fd00::1,tcp:80"],
            ),
            (
                "KUBE-LOOP-BACK",
                vec!["10.96.0.9,tcp:53,10.96.0.9", "10.244.1.5,tcp:80,10.244.1.5"],
            ),
            ("KUBE-NODE-PORT-TCP", vec!["30080"]),
            (
                "KUBE-LOAD-BALANCER-SOURCE-CIDR",
                vec!["10.96.0.10,tcp:80,192.0.2.0/24"],
            ),
        ]
        .into_iter()
        .map(|(set, entries)| {
            (
                set.to_string(),
                entries.into_iter().map(String::from).collect(),
            )
        })
        .collect();
        let mut later: Vec<IpAddr> = ["10.96.0.9", "10.96.0.10", "fd00::a"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        later.sort();
        let (keyed, rest) = split_entries_by_key(sets, &later);
        let flat = |sets: &BTreeMap<String, Vec<String>>| -> Vec<String> {
            sets.iter()
                .flat_map(|(set, entries)| entries.iter().map(move |e| format!("{set} {e}")))
                .collect()
        };
        assert_eq!(
            flat(&keyed),
            [
                "KUBE-6-CLUSTER-IP fd00::a,tcp:80",
                "KUBE-CLUSTER-IP 10.96.0.9,udp:53",
                "KUBE-CLUSTER-IP 10.96.0.10,tcp:80",
                "KUBE-LOAD-BALANCER-SOURCE-CIDR 10.96.0.10,tcp:80,192.0.2.0/24",
                "KUBE-LOOP-BACK 10.96.0.9,tcp:53,10.96.0.9",
            ]
        );
        assert_eq!(
            flat(&rest),
            [
                "KUBE-6-CLUSTER-IP fd00::1,tcp:80",
                "KUBE-CLUSTER-IP 10.96.0.1,tcp:443",
                "KUBE-LOOP-BACK 10.244.1.5,tcp:80,10.244.1.5",
                "KUBE-NODE-PORT-TCP 30080",
            ]
        );
    }

    #[test]
    fn entries_parse_in_every_kube_proxy_set_syntax() {
        let cases = [
            (sets::CLUSTER_IP, "10.96.0.1,tcp:443"),
            (sets::CLUSTER_IP, "fd00::1,udp:53"),
            (sets::LOOP_BACK, "10.244.1.5,tcp:8080,10.244.1.5"),
            (
                sets::LOAD_BALANCER_SOURCE_CIDR,
                "192.0.2.10,tcp:80,203.0.113.0/24",
            ),
            (sets::NODE_PORT_TCP, "30080"),
            (sets::IPVS_IPS, "10.96.0.10"),
        ];
        for (base, text) in cases {
            let entry = parse_entry(&set_type(base), text)
                .unwrap_or_else(|| panic!("{base}: {text} did not parse"));
            assert_eq!(entry.to_string(), text, "{base}");
        }
        assert!(parse_entry(&set_type(sets::CLUSTER_IP), "10.96.0.1").is_none());
        assert!(parse_entry(&set_type(sets::CLUSTER_IP), "10.96.0.1,icmp:0").is_none());
        assert!(parse_entry(&set_type(sets::NODE_PORT_TCP), "70000").is_none());
    }

    #[test]
    fn ipv6_set_names_map_back_to_their_base() {
        assert_eq!(base_name("KUBE-6-CLUSTER-IP"), sets::CLUSTER_IP);
        assert_eq!(base_name(sets::LOOP_BACK), sets::LOOP_BACK);
        // IPv6 names are cut to the kernel's 31 bytes, and the cut name still maps back.
        let cut = sets::set_name(sets::LOAD_BALANCER_SOURCE_CIDR, Family::V6);
        assert_eq!(cut, "KUBE-6-LOAD-BALANCER-SOURCE-CID");
        assert_eq!(set_type(&base_name(&cut)), ipset::SetType::HashIpPortNet);
        assert_eq!(
            set_spec(sets::NODE_PORT_UDP, Family::V6).port_range,
            Some((0, 65535))
        );
    }
}
