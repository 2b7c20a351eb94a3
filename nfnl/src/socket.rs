//! The blocking NETLINK_NETFILTER socket: the only I/O of the crate.

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NetlinkDeserializable, NetlinkMessage, NetlinkPayload,
    NetlinkSerializable,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use tracing::trace;

use crate::codec::{RawMessage, ack_code, frame, parse_datagram};
use crate::error::{Error, Result};

/// How long to wait for the kernel's next reply datagram. The kernel answers
/// synchronously; a reply that never comes is a bug to report, not a reason to hang.
const REPLY_TIMEOUT_SECONDS: i64 = 30;

/// The receive buffer asked for: room for the acks of a batch and for dump replies. The
/// kernel caps it at `net.core.rmem_max`.
const RECEIVE_BUFFER: usize = 1 << 20;

/// How the kernel ended its answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An acknowledgement or the end of a dump.
    Done,
    /// An error, as a positive code (an errno or a subsystem's own code).
    Refused(i32),
}

/// A NETLINK_NETFILTER socket connected to the kernel in the network namespace it was
/// opened in, with its own sequence numbers. Blocking; use it from one thread.
pub struct NfnlSocket {
    socket: Socket,
    sequence: u32,
}

impl NfnlSocket {
    /// Opens, binds and connects the socket, and sets it up for request/acknowledge
    /// exchanges: capped acks, a 1 MiB receive buffer (as far as `rmem_max` allows) and
    /// a 30 s reply timeout.
    pub fn open() -> Result<NfnlSocket> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(Error::Socket)?;
        socket.bind_auto().map_err(Error::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(Error::Socket)?;
        // Acks of errors then carry only the request's header, not the whole request.
        socket.set_cap_ack(true).map_err(Error::Socket)?;
        let _ = socket.set_rx_buf_sz(RECEIVE_BUFFER);
        nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(REPLY_TIMEOUT_SECONDS, 0),
        )
        .map_err(|e| Error::Socket(e.into()))?;
        Ok(NfnlSocket {
            socket,
            sequence: 0,
        })
    }

    /// The next sequence number: never 0, which the kernel uses for notifications.
    pub fn next_sequence(&mut self) -> u32 {
        self.sequence = self.sequence.wrapping_add(1).max(1);
        self.sequence
    }

    /// Frames one request with the next sequence number; returns that number and the
    /// bytes, for sending alone or with others in one [`NfnlSocket::send`].
    pub fn frame<M: NetlinkSerializable>(&mut self, message: M, flags: u16) -> (u32, Vec<u8>) {
        let sequence = self.next_sequence();
        (sequence, frame(message, flags, sequence))
    }

    /// Sends framed requests, one or many, in one `sendmsg`.
    pub fn send(&self, bytes: &[u8]) -> Result<()> {
        self.socket.send(bytes, 0).map_err(Error::Send)?;
        Ok(())
    }

    /// Receives one datagram as bytes.
    pub fn receive_datagram(&self) -> Result<Vec<u8>> {
        let (bytes, _) = self.socket.recv_from_full().map_err(Error::Receive)?;
        trace!(len = bytes.len(), "nfnetlink reply datagram");
        Ok(bytes)
    }

    /// Receives one datagram and parses its messages.
    pub fn receive<M: NetlinkDeserializable>(&self) -> Result<Vec<NetlinkMessage<M>>> {
        parse_datagram(&self.receive_datagram()?).map_err(Error::Decode)
    }

    /// Sends one request and hands its data replies to `each`, in order, until the
    /// acknowledgement, error or end of dump. Asks for an acknowledgement unless the
    /// request is a dump (a dump ends with `NLMSG_DONE`). Replies to other sequence
    /// numbers (left over from an earlier request) are skipped.
    pub fn request<M>(&mut self, message: M, flags: u16, mut each: impl FnMut(M)) -> Result<Verdict>
    where
        M: NetlinkSerializable + NetlinkDeserializable,
    {
        // NLM_F_DUMP is two bits, one of them shared with NLM_F_EXCL: test both.
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let flags = if dump { flags } else { flags | NLM_F_ACK };
        let (sequence, bytes) = self.frame(message, flags);
        self.send(&bytes)?;
        loop {
            for reply in self.receive::<M>()? {
                if reply.header.sequence_number != sequence {
                    trace!(seq = reply.header.sequence_number, "stale reply skipped");
                    continue;
                }
                match reply.payload {
                    // Non-dump replies (ipset's protocol and type) come before the ack.
                    NetlinkPayload::InnerMessage(message) => each(message),
                    NetlinkPayload::Error(e) => {
                        return Ok(ack_code(&e).map_or(Verdict::Done, Verdict::Refused));
                    }
                    NetlinkPayload::Done(_) => return Ok(Verdict::Done),
                    _ => {}
                }
            }
        }
    }

    /// Reads acknowledgements and errors of requests sent before, handing each to
    /// `each` as its sequence number and [`ack_code`] (`None`: acknowledged). Returns
    /// after the datagram in which `each` said `true` (done); data messages are skipped.
    pub fn acks(&self, mut each: impl FnMut(u32, Option<i32>) -> bool) -> Result<()> {
        loop {
            let mut done = false;
            for reply in self.receive::<RawMessage>()? {
                if let NetlinkPayload::Error(e) = reply.payload {
                    done |= each(reply.header.sequence_number, ack_code(&e));
                }
            }
            if done {
                return Ok(());
            }
        }
    }

    /// Sends one request and returns the reply datagrams exactly as received, up to the
    /// one holding the acknowledgement, error or end of dump: how test fixtures are
    /// captured.
    pub fn capture<M: NetlinkSerializable>(
        &mut self,
        message: M,
        flags: u16,
    ) -> Result<Vec<Vec<u8>>> {
        let (sequence, bytes) = self.frame(message, flags);
        self.send(&bytes)?;
        let mut datagrams = Vec::new();
        loop {
            let datagram = self.receive_datagram()?;
            let parsed = parse_datagram::<RawMessage>(&datagram).map_err(Error::Decode)?;
            datagrams.push(datagram);
            let end = parsed.iter().any(|m| {
                m.header.sequence_number == sequence
                    && matches!(
                        m.payload,
                        NetlinkPayload::Error(_) | NetlinkPayload::Done(_)
                    )
            });
            if end {
                return Ok(datagrams);
            }
        }
    }
}
