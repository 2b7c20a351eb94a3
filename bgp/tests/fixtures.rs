//! Every message captured from BIRD, FRR and GoBGP (tests/fixtures/, recorded by
//! tests/lab_capture.rs in the kernel lab) decodes, re-encodes byte-identically, and
//! decodes the same in netgauze-bgp-pkt.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bgp_proto::Family;
use bgp_proto::packet::attribute::{AttributeValue, MpNextHop};
use bgp_proto::packet::notification::ErrorCode;
use bgp_proto::packet::open::{Capability, Open};
use bgp_proto::{Message, SessionCaps};

/// Every router and session the lab capture records: a missing one fails the test.
fn sessions() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for router in ["bird", "gobgp", "frr"] {
        for session in ["ibgp-v4", "ebgp-v6", "ebgp-v4-as2"] {
            out.push(root.join(router).join(session));
        }
    }
    out
}

fn open_of(bytes: &[u8]) -> Open {
    match bgp_proto::decode_message(bytes, &SessionCaps::default()).unwrap() {
        Message::Open(o) => o,
        m => panic!("not an OPEN: {m:?}"),
    }
}

#[test]
fn every_captured_message_round_trips_and_matches_netgauze() {
    let sessions = sessions();
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    let mut seen = BTreeSet::new();
    for dir in sessions {
        let sent = open_of(
            &std::fs::read(dir.join("sent-open.bin"))
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display())),
        );
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap() != "sent-open.bin")
            .collect();
        files.sort();
        assert!(files.len() >= 4, "{}: {files:?}", dir.display());
        let mut caps = SessionCaps::default();
        for file in files {
            let bytes = std::fs::read(&file).unwrap();
            let msg = common::cross_check(&bytes, &caps, &file.display().to_string());
            if let Message::Open(received) = &msg {
                caps.four_octet_as =
                    received.four_octet_as().is_some() && sent.four_octet_as().is_some();
            }
            features(&msg, &mut seen);
            *counts
                .entry(match msg {
                    Message::Open(_) => "open",
                    Message::Update(_) => "update",
                    Message::Notification(_) => "notification",
                    Message::Keepalive => "keepalive",
                    Message::RouteRefresh(_) => "route-refresh",
                })
                .or_default() += 1;
        }
    }
    println!("{counts:?}");
    assert_eq!(counts["open"], 9);
    assert!(counts["update"] >= 27, "{counts:?}");
    // What the captures are meant to cover, so that a poorer capture cannot pass.
    let wanted = [
        "unknown capability",
        "graceful restart",
        "4-octet AS_PATH",
        "2-octet AS_PATH",
        "AS4_PATH",
        "LOCAL_PREF",
        "COMMUNITIES",
        "LARGE_COMMUNITY",
        "MP_REACH_NLRI v6",
        "link-local next hop",
        "End-of-RIB v4",
        "End-of-RIB v6",
        "withdrawn v4",
        "withdrawn v6",
        "Cease",
    ];
    let missing: Vec<_> = wanted.iter().filter(|w| !seen.contains(**w)).collect();
    assert!(missing.is_empty(), "never seen: {missing:?}");
}

/// Names what a message exercises.
fn features(msg: &Message, seen: &mut BTreeSet<&'static str>) {
    match msg {
        Message::Open(o) => {
            for c in o.capabilities() {
                match c {
                    Capability::Unknown { .. } => seen.insert("unknown capability"),
                    Capability::GracefulRestart(_) => seen.insert("graceful restart"),
                    _ => false,
                };
            }
        }
        Message::Update(u) => {
            for a in &u.attributes {
                match &a.value {
                    AttributeValue::AsPath(p) if p.asns().any(|a| a > 65535) => {
                        seen.insert("4-octet AS_PATH")
                    }
                    AttributeValue::AsPath(p) if p.asns().any(|a| a == 23456) => {
                        seen.insert("2-octet AS_PATH")
                    }
                    AttributeValue::As4Path(_) => seen.insert("AS4_PATH"),
                    AttributeValue::LocalPref(_) => seen.insert("LOCAL_PREF"),
                    AttributeValue::Communities(_) => seen.insert("COMMUNITIES"),
                    AttributeValue::LargeCommunities(_) => seen.insert("LARGE_COMMUNITY"),
                    AttributeValue::MpReach(m) => {
                        if let MpNextHop::Ipv6 {
                            link_local: Some(_),
                            ..
                        } = m.next_hop
                        {
                            seen.insert("link-local next hop");
                        }
                        seen.insert("MP_REACH_NLRI v6")
                    }
                    _ => false,
                };
            }
            match u.end_of_rib_family() {
                Some(Family::IPV4_UNICAST) => seen.insert("End-of-RIB v4"),
                Some(Family::IPV6_UNICAST) => seen.insert("End-of-RIB v6"),
                _ => false,
            };
            for p in u.withdrawn_prefixes() {
                seen.insert(if p.addr().is_ipv4() {
                    "withdrawn v4"
                } else {
                    "withdrawn v6"
                });
            }
        }
        Message::Notification(n) if matches!(n.code, ErrorCode::Cease(_)) => {
            seen.insert("Cease");
        }
        _ => {}
    }
}

/// The OPENs real routers sent pass our OPEN checks and negotiate what the session had.
#[test]
fn real_opens_negotiate() {
    use bgp_proto::session::{Config, GracefulRestartConfig, PeerAs, check_open};
    for dir in sessions() {
        let sent = open_of(&std::fs::read(dir.join("sent-open.bin")).unwrap());
        let received = open_of(&std::fs::read(dir.join("00-open.bin")).unwrap());
        let config = Config {
            local_as: sent.asn(),
            peer_as: PeerAs::Exact(4_200_000_000),
            router_id: sent.bgp_id,
            hold_time: sent.hold_time,
            keepalive_time: None,
            connect_retry: std::time::Duration::from_secs(5),
            passive: true,
            families: sent.families().collect(),
            graceful_restart: Some(GracefulRestartConfig {
                restart_time: 120,
                restarting: false,
                forwarding: true,
            }),
        };
        let n =
            check_open(&config, &received).unwrap_or_else(|e| panic!("{}: {e:?}", dir.display()));
        assert_eq!(
            n.hold_time,
            received.hold_time.min(sent.hold_time),
            "{}",
            dir.display()
        );
        assert_eq!(n.families, config.families, "{}", dir.display());
        assert!(n.graceful_restart, "{}", dir.display());
        assert!(n.peer_route_refresh, "{}", dir.display());
        assert_eq!(n.internal, dir.ends_with("ibgp-v4"), "{}", dir.display());
        assert!(
            n.caps.four_octet_as,
            "{}: the routers all have the capability",
            dir.display()
        );
    }
}
