//! [`AnnounceModel`]: the decision kept current change by change.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use metallb_config::LbConfig;

use super::elect::{self, Context, LocalPart, Nodes, Resolved};
use super::input::{Endpoints, NodeInput, ServiceInput, kept_nodes};
use super::{Decision, Interfaces, LocalAnnouncements, LocalTouched, Route, ServiceDecision};
use crate::model::{SERVICE_NAME_LABEL, ServiceKey};

/// The nodes of a kept slice's endpoints that can take traffic, sorted, each name
/// shared through [`AnnounceModel`]'s `node_names`.
type SliceNodes = Box<[Arc<str>]>;

/// The slices of one namespace. Every slice with an endpoint that can take traffic is
/// kept, whatever its Service (a ClusterIP Service may become a LoadBalancer Service
/// of ours, and its slices must then be known), so this is what the model spends per
/// slice of the cluster: a Service name and a slice name shared by both maps, the
/// nodes (names shared by every slice), and the two map entries. With 10,000 slices
/// of 10 endpoints that is 404 bytes a slice (`examples/announce_memory`), where a
/// map of slices with their own copies of every name, a set of nodes each and a set
/// of slice identities per Service took 1,572.
#[derive(Debug, Clone, Default)]
struct NamespaceSlices {
    /// Per Service name: its slices, by name, with their nodes.
    of_service: BTreeMap<Arc<str>, Vec<(Arc<str>, SliceNodes)>>,
    /// Per slice name: its Service's name.
    owner: BTreeMap<Arc<str>, Arc<str>>,
}

/// A slice's namespace, as [`ServiceKey::of_slice`] reads it.
fn namespace_of(slice: &EndpointSlice) -> &str {
    slice.metadata.namespace.as_deref().unwrap_or("default")
}

