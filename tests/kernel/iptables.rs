//! The iptables rules against the real kernel: what iptables-save shows, resyncs and
//! cleanup next to foreign rules, and the data path (masquerade, source ranges, the
//! VIP port filter) through IPVS. Run with `scripts/vm-test -p ipvs-proxy -- iptables`.

use std::time::Duration;

use ipvs_proxy::dataplane::iptables::{
    Backend, Family, Iptables, JUMPS, KubeSet, LbNoNodeAccess, LocalTraffic, RuleInputs,
    SavedRules, Table,
};
use ipvs_proxy::model::Protocol;
use netns_lab::{Netns, veth, wait_until};

/// Runs a sync of `inputs` inside `ns` through `backend`.
fn sync(ns: &Netns, backend: Backend, inputs: &RuleInputs) {
    let family = inputs.family;
    ns.run(|| Iptables::new(backend, family).sync(inputs))
        .unwrap_or_else(|error| panic!("sync in {}: {error}", ns.name()));
}

fn cleanup(ns: &Netns, backend: Backend, family: Family) {
    ns.run(|| Iptables::new(backend, family).cleanup())
        .unwrap_or_else(|error| panic!("cleanup in {}: {error}", ns.name()));
}

/// The `-A` lines of nat and filter, grouped by chain (stable, so the order inside
/// each chain is kept), from a save dump.
fn rules_by_chain(save: &str) -> Vec<String> {
    let saved = SavedRules::parse(save);
    let mut lines = Vec::new();
    for table in [Table::Nat, Table::Filter] {
        let mut rules: Vec<(String, String)> = saved
            .all_rules(table)
            .map(|(chain, spec)| {
                (
                    chain.to_string(),
                    format!("{} -A {chain} {spec}", table.name()),
                )
            })
            .collect();
        rules.sort_by(|a, b| a.0.cmp(&b.0));
        lines.extend(rules.into_iter().map(|(_, line)| line));
    }
    lines
}

/// Every chain of nat and filter, as `table:chain`.
fn chains(save: &str) -> Vec<String> {
    let saved = SavedRules::parse(save);
    let mut names = Vec::new();
    for table in [Table::Nat, Table::Filter] {
        names.extend(saved.chains(table).map(|c| format!("{}:{c}", table.name())));
    }
    names
}

/// The save dump with counters and comment lines removed, for before/after equality.
fn normalized(save: &str) -> Vec<String> {
    save.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match l.find(" [") {
            Some(at) if l.starts_with(':') => l[..at].to_string(),
            _ => l.to_string(),
        })
        .collect()
}

fn our_jump_lines(table: Table) -> Vec<String> {
    JUMPS
        .iter()
        .filter(|j| j.table == table)
        .map(|j| format!("{} -A {} {}", table.name(), j.from, j.spec()))
        .collect()
}

