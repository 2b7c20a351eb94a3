//! The Kubernetes source against an in-process API server speaking the real list/watch
//! protocol over HTTP: an initial list with a resourceVersion, a watch stream of
//! ADDED/MODIFIED/DELETED events, a BOOKMARK, a disconnect (resumed from the bookmark),
//! an in-stream `410 Gone` (relist), with Service/EndpointSlice JSON as the API server
//! returns it.

use testkit as support;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Duration;

use ipvs_proxy::config::Config;
use ipvs_proxy::model::{Model, NodeInfo, Protocol, ServiceKey, VirtualServerKey};
use ipvs_proxy::source::SourceEvent;
use ipvs_proxy::source::kubernetes::spawn_with_client;
use ipvs_proxy::source::node::spawn_node_watch;
use serde_json::json;
use support::apiserver::*;
use tokio::sync::{mpsc, watch};

async fn next(events: &mut mpsc::Receiver<SourceEvent>) -> SourceEvent {
    tokio::time::timeout(Duration::from_secs(20), events.recv())
        .await
        .expect("no event within 20 s")
        .expect("source ended")
}

fn names<K: kube::Resource>(objects: &[K]) -> Vec<String> {
    use kube::ResourceExt;
    objects.iter().map(|o| o.name_any()).collect()
}

