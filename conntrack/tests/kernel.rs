//! Kernel-lab tests: the crate against the real kernel conntrack table, cross-checked
//! with the `conntrack` CLI, each in its own network namespace. Run with
//! `scripts/vm-test -p conntrack-netlink`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Instant;

use conntrack_netlink::{
    ConntrackHandle, Family, Flow, FlowFilter, IPPROTO_TCP, IPPROTO_UDP, ReplySource,
};
use netns_lab::Netns;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A namespace whose conntrack is on: a `conntrack` match in iptables and ip6tables makes
/// the kernel track both families there. UDP entries live 10 minutes instead of 30 s, so
/// the slow lab cannot see them expire during a test.
fn tracked_netns(prefix: &str) -> Netns {
    let ns = Netns::new(prefix);
    ns.sh("sysctl -qw net.netfilter.nf_conntrack_udp_timeout=600 net.netfilter.nf_conntrack_udp_timeout_stream=600");
    ns.sh("iptables -A INPUT -m conntrack --ctstate INVALID -j DROP");
    ns.sh("ip6tables -A INPUT -m conntrack --ctstate INVALID -j DROP");
    ns
}

/// Python that sends `count` UDP datagrams, each from a fresh socket, to `dst:port`
/// (family 4 or 6) and waits for each echo up to a second (none comes when nothing
/// listens: the flow is then answered by the kernel with an ICMP error).
fn udp_flows(family: u8, dst: &str, port: u16, count: usize) -> String {
    let af = if family == 4 { "AF_INET" } else { "AF_INET6" };
    format!(
        "python3 -c '
import socket
for i in range({count}):
    c = socket.socket(socket.{af}, socket.SOCK_DGRAM)
    c.settimeout(1)
    c.sendto(b\"x\", (\"{dst}\", {port}))
    try: c.recv(16)
    except OSError: pass
    c.close()
'"
    )
}

/// A UDP echo server on each `addr` at `port` (all of one family).
fn udp_echo(ns: &Netns, family: u8, addrs: &[&str], port: u16) -> netns_lab::Background {
    let af = if family == 4 { "AF_INET" } else { "AF_INET6" };
    let list = addrs
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(",");
    let server = ns.spawn(&format!(
        "python3 -c '
import socket, select
socks = []
for a in ({list},):
    s = socket.socket(socket.{af}, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a, {port}))
    socks.append(s)
while True:
    for s in select.select(socks, [], [])[0]:
        d, p = s.recvfrom(100)
        s.sendto(d, p)
'"
    ));
    // ss cannot list UDP sockets here (no udp_diag in the lab kernel): read /proc.
    let table = if family == 4 { "udp" } else { "udp6" };
    // Polled twice a second: python starts slowly in the lab, slower still when every
    // CPU cycle goes to polling it.
    let listening = netns_lab::wait_until(std::time::Duration::from_secs(90), || {
        let bound = ns.sh(&format!("grep -c ':{port:04X} ' /proc/net/{table} || true"));
        let ready = bound.trim().parse::<usize>().unwrap_or(0) >= addrs.len();
        if !ready {
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        ready
    });
    if !listening {
        panic!(
            "udp echo on {addrs:?}:{port} never listened: {}",
            server.finish()
        );
    }
    server
}

/// The udp and tcp entries of `conntrack -L -f FAMILY`, each as
/// `proto src=.. dst=.. sport=.. dport=.. src=.. dst=.. sport=.. dport=..`.
fn cli_flows(ns: &Netns, family: Family) -> BTreeSet<String> {
    let out = ns.sh(&format!("conntrack -L -f {family} 2>/dev/null"));
    out.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let proto = words.next()?;
            if proto != "udp" && proto != "tcp" {
                return None;
            }
            let tuple: Vec<&str> = line
                .split_whitespace()
                .filter(|w| {
                    ["src=", "dst=", "sport=", "dport="]
                        .iter()
                        .any(|p| w.starts_with(p))
                })
                .take(8)
                .collect();
            Some(format!("{proto} {}", tuple.join(" ")))
        })
        .collect()
}

/// The reply direction's `src=` of a flow as [`cli_flows`] spells it.
fn reply_source(flow: &str) -> &str {
    flow.split(' ').nth(5).unwrap_or_default()
}

