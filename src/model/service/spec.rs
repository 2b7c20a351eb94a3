//! The first step for one Service: parse and validate the fields the model reads, once,
//! into a typed [`ServiceSpec`]. Everything that can make a Service invalid is found
//! here, so emitting its share ([`super::contribution`]) cannot fail.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::Skipped;
use crate::model::input::ServiceInput;
use crate::model::{Family, Protocol};

/// The session-affinity timeout when a ClientIP Service sets none (3 hours, as the API).
const DEFAULT_AFFINITY_SECONDS: u32 = 10800;
/// The largest session-affinity timeout the API allows (one day).
const MAX_AFFINITY_SECONDS: u32 = 86400;

/// The `spec.type`s the model serves (`ExternalName` is DNS only and skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ServiceType {
    /// `ClusterIP` (also when unset).
    ClusterIp,
    /// `NodePort`.
    NodePort,
    /// `LoadBalancer`.
    LoadBalancer,
}

/// One validated `spec.ports[]` entry.
pub(super) struct PortSpec {
    /// The port's name ("" when unnamed), matched against the EndpointSlice ports.
    pub(super) name: Arc<str>,
    /// The Service port.
    pub(super) port: u16,
    /// The protocol.
    pub(super) protocol: Protocol,
    /// The NodePort; always `None` for a ClusterIP Service.
    pub(super) node_port: Option<u16>,
}

/// A Service the model serves, parsed and validated.
pub(super) struct ServiceSpec {
    /// At most one ClusterIP per family.
    pub(super) cluster_ips: BTreeMap<Family, IpAddr>,
    /// The ports, each port and protocol once.
    pub(super) ports: Vec<PortSpec>,
    /// `spec.externalIPs` of the Service's families.
    pub(super) external_ips: Vec<IpAddr>,
    /// The load-balancer ingress IPs of the Service's families that are ours (not
    /// `ipMode: Proxy`); none unless the type is LoadBalancer.
    pub(super) load_balancer_ips: Vec<IpAddr>,
    /// `spec.loadBalancerSourceRanges`.
    pub(super) source_ranges: Vec<IpNet>,
    /// With sessionAffinity ClientIP: the persistence timeout in seconds.
    pub(super) persistence_timeout: Option<u32>,
    /// External traffic goes to local endpoints only (`externalTrafficPolicy: Local`
    /// on a Service with external addresses).
    pub(super) external_local: bool,
    /// Cluster traffic goes to local endpoints only (`internalTrafficPolicy: Local`).
    pub(super) internal_local: bool,
    /// The health-check NodePort of a LoadBalancer Service with external traffic
    /// local.
    pub(super) health_check_node_port: Option<u16>,
    /// Parts of the Service that are left out, with the reason.
    pub(super) warnings: Vec<String>,
}

/// Why a Service is not served: deliberately, or because it is invalid.
pub(super) enum Unserved {
    /// Not served by design (not an error).
    Skipped(Skipped),
    /// Invalid: what is wrong and where.
    Invalid(String),
}

impl From<Skipped> for Unserved {
    fn from(skipped: Skipped) -> Self {
        Self::Skipped(skipped)
    }
}

impl From<String> for Unserved {
    fn from(reason: String) -> Self {
        Self::Invalid(reason)
    }
}

