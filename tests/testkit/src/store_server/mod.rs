//! A stateful in-process Kubernetes API server for tests. Where [`crate::apiserver`]
//! replays scripted responses, this one keeps objects: clients list, watch, get,
//! create, replace, patch (merge, strategic-as-merge, JSON patch, server-side apply)
//! and delete them, and every write bumps one global resourceVersion and reaches open
//! watches as ADDED/MODIFIED/DELETED events, as with a real API server over etcd.
//!
//! - Resources: the [`resources::RESOURCES`] table (core, discovery, events,
//!   coordination Leases, MetalLB's CRDs); anything else is `404` with a Status.
//! - Paths: `/api/v1/...` and `/apis/<group>/<version>/...`, namespaced
//!   (`/namespaces/<ns>/<plural>[/<name>[/status]]`), cluster-scoped, and the
//!   all-namespaces collection of namespaced resources.
//! - Patches: JSON merge patch (RFC 7386), JSON patch (RFC 6902), server-side apply
//!   (field ownership and conflicts, see [`fields`]); a strategic merge patch is taken
//!   as a merge patch (lists replaced, not merged by key).
//! - Status subresource: `/status` reads the object and writes only `.status`; writes
//!   to the object keep the stored `.status`; a client's create drops `.status`.
//! - Watches resume from a resourceVersion within the retained history (older: an
//!   in-stream `410 Gone`, as the API server's watch cache answers), send BOOKMARKs
//!   when asked, end after `timeoutSeconds`, and follow label and field selectors (an
//!   object that stops matching is a DELETED for that watch).
//! - Test controls on [`StoreServer`]: seed, change and delete objects directly (the
//!   watches see it), read the store, the request log ([`RequestRecord`]), an RBAC-like
//!   [`AccessPolicy`] (else `403`), and [`Reachability`] to lose and regain the server
//!   (for everyone, or one client).
//!
//! Discovery (`/version`, `/api`, `/apis`, `/api/v1`, `/apis/<group>/<version>`) is
//! served from the same table, to every user.
//!
//! Not modelled: namespaces as a precondition of creating in them (and their
//! deletion), admission and validation of object content, conversion between versions
//! (objects are only relabelled), `resourceVersionMatch` on lists (a list is always the
//! current state), and authorization of unknown paths (`404` before `403`).
//!
//! Clients are told apart by their bearer token, which is taken as the user name
//! ([`StoreServer::client_as`]); nothing is authenticated.
//!
//! ```ignore
//! let server = StoreServer::with_objects([k8s::fixture::<Value>("svc-web.json")]);
//! server.serve().await;
//! server.set_policy(AccessPolicy::Rules(vec![
//!     Rule::allow(&["get", "list", "watch"], "", &["services"]),
//!     Rule::allow(&["patch"], "", &["services/status"]),
//! ]));
//! let services: kube::Api<Service> = kube::Api::all(server.client_as("node-a"));
//! // ... the code under test runs against `services` ...
//! assert!(server.requests().iter().all(|r| r.user != "node-b" || !r.is_write()));
//! ```

pub mod discovery;
pub mod fields;
pub mod policy;
pub mod query;
pub mod resources;
pub mod store;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

pub use policy::{AccessPolicy, Rule};
pub use resources::ResourceType;

use policy::Attributes;
use query::{Selector, Target, flag, parse_path, parse_query};
use store::{ApiError, Change, Store, WatchStart};

/// The user of requests without a bearer token.
pub const ANONYMOUS: &str = "system:anonymous";

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The user (bearer token, or [`ANONYMOUS`]).
    pub user: String,
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Raw query.
    pub query: String,
    /// The verb the request was authorized as (`get`, `list`, `watch`, `create`,
    /// `update`, `patch`, `delete`, `deletecollection`), empty when the path addresses
    /// no resource.
    pub verb: String,
    /// The request's content type, if any.
    pub content_type: Option<String>,
    /// The response status (a watch: when its stream started); `0` when the
    /// connection was dropped instead (see [`Reachability`]).
    pub status: u16,
}

impl RequestRecord {
    /// Whether the request asked to change something.
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }
}

/// Whether clients reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reachability {
    /// Requests are served.
    #[default]
    Up,
    /// Connections are closed at once (a reset); open watches are cut.
    Refuse,
    /// Requests get no answer until the server is reachable again (then their
    /// connection closes); open watches are cut.
    Hang,
}

#[derive(Debug, Clone, Default)]
struct Reach {
    everyone: Reachability,
    users: HashMap<String, Reachability>,
}

