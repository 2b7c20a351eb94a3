//! The layer-2 responder's sockets: per interface, one packet socket for ARP requests,
//! one for Neighbor Solicitations, and the solicited-node group memberships.
//!
//! # Why these sockets
//!
//! - **AF_PACKET, SOCK_RAW, one per protocol** (`ETH_P_ARP`, `ETH_P_IPV6`), bound to
//!   the interface. A socket bound to a protocol gets only frames of that protocol that
//!   arrive; an `ETH_P_ALL` socket would also be handed a clone of every frame the node
//!   sends on the interface (its whole Service traffic), before any filter runs. A
//!   packet socket sees unicast solicitations (reachability probes) that a raw ICMPv6
//!   socket bound to a link-local address misses, and needs no address on the link.
//! - **A classic BPF filter** on each, attached before the socket is bound (created with
//!   protocol 0 it receives nothing until then, so no unfiltered frame is ever queued):
//!   ARP operation 1, and IPv6 next header 58 with ICMPv6 type 135. Everything else the
//!   interface carries stays in the kernel.
//! - **Solicited-node groups joined with `IPV6_ADD_MEMBERSHIP`** on a UDP socket of the
//!   interface rather than `PACKET_ADD_MEMBERSHIP`: the kernel then also sends MLD
//!   reports, so switches that snoop MLD forward the group's solicitations to this port.
//!   Groups are counted, since several addresses share one group (the same low 24 bits).
//!
//! The module's two `unsafe` blocks are each in a function of their own: building the
//! `sockaddr_ll` to bind with, and registering a socket with tokio's reactor.
//!
//! Every call is non-blocking: the sockets are in non-blocking mode and waited on with
//! tokio's [`AsyncFd`]; setup is a handful of system calls that do not wait.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::Ipv6Addr;
use std::sync::Mutex;

use neighbor_frames::{MacAddr, ndp};
use socket2::{Domain, Protocol, SockAddr, SockFilter, Socket, Type};
use tokio::io::unix::AsyncFd;

/// `ETH_P_ARP`: the EtherType of ARP.
const ETH_P_ARP: u16 = 0x0806;
/// `ETH_P_IPV6`: the EtherType of IPv6.
const ETH_P_IPV6: u16 = 0x86dd;

/// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
const BPF_LD_H_ABS: u16 = 0x28;
const BPF_LD_B_ABS: u16 = 0x30;
const BPF_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;
/// What an accepting filter returns: the bytes of the frame to keep (all of them).
const ACCEPT: u32 = 0x0004_0000;

/// What went wrong opening or using the layer-2 sockets.
#[derive(Debug, thiserror::Error)]
pub enum L2Error {
    /// A system call on a socket failed (`what` says which, with the interface).
    #[error("{what} on interface {ifindex}: {source}")]
    Socket {
        /// The operation: "open ARP socket", "join ff02::1:ff00:1", ...
        what: String,
        /// The interface's index.
        ifindex: u32,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// The interface could not be looked up by name.
    #[error("interface {name}: {reason}")]
    Link {
        /// The name asked for.
        name: String,
        /// Why it failed (not found, netlink error, no Ethernet address).
        reason: String,
    },
    /// The rtnetlink socket watching links could not be opened.
    #[error("rtnetlink: {0}")]
    Netlink(String),
}

/// Which frames a [`FrameSocket`] receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// ARP requests (EtherType 0x0806, operation 1).
    ArpRequest,
    /// Neighbor Solicitations (IPv6 without extension headers, ICMPv6 type 135).
    NeighborSolicitation,
}

impl FrameKind {
    fn ethertype(self) -> u16 {
        match self {
            FrameKind::ArpRequest => ETH_P_ARP,
            FrameKind::NeighborSolicitation => ETH_P_IPV6,
        }
    }

    /// The classic BPF program keeping only this kind of frame. Offsets count from the
    /// Ethernet header (SOCK_RAW); the kernel has stripped a VLAN tag into metadata.
    fn filter(self) -> Vec<SockFilter> {
        match self {
            FrameKind::ArpRequest => vec![
                // ARP operation, after 14 bytes of Ethernet and 6 of ARP header.
                SockFilter::new(BPF_LD_H_ABS, 0, 0, 14 + 6),
                SockFilter::new(BPF_JEQ_K, 0, 1, 1),
                SockFilter::new(BPF_RET_K, 0, 0, ACCEPT),
                SockFilter::new(BPF_RET_K, 0, 0, 0),
            ],
            FrameKind::NeighborSolicitation => vec![
                // IPv6 next header, then the ICMPv6 type right after the 40-byte header.
                SockFilter::new(BPF_LD_B_ABS, 0, 0, 14 + 6),
                SockFilter::new(BPF_JEQ_K, 0, 3, 58),
                SockFilter::new(BPF_LD_B_ABS, 0, 0, 14 + 40),
                SockFilter::new(BPF_JEQ_K, 0, 1, u32::from(ndp::TYPE_NEIGHBOR_SOLICITATION)),
                SockFilter::new(BPF_RET_K, 0, 0, ACCEPT),
                SockFilter::new(BPF_RET_K, 0, 0, 0),
            ],
        }
    }
}

