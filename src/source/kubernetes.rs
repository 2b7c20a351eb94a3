//! Services, EndpointSlices and this Node from the Kubernetes API, through kube-rs
//! watchers: an initial list, then a watch from its resourceVersion, resumed from the
//! last event or bookmark after a disconnect, and relisted after `410 Gone`. Errors
//! are retried with kube-runtime's default backoff; the last good state stays in force
//! meanwhile.
//!
//! Before the full lists are in, the API server's own Service (`default/kubernetes`)
//! and its EndpointSlices are listed on their own and sent as [`SourceEvent::Early`]:
//! on a new node everything else needs the API server, and listing thousands of
//! Services takes seconds. It uses the `list` verb (with a field selector) so the
//! permissions kube-proxy's `system:node-proxier` role grants are enough.
//!
//! The source keeps no copy of the objects: the first lists are moved into the
//! snapshot, and a relist sends that resource's complete list
//! ([`SourceEvent::ServicesRelisted`], [`SourceEvent::SlicesRelisted`]), which the
//! model compares with what it holds. A full copy of every object would otherwise be
//! the agent's largest use of memory.
//!
//! Like kube-proxy, Services labelled `service.kubernetes.io/service-proxy-name` and
//! headless Services and EndpointSlices are filtered out by the API server (label
//! selectors), so they never reach the node.

use std::path::PathBuf;

use futures_util::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{SourceError, SourceEvent};
use crate::model::ServiceKey;

/// The Service label selector kube-proxy uses.
pub const SERVICE_SELECTOR: &str =
    "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";
