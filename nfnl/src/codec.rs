//! nfnetlink datagrams as bytes: the nfgenmsg header, splitting a datagram into
//! messages and emitting them back, framing a request, reading an acknowledgement.
//! No I/O.
//!
//! The functions are generic over the message body `M` (a subsystem's message type
//! implementing `netlink-packet-core`'s traits); acks, errors and end-of-dump messages
//! are `netlink-packet-core`'s own payloads.

use netlink_packet_core::{
    DecodeError, ErrorMessage, NLM_F_REQUEST, NetlinkBuffer, NetlinkDeserializable, NetlinkHeader,
    NetlinkMessage, NetlinkPayload, NetlinkSerializable, Parseable,
};

/// The nfgenmsg version every nfnetlink message carries.
pub const NFNETLINK_V0: u8 = 0;
/// Subsystem id of conntrack (ctnetlink).
pub const NFNL_SUBSYS_CTNETLINK: u8 = 1;
/// Subsystem id of ipset.
pub const NFNL_SUBSYS_IPSET: u8 = 6;

/// The length of a netlink message header: anything shorter cannot be a message.
const NETLINK_HEADER_LEN: usize = 16;

/// The netlink message type of `message` in `subsystem`: nfnetlink puts the subsystem
/// in the high byte.
pub fn message_type(subsystem: u8, message: u8) -> u16 {
    (u16::from(subsystem) << 8) | u16::from(message)
}

/// The subsystem of a netlink message type.
pub fn subsystem_of(message_type: u16) -> u8 {
    (message_type >> 8) as u8
}

/// The nfgenmsg header that follows the netlink header of every nfnetlink message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NfGenHeader {
    /// Address family (`NFPROTO_*`).
    pub family: u8,
    /// Always [`NFNETLINK_V0`].
    pub version: u8,
    /// Resource id, big-endian on the wire (a subsystem-specific index, often 0).
    pub res_id: u16,
}

impl NfGenHeader {
    /// The header's length on the wire.
    pub const LEN: usize = 4;

    /// A version-0 header for `family` with resource id 0.
    pub fn new(family: u8) -> NfGenHeader {
        NfGenHeader {
            family,
            version: NFNETLINK_V0,
            res_id: 0,
        }
    }

    /// Reads the header at the start of a message payload.
    pub fn parse(payload: &[u8]) -> Result<NfGenHeader, DecodeError> {
        let Some(bytes) = payload.get(..Self::LEN) else {
            return Err(DecodeError::buffer_too_small(payload.len(), Self::LEN));
        };
        Ok(NfGenHeader {
            family: bytes[0],
            version: bytes[1],
            res_id: u16::from_be_bytes([bytes[2], bytes[3]]),
        })
    }

    /// Writes the header to the first [`NfGenHeader::LEN`] bytes of `buffer`.
    ///
    /// # Panics
    /// If `buffer` is shorter than [`NfGenHeader::LEN`] (an emitter's sizing bug).
    pub fn emit(&self, buffer: &mut [u8]) {
        buffer[0] = self.family;
        buffer[1] = self.version;
        buffer[2..Self::LEN].copy_from_slice(&self.res_id.to_be_bytes());
    }
}

/// An nfnetlink message of any subsystem with its attributes left as bytes: for code
/// that only needs to tell replies apart (acks, errors, end of dump) or to copy them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    /// The netlink message type (subsystem and message).
    pub message_type: u16,
    /// The nfgenmsg header.
    pub header: NfGenHeader,
    /// The attributes, undecoded, up to the end of the message.
    pub attributes: Vec<u8>,
}

impl NetlinkSerializable for RawMessage {
    fn message_type(&self) -> u16 {
        self.message_type
    }
    fn buffer_len(&self) -> usize {
        NfGenHeader::LEN + self.attributes.len()
    }
    fn serialize(&self, buffer: &mut [u8]) {
        self.header.emit(buffer);
        buffer[NfGenHeader::LEN..].copy_from_slice(&self.attributes);
    }
}

