//! The layer-2 announcer's wire side: answering ARP and Neighbor Solicitations for the
//! LoadBalancer IPs this node owns, and announcing them on takeover.
//!
//! - [`network`]: per interface, the packet sockets (ARP requests, Neighbor
//!   Solicitations) and the solicited-node group memberships ([`network::Interface`]).
//! - [`answer`] and [`takeover_frames`]: what to send, as pure functions over the frame
//!   codec of the `neighbor-frames` crate.
//! - [`respond`]: the receive loop of one interface, answering for the addresses an
//!   ownership check accepts.
//! - [`announcer`]: the announcer the agent runs ([`spawn_l2_announcer`]): responders
//!   on the interfaces [`interfaces`] chooses for the IPs this node owns, takeover
//!   bursts, and the [`metrics`].
//!
//! Which node owns which IP (the election) is decided elsewhere (`lb::decision`);
//! this module answers for what it is told.

pub mod announcer;
pub mod interfaces;
pub mod metrics;
pub mod network;

use std::net::IpAddr;

use neighbor_frames::{FrameError, MacAddr, Request, arp, ndp, parse};

pub use announcer::{L2Handle, L2Options, L2Status, TAKEOVER_BURST, Wanted, spawn_l2_announcer};
pub use metrics::L2Metrics;
pub use network::{FrameKind, FrameSocket, Interface, L2Error, SolicitedNodeGroups};

/// Receive buffer size: an Ethernet frame of the usual MTU, its header included. A
/// longer solicitation is cut, and its checksum then rejects it.
const FRAME_BUFFER: usize = 1514;

/// The frame to send back for one received `frame` on the interface whose MAC is
/// `ours`, if any: an ARP reply or a Neighbor Advertisement when the frame is a request
/// sent to us (broadcast, our MAC or the solicited-node group) for an address `owns`
/// accepts.
///
/// Not answered: other traffic; requests for addresses we do not own; frames another
/// station's NIC was meant to take (seen in promiscuous mode); and gratuitous ARP
/// requests (another station announcing the address: nobody waits for an answer).
/// Address-conflict probes (RFC 5227) and duplicate address detection for an owned
/// address are answered, as the kernel answers them for its own addresses: that tells
/// the newcomer the address is taken.
///
/// An error is a malformed or invalid request (see `neighbor_frames::parse`): the
/// caller drops it, and may count it.
pub fn answer(
    frame: &[u8],
    ours: MacAddr,
    owns: impl Fn(IpAddr) -> bool,
) -> Result<Option<Vec<u8>>, FrameError> {
    let Some(request) = parse(frame)? else {
        return Ok(None);
    };
    if !request.is_addressed_to(ours) || !owns(request.target()) {
        return Ok(None);
    }
    Ok(match request {
        Request::Arp(request) if request.is_announcement() => None,
        Request::Arp(request) => Some(arp::reply(&request, ours).to_vec()),
        Request::NeighborSolicitation(ns) => Some(ndp::advertisement(&ns, ours).to_vec()),
    })
}

/// The frames that move every neighbour's cache entry for `ip` to `ours` when this node
/// takes the address over: for IPv4 a gratuitous ARP request and a gratuitous ARP
/// reply (stations differ in which they learn from), for IPv6 an unsolicited Neighbor
/// Advertisement with Override set. The caller sends them at once and again in a short
/// burst.
pub fn takeover_frames(ours: MacAddr, ip: IpAddr) -> Vec<Vec<u8>> {
    match ip {
        IpAddr::V4(ip) => vec![
            arp::gratuitous_request(ours, ip).to_vec(),
            arp::gratuitous_reply(ours, ip).to_vec(),
        ],
        IpAddr::V6(ip) => vec![ndp::unsolicited_advertisement(ours, ip).to_vec()],
    }
}

/// Sends the takeover frames for `ip` (see [`takeover_frames`]) on `interface`: the
/// ARP ones on its ARP socket, the advertisement on its NDP socket.
pub async fn announce(interface: &Interface, ip: IpAddr) -> std::io::Result<()> {
    let socket = match ip {
        IpAddr::V4(_) => &interface.arp,
        IpAddr::V6(_) => &interface.ndp,
    };
    for frame in takeover_frames(interface.mac, ip) {
        socket.send(&frame).await?;
    }
    Ok(())
}

