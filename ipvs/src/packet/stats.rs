//! Statistics attributes (`IPVS_*_ATTR_STATS` and `IPVS_*_ATTR_STATS64` nests).

use netlink_packet_core::{
    DecodeError, DefaultNla, Nla, NlaBuffer, NlasIterator, Parseable, parse_u32, parse_u64,
};

use super::constants::*;

/// Which counter a statistics attribute carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsField {
    /// Connections scheduled.
    Connections,
    /// Incoming packets.
    InPackets,
    /// Outgoing packets.
    OutPackets,
    /// Incoming bytes.
    InBytes,
    /// Outgoing bytes.
    OutBytes,
    /// Connections per second.
    ConnectionRate,
    /// Incoming packets per second.
    InPacketRate,
    /// Outgoing packets per second.
    OutPacketRate,
    /// Incoming bytes per second.
    InByteRate,
    /// Outgoing bytes per second.
    OutByteRate,
}

impl StatsField {
    fn from_kind(kind: u16) -> Option<StatsField> {
        Some(match kind {
            IPVS_STATS_ATTR_CONNS => StatsField::Connections,
            IPVS_STATS_ATTR_INPKTS => StatsField::InPackets,
            IPVS_STATS_ATTR_OUTPKTS => StatsField::OutPackets,
            IPVS_STATS_ATTR_INBYTES => StatsField::InBytes,
            IPVS_STATS_ATTR_OUTBYTES => StatsField::OutBytes,
            IPVS_STATS_ATTR_CPS => StatsField::ConnectionRate,
            IPVS_STATS_ATTR_INPPS => StatsField::InPacketRate,
            IPVS_STATS_ATTR_OUTPPS => StatsField::OutPacketRate,
            IPVS_STATS_ATTR_INBPS => StatsField::InByteRate,
            IPVS_STATS_ATTR_OUTBPS => StatsField::OutByteRate,
            _ => return None,
        })
    }

    /// The attribute number of this counter.
    pub fn kind(self) -> u16 {
        match self {
            StatsField::Connections => IPVS_STATS_ATTR_CONNS,
            StatsField::InPackets => IPVS_STATS_ATTR_INPKTS,
            StatsField::OutPackets => IPVS_STATS_ATTR_OUTPKTS,
            StatsField::InBytes => IPVS_STATS_ATTR_INBYTES,
            StatsField::OutBytes => IPVS_STATS_ATTR_OUTBYTES,
            StatsField::ConnectionRate => IPVS_STATS_ATTR_CPS,
            StatsField::InPacketRate => IPVS_STATS_ATTR_INPPS,
            StatsField::OutPacketRate => IPVS_STATS_ATTR_OUTPPS,
            StatsField::InByteRate => IPVS_STATS_ATTR_INBPS,
            StatsField::OutByteRate => IPVS_STATS_ATTR_OUTBPS,
        }
    }
}

/// One attribute inside a statistics nest.
///
/// The 32-bit nest mixes widths (bytes are 64-bit, the rest 32-bit); the 64-bit nest uses
/// 64-bit values throughout, so the width is kept to re-emit the kernel's bytes exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatsAttribute {
    /// A 32-bit counter.
    Counter32(StatsField, u32),
    /// A 64-bit counter.
    Counter64(StatsField, u64),
    /// Padding or an attribute this crate does not know, kept verbatim.
    Other(DefaultNla),
}

impl Nla for StatsAttribute {
    fn value_len(&self) -> usize {
        match self {
            StatsAttribute::Counter32(..) => 4,
            StatsAttribute::Counter64(..) => 8,
            StatsAttribute::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            StatsAttribute::Counter32(field, _) | StatsAttribute::Counter64(field, _) => {
                field.kind()
            }
            StatsAttribute::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            StatsAttribute::Counter32(_, value) => buffer.copy_from_slice(&value.to_ne_bytes()),
            StatsAttribute::Counter64(_, value) => buffer.copy_from_slice(&value.to_ne_bytes()),
            StatsAttribute::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for StatsAttribute {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let value = buf.value();
        Ok(match (StatsField::from_kind(buf.kind()), value.len()) {
            (Some(field), 4) => StatsAttribute::Counter32(field, parse_u32(value)?),
            (Some(field), 8) => StatsAttribute::Counter64(field, parse_u64(value)?),
            _ => StatsAttribute::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// Parses the attributes of a statistics nest.
pub fn parse_stats(payload: &[u8]) -> Result<Vec<StatsAttribute>, DecodeError> {
    NlasIterator::new(payload)
        .map(|nla| StatsAttribute::parse(&nla?))
        .collect()
}