impl NetlinkDeserializable for RawMessage {
    type Error = DecodeError;
    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, Self::Error> {
        Ok(RawMessage {
            message_type: header.message_type,
            header: NfGenHeader::parse(payload)?,
            attributes: payload[NfGenHeader::LEN..].to_vec(),
        })
    }
}

/// Parses every netlink message of one datagram (data messages as `M`, acks, errors,
/// end of dump). Never panics, whatever the bytes.
pub fn parse_datagram<M>(bytes: &[u8]) -> Result<Vec<NetlinkMessage<M>>, DecodeError>
where
    M: NetlinkDeserializable,
{
    let mut messages = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let buffer = NetlinkBuffer::new_checked(&rest)?;
        let length = buffer.length() as usize;
        // netlink-packet-core would loop forever on a zero length and read its own
        // header as payload on a short one.
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
pub fn emit_datagram<M>(messages: &[NetlinkMessage<M>]) -> Vec<u8>
where
    M: NetlinkSerializable + Clone,
{
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

/// The bytes of one request: `message` with `NLM_F_REQUEST | flags` and `sequence`.
pub fn frame<M: NetlinkSerializable>(message: M, flags: u16, sequence: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = sequence;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
    packet.finalize();
    let mut bytes = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut bytes);
    bytes
}

/// What an `NLMSG_ERROR` says: `None` for an acknowledgement, else the positive error
/// code (an errno, or a subsystem's own code such as ipset's 4097 and up).
pub fn ack_code(error: &ErrorMessage) -> Option<i32> {
    error.code.map(|code| -code.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's reply to an ipset protocol request (`protocol_reply.0.bin` of
    /// ipset-netlink's fixtures): one data message, no ack in the datagram.
    const PROTOCOL_REPLY: [u8; 36] = [
        0x24, 0, 0, 0, 0x01, 0x06, 0, 0, 0x01, 0, 0, 0, 0x2a, 0x01, 0, 0, //
        0x02, 0, 0, 0, 0x05, 0, 0x01, 0, 0x07, 0, 0, 0, 0x05, 0, 0x0a, 0, //
        0x06, 0, 0, 0,
    ];

    /// ipset's ENOENT for a list of a missing set, echoing the whole request (socket
    /// without `NETLINK_CAP_ACK`; `list_missing_set_error.0.bin`).
    const ENOENT_WITH_REQUEST: [u8; 60] = [
        0x3c, 0, 0, 0, 0x02, 0, 0, 0, 0x14, 0, 0, 0, 0x2a, 0x01, 0, 0, //
        0xfe, 0xff, 0xff, 0xff, 0x28, 0, 0, 0, 0x07, 0x06, 0x01, 0x03, 0x14, 0, 0, 0, //
        0, 0, 0, 0, 0x02, 0, 0, 0, 0x05, 0, 0x01, 0, 0x07, 0, 0, 0, //
        0x09, 0, 0x02, 0, b'n', b'o', b'p', b'e', 0, 0, 0, 0,
    ];

    /// ctnetlink's acknowledgement of a delete, capped (`delete_ack.0.bin` of
    /// conntrack-netlink's fixtures).
    const CAPPED_ACK: [u8; 36] = [
        0x24, 0, 0, 0, 0x02, 0, 0, 0x01, 0x03, 0, 0, 0, 0x2f, 0x01, 0, 0, //
        0, 0, 0, 0, 0x68, 0, 0, 0, 0x02, 0x01, 0x05, 0, 0x03, 0, 0, 0, //
        0, 0, 0, 0,
    ];

    #[test]
    fn a_captured_data_datagram_parses_and_re_emits_identically() {
        let parsed = parse_datagram::<RawMessage>(&PROTOCOL_REPLY).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].header.sequence_number, 1);
        let NetlinkPayload::InnerMessage(message) = &parsed[0].payload else {
            panic!("not a data message: {parsed:?}");
        };
        assert_eq!(message.message_type, message_type(NFNL_SUBSYS_IPSET, 1));
        assert_eq!(subsystem_of(message.message_type), NFNL_SUBSYS_IPSET);
        assert_eq!(message.header, NfGenHeader::new(2));
        // IPSET_ATTR_PROTOCOL 7, IPSET_ATTR_PROTOCOL_MIN 6.
        assert_eq!(
            message.attributes,
            [5, 0, 1, 0, 7, 0, 0, 0, 5, 0, 10, 0, 6, 0, 0, 0]
        );
        assert_eq!(emit_datagram(&parsed), PROTOCOL_REPLY);
    }

    #[test]
    fn errors_and_acks_give_their_codes() {
        let error = parse_datagram::<RawMessage>(&ENOENT_WITH_REQUEST).unwrap();
        let NetlinkPayload::Error(e) = &error[0].payload else {
            panic!("not an error: {error:?}");
        };
        assert_eq!(ack_code(e), Some(2));
        assert_eq!(
            describe_errno_of(e),
            "No such file or directory (os error 2)"
        );
        // The echoed request is kept, so the error re-emits as the kernel sent it.
        assert_eq!(emit_datagram(&error), ENOENT_WITH_REQUEST);

        let ack = parse_datagram::<RawMessage>(&CAPPED_ACK).unwrap();
        let NetlinkPayload::Error(e) = &ack[0].payload else {
            panic!("not an ack: {ack:?}");
        };
        assert_eq!(ack_code(e), None);
        assert_eq!(ack[0].header.sequence_number, 3);
        assert_eq!(emit_datagram(&ack), CAPPED_ACK);
    }

    fn describe_errno_of(e: &ErrorMessage) -> String {
        crate::describe_errno(ack_code(e).unwrap())
    }

    #[test]
    fn a_datagram_of_several_messages_splits_at_the_padded_lengths() {
        let mut bytes = PROTOCOL_REPLY.to_vec();
        bytes.extend_from_slice(&CAPPED_ACK);
        let parsed = parse_datagram::<RawMessage>(&bytes).unwrap();
        assert!(matches!(parsed[0].payload, NetlinkPayload::InnerMessage(_)));
        assert!(matches!(parsed[1].payload, NetlinkPayload::Error(_)));
        assert_eq!(emit_datagram(&parsed), bytes);
    }

    #[test]
    fn short_and_truncated_messages_are_errors_not_panics() {
        let mut zero_length = CAPPED_ACK;
        zero_length[0] = 0;
        assert!(parse_datagram::<RawMessage>(&zero_length).is_err());
        for cut in 1..PROTOCOL_REPLY.len() {
            assert!(parse_datagram::<RawMessage>(&PROTOCOL_REPLY[..cut]).is_err());
        }
        // A data message too short for its nfgenmsg header.
        let mut headless = PROTOCOL_REPLY[..18].to_vec();
        headless[0] = 18;
        assert!(parse_datagram::<RawMessage>(&headless).is_err());
    }

    #[test]
    fn a_framed_request_parses_back_with_its_flags_and_sequence() {
        let request = RawMessage {
            message_type: message_type(NFNL_SUBSYS_IPSET, 1),
            header: NfGenHeader::new(2),
            attributes: vec![5, 0, 1, 0, 7, 0, 0, 0],
        };
        let bytes = frame(request.clone(), netlink_packet_core::NLM_F_ACK, 42);
        assert_eq!(bytes.len(), 16 + 4 + 8);
        let parsed = parse_datagram::<RawMessage>(&bytes).unwrap();
        assert_eq!(parsed[0].header.sequence_number, 42);
        assert_eq!(
            parsed[0].header.flags,
            NLM_F_REQUEST | netlink_packet_core::NLM_F_ACK
        );
        assert_eq!(parsed[0].payload, NetlinkPayload::InnerMessage(request));
    }
}
