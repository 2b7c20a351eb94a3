//! Our [`Session`] against FRR's bfdd, in the kernel lab: a router namespace runs bfdd
//! with one single-hop peer, a node namespace runs a small tokio UDP loop (port 3784 in,
//! TTL 255 out) that drives our session. The session must reach Up with bfdd (as bfdd's
//! own `show bfd peers` says), both poll sequences must complete, and once the loop goes
//! silent bfdd must declare the peer down within the detection time.
//!
//! The raw packets bfdd sent are the byte fixtures of `tests/fixtures.rs`: a fixture file
//! that is missing is written from this run (delete them to recapture).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bfd_proto::{Action, Config, Diagnostic, Flags, Packet, Session, State};
use netns_lab::{Netns, host_sh, veth, wait_until};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

const ROUTER: &str = "10.0.0.1";
const NODE: &str = "10.0.0.2";
const OUR_DISCRIMINATOR: u32 = 0x0bfd_0001;

enum Cmd {
    /// Drop every packet the session asks to send from now on (the session runs on).
    Silence,
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
    fn decoded(&self) -> Vec<(Instant, Packet)> {
        self.received
            .iter()
            .filter_map(|(t, b)| Some((*t, Packet::decode(b).ok()?)))
            .collect()
    }
}

/// A tmpfs for bfdd's Unix sockets (the lab's shared filesystem cannot hold them),
/// unmounted on drop.
struct RunDir(PathBuf);

impl RunDir {
    fn new() -> RunDir {
        let dir = PathBuf::from(format!("/run/bfd-lab-{}", std::process::id()));
        host_sh(&format!(
            "mkdir -p {0} && mount -t tmpfs bfdlab {0} && chown frr:frr {0}",
            dir.display()
        ));
        RunDir(dir)
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).output();
    }
}

fn vtysh(ns: &Netns, dir: &Path, cmd: &str) -> String {
    ns.sh(&format!(
        "vtysh --vty_socket {} -d bfdd -c '{cmd}'",
        dir.display()
    ))
}

