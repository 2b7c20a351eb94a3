//! Choosing a Service port's endpoints from its EndpointSlices: the readiness,
//! termination, locality and topology-hint rules kube-proxy applies.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::input::SliceInput;
use super::{Family, NodeInfo, Protocol};

/// One endpoint of one Service port, with what the selection rules look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint<'a> {
    pub addr: IpAddr,
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub local: bool,
    pub zone_hints: &'a [Arc<str>],
    pub node_hints: &'a [Arc<str>],
}

/// Whether `hints` names `name`.
fn hinted(hints: &[Arc<str>], name: &str) -> bool {
    hints.iter().any(|hint| **hint == *name)
}

/// The endpoints of a Service port with the given name, protocol and family, merged over
/// the Service's slices. An address listed in two slices (while a slice is being
/// replaced) counts once, preferring its ready copy.
pub(crate) fn endpoints_for_port<'a>(
    slices: &[&'a SliceInput],
    port_name: &str,
    protocol: Protocol,
    family: Family,
    node: &NodeInfo,
) -> Vec<Endpoint<'a>> {
    let mut by_address: BTreeMap<(IpAddr, u16), Endpoint<'a>> = BTreeMap::new();
    for slice in slices {
        if slice.family != Some(family) {
            continue;
        }
        let Some(port) = slice.ports.iter().find_map(|port| {
            (*port.name == *port_name && port.protocol == Some(protocol))
                .then_some(port.port)
                .flatten()
        }) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let local =
                !node.name.is_empty() && endpoint.node.as_deref() == Some(node.name.as_str());
            // Only the first address is used, as the API documents for consumers.
            let Some(addr) = endpoint.addr.filter(|addr| Family::of(*addr) == family) else {
                continue;
            };
            let candidate = Endpoint {
                addr,
                port,
                ready: endpoint.ready,
                serving: endpoint.serving,
                terminating: endpoint.terminating,
                local,
                zone_hints: endpoint.zone_hints(),
                node_hints: endpoint.node_hints(),
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
    let node_hinted = ready().any(|endpoint| hinted(endpoint.node_hints, &node.name));
    if all_node_hints && node_hinted {
        return TopologyMode::SameNode;
    }
    if let Some(zone) = &node.zone {
        let all_zone_hints = ready().all(|endpoint| !endpoint.zone_hints.is_empty());
        let zone_hinted = ready().any(|endpoint| hinted(endpoint.zone_hints, zone));
        if all_zone_hints && zone_hinted {
            return TopologyMode::SameZone;
        }
    }
    TopologyMode::None
}

/// The endpoints each kind of traffic uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Categorized<'a> {
    /// For traffic policy Cluster: ready endpoints (topology applied), or if none is
    /// ready, the serving terminating ones.
    pub cluster: Vec<Endpoint<'a>>,
    /// For traffic policy Local: this node's ready endpoints, or if none is ready, its
    /// serving terminating ones. Empty means the traffic is dropped.
    pub local: Vec<Endpoint<'a>>,
}

pub(crate) fn categorize<'a>(endpoints: &[Endpoint<'a>], node: &NodeInfo) -> Categorized<'a> {
    let mode = topology_mode(endpoints, node);
    let in_topology = |endpoint: &Endpoint| match mode {
        TopologyMode::None => true,
        TopologyMode::SameNode => hinted(endpoint.node_hints, &node.name),
        TopologyMode::SameZone => node
            .zone
            .as_ref()
            .is_some_and(|zone| hinted(endpoint.zone_hints, zone)),
    };
    let pick = |filter: &dyn Fn(&Endpoint) -> bool| -> Vec<Endpoint<'a>> {
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
