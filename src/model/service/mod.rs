//! One Service's share of the desired state, in two steps: [`spec`] parses and
//! validates the Service once into a typed spec (or says why it is skipped or
//! invalid), [`contribution`](self::contribution()) then emits its virtual servers,
//! addresses, ipset entries and health check from that spec and the endpoints.

mod contribution;
mod spec;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;

use super::input::{ServiceInput, SliceInput};
use super::kube_sets::SetEntries;
use super::{ModelConfig, NodeInfo, ServiceError, ServiceKey, VirtualServer};
use spec::Unserved;

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
/// IPv6 link-local, filtered by `nodePortAddresses`. The model computes them once per
/// node change, not per Service.
pub fn node_port_addresses(node: &NodeInfo, config: &ModelConfig) -> BTreeSet<IpAddr> {
    node.addresses
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
        .collect()
}

/// Computes one Service's share of the desired state from the Service, its
/// EndpointSlices, the node, the configuration and the node addresses serving
/// NodePorts ([`node_port_addresses`]).
pub fn contribution(
    service: &ServiceInput,
    slices: &[&SliceInput],
    node: &NodeInfo,
    config: &ModelConfig,
    node_port_addresses: &BTreeSet<IpAddr>,
) -> Result<ServiceOutcome, ServiceError> {
    let mut spec = match spec::parse(service) {
        Ok(spec) => spec,
        Err(Unserved::Skipped(skipped)) => return Ok(ServiceOutcome::Skipped(skipped)),
        Err(Unserved::Invalid(reason)) => {
            return Err(ServiceError {
                service: service.key.clone(),
                reason,
            });
        }
    };
    let mut contribution = ServiceContribution {
        service: service.key.clone(),
        created: service.created,
        virtual_servers: Vec::new(),
        addresses: Vec::new(),
        ipsets: SetEntries::default(),
        health_check_node_port: None,
        warnings: std::mem::take(&mut spec.warnings),
    };
    contribution::emit(
        &mut contribution,
        &spec,
        slices,
        node,
        &config.scheduler,
        node_port_addresses,
    );
    contribution.addresses.sort();
    contribution.addresses.dedup();
    contribution.addresses.shrink_to_fit();
    contribution.ipsets.shrink_to_fit();
    contribution.virtual_servers.shrink_to_fit();
    Ok(ServiceOutcome::Programmed(contribution))
}