impl Reach {
    fn of(&self, user: &str) -> Reachability {
        match self.everyone {
            Reachability::Up => self.users.get(user).copied().unwrap_or_default(),
            cut => cut,
        }
    }
}

struct Shared {
    store: Mutex<Store>,
    policy: Mutex<AccessPolicy>,
    log: Mutex<Vec<RequestRecord>>,
    reach: watch::Sender<Reach>,
    bookmark_interval: Mutex<Duration>,
    addr: Mutex<Option<SocketAddr>>,
    /// While `true`, writes wait (see [`StoreServer::hold_writes`]).
    writes_held: watch::Sender<bool>,
    /// How many writes wait.
    held: std::sync::atomic::AtomicUsize,
}

/// The server's state and its test controls; clones share it.
#[derive(Clone)]
pub struct StoreServer {
    shared: Arc<Shared>,
}

impl Default for StoreServer {
    fn default() -> StoreServer {
        StoreServer::new()
    }
}

type BodyError = std::io::Error;
type Body = BoxBody<Bytes, BodyError>;

/// A JSON response.
fn json_response(code: u16, value: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from(value.to_string()))
                .map_err(|e| match e {})
                .boxed(),
        )
        .expect("a valid response")
}

fn error_response(error: &ApiError) -> Response<Body> {
    json_response(error.code, &error.status())
}

/// The object as served at `version`.
fn served(mut object: Value, resource: &ResourceType, version: &str) -> Value {
    object["apiVersion"] = json!(resource.api_version(version));
    object["kind"] = json!(resource.kind);
    object
}

fn ns_of(target: &Target) -> &str {
    target.namespace.as_deref().unwrap_or_default()
}

/// The verb of a request on `target`.
fn verb_of(
    method: &Method,
    target: &Target,
    query: &HashMap<String, String>,
) -> Option<&'static str> {
    let named = target.name.is_some();
    Some(match *method {
        Method::GET if named => "get",
        Method::GET if flag(query, "watch") => "watch",
        Method::GET => "list",
        Method::POST if !named => "create",
        Method::PUT if named => "update",
        Method::PATCH if named => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => return None,
    })
}

/// The field manager of a write: `fieldManager`, else the user agent's product name,
/// as the API server derives it.
fn manager_of(query: &HashMap<String, String>, user_agent: &str) -> String {
    query.get("fieldManager").cloned().unwrap_or_else(|| {
        let product = user_agent.split('/').next().unwrap_or_default();
        if product.is_empty() {
            "unknown".to_string()
        } else {
            product.to_string()
        }
    })
}

/// What a handler answers: a response, or nothing (the connection is dropped).
type Answer = Option<Response<Body>>;

impl StoreServer {
    /// An empty server, not yet listening, with the whole history kept (up to
    /// 100,000 changes).
    pub fn new() -> StoreServer {
        StoreServer {
            shared: Arc::new(Shared {
                store: Mutex::new(Store::new(100_000)),
                policy: Mutex::new(AccessPolicy::AllowAll),
                log: Mutex::new(Vec::new()),
                reach: watch::channel(Reach::default()).0,
                bookmark_interval: Mutex::new(Duration::from_secs(1)),
                addr: Mutex::new(None),
                writes_held: watch::channel(false).0,
                held: std::sync::atomic::AtomicUsize::new(0),
            }),
        }
    }

    /// A server seeded with `objects` (see [`StoreServer::apply`]).
    pub fn with_objects(objects: impl IntoIterator<Item = Value>) -> StoreServer {
        let server = StoreServer::new();
        for object in objects {
            server.apply(object);
        }
        server
    }

    // ---- serving ----

    /// Serves on a free port of 127.0.0.1; returns the address.
    pub async fn serve(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        self.serve_on(listener)
    }

