//! The BGP speaker (`announce::bgp`) against real routers: BIRD, FRR's bgpd (with
//! zebra, for its FIB) and GoBGP each run in a router namespace and peer with one to
//! three node namespaces, each running the speaker in-process on its own runtime. What
//! is checked is what the routers say and install: routes with communities, large
//! communities and LOCAL_PREF in their own output, an ECMP route with one next hop per
//! node in the router's kernel FIB, withdrawal on route removal and on shutdown, TCP
//! MD5 match and mismatch, an IPv6 session, a 4-octet ASN, graceful restart (the
//! router keeps the route across a restart and flushes what the restarted speaker no
//! longer announces once it gets End-of-RIB), and a peer sending garbage.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipvs_proxy::announce::bgp::{
    BfdSessions, BfdState, Password, PeerAs, PeerConfig, SessionState, SpeakerOptions,
};
use netns_lab::routers::{Bird, Frr, Gobgp, bird_bgp, fib, next_hops, scratch_dir, star};
use netns_lab::{Netns, veth, wait_until};
use testkit::speaker::{InProcessSpeaker as Speaker, route, routes_for};
use tokio::sync::watch;

const ROUTER_AS: u32 = 64513;
const NODE_AS: u32 = 64512;
const VIP: &str = "198.51.100.10/32";
const VIP2: &str = "198.51.100.11/32";

fn options(node: &str, router_id: &str, marker: &Path) -> SpeakerOptions {
    let mut o = SpeakerOptions::new(node, router_id.parse().unwrap());
    o.restart_marker = Some(marker.to_path_buf());
    o
}

fn peer(name: &str, local_as: u32, peer_as: u32, address: &str) -> PeerConfig {
    let mut p = PeerConfig::new(
        name,
        local_as,
        PeerAs::Exact(peer_as),
        address.parse().unwrap(),
    );
    p.connect_time = Duration::from_secs(1);
    p
}

/// A BIRD protocol for a node on `address` in AS `asn`, passive (the speaker
/// connects), with graceful restart.
fn bird_protocol(name: &str, local: &str, address: &str, asn: u32, extra: &str) -> String {
    bird_bgp(
        name,
        local,
        ROUTER_AS,
        address,
        asn,
        &format!("passive on;\n  graceful restart on;\n  {extra}"),
    )
}

// --- BIRD ---------------------------------------------------------------------------

