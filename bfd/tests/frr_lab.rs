//! Our [`Session`] against FRR's bfdd, in the kernel lab: a router namespace runs bfdd
//! with one single-hop peer, a node namespace runs a small tokio UDP loop (port 3784 in,
//! TTL / hop limit 255 out, source port 49152) that drives our session. The session must
//! reach Up with bfdd (as bfdd's own `show bfd peers` says), both poll sequences must
//! complete, and once the loop goes silent bfdd must declare the peer down within the
//! detection time (measured on the wire: our last packet to bfdd's first Down).
//!
//! The raw packets bfdd sent are the byte fixtures of `tests/fixtures.rs`: a fixture file
//! that is missing is written from the IPv4 run (delete them to recapture).

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bfd_proto::packet::{CONTROL_PORT, SOURCE_PORTS, TTL};
use bfd_proto::{Action, Config, Diagnostic, Flags, Packet, Session, State};
use netns_lab::frr::{Bfdd, bfdd_version};
use netns_lab::{Netns, veth, wait_until};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

const OUR_DISCRIMINATOR: u32 = 0x0bfd_0001;
/// bfdd's detection time for us: our detect multiplier × max(its 300 ms receive interval,
/// our 300 ms transmit interval).
const DETECTION: Duration = Duration::from_millis(900);

enum Cmd {
    /// Drop every packet the session asks to send from now on (the session runs on).
    Silence,
    /// Send again.
    Resume,
    Stop,
}

#[derive(Default)]
struct Log {
    /// Raw payloads from bfdd, with their arrival time.
    received: Vec<(Instant, Vec<u8>)>,
    sent: Vec<(Instant, Packet)>,
    changes: Vec<(Instant, State, State, Diagnostic)>,
    discarded: Vec<String>,
}

impl Log {
    /// The first packet from bfdd after `after` that `pick` accepts, raw and decoded.
    fn first(
        &self,
        after: Option<Instant>,
        pick: impl Fn(&Packet) -> bool,
    ) -> Option<(Instant, Vec<u8>, Packet)> {
        self.received.iter().find_map(|(t, bytes)| {
            if after.is_some_and(|a| *t <= a) {
                return None;
            }
            let p = Packet::decode(bytes).ok()?;
            pick(&p).then(|| (*t, bytes.clone(), p))
        })
    }

    fn reached(&self, to: State, diag: Option<Diagnostic>, after: Option<Instant>) -> bool {
        self.changes
            .iter()
            .any(|c| c.2 == to && diag.is_none_or(|d| c.3 == d) && after.is_none_or(|a| c.0 > a))
    }
}

/// bfdd in a router namespace, peered with a node namespace over a veth.
struct Lab {
    bfdd: Bfdd,
    router: Netns,
    node: Netns,
    router_ip: IpAddr,
    node_ip: IpAddr,
}

impl Lab {
    fn new(prefix: &str, router_ip: &str, node_ip: &str, plen: u8) -> Lab {
        let router = Netns::new(&format!("{prefix}-rt"));
        let node = Netns::new(&format!("{prefix}-nd"));
        veth(
            &router,
            "eth0",
            &format!("{router_ip}/{plen}"),
            &node,
            "eth0",
            &format!("{node_ip}/{plen}"),
        );
        let bfdd = Bfdd::start(&router, "bfd-lab", router_ip, node_ip);
        Lab {
            bfdd,
            router,
            node,
            router_ip: router_ip.parse().unwrap(),
            node_ip: node_ip.parse().unwrap(),
        }
    }

    fn vtysh(&self, cmds: &[&str]) -> String {
        self.bfdd.vtysh(&self.router, cmds)
    }

    fn peers(&self) -> String {
        self.vtysh(&["show bfd peers"])
    }