    /// Serves on `listener` (already bound, e.g. inside a network namespace) until the
    /// runtime ends; returns its address.
    pub fn serve_on(&self, listener: tokio::net::TcpListener) -> SocketAddr {
        let addr = listener.local_addr().expect("a bound listener");
        *self.shared.addr.lock().unwrap() = Some(addr);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve_connection(shared.clone(), socket));
            }
        });
        addr
    }

    /// The address served on.
    pub fn addr(&self) -> SocketAddr {
        self.shared
            .addr
            .lock()
            .unwrap()
            .expect("the server is serving (call serve first)")
    }

    /// A client of the server, as [`ANONYMOUS`].
    pub fn client(&self) -> kube::Client {
        client(self.addr(), None)
    }

    /// A client of the server authenticating as `user` (its bearer token), which the
    /// request log, the access policy and [`StoreServer::set_reachability_for`] see.
    pub fn client_as(&self, user: &str) -> kube::Client {
        client(self.addr(), Some(user))
    }

    /// A kubeconfig file's text for the server, user `user`.
    pub fn kubeconfig_as(&self, user: &str) -> String {
        kubeconfig(self.addr(), user)
    }

    // ---- the store ----

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.shared.store.lock().unwrap()
    }

    /// Creates or replaces `object` (its `apiVersion`, `kind`, namespace and name say
    /// where), status included, as a controller outside the test would; open watches
    /// see ADDED or MODIFIED. Returns the stored object. Panics on an unknown kind.
    pub fn apply(&self, object: Value) -> Value {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let (resource, version) = resources::by_kind(api_version, kind)
            .unwrap_or_else(|| panic!("no resource for {api_version} {kind}"));
        let namespace = match (
            resource.namespaced,
            object["metadata"]["namespace"].as_str(),
        ) {
            (true, Some(ns)) => ns.to_string(),
            (true, None) => "default".to_string(),
            (false, _) => String::new(),
        };
        let stored = self
            .store()
            .put(resource, &namespace, object)
            .unwrap_or_else(|e| panic!("apply: {}", e.message));
        served(stored, resource, &version)
    }

    /// The object at `path` (`/api/v1/namespaces/default/services/web`), if stored.
    pub fn get(&self, path: &str) -> Option<Value> {
        let target = parse_path(path).ok()?;
        let object = self
            .store()
            .get(target.resource, ns_of(&target), target.name.as_deref()?)
            .ok()?;
        Some(served(object, target.resource, &target.version))
    }

    /// The objects of the collection at `path` (`/api/v1/services`,
    /// `/api/v1/namespaces/default/services`), by namespace and name.
    pub fn list(&self, path: &str) -> Vec<Value> {
        let target = parse_path(path).unwrap_or_else(|_| panic!("not a collection: {path}"));
        let everything = Selector::default();
        self.store()
            .list(
                target.resource,
                target.namespace.as_deref(),
                &everything,
                &everything,
            )
            .into_iter()
            .map(|object| served(object, target.resource, &target.version))
            .collect()
    }

    /// Deletes the object at `path` (open watches see DELETED); returns it, if it was
    /// stored. Finalizers are ignored.
    pub fn delete(&self, path: &str) -> Option<Value> {
        let target = parse_path(path).ok()?;
        let name = target.name.as_deref()?;
        let deleted = self.store().remove(target.resource, ns_of(&target), name)?;
        Some(served(deleted, target.resource, &target.version))
    }

    /// Who owns which fields of the object at `path` (server-side apply's bookkeeping):
    /// `(field manager, from apply, JSON pointers)`.
    pub fn field_owners(&self, path: &str) -> Vec<(String, bool, Vec<String>)> {
        let Ok(target) = parse_path(path) else {
            return Vec::new();
        };
        self.store().owners(
            target.resource,
            ns_of(&target),
            target.name.as_deref().unwrap_or_default(),
        )
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.store().resource_version()
    }

    /// Forgets the change history, as etcd's compaction does: a watch from an earlier
    /// resourceVersion gets `410 Gone` and its client must list again.
    pub fn compact(&self) {
        self.store().compact();
    }

    /// Waits until `check` holds for the object at `path` (`None`: absent), polling;
    /// returns it then, or panics after `timeout`.
    pub async fn wait_for(
        &self,
        path: &str,
        timeout: Duration,
        check: impl Fn(Option<&Value>) -> bool,
    ) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let object = self.get(path);
            if check(object.as_ref()) {
                return object;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("{path} not as expected within {timeout:?}; it is {object:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // ---- controls ----

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Forgets the requests so far.
    pub fn clear_requests(&self) {
        self.shared.log.lock().unwrap().clear();
    }

    /// Replaces the access policy (the default allows everything).
    pub fn set_policy(&self, policy: AccessPolicy) {
        *self.shared.policy.lock().unwrap() = policy;
    }

    /// Makes the server reachable or not for everyone (a per-user setting applies
    /// again once everyone's is [`Reachability::Up`]).
    pub fn set_reachability(&self, reachability: Reachability) {
        self.shared
            .reach
            .send_modify(|reach| reach.everyone = reachability);
    }

    /// Makes the server reachable or not for one user's clients only: a node losing
    /// its way to the API server while the others keep it.
    pub fn set_reachability_for(&self, user: &str, reachability: Reachability) {
        self.shared.reach.send_modify(|reach| {
            reach.users.insert(user.to_string(), reachability);
        });
    }

    /// Makes writes wait until [`StoreServer::release_writes`], to line up racing
    /// writers: each then reads the same state before any of them writes.
    pub fn hold_writes(&self) {
        self.shared.writes_held.send_replace(true);
    }

    /// How many writes are waiting.
    pub fn held_writes(&self) -> usize {
        self.shared.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Lets the waiting writes through, in no particular order, and serves later ones
    /// at once.
    pub fn release_writes(&self) {
        self.shared.writes_held.send_replace(false);
    }

    /// How often watches that allow bookmarks get one (default 1 s; the real API
    /// server sends them about once a minute).
    pub fn set_bookmark_interval(&self, interval: Duration) {
        *self.shared.bookmark_interval.lock().unwrap() = interval;
    }
}

async fn serve_connection(shared: Arc<Shared>, socket: tokio::net::TcpStream) {
    let mut reach = shared.reach.subscribe();
    let everyone = reach.borrow_and_update().everyone;
    match everyone {
        Reachability::Up => {}
        Reachability::Refuse => {
            // A reset, as from a port nobody listens on any more.
            let _ = socket.set_zero_linger();
            return;
        }
        Reachability::Hang => {
            let _ = reach.wait_for(|r| r.everyone == Reachability::Up).await;
            return;
        }
    }
    let service_shared = shared.clone();
    let service = service_fn(move |request| {
        let shared = service_shared.clone();
        async move {
            match handle(shared, request).await {
                Some(response) => Ok(response),
                // An error from the service makes hyper drop the connection.
                None => Err(std::io::Error::other("unreachable")),
            }
        }
    });
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(socket), service);
    tokio::select! {
        _ = connection => {}
        _ = reach.wait_for(|r| r.everyone != Reachability::Up) => {}
    }
}

async fn handle(shared: Arc<Shared>, request: Request<hyper::body::Incoming>) -> Answer {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let user = header("authorization")
        .and_then(|auth| auth.strip_prefix("Bearer ").map(str::to_string))
        .unwrap_or_else(|| ANONYMOUS.to_string());
    let content_type = header("content-type");
    let user_agent = header("user-agent").unwrap_or_default();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let raw_query = request.uri().query().unwrap_or_default().to_string();
    let mut record = RequestRecord {
        user: user.clone(),
        method: method.to_string(),
        path: path.clone(),
        query: raw_query.clone(),
        verb: String::new(),
        content_type: content_type.clone(),
        status: 0,
    };

    let mut reach = shared.reach.subscribe();
    let reachable = reach.borrow_and_update().of(&user);
    if reachable != Reachability::Up {
        shared.log.lock().unwrap().push(record);
        if reachable == Reachability::Hang {
            let _ = reach.wait_for(|r| r.of(&user) == Reachability::Up).await;
        }
        return None;
    }

    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return None,
    };
    let query = parse_query(&raw_query);
    let addr = *shared.addr.lock().unwrap();
    if method == Method::GET
        && let Some(document) = discovery::document(&path, addr)
    {
        record.verb = "get".to_string();
        record.status = 200;
        shared.log.lock().unwrap().push(record);
        return Some(json_response(200, &document));
    }
    let response = match parse_path(&path) {
        Err(_) => json_response(
            404,
            &json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "the server could not find the requested resource",
                "reason": "NotFound", "details": {}, "code": 404,
            }),
        ),
        Ok(target) => match verb_of(&method, &target, &query) {
            None => json_response(
                405,
                &json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "the server does not allow this method on the requested resource",
                    "reason": "MethodNotAllowed", "details": {}, "code": 405,
                }),
            ),
            Some(verb) => {
                record.verb = verb.to_string();
                let attributes = Attributes {
                    user: user.clone(),
                    verb: verb.to_string(),
                    group: target.resource.group.to_string(),
                    resource: target.resource.plural.to_string(),
                    subresource: target.subresource.clone(),
                    namespace: target.namespace.clone(),
                    name: target.name.clone(),
                };
                if !shared.policy.lock().unwrap().allows(&attributes) {
                    json_response(403, &policy::forbidden(&attributes))
                } else {
                    if !matches!(verb, "get" | "list" | "watch") {
                        hold(&shared).await;
                    }
                    let manager = manager_of(&query, &user_agent);
                    let request = Incoming {
                        target,
                        verb,
                        query,
                        content_type: content_type.unwrap_or_default(),
                        manager,
                        body,
                        user: user.clone(),
                    };
                    serve_request(&shared, request)
                }
            }
        },
    };
    record.status = response.status().as_u16();
    shared.log.lock().unwrap().push(record);
    Some(response)
}

