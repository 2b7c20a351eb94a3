//! MetalLB's objects from the Kubernetes API: the `metallb.io` custom resources and
//! the legacy `config` ConfigMap in MetalLB's namespace, watched with kube-rs
//! watchers and published whole on a `watch` channel after every change. They are
//! few (tens of objects), so each change simply publishes a new
//! [`MetalLbObjects`]; validation happens downstream.
//!
//! MetalLB's CRDs may be missing (a cluster without MetalLB, or before they are
//! applied): that kind is then empty, a warning says so once, and the watcher keeps
//! retrying so the objects appear when the CRDs do.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use metallb_config::MetalLbObjects;
use metallb_config::crd::{
    BFDProfile, BGPAdvertisement, BGPPeer, Community, IPAddressPool, L2Advertisement,
};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// How long the first publication waits for every kind's first list before it goes
/// out without the kinds still missing (their CRD is probably not installed).
const FIRST_LIST_WAIT: Duration = Duration::from_secs(10);

/// The latest MetalLB objects; `None` until every kind was listed once (or
/// [`FIRST_LIST_WAIT`] passed).
pub type MetalLbWatch = watch::Receiver<Option<Arc<MetalLbObjects>>>;

/// One kind's complete current list, from its watcher.
enum KindUpdate {
    Pools(Vec<IPAddressPool>),
    L2(Vec<L2Advertisement>),
    Bgp(Vec<BGPAdvertisement>),
    Peers(Vec<BGPPeer>),
    Bfd(Vec<BFDProfile>),
    Communities(Vec<Community>),
    Legacy(Vec<ConfigMap>),
}

const KINDS: usize = 7;

/// Watches MetalLB's objects in `namespace`.
pub fn spawn_metallb_watch(client: Client, namespace: &str) -> (MetalLbWatch, JoinHandle<()>) {
    let (updates_tx, mut updates) = mpsc::channel::<(usize, KindUpdate)>(64);
    let mut tasks = vec![
        watch_kind::<IPAddressPool>(&client, namespace, None, 0, KindUpdate::Pools, &updates_tx),
        watch_kind::<L2Advertisement>(&client, namespace, None, 1, KindUpdate::L2, &updates_tx),
        watch_kind::<BGPAdvertisement>(&client, namespace, None, 2, KindUpdate::Bgp, &updates_tx),
        watch_kind::<BGPPeer>(&client, namespace, None, 3, KindUpdate::Peers, &updates_tx),
        watch_kind::<BFDProfile>(&client, namespace, None, 4, KindUpdate::Bfd, &updates_tx),
        watch_kind::<Community>(
            &client,
            namespace,
            None,
            5,
            KindUpdate::Communities,
            &updates_tx,
        ),
        watch_kind::<ConfigMap>(
            &client,
            namespace,
            Some("metadata.name=config"),
            6,
            KindUpdate::Legacy,
            &updates_tx,
        ),
    ];
    drop(updates_tx);
    let (publish, receiver) = watch::channel(None);
    let namespace = namespace.to_string();
    let merger = tokio::spawn(async move {
        let mut objects = MetalLbObjects::default();
        let mut listed = [false; KINDS];
        let deadline = tokio::time::sleep(FIRST_LIST_WAIT);
        let mut deadline = std::pin::pin!(deadline);
        let mut published = false;
        loop {
            tokio::select! {
                update = updates.recv() => {
                    let Some((index, update)) = update else { break };
                    listed[index] = true;
                    apply(&mut objects, update, &namespace);
                    // Coalesce a burst (the first lists arrive together).
                    while let Ok((index, update)) = updates.try_recv() {
                        listed[index] = true;
                        apply(&mut objects, update, &namespace);
                    }
                }
                _ = &mut deadline, if !published => {
                    warn!(
                        namespace = %namespace,
                        "not every MetalLB kind could be listed within {FIRST_LIST_WAIT:?} \
                         (are MetalLB's CRDs installed?); going on with what was read"
                    );
                    published = true;
                    publish.send_replace(Some(Arc::new(objects.clone())));
                    continue;
                }
            }
            if published || listed.iter().all(|done| *done) {
                if !published {
                    info!(namespace = %namespace, "MetalLB objects listed");
                }
                published = true;
                publish.send_replace(Some(Arc::new(objects.clone())));
            }
            if publish.is_closed() {
                break;
            }
        }
        for task in tasks.drain(..) {
            task.abort();
        }
    });
    (receiver, merger)
}

fn apply(objects: &mut MetalLbObjects, update: KindUpdate, namespace: &str) {
    match update {
        KindUpdate::Pools(list) => objects.pools = list,
        KindUpdate::L2(list) => objects.l2_advertisements = list,
        KindUpdate::Bgp(list) => objects.bgp_advertisements = list,
        KindUpdate::Peers(list) => objects.peers = list,
        KindUpdate::Bfd(list) => objects.bfd_profiles = list,
        KindUpdate::Communities(list) => objects.communities = list,
        KindUpdate::Legacy(list) => {
            objects.legacy = None;
            for config_map in list {
                if let Ok(value) = serde_json::to_value(&config_map) {
                    // Keeps it only when it is the legacy configuration (`config` key).
                    let _ = objects.add_document(&value, namespace);
                }
            }
        }
    }
}

/// Watches one kind, sending its whole list after the first list and every change.
fn watch_kind<K>(
    client: &Client,
    namespace: &str,
    fields: Option<&str>,
    index: usize,
    wrap: fn(Vec<K>) -> KindUpdate,
    updates: &mpsc::Sender<(usize, KindUpdate)>,
) -> JoinHandle<()>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default,
{
    let api = Api::<K>::namespaced(client.clone(), namespace);
    let mut config = watcher::Config::default();
    if let Some(fields) = fields {
        config = config.fields(fields);
    }
    let stream = watcher::watcher(api, config).default_backoff();
    let updates = updates.clone();
    let kind = K::kind(&K::DynamicType::default()).to_string();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut current: std::collections::BTreeMap<String, K> = Default::default();
        let mut listing: Vec<K> = Vec::new();
        let mut warned = false;
        while let Some(event) = stream.next().await {
            let changed = match event {
                Ok(Event::Init) => {
                    listing.clear();
                    false
                }
                Ok(Event::InitApply(object)) => {
                    listing.push(object);
                    false
                }
                Ok(Event::InitDone) => {
                    current = listing
                        .drain(..)
                        .map(|object| (object.meta().name.clone().unwrap_or_default(), object))
                        .collect();
                    true
                }
                Ok(Event::Apply(object)) => {
                    current.insert(object.meta().name.clone().unwrap_or_default(), object);
                    true
                }
                Ok(Event::Delete(object)) => {
                    current.remove(object.meta().name.as_deref().unwrap_or_default());
                    true
                }
                Err(error) => {
                    if !warned {
                        warn!(
                            kind = %kind,
                            "cannot watch MetalLB's {kind} objects, retrying with backoff: \
                             {error}; install MetalLB's CRDs and allow this service account \
                             to list and watch them"
                        );
                        warned = true;
                    } else {
                        debug!(kind = %kind, "watch still failing: {error}");
                    }
                    false
                }
            };
            if changed {
                warned = false;
                let list = current.values().cloned().collect();
                if updates.send((index, wrap(list))).await.is_err() {
                    return;
                }
            }
        }
    })
}
