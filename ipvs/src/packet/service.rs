//! Service attributes (the `IPVS_CMD_ATTR_SERVICE` nest).

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, Nla, NlaBuffer, NlasIterator, Parseable, parse_string,
    parse_u16, parse_u16_be, parse_u32,
};

use super::constants::*;
use super::stats::{StatsAttribute, parse_stats};

/// One attribute inside a service nest, as the kernel sends or expects it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAttribute {
    /// Address family (`AF_INET` or `AF_INET6`).
    AddressFamily(u16),
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP).
    Protocol(u16),
    /// Virtual address bytes; the kernel sends the 16-byte `union nf_inet_addr`.
    Address(Vec<u8>),
    /// Virtual port, host byte order (network order on the wire).
    Port(u16),
    /// Firewall mark.
    Fwmark(u32),
    /// Scheduler name.
    Scheduler(String),
    /// Flags and the mask of the flags to change.
    Flags {
        /// Flag bits.
        flags: u32,
        /// Which bits of `flags` apply.
        mask: u32,
    },
    /// Persistence timeout, seconds.
    Timeout(u32),
    /// Persistence netmask, the raw four bytes: an IPv4 mask in network order, or an IPv6
    /// prefix length as a native-endian u32.
    Netmask([u8; 4]),
    /// 32-bit statistics.
    Stats(Vec<StatsAttribute>),
    /// Persistence engine name (e.g. `sip`).
    PersistenceEngine(String),
    /// 64-bit statistics.
    Stats64(Vec<StatsAttribute>),
    /// An attribute this crate does not know, kept verbatim.
    Other(DefaultNla),
}

impl Nla for ServiceAttribute {
    fn value_len(&self) -> usize {
        use ServiceAttribute::*;
        match self {
            AddressFamily(_) | Protocol(_) | Port(_) => 2,
            Fwmark(_) | Timeout(_) | Netmask(_) => 4,
            Flags { .. } => 8,
            Address(bytes) => bytes.len(),
            Scheduler(name) | PersistenceEngine(name) => name.len() + 1,
            Stats(attrs) | Stats64(attrs) => attrs.as_slice().buffer_len(),
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use ServiceAttribute::*;
        match self {
            AddressFamily(_) => IPVS_SVC_ATTR_AF,
            Protocol(_) => IPVS_SVC_ATTR_PROTOCOL,
            Address(_) => IPVS_SVC_ATTR_ADDR,
            Port(_) => IPVS_SVC_ATTR_PORT,
            Fwmark(_) => IPVS_SVC_ATTR_FWMARK,
            Scheduler(_) => IPVS_SVC_ATTR_SCHED_NAME,
            Flags { .. } => IPVS_SVC_ATTR_FLAGS,
            Timeout(_) => IPVS_SVC_ATTR_TIMEOUT,
            Netmask(_) => IPVS_SVC_ATTR_NETMASK,
            Stats(_) => IPVS_SVC_ATTR_STATS,
            PersistenceEngine(_) => IPVS_SVC_ATTR_PE_NAME,
            Stats64(_) => IPVS_SVC_ATTR_STATS64,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        use ServiceAttribute::*;
        match self {
            AddressFamily(value) | Protocol(value) => buffer.copy_from_slice(&value.to_ne_bytes()),
            Port(port) => buffer.copy_from_slice(&port.to_be_bytes()),
            Fwmark(value) | Timeout(value) => buffer.copy_from_slice(&value.to_ne_bytes()),
            Netmask(raw) => buffer.copy_from_slice(raw),
            Flags { flags, mask } => {
                buffer[..4].copy_from_slice(&flags.to_ne_bytes());
                buffer[4..8].copy_from_slice(&mask.to_ne_bytes());
            }
            Address(bytes) => buffer.copy_from_slice(bytes),
            Scheduler(name) | PersistenceEngine(name) => emit_c_string(buffer, name),
            Stats(attrs) | Stats64(attrs) => attrs.as_slice().emit(buffer),
            Other(nla) => nla.emit_value(buffer),
        }
    }
}

/// Writes `text` followed by the NUL terminator the kernel's string attributes carry.
pub(crate) fn emit_c_string(buffer: &mut [u8], text: &str) {
    buffer[..text.len()].copy_from_slice(text.as_bytes());
    buffer[text.len()] = 0;
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for ServiceAttribute {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        use ServiceAttribute::*;
        let value = buf.value();
        Ok(match buf.kind() {
            IPVS_SVC_ATTR_AF => AddressFamily(parse_u16(value)?),
            IPVS_SVC_ATTR_PROTOCOL => Protocol(parse_u16(value)?),
            IPVS_SVC_ATTR_ADDR => Address(value.to_vec()),
            IPVS_SVC_ATTR_PORT => Port(parse_u16_be(value)?),
            IPVS_SVC_ATTR_FWMARK => Fwmark(parse_u32(value)?),
            IPVS_SVC_ATTR_SCHED_NAME if value.last() == Some(&0) => Scheduler(parse_string(value)?),
            IPVS_SVC_ATTR_FLAGS if value.len() == 8 => Flags {
                flags: parse_u32(&value[..4])?,
                mask: parse_u32(&value[4..])?,
            },
            IPVS_SVC_ATTR_TIMEOUT => Timeout(parse_u32(value)?),
            IPVS_SVC_ATTR_NETMASK if value.len() == 4 => {
                Netmask([value[0], value[1], value[2], value[3]])
            }
            IPVS_SVC_ATTR_STATS => Stats(parse_stats(value)?),
            IPVS_SVC_ATTR_PE_NAME if value.last() == Some(&0) => {
                PersistenceEngine(parse_string(value)?)
            }
            IPVS_SVC_ATTR_STATS64 => Stats64(parse_stats(value)?),
            _ => Other(DefaultNla::parse(buf)?),
        })
    }
}

/// Parses the attributes of a service nest.
pub fn parse_service(payload: &[u8]) -> Result<Vec<ServiceAttribute>, DecodeError> {
    NlasIterator::new(payload)
        .map(|nla| ServiceAttribute::parse(&nla?))
        .collect()
}