/// Waits while writes are held.
async fn hold(shared: &Shared) {
    use std::sync::atomic::Ordering;
    let mut held = shared.writes_held.subscribe();
    if !*held.borrow_and_update() {
        return;
    }
    shared.held.fetch_add(1, Ordering::SeqCst);
    let _ = held.wait_for(|held| !*held).await;
    shared.held.fetch_sub(1, Ordering::SeqCst);
}

/// An authorized request.
struct Incoming {
    target: Target,
    verb: &'static str,
    query: HashMap<String, String>,
    content_type: String,
    manager: String,
    body: Bytes,
    user: String,
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body does not parse: {e}")))
}

fn serve_request(shared: &Arc<Shared>, request: Incoming) -> Response<Body> {
    let result = match request.verb {
        "watch" => return watch_response(shared, &request),
        "list" => list(shared, &request),
        _ => write_or_get(shared, &request),
    };
    match result {
        Ok((code, value)) => json_response(code, &value),
        Err(error) => error_response(&error),
    }
}

fn selectors(query: &HashMap<String, String>) -> Result<(Selector, Selector), ApiError> {
    let parse = |name: &str| {
        Selector::parse(query.get(name).map(String::as_str).unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("invalid {name}: {e}")))
    };
    Ok((parse("labelSelector")?, parse("fieldSelector")?))
}

