//! This node's Node object: its zone label (topology hints), primary addresses
//! (`nodePortAddresses: [primary]`) and pod CIDRs, watched by name.

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

/// Watches this node's Node object (for its zone label and primary addresses),
/// publishing the latest version; `None` until it is seen or after it is deleted.
pub fn spawn_node_watch(
    client: Client,
    name: String,
    node: watch::Sender<Option<Node>>,
) -> JoinHandle<()> {
    let nodes = watcher::watcher(
        Api::<Node>::all(client),
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .default_backoff();
    tokio::spawn(async move {
        let mut nodes = std::pin::pin!(nodes);
        let mut listed: Option<Node> = None;
        while let Some(event) = nodes.next().await {
            match event {
                Ok(Event::Init) => listed = None,
                Ok(Event::InitApply(object)) => listed = Some(object),
                Ok(Event::InitDone) => {
                    if listed.is_none() {
                        warn!(node = %name, "this node's Node object does not exist");
                    }
                    node.send_replace(listed.take());
                }
                Ok(Event::Apply(object)) => {
                    node.send_replace(Some(object));
                }
                Ok(Event::Delete(_)) => {
                    node.send_replace(None);
                }
                Err(error) => warn!(
                    node = %name,
                    "watching this Node failed, retrying with backoff: {error}; if this \
                     persists, check that this service account may list and watch nodes"
                ),
            }
            if node.is_closed() {
                return;
            }
        }
    })
}
