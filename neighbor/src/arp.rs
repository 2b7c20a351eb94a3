//! ARP for IPv4 over Ethernet (RFC 826): requests parsed, replies and gratuitous ARP
//! built.
//!
//! Validation follows RFC 826's reception algorithm: a packet for another hardware or
//! protocol type, or with other address lengths, is not ours
//! ([`FrameError::ArpNotEthernetIpv4`]). A request whose sender hardware address is a
//! group address is rejected too ([`FrameError::ArpMulticastSender`]): answering it
//! would send our reply to every station. Bytes after the 28-byte packet (the padding
//! to Ethernet's 60-byte minimum) are ignored.
//!
//! Built frames are 42 bytes: the sending NIC pads them, as it does the kernel's own.

use std::net::Ipv4Addr;

use etherparse::{
    ArpEthIpv4Packet, ArpHardwareId, ArpOperation, ArpPacketSlice, EtherType, Ethernet2Header,
};

use crate::{ETHERNET_HEADER_LEN, FrameError, MacAddr};

/// Length of an Ethernet/IPv4 ARP packet (without the Ethernet header).
pub const ARP_PACKET_LEN: usize = ArpEthIpv4Packet::LEN;

/// Length of every ARP frame built here: Ethernet header and ARP packet, unpadded.
pub const ARP_FRAME_LEN: usize = ETHERNET_HEADER_LEN + ARP_PACKET_LEN;

/// An ARP request: "who has `target_ip`? tell `sender_ip` at `sender_mac`".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpRequest {
    /// The Ethernet source of the frame (normally `sender_mac`).
    pub eth_src: MacAddr,
    /// The Ethernet destination: broadcast for resolution, a station's MAC when it
    /// re-checks an entry it has.
    pub eth_dst: MacAddr,
    /// The asker's hardware address, where the reply goes.
    pub sender_mac: MacAddr,
    /// The asker's IPv4 address: `0.0.0.0` in an address-conflict probe (RFC 5227).
    pub sender_ip: Ipv4Addr,
    /// The target hardware address field, unused in requests (zero or broadcast).
    pub target_mac: MacAddr,
    /// The address asked for.
    pub target_ip: Ipv4Addr,
}

impl ArpRequest {
    /// Whether this is an address-conflict probe (RFC 5227 2.1.1): sender IP `0.0.0.0`.
    /// Its owner answers it like any request (the reply's target IP is then `0.0.0.0`,
    /// as the kernel's is), which tells the prober the address is taken.
    pub fn is_probe(&self) -> bool {
        self.sender_ip.is_unspecified()
    }

    /// Whether this is a gratuitous request (an announcement, RFC 5227 2.3): the sender
    /// claims the address it asks for. Nobody is waiting for an answer; if the address
    /// is ours, another station claims it too.
    pub fn is_announcement(&self) -> bool {
        self.sender_ip == self.target_ip
    }

    /// Whether the frame was sent to a station whose MAC is `ours`: broadcast or
    /// unicast to it (what the kernel answers; frames seen only in promiscuous mode are
    /// not).
    pub fn is_addressed_to(&self, ours: MacAddr) -> bool {
        self.eth_dst == MacAddr::BROADCAST || self.eth_dst == ours
    }
}