fn list(shared: &Arc<Shared>, request: &Incoming) -> Result<(u16, Value), ApiError> {
    let (labels, fields) = selectors(&request.query)?;
    let target = &request.target;
    let resource = target.resource;
    // A continue token: the list's resourceVersion and the last key served.
    let from = request.query.get("continue").filter(|c| !c.is_empty());
    let (list_rv, after) = match from {
        Some(token) => {
            let (rv, rest) = token
                .split_once(':')
                .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
            (
                rv.parse::<u64>()
                    .map_err(|_| ApiError::bad_request("invalid continue token"))?,
                Some(rest.to_string()),
            )
        }
        None => (0, None),
    };
    let store = shared.store.lock().unwrap();
    let list_rv = if after.is_some() {
        list_rv
    } else {
        store.resource_version()
    };
    let mut items: Vec<Value> = store
        .list(resource, target.namespace.as_deref(), &labels, &fields)
        .into_iter()
        .filter(|object| {
            // Compared as (namespace, name), the order the store lists in.
            after.as_ref().is_none_or(|after| {
                let (after_ns, after_name) = after.split_once('/').unwrap_or(("", after));
                let key = (
                    object["metadata"]["namespace"].as_str().unwrap_or_default(),
                    object["metadata"]["name"].as_str().unwrap_or_default(),
                );
                key > (after_ns, after_name)
            })
        })
        .collect();
    drop(store);
    let limit = request
        .query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if let Some(limit) = limit
        && items.len() > limit
    {
        items.truncate(limit);
        let last = &items[limit - 1]["metadata"];
        metadata["continue"] = json!(format!(
            "{list_rv}:{}/{}",
            last["namespace"].as_str().unwrap_or_default(),
            last["name"].as_str().unwrap_or_default()
        ));
    }
    let items: Vec<Value> = items
        .into_iter()
        .map(|o| served(o, resource, &target.version))
        .collect();
    Ok((
        200,
        json!({
            "kind": format!("{}List", resource.kind),
            "apiVersion": resource.api_version(&target.version),
            "metadata": metadata,
            "items": items,
        }),
    ))
}

/// Removes the keys of strategic-merge directives, at every depth.
fn strip_directives(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|key, _| !key.starts_with('$'));
            map.values_mut().for_each(strip_directives);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// Applies a PATCH body of `content_type` to `object`.
fn patched(
    object: &Value,
    content_type: &str,
    body: &Bytes,
    resource: &ResourceType,
    name: &str,
) -> Result<Value, ApiError> {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let mut result = object.clone();
    match media {
        "application/merge-patch+json" => {
            json_patch::merge(&mut result, &parse_body(body)?);
        }
        // A strategic merge patch is taken as a merge patch: lists are replaced rather
        // than merged by key, and its `$` directives (`$patch`, `$setElementOrder/...`,
        // `$retainKeys`) are dropped rather than obeyed.
        "application/strategic-merge-patch+json" => {
            let mut patch = parse_body(body)?;
            strip_directives(&mut patch);
            json_patch::merge(&mut result, &patch);
        }
        "application/json-patch+json" => {
            let operations: json_patch::Patch = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("the JSON patch does not parse: {e}"))
            })?;
            json_patch::patch(&mut result, &operations).map_err(|e| {
                ApiError::invalid(
                    resource,
                    name,
                    &format!("the JSON patch does not apply: {e}"),
                )
            })?;
        }
        other => {
            return Err(ApiError {
                code: 415,
                reason: "UnsupportedMediaType",
                message: format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml; got {other:?}"
                ),
                details: json!({}),
            });
        }
    }
    Ok(result)
}

