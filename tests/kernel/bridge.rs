//! Pods on a Linux bridge reach a Service whose endpoints share the bridge.
//!
//! A node namespace holds a bridge `cni0` (10.244.0.1/24) with three pod namespaces
//! attached by veth: a client pod and two HTTP pods, the endpoints of a ClusterIP
//! Service. The client's request is routed through the node, where IPVS sends it to an
//! endpoint; the endpoint's reply goes straight back across the bridge, so IPVS only
//! sees (and un-NATs) it when br_netfilter is loaded and
//! `net.bridge.bridge-nf-call-iptables` is 1. `ipvs-proxy run` (static source) loads
//! the module and sets the sysctl; forcing the sysctl to 0 behind its back breaks the
//! Service, which shows the test can fail. Run with
//! `scripts/vm-test -p ipvs-proxy -- bridge::`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use netns_lab::{Background, Netns, wait_until};

use crate::AGENT;
use serde_json::json;

const CLUSTER_IP: &str = "10.96.0.10";
const CLIENT_IP: &str = "10.244.0.10";
const ENDPOINTS: [&str; 2] = ["10.244.0.11", "10.244.0.12"];

/// The node, its bridge and the pods on it; `pods[0]` is the client.
struct BridgeNode {
    node: Netns,
    client: Netns,
    _endpoints: Vec<(Netns, Background)>,
    dir: PathBuf,
}

