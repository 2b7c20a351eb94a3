//! The BFD announcer's sessions (`announce::bfd`) on real sockets in the kernel lab:
//! against FRR's bfdd over a veth (IPv4 and IPv6: Up as bfdd itself reports it, a
//! garbage datagram and a packet that crossed a router (TTL 254) change nothing,
//! bfdd's `shutdown` is seen as the peer's AdminDown, a killed bfdd is detected within
//! the detection time), and two of our managers with each other.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bfd_proto::packet::CONTROL_PORT;
use bfd_proto::{Diagnostic, Packet, State};
use ipvs_proxy::announce::bfd::{BfdManager, Config, SessionKey, SessionState, Stats};
use netns_lab::frr::{Bfdd, bfdd_version};
use netns_lab::{Netns, veth, wait_until};
use tokio::runtime::Runtime;
use tokio::sync::watch;

/// bfdd's profile and ours: 300 ms both ways, multiplier 3.
const DETECTION: Duration = Duration::from_millis(900);
/// What the emulated VM's scheduling may add to a measured detection.
const SLACK: Duration = Duration::from_millis(2000);

/// One of our managers inside a namespace: its runtime's threads all join the
/// namespace when they start, so the sockets the manager opens (from those threads)
/// live there.
struct Node {
    // Field order is drop order: the manager (and its tasks) before the runtime.
    manager: Option<Arc<BfdManager>>,
    rt: Option<Runtime>,
}

impl Node {
    fn new(ns: &Netns) -> Node {
        let path = Path::new("/run/netns").join(ns.name());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .on_thread_start(move || {
                let file = std::fs::File::open(&path).expect("open the namespace");
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .expect("join the namespace");
            })
            .build()
            .unwrap();
        Node {
            manager: Some(Arc::new(BfdManager::new())),
            rt: Some(rt),
        }
    }

    fn rt(&self) -> &Runtime {
        self.rt.as_ref().unwrap()
    }

