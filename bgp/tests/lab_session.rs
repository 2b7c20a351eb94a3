//! The state machine against a real router: a tiny tokio loop in this test carries out
//! the `Session`'s actions on a real TCP connection to BIRD in another network
//! namespace, announces one prefix once Established, and BIRD shows the route (with our
//! communities) and installs it in its namespace's kernel FIB; keepalives hold the
//! session past the hold time; on stop our Cease NOTIFICATION makes BIRD drop the route.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bgp_proto::packet::attribute::{Community, LargeCommunity};
use bgp_proto::packet::update::{Announcement, Update};
use bgp_proto::session::{
    Action, Config, Event, GracefulRestartConfig, PeerAs, Session, State, TimerKind,
};
use bgp_proto::{Family, Message};
use bytes::BytesMut;
use netns_lab::{Netns, veth, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFIX: &str = "198.51.100.7/32";

/// Carries out the FSM's actions on a real socket.
struct Driver {
    fsm: Session,
    timers: HashMap<TimerKind, Instant>,
    stream: Option<TcpStream>,
    buf: BytesMut,
    up: Arc<AtomicBool>,
    stopped: bool,
}

impl Driver {
    /// Feeds one event and carries out what follows, recursively for events the
    /// actions produce (a connect's outcome).
    async fn handle(&mut self, event: Event) {
        let mut pending = vec![event];
        while let Some(event) = pending.pop() {
            for action in self.fsm.handle(event, Instant::now()) {
                match action {
                    Action::Connect => {
                        let attempt = tokio::time::timeout(
                            Duration::from_secs(3),
                            TcpStream::connect("10.0.1.1:179"),
                        );
                        match attempt.await {
                            Ok(Ok(s)) => {
                                self.stream = Some(s);
                                pending.push(Event::TcpConnected);
                            }
                            _ => pending.push(Event::TcpFailed),
                        }
                    }
                    Action::SendMessage(m) => self.send(&m).await,
                    Action::CloseTcp => {
                        self.stream = None;
                        self.buf.clear();
                    }
                    Action::ArmTimer { kind, deadline } => {
                        self.timers.insert(kind, deadline);
                    }
                    Action::CancelTimer(kind) => {
                        self.timers.remove(&kind);
                    }
                    Action::SessionUp(n) => {
                        let a = Announcement {
                            prefixes: vec![PREFIX.parse().unwrap()],
                            next_hop: "10.0.1.2".parse().unwrap(),
                            link_local: None,
                            as_path: vec![64512],
                            local_pref: None,
                            communities: vec![Community::new(64512, 7)],
                            large_communities: vec![LargeCommunity {
                                global: 64512,
                                local1: 1,
                                local2: 1,
                            }],
                        };
                        self.send(&Message::Update(Update::announce(&a, &n.caps)))
                            .await;
                        if n.graceful_restart {
                            self.send(&Message::Update(Update::end_of_rib(Family::IPV4_UNICAST)))
                                .await;
                        }
                        self.up.store(true, Ordering::SeqCst);
                    }
                    Action::SessionDown { .. } => self.up.store(false, Ordering::SeqCst),
                }
            }
        }
    }

    async fn send(&mut self, m: &Message) {
        let mut out = BytesMut::new();
        bgp_proto::encode(m, &self.fsm.caps(), &mut out).unwrap();
        if let Some(s) = &mut self.stream {
            // A failed write shows up as a failed read next.
            let _ = s.write_all(&out).await;
        }
    }

    async fn run(mut self, stop: Arc<AtomicBool>) -> Session {
        self.handle(Event::ManualStart).await;
        loop {
            if stop.load(Ordering::SeqCst) && !self.stopped {
                self.stopped = true;
                self.handle(Event::ManualStop).await;
            }
            if self.stopped && self.fsm.state() == State::Idle {
                return self.fsm;
            }
            let tick = Instant::now() + Duration::from_millis(100);
            let next = self
                .timers
                .values()
                .copied()
                .min()
                .unwrap_or(tick)
                .min(tick);
            let deadline = tokio::time::Instant::from_std(next);
            let mut chunk = [0u8; 4096];
            let read = match self.stream.as_mut() {
                Some(s) => tokio::time::timeout_at(deadline, s.read(&mut chunk))
                    .await
                    .ok(),
                None => {
                    tokio::time::sleep_until(deadline).await;
                    None
                }
            };
            match read {
                Some(Ok(0)) | Some(Err(_)) => {
                    self.stream = None;
                    self.handle(Event::TcpFailed).await;
                }
                Some(Ok(n)) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    // One message at a time: the OPEN changes how the next decodes.
                    loop {
                        let mut buf = std::mem::take(&mut self.buf);
                        let decoded = bgp_proto::decode(&mut buf, &self.fsm.caps());
                        self.buf = buf;
                        match decoded {
                            Ok(Some(m)) => self.handle(Event::MessageReceived(m)).await,
                            Ok(None) => break,
                            Err(e) => {
                                self.handle(Event::DecodeFailed(e)).await;
                                break;
                            }
                        }
                    }
                }
                None => {}
            }
            let now = Instant::now();
            let due: Vec<TimerKind> = self
                .timers
                .iter()
                .filter(|(_, t)| **t <= now)
                .map(|(k, _)| *k)
                .collect();
            for kind in due {
                self.timers.remove(&kind);
                self.handle(Event::TimerExpired(kind)).await;
            }
        }
    }
}

