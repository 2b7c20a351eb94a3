//! The `iptables-restore --noflush` payloads: pure functions, no I/O.

use std::fmt::Write as _;

use super::save::rule_target;
use super::{JUMPS, KubeSet, LocalTraffic, OWNED_CHAINS, RuleInputs, SavedRules, Table};

/// The payload that makes our chains hold exactly the rules `inputs` call for.
///
/// Our chains are declared (so `--noflush` restore flushes and refills them in one
/// transaction); jumps from built-in chains are inserted only when `current` (the
/// host's rules now) lacks them, and extra copies are deleted, so a resync never
/// duplicates them. Nothing else is named, so foreign rules are untouched.
pub fn render(inputs: &RuleInputs, current: &SavedRules) -> String {
    let mut out = String::new();
    for table in [Table::Nat, Table::Filter] {
        writeln!(out, "*{}", table.name()).unwrap();
        for (_, chain) in OWNED_CHAINS.iter().filter(|(t, _)| *t == table) {
            writeln!(out, ":{chain} - [0:0]").unwrap();
        }
        write_jump_repairs(&mut out, table, current);
        let rules = match table {
            Table::Nat => nat_rules(inputs),
            Table::Filter => filter_rules(inputs),
        };
        for rule in rules {
            writeln!(out, "{rule}").unwrap();
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// The payload that removes our jumps and chains and nothing else, or `None` when
/// none of them exist in `current`.
///
/// Besides our own jumps, any rule of a built-in chain that jumps into one of our
/// chains is deleted (kube-proxy's jumps carry other comments): a chain cannot be
/// deleted while a rule still jumps to it. A chain that a foreign user chain still
/// jumps to is flushed but kept, since deleting it would fail the whole restore.
pub fn render_cleanup(current: &SavedRules) -> Option<String> {
    let mut out = String::new();
    for table in [Table::Nat, Table::Filter] {
        let owned: Vec<&str> = OWNED_CHAINS
            .iter()
            .filter(|(t, chain)| *t == table && current.has_chain(table, chain))
            .map(|(_, chain)| *chain)
            .collect();
        if owned.is_empty() {
            continue;
        }
        let mut deletions = Vec::new();
        let mut still_referenced = Vec::new();
        for (chain, spec) in current.all_rules(table) {
            let Some(target) = rule_target(spec) else {
                continue;
            };
            if owned.contains(&chain) || !owned.contains(&target) {
                continue;
            }
            if current.is_builtin(table, chain) {
                deletions.push(format!("-D {chain} {spec}"));
            } else {
                still_referenced.push(target);
            }
        }
        writeln!(out, "*{}", table.name()).unwrap();
        for chain in &owned {
            writeln!(out, ":{chain} - [0:0]").unwrap();
        }
        for deletion in deletions {
            writeln!(out, "{deletion}").unwrap();
        }
        for chain in owned.iter().filter(|c| !still_referenced.contains(c)) {
            writeln!(out, "-X {chain}").unwrap();
        }
        out.push_str("COMMIT\n");
    }
    (!out.is_empty()).then_some(out)
}

/// Inserts missing jumps at the top of their built-in chains (in reverse, so they
/// end up in [`JUMPS`] order) and deletes surplus copies.
fn write_jump_repairs(out: &mut String, table: Table, current: &SavedRules) {
    for jump in JUMPS.iter().rev().filter(|jump| jump.table == table) {
        let count = current.jump_count(jump);
        if count == 0 {
            writeln!(out, "-I {} {}", jump.from, jump.spec()).unwrap();
        }
        for _ in 1..count {
            writeln!(out, "-D {} {}", jump.from, jump.spec()).unwrap();
        }
    }
}

/// `-m set --match-set NAME FLAGS`.
fn set_match(inputs: &RuleInputs, set: KubeSet, flags: &str) -> String {
    format!("-m set --match-set {} {flags}", set.name(inputs.family))
}

fn nat_rules(inputs: &RuleInputs) -> Vec<String> {
    let mut rules = Vec::new();
    let mark = format!("{:#x}", inputs.masquerade_mark.value());

    // KUBE-POSTROUTING: hairpin first (an endpoint reaching itself has no mark),
    // then masquerade what KUBE-MARK-MASQ marked, clearing the mark so a packet that
    // loops through the stack again is not masqueraded twice.
    if inputs.has(KubeSet::LoopBack) {
        rules.push(format!(
            "-A KUBE-POSTROUTING {} -j MASQUERADE",
            set_match(inputs, KubeSet::LoopBack, "dst,dst,src")
        ));
    }
    rules.push(format!(
        "-A KUBE-POSTROUTING -m mark ! --mark {mark}/{mark} -j RETURN"
    ));
    rules.push(format!("-A KUBE-POSTROUTING -j MARK --xor-mark {mark}"));
    let random_fully = if inputs.random_fully {
        " --random-fully"
    } else {
        ""
    };
    rules.push(format!("-A KUBE-POSTROUTING -j MASQUERADE{random_fully}"));

    rules.push(format!("-A KUBE-MARK-MASQ -j MARK --or-mark {mark}"));

    // KUBE-SERVICES: loopback clients never reach IPVS through here.
    rules.push(format!(
        "-A KUBE-SERVICES -s {} -j RETURN",
        inputs.family.loopback()
    ));
    if inputs.has(KubeSet::LoadBalancer) {
        rules.push(format!(
            "-A KUBE-SERVICES {} -j KUBE-LOAD-BALANCER",
            set_match(inputs, KubeSet::LoadBalancer, "dst,dst")
        ));
    }
    if inputs.has(KubeSet::ClusterIp) {
        let cluster_ip = set_match(inputs, KubeSet::ClusterIp, "dst,dst");
        let rule = if inputs.masquerade_all {
            format!("-A KUBE-SERVICES {cluster_ip} -j KUBE-MARK-MASQ")
        } else {
            match &inputs.local_traffic {
                LocalTraffic::Cidr(cidr) => {
                    format!("-A KUBE-SERVICES {cluster_ip} ! -s {cidr} -j KUBE-MARK-MASQ")
                }
                LocalTraffic::Interface(name) => {
                    format!("-A KUBE-SERVICES {cluster_ip} ! -i {name} -j KUBE-MARK-MASQ")
                }
                LocalTraffic::InterfacePrefix(prefix) => {
                    format!("-A KUBE-SERVICES {cluster_ip} ! -i {prefix}+ -j KUBE-MARK-MASQ")
                }
                // Without a detector only node-originated traffic sourced from a VIP
                // (kube-ipvs0 holds them all, so the kernel may pick one) is marked.
                LocalTraffic::Undetected => format!(
                    "-A KUBE-SERVICES {} -j KUBE-MARK-MASQ",
                    set_match(inputs, KubeSet::ClusterIp, "src,dst")
                ),
            }
        };
        rules.push(rule);
    }
    for (set, masquerade) in [
        (KubeSet::ExternalIp, true),
        (KubeSet::ExternalIpLocal, false),
    ] {
        if !inputs.has(set) {
            continue;
        }
        let matched = set_match(inputs, set, "dst,dst");
        if masquerade {
            rules.push(format!("-A KUBE-SERVICES {matched} -j KUBE-MARK-MASQ"));
        }
        // Accept traffic from off the node (not bridged from a pod, not local) and
        // traffic to external IPs the node itself holds.
        rules.push(format!(
            "-A KUBE-SERVICES {matched} -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT"
        ));
        rules.push(format!(
            "-A KUBE-SERVICES {matched} -m addrtype --dst-type LOCAL -j ACCEPT"
        ));
    }
    rules.push("-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT".to_string());
    for set in [KubeSet::ClusterIp, KubeSet::LoadBalancer] {
        if inputs.has(set) {
            rules.push(format!(
                "-A KUBE-SERVICES {} -j ACCEPT",
                set_match(inputs, set, "dst,dst")
            ));
        }
    }

    // KUBE-NODE-PORT: externalTrafficPolicy Local keeps the client address (RETURN
    // before the masquerade mark).
    let node_ports = [
        (
            "tcp",
            KubeSet::NodePortLocalTcp,
            KubeSet::NodePortTcp,
            "dst",
        ),
        (
            "udp",
            KubeSet::NodePortLocalUdp,
            KubeSet::NodePortUdp,
            "dst",
        ),
        (
            "sctp",
            KubeSet::NodePortLocalSctp,
            KubeSet::NodePortSctp,
            "dst,dst",
        ),
    ];
    for (protocol, local, all, flags) in node_ports {
        if inputs.has(local) {
            rules.push(format!(
                "-A KUBE-NODE-PORT -p {protocol} {} -j RETURN",
                set_match(inputs, local, flags)
            ));
        }
        if inputs.has(all) {
            rules.push(format!(
                "-A KUBE-NODE-PORT -p {protocol} {} -j KUBE-MARK-MASQ",
                set_match(inputs, all, flags)
            ));
        }
    }

    // KUBE-LOAD-BALANCER: same, for load-balancer IPs.
    if inputs.has(KubeSet::LoadBalancerLocal) {
        rules.push(format!(
            "-A KUBE-LOAD-BALANCER {} -j RETURN",
            set_match(inputs, KubeSet::LoadBalancerLocal, "dst,dst")
        ));
    }
    rules.push("-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ".to_string());
    rules
}

fn filter_rules(inputs: &RuleInputs) -> Vec<String> {
    let mut rules = Vec::new();
    let mark = format!("{:#x}", inputs.masquerade_mark.value());

    // KUBE-FORWARD: forward service traffic even when FORWARD's policy is DROP.
    rules.push(format!(
        "-A KUBE-FORWARD -m mark --mark {mark}/{mark} -j ACCEPT"
    ));
    rules.push("-A KUBE-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".to_string());

    // KUBE-NODE-PORT: health check node ports must be reachable.
    if inputs.has(KubeSet::HealthCheckNodePort) {
        rules.push(format!(
            "-A KUBE-NODE-PORT {} -j ACCEPT",
            set_match(inputs, KubeSet::HealthCheckNodePort, "dst")
        ));
    }

    // loadBalancerSourceRanges: a firewalled LB port is let through only from an
    // allowed source; everything else is dropped.
    if inputs.has(KubeSet::LoadBalancerFw) {
        rules.push(format!(
            "-A KUBE-PROXY-FIREWALL {} -j KUBE-SOURCE-RANGES-FIREWALL",
            set_match(inputs, KubeSet::LoadBalancerFw, "dst,dst")
        ));
    }
    for set in [
        KubeSet::LoadBalancerSourceCidr,
        KubeSet::LoadBalancerSourceIp,
    ] {
        if inputs.has(set) {
            rules.push(format!(
                "-A KUBE-SOURCE-RANGES-FIREWALL {} -j RETURN",
                set_match(inputs, set, "dst,dst,src")
            ));
        }
    }
    rules.push("-A KUBE-SOURCE-RANGES-FIREWALL -j DROP".to_string());

    // KUBE-IPVS-FILTER: service addresses answer on service ports only; a new
    // connection to any other port of a VIP would reach a host socket
    // (kubernetes#72236) and is rejected.
    for (set, flags) in [
        (KubeSet::LoadBalancer, "dst,dst"),
        (KubeSet::ClusterIp, "dst,dst"),
        (KubeSet::ExternalIp, "dst,dst"),
        (KubeSet::ExternalIpLocal, "dst,dst"),
        (KubeSet::HealthCheckNodePort, "dst"),
    ] {
        if inputs.has(set) {
            rules.push(format!(
                "-A KUBE-IPVS-FILTER {} -j RETURN",
                set_match(inputs, set, flags)
            ));
        }
    }
    if inputs.has(KubeSet::IpvsIps) {
        rules.push(format!(
            "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW {} -j REJECT",
            set_match(inputs, KubeSet::IpvsIps, "dst")
        ));
    }

    // KUBE-IPVS-OUT-FILTER: the node reaching a load balancer whose source ranges
    // exclude it (source and virtual address are both the LB IP under IPVS).
    let prefix = inputs.family.host_prefix();
    for entry in &inputs.lb_no_node_access {
        let address = entry.address;
        rules.push(format!(
            "-A KUBE-IPVS-OUT-FILTER -s {address}/{prefix} -m ipvs --vaddr {address}/{prefix} --vproto {} --vport {} -j DROP",
            entry.protocol.as_str(),
            entry.port
        ));
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::iptables::{Family, LbNoNodeAccess, MasqueradeMark};
    use crate::model::Protocol;

    fn inputs(family: Family, sets: &[KubeSet]) -> RuleInputs {
        let mut inputs = RuleInputs::new(family);
        inputs.non_empty_sets = sets.iter().copied().collect();
        inputs
    }

    fn lines(payload: &str) -> Vec<&str> {
        payload.lines().collect()
    }

    #[test]
    fn empty_sets_give_only_the_set_free_rules() {
        let payload = render(&inputs(Family::V4, &[]), &SavedRules::default());
        let expected = "\
*nat
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-LOAD-BALANCER - [0:0]
:KUBE-MARK-MASQ - [0:0]
-I POSTROUTING -m comment --comment \"ipvs-proxy: masquerade marked traffic\" -j KUBE-POSTROUTING
-I OUTPUT -m comment --comment \"ipvs-proxy: service addresses\" -j KUBE-SERVICES
-I PREROUTING -m comment --comment \"ipvs-proxy: service addresses\" -j KUBE-SERVICES
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -j MASQUERADE
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN
-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT
-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ
COMMIT
*filter
:KUBE-FORWARD - [0:0]
:KUBE-NODE-PORT - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-SOURCE-RANGES-FIREWALL - [0:0]
:KUBE-IPVS-FILTER - [0:0]
:KUBE-IPVS-OUT-FILTER - [0:0]
-I OUTPUT -m comment --comment \"ipvs-proxy: node access to load balancers\" -j KUBE-IPVS-OUT-FILTER
-I FORWARD -m comment --comment \"ipvs-proxy: forward masqueraded traffic\" -j KUBE-FORWARD
-I FORWARD -m comment --comment \"ipvs-proxy: load-balancer source ranges\" -j KUBE-PROXY-FIREWALL
-I INPUT -m comment --comment \"ipvs-proxy: health check node ports\" -j KUBE-NODE-PORT
-I INPUT -m comment --comment \"ipvs-proxy: load-balancer source ranges\" -j KUBE-PROXY-FIREWALL
-I INPUT -m comment --comment \"ipvs-proxy: only service ports on service addresses\" -j KUBE-IPVS-FILTER
-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-SOURCE-RANGES-FIREWALL -j DROP
COMMIT
";
        assert_eq!(payload, expected);
        assert!(
            !payload.contains("--match-set"),
            "no set is named while all are empty"
        );
    }

    #[test]
    fn rules_appear_only_for_non_empty_sets() {
        let with_ipvs_ips = render(
            &inputs(Family::V4, &[KubeSet::IpvsIps]),
            &SavedRules::default(),
        );
        assert!(with_ipvs_ips.contains(
            "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT\n"
        ));
        assert!(!with_ipvs_ips.contains("KUBE-CLUSTER-IP"));

        let all = render(&inputs(Family::V4, &KubeSet::ALL), &SavedRules::default());
        for set in KubeSet::ALL {
            assert!(
                all.contains(&format!("--match-set {} ", set.name(Family::V4))),
                "{set:?} has a rule once non-empty"
            );
        }
    }

    #[test]
    fn cluster_ip_masquerade_follows_the_local_traffic_detector() {
        let mut base = inputs(Family::V4, &[KubeSet::ClusterIp]);
        let marked = |inputs: &RuleInputs| -> Vec<String> {
            render(inputs, &SavedRules::default())
                .lines()
                .filter(|l| l.contains("KUBE-CLUSTER-IP") && l.ends_with("-j KUBE-MARK-MASQ"))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(
            marked(&base),
            ["-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP src,dst -j KUBE-MARK-MASQ"]
        );
        base.local_traffic = LocalTraffic::Cidr("10.244.0.0/16".parse().unwrap());
        assert_eq!(
            marked(&base),
            [
                "-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ"
            ]
        );
        base.local_traffic = LocalTraffic::InterfacePrefix("veth".into());
        assert_eq!(
            marked(&base),
            [
                "-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst ! -i veth+ -j KUBE-MARK-MASQ"
            ]
        );
        base.masquerade_all = true;
        assert_eq!(
            marked(&base),
            ["-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ"]
        );
    }

    #[test]
    fn mark_bit_and_random_fully_are_configurable() {
        let mut config = inputs(Family::V4, &[]);
        config.masquerade_mark = MasqueradeMark::from_bit(0).unwrap();
        config.random_fully = true;
        let payload = render(&config, &SavedRules::default());
        assert!(payload.contains("-A KUBE-MARK-MASQ -j MARK --or-mark 0x1\n"));
        assert!(payload.contains("-A KUBE-FORWARD -m mark --mark 0x1/0x1 -j ACCEPT\n"));
        assert!(payload.contains("-A KUBE-POSTROUTING -j MASQUERADE --random-fully\n"));
        assert!(MasqueradeMark::from_bit(32).is_err());
        assert_eq!(MasqueradeMark::from_bit(31).unwrap().value(), 0x8000_0000);
    }

    #[test]
    fn ipv6_uses_kube_6_sets_and_v6_loopback() {
        let mut v6 = inputs(
            Family::V6,
            &[KubeSet::ClusterIp, KubeSet::LoadBalancerSourceCidr],
        );
        v6.lb_no_node_access.push(LbNoNodeAccess {
            address: "2001:db8::10".parse().unwrap(),
            protocol: Protocol::Tcp,
            port: 443,
        });
        let payload = render(&v6, &SavedRules::default());
        assert!(payload.contains("-A KUBE-SERVICES -s ::1/128 -j RETURN\n"));
        assert!(payload.contains("--match-set KUBE-6-CLUSTER-IP dst,dst -j ACCEPT\n"));
        // 32 characters cut to the kernel's 31, as kube-proxy does.
        assert!(
            payload.contains("--match-set KUBE-6-LOAD-BALANCER-SOURCE-CID dst,dst,src -j RETURN\n")
        );
        assert!(payload.contains(
            "-A KUBE-IPVS-OUT-FILTER -s 2001:db8::10/128 -m ipvs --vaddr 2001:db8::10/128 --vproto tcp --vport 443 -j DROP\n"
        ));
        for set in KubeSet::ALL {
            assert!(set.name(Family::V6).len() <= 31);
            assert!(set.name(Family::V6).starts_with("KUBE-6-"));
        }
    }

    #[test]
    fn installed_jumps_are_not_inserted_again_and_duplicates_are_removed() {
        let first = render(&inputs(Family::V4, &[]), &SavedRules::default());
        // Pretend the first payload was applied once, plus a duplicate PREROUTING jump.
        let mut dump = String::new();
        for table in [Table::Nat, Table::Filter] {
            dump.push_str(&format!("*{}\n", table.name()));
            for jump in JUMPS.iter().filter(|j| j.table == table) {
                dump.push_str(&format!("-A {} {}\n", jump.from, jump.spec()));
                if jump.from == "PREROUTING" {
                    dump.push_str(&format!("-A {} {}\n", jump.from, jump.spec()));
                }
            }
            dump.push_str("COMMIT\n");
        }
        let second = render(&inputs(Family::V4, &[]), &SavedRules::parse(&dump));
        assert!(!second.contains("-I "), "{second}");
        let deletions: Vec<_> = lines(&second)
            .into_iter()
            .filter(|l| l.starts_with("-D "))
            .collect();
        assert_eq!(
            deletions,
            [
                "-D PREROUTING -m comment --comment \"ipvs-proxy: service addresses\" -j KUBE-SERVICES"
            ]
        );
        assert_eq!(first.matches("-I ").count(), JUMPS.len());
    }

    #[test]
    fn cleanup_names_only_our_chains_and_jumps_into_them() {
        let dump = "\
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:FOREIGN - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A PREROUTING -m comment --comment \"ipvs-proxy: service addresses\" -j KUBE-SERVICES
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A PREROUTING -s 10.9.0.0/16 -j FOREIGN
-A FOREIGN -j KUBE-MARK-MASQ
-A KUBE-SERVICES -j KUBE-MARK-MASQ
COMMIT
*filter
:INPUT ACCEPT [0:0]
-A INPUT -j ACCEPT
COMMIT
";
        let payload = render_cleanup(&SavedRules::parse(dump)).unwrap();
        assert_eq!(
            payload,
            "\
*nat
:KUBE-SERVICES - [0:0]
:KUBE-MARK-MASQ - [0:0]
-D PREROUTING -m comment --comment \"ipvs-proxy: service addresses\" -j KUBE-SERVICES
-D PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-X KUBE-SERVICES
COMMIT
"
        );
        assert_eq!(
            render_cleanup(&SavedRules::parse("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n")),
            None
        );
    }
}
