//! Binding many addresses with few system calls: a blocking route netlink socket that
//! sends up to [`BATCH_CHUNK`] `RTM_NEWADDR` messages per `sendmsg`.
//!
//! The pipelined path ([`ServiceInterface::add`](super::ServiceInterface::add))
//! costs a future, a channel round trip through the rtnetlink connection task, a
//! `sendmsg` and a `recvmsg` per address. Here a chunk of messages is serialized into
//! one buffer and only its last message asks for an acknowledgement (like
//! `IpsetHandle::add_batch` in the ipset crate): the kernel answers every refused
//! message with an error whether or not it asked for an ACK, and handles a send's
//! messages in order, so the last message's ACK proves that every message before it
//! without an error applied. One reply per chunk instead of one per address.

use std::net::IpAddr;
use std::sync::mpsc;

use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::{EEXIST, NetifError};

/// The most `RTM_NEWADDR` messages one `sendmsg` carries. The kernel handles a whole
/// send before `sendmsg` returns, queueing an error for each refused message on our
/// socket, so a chunk's errors must all fit the receive buffer at once: an error
/// that does not fit is dropped and its address would be neither confirmed nor
/// reported. [`AddressBinder::new`] lowers this to what the buffer it got holds.
pub const BATCH_CHUNK: usize = 256;

/// The receive buffer asked for: room for a whole chunk of errors with margin. Forced
/// past `net.core.rmem_max` where the agent may (CAP_NET_ADMIN), else capped by it.
const RECEIVE_BUFFER: usize = 1 << 20;

/// What one queued error costs in the receive buffer, an upper bound. Each is its
/// own small skb: a 36-byte `nlmsgerr` (only the request's header is echoed, see
/// `NETLINK_CAP_ACK`) in a 512-byte slab with the skb's bookkeeping, about 768 bytes
/// of truesize on x86_64.
const ERROR_TRUESIZE: usize = 1024;

/// How long to wait for the kernel's next reply: it answers while handling the send,
/// so a reply that never comes is a lost one, to report rather than hang on.
const REPLY_TIMEOUT_SECONDS: i64 = 30;

/// A blocking route netlink socket binding addresses on one interface in batches.
///
/// Use it from one thread (inside `spawn_blocking`); the socket talks to the network
/// namespace of the thread that opened it. [`ServiceInterface::add_batched`] wraps it
/// for async callers.
///
/// [`ServiceInterface::add_batched`]: super::ServiceInterface::add_batched
#[derive(Debug)]
pub struct AddressBinder {
    socket: Socket,
    name: String,
    index: u32,
    sequence: u32,
    chunk: usize,
    buffer: Vec<u8>,
}

/// How a set of address additions went: the counts [`AddressBinder`] reports.
#[derive(Debug, Default)]
struct Outcome {
    /// Addresses newly bound.
    bound: usize,
    /// Addresses sent to the kernel.
    total: usize,
    /// Addresses the kernel refused, with its answer (not "already bound").
    failures: Vec<(IpAddr, String)>,
}

/// The `RTM_NEWADDR` body binding `address` as a /32 or /128 on interface `index`, as
/// `ip addr add` and the pipelined path send it (IPv6 with `nodad`: usable at once).
pub(super) fn new_address(index: u32, address: IpAddr) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.index = index;
    match address {
        IpAddr::V4(_) => {
            message.header.family = AddressFamily::Inet;
            message.header.prefix_len = 32;
        }
        IpAddr::V6(_) => {
            message.header.family = AddressFamily::Inet6;
            message.header.prefix_len = 128;
            message.header.flags = AddressHeaderFlags::Nodad;
        }
    }
    message.attributes.push(AddressAttribute::Address(address));
    message.attributes.push(AddressAttribute::Local(address));
    if address.is_ipv6() {
        message
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    message
}

