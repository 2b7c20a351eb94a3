//! The BGP-4 wire format: one module per message, framing here.
//!
//! Every decoded message encodes back to the same bytes (values this codec does not
//! interpret are kept raw, attribute flags are kept as received), which the fixture
//! tests check on messages captured from BIRD, FRR and GoBGP. Two reserved octets are
//! the exception, ignored on receipt and sent as zero as RFC 4760 says: the one in the
//! multiprotocol capability and the one after MP_REACH_NLRI's next hop.

pub mod attribute;
pub mod notification;
pub mod open;
pub mod route_refresh;
pub mod update;

use crate::error::Error;
use bytes::{Buf, BufMut, BytesMut};
use notification::{ErrorCode, HeaderError, Notification};
use open::Open;
use route_refresh::RouteRefresh;
use update::Update;

/// Length of the common header: marker (16), length (2), type (1).
pub const HEADER_LEN: usize = 19;
/// The largest message without RFC 8654 extended messages.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// The AS number put in OPEN's 2-octet My AS and in 2-octet AS_PATHs for a 4-octet ASN
/// (RFC 6793).
pub const AS_TRANS: u16 = 23456;

/// An address family / subsequent address family pair (RFC 4760).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Family {
    /// Address Family Identifier (1 = IPv4, 2 = IPv6).
    pub afi: u16,
    /// Subsequent Address Family Identifier (1 = unicast).
    pub safi: u8,
}

impl Family {
    /// IPv4 unicast.
    pub const IPV4_UNICAST: Family = Family { afi: 1, safi: 1 };
    /// IPv6 unicast.
    pub const IPV6_UNICAST: Family = Family { afi: 2, safi: 1 };
}

/// What decoding and encoding depend on from the session's negotiated capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionCaps {
    /// Both speakers sent the 4-octet AS capability (RFC 6793): AS_PATH carries 4-octet
    /// ASNs. Before the OPEN exchange (and with an old peer) it is false.
    pub four_octet_as: bool,
}

/// A BGP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// OPEN (type 1).
    Open(Open),
    /// UPDATE (type 2).
    Update(Update),
    /// NOTIFICATION (type 3).
    Notification(Notification),
    /// KEEPALIVE (type 4), a bare header.
    Keepalive,
    /// ROUTE-REFRESH (type 5, RFC 2918).
    RouteRefresh(RouteRefresh),
}

impl Message {
    /// The message type octet.
    pub fn type_code(&self) -> u8 {
        match self {
            Message::Open(_) => 1,
            Message::Update(_) => 2,
            Message::Notification(_) => 3,
            Message::Keepalive => 4,
            Message::RouteRefresh(_) => 5,
        }
    }
}

fn header_error(subcode: HeaderError, data: Vec<u8>, reason: String) -> Error {
    Error::reset(ErrorCode::MessageHeader(subcode), data, reason)
}

/// Checks a header and returns the message length and type, or an error if the
/// header is bad. `buf` holds at least [`HEADER_LEN`] octets.
fn check_header(buf: &[u8]) -> Result<(usize, u8), Error> {
    if buf[..16].iter().any(|&b| b != 0xff) {
        return Err(header_error(
            HeaderError::ConnectionNotSynchronized,
            Vec::new(),
            "the marker is not all ones".into(),
        ));
    }
    let len = u16::from_be_bytes([buf[16], buf[17]]) as usize;
    let kind = buf[18];
    // The smallest legal length per type (RFC 4271 §6.1); KEEPALIVE and ROUTE-REFRESH
    // have exact lengths.
    let ok = match kind {
        1 => len >= HEADER_LEN + 10,
        2 => len >= HEADER_LEN + 4,
        3 => len >= HEADER_LEN + 2,
        4 => len == HEADER_LEN,
        5 => len == HEADER_LEN + 4,
        _ => {
            return Err(header_error(
                HeaderError::BadMessageType,
                vec![kind],
                format!("unknown message type {kind}"),
            ));
        }
    };
    if !ok || len > MAX_MESSAGE_LEN {
        return Err(header_error(
            HeaderError::BadMessageLength,
            buf[16..18].to_vec(),
            format!("length {len} is illegal for message type {kind}"),
        ));
    }
    Ok((len, kind))
}

/// Decodes the first message in `buf` and removes it from `buf`.
///
/// Returns `Ok(None)` while `buf` holds less than a whole message. A malformed
/// message's bytes are removed too when its header was sound (so a session that
/// survives an RFC 7606 error goes on with the next message); a bad header leaves `buf`
/// as it was, as the stream cannot be resynchronised.
pub fn decode(buf: &mut BytesMut, caps: &SessionCaps) -> Result<Option<Message>, Error> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let (len, _) = check_header(buf)?;
    if buf.len() < len {
        return Ok(None);
    }
    let msg = buf.split_to(len);
    decode_message(&msg, caps).map(Some)
}

/// Decodes exactly one whole message (header included); `bytes` must be exactly as
/// long as its length field says.
pub fn decode_message(bytes: &[u8], caps: &SessionCaps) -> Result<Message, Error> {
    if bytes.len() < HEADER_LEN {
        return Err(header_error(
            HeaderError::BadMessageLength,
            Vec::new(),
            format!("{} octets are less than a header", bytes.len()),
        ));
    }
    let (len, kind) = check_header(bytes)?;
    if len != bytes.len() {
        return Err(header_error(
            HeaderError::BadMessageLength,
            bytes[16..18].to_vec(),
            format!("length field {len} but {} octets", bytes.len()),
        ));
    }
    let body = &bytes[HEADER_LEN..];
    Ok(match kind {
        1 => Message::Open(Open::decode(body)?),
        2 => Message::Update(Update::decode(body, caps)?),
        3 => Message::Notification(Notification::decode(body)),
        4 => Message::Keepalive,
        5 => Message::RouteRefresh(RouteRefresh::decode(body)),
        _ => unreachable!("check_header accepts only types 1 to 5"),
    })
}

/// Appends `msg` to `dst`, header included. On error `dst` is left as it was.
pub fn encode(msg: &Message, caps: &SessionCaps, dst: &mut BytesMut) -> Result<(), Error> {
    let start = dst.len();
    dst.put_slice(&[0xff; 16]);
    dst.put_u16(0); // length, set below
    dst.put_u8(msg.type_code());
    let body = match msg {
        Message::Open(open) => open.encode(dst),
        Message::Update(update) => update.encode(dst, caps),
        Message::Notification(n) => {
            n.encode(dst);
            Ok(())
        }
        Message::Keepalive => Ok(()),
        Message::RouteRefresh(rr) => {
            rr.encode(dst);
            Ok(())
        }
    };
    let len = dst.len() - start;
    let result = body.and_then(|()| {
        (len <= MAX_MESSAGE_LEN)
            .then_some(())
            .ok_or(Error::TooLong(len))
    });
    match result {
        Ok(()) => {
            dst[start + 16..start + 18].copy_from_slice(&(len as u16).to_be_bytes());
            Ok(())
        }
        Err(e) => {
            dst.truncate(start);
            Err(e)
        }
    }
}

/// Encodes `msg` into a new buffer.
pub fn encode_to_vec(msg: &Message, caps: &SessionCaps) -> Result<Vec<u8>, Error> {
    let mut buf = BytesMut::new();
    encode(msg, caps, &mut buf)?;
    Ok(buf.to_vec())
}

/// A cursor over a body that fails with a given error when it runs short.
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        (self.buf.remaining() >= 1).then(|| self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        (self.buf.remaining() >= 2).then(|| self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        (self.buf.remaining() >= 4).then(|| self.buf.get_u32())
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }
}
