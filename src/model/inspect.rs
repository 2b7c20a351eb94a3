//! Read-only views of the model's inputs for `ipvs-proxy services`: the Service
//! objects' settings and the EndpointSlices' endpoints (pod, node, conditions), which
//! the desired state itself does not keep.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{Model, ServiceError, ServiceKey, ServiceOutcome};

/// The settings of a Service that explain what the agent programmed for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSettings {
    /// `spec.type` (`ClusterIP` when unset).
    pub service_type: String,
    /// `spec.sessionAffinity` (`None` when unset).
    pub session_affinity: String,
    /// `spec.externalTrafficPolicy` (`Cluster` when unset).
    pub external_traffic_policy: String,
    /// `spec.internalTrafficPolicy` (`Cluster` when unset).
    pub internal_traffic_policy: String,
}

/// One endpoint address of a Service as its EndpointSlices describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    /// The endpoint's first address (the one the proxy uses).
    pub addr: IpAddr,
    /// `targetRef.name` when the target is a Pod.
    pub pod: Option<String>,
    /// `nodeName`.
    pub node: Option<String>,
    /// `conditions.ready` (unset means ready).
    pub ready: bool,
    /// `conditions.serving` (unset means the same as ready).
    pub serving: bool,
    /// `conditions.terminating` (unset means false).
    pub terminating: bool,
}

impl Model {
    /// Every Service's computed outcome, in key order.
    pub fn outcomes(
        &self,
    ) -> impl Iterator<Item = (&ServiceKey, &Result<ServiceOutcome, ServiceError>)> {
        self.outcomes.iter()
    }

    /// The settings of one Service, or `None` when the model does not hold it.
    pub fn service_settings(&self, key: &ServiceKey) -> Option<ServiceSettings> {
        let service = self.services.get(key)?;
        let text = |value: Option<&str>, default: &str| {
            value
                .filter(|value| !value.is_empty())
                .unwrap_or(default)
                .to_string()
        };
        Some(ServiceSettings {
            service_type: text(service.service_type.as_deref(), "ClusterIP"),
            session_affinity: text(service.session_affinity.as_deref(), "None"),
            external_traffic_policy: text(service.external_traffic_policy.as_deref(), "Cluster"),
            internal_traffic_policy: text(service.internal_traffic_policy.as_deref(), "Cluster"),
        })
    }

    /// The endpoints of a Service's EndpointSlices by address. An address listed in
    /// two slices (while a slice is being replaced) keeps its ready copy, as the
    /// endpoint selection does.
    pub fn endpoint_infos(&self, key: &ServiceKey) -> BTreeMap<IpAddr, EndpointInfo> {
        let mut by_address: BTreeMap<IpAddr, EndpointInfo> = BTreeMap::new();
        for (_, slice) in self.slices.get(key).into_iter().flatten() {
            for endpoint in &slice.endpoints {
                let Some(addr) = endpoint.addr else {
                    continue;
                };
                let info = EndpointInfo {
                    addr,
                    pod: endpoint.pod.as_deref().map(str::to_string),
                    node: endpoint.node.as_deref().map(str::to_string),
                    ready: endpoint.ready,
                    serving: endpoint.serving,
                    terminating: endpoint.terminating,
                };
                match by_address.get(&addr) {
                    Some(existing) if existing.ready || !info.ready => {}
                    _ => {
                        by_address.insert(addr, info);
                    }
                }
            }
        }
        by_address
    }
}

impl Model {
    /// The name of the node the model computes for.
    pub fn node_name(&self) -> &str {
        &self.node.name
    }
}
