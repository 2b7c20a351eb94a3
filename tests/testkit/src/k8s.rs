//! Kubernetes objects for tests: the captured fixtures in `tests/fixtures/k8s`, and
//! JSON builders for Services and EndpointSlices as the static source and the API
//! server take them. One signature each, so tests read alike.

use serde_json::{Value, json};

/// The directory of captured Kubernetes objects, `tests/fixtures/k8s`.
pub fn fixtures_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/k8s")
}

/// The fixture file `name` of `tests/fixtures/k8s`, parsed as `T` (a `Value`, a
/// `Service`, an `EndpointSlice`, ...); panics naming the file when it does not parse.
pub fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = fixtures_dir().join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// A Service `namespace/name` with `spec` (a JSON object).
pub fn service(namespace: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    })
}

/// `service` with `status.loadBalancer.ingress` set to `ips`.
pub fn with_ingress(mut service: Value, ips: &[&str]) -> Value {
    let ingress: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
    service["status"] = json!({"loadBalancer": {"ingress": ingress}});
    service
}

/// A ClusterIP Service `namespace/name` at `vip` with [`http_port`] (no NodePort).
pub fn cluster_ip_service(namespace: &str, name: &str, vip: &str) -> Value {
    service(
        namespace,
        name,
        json!({"clusterIP": vip, "clusterIPs": [vip], "ports": [http_port(None)]}),
    )
}

/// The Service port `http`: 80/TCP to target port 8080, with `node_port` if given.
pub fn http_port(node_port: Option<u16>) -> Value {
    let mut port = json!({"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"});
    if let Some(node_port) = node_port {
        port["nodePort"] = json!(node_port);
    }
    port
}

/// An endpoint's (ready, serving, terminating) conditions.
pub type Conditions = (bool, bool, bool);

/// A ready endpoint.
pub const READY: Conditions = (true, true, false);
/// A terminating endpoint that still serves.
pub const SERVING_TERMINATING: Conditions = (false, true, true);

/// An endpoint `ip` on node `node` with the given conditions.
pub fn endpoint(ip: &str, node: &str, conditions: Conditions) -> Value {
    let (ready, serving, terminating) = conditions;
    json!({"addresses": [ip], "nodeName": node,
           "conditions": {"ready": ready, "serving": serving, "terminating": terminating}})
}

/// Ready endpoints `ips`, all on node `node`.
pub fn ready_endpoints(ips: &[&str], node: &str) -> Vec<Value> {
    ips.iter().map(|ip| endpoint(ip, node, READY)).collect()
}

/// An IPv4 EndpointSlice `namespace/name` of Service `service`, port `http`
/// 8080/TCP (as [`http_port`] targets), holding `endpoints`.
pub fn slice(namespace: &str, name: &str, service: &str, endpoints: Vec<Value>) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

/// Objects as the text of a manifest file: JSON documents separated by `---`.
pub fn manifest(objects: &[Value]) -> String {
    let text: Vec<String> = objects
        .iter()
        .map(|o| serde_json::to_string_pretty(o).expect("a JSON value serializes"))
        .collect();
    text.join("\n---\n")
}