/// Parses and validates a Service. The checks run in a fixed order (type, ClusterIPs,
/// ports, external IPs, load-balancer IPs, source ranges, affinity, health-check
/// port), so a Service with several faults always reports the same one.
pub(super) fn parse(service: &ServiceInput) -> Result<ServiceSpec, Unserved> {
    if let Some(proxy) = &service.proxy_name {
        return Err(Skipped::OtherProxy(proxy.to_string()).into());
    }
    if service.headless_label {
        return Err(Skipped::Headless.into());
    }
    if !service.has_spec {
        return Err(Skipped::NoClusterIp.into());
    }
    let service_type = service_type(service)?;
    let cluster_ips = cluster_ips(service)?;
    let ports = ports(service, service_type)?;

    let mut warnings = Vec::new();
    let external_local = service_type != ServiceType::ClusterIp || !service.external_ips.is_empty();
    let external_local =
        external_local && service.external_traffic_policy.as_deref() == Some("Local");
    let internal_local = service.internal_traffic_policy.as_deref() == Some("Local");
    let external_ips = external_ips(service, &cluster_ips, &mut warnings)?;
    let load_balancer_ips = if service_type == ServiceType::LoadBalancer {
        load_balancer_ips(service, &cluster_ips, &mut warnings)?
    } else {
        Vec::new()
    };
    let source_ranges = source_ranges(service)?;
    let persistence_timeout = persistence_timeout(service)?;
    let health_check_node_port = if service_type == ServiceType::LoadBalancer && external_local {
        health_check_node_port(service)?
    } else {
        None
    };
    Ok(ServiceSpec {
        cluster_ips,
        ports,
        external_ips,
        load_balancer_ips,
        source_ranges,
        persistence_timeout,
        external_local,
        internal_local,
        health_check_node_port,
        warnings,
    })
}

/// `spec.type`; ExternalName is skipped.
fn service_type(service: &ServiceInput) -> Result<ServiceType, Unserved> {
    match service.service_type.as_deref().unwrap_or("ClusterIP") {
        "ClusterIP" => Ok(ServiceType::ClusterIp),
        "NodePort" => Ok(ServiceType::NodePort),
        "LoadBalancer" => Ok(ServiceType::LoadBalancer),
        "ExternalName" => Err(Skipped::ExternalName.into()),
        other => Err(format!(
            "spec.type {other:?} is not one of ClusterIP, NodePort, LoadBalancer, ExternalName"
        )
        .into()),
    }
}

/// ClusterIPs: spec.clusterIPs, falling back to service.clusterIP; at most one per
/// family, each of the family `spec.ipFamilies` declares at its index.
fn cluster_ips(service: &ServiceInput) -> Result<BTreeMap<Family, IpAddr>, Unserved> {
    let cluster_ip_texts = &service.cluster_ips;
    if cluster_ip_texts.iter().any(|ip| ip == "None") {
        return Err(Skipped::Headless.into());
    }
    if cluster_ip_texts.is_empty() {
        return Err(Skipped::NoClusterIp.into());
    }
    let mut cluster_ips: BTreeMap<Family, IpAddr> = BTreeMap::new();
    for (index, text) in cluster_ip_texts.iter().enumerate() {
        let addr: IpAddr = text
            .parse()
            .map_err(|_| format!("spec.clusterIPs[{index}] {text:?} is not an IP address"))?;
        if cluster_ips.insert(Family::of(addr), addr).is_some() {
            return Err(format!(
                "spec.clusterIPs has two addresses of the same family ({text:?} is the second)"
            )
            .into());
        }
        if let Some(declared) = service.ip_families.get(index) {
            let expected = match Family::of(addr) {
                Family::V4 => "IPv4",
                Family::V6 => "IPv6",
            };
            if declared != expected {
                return Err(format!(
                    "spec.clusterIPs[{index}] {text:?} is {expected} but spec.ipFamilies[{index}] is {declared:?}"
                )
                .into());
            }
        }
    }
    Ok(cluster_ips)
}

/// `spec.ports`: protocol, port and NodePort in range, each port and protocol once.
fn ports(service: &ServiceInput, service_type: ServiceType) -> Result<Vec<PortSpec>, String> {
    let mut ports = Vec::new();
    let mut seen = BTreeSet::new();
    for (index, port) in service.ports.iter().enumerate() {
        let protocol = Protocol::from_kubernetes(port.protocol.as_deref()).ok_or_else(|| {
            format!(
                "spec.ports[{index}].protocol {:?} is not one of TCP, UDP, SCTP",
                port.protocol.as_deref().unwrap_or_default()
            )
        })?;
        let number = u16::try_from(port.port)
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| format!("spec.ports[{index}].port {} is not in 1-65535", port.port))?;
        if !seen.insert((number, protocol)) {
            return Err(format!(
                "spec.ports[{index}] repeats port {number}/{protocol}; each port and protocol may appear once"
            ));
        }
        let node_port =
            match port.node_port {
                None | Some(0) => None,
                Some(value) => Some(u16::try_from(value).map_err(|_| {
                    format!("spec.ports[{index}].nodePort {value} is not in 1-65535")
                })?),
            };
        ports.push(PortSpec {
            name: port.name.clone(),
            port: number,
            protocol,
            node_port: if service_type == ServiceType::ClusterIp {
                None
            } else {
                node_port
            },
        });
    }
    Ok(ports)
}