/// A slice's name.
fn name_of(slice: &EndpointSlice) -> &str {
    slice.metadata.name.as_deref().unwrap_or_default()
}

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
    /// Per namespace, the slices with an endpoint that can take traffic (the others
    /// count as absent), whatever their Service: it may become a LoadBalancer later.
    slices: BTreeMap<Arc<str>, NamespaceSlices>,
    /// The node names the kept slices name, one copy each.
    node_names: HashSet<Arc<str>>,
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
            node_names: HashSet::new(),
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
        let owner = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(SERVICE_NAME_LABEL));
        let node_names = &mut self.node_names;
        let nodes = owner.and_then(|_| {
            kept_nodes(slice, |name| match node_names.get(name) {
                Some(known) => known.clone(),
                None => {
                    let name: Arc<str> = Arc::from(name);
                    node_names.insert(name.clone());
                    name
                }
            })
        });
        match (owner, nodes) {
            (Some(owner), Some(nodes)) => {
                self.put_slice(namespace_of(slice), name_of(slice), owner, nodes)
            }
            // A slice with nothing that takes traffic counts as no slice at all.
            _ => self.delete_slice(namespace_of(slice), name_of(slice)),
        }
    }

    /// Removes an EndpointSlice by namespace and name.
    pub fn delete_slice(&mut self, namespace: &str, name: &str) {
        let Some((namespace, space)) = self.slices.get_key_value(namespace) else {
            return;
        };
        let namespace = namespace.clone();
        let Some(owner) = space.owner.get(name).cloned() else {
            return;
        };
        let nodes = self.unlink_slice(&namespace, &owner, name);
        self.release(&nodes);
        self.recompute(&ServiceKey::new(namespace, owner));
    }

    fn put_slice(&mut self, namespace: &str, name: &str, owner: &str, nodes: SliceNodes) {
        let namespace: Arc<str> = match self.slices.get_key_value(namespace) {
            Some((namespace, _)) => namespace.clone(),
            None => Arc::from(namespace),
        };
        let space = self.slices.entry(namespace.clone()).or_default();
        let previous = space.owner.get_key_value(name);
        if let Some((_, previous)) = previous
            && &**previous == owner
        {
            let kept = space
                .of_service
                .get_mut(owner)
                .and_then(|slices| slices.iter_mut().find(|(slice, _)| &**slice == name))
                .expect("a slice's owner lists it");
            if kept.1 == nodes {
                // Same nodes: the names just interned are already held by this slice.
                return;
            }
            let old = std::mem::replace(&mut kept.1, nodes);
            let owner = previous.clone();
            self.release(&old);
            self.recompute(&ServiceKey::new(namespace, owner));
            return;
        }
        // A new slice, or one that moved to another Service (its label changed).
        let moved_from = previous.map(|(_, previous)| previous.clone());
        let old = moved_from
            .as_ref()
            .map(|previous| self.unlink_slice(&namespace, previous, name));
        let space = self.slices.entry(namespace.clone()).or_default();
        let name: Arc<str> = match space.owner.get_key_value(name) {
            Some((name, _)) => name.clone(),
            None => Arc::from(name),
        };
        let owner: Arc<str> = match space.of_service.get_key_value(owner) {
            Some((owner, _)) => owner.clone(),
            None => Arc::from(owner),
        };
        space.owner.insert(name.clone(), owner.clone());
        let slices = space.of_service.entry(owner.clone()).or_default();
        // Most Services have one slice (two when dual-stack): no spare room.
        slices.reserve_exact(1);
        slices.push((name, nodes));
        if let Some(old) = old {
            self.release(&old);
        }
        if let Some(previous) = moved_from {
            self.recompute(&ServiceKey::new(namespace.clone(), previous));
        }
        self.recompute(&ServiceKey::new(namespace, owner));
    }

    /// Takes slice `name` out of `namespace` (owned by `owner`) and returns its nodes.
    fn unlink_slice(&mut self, namespace: &str, owner: &str, name: &str) -> SliceNodes {
        let space = self
            .slices
            .get_mut(namespace)
            .expect("the slice's namespace is kept");
        space.owner.remove(name);
        let slices = space
            .of_service
            .get_mut(owner)
            .expect("a slice's owner lists it");
        let index = slices
            .iter()
            .position(|(slice, _)| &**slice == name)
            .expect("a slice's owner lists it");
        let (_, nodes) = slices.swap_remove(index);
        if slices.is_empty() {
            space.of_service.remove(owner);
        } else {
            slices.shrink_to_fit();
        }
        if space.owner.is_empty() {
            self.slices.remove(namespace);
        }
        nodes
    }

    /// Lets go of the names among a dropped slice's `nodes` that no other slice names.
    fn release(&mut self, nodes: &[Arc<str>]) {
        for name in nodes.iter() {
            // Only `node_names` and these nodes hold it (the model's clones aside).
            if Arc::strong_count(name) <= 2 {
                self.node_names.remove(&**name);
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
        // Borrowed: a relist holds every Service of the cluster, few of them ours.
        let listed: BTreeSet<(&str, &str)> = services
            .iter()
            .map(|service| {
                (
                    service.metadata.namespace.as_deref().unwrap_or("default"),
                    service.metadata.name.as_deref().unwrap_or_default(),
                )
            })
            .collect();
        let gone: Vec<ServiceKey> = self
            .services
            .keys()
            .filter(|key| !listed.contains(&(&*key.namespace, &*key.name)))
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
            let endpoints = Endpoints::of_kept(
                self.slices
                    .get(&*key.namespace)
                    .and_then(|space| space.of_service.get(&*key.name))
                    .into_iter()
                    .flatten()
                    .map(|(_, nodes)| &**nodes),
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
        let listed: BTreeSet<(&str, &str)> = slices
            .iter()
            .map(|slice| (namespace_of(slice), name_of(slice)))
            .collect();
        let gone: Vec<(Arc<str>, Arc<str>)> = self
            .slices
            .iter()
            .flat_map(|(namespace, space)| {
                space
                    .owner
                    .keys()
                    .filter(|name| !listed.contains(&(&**namespace, &***name)))
                    .map(|name| (namespace.clone(), name.clone()))
            })
            .collect();
        drop(listed);
        for (namespace, name) in gone {
            self.delete_slice(&namespace, &name);
        }
        for slice in slices {
            self.apply_slice(slice);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(namespace: &str, name: &str, service: &str, nodes: &[&str]) -> EndpointSlice {
        let endpoints: Vec<serde_json::Value> = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                serde_json::json!({"addresses": [format!("10.244.0.{}", i + 1)],
                                   "nodeName": node, "conditions": {"ready": true}})
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "endpoints": endpoints,
        }))
        .unwrap()
    }

    /// Every slice naming a node shares one copy of its name, and what no kept slice
    /// names any more (slices, namespaces, node names) is let go.
    #[test]
    fn kept_slices_share_names_and_let_go_of_unused_ones() {
        let mut model = AnnounceModel::new("node-a", None);
        model.apply_slice(&slice(
            "shop",
            "web-1",
            "web",
            &["node-a", "node-b", "node-a"],
        ));
        model.apply_slice(&slice("shop", "web-2", "web", &["node-b"]));
        model.apply_slice(&slice("lab", "dns-1", "dns", &["node-b", "node-c"]));
        assert_eq!(model.node_names.len(), 3);
        let web = &model.slices["shop"].of_service["web"];
        assert_eq!(web.len(), 2);
        assert_eq!(&*web[0].1, [Arc::from("node-a"), Arc::from("node-b")]);
        assert!(Arc::ptr_eq(&web[0].1[1], &web[1].1[0]), "node-b held once");

        // web-1 moves to another Service; dns-1 loses its last serving endpoint.
        model.apply_slice(&slice("shop", "web-1", "api", &["node-d"]));
        let mut not_ready = slice("lab", "dns-1", "dns", &["node-c"]);
        not_ready.endpoints.as_mut().unwrap()[0]
            .conditions
            .as_mut()
            .unwrap()
            .ready = Some(false);
        model.apply_slice(&not_ready);
        assert!(!model.slices.contains_key("lab"));
        assert_eq!(
            model.node_names,
            HashSet::from([Arc::from("node-b"), Arc::from("node-d")])
        );
        assert_eq!(
            model.slices["shop"]
                .owner
                .keys()
                .map(|n| &**n)
                .collect::<Vec<_>>(),
            ["web-1", "web-2"]
        );

        model.replace_slices(&[]);
        assert!(model.slices.is_empty());
        assert!(model.node_names.is_empty());
    }
}
