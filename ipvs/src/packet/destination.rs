//! Destination (real server) attributes (the `IPVS_CMD_ATTR_DEST` nest).

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, Nla, NlaBuffer, NlasIterator, Parseable, parse_u8,
    parse_u16, parse_u16_be, parse_u32,
};

use super::constants::*;
use super::stats::{StatsAttribute, parse_stats};

/// One attribute inside a destination nest, as the kernel sends or expects it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationAttribute {
    /// Real server address bytes; the kernel sends the 16-byte `union nf_inet_addr`.
    Address(Vec<u8>),
    /// Real server port, host byte order (network order on the wire).
    Port(u16),
    /// Forwarding method (`IP_VS_CONN_F_*`).
    ForwardMethod(u32),
    /// Weight.
    Weight(u32),
    /// Upper connection threshold (0: none).
    UpperThreshold(u32),
    /// Lower connection threshold (0: none).
    LowerThreshold(u32),
    /// Active connections.
    ActiveConnections(u32),
    /// Inactive connections.
    InactiveConnections(u32),
    /// Persistent connection templates.
    PersistentConnections(u32),
    /// 32-bit statistics.
    Stats(Vec<StatsAttribute>),
    /// Address family of the real server.
    AddressFamily(u16),
    /// 64-bit statistics.
    Stats64(Vec<StatsAttribute>),
    /// Tunnel type (0 IPIP, 1 GUE, 2 GRE).
    TunnelType(u8),
    /// Tunnel (GUE) port, host byte order (network order on the wire).
    TunnelPort(u16),
    /// Tunnel flags (checksum options).
    TunnelFlags(u16),
    /// An attribute this crate does not know, kept verbatim.
    Other(DefaultNla),
}

impl Nla for DestinationAttribute {
    fn value_len(&self) -> usize {
        use DestinationAttribute::*;
        match self {
            TunnelType(_) => 1,
            Port(_) | AddressFamily(_) | TunnelPort(_) | TunnelFlags(_) => 2,
            ForwardMethod(_)
            | Weight(_)
            | UpperThreshold(_)
            | LowerThreshold(_)
            | ActiveConnections(_)
            | InactiveConnections(_)
            | PersistentConnections(_) => 4,
            Address(bytes) => bytes.len(),
            Stats(attrs) | Stats64(attrs) => attrs.as_slice().buffer_len(),
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use DestinationAttribute::*;
        match self {
            Address(_) => IPVS_DEST_ATTR_ADDR,
            Port(_) => IPVS_DEST_ATTR_PORT,
            ForwardMethod(_) => IPVS_DEST_ATTR_FWD_METHOD,
            Weight(_) => IPVS_DEST_ATTR_WEIGHT,
            UpperThreshold(_) => IPVS_DEST_ATTR_U_THRESH,
            LowerThreshold(_) => IPVS_DEST_ATTR_L_THRESH,
            ActiveConnections(_) => IPVS_DEST_ATTR_ACTIVE_CONNS,
            InactiveConnections(_) => IPVS_DEST_ATTR_INACT_CONNS,
            PersistentConnections(_) => IPVS_DEST_ATTR_PERSIST_CONNS,
            Stats(_) => IPVS_DEST_ATTR_STATS,
            AddressFamily(_) => IPVS_DEST_ATTR_ADDR_FAMILY,
            Stats64(_) => IPVS_DEST_ATTR_STATS64,
            TunnelType(_) => IPVS_DEST_ATTR_TUN_TYPE,
            TunnelPort(_) => IPVS_DEST_ATTR_TUN_PORT,
            TunnelFlags(_) => IPVS_DEST_ATTR_TUN_FLAGS,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        use DestinationAttribute::*;
        match self {
            TunnelType(value) => buffer[0] = *value,
            Port(port) | TunnelPort(port) => buffer.copy_from_slice(&port.to_be_bytes()),
            AddressFamily(value) | TunnelFlags(value) => {
                buffer.copy_from_slice(&value.to_ne_bytes())
            }
            ForwardMethod(value)
            | Weight(value)
            | UpperThreshold(value)
            | LowerThreshold(value)
            | ActiveConnections(value)
            | InactiveConnections(value)
            | PersistentConnections(value) => buffer.copy_from_slice(&value.to_ne_bytes()),
            Address(bytes) => buffer.copy_from_slice(bytes),
            Stats(attrs) | Stats64(attrs) => attrs.as_slice().emit(buffer),
            Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for DestinationAttribute {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        use DestinationAttribute::*;
        let value = buf.value();
        Ok(match buf.kind() {
            IPVS_DEST_ATTR_ADDR => Address(value.to_vec()),
            IPVS_DEST_ATTR_PORT => Port(parse_u16_be(value)?),
            IPVS_DEST_ATTR_FWD_METHOD => ForwardMethod(parse_u32(value)?),
            IPVS_DEST_ATTR_WEIGHT => Weight(parse_u32(value)?),
            IPVS_DEST_ATTR_U_THRESH => UpperThreshold(parse_u32(value)?),
            IPVS_DEST_ATTR_L_THRESH => LowerThreshold(parse_u32(value)?),
            IPVS_DEST_ATTR_ACTIVE_CONNS => ActiveConnections(parse_u32(value)?),
            IPVS_DEST_ATTR_INACT_CONNS => InactiveConnections(parse_u32(value)?),
            IPVS_DEST_ATTR_PERSIST_CONNS => PersistentConnections(parse_u32(value)?),
            IPVS_DEST_ATTR_STATS => Stats(parse_stats(value)?),
            IPVS_DEST_ATTR_ADDR_FAMILY => AddressFamily(parse_u16(value)?),
            IPVS_DEST_ATTR_STATS64 => Stats64(parse_stats(value)?),
            IPVS_DEST_ATTR_TUN_TYPE => TunnelType(parse_u8(value)?),
            IPVS_DEST_ATTR_TUN_PORT => TunnelPort(parse_u16_be(value)?),
            IPVS_DEST_ATTR_TUN_FLAGS => TunnelFlags(parse_u16(value)?),
            _ => Other(DefaultNla::parse(buf)?),
        })
    }
}

/// Parses the attributes of a destination nest.
pub fn parse_destination(payload: &[u8]) -> Result<Vec<DestinationAttribute>, DecodeError> {
    NlasIterator::new(payload)
        .map(|nla| DestinationAttribute::parse(&nla?))
        .collect()
}
