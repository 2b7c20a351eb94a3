//! Kernel-lab tests: the crate against the real kernel ipset and the `ipset` CLI, each in
//! its own network namespace. Run with `scripts/vm-test -p ipset-netlink`.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipset_netlink::{Entry, Error, Family, IpNet, IpsetHandle, Member, Protocol, SetSpec, SetType};
use netns_lab::{Netns, veth, wait_until};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip_port(a: &str, proto: Protocol, port: u16) -> Entry {
    Entry::IpPort {
        ip: ip(a),
        proto,
        port,
    }
}

/// The `add` lines of `ipset save NAME`, without the `add NAME ` prefix, sorted.
fn saved_adds(ns: &Netns, set: &str) -> Vec<String> {
    let save = ns.sh(&format!("ipset save {set}"));
    let prefix = format!("add {set} ");
    let mut adds: Vec<String> = save
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .collect();
    adds.sort();
    adds
}

fn sorted_display(members: &[Member]) -> Vec<String> {
    let mut shown: Vec<String> = members.iter().map(ToString::to_string).collect();
    shown.sort();
    shown
}

/// One set per type and family, with entries covering tcp/udp/sctp and comments.
fn cases() -> Vec<(SetSpec, Vec<Member>, Vec<&'static str>)> {
    use Protocol::*;
    let c = Member::with_comment;
    vec![
        (
            SetSpec::new("t-ip4", SetType::HashIp, Family::Inet)
                .hashsize(1024)
                .maxelem(1000)
                .with_comments(),
            vec![
                c(Entry::Ip(ip("10.0.0.1")), "first"),
                Entry::Ip(ip("10.0.0.2")).into(),
            ],
            vec![
                "hash:ip",
                "family inet",
                "hashsize 1024",
                "maxelem 1000",
                "comment",
            ],
        ),
        (
            SetSpec::new("t-ip6", SetType::HashIp, Family::Inet6),
            vec![
                Entry::Ip(ip("fd00::1")).into(),
                Entry::Ip(ip("2001:db8::2")).into(),
            ],
            vec!["hash:ip", "family inet6"],
        ),
        (
            SetSpec::new("t-ipport4", SetType::HashIpPort, Family::Inet).with_comments(),
            vec![
                c(ip_port("10.96.0.1", Tcp, 443), "kubernetes"),
                ip_port("10.96.0.10", Udp, 53).into(),
                ip_port("10.96.0.11", Sctp, 3868).into(),
            ],
            vec!["hash:ip,port", "family inet", "comment"],
        ),
        (
            SetSpec::new("t-ipport6", SetType::HashIpPort, Family::Inet6),
            vec![
                ip_port("fd00::10", Tcp, 80).into(),
                ip_port("fd00::10", Udp, 80).into(),
            ],
            vec!["hash:ip,port", "family inet6"],
        ),
        (
            SetSpec::new("t-ipportip4", SetType::HashIpPortIp, Family::Inet),
            vec![
                Entry::IpPortIp {
                    ip: ip("10.244.1.5"),
                    proto: Tcp,
                    port: 8080,
                    ip2: ip("10.244.1.5"),
                }
                .into(),
            ],
            vec!["hash:ip,port,ip", "family inet"],
        ),
        (
            SetSpec::new("t-ipportip6", SetType::HashIpPortIp, Family::Inet6),
            vec![
                Entry::IpPortIp {
                    ip: ip("fd00::5"),
                    proto: Sctp,
                    port: 9,
                    ip2: ip("fd00::6"),
                }
                .into(),
            ],
            vec!["hash:ip,port,ip", "family inet6"],
        ),
        (
            SetSpec::new("t-ipportnet4", SetType::HashIpPortNet, Family::Inet).with_comments(),
            vec![c(
                Entry::IpPortNet {
                    ip: ip("10.96.0.20"),
                    proto: Tcp,
                    port: 80,
                    net: net("192.168.0.0/16"),
                },
                "lb source range",
            )],
            vec!["hash:ip,port,net", "family inet", "comment"],
        ),
        (
            SetSpec::new("t-ipportnet6", SetType::HashIpPortNet, Family::Inet6),
            vec![
                Entry::IpPortNet {
                    ip: ip("fd00::20"),
                    proto: Udp,
                    port: 53,
                    net: net("fd01::/64"),
                }
                .into(),
            ],
            vec!["hash:ip,port,net", "family inet6"],
        ),
        (
            SetSpec::new("t-net4", SetType::HashNet, Family::Inet),
            vec![
                Entry::Net(net("10.1.0.0/16")).into(),
                Entry::Net(net("10.2.3.4/32")).into(),
            ],
            vec!["hash:net", "family inet"],
        ),
        (
            SetSpec::new("t-net6", SetType::HashNet, Family::Inet6),
            vec![Entry::Net(net("fd02::/48")).into()],
            vec!["hash:net", "family inet6"],
        ),
        (
            SetSpec::bitmap_port("t-bport", 30000, 32767).with_comments(),
            vec![c(Entry::Port(30080), "nodeport"), Entry::Port(32767).into()],
            vec!["bitmap:port", "range 30000-32767", "comment"],
        ),
    ]
}