/// The EndpointSlice label selector kube-proxy uses.
pub const SLICE_SELECTOR: &str = "!service.kubernetes.io/headless";
/// Where the API server's own Service lives: `default/kubernetes`.
pub const API_SERVER_SERVICE: (&str, &str) = ("default", "kubernetes");
/// How long the early read of the API server's Service may take before the agent
/// stops waiting for it and relies on the full lists alone.
const EARLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A client from a kubeconfig file, or the in-cluster configuration (service account)
/// when `kubeconfig` is `None` (falling back to `$KUBECONFIG`/`~/.kube/config`).
pub async fn client(kubeconfig: Option<PathBuf>) -> Result<Client, SourceError> {
    let (what, config) = match kubeconfig {
        Some(path) => {
            let what = format!("kubeconfig {}", path.display());
            let file = kube::config::Kubeconfig::read_from(&path).map_err(|error| {
                SourceError::Client {
                    what: what.clone(),
                    message: error.to_string(),
                }
            })?;
            let config = kube::Config::from_custom_kubeconfig(
                file,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .map_err(|error| SourceError::Client {
                what: what.clone(),
                message: error.to_string(),
            })?;
            (what, config)
        }
        None => {
            let what = "in-cluster service account or default kubeconfig".to_string();
            let config = kube::Config::infer()
                .await
                .map_err(|error| SourceError::Client {
                    what: what.clone(),
                    message: error.to_string(),
                })?;
            (what, config)
        }
    };
    let server = config.cluster_url.to_string();
    let started = std::time::Instant::now();
    let client = Client::try_from(config).map_err(|error| SourceError::Client {
        what,
        message: error.to_string(),
    })?;
    // Building the client loads the trust store, which without a CA in the
    // configuration means every root certificate of the host: worth a figure.
    info!(
        %server,
        ms = started.elapsed().as_millis() as u64,
        "Kubernetes API client ready"
    );
    Ok(client)
}

/// Connects (see [`client`]) and watches Services and EndpointSlices, sending events
/// until the receiver is dropped. `node` is this node's name, logged for context; use
/// [`super::node::spawn_node_watch`] for the Node object itself.
pub async fn spawn_kubernetes(
    kubeconfig: Option<PathBuf>,
    node: String,
    events: mpsc::Sender<SourceEvent>,
) -> Result<JoinHandle<()>, SourceError> {
    let client = client(kubeconfig).await?;
    debug!(node = %node, "watching Services and EndpointSlices");
    Ok(spawn_with_client(client, events))
}

/// Like [`spawn_kubernetes`], and also watches this node's Node object (see
/// [`super::node::spawn_node_watch`]); the receiver holds the latest Node, for
/// [`crate::model::NodeInfo::from_node`] and [`crate::model::Model::set_node`].
pub async fn spawn_kubernetes_with_node(
    kubeconfig: Option<PathBuf>,
    node: String,
    events: mpsc::Sender<SourceEvent>,
) -> Result<
    (
        JoinHandle<()>,
        JoinHandle<()>,
        watch::Receiver<Option<Node>>,
    ),
    SourceError,
> {
    let client = client(kubeconfig).await?;
    let (node_tx, node_rx) = watch::channel(None);
    let node_task = super::node::spawn_node_watch(client.clone(), node, node_tx);
    Ok((spawn_with_client(client, events), node_task, node_rx))
}

// Short-lived: each update is consumed as soon as it is produced.
#[allow(clippy::large_enum_variant)]
enum Update {
    Service(Event<Service>),
    Slice(Event<EndpointSlice>),
}

type ObjectId = (String, String);

fn object_id<K: Resource>(object: &K) -> ObjectId {
    (
        object.namespace().unwrap_or_else(|| "default".into()),
        object.name_any(),
    )
}

/// One resource's list being collected. Objects are not kept once sent: the model
/// holds what it needs of them, and a full copy of every object would be the agent's
/// largest memory use.
struct Lister<K> {
    listing: Option<Vec<K>>,
}

impl<K: Resource> Lister<K> {
    fn new() -> Self {
        Self { listing: None }
    }

    /// Takes a watcher event; returns the incremental change, or the complete list
    /// when one finished.
    fn apply(&mut self, event: Event<K>) -> ListerStep<K> {
        match event {
            Event::Init => {
                self.listing = Some(Vec::new());
                ListerStep::Pending
            }
            Event::InitApply(object) => {
                self.listing.get_or_insert_with(Vec::new).push(object);
                ListerStep::Pending
            }
            Event::InitDone => ListerStep::Listed(self.listing.take().unwrap_or_default()),
            Event::Apply(object) => ListerStep::Applied(object),
            Event::Delete(object) => ListerStep::Deleted(object_id(&object)),
        }
    }
}

/// What one watcher event means once the lister has seen it.
enum ListerStep<K> {
    /// Nothing to pass on yet (a list is being gathered).
    Pending,
    Listed(Vec<K>),
    Applied(K),
    Deleted(ObjectId),
}

/// Lists the API server's own Service and its EndpointSlices (see the module
/// documentation); `None` when the cluster has no such Service.
pub async fn list_api_server_service(
    client: Client,
) -> Result<Option<(Vec<Service>, Vec<EndpointSlice>)>, kube::Error> {
    let (namespace, name) = API_SERVER_SERVICE;
    let service_api = Api::<Service>::namespaced(client.clone(), namespace);
    let slice_api = Api::<EndpointSlice>::namespaced(client, namespace);
    let service_params = ListParams::default()
        .fields(&format!("metadata.name={name}"))
        .labels(SERVICE_SELECTOR);
    let slice_params = ListParams::default().labels(&format!(
        "{}={name},{SLICE_SELECTOR}",
        crate::model::SERVICE_NAME_LABEL
    ));
    let services = service_api.list(&service_params);
    let slices = slice_api.list(&slice_params);
    let (services, slices) = futures_util::try_join!(services, slices)?;
    if services.items.is_empty() {
        return Ok(None);
    }
    Ok(Some((services.items, slices.items)))
}

/// The [`SourceEvent::Early`] to send, if the API server's Service can be read in time.
async fn early_event(client: Client) -> Option<SourceEvent> {
    let (namespace, name) = API_SERVER_SERVICE;
    match tokio::time::timeout(EARLY_TIMEOUT, list_api_server_service(client)).await {
        Ok(Ok(Some((services, slices)))) => {
            info!(
                slices = slices.len(),
                "the API server's Service {namespace}/{name} read ahead of the full lists"
            );
            Some(SourceEvent::Early { services, slices })
        }
        Ok(Ok(None)) => {
            info!("no Service {namespace}/{name}: nothing to program ahead of the full lists");
            None
        }
        Ok(Err(error)) => {
            warn!(
                "cannot read the API server's Service {namespace}/{name} ahead of the full \
                 lists ({error}); it will be programmed with the rest"
            );
            None
        }
        Err(_) => {
            warn!(
                "reading the API server's Service {namespace}/{name} took over {} s; it \
                 will be programmed with the rest",
                EARLY_TIMEOUT.as_secs()
            );
            None
        }
    }
}

/// Watches Services and EndpointSlices with an existing client. Meanwhile the API
/// server's Service is read on its own and sent first as [`SourceEvent::Early`],
/// unless the full lists complete before it. Then a snapshot is sent once both lists
/// are complete; a relist of either sends that resource's complete list
/// ([`SourceEvent::ServicesRelisted`], [`SourceEvent::SlicesRelisted`]); everything
/// else is sent as it happens.
pub fn spawn_with_client(client: Client, events: mpsc::Sender<SourceEvent>) -> JoinHandle<()> {
    let early = early_event(client.clone());
    let services = watcher::watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default().labels(SERVICE_SELECTOR),
    )
    .default_backoff()
    .map(|event| {
        event
            .map(Update::Service)
            .map_err(|error| ("Services", error))
    });
    let slices = watcher::watcher(
        Api::<EndpointSlice>::all(client),
        watcher::Config::default().labels(SLICE_SELECTOR),
    )
    .default_backoff()
    .map(|event| {
        event
            .map(Update::Slice)
            .map_err(|error| ("EndpointSlices", error))
    });

    tokio::spawn(async move {
        let mut updates = std::pin::pin!(stream::select(services, slices));
        let mut service_lister = Lister::<Service>::new();
        let mut slice_lister = Lister::<EndpointSlice>::new();
        // Each resource's first complete list, kept (and patched by the changes that
        // follow it) until the other's is complete too and the snapshot goes out.
        let mut first_services: Option<Vec<Service>> = None;
        let mut first_slices: Option<Vec<EndpointSlice>> = None;
        let mut snapshot_sent = false;
        let mut early = std::pin::pin!(early);
        let mut early_pending = true;
        loop {
            let update = tokio::select! {
                // The early read is a single small list; when it is ready it goes first.
                biased;
                event = &mut early, if early_pending => {
                    early_pending = false;
                    if let Some(event) = event.filter(|_| !snapshot_sent)
                        && events.send(event).await.is_err()
                    {
                        return;
                    }
                    continue;
                }
                update = updates.next() => match update {
                    Some(update) => update,
                    None => return,
                },
            };
            let update = match update {
                Ok(update) => update,
                Err((resource, error)) => {
                    warn!(
                        "watching {resource} failed, retrying with backoff: {error}; if this \
                         persists, check the API server address and that this service account \
                         may list and watch {resource}"
                    );
                    continue;
                }
            };
            let outgoing = match update {
                Update::Service(event) => route(
                    service_lister.apply(event),
                    &mut first_services,
                    snapshot_sent,
                    &SERVICE_EVENTS,
                ),
                Update::Slice(event) => route(
                    slice_lister.apply(event),
                    &mut first_slices,
                    snapshot_sent,
                    &SLICE_EVENTS,
                ),
            };
            let outgoing = if !snapshot_sent && first_services.is_some() && first_slices.is_some() {
                let services = first_services.take().unwrap_or_default();
                let slices = first_slices.take().unwrap_or_default();
                info!(
                    services = services.len(),
                    slices = slices.len(),
                    "Services and EndpointSlices listed"
                );
                snapshot_sent = true;
                Some(SourceEvent::Snapshot { services, slices })
            } else {
                outgoing
            };
            if let Some(event) = outgoing
                && events.send(event).await.is_err()
            {
                return;
            }
        }
    })
}

