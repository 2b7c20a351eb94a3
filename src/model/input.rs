//! Compact copies of the Service and EndpointSlice fields the model reads, and this
//! Node's (see [`NodeInfo::from_node`]).
//!
//! The model keeps every Service and EndpointSlice of the cluster between updates, so
//! what it keeps decides the agent's memory. A k8s-openapi `EndpointSlice` with ten
//! endpoints takes about 5 KB (each `Endpoint` is 352 bytes inline before its strings),
//! a `Service` about 1 KB plus its annotations and managed fields. The projections
//! here keep only what [`contribution`](super::service::contribution) and the status
//! views read: about 90 bytes per endpoint, with node, zone and port names shared
//! through an [`Interner`]. Values stay as the API spelled them where an error message
//! quotes them, so validation (and its messages) still happens in one place.
//!
//! Equal projections mean equal results: an update that changes only fields the model
//! does not read (annotations, resourceVersion, managedFields) is recognised as
//! unchanged and costs nothing.

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{LoadBalancerIngress, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;

use super::{
    Family, HEADLESS_LABEL, NodeInfo, Protocol, SERVICE_PROXY_NAME_LABEL, ServiceKey, ZONE_LABEL,
};

/// Shares the strings many objects repeat (node, zone and port names) as one `Arc<str>`
/// each.
#[derive(Debug, Clone, Default)]
pub struct Interner {
    strings: HashSet<Arc<str>>,
}

impl Interner {
    /// The shared copy of `text`.
    pub fn intern(&mut self, text: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(text) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(text);
        self.strings.insert(shared.clone());
        shared
    }

    /// Forgets the strings no object uses any more (node names of removed nodes).
    pub fn collect_garbage(&mut self) {
        self.strings.retain(|shared| Arc::strong_count(shared) > 1);
    }
}

/// One `spec.ports[]` entry of a Service, as spelled in the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortInput {
    /// `name` ("" when unnamed).
    pub name: Arc<str>,
    /// `protocol` (unset means TCP).
    pub protocol: Option<String>,
    /// `port`.
    pub port: i32,
    /// `nodePort`.
    pub node_port: Option<i32>,
}

/// One `status.loadBalancer.ingress[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressInput {
    /// `ip` (hostname-only entries have none).
    pub ip: Option<String>,
    /// `ipMode`.
    pub ip_mode: Option<String>,
}

/// The parts of a Service the model reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInput {
    /// Namespace and name.
    pub key: ServiceKey,
    /// `metadata.uid`, for the Events about the Service.
    pub uid: Option<Box<str>>,
    /// `metadata.creationTimestamp`: the older Service wins a conflict.
    pub created: Option<Timestamp>,
    /// The `service.kubernetes.io/service-proxy-name` label.
    pub proxy_name: Option<Box<str>>,
    /// Whether the `service.kubernetes.io/headless` label is set.
    pub headless_label: bool,
    /// Whether the object has a `spec` at all.
    pub has_spec: bool,
    /// `spec.type`.
    pub service_type: Option<Box<str>>,
    /// `spec.clusterIPs`, falling back to `spec.clusterIP`.
    pub cluster_ips: Box<[String]>,
    /// `spec.ipFamilies`.
    pub ip_families: Box<[String]>,
    /// `spec.ports`.
    pub ports: Box<[ServicePortInput]>,
    /// `spec.externalIPs`.
    pub external_ips: Box<[String]>,
    /// `status.loadBalancer.ingress`.
    pub ingress: Box<[IngressInput]>,
    /// `spec.loadBalancerSourceRanges`.
    pub source_ranges: Box<[String]>,
    /// `spec.sessionAffinity`.
    pub session_affinity: Option<Box<str>>,
    /// `spec.sessionAffinityConfig.clientIP.timeoutSeconds`.
    pub affinity_timeout: Option<i32>,
    /// `spec.externalTrafficPolicy`.
    pub external_traffic_policy: Option<Box<str>>,
    /// `spec.internalTrafficPolicy`.
    pub internal_traffic_policy: Option<Box<str>>,
    /// `spec.healthCheckNodePort`.
    pub health_check_node_port: Option<i32>,
}

