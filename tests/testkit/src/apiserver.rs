//! An in-process Kubernetes API server for tests: it speaks the real list/watch
//! protocol over HTTP (lists with a resourceVersion, watch streams of JSON event
//! lines, bookmarks, `410 Gone`, disconnects) and serves real object JSON from
//! `tests/fixtures/k8s`. Each resource is scripted: its list responses, its watch
//! responses, and optionally a gate that holds its lists until the test opens it.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
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
use serde_json::{Value, json};
use tokio::sync::watch;

/// All Services (the watchers' list and watch).
pub const SERVICES: &str = "/api/v1/services";
/// All EndpointSlices.
pub const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
/// All Nodes.
pub const NODES: &str = "/api/v1/nodes";
/// Services in the `default` namespace (where `kubernetes` lives).
pub const DEFAULT_SERVICES: &str = "/api/v1/namespaces/default/services";
/// EndpointSlices in the `default` namespace.
pub const DEFAULT_SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";

/// A fixture object from `tests/fixtures/k8s`, as JSON.
pub fn fixture(name: &str) -> Value {
    crate::k8s::fixture(name)
}

/// `object` with its `metadata.resourceVersion` set.
pub fn with_version(mut object: Value, resource_version: &str) -> Value {
    object["metadata"]["resourceVersion"] = json!(resource_version);
    object
}

/// One watch response: event lines sent after `delay`, then the stream closes (a
/// disconnect) or stays open.
pub struct WatchScript {
    /// Wait before the events.
    pub delay: Duration,
    /// The event lines.
    pub events: Vec<Value>,
    /// Whether the stream ends after them.
    pub close: bool,
}

/// One resource path's script.
#[derive(Default)]
pub struct Resource {
    /// List responses in order; the last one repeats.
    pub lists: VecDeque<Value>,
    /// Watch responses in order; when none is left a watch stays open and silent.
    pub watches: VecDeque<WatchScript>,
    /// List responses already serialized, served instead of `lists` when not empty
    /// (for lists of thousands of objects, which as `Value` trees would take hundreds
    /// of megabytes).
    pub raw_lists: VecDeque<Bytes>,
    /// When set, list responses are held until the value is `true`.
    pub list_gate: Option<watch::Receiver<bool>>,
}

impl Resource {
    /// A resource whose every list answers `list`, and whose watches stay silent.
    pub fn listing(list: Value) -> Resource {
        Resource {
            lists: VecDeque::from([list]),
            ..Resource::default()
        }
    }

    /// Like [`Resource::listing`], with every list held until `gate` is `true`.
    pub fn held(list: Value, gate: watch::Receiver<bool>) -> Resource {
        Resource {
            list_gate: Some(gate),
            ..Resource::listing(list)
        }
    }
}

impl ApiServer {
    /// Serves the `default` namespace's lists with the `kubernetes` Service and its
    /// EndpointSlice (fixtures `svc-kubernetes.json`, `eps-kubernetes.json`), as the
    /// agent's early read of the API server's Service asks for them.
    pub fn with_api_server_service(mut self, resource_version: &str) -> ApiServer {
        self.resources.insert(
            DEFAULT_SERVICES,
            Resource::listing(list(
                "ServiceList",
                "v1",
                resource_version,
                vec![fixture("svc-kubernetes.json")],
            )),
        );
        self.resources.insert(
            DEFAULT_SLICES,
            Resource::listing(list(
                "EndpointSliceList",
                "discovery.k8s.io/v1",
                resource_version,
                vec![fixture("eps-kubernetes.json")],
            )),
        );
        self
    }

    /// Serves the full lists of Services and EndpointSlices (the watchers' lists), each
    /// held until `gate` is `true`.
    pub fn with_held_lists(
        mut self,
        resource_version: &str,
        services: Vec<Value>,
        slices: Vec<Value>,
        gate: watch::Receiver<bool>,
    ) -> ApiServer {
        self.resources.insert(
            SERVICES,
            Resource::held(
                list("ServiceList", "v1", resource_version, services),
                gate.clone(),
            ),
        );
        self.resources.insert(
            SLICES,
            Resource::held(
                list(
                    "EndpointSliceList",
                    "discovery.k8s.io/v1",
                    resource_version,
                    slices,
                ),
                gate,
            ),
        );
        self
    }
}

