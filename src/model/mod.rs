//! The desired state: what IPVS, kube-ipvs0 and the ipsets should hold on this node,
//! computed purely from Services, EndpointSlices, this Node and the configuration.
//!
//! Each Service is computed on its own into a [`ServiceContribution`]
//! ([`service::contribution`]); [`Model`] keeps the inputs (compact projections of the
//! objects, [`input`]) and the contributions keyed by Service, so a changed Service or
//! EndpointSlice recomputes only that Service, and
//! [`Model::desired`] merges the contributions into one [`DesiredState`]. A malformed
//! Service yields a [`ServiceError`] for that Service alone; the others are unaffected.
//!
//! The types here are plain data; the kernel adapters map them onto `ipvs-netlink`,
//! rtnetlink and `ipset-netlink`.

mod endpoints;
pub mod input;
pub mod inspect;
pub mod kube_sets;
mod merged;
pub mod service;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::config::Config;
use input::{Interner, ServiceInput, SliceInput};
pub use kube_sets::{IpsetMembers, KubeSet, SetEntry, SetId};
pub use merged::Touched;
pub use service::{ServiceContribution, ServiceOutcome, Skipped};

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
    /// The IPVS scheduler name, e.g. `rr`.
    pub scheduler: String,
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

impl NodeInfo {
    /// The name and zone from a Node object; addresses come from the host.
    pub fn from_node(node: &k8s_openapi::api::core::v1::Node, addresses: Vec<IpAddr>) -> Self {
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

/// EndpointSlices projected for the model, by (namespace, name), with their Service.
type ProjectedSlices = BTreeMap<(String, String), (Option<ServiceKey>, SliceInput)>;

/// The inputs and per-Service results, updated incrementally.
#[derive(Debug, Clone)]
pub struct Model {
    config: Config,
    node: NodeInfo,
    /// Shares node, zone and port names between the inputs.
    interner: Interner,
    services: BTreeMap<ServiceKey, ServiceInput>,
    /// Each Service's slices by name; a Service has few, so a list.
    slices: BTreeMap<ServiceKey, Vec<(String, SliceInput)>>,
    slice_owner: BTreeMap<(String, String), ServiceKey>,
    outcomes: BTreeMap<ServiceKey, Result<ServiceOutcome, ServiceError>>,
    merged: merged::Merged,
    recomputed: u64,
    /// Holds only a part of the view ([`Model::apply_early`]): the next
    /// [`Model::replace_all`] starts from scratch instead of applying differences.
    partial: bool,
}

impl Model {
    /// An empty model for this node and configuration.
    pub fn new(config: Config, node: NodeInfo) -> Self {
        let node_port_addresses = service::node_port_addresses(&node, &config)
            .into_iter()
            .collect();
        Self {
            merged: merged::Merged::new(node_port_addresses),
            config,
            node,
            interner: Interner::default(),
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            slice_owner: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            recomputed: 0,
            partial: false,
        }
    }

    /// Applies a part of the view that arrives before the full one (the API server's
    /// own Service, see [`crate::source::SourceEvent::Early`]). The model then holds
    /// only these objects: a caller must diff just what they touched
    /// ([`Model::take_touched`]), never the whole node. The next
    /// [`Model::replace_all`] builds the model afresh, as for a first list.
    pub fn apply_early(&mut self, services: Vec<Service>, slices: Vec<EndpointSlice>) {
        for slice in slices {
            self.apply_slice(slice);
        }
        for service in services {
            self.apply_service(service);
        }
        self.partial = true;
    }

    /// Whether the model holds only a part of the view (see [`Model::apply_early`]).
    pub fn is_partial(&self) -> bool {
        self.partial
    }

    /// Replaces the node information (addresses, zone); every Service is recomputed.
    pub fn set_node(&mut self, node: NodeInfo) {
        if node != self.node {
            self.node = node;
            self.merged.state.node_port_addresses =
                service::node_port_addresses(&self.node, &self.config)
                    .into_iter()
                    .collect();
            self.merged.touch_all();
            let keys: Vec<_> = self.services.keys().cloned().collect();
            for key in keys {
                self.recompute(&key);
            }
        }
    }

    /// Adds or replaces a Service. A Service whose fields the model reads did not
    /// change (only annotations, resourceVersion, ...) costs nothing.
    pub fn apply_service(&mut self, service: Service) {
        let input = ServiceInput::from_service(&service, &mut self.interner);
        drop(service);
        self.apply_service_input(input);
    }

    fn apply_service_input(&mut self, input: ServiceInput) {
        if self.services.get(&input.key) == Some(&input) {
            return;
        }
        let key = input.key.clone();
        self.services.insert(key.clone(), input);
        self.recompute(&key);
    }

    /// Removes a Service.
    pub fn remove_service(&mut self, key: &ServiceKey) {
        self.services.remove(key);
        let old = self.outcomes.remove(key);
        self.merged.update(key, old.as_ref(), &self.outcomes);
    }

    /// Adds or replaces an EndpointSlice. Slices without a Service label are ignored.
    pub fn apply_slice(&mut self, slice: EndpointSlice) {
        let id = slice_id(&slice);
        let owner = ServiceKey::of_slice(&slice);
        let input = SliceInput::from_slice(&slice, &mut self.interner);
        drop(slice);
        self.apply_slice_input(id, owner, input);
    }

    fn apply_slice_input(
        &mut self,
        id: (String, String),
        owner: Option<ServiceKey>,
        input: SliceInput,
    ) {
        if let Some(owner) = &owner
            && self.slice_owner.get(&id) == Some(owner)
            && self.slice(owner, &id.1) == Some(&input)
        {
            return;
        }
        let previous_owner = self.slice_owner.remove(&id);
        if let Some(previous) = &previous_owner {
            self.take_slice(previous, &id.1);
        }
        if let Some(owner) = &owner {
            self.slice_owner.insert(id.clone(), owner.clone());
            self.put_slice(owner.clone(), id.1.clone(), input);
            self.recompute(owner);
        }
        if let Some(previous) = previous_owner
            && owner.as_ref() != Some(&previous)
        {
            self.recompute(&previous);
        }
    }

    /// Removes an EndpointSlice by namespace and name.
    pub fn remove_slice(&mut self, namespace: &str, name: &str) {
        let id = (namespace.to_string(), name.to_string());
        if let Some(owner) = self.slice_owner.remove(&id) {
            self.take_slice(&owner, name);
            self.recompute(&owner);
        }
    }

    /// One slice of a Service, by name.
    fn slice(&self, owner: &ServiceKey, name: &str) -> Option<&SliceInput> {
        self.slices
            .get(owner)?
            .iter()
            .find(|(slice, _)| slice == name)
            .map(|(_, input)| input)
    }

    /// Adds or replaces one slice of a Service, keeping the list in name order as the
    /// endpoint merge expects (of an address in two slices, the first copy wins a tie).
    fn put_slice(&mut self, owner: ServiceKey, name: String, input: SliceInput) {
        let slices = self.slices.entry(owner).or_default();
        slices.retain(|(known, _)| *known != name);
        let at = slices.partition_point(|(known, _)| *known < name);
        slices.insert(at, (name, input));
        slices.shrink_to_fit();
    }

    /// Removes one slice of a Service, and the Service's list once it is empty.
    fn take_slice(&mut self, owner: &ServiceKey, name: &str) {
        if let Some(slices) = self.slices.get_mut(owner) {
            slices.retain(|(slice, _)| slice != name);
            if slices.is_empty() {
                self.slices.remove(owner);
            }
        }
    }

    /// Replaces every Service and EndpointSlice at once (the first list, or a relist
    /// after the watch lost its place). On a model that already holds objects only
    /// what differs is applied, so a relist that changes one object recomputes one
    /// Service and touches only its part of the kernel.
    pub fn replace_all(&mut self, services: Vec<Service>, slices: Vec<EndpointSlice>) {
        if !std::mem::take(&mut self.partial)
            && (!self.services.is_empty() || !self.slice_owner.is_empty())
        {
            self.update_all(services, slices);
            return;
        }
        self.services.clear();
        self.slices.clear();
        self.slice_owner.clear();
        self.outcomes.clear();
        let node_port_addresses = std::mem::take(&mut self.merged.state.node_port_addresses);
        self.merged = merged::Merged::new(node_port_addresses);
        for slice in slices {
            let id = slice_id(&slice);
            if let Some(owner) = ServiceKey::of_slice(&slice) {
                let input = SliceInput::from_slice(&slice, &mut self.interner);
                self.slice_owner.insert(id.clone(), owner.clone());
                self.put_slice(owner, id.1, input);
            }
        }
        for service in services {
            let input = ServiceInput::from_service(&service, &mut self.interner);
            self.services.insert(input.key.clone(), input);
        }
        let keys: Vec<_> = self.services.keys().cloned().collect();
        for key in keys {
            self.recompute(&key);
        }
        compact(&mut self.services);
        compact(&mut self.slices);
        compact(&mut self.slice_owner);
        compact(&mut self.outcomes);
        self.merged.compact();
    }

    /// [`Model::replace_all`] on a filled model: applies the differences one by one.
    fn update_all(&mut self, services: Vec<Service>, slices: Vec<EndpointSlice>) {
        let new_services = self.project_services(services);
        let new_slices = self.project_slices(slices);
        // Gone Services first, so no slice change recomputes a Service about to go.
        self.remove_services_except(&new_services);
        self.replace_slice_inputs(new_slices);
        self.apply_service_inputs(new_services);
        self.interner.collect_garbage();
    }

    /// Replaces every Service (a relist of Services alone); EndpointSlices stay.
    /// Only what differs is applied, as in [`Model::replace_all`].
    pub fn replace_services(&mut self, services: Vec<Service>) {
        let new_services = self.project_services(services);
        self.remove_services_except(&new_services);
        self.apply_service_inputs(new_services);
        self.interner.collect_garbage();
    }

    /// Replaces every EndpointSlice (a relist of EndpointSlices alone); Services
    /// stay. Only what differs is applied, as in [`Model::replace_all`].
    pub fn replace_slices(&mut self, slices: Vec<EndpointSlice>) {
        let new_slices = self.project_slices(slices);
        self.replace_slice_inputs(new_slices);
        self.interner.collect_garbage();
    }

    fn project_services(&mut self, services: Vec<Service>) -> BTreeMap<ServiceKey, ServiceInput> {
        services
            .into_iter()
            .map(|service| {
                let input = ServiceInput::from_service(&service, &mut self.interner);
                (input.key.clone(), input)
            })
            .collect()
    }

    fn project_slices(&mut self, slices: Vec<EndpointSlice>) -> ProjectedSlices {
        slices
            .into_iter()
            .map(|slice| {
                let input = SliceInput::from_slice(&slice, &mut self.interner);
                (slice_id(&slice), (ServiceKey::of_slice(&slice), input))
            })
            .collect()
    }

    fn remove_services_except(&mut self, kept: &BTreeMap<ServiceKey, ServiceInput>) {
        let gone: Vec<ServiceKey> = self
            .services
            .keys()
            .filter(|key| !kept.contains_key(key))
            .cloned()
            .collect();
        for key in gone {
            self.remove_service(&key);
        }
    }

    fn replace_slice_inputs(&mut self, new_slices: ProjectedSlices) {
        let gone: Vec<(String, String)> = self
            .slice_owner
            .keys()
            .filter(|id| !new_slices.contains_key(id))
            .cloned()
            .collect();
        for (namespace, name) in gone {
            self.remove_slice(&namespace, &name);
        }
        for (id, (owner, input)) in new_slices {
            self.apply_slice_input(id, owner, input);
        }
    }

    fn apply_service_inputs(&mut self, services: BTreeMap<ServiceKey, ServiceInput>) {
        for (_, input) in services {
            self.apply_service_input(input);
        }
    }

    /// The Service, as the model keeps it (the fields it reads), as last applied.
    pub fn service(&self, key: &ServiceKey) -> Option<&ServiceInput> {
        self.services.get(key)
    }

    /// The result for one Service, if it is known.
    pub fn outcome(&self, key: &ServiceKey) -> Option<&Result<ServiceOutcome, ServiceError>> {
        self.outcomes.get(key)
    }

    /// How many per-Service computations have run since the model was created; lets
    /// callers (and tests) check that updates stay incremental.
    pub fn recomputations(&self) -> u64 {
        self.recomputed
    }

    /// This node as the model sees it.
    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn recompute(&mut self, key: &ServiceKey) {
        let Some(service) = self.services.get(key) else {
            return;
        };
        let slices: Vec<&SliceInput> = self
            .slices
            .get(key)
            .map(|slices| slices.iter().map(|(_, input)| input).collect())
            .unwrap_or_default();
        let outcome = service::contribution(service, &slices, &self.node, &self.config);
        self.recomputed += 1;
        let old = self.outcomes.insert(key.clone(), outcome);
        self.merged.update(key, old.as_ref(), &self.outcomes);
    }

    /// The merged desired state, kept current by every update (equal to
    /// [`Model::desired`], without its cost).
    pub fn state(&self) -> &DesiredState {
        &self.merged.state
    }

    /// What changed in [`Model::state`] since the last call: the parts of the kernel the
    /// next sync has to read and diff.
    pub fn take_touched(&mut self) -> Touched {
        self.merged.take_touched()
    }

    /// How many real servers [`Model::state`] holds.
    pub fn real_servers(&self) -> usize {
        self.merged.real_servers()
    }

    /// Merges the per-Service contributions from scratch. Where Services claim the same
    /// virtual server or health-check port, the oldest claimant (then the lower
    /// namespace/name) keeps it and every other claimant is skipped whole with an error
    /// naming it. This is the reference the incremental [`Model::state`] is tested
    /// against.
    pub fn desired(&self) -> DesiredState {
        let mut state = DesiredState {
            node_port_addresses: service::node_port_addresses(&self.node, &self.config)
                .into_iter()
                .collect(),
            ..DesiredState::default()
        };
        let mut programmed: Vec<&ServiceContribution> = Vec::new();
        for outcome in self.outcomes.values() {
            match outcome {
                Ok(ServiceOutcome::Programmed(contribution)) => programmed.push(contribution),
                Ok(ServiceOutcome::Skipped(_)) => {}
                Err(error) => {
                    state.errors.insert(error.service.clone(), error.clone());
                }
            }
        }
        let claim = |c: &ServiceContribution| (c.created, c.service.clone());
        let mut oldest_vs: BTreeMap<VirtualServerKey, merged::Claim> = BTreeMap::new();
        let mut oldest_port: BTreeMap<u16, merged::Claim> = BTreeMap::new();
        for contribution in &programmed {
            for vs in &contribution.virtual_servers {
                let entry = oldest_vs
                    .entry(vs.key)
                    .or_insert_with(|| claim(contribution));
                *entry = entry.clone().min(claim(contribution));
            }
            if let Some((port, _)) = contribution.health_check_node_port {
                let entry = oldest_port
                    .entry(port)
                    .or_insert_with(|| claim(contribution));
                *entry = entry.clone().min(claim(contribution));
            }
        }
        for contribution in programmed {
            let mine = claim(contribution);
            let taken = contribution
                .virtual_servers
                .iter()
                .find_map(|vs| {
                    let oldest = &oldest_vs[&vs.key];
                    (*oldest != mine).then(|| {
                        format!(
                            "{} is already claimed by the older Service {}",
                            vs.key, oldest.1
                        )
                    })
                })
                .or_else(|| {
                    contribution.health_check_node_port.and_then(|(port, _)| {
                        let oldest = &oldest_port[&port];
                        (*oldest != mine).then(|| {
                            format!(
                                "healthCheckNodePort {port} is already claimed by the older \
                                 Service {}",
                                oldest.1
                            )
                        })
                    })
                });
            if let Some(reason) = taken {
                state.errors.insert(
                    contribution.service.clone(),
                    ServiceError {
                        service: contribution.service.clone(),
                        reason,
                    },
                );
                continue;
            }
            for vs in &contribution.virtual_servers {
                state.virtual_servers.insert(vs.key, vs.clone());
            }
            if !contribution.warnings.is_empty() {
                state
                    .warnings
                    .insert(contribution.service.clone(), contribution.warnings.clone());
            }
            state
                .addresses
                .extend(contribution.addresses.iter().copied());
            state.ipsets.extend_entries(&contribution.ipsets);
            if let Some((port, local_endpoints)) = contribution.health_check_node_port {
                state.health_check_node_ports.insert(
                    port,
                    HealthCheck {
                        service: contribution.service.clone(),
                        local_endpoints,
                    },
                );
            }
        }
        state.ipsets.add_all(
            KubeSet::IpvsIps,
            state
                .addresses
                .iter()
                .map(|addr| (Family::of(*addr), SetEntry::Ip(*addr))),
        );
        state.ipsets.0.retain(|_, entries| !entries.is_empty());
        state
    }
}

fn slice_id(slice: &EndpointSlice) -> (String, String) {
    (
        slice
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        slice.metadata.name.clone().unwrap_or_default(),
    )
}