#[tokio::test]
async fn list_watch_bookmark_disconnect_and_gone() {
    let web = fixture("svc-web.json");
    let mut web_changed = with_version(web.clone(), "102");
    web_changed["spec"]["sessionAffinity"] = json!("ClientIP");
    let cache = with_version(fixture("svc-cache-affinity-itp-local.json"), "101");
    let dns = with_version(fixture("svc-dns-dualstack.json"), "150");
    let slice = with_version(fixture("eps-web.json"), "95");

    let mut api = ApiServer::default();
    api.resources.insert(
        SERVICES,
        Resource {
            lists: VecDeque::from([
                list(
                    "ServiceList",
                    "v1",
                    "100",
                    vec![with_version(web.clone(), "90")],
                ),
                // After the 410: cache was deleted and dns added while we were away.
                list(
                    "ServiceList",
                    "v1",
                    "200",
                    vec![web_changed.clone(), dns.clone()],
                ),
            ]),
            watches: VecDeque::from([
                WatchScript {
                    delay: Duration::from_millis(300),
                    events: vec![
                        event("ADDED", cache.clone()),
                        event("MODIFIED", web_changed.clone()),
                        bookmark("Service", "v1", "105"),
                    ],
                    close: true,
                },
                WatchScript {
                    delay: Duration::ZERO,
                    events: vec![gone("105")],
                    close: false,
                },
                WatchScript {
                    delay: Duration::from_millis(100),
                    events: vec![event("DELETED", with_version(web_changed.clone(), "201"))],
                    close: false,
                },
            ]),
            ..Resource::default()
        },
    );
    api.resources.insert(
        SLICES,
        Resource {
            lists: VecDeque::from([list(
                "EndpointSliceList",
                "discovery.k8s.io/v1",
                "100",
                vec![slice.clone()],
            )]),
            watches: VecDeque::from([WatchScript {
                delay: Duration::from_secs(5),
                events: vec![event("DELETED", with_version(slice.clone(), "300"))],
                close: false,
            }]),
            ..Resource::default()
        },
    );
    let (addr, server) = serve(api).await;
    let (tx, mut events) = mpsc::channel(64);
    let task = spawn_with_client(client(addr), tx);

    let mut model = Model::new(
        Config::default(),
        NodeInfo {
            name: "node-a".into(),
            ..NodeInfo::default()
        },
    );
    let apply = |model: &mut Model, event: &SourceEvent| match event.clone() {
        SourceEvent::Snapshot { services, slices } => model.replace_all(services, slices),
        SourceEvent::Early { services, slices } => model.apply_early(services, slices),
        SourceEvent::ServicesRelisted(services) => model.replace_services(services),
        SourceEvent::SlicesRelisted(slices) => model.replace_slices(slices),
        SourceEvent::ServiceApplied(service) => model.apply_service(service),
        SourceEvent::ServiceDeleted(key) => model.remove_service(&key),
        SourceEvent::SliceApplied(slice) => model.apply_slice(slice),
        SourceEvent::SliceDeleted { namespace, name } => model.remove_slice(&namespace, &name),
    };

    // 1. Both lists complete: one snapshot.
    let first = next(&mut events).await;
    let SourceEvent::Snapshot { services, slices } = &first else {
        panic!("expected a snapshot first, got {first:?}");
    };
    assert_eq!(names(services), vec!["web"]);
    assert_eq!(names(slices), vec!["web-7xk2p"]);
    apply(&mut model, &first);
    let http = VirtualServerKey {
        addr: "10.96.12.34".parse::<IpAddr>().unwrap(),
        port: 80,
        protocol: Protocol::Tcp,
    };
    assert_eq!(model.desired().virtual_servers[&http].real_servers.len(), 2);

    // 2. Watch events as they come.
    let added = next(&mut events).await;
    assert!(
        matches!(&added, SourceEvent::ServiceApplied(s) if s.metadata.name.as_deref() == Some("cache"))
    );
    apply(&mut model, &added);
    let modified = next(&mut events).await;
    let SourceEvent::ServiceApplied(service) = &modified else {
        panic!("expected the modified web, got {modified:?}");
    };
    assert_eq!(
        service.spec.as_ref().unwrap().session_affinity.as_deref(),
        Some("ClientIP")
    );
    apply(&mut model, &modified);
    assert_eq!(
        model.desired().virtual_servers[&http].persistence_timeout,
        Some(10800)
    );

    // 3. Disconnect, resume from the bookmark, 410 Gone: the Services relisted (alone:
    // the slices' watch is fine), in which the Service deleted meanwhile is gone.
    let relisted = next(&mut events).await;
    let SourceEvent::ServicesRelisted(services) = &relisted else {
        panic!("expected the Services relisted after 410, got {relisted:?}");
    };
    assert_eq!(names(services), vec!["web", "kube-dns"]);
    model.take_touched();
    apply(&mut model, &relisted);
    let touched = model.take_touched();
    assert!(
        !touched.all && touched.services == 2,
        "the relist touches the deleted and the added Service only: {touched:?}"
    );
    assert_eq!(
        model.desired().virtual_servers[&http].real_servers.len(),
        2,
        "the slices stay"
    );
    assert!(
        model
            .outcome(&ServiceKey::new("default", "cache"))
            .is_none()
    );

    // 4. Deletions from the new watch.
    let deleted = next(&mut events).await;
    assert_eq!(
        deleted,
        SourceEvent::ServiceDeleted(ServiceKey::new("default", "web"))
    );
    apply(&mut model, &deleted);
    let slice_deleted = next(&mut events).await;
    assert_eq!(
        slice_deleted,
        SourceEvent::SliceDeleted {
            namespace: "default".into(),
            name: "web-7xk2p".into()
        }
    );
    apply(&mut model, &slice_deleted);
    let desired = model.desired();
    assert!(!desired.virtual_servers.contains_key(&http));
    assert_eq!(
        desired.addresses,
        ["10.96.0.10", "fd00:10:96::a"]
            .iter()
            .map(|a| a.parse::<IpAddr>().unwrap())
            .collect()
    );

    // The protocol as the API server saw it.
    let requests = server.lock().unwrap().requests.clone();
    let service_requests: Vec<&String> = requests
        .iter()
        .filter(|r| r.starts_with(SERVICES))
        .collect();
    let lists: Vec<_> = service_requests
        .iter()
        .filter(|r| !r.contains("watch=true"))
        .collect();
    let watches: Vec<_> = service_requests
        .iter()
        .filter(|r| r.contains("watch=true"))
        .collect();
    assert_eq!(lists.len(), 2, "{service_requests:#?}");
    assert!(
        lists[0].contains("labelSelector=%21service.kubernetes.io%2Fservice-proxy-name%2C%21service.kubernetes.io%2Fheadless"),
        "{}",
        lists[0]
    );
    assert_eq!(watches.len(), 3, "{service_requests:#?}");
    assert!(watches[0].contains("resourceVersion=100"), "{}", watches[0]);
    assert!(
        watches[0].contains("allowWatchBookmarks=true"),
        "{}",
        watches[0]
    );
    assert!(
        watches[1].contains("resourceVersion=105"),
        "resumes from the bookmark: {}",
        watches[1]
    );
    assert!(watches[2].contains("resourceVersion=200"), "{}", watches[2]);
    task.abort();
}

