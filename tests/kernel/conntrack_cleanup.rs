//! Kernel-lab tests of `ipvs_proxy::dataplane::stale_flows`: real UDP flows through an IPVS virtual
//! server, then the cleanup a sync's changes call for, cross-checked with the
//! `conntrack` CLI. Run with `scripts/vm-test -p ipvs-proxy -- conntrack`.

use std::collections::BTreeSet;
use std::time::Duration;

use conntrack_netlink::ConntrackHandle;
use ipvs_proxy::dataplane::stale_flows::{Cleanup, cleanup_after};
use ipvs_proxy::model::{Protocol, RealServer, VirtualServerKey};
use ipvs_proxy::plan::{Change, VirtualServerSpec};
use netns_lab::{Netns, Topology, wait_until};

fn key(addr: &str, port: u16, protocol: Protocol) -> VirtualServerKey {
    VirtualServerKey {
        addr: addr.parse().unwrap(),
        port,
        protocol,
    }
}

/// The udp and tcp entries of `conntrack -L -f FAMILY` on `ns`, each as
/// `proto src=.. dst=.. sport=.. dport=.. src=.. dst=.. sport=.. dport=..`.
fn flows(ns: &Netns, family: &str) -> BTreeSet<String> {
    ns.sh(&format!("conntrack -L -f {family} 2>/dev/null"))
        .lines()
        .filter(|line| line.starts_with("udp ") || line.starts_with("tcp "))
        .map(|line| {
            let proto = line.split_whitespace().next().unwrap();
            let tuple: Vec<&str> = line
                .split_whitespace()
                .filter(|w| {
                    ["src=", "dst=", "sport=", "dport="]
                        .iter()
                        .any(|p| w.starts_with(p))
                })
                .take(8)
                .collect();
            format!("{proto} {}", tuple.join(" "))
        })
        .collect()
}

/// The field `name=` of the original (0) or reply (1) direction of a flow line.
fn field<'a>(flow: &'a str, direction: usize, name: &str) -> &'a str {
    flow.split(' ')
        .skip(1 + 4 * direction)
        .take(4)
        .find_map(|w| w.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_default()
}

