//! The blocking client: one NETLINK_NETFILTER socket speaking ctnetlink.

use std::collections::HashMap;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_netfilter::conntrack::ConntrackMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterMessageInner};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use tracing::{debug, trace};

use crate::codec::parse_datagram;
use crate::error::{ENOENT, Error, Result};
use crate::filter::FlowFilter;
use crate::flow::{Family, Flow};

/// How many delete messages go into one `sendmsg` before the acks are read: small
/// enough that the acks of one chunk fit the socket's receive buffer.
const BATCH_CHUNK: usize = 128;

/// How long to wait for the kernel's next reply datagram.
const REPLY_TIMEOUT_SECONDS: i64 = 30;

/// The result of deleting a batch of flows.
#[derive(Debug, Default)]
pub struct DeleteOutcome {
    /// Entries the kernel deleted.
    pub deleted: usize,
    /// Entries that were gone already (expired or deleted by someone else): not an error.
    pub already_gone: usize,
    /// Entries the kernel refused to delete, with the error.
    pub failures: Vec<(Flow, Error)>,
}

impl DeleteOutcome {
    /// Whether no delete failed.
    pub fn is_complete(&self) -> bool {
        self.failures.is_empty()
    }

    fn absorb(&mut self, other: DeleteOutcome) {
        self.deleted += other.deleted;
        self.already_gone += other.already_gone;
        self.failures.extend(other.failures);
    }
}

/// A connection to the kernel's conntrack table over nfnetlink, in the network namespace
/// it was opened in. Blocking; use it from one thread (e.g. inside `spawn_blocking`).
pub struct ConntrackHandle {
    socket: Socket,
    sequence: u32,
}

