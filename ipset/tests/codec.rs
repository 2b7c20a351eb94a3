//! Host tests of the codec on bytes captured from the kernel (`tests/fixtures`, made by
//! `tests/capture.rs` in the kernel lab), and on random and truncated bytes.

use std::path::Path;

use ipset_netlink::{
    CmdAttr, Command, EntryAttr, HeaderAttr, IpsetMessage, NestedIp, parse_datagram,
};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use nfnetlink_base::NFNL_SUBSYS_IPSET;
use nfnetlink_base::testing::{assert_never_panic, assert_re_emit_identically, fixtures};

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn all_fixtures() -> Vec<(String, Vec<u8>)> {
    fixtures(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
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
    assert_re_emit_identically::<IpsetMessage>(&files);
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

#[test]
fn truncated_corrupted_and_random_bytes_never_panic() {
    assert_never_panic::<IpsetMessage>(&all_fixtures(), NFNL_SUBSYS_IPSET);
}
