//! `detectLocalMode` and the load-balancer no-node-access rules, end to end: the real
//! agent on a node namespace, its rules as `iptables-save` prints them, and the source
//! address a backend sees. Traffic to a ClusterIP that does not come from a pod is
//! masqueraded (the backend sees the node), pod traffic keeps its source.
//!
//! ```text
//!   outside (192.168.50.2) ── to-client ─┐
//!   bridged pod (10.244.0.11) ── cbr0 ───┤ node ── to-web ── web (10.244.1.10:8080)
//!   routed pod (10.244.2.11) ── cali1 ───┘
//! ```
//!
//! Run with `scripts/vm-test -p ipvs-proxy -- detect_local`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use netns_lab::{Background, Netns, veth, wait_until};
use serde_json::{Value, json};
use testkit::apiserver::*;

use crate::AGENT;

/// The Service's ClusterIP.
const VIP: &str = "10.96.0.50";
/// What the web backend answers: the client address it sees.
const SOURCE_URL: &str = "http://10.96.0.50/cgi-bin/source";
/// The node's address toward the backend: what masqueraded traffic comes from.
const NODE_TOWARD_WEB: &str = "10.244.1.1";

struct Lab {
    node: Netns,
    outside: Netns,
    bridged: Netns,
    routed: Netns,
    _web: Netns,
    _web_server: Background,
    dir: PathBuf,
}

impl Lab {
    fn new() -> Lab {
        let node = Netns::new("dl-node");
        let outside = Netns::new("dl-out");
        let bridged = Netns::new("dl-br");
        let routed = Netns::new("dl-rt");
        let web = Netns::new("dl-web");
        veth(
            &outside,
            "eth0",
            "192.168.50.2/24",
            &node,
            "to-client",
            "192.168.50.1/24",
        );
        outside.sh("ip route add 10.96.0.0/12 via 192.168.50.1 && ip route add 203.0.113.0/24 via 192.168.50.1");
        node.sh("ip link add cbr0 type bridge && ip addr add 10.244.0.1/24 dev cbr0 && ip link set cbr0 up");
        node.sh(&format!(
            "ip link add vb0 type veth peer name eth0 netns {} && ip link set vb0 master cbr0 up",
            bridged.name()
        ));
        bridged.sh("ip addr add 10.244.0.11/24 dev eth0 && ip link set eth0 up && ip route add default via 10.244.0.1");
        veth(
            &routed,
            "eth0",
            "10.244.2.11/24",
            &node,
            "cali1",
            "10.244.2.1/24",
        );
        routed.sh("ip route add default via 10.244.2.1");
        veth(
            &web,
            "eth0",
            "10.244.1.10/24",
            &node,
            "to-web",
            "10.244.1.1/24",
        );
        web.sh("ip route add default via 10.244.1.1");
        let dir = std::env::temp_dir().join(format!("detect-local-{}", node.name()));
        std::fs::create_dir_all(dir.join("manifests")).unwrap();
        let web_server = source_echo_server(&web, &dir.join("www"));
        Lab {
            node,
            outside,
            bridged,
            routed,
            _web: web,
            _web_server: web_server,
            dir,
        }
    }

    /// Writes the configuration (kube-proxy's document plus `extra` top-level fields).
    fn configure(&self, extra: &str) -> PathBuf {
        let path = self.dir.join("config.yaml");
        std::fs::write(&path, format!("{}{extra}", testkit::LAB_AGENT_CONFIG)).unwrap();
        path
    }

