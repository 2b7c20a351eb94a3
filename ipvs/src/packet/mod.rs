//! The IPVS generic-netlink codec: messages and attributes as the kernel exchanges them.
//!
//! Nothing here performs I/O. Parsing keeps attribute order and unknown attributes, so a
//! parsed kernel message emits back to the same bytes.

pub mod constants;
pub mod daemon;
pub mod destination;
pub mod service;
pub mod stats;

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, Nla, NlaBuffer, NlasIterator, Parseable,
    ParseableParametrized, parse_u32,
};
use netlink_packet_generic::{GenlFamily, GenlHeader};

use constants::*;
pub use daemon::{DaemonAttribute, parse_daemon};
pub use destination::{DestinationAttribute, parse_destination};
pub use service::{ServiceAttribute, parse_service};
pub use stats::{StatsAttribute, StatsField, parse_stats};

/// A top-level attribute of an IPVS message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    /// The service nest.
    Service(Vec<ServiceAttribute>),
    /// The destination nest.
    Destination(Vec<DestinationAttribute>),
    /// The sync daemon nest (in `IPVS_CMD_NEW_DAEMON` replies to a daemon dump).
    Daemon(Vec<DaemonAttribute>),
    /// TCP established timeout, seconds.
    TimeoutTcp(u32),
    /// TCP FIN-wait timeout, seconds.
    TimeoutTcpFin(u32),
    /// UDP timeout, seconds.
    TimeoutUdp(u32),
    /// IPVS version (only in the reply to `IPVS_CMD_GET_INFO`).
    Version(u32),
    /// Connection table size (only in the reply to `IPVS_CMD_GET_INFO`).
    ConnTableSize(u32),
    /// An attribute this crate does not know, kept verbatim.
    Other(DefaultNla),
}

impl Nla for Attribute {
    fn value_len(&self) -> usize {
        match self {
            Attribute::Service(attrs) => attrs.as_slice().buffer_len(),
            Attribute::Destination(attrs) => attrs.as_slice().buffer_len(),
            Attribute::Daemon(attrs) => attrs.as_slice().buffer_len(),
            Attribute::TimeoutTcp(_)
            | Attribute::TimeoutTcpFin(_)
            | Attribute::TimeoutUdp(_)
            | Attribute::Version(_)
            | Attribute::ConnTableSize(_) => 4,
            Attribute::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Attribute::Service(_) => IPVS_CMD_ATTR_SERVICE,
            Attribute::Destination(_) => IPVS_CMD_ATTR_DEST,
            Attribute::Daemon(_) => IPVS_CMD_ATTR_DAEMON,
            Attribute::TimeoutTcp(_) => IPVS_CMD_ATTR_TIMEOUT_TCP,
            Attribute::TimeoutTcpFin(_) => IPVS_CMD_ATTR_TIMEOUT_TCP_FIN,
            Attribute::TimeoutUdp(_) => IPVS_CMD_ATTR_TIMEOUT_UDP,
            Attribute::Version(_) => IPVS_INFO_ATTR_VERSION,
            Attribute::ConnTableSize(_) => IPVS_INFO_ATTR_CONN_TAB_SIZE,
            Attribute::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Attribute::Service(attrs) => attrs.as_slice().emit(buffer),
            Attribute::Destination(attrs) => attrs.as_slice().emit(buffer),
            Attribute::Daemon(attrs) => attrs.as_slice().emit(buffer),
            Attribute::TimeoutTcp(value)
            | Attribute::TimeoutTcpFin(value)
            | Attribute::TimeoutUdp(value)
            | Attribute::Version(value)
            | Attribute::ConnTableSize(value) => buffer.copy_from_slice(&value.to_ne_bytes()),
            Attribute::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl Attribute {
    /// Parses one top-level attribute. The meaning of the attribute numbers depends on the
    /// command: `IPVS_CMD_SET_INFO` replies reuse 1 and 2 for version and table size.
    pub fn parse_with_command<T: AsRef<[u8]> + ?Sized>(
        buf: &NlaBuffer<&T>,
        command: u8,
    ) -> Result<Attribute, DecodeError> {
        let value = buf.value();
        if command == IPVS_CMD_SET_INFO {
            return Ok(match buf.kind() {
                IPVS_INFO_ATTR_VERSION => Attribute::Version(parse_u32(value)?),
                IPVS_INFO_ATTR_CONN_TAB_SIZE => Attribute::ConnTableSize(parse_u32(value)?),
                _ => Attribute::Other(DefaultNla::parse(buf)?),
            });
        }
        Ok(match buf.kind() {
            IPVS_CMD_ATTR_SERVICE => Attribute::Service(parse_service(value)?),
            IPVS_CMD_ATTR_DEST => Attribute::Destination(parse_destination(value)?),
            IPVS_CMD_ATTR_DAEMON => Attribute::Daemon(parse_daemon(value)?),
            IPVS_CMD_ATTR_TIMEOUT_TCP => Attribute::TimeoutTcp(parse_u32(value)?),
            IPVS_CMD_ATTR_TIMEOUT_TCP_FIN => Attribute::TimeoutTcpFin(parse_u32(value)?),
            IPVS_CMD_ATTR_TIMEOUT_UDP => Attribute::TimeoutUdp(parse_u32(value)?),
            _ => Attribute::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// The payload of one IPVS generic-netlink message: a command and its attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsMessage {
    /// The `IPVS_CMD_*` command.
    pub command: u8,
    /// The top-level attributes, in wire order.
    pub attributes: Vec<Attribute>,
}

impl IpvsMessage {
    /// A message with the given command and attributes.
    pub fn new(command: u8, attributes: Vec<Attribute>) -> IpvsMessage {
        IpvsMessage {
            command,
            attributes,
        }
    }

    /// The service nest of this message, if any.
    pub fn service(&self) -> Option<&[ServiceAttribute]> {
        self.attributes.iter().find_map(|attr| match attr {
            Attribute::Service(attrs) => Some(attrs.as_slice()),
            _ => None,
        })
    }

    /// The destination nest of this message, if any.
    pub fn destination(&self) -> Option<&[DestinationAttribute]> {
        self.attributes.iter().find_map(|attr| match attr {
            Attribute::Destination(attrs) => Some(attrs.as_slice()),
            _ => None,
        })
    }
}

impl GenlFamily for IpvsMessage {
    fn family_name() -> &'static str {
        IPVS_GENL_NAME
    }

    fn command(&self) -> u8 {
        self.command
    }

    fn version(&self) -> u8 {
        IPVS_GENL_VERSION
    }
}

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        self.attributes.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attributes.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let attributes = NlasIterator::new(buf)
            .map(|nla| Attribute::parse_with_command(&nla?, header.cmd))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(IpvsMessage {
            command: header.cmd,
            attributes,
        })
    }
}