/// A Service's `status.loadBalancer.ingress[]` entries, in order (none when the
/// status has no such list).
pub(crate) fn ingress_entries(service: &Service) -> impl Iterator<Item = &LoadBalancerIngress> {
    service
        .status
        .as_ref()
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
}

impl ServiceInput {
    /// The projection of a Service object.
    pub fn from_service(service: &Service, interner: &mut Interner) -> Self {
        let labels = service.metadata.labels.as_ref();
        let spec = service.spec.as_ref();
        let cluster_ips: Box<[String]> =
            match spec.map(|spec| (&spec.cluster_ips, &spec.cluster_ip)) {
                Some((Some(ips), _)) if !ips.is_empty() => ips.as_slice().into(),
                Some((_, Some(ip))) if !ip.is_empty() => Box::from([ip.clone()]),
                _ => Box::default(),
            };
        let strings = |field: Option<&Vec<String>>| {
            field.map(|list| list.as_slice().into()).unwrap_or_default()
        };
        let text = |field: Option<&String>| field.map(|value| Box::from(value.as_str()));
        Self {
            key: ServiceKey::of_service(service),
            uid: text(service.metadata.uid.as_ref()),
            created: service
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|time| time.0),
            proxy_name: text(labels.and_then(|labels| labels.get(SERVICE_PROXY_NAME_LABEL))),
            headless_label: labels.is_some_and(|labels| labels.contains_key(HEADLESS_LABEL)),
            has_spec: spec.is_some(),
            service_type: text(spec.and_then(|spec| spec.type_.as_ref())),
            cluster_ips,
            ip_families: strings(spec.and_then(|spec| spec.ip_families.as_ref())),
            ports: spec
                .and_then(|spec| spec.ports.as_ref())
                .into_iter()
                .flatten()
                .map(|port| ServicePortInput {
                    name: interner.intern(port.name.as_deref().unwrap_or_default()),
                    protocol: port.protocol.clone(),
                    port: port.port,
                    node_port: port.node_port,
                })
                .collect(),
            external_ips: strings(spec.and_then(|spec| spec.external_ips.as_ref())),
            ingress: ingress_entries(service)
                .map(|ingress| IngressInput {
                    ip: ingress.ip.clone(),
                    ip_mode: ingress.ip_mode.clone(),
                })
                .collect(),
            source_ranges: strings(spec.and_then(|spec| spec.load_balancer_source_ranges.as_ref())),
            session_affinity: text(spec.and_then(|spec| spec.session_affinity.as_ref())),
            affinity_timeout: spec
                .and_then(|spec| spec.session_affinity_config.as_ref())
                .and_then(|config| config.client_ip.as_ref())
                .and_then(|client_ip| client_ip.timeout_seconds),
            external_traffic_policy: text(
                spec.and_then(|spec| spec.external_traffic_policy.as_ref()),
            ),
            internal_traffic_policy: text(
                spec.and_then(|spec| spec.internal_traffic_policy.as_ref()),
            ),
            health_check_node_port: spec.and_then(|spec| spec.health_check_node_port),
        }
    }
}

/// One `ports[]` entry of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlicePort {
    /// `name` ("" when unnamed).
    pub name: Arc<str>,
    /// `protocol` (unset means TCP); `None` when it is not TCP, UDP or SCTP.
    pub protocol: Option<Protocol>,
    /// `port`; `None` when unset or not in 1-65535.
    pub port: Option<u16>,
}

/// One endpoint of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInput {
    /// The first address, the one consumers use; `None` when missing or not an IP.
    pub addr: Option<IpAddr>,
    /// `nodeName`.
    pub node: Option<Arc<str>>,
    /// `targetRef.name` when the target is a Pod.
    pub pod: Option<Box<str>>,
    /// `conditions.ready` (unset means ready).
    pub ready: bool,
    /// `conditions.serving` (unset means the same as ready).
    pub serving: bool,
    /// `conditions.terminating` (unset means false).
    pub terminating: bool,
    /// `hints`, when there are any. Most endpoints have none, so the hints live apart
    /// and an endpoint without them carries one null pointer (a third of its size).
    pub hints: Option<Box<EndpointHints>>,
}

