//! Captures what real BGP speakers send: BIRD, FRR's bgpd and GoBGP each run in a
//! network namespace and open three sessions to a minimal peer written here (it answers
//! OPEN and KEEPALIVE with this crate's codec and records every message received raw):
//!
//! - `ibgp-v4`: iBGP over IPv4 with a 4-octet AS on both sides (LOCAL_PREF, communities,
//!   large communities, empty AS_PATH);
//! - `ebgp-v6`: eBGP over IPv6, IPv6 unicast only (MP_REACH_NLRI, MP End-of-RIB);
//! - `ebgp-v4-as2`: eBGP over IPv4 to a peer without the 4-octet AS capability (the
//!   router's 4-octet AS becomes AS_TRANS in OPEN and AS_PATH, with AS4_PATH beside).
//!
//! Each router originates the same routes, then withdraws one per family, then is shut
//! down (NOTIFICATION). The test checks what it saw and writes every message to
//! `target/bgp-captures/<router>/<session>/`; `tests/fixtures/` holds a committed copy
//! that `tests/fixtures.rs` checks on any host (see `tests/fixtures/README.md`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bgp_proto::packet::attribute::{Community, LargeCommunity};
use bgp_proto::packet::open::{
    Capability, GracefulRestart, GracefulRestartFamily, Open, OptionalParameter,
};
use bgp_proto::{Family, Message, SessionCaps};
use bytes::BytesMut;
use ipnet::IpNet;
use netns_lab::{Netns, veth, wait_until};

/// The routers' AS: 4-octet, so that the 2-octet session sees AS_TRANS.
const ROUTER_AS: u32 = 4_200_000_000;
/// Our AS on the eBGP sessions.
const PEER_AS: u32 = 64512;

/// One session's configuration on our side, keyed by our local address.
struct SessionSpec {
    name: &'static str,
    local: IpAddr,
    open: Open,
}

fn specs() -> Vec<SessionSpec> {
    let gr = |family| {
        Capability::GracefulRestart(GracefulRestart {
            flags: 0,
            restart_time: 120,
            families: vec![GracefulRestartFamily {
                family,
                flags: GracefulRestartFamily::FORWARDING,
            }],
        })
    };
    let caps = |family| {
        vec![
            Capability::MultiProtocol(family),
            Capability::RouteRefresh,
            gr(family),
        ]
    };
    let mut old = Open::new(
        PEER_AS,
        90,
        Ipv4Addr::new(10, 0, 0, 3),
        caps(Family::IPV4_UNICAST),
    );
    // An old speaker: no 4-octet AS capability at all.
    for p in &mut old.params {
        if let OptionalParameter::Capabilities(c) = p {
            c.retain(|c| !matches!(c, Capability::FourOctetAs(_)));
        }
    }
    vec![
        SessionSpec {
            name: "ibgp-v4",
            local: "10.0.0.2".parse().unwrap(),
            open: Open::new(
                ROUTER_AS,
                90,
                Ipv4Addr::new(10, 0, 0, 2),
                caps(Family::IPV4_UNICAST),
            ),
        },
        SessionSpec {
            name: "ebgp-v6",
            local: "fd00::2".parse().unwrap(),
            open: Open::new(
                PEER_AS,
                90,
                Ipv4Addr::new(10, 0, 0, 4),
                caps(Family::IPV6_UNICAST),
            ),
        },
        SessionSpec {
            name: "ebgp-v4-as2",
            local: "10.0.0.3".parse().unwrap(),
            open: old,
        },
    ]
}

/// What one session received, raw, in order.
#[derive(Default, Clone)]
struct Recorded {
    messages: Vec<Vec<u8>>,
    caps: SessionCaps,
    closed: bool,
}

type Sessions = Arc<Mutex<BTreeMap<&'static str, Recorded>>>;