/// Python that sends one UDP datagram to `vip`:`port` from each of `count` fresh
/// sockets and waits up to two seconds for each echo.
fn send_udp(family: u8, vip: &str, port: u16, count: usize) -> String {
    let af = if family == 4 { "AF_INET" } else { "AF_INET6" };
    format!(
        "python3 -c '
import socket
for i in range({count}):
    c = socket.socket(socket.{af}, socket.SOCK_DGRAM)
    c.settimeout(2)
    c.sendto(b\"x\", (\"{vip}\", {port}))
    try: c.recv(16)
    except OSError: pass
'"
    )
}

/// client (10.0.1.2, fd00:1::2) — node (IPVS) — backends (10.0.2.2/.3, fd00:2::2/::3),
/// with conntrack on in the node and UDP echo on port 5353 plus TCP on 8080 at every
/// backend address.
struct Lab {
    client: Netns,
    node: Netns,
    _backends: Netns,
    _server: netns_lab::Background,
}

fn lab(prefix: &str) -> Lab {
    let Topology {
        client,
        node,
        mut pods,
    } = Topology::builder(prefix)
        .client_net("10.0.1")
        .pod_net("10.0.2")
        .first_host(2)
        .ipv6()
        .forwarding()
        .build();
    let backends = pods.remove(0).ns;
    backends.sh("ip addr add 10.0.2.3/24 dev eth0 && ip addr add fd00:2::3/64 dev eth0 nodad");
    node.sh("sysctl -qw net.ipv4.vs.conntrack=1");
    // kube-proxy's iptables rules use conntrack; one conntrack match turns it on here.
    // Long UDP/TCP timeouts: the slow lab must not see entries expire mid-test.
    node.sh("iptables -A INPUT -m conntrack --ctstate INVALID -j DROP");
    node.sh("ip6tables -A INPUT -m conntrack --ctstate INVALID -j DROP");
    node.sh("sysctl -qw net.netfilter.nf_conntrack_udp_timeout=600 net.netfilter.nf_conntrack_udp_timeout_stream=600 net.netfilter.nf_conntrack_tcp_timeout_time_wait=600 net.netfilter.nf_conntrack_tcp_timeout_close_wait=600");
    node.sh("ip link add kube-ipvs0 type dummy");
    let server = backends.spawn(
        "python3 -c '
import socket, select
socks = []
for family, addr in ((socket.AF_INET, \"10.0.2.2\"), (socket.AF_INET, \"10.0.2.3\"), (socket.AF_INET6, \"fd00:2::2\"), (socket.AF_INET6, \"fd00:2::3\")):
    s = socket.socket(family, socket.SOCK_DGRAM); s.bind((addr, 5353)); socks.append(s)
tcp = socket.socket(); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); tcp.bind((\"10.0.2.2\", 8080)); tcp.listen()
socks.append(tcp)
held = []
while True:
    for s in select.select(socks, [], [])[0]:
        if s is tcp:
            held.append(tcp.accept()[0])
        else:
            d, p = s.recvfrom(100); s.sendto(d, p)
'",
    );
    // ss cannot list UDP here (no udp_diag in the lab kernel): read /proc.
    // Polled twice a second: python starts slowly in the lab, slower still when every
    // CPU cycle goes to polling it.
    let up = wait_until(Duration::from_secs(90), || {
        let bound = backends
            .exec("grep -q ':14E9 ' /proc/net/udp6 && grep -q ':1F90 ' /proc/net/tcp")
            .status
            .success();
        if !bound {
            std::thread::sleep(Duration::from_millis(500));
        }
        bound
    });
    if !up {
        panic!("the backend servers never bound: {}", server.finish());
    }
    Lab {
        client,
        node,
        _backends: backends,
        _server: server,
    }
}

#[test]
#[ignore = "needs the kernel lab"]
fn conntrack_entries_of_a_removed_udp_endpoint_are_deleted_and_nothing_else() {
    let lab = lab("ctc");
    let node = &lab.node;
    node.sh("ip addr add 10.96.0.10/32 dev kube-ipvs0 && ip addr add 10.96.0.20/32 dev kube-ipvs0");
    node.sh("ip addr add fd00:96::10/128 dev kube-ipvs0 nodad");
    for (vip, backends) in [
        ("10.96.0.10:53", &["10.0.2.2:5353", "10.0.2.3:5353"][..]),
        ("10.96.0.20:53", &["10.0.2.2:5353"][..]),
        (
            "[fd00:96::10]:53",
            &["[fd00:2::2]:5353", "[fd00:2::3]:5353"][..],
        ),
    ] {
        node.sh(&format!("ipvsadm -A -u {vip} -s rr"));
        for backend in backends {
            node.sh(&format!("ipvsadm -a -u {vip} -r {backend} -m"));
        }
    }
    node.sh("ipvsadm -A -t 10.96.0.10:80 -s rr && ipvsadm -a -t 10.96.0.10:80 -r 10.0.2.2:8080 -m");

    lab.client.sh(&send_udp(4, "10.96.0.10", 53, 6));
    lab.client.sh(&send_udp(4, "10.96.0.20", 53, 2));
    lab.client.sh(&send_udp(6, "fd00:96::10", 53, 4));
    lab.client.sh(
        "python3 -c 'import socket; socket.create_connection((\"10.96.0.10\", 80), 5).close()'",
    );

    let before4 = flows(node, "ipv4");
    let before6 = flows(node, "ipv6");
    // What kube-proxy deletes once 10.0.2.2 / fd00:2::2 leave the Service at VIP:53.
    let doomed = |all: &BTreeSet<String>, vip: &str, endpoint: &str| -> BTreeSet<String> {
        all.iter()
            .filter(|f| {
                f.starts_with("udp ")
                    && field(f, 0, "dst") == vip
                    && field(f, 0, "dport") == "53"
                    && field(f, 1, "src") == endpoint
            })
            .cloned()
            .collect()
    };
    let doomed4 = doomed(&before4, "10.96.0.10", "10.0.2.2");
    let doomed6 = doomed(&before6, "fd00:96::10", "fd00:2::2");
    // rr over two backends: half the flows each.
    assert_eq!(doomed4.len(), 3, "{before4:#?}");
    assert_eq!(doomed6.len(), 2, "{before6:#?}");
    let other_vip = before4
        .iter()
        .filter(|f| field(f, 0, "dst") == "10.96.0.20")
        .count();
    assert_eq!(other_vip, 2, "{before4:#?}");
    assert!(
        before4.iter().any(|f| f.starts_with("tcp ")),
        "{before4:#?}"
    );

    node.sh("ipvsadm -d -u 10.96.0.10:53 -r 10.0.2.2:5353");
    node.sh("ipvsadm -d -u [fd00:96::10]:53 -r [fd00:2::2]:5353");
    let changes = [
        Change::DeleteRealServer {
            virtual_server: key("10.96.0.10", 53, Protocol::Udp),
            addr: "10.0.2.2".parse().unwrap(),
            port: 5353,
        },
        Change::DeleteRealServer {
            virtual_server: key("fd00:96::10", 53, Protocol::Udp),
            addr: "fd00:2::2".parse().unwrap(),
            port: 5353,
        },
    ];
    let report = node.run(|| cleanup_after(&changes, &mut ConntrackHandle::new().unwrap()));
    assert!(report.is_complete(), "{:?}", report.errors);
    assert_eq!(report.cleanups.len(), 2);
    assert_eq!(report.deleted, 5);

    let after4 = flows(node, "ipv4");
    let after6 = flows(node, "ipv6");
    assert_eq!(after4, before4.difference(&doomed4).cloned().collect());
    assert_eq!(after6, before6.difference(&doomed6).cloned().collect());
}

#[test]
#[ignore = "needs the kernel lab"]
fn untranslated_entries_go_when_the_service_gets_an_endpoint() {
    let lab = lab("ctu");
    let node = &lab.node;
    // The address is bound but no virtual server serves it yet: the node itself answers
    // (ICMP port unreachable) and conntrack keeps the untranslated flow.
    node.sh("ip addr add 10.96.0.30/32 dev kube-ipvs0");
    // One datagram from a fixed client port; the echo is printed when it comes.
    let send_from_41000 = "python3 -c '
import socket
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
c.bind((\"10.0.1.2\", 41000)); c.settimeout(3)
c.sendto(b\"x\", (\"10.96.0.30\", 53))
try: print(\"echo\", c.recv(16))
except OSError as e: print(\"no echo:\", e)
'";
    let first = lab.client.sh(send_from_41000);
    assert!(first.contains("no echo"), "{first}");
    let untranslated = "udp src=10.0.1.2 dst=10.96.0.30 sport=41000 dport=53 src=10.96.0.30 dst=10.0.1.2 sport=53 dport=41000";
    let before = flows(node, "ipv4");
    assert!(
        before.contains(untranslated),
        "no untranslated entry: {before:#?}"
    );

    node.sh("ipvsadm -A -u 10.96.0.30:53 -s rr && ipvsadm -a -u 10.96.0.30:53 -r 10.0.2.3:5353 -m");
    let vs = key("10.96.0.30", 53, Protocol::Udp);
    let changes = [
        Change::AddVirtualServer(VirtualServerSpec {
            key: vs,
            scheduler: "rr".into(),
            persistence_timeout: None,
        }),
        Change::AddRealServer {
            virtual_server: vs,
            real_server: RealServer {
                addr: "10.0.2.3".parse().unwrap(),
                port: 5353,
                weight: 1,
            },
        },
    ];
    let report = node.run(|| cleanup_after(&changes, &mut ConntrackHandle::new().unwrap()));
    assert_eq!(report.cleanups, vec![Cleanup::Untranslated(vs)]);
    assert!(report.is_complete(), "{:?}", report.errors);
    assert_eq!(report.deleted, 1);

    assert!(!flows(node, "ipv4").contains(untranslated));

    // The same client port now reaches the backend, and its flow is translated.
    let second = lab.client.sh(send_from_41000);
    assert!(second.contains("echo b'x'"), "{second}");
    let translated = "udp src=10.0.1.2 dst=10.96.0.30 sport=41000 dport=53 src=10.0.2.3 dst=10.0.1.2 sport=5353 dport=41000";
    let after = flows(node, "ipv4");
    assert!(after.contains(translated), "{after:#?}");
}