/// Answers the requests arriving on `interface` for the addresses `owns` accepts,
/// until a socket fails (the interface went away); returns that error. Invalid frames
/// are dropped and logged at debug level, never fatal.
///
/// The solicited-node groups of the IPv6 addresses must be joined
/// ([`SolicitedNodeGroups::join`]) for multicast solicitations to arrive.
pub async fn respond(interface: &Interface, owns: impl Fn(IpAddr) -> bool) -> std::io::Result<()> {
    let mut arp_buffer = vec![0; FRAME_BUFFER];
    let mut ndp_buffer = vec![0; FRAME_BUFFER];
    loop {
        let (socket, len, buffer) = tokio::select! {
            len = interface.arp.recv(&mut arp_buffer) => (&interface.arp, len?, &arp_buffer),
            len = interface.ndp.recv(&mut ndp_buffer) => (&interface.ndp, len?, &ndp_buffer),
        };
        match answer(&buffer[..len], interface.mac, &owns) {
            Ok(Some(reply)) => socket.send(&reply).await?,
            Ok(None) => {}
            Err(error) => {
                tracing::debug!(interface = %interface.name, %error, "dropped an invalid frame");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const OURS: MacAddr = MacAddr::new([0x02, 0, 0, 0, 0, 0x01]);
    const ASKER: MacAddr = MacAddr::new([0x02, 0, 0, 0, 0, 0x02]);
    const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
    const ASKER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const ASKER_IP6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);

    fn only_vips(ip: IpAddr) -> bool {
        ip == IpAddr::V4(VIP) || ip == IpAddr::V6(VIP6)
    }

    #[test]
    fn owned_addresses_are_answered() {
        let question = arp::request(ASKER, ASKER_IP, VIP);
        let reply = answer(&question, OURS, only_vips)
            .unwrap()
            .expect("an answer");
        let request = match parse(&question) {
            Ok(Some(Request::Arp(request))) => request,
            other => panic!("{other:?}"),
        };
        assert_eq!(reply, arp::reply(&request, OURS).to_vec());

        let question = ndp::solicitation(ASKER, ASKER_IP6, VIP6);
        let reply = answer(&question, OURS, only_vips)
            .unwrap()
            .expect("an answer");
        assert_eq!(&reply[..6], &ASKER.octets(), "to the asker");
        assert_eq!(reply[54], ndp::TYPE_NEIGHBOR_ADVERTISEMENT);
    }

    #[test]
    fn other_addresses_are_not_answered() {
        let other = Ipv4Addr::new(192, 0, 2, 11);
        assert_eq!(
            answer(&arp::request(ASKER, ASKER_IP, other), OURS, only_vips),
            Ok(None)
        );
        let other6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11);
        let question = ndp::solicitation(ASKER, ASKER_IP6, other6);
        assert_eq!(answer(&question, OURS, only_vips), Ok(None));
    }

    #[test]
    fn frames_for_another_station_are_not_answered() {
        let mut question = arp::request(ASKER, ASKER_IP, VIP);
        question[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
        assert_eq!(answer(&question, OURS, only_vips), Ok(None));
    }

    #[test]
    fn announcements_are_not_answered_but_probes_are() {
        let announcement = arp::gratuitous_request(ASKER, VIP);
        assert_eq!(answer(&announcement, OURS, only_vips), Ok(None));
        let probe = arp::request(ASKER, Ipv4Addr::UNSPECIFIED, VIP);
        assert!(answer(&probe, OURS, only_vips).unwrap().is_some());
        let dad = ndp::solicitation(ASKER, Ipv6Addr::UNSPECIFIED, VIP6);
        assert!(answer(&dad, OURS, only_vips).unwrap().is_some());
    }

    #[test]
    fn invalid_requests_are_errors() {
        let mut question = ndp::solicitation(ASKER, ASKER_IP6, VIP6);
        question[14 + 7] = 64; // hop limit
        assert_eq!(
            answer(&question, OURS, only_vips),
            Err(FrameError::HopLimit(64))
        );
    }

    #[test]
    fn takeover_sends_both_arp_forms_or_one_advertisement() {
        let v4 = takeover_frames(OURS, IpAddr::V4(VIP));
        assert_eq!(
            v4,
            vec![
                arp::gratuitous_request(OURS, VIP).to_vec(),
                arp::gratuitous_reply(OURS, VIP).to_vec()
            ]
        );
        let v6 = takeover_frames(OURS, IpAddr::V6(VIP6));
        assert_eq!(
            v6,
            vec![ndp::unsolicited_advertisement(OURS, VIP6).to_vec()]
        );
    }
}
