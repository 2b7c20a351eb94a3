//! `kube-ipvs0` management against the real kernel (kernel lab, one netns per test).
//! Run with `scripts/vm-test -p ipvs-proxy -- netif`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use ipvs_proxy::dataplane::netif::{BATCH_CHUNK, DEFAULT_NAME, NetifError, ServiceInterface};
use netns_lab::Netns;

/// Runs an async block on a tokio runtime inside `ns` (the netlink socket is opened
/// there, so it talks to that namespace's kernel state).
fn in_ns<F, R>(ns: &Netns, f: impl FnOnce() -> F + Send) -> R
where
    F: Future<Output = R>,
    R: Send,
{
    ns.run_async(f)
}

/// Addresses as `ip -o addr show kube-ipvs0` prints them ("10.96.0.1/32").
fn ip_addresses(ns: &Netns) -> BTreeSet<String> {
    ns.sh("ip -o addr show dev kube-ipvs0")
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "inet" || *w == "inet6")?;
            words.next().map(str::to_owned)
        })
        .collect()
}

fn many(v4: u32, v6: u32) -> BTreeSet<IpAddr> {
    let base = u32::from(Ipv4Addr::new(10, 96, 0, 0));
    let v4s = (1..=v4).map(|i| IpAddr::V4(Ipv4Addr::from(base + i)));
    let v6s = (1..=v6).map(|i| IpAddr::V6(Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, i as u16)));
    v4s.chain(v6s).collect()
}

#[test]
#[ignore = "needs the kernel lab"]
fn netif_creates_a_down_dummy_and_binds_and_unbinds_5000_addresses() {
    let ns = Netns::new("netif");
    let desired = many(4000, 1000);
    let (created, listed, added, add_time, removed, remove_time) = in_ns(&ns, || async {
        let iface = ServiceInterface::ensure(DEFAULT_NAME).await.unwrap();
        let start = Instant::now();
        let added = iface.sync(&desired).await.unwrap();
        let add_time = start.elapsed();
        let listed = iface.addresses().await.unwrap();
        let start = Instant::now();
        let removed = iface.sync(&BTreeSet::new()).await.unwrap();
        let remove_time = start.elapsed();
        (
            iface.created(),
            listed,
            added,
            add_time,
            removed,
            remove_time,
        )
    });
    // Baseline: the same addresses through one `ip -batch` (one process, one request
    // and one acknowledgement at a time) in another namespace.
    let baseline = Netns::new("netif-ip");
    baseline.sh("ip link add kube-ipvs0 type dummy");
    let batch: String = desired
        .iter()
        .map(|a| match a {
            IpAddr::V4(v4) => format!("addr add {v4}/32 dev kube-ipvs0\n"),
            IpAddr::V6(v6) => format!("addr add {v6}/128 dev kube-ipvs0 nodad\n"),
        })
        .collect();
    let file = std::env::temp_dir().join(format!("netif-batch-{}", std::process::id()));
    std::fs::write(&file, batch).unwrap();
    let start = Instant::now();
    baseline.sh(&format!("ip -batch {}", file.display()));
    let ip_time = start.elapsed();
    std::fs::remove_file(&file).unwrap();
    println!(
        "netif: bound 5000 addresses (4000 IPv4, 1000 IPv6) in {add_time:?}, unbound them in {remove_time:?}; `ip -batch` bound them in {ip_time:?}"
    );
    assert!(created);
    assert_eq!(added.added.len(), 5000);
    assert_eq!(added.kept, 0);
    assert!(added.removed.is_empty());
    assert_eq!(listed, desired);
    assert_eq!(removed.removed.len(), 5000);
    assert!(removed.added.is_empty());
    assert!(ip_addresses(&ns).is_empty(), "{:?}", ip_addresses(&ns));

    // Like kube-proxy's: a dummy (NOARP) that was never set up.
    let link = ns.sh("ip -o -d link show kube-ipvs0");
    assert!(
        link.contains("NOARP") && link.contains("state DOWN"),
        "{link}"
    );
    assert!(link.contains(" dummy "), "{link}");
}