impl ConntrackHandle {
    /// Opens the socket in the current network namespace.
    pub fn new() -> Result<ConntrackHandle> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(Error::Socket)?;
        socket.bind_auto().map_err(Error::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(Error::Socket)?;
        // Acks of errors then carry only the request's header, not the whole request.
        socket.set_cap_ack(true).map_err(Error::Socket)?;
        // Room for the acks of a batch chunk and for dump replies; the kernel caps this
        // at rmem_max.
        let _ = socket.set_rx_buf_sz(1 << 20);
        // The kernel answers synchronously; a reply that never comes is a bug to report.
        nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(REPLY_TIMEOUT_SECONDS, 0),
        )
        .map_err(|e| Error::Socket(e.into()))?;
        Ok(ConntrackHandle {
            socket,
            sequence: 0,
        })
    }

    fn next_sequence(&mut self) -> u32 {
        self.sequence = self.sequence.wrapping_add(1).max(1);
        self.sequence
    }

    /// Frames one ctnetlink message; returns its sequence number and bytes.
    fn frame(&mut self, family: Family, message: ConntrackMessage, flags: u16) -> (u32, Vec<u8>) {
        let sequence = self.next_sequence();
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = sequence;
        let payload =
            NetfilterMessage::new(NetfilterHeader::new(family.netfilter(), 0, 0), message);
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
        packet.finalize();
        let mut bytes = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut bytes);
        (sequence, bytes)
    }

    fn send(&self, operation: &'static str, bytes: &[u8]) -> Result<()> {
        self.socket.send(bytes, 0).map_err(|source| Error::Io {
            op: "send",
            operation,
            source,
        })?;
        Ok(())
    }

    fn receive(&self, operation: &'static str) -> Result<Vec<NetlinkMessage<NetfilterMessage>>> {
        let (bytes, _) = self.socket.recv_from_full().map_err(|source| Error::Io {
            op: "receive",
            operation,
            source,
        })?;
        trace!(len = bytes.len(), "ctnetlink reply datagram");
        parse_datagram(&bytes).map_err(|e| Error::Decode {
            operation,
            reason: e.to_string(),
        })
    }

    /// Every conntrack entry of `family` (all protocols, all zones), as the kernel holds
    /// it now.
    pub fn dump(&mut self, family: Family) -> Result<Vec<Flow>> {
        let (sequence, bytes) = self.frame(family, ConntrackMessage::Get(Vec::new()), NLM_F_DUMP);
        self.send("dump", &bytes)?;
        let mut flows = Vec::new();
        loop {
            for reply in self.receive("dump")? {
                if reply.header.sequence_number != sequence {
                    trace!(seq = reply.header.sequence_number, "stale reply skipped");
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::InnerMessage(message) => {
                        let attributes = match &message.inner {
                            NetfilterMessageInner::Conntrack(
                                ConntrackMessage::New(attributes)
                                | ConntrackMessage::Get(attributes),
                            ) => attributes,
                            other => {
                                return Err(Error::Decode {
                                    operation: "dump",
                                    reason: format!("unexpected message in a dump: {other:?}"),
                                });
                            }
                        };
                        let flow = Flow::from_attributes(family, attributes).map_err(|reason| {
                            Error::Decode {
                                operation: "dump",
                                reason,
                            }
                        })?;
                        flows.push(flow);
                    }
                    NetlinkPayload::Done(_) => {
                        debug!(%family, flows = flows.len(), "conntrack dump");
                        return Ok(flows);
                    }
                    NetlinkPayload::Error(e) => {
                        let Some(code) = e.code else {
                            return Ok(flows);
                        };
                        return Err(Error::from_code("dump", family.to_string(), -code.get()));
                    }
                    _ => {}
                }
            }
        }
    }

    /// Deletes one entry. `Ok(false)` when it was gone already.
    pub fn delete(&mut self, flow: &Flow) -> Result<bool> {
        let mut outcome = self.delete_batch(std::slice::from_ref(flow))?;
        if let Some((_, error)) = outcome.failures.pop() {
            return Err(error);
        }
        Ok(outcome.deleted == 1)
    }

    /// Deletes entries, many per `sendmsg`, each by its original tuple and id. Entries
    /// gone already are counted, not failed; the kernel's refusals are reported per
    /// entry and the others are still deleted. `Err` only when the socket fails.
    pub fn delete_batch(&mut self, flows: &[Flow]) -> Result<DeleteOutcome> {
        let mut outcome = DeleteOutcome::default();
        for chunk in flows.chunks(BATCH_CHUNK) {
            outcome.absorb(self.delete_chunk(chunk)?);
        }
        Ok(outcome)
    }

    fn delete_chunk(&mut self, flows: &[Flow]) -> Result<DeleteOutcome> {
        let mut pending: HashMap<u32, &Flow> = HashMap::with_capacity(flows.len());
        let mut bytes = Vec::new();
        for flow in flows {
            let message = ConntrackMessage::Delete(flow.delete_attributes());
            let (sequence, framed) = self.frame(flow.family, message, NLM_F_ACK);
            bytes.extend_from_slice(&framed);
            pending.insert(sequence, flow);
        }
        self.send("delete", &bytes)?;
        let mut outcome = DeleteOutcome::default();
        while !pending.is_empty() {
            for reply in self.receive("delete")? {
                let NetlinkPayload::Error(e) = reply.payload else {
                    continue;
                };
                let Some(flow) = pending.remove(&reply.header.sequence_number) else {
                    trace!(seq = reply.header.sequence_number, "stale ack skipped");
                    continue;
                };
                match e.code.map(|code| -code.get()) {
                    None => outcome.deleted += 1,
                    Some(ENOENT) => outcome.already_gone += 1,
                    Some(code) => {
                        let error = Error::from_code("delete", flow.to_string(), code);
                        outcome.failures.push((flow.clone(), error));
                    }
                }
            }
        }
        trace!(
            deleted = outcome.deleted,
            already_gone = outcome.already_gone,
            failed = outcome.failures.len(),
            "conntrack delete chunk"
        );
        Ok(outcome)
    }

    /// Dumps `family` and deletes every entry at least one of `filters` matches. Nothing
    /// is dumped when `filters` is empty.
    pub fn delete_matching(
        &mut self,
        family: Family,
        filters: &[FlowFilter],
    ) -> Result<DeleteOutcome> {
        if filters.is_empty() {
            return Ok(DeleteOutcome::default());
        }
        let doomed: Vec<Flow> = self
            .dump(family)?
            .into_iter()
            .filter(|flow| filters.iter().any(|filter| filter.matches(flow)))
            .collect();
        debug!(%family, matched = doomed.len(), filters = filters.len(), "conntrack flows to delete");
        self.delete_batch(&doomed)
    }
}
