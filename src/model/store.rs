//! The per-node [`Model`]: the inputs and per-Service results, updated incrementally.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::input::{Interner, ServiceInput, SliceInput};
use super::merged::{self, Touched};
use super::service::{self, ServiceOutcome};
use super::{DesiredState, ModelConfig, NodeInfo, ServiceError, ServiceKey, compact};

/// EndpointSlices projected for the model, by (namespace, name), with their Service.
type ProjectedSlices = BTreeMap<(String, String), (Option<ServiceKey>, SliceInput)>;

/// The inputs and per-Service results, updated incrementally.
#[derive(Debug, Clone)]
pub struct Model {
    pub(super) config: ModelConfig,
    pub(super) node: NodeInfo,
    /// Shares node, zone and port names between the inputs.
    interner: Interner,
    pub(super) services: BTreeMap<ServiceKey, ServiceInput>,
    /// Each Service's slices by name; a Service has few, so a list.
    pub(super) slices: BTreeMap<ServiceKey, Vec<(String, SliceInput)>>,
    slice_owner: BTreeMap<(String, String), ServiceKey>,
    pub(super) outcomes: BTreeMap<ServiceKey, Result<ServiceOutcome, ServiceError>>,
    /// The merged state; it also holds the node addresses serving NodePorts, computed
    /// once per node change for every Service.
    merged: merged::Merged,
    recomputed: u64,
    /// Holds only a part of the view ([`Model::apply_early`]): the next
    /// [`Model::replace_all`] starts from scratch instead of applying differences.
    partial: bool,
}

impl Model {
    /// An empty model for this node and configuration (a [`crate::config::Config`] or
    /// just the part the model reads).
    pub fn new(config: impl Into<ModelConfig>, node: NodeInfo) -> Self {
        let config = config.into();
        let node_port_addresses = service::node_port_addresses(&node, &config);
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
                service::node_port_addresses(&self.node, &self.config);
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

    /// The part of the configuration in use.
    pub fn config(&self) -> &ModelConfig {
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
        let outcome = service::contribution(
            service,
            &slices,
            &self.node,
            &self.config,
            &self.merged.state.node_port_addresses,
        );
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
}

/// An EndpointSlice's identity, (namespace, name), with the API server's defaults for
/// missing fields (a slice read from a file may omit its namespace).
pub(crate) fn slice_id(slice: &EndpointSlice) -> (String, String) {
    (
        slice
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        slice.metadata.name.clone().unwrap_or_default(),
    )
}