#[test]
#[ignore = "needs the kernel lab"]
fn netif_adopts_on_restart_keeping_existing_and_removing_stale() {
    let ns = Netns::new("adopt");
    // What a previous run (or kube-proxy) left behind.
    ns.sh("ip link add kube-ipvs0 type dummy");
    for address in [
        "10.96.0.1/32",
        "10.96.0.2/32",
        "10.96.0.3/32",
        "fd00::1/128 nodad",
    ] {
        ns.sh(&format!("ip addr add {address} dev kube-ipvs0"));
    }
    // Kept addresses must be left alone, not deleted and re-added: watch the events.
    let log = std::env::temp_dir().join(format!("netif-monitor-{}", ns.name()));
    let monitor = ns.spawn(&format!("ip -o monitor address > {}", log.display()));
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    // A marker event proves the monitor listens before the sync begins.
    let listening = netns_lab::wait_until(Duration::from_secs(20), || {
        ns.sh("ip addr replace 127.0.0.99/8 dev lo");
        read_log().contains("127.0.0.99/8")
    });
    assert!(
        listening,
        "ip monitor never reported the marker: {}",
        read_log()
    );

    let desired: BTreeSet<IpAddr> = ["10.96.0.2", "10.96.0.3", "10.96.0.4", "fd00::2"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    let (created, changes, second, released) = in_ns(&ns, || async {
        let iface = ServiceInterface::ensure(DEFAULT_NAME).await.unwrap();
        let changes = iface.sync(&desired).await.unwrap();
        let second = iface.sync(&desired).await.unwrap();
        let created = iface.created();
        // Adopted, so releasing it must leave it in place.
        let released = iface.release().await.unwrap();
        (created, changes, second, released)
    });
    assert!(!created);
    let text = |list: &[IpAddr]| list.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(text(&changes.added), ["10.96.0.4", "fd00::2"]);
    assert_eq!(text(&changes.removed), ["10.96.0.1", "fd00::1"]);
    assert_eq!(changes.kept, 2);
    assert!(second.is_empty(), "second sync changed {second:?}");
    assert!(!released);
    let mut events = String::new();
    netns_lab::wait_until(Duration::from_secs(10), || {
        events = read_log();
        events.contains("10.96.0.4/32") && events.contains("fd00::1/128")
    });
    drop(monitor);
    std::fs::remove_file(&log).unwrap();
    assert!(
        events.contains("Deleted") && events.contains("10.96.0.1/32"),
        "{events}"
    );
    assert!(
        !events.contains("10.96.0.2/32"),
        "a kept address was touched: {events}"
    );

    let expected: BTreeSet<String> = [
        "10.96.0.2/32",
        "10.96.0.3/32",
        "10.96.0.4/32",
        "fd00::2/128",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    assert_eq!(ip_addresses(&ns), expected);
    // IPv6 was added with nodad: usable at once, never tentative.
    let v6 = ns.sh("ip -o addr show dev kube-ipvs0 to fd00::2");
    assert!(!v6.contains("tentative"), "{v6}");
}

#[test]
#[ignore = "needs the kernel lab"]
fn netif_refuses_a_non_dummy_and_deletes_only_its_own() {
    let ns = Netns::new("notdummy");
    ns.sh("ip link add kube-ipvs0 type veth peer name other0");
    let refused = in_ns(&ns, || async {
        ServiceInterface::ensure(DEFAULT_NAME).await.unwrap_err()
    });
    assert!(matches!(refused, NetifError::NotDummy { .. }), "{refused}");
    assert!(
        refused.to_string().contains("is a veth link, not a dummy"),
        "{refused}"
    );
    ns.sh("ip link show kube-ipvs0");

    let ours = Netns::new("release");
    let released = in_ns(&ours, || async {
        let iface = ServiceInterface::ensure(DEFAULT_NAME).await.unwrap();
        iface.release().await.unwrap()
    });
    assert!(released);
    assert!(!ours.exec("ip link show kube-ipvs0").status.success());
}

#[test]
#[ignore = "needs the kernel lab"]
fn netif_addresses_are_reachable_locally() {
    let ns = Netns::new("local");
    let desired: BTreeSet<IpAddr> = ["10.96.5.5", "fd00::5:5"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    in_ns(&ns, || async {
        let iface = ServiceInterface::ensure(DEFAULT_NAME).await.unwrap();
        iface.sync(&desired).await.unwrap();
    });
    let _server = ns.http_server(8080, "served-on-a-service-address");
    let reply = ns.sh("curl -sS --max-time 5 http://10.96.5.5:8080/");
    assert_eq!(reply.trim(), "served-on-a-service-address");
    let reply6 = ns.sh("curl -sS --max-time 5 'http://[fd00::5:5]:8080/'");
    assert_eq!(reply6.trim(), "served-on-a-service-address");
    ns.sh("busybox ping -c1 -W2 10.96.5.5");
    // An address that is not bound is not local: the control.
    assert!(
        !ns.exec("curl -sS --max-time 3 http://10.96.5.6:8080/")
            .status
            .success()
    );
}

/// `ip -o addr` spelling of addresses bound as host routes.
fn host_routes(addresses: &BTreeSet<IpAddr>) -> BTreeSet<String> {
    addresses
        .iter()
        .map(|a| match a {
            IpAddr::V4(v4) => format!("{v4}/32"),
            IpAddr::V6(v6) => format!("{v6}/128"),
        })
        .collect()
}

#[test]
#[ignore = "needs the kernel lab"]
fn netif_batched_binds_600_addresses_in_chunks_and_skips_bound_ones() {
    let ns = Netns::new("batch");
    ns.sh("ip link add kube-ipvs0 type dummy");
    ns.sh("ip addr add 10.96.0.7/32 dev kube-ipvs0");
    let desired = many(450, 150);
    // As the agent feeds them: a first part at once, the rest later (after its set
    // entries are in), through the same stream-driven batches.
    let ordered: Vec<IpAddr> = desired.iter().copied().collect();
    let (first, later) = ordered.split_at(300);
    let (chunk, bound) = in_ns(&ns, || async {
        let iface = ServiceInterface::ensure(DEFAULT_NAME).await.unwrap();
        let chunk = iface.binder().unwrap().chunk_size();
        let later = later.to_vec();
        let gated = stream::iter(first.to_vec()).chain(
            stream::once(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                stream::iter(later)
            })
            .flatten(),
        );
        (chunk, iface.add_batched(gated).await.unwrap())
    });
    // 600 addresses take more than two sends.
    assert_eq!(chunk, BATCH_CHUNK);
    assert_eq!(bound, 599, "10.96.0.7 was already bound");
    assert_eq!(ip_addresses(&ns), host_routes(&desired));
    let v6 = ns.sh("ip -o addr show dev kube-ipvs0 to fd00:96::96");
    assert!(
        v6.contains("fd00:96::96/128") && !v6.contains("tentative"),
        "{v6}"
    );
}

#[test]
#[ignore = "needs the kernel lab"]
fn netif_batched_reports_exactly_the_refused_addresses() {
    let ns = Netns::new("batch-refused");
    ns.sh("ip link add kube-ipvs0 type dummy");
    // The kernel refuses any IPv6 address on an interface with IPv6 disabled.
    ns.sh("sysctl -qw net.ipv6.conf.kube-ipvs0.disable_ipv6=1");
    let v4 = many(300, 0);
    let refused: IpAddr = "fd00::bad".parse().unwrap();
    let mut mixed: Vec<IpAddr> = v4.iter().copied().collect();
    // In the middle of the first chunk: the messages after it still apply.
    mixed.insert(100, refused);
    let only_v6 = many(0, 300);
    let (one, all) = in_ns(&ns, || async {
        let iface = ServiceInterface::ensure(DEFAULT_NAME).await.unwrap();
        let one = iface.add_batched(stream::iter(mixed)).await.unwrap_err();
        // A whole chunk of refusals: every error must fit the receive buffer.
        let all = iface
            .binder()
            .unwrap()
            .add(only_v6.iter().copied())
            .unwrap_err();
        (one, all)
    });
    println!("netif: one refused: {one}");
    let NetifError::Addresses {
        action,
        total,
        failures,
        ..
    } = one
    else {
        panic!("not an address failure: {one}");
    };
    assert_eq!((action, total), ("add", 301));
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].0, refused);
    assert!(!failures[0].1.is_empty());
    assert_eq!(ip_addresses(&ns), host_routes(&v4));
    let NetifError::Addresses {
        total, failures, ..
    } = all
    else {
        panic!("not an address failure: {all}");
    };
    assert_eq!(total, 300);
    let failed: BTreeSet<IpAddr> = failures.iter().map(|(address, _)| *address).collect();
    assert_eq!(failed, only_v6);
    assert_eq!(ip_addresses(&ns), host_routes(&v4));
}
