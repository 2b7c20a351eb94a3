//! The agent's LoadBalancer part: MetalLB's configuration validated and reported, the
//! announce decision kept current, and with the static source the allocation written
//! into the Services before anything else sees them.
//!
//! ```text
//!  MetalLB objects ─▶ validate ─▶ LbConfig ─┬─▶ AnnounceModel ◀── Services, slices, Nodes
//!  (watch channel)       │                  └─▶ StaticAllocator (static source only)
//!                        └─▶ problems: logged and evented once, objects left out
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::runtime::events::EventType;
use metallb_config::{
    ConfigProblem, LbConfig, MetalLbObjects, UnsupportedField, Validated, validate,
};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::LoadBalancerSettings;
use crate::lb::decision::AnnounceModel;
use crate::lb::ipam::allocate::{NamespaceLabels, namespace_labels};
use crate::lb::static_alloc::StaticAllocator;
use crate::model::ServiceKey;
use crate::observe::k8s_events::EventReporter;
use crate::source::SourceEvent;
use crate::source::cluster_nodes::NodesWatch;
use crate::source::metallb::MetalLbWatch;
use crate::source::static_dir::{ClusterObjects, ClusterWatch};

/// Where the LoadBalancer inputs come from.
pub(crate) enum LbInputs {
    /// The manifests directory (MetalLB objects, Nodes and Namespaces together).
    Static(ClusterWatch),
    /// The API server.
    Kubernetes {
        /// MetalLB's objects in their namespace.
        metallb: MetalLbWatch,
        /// Every Node.
        nodes: NodesWatch,
        /// Whether this agent is the cluster's IPAM leader (`None` without IPAM).
        leading: Option<watch::Receiver<bool>>,
    },
}

/// What the agent shares with the cluster when it has an API server: the validated
/// configuration for the IPAM controller, and Events on invalid MetalLB objects.
pub(crate) struct LbCluster {
    /// The IPAM controller's configuration input.
    pub(crate) config: watch::Sender<Arc<LbConfig>>,
    /// Publishes Events regarding MetalLB objects (only while leading the IPAM, so
    /// one agent in the cluster reports each problem, not every node).
    pub(crate) events: EventReporter,
}

/// One change of the LoadBalancer inputs.
pub(crate) enum LbChange {
    /// The manifests' cluster objects.
    Cluster(Arc<ClusterObjects>),
    /// MetalLB's objects.
    MetalLb(Arc<MetalLbObjects>),
    /// The Nodes.
    Nodes(Arc<BTreeMap<String, Node>>),
    /// This agent became (or stopped being) the IPAM leader.
    Leading(bool),
}

