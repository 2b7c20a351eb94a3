//! The validity checks of RFC 826 and RFC 4861 7.1.1, one fault at a time, and what the
//! builders put on the wire (read back with etherparse, not with our own parser).

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use common::refresh_icmpv6_checksum;
use etherparse::{Icmpv6Type, NetSlice, SlicedPacket, TransportSlice};
use neighbor_frames::{FrameError, MacAddr, Request, arp, ndp, parse};

const ASKER: MacAddr = MacAddr::new([0x02, 0xaa, 0, 0, 0, 0x02]);
const OURS: MacAddr = MacAddr::new([0x02, 0xbb, 0, 0, 0, 0x01]);
const ASKER_IP6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0x12, 0x3456);
const ASKER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

/// Offsets in an Ethernet/IPv6/ICMPv6 frame.
const HOP_LIMIT: usize = 14 + 7;
const IP_SRC: usize = 14 + 8;
const IP_DST: usize = 14 + 24;
const ICMP: usize = 14 + 40;
const TARGET: usize = ICMP + 8;
const OPTIONS: usize = ICMP + 24;

fn solicitation() -> Vec<u8> {
    ndp::solicitation(ASKER, ASKER_IP6, VIP6)
}

fn ns(frame: &[u8]) -> ndp::NeighborSolicitation {
    match parse(frame) {
        Ok(Some(Request::NeighborSolicitation(ns))) => ns,
        other => panic!("not a solicitation: {other:?}"),
    }
}

fn arp_request(frame: &[u8]) -> arp::ArpRequest {
    match parse(frame) {
        Ok(Some(Request::Arp(request))) => request,
        other => panic!("not an ARP request: {other:?}"),
    }
}

/// Sets the IPv6 payload length after a test grew or shrank the message.
fn set_payload_len(frame: &mut [u8]) {
    let len = u16::try_from(frame.len() - ICMP).unwrap();
    frame[14 + 4..14 + 6].copy_from_slice(&len.to_be_bytes());
}

#[test]
fn a_solicitation_parses_into_its_fields() {
    let frame = solicitation();
    let ns = ns(&frame);
    assert_eq!(ns.eth_src, ASKER);
    assert_eq!(
        ns.eth_dst,
        MacAddr::new([0x33, 0x33, 0xff, 0x12, 0x34, 0x56])
    );
    assert_eq!(ns.src_ip, ASKER_IP6);
    assert_eq!(ns.dst_ip, "ff02::1:ff12:3456".parse::<Ipv6Addr>().unwrap());
    assert_eq!(ns.target, VIP6);
    assert_eq!(ns.source_lla, Some(ASKER));
    assert!(!ns.is_dad());
    assert!(
        ns.is_addressed_to(OURS),
        "the solicited-node MAC is for everyone in it"
    );
}

#[test]
fn hop_limit_other_than_255_is_rejected() {
    let mut frame = solicitation();
    frame[HOP_LIMIT] = 64;
    assert_eq!(parse(&frame), Err(FrameError::HopLimit(64)));
}

#[test]
fn a_bad_checksum_is_rejected_with_the_expected_one() {
    let mut frame = solicitation();
    let good = u16::from_be_bytes([frame[ICMP + 2], frame[ICMP + 3]]);
    frame[ICMP + 2] ^= 0x01;
    let found = u16::from_be_bytes([frame[ICMP + 2], frame[ICMP + 3]]);
    assert_eq!(
        parse(&frame),
        Err(FrameError::Checksum {
            found,
            expected: good
        })
    );
}

#[test]
fn the_checksum_covers_the_pseudo_header() {
    let mut frame = solicitation();
    frame[IP_SRC + 15] ^= 0x40;
    assert!(matches!(parse(&frame), Err(FrameError::Checksum { .. })));
}

#[test]
fn nonzero_reserved_bytes_are_ignored_but_checksummed() {
    let mut frame = solicitation();
    frame[ICMP + 4] = 0xde;
    assert!(matches!(parse(&frame), Err(FrameError::Checksum { .. })));
    refresh_icmpv6_checksum(&mut frame);
    assert_eq!(ns(&frame).target, VIP6);
}

#[test]
fn code_other_than_zero_is_rejected() {
    let mut frame = solicitation();
    frame[ICMP + 1] = 1;
    refresh_icmpv6_checksum(&mut frame);
    assert_eq!(parse(&frame), Err(FrameError::IcmpCode(1)));
}

