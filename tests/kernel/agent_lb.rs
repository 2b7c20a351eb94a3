//! LoadBalancer addresses without an API server: the agent in-process with the static
//! source reads MetalLB's objects from the manifests directory and allocates the
//! addresses itself (every node computes the same), and the kernel serves them.

use std::time::Duration;

use netns_lab::wait_until;
use serde_json::{Value, json};
use testkit::cluster::{Backend, Cluster};
use testkit::k8s::{READY, endpoint, http_port};

fn pool(name: &str, addresses: &[&str], extra: Value) -> Value {
    let mut spec = json!({"addresses": addresses});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
           "metadata": {"name": name, "namespace": "metallb-system"}, "spec": spec})
}

fn lb_service(name: &str, cluster_ip: &str, annotations: Value) -> Value {
    let mut service = testkit::k8s::service(
        "lb",
        name,
        json!({"type": "LoadBalancer", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
               "ports": [http_port(None)]}),
    );
    service["metadata"]["annotations"] = annotations;
    service
}

fn node_object(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
           "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
}

/// The node MetalLB's speaker elects for `ip`: sha256("<node>#<ip>"), smallest first.
fn metallb_owner(nodes: &[&str], ip: &str) -> String {
    use sha2::{Digest, Sha256};
    nodes
        .iter()
        .min_by_key(|node| Sha256::digest(format!("{node}#{ip}").as_bytes()).to_vec())
        .unwrap()
        .to_string()
}