/// A packet socket on one interface that receives one [`FrameKind`] and sends whole
/// Ethernet frames out of that interface.
#[derive(Debug)]
pub struct FrameSocket {
    fd: AsyncFd<Socket>,
    ifindex: u32,
    kind: FrameKind,
}

impl FrameSocket {
    /// Opens the socket for `kind` on the interface with index `ifindex`. Needs
    /// CAP_NET_RAW; must run inside a tokio runtime (the socket registers with it).
    pub fn open(ifindex: u32, kind: FrameKind) -> Result<FrameSocket, L2Error> {
        let fail = |what: &str| {
            let what = format!("{what} ({kind:?} socket)");
            move |source| L2Error::Socket {
                what,
                ifindex,
                source,
            }
        };
        // Protocol 0: nothing is received before bind, so the filter is in place first.
        let socket = Socket::new(
            Domain::PACKET,
            Type::RAW.nonblocking(),
            Some(Protocol::from(0)),
        )
        .map_err(fail("open"))?;
        socket
            .set_cloexec(true)
            .map_err(fail("set close-on-exec"))?;
        socket
            .attach_filter(&kind.filter())
            .map_err(fail("attach filter"))?;
        socket
            .bind(&link_address(ifindex, kind.ethertype()))
            .map_err(fail("bind"))?;
        let fd = register(socket).map_err(fail("register"))?;
        Ok(FrameSocket { fd, ifindex, kind })
    }

    /// The interface's index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The kind of frame it receives.
    pub fn kind(&self) -> FrameKind {
        self.kind
    }

    /// Waits for the next frame and copies it into `buf` (from the Ethernet header);
    /// returns its length. A frame longer than `buf` is cut to it.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.fd.readable().await?;
            match ready.try_io(|socket| socket.get_ref().read(buf)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends one whole Ethernet frame (the NIC pads it to the minimum length).
    pub async fn send(&self, frame: &[u8]) -> io::Result<()> {
        loop {
            let mut ready = self.fd.writable().await?;
            match ready.try_io(|socket| socket.get_ref().send(frame)) {
                Ok(result) => return result.map(drop),
                Err(_would_block) => continue,
            }
        }
    }
}

/// The solicited-node multicast groups joined on one interface, so its NIC accepts the
/// solicitations for the addresses we answer for (and MLD-snooping switches send them).
///
/// Shared (`&self`) so addresses can be joined and left while the interface answers.
#[derive(Debug)]
pub struct SolicitedNodeGroups {
    socket: Socket,
    ifindex: u32,
    /// Group → how many of our addresses need it. Held only across a system call that
    /// does not wait.
    joined: Mutex<HashMap<Ipv6Addr, usize>>,
}

impl SolicitedNodeGroups {
    /// A membership socket for the interface with index `ifindex`, in no group yet.
    pub fn open(ifindex: u32) -> Result<SolicitedNodeGroups, L2Error> {
        let fail = |what: &str| {
            let what = format!("{what} (multicast membership socket)");
            move |source| L2Error::Socket {
                what,
                ifindex,
                source,
            }
        };
        let socket =
            Socket::new(Domain::IPV6, Type::DGRAM.nonblocking(), None).map_err(fail("open"))?;
        socket
            .set_cloexec(true)
            .map_err(fail("set close-on-exec"))?;
        Ok(SolicitedNodeGroups {
            socket,
            ifindex,
            joined: Mutex::new(HashMap::new()),
        })
    }

    fn joined(&self) -> std::sync::MutexGuard<'_, HashMap<Ipv6Addr, usize>> {
        // A panic while holding the lock leaves the counts consistent (they change only
        // after the system call succeeded), so a poisoned lock is still usable.
        self.joined
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Joins the solicited-node group of `addr` unless another address already did.
    pub fn join(&self, addr: Ipv6Addr) -> Result<(), L2Error> {
        let group = ndp::solicited_node(addr);
        let mut joined = self.joined();
        if !joined.contains_key(&group) {
            self.socket
                .join_multicast_v6(&group, self.ifindex)
                .map_err(|source| L2Error::Socket {
                    what: format!("join {group}"),
                    ifindex: self.ifindex,
                    source,
                })?;
        }
        *joined.entry(group).or_insert(0) += 1;
        Ok(())
    }