#[test]
#[ignore = "needs the kernel lab"]
fn iptables_save_shows_exactly_our_chains_and_jumps() {
    let node = Netns::new("ipt-exact");
    node.sh("ipset create KUBE-CLUSTER-IP hash:ip,port");
    node.sh("ipset add KUBE-CLUSTER-IP 10.96.0.10,tcp:80");
    node.sh("ipset create KUBE-IPVS-IPS hash:ip");
    node.sh("ipset add KUBE-IPVS-IPS 10.96.0.10");
    let mut inputs = RuleInputs::new(Family::V4);
    inputs.non_empty_sets = [KubeSet::ClusterIp, KubeSet::IpvsIps].into();
    inputs.local_traffic = LocalTraffic::Cidr("10.244.0.0/16".parse().unwrap());
    // iptables 1.8 in the lab: MASQUERADE --random-fully is available.
    inputs.random_fully =
        node.run(|| Iptables::new(Backend::Nft, Family::V4).supports_random_fully());
    assert!(inputs.random_fully);
    sync(&node, Backend::Nft, &inputs);

    let save = node.sh("iptables-nft-save");
    let mut expected_chains: Vec<String> = [
        "nat:INPUT",
        "nat:KUBE-LOAD-BALANCER",
        "nat:KUBE-MARK-MASQ",
        "nat:KUBE-NODE-PORT",
        "nat:KUBE-POSTROUTING",
        "nat:KUBE-SERVICES",
        "nat:OUTPUT",
        "nat:POSTROUTING",
        "nat:PREROUTING",
        "filter:FORWARD",
        "filter:INPUT",
        "filter:KUBE-FORWARD",
        "filter:KUBE-IPVS-FILTER",
        "filter:KUBE-IPVS-OUT-FILTER",
        "filter:KUBE-NODE-PORT",
        "filter:KUBE-PROXY-FIREWALL",
        "filter:KUBE-SOURCE-RANGES-FIREWALL",
        "filter:OUTPUT",
    ]
    .map(String::from)
    .to_vec();
    expected_chains.sort();
    let mut actual_chains = chains(&save);
    actual_chains.sort();
    assert_eq!(actual_chains, expected_chains, "{save}");

    let mut expected = Vec::new();
    let nat = |rules: &[&str]| rules.iter().map(|r| format!("nat {r}")).collect::<Vec<_>>();
    let filter = |rules: &[&str]| {
        rules
            .iter()
            .map(|r| format!("filter {r}"))
            .collect::<Vec<_>>()
    };
    expected.extend(nat(&["-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ"]));
    expected.extend(nat(&[
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
    ]));
    expected.extend(nat(&[
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
        "-A KUBE-POSTROUTING -j MASQUERADE --random-fully",
    ]));
    expected.extend(nat(&[
        "-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN",
        "-A KUBE-SERVICES ! -s 10.244.0.0/16 -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ",
        "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT",
        "-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT",
    ]));
    let mut nat_jumps = our_jump_lines(Table::Nat);
    expected.append(&mut nat_jumps);
    expected.extend(filter(&[
        "-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT",
        "-A KUBE-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    ]));
    expected.extend(filter(&[
        "-A KUBE-IPVS-FILTER -m set --match-set KUBE-CLUSTER-IP dst,dst -j RETURN",
        "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT --reject-with icmp-port-unreachable",
    ]));
    expected.extend(filter(&["-A KUBE-SOURCE-RANGES-FIREWALL -j DROP"]));
    let mut filter_jumps = our_jump_lines(Table::Filter);
    expected.append(&mut filter_jumps);

    let mut actual = rules_by_chain(&save);
    actual.sort();
    expected.sort();
    assert_eq!(actual, expected, "{save}");

    // Order matters where several jumps share a built-in chain: JUMPS order.
    let input: Vec<_> = rules_by_chain(&save)
        .into_iter()
        .filter(|l| l.starts_with("filter -A INPUT "))
        .collect();
    assert_eq!(
        input,
        our_jump_lines(Table::Filter)
            .into_iter()
            .filter(|l| l.starts_with("filter -A INPUT "))
            .collect::<Vec<_>>()
    );
}

#[test]
#[ignore = "needs the kernel lab"]
fn iptables_ipv6_rules_use_kube_6_sets_through_ip6tables() {
    let node = Netns::new("ipt-v6");
    node.sh("ipset create KUBE-6-CLUSTER-IP hash:ip,port family inet6");
    node.sh("ipset add KUBE-6-CLUSTER-IP fd00:96::10,tcp:80");
    node.sh("ipset create KUBE-6-LOAD-BALANCER-SOURCE-CID hash:ip,port,net family inet6");
    let mut inputs = RuleInputs::new(Family::V6);
    inputs.non_empty_sets = [KubeSet::ClusterIp, KubeSet::LoadBalancerSourceCidr].into();
    sync(&node, Backend::Nft, &inputs);

    let save = node.sh("ip6tables-nft-save");
    assert!(
        save.contains("-A KUBE-SERVICES -s ::1/128 -j RETURN"),
        "{save}"
    );
    assert!(
        save.contains(
            "-A KUBE-SERVICES -m set --match-set KUBE-6-CLUSTER-IP src,dst -j KUBE-MARK-MASQ"
        ),
        "{save}"
    );
    assert!(
        save.contains("--match-set KUBE-6-LOAD-BALANCER-SOURCE-CID dst,dst,src -j RETURN"),
        "{save}"
    );
    for jump in JUMPS {
        assert_eq!(
            SavedRules::parse(&save).jump_count(&jump),
            1,
            "{jump:?} in\n{save}"
        );
    }
    // The IPv4 tables were not touched.
    let v4 = node.sh("iptables-nft-save");
    assert!(!v4.contains("KUBE-"), "{v4}");
}

#[test]
#[ignore = "needs the kernel lab"]
fn iptables_foreign_rules_survive_resync_and_cleanup_and_jumps_never_duplicate() {
    let node = Netns::new("ipt-foreign");
    node.sh("iptables -t nat -N FOREIGN-NAT");
    node.sh("iptables -t nat -A FOREIGN-NAT -p tcp --dport 8080 -j RETURN");
    node.sh("iptables -t nat -A PREROUTING -s 10.9.0.0/16 -j FOREIGN-NAT");
    node.sh("iptables -t nat -A POSTROUTING -o eth9 -j MASQUERADE");
    node.sh("iptables -N FOREIGN-FILTER");
    node.sh("iptables -A FOREIGN-FILTER -s 192.0.2.1 -j DROP");
    node.sh("iptables -A INPUT -j FOREIGN-FILTER");
    node.sh("iptables -A FORWARD -i eth9 -j ACCEPT");
    node.sh("iptables -P FORWARD DROP");
    let before = normalized(&node.sh("iptables-save"));

    node.sh("ipset create KUBE-LOAD-BALANCER hash:ip,port");
    node.sh("ipset add KUBE-LOAD-BALANCER 203.0.113.10,tcp:80");
    let mut inputs = RuleInputs::new(Family::V4);
    inputs.non_empty_sets = [KubeSet::LoadBalancer].into();
    sync(&node, Backend::Nft, &inputs);
    // A resync with a different input replaces our rules, not appends to them.
    inputs.non_empty_sets.clear();
    sync(&node, Backend::Nft, &inputs);
    // Someone (an older run killed mid-way, a human) added a second copy of a jump.
    node.sh(&format!(
        "iptables -t nat -A PREROUTING {}",
        JUMPS
            .iter()
            .find(|j| j.from == "PREROUTING")
            .unwrap()
            .spec()
    ));
    sync(&node, Backend::Nft, &inputs);

    let synced = node.sh("iptables-save");
    let saved = SavedRules::parse(&synced);
    for jump in JUMPS {
        assert_eq!(saved.jump_count(&jump), 1, "{jump:?} in\n{synced}");
    }
    assert!(
        !synced.contains("KUBE-LOAD-BALANCER dst,dst"),
        "stale rule kept:\n{synced}"
    );
    assert_eq!(
        saved.rules(Table::Nat, "KUBE-SERVICES").len(),
        2,
        "loopback RETURN + node ports only:\n{synced}"
    );
    // Every foreign line is still there, in the same order.
    let after_sync = normalized(&synced);
    let foreign_kept: Vec<_> = after_sync.iter().filter(|l| before.contains(l)).collect();
    let foreign_before: Vec<_> = before.iter().collect();
    assert_eq!(foreign_kept, foreign_before, "{synced}");
    assert!(synced.contains(":FORWARD DROP"), "policy kept:\n{synced}");

    cleanup(&node, Backend::Nft, Family::V4);
    let after_cleanup = normalized(&node.sh("iptables-save"));
    assert_eq!(after_cleanup, before);
    // A second cleanup has nothing to do and succeeds.
    cleanup(&node, Backend::Nft, Family::V4);
}

#[test]
#[ignore = "needs the kernel lab"]
fn iptables_backend_detection_follows_the_rules_already_there() {
    let node = Netns::new("ipt-detect");
    let detect = || node.run(Backend::detect);
    assert_eq!(detect(), Backend::Nft, "an empty host defaults to nft");

    for i in 1..=3 {
        node.sh(&format!(
            "iptables-legacy -A INPUT -s 198.51.100.{i} -j DROP"
        ));
    }
    assert_eq!(detect(), Backend::Legacy, "legacy holds more rules");

    // Legacy works end to end: our jumps land in legacy, nothing in nft.
    let inputs = RuleInputs::new(Family::V4);
    sync(&node, Backend::Legacy, &inputs);
    sync(&node, Backend::Legacy, &inputs);
    let legacy = SavedRules::parse(&node.sh("iptables-legacy-save"));
    for jump in JUMPS {
        assert_eq!(legacy.jump_count(&jump), 1, "{jump:?}");
    }
    assert!(!node.sh("iptables-nft-save").contains("KUBE-"));
    cleanup(&node, Backend::Legacy, Family::V4);
    let legacy_after = node.sh("iptables-legacy-save");
    assert!(!legacy_after.contains("KUBE-"), "{legacy_after}");
    assert_eq!(SavedRules::parse(&legacy_after).rule_count(), 3);

    // kubelet's canary chain in nft outweighs any count.
    node.sh("iptables-nft -t mangle -N KUBE-KUBELET-CANARY");
    assert_eq!(detect(), Backend::Nft, "kubelet marker decides");
}

/// client (192.168.50.2) — node (IPVS, our rules) — backend (10.244.0.10).
struct Topology {
    client: Netns,
    node: Netns,
    backend: Netns,
}

fn topology(name: &str, vip: &str, port: u16) -> Topology {
    let netns_lab::Topology {
        client,
        node,
        mut pods,
    } = netns_lab::Topology::builder(&format!("{name}-cl"))
        .forwarding()
        .build();
    let backend = pods.remove(0).ns;
    // IPVS traffic goes through conntrack only with this, which MASQUERADE needs.
    node.sh("sysctl -qw net.ipv4.vs.conntrack=1");
    node.sh("ip link add kube-ipvs0 type dummy");
    node.sh(&format!("ip addr add {vip}/32 dev kube-ipvs0"));
    node.sh(&format!("ipvsadm -A -t {vip}:{port} -s rr"));
    node.sh(&format!(
        "ipvsadm -a -t {vip}:{port} -r 10.244.0.10:8080 -m"
    ));
    Topology {
        client,
        node,
        backend,
    }
}

/// `curl` exit status and output for `url` from `ns`.
fn curl(ns: &Netns, url: &str) -> (Option<i32>, String) {
    let out = ns.exec(&format!("curl -sS --max-time 4 {url}"));
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Packets counted by the first rule of `chain` (in `table`) whose target is `target`.
fn packets(ns: &Netns, table: &str, chain: &str, target: &str) -> u64 {
    let listing = ns.sh(&format!("iptables -t {table} -L {chain} -v -x -n"));
    listing
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some(target))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {target} rule in {table} {chain}:\n{listing}"))
}

/// busybox httpd in `ns` on `port` whose `/cgi-bin/whoami` answers the client
/// address the server sees (`REMOTE_ADDR`). Killed on drop.
fn whoami_server(ns: &Netns, port: u16) -> netns_lab::Background {
    let dir = std::env::temp_dir().join(format!("ipt-whoami-{}", ns.name()));
    let cgi = dir.join("cgi-bin");
    std::fs::create_dir_all(&cgi).unwrap();
    let script = cgi.join("whoami");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n%s\\n' \"$REMOTE_ADDR\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let server = ns.spawn(&format!(
        "busybox httpd -f -p 0.0.0.0:{port} -h {}",
        dir.display()
    ));
    let listening = wait_until(Duration::from_secs(10), || {
        ns.exec(&format!("ss -Hltn 'sport = :{port}' | grep -q LISTEN"))
            .status
            .success()
    });
    assert!(listening, "whoami server in {} never listened", ns.name());
    server
}

#[test]
#[ignore = "needs the kernel lab"]
fn iptables_masqueraded_flow_through_a_vip_reaches_the_backend_from_the_node_address() {
    let lab = topology("ipt-masq", "10.96.0.20", 80);
    let _server = whoami_server(&lab.backend, 8080);
    // Without our rules the backend sees the client itself.
    let (status, seen) = curl(&lab.client, "http://10.96.0.20/cgi-bin/whoami");
    assert_eq!((status, seen.trim()), (Some(0), "192.168.50.2"));

    lab.node.sh("ipset create KUBE-CLUSTER-IP hash:ip,port");
    lab.node.sh("ipset add KUBE-CLUSTER-IP 10.96.0.20,tcp:80");
    let mut inputs = RuleInputs::new(Family::V4);
    inputs.non_empty_sets = [KubeSet::ClusterIp].into();
    // The client is outside the cluster CIDR, so its traffic is masqueraded.
    inputs.local_traffic = LocalTraffic::Cidr("10.244.0.0/16".parse().unwrap());
    sync(&lab.node, Backend::Nft, &inputs);

    // Now the backend sees the node's address on the backend side.
    let (status, seen) = curl(&lab.client, "http://10.96.0.20/cgi-bin/whoami");
    assert_eq!((status, seen.trim()), (Some(0), "10.244.0.1"));

    // The masquerade mark was applied by KUBE-MARK-MASQ and consumed in POSTROUTING.
    assert!(packets(&lab.node, "nat", "KUBE-MARK-MASQ", "MARK") >= 1);
    assert!(packets(&lab.node, "nat", "KUBE-POSTROUTING", "MASQUERADE") >= 1);
}

#[test]
#[ignore = "needs the kernel lab"]
fn iptables_load_balancer_source_ranges_and_the_vip_port_filter() {
    let lab = topology("ipt-lbsr", "203.0.113.10", 80);
    // A second client, outside the allowed range.
    let outsider = Netns::new("ipt-lbsr-out");
    veth(
        &outsider,
        "eth0",
        "192.168.60.2/24",
        &lab.node,
        "to-out",
        "192.168.60.1/24",
    );
    outsider.sh("ip route add default via 192.168.60.1");
    let _backend = lab.backend.http_server(8080, "lb-backend");
    // A host service on the node listening on every address, port 9999.
    let _host_service = lab.node.http_server(9999, "host-only");

    let url = "http://203.0.113.10/";
    let host_port_via_vip = "http://203.0.113.10:9999/";
    // Before our rules: everyone gets in, even to the host port through the VIP.
    assert_eq!(curl(&lab.client, url).0, Some(0));
    assert_eq!(curl(&outsider, url).0, Some(0));
    assert_eq!(curl(&lab.client, host_port_via_vip).0, Some(0));
    assert_eq!(curl(&lab.node, url).0, Some(0), "the node itself");

    let node = &lab.node;
    node.sh("ipset create KUBE-LOAD-BALANCER hash:ip,port");
    node.sh("ipset add KUBE-LOAD-BALANCER 203.0.113.10,tcp:80");
    node.sh("ipset create KUBE-LOAD-BALANCER-FW hash:ip,port");
    node.sh("ipset add KUBE-LOAD-BALANCER-FW 203.0.113.10,tcp:80");
    node.sh("ipset create KUBE-LOAD-BALANCER-SOURCE-CIDR hash:ip,port,net");
    node.sh("ipset add KUBE-LOAD-BALANCER-SOURCE-CIDR 203.0.113.10,tcp:80,192.168.50.0/24");
    node.sh("ipset create KUBE-IPVS-IPS hash:ip");
    node.sh("ipset add KUBE-IPVS-IPS 203.0.113.10");
    let mut inputs = RuleInputs::new(Family::V4);
    // The load balancer's ranges exclude the node too.
    inputs.lb_no_node_access = vec![LbNoNodeAccess {
        address: "203.0.113.10".parse().unwrap(),
        protocol: Protocol::Tcp,
        port: 80,
    }];
    inputs.non_empty_sets = [
        KubeSet::LoadBalancer,
        KubeSet::LoadBalancerFw,
        KubeSet::LoadBalancerSourceCidr,
        KubeSet::IpvsIps,
    ]
    .into();
    sync(node, Backend::Nft, &inputs);

    let (status, body) = curl(&lab.client, url);
    assert_eq!(
        (status, body.trim()),
        (Some(0), "lb-backend"),
        "inside the range"
    );
    // DROP: no answer at all, curl times out (28).
    let (status, body) = curl(&outsider, url);
    assert_eq!(
        status,
        Some(28),
        "outside the range must be dropped: {body}"
    );
    // REJECT: refused at once (7), not timed out.
    let (status, body) = curl(&lab.client, host_port_via_vip);
    assert_eq!(
        status,
        Some(7),
        "host port via VIP must be rejected: {body}"
    );
    // KUBE-IPVS-OUT-FILTER: the node itself is outside the ranges as well.
    let (status, body) = curl(&lab.node, url);
    assert_eq!(status, Some(28), "the node must be dropped: {body}");
    // Each drop came from the chain meant for it.
    assert!(packets(node, "filter", "KUBE-IPVS-OUT-FILTER", "DROP") >= 1);
    assert!(packets(node, "filter", "KUBE-SOURCE-RANGES-FIREWALL", "DROP") >= 1);
    // The host port on the node's own address is not ours to filter.
    let (status, body) = curl(&lab.client, "http://192.168.50.1:9999/");
    assert_eq!((status, body.trim()), (Some(0), "host-only"));
}

#[test]
#[ignore = "needs the kernel lab"]
fn iptables_node_ports_are_masqueraded_unless_external_traffic_policy_is_local() {
    let lab = topology("ipt-np", "10.96.0.30", 80);
    let node = &lab.node;
    for port in [30080, 30081] {
        node.sh(&format!("ipvsadm -A -t 192.168.50.1:{port} -s rr"));
        node.sh(&format!(
            "ipvsadm -a -t 192.168.50.1:{port} -r 10.244.0.10:8080 -m"
        ));
    }
    let _server = whoami_server(&lab.backend, 8080);

    node.sh("ipset create KUBE-NODE-PORT-TCP bitmap:port range 0-65535");
    node.sh("ipset add KUBE-NODE-PORT-TCP 30080");
    node.sh("ipset add KUBE-NODE-PORT-TCP 30081");
    // 30081 belongs to a Service with externalTrafficPolicy: Local.
    node.sh("ipset create KUBE-NODE-PORT-LOCAL-TCP bitmap:port range 0-65535");
    node.sh("ipset add KUBE-NODE-PORT-LOCAL-TCP 30081");
    let mut inputs = RuleInputs::new(Family::V4);
    inputs.non_empty_sets = [KubeSet::NodePortTcp, KubeSet::NodePortLocalTcp].into();
    sync(node, Backend::Nft, &inputs);

    let (status, seen) = curl(&lab.client, "http://192.168.50.1:30080/cgi-bin/whoami");
    assert_eq!(
        (status, seen.trim()),
        (Some(0), "10.244.0.1"),
        "masqueraded"
    );
    let (status, seen) = curl(&lab.client, "http://192.168.50.1:30081/cgi-bin/whoami");
    assert_eq!(
        (status, seen.trim()),
        (Some(0), "192.168.50.2"),
        "externalTrafficPolicy Local keeps the client address"
    );
}
