//! Which flows a cleanup deletes: a predicate on a [`Flow`], matched in user space
//! after a dump. No I/O.

use std::fmt;
use std::net::IpAddr;

use crate::flow::{Flow, protocol_name};

/// What the reply direction's source must be for a flow to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReplySource {
    /// Any source.
    Any,
    /// This backend: the flow was translated (DNAT, IPVS masquerading) to it.
    Endpoint {
        /// The backend's address.
        addr: IpAddr,
        /// The backend's port; `None` matches any port.
        port: Option<u16>,
    },
    /// The original destination itself: the flow was never translated, so the node
    /// answered it (a service address with no backend at the time).
    Untranslated,
}

/// A set of flows: one protocol, optionally one original destination address and port,
/// and a condition on the reply's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowFilter {
    /// IANA protocol number the flow must have.
    pub protocol: u8,
    /// The original destination address (`--orig-dst`); `None` matches any.
    pub original_destination: Option<IpAddr>,
    /// The original destination port (`--orig-port-dst`); `None` matches any.
    pub original_destination_port: Option<u16>,
    /// The condition on the reply direction's source (`--reply-src`).
    pub reply_source: ReplySource,
}

impl FlowFilter {
    /// Whether `flow` is one of the flows this filter selects.
    pub fn matches(&self, flow: &Flow) -> bool {
        let original = &flow.original;
        let reply = &flow.reply;
        if original.protocol != self.protocol {
            return false;
        }
        if self
            .original_destination
            .is_some_and(|addr| addr != original.destination)
        {
            return false;
        }
        if self
            .original_destination_port
            .is_some_and(|port| Some(port) != original.destination_port)
        {
            return false;
        }
        match self.reply_source {
            ReplySource::Any => true,
            ReplySource::Endpoint { addr, port } => {
                reply.source == addr && port.is_none_or(|port| Some(port) == reply.source_port)
            }
            ReplySource::Untranslated => {
                reply.source == original.destination
                    && reply.source_port == original.destination_port
            }
        }
    }
}

impl fmt::Display for FlowFilter {
    /// In conntrack(8)'s option spelling, e.g. `-p udp --orig-dst 10.96.0.10
    /// --orig-port-dst 53 --reply-src 10.0.2.2 --reply-port-src 5353`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "-p {}", protocol_name(self.protocol))?;
        if let Some(addr) = self.original_destination {
            write!(f, " --orig-dst {addr}")?;
        }
        if let Some(port) = self.original_destination_port {
            write!(f, " --orig-port-dst {port}")?;
        }
        match self.reply_source {
            ReplySource::Any => Ok(()),
            ReplySource::Endpoint { addr, port } => {
                write!(f, " --reply-src {addr}")?;
                if let Some(port) = port {
                    write!(f, " --reply-port-src {port}")?;
                }
                Ok(())
            }
            ReplySource::Untranslated => f.write_str(" (reply from the original destination)"),
        }
    }
}
