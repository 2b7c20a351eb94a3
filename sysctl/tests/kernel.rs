//! node-sysctl against the real kernel: every test runs in a fresh network namespace
//! of the kernel lab, where the `net.*` sysctls start at the kernel's defaults.
//! Run with `scripts/vm-test -p node-sysctl`.

use std::process::Command;
use std::sync::{RwLock, RwLockReadGuard};

use netns_lab::{Netns, veth};
use node_sysctl::{
    ArpSetting, BR_NETFILTER, Error, Finding, KernelModule, Key, Loaded, NodeSysctls, Options,
    Sysctl,
};

fn strict() -> Options {
    Options {
        strict_arp: true,
        ..Options::default()
    }
}

/// Module loading is global to the VM: the test that unloads br_netfilter holds this
/// for writing, the tests that expect it loaded (as lab-init leaves it) for reading.
static MODULES: RwLock<()> = RwLock::new(());

fn modules_stay() -> RwLockReadGuard<'static, ()> {
    MODULES
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
#[ignore = "needs the kernel lab"]
fn apply_sets_verifies_and_is_idempotent_in_a_fresh_netns() {
    let _modules = modules_stay();
    let ns = Netns::new("sysctl");
    let (settings, before, changes, again, after) = ns.run(|| {
        let node = NodeSysctls::detect(Sysctl::default(), &strict()).unwrap();
        let before = node.check().unwrap();
        let changes = node.apply().unwrap();
        let again = node.apply().unwrap();
        let after = node.check().unwrap();
        (node.settings().to_vec(), before, changes, again, after)
    });
    let managed: Vec<String> = settings.iter().map(|s| s.key.to_string()).collect();
    println!("managed: {managed:?}");
    for change in &changes {
        println!("changed {change}");
    }

    // The lab kernel is >= 5.9 and has IPv6 and br_netfilter: conn_reuse_mode is left
    // alone, IPv6 forwarding and bridge-nf-call-ip(6)tables are managed.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(
        !release.starts_with("4.") && !release.starts_with("5.0"),
        "{release}"
    );
    assert!(!managed.contains(&"net.ipv4.vs.conn_reuse_mode".to_string()));
    for key in [
        "net.ipv4.vs.conntrack",
        "net.ipv4.vs.expire_nodest_conn",
        "net.ipv4.vs.expire_quiescent_template",
        "net.ipv4.ip_forward",
        "net.ipv6.conf.all.forwarding",
        "net.bridge.bridge-nf-call-iptables",
        "net.bridge.bridge-nf-call-ip6tables",
        "net.ipv4.conf.all.arp_ignore",
        "net.ipv4.conf.all.arp_announce",
    ] {
        assert!(
            managed.contains(&key.to_string()),
            "{key} not managed: {managed:?}"
        );
    }

    // A fresh namespace starts with forwarding, IPVS conntrack and ARP at 0: the read-only
    // check sees drift there and apply changes exactly those from 0 to the wanted value.
    let drifted: Vec<String> = before
        .iter()
        .filter_map(|f| match f {
            Finding::Drift { setting, actual } => Some(format!("{}={actual}", setting.key)),
            _ => None,
        })
        .collect();
    for expected in [
        "net.ipv4.vs.conntrack=0",
        "net.ipv4.ip_forward=0",
        "net.ipv6.conf.all.forwarding=0",
        "net.ipv4.conf.all.arp_ignore=0",
        "net.ipv4.conf.all.arp_announce=0",
    ] {
        assert!(
            drifted.contains(&expected.to_string()),
            "{expected} missing in {drifted:?}"
        );
    }
    let changed: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
    assert_eq!(changed.len(), drifted.len(), "{changed:?} vs {drifted:?}");
    assert!(
        changed.contains(&"net.ipv4.ip_forward: 0 -> 1".to_string()),
        "{changed:?}"
    );
    assert!(
        changed.contains(&"net.ipv4.conf.all.arp_ignore: 0 -> 1".to_string()),
        "{changed:?}"
    );
    assert!(again.is_empty(), "second apply changed {again:?}");
    assert!(after.iter().all(|f| !f.is_problem()), "{after:?}");

    // An independent reader (sysctl(8) in the same namespace) sees the values.
    let seen = ns.sh(
        "sysctl -n net.ipv4.vs.conntrack net.ipv4.vs.expire_nodest_conn net.ipv4.ip_forward \
         net.ipv6.conf.all.forwarding net.ipv4.conf.all.arp_ignore net.ipv4.conf.all.arp_announce",
    );
    assert_eq!(
        seen.split_whitespace().collect::<Vec<_>>(),
        ["1", "1", "1", "1", "1", "2"]
    );

    // Another namespace was not touched.
    let other = Netns::new("sysctl-other");
    assert_eq!(other.sh("sysctl -n net.ipv4.ip_forward").trim(), "0");
}