    /// Runs `f` with the manager on one of the runtime's (namespaced) threads.
    fn with<R: Send + 'static, F>(&self, f: impl FnOnce(Arc<BfdManager>) -> F + Send + 'static) -> R
    where
        F: Future<Output = R> + Send + 'static,
    {
        let manager = self.manager.clone().unwrap();
        let rt = self.rt();
        rt.block_on(rt.spawn(async move { f(manager).await }))
            .unwrap()
    }

    fn add(&self, key: SessionKey, config: Config) -> watch::Receiver<SessionState> {
        self.with(move |m| async move { m.add_session(key, config, None) })
            .unwrap_or_else(|e| panic!("add_session {key}: {e}"))
    }

    fn stats(&self) -> Stats {
        self.manager.as_ref().unwrap().stats()
    }

    /// Waits (at most `timeout`) for the watched state to satisfy `pick`; returns it.
    fn wait_for(
        &self,
        rx: &mut watch::Receiver<SessionState>,
        timeout: Duration,
        pick: impl FnMut(&SessionState) -> bool,
    ) -> Option<SessionState> {
        self.rt().block_on(async {
            tokio::time::timeout(timeout, rx.wait_for(pick))
                .await
                .ok()?
                .ok()
                .map(|s| *s)
        })
    }

    /// Drops the manager without removing its sessions: the peers hear nothing more.
    fn kill(&mut self) {
        self.manager.take();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// bfdd in a router namespace with one single-hop peer: the node namespace.
struct Router {
    bfdd: Bfdd,
    ns: Netns,
    ip: IpAddr,
    peer: IpAddr,
}

impl Router {
    fn new(prefix: &str, node: &Netns, router_ip: &str, node_ip: &str, plen: u8) -> Router {
        let ns = Netns::new(&format!("{prefix}-rt"));
        veth(
            &ns,
            "eth0",
            &format!("{router_ip}/{plen}"),
            node,
            "eth0",
            &format!("{node_ip}/{plen}"),
        );
        let bfdd = Bfdd::start(&ns, "bfd-session", router_ip, node_ip);
        Router {
            bfdd,
            ns,
            ip: router_ip.parse().unwrap(),
            peer: node_ip.parse().unwrap(),
        }
    }

    fn vtysh(&self, cmds: &[&str]) -> String {
        self.bfdd.vtysh(&self.ns, cmds)
    }

    fn peers(&self) -> String {
        self.vtysh(&["show bfd peers"])
    }

    fn shutdown(&self, shut: bool) {
        let no = if shut { "" } else { "no " };
        self.vtysh(&[
            "configure terminal",
            "bfd",
            &format!("peer {} local-address {}", self.peer, self.ip),
            &format!("{no}shutdown"),
        ]);
    }

    /// Sends `payload` to the node's port 3784 from the router's address with the given
    /// TTL / hop limit, as a packet that crossed `255 - ttl` routers would arrive.
    fn send(&self, payload: &[u8], ttl: u32) {
        let (from, to) = (self.ip, SocketAddr::new(self.peer, CONTROL_PORT));
        let payload = payload.to_vec();
        self.ns.run(move || {
            let domain = socket2::Domain::for_address(to);
            let s = socket2::Socket::new(domain, socket2::Type::DGRAM, None).unwrap();
            if from.is_ipv6() {
                s.set_unicast_hops_v6(ttl).unwrap();
            } else {
                s.set_ttl_v4(ttl).unwrap();
            }
            // A source port in RFC 5881's range that bfdd's own session does not use
            // (it picks its source port at random from the same range).
            let bound =
                (49990..50100).any(|port| s.bind(&SocketAddr::new(from, port).into()).is_ok());
            assert!(bound, "no free source port for the crafted packet");
            s.send_to(&payload, &to.into()).unwrap();
        });
    }
}

/// The keys of one session seen from both ends: `a`'s (local `a`, peer `b`) and
/// `b`'s.
fn mirrored_keys(a: IpAddr, b: IpAddr) -> (SessionKey, SessionKey) {
    (
        SessionKey { peer: b, local: a },
        SessionKey { peer: a, local: b },
    )
}

/// An AdminDown from the router's address that does not know our discriminator: were
/// it accepted, our Up session would go Down at once (the peer said so).
fn spoofed_admin_down() -> Vec<u8> {
    Packet {
        diagnostic: Diagnostic::AdministrativelyDown,
        state: State::AdminDown,
        flags: bfd_proto::Flags::empty(),
        detect_mult: 3,
        my_discriminator: 0x5bad_0001,
        your_discriminator: 0,
        desired_min_tx_us: 1_000_000,
        required_min_rx_us: 1_000_000,
        required_min_echo_rx_us: 0,
        authentication: None,
    }
    .encode()
}

/// The kernel's drop counter of the port 3784 socket of `family`'s address family (the
/// last column of `/proc/net/udp` / `udp6`): the GTSM filter's drops show there.
fn port_drops(ns: &Netns, family: IpAddr) -> u64 {
    let file = if family.is_ipv4() { "udp" } else { "udp6" };
    let table =
        ns.run(|| std::fs::read_to_string(format!("/proc/thread-self/net/{file}")).unwrap());
    table
        .lines()
        .find(|l| {
            l.split_whitespace()
                .nth(1)
                .is_some_and(|local| local.ends_with(":0EC8"))
        })
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or_else(|| panic!("no port 3784 socket in /proc/net/{file}:\n{table}"))
}

/// The whole story against bfdd for one address family.
fn against_bfdd(prefix: &str, router_ip: &str, node_ip: &str, plen: u8) {
    let node_ns = Netns::new(&format!("{prefix}-nd"));
    let mut router = Router::new(prefix, &node_ns, router_ip, node_ip, plen);
    let node = Node::new(&node_ns);
    let key = SessionKey {
        peer: router.ip,
        local: router.peer,
    };
    let mut rx = node.add(key, Config::default());
    assert_eq!(rx.borrow().state, State::Down, "a new session starts Down");

    // Up, as bfdd itself says, with our 300 ms timers.
    let up = node.wait_for(&mut rx, Duration::from_secs(30), SessionState::is_up);
    assert!(up.is_some(), "never Up with bfdd:\n{}", router.peers());
    let agreed = wait_until(Duration::from_secs(10), || {
        let peers = router.peers();
        peers.contains("Status: up")
            && peers.contains("Receive interval: 300ms\n\t\t\tTransmission interval: 300ms")
    });
    assert!(
        agreed,
        "bfdd is not Up with our timers:\n{}",
        router.peers()
    );
    rx.borrow_and_update();

    // A garbage datagram reaches our socket and is discarded as such; a valid AdminDown
    // that crossed a router (TTL 254) is dropped by the kernel's GTSM filter before it
    // reaches the socket (its drop counter moves, our user-space check sees nothing).
    // The session stays Up through both.
    let before = node.stats();
    let drops_before = port_drops(&node_ns, router.ip);
    router.send(b"not a BFD control packet at all", 255);
    router.send(&spoofed_admin_down(), 254);
    let counted = wait_until(Duration::from_secs(5), || {
        node.stats().malformed > before.malformed && port_drops(&node_ns, router.ip) > drops_before
    });
    assert!(
        counted,
        "not counted: before {before:?} ({drops_before} kernel drops), after {:?} ({} \
         kernel drops)",
        node.stats(),
        port_drops(&node_ns, router.ip)
    );
    assert_eq!(
        node.stats().bad_ttl,
        0,
        "the kernel filter let a TTL 254 packet in"
    );
    std::thread::sleep(2 * DETECTION);
    assert!(
        !rx.has_changed().unwrap() && rx.borrow().is_up(),
        "the garbage or the TTL 254 packet disturbed the session: {:?}",
        *rx.borrow()
    );
    assert!(router.peers().contains("Status: up"), "{}", router.peers());

    // The same AdminDown with TTL 255 is accepted: the check above could have failed.
    router.send(&spoofed_admin_down(), 255);
    let down = node.wait_for(&mut rx, Duration::from_secs(5), |s| !s.is_up());
    assert_eq!(
        down.map(|s| (s.state, s.diagnostic)),
        Some((State::Down, Diagnostic::NeighborSignaledSessionDown)),
        "a TTL 255 AdminDown from the peer's address must take the session down"
    );
    let up = node.wait_for(&mut rx, Duration::from_secs(30), SessionState::is_up);
    assert!(up.is_some(), "no Up again after the spoofed AdminDown");

    // bfdd's `shutdown`: its AdminDown takes us Down, and we see that the peer did it.
    router.shutdown(true);
    let down = node.wait_for(&mut rx, Duration::from_secs(10), |s| !s.is_up());
    let down = down.expect("bfdd's shutdown did not take us down");
    assert_eq!(
        (down.state, down.diagnostic, down.remote_state),
        (
            State::Down,
            Diagnostic::NeighborSignaledSessionDown,
            State::AdminDown
        )
    );
    assert!(down.peer_admin_down());
    router.shutdown(false);
    let up = node.wait_for(&mut rx, Duration::from_secs(30), SessionState::is_up);
    assert!(
        up.is_some(),
        "no Up after `no shutdown`:\n{}",
        router.peers()
    );
    std::thread::sleep(Duration::from_secs(1));
    rx.borrow_and_update();

    // bfdd killed: we detect it within the detection time (counted from bfdd's last
    // packet, which left at most one interval before the kill).
    let killed = Instant::now();
    router.bfdd.kill();
    let down = node.wait_for(&mut rx, DETECTION + SLACK + Duration::from_secs(2), |s| {
        !s.is_up()
    });
    let took = killed.elapsed();
    let down = down.expect("a killed bfdd was never detected");
    assert_eq!(
        (down.state, down.diagnostic),
        (State::Down, Diagnostic::ControlDetectionTimeExpired)
    );
    assert!(
        took <= DETECTION + SLACK,
        "detection took {took:?}, the detection time is {DETECTION:?}"
    );
    eprintln!(
        "bfd_session: {}, {prefix}: killed bfdd detected after {} ms (detection time {} ms); \
         counters {:?}",
        bfdd_version(),
        took.as_millis(),
        DETECTION.as_millis(),
        node.stats()
    );
}

#[test]
#[ignore = "needs the kernel lab"]
fn bfd_session_frr_bfdd_ipv4() {
    against_bfdd("bfs4", "10.0.0.1", "10.0.0.2", 24);
}

#[test]
#[ignore = "needs the kernel lab"]
fn bfd_session_frr_bfdd_ipv6() {
    against_bfdd("bfs6", "fd00:bfd::1", "fd00:bfd::2", 64);
}

/// Two of our managers, one passive: Up with each other; a faster profile on one side
/// (a poll sequence) keeps the session Up; removing a session tells the other side
/// (AdminDown); a manager that vanishes is detected.
#[test]
#[ignore = "needs the kernel lab"]
fn bfd_session_two_managers() {
    let (a_ns, b_ns) = (Netns::new("bfsa"), Netns::new("bfsb"));
    veth(&a_ns, "eth0", "10.1.0.1/24", &b_ns, "eth0", "10.1.0.2/24");
    let (ip_a, ip_b): (IpAddr, IpAddr) = ("10.1.0.1".parse().unwrap(), "10.1.0.2".parse().unwrap());
    let (mut a, b) = (Node::new(&a_ns), Node::new(&b_ns));
    let (key_a, key_b) = mirrored_keys(ip_a, ip_b);
    let passive = Config {
        passive: true,
        ..Config::default()
    };
    let mut rx_b = b.add(key_b, passive);
    let mut rx_a = a.add(key_a, Config::default());
    for (node, rx) in [(&a, &mut rx_a), (&b, &mut rx_b)] {
        let up = node.wait_for(rx, Duration::from_secs(20), SessionState::is_up);
        assert!(
            up.is_some(),
            "two managers never reached Up: {:?}",
            *rx.borrow()
        );
    }
    let duplicate = a.with(move |m| async move { m.add_session(key_a, Config::default(), None) });
    assert!(
        duplicate.is_err(),
        "a second session for the same addresses"
    );

    // 100 ms on A: a poll sequence each way, and the session stays Up throughout.
    rx_a.borrow_and_update();
    rx_b.borrow_and_update();
    let fast = Config::from_profile(Some(100), Some(100), Some(3), false);
    a.with(move |m| async move { m.reconfigure(key_a, fast).await })
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    for rx in [&rx_a, &rx_b] {
        assert!(
            !rx.has_changed().unwrap() && rx.borrow().is_up(),
            "reconfiguring disturbed the session: {:?}",
            *rx.borrow()
        );
    }
    let invalid = Config {
        detect_mult: 0,
        ..Config::default()
    };
    assert!(
        a.with(move |m| async move { m.reconfigure(key_a, invalid).await })
            .is_err()
    );

    // Removing A's session: A's watchers see AdminDown, B hears it was on purpose.
    a.with(move |m| async move { m.remove_session(key_a).await })
        .unwrap();
    let a_down = a.wait_for(&mut rx_a, Duration::from_secs(2), |s| !s.is_up());
    assert_eq!(
        a_down.map(|s| (s.state, s.diagnostic)),
        Some((State::AdminDown, Diagnostic::AdministrativelyDown))
    );
    let b_down = b.wait_for(&mut rx_b, Duration::from_secs(2), |s| !s.is_up());
    assert!(
        b_down.is_some_and(
            |s| s.peer_admin_down() && s.diagnostic == Diagnostic::NeighborSignaledSessionDown
        ),
        "B did not hear A's AdminDown: {b_down:?}"
    );
    assert!(a.manager.as_ref().unwrap().sessions().is_empty());

    // Added again (a new discriminator): Up again.
    let mut rx_a = a.add(key_a, Config::default());
    let up = a.wait_for(&mut rx_a, Duration::from_secs(20), SessionState::is_up);
    assert!(up.is_some(), "no Up after re-adding: {:?}", *rx_a.borrow());
    let up = b.wait_for(&mut rx_b, Duration::from_secs(20), SessionState::is_up);
    assert!(
        up.is_some(),
        "B not Up after A re-added: {:?}",
        *rx_b.borrow()
    );
    // The removed session's repeated AdminDowns (it lingers about 3 s) must have stopped
    // when the new one came: B would take them for news about the new session.
    rx_b.borrow_and_update();
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !rx_b.has_changed().unwrap() && rx_b.borrow().is_up(),
        "B's session was disturbed after A re-added its session: {:?}",
        *rx_b.borrow()
    );

    // A vanishes without a word: B detects it.
    let gone = Instant::now();
    a.kill();
    let down = b.wait_for(&mut rx_b, DETECTION + SLACK + Duration::from_secs(2), |s| {
        !s.is_up()
    });
    let took = gone.elapsed();
    assert_eq!(
        down.map(|s| (s.state, s.diagnostic)),
        Some((State::Down, Diagnostic::ControlDetectionTimeExpired))
    );
    assert!(took <= DETECTION + SLACK, "detection took {took:?}");
    eprintln!(
        "bfd_session: two managers: a vanished manager detected after {} ms; B's counters {:?}",
        took.as_millis(),
        b.stats()
    );
}