    fn write(&self, file: &str, objects: &[Value]) {
        let text: Vec<String> = objects.iter().map(Value::to_string).collect();
        let path = self.dir.join("manifests").join(file);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text.join("\n---\n")).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }

    /// The agent with the static source and `detectLocal`-related `extra` config.
    fn start_static(&self, extra: &str) -> Background {
        self.write("web.json", &[web_service(), web_slice("node")]);
        let config = self.configure(extra);
        self.node.spawn(&format!(
            "{AGENT} run --config {} --manifests {} --hostname-override node >> {} 2>&1",
            config.display(),
            self.dir.join("manifests").display(),
            self.dir.join("agent.log").display()
        ))
    }

    /// The client address the web backend sees for a request from `from`.
    fn source_seen(&self, from: &Netns) -> Option<String> {
        let out = from.exec(&format!("curl -sS --max-time 3 {SOURCE_URL}"));
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The nat rule marking traffic to ClusterIPs for masquerading, once it matches
    /// `expected`.
    fn cluster_ip_masquerade_rule(&self, expected: &str) -> String {
        let mut rule = String::new();
        // Generous: the Kubernetes source's first lists are slow in an emulated VM.
        let found = wait_until(Duration::from_secs(180), || {
            rule = self
                .node
                .sh("iptables-save -t nat")
                .lines()
                .find(|line| line.contains("KUBE-CLUSTER-IP") && line.contains("KUBE-MARK-MASQ"))
                .unwrap_or_default()
                .to_string();
            rule.contains(expected)
        });
        assert!(
            found,
            "no ClusterIP masquerade rule with {expected}:\n{}",
            self.node.sh("iptables-save -t nat")
        );
        rule
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// Waits until the Service answers `from`, then checks the source the backend saw.
    fn assert_source(&self, from: &Netns, who: &str, expected: &str) {
        let mut seen = None;
        wait_until(Duration::from_secs(60), || {
            seen = self.source_seen(from);
            seen.is_some()
        });
        let seen = seen.unwrap_or_else(|| panic!("{who}: {VIP} never answered"));
        assert!(
            seen.contains(expected),
            "{who}: the backend saw {seen}, expected {expected}"
        );
    }

    /// Pods named in `local` keep their source; the others, and the outside client, are
    /// masqueraded to the node.
    fn assert_local(&self, local: &[&str]) {
        for (who, ns, own) in [
            ("bridged pod", &self.bridged, "10.244.0.11"),
            ("routed pod", &self.routed, "10.244.2.11"),
        ] {
            let expected = if local.contains(&who) {
                own
            } else {
                NODE_TOWARD_WEB
            };
            self.assert_source(ns, who, expected);
        }
        self.assert_source(&self.outside, "outside client", NODE_TOWARD_WEB);
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

/// busybox httpd answering `/cgi-bin/source` with the client address it sees.
fn source_echo_server(ns: &Netns, root: &std::path::Path) -> Background {
    let cgi = root.join("cgi-bin");
    std::fs::create_dir_all(&cgi).unwrap();
    let script = cgi.join("source");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"$REMOTE_ADDR\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let server = ns.spawn(&format!("busybox httpd -f -p 8080 -h {}", root.display()));
    assert!(
        wait_until(Duration::from_secs(10), || ns
            .exec("ss -Hltn 'sport = :8080' | grep -q LISTEN")
            .status
            .success()),
        "the web backend never listened"
    );
    server
}

fn web_service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "dl", "resourceVersion": "5"},
        "spec": {"clusterIP": VIP, "clusterIPs": [VIP],
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
    })
}

fn web_slice(node: &str) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "dl", "resourceVersion": "6",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.244.1.10"], "nodeName": node,
                       "conditions": {"ready": true, "serving": true, "terminating": false}}],
    })
}

#[test]
#[ignore = "needs the kernel lab"]
fn detect_local_cluster_cidr_masquerades_what_comes_from_outside_it() {
    let _module = crate::br_netfilter_kept();
    let lab = Lab::new();
    // detectLocalMode unset: kube-proxy's default, ClusterCIDR.
    let _agent = lab.start_static("clusterCIDR: 10.244.0.0/16\n");
    let rule = lab.cluster_ip_masquerade_rule("! -s 10.244.0.0/16");
    assert!(rule.contains("! -s 10.244.0.0/16"), "{rule}");
    assert!(rule.contains("KUBE-CLUSTER-IP dst,dst"), "{rule}");
    lab.assert_local(&["bridged pod", "routed pod"]);
}

#[test]
#[ignore = "needs the kernel lab"]
fn detect_local_bridge_interface_masquerades_what_does_not_enter_through_it() {
    let _module = crate::br_netfilter_kept();
    let lab = Lab::new();
    let _agent = lab
        .start_static("detectLocalMode: BridgeInterface\ndetectLocal:\n  bridgeInterface: cbr0\n");
    let rule = lab.cluster_ip_masquerade_rule("! -i cbr0");
    assert!(rule.contains("! -i cbr0"), "{rule}");
    lab.assert_local(&["bridged pod"]);
}

#[test]
#[ignore = "needs the kernel lab"]
fn detect_local_interface_name_prefix_masquerades_other_interfaces() {
    let _module = crate::br_netfilter_kept();
    let lab = Lab::new();
    let _agent = lab.start_static(
        "detectLocalMode: InterfaceNamePrefix\ndetectLocal:\n  interfaceNamePrefix: cali\n",
    );
    let rule = lab.cluster_ip_masquerade_rule("! -i cali+");
    assert!(rule.contains("! -i cali+"), "{rule}");
    lab.assert_local(&["routed pod"]);
}

#[test]
#[ignore = "needs the kernel lab"]
fn detect_local_node_cidr_without_a_node_object_detects_nothing_and_says_so() {
    let _module = crate::br_netfilter_kept();
    let lab = Lab::new();
    let _agent = lab.start_static("detectLocalMode: NodeCIDR\n");
    let rule = lab.cluster_ip_masquerade_rule("KUBE-CLUSTER-IP src,dst");
    // kube-proxy's rule without a detector: only node traffic sourced from a VIP.
    assert!(rule.contains("KUBE-CLUSTER-IP src,dst"), "{rule}");
    lab.assert_source(&lab.bridged, "bridged pod", "10.244.0.11");
    lab.assert_source(&lab.outside, "outside client", "192.168.50.2");
    assert!(
        lab.log()
            .contains("detectLocalMode NodeCIDR reads the Node object's spec.podCIDRs"),
        "the fallback is logged:\n{}",
        lab.log()
    );
}