fn write_or_get(shared: &Arc<Shared>, request: &Incoming) -> Result<(u16, Value), ApiError> {
    let target = &request.target;
    let resource = target.resource;
    let namespace = ns_of(target);
    let name = target.name.clone().unwrap_or_default();
    let status = target.subresource.as_deref() == Some("status");
    let dry_run = request.query.get("dryRun").is_some_and(|d| d == "All");
    let manager = request.manager.as_str();
    let mut store = shared.store.lock().unwrap();
    let (code, object) = match request.verb {
        "get" => (200, store.get(resource, namespace, &name)?),
        "create" => {
            let object = parse_body(&request.body)?;
            (
                201,
                store.create(
                    resource,
                    target.namespace.as_deref(),
                    object,
                    manager,
                    false,
                    true,
                    dry_run,
                )?,
            )
        }
        "update" => {
            let object = parse_body(&request.body)?;
            (
                200,
                store.update(
                    resource,
                    namespace,
                    &name,
                    status,
                    Some(manager),
                    dry_run,
                    |_, _| Ok(object),
                )?,
            )
        }
        "patch"
            if request
                .content_type
                .starts_with("application/apply-patch+yaml") =>
        {
            let applied: Value = serde_yaml_ng::from_slice(&request.body).map_err(|e| {
                ApiError::bad_request(format!("the apply configuration does not parse: {e}"))
            })?;
            if !request.query.contains_key("fieldManager") {
                return Err(ApiError::bad_request(
                    "PATCH /apply: fieldManager is required for apply requests",
                ));
            }
            let force = flag(&request.query, "force");
            apply(&mut store, request, applied, force, status, dry_run)?
        }
        "patch" => {
            let (content_type, body) = (&request.content_type, &request.body);
            let object = store.update(
                resource,
                namespace,
                &name,
                status,
                Some(manager),
                dry_run,
                |old, _| patched(old, content_type, body, resource, &name),
            )?;
            (200, object)
        }
        "delete" => {
            let options = if request.body.is_empty() {
                Value::Null
            } else {
                parse_body(&request.body)?
            };
            (
                200,
                store.delete(
                    resource,
                    namespace,
                    &name,
                    &options["preconditions"],
                    dry_run,
                )?,
            )
        }
        "deletecollection" => {
            let (labels, fields) = selectors(&request.query)?;
            let doomed = store.list(resource, target.namespace.as_deref(), &labels, &fields);
            let mut deleted = Vec::new();
            for object in doomed {
                let ns = object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let name = object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                deleted.push(served(
                    store.delete(resource, &ns, &name, &Value::Null, dry_run)?,
                    resource,
                    &target.version,
                ));
            }
            let rv = store.resource_version().to_string();
            return Ok((
                200,
                json!({
                    "kind": format!("{}List", resource.kind),
                    "apiVersion": resource.api_version(&target.version),
                    "metadata": {"resourceVersion": rv},
                    "items": deleted,
                }),
            ));
        }
        other => unreachable!("verb {other} is served elsewhere"),
    };
    Ok((code, served(object, resource, &target.version)))
}