/// `spec.externalIPs`, only of the Service's families; the others are warned about.
fn external_ips(
    service: &ServiceInput,
    cluster_ips: &BTreeMap<Family, IpAddr>,
    warnings: &mut Vec<String>,
) -> Result<Vec<IpAddr>, String> {
    let mut external_ips = Vec::new();
    for (index, text) in service.external_ips.iter().enumerate() {
        let addr: IpAddr = text
            .parse()
            .map_err(|_| format!("spec.externalIPs[{index}] {text:?} is not an IP address"))?;
        if cluster_ips.contains_key(&Family::of(addr)) {
            external_ips.push(addr);
        } else {
            warnings.push(format!(
                "spec.externalIPs[{index}] {addr} ignored: the Service has no ClusterIP of its family"
            ));
        }
    }
    Ok(external_ips)
}

/// `status.loadBalancer.ingress[].ip`, only of the Service's families (the others are
/// warned about) and not proxied by the load balancer itself.
fn load_balancer_ips(
    service: &ServiceInput,
    cluster_ips: &BTreeMap<Family, IpAddr>,
    warnings: &mut Vec<String>,
) -> Result<Vec<IpAddr>, String> {
    let mut load_balancer_ips = Vec::new();
    for (index, ingress) in service.ingress.iter().enumerate() {
        let Some(text) = ingress.ip.as_deref().filter(|ip| !ip.is_empty()) else {
            continue;
        };
        let addr: IpAddr = text.parse().map_err(|_| {
            format!("status.loadBalancer.ingress[{index}].ip {text:?} is not an IP address")
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
    Ok(load_balancer_ips)
}

/// `spec.loadBalancerSourceRanges`.
fn source_ranges(service: &ServiceInput) -> Result<Vec<IpNet>, String> {
    service
        .source_ranges
        .iter()
        .enumerate()
        .map(|(index, text)| {
            text.trim().parse::<IpNet>().map_err(|_| {
                format!("spec.loadBalancerSourceRanges[{index}] {text:?} is not a CIDR")
            })
        })
        .collect()
}

/// The persistence timeout of `sessionAffinity: ClientIP`; `None` without affinity.
fn persistence_timeout(service: &ServiceInput) -> Result<Option<u32>, String> {
    match service.session_affinity.as_deref() {
        Some("ClientIP") => match service.affinity_timeout {
            None => Ok(Some(DEFAULT_AFFINITY_SECONDS)),
            Some(seconds) if (1..=MAX_AFFINITY_SECONDS as i32).contains(&seconds) => {
                Ok(Some(seconds as u32))
            }
            Some(seconds) => Err(format!(
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds {seconds} is not in 1-{MAX_AFFINITY_SECONDS}"
            )),
        },
        None | Some("None") | Some("") => Ok(None),
        Some(other) => Err(format!(
            "spec.sessionAffinity {other:?} is not one of None, ClientIP"
        )),
    }
}

/// `spec.healthCheckNodePort` (0 means none).
fn health_check_node_port(service: &ServiceInput) -> Result<Option<u16>, String> {
    match service.health_check_node_port.filter(|port| *port != 0) {
        None => Ok(None),
        Some(port) => u16::try_from(port)
            .map(Some)
            .map_err(|_| format!("spec.healthCheckNodePort {port} is not in 1-65535")),
    }
}
