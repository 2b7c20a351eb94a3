//! What the integration tests share: the captured fixtures and frame surgery.

#![allow(dead_code)] // each test binary uses a different part

use std::net::{Ipv4Addr, Ipv6Addr};

use neighbor_frames::MacAddr;

/// The node's MAC in the captures (until `kernel_mac_change` changes it).
pub const NODE_MAC: MacAddr = MacAddr::new([0x02, 0, 0, 0, 0, 0x01]);
/// The node's MAC after `kernel_mac_change`.
pub const NODE_NEW_MAC: MacAddr = MacAddr::new([0x02, 0, 0, 0, 0, 0x11]);
/// The client's MAC in the captures.
pub const CLIENT_MAC: MacAddr = MacAddr::new([0x02, 0, 0, 0, 0, 0x02]);
/// The node's IPv4 address on its veth.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
/// The client's IPv4 address.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
/// The node's IPv4 VIP on kube-ipvs0.
pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 100);
/// The node's IPv6 address on its veth.
pub const NODE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1);
/// The node's IPv6 VIP on kube-ipvs0.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 0x100);
/// The client's link-local address (EUI-64 of its MAC).
pub const CLIENT_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0xff, 0xfe00, 2);
/// The node's link-local address.
pub const NODE_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0xff, 0xfe00, 1);

/// Every fixture capture, by file stem.
pub const CAPTURES: &[&str] = &[
    "arp_arping",
    "arp_kernel",
    "arp_probe",
    "arp_vip",
    "arp_arping_gratuitous",
    "ndp_ndisc6",
    "ndp_vip",
    "ndp_nud",
    "ndp_dad",
    "kernel_mac_change",
];

/// The frames of `tests/fixtures/<name>.pcap`, in capture order.
///
/// A pcap file (what `tcpdump -w` writes): a 24-byte global header (magic, version,
/// time zone, accuracy, snap length, link type), then per frame a 16-byte record header
/// (seconds, microseconds, captured length, original length) and the captured bytes.
pub fn frames(name: &str) -> Vec<Vec<u8>> {
    let path = format!("{}/tests/fixtures/{name}.pcap", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    assert!(
        matches!(word(0), 0xa1b2_c3d4 | 0xa1b2_3c4d),
        "{path}: not a little-endian pcap file"
    );
    assert_eq!(word(20), 1, "{path}: link type is not Ethernet");
    let mut frames = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        let captured = word(at + 8) as usize;
        let original = word(at + 12) as usize;
        assert_eq!(captured, original, "{path}: frame {} was cut", frames.len());
        frames.push(bytes[at + 16..at + 16 + captured].to_vec());
        at += 16 + captured;
    }
    frames
}

/// Recomputes the ICMPv6 checksum of an Ethernet/IPv6/ICMPv6 frame (no extension
/// headers) after a test changed its bytes, so the change under test is the only fault.
pub fn refresh_icmpv6_checksum(frame: &mut [u8]) {
    let ip = &frame[14..54];
    let payload_len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let source: [u8; 16] = ip[8..24].try_into().unwrap();
    let destination: [u8; 16] = ip[24..40].try_into().unwrap();
    let message = &mut frame[54..54 + payload_len];
    let generic = etherparse::Icmpv6Type::Unknown {
        type_u8: message[0],
        code_u8: message[1],
        bytes5to8: message[4..8].try_into().unwrap(),
    };
    let checksum = generic
        .calc_checksum(source, destination, &message[8..])
        .unwrap();
    message[2..4].copy_from_slice(&checksum.to_be_bytes());
}
