//! The running agent's BGP speaker following configuration changes, against FRR
//! (bgpd + bfdd): a changed `BFDProfile` reaches the router's BFD session without a BGP
//! flap, and a renumbered node (its Node object's InternalIP and its interface) peers
//! again from the new address with the new router ID, next hop and BFD source.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netns_lab::routers::{FibWatch, Frr, fib, next_hops, scratch_dir};
use netns_lab::{Background, Netns, veth, wait_until};
use serde_json::{Value, json};

const VIP: &str = "198.51.100.20";

fn metallb(kind: &str, version: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": format!("metallb.io/{version}"), "kind": kind,
           "metadata": {"name": name, "namespace": "metallb-system"}, "spec": spec})
}

/// The MetalLB objects and the node's Node object with `node_ip`, BFD timers
/// `interval_ms` × `multiplier`.
fn objects(node_ip: &str, interval_ms: u32, multiplier: u32) -> Vec<Value> {
    vec![
        metallb(
            "IPAddressPool",
            "v1beta1",
            "bgp",
            json!({"addresses": ["198.51.100.16/28"]}),
        ),
        metallb(
            "BGPAdvertisement",
            "v1beta1",
            "bgp",
            json!({"ipAddressPools": ["bgp"]}),
        ),
        metallb(
            "BFDProfile",
            "v1beta1",
            "tuned",
            json!({"receiveInterval": interval_ms, "transmitInterval": interval_ms,
                   "detectMultiplier": multiplier}),
        ),
        metallb(
            "BGPPeer",
            "v1beta2",
            "router",
            json!({"myASN": 64512, "peerASN": 64513, "peerAddress": "10.0.1.1",
                   "connectTime": "2s", "holdTime": "9s", "bfdProfile": "tuned",
                   "enableGracefulRestart": true}),
        ),
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": "node-1",
                            "labels": {"kubernetes.io/hostname": "node-1"}},
               "status": {"addresses": [{"type": "InternalIP", "address": node_ip}],
                          "conditions": [{"type": "Ready", "status": "True"}]}}),
    ]
}

/// Writes `objects` as the manifest file `file` (atomically: the agent watches the
/// directory).
fn write(dir: &Path, file: &str, objects: &[Value]) {
    let tmp = dir.join(format!("{file}.tmp"));
    std::fs::write(&tmp, testkit::k8s::manifest(objects)).unwrap();
    std::fs::rename(&tmp, dir.join("manifests").join(file)).unwrap();
}

/// FRR's BFD peer at `peer`, from `show bfd peers json`.
fn bfd_peer(frr: &Frr, peer: &str) -> Option<Value> {
    let text = frr.vtysh("bfdd", "show bfd peers json");
    serde_json::from_str::<Value>(&text)
        .ok()?
        .as_array()?
        .iter()
        .find(|p| p["peer"] == peer)
        .cloned()
}

/// FRR's BGP neighbour `peer`, from `show bgp neighbors <peer> json`.
fn bgp_neighbor(frr: &Frr, peer: &str) -> Value {
    let text = frr.vtysh("bgpd", &format!("show bgp neighbors {peer} json"));
    serde_json::from_str::<Value>(&text).unwrap_or_default()[peer].clone()
}

