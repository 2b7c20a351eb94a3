//! The API server's ClusterIP first: `ipvs-proxy run --kubeconfig` against an
//! in-process API server (the real list/watch protocol, real object JSON) listening in
//! the node's namespace. While that server holds back the full lists of Services and
//! EndpointSlices, the agent must already serve `default/kubernetes` (10.96.0.1:443),
//! and must not remove anything an earlier run programmed: a partial view says
//! nothing about the Services it lacks. Once the lists arrive, the full sync takes
//! over and removes what is no longer wanted.

use testkit as support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use netns_lab::{Background, Netns, Topology, wait_until};
use serde_json::{Value, json};
use support::apiserver::*;
use tokio::sync::watch;

const AGENT: &str = env!("CARGO_BIN_EXE_ipvs-proxy");

fn service(name: &str, vip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "lab", "resourceVersion": "310"},
        "spec": {"clusterIP": vip, "clusterIPs": [vip],
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
    })
}

fn slice(service: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-1"), "namespace": "lab", "resourceVersion": "311",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
    })
}

/// client (192.168.60.2) -- node (192.168.60.1 | 192.168.50.1) -- host (192.168.50.10)
/// where "host" runs the API server's HTTP endpoint (6443) and a web backend (8080).
struct Lab {
    client: Netns,
    node: Netns,
    _servers: Vec<Background>,
    /// Kept for the servers' lifetime: dropping it deletes the namespace.
    _host: Netns,
    dir: PathBuf,
}

impl Lab {
    fn new() -> Lab {
        // The "pod" of the topology is the host running the API server and a backend.
        let Topology {
            client,
            node,
            mut pods,
        } = Topology::builder("api")
            .client_net("192.168.60")
            .pod_net("192.168.50")
            .build();
        let host = pods.remove(0).ns;
        let servers = vec![
            host.http_server(6443, "apiserver"),
            host.http_server(8080, "web"),
        ];
        let dir = std::env::temp_dir().join(format!("apiserver-{}", node.name()));
        std::fs::create_dir_all(dir.join("manifests")).unwrap();
        std::fs::write(dir.join("config.yaml"), support::LAB_AGENT_CONFIG).unwrap();
        Lab {
            client,
            node,
            _servers: servers,
            _host: host,
            dir,
        }
    }

    fn start_agent(&self, source: &str) -> Background {
        self.node.spawn(&format!(
            "{AGENT} run --config {} {source} --hostname-override node-a >> {} 2>&1",
            self.dir.join("config.yaml").display(),
            self.dir.join("agent.log").display()
        ))
    }

    fn curl(&self, from: &Netns, url: &str) -> Option<String> {
        let out = from.exec(&format!("curl -sS --max-time 3 {url}"));
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent log ({}):\n{}", self.node.name(), self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
#[ignore = "needs the kernel lab"]
fn the_api_server_cluster_ip_works_before_the_full_lists_arrive() {
    let lab = Lab::new();

    // An earlier run (static source) programmed two Services; "gone" has since been
    // deleted from the cluster.
    let manifests = lab.dir.join("manifests");
    let earlier: Vec<String> = [
        service("web", "10.96.0.50"),
        slice("web", "192.168.50.10"),
        service("gone", "10.96.0.60"),
        slice("gone", "192.168.50.10"),
    ]
    .iter()
    .map(|object| object.to_string())
    .collect();
    std::fs::write(manifests.join("earlier.json"), earlier.join("\n---\n")).unwrap();
    let earlier_agent = lab.start_agent(&format!("--manifests {}", manifests.display()));
    assert!(
        wait_until(Duration::from_secs(60), || {
            let ipvs = lab.node.sh("ipvsadm -Ln");
            ipvs.contains("10.96.0.50:80") && ipvs.contains("10.96.0.60:80")
        }),
        "the earlier run did not program its Services: {}",
        lab.node.sh("ipvsadm -Ln")
    );
    drop(earlier_agent.finish());

    // The API server, inside the node's namespace, holding the full lists back.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = lab.node.run(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        listener
    });
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (open_lists, gate) = watch::channel(false);
    let mut api = ApiServer::default()
        .with_api_server_service("320")
        .with_held_lists(
            "320",
            vec![fixture("svc-kubernetes.json"), service("web", "10.96.0.50")],
            vec![
                fixture("eps-kubernetes.json"),
                slice("web", "192.168.50.10"),
            ],
            gate,
        );
    api.resources.insert(
        NODES,
        Resource::listing(list("NodeList", "v1", "320", vec![fixture("node-a.json")])),
    );
    let server = runtime
        .block_on(async { serve_on(tokio::net::TcpListener::from_std(listener).unwrap(), api) });
    let kubeconfig = lab.dir.join("kubeconfig");
    std::fs::write(&kubeconfig, support::apiserver::kubeconfig(addr)).unwrap();
    let agent = lab.start_agent(&format!("--kubeconfig {}", kubeconfig.display()));

