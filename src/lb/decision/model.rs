//! [`AnnounceModel`]: the decision kept current change by change.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use metallb_config::LbConfig;

use super::elect::{self, Context, LocalPart, Nodes, Resolved};
use super::input::{Endpoints, NodeInput, ServiceInput, SliceInput};
use super::{Decision, Interfaces, LocalAnnouncements, LocalTouched, Route, ServiceDecision};
use crate::model::{ServiceKey, slice_id};

/// An EndpointSlice's identity: namespace and name.
type SliceId = (String, String);

/// The inputs of the decision as compact projections, and the per-Service results.
///
/// A Service or EndpointSlice change recomputes that Service alone (a projection
/// that did not change costs nothing); a Node, configuration or live-set change
/// recomputes every LoadBalancer Service. This node's announcements
/// ([`AnnounceModel::local`]) are kept current from the Services that changed, and
/// what changed in them is collected for the announcers
/// ([`AnnounceModel::take_touched`]).
#[derive(Debug, Clone)]
pub struct AnnounceModel {
    node: String,
    class: Option<String>,
    config: LbConfig,
    live: Option<BTreeSet<String>>,
    ignore_exclude_label: bool,
    nodes: Nodes,
    resolved: Resolved,
    /// LoadBalancer Services of ours holding an ingress address.
    services: BTreeMap<ServiceKey, ServiceInput>,
    /// Slices with an endpoint that can take traffic (the others count as absent),
    /// whatever their Service: it may become a LoadBalancer later.
    slices: BTreeMap<SliceId, (ServiceKey, SliceInput)>,
    slices_of: BTreeMap<ServiceKey, BTreeSet<SliceId>>,
    decisions: BTreeMap<ServiceKey, Arc<ServiceDecision>>,
    ips: BTreeMap<IpAddr, BTreeSet<ServiceKey>>,
    /// Per address this node owns: each owning Service's interfaces.
    local_l2: BTreeMap<IpAddr, BTreeMap<ServiceKey, Interfaces>>,
    /// Per peer and route: how many Services send it from this node.
    local_bgp: BTreeMap<Arc<str>, BTreeMap<Route, usize>>,
    local: LocalAnnouncements,
    touched: LocalTouched,
    recomputed: u64,
}