/// Serves one connection: answers OPEN with ours and KEEPALIVE, records everything.
fn serve(mut stream: TcpStream, spec: &SessionSpec, sessions: Sessions, stop: Arc<AtomicBool>) {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = BytesMut::new();
    let mut caps = SessionCaps::default();
    let mut chunk = [0u8; 65536];
    let record = |raw: Vec<u8>, caps: SessionCaps| {
        let mut s = sessions.lock().unwrap();
        let r = s.entry(spec.name).or_default();
        r.messages.push(raw);
        r.caps = caps;
    };
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => break,
        }
        while buf.len() >= 19 {
            let len = u16::from_be_bytes([buf[16], buf[17]]) as usize;
            if buf.len() < len || len < 19 {
                break;
            }
            let raw = buf.split_to(len).to_vec();
            let msg = bgp_proto::decode_message(&raw, &caps)
                .unwrap_or_else(|e| panic!("{}: cannot decode {raw:02x?}: {e}", spec.name));
            let mut out = BytesMut::new();
            match &msg {
                Message::Open(open) => {
                    caps.four_octet_as =
                        open.four_octet_as().is_some() && spec.open.four_octet_as().is_some();
                    bgp_proto::encode(&Message::Open(spec.open.clone()), &caps, &mut out).unwrap();
                    bgp_proto::encode(&Message::Keepalive, &caps, &mut out).unwrap();
                }
                Message::Keepalive => {
                    bgp_proto::encode(&Message::Keepalive, &caps, &mut out).unwrap()
                }
                _ => {}
            }
            record(raw, caps);
            if !out.is_empty() && stream.write_all(&out).is_err() {
                break;
            }
        }
    }
    sessions
        .lock()
        .unwrap()
        .entry(spec.name)
        .or_default()
        .closed = true;
}

/// Binds our three listeners in `ns` and serves every connection on a thread.
fn start_peer(ns: &Netns, sessions: Sessions, stop: Arc<AtomicBool>) {
    let listeners: Vec<TcpListener> = ns.run(|| {
        specs()
            .iter()
            .map(|s| TcpListener::bind(SocketAddr::new(s.local, 179)).unwrap())
            .collect()
    });
    for (listener, spec) in listeners.into_iter().zip(specs()) {
        let sessions = sessions.clone();
        let stop = stop.clone();
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        serve(stream, &spec, sessions.clone(), stop.clone());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
    }
}

/// Decodes a session's messages (with the caps in force when each was recorded).
fn decoded(r: &Recorded) -> Vec<Message> {
    let mut caps = SessionCaps::default();
    r.messages
        .iter()
        .map(|raw| {
            let m = bgp_proto::decode_message(raw, &caps).unwrap();
            if matches!(m, Message::Open(_)) {
                caps = r.caps;
            }
            m
        })
        .collect()
}

