//! The ipset nfnetlink codec: messages and attributes as the kernel exchanges them.
//!
//! Nothing here performs I/O. Parsing keeps attribute order and unknown attributes, so a
//! parsed kernel message emits back to the same bytes. The nfgenmsg header and the
//! datagram framing are `nfnetlink-base`'s, shared with conntrack-netlink.

pub mod attr;
pub(crate) mod constants;
pub mod message;

use netlink_packet_core::{DecodeError, NetlinkMessage};

pub use attr::{EntryAttr, HeaderAttr, NestedIp};
pub use message::{CmdAttr, Command, IpsetMessage};
pub use nfnetlink_base::NfGenHeader;

/// Parses every netlink message of one datagram (ipset messages, acks, errors, done).
/// Never panics, whatever the bytes.
pub fn parse_datagram(bytes: &[u8]) -> Result<Vec<NetlinkMessage<IpsetMessage>>, DecodeError> {
    nfnetlink_base::parse_datagram(bytes)
}

/// Emits messages back to one datagram; a parsed kernel datagram re-emits byte for byte
/// (see [`nfnetlink_base::emit_datagram`]).
pub fn emit_datagram(messages: &[NetlinkMessage<IpsetMessage>]) -> Vec<u8> {
    nfnetlink_base::emit_datagram(messages)
}
