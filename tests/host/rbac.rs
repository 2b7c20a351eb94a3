//! The RBAC in `manifests/base/rbac.yaml` is enough and no more than that: the stateful API
//! server enforces exactly its Roles and ClusterRoles (everything else is 403), and
//! the agent's Kubernetes side — the proxy source, the Node and MetalLB watches, the
//! LoadBalancer IPAM with its Lease and Events — works without a single refusal.

use std::sync::Arc;
use std::time::Duration;

use ipvs_proxy::lb::ipam::{IpamOptions, spawn_ipam};
use ipvs_proxy::observe::metrics::Metrics;
use ipvs_proxy::source::SourceEvent;
use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize;
use serde_json::{Value, json};
use testkit::store_server::{AccessPolicy, StoreServer};
use tokio::sync::{mpsc, watch};

/// The agent's ServiceAccount, as the API server names it.
const AGENT: &str = "system:serviceaccount:kube-system:ipvs-proxy";

fn rbac_objects() -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/base/rbac.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).unwrap())
        .filter(|value| !value.is_null())
        .collect()
}

#[tokio::test]
async fn the_agent_needs_no_more_than_its_rbac_manifest() {
    let server = StoreServer::with_objects([
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}}),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "web", "namespace": "shop"},
               "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.7",
                        "ports": [{"port": 80, "protocol": "TCP"}]}}),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
               "metadata": {"name": "bgp-password", "namespace": "metallb-system"},
               "data": {"password": "czNjcmV0"}}),
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "bgp-password", "namespace": "kube-system"},
               "data": {"password": "czNjcmV0"}}),
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
               "metadata": {"name": "public", "namespace": "metallb-system"},
               "spec": {"addresses": ["198.51.100.10/31"]}}),
    ]);
    server.serve().await;
    server.set_policy(AccessPolicy::from_rbac(&rbac_objects()));
    let client = server.client_as(AGENT);

    // A forbidden request is refused: the policy is in force.
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client.clone(), "kube-system");
    assert!(secrets.list(&Default::default()).await.is_err());

    // BGP passwords: a BGPPeer's passwordSecret is read by name in MetalLB's namespace,
    // as the agent's announcer reads it; no other Secret, and no listing.
    let metallb_secrets: kube::Api<Secret> =
        kube::Api::namespaced(client.clone(), "metallb-system");
    let password = metallb_secrets.get("bgp-password").await.unwrap();
    assert_eq!(password.data.unwrap()["password"].0, b"s3cret");
    assert!(metallb_secrets.list(&Default::default()).await.is_err());
    assert!(secrets.get("bgp-password").await.is_err());

    // The proxy's source: Services and EndpointSlices.
    let (events_tx, mut events) = mpsc::channel(16);
    let source = ipvs_proxy::source::kubernetes::spawn_with_client(client.clone(), events_tx);
    // The API server's own Service may come first on its own; then the snapshot.
    let mut snapshot = None;
    while snapshot.is_none() {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Some(SourceEvent::Early { .. })) => {}
            Ok(Some(event)) => snapshot = Some(event),
            other => panic!("no snapshot: {other:?}"),
        }
    }
    let snapshot = snapshot.unwrap();
    assert!(matches!(snapshot, SourceEvent::Snapshot { ref services, .. } if services.len() == 1));

    // MetalLB's objects and every Node.
    let (mut metallb, metallb_task) =
        ipvs_proxy::source::metallb::spawn_metallb_watch(client.clone(), "metallb-system");
    let objects = tokio::time::timeout(Duration::from_secs(8), metallb.wait_for(|o| o.is_some()))
        .await
        .expect("every MetalLB kind listed before the 10 s fallback")
        .unwrap()
        .clone()
        .unwrap();
    assert_eq!(objects.pools.len(), 1);
    let (mut nodes, nodes_task) =
        ipvs_proxy::source::cluster_nodes::spawn_nodes_watch(client.clone());
    tokio::time::timeout(Duration::from_secs(5), nodes.wait_for(|n| n.is_some()))
        .await
        .unwrap()
        .unwrap();

    // The IPAM: Lease in kube-system, Service status and annotation, Events.
    let config = metallb_config::validate(&objects).config;
    let (_config_tx, config_rx) = watch::channel(Arc::new(config));
    let mut options = IpamOptions::new("node-a");
    options.lease_duration = Duration::from_secs(2);
    options.lease_grace = Duration::from_secs(1);
    options.confirm_interval = Duration::from_millis(200);
    options.settle = Duration::from_millis(20);
    let ipam = spawn_ipam(client, options, config_rx, Arc::new(Metrics::new()));
    let path = "/api/v1/namespaces/shop/services/web";
    server
        .wait_for(path, Duration::from_secs(15), |service| {
            service.is_some_and(|s| {
                s["status"]["loadBalancer"]["ingress"][0]["ip"] == "198.51.100.10"
                    && s["metadata"]["annotations"]["metallb.io/ip-allocated-from-pool"] == "public"
            })
        })
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server
        .list("/apis/events.k8s.io/v1/namespaces/shop/events")
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no Event was written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ipam.stop().await.unwrap();
    source.abort();
    metallb_task.abort();
    nodes_task.abort();

    // Not one request of the agent was refused (the Secret requests above aside).
    let refused: Vec<String> = server
        .requests()
        .iter()
        .filter(|r| r.user == AGENT && r.status == 403 && !r.path.contains("/secrets"))
        .map(|r| format!("{} {}?{} ({})", r.method, r.path, r.query, r.verb))
        .collect();
    assert!(
        refused.is_empty(),
        "refused by the RBAC manifest: {refused:#?}"
    );
}
