//! Traffic policies and endpoint termination, end to end: `ipvs-proxy run` with the
//! static source on a node namespace, pods behind a bridge, a client namespace outside.
//! Every assertion is on what the client or a backend observes, what the health
//! servers answer, or what the kernel holds (`ipvsadm`).

use std::path::PathBuf;
use std::time::Duration;

use netns_lab::{Background, Netns, veth, wait_until};
use serde_json::{Value, json};

const AGENT: &str = env!("CARGO_BIN_EXE_ipvs-proxy");

/// A CGI script for busybox httpd answering the peer address the backend saw, so a
/// test can tell whether the client's source address survived the trip. busybox
/// prints IPv4 peers of its dual-stack socket as `[::ffff:a.b.c.d]`.
const PEER_ECHO_CGI: &str =
    "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n%s' \"$REMOTE_ADDR\"\n";

/// What each pod runs on port 8080.
#[derive(Clone, Copy)]
enum Backend {
    /// busybox httpd answering `pod-<i>`.
    Named,
    /// busybox httpd with [`PEER_ECHO_CGI`] at `/cgi-bin/peer`.
    PeerEcho,
}

/// client (192.168.50.2) -- node (192.168.50.1 | 10.244.0.1 on a bridge) -- pods
/// 10.244.0.10, .11, ...
struct Cluster {
    client: Netns,
    node: Netns,
    pods: Vec<(Netns, String, Background)>,
    dir: PathBuf,
}

impl Cluster {
    fn new(pods: usize, backend: Backend, extra_config: &str) -> Cluster {
        let client = Netns::new("pol-client");
        let node = Netns::new("pol-node");
        veth(
            &client,
            "eth0",
            "192.168.50.2/24",
            &node,
            "to-client",
            "192.168.50.1/24",
        );
        client.sh("ip route add default via 192.168.50.1");
        node.sh("ip link add cbr0 type bridge && ip addr add 10.244.0.1/24 dev cbr0 && ip link set cbr0 up");
        let dir = std::env::temp_dir().join(format!("policy-{}", node.name()));
        std::fs::create_dir_all(dir.join("manifests")).unwrap();
        let mut backends = Vec::new();
        for i in 0..pods {
            let pod = Netns::new("pol-pod");
            let ip = format!("10.244.0.{}", 10 + i);
            let port = format!("vp{i}");
            node.sh(&format!(
                "ip link add {port} type veth peer name eth0 netns {} && \
                 ip link set {port} master cbr0 up",
                pod.name()
            ));
            pod.sh(&format!(
                "ip addr add {ip}/24 dev eth0 && ip link set eth0 up && \
                 ip route add default via 10.244.0.1"
            ));
            let server = match backend {
                Backend::Named => pod.http_server(8080, &format!("pod-{i}")),
                Backend::PeerEcho => {
                    let root = dir.join(format!("peer-echo-{i}"));
                    let script = root.join("cgi-bin/peer");
                    std::fs::create_dir_all(script.parent().unwrap()).unwrap();
                    std::fs::write(&script, PEER_ECHO_CGI).unwrap();
                    pod.sh(&format!("chmod 755 {}", script.display()));
                    let server =
                        pod.spawn(&format!("busybox httpd -f -p 8080 -h {}", root.display()));
                    assert!(
                        wait_until(Duration::from_secs(10), || pod
                            .exec("ss -Hltn 'sport = :8080' | grep -q LISTEN")
                            .status
                            .success()),
                        "peer echo server in {} never listened",
                        pod.name()
                    );
                    server
                }
            };
            backends.push((pod, ip, server));
        }
        std::fs::write(
            dir.join("config.yaml"),
            format!(
                "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
                 mode: ipvs\nipvs:\n  syncPeriod: 3s\nmetricsBindAddress: 127.0.0.1:10249\n\
                 {extra_config}"
            ),
        )
        .unwrap();
        client.sh("ip route add 10.96.0.0/12 via 192.168.50.1");
        Cluster {
            client,
            node,
            pods: backends,
            dir,
        }
    }

    fn ip(&self, pod: usize) -> &str {
        &self.pods[pod].1
    }

