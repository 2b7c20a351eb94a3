//! Request/reply bookkeeping shared by the blocking and async handles. No I/O: the handles
//! send the bytes this module encodes and feed it the datagrams they receive.
//!
//! A batch is split into chunks. Each chunk is one `sendmsg` holding many requests, each
//! with its own sequence number and `NLM_F_ACK`. The kernel handles the whole buffer inside
//! that `sendmsg` and queues one acknowledgement (or error) per request, so a chunk must be
//! small enough that all its acknowledgements fit in the socket's receive buffer.

use netlink_packet_core::{
    Emitable, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_generic::GenlMessage;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd, nlas::GenlCtrlAttrs};

use crate::convert::Request;
use crate::error::Error;
use crate::packet::IpvsMessage;
use crate::packet::constants::IPVS_GENL_NAME;

/// Most bytes written by one `sendmsg`.
pub(crate) const MAX_CHUNK_BYTES: usize = 128 * 1024;
/// Receive-buffer bytes one queued acknowledgement may cost (skb overhead included); an
/// overestimate, so chunks never overrun the buffer.
pub(crate) const ACK_COST: usize = 1024;
/// Size of the buffer datagrams are received into. The kernel caps dump datagrams at 32 KiB.
pub(crate) const RECEIVE_BUFFER: usize = 64 * 1024;
/// Receive buffer the handles ask for (needs CAP_NET_ADMIN above `rmem_max`).
pub(crate) const WANTED_RECEIVE_BUFFER: usize = 4 * 1024 * 1024;

/// Flags of a request that changes state or reads one object.
pub(crate) const FLAGS_ACK: u16 = NLM_F_REQUEST | NLM_F_ACK;
/// Flags of a dump request.
pub(crate) const FLAGS_DUMP: u16 = NLM_F_REQUEST | NLM_F_DUMP;

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    /// No final answer yet.
    Pending,
    /// Acknowledged, or the dump finished.
    Done,
    /// The kernel returned this (positive) errno.
    Errno(i32),
    /// The acknowledgement was dropped (ENOBUFS).
    Lost,
    /// A reply could not be decoded.
    Undecodable(String),
}

/// Everything the kernel said about one request.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub messages: Vec<IpvsMessage>,
    pub status: Status,
}

impl Reply {
    /// The messages, or the error this request ended with.
    pub fn into_result(self, request: &Request) -> Result<Vec<IpvsMessage>, Error> {
        match self.status {
            Status::Done => Ok(self.messages),
            Status::Errno(errno) => Err(Error::Kernel {
                operation: request.operation,
                object: request.object.clone(),
                errno,
            }),
            Status::Lost | Status::Pending => Err(Error::AckLost {
                operation: request.operation,
                object: request.object.clone(),
            }),
            Status::Undecodable(reason) => Err(Error::Decode {
                operation: request.operation,
                object: request.object.clone(),
                reason,
            }),
        }
    }
}

/// Appends one IPVS request to `out`.
pub(crate) fn encode(message: &IpvsMessage, family: u16, flags: u16, seq: u32, out: &mut Vec<u8>) {
    let mut genl = GenlMessage::from_payload(message.clone());
    genl.set_resolved_family_id(family);
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(genl));
    nl.finalize();
    let start = out.len();
    out.resize(start + nl.buffer_len(), 0);
    nl.serialize(&mut out[start..]);
}

/// Splits a datagram into its netlink messages (stops at the first malformed one).
pub(crate) fn split_messages(datagram: &[u8]) -> impl Iterator<Item = Result<&[u8], String>> {
    let mut offset = 0;
    std::iter::from_fn(move || {
        if offset >= datagram.len() {
            return None;
        }
        let rest = &datagram[offset..];
        let length = match NetlinkBuffer::new_checked(rest) {
            Ok(buffer) => buffer.length() as usize,
            Err(e) => {
                offset = datagram.len();
                return Some(Err(format!("malformed netlink header: {e}")));
            }
        };
        offset += (length + 3) & !3;
        Some(Ok(&rest[..length]))
    })
}

