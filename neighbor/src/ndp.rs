//! IPv6 Neighbor Discovery (RFC 4861) over Ethernet: Neighbor Solicitations parsed,
//! Neighbor Advertisements built, and the solicited-node multicast addresses.
//!
//! # Validation of a Neighbor Solicitation (RFC 4861 7.1.1)
//!
//! IP hop limit 255, valid ICMPv6 checksum, ICMP code 0, ICMP length 24 or more, target
//! not multicast, every option of non-zero length and within the message; from the
//! unspecified address (duplicate address detection) only to a solicited-node group and
//! without a source link-layer address option. Also: an IPv6 source that is multicast
//! is rejected (RFC 4291 2.7), and a source link-layer address option must hold one
//! Ethernet address (RFC 2464 8). Options of other types are skipped, as RFC 4861 asks.
//!
//! The hop limit is not kept in [`NeighborSolicitation`]: every one that parses has 255.
//!
//! # The advertisements built
//!
//! Always with the target link-layer address option (our MAC), hop limit 255, traffic
//! class and flow label 0, the Router flag clear (a LoadBalancer IP is no router).
//!
//! **Override flag.** RFC 4861 7.2.4 sets Override in a solicited advertisement unless
//! the target is anycast or proxied or the option is left out. MetalLB clears it,
//! treating its answers as proxy answers. We set it: the election makes this node the
//! address's only owner (as the kernel is for its own addresses, whose answers carry
//! Override), and with Override clear a neighbour whose entry still holds a previous
//! owner's MAC keeps it (RFC 4861 7.2.5) until its reachability probes of the dead owner
//! fail — seconds of failover the announcer exists to avoid. The cost: if two nodes
//! ever both believe they own an address, the last answer wins at each neighbour, the
//! same as with gratuitous ARP.
//!
//! **Destination.** To the solicitation's source (Ethernet: its source link-layer address
//! option, else the frame's source MAC), Solicited set; a solicitation from `::`
//! (duplicate address detection) is answered to all-nodes (`ff02::1`,
//! `33:33:00:00:00:01`) with Solicited clear (RFC 4861 7.2.4).

use std::net::Ipv6Addr;

use etherparse::{
    EtherType, Ethernet2Header, Icmpv6Slice, Icmpv6Type, IpNumber, Ipv6FlowLabel, Ipv6Header,
    icmpv6::NeighborAdvertisementHeader,
};

use crate::{ETHERNET_HEADER_LEN, FrameError, MacAddr};

/// ICMPv6 type of a Neighbor Solicitation (135).
pub const TYPE_NEIGHBOR_SOLICITATION: u8 = 135;
/// ICMPv6 type of a Neighbor Advertisement (136).
pub const TYPE_NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// The hop limit every Neighbor Discovery message is sent with and must arrive with.
pub const NDP_HOP_LIMIT: u8 = 255;
/// `ff02::1`, the link-local all-nodes group unsolicited advertisements go to.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// NDP option type: source link-layer address.
const OPTION_SOURCE_LLA: u8 = 1;
/// NDP option type: target link-layer address.
const OPTION_TARGET_LLA: u8 = 2;
/// ICMPv6 header (type, code, checksum, 4 bytes of flags/reserved).
const ICMP_HEADER_LEN: usize = 8;
/// A solicitation or advertisement without options: header and target address.
const MESSAGE_LEN: usize = ICMP_HEADER_LEN + 16;
/// The target link-layer address option for Ethernet: type, length 1, six octets.
const LLA_OPTION_LEN: usize = 8;

/// Length of every Neighbor Advertisement frame built here: Ethernet, IPv6, the message
/// and the target link-layer address option.
pub const NA_FRAME_LEN: usize =
    ETHERNET_HEADER_LEN + Ipv6Header::LEN + MESSAGE_LEN + LLA_OPTION_LEN;