#[tokio::test]
async fn node_watch_follows_this_node() {
    let node = with_version(fixture("node-a.json"), "70");
    let mut relabelled = with_version(node.clone(), "71");
    relabelled["metadata"]["labels"]["topology.kubernetes.io/zone"] = json!("zone-b");
    let mut api = ApiServer::default();
    api.resources.insert(
        NODES,
        Resource {
            lists: VecDeque::from([list("NodeList", "v1", "70", vec![node])]),
            watches: VecDeque::from([WatchScript {
                delay: Duration::from_millis(200),
                events: vec![event("MODIFIED", relabelled)],
                close: false,
            }]),
            ..Resource::default()
        },
    );
    let (addr, server) = serve(api).await;
    let (tx, mut rx) = watch::channel(None);
    let task = spawn_node_watch(client(addr), "node-a".into(), tx);
    let zone = |node: &Option<k8s_openapi::api::core::v1::Node>| {
        node.as_ref()
            .map(|n| NodeInfo::from_node(n, vec![]).zone.unwrap_or_default())
    };
    tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|n| n.is_some()))
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(20),
        rx.wait_for(|n| zone(n).as_deref() == Some("zone-b")),
    )
    .await
    .expect("the relabelled Node arrives")
    .unwrap();
    let requests = server.lock().unwrap().requests.clone();
    assert!(
        requests[0].contains("fieldSelector=metadata.name%3Dnode-a"),
        "{requests:?}"
    );
    task.abort();
}

#[tokio::test]
async fn kubeconfig_file_and_node_watch_together() {
    let mut api = ApiServer::default();
    api.resources.insert(
        SERVICES,
        Resource::listing(list(
            "ServiceList",
            "v1",
            "10",
            vec![with_version(fixture("svc-web.json"), "9")],
        )),
    );
    api.resources.insert(
        SLICES,
        Resource::listing(list(
            "EndpointSliceList",
            "discovery.k8s.io/v1",
            "10",
            vec![],
        )),
    );
    api.resources.insert(
        NODES,
        Resource::listing(list(
            "NodeList",
            "v1",
            "10",
            vec![with_version(fixture("node-a.json"), "8")],
        )),
    );
    let (addr, _server) = serve(api).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, support::apiserver::kubeconfig(addr)).unwrap();
    let (tx, mut events) = mpsc::channel(8);
    let (source, node_task, mut node) = ipvs_proxy::source::kubernetes::spawn_kubernetes_with_node(
        Some(kubeconfig),
        "node-a".into(),
        tx,
    )
    .await
    .unwrap();
    let SourceEvent::Snapshot { services, slices } = next(&mut events).await else {
        panic!("expected a snapshot");
    };
    assert_eq!(names(&services), vec!["web"]);
    assert!(slices.is_empty());
    let seen = tokio::time::timeout(Duration::from_secs(20), node.wait_for(|n| n.is_some()))
        .await
        .unwrap()
        .unwrap()
        .clone();
    let info = NodeInfo::from_node(seen.as_ref().unwrap(), vec![]);
    assert_eq!(info.zone.as_deref(), Some("zone-a"));
    source.abort();
    node_task.abort();

    // A kubeconfig that does not exist: a clear error naming it.
    let (tx, _events) = mpsc::channel(1);
    let error =
        ipvs_proxy::source::spawn_kubernetes(Some(dir.path().join("missing")), "node-a".into(), tx)
            .await
            .unwrap_err()
            .to_string();
    assert!(
        error.starts_with(&format!(
            "cannot configure the Kubernetes client (kubeconfig {}",
            dir.path().join("missing").display()
        )),
        "{error}"
    );
    assert!(
        error.ends_with("pass --kubeconfig or run in a Pod with a service account"),
        "{error}"
    );
}

