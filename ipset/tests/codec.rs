//! Host tests of the codec on bytes captured from the kernel (`tests/fixtures`, made by
//! `tests/capture.rs` in the kernel lab), and on random and truncated bytes.

use std::path::Path;

use ipset_netlink::{
    CmdAttr, Command, EntryAttr, HeaderAttr, IpsetMessage, NestedIp, emit_datagram, parse_datagram,
};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn all_fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

fn ipset_messages(bytes: &[u8]) -> Vec<IpsetMessage> {
    parse_datagram(bytes)
        .unwrap()
        .into_iter()
        .filter_map(|m: NetlinkMessage<IpsetMessage>| match m.payload {
            NetlinkPayload::InnerMessage(m) => Some(m),
            _ => None,
        })
        .collect()
}

#[test]
fn every_captured_datagram_parses_and_re_emits_identically() {
    let files = all_fixtures();
    assert!(files.len() >= 9, "fixtures missing: {files:?}");
    for (name, bytes) in files {
        let parsed = parse_datagram(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!parsed.is_empty(), "{name}");
        assert_eq!(emit_datagram(&parsed), bytes, "{name} re-emits differently");
    }
}

#[test]
fn protocol_reply_carries_versions() {
    let messages = ipset_messages(&fixture("protocol_reply.0.bin"));
    assert_eq!(messages[0].command, Command::Protocol);
    assert!(messages[0].attributes.contains(&CmdAttr::Protocol(7)));
    assert!(messages[0].attributes.contains(&CmdAttr::ProtocolMin(6)));
}

#[test]
fn list_reply_of_hash_ip_with_comments_decodes() {
    let messages = ipset_messages(&fixture("list_c-ip4.0.bin"));
    let m = &messages[0];
    assert_eq!(m.command, Command::List);
    assert!(m.attributes.contains(&CmdAttr::SetName("c-ip4".into())));
    assert!(m.attributes.contains(&CmdAttr::TypeName("hash:ip".into())));
    let header = m
        .find(|a| match a {
            CmdAttr::Header(h) => Some(h),
            _ => None,
        })
        .expect("header");
    assert!(header.contains(&HeaderAttr::HashSize(1024)));
    assert!(header.contains(&HeaderAttr::MaxElem(65536)));
    assert!(header.contains(&HeaderAttr::Elements(2)));
    let entries = m
        .find(|a| match a {
            CmdAttr::Entries(e) => Some(e),
            _ => None,
        })
        .expect("members");
    assert_eq!(entries.len(), 2);
    let web = entries
        .iter()
        .find(|e| e.contains(&EntryAttr::Comment("web".into())))
        .expect("commented entry");
    let kernel_ip = |a: &str| {
        EntryAttr::Ip(NestedIp {
            addr: a.parse().unwrap(),
            net_byteorder: false,
        })
    };
    assert!(web.contains(&kernel_ip("192.0.2.1")));
}

#[test]
fn list_reply_of_ipv6_ip_port_has_ports_protocols_and_timeouts() {
    let messages = ipset_messages(&fixture("list_c-ipport6.0.bin"));
    let entries: Vec<&Vec<EntryAttr>> = messages
        .iter()
        .flat_map(|m| m.attributes.iter())
        .filter_map(|a| match a {
            CmdAttr::Entries(e) => Some(e.iter()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(entries.len(), 2);
    for entry in &entries {
        assert!(
            entry
                .iter()
                .any(|a| matches!(a, EntryAttr::Ip(ip) if ip.addr.to_string() == "2001:db8::1"))
        );
        assert!(
            entry
                .iter()
                .any(|a| matches!(a, EntryAttr::Timeout(t) if *t <= 600))
        );
    }
    assert!(
        entries
            .iter()
            .any(|e| e.contains(&EntryAttr::Port(443)) && e.contains(&EntryAttr::Proto(6)))
    );
    assert!(
        entries
            .iter()
            .any(|e| e.contains(&EntryAttr::Port(53)) && e.contains(&EntryAttr::Proto(17)))
    );
}

#[test]
fn error_reply_for_a_missing_set_is_enoent() {
    let parsed = parse_datagram(&fixture("list_missing_set_error.0.bin")).unwrap();
    let NetlinkPayload::Error(e) = &parsed[0].payload else {
        panic!("not an error: {parsed:?}");
    };
    assert_eq!(e.code.map(|c| c.get()), Some(-2));
}

/// A small deterministic generator, so failures reproduce.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn truncated_and_corrupted_kernel_bytes_never_panic() {
    let mut rng = XorShift(0x5eed_1234_abcd_ef01);
    let mut parsed_some = 0;
    for (_, bytes) in all_fixtures() {
        for cut in 0..bytes.len() {
            if let Ok(m) = parse_datagram(&bytes[..cut]) {
                parsed_some += 1;
                let _ = emit_datagram(&m);
            }
        }
        for _ in 0..2000 {
            let mut corrupt = bytes.clone();
            for _ in 0..=(rng.next() % 4) {
                let i = (rng.next() as usize) % corrupt.len();
                corrupt[i] = rng.next() as u8;
            }
            if let Ok(m) = parse_datagram(&corrupt) {
                let _ = emit_datagram(&m);
            }
        }
    }
    // Cutting at message boundaries leaves valid prefixes: the test did reach the emitter.
    assert!(parsed_some > 0);
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(0x0dd_ba11);
    for _ in 0..20_000 {
        let len = (rng.next() % 200) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Make many of them look like ipset messages so the attribute parsers run.
        if bytes.len() >= 20 {
            let total = bytes.len() as u32;
            bytes[0..4].copy_from_slice(&total.to_ne_bytes());
            bytes[4] = (rng.next() % 16) as u8;
            bytes[5] = 6;
        }
        if let Ok(m) = parse_datagram(&bytes) {
            let _ = emit_datagram(&m);
        }
    }
}