#[test]
#[ignore = "needs the kernel lab"]
fn crate_created_sets_show_in_ipset_save() {
    let ns = Netns::new("ipset-rt");
    let cases = cases();
    let protocol = ns.run(|| {
        let mut ipset = IpsetHandle::new().expect("handshake");
        for (spec, members, _) in &cases {
            ipset.create(spec, false).unwrap_or_else(|e| panic!("{e}"));
            let outcome = ipset.add_batch(&spec.name, members, false).unwrap();
            assert!(
                outcome.is_complete(),
                "{}: {:?}",
                spec.name,
                outcome.failures
            );
            // The crate reads back exactly what it wrote.
            let listed = ipset.list(&spec.name).unwrap();
            assert_eq!(listed.header.set_type, spec.set_type);
            assert_eq!(
                sorted_display(&listed.members),
                sorted_display(members),
                "{}",
                spec.name
            );
        }
        ipset.protocol()
    });
    assert!((6..=7).contains(&protocol), "protocol {protocol}");
    for (spec, members, create_words) in &cases {
        let save = ns.sh(&format!("ipset save {}", spec.name));
        let create = save.lines().next().unwrap();
        for word in create_words {
            assert!(create.contains(word), "`{word}` missing in: {create}");
        }
        assert_eq!(
            saved_adds(&ns, &spec.name),
            sorted_display(members),
            "{save}"
        );
    }
}

#[test]
#[ignore = "needs the kernel lab"]
fn crate_reads_sets_made_by_ipset_restore() {
    let ns = Netns::new("ipset-rs");
    let script = "\
create r-ip4 hash:ip family inet hashsize 2048 maxelem 4096 comment
add r-ip4 192.0.2.1 comment \"from restore\"
add r-ip4 192.0.2.2
create r-ipport6 hash:ip,port family inet6
add r-ipport6 2001:db8::1,tcp:443
add r-ipport6 2001:db8::1,sctp:5060
create r-ipportip4 hash:ip,port,ip family inet
add r-ipportip4 10.0.0.1,udp:53,10.0.0.2
create r-ipportnet4 hash:ip,port,net family inet
add r-ipportnet4 10.0.0.1,tcp:22,172.16.0.0/12
create r-net6 hash:net family inet6
add r-net6 2001:db8:1::/48
add r-net6 2001:db8::7
create r-bport bitmap:port range 1-1024
add r-bport 22
add r-bport 80
";
    ns.sh(&format!("ipset restore <<'EOF'\n{script}EOF"));
    let sets = ns.run(|| IpsetHandle::new().unwrap().list_all().unwrap());
    assert_eq!(sets.len(), 6, "{sets:?}");
    for set in &sets {
        let prefix = format!("add {} ", set.header.name);
        let mut expected: Vec<String> = script
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
            .collect();
        expected.sort();
        assert_eq!(
            sorted_display(&set.members),
            expected,
            "{}",
            set.header.name
        );
        assert_eq!(set.header.elements, Some(expected.len() as u32));
    }
    let ip4 = sets.iter().find(|s| s.header.name == "r-ip4").unwrap();
    assert_eq!(ip4.header.hashsize, Some(2048));
    assert_eq!(ip4.header.maxelem, Some(4096));
    assert!(ip4.header.comment);
    assert_eq!(ip4.header.family, Family::Inet);
    let bport = sets.iter().find(|s| s.header.name == "r-bport").unwrap();
    assert_eq!(bport.header.port_range, Some((1, 1024)));
    let net6 = sets.iter().find(|s| s.header.name == "r-net6").unwrap();
    assert_eq!(net6.header.family, Family::Inet6);
    assert_eq!(net6.header.set_type, SetType::HashNet);
}