    /// Leaves the solicited-node group of `addr` once no other address needs it; an
    /// address never joined is ignored.
    pub fn leave(&self, addr: Ipv6Addr) -> Result<(), L2Error> {
        let group = ndp::solicited_node(addr);
        let mut joined = self.joined();
        let Some(count) = joined.get_mut(&group) else {
            return Ok(());
        };
        *count -= 1;
        if *count == 0 {
            joined.remove(&group);
            self.socket
                .leave_multicast_v6(&group, self.ifindex)
                .map_err(|source| L2Error::Socket {
                    what: format!("leave {group}"),
                    ifindex: self.ifindex,
                    source,
                })?;
        }
        Ok(())
    }

    /// The groups joined now.
    pub fn groups(&self) -> Vec<Ipv6Addr> {
        let mut groups: Vec<_> = self.joined().keys().copied().collect();
        groups.sort();
        groups
    }
}

/// Everything the responder needs on one interface: its MAC, the ARP and NDP sockets
/// and the solicited-node memberships.
#[derive(Debug)]
pub struct Interface {
    /// The interface's name.
    pub name: String,
    /// The interface's index.
    pub index: u32,
    /// The interface's Ethernet address: the one our answers give.
    pub mac: MacAddr,
    /// Receives ARP requests, sends ARP frames.
    pub arp: FrameSocket,
    /// Receives Neighbor Solicitations, sends Neighbor Advertisements.
    pub ndp: FrameSocket,
    /// The solicited-node groups joined for the IPv6 addresses answered here.
    pub groups: SolicitedNodeGroups,
}

impl Interface {
    /// Opens the sockets on the interface `name`, looked up over rtnetlink (index and
    /// Ethernet address).
    pub async fn open(name: &str) -> Result<Interface, L2Error> {
        let (index, mac) = lookup(name).await?;
        Interface::with_link(name, index, mac)
    }

    /// Opens the sockets on an interface whose index and MAC the caller knows (from its
    /// own link events).
    pub fn with_link(name: &str, index: u32, mac: MacAddr) -> Result<Interface, L2Error> {
        Ok(Interface {
            name: name.to_owned(),
            index,
            mac,
            arp: FrameSocket::open(index, FrameKind::ArpRequest)?,
            ndp: FrameSocket::open(index, FrameKind::NeighborSolicitation)?,
            groups: SolicitedNodeGroups::open(index)?,
        })
    }
}

/// The index and Ethernet address of the interface `name`, over rtnetlink.
async fn lookup(name: &str) -> Result<(u32, MacAddr), L2Error> {
    use futures_util::TryStreamExt;
    use rtnetlink::packet_route::link::LinkAttribute;

    let fail = |reason: String| L2Error::Link {
        name: name.to_owned(),
        reason,
    };
    let (connection, handle, _) = rtnetlink::new_connection().map_err(|e| fail(e.to_string()))?;
    let connection = tokio::spawn(connection);
    let link = handle
        .link()
        .get()
        .match_name(name.to_owned())
        .execute()
        .try_next()
        .await;
    connection.abort();
    let link = link
        .map_err(|e| fail(e.to_string()))?
        .ok_or_else(|| fail("no such interface".to_owned()))?;
    let mac = link
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
            _ => None,
        })
        .ok_or_else(|| fail("no Ethernet address".to_owned()))?;
    Ok((link.header.index, MacAddr::new(mac)))
}

/// Registers `socket` with tokio's reactor.
///
/// tokio's safe constructor is deprecated as unsound for arbitrary types, and the
/// replacement is `unsafe`: it needs the file descriptor to stay the same and open for
/// the `AsyncFd`'s life.
#[allow(unsafe_code)]
fn register(socket: Socket) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: a `socket2::Socket` owns its descriptor, returns that one from every
    // `as_raw_fd` call and closes it only when dropped, which happens when the
    // `AsyncFd` is; this module never reaches the socket mutably to replace it.
    Ok(unsafe { AsyncFd::register(socket) }?)
}

/// A `sockaddr_ll` naming the interface `ifindex` and the EtherType `protocol`, to bind
/// a packet socket with.
///
/// Neither socket2 nor nix builds a link-layer address safely (both take one only from
/// raw memory), so this is `unsafe`: a zeroed storage is viewed as `sockaddr_ll` and
/// three fields are set.
#[allow(unsafe_code)]
fn link_address(ifindex: u32, protocol: u16) -> SockAddr {
    let mut storage = socket2::SockAddrStorage::zeroed();
    // SAFETY: `SockAddrStorage` is a `sockaddr_storage`, larger than and aligned for
    // every socket address type, `sockaddr_ll` included; all-zero bytes are a valid
    // `sockaddr_ll`; the length passed to `SockAddr::new` is exactly `sockaddr_ll`'s.
    unsafe {
        let ll = storage.view_as::<libc::sockaddr_ll>();
        ll.sll_family = libc::AF_PACKET as libc::sa_family_t;
        ll.sll_protocol = protocol.to_be();
        ll.sll_ifindex = ifindex as libc::c_int;
        SockAddr::new(
            storage,
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    }
}