fn crate_flows(ns: &Netns, family: Family) -> BTreeSet<String> {
    ns.run(|| ConntrackHandle::new().unwrap().dump(family).unwrap())
        .iter()
        .filter(|f| [IPPROTO_UDP, IPPROTO_TCP].contains(&f.original.protocol))
        .map(ToString::to_string)
        .collect()
}

#[test]
#[ignore = "needs the kernel lab"]
fn dump_matches_the_conntrack_cli_for_ipv4_and_ipv6() {
    let ns = tracked_netns("ct-dump");
    ns.sh("ip link add d0 type dummy && ip link set d0 up");
    ns.sh("ip addr add 10.0.2.2/24 dev d0 && ip addr add fd00:2::2/64 dev d0 nodad");
    let _v4 = udp_echo(&ns, 4, &["10.0.2.2"], 5353);
    let _v6 = udp_echo(&ns, 6, &["fd00:2::2"], 5353);
    ns.sh(&udp_flows(4, "10.0.2.2", 5353, 20));
    ns.sh(&udp_flows(6, "fd00:2::2", 5353, 10));
    // Nothing listens on 9: untranslated, unreplied flows.
    ns.sh(&udp_flows(4, "10.0.2.2", 9, 3));
    ns.sh(&udp_flows(6, "fd00:2::2", 9, 3));
    ns.sh("python3 -c '
import socket
s = socket.socket(); s.bind((\"10.0.2.2\", 8080)); s.listen()
c = socket.create_connection((\"10.0.2.2\", 8080), 5); a, _ = s.accept(); c.close(); a.close()
'");

    for family in [Family::Ipv4, Family::Ipv6] {
        let ours = crate_flows(&ns, family);
        let cli = cli_flows(&ns, family);
        let udp = ours.iter().filter(|f| f.starts_with("udp ")).count();
        let want = if family == Family::Ipv4 { 23 } else { 13 };
        assert_eq!(udp, want, "{family} udp flows: {ours:#?}");
        assert_eq!(
            ours, cli,
            "{family}: the crate's dump differs from conntrack -L"
        );
    }
    let tcp = crate_flows(&ns, Family::Ipv4)
        .into_iter()
        .filter(|f| f.starts_with("tcp "))
        .count();
    assert_eq!(tcp, 1, "the TCP flow is missing");
}

#[test]
#[ignore = "needs the kernel lab"]
fn delete_matching_deletes_exactly_the_flows_sent_to_one_backend() {
    let ns = tracked_netns("ct-del");
    ns.sh("ip link add d0 type dummy && ip link set d0 up");
    ns.sh("ip addr add 10.0.2.2/24 dev d0 && ip addr add 10.0.2.3/24 dev d0");
    ns.sh("ip addr add 10.96.0.20/32 dev d0 && ip addr add 10.0.2.9/24 dev d0");
    // A service address with two backends, alternating, as DNAT does it.
    ns.sh("iptables -t nat -A OUTPUT -d 10.96.0.10 -p udp --dport 53 -m statistic --mode nth --every 2 --packet 0 -j DNAT --to-destination 10.0.2.2:5353");
    ns.sh("iptables -t nat -A OUTPUT -d 10.96.0.10 -p udp --dport 53 -j DNAT --to-destination 10.0.2.3:5353");
    ns.sh("iptables -t nat -A OUTPUT -d 10.96.0.11 -p udp --dport 53 -j DNAT --to-destination 10.0.2.2:5353");
    // The client's address differs from both backends', so each flow's direction is plain.
    ns.sh("ip route add 10.96.0.0/24 dev d0 src 10.0.2.9");
    let _echo = udp_echo(&ns, 4, &["10.0.2.2", "10.0.2.3"], 5353);
    ns.sh(&udp_flows(4, "10.96.0.10", 53, 10));
    ns.sh(&udp_flows(4, "10.96.0.11", 53, 3));
    // Untranslated flows to a local address where nothing listens.
    ns.sh(&udp_flows(4, "10.96.0.20", 53, 2));

    let before = cli_flows(&ns, Family::Ipv4);
    let to_gone: BTreeSet<String> = before
        .iter()
        .filter(|f| reply_source(f) == "src=10.0.2.2" && f.contains(" dst=10.96.0.10 "))
        .cloned()
        .collect();
    assert_eq!(to_gone.len(), 5, "{before:#?}");

    let gone_backend = FlowFilter {
        protocol: IPPROTO_UDP,
        original_destination: Some(ip("10.96.0.10")),
        original_destination_port: Some(53),
        reply_source: ReplySource::Endpoint {
            addr: ip("10.0.2.2"),
            port: Some(5353),
        },
    };
    let (outcome, again) = ns.run(|| {
        let mut conntrack = ConntrackHandle::new().unwrap();
        let doomed: Vec<Flow> = conntrack
            .dump(Family::Ipv4)
            .unwrap()
            .into_iter()
            .filter(|f| gone_backend.matches(f))
            .collect();
        let outcome = conntrack
            .delete_matching(Family::Ipv4, &[gone_backend])
            .unwrap();
        // The same entries once more: gone already, which is no failure.
        let again = conntrack.delete_batch(&doomed).unwrap();
        (outcome, again)
    });
    assert_eq!((outcome.deleted, outcome.failures.len()), (5, 0));
    assert_eq!(
        (again.deleted, again.already_gone, again.failures.len()),
        (0, 5, 0)
    );
    let after = cli_flows(&ns, Family::Ipv4);
    let expected: BTreeSet<String> = before.difference(&to_gone).cloned().collect();
    assert_eq!(
        after, expected,
        "exactly the flows to 10.96.0.10:53 via 10.0.2.2 go"
    );

    // Now the untranslated ones: only the two to 10.96.0.20.
    let untranslated = FlowFilter {
        protocol: IPPROTO_UDP,
        original_destination: None,
        original_destination_port: Some(53),
        reply_source: ReplySource::Untranslated,
    };
    let outcome = ns.run(|| {
        ConntrackHandle::new()
            .unwrap()
            .delete_matching(Family::Ipv4, &[untranslated])
            .unwrap()
    });
    assert_eq!(outcome.deleted, 2);
    let last = cli_flows(&ns, Family::Ipv4);
    assert_eq!(last.len(), expected.len() - 2);
    assert!(
        last.iter().all(|f| !f.contains("dst=10.96.0.20 ")),
        "{last:#?}"
    );
}

#[test]
#[ignore = "needs the kernel lab"]
fn a_thousand_flows_are_deleted_in_one_batch() {
    let ns = tracked_netns("ct-many");
    ns.sh("ip link add d0 type dummy && ip link set d0 up && ip addr add 10.0.2.2/24 dev d0");
    let count = 1000;
    ns.sh(&format!(
        "python3 -c '
import socket
socks = []
for i in range({count}):
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.sendto(b\"x\", (\"10.0.2.2\", 9))
    socks.append(c)
'"
    ));
    let listed = ns.sh("conntrack -C").trim().parse::<usize>().unwrap();
    assert!(listed >= count, "only {listed} entries");
    let (outcome, took) = ns.run(|| {
        let mut conntrack = ConntrackHandle::new().unwrap();
        let all = FlowFilter {
            protocol: IPPROTO_UDP,
            original_destination: Some(ip("10.0.2.2")),
            original_destination_port: Some(9),
            reply_source: ReplySource::Any,
        };
        let start = Instant::now();
        let outcome = conntrack.delete_matching(Family::Ipv4, &[all]).unwrap();
        (outcome, start.elapsed())
    });
    println!("dump + delete of {count} flows took {took:?}");
    assert_eq!((outcome.deleted, outcome.failures.len()), (count, 0));
    let left = ns.sh("conntrack -L -p udp --orig-dst 10.0.2.2 2>/dev/null | wc -l");
    assert_eq!(left.trim(), "0");
}

#[test]
#[ignore = "needs the kernel lab"]
fn each_namespace_sees_only_its_own_table() {
    let a = tracked_netns("ct-ns");
    let b = tracked_netns("ct-ns");
    a.sh("ip link add d0 type dummy && ip link set d0 up && ip addr add 10.0.2.2/24 dev d0");
    a.sh(&udp_flows(4, "10.0.2.2", 9, 2));
    let in_a = a.run(|| ConntrackHandle::new().unwrap().dump(Family::Ipv4).unwrap());
    let in_b = b.run(|| ConntrackHandle::new().unwrap().dump(Family::Ipv4).unwrap());
    assert_eq!(
        in_a.iter()
            .filter(|f| f.original.destination == ip("10.0.2.2"))
            .count(),
        2
    );
    assert!(in_b.is_empty(), "{in_b:?}");
}