impl BridgeNode {
    fn new() -> BridgeNode {
        let node = Netns::new("br-node");
        node.sh(
            "ip link add cni0 type bridge && ip addr add 10.244.0.1/24 dev cni0 && \
             ip link set cni0 up",
        );
        let attach = |pod: &Netns, port: &str, ip: &str| {
            node.sh(&format!(
                "ip link add {port} type veth peer name eth0 netns {} && \
                 ip link set {port} master cni0 up",
                pod.name()
            ));
            pod.sh(&format!(
                "ip addr add {ip}/24 dev eth0 && ip link set eth0 up && \
                 ip route add default via 10.244.0.1"
            ));
        };
        let client = Netns::new("br-client");
        attach(&client, "vclient", CLIENT_IP);
        let endpoints = ENDPOINTS
            .iter()
            .enumerate()
            .map(|(i, ip)| {
                let pod = Netns::new("br-pod");
                attach(&pod, &format!("vpod{i}"), ip);
                let server = pod.http_server(8080, &format!("pod-{i}"));
                (pod, server)
            })
            .collect();

        let dir = std::env::temp_dir().join(format!("bridge-{}", node.name()));
        std::fs::create_dir_all(dir.join("manifests")).unwrap();
        // clusterCIDR: pod-to-Service traffic from inside it is not masqueraded, so the
        // endpoint answers the client pod directly, across the bridge.
        std::fs::write(
            dir.join("config.yaml"),
            format!("{}clusterCIDR: 10.244.0.0/16\n", testkit::LAB_AGENT_CONFIG),
        )
        .unwrap();
        let service = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "bridge"},
            "spec": {"clusterIP": CLUSTER_IP, "clusterIPs": [CLUSTER_IP],
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080,
                                "protocol": "TCP"}]},
        });
        let endpoints_json: Vec<_> = ENDPOINTS
            .iter()
            .map(|ip| {
                json!({"addresses": [ip], "nodeName": "node",
                       "conditions": {"ready": true, "serving": true, "terminating": false}})
            })
            .collect();
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-1", "namespace": "bridge",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints_json,
        });
        std::fs::write(
            dir.join("manifests/web.json"),
            format!(
                "{}\n---\n{}",
                serde_json::to_string_pretty(&service).unwrap(),
                serde_json::to_string_pretty(&slice).unwrap()
            ),
        )
        .unwrap();
        BridgeNode {
            node,
            client,
            _endpoints: endpoints,
            dir,
        }
    }

    fn start_agent(&self) -> Background {
        self.node.spawn(&format!(
            "{AGENT} run --config {} --manifests {} --hostname-override node >> {} 2>&1",
            self.dir.join("config.yaml").display(),
            self.dir.join("manifests").display(),
            self.log_path().display()
        ))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The client pod asks the ClusterIP; the answering pod's name, or `None`.
    fn ask(&self) -> Option<String> {
        let out = self
            .client
            .exec(&format!("curl -sS --max-time 3 http://{CLUSTER_IP}/"));
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn bridge_sysctls(&self) -> String {
        self.node
            .sh("sysctl -n net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// `ipvs-proxy check` in the node namespace (it exits 1 when anything failed; only
    /// its report matters here).
    fn check(&self) -> String {
        let out = self
            .node
            .exec(&format!("RUST_LOG=off {AGENT} check --strict-arp=false"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The agent has programmed the Service (IPVS holds both endpoints).
    fn wait_programmed(&self) {
        // Generous: the lab VM runs under emulation on a busy machine.
        let programmed = wait_until(Duration::from_secs(120), || {
            let table = self.node.sh("ipvsadm -Ln");
            ENDPOINTS
                .iter()
                .all(|ip| table.contains(&format!("{ip}:8080")))
        });
        assert!(
            programmed,
            "the Service was never programmed:\n{}\n{}",
            self.node.sh("ipvsadm -Ln"),
            self.log()
        );
    }
}

impl Drop for BridgeNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent log ({}):\n{}", self.node.name(), self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Loads br_netfilter again when dropped, so a failing test does not leave the VM
/// without it for the test binaries that follow.
struct Reload;

impl Drop for Reload {
    fn drop(&mut self) {
        let _ = Command::new("modprobe").arg("br_netfilter").status();
    }
}

/// Prints how long the test has run at each step (the lab VM is slow under emulation).
fn step(start: std::time::Instant, what: &str) {
    println!("[{:>6.1}s] {what}", start.elapsed().as_secs_f64());
}

fn br_netfilter_loaded() -> bool {
    std::fs::read_to_string("/proc/modules")
        .unwrap()
        .lines()
        .any(|line| line.starts_with("br_netfilter "))
}

#[test]
#[ignore = "needs the kernel lab"]
fn the_agent_loads_br_netfilter_and_pods_reach_a_service_on_their_bridge() {
    let start = std::time::Instant::now();
    // The tests unload br_netfilter or need it loaded, and module loading is global to
    // the VM: one at a time, and never beside a test reading `ipvs-proxy check`.
    let _one = crate::BR_NETFILTER
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let _reload = Reload;
    // lab-init loads br_netfilter: unload it so that the agent's loading is what is
    // tested. If something holds the module, the test still covers the rest.
    let unloaded = Command::new("rmmod")
        .arg("br_netfilter")
        .status()
        .unwrap()
        .success();
    println!("br_netfilter unloaded before the agent started: {unloaded}");
    let node = BridgeNode::new();
    step(start, "topology built");
    if unloaded {
        let report = node.check();
        for line in [
            "FAIL module br_netfilter: br_netfilter is not loaded: pods on a bridge cannot \
             reach Services whose endpoints share the bridge",
            "fix: modprobe br_netfilter && echo br_netfilter > \
             /etc/modules-load.d/br_netfilter.conf",
            "FAIL sysctl net.bridge.bridge-nf-call-iptables: does not exist until \
             br_netfilter is loaded",
            "fix: modprobe br_netfilter && sysctl -w net.bridge.bridge-nf-call-iptables=1",
            "FAIL sysctl net.bridge.bridge-nf-call-ip6tables",
        ] {
            assert!(report.contains(line), "missing {line:?} in:\n{report}");
        }
    }

    let _agent = node.start_agent();
    node.wait_programmed();
    step(start, "agent started, Service programmed");
    assert!(
        br_netfilter_loaded(),
        "br_netfilter not loaded by the agent"
    );
    if unloaded {
        assert!(
            node.log()
                .contains("loaded br_netfilter: bridged pod traffic passes iptables and IPVS"),
            "{}",
            node.log()
        );
    }
    // A namespace starts with both at 1 once the module is loaded (Linux >= 5.3).
    assert_eq!(node.bridge_sysctls(), "1 1");

    assert!(
        wait_until(Duration::from_secs(30), || node.ask().is_some()),
        "the client pod never reached {CLUSTER_IP}; IPVS:\n{}",
        node.node.sh("ipvsadm -Ln")
    );
    step(start, "first answer");
    // Round robin over both endpoints: every answer comes from a pod on the bridge.
    let answers: BTreeSet<String> = (0..6).filter_map(|_| node.ask()).collect();
    assert_eq!(
        answers,
        BTreeSet::from(["pod-0".to_string(), "pod-1".to_string()])
    );

    let report = node.check();
    for line in [
        "PASS module br_netfilter: loaded",
        "PASS sysctl net.bridge.bridge-nf-call-iptables: is 1",
        "PASS sysctl net.bridge.bridge-nf-call-ip6tables: is 1",
    ] {
        assert!(report.contains(line), "missing {line:?} in:\n{report}");
    }
    step(start, "check done");
}

#[test]
#[ignore = "needs the kernel lab"]
fn bridge_nf_call_iptables_at_zero_breaks_the_service_and_the_agent_sets_it() {
    let start = std::time::Instant::now();
    // The tests unload br_netfilter or need it loaded, and module loading is global to
    // the VM: one at a time, and never beside a test reading `ipvs-proxy check`.
    let _one = crate::BR_NETFILTER
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let _reload = Reload;
    let loaded = Command::new("modprobe")
        .arg("br_netfilter")
        .status()
        .unwrap();
    assert!(loaded.success());
    let node = BridgeNode::new();
    step(start, "topology built");
    // As an operator's sysctl.d might have left them: the agent sets both.
    node.node.sh(
        "sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0",
    );
    let _agent = node.start_agent();
    node.wait_programmed();
    step(start, "agent started, Service programmed");
    assert!(
        wait_until(Duration::from_secs(30), || node.ask().is_some()),
        "the client pod never reached {CLUSTER_IP}; IPVS:\n{}",
        node.node.sh("ipvsadm -Ln")
    );
    step(start, "first answer");
    assert_eq!(node.bridge_sysctls(), "1 1");
    let log = node.log();
    for change in [
        "sysctl net.bridge.bridge-nf-call-iptables: 0 -> 1",
        "sysctl net.bridge.bridge-nf-call-ip6tables: 0 -> 1",
    ] {
        assert!(log.contains(change), "{change:?} not logged:\n{log}");
    }

    // Behind the agent's back (it sets sysctls at start only): the endpoint's reply is
    // bridged past IPVS, the client sees an answer from an address it never asked, and
    // no request gets through.
    node.node
        .sh("sysctl -qw net.bridge.bridge-nf-call-iptables=0");
    let answered: Vec<String> = (0..3).filter_map(|_| node.ask()).collect();
    step(start, "requests with bridge-nf-call-iptables=0 done");
    assert!(
        answered.is_empty(),
        "answered with bridge-nf-call-iptables=0: {answered:?}"
    );
    let report = node.check();
    for line in [
        "FAIL sysctl net.bridge.bridge-nf-call-iptables: is 0, wanted 1",
        "fix: sysctl -w net.bridge.bridge-nf-call-iptables=1",
    ] {
        assert!(report.contains(line), "missing {line:?} in:\n{report}");
    }

    // The fix `check` printed brings the Service back.
    node.node
        .sh("sysctl -w net.bridge.bridge-nf-call-iptables=1");
    assert!(
        wait_until(Duration::from_secs(10), || node.ask().is_some()),
        "no answer after the fix"
    );
    step(start, "answered after the fix");
}
