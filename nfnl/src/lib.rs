//! What every nfnetlink (`NETLINK_NETFILTER`) client repeats, whatever its subsystem
//! (ipset, ctnetlink, ...): the nfgenmsg header, splitting and building datagrams,
//! reading acknowledgements and errors, and the blocking socket.
//!
//! - [`codec`]: no I/O. [`NfGenHeader`], [`parse_datagram`] and [`emit_datagram`]
//!   (generic over the subsystem's message body), [`frame`], [`ack_code`], and
//!   [`RawMessage`] for a body kept as bytes.
//! - [`NfnlSocket`]: the thin I/O part — the socket set up once, requests answered by
//!   data up to an ack, error or end of dump, and batches acknowledged by sequence number.
//!
//! The subsystem crates (`ipset-netlink`, `conntrack-netlink`) bring the message body
//! type; this crate never looks inside it.
//!
//! ```no_run
//! use nfnetlink_base::{NfnlSocket, RawMessage, Verdict};
//! # fn body() -> RawMessage { unimplemented!() }
//! let mut socket = NfnlSocket::open()?;
//! let mut replies = Vec::new();
//! match socket.request(body(), 0, |message: RawMessage| replies.push(message))? {
//!     Verdict::Done => println!("{} replies", replies.len()),
//!     Verdict::Refused(code) => println!("refused: {}", nfnetlink_base::describe_errno(code)),
//! }
//! # Ok::<(), nfnetlink_base::Error>(())
//! ```

pub mod codec;
mod error;
mod socket;
#[cfg(feature = "testing")]
pub mod testing;

pub use codec::{
    NFNETLINK_V0, NFNL_SUBSYS_CTNETLINK, NFNL_SUBSYS_IPSET, NfGenHeader, RawMessage, ack_code,
    emit_datagram, frame, message_type, parse_datagram, subsystem_of,
};
pub use error::{Error, Result, describe_errno};
pub use socket::{NfnlSocket, Verdict};
