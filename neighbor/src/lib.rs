//! The Ethernet frames of a layer-2 responder: ARP (RFC 826) and IPv6 Neighbor
//! Discovery (RFC 4861), parsed and built without any I/O.
//!
//! The agent's layer-2 announcer reads every ARP and ICMPv6 frame of an interface from a
//! packet socket, hands each to [`parse`], and answers the [`Request`]s for addresses it
//! owns with the frames built here:
//!
//! - an ARP request → [`arp::reply`];
//! - a Neighbor Solicitation → [`ndp::advertisement`];
//! - on takeover, [`arp::gratuitous_request`], [`arp::gratuitous_reply`] and
//!   [`ndp::unsolicited_advertisement`], so every neighbour's cache moves to our MAC.
//!
//! Headers, the ARP packet and the ICMPv6 checksum come from `etherparse`; the NDP option
//! walk and the target link-layer address option are written here (see [`ndp`]).
//!
//! ```
//! use std::net::Ipv4Addr;
//! use neighbor_frames::{MacAddr, Request, arp, parse};
//!
//! let ours = MacAddr::new([0x02, 0, 0, 0, 0, 0x01]);
//! let vip = Ipv4Addr::new(192, 168, 77, 100);
//! // A broadcast "who has 192.168.77.100? tell 192.168.77.2".
//! let asker = MacAddr::new([0x02, 0, 0, 0, 0, 0x02]);
//! let question = arp::request(asker, Ipv4Addr::new(192, 168, 77, 2), vip);
//! let Some(Request::Arp(request)) = parse(&question)? else { panic!("not a request") };
//! assert_eq!(request.target_ip, vip);
//! let answer = arp::reply(&request, ours);
//! assert_eq!(&answer[0..6], &asker.octets()); // unicast back to the asker
//! # Ok::<(), neighbor_frames::FrameError>(())
//! ```

pub mod arp;
mod error;
mod mac;
pub mod ndp;

use std::net::IpAddr;

use etherparse::{EtherType, Ethernet2Header};

pub use error::FrameError;
pub use mac::MacAddr;

/// Length of an Ethernet II header: destination, source, EtherType.
pub const ETHERNET_HEADER_LEN: usize = Ethernet2Header::LEN;

/// A question from the wire that a responder may have to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// "Who has this IPv4 address?"
    Arp(arp::ArpRequest),
    /// "Who has this IPv6 address?" (address resolution, reachability probe or DAD).
    NeighborSolicitation(ndp::NeighborSolicitation),
}

impl Request {
    /// The address asked for: the ARP target IP or the solicitation's target.
    pub fn target(&self) -> IpAddr {
        match self {
            Request::Arp(request) => IpAddr::V4(request.target_ip),
            Request::NeighborSolicitation(ns) => IpAddr::V6(ns.target),
        }
    }

    /// Whether the frame was sent to an interface whose MAC is `ours`: its Ethernet
    /// destination is `ours` or a group this kind of request uses (broadcast for ARP,
    /// the IPv6 destination's multicast MAC for a solicitation). A packet socket in
    /// promiscuous mode also sees frames for other hosts, which must not be answered.
    pub fn is_addressed_to(&self, ours: MacAddr) -> bool {
        match self {
            Request::Arp(request) => request.is_addressed_to(ours),
            Request::NeighborSolicitation(ns) => ns.is_addressed_to(ours),
        }
    }
}

/// Parses one Ethernet frame (as read from a packet socket, starting at the destination
/// MAC) into the request it carries.
///
/// Returns `Ok(None)` for well-formed traffic that asks nothing of a responder: other
/// EtherTypes (IPv4, VLAN-tagged frames, ...), ARP replies, ICMPv6 messages other than
/// Neighbor Solicitations, IPv6 packets whose next header is not ICMPv6. Returns an
/// error for an ARP or Neighbor Solicitation frame that fails the validity checks of its
/// RFC (see [`arp`] and [`ndp`]), or for a frame too short for its headers. Never panics,
/// whatever the bytes.
pub fn parse(frame: &[u8]) -> Result<Option<Request>, FrameError> {
    let (ethernet, payload) =
        Ethernet2Header::from_slice(frame).map_err(|_| FrameError::Truncated {
            layer: "Ethernet",
            needed: ETHERNET_HEADER_LEN,
            available: frame.len(),
        })?;
    let eth_src = MacAddr::new(ethernet.source);
    let eth_dst = MacAddr::new(ethernet.destination);
    match ethernet.ether_type {
        EtherType::ARP => Ok(arp::parse(eth_src, eth_dst, payload)?.map(Request::Arp)),
        EtherType::IPV6 => {
            Ok(ndp::parse(eth_src, eth_dst, payload)?.map(Request::NeighborSolicitation))
        }
        _ => Ok(None),
    }
}
