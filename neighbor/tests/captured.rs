//! The frames captured from the real kernel and tools (tests/fixtures/*.pcap, made by
//! tests/fixtures/capture.sh in the kernel lab): our parser reads the requests, and
//! where the kernel answered or announced, our builders emit the very same bytes.

mod common;

use common::*;
use neighbor_frames::{MacAddr, Request, arp, ndp, parse};

fn arp_request(frame: &[u8]) -> arp::ArpRequest {
    match parse(frame) {
        Ok(Some(Request::Arp(request))) => request,
        other => panic!("not an ARP request: {other:?}"),
    }
}

fn solicitation(frame: &[u8]) -> ndp::NeighborSolicitation {
    match parse(frame) {
        Ok(Some(Request::NeighborSolicitation(ns))) => ns,
        other => panic!("not a Neighbor Solicitation: {other:?}"),
    }
}

/// Asserts `frame` is `built` followed only by zero padding (tools pad to Ethernet's
/// minimum, the kernel and we do not).
fn assert_same_frame(frame: &[u8], built: &[u8]) {
    assert!(
        frame.len() >= built.len(),
        "captured frame shorter than ours"
    );
    assert_eq!(hex(&frame[..built.len()]), hex(built));
    assert!(
        frame[built.len()..].iter().all(|b| *b == 0),
        "padding not zero"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn every_captured_frame_parses_without_error() {
    for name in CAPTURES {
        let frames = frames(name);
        assert!(!frames.is_empty(), "{name}: nothing captured");
        for (i, frame) in frames.iter().enumerate() {
            if let Err(error) = parse(frame) {
                panic!("{name} frame {i}: {error}");
            }
        }
    }
}

#[test]
fn our_arp_reply_is_the_kernels() {
    let frames = frames("arp_arping");
    assert_eq!(frames.len(), 2, "arping's request and the kernel's reply");
    let request = arp_request(&frames[0]);
    assert_eq!(
        request,
        arp::ArpRequest {
            eth_src: CLIENT_MAC,
            eth_dst: MacAddr::BROADCAST,
            sender_mac: CLIENT_MAC,
            sender_ip: CLIENT_IP,
            target_mac: MacAddr::ZERO,
            target_ip: NODE_IP,
        }
    );
    assert!(request.is_addressed_to(NODE_MAC));
    assert_eq!(parse(&frames[1]), Ok(None), "a reply asks nothing");
    assert_same_frame(&frames[1], &arp::reply(&request, NODE_MAC));
}

#[test]
fn the_kernels_own_request_and_our_reply() {
    let frames = frames("arp_kernel");
    let request = arp_request(&frames[0]);
    assert_eq!(
        (request.sender_mac, request.sender_ip),
        (CLIENT_MAC, CLIENT_IP)
    );
    assert_eq!(request.target_ip, NODE_IP);
    let reply = frames
        .iter()
        .find(|f| f[..6] == CLIENT_MAC.octets())
        .expect("the kernel's reply");
    assert_same_frame(reply, &arp::reply(&request, NODE_MAC));
    // The kernel builds its requests as we do.
    assert_same_frame(&frames[0], &arp::request(CLIENT_MAC, CLIENT_IP, NODE_IP));
}

#[test]
fn a_probe_is_answered_like_the_kernel() {
    let frames = frames("arp_probe");
    let at = frames
        .iter()
        .position(|f| matches!(parse(f), Ok(Some(Request::Arp(r))) if r.is_probe()))
        .expect("arping's probe");
    let probe = arp_request(&frames[at]);
    assert_eq!((probe.sender_mac, probe.target_ip), (CLIENT_MAC, NODE_IP));
    assert_same_frame(&frames[at + 1], &arp::reply(&probe, NODE_MAC));
}

#[test]
fn strict_arp_leaves_the_vip_unanswered() {
    // The request our responder exists for: the kernel sends nothing back.
    let frames = frames("arp_vip");
    let requests: Vec<_> = frames.iter().map(|f| arp_request(f)).collect();
    assert!(!requests.is_empty());
    assert!(
        requests
            .iter()
            .all(|r| r.target_ip == VIP && r.sender_mac == CLIENT_MAC)
    );
}

#[test]
fn arpings_gratuitous_forms() {
    let frames = frames("arp_arping_gratuitous");
    assert_eq!(frames.len(), 2, "arping -U and arping -U -P");
    let announcement = arp_request(&frames[0]);
    assert!(announcement.is_announcement());
    assert_eq!(announcement.sender_mac, CLIENT_MAC);
    // arping puts broadcast where RFC 5227 (and the kernel, and we) put zero.
    assert_eq!(announcement.target_mac, MacAddr::BROADCAST);
    assert_eq!(parse(&frames[1]), Ok(None));
    // arping's reply form also has broadcast as target hardware address, where we put
    // our own MAC (RFC 2002 4.6); the rest is the same frame.
    let mut ours = arp::gratuitous_reply(CLIENT_MAC, CLIENT_IP);
    ours[14 + 18..14 + 24].copy_from_slice(&MacAddr::BROADCAST.octets());
    assert_same_frame(&frames[1], &ours);
}

#[test]
fn our_gratuitous_request_is_the_kernels() {
    let frames = frames("kernel_mac_change");
    let garp = frames
        .iter()
        .find(|f| f[12..14] == [0x08, 0x06])
        .expect("the kernel's gratuitous ARP after the MAC change");
    assert!(arp_request(garp).is_announcement());
    assert_same_frame(garp, &arp::gratuitous_request(NODE_NEW_MAC, NODE_IP));
}

#[test]
fn our_advertisement_is_the_kernels() {
    let frames = frames("ndp_ndisc6");
    assert_eq!(
        frames.len(),
        2,
        "ndisc6's solicitation and the kernel's advertisement"
    );
    let ns = solicitation(&frames[0]);
    assert_eq!(
        ns,
        ndp::NeighborSolicitation {
            eth_src: CLIENT_MAC,
            eth_dst: ndp::solicited_node_mac(NODE_IP6),
            src_ip: CLIENT_LL,
            dst_ip: ndp::solicited_node(NODE_IP6),
            target: NODE_IP6,
            source_lla: Some(CLIENT_MAC),
        }
    );
    assert!(ns.is_addressed_to(NODE_MAC));
    assert_eq!(parse(&frames[1]), Ok(None));
    assert_same_frame(&frames[1], &ndp::advertisement(&ns, NODE_MAC));
}

#[test]
fn the_kernel_leaves_the_vip6_unanswered() {
    // The capture also holds the two sides resolving each other's link-local address.
    let frames = frames("ndp_vip");
    let asked: Vec<_> = frames
        .iter()
        .filter_map(|f| match parse(f) {
            Ok(Some(Request::NeighborSolicitation(ns))) if ns.target == VIP6 => Some(ns),
            _ => None,
        })
        .collect();
    assert!(!asked.is_empty(), "ndisc6's solicitation for the VIP");
    for ns in &asked {
        assert_eq!((ns.eth_src, ns.src_ip), (CLIENT_MAC, CLIENT_LL));
        assert_eq!(ns.dst_ip, ndp::solicited_node(VIP6));
        assert_eq!(ns.eth_dst, ndp::solicited_node_mac(VIP6));
    }
    let answered = frames.iter().any(|f| {
        f[12..14] == [0x86, 0xdd]
            && f[54] == ndp::TYPE_NEIGHBOR_ADVERTISEMENT
            && f[62..78] == VIP6.octets()
    });
    assert!(!answered, "the kernel advertised the VIP on eth0");
}

#[test]
fn a_reachability_probe_is_unicast_and_answered_to_its_source() {
    let frames = frames("ndp_nud");
    // The capture also holds other resolutions (the node's of the client, the client's
    // of the node's link-local address); the probe is the client's for fd00:77::1.
    let probe = frames
        .iter()
        .find_map(|f| match parse(f) {
            Ok(Some(Request::NeighborSolicitation(ns)))
                if ns.eth_src == CLIENT_MAC && ns.target == NODE_IP6 =>
            {
                Some(ns)
            }
            _ => None,
        })
        .expect("the client's unicast probe");
    assert_eq!(probe.eth_dst, NODE_MAC);
    assert_eq!(probe.dst_ip, NODE_IP6);
    assert_eq!(probe.target, NODE_IP6);
    assert!(probe.is_addressed_to(NODE_MAC));
    assert!(!probe.is_addressed_to(NODE_NEW_MAC));
    // The kernel answers a unicast probe without the target address option and with
    // Override clear (RFC 4861 7.2.4 lets it); ours carries both (see the ndp module)
    // and goes to the same place.
    let kernels = frames
        .iter()
        .find(|f| {
            f[6..12] == NODE_MAC.octets()
                && f[54] == ndp::TYPE_NEIGHBOR_ADVERTISEMENT
                && f[62..78] == NODE_IP6.octets()
        })
        .expect("the kernel's advertisement");
    assert_eq!(kernels.len(), 78, "no option in the kernel's answer");
    let ours = ndp::advertisement(&probe, NODE_MAC);
    assert_eq!(ours[..12], kernels[..12], "Ethernet addresses");
    assert_eq!(
        ours[14 + 8..14 + 40],
        kernels[14 + 8..14 + 40],
        "IPv6 addresses"
    );
    assert_eq!(
        kernels[54 + 4],
        0x40,
        "the kernel's: Solicited, not Override"
    );
    assert_eq!(ours[54 + 4], 0x60, "ours: Solicited and Override");
}

#[test]
fn duplicate_address_detection_and_mld_from_the_kernel() {
    let frames = frames("ndp_dad");
    let dad_target: std::net::Ipv6Addr = "fd00:77::3".parse().unwrap();
    let mut dads = 0;
    let mut ignored = 0;
    for frame in &frames {
        match parse(frame) {
            Ok(Some(Request::NeighborSolicitation(ns))) => {
                assert!(ns.is_dad());
                assert_eq!(ns.target, dad_target);
                assert_eq!(ns.dst_ip, ndp::solicited_node(dad_target));
                assert_eq!(ns.source_lla, None);
                // The kernel adds a nonce option (RFC 7527), which is skipped.
                assert_eq!(frame[54 + 24], 14, "the nonce option");
                // Answered to all-nodes, Solicited clear.
                let na = ndp::advertisement(&ns, NODE_MAC);
                assert_eq!(na[..6], [0x33, 0x33, 0, 0, 0, 1]);
                assert_eq!(na[54 + 4], 0x20);
                dads += 1;
            }
            Ok(_) => ignored += 1,
            Err(error) => panic!("{error}"),
        }
    }
    assert!(dads >= 1, "the kernel's DAD probe");
    assert!(
        ignored >= 1,
        "the MLD report (hop-by-hop header first) is not a request"
    );
}

#[test]
fn our_unsolicited_advertisement_is_the_kernels() {
    let frames = frames("kernel_mac_change");
    let kernels = frames
        .iter()
        .find(|f| f[12..14] == [0x86, 0xdd] && f[54 + 8..54 + 24] == NODE_IP6.octets())
        .expect("the kernel's unsolicited advertisement of fd00:77::1");
    assert_eq!(parse(kernels), Ok(None));
    assert_same_frame(
        kernels,
        &ndp::unsolicited_advertisement(NODE_NEW_MAC, NODE_IP6),
    );
}
