//! Every message captured from BIRD, FRR and GoBGP (tests/fixtures/, recorded by
//! tests/lab_capture.rs in the kernel lab) decodes, re-encodes byte-identically, and
//! decodes the same in netgauze-bgp-pkt.

mod common;

use std::path::{Path, PathBuf};

use bgp_proto::packet::open::Open;
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
}
