//! Pure-Rust nfnetlink client for Linux ipsets (`NFNL_SUBSYS_IPSET`).
//!
//! - [`packet`]: the codec (no I/O): [`IpsetMessage`], [`CmdAttr`], [`HeaderAttr`],
//!   [`EntryAttr`], [`parse_datagram`], [`emit_datagram`]; re-exported here.
//! - [`Entry`], [`Member`], [`SetSpec`], [`SetInfo`], ...: plain types.
//! - [`IpsetHandle`]: a blocking client — create, destroy, flush, rename, swap, list,
//!   add, del and test, with batches of adds/dels in one `sendmsg` — on
//!   `nfnetlink-base`'s socket.
//!
//! ```no_run
//! use ipset_netlink::{Entry, Family, IpsetHandle, Protocol, SetSpec, SetType};
//! let mut ipset = IpsetHandle::new()?;
//! ipset.create(&SetSpec::new("KUBE-CLUSTER-IP", SetType::HashIpPort, Family::Inet), true)?;
//! let entry = Entry::IpPort { ip: "10.96.0.1".parse().unwrap(), proto: Protocol::Tcp, port: 443 };
//! ipset.add("KUBE-CLUSTER-IP", entry, true)?;
//! # Ok::<(), ipset_netlink::Error>(())
//! ```

mod entry;
mod error;
mod handle;
pub mod packet;
mod set;

pub use entry::{Entry, Member, Protocol};
pub use error::{Error, Result, describe_code};
pub use handle::{BatchOutcome, IpsetHandle};
pub use ipnet::IpNet;
pub use packet::{
    CmdAttr, Command, EntryAttr, HeaderAttr, IpsetMessage, NestedIp, NfGenHeader, emit_datagram,
    parse_datagram,
};
pub use set::{Family, SetHeader, SetInfo, SetSpec, SetType};
