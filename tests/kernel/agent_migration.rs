//! Migration from kube-proxy, end to end: the node holds the state kube-proxy (IPVS
//! mode) leaves behind — virtual servers on kube-ipvs0 addresses, its ipsets and
//! iptables chains — while a client keeps requesting a Service. `ipvs-proxy run` starts
//! with manifests describing the same Services: no request fails, the stale Service is
//! removed, someone else's virtual server is left alone.

use testkit as support;

use std::time::Duration;

use netns_lab::{Netns, veth, wait_until};
use serde_json::{Value, json};

const AGENT: &str = env!("CARGO_BIN_EXE_ipvs-proxy");

/// What kube-proxy would have programmed for Service `web` (10.96.0.10:80 -> two pods)
/// and for a Service deleted while it was down (10.96.0.99:80), plus a foreign
/// virtual server (keepalived's, say) that is not on kube-ipvs0.
const KUBE_PROXY_STATE: &str = r#"
set -e
sysctl -qw net.ipv4.ip_forward=1
sysctl -qw net.ipv4.vs.conntrack=1
ip link add kube-ipvs0 type dummy
ip addr add 10.96.0.10/32 dev kube-ipvs0
ip addr add 10.96.0.99/32 dev kube-ipvs0
ipvsadm -A -t 10.96.0.10:80 -s rr
ipvsadm -a -t 10.96.0.10:80 -r 10.244.0.10:8080 -m -w 1
ipvsadm -a -t 10.96.0.10:80 -r 10.244.0.11:8080 -m -w 1
ipvsadm -A -t 10.96.0.99:80 -s rr
ipvsadm -a -t 10.96.0.99:80 -r 10.244.0.10:8080 -m -w 1
ipvsadm -A -t 172.16.0.1:443 -s wlc
ipvsadm -a -t 172.16.0.1:443 -r 10.9.9.9:443 -m -w 1
ipset restore <<'EOF'
create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536
add KUBE-CLUSTER-IP 10.96.0.10,tcp:80
add KUBE-CLUSTER-IP 10.96.0.99,tcp:80
create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536
add KUBE-LOOP-BACK 10.244.0.10,tcp:8080,10.244.0.10
add KUBE-LOOP-BACK 10.244.0.11,tcp:8080,10.244.0.11
create KUBE-NODE-PORT-TCP bitmap:port range 0-65535
EOF
iptables-restore -n <<'EOF'
*nat
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-LOAD-BALANCER - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m comment --comment "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
-A KUBE-SERVICES -m comment --comment "Kubernetes service cluster ip + port for masquerade purpose" -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT
COMMIT
*filter
:KUBE-FORWARD - [0:0]
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
COMMIT
EOF
"#;

fn service(name: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "mig"},
        "spec": {"clusterIP": ip, "clusterIPs": [ip],
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
    })
}

fn slice(name: &str, service: &str, ips: &[&str]) -> Value {
    let endpoints: Vec<Value> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "nodeName": "node", "conditions": {"ready": true}}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "mig",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