/// A Neighbor Solicitation: "who has `target`?", from `src_ip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NeighborSolicitation {
    /// The Ethernet source of the frame.
    pub eth_src: MacAddr,
    /// The Ethernet destination: the solicited-node group's MAC for resolution, a
    /// station's own MAC for a reachability probe.
    pub eth_dst: MacAddr,
    /// The IPv6 source: the asker, or `::` for duplicate address detection.
    pub src_ip: Ipv6Addr,
    /// The IPv6 destination: the target's solicited-node group, or the target itself.
    pub dst_ip: Ipv6Addr,
    /// The address asked for.
    pub target: Ipv6Addr,
    /// The asker's MAC from its source link-layer address option, when it sent one
    /// (always for multicast resolution, RFC 4861 4.3; never from `::`).
    pub source_lla: Option<MacAddr>,
}

impl NeighborSolicitation {
    /// Whether this is duplicate address detection (RFC 4862 5.4.2): source `::`. A
    /// station is about to take `target`; answering tells it the address is in use.
    pub fn is_dad(&self) -> bool {
        self.src_ip.is_unspecified()
    }

    /// Whether the frame was sent to a station whose MAC is `ours`: to `ours`, or to
    /// the multicast MAC of the IPv6 destination group.
    pub fn is_addressed_to(&self, ours: MacAddr) -> bool {
        self.eth_dst == ours
            || (self.dst_ip.is_multicast() && self.eth_dst == multicast_mac(self.dst_ip))
    }
}

/// Parses the IPv6 packet of an Ethernet frame whose EtherType is IPv6.
///
/// `Ok(None)` for valid traffic that is not a Neighbor Solicitation; bytes after the
/// IPv6 payload length (Ethernet padding) are ignored.
pub(crate) fn parse(
    eth_src: MacAddr,
    eth_dst: MacAddr,
    packet: &[u8],
) -> Result<Option<NeighborSolicitation>, FrameError> {
    let version = packet.first().map_or(6, |b| b >> 4);
    if version != 6 {
        return Err(FrameError::NotIpv6(version));
    }
    let (ip, rest) = Ipv6Header::from_slice(packet).map_err(|_| FrameError::Truncated {
        layer: "IPv6",
        needed: Ipv6Header::LEN,
        available: packet.len(),
    })?;
    let payload_len = usize::from(ip.payload_length);
    let payload = rest.get(..payload_len).ok_or(FrameError::Truncated {
        layer: "IPv6 payload",
        needed: payload_len,
        available: rest.len(),
    })?;
    // Extension headers (hop-by-hop in MLD reports, ...) are not walked: the kernel
    // sends solicitations without them, and an answer to one behind them is not needed.
    if ip.next_header != IpNumber::IPV6_ICMP {
        return Ok(None);
    }
    match payload.first() {
        None => {
            return Err(FrameError::Truncated {
                layer: "ICMPv6",
                needed: ICMP_HEADER_LEN,
                available: 0,
            });
        }
        Some(&TYPE_NEIGHBOR_SOLICITATION) => {}
        Some(_) => return Ok(None),
    }
    let src_ip = Ipv6Addr::from(ip.source);
    let dst_ip = Ipv6Addr::from(ip.destination);
    if src_ip.is_multicast() {
        return Err(FrameError::MulticastSource(src_ip));
    }
    if ip.hop_limit != NDP_HOP_LIMIT {
        return Err(FrameError::HopLimit(ip.hop_limit));
    }
    if payload.len() < MESSAGE_LEN {
        return Err(FrameError::Truncated {
            layer: "Neighbor Solicitation",
            needed: MESSAGE_LEN,
            available: payload.len(),
        });
    }
    check_checksum(payload, ip.source, ip.destination)?;
    if payload[1] != 0 {
        return Err(FrameError::IcmpCode(payload[1]));
    }
    let mut target = [0; 16];
    target.copy_from_slice(&payload[ICMP_HEADER_LEN..MESSAGE_LEN]);
    let target = Ipv6Addr::from(target);
    if target.is_multicast() {
        return Err(FrameError::MulticastTarget(target));
    }
    let source_lla = source_link_layer_address(&payload[MESSAGE_LEN..])?;
    if src_ip.is_unspecified() {
        if source_lla.is_some() {
            return Err(FrameError::DadWithSourceLinkLayer);
        }
        if !is_solicited_node(dst_ip) {
            return Err(FrameError::DadNotToSolicitedNode(dst_ip));
        }
    }
    Ok(Some(NeighborSolicitation {
        eth_src,
        eth_dst,
        src_ip,
        dst_ip,
        target,
        source_lla,
    }))
}