#[test]
fn a_multicast_target_is_rejected() {
    let mut frame = solicitation();
    let group = ndp::ALL_NODES;
    frame[TARGET..TARGET + 16].copy_from_slice(&group.octets());
    refresh_icmpv6_checksum(&mut frame);
    assert_eq!(parse(&frame), Err(FrameError::MulticastTarget(group)));
}

#[test]
fn a_multicast_source_is_rejected() {
    let mut frame = solicitation();
    frame[IP_SRC..IP_SRC + 16].copy_from_slice(&ndp::ALL_NODES.octets());
    refresh_icmpv6_checksum(&mut frame);
    assert_eq!(
        parse(&frame),
        Err(FrameError::MulticastSource(ndp::ALL_NODES))
    );
}

#[test]
fn a_message_shorter_than_24_bytes_is_rejected() {
    let mut frame = solicitation();
    frame.truncate(ICMP + 20);
    set_payload_len(&mut frame);
    refresh_icmpv6_checksum(&mut frame);
    assert_eq!(
        parse(&frame),
        Err(FrameError::Truncated {
            layer: "Neighbor Solicitation",
            needed: 24,
            available: 20
        })
    );
}

#[test]
fn a_payload_length_past_the_frame_is_rejected() {
    let mut frame = solicitation();
    frame.truncate(frame.len() - 4);
    assert_eq!(
        parse(&frame),
        Err(FrameError::Truncated {
            layer: "IPv6 payload",
            needed: 32,
            available: 28
        })
    );
}

#[test]
fn ethernet_padding_after_the_payload_is_ignored() {
    let mut frame = solicitation();
    frame.extend_from_slice(&[0; 12]);
    assert_eq!(ns(&frame).source_lla, Some(ASKER));
}

#[test]
fn an_option_of_length_zero_is_rejected() {
    let mut frame = solicitation();
    frame[OPTIONS + 1] = 0;
    refresh_icmpv6_checksum(&mut frame);
    assert_eq!(
        parse(&frame),
        Err(FrameError::OptionLength {
            option_type: 1,
            offset: 0
        })
    );
}

#[test]
fn an_option_running_past_the_message_is_rejected() {
    let mut frame = solicitation();
    frame[OPTIONS + 1] = 2;
    refresh_icmpv6_checksum(&mut frame);
    assert_eq!(
        parse(&frame),
        Err(FrameError::OptionLength {
            option_type: 1,
            offset: 0
        })
    );
}

#[test]
fn a_source_address_option_not_of_ethernet_size_is_rejected() {
    let mut frame = solicitation();
    frame[OPTIONS + 1] = 2;
    frame.extend_from_slice(&[0; 8]);
    set_payload_len(&mut frame);
    refresh_icmpv6_checksum(&mut frame);
    assert_eq!(parse(&frame), Err(FrameError::LinkLayerAddressLength(14)));
}

#[test]
fn unknown_options_are_skipped() {
    let mut frame = solicitation();
    // A nonce option (type 14) before the source address, and a malformed prefix
    // information option (type 3, one unit where it needs four) after it: RFC 4861
    // says to skip options a message does not use, whatever they hold.
    let mut options = vec![14, 1, 1, 2, 3, 4, 5, 6];
    options.extend_from_slice(&frame[OPTIONS..]);
    options.extend_from_slice(&[3, 1, 0, 0, 0, 0, 0, 0]);
    frame.truncate(OPTIONS);
    frame.extend_from_slice(&options);
    set_payload_len(&mut frame);
    refresh_icmpv6_checksum(&mut frame);
    assert_eq!(ns(&frame).source_lla, Some(ASKER));
}

#[test]
fn duplicate_address_detection_parses_and_is_answered_to_all_nodes() {
    let frame = ndp::solicitation(ASKER, Ipv6Addr::UNSPECIFIED, VIP6);
    let ns = ns(&frame);
    assert!(ns.is_dad());
    assert_eq!(ns.source_lla, None);
    let answer = ndp::advertisement(&ns, OURS);
    let na = advertisement_fields(&answer);
    assert_eq!(na.eth_dst, MacAddr::new([0x33, 0x33, 0, 0, 0, 1]));
    assert_eq!(na.dst_ip, ndp::ALL_NODES);
    assert!(
        !na.solicited,
        "RFC 4861 7.2.4: Solicited clear for a DAD answer"
    );
    assert!(na.override_flag);
}

