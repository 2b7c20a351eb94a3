//! The decision from scratch: every object projected, every Service decided, the
//! addresses and this node's announcements gathered the simple way. The agent keeps
//! an [`super::AnnounceModel`] instead; this is the function `ipvs-proxy plan` can
//! call once and the oracle the model is tested against (it shares the per-Service
//! rules with the model, not the bookkeeping).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use metallb_config::LbConfig;

use super::Decision;
use super::elect::{self, Context, Nodes, Resolved};
use super::input::{Endpoints, NodeInput, ServiceInput, SliceInput};
use crate::model::{ServiceKey, slice_id};

/// Everything the decision reads.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// Every Service (those not of type LoadBalancer, of another class or without
    /// an ingress address are passed over).
    pub services: &'a [Service],
    /// Every EndpointSlice.
    pub slices: &'a [EndpointSlice],
    /// Every Node.
    pub nodes: &'a [Node],
    /// MetalLB's configuration.
    pub config: &'a LbConfig,
    /// This node's name.
    pub node: &'a str,
    /// The nodes known to be up (`None`: every Node).
    pub live: Option<&'a BTreeSet<String>>,
    /// Our `loadBalancerClass` (`None`: Services without one).
    pub class: Option<&'a str>,
    /// Ignore `node.kubernetes.io/exclude-from-external-load-balancers` (MetalLB's
    /// `--ignore-exclude-lb`).
    pub ignore_exclude_label: bool,
}

/// Decides every LoadBalancer Service from scratch. An object given twice counts
/// once, the last copy winning.
pub fn decide(inputs: &Inputs<'_>) -> Decision {
    let nodes: Nodes = inputs
        .nodes
        .iter()
        .map(|node| {
            let (name, input) = NodeInput::from_node(node);
            (Arc::from(name), input)
        })
        .collect();
    let resolved = Resolved::new(inputs.config, &nodes);
    let context = Context {
        nodes: &nodes,
        live: inputs.live,
        config: inputs.config,
        resolved: &resolved,
        ignore_exclude_label: inputs.ignore_exclude_label,
    };
    let mut slices: BTreeMap<(String, String), (ServiceKey, SliceInput)> = BTreeMap::new();
    for slice in inputs.slices {
        let id = slice_id(slice);
        match SliceInput::from_slice(slice) {
            Some(projection) => slices.insert(id, projection),
            None => slices.remove(&id),
        };
    }
    let mut by_service: BTreeMap<&ServiceKey, Vec<&SliceInput>> = BTreeMap::new();
    for (owner, slice) in slices.values() {
        by_service.entry(owner).or_default().push(slice);
    }
    let mut services: BTreeMap<ServiceKey, Option<ServiceInput>> = BTreeMap::new();
    for service in inputs.services {
        services.insert(
            ServiceKey::of_service(service),
            ServiceInput::from_service(service, inputs.class),
        );
    }

    let mut decision = Decision::default();
    for (key, service) in services {
        let Some(service) = service else { continue };
        let endpoints = Endpoints::of(by_service.get(&key).into_iter().flatten().copied());
        let service_decision = elect::decide_service(&service, &endpoints, &context);
        for &ip in &service_decision.ips {
            decision.ips.entry(ip).or_default().insert(key.clone());
        }
        let local = elect::local_part(&service_decision, inputs.node);
        for (ip, interfaces) in local.l2 {
            let merged = match decision.local.l2.get(&ip) {
                Some(known) => known.union(&interfaces),
                None => interfaces,
            };
            decision.local.l2.insert(ip, merged);
        }
        for (peer, route) in local.bgp {
            decision.local.bgp.entry(peer).or_default().insert(route);
        }
        decision.services.insert(key, Arc::new(service_decision));
    }
    decision
}