fn agent_log(path: &PathBuf) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// One node (10.0.1.2, later 10.0.1.3) peering with FRR (10.0.1.1) with BFD: the
/// profile goes from 900 ms × 3 to 600 ms × 5 (slow timers: the emulated lab under load
/// stalls FRR's bfdd for over a second at times) and FRR sees the new remote timers on
/// the same BGP session; then the node is renumbered and the session, the route's
/// next hop, the router ID and the BFD session all move to the new address.
#[test]
#[ignore = "needs the kernel lab"]
fn bfd_profile_changes_and_node_renumbering_reach_the_router() {
    let dir = scratch_dir("abc");
    std::fs::create_dir_all(dir.join("manifests")).unwrap();
    let router = Netns::new("abcr");
    let node = Netns::new("abcn");
    veth(&router, "r1", "10.0.1.1/24", &node, "eth0", "10.0.1.2/24");
    let mut conf = String::from(
        "frr defaults datacenter\nhostname lab\nrouter bgp 64513\n bgp router-id 10.0.0.1\n \
         no bgp ebgp-requires-policy\n bgp graceful-restart\n",
    );
    for peer in ["10.0.1.2", "10.0.1.3"] {
        conf.push_str(&format!(
            " neighbor {peer} remote-as 64512\n neighbor {peer} bfd\n \
             neighbor {peer} bfd check-control-plane-failure\n"
        ));
    }
    conf.push_str("exit\n");
    let frr = Frr::start(&router, &conf, true);

    write(&dir, "metallb.json", &objects("10.0.1.2", 900, 3));
    // eTP=Cluster with a ready endpoint: the node announces the address.
    let mut service = testkit::k8s::service(
        "lab",
        "web",
        json!({"type": "LoadBalancer", "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
               "externalTrafficPolicy": "Cluster",
               "ports": [testkit::k8s::http_port(None)]}),
    );
    service["metadata"]["annotations"] = json!({"metallb.io/loadBalancerIPs": VIP});
    let slice = testkit::k8s::slice(
        "lab",
        "web-1",
        "web",
        vec![testkit::k8s::endpoint(
            "10.244.1.10",
            "node-1",
            testkit::k8s::READY,
        )],
    );
    write(&dir, "web.json", &[service, slice]);

    let config = dir.join("node-1.yaml");
    std::fs::write(
        &config,
        format!(
            "{}---\napiVersion: ipvs-proxy.io/v1alpha1\nkind: IpvsProxyConfiguration\n\
             loadBalancer:\n  bgp:\n    restartMarker: {}\n",
            testkit::LAB_AGENT_CONFIG,
            dir.join("node-1.running").display()
        ),
    )
    .unwrap();
    let log = dir.join("node-1.log");
    let start_agent = || -> Background {
        node.spawn(&format!(
            "{} run --config {} --manifests {} --hostname-override node-1 --status-socket {} >> {} 2>&1",
            crate::AGENT,
            config.display(),
            dir.join("manifests").display(),
            dir.join("node-1.sock").display(),
            log.display()
        ))
    };
    let mut agent = start_agent();

    // Up with 900 ms × 3: FRR's BFD session sees our timers.
    let timers = |peer: &str| {
        bfd_peer(&frr, peer).map(|p| {
            (
                p["status"].as_str().unwrap_or_default().to_string(),
                p["remote-transmit-interval"].as_u64().unwrap_or_default(),
                p["remote-detect-multiplier"].as_u64().unwrap_or_default(),
            )
        })
    };
    let up = wait_until(Duration::from_secs(120), || {
        next_hops(&fib(&router, VIP)).contains("10.0.1.2")
            && timers("10.0.1.2") == Some(("up".into(), 900, 3))
    });
    assert!(
        up,
        "{}\n{:?}\n{}\n{}",
        fib(&router, VIP),
        bfd_peer(&frr, "10.0.1.2"),
        frr.vtysh("bgpd", "show bgp summary"),
        agent_log(&log)
    );
    // One session: BFD starts once BGP is up, so FRR's registering its BFD session
    // again with the connection's addresses does not end the fresh BGP session.
    let established = bgp_neighbor(&frr, "10.0.1.2")["connectionsEstablished"].clone();
    assert_eq!(established, json!(1), "{}", agent_log(&log));

    // The profile changes: the router sees the new timers on the same sessions.
    write(&dir, "metallb.json", &objects("10.0.1.2", 600, 5));
    let retimed = wait_until(Duration::from_secs(60), || {
        timers("10.0.1.2") == Some(("up".into(), 600, 5))
    });
    assert!(
        retimed,
        "{:?}\n{}",
        bfd_peer(&frr, "10.0.1.2"),
        agent_log(&log)
    );
    let neighbor = bgp_neighbor(&frr, "10.0.1.2");
    assert_eq!(neighbor["bgpState"], "Established", "{neighbor:#}");
    assert_eq!(
        neighbor["connectionsEstablished"], established,
        "the BGP session flapped on a BFD profile change"
    );

    // The node is renumbered: its interface, then its Node object.
    node.sh("ip addr del 10.0.1.2/24 dev eth0 && ip addr add 10.0.1.3/24 dev eth0");
    write(&dir, "metallb.json", &objects("10.0.1.3", 600, 5));
    let moved = wait_until(Duration::from_secs(120), || {
        let neighbor = bgp_neighbor(&frr, "10.0.1.3");
        next_hops(&fib(&router, VIP)) == ["10.0.1.3".to_string()].into()
            && neighbor["bgpState"] == "Established"
            && neighbor["remoteRouterId"] == "10.0.1.3"
            && timers("10.0.1.3") == Some(("up".into(), 600, 5))
    });
    assert!(
        moved,
        "{}\n{:#}\n{:?}\n{}\n{}",
        fib(&router, VIP),
        bgp_neighbor(&frr, "10.0.1.3"),
        bfd_peer(&frr, "10.0.1.3"),
        frr.vtysh("bgpd", "show bgp summary"),
        agent_log(&log)
    );

    // A rolling restart of the agent with graceful restart and BFD: SIGTERM closes
    // BGP without a word and BFD falls silent; FRR, told to check for a control-plane
    // failure, sees our BFD's C bit clear (it shares fate with the agent) and keeps
    // the route for graceful restart while the agent is away; the new agent's session
    // comes up once and stays.
    let established = bgp_neighbor(&frr, "10.0.1.3")["connectionsEstablished"]
        .as_u64()
        .unwrap_or_default();
    let watch = FibWatch::start(&router, VIP, "10.0.1.3");
    let terminated = Instant::now();
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        agent.wait_exit(Duration::from_secs(30)),
        "the agent did not exit on SIGTERM\n{}",
        agent_log(&log)
    );
    // Away for longer than BFD's detection time (600 ms x 5).
    std::thread::sleep(Duration::from_secs(4));
    let _agent = start_agent();
    let back = wait_until(Duration::from_secs(120), || {
        bgp_neighbor(&frr, "10.0.1.3")["connectionsEstablished"].as_u64() == Some(established + 1)
            && timers("10.0.1.3") == Some(("up".into(), 600, 5))
    });
    assert!(
        back,
        "{:#}\n{:?}\n{}",
        bgp_neighbor(&frr, "10.0.1.3"),
        bfd_peer(&frr, "10.0.1.3"),
        agent_log(&log)
    );
    // Settled: still the one new session a few seconds on, and the route was never gone.
    std::thread::sleep(Duration::from_secs(5));
    let gaps = watch.finish().missing();
    let neighbor = bgp_neighbor(&frr, "10.0.1.3");
    assert_eq!(
        neighbor["connectionsEstablished"].as_u64(),
        Some(established + 1),
        "{neighbor:#}\n{}",
        agent_log(&log)
    );
    let since = |at: &Instant| at.duration_since(terminated).as_millis();
    assert!(
        gaps.is_empty(),
        "FRR lost the route during the restart: {} samples from +{} ms to +{} ms after \
         SIGTERM\n{neighbor:#}\n{}",
        gaps.len(),
        gaps.first().map(since).unwrap_or_default(),
        gaps.last().map(since).unwrap_or_default(),
        agent_log(&log)
    );
}