#[test]
fn duplicate_address_detection_with_a_source_address_option_is_rejected() {
    let mut frame = solicitation();
    frame[IP_SRC..IP_SRC + 16].copy_from_slice(&Ipv6Addr::UNSPECIFIED.octets());
    refresh_icmpv6_checksum(&mut frame);
    assert_eq!(parse(&frame), Err(FrameError::DadWithSourceLinkLayer));
}

#[test]
fn duplicate_address_detection_to_a_unicast_address_is_rejected() {
    let mut frame = ndp::solicitation(ASKER, Ipv6Addr::UNSPECIFIED, VIP6);
    frame[IP_DST..IP_DST + 16].copy_from_slice(&VIP6.octets());
    refresh_icmpv6_checksum(&mut frame);
    assert_eq!(parse(&frame), Err(FrameError::DadNotToSolicitedNode(VIP6)));
}

#[test]
fn other_icmpv6_and_other_ethertypes_are_ignored() {
    let na = ndp::unsolicited_advertisement(OURS, VIP6);
    assert_eq!(parse(&na), Ok(None), "an advertisement asks nothing");
    let mut ipv4 = arp::request(ASKER, ASKER_IP, VIP).to_vec();
    ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
    assert_eq!(parse(&ipv4), Ok(None));
    let mut vlan = arp::request(ASKER, ASKER_IP, VIP).to_vec();
    vlan[12..14].copy_from_slice(&[0x81, 0x00]);
    assert_eq!(parse(&vlan), Ok(None));
    // A solicitation behind a next header that is not ICMPv6 (here UDP).
    let mut udp = solicitation();
    udp[14 + 6] = 17;
    assert_eq!(parse(&udp), Ok(None));
}

#[test]
fn ipv4_in_an_ipv6_frame_is_rejected() {
    let mut frame = solicitation();
    frame[14] = 0x45;
    assert_eq!(parse(&frame), Err(FrameError::NotIpv6(4)));
}

#[test]
fn short_frames_are_typed_errors() {
    assert_eq!(
        parse(&[0; 10]),
        Err(FrameError::Truncated {
            layer: "Ethernet",
            needed: 14,
            available: 10
        })
    );
    let arp = arp::request(ASKER, ASKER_IP, VIP);
    assert!(matches!(
        parse(&arp[..30]),
        Err(FrameError::Truncated { layer: "ARP", .. })
    ));
    let ns = solicitation();
    assert!(matches!(
        parse(&ns[..40]),
        Err(FrameError::Truncated { layer: "IPv6", .. })
    ));
}

#[test]
fn an_arp_request_parses_into_its_fields() {
    let request = arp_request(&arp::request(ASKER, ASKER_IP, VIP));
    assert_eq!(
        request,
        arp::ArpRequest {
            eth_src: ASKER,
            eth_dst: MacAddr::BROADCAST,
            sender_mac: ASKER,
            sender_ip: ASKER_IP,
            target_mac: MacAddr::ZERO,
            target_ip: VIP,
        }
    );
    assert!(!request.is_probe());
    assert!(!request.is_announcement());
    assert!(request.is_addressed_to(OURS));
}

#[test]
fn arp_for_other_hardware_or_protocols_is_rejected() {
    let mut frame = arp::request(ASKER, ASKER_IP, VIP);
    frame[14 + 1] = 6; // IEEE 802 networks
    assert_eq!(
        parse(&frame),
        Err(FrameError::ArpNotEthernetIpv4 {
            hardware_type: 6,
            protocol_type: 0x0800,
            hardware_len: 6,
            protocol_len: 4
        })
    );
    let mut frame = arp::request(ASKER, ASKER_IP, VIP);
    frame[14 + 2..14 + 4].copy_from_slice(&[0x86, 0xdd]);
    assert!(matches!(
        parse(&frame),
        Err(FrameError::ArpNotEthernetIpv4 {
            protocol_type: 0x86dd,
            ..
        })
    ));
    // Other address lengths: the packet is then read with them (and is long enough).
    let mut frame = arp::request(ASKER, ASKER_IP, VIP).to_vec();
    frame[14 + 4] = 8;
    frame.extend_from_slice(&[0; 4]);
    assert!(matches!(
        parse(&frame),
        Err(FrameError::ArpNotEthernetIpv4 {
            hardware_len: 8,
            ..
        })
    ));
}

#[test]
fn arp_from_a_group_address_is_rejected() {
    let mut frame = arp::request(ASKER, ASKER_IP, VIP);
    frame[14 + 8] = 0x01; // sender hardware address 01:aa:...
    assert!(matches!(
        parse(&frame),
        Err(FrameError::ArpMulticastSender(mac)) if mac.is_multicast()
    ));
}