    /// Starts the session loop in the node namespace.
    fn drive(&self, config: Config, wait_for_bfdd: bool) -> Driver {
        let log = Arc::new(Mutex::new(Log::default()));
        let (cmds, cmd_rx) = mpsc::unbounded_channel();
        let (loop_log, local, peer) = (log.clone(), self.node_ip, self.router_ip);
        let thread = self
            .node
            .thread_async(move || drive(loop_log, cmd_rx, local, peer, config, wait_for_bfdd));
        Driver {
            log,
            cmds,
            thread: Some(thread),
        }
    }

    /// Waits until bfdd and our session are both Up.
    fn wait_up(&self, driver: &Driver, after: Option<Instant>) {
        let up = wait_until(Duration::from_secs(30), || {
            driver.log.lock().unwrap().reached(State::Up, None, after)
                && self.peers().contains("Status: up")
        });
        assert!(up, "no Up with bfdd:\n{}", self.peers());
    }

    /// Silences our loop and measures how long after our last packet bfdd's Down
    /// (diagnostic 1) arrives; asserts `show bfd peers` agrees.
    fn measure_detection(&self, driver: &Driver) -> Duration {
        driver.cmds.send(Cmd::Silence).unwrap();
        let silenced = Instant::now();
        let went_down = wait_until(Duration::from_secs(10), || {
            driver
                .log
                .lock()
                .unwrap()
                .first(Some(silenced), |p| {
                    p.diagnostic == Diagnostic::ControlDetectionTimeExpired
                })
                .is_some()
                && self.peers().contains("Status: down")
        });
        let peers = self.peers();
        assert!(
            went_down,
            "bfdd never declared the silent peer down:\n{peers}"
        );
        assert!(
            peers.contains("Diagnostics: control detection time expired"),
            "{peers}"
        );
        let log = driver.log.lock().unwrap();
        let last_sent = log
            .sent
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| *t <= silenced)
            .max()
            .unwrap();
        let (down_at, _, down) = log
            .first(Some(silenced), |p| {
                p.state == State::Down && p.diagnostic == Diagnostic::ControlDetectionTimeExpired
            })
            .unwrap();
        assert_eq!(down.your_discriminator, 0, "bfdd forgot us");
        let took = down_at - last_sent;
        // bfdd's timer runs from our last packet's arrival and its Down goes out at once.
        // The upper margin is for the emulated VM's scheduling, not protocol slack; the
        // lower bound shows the timer did run its three intervals.
        assert!(
            took >= DETECTION * 2 / 3 && took <= DETECTION + Duration::from_millis(2000),
            "bfdd's detection took {took:?}, expected about {DETECTION:?}"
        );
        took
    }
}

