//! Sync daemon attributes (the `IPVS_CMD_ATTR_DAEMON` nest).

use netlink_packet_core::{
    DecodeError, DefaultNla, Nla, NlaBuffer, NlasIterator, Parseable, parse_string, parse_u8,
    parse_u16, parse_u32,
};

use super::constants::*;
use super::service::emit_c_string;

/// One attribute inside a sync daemon nest, as the kernel sends or expects it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonAttribute {
    /// [`IP_VS_STATE_MASTER`] or [`IP_VS_STATE_BACKUP`].
    State(u32),
    /// The multicast interface name.
    McastInterface(String),
    /// The sync ID.
    SyncId(u32),
    /// The largest sync message, in bytes.
    SyncMaxLen(u16),
    /// The IPv4 multicast group, network order.
    McastGroup([u8; 4]),
    /// The IPv6 multicast group.
    McastGroup6([u8; 16]),
    /// The multicast port, host byte order (unlike service ports, the kernel sends it in
    /// host order).
    McastPort(u16),
    /// The multicast TTL.
    McastTtl(u8),
    /// An attribute this crate does not know, kept verbatim.
    Other(DefaultNla),
}

impl Nla for DaemonAttribute {
    fn value_len(&self) -> usize {
        use DaemonAttribute::*;
        match self {
            State(_) | SyncId(_) | McastGroup(_) => 4,
            McastInterface(name) => name.len() + 1,
            SyncMaxLen(_) | McastPort(_) => 2,
            McastGroup6(_) => 16,
            McastTtl(_) => 1,
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use DaemonAttribute::*;
        match self {
            State(_) => IPVS_DAEMON_ATTR_STATE,
            McastInterface(_) => IPVS_DAEMON_ATTR_MCAST_IFN,
            SyncId(_) => IPVS_DAEMON_ATTR_SYNC_ID,
            SyncMaxLen(_) => IPVS_DAEMON_ATTR_SYNC_MAXLEN,
            McastGroup(_) => IPVS_DAEMON_ATTR_MCAST_GROUP,
            McastGroup6(_) => IPVS_DAEMON_ATTR_MCAST_GROUP6,
            McastPort(_) => IPVS_DAEMON_ATTR_MCAST_PORT,
            McastTtl(_) => IPVS_DAEMON_ATTR_MCAST_TTL,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        use DaemonAttribute::*;
        match self {
            State(value) | SyncId(value) => buffer.copy_from_slice(&value.to_ne_bytes()),
            McastInterface(name) => emit_c_string(buffer, name),
            SyncMaxLen(value) | McastPort(value) => buffer.copy_from_slice(&value.to_ne_bytes()),
            McastGroup(bytes) => buffer.copy_from_slice(bytes),
            McastGroup6(bytes) => buffer.copy_from_slice(bytes),
            McastTtl(value) => buffer[0] = *value,
            Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for DaemonAttribute {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        use DaemonAttribute::*;
        let value = buf.value();
        Ok(match buf.kind() {
            IPVS_DAEMON_ATTR_STATE => State(parse_u32(value)?),
            IPVS_DAEMON_ATTR_MCAST_IFN if value.last() == Some(&0) => {
                McastInterface(parse_string(value)?)
            }
            IPVS_DAEMON_ATTR_SYNC_ID => SyncId(parse_u32(value)?),
            IPVS_DAEMON_ATTR_SYNC_MAXLEN => SyncMaxLen(parse_u16(value)?),
            IPVS_DAEMON_ATTR_MCAST_GROUP if value.len() == 4 => {
                McastGroup([value[0], value[1], value[2], value[3]])
            }
            IPVS_DAEMON_ATTR_MCAST_GROUP6 if value.len() == 16 => {
                let mut bytes = [0; 16];
                bytes.copy_from_slice(value);
                McastGroup6(bytes)
            }
            IPVS_DAEMON_ATTR_MCAST_PORT => McastPort(parse_u16(value)?),
            IPVS_DAEMON_ATTR_MCAST_TTL => McastTtl(parse_u8(value)?),
            _ => Other(DefaultNla::parse(buf)?),
        })
    }
}

/// Parses the attributes of a sync daemon nest.
pub fn parse_daemon(payload: &[u8]) -> Result<Vec<DaemonAttribute>, DecodeError> {
    NlasIterator::new(payload)
        .map(|nla| DaemonAttribute::parse(&nla?))
        .collect()
}