fn services_output(cluster: &Cluster, args: &str) -> String {
    let out = cluster.node().exec(&format!(
        "RUST_LOG=off {} services --socket {} {args}",
        crate::AGENT,
        cluster.status_socket().display()
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn services_json(cluster: &Cluster) -> Value {
    serde_json::from_str(&services_output(cluster, "--json")).unwrap()
}

fn services_text(cluster: &Cluster) -> String {
    services_output(cluster, "")
}

#[test]
#[ignore = "needs the kernel lab"]
fn static_source_allocates_from_metallb_pools_and_the_kernel_serves_the_addresses() {
    let cluster = Cluster::new("lba", 1, Backend::PeerEcho);
    cluster.set_config(testkit::LAB_AGENT_CONFIG);
    let pod = cluster.ip(0).to_string();
    cluster.write(
        "metallb.json",
        &[
            pool("lan", &["192.168.50.200-192.168.50.201"], json!({})),
            pool(
                "manual",
                &["192.168.50.210/32"],
                json!({"autoAssign": false}),
            ),
            json!({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
                   "metadata": {"name": "lan", "namespace": "metallb-system"},
                   "spec": {"ipAddressPools": ["lan"]}}),
            node_object(testkit::cluster::NODE_NAME),
            node_object("node-b"),
            node_object("node-c"),
        ],
    );
    cluster.write(
        "services.json",
        &[
            lb_service("web", "10.96.0.41", json!({})),
            lb_service(
                "pinned",
                "10.96.0.42",
                json!({"metallb.io/loadBalancerIPs": "192.168.50.210"}),
            ),
            testkit::k8s::slice("lb", "web-1", "web", vec![endpoint(&pod, "node", READY)]),
            testkit::k8s::slice(
                "lb",
                "pinned-1",
                "pinned",
                vec![endpoint(&pod, "node", READY)],
            ),
        ],
    );
    let _agent = cluster.start_in_process();

    assert!(
        wait_until(Duration::from_secs(20), || {
            let table = cluster.ipvs();
            table.contains("192.168.50.200:80") && table.contains("192.168.50.210:80")
        }),
        "the allocated addresses are virtual servers:\n{}\n{}",
        cluster.ipvs(),
        cluster.log()
    );
    assert!(
        cluster.wait_for("http://192.168.50.200/", Duration::from_secs(10)),
        "{}",
        cluster.log()
    );
    assert!(cluster.wait_for("http://192.168.50.210/", Duration::from_secs(10)));

    // `ipvs-proxy services` shows who announces each address: the layer-2 owner is
    // the node MetalLB's speaker would pick (the smallest sha256("<node>#<ip>")), and
    // `pinned`'s pool has no advertisement.
    let report = services_json(&cluster);
    let rows = report["load_balancers"]
        .as_array()
        .expect("a load-balancer section")
        .clone();
    let row = |address: &str| {
        rows.iter()
            .find(|row| row["address"] == address)
            .unwrap_or_else(|| panic!("{address} in {rows:#?}"))
            .clone()
    };
    let web = row("192.168.50.200");
    assert_eq!(web["name"], "web");
    assert_eq!(web["pool"], "lan");
    let expected = metallb_owner(
        &[testkit::cluster::NODE_NAME, "node-b", "node-c"],
        "192.168.50.200",
    );
    assert_eq!(web["layer2"]["owner"], expected.as_str(), "{web:#}");
    assert_eq!(web["layer2"]["eligible"].as_array().unwrap().len(), 3);
    let pinned = row("192.168.50.210");
    assert_eq!(pinned["pool"], "manual");
    assert!(pinned["layer2"]["owner"].is_null());
    assert!(pinned["layer2"]["why"].as_str().is_some(), "{pinned:#}");
    let text = services_text(&cluster);
    assert!(
        text.contains("192.168.50.200") && text.contains(&expected),
        "{text}"
    );

    // A third Service while `lan` has one address left gets it; a fourth finds the
    // pool exhausted and is not served (the others are undisturbed).
    let mut services = vec![
        lb_service("web", "10.96.0.41", json!({})),
        lb_service(
            "pinned",
            "10.96.0.42",
            json!({"metallb.io/loadBalancerIPs": "192.168.50.210"}),
        ),
        lb_service("api", "10.96.0.43", json!({})),
        testkit::k8s::slice("lb", "web-1", "web", vec![endpoint(&pod, "node", READY)]),
        testkit::k8s::slice(
            "lb",
            "pinned-1",
            "pinned",
            vec![endpoint(&pod, "node", READY)],
        ),
        testkit::k8s::slice("lb", "api-1", "api", vec![endpoint(&pod, "node", READY)]),
    ];
    cluster.write("services.json", &services);
    assert!(
        wait_until(Duration::from_secs(20), || cluster
            .ipvs()
            .contains("192.168.50.201:80")),
        "{}",
        cluster.ipvs()
    );
    services.push(lb_service("late", "10.96.0.44", json!({})));
    services.push(testkit::k8s::slice(
        "lb",
        "late-1",
        "late",
        vec![endpoint(&pod, "node", READY)],
    ));
    cluster.write("services.json", &services);
    assert!(
        wait_until(Duration::from_secs(20), || cluster
            .ipvs()
            .contains("10.96.0.44:80")),
        "{}",
        cluster.ipvs()
    );
    let table = cluster.ipvs();
    for kept in [
        "192.168.50.200:80",
        "192.168.50.201:80",
        "192.168.50.210:80",
    ] {
        assert!(table.contains(kept), "{kept} kept:\n{table}");
    }
    assert!(
        cluster.log().contains("no free"),
        "the refusal is logged:\n{}",
        cluster.log()
    );

    // Deleting `web` frees .200, which `late` then gets; `api` keeps .201.
    services.retain(|object| object["metadata"]["name"] != "web");
    cluster.write("services.json", &services);
    assert!(
        wait_until(Duration::from_secs(20), || {
            let table = cluster.ipvs();
            table.contains("192.168.50.200:80") && !table.contains("10.96.0.41:80")
        }),
        "{}",
        cluster.ipvs()
    );
    assert!(cluster.ipvs().contains("192.168.50.201:80"));
    assert!(cluster.wait_for("http://192.168.50.200/", Duration::from_secs(10)));
}