impl AddressBinder {
    /// Opens the socket in the calling thread's network namespace, for the interface
    /// `name` with index `index`.
    pub fn new(name: &str, index: u32) -> Result<AddressBinder, NetifError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetifError::Connect)?;
        socket.bind_auto().map_err(NetifError::Connect)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetifError::Connect)?;
        // Errors then echo only the request's header, not the whole request.
        socket.set_cap_ack(true).map_err(NetifError::Connect)?;
        if setsockopt(&socket, sockopt::RcvBufForce, &RECEIVE_BUFFER).is_err() {
            // Without CAP_NET_ADMIN: as much as rmem_max allows.
            let _ = socket.set_rx_buf_sz(RECEIVE_BUFFER);
        }
        let receive_buffer = socket.get_rx_buf_sz().map_err(NetifError::Connect)?;
        setsockopt(
            &socket,
            sockopt::ReceiveTimeout,
            &TimeVal::new(REPLY_TIMEOUT_SECONDS, 0),
        )
        .map_err(|error| NetifError::Connect(error.into()))?;
        // Whatever buffer we got, a chunk's errors must fit it (see BATCH_CHUNK).
        let chunk = (receive_buffer / ERROR_TRUESIZE).clamp(1, BATCH_CHUNK);
        tracing::trace!(receive_buffer, chunk, "route netlink batch socket");
        Ok(AddressBinder {
            socket,
            name: name.to_owned(),
            index,
            sequence: 0,
            chunk,
            buffer: Vec::new(),
        })
    }

    /// How many messages go into one `sendmsg` with this socket's receive buffer.
    pub fn chunk_size(&self) -> usize {
        self.chunk
    }

    /// Binds each address as a /32 or /128 (IPv6 with `nodad`), [`BATCH_CHUNK`]
    /// per `sendmsg`. Addresses already bound are not an error. Returns how many were
    /// newly bound; refused ones are reported in [`NetifError::Addresses`] after the
    /// rest were applied.
    pub fn add(
        &mut self,
        addresses: impl IntoIterator<Item = IpAddr>,
    ) -> Result<usize, NetifError> {
        let mut outcome = Outcome::default();
        let mut chunk = Vec::with_capacity(self.chunk);
        for address in addresses {
            chunk.push(address);
            if chunk.len() == self.chunk {
                self.send_chunk(&chunk, &mut outcome)?;
                chunk.clear();
            }
        }
        if !chunk.is_empty() {
            self.send_chunk(&chunk, &mut outcome)?;
        }
        self.finish(outcome)
    }

    /// [`AddressBinder::add`] for addresses that arrive over time, until every sender
    /// is dropped: each send takes whatever has arrived (up to a chunk) without
    /// waiting for more, so an address is never held back behind one not yet sent.
    pub fn add_from(&mut self, addresses: &mpsc::Receiver<IpAddr>) -> Result<usize, NetifError> {
        let mut outcome = Outcome::default();
        let mut chunk = Vec::with_capacity(self.chunk);
        // Block for the first address of a chunk only; the rest is what is ready.
        while let Ok(first) = addresses.recv() {
            chunk.push(first);
            chunk.extend(addresses.try_iter().take(self.chunk - 1));
            self.send_chunk(&chunk, &mut outcome)?;
            chunk.clear();
        }
        self.finish(outcome)
    }

    fn finish(&self, mut outcome: Outcome) -> Result<usize, NetifError> {
        tracing::trace!(
            bound = outcome.bound,
            total = outcome.total,
            failed = outcome.failures.len(),
            "address batch"
        );
        if outcome.failures.is_empty() {
            return Ok(outcome.bound);
        }
        outcome.failures.sort();
        Err(NetifError::Addresses {
            action: "add",
            name: self.name.clone(),
            total: outcome.total,
            failures: outcome.failures,
        })
    }

    /// Sends one chunk in one `sendmsg` and reads replies up to its last message's ACK.
    fn send_chunk(&mut self, chunk: &[IpAddr], outcome: &mut Outcome) -> Result<(), NetifError> {
        // Sequence numbers are consecutive within a chunk (wrapping), so a reply's
        // offset from the first one is its address's position.
        let first = self.sequence.wrapping_add(1);
        self.buffer.clear();
        for (position, address) in chunk.iter().enumerate() {
            let mut header = NetlinkHeader::default();
            header.flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL;
            if position + 1 == chunk.len() {
                header.flags |= NLM_F_ACK;
            }
            header.sequence_number = first.wrapping_add(position as u32);
            let payload = RouteNetlinkMessage::NewAddress(new_address(self.index, *address));
            let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
            packet.finalize();
            let start = self.buffer.len();
            let length = packet.buffer_len();
            // Messages are 4-byte aligned within a datagram (NLMSG_ALIGN).
            self.buffer.resize(start + ((length + 3) & !3), 0);
            packet.serialize(&mut self.buffer[start..start + length]);
        }
        let last = first.wrapping_add(chunk.len() as u32 - 1);
        self.sequence = last;
        self.socket
            .send(&self.buffer, 0)
            .map_err(|source| self.io_error("send", source))?;
        let mut refused = 0;
        let mut already = 0;
        loop {
            let (datagram, _) = self
                .socket
                .recv_from_full()
                .map_err(|source| self.io_error("receive", source))?;
            let mut complete = false;
            let mut offset = 0;
            while offset < datagram.len() {
                let rest = &datagram[offset..];
                let length = NetlinkBuffer::new_checked(rest)
                    .map_err(|error| self.decode_error(error.to_string()))?
                    .length() as usize;
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                    .map_err(|error| self.decode_error(error.to_string()))?;
                offset += (length + 3) & !3;
                let NetlinkPayload::Error(error) = reply.payload else {
                    continue;
                };
                let sequence = reply.header.sequence_number;
                let position = sequence.wrapping_sub(first) as usize;
                // A stale reply (an earlier chunk's, after an error) is not ours.
                let Some(address) = chunk.get(position) else {
                    continue;
                };
                match error.code.map(|code| -code.get()) {
                    None => {}
                    Some(EEXIST) => already += 1,
                    Some(code) => {
                        refused += 1;
                        let reason = std::io::Error::from_raw_os_error(code).to_string();
                        outcome.failures.push((*address, reason));
                    }
                }
                complete |= sequence == last;
            }
            if complete {
                break;
            }
        }
        outcome.total += chunk.len();
        outcome.bound += chunk.len() - refused - already;
        Ok(())
    }

    fn io_error(&self, op: &'static str, source: std::io::Error) -> NetifError {
        NetifError::Batch {
            name: self.name.clone(),
            reason: format!("{op}: {source}"),
        }
    }

    fn decode_error(&self, reason: String) -> NetifError {
        NetifError::Batch {
            name: self.name.clone(),
            reason: format!("undecodable reply: {reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_host_routes_and_ipv6_skips_duplicate_address_detection() {
        let v4 = new_address(7, "10.96.0.1".parse().unwrap());
        assert_eq!(v4.header.index, 7);
        assert_eq!(v4.header.prefix_len, 32);
        assert_eq!(v4.header.family, AddressFamily::Inet);
        assert!(v4.header.flags.is_empty());
        assert_eq!(
            super::super::message_address(&v4),
            Some("10.96.0.1".parse().unwrap())
        );
        let v6 = new_address(7, "fd00::1".parse().unwrap());
        assert_eq!(v6.header.prefix_len, 128);
        assert_eq!(v6.header.family, AddressFamily::Inet6);
        assert_eq!(v6.header.flags, AddressHeaderFlags::Nodad);
        assert!(
            v6.attributes
                .contains(&AddressAttribute::Flags(AddressFlags::Nodad))
        );
    }
}