#[test]
#[ignore = "needs the kernel lab"]
fn bird_installs_an_ecmp_route_over_three_nodes_and_follows_withdrawals() {
    let (r, nodes) = star("bgpe", 3);
    let protocols: String = (1..=3)
        .map(|i| {
            bird_protocol(
                &format!("node{i}"),
                &format!("10.0.{i}.1"),
                &format!("10.0.{i}.2"),
                NODE_AS,
                "",
            )
        })
        .collect();
    let bird = Bird::start(&r, "10.0.0.1", &protocols);
    let dir = scratch_dir("bgp-speaker-ecmp-markers");
    let speakers: Vec<Speaker> = nodes
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let i = i + 1;
            let mut routes = vec![route(VIP, &["64512:7", "large:64512:1:1"], Some(300))];
            if i == 1 {
                routes.push(route(VIP2, &["64512:8"], None));
            }
            Speaker::start(
                ns,
                options(
                    &format!("node{i}"),
                    &format!("10.0.{i}.2"),
                    &dir.join(format!("n{i}")),
                ),
                vec![peer("router", NODE_AS, ROUTER_AS, &format!("10.0.{i}.1"))],
                routes_for("router", &routes),
            )
        })
        .collect();

    let all = ["10.0.1.2", "10.0.2.2", "10.0.3.2"].map(String::from);
    let ecmp = wait_until(Duration::from_secs(60), || {
        next_hops(&fib(&r, "198.51.100.10")) == BTreeSet::from(all.clone())
    });
    assert!(
        ecmp,
        "no ECMP route via the three nodes:\n{}\n{}",
        fib(&r, "198.51.100.10"),
        bird.birdc("show protocols all")
    );
    let shown = bird.birdc("show route 198.51.100.10/32 all");
    assert!(shown.contains("(64512,7)"), "{shown}");
    assert!(shown.contains("(64512, 1, 1)"), "{shown}");
    assert!(shown.contains("BGP.as_path: 64512"), "{shown}");
    // eBGP: no LOCAL_PREF on the wire (BIRD shows its own default, 100).
    assert!(!shown.contains("BGP.local_pref: 300"), "{shown}");
    let second = bird.birdc("show route 198.51.100.11/32 all");
    assert!(second.contains("(64512,8)"), "{second}");
    assert_eq!(
        next_hops(&fib(&r, "198.51.100.11")),
        BTreeSet::from(["10.0.1.2".to_string()])
    );
    let status = speakers[0].status("router").unwrap();
    assert_eq!(status.state, SessionState::Established);
    assert_eq!(status.prefixes_sent, 2);
    assert_eq!(status.peer_as, Some(ROUTER_AS));

    // Node 3 stops announcing: its next hop leaves the ECMP route; node 1 drops the
    // second prefix: it leaves the router's table.
    speakers[2].set_routes(routes_for("router", &[]));
    speakers[0].set_routes(routes_for(
        "router",
        &[route(VIP, &["64512:7", "large:64512:1:1"], Some(300))],
    ));
    let shrunk = wait_until(Duration::from_secs(10), || {
        next_hops(&fib(&r, "198.51.100.10"))
            == BTreeSet::from(["10.0.1.2".to_string(), "10.0.2.2".to_string()])
            && !bird
                .birdc("show route 198.51.100.11/32")
                .contains("198.51.100.11")
    });
    assert!(
        shrunk,
        "{}\n{}",
        fib(&r, "198.51.100.10"),
        bird.birdc("show route")
    );
    // The session of node 3 stays up with nothing announced.
    assert!(speakers[2].established("router"));
    assert_eq!(speakers[2].status("router").unwrap().prefixes_sent, 0);

    // Node 2 loses its peer (a nodeSelector no longer selects it): the session ends
    // with its routes withdrawn.
    speakers[1].set_peers(Vec::new());
    let one = wait_until(Duration::from_secs(10), || {
        next_hops(&fib(&r, "198.51.100.10")) == BTreeSet::from(["10.0.1.2".to_string()])
    });
    assert!(one, "{}", fib(&r, "198.51.100.10"));
    assert!(wait_until(Duration::from_secs(5), || speakers[1]
        .status("router")
        .is_none()));
}

#[test]
#[ignore = "needs the kernel lab"]
fn tcp_md5_lets_the_right_password_in_and_keeps_the_wrong_one_out() {
    let (r, nodes) = star("bgpm", 2);
    let protocols = format!(
        "{}{}",
        bird_protocol(
            "good",
            "10.0.1.1",
            "10.0.1.2",
            NODE_AS,
            "password \"s3cret-key\";"
        ),
        bird_protocol(
            "bad",
            "10.0.2.1",
            "10.0.2.2",
            NODE_AS,
            "password \"s3cret-key\";"
        ),
    );
    let bird = Bird::start(&r, "10.0.0.1", &protocols);
    let dir = scratch_dir("bgp-speaker-md5-markers");
    let mut good_peer = peer("router", NODE_AS, ROUTER_AS, "10.0.1.1");
    good_peer.password = Some(Password("s3cret-key".into()));
    let mut bad_peer = peer("router", NODE_AS, ROUTER_AS, "10.0.2.1");
    bad_peer.password = Some(Password("wrong-key".into()));
    let good = Speaker::start(
        &nodes[0],
        options("good", "10.0.1.2", &dir.join("good")),
        vec![good_peer],
        routes_for("router", &[route(VIP, &[], None)]),
    );
    let bad = Speaker::start(
        &nodes[1],
        options("bad", "10.0.2.2", &dir.join("bad")),
        vec![bad_peer],
        routes_for("router", &[route(VIP2, &[], None)]),
    );
    let routed = wait_until(Duration::from_secs(60), || {
        fib(&r, "198.51.100.10").contains("via 10.0.1.2")
    });
    assert!(routed, "{}", bird.birdc("show protocols all good"));
    assert!(good.established("router"));
    // The wrong key: the router drops the segments, no session in 10 s (ten attempts).
    std::thread::sleep(Duration::from_secs(10));
    assert!(!bad.established("router"), "{:?}", bad.status("router"));
    assert!(!bird.birdc("show route").contains("198.51.100.11"));
    let protocols = bird.birdc("show protocols");
    assert!(
        protocols
            .lines()
            .any(|l| l.starts_with("bad") && !l.contains("Established")),
        "{protocols}"
    );
    let error = bad.status("router").unwrap().last_error.unwrap_or_default();
    assert!(error.contains("10.0.2.1"), "{error}");
}