/// Parses the ARP packet of an Ethernet frame whose EtherType is ARP.
///
/// `Ok(None)` for a valid packet that is not a request (replies, other operations).
pub(crate) fn parse(
    eth_src: MacAddr,
    eth_dst: MacAddr,
    packet: &[u8],
) -> Result<Option<ArpRequest>, FrameError> {
    let arp = ArpPacketSlice::from_slice(packet).map_err(|e| FrameError::Truncated {
        layer: "ARP",
        needed: e.required_len,
        available: packet.len(),
    })?;
    if arp.hw_addr_type() != ArpHardwareId::ETHERNET
        || arp.proto_addr_type() != EtherType::IPV4
        || arp.hw_addr_size() != 6
        || arp.proto_addr_size() != 4
    {
        return Err(FrameError::ArpNotEthernetIpv4 {
            hardware_type: arp.hw_addr_type().0,
            protocol_type: arp.proto_addr_type().0,
            hardware_len: arp.hw_addr_size(),
            protocol_len: arp.proto_addr_size(),
        });
    }
    if arp.operation() != ArpOperation::REQUEST {
        return Ok(None);
    }
    // The sizes were checked just above, so these conversions cannot fail; the error
    // arm keeps that an error, never a panic, should the checks ever change.
    let bad_len = || FrameError::Truncated {
        layer: "ARP",
        needed: ARP_PACKET_LEN,
        available: packet.len(),
    };
    let sender_mac = MacAddr::new(arp.sender_hw_addr().try_into().map_err(|_| bad_len())?);
    let sender_ip: [u8; 4] = arp
        .sender_protocol_addr()
        .try_into()
        .map_err(|_| bad_len())?;
    let target_mac: [u8; 6] = arp.target_hw_addr().try_into().map_err(|_| bad_len())?;
    let target_ip: [u8; 4] = arp
        .target_protocol_addr()
        .try_into()
        .map_err(|_| bad_len())?;
    if sender_mac.is_multicast() {
        return Err(FrameError::ArpMulticastSender(sender_mac));
    }
    Ok(Some(ArpRequest {
        eth_src,
        eth_dst,
        sender_mac,
        sender_ip: Ipv4Addr::from(sender_ip),
        target_mac: MacAddr::new(target_mac),
        target_ip: Ipv4Addr::from(target_ip),
    }))
}

/// The reply to `request` from the station at `ours`: "`request.target_ip` is at
/// `ours`", sent unicast to the asker's hardware address, the frame the kernel sends.
pub fn reply(request: &ArpRequest, ours: MacAddr) -> [u8; ARP_FRAME_LEN] {
    frame(
        request.sender_mac,
        ours,
        ArpEthIpv4Packet {
            operation: ArpOperation::REPLY,
            sender_mac: ours.octets(),
            sender_ipv4: request.target_ip.octets(),
            target_mac: request.sender_mac.octets(),
            target_ipv4: request.sender_ip.octets(),
        },
    )
}

/// A broadcast request "who has `target_ip`? tell `sender_ip` at `sender_mac`", the
/// target hardware address zero (as the kernel sends it).
pub fn request(
    sender_mac: MacAddr,
    sender_ip: Ipv4Addr,
    target_ip: Ipv4Addr,
) -> [u8; ARP_FRAME_LEN] {
    frame(
        MacAddr::BROADCAST,
        sender_mac,
        ArpEthIpv4Packet {
            operation: ArpOperation::REQUEST,
            sender_mac: sender_mac.octets(),
            sender_ipv4: sender_ip.octets(),
            target_mac: MacAddr::ZERO.octets(),
            target_ipv4: target_ip.octets(),
        },
    )
}

/// Gratuitous ARP, request form: the ARP Announcement of RFC 5227 2.3, broadcast, with
/// sender and target IP both `ip`, sender hardware address `ours` and target hardware
/// address zero. Byte for byte what the kernel sends for its own addresses
/// (`arp_notify`). Stations that have an entry for `ip` update it to `ours`.
pub fn gratuitous_request(ours: MacAddr, ip: Ipv4Addr) -> [u8; ARP_FRAME_LEN] {
    request(ours, ip, ip)
}

/// Gratuitous ARP, reply form (RFC 2002 4.6): a broadcast reply with sender and target
/// IP both `ip` and both hardware addresses `ours`. Some stations update their cache
/// only from replies, so a takeover sends this form as well as the request form.
pub fn gratuitous_reply(ours: MacAddr, ip: Ipv4Addr) -> [u8; ARP_FRAME_LEN] {
    frame(
        MacAddr::BROADCAST,
        ours,
        ArpEthIpv4Packet {
            operation: ArpOperation::REPLY,
            sender_mac: ours.octets(),
            sender_ipv4: ip.octets(),
            target_mac: ours.octets(),
            target_ipv4: ip.octets(),
        },
    )
}

fn frame(eth_dst: MacAddr, eth_src: MacAddr, arp: ArpEthIpv4Packet) -> [u8; ARP_FRAME_LEN] {
    let ethernet = Ethernet2Header {
        source: eth_src.octets(),
        destination: eth_dst.octets(),
        ether_type: EtherType::ARP,
    };
    let mut out = [0; ARP_FRAME_LEN];
    out[..ETHERNET_HEADER_LEN].copy_from_slice(&ethernet.to_bytes());
    out[ETHERNET_HEADER_LEN..].copy_from_slice(&arp.to_bytes());
    out
}