    fn write(&self, file: &str, objects: &[Value]) {
        let text: Vec<String> = objects
            .iter()
            .map(|o| serde_json::to_string_pretty(o).unwrap())
            .collect();
        let path = self.dir.join("manifests").join(file);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text.join("\n---\n")).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }

    fn start_agent(&self) -> Background {
        self.node.spawn(&format!(
            "{AGENT} run --config {} --manifests {} --hostname-override node >> {} 2>&1",
            self.dir.join("config.yaml").display(),
            self.dir.join("manifests").display(),
            self.dir.join("agent.log").display()
        ))
    }

    fn curl(&self, url: &str) -> Option<String> {
        let out = self.client.exec(&format!("curl -sS --max-time 3 {url}"));
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn wait_for(&self, url: &str) -> bool {
        wait_until(Duration::from_secs(60), || self.curl(url).is_some())
    }

    fn ipvs(&self) -> String {
        self.node.sh("ipvsadm -Ln")
    }

    /// `(weight, active connections)` of real server `addr` under virtual server
    /// `vip` (as `ipvsadm -Ln` prints them), or None when it is not programmed.
    fn real_server(&self, vip: &str, addr: &str) -> Option<(u32, u32)> {
        let out = self.node.exec(&format!("ipvsadm -Ln -t {vip}"));
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        table.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                ["->", a, _forward, weight, active, _inactive] if *a == addr => {
                    Some((weight.parse().ok()?, active.parse().ok()?))
                }
                _ => None,
            }
        })
    }

    /// The HTTP status and body a health check NodePort gives the node itself.
    fn health(&self, port: u16) -> (u16, String) {
        let out = self.node.exec(&format!(
            "curl -sS --max-time 3 -w '\\n%{{http_code}}' http://192.168.50.1:{port}/healthz"
        ));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default();
            eprintln!("--- agent log ({}):\n{log}", self.node.name());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn service(name: &str, spec: Value, status: Option<Value>) -> Value {
    let mut object = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "pol"},
        "spec": spec,
    });
    if let Some(status) = status {
        object["status"] = status;
    }
    object
}

/// An endpoint on `node` with the given (ready, serving, terminating) conditions.
fn endpoint(ip: &str, node: &str, conditions: (bool, bool, bool)) -> Value {
    let (ready, serving, terminating) = conditions;
    json!({"addresses": [ip], "nodeName": node,
           "conditions": {"ready": ready, "serving": serving, "terminating": terminating}})
}

const READY: (bool, bool, bool) = (true, true, false);
const SERVING_TERMINATING: (bool, bool, bool) = (false, true, true);

fn slice(name: &str, service: &str, endpoints: Vec<Value>) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "pol",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

fn http_port(node_port: Option<u16>) -> Value {
    let mut port = json!({"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"});
    if let Some(node_port) = node_port {
        port["nodePort"] = json!(node_port);
    }
    port
}

#[test]
#[ignore = "needs the kernel lab"]
fn external_traffic_policy_local_keeps_the_client_address_and_reports_local_endpoints() {
    let cluster = Cluster::new(2, Backend::PeerEcho, "");
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
                Some(json!({"loadBalancer": {"ingress": [{"ip": "192.168.50.101"}]}})),
            ),
            slice("local-1", "local", vec![endpoint(&pod0, "node", READY)]),
            // Its only endpoint runs on another node. (The API allocates a
            // healthCheckNodePort only to LoadBalancer Services.)
            service(
                "remote",
                json!({"type": "LoadBalancer", "clusterIP": "10.96.0.22", "clusterIPs": ["10.96.0.22"],
                       "externalTrafficPolicy": "Local", "healthCheckNodePort": 32002,
                       "ports": [http_port(Some(30082))]}),
                Some(json!({"loadBalancer": {"ingress": [{"ip": "192.168.50.102"}]}})),
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
    let _agent = cluster.start_agent();

    // The backend sees the client's own address through the NodePort and the LB IP.
    for url in [
        "http://192.168.50.1:30081/cgi-bin/peer",
        "http://192.168.50.101/cgi-bin/peer",
    ] {
        assert!(
            cluster.wait_for(url),
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
        cluster.wait_for("http://10.96.0.22/"),
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
    let cluster = Cluster::new(2, Backend::Named, "");
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
    let _agent = cluster.start_agent();
    assert!(cluster.wait_for("http://10.96.0.10/"), "{}", cluster.ipvs());

    // A long-lived connection through the VIP: nc sends nothing and keeps stdin open,
    // busybox httpd waits for the request line.
    let connection = cluster
        .client
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
    let cluster = Cluster::new(
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
    let _agent = cluster.start_agent();
    assert!(cluster.wait_for("http://10.96.0.11/"), "{}", cluster.ipvs());
    let _connection = cluster
        .client
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
    let cluster = Cluster::new(2, Backend::Named, "");
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
    let _agent = cluster.start_agent();
    let vip = "10.96.0.12:80";
    assert!(cluster.wait_for("http://10.96.0.12/"), "{}", cluster.ipvs());
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
