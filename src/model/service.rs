//! One Service's share of the desired state.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::jiff::Timestamp;

use super::endpoints::{self, Endpoint};
use super::input::{ServiceInput, SliceInput};
use super::kube_sets::{KubeSet, SetEntries, SetEntry};
use super::{
    Family, NodeInfo, Protocol, RealServer, ServiceError, ServiceKey, VipKind, VirtualServer,
    VirtualServerKey,
};
use crate::config::Config;

/// The session-affinity timeout when a ClientIP Service sets none (3 hours, as the API).
pub const DEFAULT_AFFINITY_SECONDS: u32 = 10800;
/// The largest session-affinity timeout the API allows (one day).
pub const MAX_AFFINITY_SECONDS: u32 = 86400;

/// Why a Service is deliberately not programmed (not an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    /// `type: ExternalName` is DNS only.
    ExternalName,
    /// `clusterIP: None`: headless, DNS only.
    Headless,
    /// Labelled `service.kubernetes.io/service-proxy-name`: another proxy serves it.
    OtherProxy(String),
    /// No ClusterIP allocated yet.
    NoClusterIp,
}

/// What computing one Service gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceOutcome {
    /// The Service is served; here is its share.
    Programmed(ServiceContribution),
    /// The Service is deliberately not served.
    Skipped(Skipped),
}

/// One Service's virtual servers, addresses, ipset entries and health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceContribution {
    /// The Service.
    pub service: ServiceKey,
    /// Its creation time; the older Service wins a conflict.
    pub created: Option<Timestamp>,
    /// Virtual servers (shared with the merged state).
    pub virtual_servers: Vec<Arc<VirtualServer>>,
    /// Addresses to bind on kube-ipvs0, sorted, each once.
    pub addresses: Vec<IpAddr>,
    /// ipset members.
    pub ipsets: SetEntries,
    /// `(healthCheckNodePort, ready local endpoints)` for externalTrafficPolicy Local.
    pub health_check_node_port: Option<(u16, usize)>,
    /// Parts of the Service that were left out, with the reason (e.g. an external IP of
    /// a family the Service has no ClusterIP for).
    pub warnings: Vec<String>,
}

/// The node addresses that serve NodePorts: the host's addresses minus loopback and
/// IPv6 link-local, filtered by `nodePortAddresses`.
pub fn node_port_addresses(node: &NodeInfo, config: &Config) -> Vec<IpAddr> {
    let mut addresses: Vec<IpAddr> = node
        .addresses
        .iter()
        .copied()
        .filter(|addr| !addr.is_loopback() && !addr.is_unspecified())
        .filter(|addr| match addr {
            IpAddr::V6(v6) => !v6.is_unicast_link_local(),
            IpAddr::V4(_) => true,
        })
        .filter(|addr| {
            config
                .node_port_addresses
                .matches(*addr, &node.primary_addresses)
        })
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses
}

struct PortSpec {
    name: Arc<str>,
    port: u16,
    protocol: Protocol,
    node_port: Option<u16>,
}

