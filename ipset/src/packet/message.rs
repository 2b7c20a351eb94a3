//! One ipset nfnetlink message: the nfgenmsg header and the command attributes.
//! Pure codec, no I/O.

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, NLA_F_NESTED, NLA_F_NET_BYTEORDER, NetlinkDeserializable,
    NetlinkHeader, NetlinkSerializable, Nla, NlaBuffer, NlasIterator, Parseable, emit_u32_be,
    parse_string, parse_u8, parse_u32_be,
};
use nfnetlink_base::{NFNL_SUBSYS_IPSET, NfGenHeader, subsystem_of};

use super::attr::{EntryAttr, HeaderAttr, emit_string, parse_all, string_len};
use super::constants::*;

/// The ipset commands (`enum ipset_cmd`), the low byte of the netlink message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Ask for the kernel's protocol versions.
    Protocol,
    /// Create a set.
    Create,
    /// Destroy a set (or all sets).
    Destroy,
    /// Remove all entries of a set.
    Flush,
    /// Rename a set.
    Rename,
    /// Swap the contents and names of two sets.
    Swap,
    /// List sets with their members.
    List,
    /// Like list, in save form.
    Save,
    /// Add entries.
    Add,
    /// Delete entries.
    Del,
    /// Test whether an entry is in a set.
    Test,
    /// Get a set's header only.
    Header,
    /// Ask for a set type's supported revisions.
    Type,
    /// Any other command number.
    Other(u8),
}

impl Command {
    /// The command number.
    pub fn number(self) -> u8 {
        match self {
            Command::Protocol => 1,
            Command::Create => 2,
            Command::Destroy => 3,
            Command::Flush => 4,
            Command::Rename => 5,
            Command::Swap => 6,
            Command::List => 7,
            Command::Save => 8,
            Command::Add => 9,
            Command::Del => 10,
            Command::Test => 11,
            Command::Header => 12,
            Command::Type => 13,
            Command::Other(n) => n,
        }
    }

    /// The command for a number.
    pub fn from_number(n: u8) -> Command {
        match n {
            1 => Command::Protocol,
            2 => Command::Create,
            3 => Command::Destroy,
            4 => Command::Flush,
            5 => Command::Rename,
            6 => Command::Swap,
            7 => Command::List,
            8 => Command::Save,
            9 => Command::Add,
            10 => Command::Del,
            11 => Command::Test,
            12 => Command::Header,
            13 => Command::Type,
            n => Command::Other(n),
        }
    }

    /// Whether `IPSET_ATTR_DATA` of this command holds an entry (else a set header).
    fn data_is_entry(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Test)
    }

    /// Whether attribute 3 is a second set name (rename, swap) rather than a type name.
    fn has_second_name(self) -> bool {
        matches!(self, Command::Rename | Command::Swap)
    }
}

/// One command-level attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdAttr {
    /// Protocol version.
    Protocol(u8),
    /// Name of the set.
    SetName(String),
    /// Set type name such as `hash:ip`.
    TypeName(String),
    /// Second set name (rename target, swap partner); same number as the type name.
    SetName2(String),
    /// Set type revision.
    Revision(u8),
    /// Set family (`NFPROTO_IPV4` 2, `NFPROTO_IPV6` 10).
    Family(u8),
    /// Command flags (`IPSET_FLAG_LIST_*`, ...).
    Flags(u32),
    /// Set header data (create, list, header).
    Header(Vec<HeaderAttr>),
    /// One entry (add, del, test).
    Entry(Vec<EntryAttr>),
    /// Several entries (`IPSET_ATTR_ADT`, each an `IPSET_ATTR_DATA`).
    Entries(Vec<Vec<EntryAttr>>),
    /// Restore line number.
    LineNo(u32),
    /// Lowest protocol version (protocol reply) or lowest type revision (type reply).
    ProtocolMin(u8),
    /// An attribute this crate does not model, kept verbatim (kind includes flags).
    Other(DefaultNla),
}

