//! `ipvs-proxy check` in fresh network namespaces of the kernel lab: a namespace
//! as it comes (strict ARP off, no kube-ipvs0) fails and says how to fix it; after
//! running the fixes it printed, it passes. Run with
//! `scripts/vm-test -p ipvs-proxy --test cli_check`.

use netns_lab::Netns;

const BIN: &str = env!("CARGO_BIN_EXE_ipvs-proxy");

fn check(ns: &Netns, options: &str) -> (bool, String) {
    let out = ns.exec(&format!("RUST_LOG=off {BIN} check {options}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code().is_some_and(|code| code <= 1),
        "check crashed ({}): {stdout}{stderr}",
        out.status
    );
    (out.status.success(), stdout)
}

/// The `fix:` commands of a failed report.
fn fixes(report: &str) -> Vec<String> {
    report
        .lines()
        .filter_map(|line| line.trim().strip_prefix("fix: "))
        .map(str::to_owned)
        .collect()
}

#[test]
#[ignore = "needs the kernel lab"]
fn strict_arp_off_fails_with_fixes_that_make_it_pass() {
    let _module = crate::br_netfilter_kept();
    let ns = Netns::new("check");
    ns.sh("sysctl -qw net.ipv4.conf.all.arp_ignore=0 net.ipv4.conf.all.arp_announce=0");

    let (ok, report) = check(&ns, "--schedulers rr,wrr,mh");
    assert!(!ok, "a namespace without strict ARP passed:\n{report}");
    for line in [
        "PASS ipvs: IPVS ",
        "PASS scheduler rr",
        "PASS scheduler mh",
        "PASS ipset",
        "PASS iptables",
        "PASS conntrack",
        "FAIL sysctl net.ipv4.conf.all.arp_ignore: is 0, wanted one of 1, 2, 8",
        "fix: sysctl -w net.ipv4.conf.all.arp_ignore=1",
        "FAIL sysctl net.ipv4.conf.all.arp_announce: is 0, wanted 2",
        "fix: sysctl -w net.ipv4.conf.all.arp_announce=2",
        "FAIL interface kube-ipvs0: kube-ipvs0 does not exist",
    ] {
        assert!(report.contains(line), "missing {line:?} in:\n{report}");
    }
    // The scheduler probe left nothing behind.
    assert_eq!(ns.sh("ipvsadm -Sn"), "");

    // Run the fixes the report gave (creating kube-ipvs0 the way the agent does).
    for fix in fixes(&report) {
        let command = if fix.contains("kube-ipvs0") {
            "ip link add kube-ipvs0 type dummy".to_owned()
        } else {
            fix
        };
        ns.sh(&command);
    }
    let (ok, report) = check(&ns, "--schedulers rr,wrr,mh");
    assert!(ok, "still failing after the fixes:\n{report}");
    assert!(
        report.contains("PASS sysctl net.ipv4.conf.all.arp_ignore: is 1"),
        "{report}"
    );
    assert!(
        report.contains("PASS interface kube-ipvs0: present, NOARP"),
        "{report}"
    );
    assert!(report.ends_with("checks passed\n"), "{report}");
}

#[test]
#[ignore = "needs the kernel lab"]
fn interface_overrides_are_shown_and_loose_ones_fail() {
    let _module = crate::br_netfilter_kept();
    let ns = Netns::new("check-if");
    ns.sh("ip link add kube-ipvs0 type dummy");
    ns.sh("ip link add eth9 type dummy");
    ns.sh("sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2");
    // A stricter own value is harmless; 3 answers for every address of the node.
    ns.sh("sysctl -qw net.ipv4.conf.eth9.arp_ignore=2");
    let (_, report) = check(&ns, "--json");
    let json: serde_json::Value = serde_json::from_str(&report).unwrap();
    let arp = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "arp eth9")
        .unwrap_or_else(|| panic!("no interface line: {json:#}"));
    assert_eq!(arp["ok"], true, "{json:#}");

    ns.sh("sysctl -qw net.ipv4.conf.eth9.arp_ignore=3");
    let (ok, report) = check(&ns, "");
    assert!(!ok, "{report}");
    assert!(
        report.contains("FAIL arp eth9: net.ipv4.conf.eth9.arp_ignore=3"),
        "{report}"
    );
    assert!(
        report.contains("fix: sysctl -w net.ipv4.conf.eth9.arp_ignore=1"),
        "{report}"
    );

    // Without strict ARP required, ARP settings are not checked at all.
    let (_, report) = check(&ns, "--strict-arp=false");
    assert!(
        !report.contains("arp_ignore") && !report.contains("arp eth9"),
        "{report}"
    );
}

#[test]
#[ignore = "needs the kernel lab"]
fn an_arp_answering_kube_ipvs0_and_an_unknown_scheduler_fail() {
    let _module = crate::br_netfilter_kept();
    let ns = Netns::new("check-arp");
    ns.sh("ip link add kube-ipvs0 type dummy && ip link set kube-ipvs0 arp on");
    let (ok, report) = check(&ns, "--schedulers rr,nosuchsched");
    assert!(!ok, "{report}");
    assert!(
        report.contains("FAIL interface kube-ipvs0: present but answers ARP"),
        "{report}"
    );
    assert!(
        report.contains("fix: ip link set kube-ipvs0 arp off"),
        "{report}"
    );
    assert!(report.contains("FAIL scheduler nosuchsched"), "{report}");
    assert!(
        report.contains("fix: modprobe ip_vs_nosuchsched"),
        "{report}"
    );
    assert_eq!(
        ns.sh("ipvsadm -Sn"),
        "",
        "the failed probe left a service behind"
    );
}
