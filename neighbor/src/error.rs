//! The one error type of the crate.

use std::net::Ipv6Addr;

use thiserror::Error;

/// Why a frame that looked like an ARP request or a Neighbor Solicitation was rejected.
///
/// A responder drops such a frame (and may count it); none of these is fatal.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame ends before a header or message it announces.
    #[error("{layer}: {available} bytes where {needed} are needed")]
    Truncated {
        /// The header or message cut short.
        layer: &'static str,
        /// Bytes it needs.
        needed: usize,
        /// Bytes the frame has for it.
        available: usize,
    },
    /// An ARP packet for something other than Ethernet hardware addresses and IPv4
    /// protocol addresses (RFC 826: a station drops what is not for its pair of types).
    #[error(
        "ARP for hardware type {hardware_type} ({hardware_len} bytes) and protocol \
         {protocol_type:#06x} ({protocol_len} bytes), not Ethernet/IPv4"
    )]
    ArpNotEthernetIpv4 {
        /// Hardware type (1 is Ethernet).
        hardware_type: u16,
        /// Protocol type (0x0800 is IPv4).
        protocol_type: u16,
        /// Hardware address length (6 for Ethernet).
        hardware_len: u8,
        /// Protocol address length (4 for IPv4).
        protocol_len: u8,
    },
    /// An ARP request whose sender hardware address is a group address: an answer
    /// would be a unicast frame to every station (RFC 1812 3.3.2 forbids believing it).
    #[error("ARP sender hardware address {0} is a group address")]
    ArpMulticastSender(crate::MacAddr),
    /// An EtherType 0x86dd frame whose IP version is not 6.
    #[error("IP version {0} in an IPv6 frame")]
    NotIpv6(u8),
    /// An IPv6 packet whose source address is multicast (RFC 4291 2.7).
    #[error("IPv6 source address {0} is multicast")]
    MulticastSource(Ipv6Addr),
    /// A Neighbor Solicitation whose IP hop limit is not 255: it may come from off-link
    /// (RFC 4861 7.1.1).
    #[error("Neighbor Solicitation with hop limit {0}, not 255")]
    HopLimit(u8),
    /// An ICMPv6 message whose checksum does not match its pseudo-header and bytes.
    #[error("ICMPv6 checksum {found:#06x}, expected {expected:#06x}")]
    Checksum {
        /// The checksum in the message.
        found: u16,
        /// The checksum its bytes give.
        expected: u16,
    },
    /// A Neighbor Solicitation whose ICMP code is not 0 (RFC 4861 7.1.1).
    #[error("Neighbor Solicitation with ICMP code {0}, not 0")]
    IcmpCode(u8),
    /// A Neighbor Solicitation for a multicast target (RFC 4861 7.1.1).
    #[error("Neighbor Solicitation for the multicast target {0}")]
    MulticastTarget(Ipv6Addr),
    /// An NDP option of length zero or running past the message (RFC 4861 7.1.1, 4.6).
    #[error("NDP option type {option_type} at byte {offset} has a bad length")]
    OptionLength {
        /// The option's type.
        option_type: u8,
        /// Where it starts, from the first option.
        offset: usize,
    },
    /// A source link-layer address option that does not hold one Ethernet address
    /// (RFC 2464 8: length 1, six octets).
    #[error("source link-layer address option of {0} bytes, not an Ethernet address")]
    LinkLayerAddressLength(usize),
    /// A duplicate address detection probe (source `::`) carrying a source link-layer
    /// address option (RFC 4861 7.1.1).
    #[error("Neighbor Solicitation from :: with a source link-layer address option")]
    DadWithSourceLinkLayer,
    /// A duplicate address detection probe (source `::`) not sent to a solicited-node
    /// group (RFC 4861 7.1.1).
    #[error("Neighbor Solicitation from :: to {0}, not a solicited-node group")]
    DadNotToSolicitedNode(Ipv6Addr),
}