/// Server-side apply: creates the object when missing; otherwise merges the
/// configuration unless it would take fields other managers own (`409`, unless
/// `force`).
fn apply(
    store: &mut Store,
    request: &Incoming,
    mut applied: Value,
    force: bool,
    status: bool,
    dry_run: bool,
) -> Result<(u16, Value), ApiError> {
    let target = &request.target;
    let resource = target.resource;
    let namespace = ns_of(target);
    let name = target.name.clone().unwrap_or_default();
    let manager = request.manager.as_str();
    if !applied.is_object() {
        return Err(ApiError::bad_request(
            "the apply configuration is not an object",
        ));
    }
    // The name and namespace come from the path when the configuration leaves them out.
    applied["metadata"]["name"] = json!(name);
    if resource.namespaced {
        applied["metadata"]["namespace"] = json!(namespace);
    }
    if store.get(resource, namespace, &name).is_err() {
        if status {
            return Err(ApiError::not_found(resource, &name));
        }
        let created = store.create(
            resource,
            target.namespace.as_deref(),
            applied,
            manager,
            true,
            true,
            dry_run,
        )?;
        return Ok((201, created));
    }
    let object = store.update(resource, namespace, &name, status, None, dry_run, |old, owners| {
        let conflicts = owners.conflicts(manager, old, &applied);
        if !conflicts.is_empty() && !force {
            let list: Vec<String> = conflicts
                .iter()
                .map(|(owner, path)| format!("conflict with {owner:?}: .{}", path.trim_start_matches('/').replace('/', ".")))
                .collect();
            return Err(ApiError {
                code: 409,
                reason: "Conflict",
                message: format!("Apply failed with {} conflict{}: {}", list.len(), if list.len() == 1 { "" } else { "s" }, list.join("\n")),
                details: json!({"name": name, "kind": resource.plural, "causes": conflicts.iter().map(|(owner, path)| json!({
                    "reason": "FieldManagerConflict",
                    "message": format!("conflict with {owner:?}"),
                    "field": format!(".{}", path.trim_start_matches('/').replace('/', ".")),
                })).collect::<Vec<_>>()}),
            });
        }
        Ok(owners.apply(manager, old, &applied, force))
    })?;
    Ok((200, object))
}

/// An event line.
fn event_line(kind: &str, object: &Value) -> Bytes {
    Bytes::from(format!("{}\n", json!({"type": kind, "object": object})))
}

/// What one watch sends: the filter of its resource, namespace and selectors.
struct Filter {
    resource: &'static ResourceType,
    version: String,
    namespace: Option<String>,
    labels: Selector,
    fields: Selector,
}

impl Filter {
    fn matches(&self, object: &Value) -> bool {
        self.namespace
            .as_ref()
            .is_none_or(|ns| object["metadata"]["namespace"].as_str() == Some(ns.as_str()))
            && self.labels.matches_labels(object)
            && self.fields.matches_fields(object)
    }

    /// The event this watch sees of `change`, if any: an object that starts matching
    /// is ADDED, one that stops is DELETED.
    fn event(&self, change: &Change) -> Option<Bytes> {
        if change.resource != store::key(self.resource) {
            return None;
        }
        let now = self.matches(&change.object);
        let before = change.old.as_ref().is_some_and(|old| self.matches(old));
        let (kind, object) = match (change.kind, before, now) {
            ("DELETED", true, _) => ("DELETED", change.object.clone()),
            ("DELETED", false, _) => return None,
            (_, false, true) => ("ADDED", change.object.clone()),
            (_, true, true) => ("MODIFIED", change.object.clone()),
            (_, true, false) => {
                let mut old = change.old.clone().unwrap_or_default();
                old["metadata"]["resourceVersion"] = json!(change.rv.to_string());
                ("DELETED", old)
            }
            (_, false, false) => return None,
        };
        Some(event_line(
            kind,
            &served(object, self.resource, &self.version),
        ))
    }

    fn bookmark(&self, rv: u64, initial_events_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({
            "kind": self.resource.kind,
            "apiVersion": self.resource.api_version(&self.version),
            "metadata": metadata,
        });
        event_line("BOOKMARK", &object)
    }
}

struct WatchState {
    user: String,
    filter: Filter,
    backlog: VecDeque<Bytes>,
    /// End once the backlog is sent (after a `410`).
    end_after_backlog: bool,
    changes: broadcast::Receiver<Arc<Change>>,
    reach: watch::Receiver<Reach>,
    deadline: tokio::time::Instant,
    bookmarks: Option<tokio::time::Interval>,
    last_rv: u64,
}

