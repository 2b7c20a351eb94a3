//! The model's vocabulary: keys, addresses and virtual servers as plain data, the
//! node and configuration the model reads, and the merged [`DesiredState`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::kube_sets::IpsetMembers;
use crate::config::{Config, NodePortAddresses};

/// The label on an EndpointSlice naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Services carrying this label belong to another proxy and are ignored.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Services and EndpointSlices carrying this label are headless and ignored.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// The Node label naming its zone, matched against EndpointSlice zone hints.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// A transport protocol a Service port may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// Parses the Kubernetes spelling (`TCP`, `UDP`, `SCTP`); `None` means TCP.
    pub fn from_kubernetes(value: Option<&str>) -> Option<Self> {
        match value {
            None | Some("TCP") => Some(Self::Tcp),
            Some("UDP") => Some(Self::Udp),
            Some("SCTP") => Some(Self::Sctp),
            Some(_) => None,
        }
    }

    /// The lower-case name ipset and ipvsadm use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: IpAddr) -> Self {
        if addr.is_ipv4() { Self::V4 } else { Self::V6 }
    }
}

/// A Service's identity. The model keeps it in several indexes, so the strings are
/// shared: a clone copies two pointers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// The namespace.
    pub namespace: Arc<str>,
    /// The name.
    pub name: Arc<str>,
}

impl ServiceKey {
    /// A key from namespace and name.
    pub fn new(namespace: impl Into<Arc<str>>, name: impl Into<Arc<str>>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of a Service object (namespace defaults to `default`).
    pub fn of_service(service: &Service) -> Self {
        Self::new(
            service.metadata.namespace.as_deref().unwrap_or("default"),
            service.metadata.name.as_deref().unwrap_or_default(),
        )
    }

    /// The Service an EndpointSlice belongs to, from its `kubernetes.io/service-name`
    /// label; `None` for slices not managed for a Service.
    pub fn of_slice(slice: &EndpointSlice) -> Option<Self> {
        let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
        Some(Self::new(
            slice.metadata.namespace.as_deref().unwrap_or("default"),
            name.as_str(),
        ))
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The identity of a virtual server in IPVS: address, port and protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VirtualServerKey {
    /// The virtual address.
    pub addr: IpAddr,
    /// The virtual port.
    pub port: u16,
    /// The protocol.
    pub protocol: Protocol,
}

impl fmt::Display for VirtualServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(addr) => write!(f, "{}:{}/{}", addr, self.port, self.protocol),
            IpAddr::V6(addr) => write!(f, "[{}]:{}/{}", addr, self.port, self.protocol),
        }
    }
}

/// Which kind of Service address a virtual server serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VipKind {
    /// A ClusterIP (bound on kube-ipvs0).
    ClusterIp,
    /// A node address serving a NodePort (not bound).
    NodePort,
    /// An `externalIPs` entry (bound on kube-ipvs0).
    ExternalIp,
    /// A load-balancer ingress IP (bound on kube-ipvs0).
    LoadBalancer,
}

/// A backend of a virtual server. Forwarding is always masquerading (NAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RealServer {
    /// The endpoint address.
    pub addr: IpAddr,
    /// The endpoint port.
    pub port: u16,
    /// The IPVS weight; desired real servers have weight 1.
    pub weight: u32,
}

/// A virtual server as it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualServer {
    /// Address, port and protocol.
    pub key: VirtualServerKey,
    /// The IPVS scheduler name, e.g. `rr`: one allocation shared by every virtual
    /// server ([`ModelConfig::scheduler`]).
    pub scheduler: Arc<str>,
    /// With sessionAffinity ClientIP: the persistence timeout in seconds.
    pub persistence_timeout: Option<u32>,
    /// The kind of Service address.
    pub kind: VipKind,
    /// The Service that owns it.
    pub service: ServiceKey,
    /// The Service port's name ("" when unnamed), shared with the other Services'
    /// ports of that name.
    pub port_name: Arc<str>,
    /// The backends.
    pub real_servers: BTreeSet<RealServer>,
}

/// A health-check NodePort of an `externalTrafficPolicy: Local` Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// The Service it reports on.
    pub service: ServiceKey,
    /// How many ready endpoints run on this node (the probe succeeds when > 0).
    pub local_endpoints: usize,
}

/// The part of the configuration the model reads. The model keeps this rather than
/// the whole [`Config`], so what it depends on is visible here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    /// `ipvs.scheduler`, shared by every virtual server.
    pub scheduler: Arc<str>,
    /// `nodePortAddresses`: which node addresses serve NodePorts.
    pub node_port_addresses: NodePortAddresses,
}

impl From<&Config> for ModelConfig {
    fn from(config: &Config) -> Self {
        Self {
            scheduler: Arc::from(config.ipvs.scheduler.as_str()),
            node_port_addresses: config.node_port_addresses.clone(),
        }
    }
}

impl From<Config> for ModelConfig {
    fn from(config: Config) -> Self {
        Self::from(&config)
    }
}

/// This node as the model needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// The Node name, matched against `endpoints[].nodeName`.
    pub name: String,
    /// The `topology.kubernetes.io/zone` label, matched against zone hints.
    pub zone: Option<String>,
    /// The host's addresses that may serve NodePorts: every address not on kube-ipvs0.
    /// Loopback and IPv6 link-local addresses are dropped by the model.
    pub addresses: Vec<IpAddr>,
    /// The Node object's primary IPs (InternalIP per family), for `nodePortAddresses:
    /// [primary]`.
    pub primary_addresses: Vec<IpAddr>,
}

/// Why a Service could not be programmed; other Services are unaffected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Service {service} skipped: {reason}")]
pub struct ServiceError {
    /// The Service.
    pub service: ServiceKey,
    /// What is wrong and where, e.g. `spec.clusterIPs[0] "10.0.0.999" is not an IP address`.
    pub reason: String,
}

/// Everything the node should hold, merged over all Services.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredState {
    /// Virtual servers by identity.
    /// Shared with the Service's contribution: a merged state is not a second copy.
    pub virtual_servers: BTreeMap<VirtualServerKey, Arc<VirtualServer>>,
    /// Addresses to bind on kube-ipvs0 (ClusterIPs, external IPs, load-balancer IPs).
    pub addresses: BTreeSet<IpAddr>,
    /// Members of the kube-proxy ipsets, by set name.
    pub ipsets: IpsetMembers,
    /// Health-check NodePorts.
    pub health_check_node_ports: BTreeMap<u16, HealthCheck>,
    /// The node addresses serving NodePorts.
    pub node_port_addresses: BTreeSet<IpAddr>,
    /// Services that were skipped because they are invalid or conflict with another.
    pub errors: BTreeMap<ServiceKey, ServiceError>,
    /// Parts of programmed Services that were left out, by Service, e.g.
    /// `spec.externalIPs[1] 2001:db8::7 ignored: the Service has no ClusterIP of its family`.
    pub warnings: BTreeMap<ServiceKey, Vec<String>>,
}

/// Rebuilds a B-tree from its own sorted entries. Filled one insert at a time (in key
/// order above all) its nodes stay about half full; built in bulk they are full, which
/// after a first load of 10,000 Services is megabytes less.
pub(crate) fn compact<C>(collection: &mut C)
where
    C: Default + IntoIterator + FromIterator<<C as IntoIterator>::Item>,
{
    *collection = std::mem::take(collection).into_iter().collect();
}
