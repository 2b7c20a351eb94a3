//! Splitting a received datagram into netlink messages and emitting them back. No I/O.
//!
//! The ctnetlink messages themselves are `netlink-packet-netfilter`'s
//! [`NetfilterMessage`]; the framing is `nfnetlink-base`'s.

use netlink_packet_core::{DecodeError, NetlinkMessage};
use netlink_packet_netfilter::NetfilterMessage;

/// Parses every netlink message of one datagram (conntrack messages, acks, errors,
/// done). Never panics, whatever the bytes.
pub fn parse_datagram(bytes: &[u8]) -> Result<Vec<NetlinkMessage<NetfilterMessage>>, DecodeError> {
    nfnetlink_base::parse_datagram(bytes)
}

/// Emits messages back to one datagram; a parsed kernel datagram re-emits byte for byte
/// (see [`nfnetlink_base::emit_datagram`]).
pub fn emit_datagram(messages: &[NetlinkMessage<NetfilterMessage>]) -> Vec<u8> {
    nfnetlink_base::emit_datagram(messages)
}