/// The scripted server state, and every request it received (`path?query`).
#[derive(Default)]
pub struct ApiServer {
    /// Scripts by path.
    pub resources: HashMap<&'static str, Resource>,
    /// Requests in arrival order.
    pub requests: Vec<String>,
}

type Body = BoxBody<Bytes, Infallible>;

/// A list object.
pub fn list(kind: &str, api_version: &str, resource_version: &str, items: Vec<Value>) -> Value {
    json!({
        "kind": kind,
        "apiVersion": api_version,
        "metadata": {"resourceVersion": resource_version},
        "items": items,
    })
}

/// A list object serialized from items serialized one by one (see
/// [`Resource::raw_lists`]).
pub fn raw_list(
    kind: &str,
    api_version: &str,
    resource_version: &str,
    items: impl IntoIterator<Item = String>,
) -> Bytes {
    let mut text = format!(
        "{{\"kind\":{kind:?},\"apiVersion\":{api_version:?},\"metadata\":{{\"resourceVersion\":{resource_version:?}}},\"items\":["
    );
    for (index, item) in items.into_iter().enumerate() {
        if index > 0 {
            text.push(',');
        }
        text.push_str(&item);
    }
    text.push_str("]}");
    Bytes::from(text)
}

/// A watch event line.
pub fn event(kind: &str, object: Value) -> Value {
    json!({"type": kind, "object": object})
}

/// A BOOKMARK watch event.
pub fn bookmark(kind: &str, api_version: &str, resource_version: &str) -> Value {
    event(
        "BOOKMARK",
        json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": resource_version}}),
    )
}

/// The in-stream `410 Gone` error event.
pub fn gone(resource_version: &str) -> Value {
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

/// List responses serialized once when serving starts (a list of 10,000 Services is
/// megabytes: serializing it per request, under the lock, would make every other
/// request wait), by path.
type ListBodies = HashMap<&'static str, VecDeque<Bytes>>;

fn handle(
    server: &Mutex<ApiServer>,
    bodies: &Mutex<ListBodies>,
    request: Request<hyper::body::Incoming>,
) -> Response<Body> {
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
        let mut bodies = bodies.lock().unwrap();
        let bytes = match bodies.get_mut(path.as_str()) {
            Some(lists) if lists.len() > 1 => lists.pop_front().unwrap(),
            Some(lists) => lists
                .front()
                .cloned()
                .unwrap_or_else(|| Bytes::from("null")),
            None => Bytes::from("null"),
        };
        match resource.list_gate.clone() {
            None => Full::new(bytes).boxed(),
            Some(mut gate) => {
                let opened = async move {
                    let _ = gate.wait_for(|open| *open).await;
                    Ok::<_, Infallible>(Frame::data(bytes))
                };
                BodyExt::boxed(StreamBody::new(stream::once(opened)))
            }
        }
    };
    Response::builder()
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

/// Serves `server` on `listener` (already bound, e.g. inside a network namespace);
/// returns the shared state to inspect requests.
pub fn serve_on(listener: tokio::net::TcpListener, mut server: ApiServer) -> Arc<Mutex<ApiServer>> {
    let bodies: ListBodies = server
        .resources
        .iter_mut()
        .map(|(path, resource)| {
            let lists = std::mem::take(&mut resource.lists)
                .into_iter()
                .map(|list| Bytes::from(list.to_string()));
            let lists = if resource.raw_lists.is_empty() {
                lists.collect()
            } else {
                std::mem::take(&mut resource.raw_lists)
            };
            (*path, lists)
        })
        .collect();
    let bodies = Arc::new(Mutex::new(bodies));
    let server = Arc::new(Mutex::new(server));
    let shared = server.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let server = shared.clone();
            let bodies = bodies.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let response = handle(&server, &bodies, request);
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    server
}

/// Serves `server` on a free port of 127.0.0.1.
pub async fn serve(server: ApiServer) -> (SocketAddr, Arc<Mutex<ApiServer>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, serve_on(listener, server))
}

/// A client of the server at `addr`.
pub fn client(addr: SocketAddr) -> kube::Client {
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

/// A kubeconfig file's text pointing at the server at `addr` (token not checked).
pub fn kubeconfig(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: http://{addr}\n\
         contexts:\n- name: lab\n  context:\n    cluster: lab\n    user: proxy\n\
         current-context: lab\nusers:\n- name: proxy\n  user:\n    token: not-checked\n"
    )
}