    // While the lists are held: the API server's ClusterIP answers, from another
    // host through the node and from the node itself (host network, like kubelet).
    lab.client.sh("ip route add 10.96.0.0/12 via 192.168.60.1");
    assert!(
        wait_until(Duration::from_secs(60), || lab
            .curl(&lab.client, "http://10.96.0.1:443/")
            .is_some()),
        "10.96.0.1:443 never answered; IPVS:\n{}",
        lab.node.sh("ipvsadm -Ln")
    );
    assert_eq!(
        lab.curl(&lab.client, "http://10.96.0.1:443/").as_deref(),
        Some("apiserver")
    );
    assert_eq!(
        lab.curl(&lab.node, "http://10.96.0.1:443/").as_deref(),
        Some("apiserver"),
        "from the node's own network"
    );
    let requests = server.lock().unwrap().requests.clone();
    assert!(
        requests.iter().any(|r| r.starts_with(SERVICES)),
        "the full Service list was requested (and is held): {requests:?}"
    );
    assert!(
        lab.log().contains("early sync"),
        "the early sync is logged:\n{}",
        lab.log()
    );
    // Nothing the earlier run programmed was removed by the partial view.
    let ipvs = lab.node.sh("ipvsadm -Ln");
    for server in ["10.96.0.1:443", "10.96.0.50:80", "10.96.0.60:80"] {
        assert!(ipvs.contains(server), "{server} missing:\n{ipvs}");
    }
    assert!(
        ipvs.contains("192.168.50.10:6443"),
        "the API server's endpoint:\n{ipvs}"
    );
    let addresses = lab.node.sh("ip -o addr show dev kube-ipvs0");
    for vip in ["10.96.0.1/32", "10.96.0.50/32", "10.96.0.60/32"] {
        assert!(addresses.contains(vip), "{vip} not bound: {addresses}");
    }
    let cluster_ips = lab.node.sh("ipset list KUBE-CLUSTER-IP");
    for entry in [
        "10.96.0.1,tcp:443",
        "10.96.0.50,tcp:80",
        "10.96.0.60,tcp:80",
    ] {
        assert!(
            cluster_ips.contains(entry),
            "{entry} missing: {cluster_ips}"
        );
    }
    assert_eq!(
        lab.curl(&lab.client, "http://10.96.0.50/").as_deref(),
        Some("web"),
        "a Service of the earlier run still answers"
    );

    // The lists arrive: the full sync keeps web and removes what was deleted.
    open_lists.send(true).unwrap();
    assert!(
        wait_until(Duration::from_secs(60), || !lab
            .node
            .sh("ipvsadm -Ln")
            .contains("10.96.0.60:80")),
        "the deleted Service stayed after the full lists:\n{}",
        lab.node.sh("ipvsadm -Ln")
    );
    let addresses = lab.node.sh("ip -o addr show dev kube-ipvs0");
    assert!(!addresses.contains("10.96.0.60/32"), "{addresses}");
    for url in ["http://10.96.0.1:443/", "http://10.96.0.50/"] {
        assert!(
            lab.curl(&lab.client, url).is_some(),
            "{url} after the full sync"
        );
    }
    drop(agent.finish());
    drop(runtime);
}
