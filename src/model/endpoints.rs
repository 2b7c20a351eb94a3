//! Choosing a Service port's endpoints from its EndpointSlices: the readiness,
//! termination, locality and topology-hint rules kube-proxy applies.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::{Family, NodeInfo, Protocol};

/// One endpoint of one Service port, with what the selection rules look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub addr: IpAddr,
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub local: bool,
    pub zone_hints: BTreeSet<String>,
    pub node_hints: BTreeSet<String>,
}

/// The endpoints of a Service port with the given name, protocol and family, merged over
/// the Service's slices. An address listed in two slices (while a slice is being
/// replaced) counts once, preferring its ready copy.
pub(crate) fn endpoints_for_port(
    slices: &[&EndpointSlice],
    port_name: &str,
    protocol: Protocol,
    family: Family,
    node: &NodeInfo,
) -> Vec<Endpoint> {
    let address_type = match family {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    };
    let mut by_address: BTreeMap<(IpAddr, u16), Endpoint> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != address_type {
            continue;
        }
        let Some(port) = slice.ports.iter().flatten().find_map(|port| {
            let name_matches = port.name.as_deref().unwrap_or("") == port_name;
            let protocol_matches =
                Protocol::from_kubernetes(port.protocol.as_deref()) == Some(protocol);
            (name_matches && protocol_matches)
                .then_some(port.port)
                .flatten()
                .and_then(|port| u16::try_from(port).ok())
                .filter(|port| *port != 0)
        }) else {
            continue;
        };
        for endpoint in slice.endpoints.iter().flatten() {
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            // The API: a nil ready means ready, a nil serving means "same as ready".
            let ready = conditions.ready.unwrap_or(true);
            let serving = conditions.serving.unwrap_or(ready);
            let terminating = conditions.terminating.unwrap_or(false);
            let hints = endpoint.hints.as_ref();
            let zone_hints: BTreeSet<String> = hints
                .and_then(|hints| hints.for_zones.as_ref())
                .into_iter()
                .flatten()
                .map(|zone| zone.name.clone())
                .collect();
            let node_hints: BTreeSet<String> = hints
                .and_then(|hints| hints.for_nodes.as_ref())
                .into_iter()
                .flatten()
                .map(|node| node.name.clone())
                .collect();
            let local =
                endpoint.node_name.as_deref() == Some(node.name.as_str()) && !node.name.is_empty();
            // Only the first address is used, as the API documents for consumers.
            let Some(addr) = endpoint
                .addresses
                .first()
                .and_then(|text| text.parse::<IpAddr>().ok())
                .filter(|addr| Family::of(*addr) == family)
            else {
                continue;
            };
            let candidate = Endpoint {
                addr,
                port,
                ready,
                serving,
                terminating,
                local,
                zone_hints,
                node_hints,
            };
            match by_address.get(&(addr, port)) {
                Some(existing) if existing.ready || !candidate.ready => {}
                _ => {
                    by_address.insert((addr, port), candidate);
                }
            }
        }
    }
    by_address.into_values().collect()
}

/// How topology hints narrow the cluster-wide endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TopologyMode {
    None,
    SameNode,
    SameZone,
}

/// Topology hints are used only when every ready endpoint carries them and at least
/// one is meant for this node (or zone); otherwise kube-proxy ignores them all, so
/// that partial hints can never leave a node without endpoints.
fn topology_mode(endpoints: &[Endpoint], node: &NodeInfo) -> TopologyMode {
    let ready = || endpoints.iter().filter(|endpoint| endpoint.ready);
    let all_node_hints = ready().all(|endpoint| !endpoint.node_hints.is_empty());
    let node_hinted = ready().any(|endpoint| endpoint.node_hints.contains(&node.name));
    if all_node_hints && node_hinted {
        return TopologyMode::SameNode;
    }
    if let Some(zone) = &node.zone {
        let all_zone_hints = ready().all(|endpoint| !endpoint.zone_hints.is_empty());
        let zone_hinted = ready().any(|endpoint| endpoint.zone_hints.contains(zone));
        if all_zone_hints && zone_hinted {
            return TopologyMode::SameZone;
        }
    }
    TopologyMode::None
}

/// The endpoints each kind of traffic uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Categorized {
    /// For traffic policy Cluster: ready endpoints (topology applied), or if none is
    /// ready, the serving terminating ones.
    pub cluster: Vec<Endpoint>,
    /// For traffic policy Local: this node's ready endpoints, or if none is ready, its
    /// serving terminating ones. Empty means the traffic is dropped.
    pub local: Vec<Endpoint>,
}

pub(crate) fn categorize(endpoints: &[Endpoint], node: &NodeInfo) -> Categorized {
    let mode = topology_mode(endpoints, node);
    let in_topology = |endpoint: &Endpoint| match mode {
        TopologyMode::None => true,
        TopologyMode::SameNode => endpoint.node_hints.contains(&node.name),
        TopologyMode::SameZone => node
            .zone
            .as_ref()
            .is_some_and(|zone| endpoint.zone_hints.contains(zone)),
    };
    let pick = |filter: &dyn Fn(&Endpoint) -> bool| -> Vec<Endpoint> {
        endpoints.iter().filter(|e| filter(e)).cloned().collect()
    };
    let mut cluster = pick(&|e| e.ready && in_topology(e));
    if cluster.is_empty() {
        cluster = pick(&|e| e.serving && e.terminating);
    }
    let mut local = pick(&|e| e.local && e.ready);
    if local.is_empty() {
        local = pick(&|e| e.local && e.serving && e.terminating);
    }
    Categorized { cluster, local }
}
