//! Dump and delete Linux conntrack entries over nfnetlink (`NFNL_SUBSYS_CTNETLINK`),
//! without the `conntrack` binary or libnetfilter_conntrack.
//!
//! The ctnetlink codec is `netlink-packet-netfilter`'s; this crate adds the typed
//! [`Flow`], the user-space [`FlowFilter`] and the blocking [`ConntrackHandle`] (dump a
//! family, delete entries in batches by original tuple and id).
//!
//! ```no_run
//! use conntrack_netlink::{ConntrackHandle, Family, FlowFilter, IPPROTO_UDP, ReplySource};
//! let mut conntrack = ConntrackHandle::new()?;
//! // UDP flows to 10.96.0.10:53 that were sent to the backend 10.244.1.5.
//! let stale = FlowFilter {
//!     protocol: IPPROTO_UDP,
//!     original_destination: Some("10.96.0.10".parse().unwrap()),
//!     original_destination_port: Some(53),
//!     reply_source: ReplySource::Endpoint { addr: "10.244.1.5".parse().unwrap(), port: None },
//! };
//! let outcome = conntrack.delete_matching(Family::Ipv4, &[stale])?;
//! println!("{} deleted", outcome.deleted);
//! # Ok::<(), conntrack_netlink::Error>(())
//! ```

mod codec;
mod error;
mod filter;
mod flow;
mod handle;

pub use codec::{emit_datagram, parse_datagram};
pub use error::{Error, Result};
pub use filter::{FlowFilter, ReplySource};
pub use flow::{Family, Flow, FlowTuple, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, protocol_name};
pub use handle::{ConntrackHandle, DeleteOutcome};
pub use netlink_packet_netfilter::NetfilterMessage;