#[test]
#[ignore = "needs the kernel lab"]
fn swap_under_an_iptables_rule_and_destroy_of_a_referenced_set() {
    let node = Netns::new("ipset-sw");
    let client = Netns::new("ipset-cl");
    veth(
        &node,
        "eth0",
        "10.77.0.1/24",
        &client,
        "eth0",
        "10.77.0.2/24",
    );
    node.run(|| {
        let mut ipset = IpsetHandle::new().unwrap();
        let spec = SetSpec::new("blocked", SetType::HashIp, Family::Inet);
        ipset.create(&spec, false).unwrap();
        ipset
            .add("blocked", Entry::Ip(ip("10.77.0.99")), false)
            .unwrap();
        ipset
            .create(
                &SetSpec::new("blocked-next", SetType::HashIp, Family::Inet),
                false,
            )
            .unwrap();
        ipset
            .add("blocked-next", Entry::Ip(ip("10.77.0.2")), false)
            .unwrap();
    });
    node.sh("iptables -A INPUT -p icmp -m set --match-set blocked src -j DROP");
    client.sh("busybox ping -c1 -W2 10.77.0.1");

    let err = node.run(|| {
        let mut ipset = IpsetHandle::new().unwrap();
        ipset.swap("blocked", "blocked-next").unwrap();
        let now = ipset.list("blocked").unwrap();
        assert_eq!(now.members, vec![Member::from(Entry::Ip(ip("10.77.0.2")))]);
        assert_eq!(
            now.header.references, 1,
            "the rule references the swapped-in set"
        );
        ipset.destroy("blocked", false).unwrap_err()
    });
    assert!(
        matches!(err, Error::SetInUse { ref set, .. } if set == "blocked"),
        "{err}"
    );
    assert!(err.to_string().contains("in use"), "{err}");

    // The rule kept its set name and now drops the client.
    let ping = client.exec("busybox ping -c1 -W2 10.77.0.1");
    assert!(
        !ping.status.success(),
        "ping should be dropped after the swap"
    );
    let rules = node.sh("iptables -vnL INPUT");
    assert!(rules.contains("match-set blocked src"), "{rules}");
    let dropped = rules
        .lines()
        .find(|l| l.contains("match-set blocked"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap();
    assert!(dropped >= 1, "{rules}");

    node.run(|| {
        let mut ipset = IpsetHandle::new().unwrap();
        // The swapped-out set is unreferenced and goes.
        ipset.destroy("blocked-next", false).unwrap();
    });
    node.sh("iptables -D INPUT -p icmp -m set --match-set blocked src -j DROP");
    node.run(|| {
        IpsetHandle::new()
            .unwrap()
            .destroy("blocked", false)
            .unwrap()
    });
    assert!(wait_until(Duration::from_secs(10), || client
        .exec("busybox ping -c1 -W2 10.77.0.1")
        .status
        .success()));
}

#[test]
#[ignore = "needs the kernel lab"]
fn batch_of_ten_thousand_entries_with_per_entry_errors() {
    let ns = Netns::new("ipset-bt");
    let entries: Vec<Member> = (0..10_000u32)
        .map(|i| {
            let [_, _, a, b] = i.to_be_bytes();
            ip_port(&format!("10.{}.{a}.{b}", 100 + i % 2), Protocol::Tcp, 80).into()
        })
        .collect();
    let (elapsed, outcome, header) = ns.run(|| {
        let mut ipset = IpsetHandle::new().unwrap();
        ipset
            .create(
                &SetSpec::new("big", SetType::HashIpPort, Family::Inet),
                false,
            )
            .unwrap();
        let start = Instant::now();
        let outcome = ipset.add_batch("big", &entries, false).unwrap();
        let elapsed = start.elapsed();
        (elapsed, outcome, ipset.header("big").unwrap())
    });
    // Written past libtest's capture so the figure shows in `scripts/vm-test` output.
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "ipset batch: 10000 adds in {elapsed:?}");
    assert!(outcome.is_complete(), "{:?}", outcome.failures.first());
    assert_eq!(outcome.applied, 10_000);
    assert_eq!(header.elements, Some(10_000));
    assert!(
        ns.sh("ipset list -t big")
            .contains("Number of entries: 10000")
    );

    // Re-adding two existing entries among new ones: exactly those two fail.
    let mut mixed: Vec<Member> = vec![
        ip_port("10.200.0.1", Protocol::Udp, 53).into(),
        entries[17].clone(),
        ip_port("10.200.0.2", Protocol::Udp, 53).into(),
        entries[9_999].clone(),
    ];
    let (outcome, with_exist) = ns.run(|| {
        let mut ipset = IpsetHandle::new().unwrap();
        let outcome = ipset.add_batch("big", &mixed, false).unwrap();
        mixed.push(ip_port("10.200.0.3", Protocol::Udp, 53).into());
        (outcome, ipset.add_batch("big", &mixed, true).unwrap())
    });
    assert_eq!(outcome.applied, 2);
    let failed: Vec<usize> = outcome.failures.iter().map(|(i, _)| *i).collect();
    assert_eq!(failed, vec![1, 3]);
    assert!(
        matches!(&outcome.failures[0].1, Error::ElementExists { entry, .. } if entry == "10.101.0.17,tcp:80"),
        "{}",
        outcome.failures[0].1
    );
    assert!(with_exist.is_complete() && with_exist.applied == 5);
    assert!(
        ns.sh("ipset list -t big")
            .contains("Number of entries: 10003")
    );
}

#[test]
#[ignore = "needs the kernel lab"]
fn errors_name_what_failed() {
    let ns = Netns::new("ipset-er");
    ns.run(|| {
        let mut ipset = IpsetHandle::new().unwrap();
        let spec = SetSpec::new("svc", SetType::HashIpPort, Family::Inet);
        ipset.create(&spec, false).unwrap();
        let e = ipset.create(&spec, false).unwrap_err();
        assert!(matches!(e, Error::SetExists { .. }), "{e}");
        ipset
            .create(&spec, true)
            .expect("-exist accepts an identical set");

        let e = ipset.destroy("nope", false).unwrap_err();
        assert!(matches!(e, Error::SetNotFound { .. }), "{e}");
        assert!(e.to_string().contains("nope"), "{e}");
        ipset
            .destroy("nope", true)
            .expect("-exist accepts a missing set");

        let e = ipset
            .create(
                &SetSpec::new("x", SetType::Other("hash:nosuch".into()), Family::Inet),
                false,
            )
            .unwrap_err();
        assert!(e.to_string().contains("modprobe ip_set_hash_nosuch"), "{e}");

        let entry = ip_port("10.0.0.1", Protocol::Tcp, 80);
        assert!(!ipset.test("svc", &entry).unwrap());
        ipset.add("svc", entry.clone(), false).unwrap();
        assert!(ipset.test("svc", &entry).unwrap());
        let e = ipset.add("svc", entry.clone(), false).unwrap_err();
        assert!(matches!(e, Error::ElementExists { .. }), "{e}");
        assert!(e.to_string().contains("10.0.0.1,tcp:80"), "{e}");
        ipset.add("svc", entry.clone(), true).unwrap();
        ipset.del("svc", &entry, false).unwrap();
        let e = ipset.del("svc", &entry, false).unwrap_err();
        assert!(matches!(e, Error::ElementMissing { .. }), "{e}");
        ipset.del("svc", &entry, true).unwrap();

        let e = ipset
            .add("svc", Member::with_comment(entry.clone(), "x"), false)
            .unwrap_err();
        assert!(e.to_string().contains("comment support"), "{e}");
        let e = ipset
            .add("svc", ip_port("fd00::1", Protocol::Tcp, 80), false)
            .unwrap_err();
        assert!(e.to_string().contains("other family"), "{e}");
        let e = ipset.add("missing", entry.clone(), false).unwrap_err();
        assert!(matches!(e, Error::SetNotFound { .. }), "{e}");

        ipset
            .create(&SetSpec::new("other", SetType::HashIp, Family::Inet), false)
            .unwrap();
        let e = ipset.swap("svc", "other").unwrap_err();
        assert!(matches!(e, Error::SwapTypeMismatch { .. }), "{e}");
        let e = ipset.swap("svc", "ghost").unwrap_err();
        assert!(matches!(e, Error::SwapPartnerMissing { .. }), "{e}");
        let e = ipset.rename("svc", "other").unwrap_err();
        assert!(matches!(e, Error::RenameTargetExists { .. }), "{e}");
        ipset.rename("svc", "svc2").unwrap();
        ipset.flush("svc2").unwrap();
        let e = ipset
            .create(
                &SetSpec::new(
                    "a-name-that-is-far-too-long-for-ipset",
                    SetType::HashIp,
                    Family::Inet,
                ),
                false,
            )
            .unwrap_err();
        assert!(matches!(e, Error::InvalidInput { .. }), "{e}");
    });
    let names = ns.sh("ipset list -n");
    assert_eq!(
        names.split_whitespace().collect::<Vec<_>>().len(),
        2,
        "{names}"
    );
    assert!(names.contains("svc2"), "{names}");
}
