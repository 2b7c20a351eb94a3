//! `ipvs-proxy services` against the real agent: `ipvs-proxy run` with the static
//! source on a node namespace, backend pods, a client; `services` asks the agent on
//! its status socket and must show what the kernel holds and what is wrong with it.
//! Kernel tests run with `scripts/vm-test -p ipvs-proxy -- cli_services`.

use std::path::PathBuf;
use std::time::Duration;

use netns_lab::{Background, wait_until};
use serde_json::{Value, json};
use testkit::cluster::{Backend, Cluster};
use testkit::k8s::{READY, endpoint, http_port, service};

use crate::AGENT as BIN;

/// client (192.168.60.2) -- node (192.168.60.1 | 10.244.0.1 on a bridge) -- pods, and
/// the agent binary's status socket.
struct Node {
    cluster: Cluster,
    socket: PathBuf,
}

impl Node {
    fn new(pods: usize) -> Node {
        let cluster = Cluster::with_client_net("svc", "192.168.60", pods, Backend::Named);
        // A long sync period: a drift made by hand stays until the test triggers a sync.
        cluster.set_config(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
             mode: ipvs\nipvs:\n  syncPeriod: 10m\nmetricsBindAddress: 127.0.0.1:10249\n",
        );
        let socket = cluster.status_socket();
        Node { cluster, socket }
    }

    fn write(&self, file: &str, objects: &[Value]) {
        self.cluster.write(file, objects);
    }

    fn start_agent(&self) -> Background {
        self.cluster
            .start_binary(BIN, &format!("--status-socket {}", self.socket.display()))
    }