#[test]
fn arp_replies_are_ignored() {
    let request = arp_request(&arp::request(ASKER, ASKER_IP, VIP));
    assert_eq!(parse(&arp::reply(&request, OURS)), Ok(None));
    assert_eq!(parse(&arp::gratuitous_reply(OURS, VIP)), Ok(None));
}

#[test]
fn the_arp_reply_answers_the_asker() {
    let request = arp_request(&arp::request(ASKER, ASKER_IP, VIP));
    let reply = arp::reply(&request, OURS);
    let arp = arp_fields(&reply);
    assert_eq!((arp.eth_dst, arp.eth_src), (ASKER, OURS));
    assert_eq!(arp.operation, 2);
    assert_eq!((arp.sender_mac, arp.sender_ip), (OURS, VIP));
    assert_eq!((arp.target_mac, arp.target_ip), (ASKER, ASKER_IP));
}

#[test]
fn a_unicast_arp_recheck_is_for_us_only() {
    let mut frame = arp::request(ASKER, ASKER_IP, VIP);
    frame[..6].copy_from_slice(&OURS.octets());
    assert!(arp_request(&frame).is_addressed_to(OURS));
    assert!(!arp_request(&frame).is_addressed_to(ASKER));
}

#[test]
fn gratuitous_arp_in_both_forms() {
    let request = arp_fields(&arp::gratuitous_request(OURS, VIP));
    assert_eq!(
        (request.eth_dst, request.eth_src),
        (MacAddr::BROADCAST, OURS)
    );
    assert_eq!(request.operation, 1);
    assert_eq!((request.sender_mac, request.sender_ip), (OURS, VIP));
    assert_eq!(
        (request.target_mac, request.target_ip),
        (MacAddr::ZERO, VIP)
    );
    let parsed = arp_request(&arp::gratuitous_request(OURS, VIP));
    assert!(parsed.is_announcement());

    let reply = arp_fields(&arp::gratuitous_reply(OURS, VIP));
    assert_eq!((reply.eth_dst, reply.eth_src), (MacAddr::BROADCAST, OURS));
    assert_eq!(reply.operation, 2);
    assert_eq!((reply.sender_mac, reply.sender_ip), (OURS, VIP));
    assert_eq!((reply.target_mac, reply.target_ip), (OURS, VIP));
}

#[test]
fn the_advertisement_answers_the_solicitation_source() {
    let ns = ns(&solicitation());
    let na = advertisement_fields(&ndp::advertisement(&ns, OURS));
    assert_eq!((na.eth_dst, na.eth_src), (ASKER, OURS));
    assert_eq!((na.src_ip, na.dst_ip), (VIP6, ASKER_IP6));
    assert_eq!(na.hop_limit, 255);
    assert_eq!(na.target, VIP6);
    assert!(na.solicited && na.override_flag && !na.router);
    assert_eq!(na.target_lla, Some(OURS));
}

#[test]
fn a_solicitation_without_source_address_is_answered_to_the_frame_source() {
    // A reachability probe may leave the option out (RFC 4861 4.3).
    let mut frame = solicitation();
    frame.truncate(OPTIONS);
    set_payload_len(&mut frame);
    frame[..6].copy_from_slice(&OURS.octets());
    frame[IP_DST..IP_DST + 16].copy_from_slice(&VIP6.octets());
    refresh_icmpv6_checksum(&mut frame);
    let ns = ns(&frame);
    assert_eq!(ns.source_lla, None);
    assert!(ns.is_addressed_to(OURS));
    assert!(!ns.is_addressed_to(ASKER));
    let na = advertisement_fields(&ndp::advertisement(&ns, OURS));
    assert_eq!(na.eth_dst, ASKER);
    assert_eq!(na.dst_ip, ASKER_IP6);
}

#[test]
fn the_unsolicited_advertisement_goes_to_all_nodes_with_override() {
    let na = advertisement_fields(&ndp::unsolicited_advertisement(OURS, VIP6));
    assert_eq!(
        (na.eth_dst, na.eth_src),
        (MacAddr::new([0x33, 0x33, 0, 0, 0, 1]), OURS)
    );
    assert_eq!((na.src_ip, na.dst_ip), (VIP6, ndp::ALL_NODES));
    assert!(!na.solicited && na.override_flag && !na.router);
    assert_eq!(na.target_lla, Some(OURS));
}

