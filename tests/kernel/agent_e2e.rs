//! End to end: the `ipvs-proxy run` binary with the static source on a node namespace, backend
//! pods answering HTTP, a client namespace curling the Services. Every assertion is on
//! what the client receives or what the kernel holds (`ipvsadm`, `ip`).

use std::time::Duration;

use netns_lab::wait_until;
use serde_json::{Value, json};
use testkit::cluster::{Backend, Cluster};
use testkit::k8s::{http_port, ready_endpoints, with_ingress};

use crate::AGENT;

/// A cluster of `pods` pods answering `pod-<i>`.
fn cluster(pods: usize) -> Cluster {
    Cluster::new("e2e", pods, Backend::Named)
}

/// A Service in namespace `e2e`, with a load balancer `status` if given.
fn service(name: &str, spec: Value, status: Option<&str>) -> Value {
    let service = testkit::k8s::service("e2e", name, spec);
    match status {
        Some(ip) => with_ingress(service, &[ip]),
        None => service,
    }
}

/// An EndpointSlice in namespace `e2e` with ready endpoints `ips` on this node.
fn slice(name: &str, service: &str, ips: &[&str]) -> Value {
    testkit::k8s::slice("e2e", name, service, ready_endpoints(ips, "node"))
}

fn all_ips(cluster: &Cluster) -> Vec<&str> {
    cluster.ips()
}

#[test]
#[ignore = "needs the kernel lab"]
fn every_service_kind_is_reachable_and_spreads_over_endpoints() {
    let cluster = cluster(3);
    let ips = all_ips(&cluster);
    cluster.write(
        "web.json",
        &[
            service(
                "web",
                json!({"type": "LoadBalancer", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                       "externalIPs": ["192.168.50.200"], "ports": [http_port(Some(30080))]}),
                Some("192.168.50.100"),
            ),
            slice("web-1", "web", &ips),
        ],
    );
    cluster
        .client()
        .sh("ip route add 10.96.0.0/12 via 192.168.50.1");
    let _agent = cluster.start_binary(AGENT, "");

    for url in [
        "http://10.96.0.10/",
        "http://192.168.50.1:30080/",
        "http://192.168.50.100/",
        "http://192.168.50.200/",
    ] {
        assert!(
            cluster.wait_for(url, Duration::from_secs(60)),
            "{url} never answered; IPVS:\n{}",
            cluster.ipvs()
        );
    }
    // Round robin over three pods: nine requests reach every pod.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..9 {
        if let Some(body) = cluster.curl("http://10.96.0.10/") {
            seen.insert(body);
        }
    }
    assert_eq!(seen.len(), 3, "answers came from {seen:?}");

    let addresses = cluster.node().sh("ip -o addr show dev kube-ipvs0");
    for vip in ["10.96.0.10/32", "192.168.50.100/32", "192.168.50.200/32"] {
        assert!(
            addresses.contains(vip),
            "{vip} not on kube-ipvs0: {addresses}"
        );
    }
}

