//! Splitting a received datagram into netlink messages and emitting them back. No I/O.
//!
//! The ctnetlink messages themselves are `netlink-packet-netfilter`'s
//! [`NetfilterMessage`]; this module only frames them.

use netlink_packet_core::{DecodeError, NetlinkBuffer, NetlinkMessage, Parseable};
use netlink_packet_netfilter::NetfilterMessage;

/// The length of a netlink message header: anything shorter cannot be a message.
const NETLINK_HEADER_LEN: usize = 16;

/// Parses every netlink message of one datagram (conntrack messages, acks, errors,
/// done). Never panics, whatever the bytes.
pub fn parse_datagram(bytes: &[u8]) -> Result<Vec<NetlinkMessage<NetfilterMessage>>, DecodeError> {
    let mut messages = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let buffer = NetlinkBuffer::new_checked(&rest)?;
        let length = buffer.length() as usize;
        if length < NETLINK_HEADER_LEN {
            return Err(
                format!("netlink message of {length} bytes is shorter than its header").into(),
            );
        }
        messages.push(NetlinkMessage::parse(&buffer)?);
        offset += (length + 3) & !3;
    }
    Ok(messages)
}

/// Emits messages back to one datagram, each padded to 4 bytes. Header lengths and
/// types are recomputed from the payloads, so a parsed kernel datagram re-emits byte for
/// byte and an inconsistent one cannot make the emitter panic.
pub fn emit_datagram(messages: &[NetlinkMessage<NetfilterMessage>]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for message in messages {
        let mut message = message.clone();
        message.finalize();
        let start = bytes.len();
        let len = message.buffer_len();
        bytes.resize(start + ((len + 3) & !3), 0);
        message.serialize(&mut bytes[start..start + len]);
    }
    bytes
}
