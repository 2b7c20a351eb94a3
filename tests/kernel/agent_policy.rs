//! Traffic policies and endpoint termination, end to end: the agent in-process with the
//! static source on a node namespace, pods behind a bridge, a client namespace outside.
//! Every assertion is on what the client or a backend observes, what the health
//! servers answer, or what the kernel holds (`ipvsadm`).

use std::time::Duration;

use netns_lab::wait_until;
use serde_json::{Value, json};
use testkit::cluster::{Backend, Cluster};
use testkit::k8s::{READY, SERVING_TERMINATING, endpoint, http_port, with_ingress};

/// The agent in-process (`testkit::agent`), in the node namespace of a cluster whose
/// pods sit on a bridge, with `extra_config` appended to the lab configuration.
fn cluster(pods: usize, backend: Backend, extra_config: &str) -> Cluster {
    let cluster = Cluster::new("pol", pods, backend);
    cluster.set_config(&format!("{}{extra_config}", testkit::LAB_AGENT_CONFIG));
    cluster
        .client()
        .sh("ip route add 10.96.0.0/12 via 192.168.50.1");
    cluster
}

/// A Service in namespace `pol`, with a load balancer `status` if given.
fn service(name: &str, spec: Value, status: Option<&str>) -> Value {
    let service = testkit::k8s::service("pol", name, spec);
    match status {
        Some(ip) => with_ingress(service, &[ip]),
        None => service,
    }
}

/// An EndpointSlice in namespace `pol`.
fn slice(name: &str, service: &str, endpoints: Vec<Value>) -> Value {
    testkit::k8s::slice("pol", name, service, endpoints)
}

#[test]
#[ignore = "needs the kernel lab"]
fn external_traffic_policy_local_keeps_the_client_address_and_reports_local_endpoints() {
    let cluster = cluster(2, Backend::PeerEcho, "");
    let (pod0, pod1) = (cluster.ip(0).to_string(), cluster.ip(1).to_string());
    cluster.write(
        "policy.json",
        &[
            // Its only endpoint runs on this node.
            service(
                "local",
                json!({"type": "LoadBalancer", "clusterIP": "10.96.0.21", "clusterIPs": ["10.96.0.21"],
                       "externalTrafficPolicy": "Local", "healthCheckNodePort": 32001,
                       "ports": [http_port(Some(30081))]}),
                Some("192.168.50.101"),
            ),
            slice("local-1", "local", vec![endpoint(&pod0, "node", READY)]),
            // Its only endpoint runs on another node. (The API allocates a
            // healthCheckNodePort only to LoadBalancer Services.)
            service(
                "remote",
                json!({"type": "LoadBalancer", "clusterIP": "10.96.0.22", "clusterIPs": ["10.96.0.22"],
                       "externalTrafficPolicy": "Local", "healthCheckNodePort": 32002,
                       "ports": [http_port(Some(30082))]}),
                Some("192.168.50.102"),
            ),
            slice("remote-1", "remote", vec![endpoint(&pod1, "other", READY)]),
            // internalTrafficPolicy Local with no endpoint on this node.
            service(
                "internal",
                json!({"clusterIP": "10.96.0.23", "clusterIPs": ["10.96.0.23"],
                       "internalTrafficPolicy": "Local", "ports": [http_port(None)]}),
                None,
            ),
            slice("internal-1", "internal", vec![endpoint(&pod1, "other", READY)]),
        ],
    );
    let _agent = cluster.start_in_process();

    // The backend sees the client's own address through the NodePort and the LB IP.
    for url in [
        "http://192.168.50.1:30081/cgi-bin/peer",
        "http://192.168.50.101/cgi-bin/peer",
    ] {
        assert!(
            cluster.wait_for(url, Duration::from_secs(60)),
            "{url} never answered; IPVS:\n{}",
            cluster.ipvs()
        );
        let peer = cluster.curl(url).unwrap_or_default();
        assert!(
            peer == "192.168.50.2" || peer == "[::ffff:192.168.50.2]",
            "{url}: the backend saw {peer:?}, not the client's address 192.168.50.2"
        );
    }

    // Health check NodePorts: 200 with one local endpoint, 503 with none.
    let (status, body) = cluster.health(32001);
    assert_eq!(status, 200, "health of 'local': {body}");
    let body: Value = serde_json::from_str(&body).expect("health answer is JSON");
    assert_eq!(body["localEndpoints"], 1, "{body}");
    assert_eq!(body["service"]["name"], "local", "{body}");
    let (status, body) = cluster.health(32002);
    assert_eq!(status, 503, "health of 'remote': {body}");
    let body: Value = serde_json::from_str(&body).expect("health answer is JSON");
    assert_eq!(body["localEndpoints"], 0, "{body}");

    // The remote Service's ClusterIP reaches its endpoint (the policy is external only)...
    assert!(
        cluster.wait_for("http://10.96.0.22/", Duration::from_secs(60)),
        "ClusterIP of 'remote' never answered; IPVS:\n{}",
        cluster.ipvs()
    );
    // ...but from outside through the NodePort or the LB IP, no local endpoint means
    // no answer.
    for url in ["http://192.168.50.1:30082/", "http://192.168.50.102/"] {
        assert_eq!(
            cluster.curl(url),
            None,
            "{url}: externalTrafficPolicy Local without a local endpoint answered"
        );
    }
    assert_eq!(
        cluster.real_server("192.168.50.1:30082", &format!("{pod1}:8080")),
        None,
        "{}",
        cluster.ipvs()
    );

    // internalTrafficPolicy Local with no local endpoint: the ClusterIP drops.
    assert!(
        cluster.ipvs().contains("10.96.0.23:80"),
        "{}",
        cluster.ipvs()
    );
    assert_eq!(
        cluster.real_server("10.96.0.23:80", &format!("{pod1}:8080")),
        None,
        "{}",
        cluster.ipvs()
    );
    assert_eq!(cluster.curl("http://10.96.0.23/"), None);
}

