//! Pure-Rust nfnetlink client for Linux ipsets (`NFNL_SUBSYS_IPSET`).
//!
//! [`IpsetHandle`] is a blocking client: create, destroy, flush, rename, swap, list,
//! add, del and test, with batches of adds/dels in one `sendmsg`. The codec
//! ([`IpsetMessage`], [`CmdAttr`], [`HeaderAttr`], [`EntryAttr`]) does no I/O.
//!
//! ```no_run
//! use ipset_netlink::{Entry, Family, IpsetHandle, Protocol, SetSpec, SetType};
//! let mut ipset = IpsetHandle::new()?;
//! ipset.create(&SetSpec::new("KUBE-CLUSTER-IP", SetType::HashIpPort, Family::Inet), true)?;
//! let entry = Entry::IpPort { ip: "10.96.0.1".parse().unwrap(), proto: Protocol::Tcp, port: 443 };
//! ipset.add("KUBE-CLUSTER-IP", entry, true)?;
//! # Ok::<(), ipset_netlink::Error>(())
//! ```

mod attr;
mod codec;
mod constants;
mod entry;
mod error;
mod handle;
mod message;
mod set;

pub use attr::{EntryAttr, HeaderAttr, NestedIp};
pub use codec::{emit_datagram, parse_datagram};
pub use entry::{Entry, Member, Protocol};
pub use error::{Error, Result, describe_code};
pub use handle::{BatchOutcome, IpsetHandle};
pub use ipnet::IpNet;
pub use message::{CmdAttr, Command, IpsetMessage, NfGenHeader};
pub use set::{Family, SetHeader, SetInfo, SetSpec, SetType};
