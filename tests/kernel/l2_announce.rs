//! The layer-2 announcer (`announce::l2::spawn_l2_announcer`) against the real kernel.
//! Each node namespace has strict ARP and the LoadBalancer IPs on a dummy
//! `kube-ipvs0`, as the agent leaves it, so its kernel answers nothing for them; the
//! announcer runs in-process on the namespace's thread and ownership is driven through
//! its watch channel, as the agent drives it from the announce decision.
//!
//! - three nodes and a client on one bridge: exactly one MAC answers `arping` and
//!   `ndisc6` for each IP; moving an IP moves the client's neighbour entries to the
//!   new owner within the takeover burst and the old owner falls silent;
//! - interface choice: subnet, advertisement names, default route, and a link going
//!   down and up again;
//! - hostile frames on the wire;
//! - the figure `takeover_gratuitous_ms_100_ips`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use crate::l2_network::hostile_frames;
use ipvs_proxy::announce::l2::{
    Interface, L2Metrics, L2Options, L2Status, TAKEOVER_BURST, Wanted, spawn_l2_announcer,
};
use ipvs_proxy::lb::decision::Interfaces;
use netns_lab::neigh::{arping, ndisc_answers, neighbour_mac, replies_from, wait_link_local};
use netns_lab::{Netns, veth, wait_until};
use tokio::sync::{oneshot, watch};