#[test]
#[ignore = "needs the kernel lab"]
fn check_reports_drift_made_behind_its_back() {
    let _modules = modules_stay();
    let ns = Netns::new("drift");
    ns.run(|| {
        NodeSysctls::detect(Sysctl::default(), &Options::default())
            .unwrap()
            .apply()
            .unwrap()
    });
    ns.sh("sysctl -qw net.ipv4.ip_forward=0 net.ipv4.vs.expire_nodest_conn=0");
    let findings = ns.run(|| {
        NodeSysctls::detect(Sysctl::default(), &Options::default())
            .unwrap()
            .check()
            .unwrap()
    });
    let text: Vec<String> = findings.iter().map(ToString::to_string).collect();
    println!("{text:#?}");
    assert_eq!(findings.len(), 2, "{text:?}");
    assert!(
        text[0].starts_with("net.ipv4.vs.expire_nodest_conn is 0, wanted 1"),
        "{text:?}"
    );
    assert!(
        text[1].starts_with("net.ipv4.ip_forward is 0, wanted 1"),
        "{text:?}"
    );
    // The check only read: the values are still 0.
    assert_eq!(ns.sh("sysctl -n net.ipv4.ip_forward").trim(), "0");
}

#[test]
#[ignore = "needs the kernel lab"]
fn vlan_interface_keys_with_dots_read_and_write() {
    let _modules = modules_stay();
    let ns = Netns::new("vlan");
    ns.sh("ip link add eth0 type dummy");
    ns.sh("ip link add link eth0 name eth0.100 type vlan id 100");
    let (read_default, findings) = ns.run(|| {
        let sysctl = Sysctl::default();
        let key = Key::ipv4_conf("eth0.100", "arp_ignore").unwrap();
        let read_default = sysctl.read_int(&key).unwrap();
        sysctl.write(&key, "2").unwrap();
        sysctl
            .write(&Key::ipv4_conf("eth0.100", "arp_announce").unwrap(), "1")
            .unwrap();
        sysctl
            .write(&Key::ipv4_conf("eth0", "arp_ignore").unwrap(), "3")
            .unwrap();
        let node = NodeSysctls::detect(sysctl, &strict()).unwrap();
        node.apply().unwrap();
        (read_default, node.check().unwrap())
    });
    assert_eq!(read_default, 0);
    // sysctl(8) writes a dot inside a name as `/`.
    assert_eq!(
        ns.sh("sysctl -n net.ipv4.conf.eth0/100.arp_ignore").trim(),
        "2"
    );
    assert_eq!(
        ns.sh("cat /proc/sys/net/ipv4/conf/eth0.100/arp_announce")
            .trim(),
        "1"
    );

    let on = |interface: &str, setting| {
        findings.iter().find_map(|f| match f {
            Finding::Interface(arp) if arp.interface == interface && arp.setting == setting => {
                Some(arp.clone())
            }
            _ => None,
        })
    };
    let text: Vec<String> = findings.iter().map(ToString::to_string).collect();
    println!("{text:#?}");
    // eth0.100: arp_ignore=2 is stricter than all=1 and effective; still strict.
    let vlan_ignore = on("eth0.100", ArpSetting::Ignore).expect("eth0.100 arp_ignore reported");
    assert_eq!(
        (vlan_ignore.own, vlan_ignore.all, vlan_ignore.effective()),
        (2, 1, 2)
    );
    assert!(vlan_ignore.is_strict());
    // eth0.100: arp_announce=1 is looser than all=2, which wins.
    let vlan_announce = on("eth0.100", ArpSetting::Announce).expect("eth0.100 arp_announce");
    assert_eq!(vlan_announce.effective(), 2);
    assert!(!Finding::Interface(vlan_announce).is_problem());
    // eth0: arp_ignore=3 wins over all=1 and answers for every global address.
    let eth0 = on("eth0", ArpSetting::Ignore).expect("eth0 arp_ignore reported");
    assert_eq!(eth0.effective(), 3);
    let problem = Finding::Interface(eth0);
    assert!(problem.is_problem());
    assert!(problem.to_string().contains("NOT strict ARP"), "{problem}");
    // Interfaces at the default 0 are looser than all=1 and also reported (not problems).
    let lo = on("lo", ArpSetting::Ignore).expect("lo reported");
    assert!(lo.is_strict());
}