#[tokio::test]
async fn the_api_server_service_comes_first_while_the_full_lists_are_held() {
    let (open_lists, gate) = watch::channel(false);
    let api = ApiServer::default()
        .with_api_server_service("300")
        .with_held_lists(
            "300",
            vec![fixture("svc-kubernetes.json"), fixture("svc-web.json")],
            vec![fixture("eps-kubernetes.json"), fixture("eps-web.json")],
            gate,
        );
    let (addr, server) = serve(api).await;
    let (tx, mut events) = mpsc::channel(8);
    let task = spawn_with_client(client(addr), tx);

    // The full lists are held: only the early part can arrive.
    let SourceEvent::Early { services, slices } = next(&mut events).await else {
        panic!("expected the early event first");
    };
    assert_eq!(names(&services), vec!["kubernetes"]);
    assert_eq!(names(&slices), vec!["kubernetes"]);
    let requests = server.lock().unwrap().requests.clone();
    let early_services = requests
        .iter()
        .find(|r| r.starts_with(DEFAULT_SERVICES))
        .expect("the default namespace's Services were listed");
    assert!(
        early_services.contains("fieldSelector=metadata.name%3Dkubernetes")
            && early_services
                .contains("labelSelector=%21service.kubernetes.io%2Fservice-proxy-name"),
        "{early_services}"
    );
    let early_slices = requests
        .iter()
        .find(|r| r.starts_with(DEFAULT_SLICES))
        .expect("the default namespace's EndpointSlices were listed");
    assert!(
        early_slices.contains("labelSelector=kubernetes.io%2Fservice-name%3Dkubernetes"),
        "{early_slices}"
    );

    // A model fed the early part holds just that Service, and is partial.
    let mut model = Model::new(
        Config::default(),
        NodeInfo {
            name: "node-a".into(),
            ..NodeInfo::default()
        },
    );
    model.apply_early(services, slices);
    assert!(model.is_partial());
    let vip = VirtualServerKey {
        addr: "10.96.0.1".parse::<IpAddr>().unwrap(),
        port: 443,
        protocol: Protocol::Tcp,
    };
    let real_servers: Vec<String> = model.state().virtual_servers[&vip]
        .real_servers
        .iter()
        .map(|rs| format!("{}:{}", rs.addr, rs.port))
        .collect();
    assert_eq!(real_servers, vec!["192.168.50.10:6443"]);
    assert_eq!(model.state().virtual_servers.len(), 1);

    // Once the lists open: the snapshot, and no second early event.
    open_lists.send(true).unwrap();
    let SourceEvent::Snapshot { services, slices } = next(&mut events).await else {
        panic!("expected the snapshot");
    };
    assert_eq!(names(&services), vec!["kubernetes", "web"]);
    let mut fresh = Model::new(model.config().clone(), model.node().clone());
    fresh.replace_all(services.clone(), slices.clone());
    model.replace_all(services, slices);
    assert!(!model.is_partial());
    assert!(model.state().virtual_servers.len() > 1);
    assert_eq!(
        model.state(),
        fresh.state(),
        "the snapshot rebuilds the model as on a first list"
    );
    assert!(model.take_touched().all, "the next sync is a full one");
    task.abort();
}

