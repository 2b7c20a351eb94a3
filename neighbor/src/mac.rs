//! Ethernet MAC addresses.

use std::fmt;

/// A 48-bit Ethernet MAC address, shown as `02:00:00:00:00:01`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr([u8; 6]);

impl MacAddr {
    /// `ff:ff:ff:ff:ff:ff`, every station on the segment.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// `00:00:00:00:00:00`, the "unknown" hardware address of ARP requests (RFC 5227).
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The address with these six octets.
    pub const fn new(octets: [u8; 6]) -> MacAddr {
        MacAddr(octets)
    }

    /// Its six octets, as they go on the wire.
    pub const fn octets(self) -> [u8; 6] {
        self.0
    }

    /// Whether this is a group address (the I/G bit: broadcast and multicast), which
    /// no station owns and no answer may be sent to as if it were one.
    pub const fn is_multicast(self) -> bool {
        self.0[0] & 0x01 != 0
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(octets: [u8; 6]) -> MacAddr {
        MacAddr(octets)
    }
}

impl From<MacAddr> for [u8; 6] {
    fn from(mac: MacAddr) -> [u8; 6] {
        mac.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}