/// Computes one Service's share of the desired state from the Service, its
/// EndpointSlices, the node and the configuration.
pub fn contribution(
    service: &ServiceInput,
    slices: &[&SliceInput],
    node: &NodeInfo,
    config: &Config,
) -> Result<ServiceOutcome, ServiceError> {
    let key = &service.key;
    let error = |reason: String| ServiceError {
        service: key.clone(),
        reason,
    };
    if let Some(proxy) = &service.proxy_name {
        return Ok(ServiceOutcome::Skipped(Skipped::OtherProxy(
            proxy.to_string(),
        )));
    }
    if service.headless_label {
        return Ok(ServiceOutcome::Skipped(Skipped::Headless));
    }
    if !service.has_spec {
        return Ok(ServiceOutcome::Skipped(Skipped::NoClusterIp));
    }
    let service_type = service.service_type.as_deref().unwrap_or("ClusterIP");
    if service_type == "ExternalName" {
        return Ok(ServiceOutcome::Skipped(Skipped::ExternalName));
    }
    if !matches!(service_type, "ClusterIP" | "NodePort" | "LoadBalancer") {
        return Err(error(format!(
            "spec.type {service_type:?} is not one of ClusterIP, NodePort, LoadBalancer, ExternalName"
        )));
    }

    // ClusterIPs: spec.clusterIPs, falling back to service.clusterIP; at most one per family.
    let cluster_ip_texts = &service.cluster_ips;
    if cluster_ip_texts.iter().any(|ip| ip == "None") {
        return Ok(ServiceOutcome::Skipped(Skipped::Headless));
    }
    if cluster_ip_texts.is_empty() {
        return Ok(ServiceOutcome::Skipped(Skipped::NoClusterIp));
    }
    let mut cluster_ips: BTreeMap<Family, IpAddr> = BTreeMap::new();
    for (index, text) in cluster_ip_texts.iter().enumerate() {
        let addr: IpAddr = text.parse().map_err(|_| {
            error(format!(
                "spec.clusterIPs[{index}] {text:?} is not an IP address"
            ))
        })?;
        if cluster_ips.insert(Family::of(addr), addr).is_some() {
            return Err(error(format!(
                "spec.clusterIPs has two addresses of the same family ({text:?} is the second)"
            )));
        }
        if let Some(declared) = service.ip_families.get(index) {
            let expected = match Family::of(addr) {
                Family::V4 => "IPv4",
                Family::V6 => "IPv6",
            };
            if declared != expected {
                return Err(error(format!(
                    "spec.clusterIPs[{index}] {text:?} is {expected} but spec.ipFamilies[{index}] is {declared:?}"
                )));
            }
        }
    }

    // Ports.
    let mut ports = Vec::new();
    let mut seen = BTreeSet::new();
    for (index, port) in service.ports.iter().enumerate() {
        let protocol = Protocol::from_kubernetes(port.protocol.as_deref()).ok_or_else(|| {
            error(format!(
                "spec.ports[{index}].protocol {:?} is not one of TCP, UDP, SCTP",
                port.protocol.as_deref().unwrap_or_default()
            ))
        })?;
        let number = u16::try_from(port.port)
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| {
                error(format!(
                    "spec.ports[{index}].port {} is not in 1-65535",
                    port.port
                ))
            })?;
        if !seen.insert((number, protocol)) {
            return Err(error(format!(
                "spec.ports[{index}] repeats port {number}/{protocol}; each port and protocol may appear once"
            )));
        }
        let node_port = match port.node_port {
            None | Some(0) => None,
            Some(value) => Some(u16::try_from(value).ok().ok_or_else(|| {
                error(format!(
                    "spec.ports[{index}].nodePort {value} is not in 1-65535"
                ))
            })?),
        };
        ports.push(PortSpec {
            name: port.name.clone(),
            port: number,
            protocol,
            node_port: if service_type == "ClusterIP" {
                None
            } else {
                node_port
            },
        });
    }

    let mut warnings = Vec::new();
    let external_local = service_type != "ClusterIP" || !service.external_ips.is_empty();
    let external_local =
        external_local && service.external_traffic_policy.as_deref() == Some("Local");
    let internal_local = service.internal_traffic_policy.as_deref() == Some("Local");

    // External IPs and load-balancer IPs, only of the Service's families.
    let mut external_ips = Vec::new();
    for (index, text) in service.external_ips.iter().enumerate() {
        let addr: IpAddr = text.parse().map_err(|_| {
            error(format!(
                "spec.externalIPs[{index}] {text:?} is not an IP address"
            ))
        })?;
        if cluster_ips.contains_key(&Family::of(addr)) {
            external_ips.push(addr);
        } else {
            warnings.push(format!(
                "spec.externalIPs[{index}] {addr} ignored: the Service has no ClusterIP of its family"
            ));
        }
    }
    let mut load_balancer_ips = Vec::new();
    if service_type == "LoadBalancer" {
        for (index, ingress) in service.ingress.iter().enumerate() {
            let Some(text) = ingress.ip.as_deref().filter(|ip| !ip.is_empty()) else {
                continue;
            };
            let addr: IpAddr = text.parse().map_err(|_| {
                error(format!(
                    "status.loadBalancer.ingress[{index}].ip {text:?} is not an IP address"
                ))
            })?;
            if ingress.ip_mode.as_deref() == Some("Proxy") {
                // The load balancer proxies to the NodePorts itself; the IP is not ours.
                continue;
            }
            if cluster_ips.contains_key(&Family::of(addr)) {
                load_balancer_ips.push(addr);
            } else {
                warnings.push(format!(
                    "status.loadBalancer.ingress[{index}].ip {addr} ignored: the Service has no ClusterIP of its family"
                ));
            }
        }
    }
    let source_ranges: Vec<IpNet> = service
        .source_ranges
        .iter()
        .enumerate()
        .map(|(index, text)| {
            text.trim().parse::<IpNet>().map_err(|_| {
                error(format!(
                    "spec.loadBalancerSourceRanges[{index}] {text:?} is not a CIDR"
                ))
            })
        })
        .collect::<Result<_, _>>()?;

    let persistence_timeout = match service.session_affinity.as_deref() {
        Some("ClientIP") => match service.affinity_timeout {
            None => Some(DEFAULT_AFFINITY_SECONDS),
            Some(seconds) if (1..=MAX_AFFINITY_SECONDS as i32).contains(&seconds) => {
                Some(seconds as u32)
            }
            Some(seconds) => {
                return Err(error(format!(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds {seconds} is not in 1-{MAX_AFFINITY_SECONDS}"
                )));
            }
        },
        None | Some("None") | Some("") => None,
        Some(other) => {
            return Err(error(format!(
                "spec.sessionAffinity {other:?} is not one of None, ClientIP"
            )));
        }
    };

    let node_addresses = node_port_addresses(node, config);
    let mut contribution = ServiceContribution {
        service: key.clone(),
        created: service.created,
        virtual_servers: Vec::new(),
        addresses: Vec::new(),
        ipsets: SetEntries::default(),
        health_check_node_port: None,
        warnings,
    };
    let mut local_ready: BTreeSet<IpAddr> = BTreeSet::new();

    for (&family, &cluster_ip) in &cluster_ips {
        for port in &ports {
            let all =
                endpoints::endpoints_for_port(slices, &port.name, port.protocol, family, node);
            let categorized = endpoints::categorize(&all, node);
            local_ready.extend(all.iter().filter(|e| e.local && e.ready).map(|e| e.addr));
            let internal = if internal_local {
                &categorized.local
            } else {
                &categorized.cluster
            };
            let external = if external_local {
                &categorized.local
            } else {
                &categorized.cluster
            };
            let mut add = |addr: IpAddr, vport: u16, kind: VipKind, endpoints: &[Endpoint]| {
                contribution.virtual_servers.push(Arc::new(VirtualServer {
                    key: VirtualServerKey {
                        addr,
                        port: vport,
                        protocol: port.protocol,
                    },
                    scheduler: config.ipvs.scheduler.clone(),
                    persistence_timeout,
                    kind,
                    service: key.clone(),
                    port_name: port.name.clone(),
                    real_servers: endpoints
                        .iter()
                        .map(|endpoint| RealServer {
                            addr: endpoint.addr,
                            port: endpoint.port,
                            weight: 1,
                        })
                        .collect(),
                }));
            };

            add(cluster_ip, port.port, VipKind::ClusterIp, internal);
            contribution.addresses.push(cluster_ip);
            contribution.ipsets.add(
                KubeSet::ClusterIp,
                family,
                SetEntry::ip_port(cluster_ip, port.protocol, port.port),
            );

            for &addr in external_ips.iter().filter(|a| Family::of(**a) == family) {
                add(addr, port.port, VipKind::ExternalIp, external);
                contribution.addresses.push(addr);
                let set = if external_local {
                    KubeSet::ExternalIpLocal
                } else {
                    KubeSet::ExternalIp
                };
                contribution.ipsets.add(
                    set,
                    family,
                    SetEntry::ip_port(addr, port.protocol, port.port),
                );
            }

            for &addr in load_balancer_ips
                .iter()
                .filter(|a| Family::of(**a) == family)
            {
                add(addr, port.port, VipKind::LoadBalancer, external);
                contribution.addresses.push(addr);
                let entry = SetEntry::ip_port(addr, port.protocol, port.port);
                contribution
                    .ipsets
                    .add(KubeSet::LoadBalancer, family, entry);
                if external_local {
                    contribution
                        .ipsets
                        .add(KubeSet::LoadBalancerLocal, family, entry);
                }
                let ranges: Vec<&IpNet> = source_ranges
                    .iter()
                    .filter(|range| Family::of(range.addr()) == family)
                    .collect();
                if !ranges.is_empty() {
                    contribution
                        .ipsets
                        .add(KubeSet::LoadBalancerFw, family, entry);
                    for range in &ranges {
                        contribution.ipsets.add(
                            KubeSet::LoadBalancerSourceCidr,
                            family,
                            SetEntry::ip_port_net(addr, port.protocol, port.port, **range),
                        );
                    }
                    if node_addresses
                        .iter()
                        .any(|node_ip| ranges.iter().any(|range| range.contains(node_ip)))
                    {
                        contribution.ipsets.add(
                            KubeSet::LoadBalancerSourceIp,
                            family,
                            SetEntry::IpPortIp {
                                addr,
                                proto: port.protocol,
                                port: port.port,
                                addr2: addr,
                            },
                        );
                    }
                }
            }

            if let Some(node_port) = port.node_port {
                for &addr in node_addresses.iter().filter(|a| Family::of(**a) == family) {
                    add(addr, node_port, VipKind::NodePort, external);
                }
                let (set, local_set) = match port.protocol {
                    Protocol::Tcp => (KubeSet::NodePortTcp, KubeSet::NodePortLocalTcp),
                    Protocol::Udp => (KubeSet::NodePortUdp, KubeSet::NodePortLocalUdp),
                    Protocol::Sctp => (KubeSet::NodePortSctp, KubeSet::NodePortLocalSctp),
                };
                let entries: Vec<SetEntry> = if port.protocol == Protocol::Sctp {
                    node_addresses
                        .iter()
                        .filter(|a| Family::of(**a) == family)
                        .map(|addr| SetEntry::ip_port(*addr, Protocol::Sctp, node_port))
                        .collect()
                } else {
                    vec![SetEntry::Port(node_port)]
                };
                for entry in entries {
                    if external_local {
                        contribution.ipsets.add(local_set, family, entry);
                    }
                    contribution.ipsets.add(set, family, entry);
                }
            }

            // Hairpin: a local endpoint reaching itself through the Service is masqueraded.
            for endpoint in all.iter().filter(|endpoint| endpoint.local) {
                contribution.ipsets.add(
                    KubeSet::LoopBack,
                    family,
                    SetEntry::IpPortIp {
                        addr: endpoint.addr,
                        proto: port.protocol,
                        port: endpoint.port,
                        addr2: endpoint.addr,
                    },
                );
            }
        }
    }

    if service_type == "LoadBalancer" && external_local {
        if let Some(port) = service.health_check_node_port.filter(|port| *port != 0) {
            let port = u16::try_from(port)
                .map_err(|_| error(format!("spec.healthCheckNodePort {port} is not in 1-65535")))?;
            contribution.health_check_node_port = Some((port, local_ready.len()));
            for family in cluster_ips.keys() {
                contribution.ipsets.add(
                    KubeSet::HealthCheckNodePort,
                    *family,
                    SetEntry::Port(port),
                );
            }
        }
    }

    contribution.addresses.sort();
    contribution.addresses.dedup();
    contribution.addresses.shrink_to_fit();
    contribution.ipsets.shrink_to_fit();
    contribution.virtual_servers.shrink_to_fit();
    Ok(ServiceOutcome::Programmed(contribution))
}