#[test]
#[ignore = "needs the kernel lab"]
fn taking_over_from_kube_proxy_fails_no_request_and_removes_only_stale_state() {
    let _module = crate::br_netfilter_kept();
    let client = Netns::new("mig-client");
    let node = Netns::new("mig-node");
    veth(
        &client,
        "eth0",
        "192.168.50.2/24",
        &node,
        "to-client",
        "192.168.50.1/24",
    );
    client.sh("ip route add default via 192.168.50.1");
    node.sh(
        "ip link add cbr0 type bridge && ip addr add 10.244.0.1/24 dev cbr0 && ip link set cbr0 up",
    );
    let mut pods = Vec::new();
    for i in 0..2 {
        let pod = Netns::new("mig-pod");
        let ip = format!("10.244.0.{}", 10 + i);
        node.sh(&format!(
            "ip link add vp{i} type veth peer name eth0 netns {} && ip link set vp{i} master cbr0 up",
            pod.name()
        ));
        pod.sh(&format!(
            "ip addr add {ip}/24 dev eth0 && ip link set eth0 up && ip route add default via 10.244.0.1"
        ));
        let server = pod.http_server(8080, &format!("pod-{i}"));
        pods.push((pod, server));
    }
    let dir = std::env::temp_dir().join(format!("migration-{}", node.name()));
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    std::fs::write(dir.join("kube-proxy-state.sh"), KUBE_PROXY_STATE).unwrap();
    node.sh(&format!("sh {}", dir.join("kube-proxy-state.sh").display()));

    // kube-proxy's state serves the client before ipvs-proxy runs.
    let url = "http://10.96.0.10/";
    let answered = |ns: &Netns| {
        ns.exec(&format!("curl -sS --max-time 3 {url}"))
            .stdout
            .starts_with(b"pod-")
    };
    assert!(
        wait_until(Duration::from_secs(30), || answered(&client)),
        "kube-proxy-style state does not serve {url}:\n{}",
        node.sh("ipvsadm -Ln")
    );

    let objects = [
        service("web", "10.96.0.10"),
        slice("web-1", "web", &["10.244.0.10", "10.244.0.11"]),
    ];
    let text: Vec<String> = objects.iter().map(|o| o.to_string()).collect();
    std::fs::write(dir.join("manifests/web.json"), text.join("\n---\n")).unwrap();
    std::fs::write(dir.join("config.yaml"), support::LAB_AGENT_CONFIG).unwrap();

    // A bounded request loop spans the agent's start and first syncs.
    let loop_out = dir.join("loop.txt");
    const REQUESTS: usize = 40;
    let _requests = client.spawn(&format!(
        "sh -c 'for i in $(seq 1 {REQUESTS}); do if curl -s --max-time 3 {url} >/dev/null; \
         then echo ok; else echo FAIL; fi; sleep 0.2; done > {}'",
        loop_out.display()
    ));
    std::thread::sleep(Duration::from_secs(1));
    let _agent = node.spawn(&format!(
        "{AGENT} run --config {} --manifests {} --hostname-override node",
        dir.join("config.yaml").display(),
        dir.join("manifests").display()
    ));

    // State converges: the stale Service goes, from IPVS, kube-ipvs0 and the ipset.
    let converged = wait_until(Duration::from_secs(120), || {
        !node.sh("ipvsadm -Ln").contains("10.96.0.99:80")
            && !node
                .sh("ip -o addr show dev kube-ipvs0")
                .contains("10.96.0.99")
    });
    assert!(
        converged,
        "stale kube-proxy Service not removed:\n{}\n{}",
        node.sh("ipvsadm -Ln"),
        node.sh("ip -o addr show dev kube-ipvs0")
    );
    let finished = wait_until(Duration::from_secs(300), || {
        std::fs::read_to_string(&loop_out)
            .map(|t| t.lines().count() >= REQUESTS)
            .unwrap_or(false)
    });
    let results = std::fs::read_to_string(&loop_out).unwrap_or_default();
    assert!(finished, "request loop did not finish: {results}");
    let failed = results.lines().filter(|l| *l == "FAIL").count();
    assert_eq!(failed, 0, "requests failed during the takeover:\n{results}");

    let table = node.sh("ipvsadm -Ln");
    assert!(table.contains("TCP  10.96.0.10:80 rr"), "{table}");
    assert!(table.contains("10.244.0.10:8080"), "{table}");
    assert!(table.contains("10.244.0.11:8080"), "{table}");
    // The foreign virtual server is exactly as it was.
    assert!(table.contains("TCP  172.16.0.1:443 wlc"), "{table}");
    assert!(table.contains("10.9.9.9:443"), "{table}");
    let cluster_ips = node.sh("ipset list KUBE-CLUSTER-IP");
    assert!(cluster_ips.contains("10.96.0.10,tcp:80"), "{cluster_ips}");
    assert!(!cluster_ips.contains("10.96.0.99"), "{cluster_ips}");
    assert!(
        answered(&client),
        "{url} stopped answering after the takeover"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