/// The topology hints of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointHints {
    /// `hints.forZones[].name`.
    pub zones: Box<[Arc<str>]>,
    /// `hints.forNodes[].name`.
    pub nodes: Box<[Arc<str>]>,
}

impl EndpointInput {
    /// `hints.forZones[].name` (empty without hints).
    pub fn zone_hints(&self) -> &[Arc<str>] {
        self.hints.as_ref().map_or(&[], |hints| &hints.zones)
    }

    /// `hints.forNodes[].name` (empty without hints).
    pub fn node_hints(&self) -> &[Arc<str>] {
        self.hints.as_ref().map_or(&[], |hints| &hints.nodes)
    }
}

/// The parts of an EndpointSlice the model reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceInput {
    /// `addressType` when it is IPv4 or IPv6; `None` (FQDN) slices give no endpoints.
    pub family: Option<Family>,
    /// `ports`.
    pub ports: Box<[SlicePort]>,
    /// `endpoints`.
    pub endpoints: Box<[EndpointInput]>,
}

impl SliceInput {
    /// The projection of an EndpointSlice object.
    pub fn from_slice(slice: &EndpointSlice, interner: &mut Interner) -> Self {
        let family = match slice.address_type.as_str() {
            "IPv4" => Some(Family::V4),
            "IPv6" => Some(Family::V6),
            _ => None,
        };
        let ports = slice
            .ports
            .iter()
            .flatten()
            .map(|port| SlicePort {
                name: interner.intern(port.name.as_deref().unwrap_or_default()),
                protocol: Protocol::from_kubernetes(port.protocol.as_deref()),
                port: port
                    .port
                    .and_then(|port| u16::try_from(port).ok())
                    .filter(|port| *port != 0),
            })
            .collect();
        let endpoints = slice
            .endpoints
            .iter()
            .flatten()
            .map(|endpoint| {
                let conditions = endpoint.conditions.as_ref();
                // The API: a nil ready means ready, a nil serving means "same as ready".
                let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
                let hints = endpoint.hints.as_ref();
                EndpointInput {
                    addr: endpoint
                        .addresses
                        .first()
                        .and_then(|text| text.parse::<IpAddr>().ok()),
                    node: endpoint
                        .node_name
                        .as_deref()
                        .map(|name| interner.intern(name)),
                    pod: endpoint
                        .target_ref
                        .as_ref()
                        .filter(|target| target.kind.as_deref() == Some("Pod"))
                        .and_then(|target| target.name.as_deref())
                        .map(Box::from),
                    ready,
                    serving: conditions.and_then(|c| c.serving).unwrap_or(ready),
                    terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
                    hints: hints.and_then(|hints| {
                        let zones: Box<[Arc<str>]> = (hints.for_zones.iter().flatten())
                            .map(|zone| interner.intern(&zone.name))
                            .collect();
                        let nodes: Box<[Arc<str>]> = (hints.for_nodes.iter().flatten())
                            .map(|node| interner.intern(&node.name))
                            .collect();
                        (!zones.is_empty() || !nodes.is_empty())
                            .then(|| Box::new(EndpointHints { zones, nodes }))
                    }),
                }
            })
            .collect();
        Self {
            family,
            ports,
            endpoints,
        }
    }
}

impl NodeInfo {
    /// The name and zone from a Node object; addresses come from the host.
    pub fn from_node(node: &Node, addresses: Vec<IpAddr>) -> Self {
        let zone = node
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(ZONE_LABEL))
            .cloned();
        let mut primary_addresses = Vec::new();
        let mut families = BTreeSet::new();
        for address in node
            .status
            .as_ref()
            .and_then(|status| status.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|address| address.type_ == "InternalIP")
        {
            if let Ok(ip) = address.address.parse::<IpAddr>()
                && families.insert(Family::of(ip))
            {
                primary_addresses.push(ip);
            }
        }
        Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            zone,
            addresses,
            primary_addresses,
        }
    }
}