/// Checks an ICMPv6 message's checksum the RFC 1071 way (the sum over pseudo-header and
/// message, checksum included, is all ones), with the expected value in the error.
fn check_checksum(
    message: &[u8],
    source: [u8; 16],
    destination: [u8; 16],
) -> Result<(), FrameError> {
    let Ok(icmp) = Icmpv6Slice::from_slice(message) else {
        return Err(FrameError::Truncated {
            layer: "ICMPv6",
            needed: ICMP_HEADER_LEN,
            available: message.len(),
        });
    };
    if icmp.is_checksum_valid(source, destination) {
        return Ok(());
    }
    // The generic form covers whatever the reserved bytes hold: they count in the sum.
    let generic = Icmpv6Type::Unknown {
        type_u8: icmp.type_u8(),
        code_u8: icmp.code_u8(),
        bytes5to8: icmp.bytes5to8(),
    };
    Err(FrameError::Checksum {
        found: icmp.checksum(),
        expected: generic
            .calc_checksum(source, destination, icmp.payload())
            .unwrap_or_default(),
    })
}

/// Walks the options of a solicitation (RFC 4861 4.6) and returns the first source
/// link-layer address. Written here rather than with etherparse's option iterator,
/// which rejects a malformed option of a type the RFC says to skip and stops there.
fn source_link_layer_address(mut options: &[u8]) -> Result<Option<MacAddr>, FrameError> {
    let mut offset = 0;
    let mut found = None;
    while !options.is_empty() {
        let option_type = options[0];
        let len = options.get(1).map_or(0, |units| usize::from(*units) * 8);
        let bad_length = FrameError::OptionLength {
            option_type,
            offset,
        };
        if len == 0 || len > options.len() {
            return Err(bad_length);
        }
        if option_type == OPTION_SOURCE_LLA && found.is_none() {
            let address = &options[2..len];
            let mac: [u8; 6] = address
                .try_into()
                .map_err(|_| FrameError::LinkLayerAddressLength(address.len()))?;
            found = Some(MacAddr::new(mac));
        }
        options = &options[len..];
        offset += len;
    }
    Ok(found)
}

/// The advertisement answering `ns` for the station at `ours` (see the module
/// documentation for its flags and destination). The IPv6 source is the target, as the
/// kernel sends it for its own addresses.
pub fn advertisement(ns: &NeighborSolicitation, ours: MacAddr) -> [u8; NA_FRAME_LEN] {
    let (eth_dst, dst_ip, solicited) = if ns.is_dad() {
        (multicast_mac(ALL_NODES), ALL_NODES, false)
    } else {
        (ns.source_lla.unwrap_or(ns.eth_src), ns.src_ip, true)
    };
    advertisement_frame(
        eth_dst,
        ours,
        dst_ip,
        ns.target,
        NeighborAdvertisementHeader {
            router: false,
            solicited,
            r#override: true,
        },
    )
}

/// An unsolicited advertisement of `target` at `ours` (RFC 4861 7.2.6) to all-nodes:
/// Solicited clear, Override set, so every neighbour with an entry for `target` moves it
/// to `ours`. Byte for byte what the kernel sends for its own address (`ndisc_notify`).
pub fn unsolicited_advertisement(ours: MacAddr, target: Ipv6Addr) -> [u8; NA_FRAME_LEN] {
    advertisement_frame(
        multicast_mac(ALL_NODES),
        ours,
        ALL_NODES,
        target,
        NeighborAdvertisementHeader {
            router: false,
            solicited: false,
            r#override: true,
        },
    )
}

fn advertisement_frame(
    eth_dst: MacAddr,
    ours: MacAddr,
    dst_ip: Ipv6Addr,
    target: Ipv6Addr,
    flags: NeighborAdvertisementHeader,
) -> [u8; NA_FRAME_LEN] {
    let mut body = [0; MESSAGE_LEN - ICMP_HEADER_LEN + LLA_OPTION_LEN];
    body[..16].copy_from_slice(&target.octets());
    body[16] = OPTION_TARGET_LLA;
    body[17] = 1;
    body[18..].copy_from_slice(&ours.octets());
    let mut out = [0; NA_FRAME_LEN];
    let icmp_type = Icmpv6Type::NeighborAdvertisement(flags);
    write_message(&mut out, eth_dst, ours, target, dst_ip, icmp_type, &body);
    out
}