#[test]
#[ignore = "needs the kernel lab"]
fn missing_interface_and_bad_value_give_clear_errors() {
    let ns = Netns::new("errs");
    let (missing, rejected) = ns.run(|| {
        let sysctl = Sysctl::default();
        let missing = sysctl
            .read(&Key::ipv4_conf("nope0.7", "arp_ignore").unwrap())
            .unwrap_err()
            .to_string();
        let rejected = sysctl
            .write(&"net.ipv4.ip_forward".parse().unwrap(), "banana")
            .unwrap_err()
            .to_string();
        (missing, rejected)
    });
    assert!(missing.contains("no interface \"nope0.7\""), "{missing}");
    assert!(
        rejected.contains("rejected \"banana\" for sysctl net.ipv4.ip_forward"),
        "{rejected}"
    );
}

/// Does `client` get an ARP reply for `address` on `interface`? (`arping` exits 0
/// only when a reply came back.)
fn arp_answered(client: &Netns, interface: &str, address: &str) -> bool {
    client
        .exec(&format!("arping -c 2 -w 3 -I {interface} {address}"))
        .status
        .success()
}

#[test]
#[ignore = "needs the kernel lab"]
fn strict_arp_silences_kube_ipvs0_addresses_on_the_wire() {
    let _modules = modules_stay();
    let node = Netns::new("arpnode");
    let neighbour = Netns::new("arpnb");
    veth(
        &node,
        "eth0",
        "10.77.0.1/24",
        &neighbour,
        "eth0",
        "10.77.0.2/24",
    );
    // Like kube-proxy: a DOWN dummy holding the service address as /32.
    node.sh("ip link add kube-ipvs0 type dummy");
    node.sh("ip addr add 10.96.7.7/32 dev kube-ipvs0");

    // The node's own address is always answered (the test's control).
    assert!(arp_answered(&neighbour, "eth0", "10.77.0.1"));
    // Strict ARP off (namespace defaults): the service address leaks onto the LAN.
    assert!(
        arp_answered(&neighbour, "eth0", "10.96.7.7"),
        "no reply without strict ARP"
    );

    let changes = node.run(|| {
        NodeSysctls::detect(Sysctl::default(), &strict())
            .unwrap()
            .apply()
            .unwrap()
    });
    assert!(
        changes
            .iter()
            .any(|c| c.key.to_string() == "net.ipv4.conf.all.arp_ignore")
    );
    assert!(
        !arp_answered(&neighbour, "eth0", "10.96.7.7"),
        "replied despite strict ARP"
    );
    assert!(
        arp_answered(&neighbour, "eth0", "10.77.0.1"),
        "strict ARP broke the node address"
    );

    // An interface override of 3 defeats strict ARP, as check reports.
    node.sh("sysctl -qw net.ipv4.conf.eth0.arp_ignore=3");
    let findings = node.run(|| {
        NodeSysctls::detect(Sysctl::default(), &strict())
            .unwrap()
            .check()
            .unwrap()
    });
    assert!(
        findings
            .iter()
            .any(|f| f.is_problem() && f.to_string().contains("net.ipv4.conf.eth0.arp_ignore=3")),
        "{findings:?}"
    );
    assert!(
        arp_answered(&neighbour, "eth0", "10.96.7.7"),
        "arp_ignore=3 on eth0 should answer for kube-ipvs0 addresses"
    );
}

/// Loads br_netfilter again when dropped, so a failing test does not leave the VM
/// without it for the tests that follow.
struct Reload;

impl Drop for Reload {
    fn drop(&mut self) {
        let _ = Command::new("modprobe").arg(BR_NETFILTER.name).status();
    }
}

