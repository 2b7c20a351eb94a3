//! The Kubernetes source against an in-process API server speaking the real list/watch
//! protocol over HTTP: an initial list with a resourceVersion, a watch stream of
//! ADDED/MODIFIED/DELETED events, a BOOKMARK, a disconnect (resumed from the bookmark),
//! an in-stream `410 Gone` (relist), with Service/EndpointSlice JSON as the API server
//! returns it.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, future, stream};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use ipvs_proxy::config::Config;
use ipvs_proxy::model::{Model, NodeInfo, Protocol, ServiceKey, VirtualServerKey};
use ipvs_proxy::source::SourceEvent;
use ipvs_proxy::source::kubernetes::{spawn_node_watch, spawn_with_client};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

const SERVICES: &str = "/api/v1/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const NODES: &str = "/api/v1/nodes";

fn fixture(name: &str) -> Value {
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/k8s/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn with_version(mut object: Value, resource_version: &str) -> Value {
    object["metadata"]["resourceVersion"] = json!(resource_version);
    object
}

/// One watch response: event lines sent after `delay`, then the stream closes (a
/// disconnect) or stays open.
struct WatchScript {
    delay: Duration,
    events: Vec<Value>,
    close: bool,
}

#[derive(Default)]
struct Resource {
    /// List responses in order; the last one repeats.
    lists: VecDeque<Value>,
    /// Watch responses in order; when none is left a watch stays open and silent.
    watches: VecDeque<WatchScript>,
}

#[derive(Default)]
struct ApiServer {
    resources: HashMap<&'static str, Resource>,
    requests: Vec<String>,
}

type Body = BoxBody<Bytes, Infallible>;

fn list(kind: &str, api_version: &str, resource_version: &str, items: Vec<Value>) -> Value {
    json!({
        "kind": kind,
        "apiVersion": api_version,
        "metadata": {"resourceVersion": resource_version},
        "items": items,
    })
}

fn event(kind: &str, object: Value) -> Value {
    json!({"type": kind, "object": object})
}

fn bookmark(kind: &str, api_version: &str, resource_version: &str) -> Value {
    event(
        "BOOKMARK",
        json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": resource_version}}),
    )
}

fn gone(resource_version: &str) -> Value {
    event(
        "ERROR",
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure",
            "message": format!("too old resource version: {resource_version} (199)"),
            "reason": "Expired", "code": 410
        }),
    )
}

fn handle(server: &Mutex<ApiServer>, request: Request<hyper::body::Incoming>) -> Response<Body> {
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let mut server = server.lock().unwrap();
    server.requests.push(format!("{path}?{query}"));
    let Some(resource) = server.resources.get_mut(path.as_str()) else {
        let status = json!({"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404});
        return Response::builder()
            .status(404)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(status.to_string())).boxed())
            .unwrap();
    };
    let body: Body = if query.split('&').any(|pair| pair == "watch=true") {
        match resource.watches.pop_front() {
            Some(script) => {
                let lines = script
                    .events
                    .iter()
                    .map(|event| Ok(Frame::data(Bytes::from(format!("{event}\n")))))
                    .collect::<Vec<Result<Frame<Bytes>, Infallible>>>();
                let delayed = stream::once(tokio::time::sleep(script.delay))
                    .filter_map(|_| future::ready(None))
                    .chain(stream::iter(lines));
                if script.close {
                    BodyExt::boxed(StreamBody::new(delayed))
                } else {
                    BodyExt::boxed(StreamBody::new(delayed.chain(stream::pending())))
                }
            }
            None => BodyExt::boxed(StreamBody::new(stream::pending::<
                Result<Frame<Bytes>, Infallible>,
            >())),
        }
    } else {
        let response = if resource.lists.len() > 1 {
            resource.lists.pop_front().unwrap()
        } else {
            resource.lists.front().cloned().unwrap_or(Value::Null)
        };
        Full::new(Bytes::from(response.to_string())).boxed()
    };
    Response::builder()
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

async fn serve(server: ApiServer) -> (SocketAddr, Arc<Mutex<ApiServer>>) {
    let server = Arc::new(Mutex::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = server.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let server = shared.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let response = handle(&server, request);
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    (addr, server)
}

fn client(addr: SocketAddr) -> kube::Client {
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

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

    // 3. Disconnect, resume from the bookmark, 410 Gone: a relist and a new snapshot
    // in which the Service deleted meanwhile is gone.
    let relisted = next(&mut events).await;
    let SourceEvent::Snapshot { services, slices } = &relisted else {
        panic!("expected a snapshot after 410, got {relisted:?}");
    };
    assert_eq!(
        names(services),
        vec!["web", "kube-dns"],
        "ordered by namespace/name"
    );
    assert_eq!(names(slices), vec!["web-7xk2p"]);
    apply(&mut model, &relisted);
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
        Resource {
            lists: VecDeque::from([list(
                "ServiceList",
                "v1",
                "10",
                vec![with_version(fixture("svc-web.json"), "9")],
            )]),
            watches: VecDeque::new(),
        },
    );
    api.resources.insert(
        SLICES,
        Resource {
            lists: VecDeque::from([list(
                "EndpointSliceList",
                "discovery.k8s.io/v1",
                "10",
                vec![],
            )]),
            watches: VecDeque::new(),
        },
    );
    api.resources.insert(
        NODES,
        Resource {
            lists: VecDeque::from([list(
                "NodeList",
                "v1",
                "10",
                vec![with_version(fixture("node-a.json"), "8")],
            )]),
            watches: VecDeque::new(),
        },
    );
    let (addr, _server) = serve(api).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: http://{addr}\n\
             contexts:\n- name: lab\n  context:\n    cluster: lab\n    user: proxy\n\
             current-context: lab\nusers:\n- name: proxy\n  user:\n    token: not-checked\n"
        ),
    )
    .unwrap();
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
