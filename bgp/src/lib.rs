//! BGP-4 for an announce-only speaker, without I/O.
//!
//! - [`packet`]: the message codec ([`decode`] / [`encode`] over byte buffers), byte-exact
//!   for what it parses, with RFC 4271 §6 NOTIFICATIONs and RFC 7606 error handling.
//! - [`session`]: the RFC 4271 finite state machine, sans-IO: events (with the current
//!   time) in, actions (connect, send, arm a timer, session up/down) out.
//!
//! The caller owns the sockets and timers, which keeps both parts testable with byte
//! buffers and a fake clock.

pub mod error;
pub mod packet;
pub mod session;

pub use error::{DecodeError, Error, ErrorAction};
pub use packet::{Family, Message, SessionCaps, decode, decode_message, encode, encode_to_vec};