impl LbInputs {
    /// Waits for the next change; `None` once every input has closed.
    pub(crate) async fn next_change(&mut self) -> Option<LbChange> {
        loop {
            match self {
                LbInputs::Static(cluster) => {
                    cluster.changed().await.ok()?;
                    if let Some(objects) = cluster.borrow_and_update().clone() {
                        return Some(LbChange::Cluster(objects));
                    }
                }
                LbInputs::Kubernetes {
                    metallb,
                    nodes,
                    leading,
                } => {
                    tokio::select! {
                        changed = changed_or_pending(leading) => {
                            match changed {
                                Ok(now) => return Some(LbChange::Leading(now)),
                                // The IPAM controller ended: keep the other inputs.
                                Err(_) => *leading = None,
                            }
                        }
                        changed = metallb.changed() => {
                            changed.ok()?;
                            if let Some(objects) = metallb.borrow_and_update().clone() {
                                return Some(LbChange::MetalLb(objects));
                            }
                        }
                        changed = nodes.changed() => {
                            changed.ok()?;
                            if let Some(nodes) = nodes.borrow_and_update().clone() {
                                return Some(LbChange::Nodes(nodes));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The next value of an optional watch; pending forever without one.
async fn changed_or_pending(
    leading: &mut Option<watch::Receiver<bool>>,
) -> Result<bool, watch::error::RecvError> {
    match leading {
        Some(receiver) => {
            receiver.changed().await?;
            Ok(*receiver.borrow_and_update())
        }
        None => std::future::pending().await,
    }
}

/// The agent's LoadBalancer state.
pub(crate) struct LoadBalancers {
    /// The announce decision.
    pub(crate) announce: AnnounceModel,
    /// The allocation, with the static source.
    allocator: Option<StaticAllocator>,
    /// The last validation's problems (shown by `ipvs-proxy services`).
    pub(crate) problems: Vec<ConfigProblem>,
    /// Problems already logged, so each is logged once while it lasts.
    reported: BTreeSet<String>,
    /// Unsupported fields already warned about (once per object and field).
    warned: BTreeSet<UnsupportedField>,
    /// Where MetalLB's objects are read (a manifests directory may hold others).
    metallb_namespace: String,
    /// The IPAM configuration and the Events, with the Kubernetes source.
    cluster: Option<LbCluster>,
    /// Whether this agent leads the IPAM (and so reports invalid objects as Events).
    leading: bool,
    /// The problems already published as Events while leading.
    evented: BTreeSet<String>,
}

impl LoadBalancers {
    /// The state for `node`; `static_source` turns the local allocation on.
    pub(crate) fn new(
        settings: &LoadBalancerSettings,
        node: &str,
        static_source: bool,
        cluster: Option<LbCluster>,
    ) -> Self {
        let class = settings.load_balancer_class.clone();
        LoadBalancers {
            announce: AnnounceModel::new(node, class.clone()),
            allocator: static_source.then(|| StaticAllocator::new(class)),
            problems: Vec::new(),
            reported: BTreeSet::new(),
            warned: BTreeSet::new(),
            metallb_namespace: settings.metallb_namespace.clone(),
            cluster,
            leading: false,
            evented: BTreeSet::new(),
        }
    }

    /// Passes a source event through the allocation (static source) and into the
    /// announce decision; returns the events the proxy model should see (the same
    /// one, with addresses written in, plus Services whose addresses moved).
    pub(crate) fn route(&mut self, event: SourceEvent) -> Vec<SourceEvent> {
        let events = match &mut self.allocator {
            Some(allocator) => allocator.on_event(event),
            None => vec![event],
        };
        for event in &events {
            self.observe(event);
        }
        events
    }

    fn observe(&mut self, event: &SourceEvent) {
        let announce = &mut self.announce;
        match event {
            SourceEvent::Snapshot { services, slices } => announce.replace_all(services, slices),
            SourceEvent::Early { services, slices } => {
                for slice in slices {
                    announce.apply_slice(slice);
                }
                for service in services {
                    announce.apply_service(service);
                }
            }
            SourceEvent::ServicesRelisted(services) => announce.replace_services(services),
            SourceEvent::SlicesRelisted(slices) => announce.replace_slices(slices),
            SourceEvent::ServiceApplied(service) => announce.apply_service(service),
            SourceEvent::ServiceDeleted(key) => announce.delete_service(key),
            SourceEvent::SliceApplied(slice) => announce.apply_slice(slice),
            SourceEvent::SliceDeleted { namespace, name } => announce.delete_slice(namespace, name),
        }
    }

    /// Applies a change of the inputs; returns the Service events the allocation
    /// produced (static source), for the proxy model.
    pub(crate) fn apply(&mut self, change: LbChange) -> Vec<SourceEvent> {
        match change {
            LbChange::Cluster(objects) => {
                let nodes: Vec<Node> = objects.nodes.clone();
                self.announce.set_nodes(&nodes);
                let namespaces = namespace_labels(&objects.namespaces);
                // Read as the Kubernetes source reads them: in one namespace only.
                let mut ignored = Vec::new();
                let metallb = objects
                    .metallb
                    .in_namespace(&self.metallb_namespace, &mut ignored);
                for message in ignored {
                    warn!("{message}");
                }
                self.set_objects(&metallb, namespaces)
            }
            LbChange::MetalLb(objects) => self.set_objects(&objects, NamespaceLabels::new()),
            LbChange::Nodes(nodes) => {
                let nodes: Vec<Node> = nodes.values().cloned().collect();
                self.announce.set_nodes(&nodes);
                Vec::new()
            }
            LbChange::Leading(leading) => {
                if leading != self.leading {
                    info!(leading, "LoadBalancer IPAM leadership");
                }
                self.leading = leading;
                // A new leader reports what is wrong now; the old one's Events stay.
                self.evented.clear();
                self.publish_problems();
                Vec::new()
            }
        }
    }

    fn set_objects(
        &mut self,
        objects: &MetalLbObjects,
        namespaces: NamespaceLabels,
    ) -> Vec<SourceEvent> {
        let Validated {
            config,
            problems,
            unsupported,
        } = validate(objects);
        self.report(&problems);
        for field in unsupported {
            if !self.warned.contains(&field) {
                warn!(
                    "{} {}: {} is accepted but not acted on yet (see the README's MetalLB \
                     compatibility table)",
                    field.kind, field.object, field.field
                );
                self.warned.insert(field);
            }
        }
        info!(
            pools = config.pools.len(),
            l2_advertisements = config.l2_advertisements.len(),
            bgp_advertisements = config.bgp_advertisements.len(),
            peers = config.peers.len(),
            invalid = problems.len(),
            "MetalLB configuration loaded"
        );
        self.problems = problems;
        self.publish_problems();
        if let Some(cluster) = &self.cluster {
            cluster.config.send_replace(Arc::new(config.clone()));
        }
        self.announce.set_config(config.clone());
        match &mut self.allocator {
            Some(allocator) => {
                let events = allocator.set_config(config, namespaces);
                for event in &events {
                    self.observe(event);
                }
                events
            }
            None => Vec::new(),
        }
    }

    /// While leading the IPAM: one `Warning` Event (`InvalidConfiguration`) per new
    /// problem, regarding the MetalLB object at fault.
    fn publish_problems(&mut self) {
        let Some(cluster) = self.cluster.as_ref().filter(|_| self.leading) else {
            return;
        };
        let mut current = BTreeSet::new();
        for problem in &self.problems {
            let text = problem.to_string();
            if !self.evented.contains(&text) {
                let regarding = problem_reference(problem, &self.metallb_namespace);
                // The reporter keys its log lines by a Service-like key: the object's.
                let key = ServiceKey::new(problem.namespace.clone(), problem.name.clone());
                cluster.events.publish(
                    &key,
                    Some(regarding),
                    EventType::Warning,
                    "InvalidConfiguration",
                    "ValidateMetalLBConfiguration",
                    &text,
                );
            }
            current.insert(text);
        }
        self.evented = current;
    }

    /// Logs each problem once while it lasts.
    fn report(&mut self, problems: &[ConfigProblem]) {
        let current: BTreeSet<String> = problems.iter().map(ToString::to_string).collect();
        for problem in &current {
            if !self.reported.contains(problem) {
                warn!("MetalLB object left out: {problem}");
            }
        }
        for fixed in self.reported.difference(&current) {
            info!("MetalLB problem gone: {fixed}");
        }
        self.reported = current;
    }
}

/// The object a problem is about, for its Event (`kubectl describe` finds it).
fn problem_reference(problem: &ConfigProblem, metallb_namespace: &str) -> ObjectReference {
    let (api_version, kind, name) = if problem.namespace.is_empty() {
        // A part of the legacy ConfigMap: the Event goes on the ConfigMap itself.
        ("v1", "ConfigMap", "config")
    } else if problem.kind == "BGPPeer" {
        (
            "metallb.io/v1beta2",
            problem.kind.as_str(),
            problem.name.as_str(),
        )
    } else {
        (
            "metallb.io/v1beta1",
            problem.kind.as_str(),
            problem.name.as_str(),
        )
    };
    let namespace = if problem.namespace.is_empty() {
        metallb_namespace
    } else {
        problem.namespace.as_str()
    };
    ObjectReference {
        api_version: Some(api_version.to_string()),
        kind: Some(kind.to_string()),
        namespace: Some(namespace.to_string()),
        name: Some(name.to_string()),
        ..ObjectReference::default()
    }
}