/// A Neighbor Solicitation for `target` from `src_ip` at `eth_src`, as a station
/// resolving an address sends it: to the target's solicited-node group, with a source
/// link-layer address option unless `src_ip` is `::` (duplicate address detection).
/// For tests and tools; the responder only answers solicitations.
pub fn solicitation(eth_src: MacAddr, src_ip: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let group = solicited_node(target);
    let mut body = target.octets().to_vec();
    if !src_ip.is_unspecified() {
        body.extend_from_slice(&[OPTION_SOURCE_LLA, 1]);
        body.extend_from_slice(&eth_src.octets());
    }
    let mut out = vec![0; ETHERNET_HEADER_LEN + Ipv6Header::LEN + ICMP_HEADER_LEN + body.len()];
    let icmp_type = Icmpv6Type::NeighborSolicitation;
    write_message(
        &mut out,
        multicast_mac(group),
        eth_src,
        src_ip,
        group,
        icmp_type,
        &body,
    );
    out
}

/// Writes Ethernet, IPv6 (hop limit 255, traffic class and flow label 0) and an ICMPv6
/// message with its checksum into `out`, which is exactly as long as they are; `body`
/// is what follows the 8-byte ICMPv6 header.
fn write_message(
    out: &mut [u8],
    eth_dst: MacAddr,
    eth_src: MacAddr,
    src_ip: Ipv6Addr,
    dst_ip: Ipv6Addr,
    icmp_type: Icmpv6Type,
    body: &[u8],
) {
    let ethernet = Ethernet2Header {
        source: eth_src.octets(),
        destination: eth_dst.octets(),
        ether_type: EtherType::IPV6,
    };
    let ip = Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::ZERO,
        // The messages built here are a few dozen bytes.
        payload_length: u16::try_from(ICMP_HEADER_LEN + body.len()).unwrap_or(u16::MAX),
        next_header: IpNumber::IPV6_ICMP,
        hop_limit: NDP_HOP_LIMIT,
        source: src_ip.octets(),
        destination: dst_ip.octets(),
    };
    // calc_checksum fails only for a message over 4 GiB.
    let checksum = icmp_type
        .calc_checksum(ip.source, ip.destination, body)
        .unwrap_or_default();
    let icmp = etherparse::Icmpv6Header {
        icmp_type,
        checksum,
    };
    let (eth_part, rest) = out.split_at_mut(ETHERNET_HEADER_LEN);
    eth_part.copy_from_slice(&ethernet.to_bytes());
    let (ip_part, rest) = rest.split_at_mut(Ipv6Header::LEN);
    ip_part.copy_from_slice(&ip.to_bytes());
    let (icmp_part, body_part) = rest.split_at_mut(ICMP_HEADER_LEN);
    icmp_part.copy_from_slice(&icmp.to_bytes());
    body_part.copy_from_slice(body);
}

/// The solicited-node multicast group of `addr` (RFC 4291 2.7.1): `ff02::1:ff` and the
/// address's low 24 bits. Solicitations for `addr` go there, so a responder for `addr`
/// joins it on the interface.
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

/// Whether `addr` is a solicited-node multicast group (`ff02::1:ff00:0/104`).
pub fn is_solicited_node(addr: Ipv6Addr) -> bool {
    addr.octets()[..13] == solicited_node(Ipv6Addr::UNSPECIFIED).octets()[..13]
}

/// The Ethernet MAC of an IPv6 multicast group (RFC 2464 7): `33:33` and the group's
/// low 32 bits. For a group that is not multicast the result is meaningless.
pub fn multicast_mac(group: Ipv6Addr) -> MacAddr {
    let o = group.octets();
    MacAddr::new([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// The MAC solicitations for `addr` are sent to, `33:33:ff:xx:xx:xx`: the one the
/// interface must accept (join [`solicited_node`] on it) to hear them.
pub fn solicited_node_mac(addr: Ipv6Addr) -> MacAddr {
    multicast_mac(solicited_node(addr))
}