#[test]
#[ignore = "needs the kernel lab"]
fn session_affinity_sticks_to_one_endpoint() {
    let cluster = cluster(3);
    let ips = all_ips(&cluster);
    cluster.write(
        "sticky.json",
        &[
            service(
                "sticky",
                json!({"clusterIP": "10.96.0.40", "clusterIPs": ["10.96.0.40"],
                       "ports": [http_port(None)], "sessionAffinity": "ClientIP",
                       "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 300}}}),
                None,
            ),
            slice("sticky-1", "sticky", &ips),
        ],
    );
    cluster
        .client()
        .sh("ip route add 10.96.0.0/12 via 192.168.50.1");
    let _agent = cluster.start_binary(AGENT, "");
    assert!(cluster.wait_for("http://10.96.0.40/", Duration::from_secs(60)));
    let table = cluster.ipvs();
    assert!(table.contains("persistent 300"), "{table}");
    let answers: std::collections::BTreeSet<String> = (0..6)
        .filter_map(|_| cluster.curl("http://10.96.0.40/"))
        .collect();
    assert_eq!(answers.len(), 1, "affinity broken: {answers:?}");
}

#[test]
#[ignore = "needs the kernel lab"]
fn endpoint_changes_are_applied_and_foreign_services_survive() {
    let cluster = cluster(3);
    let ips = all_ips(&cluster);
    // Someone else's virtual service on the node (keepalived, say): never ours to touch.
    cluster.node().sh(
        "ipvsadm -A -t 172.16.0.1:443 -s wlc && ipvsadm -a -t 172.16.0.1:443 -r 10.9.9.9:443 -m",
    );
    cluster.write(
        "web.json",
        &[
            service(
                "web",
                json!({"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "ports": [http_port(None)]}),
                None,
            ),
            slice("web-1", "web", &ips[..1]),
        ],
    );
    cluster
        .client()
        .sh("ip route add 10.96.0.0/12 via 192.168.50.1");
    let _agent = cluster.start_binary(AGENT, "");
    assert!(cluster.wait_for("http://10.96.0.10/", Duration::from_secs(60)));
    assert_eq!(cluster.curl("http://10.96.0.10/").as_deref(), Some("pod-0"));

    // Scale up: the two new endpoints appear in IPVS.
    cluster.write(
        "web.json",
        &[
            service(
                "web",
                json!({"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "ports": [http_port(None)]}),
                None,
            ),
            slice("web-1", "web", &ips),
        ],
    );
    assert!(
        wait_until(Duration::from_secs(30), || cluster
            .ipvs()
            .contains("10.244.0.12:8080")),
        "scale-up not applied:\n{}",
        cluster.ipvs()
    );

    // Drift: an operator deletes our service by hand; the periodic resync restores it.
    cluster.node().sh("ipvsadm -D -t 10.96.0.10:80");
    assert!(
        wait_until(Duration::from_secs(30), || cluster
            .ipvs()
            .contains("10.96.0.10:80")),
        "drift not repaired:\n{}",
        cluster.ipvs()
    );

    // Delete the Service: ours goes, the foreign one stays exactly as it was.
    std::fs::remove_file(cluster.manifests().join("web.json")).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || !cluster
            .ipvs()
            .contains("10.96.0.10:80")),
        "deleted Service still programmed:\n{}",
        cluster.ipvs()
    );
    let table = cluster.ipvs();
    assert!(table.contains("TCP  172.16.0.1:443 wlc"), "{table}");
    assert!(table.contains("10.9.9.9:443"), "{table}");
    let addresses = cluster.node().sh("ip -o addr show dev kube-ipvs0");
    assert!(!addresses.contains("10.96.0.10"), "{addresses}");
}

#[test]
#[ignore = "needs the kernel lab"]
fn restarting_the_agent_fails_no_request() {
    let cluster = cluster(2);
    let ips = all_ips(&cluster);
    cluster.write(
        "web.json",
        &[
            service(
                "web",
                json!({"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "ports": [http_port(None)]}),
                None,
            ),
            slice("web-1", "web", &ips),
        ],
    );
    cluster
        .client()
        .sh("ip route add 10.96.0.0/12 via 192.168.50.1");
    let agent = cluster.start_binary(AGENT, "");
    assert!(cluster.wait_for("http://10.96.0.10/", Duration::from_secs(60)));

    // A bounded request loop runs while the agent is killed and started again.
    let loop_out = cluster.dir().join("loop.txt");
    let requests = cluster.client().spawn(&format!(
        "sh -c 'for i in $(seq 1 30); do if curl -s --max-time 3 http://10.96.0.10/ >/dev/null; \
         then echo ok; else echo FAIL; fi; sleep 0.2; done > {}'",
        loop_out.display()
    ));
    std::thread::sleep(Duration::from_secs(2));
    drop(agent.finish());
    std::thread::sleep(Duration::from_secs(2));
    let _agent = cluster.start_binary(AGENT, "");
    let finished = wait_until(Duration::from_secs(300), || {
        std::fs::read_to_string(&loop_out)
            .map(|t| t.lines().count() >= 30)
            .unwrap_or(false)
    });
    assert!(
        finished,
        "request loop did not finish: {:?}",
        std::fs::read_to_string(&loop_out)
    );
    drop(requests);
    let results = std::fs::read_to_string(&loop_out).unwrap();
    let failed = results.lines().filter(|l| *l == "FAIL").count();
    let ok = results.lines().filter(|l| *l == "ok").count();
    assert_eq!(
        (ok, failed),
        (30, 0),
        "request loop across the restart: {results}"
    );
}

#[test]
#[ignore = "needs the kernel lab"]
fn ipsets_are_filled_and_cleanup_removes_only_owned_state() {
    let cluster = cluster(1);
    let ips = all_ips(&cluster);
    cluster.node().sh("ipvsadm -A -t 172.16.0.1:443 -s wlc && \
         iptables -A INPUT -s 198.51.100.0/24 -m comment --comment foreign -j ACCEPT && \
         ipset create FOREIGN hash:ip");
    cluster.write(
        "web.json",
        &[
            service(
                "web",
                json!({"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                       "ports": [http_port(Some(30080))]}),
                None,
            ),
            slice("web-1", "web", &ips),
        ],
    );
    let agent = cluster.start_binary(AGENT, "");
    assert!(
        wait_until(Duration::from_secs(60), || cluster
            .node()
            .exec("ipset test KUBE-CLUSTER-IP 10.96.0.10,tcp:80")
            .status
            .success()),
        "KUBE-CLUSTER-IP never got the ClusterIP:\n{}",
        cluster.node().sh("ipset list")
    );
    assert!(
        cluster
            .node()
            .exec("ipset test KUBE-NODE-PORT-TCP 30080")
            .status
            .success()
    );
    assert!(
        cluster
            .node()
            .exec("ipset test KUBE-IPVS-IPS 10.96.0.10")
            .status
            .success()
    );
    assert!(
        cluster
            .node()
            .sh("iptables-save")
            .contains(":KUBE-POSTROUTING")
    );
    drop(agent.finish());

    let out = cluster.node().sh(&format!(
        "{AGENT} cleanup --config {}",
        cluster.config_path().display()
    ));
    assert!(out.contains("cleanup: removed"), "{out}");
    let table = cluster.ipvs();
    assert!(!table.contains("10.96.0.10:80"), "{table}");
    assert!(!table.contains(":30080"), "{table}");
    assert!(
        table.contains("172.16.0.1:443"),
        "foreign service removed:\n{table}"
    );
    let rules = cluster.node().sh("iptables-save");
    assert!(!rules.contains("KUBE-"), "{rules}");
    assert!(rules.contains("foreign"), "{rules}");
    let sets = cluster.node().sh("ipset list -n");
    assert_eq!(sets.trim(), "FOREIGN", "{sets}");
    assert!(
        !cluster
            .node()
            .exec("ip link show kube-ipvs0")
            .status
            .success()
    );
}

#[test]
#[ignore = "needs the kernel lab"]
fn changes_are_applied_incrementally_between_resyncs() {
    let cluster = cluster(3);
    let ips = all_ips(&cluster);
    // No periodic resync during the test: every change below goes the incremental way.
    std::fs::write(
        cluster.config_path(),
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
         mode: ipvs\nipvs:\n  syncPeriod: 1h\nmetricsBindAddress: 127.0.0.1:10249\n",
    )
    .unwrap();
    let web = |name: &str, vip: &str, endpoints: &[&str]| {
        vec![
            service(
                name,
                json!({"clusterIP": vip, "clusterIPs": [vip], "ports": [http_port(None)]}),
                None,
            ),
            slice(&format!("{name}-1"), name, endpoints),
        ]
    };
    cluster
        .client()
        .sh("ip route add 10.96.0.0/12 via 192.168.50.1");
    cluster.write("a.json", &web("a", "10.96.0.31", &ips[..1]));
    cluster.write("b.json", &web("b", "10.96.0.32", &ips[..1]));
    let log = cluster.log_path();
    let _agent = cluster.node().spawn(&format!(
        "{AGENT} run --config {} --manifests {} --hostname-override node > {} 2>&1",
        cluster.config_path().display(),
        cluster.manifests().display(),
        log.display()
    ));
    let has = |what: &str| cluster.ipvs().contains(what);
    let agent_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(60), || has("10.96.0.32:80")),
        "{}\n{}",
        cluster.ipvs(),
        agent_log()
    );
    let synced_lines = || -> Vec<String> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains(" synced"))
            .map(str::to_string)
            .collect()
    };
    // The first (full) sync has logged.
    assert!(wait_until(Duration::from_secs(30), || !synced_lines().is_empty()));
    let before = synced_lines().len();

    // One endpoint added to one Service: applied without a resync, reading and
    // writing only that Service's virtual server.
    cluster.write("a.json", &web("a", "10.96.0.31", &ips[..2]));
    assert!(
        wait_until(Duration::from_secs(30), || has(&format!("{}:8080", ips[1]))),
        "scale-up not applied:\n{}\n{}",
        cluster.ipvs(),
        agent_log()
    );
    let all = synced_lines();
    let lines = &all[before..];
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("scope=\"incremental\""), "{}", lines[0]);
    // The real server and its KUBE-LOOP-BACK entry.
    assert!(lines[0].contains("changes=2 "), "{}", lines[0]);
    let messages: u64 = lines[0]
        .split("netlink_messages=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no message count in {}", lines[0]));
    // Two reads (the virtual server, its real servers) and the two adds.
    assert_eq!(messages, 4, "{}", lines[0]);

    // A new Service, then a removed one: addresses and set entries follow.
    cluster.write("c.json", &web("c", "10.96.0.33", &ips[2..]));
    assert!(
        wait_until(Duration::from_secs(30), || has("10.96.0.33:80")),
        "{}",
        cluster.ipvs()
    );
    let sets = cluster.node().sh("ipset list KUBE-CLUSTER-IP");
    assert!(sets.contains("10.96.0.33,tcp:80"), "{sets}");
    std::fs::remove_file(cluster.manifests().join("b.json")).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || !has("10.96.0.32:80")),
        "{}",
        cluster.ipvs()
    );
    let addresses = cluster.node().sh("ip -o addr show dev kube-ipvs0");
    assert!(!addresses.contains("10.96.0.32/"), "{addresses}");
    assert!(addresses.contains("10.96.0.33/"), "{addresses}");
    let sets = cluster.node().sh("ipset list KUBE-CLUSTER-IP");
    assert!(!sets.contains("10.96.0.32,tcp:80"), "{sets}");
    // Every Service still answers.
    assert_eq!(cluster.curl("http://10.96.0.33/").as_deref(), Some("pod-2"));
    assert!(cluster.curl("http://10.96.0.31/").is_some());
    let all = synced_lines();
    assert!(
        all[before..]
            .iter()
            .all(|line| line.contains("scope=\"incremental\"")),
        "{:#?}",
        &all[before..]
    );
}