#[test]
#[ignore = "needs the kernel lab"]
fn graceful_restart_keeps_the_route_and_end_of_rib_flushes_what_is_gone() {
    let (r, nodes) = star("bgpg", 1);
    let bird = Bird::start(
        &r,
        "10.0.0.1",
        &bird_protocol("node1", "10.0.1.1", "10.0.1.2", NODE_AS, ""),
    );
    let dir = scratch_dir("bgp-speaker-gr-markers");
    let marker = dir.join("node1");
    let mut gr_peer = peer("router", NODE_AS, ROUTER_AS, "10.0.1.1");
    gr_peer.graceful_restart = true;
    let first = Speaker::start(
        &nodes[0],
        options("node1", "10.0.1.2", &marker),
        vec![gr_peer.clone()],
        routes_for("router", &[route(VIP, &[], None), route(VIP2, &[], None)]),
    );
    let both = wait_until(Duration::from_secs(60), || {
        fib(&r, "198.51.100.10").contains("via 10.0.1.2")
            && fib(&r, "198.51.100.11").contains("via 10.0.1.2")
    });
    assert!(both, "{}", bird.birdc("show protocols all node1"));
    assert!(first.status("router").unwrap().graceful_restart);
    assert!(marker.exists());
    // A fresh start: no restart state (R bit) in our OPEN.
    let caps = bird.birdc("show protocols all node1");
    assert!(!caps.contains("Restart recovery"), "{caps}");

    // Watch the FIB for any gap in the first prefix from now on.
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let gaps = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watcher = {
        let (watching, gaps) = (watching.clone(), gaps.clone());
        let ns = r.name().to_string();
        std::thread::spawn(move || {
            while watching.load(std::sync::atomic::Ordering::SeqCst) {
                let out = std::process::Command::new("ip")
                    .args(["netns", "exec", &ns, "ip", "route", "show", "198.51.100.10"])
                    .output()
                    .unwrap();
                if !String::from_utf8_lossy(&out.stdout).contains("via 10.0.1.2") {
                    gaps.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    // The agent goes away gracefully: the connection closes without a NOTIFICATION,
    // the router keeps both routes (stale) and goes on forwarding.
    first.shutdown(true);
    assert!(marker.exists(), "a graceful stop keeps the restart marker");
    std::thread::sleep(Duration::from_secs(3));
    let kept = bird.birdc("show route all");
    assert!(
        kept.contains("198.51.100.10") && kept.contains("198.51.100.11"),
        "{kept}"
    );
    assert!(fib(&r, "198.51.100.11").contains("via 10.0.1.2"));

    // It comes back (restart bit set from the marker) announcing one prefix: once its
    // End-of-RIB arrives, the router flushes the stale second prefix, long before the
    // 120 s restart time.
    let restarted_at = Instant::now();
    let second = Speaker::start(
        &nodes[0],
        options("node1", "10.0.1.2", &marker),
        vec![gr_peer],
        routes_for("router", &[route(VIP, &[], None)]),
    );
    let flushed = wait_until(Duration::from_secs(60), || {
        second.established("router") && !fib(&r, "198.51.100.11").contains("via")
    });
    assert!(
        flushed,
        "{}\n{}",
        bird.birdc("show protocols all node1"),
        bird.birdc("show route all")
    );
    assert!(restarted_at.elapsed() < Duration::from_secs(60));
    // The restart state (R bit) came from the marker the first run left.
    let caps = bird.birdc("show protocols all node1");
    assert!(caps.contains("Restart recovery"), "{caps}");
    watching.store(false, std::sync::atomic::Ordering::SeqCst);
    watcher.join().unwrap();
    assert_eq!(
        gaps.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the route left the FIB during the restart"
    );
    assert!(fib(&r, "198.51.100.10").contains("via 10.0.1.2"));

    // A non-graceful stop withdraws, and removes the marker.
    second.shutdown(false);
    assert!(!marker.exists());
    let gone = wait_until(Duration::from_secs(10), || {
        !fib(&r, "198.51.100.10").contains("via")
    });
    assert!(gone, "{}", bird.birdc("show route all"));
}

#[test]
#[ignore = "needs the kernel lab"]
fn a_peer_sending_garbage_does_not_disturb_the_other_session() {
    let (r, nodes) = star("bgpx", 1);
    // A second "router" address on the same link that answers with garbage.
    r.sh("ip addr add 10.0.1.9/24 dev r1");
    let bird = Bird::start(
        &r,
        "10.0.0.1",
        &bird_protocol("node1", "10.0.1.1", "10.0.1.2", NODE_AS, ""),
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let garbage = {
        let (stop, served) = (stop.clone(), served.clone());
        r.thread(move || {
            let listener = std::net::TcpListener::bind("10.0.1.9:1179").unwrap();
            listener.set_nonblocking(true).unwrap();
            let mut n = 0u8;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        use std::io::Write as _;
                        n = n.wrapping_add(1);
                        // Alternately: no BGP marker at all; a valid header announcing
                        // an absurd length; a header of an unknown message type.
                        let bytes: Vec<u8> = match n % 3 {
                            0 => vec![0x42; 100],
                            1 => [[0xff; 16].as_slice(), &[0xff, 0xff, 1]].concat(),
                            _ => [[0xff; 16].as_slice(), &[0, 19, 9]].concat(),
                        };
                        let _ = s.write_all(&bytes);
                        served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })
    };
    let dir = scratch_dir("bgp-speaker-garbage-markers");
    let speaker = Speaker::start(
        &nodes[0],
        options("node1", "10.0.1.2", &dir.join("node1")),
        vec![
            peer("router", NODE_AS, ROUTER_AS, "10.0.1.1"),
            PeerConfig {
                port: 1179,
                ..peer("garbage", NODE_AS, ROUTER_AS, "10.0.1.9")
            },
        ],
        {
            let mut m = routes_for("router", &[route(VIP, &[], None)]);
            m.insert(
                Arc::from("garbage"),
                BTreeSet::from([route(VIP, &[], None)]),
            );
            m
        },
    );
    let routed = wait_until(Duration::from_secs(60), || {
        fib(&r, "198.51.100.10").contains("via 10.0.1.2")
    });
    assert!(routed, "{}", bird.birdc("show protocols all node1"));
    // BIRD's "since" column (hh:mm:ss.mmm) in milliseconds; it is printed from a
    // monotonic stamp, so two readings of an unchanged session may differ by 1 ms.
    let uptime = |bird: &Bird| -> i64 {
        let line = bird.birdc("show protocols node1");
        let since = line
            .split_whitespace()
            .find(|w| w.len() == 12 && w.as_bytes()[2] == b':' && w.as_bytes()[8] == b'.')
            .unwrap_or_else(|| panic!("no time in {line}"));
        let n: Vec<i64> = since
            .split([':', '.'])
            .map(|x| x.parse().unwrap())
            .collect();
        ((n[0] * 60 + n[1]) * 60 + n[2]) * 1000 + n[3]
    };
    // BIRD stamps the protocol again when its channel settles just after it comes up.
    std::thread::sleep(Duration::from_secs(2));
    let before = uptime(&bird);
    let garbage_from = Instant::now();
    // Several rounds of garbage.
    assert!(wait_until(Duration::from_secs(20), || {
        served.load(std::sync::atomic::Ordering::SeqCst) >= 4
    }));
    assert!(speaker.established("router"));
    let after = uptime(&bird);
    assert!(
        (after - before).abs() < 1000,
        "the good session restarted: since {before} ms, now {after} ms"
    );
    // Our side never left Established either.
    let good = speaker.status("router").unwrap();
    assert!(
        good.since_secs >= garbage_from.elapsed().as_secs(),
        "{good:?}"
    );
    let g = speaker.status("garbage").unwrap();
    assert_ne!(g.state, SessionState::Established);
    assert!(g.last_error.is_some(), "{g:?}");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    garbage.join().unwrap();
    // The speaker still serves: a route change reaches the good peer.
    speaker.set_routes(routes_for("router", &[route(VIP2, &[], None)]));
    let moved = wait_until(Duration::from_secs(10), || {
        fib(&r, "198.51.100.11").contains("via 10.0.1.2")
            && !fib(&r, "198.51.100.10").contains("via")
    });
    assert!(moved, "{}", bird.birdc("show route all"));
}

// --- FRR ----------------------------------------------------------------------------

#[test]
#[ignore = "needs the kernel lab"]
fn frr_sees_a_four_octet_as_ebgp_node_and_an_ibgp_node_with_local_pref() {
    let (r, nodes) = star("bgpf", 2);
    let conf = format!(
        r#"frr defaults datacenter
hostname lab
router bgp {ROUTER_AS}
 bgp router-id 10.0.0.1
 no bgp ebgp-requires-policy
 bgp graceful-restart
 neighbor 10.0.1.2 remote-as 4200000001
 neighbor 10.0.2.2 remote-as {ROUTER_AS}
 address-family ipv4 unicast
  neighbor 10.0.1.2 activate
  neighbor 10.0.2.2 activate
 exit-address-family
exit
"#
    );
    let frr = Frr::start(&r, &conf, false);
    let vtysh = |cmd: &str| frr.vtysh("bgpd", cmd);
    let markers = scratch_dir("bgp-speaker-frr-markers");
    let _ebgp = Speaker::start(
        &nodes[0],
        options("node1", "10.0.1.2", &markers.join("n1")),
        vec![peer("router", 4_200_000_001, ROUTER_AS, "10.0.1.1")],
        routes_for(
            "router",
            &[route(VIP, &["64512:7", "large:4200000001:1:1"], Some(250))],
        ),
    );
    let _ibgp = Speaker::start(
        &nodes[1],
        options("node2", "10.0.2.2", &markers.join("n2")),
        vec![peer("router", ROUTER_AS, ROUTER_AS, "10.0.2.1")],
        routes_for(
            "router",
            &[route(VIP, &["64512:7", "large:4200000001:1:1"], Some(250))],
        ),
    );
    let both = wait_until(Duration::from_secs(40), || {
        let json = vtysh("show bgp ipv4 unicast 198.51.100.10/32 json");
        serde_json::from_str::<serde_json::Value>(&json)
            .ok()
            .and_then(|v| v["paths"].as_array().map(Vec::len))
            == Some(2)
    });
    let json = vtysh("show bgp ipv4 unicast 198.51.100.10/32 json");
    assert!(both, "{json}\n{}", vtysh("show bgp summary"));
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let paths = value["paths"].as_array().unwrap();
    assert_eq!(paths.len(), 2, "{json}");
    for p in paths {
        assert_eq!(p["community"]["string"], "64512:7", "{p}");
        assert_eq!(p["largeCommunity"]["string"], "4200000001:1:1", "{p}");
    }
    let ebgp = paths
        .iter()
        .find(|p| p["aspath"]["string"] == "4200000001")
        .unwrap_or_else(|| panic!("no path from AS 4200000001: {json}"));
    // LOCAL_PREF goes to iBGP peers only.
    assert_ne!(ebgp["locPrf"], 250, "{ebgp}");
    let ibgp = paths
        .iter()
        .find(|p| p["locPrf"] == 250)
        .unwrap_or_else(|| panic!("no iBGP path with LOCAL_PREF 250: {json}"));
    assert!(
        !ibgp["aspath"]["string"].to_string().contains("4200000001"),
        "{ibgp}"
    );
    // zebra installed the best path in the router's kernel FIB.
    let fib = wait_until(Duration::from_secs(10), || {
        r.sh("ip route show 198.51.100.10").contains("via 10.0.")
    });
    assert!(fib, "{}", r.sh("ip route"));
}

// --- GoBGP --------------------------------------------------------------------------

#[test]
#[ignore = "needs the kernel lab"]
fn gobgp_learns_ipv6_prefixes_over_an_ipv6_session_and_a_dual_stack_one() {
    let r = Netns::new("bgp6r");
    let n = Netns::new("bgp6n");
    veth(&r, "r1", "fd00:1::1/64", &n, "eth0", "fd00:1::2/64");
    // A second node on IPv4, dual stack, with an IPv6 address of its own on the link.
    let n2 = Netns::new("bgp6d");
    veth(&r, "r2", "10.0.2.1/24", &n2, "eth0", "10.0.2.2/24");
    r.sh("ip addr add fd00:2::1/64 dev r2 nodad");
    n2.sh("ip addr add fd00:2::2/64 dev eth0 nodad");
    let conf = format!(
        r#"[global.config]
  as = {ROUTER_AS}
  router-id = "10.0.0.1"
  port = 179
[[neighbors]]
  [neighbors.config]
    neighbor-address = "fd00:1::2"
    peer-as = {NODE_AS}
  [neighbors.transport.config]
    passive-mode = true
  [neighbors.graceful-restart.config]
    enabled = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true
[[neighbors]]
  [neighbors.config]
    neighbor-address = "10.0.2.2"
    peer-as = {NODE_AS}
  [neighbors.transport.config]
    passive-mode = true
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv4-unicast"
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "ipv6-unicast"
"#
    );
    let router = Gobgp::start(&r, &conf);
    let gobgp = |args: &str| router.cli(args);
    let markers = scratch_dir("bgp-speaker-gobgp6-markers");
    let mut p = peer("router", NODE_AS, ROUTER_AS, "fd00:1::1");
    p.graceful_restart = true;
    let speaker = Speaker::start(
        &n,
        options("node1", "10.0.9.2", &markers.join("n1")),
        vec![p],
        routes_for(
            "router",
            &[
                route(
                    "2001:db8:100::10/128",
                    &["64512:7", "large:64512:1:1"],
                    None,
                ),
                // Not carried: the session speaks IPv6 only.
                route(VIP, &[], None),
            ],
        ),
    );
    let learned = wait_until(Duration::from_secs(60), || {
        gobgp("global rib -a ipv6").contains("2001:db8:100::10/128")
    });
    assert!(learned, "{}", gobgp("neighbor fd00:1::2"));
    let rib = gobgp("global rib -a ipv6 2001:db8:100::10/128");
    assert!(rib.contains("fd00:1::2"), "next hop: {rib}");
    assert!(rib.contains("64512:7"), "{rib}");
    assert!(rib.contains("64512:1:1"), "{rib}");
    assert!(!gobgp("global rib -a ipv4").contains("198.51.100.10"));
    assert_eq!(speaker.status("router").unwrap().prefixes_sent, 1);

    // Dual stack over IPv4: the IPv4 prefix with the session's address as NEXT_HOP,
    // the IPv6 one in MP_REACH_NLRI with the node's IPv6 address.
    let mut o = options("node2", "10.0.2.2", &markers.join("n2"));
    o.node_ipv6 = Some("fd00:2::2".parse().unwrap());
    let mut p = peer("router", NODE_AS, ROUTER_AS, "10.0.2.1");
    p.dual_stack = true;
    let dual = Speaker::start(
        &n2,
        o,
        vec![p],
        routes_for(
            "router",
            &[
                route("2001:db8:200::20/128", &[], None),
                route("198.51.100.20/32", &[], None),
            ],
        ),
    );
    let learned = wait_until(Duration::from_secs(60), || {
        gobgp("global rib -a ipv6").contains("2001:db8:200::20/128")
            && gobgp("global rib -a ipv4").contains("198.51.100.20/32")
    });
    assert!(learned, "{}", gobgp("neighbor 10.0.2.2"));
    let v6 = gobgp("global rib -a ipv6 2001:db8:200::20/128");
    assert!(v6.contains("fd00:2::2"), "next hop: {v6}");
    let v4 = gobgp("global rib -a ipv4 198.51.100.20/32");
    assert!(v4.contains("10.0.2.2"), "next hop: {v4}");
    assert_eq!(dual.status("router").unwrap().prefixes_sent, 2);

    // Withdrawn when the route goes.
    speaker.set_routes(routes_for("router", &[]));
    let gone = wait_until(Duration::from_secs(10), || {
        !gobgp("global rib -a ipv6").contains("2001:db8:100::10")
    });
    assert!(gone, "{}", gobgp("global rib -a ipv6"));
}

// --- BFD input ----------------------------------------------------------------------

/// The BFD states the test sets by hand, standing in for `announce::bfd`'s manager
/// (the speaker only reads a `watch::Receiver<bool>` per peer).
struct Switch(watch::Receiver<bool>);

impl BfdSessions for Switch {
    fn watch(&self, _peer: &PeerConfig) -> Option<watch::Receiver<bool>> {
        Some(self.0.clone())
    }
}

#[test]
#[ignore = "needs the kernel lab"]
fn bfd_going_down_closes_the_session_at_once() {
    let (r, nodes) = star("bgpb", 1);
    let bird = Bird::start(
        &r,
        "10.0.0.1",
        // Without graceful restart the router drops our routes when the connection
        // closes.
        &bird_bgp(
            "node1",
            "10.0.1.1",
            ROUTER_AS,
            "10.0.1.2",
            NODE_AS,
            "passive on;",
        ),
    );
    let (bfd, bfd_rx) = watch::channel(true);
    let dir = scratch_dir("bgp-speaker-bfd-markers");
    let mut o = options("node1", "10.0.1.2", &dir.join("n1"));
    o.bfd = Some(Arc::new(Switch(bfd_rx)));
    let mut p = peer("router", NODE_AS, ROUTER_AS, "10.0.1.1");
    p.bfd_profile = Some("fast".into());
    // A long retry, so the session stays down long enough to be seen.
    p.connect_time = Duration::from_secs(8);
    let speaker = Speaker::start(
        &nodes[0],
        o,
        vec![p],
        routes_for("router", &[route(VIP, &[], None)]),
    );
    let routed = wait_until(Duration::from_secs(60), || {
        fib(&r, "198.51.100.10").contains("via 10.0.1.2")
    });
    assert!(routed, "{}", bird.birdc("show protocols all node1"));
    assert!(wait_until(Duration::from_secs(2), || speaker
        .status("router")
        .is_some_and(|s| s.bfd == BfdState::Up)));

    let down_at = Instant::now();
    bfd.send(false).unwrap();
    let gone = wait_until(Duration::from_secs(5), || {
        !fib(&r, "198.51.100.10").contains("via")
    });
    assert!(gone, "{}", bird.birdc("show protocols all node1"));
    // Well within the 90 s hold time: the connection closed at once.
    assert!(down_at.elapsed() < Duration::from_secs(5));
    let status = speaker.status("router").unwrap();
    assert_eq!(status.bfd, BfdState::Down);
    assert_ne!(status.state, SessionState::Established);
    assert_eq!(status.last_error.as_deref(), Some("BFD went down"));

    // BFD up again: the session comes back on the next attempt.
    bfd.send(true).unwrap();
    let back = wait_until(Duration::from_secs(60), || {
        fib(&r, "198.51.100.10").contains("via 10.0.1.2")
    });
    assert!(back, "{}", bird.birdc("show protocols all node1"));
}
