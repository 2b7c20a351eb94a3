//! BFD, Bidirectional Forwarding Detection (RFC 5880), for single-hop IPv4 and IPv6
//! sessions (RFC 5881) in asynchronous mode, without I/O.
//!
//! - [`packet`]: the control packet, parsed from and emitted back to the exact bytes,
//!   with the reception checks of RFC 5880 §6.8.6 as typed [`Error`]s.
//! - [`session`]: one session's state machine (AdminDown/Down/Init/Up, three-way
//!   handshake, negotiated intervals with jitter, detection time, poll sequences,
//!   passive role). Packets and the time go in; packets to send and state changes come
//!   out, with the next instant its timers need.
//!
//! The caller owns the sockets (UDP port [`packet::CONTROL_PORT`], TTL 255 out, only
//! TTL 255 accepted in), demultiplexes received packets to sessions by `Your
//! Discriminator` (or by address while it is zero) and sleeps until
//! [`Session::next_deadline`].
//!
//! ```
//! use std::num::NonZeroU32;
//! use std::time::Instant;
//! use bfd_proto::{Action, Config, Packet, Session, State};
//!
//! let now = Instant::now();
//! let mut a = Session::new(Config::default(), NonZeroU32::new(1).unwrap(), now).unwrap();
//! let mut b = Session::new(Config::default(), NonZeroU32::new(2).unwrap(), now).unwrap();
//! // Shuttle packets (through their bytes, as a socket would) until nothing is left.
//! let mut to_b: Vec<Packet> = sends(a.poll_timers(now));
//! let mut to_a: Vec<Packet> = sends(b.poll_timers(now));
//! while !to_a.is_empty() || !to_b.is_empty() {
//!     for p in std::mem::take(&mut to_b) {
//!         let p = Packet::decode(&p.encode()).unwrap();
//!         to_a.extend(sends(b.receive(&p, now).unwrap()));
//!     }
//!     for p in std::mem::take(&mut to_a) {
//!         to_b.extend(sends(a.receive(&p, now).unwrap()));
//!     }
//! }
//! assert_eq!((a.state(), b.state()), (State::Up, State::Up));
//!
//! fn sends(actions: Vec<Action>) -> Vec<Packet> {
//!     actions.into_iter().filter_map(|a| match a {
//!         Action::Send(p) => Some(p),
//!         _ => None,
//!     }).collect()
//! }
//! ```

mod error;
pub mod packet;
pub mod session;

pub use error::Error;
pub use packet::{AuthType, Authentication, Diagnostic, Flags, Packet, State};
pub use session::{Action, Config, Session};