/// `IPSET_ATTR_DATA` holding one entry, as an element of `IPSET_ATTR_ADT`.
struct EntryNest<'a>(&'a [EntryAttr]);

impl Nla for EntryNest<'_> {
    fn value_len(&self) -> usize {
        self.0.buffer_len()
    }
    fn kind(&self) -> u16 {
        ATTR_DATA | NLA_F_NESTED
    }
    fn emit_value(&self, buffer: &mut [u8]) {
        self.0.emit(buffer)
    }
}

impl Nla for CmdAttr {
    fn value_len(&self) -> usize {
        match self {
            CmdAttr::Protocol(_) | CmdAttr::Revision(_) | CmdAttr::Family(_) => 1,
            CmdAttr::ProtocolMin(_) => 1,
            CmdAttr::SetName(s) | CmdAttr::TypeName(s) | CmdAttr::SetName2(s) => string_len(s),
            CmdAttr::Flags(_) | CmdAttr::LineNo(_) => 4,
            CmdAttr::Header(attrs) => attrs.as_slice().buffer_len(),
            CmdAttr::Entry(attrs) => attrs.as_slice().buffer_len(),
            CmdAttr::Entries(entries) => entries.iter().map(|e| EntryNest(e).buffer_len()).sum(),
            CmdAttr::Other(nla) => nla.value_len(),
        }
    }
    fn kind(&self) -> u16 {
        match self {
            CmdAttr::Protocol(_) => ATTR_PROTOCOL,
            CmdAttr::SetName(_) => ATTR_SETNAME,
            CmdAttr::TypeName(_) | CmdAttr::SetName2(_) => ATTR_TYPENAME,
            CmdAttr::Revision(_) => ATTR_REVISION,
            CmdAttr::Family(_) => ATTR_FAMILY,
            CmdAttr::Flags(_) => ATTR_FLAGS | NLA_F_NET_BYTEORDER,
            CmdAttr::Header(_) | CmdAttr::Entry(_) => ATTR_DATA | NLA_F_NESTED,
            CmdAttr::Entries(_) => ATTR_ADT | NLA_F_NESTED,
            CmdAttr::LineNo(_) => ATTR_LINENO | NLA_F_NET_BYTEORDER,
            CmdAttr::ProtocolMin(_) => ATTR_PROTOCOL_MIN,
            CmdAttr::Other(nla) => nla.kind(),
        }
    }
    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            CmdAttr::Protocol(v) | CmdAttr::Revision(v) | CmdAttr::Family(v) => buffer[0] = *v,
            CmdAttr::ProtocolMin(v) => buffer[0] = *v,
            CmdAttr::SetName(s) | CmdAttr::TypeName(s) | CmdAttr::SetName2(s) => {
                emit_string(s, buffer)
            }
            CmdAttr::Flags(v) | CmdAttr::LineNo(v) => {
                emit_u32_be(buffer, *v).expect("4-byte buffer")
            }
            CmdAttr::Header(attrs) => attrs.as_slice().emit(buffer),
            CmdAttr::Entry(attrs) => attrs.as_slice().emit(buffer),
            CmdAttr::Entries(entries) => {
                let mut offset = 0;
                for entry in entries {
                    let nest = EntryNest(entry);
                    let len = nest.buffer_len();
                    nest.emit(&mut buffer[offset..offset + len]);
                    offset += len;
                }
            }
            CmdAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl CmdAttr {
    /// Parses one command attribute; its meaning depends on the command.
    pub fn parse_for<T: AsRef<[u8]> + ?Sized>(
        buf: &NlaBuffer<&T>,
        command: Command,
    ) -> Result<Self, DecodeError> {
        let v = buf.value();
        Ok(match buf.kind() {
            ATTR_PROTOCOL => CmdAttr::Protocol(parse_u8(v)?),
            ATTR_SETNAME => CmdAttr::SetName(parse_string(v)?),
            ATTR_TYPENAME if command.has_second_name() => CmdAttr::SetName2(parse_string(v)?),
            ATTR_TYPENAME => CmdAttr::TypeName(parse_string(v)?),
            ATTR_REVISION => CmdAttr::Revision(parse_u8(v)?),
            ATTR_FAMILY => CmdAttr::Family(parse_u8(v)?),
            ATTR_FLAGS => CmdAttr::Flags(parse_u32_be(v)?),
            ATTR_DATA if command.data_is_entry() => CmdAttr::Entry(parse_all(v)?),
            ATTR_DATA => CmdAttr::Header(parse_all(v)?),
            ATTR_ADT => {
                let mut entries = Vec::new();
                for nla in NlasIterator::new(v) {
                    let nla = nla?;
                    if nla.kind() != ATTR_DATA {
                        return Err(format!(
                            "IPSET_ATTR_ADT holds attribute {} instead of IPSET_ATTR_DATA",
                            nla.kind()
                        )
                        .into());
                    }
                    entries.push(parse_all(nla.value())?);
                }
                CmdAttr::Entries(entries)
            }
            ATTR_LINENO => CmdAttr::LineNo(parse_u32_be(v)?),
            ATTR_PROTOCOL_MIN => CmdAttr::ProtocolMin(parse_u8(v)?),
            _ => CmdAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// An ipset message: command, nfgenmsg header and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpsetMessage {
    /// The command (low byte of the netlink message type).
    pub command: Command,
    /// The nfgenmsg header.
    pub nfgen: NfGenHeader,
    /// The command attributes, in wire order.
    pub attributes: Vec<CmdAttr>,
}

impl IpsetMessage {
    /// A request for `command` with `attributes` and the default nfgenmsg header.
    pub fn new(command: Command, attributes: Vec<CmdAttr>) -> Self {
        IpsetMessage {
            command,
            // ipset userspace sends AF_INET for every command; the kernel ignores it.
            nfgen: NfGenHeader::new(nix::libc::AF_INET as u8),
            attributes,
        }
    }

    /// The netlink message type of an ipset command.
    pub fn message_type_of(command: Command) -> u16 {
        nfnetlink_base::message_type(NFNL_SUBSYS_IPSET, command.number())
    }

    /// Parses the payload (nfgenmsg and attributes) of a message of `message_type`.
    pub fn parse_payload(message_type: u16, payload: &[u8]) -> Result<Self, DecodeError> {
        if subsystem_of(message_type) != NFNL_SUBSYS_IPSET {
            return Err(format!(
                "netlink message type {message_type:#06x} is not an ipset message (subsystem {})",
                subsystem_of(message_type)
            )
            .into());
        }
        let command = Command::from_number((message_type & 0xff) as u8);
        let nfgen = NfGenHeader::parse(payload)?;
        let attributes = NlasIterator::new(&payload[NfGenHeader::LEN..])
            .map(|nla| CmdAttr::parse_for(&nla?, command))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(IpsetMessage {
            command,
            nfgen,
            attributes,
        })
    }

    /// The value of the first attribute `select` picks.
    pub fn find<'a, R>(&'a self, select: impl Fn(&'a CmdAttr) -> Option<R>) -> Option<R> {
        self.attributes.iter().find_map(select)
    }
}

impl Emitable for IpsetMessage {
    fn buffer_len(&self) -> usize {
        NfGenHeader::LEN + self.attributes.as_slice().buffer_len()
    }
    fn emit(&self, buffer: &mut [u8]) {
        self.nfgen.emit(buffer);
        self.attributes
            .as_slice()
            .emit(&mut buffer[NfGenHeader::LEN..]);
    }
}

impl NetlinkSerializable for IpsetMessage {
    fn message_type(&self) -> u16 {
        Self::message_type_of(self.command)
    }
    fn buffer_len(&self) -> usize {
        Emitable::buffer_len(self)
    }
    fn serialize(&self, buffer: &mut [u8]) {
        self.emit(buffer)
    }
}

impl NetlinkDeserializable for IpsetMessage {
    type Error = DecodeError;
    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, Self::Error> {
        Self::parse_payload(header.message_type, payload)
    }
}