fn watch_response(shared: &Arc<Shared>, request: &Incoming) -> Response<Body> {
    let (labels, fields) = match selectors(&request.query) {
        Ok(selectors) => selectors,
        Err(error) => return error_response(&error),
    };
    let target = &request.target;
    let filter = Filter {
        resource: target.resource,
        version: target.version.clone(),
        namespace: target.namespace.clone(),
        labels,
        fields,
    };
    let start = match request.query.get("resourceVersion").map(String::as_str) {
        None | Some("" | "0") => WatchStart::Now,
        Some(rv) => match rv.parse() {
            Ok(rv) => WatchStart::After(rv),
            Err(_) => {
                return error_response(&ApiError::bad_request(format!(
                    "invalid resourceVersion {rv:?}"
                )));
            }
        },
    };
    let initial_events = flag(&request.query, "sendInitialEvents");
    let start = if initial_events {
        WatchStart::Now
    } else {
        start
    };
    let store = shared.store.lock().unwrap();
    let current_rv = store.resource_version();
    let (backlog, changes, end_after_backlog, last_rv) = match store.watch(target.resource, start) {
        Ok((backlog, changes)) => {
            let mut lines: VecDeque<Bytes> = backlog
                .iter()
                .filter_map(|change| filter.event(change))
                .collect();
            if initial_events {
                lines.push_back(filter.bookmark(current_rv, true));
            }
            (lines, changes, false, current_rv)
        }
        Err(compacted) => {
            let rv = request
                .query
                .get("resourceVersion")
                .cloned()
                .unwrap_or_default();
            let gone = json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {rv} ({compacted})"),
                "reason": "Expired", "code": 410,
            });
            (
                VecDeque::from([event_line("ERROR", &gone)]),
                store.subscribe(),
                true,
                current_rv,
            )
        }
    };
    drop(store);
    let timeout = request
        .query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let bookmarks = flag(&request.query, "allowWatchBookmarks").then(|| {
        let interval = *shared.bookmark_interval.lock().unwrap();
        tokio::time::interval_at(tokio::time::Instant::now() + interval, interval)
    });
    let state = WatchState {
        user: request.user.clone(),
        filter,
        backlog,
        end_after_backlog,
        changes,
        reach: shared.reach.subscribe(),
        deadline: tokio::time::Instant::now() + timeout,
        bookmarks,
        last_rv,
    };
    let lines = stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        let line = next_line(&mut state).await;
        match line {
            Some(Ok(bytes)) => Some((Ok(Frame::data(bytes)), Some(state))),
            Some(Err(cut)) => Some((Err(cut), None)),
            None => None,
        }
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(lines)))
        .expect("a valid response")
}

/// The watch's next line; `None` ends it cleanly, an error cuts the connection.
async fn next_line(state: &mut WatchState) -> Option<Result<Bytes, BodyError>> {
    if let Some(line) = state.backlog.pop_front() {
        return Some(Ok(line));
    }
    if state.end_after_backlog {
        return None;
    }
    let user = state.user.clone();
    loop {
        let bookmark = async {
            match state.bookmarks.as_mut() {
                Some(interval) => {
                    interval.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(state.deadline) => return None,
            _ = state.reach.wait_for(|r| r.of(&user) != Reachability::Up) => {
                return Some(Err(std::io::Error::other("the server became unreachable")));
            }
            _ = bookmark => {
                let rv = state.last_rv;
                return Some(Ok(state.filter.bookmark(rv, false)));
            }
            change = state.changes.recv() => match change {
                Ok(change) => {
                    state.last_rv = change.rv;
                    if let Some(line) = state.filter.event(&change) {
                        return Some(Ok(line));
                    }
                }
                // A watcher too slow for the broadcast is dropped, as the API
                // server's cache drops one; its client watches again.
                Err(_) => return None,
            }
        }
    }
}

/// A client of the server at `addr`, sending `user` as its bearer token.
pub fn client(addr: SocketAddr, user: Option<&str>) -> kube::Client {
    let mut config = kube::Config::new(format!("http://{addr}").parse().expect("a valid URL"));
    if let Some(user) = user {
        config.auth_info.token = Some(secrecy::SecretString::from(user.to_string()));
    }
    kube::Client::try_from(config).expect("a client")
}

/// A kubeconfig file's text for the server at `addr` with `user` as the token.
pub fn kubeconfig(addr: SocketAddr, user: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: http://{addr}\n\
         contexts:\n- name: lab\n  context:\n    cluster: lab\n    user: {user}\n\
         current-context: lab\nusers:\n- name: {user}\n  user:\n    token: {user}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches() {
        let service = resources::by_path("", "v1", "services").unwrap();
        let object = json!({"spec": {"ports": [{"port": 80}, {"port": 443}], "type": "ClusterIP"}});
        let strategic = Bytes::from(
            json!({"$setElementOrder/ports": [{"port": 443}], "spec": {"ports": [{"port": 443}], "type": null}})
                .to_string(),
        );
        let result = patched(
            &object,
            "application/strategic-merge-patch+json",
            &strategic,
            service,
            "x",
        )
        .unwrap();
        assert_eq!(result, json!({"spec": {"ports": [{"port": 443}]}}));
        let json_patch = Bytes::from(
            json!([{"op": "replace", "path": "/spec/type", "value": "NodePort"}]).to_string(),
        );
        let result = patched(
            &object,
            "application/json-patch+json",
            &json_patch,
            service,
            "x",
        )
        .unwrap();
        assert_eq!(result["spec"]["type"], "NodePort");
        let error = patched(&object, "text/plain", &json_patch, service, "x").unwrap_err();
        assert_eq!(error.code, 415);
    }
}