fn announced(r: &Recorded) -> Vec<IpNet> {
    decoded(r)
        .iter()
        .filter_map(|m| match m {
            Message::Update(u) => Some(u.announced()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn withdrawn(r: &Recorded) -> Vec<IpNet> {
    decoded(r)
        .iter()
        .filter_map(|m| match m {
            Message::Update(u) => Some(u.withdrawn_prefixes()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn end_of_rib(r: &Recorded) -> Vec<Family> {
    decoded(r)
        .iter()
        .filter_map(|m| match m {
            Message::Update(u) => u.end_of_rib_family(),
            _ => None,
        })
        .collect()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// The routes every router originates; the second of each family is withdrawn later.
const V4: [&str; 2] = ["192.0.2.0/24", "198.51.100.10/32"];
const V6: [&str; 2] = ["2001:db8:1::/48", "2001:db8:2::/48"];

/// A router under test.
struct Router {
    name: &'static str,
    /// Starts the daemon in `ns`, with its sockets and config under `dir`.
    start: fn(&Netns, &Path) -> netns_lab::Background,
    /// Withdraws the second prefix of each family.
    withdraw: fn(&Netns, &Path),
    /// Shuts the daemon down so that it says goodbye with a NOTIFICATION.
    stop: fn(&Netns, &Path),
    version: fn() -> String,
}

fn session(sessions: &Sessions, name: &str) -> Recorded {
    sessions
        .lock()
        .unwrap()
        .get(name)
        .cloned()
        .unwrap_or_default()
}

fn capture(router: &Router) {
    let r = Netns::new("bgprtr");
    let p = Netns::new("bgppeer");
    veth(&r, "r0", "10.0.0.1/24", &p, "p0", "10.0.0.2/24");
    p.sh("ip addr add 10.0.0.3/24 dev p0");
    r.sh("ip addr add fd00::1/64 dev r0 nodad");
    p.sh("ip addr add fd00::2/64 dev p0 nodad");
    let dir = PathBuf::from(format!(
        "/run/lab/bgp-{}-{}",
        router.name,
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();

    let sessions: Sessions = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    start_peer(&p, sessions.clone(), stop.clone());
    let daemon = (router.start)(&r, &dir);

    let complete = |name: &str, family: Family, prefixes: &[&str]| {
        let s = session(&sessions, name);
        let got = announced(&s);
        prefixes.iter().all(|p| got.contains(&net(p))) && end_of_rib(&s).contains(&family)
    };
    let up = wait_until(Duration::from_secs(60), || {
        complete("ibgp-v4", Family::IPV4_UNICAST, &V4)
            && complete("ebgp-v4-as2", Family::IPV4_UNICAST, &V4)
            && complete("ebgp-v6", Family::IPV6_UNICAST, &V6)
    });
    if !up {
        let log = daemon.finish();
        let state: Vec<_> = specs()
            .iter()
            .map(|s| {
                let rec = session(&sessions, s.name);
                (s.name, decoded(&rec))
            })
            .collect();
        panic!(
            "{}: routes or End-of-RIB missing: {state:#?}\n{log}",
            router.name
        );
    }

    (router.withdraw)(&r, &dir);
    let gone = wait_until(Duration::from_secs(30), || {
        withdrawn(&session(&sessions, "ibgp-v4")).contains(&net(V4[1]))
            && withdrawn(&session(&sessions, "ebgp-v4-as2")).contains(&net(V4[1]))
            && withdrawn(&session(&sessions, "ebgp-v6")).contains(&net(V6[1]))
    });
    assert!(gone, "{}: withdrawals not seen", router.name);

    (router.stop)(&r, &dir);
    let said_bye = wait_until(Duration::from_secs(20), || {
        specs().iter().all(|s| {
            decoded(&session(&sessions, s.name))
                .iter()
                .any(|m| matches!(m, Message::Notification(_)))
        })
    });
    stop.store(true, Ordering::Relaxed);
    let log = daemon.finish();
    assert!(
        said_bye,
        "{}: no NOTIFICATION on every session\n{log}",
        router.name
    );

    check_and_save(router, &sessions);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Checks the essentials of what the router sent and writes it out.
fn check_and_save(router: &Router, sessions: &Sessions) {
    let out = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bgp-captures")
        .join(router.name);
    let _ = std::fs::remove_dir_all(&out);
    for spec in specs() {
        let rec = session(sessions, spec.name);
        let msgs = decoded(&rec);
        let Message::Open(open) = &msgs[0] else {
            panic!("{} {}: first message {:?}", router.name, spec.name, msgs[0]);
        };
        assert_eq!(open.asn(), ROUTER_AS, "{} {}", router.name, spec.name);
        assert_eq!(
            open.my_as, 23456,
            "{} {}: My AS is AS_TRANS",
            router.name, spec.name
        );
        let updates: Vec<_> = msgs
            .iter()
            .filter_map(|m| match m {
                Message::Update(u) if !u.announced().is_empty() => Some(u),
                _ => None,
            })
            .collect();
        let first = updates[0];
        match spec.name {
            "ibgp-v4" => {
                let u = updates
                    .iter()
                    .find(|u| u.announced().contains(&net(V4[0])))
                    .unwrap();
                assert_eq!(u.local_pref(), Some(200), "{}", router.name);
                assert!(
                    u.communities().contains(&Community::new(64512, 100)),
                    "{}",
                    router.name
                );
                assert!(
                    u.large_communities().contains(&LargeCommunity {
                        global: ROUTER_AS,
                        local1: 1,
                        local2: 2
                    }),
                    "{}",
                    router.name
                );
                assert_eq!(u.as_path().unwrap().asns().count(), 0, "{}", router.name);
            }
            "ebgp-v6" => {
                assert!(first.mp_reach().is_some(), "{}", router.name);
                assert_eq!(
                    first.as_path().unwrap().asns().next(),
                    Some(ROUTER_AS),
                    "{}",
                    router.name
                );
            }
            _ => {
                assert_eq!(
                    first.as_path().unwrap().asns().next(),
                    Some(23456),
                    "{}",
                    router.name
                );
                let as4 = first.attribute(bgp_proto::packet::attribute::kind::AS4_PATH);
                assert!(
                    as4.is_some(),
                    "{}: AS4_PATH beside a 2-octet AS_PATH",
                    router.name
                );
            }
        }
        let dir = out.join(spec.name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut sent = BytesMut::new();
        bgp_proto::encode(
            &Message::Open(spec.open.clone()),
            &SessionCaps::default(),
            &mut sent,
        )
        .unwrap();
        std::fs::write(dir.join("sent-open.bin"), &sent).unwrap();
        for (i, (raw, msg)) in rec.messages.iter().zip(&msgs).enumerate() {
            let kind = match msg {
                Message::Open(_) => "open",
                Message::Update(_) => "update",
                Message::Notification(_) => "notification",
                Message::Keepalive => "keepalive",
                Message::RouteRefresh(_) => "route-refresh",
            };
            // Re-encoding is byte-exact, here already, on the live bytes.
            let caps = if i == 0 {
                SessionCaps::default()
            } else {
                rec.caps
            };
            assert_eq!(
                &bgp_proto::encode_to_vec(msg, &caps).unwrap(),
                raw,
                "{} {}",
                router.name,
                spec.name
            );
            std::fs::write(dir.join(format!("{i:02}-{kind}.bin")), raw).unwrap();
        }
    }
    std::fs::write(out.join("VERSION"), (router.version)()).unwrap();
}

fn sh(cmd: &str) -> String {
    netns_lab::host_sh(cmd)
}

// --- BIRD ---------------------------------------------------------------------------

fn bird_start(ns: &Netns, dir: &Path) -> netns_lab::Background {
    let filter = format!(
        "filter lab_tag {{ bgp_community.add((64512,100)); bgp_large_community.add(({ROUTER_AS},1,2)); \
         bgp_local_pref = 200; accept; }}"
    );
    let conf = format!(
        r#"
router id 10.0.0.1;
protocol device {{ }}
{filter}
protocol static s4 {{ ipv4; route {v4a} blackhole; }}
protocol static s4b {{ ipv4; route {v4b} blackhole; }}
protocol static s6 {{ ipv6; route {v6a} blackhole; }}
protocol static s6b {{ ipv6; route {v6b} blackhole; }}
template bgp lab {{
  local as {ROUTER_AS};
  start delay time 1;
  connect delay time 1;
  connect retry time 1;
  graceful restart on;
}}
protocol bgp ibgp_v4 from lab {{
  neighbor 10.0.0.2 as {ROUTER_AS};
  source address 10.0.0.1;
  ipv4 {{ import none; export filter lab_tag; next hop self; }};
}}
protocol bgp ebgp_v4_as2 from lab {{
  neighbor 10.0.0.3 as {PEER_AS};
  source address 10.0.0.1;
  ipv4 {{ import none; export filter lab_tag; }};
}}
protocol bgp ebgp_v6 from lab {{
  neighbor fd00::2 as {PEER_AS};
  source address fd00::1;
  ipv6 {{ import none; export filter lab_tag; }};
}}
"#,
        v4a = V4[0],
        v4b = V4[1],
        v6a = V6[0],
        v6b = V6[1],
    );
    std::fs::write(dir.join("bird.conf"), conf).unwrap();
    ns.spawn(&format!(
        "bird -f -c {d}/bird.conf -s {d}/bird.ctl -P {d}/bird.pid",
        d = dir.display()
    ))
}

fn birdc(ns: &Netns, dir: &Path, cmd: &str) {
    ns.sh(&format!("birdc -s {}/bird.ctl {cmd}", dir.display()));
}

fn bird_withdraw(ns: &Netns, dir: &Path) {
    birdc(ns, dir, "disable s4b");
    birdc(ns, dir, "disable s6b");
}

fn bird_stop(ns: &Netns, dir: &Path) {
    birdc(ns, dir, "down");
}

// --- FRR ----------------------------------------------------------------------------

fn frr_start(ns: &Netns, dir: &Path) -> netns_lab::Background {
    let conf = format!(
        r#"frr defaults datacenter
hostname lab
route-map TAG permit 10
 set community 64512:100
 set large-community {ROUTER_AS}:1:2
 set local-preference 200
exit
router bgp {ROUTER_AS}
 bgp router-id 10.0.0.1
 no bgp ebgp-requires-policy
 no bgp network import-check
 no bgp default ipv4-unicast
 bgp graceful-restart
 neighbor 10.0.0.2 remote-as {ROUTER_AS}
 neighbor 10.0.0.2 timers connect 1
 neighbor 10.0.0.3 remote-as {PEER_AS}
 neighbor 10.0.0.3 timers connect 1
 neighbor fd00::2 remote-as {PEER_AS}
 neighbor fd00::2 timers connect 1
 address-family ipv4 unicast
  network {v4a}
  network {v4b}
  neighbor 10.0.0.2 activate
  neighbor 10.0.0.2 route-map TAG out
  neighbor 10.0.0.3 activate
  neighbor 10.0.0.3 route-map TAG out
 exit-address-family
 address-family ipv6 unicast
  network {v6a}
  network {v6b}
  neighbor fd00::2 activate
  neighbor fd00::2 route-map TAG out
 exit-address-family
exit
"#,
        v4a = V4[0],
        v4b = V4[1],
        v6a = V6[0],
        v6b = V6[1],
    );
    std::fs::write(dir.join("bgpd.conf"), conf).unwrap();
    ns.spawn(&format!(
        "/usr/lib/frr/bgpd -f {d}/bgpd.conf -i {d}/bgpd.pid -z {d}/zserv.api --vty_socket {d} \
         -S -P 0 -Z -n",
        d = dir.display()
    ))
}

fn vtysh(ns: &Netns, dir: &Path, cmds: &[&str]) {
    let args: String = cmds.iter().map(|c| format!(" -c '{c}'")).collect();
    ns.sh(&format!(
        "vtysh --vty_socket {} -d bgpd{args}",
        dir.display()
    ));
}

fn frr_withdraw(ns: &Netns, dir: &Path) {
    vtysh(
        ns,
        dir,
        &[
            "configure terminal",
            &format!("router bgp {ROUTER_AS}"),
            "address-family ipv4 unicast",
            &format!("no network {}", V4[1]),
            "exit-address-family",
            "address-family ipv6 unicast",
            &format!("no network {}", V6[1]),
        ],
    );
}

fn frr_stop(ns: &Netns, dir: &Path) {
    // With graceful restart bgpd leaves without a NOTIFICATION when killed (so that
    // peers keep its routes); an administrative shutdown says goodbye (RFC 8203).
    let router = format!("router bgp {ROUTER_AS}");
    let mut cmds = vec!["configure terminal", &router];
    let shutdowns: Vec<String> = ["10.0.0.2", "10.0.0.3", "fd00::2"]
        .iter()
        .map(|a| format!("neighbor {a} shutdown message lab capture done"))
        .collect();
    cmds.extend(shutdowns.iter().map(String::as_str));
    vtysh(ns, dir, &cmds);
}

// --- GoBGP --------------------------------------------------------------------------

fn gobgp_start(ns: &Netns, dir: &Path) -> netns_lab::Background {
    let neighbor = |addr: &str, asn: u32, family: &str| {
        format!(
            r#"
[[neighbors]]
  [neighbors.config]
    neighbor-address = "{addr}"
    peer-as = {asn}
  [neighbors.timers.config]
    connect-retry = 1
  [neighbors.graceful-restart.config]
    enabled = true
    restart-time = 120
  [[neighbors.afi-safis]]
    [neighbors.afi-safis.config]
      afi-safi-name = "{family}"
    [neighbors.afi-safis.mp-graceful-restart.config]
      enabled = true
"#
        )
    };
    let conf = format!(
        "[global.config]\n  as = {ROUTER_AS}\n  router-id = \"10.0.0.1\"\n  port = -1\n{}{}{}",
        neighbor("10.0.0.2", ROUTER_AS, "ipv4-unicast"),
        neighbor("10.0.0.3", PEER_AS, "ipv4-unicast"),
        neighbor("fd00::2", PEER_AS, "ipv6-unicast"),
    );
    std::fs::write(dir.join("gobgpd.toml"), conf).unwrap();
    let daemon = ns.spawn(&format!(
        "gobgpd -f {}/gobgpd.toml -t toml --api-hosts 127.0.0.1:50051 --pprof-disable",
        dir.display()
    ));
    let ready = wait_until(Duration::from_secs(20), || {
        ns.exec("gobgp -u 127.0.0.1 -p 50051 global")
            .status
            .success()
    });
    assert!(ready, "gobgpd never answered");
    let tags = format!("community 64512:100 large-community {ROUTER_AS}:1:2 local-pref 200");
    for p in V4 {
        ns.sh(&format!("gobgp global rib add -a ipv4 {p} {tags}"));
    }
    for p in V6 {
        ns.sh(&format!("gobgp global rib add -a ipv6 {p} {tags}"));
    }
    daemon
}

fn gobgp_withdraw(ns: &Netns, _dir: &Path) {
    ns.sh(&format!("gobgp global rib del -a ipv4 {}", V4[1]));
    ns.sh(&format!("gobgp global rib del -a ipv6 {}", V6[1]));
}

fn gobgp_stop(ns: &Netns, _dir: &Path) {
    for addr in ["10.0.0.2", "10.0.0.3", "fd00::2"] {
        ns.sh(&format!("gobgp neighbor {addr} disable"));
    }
}

// --- tests --------------------------------------------------------------------------

#[test]
#[ignore = "needs the kernel lab"]
fn capture_bird() {
    capture(&Router {
        name: "bird",
        start: bird_start,
        withdraw: bird_withdraw,
        stop: bird_stop,
        version: || sh("bird --version 2>&1"),
    });
}

#[test]
#[ignore = "needs the kernel lab"]
fn capture_frr() {
    capture(&Router {
        name: "frr",
        start: frr_start,
        withdraw: frr_withdraw,
        stop: frr_stop,
        version: || sh("/usr/lib/frr/bgpd --version 2>&1 | head -1"),
    });
}

#[test]
#[ignore = "needs the kernel lab"]
fn capture_gobgp() {
    capture(&Router {
        name: "gobgp",
        start: gobgp_start,
        withdraw: gobgp_withdraw,
        stop: gobgp_stop,
        version: || sh("gobgpd --version 2>&1"),
    });
}