fn bridge_values(ns: &Netns) -> String {
    ns.sh("sysctl -n net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
#[ignore = "needs the kernel lab"]
fn br_netfilter_is_loaded_when_missing_and_its_sysctls_are_set_per_netns() {
    let _only = MODULES
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let _reload = Reload;
    // lab-init loads br_netfilter, and an earlier test binary may have too: unload it
    // so that loading is what is tested. If something holds it, the loaded path is
    // still tested.
    let unloaded = Command::new("rmmod")
        .arg(BR_NETFILTER.name)
        .status()
        .unwrap()
        .success();
    println!("br_netfilter unloaded before the test: {unloaded}");

    let ns = Netns::new("brnf");
    if unloaded {
        let (managed, findings, read_error) = ns.run(|| {
            let node = NodeSysctls::detect(Sysctl::default(), &Options::default()).unwrap();
            let managed: Vec<String> = node.settings().iter().map(|s| s.key.to_string()).collect();
            let read_error = Sysctl::default()
                .read(&"net.bridge.bridge-nf-call-iptables".parse().unwrap())
                .unwrap_err()
                .to_string();
            (managed, node.check().unwrap(), read_error)
        });
        assert!(
            !managed.iter().any(|k| k.starts_with("net.bridge")),
            "{managed:?}"
        );
        assert!(
            findings.contains(&Finding::ModuleMissing(BR_NETFILTER)),
            "{findings:?}"
        );
        let text: Vec<String> = findings.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|t| t.starts_with(
                "br_netfilter is not loaded: pods on a bridge cannot reach Services whose \
                 endpoints share the bridge; run `modprobe br_netfilter`"
            )),
            "{text:?}"
        );
        assert!(read_error.contains("modprobe br_netfilter"), "{read_error}");
    }

    // Loaded from inside a namespace: modules are global, the sysctls appear in every
    // namespace, the ones created before included.
    let loaded = ns.run(|| BR_NETFILTER.ensure_loaded(&Sysctl::default()).unwrap());
    assert_eq!(
        loaded,
        if unloaded {
            Loaded::Now
        } else {
            Loaded::Already
        }
    );
    let modules = std::fs::read_to_string("/proc/modules").unwrap();
    assert!(
        modules.lines().any(|l| l.starts_with("br_netfilter ")),
        "br_netfilter not in /proc/modules"
    );
    assert!(std::path::Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists());
    assert_eq!(
        ns.run(|| BR_NETFILTER.ensure_loaded(&Sysctl::default()).unwrap()),
        Loaded::Already
    );
    // A new namespace starts with both at 1 (Linux >= 5.3 keeps them per namespace).
    assert_eq!(bridge_values(&ns), "1 1");

    // Per namespace: 0 in `ns` leaves another namespace at 1, and apply in `ns`
    // changes only `ns`.
    ns.sh("sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0");
    let other = Netns::new("brnf-other");
    other.sh("sysctl -qw net.bridge.bridge-nf-call-ip6tables=0");
    assert_eq!(bridge_values(&other), "1 0");
    let (before, changes, after) = ns.run(|| {
        let node = NodeSysctls::detect(Sysctl::default(), &Options::default()).unwrap();
        let before = node.check().unwrap();
        let changes = node.apply().unwrap();
        (before, changes, node.check().unwrap())
    });
    let before: Vec<String> = before.iter().map(ToString::to_string).collect();
    println!("{before:#?}");
    for key in [
        "net.bridge.bridge-nf-call-iptables",
        "net.bridge.bridge-nf-call-ip6tables",
    ] {
        assert!(
            before
                .iter()
                .any(|t| t.starts_with(&format!("{key} is 0, wanted 1"))
                    && t.ends_with(&format!(": sysctl -w {key}=1"))),
            "{key} drift not reported: {before:?}"
        );
    }
    let changes: Vec<String> = changes.iter().map(ToString::to_string).collect();
    assert!(
        changes.contains(&"net.bridge.bridge-nf-call-iptables: 0 -> 1".to_string()),
        "{changes:?}"
    );
    assert!(
        changes.contains(&"net.bridge.bridge-nf-call-ip6tables: 0 -> 1".to_string()),
        "{changes:?}"
    );
    assert!(after.iter().all(|f| !f.is_problem()), "{after:?}");
    assert_eq!(bridge_values(&ns), "1 1");
    assert_eq!(bridge_values(&other), "1 0");
}

#[test]
#[ignore = "needs the kernel lab"]
fn bridge_netfilter_off_leaves_the_bridge_sysctls_alone() {
    let _modules = modules_stay();
    let ns = Netns::new("brnf-off");
    ns.sh("sysctl -qw net.bridge.bridge-nf-call-iptables=0");
    let options = Options {
        bridge_netfilter: false,
        ..Options::default()
    };
    let (managed, findings) = ns.run(|| {
        let node = NodeSysctls::detect(Sysctl::default(), &options).unwrap();
        node.apply().unwrap();
        let managed: Vec<String> = node.settings().iter().map(|s| s.key.to_string()).collect();
        (managed, node.check().unwrap())
    });
    assert!(
        !managed.iter().any(|k| k.starts_with("net.bridge")),
        "{managed:?}"
    );
    assert!(findings.is_empty(), "{findings:?}");
    assert_eq!(bridge_values(&ns), "0 1");
}

#[test]
#[ignore = "needs the kernel lab"]
fn a_module_this_kernel_lacks_gives_a_clear_error() {
    let absent = KernelModule {
        name: "ipvs_proxy_no_such_module",
        sysctl_dir: "net.ipvs_proxy_no_such_module",
        without: "nothing works",
    };
    let err = absent.ensure_loaded(&Sysctl::default()).unwrap_err();
    assert!(matches!(err, Error::ModuleAbsent { .. }), "{err:?}");
    let text = err.to_string();
    println!("{text}");
    assert!(
        text.starts_with("ipvs_proxy_no_such_module is not loaded: nothing works;"),
        "{text}"
    );
    assert!(
        text.contains("not found in directory /lib/modules/"),
        "{text}"
    );
    assert!(text.contains("/etc/modules-load.d/"), "{text}");
}