#[tokio::test]
async fn no_early_event_once_the_snapshot_is_out() {
    // The early lists are held, the full lists are not: the snapshot goes first and
    // the late early part is dropped (it could be older than the watch).
    let (open_early, gate) = watch::channel(false);
    let mut api = ApiServer::default().with_api_server_service("300");
    for path in [DEFAULT_SERVICES, DEFAULT_SLICES] {
        api.resources.get_mut(path).unwrap().list_gate = Some(gate.clone());
    }
    api.resources.insert(
        SERVICES,
        Resource::listing(list(
            "ServiceList",
            "v1",
            "300",
            vec![fixture("svc-web.json")],
        )),
    );
    api.resources.insert(
        SLICES,
        Resource::listing(list(
            "EndpointSliceList",
            "discovery.k8s.io/v1",
            "300",
            vec![],
        )),
    );
    let (addr, _server) = serve(api).await;
    let (tx, mut events) = mpsc::channel(8);
    let task = spawn_with_client(client(addr), tx);
    let SourceEvent::Snapshot { services, .. } = next(&mut events).await else {
        panic!("expected the snapshot first");
    };
    assert_eq!(names(&services), vec!["web"]);
    open_early.send(true).unwrap();
    let late = tokio::time::timeout(Duration::from_secs(2), events.recv()).await;
    assert!(late.is_err(), "nothing follows the snapshot: {late:?}");
    task.abort();
}

#[tokio::test]
async fn changes_before_the_snapshot_are_folded_into_it() {
    // The Services are listed and their watch delivers an addition and a deletion
    // while the EndpointSlice list is still held: the snapshot carries the result.
    let (open_slices, gate) = watch::channel(false);
    let web = with_version(fixture("svc-web.json"), "90");
    let cache = with_version(fixture("svc-cache-affinity-itp-local.json"), "101");
    let mut api = ApiServer::default();
    api.resources.insert(
        SERVICES,
        Resource {
            watches: VecDeque::from([WatchScript {
                delay: Duration::ZERO,
                events: vec![
                    event("ADDED", cache),
                    event("DELETED", with_version(web.clone(), "102")),
                ],
                close: false,
            }]),
            ..Resource::listing(list("ServiceList", "v1", "100", vec![web]))
        },
    );
    api.resources.insert(
        SLICES,
        Resource::held(
            list(
                "EndpointSliceList",
                "discovery.k8s.io/v1",
                "100",
                vec![fixture("eps-web.json")],
            ),
            gate,
        ),
    );
    let (addr, server) = serve(api).await;
    let (tx, mut events) = mpsc::channel(8);
    let task = spawn_with_client(client(addr), tx);
    let watching = async {
        while !server
            .lock()
            .unwrap()
            .requests
            .iter()
            .any(|r| r.starts_with(SERVICES) && r.contains("watch=true"))
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), watching)
        .await
        .expect("the Services are watched");
    // The watch's events are written as its response starts; give them time to land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    open_slices.send(true).unwrap();
    let SourceEvent::Snapshot { services, slices } = next(&mut events).await else {
        panic!("expected the snapshot first");
    };
    assert_eq!(names(&services), vec!["cache"]);
    assert_eq!(names(&slices), vec!["web-7xk2p"]);
    let late = tokio::time::timeout(Duration::from_secs(1), events.recv()).await;
    assert!(late.is_err(), "the changes are not sent again: {late:?}");
    task.abort();
}

const POOLS: &str = "/apis/metallb.io/v1beta1/namespaces/metallb-system/ipaddresspools";
const L2ADS: &str = "/apis/metallb.io/v1beta1/namespaces/metallb-system/l2advertisements";
const BGPADS: &str = "/apis/metallb.io/v1beta1/namespaces/metallb-system/bgpadvertisements";
const PEERS: &str = "/apis/metallb.io/v1beta2/namespaces/metallb-system/bgppeers";
const BFDS: &str = "/apis/metallb.io/v1beta1/namespaces/metallb-system/bfdprofiles";
const COMMUNITIES: &str = "/apis/metallb.io/v1beta1/namespaces/metallb-system/communities";
const CONFIG_MAPS: &str = "/api/v1/namespaces/metallb-system/configmaps";

fn metallb(kind: &str, version: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": format!("metallb.io/{version}"), "kind": kind,
        "metadata": {"name": name, "namespace": "metallb-system", "resourceVersion": "5"},
        "spec": spec,
    })
}