impl AnnounceModel {
    /// An empty model for node `node`, handling the LoadBalancer Services of `class`
    /// (`None`: those without a `loadBalancerClass`).
    pub fn new(node: impl Into<String>, class: Option<String>) -> AnnounceModel {
        AnnounceModel {
            node: node.into(),
            class,
            config: LbConfig::default(),
            live: None,
            ignore_exclude_label: false,
            nodes: Nodes::new(),
            resolved: Resolved::default(),
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            slices_of: BTreeMap::new(),
            decisions: BTreeMap::new(),
            ips: BTreeMap::new(),
            local_l2: BTreeMap::new(),
            local_bgp: BTreeMap::new(),
            local: LocalAnnouncements::default(),
            touched: LocalTouched::default(),
            recomputed: 0,
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Adds or replaces a Service. One that is not (or no longer) a LoadBalancer
    /// Service of ours with an ingress address is dropped.
    pub fn apply_service(&mut self, service: &Service) {
        let key = ServiceKey::of_service(service);
        match ServiceInput::from_service(service, self.class.as_deref()) {
            Some(input) => {
                if self.services.get(&key) != Some(&input) {
                    self.services.insert(key.clone(), input);
                    self.recompute(&key);
                }
            }
            None => self.delete_service(&key),
        }
    }

    /// Removes a Service.
    pub fn delete_service(&mut self, key: &ServiceKey) {
        if self.services.remove(key).is_some() {
            self.recompute(key);
        }
    }

    /// Adds or replaces an EndpointSlice.
    pub fn apply_slice(&mut self, slice: &EndpointSlice) {
        let id = slice_id(slice);
        match SliceInput::from_slice(slice) {
            Some((owner, input)) if input.serving => self.put_slice(id, owner, input),
            // A slice with nothing that takes traffic counts as no slice at all.
            _ => self.delete_slice(&id.0, &id.1),
        }
    }

    /// Removes an EndpointSlice by namespace and name.
    pub fn delete_slice(&mut self, namespace: &str, name: &str) {
        let id = (namespace.to_string(), name.to_string());
        if let Some((owner, _)) = self.slices.remove(&id) {
            self.unlink_slice(&owner, &id);
            self.recompute(&owner);
        }
    }

    fn put_slice(&mut self, id: SliceId, owner: ServiceKey, input: SliceInput) {
        if self.slices.get(&id) == Some(&(owner.clone(), input.clone())) {
            return;
        }
        let previous = self.slices.insert(id.clone(), (owner.clone(), input));
        self.slices_of
            .entry(owner.clone())
            .or_default()
            .insert(id.clone());
        if let Some((previous, _)) = previous
            && previous != owner
        {
            self.unlink_slice(&previous, &id);
            self.recompute(&previous);
        }
        self.recompute(&owner);
    }

    fn unlink_slice(&mut self, owner: &ServiceKey, id: &SliceId) {
        if let Some(ids) = self.slices_of.get_mut(owner) {
            ids.remove(id);
            if ids.is_empty() {
                self.slices_of.remove(owner);
            }
        }
    }

    /// Replaces every Service and EndpointSlice (the first list, or a relist): only
    /// what differs is applied, so a relist that changes one object recomputes one
    /// Service.
    pub fn replace_all(&mut self, services: &[Service], slices: &[EndpointSlice]) {
        self.remove_services_not_in(services);
        self.replace_slices(slices);
        for service in services {
            self.apply_service(service);
        }
    }

    /// Replaces every Service (the Kubernetes source relisted them); EndpointSlices
    /// are unchanged. Only the Services that differ are recomputed.
    pub fn replace_services(&mut self, services: &[Service]) {
        self.remove_services_not_in(services);
        for service in services {
            self.apply_service(service);
        }
    }

    /// Deletes the Services held that `services` does not list.
    fn remove_services_not_in(&mut self, services: &[Service]) {
        let listed: BTreeSet<ServiceKey> = services.iter().map(ServiceKey::of_service).collect();
        let gone: Vec<ServiceKey> = self
            .services
            .keys()
            .filter(|key| !listed.contains(*key))
            .cloned()
            .collect();
        for key in gone {
            self.delete_service(&key);
        }
    }

    /// Replaces every Node.
    pub fn set_nodes(&mut self, nodes: &[Node]) {
        let nodes: Nodes = nodes
            .iter()
            .map(|node| {
                let (name, input) = NodeInput::from_node(node);
                (Arc::from(name), input)
            })
            .collect();
        if nodes != self.nodes {
            self.nodes = nodes;
            self.recompute_all();
        }
    }

    /// Adds or replaces a Node. A change the decision does not read (addresses,
    /// other conditions, heartbeats) costs nothing.
    pub fn apply_node(&mut self, node: &Node) {
        let (name, input) = NodeInput::from_node(node);
        if self.nodes.get(name.as_str()) != Some(&input) {
            self.nodes.insert(Arc::from(name), input);
            self.recompute_all();
        }
    }

    /// Removes a Node by name.
    pub fn delete_node(&mut self, name: &str) {
        if self.nodes.remove(name).is_some() {
            self.recompute_all();
        }
    }

    /// Replaces MetalLB's configuration.
    pub fn set_config(&mut self, config: LbConfig) {
        if config != self.config {
            self.config = config;
            self.recompute_all();
        }
    }

    /// Replaces the set of live nodes (`None`: every Node is live). Only layer 2
    /// reads it, and removing a node other than an owner moves no address.
    pub fn set_live_nodes(&mut self, live: Option<BTreeSet<String>>) {
        if live != self.live {
            self.live = live;
            self.recompute_all();
        }
    }

    /// Ignores `node.kubernetes.io/exclude-from-external-load-balancers`, as
    /// MetalLB's speaker does with `--ignore-exclude-lb`.
    pub fn set_ignore_exclude_label(&mut self, ignore: bool) {
        if ignore != self.ignore_exclude_label {
            self.ignore_exclude_label = ignore;
            self.recompute_all();
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &LbConfig {
        &self.config
    }

    /// The decision for one Service.
    pub fn service(&self, key: &ServiceKey) -> Option<&ServiceDecision> {
        self.decisions.get(key).map(|decision| &**decision)
    }

    /// Every Service's decision.
    pub fn services(&self) -> &BTreeMap<ServiceKey, Arc<ServiceDecision>> {
        &self.decisions
    }

    /// Every ingress address and the Services holding it.
    pub fn ips(&self) -> &BTreeMap<IpAddr, BTreeSet<ServiceKey>> {
        &self.ips
    }

    /// What this node announces.
    pub fn local(&self) -> &LocalAnnouncements {
        &self.local
    }

    /// What changed in [`AnnounceModel::local`] since the last call.
    pub fn take_touched(&mut self) -> LocalTouched {
        std::mem::take(&mut self.touched)
    }

    /// The whole decision (cheap: the per-Service decisions are shared).
    pub fn decision(&self) -> Decision {
        Decision {
            services: self.decisions.clone(),
            ips: self.ips.clone(),
            local: self.local.clone(),
        }
    }

    /// How many per-Service decisions have run since the model was created; lets
    /// tests check that updates stay incremental.
    pub fn recomputations(&self) -> u64 {
        self.recomputed
    }

    fn recompute_all(&mut self) {
        self.resolved = Resolved::new(&self.config, &self.nodes);
        let keys: Vec<ServiceKey> = self.services.keys().cloned().collect();
        for key in keys {
            self.recompute(&key);
        }
    }

    fn recompute(&mut self, key: &ServiceKey) {
        let new = self.services.get(key).map(|service| {
            let endpoints = Endpoints::of(
                self.slices_of
                    .get(key)
                    .into_iter()
                    .flatten()
                    .filter_map(|id| self.slices.get(id).map(|(_, slice)| slice)),
            );
            let context = Context {
                nodes: &self.nodes,
                live: self.live.as_ref(),
                config: &self.config,
                resolved: &self.resolved,
                ignore_exclude_label: self.ignore_exclude_label,
            };
            elect::decide_service(service, &endpoints, &context)
        });
        if new.is_some() {
            self.recomputed += 1;
        }
        let old = self.decisions.get(key);
        if old.map(|old| &**old) == new.as_ref() {
            return;
        }
        let old = match new {
            Some(new) => self.decisions.insert(key.clone(), Arc::new(new)),
            None => self.decisions.remove(key),
        };
        let LocalPart {
            l2: old_l2,
            bgp: old_bgp,
        } = match &old {
            Some(old) => {
                for ip in &old.ips {
                    if let Some(holders) = self.ips.get_mut(ip) {
                        holders.remove(key);
                        if holders.is_empty() {
                            self.ips.remove(ip);
                        }
                    }
                }
                elect::local_part(old, &self.node)
            }
            None => Default::default(),
        };
        let LocalPart {
            l2: new_l2,
            bgp: new_bgp,
        } = match self.decisions.get(key).cloned() {
            Some(new) => {
                for &ip in &new.ips {
                    self.ips.entry(ip).or_default().insert(key.clone());
                }
                elect::local_part(&new, &self.node)
            }
            None => Default::default(),
        };
        // Only the differences are applied, so an address or route this Service keeps
        // is never touched.
        let mut l2_ips: BTreeSet<IpAddr> = BTreeSet::new();
        for (ip, _) in &old_l2 {
            if let Some(owners) = self.local_l2.get_mut(ip) {
                owners.remove(key);
            }
            l2_ips.insert(*ip);
        }
        for (ip, interfaces) in new_l2 {
            self.local_l2
                .entry(ip)
                .or_default()
                .insert(key.clone(), interfaces);
            l2_ips.insert(ip);
        }
        for ip in l2_ips {
            self.merge_l2(ip);
        }
        for (peer, route) in &old_bgp {
            if new_bgp
                .binary_search(&(peer.clone(), route.clone()))
                .is_err()
            {
                self.count_route(peer.clone(), route.clone(), false);
            }
        }
        for (peer, route) in &new_bgp {
            if old_bgp
                .binary_search(&(peer.clone(), route.clone()))
                .is_err()
            {
                self.count_route(peer.clone(), route.clone(), true);
            }
        }
    }

    /// Recomputes this node's layer-2 announcement of `ip` from the Services that
    /// own it here.
    fn merge_l2(&mut self, ip: IpAddr) {
        let merged = self.local_l2.get(&ip).and_then(|owners| {
            owners
                .values()
                .cloned()
                .reduce(|merged, interfaces| merged.union(&interfaces))
        });
        if merged.is_none() {
            self.local_l2.remove(&ip);
        }
        if self.local.l2.get(&ip) != merged.as_ref() {
            match merged {
                Some(interfaces) => self.local.l2.insert(ip, interfaces),
                None => self.local.l2.remove(&ip),
            };
            self.touched.l2.insert(ip);
        }
    }

    /// Counts a route one Service sends to `peer` in or out; the route appears or
    /// goes with its first or last Service.
    fn count_route(&mut self, peer: Arc<str>, route: Route, add: bool) {
        let counts = self.local_bgp.entry(peer.clone()).or_default();
        let count = counts.entry(route.clone()).or_default();
        let changed = if add {
            *count += 1;
            *count == 1
        } else {
            *count -= 1;
            *count == 0
        };
        if *count == 0 {
            counts.remove(&route);
            if counts.is_empty() {
                self.local_bgp.remove(&peer);
            }
        }
        if changed {
            let routes = self.local.bgp.entry(peer.clone()).or_default();
            if add {
                routes.insert(route);
            } else {
                routes.remove(&route);
                if routes.is_empty() {
                    self.local.bgp.remove(&peer);
                }
            }
            self.touched.bgp.insert(peer);
        }
    }
}

impl AnnounceModel {
    /// Replaces every EndpointSlice (the Kubernetes source relisted them); Services
    /// are unchanged. Only the slices that differ recompute their Service.
    pub fn replace_slices(&mut self, slices: &[EndpointSlice]) {
        let listed: BTreeSet<SliceId> = slices.iter().map(slice_id).collect();
        let gone: Vec<SliceId> = self
            .slices
            .keys()
            .filter(|id| !listed.contains(*id))
            .cloned()
            .collect();
        for (namespace, name) in gone {
            self.delete_slice(&namespace, &name);
        }
        for slice in slices {
            self.apply_slice(slice);
        }
    }
}