#[test]
#[ignore = "needs the kernel lab"]
fn a_removed_endpoint_drains_at_weight_zero_until_its_connection_closes() {
    let cluster = cluster(2, Backend::Named, "");
    let (pod0, pod1) = (cluster.ip(0).to_string(), cluster.ip(1).to_string());
    let web = |endpoints: Vec<Value>| {
        [
            service(
                "web",
                json!({"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                       "ports": [http_port(None)]}),
                None,
            ),
            slice("web-1", "web", endpoints),
        ]
    };
    cluster.write("web.json", &web(vec![endpoint(&pod0, "node", READY)]));
    let _agent = cluster.start_in_process();
    assert!(
        cluster.wait_for("http://10.96.0.10/", Duration::from_secs(60)),
        "{}",
        cluster.ipvs()
    );

    // A long-lived connection through the VIP: nc sends nothing and keeps stdin open,
    // busybox httpd waits for the request line.
    let connection = cluster
        .client()
        .spawn("sh -c 'sleep 600 | busybox nc 10.96.0.10 80'");
    let vip = "10.96.0.10:80";
    let old = format!("{pod0}:8080");
    let new = format!("{pod1}:8080");
    assert!(
        wait_until(Duration::from_secs(20), || cluster
            .real_server(vip, &old)
            .is_some_and(|(_, active)| active == 1)),
        "the connection never showed in IPVS:\n{}",
        cluster.ipvs()
    );

    // The endpoint goes away and another takes its place.
    cluster.write("web.json", &web(vec![endpoint(&pod1, "node", READY)]));
    assert!(
        wait_until(Duration::from_secs(30), || cluster
            .real_server(vip, &new)
            .is_some()),
        "new endpoint never programmed:\n{}",
        cluster.ipvs()
    );
    assert_eq!(
        cluster.real_server(vip, &old),
        Some((0, 1)),
        "the removed endpoint should drain at weight 0:\n{}",
        cluster.ipvs()
    );
    // Still draining after more than one sync period; new requests go to the new pod.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(
        cluster.real_server(vip, &old),
        Some((0, 1)),
        "{}",
        cluster.ipvs()
    );
    assert_eq!(cluster.curl("http://10.96.0.10/").as_deref(), Some("pod-1"));

    // The connection closes: the drained real server is deleted.
    drop(connection);
    assert!(
        wait_until(Duration::from_secs(30), || cluster
            .real_server(vip, &old)
            .is_none()),
        "drained real server not deleted after its connection closed:\n{}",
        cluster.ipvs()
    );
}

#[test]
#[ignore = "needs the kernel lab"]
fn a_draining_real_server_is_deleted_after_max_drain_seconds() {
    let cluster = cluster(
        2,
        Backend::Named,
        "---\napiVersion: ipvs-proxy.io/v1alpha1\nkind: IpvsProxyConfiguration\nmaxDrainSeconds: 10\n",
    );
    let (pod0, pod1) = (cluster.ip(0).to_string(), cluster.ip(1).to_string());
    let web = |endpoints: Vec<Value>| {
        [
            service(
                "web",
                json!({"clusterIP": "10.96.0.11", "clusterIPs": ["10.96.0.11"],
                       "ports": [http_port(None)]}),
                None,
            ),
            slice("web-1", "web", endpoints),
        ]
    };
    cluster.write("web.json", &web(vec![endpoint(&pod0, "node", READY)]));
    let _agent = cluster.start_in_process();
    assert!(
        cluster.wait_for("http://10.96.0.11/", Duration::from_secs(60)),
        "{}",
        cluster.ipvs()
    );
    let _connection = cluster
        .client()
        .spawn("sh -c 'sleep 600 | busybox nc 10.96.0.11 80'");
    let vip = "10.96.0.11:80";
    let old = format!("{pod0}:8080");
    assert!(
        wait_until(Duration::from_secs(20), || cluster
            .real_server(vip, &old)
            .is_some_and(|(_, active)| active == 1)),
        "the connection never showed in IPVS:\n{}",
        cluster.ipvs()
    );
    cluster.write("web.json", &web(vec![endpoint(&pod1, "node", READY)]));
    assert!(
        wait_until(Duration::from_secs(30), || cluster
            .real_server(vip, &old)
            .is_some_and(|(weight, _)| weight == 0)),
        "the removed endpoint never drained:\n{}",
        cluster.ipvs()
    );
    // The connection stays open, yet the bound removes the real server.
    assert!(
        wait_until(Duration::from_secs(40), || cluster
            .real_server(vip, &old)
            .is_none()),
        "still draining after maxDrainSeconds:\n{}",
        cluster.ipvs()
    );
}

#[test]
#[ignore = "needs the kernel lab"]
fn serving_terminating_endpoints_are_used_only_without_ready_ones() {
    let cluster = cluster(2, Backend::Named, "");
    let (pod0, pod1) = (cluster.ip(0).to_string(), cluster.ip(1).to_string());
    let web = |endpoints: Vec<Value>| {
        [
            service(
                "web",
                json!({"clusterIP": "10.96.0.12", "clusterIPs": ["10.96.0.12"],
                       "ports": [http_port(None)]}),
                None,
            ),
            slice("web-1", "web", endpoints),
        ]
    };
    cluster.write(
        "web.json",
        &web(vec![
            endpoint(&pod0, "node", SERVING_TERMINATING),
            endpoint(&pod1, "node", READY),
        ]),
    );
    let _agent = cluster.start_in_process();
    let vip = "10.96.0.12:80";
    assert!(
        cluster.wait_for("http://10.96.0.12/", Duration::from_secs(60)),
        "{}",
        cluster.ipvs()
    );
    assert_eq!(
        cluster.real_server(vip, &format!("{pod1}:8080")),
        Some((1, 0))
    );
    assert_eq!(
        cluster.real_server(vip, &format!("{pod0}:8080")),
        None,
        "a terminating endpoint is used although a ready one exists:\n{}",
        cluster.ipvs()
    );

    // The ready endpoint goes: the terminating one still serves.
    cluster.write(
        "web.json",
        &web(vec![endpoint(&pod0, "node", SERVING_TERMINATING)]),
    );
    assert!(
        wait_until(Duration::from_secs(30), || cluster
            .real_server(vip, &format!("{pod0}:8080"))
            .is_some_and(|(weight, _)| weight > 0)),
        "serving terminating endpoint not used as the fallback:\n{}",
        cluster.ipvs()
    );
    assert!(
        wait_until(Duration::from_secs(30), || cluster
            .curl("http://10.96.0.12/")
            .as_deref()
            == Some("pod-0")),
        "{}",
        cluster.ipvs()
    );
}
