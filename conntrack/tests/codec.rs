//! Host tests of the codec on bytes captured from the kernel (`tests/fixtures`, made by
//! `tests/capture.rs` in the kernel lab), and on random and truncated bytes; the
//! filter's and the delete message's rules.

use std::net::IpAddr;
use std::path::Path;

use conntrack_netlink::{
    Family, Flow, FlowFilter, FlowTuple, IPPROTO_TCP, IPPROTO_UDP, NetfilterMessage, ReplySource,
    emit_datagram, parse_datagram,
};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::NetfilterMessageInner;
use netlink_packet_netfilter::conntrack::ConntrackMessage;
use nfnetlink_base::NFNL_SUBSYS_CTNETLINK;
use nfnetlink_base::testing::{assert_never_panic, assert_re_emit_identically, fixtures};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn all_fixtures() -> Vec<(String, Vec<u8>)> {
    fixtures(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
}

fn fixture_group(prefix: &str) -> Vec<NetlinkMessage<NetfilterMessage>> {
    all_fixtures()
        .into_iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .flat_map(|(_, bytes)| parse_datagram(&bytes).unwrap())
        .collect()
}

fn dumped_flows(prefix: &str, family: Family) -> Vec<String> {
    fixture_group(prefix)
        .into_iter()
        .filter_map(|m| match m.payload {
            NetlinkPayload::InnerMessage(NetfilterMessage {
                inner: NetfilterMessageInner::Conntrack(ConntrackMessage::New(attributes)),
                ..
            }) => Some(
                Flow::from_attributes(family, &attributes)
                    .unwrap()
                    .to_string(),
            ),
            _ => None,
        })
        .collect()
}

#[test]
fn every_captured_datagram_parses_and_re_emits_identically() {
    let files = all_fixtures();
    assert!(files.len() >= 4, "fixtures missing: {files:?}");
    assert_re_emit_identically::<NetfilterMessage>(&files);
}

#[test]
fn captured_dumps_give_the_flows_the_lab_made() {
    let v4 = dumped_flows("dump_ipv4", Family::Ipv4);
    assert!(v4.contains(&"udp src=10.0.2.2 dst=10.0.2.2 sport=40000 dport=53 src=10.0.2.2 dst=10.0.2.2 sport=53 dport=40000".to_string()), "{v4:#?}");
    assert!(v4.contains(&"tcp src=10.0.2.2 dst=10.0.2.2 sport=40001 dport=8080 src=10.0.2.2 dst=10.0.2.2 sport=8080 dport=40001".to_string()), "{v4:#?}");
    let v6 = dumped_flows("dump_ipv6", Family::Ipv6);
    assert_eq!(v6, vec!["udp src=fd00:2::2 dst=fd00:2::2 sport=40000 dport=53 src=fd00:2::2 dst=fd00:2::2 sport=53 dport=40000".to_string()]);
}

#[test]
fn captured_acks_and_errors_are_told_apart() {
    let codes = |prefix: &str| -> Vec<Option<i32>> {
        fixture_group(prefix)
            .into_iter()
            .filter_map(|m| match m.payload {
                NetlinkPayload::Error(e) => Some(e.code.map(|c| -c.get())),
                _ => None,
            })
            .collect()
    };
    assert_eq!(codes("delete_ack"), vec![None]);
    assert_eq!(codes("delete_missing_error"), vec![Some(2)], "ENOENT");
}

#[test]
fn truncated_corrupted_and_random_bytes_never_panic() {
    assert_never_panic::<NetfilterMessage>(&all_fixtures(), NFNL_SUBSYS_CTNETLINK);
}

fn udp_flow(reply_source: &str, reply_port: u16) -> Flow {
    Flow {
        family: Family::Ipv4,
        original: FlowTuple {
            source: ip("10.0.1.2"),
            destination: ip("10.96.0.10"),
            protocol: IPPROTO_UDP,
            source_port: Some(40000),
            destination_port: Some(53),
        },
        reply: FlowTuple {
            source: ip(reply_source),
            destination: ip("10.0.1.2"),
            protocol: IPPROTO_UDP,
            source_port: Some(reply_port),
            destination_port: Some(40000),
        },
        id: Some(7),
        zone: None,
    }
}

#[test]
fn filters_match_on_every_field_they_name() {
    let to_backend = udp_flow("10.0.2.2", 5353);
    let untranslated = udp_flow("10.96.0.10", 53);
    let base = FlowFilter {
        protocol: IPPROTO_UDP,
        original_destination: Some(ip("10.96.0.10")),
        original_destination_port: Some(53),
        reply_source: ReplySource::Any,
    };
    assert!(base.matches(&to_backend) && base.matches(&untranslated));
    let tcp = FlowFilter {
        protocol: IPPROTO_TCP,
        ..base
    };
    assert!(!tcp.matches(&to_backend));
    let other_vip = FlowFilter {
        original_destination: Some(ip("10.96.0.11")),
        ..base
    };
    assert!(!other_vip.matches(&to_backend));
    let other_port = FlowFilter {
        original_destination_port: Some(54),
        ..base
    };
    assert!(!other_port.matches(&to_backend));
    let endpoint = |addr: &str, port: Option<u16>| FlowFilter {
        reply_source: ReplySource::Endpoint {
            addr: ip(addr),
            port,
        },
        ..base
    };
    assert!(endpoint("10.0.2.2", None).matches(&to_backend));
    assert!(endpoint("10.0.2.2", Some(5353)).matches(&to_backend));
    assert!(!endpoint("10.0.2.2", Some(5354)).matches(&to_backend));
    assert!(!endpoint("10.0.2.3", None).matches(&to_backend));
    let untranslated_only = FlowFilter {
        reply_source: ReplySource::Untranslated,
        ..base
    };
    assert!(untranslated_only.matches(&untranslated));
    assert!(!untranslated_only.matches(&to_backend));
    assert_eq!(
        endpoint("10.0.2.2", Some(5353)).to_string(),
        "-p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --reply-src 10.0.2.2 --reply-port-src 5353"
    );
}

#[test]
fn a_delete_names_the_original_tuple_and_the_id() {
    let flow = udp_flow("10.0.2.2", 5353);
    let message = NetfilterMessage::new(
        netlink_packet_netfilter::NetfilterHeader::new(
            netlink_packet_netfilter::NetfilterProtoFamily::IPv4,
            0,
            0,
        ),
        ConntrackMessage::Delete(flow.delete_attributes()),
    );
    let mut packet = NetlinkMessage::from(message);
    packet.header.message_type = nfnetlink_base::message_type(NFNL_SUBSYS_CTNETLINK, 2);
    let bytes = emit_datagram(&[packet]);
    let parsed = parse_datagram(&bytes).unwrap();
    let NetlinkPayload::InnerMessage(NetfilterMessage {
        inner: NetfilterMessageInner::Conntrack(ConntrackMessage::Delete(attributes)),
        ..
    }) = &parsed[0].payload
    else {
        panic!("{parsed:?}");
    };
    // Without a reply tuple in the message, the parsed flow is incomplete: the delete
    // carries exactly the original tuple (and the id).
    assert_eq!(
        Flow::from_attributes(Family::Ipv4, attributes).unwrap_err(),
        "entry without CTA_TUPLE_REPLY"
    );
    assert_eq!(attributes.len(), 2);
    assert_eq!(attributes, &flow.delete_attributes());
}