/// How one resource's changes become [`SourceEvent`]s.
struct ResourceEvents<K> {
    what: &'static str,
    relisted: fn(Vec<K>) -> SourceEvent,
    applied: fn(K) -> SourceEvent,
    deleted: fn(ObjectId) -> SourceEvent,
}

const SERVICE_EVENTS: ResourceEvents<Service> = ResourceEvents {
    what: "Services",
    relisted: SourceEvent::ServicesRelisted,
    applied: SourceEvent::ServiceApplied,
    deleted: |(namespace, name)| SourceEvent::ServiceDeleted(ServiceKey::new(namespace, name)),
};

const SLICE_EVENTS: ResourceEvents<EndpointSlice> = ResourceEvents {
    what: "EndpointSlices",
    relisted: SourceEvent::SlicesRelisted,
    applied: SourceEvent::SliceApplied,
    deleted: |(namespace, name)| SourceEvent::SliceDeleted { namespace, name },
};

/// One resource's change: an event once the snapshot is out; before it, the change
/// goes into the resource's first list (`first`) instead.
fn route<K: Resource>(
    change: ListerStep<K>,
    first: &mut Option<Vec<K>>,
    snapshot_sent: bool,
    events: &ResourceEvents<K>,
) -> Option<SourceEvent> {
    if snapshot_sent {
        return match change {
            ListerStep::Pending => None,
            ListerStep::Listed(objects) => {
                info!(count = objects.len(), "{} listed again", events.what);
                Some((events.relisted)(objects))
            }
            ListerStep::Applied(object) => Some((events.applied)(object)),
            ListerStep::Deleted(id) => Some((events.deleted)(id)),
        };
    }
    match change {
        ListerStep::Pending => {}
        ListerStep::Listed(objects) => *first = Some(objects),
        ListerStep::Applied(object) => {
            if let Some(objects) = first {
                let id = object_id(&object);
                match objects.iter_mut().find(|known| object_id(*known) == id) {
                    Some(known) => *known = object,
                    None => objects.push(object),
                }
            }
        }
        ListerStep::Deleted(id) => {
            if let Some(objects) = first {
                objects.retain(|known| object_id(known) != id);
            }
        }
    }
    None
}
