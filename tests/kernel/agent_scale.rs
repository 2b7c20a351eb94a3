//! Scale, end to end: `ipvs-proxy run` with 1,000 ClusterIP Services from the static
//! source. Asserts on what the kernel holds (`ipvsadm`, `ip`) and on a client's request
//! through one of the Services; prints the time to the first full sync.

use std::time::{Duration, Instant};

use netns_lab::{Netns, Topology, wait_until};
use serde_json::{Value, json};

const AGENT: &str = env!("CARGO_BIN_EXE_ipvs-proxy");
const SERVICES: usize = 1000;

/// The ClusterIP of Service number `i`: 10.96.<1 + i/250>.<1 + i%250>.
fn cluster_ip(i: usize) -> String {
    format!("10.96.{}.{}", 1 + i / 250, 1 + i % 250)
}

fn manifests(endpoint: &str) -> String {
    let mut objects: Vec<Value> = Vec::with_capacity(2 * SERVICES);
    for i in 0..SERVICES {
        let name = format!("svc-{i}");
        let ip = cluster_ip(i);
        objects.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "scale"},
            "spec": {"clusterIP": ip, "clusterIPs": [ip],
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
        }));
        objects.push(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-1"), "namespace": "scale",
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [endpoint], "nodeName": "node",
                           "conditions": {"ready": true}}],
        }));
    }
    objects
        .iter()
        .map(|o| serde_json::to_string(o).unwrap())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// How many virtual servers `ipvsadm -Ln` lists in `ns`.
fn virtual_servers(ns: &Netns) -> usize {
    ns.sh("ipvsadm -Ln")
        .lines()
        .filter(|l| l.starts_with("TCP ") || l.starts_with("UDP ") || l.starts_with("SCTP "))
        .count()
}

#[test]
#[ignore = "needs the kernel lab"]
fn a_thousand_services_are_synced_and_answer() {
    let Topology {
        client,
        node,
        mut pods,
    } = Topology::builder("scale-client").build();
    let pod = pods.remove(0).ns;
    let _server = pod.http_server(8080, "scale-pod");

    let dir = std::env::temp_dir().join(format!("scale-{}", node.name()));
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    std::fs::write(
        dir.join("manifests/services.json"),
        manifests("10.244.0.10"),
    )
    .unwrap();
    std::fs::write(
        dir.join("config.yaml"),
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
         mode: ipvs\nipvs:\n  syncPeriod: 30s\nmetricsBindAddress: 127.0.0.1:10249\n",
    )
    .unwrap();

    let started = Instant::now();
    let _agent = node.spawn(&format!(
        "{AGENT} run --config {} --manifests {} --hostname-override node",
        dir.join("config.yaml").display(),
        dir.join("manifests").display()
    ));
    let synced = wait_until(Duration::from_secs(300), || {
        virtual_servers(&node) >= SERVICES
    });
    let elapsed = started.elapsed();
    assert!(
        synced,
        "only {} of {SERVICES} virtual servers after {elapsed:?}",
        virtual_servers(&node)
    );
    println!(
        "first_sync_seconds_{SERVICES}_services: {:.2} (agent start to ipvsadm listing all, polled)",
        elapsed.as_secs_f64()
    );
    assert_eq!(virtual_servers(&node), SERVICES);

    let addresses = node.sh("ip -o -4 addr show dev kube-ipvs0");
    assert_eq!(
        addresses.lines().count(),
        SERVICES,
        "kube-ipvs0 should hold one address per ClusterIP"
    );
    let table = node.sh("ipvsadm -Ln");
    for i in [0, SERVICES / 2, SERVICES - 1] {
        let vip = format!("{}:80", cluster_ip(i));
        assert!(table.contains(&vip), "{vip} missing");
    }

    // A ClusterIP at the end of the range answers a client.
    let url = format!("http://{}/", cluster_ip(SERVICES - 1));
    let answered = wait_until(Duration::from_secs(60), || {
        client
            .exec(&format!("curl -sS --max-time 3 {url}"))
            .stdout
            .starts_with(b"scale-pod")
    });
    assert!(answered, "{url} never answered");
    let _ = std::fs::remove_dir_all(&dir);
}
