//! Every Node of the cluster, for the announce decision (which nodes may announce a
//! LoadBalancer IP, and the layer-2 owner among them). Nodes carry large fields the
//! decision never reads (the image list, managed fields, annotations, heartbeat
//! times); they are dropped on arrival so thousands of Nodes stay small and a
//! heartbeat is not a change.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

/// The cluster's Nodes by name, slimmed ([`slim_node`]); `None` until first listed.
pub type NodesWatch = watch::Receiver<Option<Arc<BTreeMap<String, Node>>>>;

/// Keeps what the announce decision reads of a Node: name, labels, conditions and
/// addresses.
pub fn slim_node(mut node: Node) -> Node {
    node.metadata.managed_fields = None;
    node.metadata.annotations = None;
    if let Some(status) = node.status.as_mut() {
        status.images = None;
        status.volumes_attached = None;
        status.volumes_in_use = None;
        status.node_info = None;
        status.capacity = None;
        status.allocatable = None;
        status.config = None;
        status.features = None;
        status.runtime_handlers = None;
        status.declared_features = None;
        // Kubelets renew their conditions' heartbeat every few seconds: without the
        // timestamps, only a real change (Ready, NetworkUnavailable) is a change.
        for condition in status.conditions.iter_mut().flatten() {
            condition.last_heartbeat_time = None;
            condition.last_transition_time = None;
            condition.message = None;
            condition.reason = None;
        }
    }
    node
}

/// Watches every Node, publishing the whole slimmed set after each change.
pub fn spawn_nodes_watch(client: Client) -> (NodesWatch, JoinHandle<()>) {
    let (publish, receiver) = watch::channel(None);
    let stream =
        watcher::watcher(Api::<Node>::all(client), watcher::Config::default()).default_backoff();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
        let mut listing: BTreeMap<String, Node> = BTreeMap::new();
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Init) => listing.clear(),
                Ok(Event::InitApply(node)) => {
                    let node = slim_node(node);
                    listing.insert(node.metadata.name.clone().unwrap_or_default(), node);
                }
                Ok(Event::InitDone) => {
                    nodes = std::mem::take(&mut listing);
                    publish.send_replace(Some(Arc::new(nodes.clone())));
                }
                Ok(Event::Apply(node)) => {
                    let node = slim_node(node);
                    let name = node.metadata.name.clone().unwrap_or_default();
                    if nodes.get(&name) != Some(&node) {
                        nodes.insert(name, node);
                        publish.send_replace(Some(Arc::new(nodes.clone())));
                    }
                }
                Ok(Event::Delete(node)) => {
                    if nodes
                        .remove(node.metadata.name.as_deref().unwrap_or_default())
                        .is_some()
                    {
                        publish.send_replace(Some(Arc::new(nodes.clone())));
                    }
                }
                Err(error) => warn!(
                    "watching Nodes failed, retrying with backoff: {error}; allow this service \
                     account to list and watch nodes"
                ),
            }
            if publish.is_closed() {
                return;
            }
        }
    });
    (receiver, task)
}