/// An announcer running in a namespace, on its own thread and runtime.
struct Announcer {
    wanted: watch::Sender<Wanted>,
    status: watch::Receiver<L2Status>,
    metrics: Arc<L2Metrics>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Announcer {
    fn start(ns: &Netns) -> Announcer {
        let (wanted, wanted_rx) = watch::channel(Wanted::new());
        let metrics = Arc::new(L2Metrics::default());
        let options = L2Options {
            metrics: Arc::clone(&metrics),
            ..L2Options::default()
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let thread = ns.thread_async(move || async move {
            let handle = match spawn_l2_announcer(options, wanted_rx) {
                Ok(handle) => handle,
                Err(error) => {
                    let _ = ready_tx.send(Err(error.to_string()));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(handle.status()));
            let _ = stop_rx.await;
            handle.release_all().await;
        });
        let status = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the announcer never started")
            .unwrap_or_else(|error| panic!("the announcer failed to start: {error}"));
        Announcer {
            wanted,
            status,
            metrics,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Makes the node own exactly these IPs.
    fn own(&self, ips: &[(IpAddr, Interfaces)]) {
        self.wanted.send_replace(ips.iter().cloned().collect());
    }

    /// The interfaces answering for `ip` now (None: not owned).
    fn answering(&self, ip: IpAddr) -> Option<Vec<String>> {
        self.status.borrow().ips.get(&ip).cloned()
    }

    fn assert_answering(&self, ip: IpAddr, interfaces: &[&str]) {
        // Generous: the lab is an emulated machine running several tests at once.
        let converged = wait_until(Duration::from_secs(20), || {
            self.answering(ip).is_some_and(|names| {
                names
                    .iter()
                    .map(String::as_str)
                    .eq(interfaces.iter().copied())
            })
        });
        assert!(
            converged,
            "{ip}: answering on {:?}, expected {interfaces:?}",
            self.answering(ip)
        );
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn all(ip: IpAddr) -> (IpAddr, Interfaces) {
    (ip, Interfaces::All)
}

/// A node as the agent leaves it: strict ARP on every interface, the given IPs on
/// `kube-ipvs0`.
fn prepare_node(node: &Netns, vips: &[IpAddr]) {
    node.sh("ip link add kube-ipvs0 type dummy");
    for ip in vips {
        let (len, nodad) = if ip.is_ipv4() {
            (32, "")
        } else {
            (128, " nodad")
        };
        node.sh(&format!("ip addr add {ip}/{len} dev kube-ipvs0{nodad}"));
    }
    node.sh(
        "for c in /proc/sys/net/ipv4/conf/*; do echo 1 > $c/arp_ignore; echo 2 > $c/arp_announce; done",
    );
}

/// Watches the neighbour table of `ns` over rtnetlink (every 2 ms, in the namespace)
/// until every IP of `ips` maps to `mac`; the thread's result is when that was seen,
/// or None after `timeout`. Started before the change it waits for, so the time
/// measured is the network's, not the cost of running `ip` in an emulated machine.
fn watch_neighbours(
    ns: &Netns,
    ips: Vec<IpAddr>,
    mac: String,
    timeout: Duration,
) -> std::thread::JoinHandle<Option<Instant>> {
    use futures_util::TryStreamExt;
    use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute};

    let (ready_tx, ready_rx) = mpsc::channel();
    let thread = ns.thread_async(move || async move {
        let (connection, handle, _) = rtnetlink::new_connection().expect("rtnetlink");
        tokio::spawn(connection);
        let _ = ready_tx.send(());
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let mut table = BTreeMap::new();
            let mut stream = handle.neighbours().get().execute();
            while let Some(entry) = stream.try_next().await.expect("dump neighbours") {
                let mut ip = None;
                let mut lladdr = None;
                for attribute in entry.attributes {
                    match attribute {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                            ip = Some(IpAddr::V4(v4));
                        }
                        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                            ip = Some(IpAddr::V6(v6));
                        }
                        NeighbourAttribute::LinkLayerAddress(bytes) => {
                            let hex: Vec<String> =
                                bytes.iter().map(|b| format!("{b:02x}")).collect();
                            lladdr = Some(hex.join(":"));
                        }
                        _ => {}
                    }
                }
                if let (Some(ip), Some(lladdr)) = (ip, lladdr) {
                    table.insert(ip, lladdr);
                }
            }
            if ips.iter().all(|ip| table.get(ip) == Some(&mac)) {
                return Some(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        None
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the neighbour watcher never started");
    thread
}

const SEGMENT_VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 61, 100);
const SEGMENT_VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x61, 0, 0, 0, 0, 0, 0x100);
/// The second IP of the segment test, owned by node 2 throughout.
const SEGMENT_OTHER: Ipv4Addr = Ipv4Addr::new(192, 168, 61, 101);

fn node_mac(i: usize) -> String {
    format!("02:00:00:00:61:1{i}")
}

/// A bridge in a switch namespace, a client and `nodes` nodes on it; each node's
/// `eth0` is 192.168.61.1N/24 and fd00:61::1N/64 with MAC 02:00:00:00:61:1N.
fn segment(nodes: usize, vips: &[IpAddr]) -> (Netns, Netns, Vec<Netns>) {
    let switch = Netns::new("l2a-sw");
    switch.sh("ip link add br0 type bridge && ip link set br0 up");
    let attach = |ns: &Netns, port: &str, mac: &str, v4: &str, v6: &str| {
        switch.sh(&format!(
            "ip link add {port} type veth peer name {port}x && ip link set {port}x netns {}",
            ns.name()
        ));
        switch.sh(&format!(
            "ip link set {port} master br0 && ip link set {port} up"
        ));
        ns.sh(&format!(
            "ip link set {port}x name eth0 && ip link set eth0 address {mac} \
             && ip addr add {v4} dev eth0 && ip addr add {v6} dev eth0 nodad && ip link set eth0 up"
        ));
    };
    let client = Netns::new("l2a-client");
    attach(
        &client,
        "pc",
        "02:00:00:00:61:02",
        "192.168.61.2/24",
        "fd00:61::2/64",
    );
    let nodes: Vec<Netns> = (0..nodes)
        .map(|i| {
            let node = Netns::new(&format!("l2a-n{i}"));
            attach(
                &node,
                &format!("pn{i}"),
                &node_mac(i),
                &format!("192.168.61.1{i}/24"),
                &format!("fd00:61::1{i}/64"),
            );
            prepare_node(&node, vips);
            node
        })
        .collect();
    wait_link_local(&client, "eth0");
    (switch, client, nodes)
}

/// The MACs among the nodes' that answered in an arping output, with reply counts.
fn answering_nodes(output: &str, nodes: usize) -> BTreeMap<usize, usize> {
    (0..nodes)
        .map(|i| (i, replies_from(output, &node_mac(i))))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[test]
#[ignore = "needs the kernel lab"]
fn one_owner_answers_and_ownership_moves_with_the_neighbour_entries() {
    let vips = [
        IpAddr::V4(SEGMENT_VIP),
        IpAddr::V6(SEGMENT_VIP6),
        IpAddr::V4(SEGMENT_OTHER),
    ];
    let (_switch, client, nodes) = segment(3, &vips);
    let announcers: Vec<Announcer> = nodes.iter().map(Announcer::start).collect();

    // Before: nobody owns anything, and the kernels do not answer either.
    let text = arping(&client, "eth0", SEGMENT_VIP, 1);
    assert!(answering_nodes(&text, 3).is_empty(), "answered: {text}");

    announcers[0].own(&[all(IpAddr::V4(SEGMENT_VIP)), all(IpAddr::V6(SEGMENT_VIP6))]);
    announcers[2].own(&[all(IpAddr::V4(SEGMENT_OTHER))]);
    announcers[0].assert_answering(IpAddr::V4(SEGMENT_VIP), &["eth0"]);
    announcers[0].assert_answering(IpAddr::V6(SEGMENT_VIP6), &["eth0"]);
    announcers[2].assert_answering(IpAddr::V4(SEGMENT_OTHER), &["eth0"]);

    let text = arping(&client, "eth0", SEGMENT_VIP, 3);
    assert_eq!(
        answering_nodes(&text, 3),
        BTreeMap::from([(0, 3)]),
        "{text}"
    );
    let text = arping(&client, "eth0", SEGMENT_OTHER, 3);
    assert_eq!(
        answering_nodes(&text, 3),
        BTreeMap::from([(2, 3)]),
        "{text}"
    );
    assert_eq!(
        ndisc_answers(&client, "eth0", SEGMENT_VIP6),
        vec![node_mac(0)]
    );
    let counts = announcers[0].metrics.ip(IpAddr::V4(SEGMENT_VIP));
    assert!(
        counts.responses_sent >= 3 && counts.requests_received >= counts.responses_sent,
        "{counts:?}"
    );

    // The client resolves both through its kernel, as its traffic would: a datagram
    // to each makes it ask.
    for ip in [IpAddr::V4(SEGMENT_VIP), IpAddr::V6(SEGMENT_VIP6)] {
        client.run(move || {
            let any: IpAddr = if ip.is_ipv4() {
                Ipv4Addr::UNSPECIFIED.into()
            } else {
                Ipv6Addr::UNSPECIFIED.into()
            };
            let socket = std::net::UdpSocket::bind((any, 0)).expect("a UDP socket");
            socket.send_to(b"resolve", (ip, 9)).expect("send");
        });
        let resolved = wait_until(Duration::from_secs(5), || {
            neighbour_mac(&client, "eth0", ip) == Some(node_mac(0))
        });
        assert!(
            resolved,
            "{ip} not resolved to node 0: {:?}",
            neighbour_mac(&client, "eth0", ip)
        );
    }

    // Move both to node 1: the old owner lets go, the new one takes over. First let
    // the entries age past the client's ARP `locktime` (1 s), as an entry has in any
    // failover but one right after the first resolution: within it, Linux ignores
    // ARP that would change the address, and only the burst's later rounds move it.
    std::thread::sleep(Duration::from_millis(1100));
    let burst = *TAKEOVER_BURST.last().expect("a burst");
    let watcher = watch_neighbours(
        &client,
        vec![IpAddr::V4(SEGMENT_VIP), IpAddr::V6(SEGMENT_VIP6)],
        node_mac(1),
        burst + Duration::from_secs(2),
    );
    let moved_at = Instant::now();
    announcers[0].own(&[]);
    announcers[1].own(&[all(IpAddr::V4(SEGMENT_VIP)), all(IpAddr::V6(SEGMENT_VIP6))]);
    let moved = watcher.join().expect("the neighbour watcher panicked");
    let Some(moved) = moved else {
        panic!(
            "the client's entries did not move to node 1 within the burst:\n{}",
            client.sh("ip neigh show dev eth0")
        );
    };
    println!(
        "l2_neighbour_moved_ms: {}",
        moved.saturating_duration_since(moved_at).as_millis()
    );

    let text = arping(&client, "eth0", SEGMENT_VIP, 3);
    assert_eq!(
        answering_nodes(&text, 3),
        BTreeMap::from([(1, 3)]),
        "{text}"
    );
    assert_eq!(
        ndisc_answers(&client, "eth0", SEGMENT_VIP6),
        vec![node_mac(1)]
    );
    // The untouched IP stayed where it was.
    let text = arping(&client, "eth0", SEGMENT_OTHER, 1);
    assert_eq!(
        answering_nodes(&text, 3),
        BTreeMap::from([(2, 1)]),
        "{text}"
    );
    assert_eq!(announcers[0].answering(IpAddr::V4(SEGMENT_VIP)), None);

    // The whole burst went out: two ARP forms or one advertisement per round.
    let rounds = TAKEOVER_BURST.len() as u64;
    let full = wait_until(Duration::from_secs(3), || {
        announcers[1]
            .metrics
            .ip(IpAddr::V4(SEGMENT_VIP))
            .gratuitous_sent
            == 2 * rounds
            && announcers[1]
                .metrics
                .ip(IpAddr::V6(SEGMENT_VIP6))
                .gratuitous_sent
                == rounds
    });
    assert!(
        full,
        "burst: {:?} {:?}",
        announcers[1].metrics.ip(IpAddr::V4(SEGMENT_VIP)),
        announcers[1].metrics.ip(IpAddr::V6(SEGMENT_VIP6))
    );
}

#[test]
#[ignore = "needs the kernel lab"]
fn interfaces_follow_subnets_names_default_routes_and_link_state() {
    let a = IpAddr::V4(Ipv4Addr::new(192, 168, 62, 100));
    let b = IpAddr::V4(Ipv4Addr::new(192, 168, 63, 100));
    let off_subnet = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 100));
    let named = IpAddr::V4(Ipv4Addr::new(192, 168, 62, 101));
    let node = Netns::new("l2a-multi");
    let left = Netns::new("l2a-left");
    let right = Netns::new("l2a-right");
    veth(
        &node,
        "eth0",
        "192.168.62.1/24",
        &left,
        "eth0",
        "192.168.62.2/24",
    );
    veth(
        &node,
        "eth1",
        "192.168.63.1/24",
        &right,
        "eth0",
        "192.168.63.2/24",
    );
    node.sh("ip route add default via 192.168.62.254 dev eth0 onlink");
    prepare_node(&node, &[a, b, off_subnet, named]);
    let mac = |dev: &str| {
        node.sh(&format!("cat /sys/class/net/{dev}/address"))
            .trim()
            .to_owned()
    };
    let (mac0, mac1) = (mac("eth0"), mac("eth1"));

    let announcer = Announcer::start(&node);
    let eth1_only = Interfaces::Only(["eth1".to_owned()].into());
    announcer.own(&[all(a), all(b), all(off_subnet), (named, eth1_only)]);
    announcer.assert_answering(a, &["eth0"]);
    announcer.assert_answering(b, &["eth1"]);
    announcer.assert_answering(off_subnet, &["eth0"]);
    announcer.assert_answering(named, &["eth1"]);

    let v4 = |ip: IpAddr| match ip {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(_) => unreachable!(),
    };
    for (client, ip, mac, expected) in [
        (&left, a, &mac0, 1),
        (&left, b, &mac0, 0),
        (&left, off_subnet, &mac0, 1),
        (&left, named, &mac0, 0),
        (&right, b, &mac1, 1),
        (&right, named, &mac1, 1),
        (&right, a, &mac1, 0),
    ] {
        let text = arping(client, "eth0", v4(ip), 1);
        assert_eq!(
            replies_from(&text, mac),
            expected,
            "{ip} from {}: {text}",
            client.name()
        );
    }

    // eth1 goes down: nothing is answered there; the subnet has no usable
    // interface left, so b falls back to the default route's; the named one has none.
    let rescans = announcer.metrics.rescans();
    node.sh("ip link set eth1 down");
    announcer.assert_answering(b, &["eth0"]);
    announcer.assert_answering(named, &[]);
    announcer.assert_answering(a, &["eth0"]);
    assert!(
        announcer.metrics.rescans() > rescans,
        "no rescan on the link event"
    );
    let text = arping(&left, "eth0", v4(b), 1);
    assert_eq!(replies_from(&text, &mac0), 1, "b on eth0: {text}");

    // And back: eth1 answers again, on new sockets.
    node.sh("ip link set eth1 up");
    announcer.assert_answering(b, &["eth1"]);
    announcer.assert_answering(named, &["eth1"]);
    let answered = wait_until(Duration::from_secs(5), || {
        replies_from(&arping(&right, "eth0", v4(b), 1), &mac1) == 1
    });
    assert!(answered, "b not answered on eth1 after the link came back");
    let text = arping(&left, "eth0", v4(b), 1);
    assert_eq!(replies_from(&text, &mac0), 0, "b still on eth0: {text}");
}

#[test]
#[ignore = "needs the kernel lab"]
fn hostile_frames_do_not_stop_the_announcer() {
    let vip = Ipv4Addr::new(192, 168, 65, 100);
    let vip6 = Ipv6Addr::new(0xfd00, 0x65, 0, 0, 0, 0, 0, 0x100);
    let node = Netns::new("l2a-victim");
    let client = Netns::new("l2a-attacker");
    veth(
        &node,
        "eth0",
        "192.168.65.1/24",
        &client,
        "eth0",
        "192.168.65.2/24",
    );
    node.sh("ip addr add fd00:65::1/64 dev eth0 nodad");
    client.sh("ip addr add fd00:65::2/64 dev eth0 nodad");
    prepare_node(&node, &[IpAddr::V4(vip), IpAddr::V6(vip6)]);
    wait_link_local(&client, "eth0");
    let announcer = Announcer::start(&node);
    announcer.own(&[all(IpAddr::V4(vip)), all(IpAddr::V6(vip6))]);
    announcer.assert_answering(IpAddr::V4(vip), &["eth0"]);

    let sent = client.run_async(move || async move {
        let attacker = Interface::open("eth0").await.expect("open eth0");
        let from = attacker.mac;
        let client_ip = Ipv4Addr::new(192, 168, 65, 2);
        let frames = hostile_frames(from, client_ip, vip, vip6, 500, 0x2545_f491_4f6c_dd1d, 120);
        let count = frames.len();
        for (ndp, frame) in frames {
            let socket = if ndp { &attacker.ndp } else { &attacker.arp };
            socket.send(&frame).await.expect("send a frame");
        }
        count
    });
    assert!(sent > 500);

    let node_mac = node.sh("cat /sys/class/net/eth0/address").trim().to_owned();
    let text = arping(&client, "eth0", vip, 1);
    assert_eq!(
        replies_from(&text, &node_mac),
        1,
        "after the frames: {text}"
    );
    assert_eq!(ndisc_answers(&client, "eth0", vip6), vec![node_mac]);
    assert!(
        announcer.metrics.invalid_frames() > 0,
        "the invalid frames were not even seen"
    );
    announcer.assert_answering(IpAddr::V4(vip), &["eth0"]);
}

#[test]
#[ignore = "needs the kernel lab"]
fn takeover_of_100_ips_figure() {
    let vips: Vec<IpAddr> = (0..100u8)
        .map(|i| IpAddr::V4(Ipv4Addr::new(192, 168, 66, 100 + i)))
        .collect();
    let node = Netns::new("l2a-many");
    let client = Netns::new("l2a-watcher");
    veth(
        &node,
        "eth0",
        "192.168.66.1/24",
        &client,
        "eth0",
        "192.168.66.2/24",
    );
    prepare_node(&node, &vips);
    // The client learns from gratuitous ARP, so its table shows what arrived.
    client.sh("sysctl -qw net.ipv4.conf.eth0.arp_accept=1");
    let node_mac = node.sh("cat /sys/class/net/eth0/address").trim().to_owned();
    let announcer = Announcer::start(&node);
    // Let the first link read finish, so the figure is the takeover alone.
    assert!(wait_until(Duration::from_secs(5), || announcer
        .metrics
        .rescans()
        > 0));

    let rounds = TAKEOVER_BURST.len() as u64;
    let start = Instant::now();
    announcer.own(&vips.iter().copied().map(all).collect::<Vec<_>>());
    let mut first_round = None;
    let deadline = start + Duration::from_secs(15);
    let total = 2 * rounds * vips.len() as u64;
    while announcer.metrics.gratuitous_total() < total && Instant::now() < deadline {
        if first_round.is_none()
            && vips
                .iter()
                .all(|ip| announcer.metrics.ip(*ip).gratuitous_sent >= 2)
        {
            first_round = Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let last = start.elapsed();
    assert_eq!(
        announcer.metrics.gratuitous_total(),
        total,
        "not every frame went out"
    );
    let first_round = first_round.unwrap_or(last);
    println!(
        "takeover_first_round_ms_100_ips: {}",
        first_round.as_millis()
    );
    println!("takeover_gratuitous_ms_100_ips: {}", last.as_millis());
    // The figures are printed for scripts/bench l2; how fast is not asserted here (a
    // loaded emulated VM is no measure), only that every frame went out (above).
    let learnt = client
        .sh("ip neigh show dev eth0")
        .lines()
        .filter(|l| l.contains(&node_mac))
        .count();
    assert!(
        learnt >= vips.len(),
        "the client learnt {learnt} of the 100 IPs"
    );
}