#[test]
#[ignore = "needs the kernel lab"]
fn detect_local_node_cidr_follows_the_node_objects_pod_cidrs() {
    let _module = crate::br_netfilter_kept();
    let lab = Lab::new();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = lab.node.run(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        listener
    });
    let addr: SocketAddr = listener.local_addr().unwrap();
    let mut node = fixture("node-a.json");
    node["spec"]["podCIDR"] = json!("10.244.0.0/24");
    node["spec"]["podCIDRs"] = json!(["10.244.0.0/24", "fd00:10:244::/64"]);
    let mut api = ApiServer::default().with_api_server_service("5");
    api.resources.insert(
        SERVICES,
        Resource::listing(list("ServiceList", "v1", "7", vec![web_service()])),
    );
    api.resources.insert(
        SLICES,
        Resource::listing(list(
            "EndpointSliceList",
            "discovery.k8s.io/v1",
            "7",
            vec![web_slice("node-a")],
        )),
    );
    api.resources.insert(
        NODES,
        Resource::listing(list("NodeList", "v1", "7", vec![node])),
    );
    let _server = runtime
        .block_on(async { serve_on(tokio::net::TcpListener::from_std(listener).unwrap(), api) });
    let kubeconfig_path = lab.dir.join("kubeconfig");
    std::fs::write(&kubeconfig_path, kubeconfig(addr)).unwrap();
    // clusterCIDR is moot in this mode (a warning), and must not be what is matched.
    let config = lab.configure("detectLocalMode: NodeCIDR\nclusterCIDR: 10.244.0.0/16\n");
    let _agent = lab.node.spawn(&format!(
        "{AGENT} run --config {} --kubeconfig {} --hostname-override node-a >> {} 2>&1",
        config.display(),
        kubeconfig_path.display(),
        lab.dir.join("agent.log").display()
    ));
    let rule = lab.cluster_ip_masquerade_rule("! -s 10.244.0.0/24");
    assert!(rule.contains("! -s 10.244.0.0/24"), "{rule}");
    lab.assert_local(&["bridged pod"]);
    let log = lab.log();
    assert!(
        log.contains("clusterCIDR is ignored: detectLocalMode is NodeCIDR"),
        "{log}"
    );
    drop(runtime);
}

/// Load-balancer source ranges that leave the node out make the node unable to reach
/// the load balancer (filter KUBE-IPVS-OUT-FILTER); ranges that include a node address
/// let it through.
#[test]
#[ignore = "needs the kernel lab"]
fn iptables_lb_no_node_access_follows_the_source_ranges() {
    let _module = crate::br_netfilter_kept();
    let lab = Lab::new();
    let lb = |ranges: &[&str]| {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "lb", "namespace": "dl"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.60", "clusterIPs": ["10.96.0.60"],
                     "loadBalancerSourceRanges": ranges,
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP",
                                "nodePort": 30080}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}},
        })
    };
    let slice = {
        let mut slice = web_slice("node");
        slice["metadata"]["name"] = json!("lb-1");
        slice["metadata"]["labels"]["kubernetes.io/service-name"] = json!("lb");
        slice
    };
    lab.write("lb.json", &[lb(&["192.168.50.2/32"]), slice.clone()]);
    let _agent = lab.start_static("clusterCIDR: 10.244.0.0/16\n");
    // iptables-save prints the `-m ipvs` options in its own order and spelling
    // (`--vproto 6`, the address without /32), so the parts are checked.
    let has_drop_rule = || {
        lab.node.sh("iptables-save -t filter").lines().any(|line| {
            line.starts_with("-A KUBE-IPVS-OUT-FILTER -s 203.0.113.10/32 -m ipvs ")
                && line.contains("--vaddr 203.0.113.10")
                && line.contains("--vport 80")
                && line.ends_with("-j DROP")
        })
    };
    assert!(
        wait_until(Duration::from_secs(60), has_drop_rule),
        "no node-access rule:\n{}",
        lab.node.sh("iptables-save -t filter")
    );
    let lb_url = "http://203.0.113.10/cgi-bin/source";
    let curl = |from: &Netns| from.exec(&format!("curl -sS --max-time 3 {lb_url}"));
    assert!(
        wait_until(Duration::from_secs(30), || curl(&lab.outside)
            .status
            .success()),
        "the allowed client never reached the load balancer"
    );
    assert!(
        !curl(&lab.node).status.success(),
        "the node reached a load balancer whose source ranges exclude it"
    );

    // A range with the node's address in it: no rule, the node gets through.
    lab.write("lb.json", &[lb(&["192.168.50.0/24"]), slice]);
    assert!(
        wait_until(Duration::from_secs(60), || !lab
            .node
            .sh("iptables-save -t filter")
            .contains("KUBE-IPVS-OUT-FILTER -s")),
        "the node-access rule stayed:\n{}",
        lab.node.sh("iptables-save -t filter")
    );
    assert!(
        wait_until(Duration::from_secs(30), || curl(&lab.node).status.success()),
        "the node, inside the ranges now, cannot reach the load balancer"
    );
}