struct Driver {
    log: Arc<Mutex<Log>>,
    cmds: mpsc::UnboundedSender<Cmd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Driver {
    fn stop(&mut self) {
        let _ = self.cmds.send(Cmd::Stop);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

async fn drive(
    log: Arc<Mutex<Log>>,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    local: IpAddr,
    peer: IpAddr,
    config: Config,
    wait_for_bfdd: bool,
) {
    let rx = UdpSocket::bind((local, CONTROL_PORT))
        .await
        .expect("bind the BFD control port");
    // RFC 5881 §4/§5: the source port is one of 49152-65535, and every packet leaves
    // with TTL (hop limit) 255 so the receiver's GTSM check passes.
    let tx = std::net::UdpSocket::bind((local, *SOURCE_PORTS.start()))
        .expect("bind the BFD source port");
    let tx = socket2::Socket::from(tx);
    if local.is_ipv6() {
        tx.set_unicast_hops_v6(TTL.into()).unwrap();
    } else {
        tx.set_ttl_v4(TTL.into()).unwrap();
    }
    tx.set_nonblocking(true).unwrap();
    let tx = UdpSocket::from_std(tx.into()).unwrap();
    let peer = SocketAddr::new(peer, CONTROL_PORT);
    let mut buf = [0u8; 1500];

    if wait_for_bfdd {
        // bfdd's first packet (Down, Your Discriminator 0) is recorded before the
        // session exists: then our first Down reaches a bfdd that is still Down, and
        // bfdd answers with Init, so the capture holds each of bfdd's states.
        let (n, _) = rx.recv_from(&mut buf).await.unwrap();
        log.lock()
            .unwrap()
            .received
            .push((Instant::now(), buf[..n].to_vec()));
    }

    let discr = NonZeroU32::new(OUR_DISCRIMINATOR).unwrap();
    let mut session = Session::new(config, discr, Instant::now()).unwrap();
    let mut silent = false;
    loop {
        let deadline = session.next_deadline();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        let actions = tokio::select! {
            got = rx.recv_from(&mut buf) => {
                let (n, from) = got.unwrap();
                let now = Instant::now();
                let mut log = log.lock().unwrap();
                log.received.push((now, buf[..n].to_vec()));
                match Packet::decode(&buf[..n]).and_then(|p| session.receive(&p, now)) {
                    Ok(actions) => actions,
                    Err(e) => {
                        log.discarded.push(format!("from {from}: {e}"));
                        Vec::new()
                    }
                }
            }
            () = sleep => session.poll_timers(Instant::now()),
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Silence) => {
                    silent = true;
                    Vec::new()
                }
                Some(Cmd::Resume) => {
                    silent = false;
                    Vec::new()
                }
                Some(Cmd::Stop) | None => break,
            },
        };
        for action in actions {
            match action {
                Action::Send(packet) if !silent => {
                    tx.send_to(&packet.encode(), peer).await.unwrap();
                    log.lock().unwrap().sent.push((Instant::now(), packet));
                }
                Action::Send(_) => {}
                Action::StateChanged { from, to, diag } => {
                    log.lock()
                        .unwrap()
                        .changes
                        .push((Instant::now(), from, to, diag))
                }
            }
        }
    }
}

/// Every packet bfdd sent parses and re-encodes to its exact bytes, and our session
/// discarded none.
fn assert_all_reencode(log: &Log) {
    assert!(
        log.discarded.is_empty(),
        "our session discarded bfdd's packets: {:?}",
        log.discarded
    );
    for (_, bytes) in &log.received {
        let packet = Packet::decode(bytes).unwrap_or_else(|e| panic!("{e}: {bytes:02x?}"));
        assert_eq!(&packet.encode(), bytes);
    }
}

#[test]
#[ignore = "needs the kernel lab"]
fn frr_bfdd_ipv4_up_poll_detection_and_admin_down() {
    let lab = Lab::new("bfd4", "10.0.0.1", "10.0.0.2", 24);
    let mut driver = lab.drive(Config::default(), true);
    lab.wait_up(&driver, None);
    let peers = lab.peers();
    assert!(
        peers.contains(&format!("Remote ID: {OUR_DISCRIMINATOR}")),
        "bfdd does not know our discriminator:\n{peers}"
    );
    // Both ends advertise 1 s while not Up (RFC 5880 §6.8.3) and move to 300 ms with a
    // poll sequence once Up: bfdd's Poll (which we answer) and its Final (to ours).
    let polled = wait_until(Duration::from_secs(10), || {
        let log = driver.log.lock().unwrap();
        log.first(None, |p| p.state == State::Up && p.poll())
            .is_some()
            && log
                .first(None, |p| p.state == State::Up && p.final_bit())
                .is_some()
    });
    assert!(polled, "no poll sequence each way:\n{peers}");
    std::thread::sleep(Duration::from_secs(2));
    let steady = lab.peers();
    assert!(steady.contains("Status: up"), "{steady}");
    assert!(
        steady.contains(
            "Remote timers:\n\t\t\tDetect-multiplier: 3\n\t\t\tReceive interval: 300ms\n\t\t\t\
             Transmission interval: 300ms"
        ),
        "bfdd did not take our 300 ms timers:\n{steady}"
    );

    let detection = lab.measure_detection(&driver);

    // Talking again: the handshake runs anew.
    let resumed = Instant::now();
    driver.cmds.send(Cmd::Resume).unwrap();
    lab.wait_up(&driver, Some(resumed));

    // `shutdown` on bfdd's peer: it sends AdminDown (diag 7), and we go Down saying the
    // neighbour signalled it, and stay Down (no handshake with an AdminDown peer).
    let shut = Instant::now();
    lab.vtysh(&[
        "configure terminal",
        "bfd",
        &format!("peer {} local-address {}", lab.node_ip, lab.router_ip),
        "shutdown",
    ]);
    let down = wait_until(Duration::from_secs(10), || {
        driver.log.lock().unwrap().reached(
            State::Down,
            Some(Diagnostic::NeighborSignaledSessionDown),
            Some(shut),
        )
    });
    assert!(
        down,
        "bfdd's shutdown did not take us down:\n{}",
        lab.peers()
    );
    std::thread::sleep(Duration::from_secs(3));
    driver.stop();

    let log = driver.log.lock().unwrap();
    let after_shut: Vec<_> = log.changes.iter().filter(|c| c.0 > shut).collect();
    assert_eq!(after_shut.len(), 1, "{after_shut:?}");
    eprintln!(
        "bfd lab: {}, IPv4: bfdd's Down (diag 1) on the wire {} ms after our last packet \
         (detection time {} ms)",
        bfdd_version(),
        detection.as_millis(),
        DETECTION.as_millis()
    );
    assert_all_reencode(&log);

    let no_pf = |p: &Packet| !p.flags.intersects(Flags::POLL | Flags::FINAL);
    let fixtures = [
        (
            "down",
            log.first(None, |p| {
                p.state == State::Down && p.your_discriminator == 0
            }),
        ),
        ("init", log.first(None, |p| p.state == State::Init)),
        ("up", log.first(None, |p| p.state == State::Up && no_pf(p))),
        (
            "up-poll",
            log.first(None, |p| p.state == State::Up && p.poll()),
        ),
        (
            "up-final",
            log.first(None, |p| p.state == State::Up && p.final_bit()),
        ),
        (
            "down-detect-expired",
            log.first(None, |p| {
                p.state == State::Down && p.diagnostic == Diagnostic::ControlDetectionTimeExpired
            }),
        ),
        (
            "admin-down",
            log.first(None, |p| p.state == State::AdminDown),
        ),
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (name, found) in fixtures {
        let (_, bytes, packet) = found.unwrap_or_else(|| panic!("bfdd never sent a {name} packet"));
        eprintln!("bfd lab: {name}: {packet:?}");
        let path = dir.join(format!("frr-bfdd-{name}.bin"));
        if !path.exists() {
            std::fs::write(&path, &bytes).unwrap();
        }
    }
}

#[test]
#[ignore = "needs the kernel lab"]
fn frr_bfdd_ipv6_with_our_session_passive() {
    let lab = Lab::new("bfd6", "fd00:bfd::1", "fd00:bfd::2", 64);
    let passive = Config {
        passive: true,
        ..Config::default()
    };
    let mut driver = lab.drive(passive, false);
    lab.wait_up(&driver, None);
    let detection = lab.measure_detection(&driver);
    driver.stop();
    let log = driver.log.lock().unwrap();
    let first_heard = log.received.first().unwrap().0;
    let first_sent = log.sent.first().unwrap().0;
    assert!(
        first_sent >= first_heard,
        "a passive session spoke before bfdd did"
    );
    eprintln!(
        "bfd lab: {}, IPv6, passive: bfdd's Down (diag 1) on the wire {} ms after our last \
         packet (detection time {} ms)",
        bfdd_version(),
        detection.as_millis(),
        DETECTION.as_millis()
    );
    assert_all_reencode(&log);
}
