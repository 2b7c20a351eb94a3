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
        wait_until(Duration::from_secs(60), || {
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
        wait_until(Duration::from_secs(60), || cluster
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
        wait_until(Duration::from_secs(60), || cluster
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
        wait_until(Duration::from_secs(60), || {
            let table = cluster.ipvs();
            table.contains("192.168.50.200:80") && !table.contains("10.96.0.41:80")
        }),
        "{}",
        cluster.ipvs()
    );
    assert!(cluster.ipvs().contains("192.168.50.201:80"));
    assert!(cluster.wait_for("http://192.168.50.200/", Duration::from_secs(10)));
}

/// The agent binary against an in-process API server (the real list/watch protocol,
/// status PATCH, Leases): the agent's IPAM leads, writes the address and pool into the
/// Service, the agent programs and announces it, and an invalid MetalLB object gets
/// an Event.
#[test]
#[ignore = "needs the kernel lab"]
fn with_an_api_server_the_agent_allocates_writes_status_and_serves_the_address() {
    use netns_lab::Topology;
    use testkit::store_server::StoreServer;

    let Topology {
        client,
        node,
        mut pods,
    } = Topology::builder("lbk")
        .client_net("192.168.60")
        .pod_net("192.168.50")
        .build();
    let host = pods.remove(0).ns;
    let _web = host.http_server(8080, "web");
    let dir = std::env::temp_dir().join(format!("lbk-{}", node.name()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.yaml"),
        format!(
            "{}---\napiVersion: ipvs-proxy.io/v1alpha1\nkind: IpvsProxyConfiguration\n\
             loadBalancer:\n  ipamLeaseNamespace: metallb-system\n",
            testkit::LAB_AGENT_CONFIG
        ),
    )
    .unwrap();

    let mut web = testkit::k8s::service(
        "lab",
        "web",
        json!({"type": "LoadBalancer", "clusterIP": "10.96.0.51", "clusterIPs": ["10.96.0.51"],
               "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}),
    );
    web["metadata"]["uid"] = json!("6f1b2c3d-0000-4000-8000-000000000051");
    let server = StoreServer::with_objects([
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "lab"}}),
        node_object("node-a"),
        node_object("node-b"),
        pool("public", &["203.0.113.10-203.0.113.11"], json!({})),
        // Overlaps `public`: left out, with an Event saying so.
        pool("shadow", &["203.0.113.11/32"], json!({})),
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
               "metadata": {"name": "all", "namespace": "metallb-system"}, "spec": {}}),
        web,
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": "web-1", "namespace": "lab",
                            "labels": {"kubernetes.io/service-name": "web"}},
               "addressType": "IPv4",
               "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
               "endpoints": [{"addresses": ["192.168.50.10"], "nodeName": "node-a",
                              "conditions": {"ready": true}}]}),
    ]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = node.run(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        listener
    });
    runtime
        .block_on(async { server.serve_on(tokio::net::TcpListener::from_std(listener).unwrap()) });
    std::fs::write(dir.join("kubeconfig"), server.kubeconfig_as("node-a")).unwrap();
    let socket = std::path::PathBuf::from(format!("/run/lbk-{}.sock", node.name()));
    let log = dir.join("agent.log");
    let _agent = node.spawn(&format!(
        "{} run --config {} --kubeconfig {} --hostname-override node-a --status-socket {} >> {} 2>&1",
        crate::AGENT,
        dir.join("config.yaml").display(),
        dir.join("kubeconfig").display(),
        socket.display(),
        log.display()
    ));
    let agent_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // The IPAM writes the first address of the pool and the pool annotation.
    let service_path = "/api/v1/namespaces/lab/services/web";
    assert!(
        wait_until(Duration::from_secs(90), || server
            .get(service_path)
            .is_some_and(
                |s| s["status"]["loadBalancer"]["ingress"][0]["ip"] == "203.0.113.10"
            )),
        "{:#?}\n{}",
        server.get(service_path),
        agent_log()
    );
    // Only the status subresource and a PATCH of the annotation were written.
    let writes: Vec<String> = server
        .requests()
        .iter()
        .filter(|r| r.is_write() && r.path.contains("/services/"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(writes.iter().all(|w| w.starts_with("PATCH")), "{writes:?}");

    // The agent programs the written address, and the client reaches the backend.
    client.sh("ip route add 203.0.113.0/24 via 192.168.60.1");
    assert!(
        wait_until(Duration::from_secs(30), || node
            .sh("ipvsadm -Ln")
            .contains("203.0.113.10:80")),
        "{}\n{}",
        node.sh("ipvsadm -Ln"),
        agent_log()
    );
    assert!(
        wait_until(Duration::from_secs(60), || {
            client
                .exec("curl -sS --max-time 2 http://203.0.113.10/")
                .status
                .success()
        }),
        "{}",
        agent_log()
    );

    // Events: the allocation on the Service, the overlapping pool on the pool.
    let events = || server.list("/apis/events.k8s.io/v1/namespaces/lab/events");
    assert!(
        wait_until(Duration::from_secs(60), || events()
            .iter()
            .any(|e| e["reason"] == "IPAllocated")),
        "{:#?}",
        events()
    );
    let pool_events = || server.list("/apis/events.k8s.io/v1/namespaces/metallb-system/events");
    assert!(
        wait_until(Duration::from_secs(60), || pool_events().iter().any(|e| {
            e["reason"] == "InvalidConfiguration" && e["regarding"]["name"] == "shadow"
        })),
        "{:#?}\n{}",
        pool_events(),
        agent_log()
    );

    // `ipvs-proxy services` shows the address with its pool and MetalLB's owner.
    let out = node.exec(&format!(
        "RUST_LOG=off {} services --json --socket {}",
        crate::AGENT,
        socket.display()
    ));
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let row = &report["load_balancers"][0];
    assert_eq!(row["address"], "203.0.113.10");
    assert_eq!(row["pool"], "public");
    assert_eq!(
        row["layer2"]["owner"],
        metallb_owner(&["node-a", "node-b"], "203.0.113.10").as_str(),
        "{row:#}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