#[tokio::test]
async fn metallb_objects_are_watched_in_their_namespace_and_published_whole() {
    use serde_json::json;
    let mut api = ApiServer::default();
    let pool = metallb(
        "IPAddressPool",
        "v1beta1",
        "lan",
        json!({"addresses": ["10.0.50.0/28"]}),
    );
    api.resources.insert(
        POOLS,
        Resource {
            watches: [WatchScript {
                delay: Duration::from_millis(300),
                events: vec![event(
                    "ADDED",
                    metallb(
                        "IPAddressPool",
                        "v1beta1",
                        "wan",
                        json!({"addresses": ["fd00::/120"]}),
                    ),
                )],
                close: false,
            }]
            .into(),
            ..Resource::listing(list(
                "IPAddressPoolList",
                "metallb.io/v1beta1",
                "10",
                vec![pool],
            ))
        },
    );
    let empty = |kind: &str, version: &str| list(kind, version, "10", vec![]);
    api.resources.insert(
        L2ADS,
        Resource::listing(list(
            "L2AdvertisementList",
            "metallb.io/v1beta1",
            "10",
            vec![metallb(
                "L2Advertisement",
                "v1beta1",
                "lan",
                json!({"ipAddressPools": ["lan"]}),
            )],
        )),
    );
    api.resources.insert(
        BGPADS,
        Resource::listing(empty("BGPAdvertisementList", "metallb.io/v1beta1")),
    );
    api.resources.insert(
        PEERS,
        Resource::listing(list(
            "BGPPeerList",
            "metallb.io/v1beta2",
            "10",
            vec![metallb(
                "BGPPeer",
                "v1beta2",
                "tor",
                json!({"myASN": 64512, "peerASN": 64513, "peerAddress": "10.0.0.1"}),
            )],
        )),
    );
    api.resources.insert(
        BFDS,
        Resource::listing(empty("BFDProfileList", "metallb.io/v1beta1")),
    );
    api.resources.insert(
        COMMUNITIES,
        Resource::listing(empty("CommunityList", "metallb.io/v1beta1")),
    );
    api.resources
        .insert(CONFIG_MAPS, Resource::listing(empty("ConfigMapList", "v1")));
    api.resources.insert(
        NODES,
        Resource::listing(list(
            "NodeList",
            "v1",
            "10",
            vec![with_version(fixture("node-a.json"), "8")],
        )),
    );
    let (addr, server) = serve(api).await;
    let client = support::apiserver::client(addr);
    let (mut objects, task) =
        ipvs_proxy::source::metallb::spawn_metallb_watch(client.clone(), "metallb-system");
    let first = tokio::time::timeout(Duration::from_secs(5), objects.wait_for(|o| o.is_some()))
        .await
        .expect("published once every kind is listed (well before the 10 s fallback)")
        .unwrap()
        .clone()
        .unwrap();
    assert_eq!(first.peers[0].spec.peer_asn, Some(64513));
    assert_eq!(first.l2_advertisements.len(), 1);
    let with_wan = tokio::time::timeout(
        Duration::from_secs(5),
        objects.wait_for(|o| o.as_ref().is_some_and(|o| o.pools.len() == 2)),
    )
    .await
    .expect("the watched pool is published")
    .unwrap()
    .clone()
    .unwrap();
    let names: Vec<_> = with_wan
        .pools
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["lan", "wan"]);
    let requests = server.lock().unwrap().requests.clone();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with(CONFIG_MAPS)
                && r.contains("fieldSelector=metadata.name%3Dconfig")),
        "only the legacy ConfigMap is listed: {requests:?}"
    );
    task.abort();

    let (mut nodes, nodes_task) = ipvs_proxy::source::cluster_nodes::spawn_nodes_watch(client);
    let listed = tokio::time::timeout(Duration::from_secs(5), nodes.wait_for(|n| n.is_some()))
        .await
        .unwrap()
        .unwrap()
        .clone()
        .unwrap();
    let node = listed.values().next().expect("node-a");
    assert!(node.metadata.managed_fields.is_none());
    nodes_task.abort();
}