/// An IPv6 link-local pair needs its interface (the scope of both addresses, and
/// `SO_BINDTODEVICE`): two managers reach Up over `fe80::` addresses on eth0, and a
/// session without its interface is refused.
#[test]
#[ignore = "needs the kernel lab"]
fn bfd_session_ipv6_link_local() {
    let (a_ns, b_ns) = (Netns::new("bfsl"), Netns::new("bfsl"));
    veth(
        &a_ns,
        "eth0",
        "fd00:bf1::1/64",
        &b_ns,
        "eth0",
        "fd00:bf1::2/64",
    );
    a_ns.sh("ip addr add fe80::a/64 dev eth0 nodad");
    b_ns.sh("ip addr add fe80::b/64 dev eth0 nodad");
    let (ll_a, ll_b): (IpAddr, IpAddr) = ("fe80::a".parse().unwrap(), "fe80::b".parse().unwrap());
    let (a, b) = (Node::new(&a_ns), Node::new(&b_ns));
    let (key_a, key_b) = mirrored_keys(ll_a, ll_b);
    let refused = a.with(move |m| async move { m.add_session(key_a, Config::default(), None) });
    assert!(refused.is_err(), "a link-local session without interface");
    let mut rx_a = a
        .with(move |m| async move { m.add_session(key_a, Config::default(), Some("eth0")) })
        .unwrap();
    let mut rx_b = b
        .with(move |m| async move { m.add_session(key_b, Config::default(), Some("eth0")) })
        .unwrap();
    for (node, rx) in [(&a, &mut rx_a), (&b, &mut rx_b)] {
        let up = node.wait_for(rx, Duration::from_secs(20), SessionState::is_up);
        assert!(up.is_some(), "no Up over link-local: {:?}", *rx.borrow());
    }
    assert_eq!(a.stats().no_session, 0, "{:?}", a.stats());

    // A shuts down: its sessions end with AdminDown, which B hears.
    a.with(|m| async move { m.shutdown().await });
    assert!(a.manager.as_ref().unwrap().sessions().is_empty());
    let down = b.wait_for(&mut rx_b, Duration::from_secs(3), |s| !s.is_up());
    assert!(
        down.is_some_and(|s| s.peer_admin_down()),
        "B did not hear A's shutdown: {down:?}"
    );
}
