//! Generic-netlink client for the Linux IPVS family (the kernel's L4 load balancer).
//!
//! - [`packet`]: the codec (no I/O). Messages parse from and emit to the kernel's bytes.
//! - [`types`]: plain types ([`Service`], [`Destination`], [`Stats`], ...).
//! - [`convert`]: between the two, and request building (no I/O).
//! - [`IpvsHandle`] (blocking) and [`AsyncIpvsHandle`] (tokio): the sockets.
//!
//! Many changes go out in one `sendmsg` ([`IpvsHandle::apply_batch`]); the kernel
//! acknowledges each and failures are reported per change.
//!
//! ```no_run
//! use ipvs_netlink::{Destination, ForwardMethod, IpvsHandle, Scheduler, Service, ServiceKey};
//! let mut ipvs = IpvsHandle::new()?;
//! let key = ServiceKey::tcp("10.96.0.10".parse().unwrap(), 80);
//! ipvs.add_service(&Service::new(key, Scheduler::RoundRobin))?;
//! ipvs.add_destination(&key, &Destination::new("10.244.1.5".parse().unwrap(), 8080, ForwardMethod::Masquerade))?;
//! for service in ipvs.services()? {
//!     println!("{} {}", service.key, service.scheduler);
//! }
//! # Ok::<(), ipvs_netlink::Error>(())
//! ```

mod asynchronous;
mod blocking;
pub mod convert;
mod error;
mod exchange;
pub mod packet;
mod socket;
pub mod types;

pub use asynchronous::AsyncIpvsHandle;
pub use blocking::IpvsHandle;
pub use error::{Error, Operation};
pub use types::*;