#[test]
fn solicited_node_groups_and_their_macs() {
    let vip: Ipv6Addr = "fd00:77::100".parse().unwrap();
    let group = ndp::solicited_node(vip);
    assert_eq!(group, "ff02::1:ff00:100".parse::<Ipv6Addr>().unwrap());
    assert!(ndp::is_solicited_node(group));
    assert!(!ndp::is_solicited_node(ndp::ALL_NODES));
    assert!(!ndp::is_solicited_node(vip));
    assert_eq!(
        ndp::solicited_node_mac(vip),
        MacAddr::new([0x33, 0x33, 0xff, 0x00, 0x01, 0x00])
    );
    assert_eq!(
        ndp::solicited_node_mac(vip).to_string(),
        "33:33:ff:00:01:00"
    );
}

#[test]
fn errors_describe_themselves() {
    let mut frame = solicitation();
    frame[HOP_LIMIT] = 1;
    let error = parse(&frame).unwrap_err();
    assert_eq!(
        error.to_string(),
        "Neighbor Solicitation with hop limit 1, not 255"
    );
}

/// An ARP frame as etherparse reads it.
#[derive(Debug)]
struct ArpFields {
    eth_dst: MacAddr,
    eth_src: MacAddr,
    operation: u16,
    sender_mac: MacAddr,
    sender_ip: Ipv4Addr,
    target_mac: MacAddr,
    target_ip: Ipv4Addr,
}

fn arp_fields(frame: &[u8]) -> ArpFields {
    let sliced = SlicedPacket::from_ethernet(frame).expect("etherparse reads the frame");
    let Some(etherparse::LinkSlice::Ethernet2(eth)) = sliced.link else {
        panic!("no Ethernet header")
    };
    let Some(NetSlice::Arp(arp)) = sliced.net else {
        panic!("no ARP packet")
    };
    let arp = arp.to_packet().try_eth_ipv4().expect("Ethernet/IPv4 ARP");
    ArpFields {
        eth_dst: MacAddr::new(eth.destination()),
        eth_src: MacAddr::new(eth.source()),
        operation: arp.operation.0,
        sender_mac: MacAddr::new(arp.sender_mac),
        sender_ip: Ipv4Addr::from(arp.sender_ipv4),
        target_mac: MacAddr::new(arp.target_mac),
        target_ip: Ipv4Addr::from(arp.target_ipv4),
    }
}

/// A Neighbor Advertisement frame as etherparse reads it (checksum verified).
#[derive(Debug)]
struct AdvertisementFields {
    eth_dst: MacAddr,
    eth_src: MacAddr,
    src_ip: Ipv6Addr,
    dst_ip: Ipv6Addr,
    hop_limit: u8,
    router: bool,
    solicited: bool,
    override_flag: bool,
    target: Ipv6Addr,
    target_lla: Option<MacAddr>,
}

fn advertisement_fields(frame: &[u8]) -> AdvertisementFields {
    let sliced = SlicedPacket::from_ethernet(frame).expect("etherparse reads the frame");
    let Some(etherparse::LinkSlice::Ethernet2(eth)) = sliced.link else {
        panic!("no Ethernet header")
    };
    let Some(NetSlice::Ipv6(ip)) = sliced.net else {
        panic!("no IPv6 packet")
    };
    let header = ip.header();
    let Some(TransportSlice::Icmpv6(icmp)) = sliced.transport else {
        panic!("no ICMPv6 message")
    };
    assert!(
        icmp.is_checksum_valid(header.source(), header.destination()),
        "ICMPv6 checksum"
    );
    let Icmpv6Type::NeighborAdvertisement(flags) = icmp.icmp_type() else {
        panic!("not an advertisement: {:?}", icmp.icmp_type())
    };
    let payload = icmp.payload();
    let target = Ipv6Addr::from(<[u8; 16]>::try_from(&payload[..16]).unwrap());
    let mut target_lla = None;
    for option in etherparse::icmpv6::NdpOptionsIterator::from_slice(&payload[16..]) {
        if let etherparse::icmpv6::NdpOptionSlice::TargetLinkLayerAddress(lla) =
            option.expect("well-formed options")
        {
            target_lla = Some(MacAddr::new(lla.link_layer_address().try_into().unwrap()));
        }
    }
    AdvertisementFields {
        eth_dst: MacAddr::new(eth.destination()),
        eth_src: MacAddr::new(eth.source()),
        src_ip: header.source_addr(),
        dst_ip: header.destination_addr(),
        hop_limit: header.hop_limit(),
        router: flags.router,
        solicited: flags.solicited,
        override_flag: flags.r#override,
        target,
        target_lla,
    }
}
