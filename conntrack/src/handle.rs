//! The blocking client: one NETLINK_NETFILTER socket speaking ctnetlink.

use std::collections::HashMap;

use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP};
use netlink_packet_netfilter::conntrack::ConntrackMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterMessageInner};
use nfnetlink_base::{NfnlSocket, Verdict};
use tracing::{debug, trace};

use crate::error::{ENOENT, Error, Result};
use crate::filter::FlowFilter;
use crate::flow::{Family, Flow};

/// How many delete messages go into one `sendmsg` before the acks are read: small
/// enough that the acks of one chunk fit the socket's receive buffer.
const BATCH_CHUNK: usize = 128;

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
    socket: NfnlSocket,
}

/// One ctnetlink request of `family`.
fn request(family: Family, message: ConntrackMessage) -> NetfilterMessage {
    NetfilterMessage::new(NetfilterHeader::new(family.netfilter(), 0, 0), message)
}

/// The flow of one message of a dump.
fn dumped_flow(family: Family, message: &NetfilterMessage) -> std::result::Result<Flow, String> {
    match &message.inner {
        NetfilterMessageInner::Conntrack(
            ConntrackMessage::New(attributes) | ConntrackMessage::Get(attributes),
        ) => Flow::from_attributes(family, attributes),
        other => Err(format!("unexpected message in a dump: {other:?}")),
    }
}

impl ConntrackHandle {
    /// Opens the socket in the current network namespace.
    pub fn new() -> Result<ConntrackHandle> {
        let socket = NfnlSocket::open().map_err(Error::netlink("open"))?;
        Ok(ConntrackHandle { socket })
    }

    /// Every conntrack entry of `family` (all protocols, all zones), as the kernel holds
    /// it now.
    pub fn dump(&mut self, family: Family) -> Result<Vec<Flow>> {
        let mut flows = Vec::new();
        // The first reply that is not a flow; the dump is still read to its end so that
        // the socket holds no replies of it.
        let mut failure = None;
        let message = request(family, ConntrackMessage::Get(Vec::new()));
        let verdict = self
            .socket
            .request(message, NLM_F_DUMP, |reply| {
                if failure.is_none() {
                    match dumped_flow(family, &reply) {
                        Ok(flow) => flows.push(flow),
                        Err(reason) => {
                            failure = Some(Error::Decode {
                                operation: "dump",
                                reason,
                            })
                        }
                    }
                }
            })
            .map_err(Error::netlink("dump"))?;
        if let Some(error) = failure {
            return Err(error);
        }
        match verdict {
            Verdict::Done => {
                debug!(%family, flows = flows.len(), "conntrack dump");
                Ok(flows)
            }
            Verdict::Refused(code) => Err(Error::from_code("dump", family.to_string(), code)),
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
            let message = request(
                flow.family,
                ConntrackMessage::Delete(flow.delete_attributes()),
            );
            let (sequence, framed) = self.socket.frame(message, NLM_F_ACK);
            bytes.extend_from_slice(&framed);
            pending.insert(sequence, flow);
        }
        self.socket.send(&bytes).map_err(Error::netlink("delete"))?;
        let mut outcome = DeleteOutcome::default();
        self.socket
            .acks(|sequence, code| {
                let Some(flow) = pending.remove(&sequence) else {
                    trace!(seq = sequence, "stale ack skipped");
                    return false;
                };
                match code {
                    None => outcome.deleted += 1,
                    Some(ENOENT) => outcome.already_gone += 1,
                    Some(code) => {
                        let error = Error::from_code("delete", flow.to_string(), code);
                        outcome.failures.push((flow.clone(), error));
                    }
                }
                pending.is_empty()
            })
            .map_err(Error::netlink("delete"))?;
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