#[test]
#[ignore = "needs the kernel lab"]
fn fsm_reaches_established_with_bird_and_announces_a_prefix() {
    let r = Netns::new("bgpfsmr");
    let n = Netns::new("bgpfsmn");
    veth(&r, "r0", "10.0.1.1/24", &n, "n0", "10.0.1.2/24");
    let dir = PathBuf::from(format!("/run/lab/bgp-fsm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bird.conf"),
        r#"
router id 10.0.1.1;
protocol device { }
protocol kernel { ipv4 { export all; }; }
protocol bgp node {
  local 10.0.1.1 as 64513;
  neighbor 10.0.1.2 as 64512;
  passive on;
  graceful restart on;
  ipv4 { import all; export none; };
}
"#,
    )
    .unwrap();
    let ctl = dir.join("bird.ctl");
    let bird = r.spawn(&format!(
        "bird -f -c {}/bird.conf -s {}",
        dir.display(),
        ctl.display()
    ));
    let birdc = |cmd: &str| r.exec(&format!("birdc -s {} {cmd}", ctl.display()));
    assert!(wait_until(Duration::from_secs(10), || birdc("show status")
        .status
        .success()));

    let up = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let driver = Driver {
        fsm: Session::new(Config {
            local_as: 64512,
            peer_as: PeerAs::Exact(64513),
            router_id: Ipv4Addr::new(10, 0, 1, 2),
            // Short, so that keepalives must work for the session to last the test.
            hold_time: 6,
            keepalive_time: None,
            connect_retry: Duration::from_secs(1),
            passive: false,
            families: vec![Family::IPV4_UNICAST],
            graceful_restart: Some(GracefulRestartConfig {
                restart_time: 120,
                restarting: false,
                forwarding: true,
            }),
        }),
        timers: HashMap::new(),
        stream: None,
        buf: BytesMut::new(),
        up: up.clone(),
        stopped: false,
    };
    let stop2 = stop.clone();
    let handle = n.thread_async(move || driver.run(stop2));

    let show = |cmd: &str| String::from_utf8_lossy(&birdc(cmd).stdout).into_owned();
    let routed = wait_until(Duration::from_secs(30), || {
        show(&format!("show route {PREFIX}")).contains(PREFIX)
    });
    assert!(
        routed,
        "BIRD never learned {PREFIX}: {}",
        show("show protocols all node")
    );
    assert!(up.load(Ordering::SeqCst));
    let all = show(&format!("show route {PREFIX} all"));
    assert!(all.contains("(64512,7)"), "{all}");
    assert!(all.contains("(64512, 1, 1)"), "{all}");
    assert!(all.contains("BGP.as_path: 64512"), "{all}");
    // BIRD put it in its kernel FIB, via us.
    let fib = wait_until(Duration::from_secs(10), || {
        r.sh("ip route show 198.51.100.7").contains("via 10.0.1.2")
    });
    assert!(fib, "{}", r.sh("ip route"));

    // Twice the hold time: only keepalives keep it up.
    std::thread::sleep(Duration::from_secs(13));
    let protocols = show("show protocols all node");
    assert!(protocols.contains("Established"), "{protocols}");
    assert!(up.load(Ordering::SeqCst));

    // Stop: our Cease makes BIRD drop the route (no graceful restart on a NOTIFICATION).
    stop.store(true, Ordering::SeqCst);
    let fsm = handle.join().unwrap();
    assert_eq!(fsm.state(), State::Idle);
    let gone = wait_until(Duration::from_secs(10), || {
        !show(&format!("show route {PREFIX}")).contains(PREFIX)
    });
    let log = bird.finish();
    assert!(gone, "BIRD kept {PREFIX} after our Cease\n{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