/// The replies expected for one chunk of requests with consecutive sequence numbers.
#[derive(Debug)]
pub(crate) struct Exchange {
    first_seq: u32,
    replies: Vec<Reply>,
    pending: usize,
    /// Only the last request asked for an acknowledgement: the kernel answers the others
    /// only when they fail, and always before the last one's acknowledgement.
    ack_last_only: bool,
    overrun: bool,
}

impl Exchange {
    pub fn new(first_seq: u32, count: usize) -> Exchange {
        Exchange {
            first_seq,
            replies: vec![
                Reply {
                    messages: Vec::new(),
                    status: Status::Pending,
                };
                count
            ],
            pending: count,
            ack_last_only: false,
            overrun: false,
        }
    }

    fn finish(&mut self, index: usize, status: Status) {
        if self.replies[index].status == Status::Pending {
            self.replies[index].status = status;
            self.pending -= 1;
        }
        // The final acknowledgement means every earlier request that got no error worked,
        // unless the receive buffer overran and errors may have been dropped.
        if self.ack_last_only && index + 1 == self.replies.len() && !self.overrun {
            for earlier in 0..index {
                if self.replies[earlier].status == Status::Pending {
                    self.replies[earlier].status = Status::Done;
                    self.pending -= 1;
                }
            }
        }
    }

    /// Takes in one received datagram. Messages for other sequence numbers (late replies to
    /// an abandoned exchange) are ignored.
    pub fn feed(&mut self, datagram: &[u8]) {
        for message in split_messages(datagram) {
            let Ok(bytes) = message else {
                tracing::warn!(?message, "dropping malformed netlink datagram");
                return;
            };
            let seq = NetlinkBuffer::new(bytes).sequence_number();
            let index = seq.wrapping_sub(self.first_seq) as usize;
            if index >= self.replies.len() {
                tracing::debug!(seq, "ignoring a reply to an earlier request");
                continue;
            }
            if self.replies[index].status != Status::Pending {
                continue;
            }
            match NetlinkMessage::<GenlMessage<IpvsMessage>>::deserialize(bytes) {
                Ok(message) => match message.payload {
                    NetlinkPayload::InnerMessage(genl) => {
                        self.replies[index].messages.push(genl.payload)
                    }
                    NetlinkPayload::Error(error) => match error.code {
                        None => self.finish(index, Status::Done),
                        Some(code) => self.finish(index, Status::Errno(code.get().abs())),
                    },
                    NetlinkPayload::Done(done) if done.code != 0 => {
                        self.finish(index, Status::Errno(done.code.abs()))
                    }
                    NetlinkPayload::Done(_) => self.finish(index, Status::Done),
                    _ => {}
                },
                Err(e) => self.finish(index, Status::Undecodable(e.to_string())),
            }
        }
    }

    pub fn is_complete(&self) -> bool {
        self.pending == 0
    }

    /// Records that the receive buffer overran (ENOBUFS): replies may have been dropped.
    pub fn overran(&mut self) {
        self.overrun = true;
    }

    /// Gives up on the missing replies (their acknowledgements were dropped).
    pub fn abandon(&mut self) {
        for index in 0..self.replies.len() {
            self.finish(index, Status::Lost);
        }
    }

    pub fn into_replies(self) -> Vec<Reply> {
        self.replies
    }
}

/// A batch of requests cut into chunks that each fit one `sendmsg` and whose
/// acknowledgements fit the receive buffer.
#[derive(Debug)]
pub(crate) struct Batch<'a> {
    requests: &'a [Request],
    family: u16,
    flags: u16,
    max_bytes: usize,
    max_requests: usize,
    ack_last_only: bool,
    next: usize,
    current: Option<Exchange>,
    replies: Vec<Reply>,
}

