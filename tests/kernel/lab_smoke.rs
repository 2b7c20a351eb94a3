//! Proves the kernel lab: dummy links, IPVS and a real data path inside a
//! fresh network namespace per test. Run with `scripts/vm-test` (or `scripts/test`).

use netns_lab::{Netns, Topology, wait_until};
use std::time::Duration;

#[test]
#[ignore = "needs the kernel lab"]
fn dummy_kube_ipvs0_and_ipvsadm_service_show_in_proc() {
    let node = Netns::new("smoke");
    node.sh("ip link add kube-ipvs0 type dummy");
    node.sh("ip addr add 10.96.0.10/32 dev kube-ipvs0");
    node.sh("ipvsadm -A -t 10.96.0.10:80 -s rr");
    node.sh("ipvsadm -a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 3");

    let links = node.sh("ip -o link show kube-ipvs0");
    assert!(links.contains("kube-ipvs0"), "{links}");
    assert!(links.contains("link/ether"), "dummy link expected: {links}");

    let table = node.run(|| std::fs::read_to_string("/proc/thread-self/net/ip_vs").unwrap());
    // /proc/net/ip_vs prints addresses in hex: 10.96.0.10:80 = 0A60000A:0050.
    assert!(table.contains("TCP  0A60000A:0050 rr"), "{table}");
    assert!(table.contains("-> 0AF40105:1F90      Masq    3"), "{table}");

    // A second namespace sees none of it: state is per-namespace.
    let other = Netns::new("smoke");
    let empty = other.run(|| std::fs::read_to_string("/proc/thread-self/net/ip_vs").unwrap());
    assert!(!empty.contains("0A60000A"), "{empty}");
}

#[test]
#[ignore = "needs the kernel lab"]
fn client_reaches_backend_through_ipvs_vip() {
    let Topology {
        client,
        node,
        mut pods,
    } = Topology::builder("client").forwarding().build();
    let backend = pods.remove(0).ns;

    node.sh("ip link add kube-ipvs0 type dummy");
    node.sh("ip addr add 10.96.0.20/32 dev kube-ipvs0");
    node.sh("ipvsadm -A -t 10.96.0.20:80 -s rr");
    node.sh("ipvsadm -a -t 10.96.0.20:80 -r 10.244.0.10:8080 -m");
    client.sh("ip route add 10.96.0.0/12 via 192.168.50.1");

    let _server = backend.http_server(8080, "backend-says-hello");
    let reply = client.sh("curl -sS --max-time 5 http://10.96.0.20/");
    assert_eq!(reply.trim(), "backend-says-hello");

    // IPVS really carried it: the real server's connection counter moves. The kernel
    // folds per-CPU counters into what it reports from its 2-second estimator timer,
    // so poll for a few seconds.
    let counted = wait_until(Duration::from_secs(8), || {
        let stats = node.sh("ipvsadm -Ln --stats -t 10.96.0.20:80");
        stats
            .lines()
            .find(|l| l.contains("10.244.0.10:8080"))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|conns| conns >= 1)
    });
    assert!(
        counted,
        "IPVS never counted the connection:\n{}",
        node.sh("ipvsadm -Ln --stats")
    );
}