    /// `ipvs-proxy services --socket <ours> <args>`: exit status, stdout, stderr.
    fn services(&self, args: &str) -> (bool, String, String) {
        let out = self.cluster.node().exec(&format!(
            "RUST_LOG=off {BIN} services --socket {} {args}",
            self.socket.display()
        ));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn services_json(&self, args: &str) -> Value {
        let (ok, stdout, stderr) = self.services(&format!("--json {args}"));
        assert!(ok, "services --json {args} failed: {stderr}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }
}

/// The EndpointSlice `<service>-1` with ready endpoints `(ip, pod name)` on this node.
fn slice(namespace: &str, service: &str, ips: &[(&str, &str)]) -> Value {
    let endpoints: Vec<Value> = ips
        .iter()
        .map(|(ip, pod)| {
            let mut endpoint = endpoint(ip, "node", READY);
            endpoint["targetRef"] = json!({"kind": "Pod", "namespace": namespace, "name": pod});
            endpoint
        })
        .collect();
    testkit::k8s::slice(namespace, &format!("{service}-1"), service, endpoints)
}

fn problems(report: &Value) -> Vec<(String, String, String)> {
    report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_string(),
                format!(
                    "{}/{}",
                    p["namespace"].as_str().unwrap_or("-"),
                    p["name"].as_str().unwrap_or("-")
                ),
                p["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn names(report: &Value) -> Vec<String> {
    report["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}/{}",
                s["namespace"].as_str().unwrap(),
                s["name"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
#[ignore = "needs the kernel lab"]
fn services_shows_the_programmed_state_and_flags_drift_and_bad_specs() {
    let node = Node::new(2);
    // Not running yet: a clear error.
    let (ok, _, stderr) = node.services("");
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "cannot reach the agent at {}",
            node.socket.display()
        )) && stderr.contains("is `ipvs-proxy run` running on this node?"),
        "{stderr}"
    );

    node.write(
        "web.json",
        &[
            service(
                "e2e",
                "web",
                json!({"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                       "ports": [http_port(Some(30080))]}),
            ),
            slice(
                "e2e",
                "web",
                &[("10.244.0.10", "web-0"), ("10.244.0.11", "web-1")],
            ),
        ],
    );
    node.write(
        "api.json",
        &[
            service(
                "other",
                "api",
                json!({"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                       "sessionAffinity": "ClientIP", "ports": [http_port(None)]}),
            ),
            slice("other", "api", &[("10.244.0.11", "api-0")]),
        ],
    );
    node.write(
        "broken.json",
        &[service(
            "e2e",
            "broken",
            json!({"clusterIP": "10.96.0.30", "clusterIPs": ["10.96.0.30"],
                   "ports": [{"name": "http", "port": 0, "protocol": "TCP"}]}),
        )],
    );
    node.cluster
        .client()
        .sh("ip route add 10.96.0.0/12 via 192.168.60.1");
    let _agent = node.start_agent();

    // The first sync is done when the report shows both Services with their servers.
    let mut report = Value::Null;
    let synced = wait_until(Duration::from_secs(60), || {
        let (ok, stdout, _) = node.services("--json");
        if !ok {
            return false;
        }
        report = serde_json::from_str(&stdout).unwrap();
        names(&report) == ["e2e/web", "other/api"]
            && report["services"][0]["virtual_servers"][0]["in_kernel"] == true
    });
    assert!(synced, "the agent never reported both Services: {report:#}");
    assert_eq!(report["node"], "node");
    assert_eq!(
        problems(&report),
        [(
            "skipped".to_string(),
            "e2e/broken".to_string(),
            "spec.ports[0].port 0 is not in 1-65535".to_string()
        )],
        "{report:#}"
    );

    // Traffic through the ClusterIP: the report's connection counts are the kernel's.
    for _ in 0..4 {
        node.cluster
            .client()
            .sh("curl -sS --max-time 5 http://10.96.0.10/ >/dev/null");
    }
    let report = node.services_json("--name web");
    let web = &report["services"][0];
    assert_eq!(web["type"], "NodePort");
    assert_eq!(web["session_affinity"], "None");
    assert_eq!(web["external_traffic_policy"], "Cluster");
    let vips: Vec<(String, String)> = web["virtual_servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|vs| {
            (
                format!("{}:{}", vs["address"].as_str().unwrap(), vs["port"]),
                vs["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        vips.contains(&("10.96.0.10:80".into(), "cluster-ip".into()))
            && vips.contains(&("192.168.60.1:30080".into(), "node-port".into())),
        "{vips:?}"
    );
    let cluster_ip = &web["virtual_servers"][0];
    let servers: Vec<(String, String, String, String)> = cluster_ip["real_servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rs| {
            (
                format!("{}:{}", rs["address"].as_str().unwrap(), rs["port"]),
                rs["pod"].as_str().unwrap_or("-").to_string(),
                rs["node"].as_str().unwrap_or("-").to_string(),
                rs["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        servers,
        [
            (
                "10.244.0.10:8080".into(),
                "web-0".into(),
                "node".into(),
                "ready".into()
            ),
            (
                "10.244.0.11:8080".into(),
                "web-1".into(),
                "node".into(),
                "ready".into()
            ),
        ]
    );
    let inactive: u64 = cluster_ip["real_servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rs| rs["kernel"]["inactive_connections"].as_u64().unwrap())
        .sum();
    let kernel_inactive: u64 = node
        .cluster.node()
        .sh("ipvsadm -Ln -t 10.96.0.10:80 | awk '$1 == \"->\" && $2 != \"RemoteAddress:Port\" {s += $6} END {print s+0}'")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(inactive, kernel_inactive);
    assert!(
        inactive >= 1,
        "four finished requests left no inactive connection: {report:#}"
    );

    // The text view, in ipvsadm's layout.
    let (ok, text, stderr) = node.services("");
    assert!(ok, "{stderr}");
    assert!(
        text.contains("Service e2e/web type NodePort affinity None externalTrafficPolicy Cluster internalTrafficPolicy Cluster"),
        "{text}"
    );
    assert!(
        text.contains("Service other/api type ClusterIP affinity ClientIP 10800s"),
        "{text}"
    );
    assert!(
        text.contains("TCP  10.96.0.10:80 rr cluster-ip http\n"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|line| line.starts_with("  -> 10.244.0.10:8080")
                && line.contains(" ready ")
                && line.contains("web-0")
                && line.ends_with(" node")),
        "{text}"
    );
    assert!(
        text.contains(
            "  skipped  e2e/broken                     spec.ports[0].port 0 is not in 1-65535"
        ),
        "{text}"
    );

    // Filters.
    assert_eq!(names(&node.services_json("-n other")), ["other/api"]);
    assert_eq!(names(&node.services_json("--namespace e2e")), ["e2e/web"]);
    assert_eq!(
        names(&node.services_json("--vip 10.96.0.20")),
        ["other/api"]
    );
    let by_node_ip = node.services_json("--vip 192.168.60.1");
    assert_eq!(names(&by_node_ip), ["e2e/web"]);
    assert_eq!(
        by_node_ip["services"][0]["virtual_servers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(problems(&node.services_json("-n other")), []);
    assert_eq!(problems(&node.services_json("--name broken")).len(), 1);

    // Drift: a real server deleted behind the agent's back is flagged (no sync runs for
    // ten minutes, so the agent does not repair it meanwhile).
    node.cluster
        .node()
        .sh("ipvsadm -d -t 10.96.0.10:80 -r 10.244.0.11:8080");
    let report = node.services_json("");
    assert!(
        problems(&report).contains(&(
            "drift".to_string(),
            "e2e/web".to_string(),
            "real server 10.244.0.11:8080 of 10.96.0.10:80/tcp is missing in the kernel"
                .to_string()
        )),
        "{report:#}"
    );
    let missing = &report["services"][0]["virtual_servers"][0]["real_servers"][1];
    assert_eq!(missing["address"], "10.244.0.11");
    assert_eq!(missing["kernel"], Value::Null);
    let (_, text, _) = node.services("--vip 10.96.0.10");
    assert!(
        text.lines()
            .any(|line| line.starts_with("  -> 10.244.0.11:8080") && line.contains("MISSING")),
        "{text}"
    );
    // A virtual server of ours nobody wants any more: stale.
    node.cluster.node().sh("ipvsadm -A -t 10.96.0.10:81 -s rr");
    let stale = problems(&node.services_json(""));
    assert!(
        stale.contains(&(
            "stale".to_string(),
            "-/-".to_string(),
            "virtual server 10.96.0.10:81/tcp is ours but no longer desired".to_string()
        )),
        "{stale:?}"
    );

    // The next sync that touches web reads web's virtual servers again and repairs the
    // missing real server; api's change is applied too. The change to web must be one
    // the model reads (here: internalTrafficPolicy set to its default): a label alone
    // costs nothing and touches nothing.
    // The stale virtual server belongs to no Service: only the periodic full resync
    // (ten minutes away here) removes it, so it is still flagged.
    let mut web = service(
        "e2e",
        "web",
        json!({"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
               "internalTrafficPolicy": "Cluster", "ports": [http_port(Some(30080))]}),
    );
    web["metadata"]["labels"] = json!({"touched": "yes"});
    node.write(
        "web.json",
        &[
            web,
            slice(
                "e2e",
                "web",
                &[("10.244.0.10", "web-0"), ("10.244.0.11", "web-1")],
            ),
        ],
    );
    node.write(
        "api.json",
        &[
            service(
                "other",
                "api",
                json!({"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                       "ports": [http_port(None)]}),
            ),
            slice("other", "api", &[("10.244.0.11", "api-0")]),
        ],
    );
    let repaired = wait_until(Duration::from_secs(60), || {
        let report = node.services_json("");
        let kinds: Vec<String> = problems(&report).into_iter().map(|p| p.0).collect();
        kinds == ["skipped", "stale"] && report["services"][1]["session_affinity"] == "None"
    });
    assert!(repaired, "{:#}", node.services_json(""));
    assert!(
        node.cluster
            .node()
            .sh("ipvsadm -Ln")
            .contains("10.244.0.11:8080")
    );
}