async fn drive(log: Arc<Mutex<Log>>, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
    let rx = UdpSocket::bind((NODE, bfd_proto::packet::CONTROL_PORT))
        .await
        .expect("bind the BFD control port");
    // RFC 5881 §4: the source port is one of 49152-65535, and every packet leaves with
    // TTL 255 so the receiver's GTSM check passes.
    let tx = UdpSocket::bind((NODE, *bfd_proto::packet::SOURCE_PORTS.start()))
        .await
        .expect("bind the BFD source port");
    tx.set_ttl(bfd_proto::packet::TTL.into()).unwrap();
    let peer: SocketAddr = format!("{ROUTER}:3784").parse().unwrap();
    let mut buf = [0u8; 1500];

    // bfdd's first packet (Down, Your Discriminator 0) is recorded before the session
    // exists: then our first Down reaches a bfdd that is still Down, and bfdd answers
    // with Init, so the capture holds each of bfdd's states.
    let (n, _) = rx.recv_from(&mut buf).await.unwrap();
    log.lock()
        .unwrap()
        .received
        .push((Instant::now(), buf[..n].to_vec()));

    let discr = NonZeroU32::new(OUR_DISCRIMINATOR).unwrap();
    let mut session = Session::new(Config::default(), discr, Instant::now()).unwrap();
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

/// The first packet from bfdd that `pick` accepts, as raw bytes and decoded.
fn first(log: &Log, pick: impl Fn(&Packet) -> bool) -> Option<(Instant, Vec<u8>, Packet)> {
    log.received.iter().find_map(|(t, bytes)| {
        let p = Packet::decode(bytes).ok()?;
        pick(&p).then(|| (*t, bytes.clone(), p))
    })
}

#[test]
#[ignore = "needs the kernel lab"]
fn frr_bfdd_session_up_poll_and_detection() {
    let version = host_sh("/usr/lib/frr/bfdd --version | head -n1")
        .trim()
        .to_string();
    let router = Netns::new("bfd-rt");
    let node = Netns::new("bfd-nd");
    veth(
        &router,
        "eth0",
        &format!("{ROUTER}/24"),
        &node,
        "eth0",
        &format!("{NODE}/24"),
    );
    let dir = RunDir::new();
    let d = dir.0.display();
    // No `interface` on the peer: bfdd learns interfaces from zebra, which this lab does
    // not run; a single-hop peer keyed by its addresses needs none.
    std::fs::write(
        dir.0.join("bfdd.conf"),
        format!(
            "bfd\n peer {NODE} local-address {ROUTER}\n  detect-multiplier 3\n  \
             receive-interval 300\n  transmit-interval 300\n !\n!\n"
        ),
    )
    .unwrap();
    let bfdd = router.spawn(&format!(
        "/usr/lib/frr/bfdd -f {d}/bfdd.conf --vty_socket {d} -z {d}/zserv.api -i {d}/bfdd.pid \
         --bfdctl {d}/bfdd.sock -u frr -g frr --log stdout --log-level debug"
    ));

    let log = Arc::new(Mutex::new(Log::default()));
    let (cmds, cmd_rx) = mpsc::unbounded_channel();
    let loop_log = log.clone();
    let driver = node.thread(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(drive(loop_log, cmd_rx))
    });

    let up = wait_until(Duration::from_secs(30), || {
        vtysh(&router, &dir.0, "show bfd peers").contains("Status: up")
            && log.lock().unwrap().changes.iter().any(|c| c.2 == State::Up)
    });
    let peers = vtysh(&router, &dir.0, "show bfd peers");
    assert!(up, "no Up with bfdd:\n{peers}\n{}", bfdd.finish());
    assert!(
        peers.contains(&format!("Remote ID: {OUR_DISCRIMINATOR}")),
        "bfdd does not know our discriminator:\n{peers}"
    );
    // Both ends advertise 1 s while not Up (RFC 5880 §6.8.3) and move to 300 ms with a
    // poll sequence once Up: bfdd's Poll (which we answer) and its Final (to ours).
    let polled = wait_until(Duration::from_secs(10), || {
        let log = log.lock().unwrap();
        first(&log, |p| p.state == State::Up && p.poll()).is_some()
            && first(&log, |p| p.state == State::Up && p.final_bit()).is_some()
    });
    assert!(polled, "no poll sequence each way:\n{peers}");
    std::thread::sleep(Duration::from_secs(2));
    let steady = vtysh(&router, &dir.0, "show bfd peers");
    assert!(steady.contains("Status: up"), "{steady}");
    assert!(
        steady.contains("Remote timers:\n\t\t\tDetect-multiplier: 3\n\t\t\tReceive interval: 300ms\n\t\t\tTransmission interval: 300ms"),
        "bfdd did not take our 300 ms timers:\n{steady}"
    );

    // Silence: bfdd must declare the peer down within 3 × 300 ms of our last packet.
    cmds.send(Cmd::Silence).unwrap();
    let silenced = Instant::now();
    let mut vtysh_down = None;
    let went_down = wait_until(Duration::from_secs(10), || {
        let down = vtysh(&router, &dir.0, "show bfd peers").contains("Status: down");
        if down && vtysh_down.is_none() {
            vtysh_down = Some(Instant::now());
        }
        down && {
            let log = log.lock().unwrap();
            log.decoded().iter().any(|(t, p)| {
                *t > silenced && p.diagnostic == Diagnostic::ControlDetectionTimeExpired
            })
        }
    });
    let final_peers = vtysh(&router, &dir.0, "show bfd peers");
    cmds.send(Cmd::Stop).unwrap();
    driver.join().unwrap();
    let bfdd_out = bfdd.finish();
    assert!(
        went_down,
        "bfdd never declared the silent peer down:\n{final_peers}\n{bfdd_out}"
    );
    assert!(
        final_peers.contains("Diagnostics: control detection time expired"),
        "{final_peers}"
    );

    let log = log.lock().unwrap();
    let last_sent = log
        .sent
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| *t <= silenced)
        .max()
        .unwrap();
    let (down_at, _, _) = first(&log, |p| {
        p.state == State::Down && p.diagnostic == Diagnostic::ControlDetectionTimeExpired
    })
    .unwrap();
    let wire = down_at - last_sent;
    let shown = vtysh_down.unwrap() - last_sent;
    eprintln!(
        "bfd lab: {version}: bfdd's Down (diag 1) on the wire {} ms after our last packet, \
         `show bfd peers` down after {} ms (detection time 900 ms); discarded {:?}",
        wire.as_millis(),
        shown.as_millis(),
        log.discarded
    );
    // bfdd's detection timer runs from our last packet's arrival; its Down goes out at
    // once. The margin covers the emulated VM's scheduling, not a protocol slack.
    assert!(
        wire >= Duration::from_millis(600) && wire <= Duration::from_millis(900 + 300),
        "bfdd's detection took {wire:?}, expected about 900 ms"
    );
    assert!(
        log.discarded.is_empty(),
        "our session discarded bfdd's packets: {:?}",
        log.discarded
    );

    // Every packet bfdd sent re-encodes to its exact bytes.
    for (_, bytes) in &log.received {
        let packet = Packet::decode(bytes).unwrap_or_else(|e| panic!("{e}: {bytes:02x?}"));
        assert_eq!(&packet.encode(), bytes);
    }

    let no_pf = |p: &Packet| !p.flags.intersects(Flags::POLL | Flags::FINAL);
    let fixtures = [
        (
            "down",
            first(&log, |p| {
                p.state == State::Down && p.your_discriminator == 0
            }),
        ),
        ("init", first(&log, |p| p.state == State::Init)),
        ("up", first(&log, |p| p.state == State::Up && no_pf(p))),
        ("up-poll", first(&log, |p| p.state == State::Up && p.poll())),
        (
            "up-final",
            first(&log, |p| p.state == State::Up && p.final_bit()),
        ),
        (
            "down-detect-expired",
            first(&log, |p| {
                p.state == State::Down && p.diagnostic == Diagnostic::ControlDetectionTimeExpired
            }),
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
