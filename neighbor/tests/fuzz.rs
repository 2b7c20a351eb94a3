//! Property tests: whatever the bytes, `parse` returns (never panics), its errors are
//! typed and printable, a corrupted solicitation is never taken for a valid one, and
//! what the builders emit parses back into what they were given.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};

use neighbor_frames::{MacAddr, Request, arp, ndp, parse};
use proptest::prelude::*;

/// Every frame of every fixture capture: real traffic to mutate.
fn captured() -> Vec<Vec<u8>> {
    common::CAPTURES
        .iter()
        .flat_map(|name| common::frames(name))
        .collect()
}

fn unicast_mac() -> impl Strategy<Value = MacAddr> {
    any::<[u8; 6]>().prop_map(|mut octets| {
        octets[0] &= 0xfe; // an individual address, as a station has
        MacAddr::new(octets)
    })
}

fn unicast_v6() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>()
        .prop_map(Ipv6Addr::from)
        .prop_filter("not multicast", |ip| !ip.is_multicast())
}

/// Parses and, for an error, formats it: the whole of what a responder does with a
/// frame it will not answer.
fn parse_and_describe(frame: &[u8]) -> Result<Option<Request>, String> {
    parse(frame).map_err(|error| {
        let text = error.to_string();
        assert!(!text.is_empty());
        text
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn random_bytes_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_and_describe(&frame);
    }

    /// Random bytes behind a real header, so the fuzzing reaches past the EtherType.
    #[test]
    fn random_arp_and_ipv6_bodies_never_panic(
        ethertype in prop_oneof![Just([0x08, 0x06]), Just([0x86, 0xdd])],
        body in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        let mut frame = vec![0xff; 12];
        frame.extend_from_slice(&ethertype);
        frame.extend_from_slice(&body);
        let _ = parse_and_describe(&frame);
    }

    #[test]
    fn mutated_captures_never_panic(
        pick in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        tail in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let frames = captured();
        let mut frame = pick.get(&frames).clone();
        for (at, byte) in flips {
            let at = at.index(frame.len());
            frame[at] = byte;
        }
        let _ = parse_and_describe(&frame);
        frame.truncate(cut.index(frame.len() + 1));
        let _ = parse_and_describe(&frame);
        frame.extend_from_slice(&tail);
        let _ = parse_and_describe(&frame);
    }

    /// One changed byte anywhere from the IPv6 source to the end of the message is
    /// caught (the checksum covers all of it, pseudo-header included), so a responder
    /// never answers a corrupted solicitation.
    #[test]
    fn a_corrupted_solicitation_is_never_accepted(
        eth_src in unicast_mac(),
        src in unicast_v6(),
        target in unicast_v6(),
        at in any::<prop::sample::Index>(),
        delta in 1u8..=255,
    ) {
        let mut frame = ndp::solicitation(eth_src, src, target);
        prop_assert!(matches!(parse(&frame), Ok(Some(_))));
        let at = 14 + 8 + at.index(frame.len() - 14 - 8);
        frame[at] = frame[at].wrapping_add(delta);
        let parsed = parse(&frame);
        prop_assert!(!matches!(parsed, Ok(Some(_))), "byte {at} changed, parsed as {parsed:?}");
    }

    #[test]
    fn solicitations_round_trip(eth_src in unicast_mac(), src in unicast_v6(), target in unicast_v6(), dad in any::<bool>()) {
        let src = if dad { Ipv6Addr::UNSPECIFIED } else { src };
        let frame = ndp::solicitation(eth_src, src, target);
        let Ok(Some(Request::NeighborSolicitation(ns))) = parse(&frame) else {
            panic!("{:?}", parse(&frame))
        };
        prop_assert_eq!(ns.eth_src, eth_src);
        prop_assert_eq!(ns.eth_dst, ndp::solicited_node_mac(target));
        prop_assert_eq!(ns.src_ip, src);
        prop_assert_eq!(ns.dst_ip, ndp::solicited_node(target));
        prop_assert_eq!(ns.target, target);
        prop_assert_eq!(ns.source_lla, (!dad).then_some(eth_src));
        prop_assert!(ns.is_addressed_to(MacAddr::new([2, 0, 0, 0, 0, 9])));
    }

    #[test]
    fn arp_requests_round_trip(
        sender in unicast_mac(),
        sender_ip in any::<u32>().prop_map(Ipv4Addr::from),
        target_ip in any::<u32>().prop_map(Ipv4Addr::from),
        ours in unicast_mac(),
    ) {
        let Ok(Some(Request::Arp(request))) = parse(&arp::request(sender, sender_ip, target_ip)) else {
            panic!("request did not parse")
        };
        prop_assert_eq!((request.sender_mac, request.sender_ip, request.target_ip), (sender, sender_ip, target_ip));
        // The reply is a reply (ignored by parse) and the gratuitous request claims ours.
        prop_assert_eq!(parse(&arp::reply(&request, ours)), Ok(None));
        let Ok(Some(Request::Arp(garp))) = parse(&arp::gratuitous_request(ours, target_ip)) else {
            panic!("gratuitous request did not parse")
        };
        prop_assert!(garp.is_announcement());
        prop_assert_eq!(garp.sender_mac, ours);
    }

    /// Advertisements are valid ICMPv6 (etherparse checks the checksum) and are not
    /// taken for requests.
    #[test]
    fn advertisements_are_valid_icmpv6(
        eth_src in unicast_mac(),
        src in unicast_v6(),
        target in unicast_v6(),
        ours in unicast_mac(),
    ) {
        let Ok(Some(Request::NeighborSolicitation(ns))) = parse(&ndp::solicitation(eth_src, src, target)) else {
            panic!("solicitation did not parse")
        };
        for frame in [ndp::advertisement(&ns, ours), ndp::unsolicited_advertisement(ours, target)] {
            prop_assert_eq!(parse(&frame), Ok(None));
            let sliced = etherparse::SlicedPacket::from_ethernet(&frame).unwrap();
            let Some(etherparse::NetSlice::Ipv6(ip)) = sliced.net else { panic!("no IPv6") };
            let Some(etherparse::TransportSlice::Icmpv6(icmp)) = sliced.transport else { panic!("no ICMPv6") };
            prop_assert!(icmp.is_checksum_valid(ip.header().source(), ip.header().destination()));
        }
    }
}