impl<'a> Batch<'a> {
    pub fn new(
        requests: &'a [Request],
        family: u16,
        flags: u16,
        max_bytes: usize,
        max_requests: usize,
        ack_last_only: bool,
    ) -> Batch<'a> {
        Batch {
            requests,
            family,
            flags,
            max_bytes,
            max_requests: max_requests.max(1),
            ack_last_only: ack_last_only && flags & NLM_F_ACK != 0,
            next: 0,
            current: None,
            replies: Vec::with_capacity(requests.len()),
        }
    }

    /// Encodes the next chunk into `out` (cleared first), numbering from `*seq`. Returns
    /// how many requests it holds; 0 when the batch is done.
    pub fn next_chunk(&mut self, seq: &mut u32, out: &mut Vec<u8>) -> usize {
        if let Some(done) = self.current.take() {
            self.replies.extend(done.into_replies());
        }
        out.clear();
        let first_seq = *seq;
        let start = self.next;
        // Decide the chunk first, so that its last request is the acknowledged one.
        let mut bytes = 0;
        let mut end = start;
        while end < self.requests.len() && end - start < self.max_requests {
            // netlink header (16) + generic-netlink header (4) + attributes, 4-aligned.
            let size = (20 + self.requests[end].message.buffer_len() + 3) & !3;
            if end > start && bytes + size > self.max_bytes {
                break;
            }
            bytes += size;
            end += 1;
        }
        for index in start..end {
            let flags = if self.ack_last_only && index + 1 != end {
                self.flags & !NLM_F_ACK
            } else {
                self.flags
            };
            encode(
                &self.requests[index].message,
                self.family,
                flags,
                seq.wrapping_add((index - start) as u32),
                out,
            );
        }
        self.next = end;
        let count = self.next - start;
        if count > 0 {
            *seq = seq.wrapping_add(count as u32);
            let mut exchange = Exchange::new(first_seq, count);
            exchange.ack_last_only = self.ack_last_only;
            self.current = Some(exchange);
        }
        count
    }

    /// The exchange of the chunk in flight.
    pub fn current(&mut self) -> &mut Exchange {
        self.current.get_or_insert_with(|| Exchange::new(0, 0))
    }

    pub fn into_replies(mut self) -> Vec<Reply> {
        if let Some(done) = self.current.take() {
            self.replies.extend(done.into_replies());
        }
        self.replies
    }
}

/// Encodes the controller request that resolves the IPVS family id.
pub(crate) fn encode_family_request(seq: u32) -> Vec<u8> {
    let genl = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(IPVS_GENL_NAME.to_string())],
    });
    let mut header = NetlinkHeader::default();
    header.flags = FLAGS_ACK;
    header.sequence_number = seq;
    let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(genl));
    nl.finalize();
    let mut out = vec![0; nl.buffer_len()];
    nl.serialize(&mut out);
    out
}

/// What a datagram says about the family request: `None` while no answer for `seq` is in it.
pub(crate) fn parse_family_reply(datagram: &[u8], seq: u32) -> Option<Result<u16, Error>> {
    let mut family = None;
    for message in split_messages(datagram) {
        let Ok(bytes) = message else { continue };
        if NetlinkBuffer::new(bytes).sequence_number() != seq {
            continue;
        }
        match NetlinkMessage::<GenlMessage<GenlCtrl>>::deserialize(bytes) {
            Ok(message) => match message.payload {
                NetlinkPayload::InnerMessage(genl) => {
                    family = genl.payload.nlas.iter().find_map(|attr| match attr {
                        GenlCtrlAttrs::FamilyId(id) => Some(*id),
                        _ => None,
                    });
                }
                NetlinkPayload::Error(error) => {
                    return Some(match (error.code, family) {
                        (None, Some(id)) => Ok(id),
                        (Some(code), _) if code.get().abs() == crate::error::libc_errno::ENOENT => {
                            Err(Error::IpvsUnavailable)
                        }
                        (Some(code), _) => Err(Error::Kernel {
                            operation: crate::error::Operation::ResolveFamily,
                            object: IPVS_GENL_NAME.to_string(),
                            errno: code.get().abs(),
                        }),
                        (None, None) => Err(Error::IpvsUnavailable),
                    });
                }
                _ => {}
            },
            Err(e) => {
                return Some(Err(Error::Decode {
                    operation: crate::error::Operation::ResolveFamily,
                    object: IPVS_GENL_NAME.to_string(),
                    reason: e.to_string(),
                }));
            }
        }
    }
    family.map(Ok)
}
