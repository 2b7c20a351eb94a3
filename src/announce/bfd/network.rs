//! The sockets of single-hop BFD (RFC 5881): one receiving socket per address family on
//! UDP port 3784, and one transmitting socket per session.
//!
//! GTSM (RFC 5881 §5): every packet leaves with TTL / hop limit 255, and a packet that
//! arrives with anything else crossed a router and is discarded. The kernel drops them
//! before they reach the receiving socket's queue, through a socket filter (classic BPF,
//! four instructions: load the TTL / hop limit from the IP header, accept 255 only),
//! so a flood from beyond the link never wakes the receive task. `IP_MINTTL` /
//! `IPV6_MINHOPCOUNT` would do the same, but neither nix nor socket2 offers them and a
//! raw `setsockopt` needs `unsafe`, which the workspace forbids (a `forbid` cannot be
//! allowed locally); socket2's `attach_filter` is safe. The socket also asks for each
//! datagram's TTL (`IP_RECVTTL` / `IPV6_RECVHOPLIMIT`) and [`Datagram::ttl`] is checked
//! again in user space, so GTSM holds even if the filter were lost.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::AsRawFd;

use bfd_proto::packet::{CONTROL_PORT, SOURCE_PORTS, TTL};
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use socket2::{Domain, Protocol, SockFilter, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::Error;

/// DSCP CS6 ("network control", `IPTOS_PREC_INTERNETCONTROL`), as routers mark their
/// BFD packets, so a congested egress queue does not delay them.
const TOS_NETWORK_CONTROL: u32 = 0xc0;

/// An address family; there is one receiving socket per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Family {
    V4,
    V6,
}

impl Family {
    pub(super) fn of(addr: IpAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

/// One datagram as the receiving socket saw it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Datagram {
    /// Payload length in the caller's buffer.
    pub len: usize,
    /// The sender.
    pub from: SocketAddr,
    /// The address it was sent to (from `IP_PKTINFO` / `IPV6_PKTINFO`).
    pub to: Option<IpAddr>,
    /// The interface it arrived on.
    pub ifindex: Option<u32>,
    /// Its IPv4 TTL or IPv6 hop limit.
    pub ttl: Option<u8>,
    /// The payload did not fit the buffer (no BFD packet is that long).
    pub truncated: bool,
}

fn sock_err(what: &'static str, addr: SocketAddr) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Socket { what, addr, source }
}

fn nix_err(what: &'static str, addr: SocketAddr) -> impl FnOnce(nix::Error) -> Error {
    move |e| Error::Socket {
        what,
        addr,
        source: e.into(),
    }
}

/// The receiving socket of one family: bound to the wildcard address on port 3784.
#[derive(Debug)]
pub(super) struct RxSocket {
    socket: UdpSocket,
}

impl RxSocket {
    pub(super) fn bind(family: Family) -> Result<RxSocket, Error> {
        let (domain, addr) = match family {
            Family::V4 => (
                Domain::IPV4,
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, CONTROL_PORT)),
            ),
            Family::V6 => (
                Domain::IPV6,
                SocketAddr::from((Ipv6Addr::UNSPECIFIED, CONTROL_PORT)),
            ),
        };
        let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
            .map_err(sock_err("socket", addr))?;
        match family {
            Family::V4 => {
                setsockopt(&socket, sockopt::Ipv4PacketInfo, &true)
                    .map_err(nix_err("IP_PKTINFO", addr))?;
                setsockopt(&socket, sockopt::Ipv4RecvTtl, &true)
                    .map_err(nix_err("IP_RECVTTL", addr))?;
            }
            Family::V6 => {
                // IPv4 packets have their own socket; a dual-stack socket would see them as
                // v4-mapped addresses.
                socket
                    .set_only_v6(true)
                    .map_err(sock_err("IPV6_V6ONLY", addr))?;
                setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true)
                    .map_err(nix_err("IPV6_RECVPKTINFO", addr))?;
                setsockopt(&socket, sockopt::Ipv6RecvHopLimit, &true)
                    .map_err(nix_err("IPV6_RECVHOPLIMIT", addr))?;
            }
        }
        socket
            .attach_filter(&gtsm_filter(family))
            .map_err(sock_err("SO_ATTACH_FILTER", addr))?;
        socket
            .set_nonblocking(true)
            .map_err(sock_err("O_NONBLOCK", addr))?;
        socket.bind(&addr.into()).map_err(sock_err("bind", addr))?;
        let socket = UdpSocket::from_std(socket.into()).map_err(sock_err("register", addr))?;
        Ok(RxSocket { socket })
    }

    /// Waits for the next datagram; its payload lands in `buf`.
    pub(super) async fn recv(&self, buf: &mut [u8]) -> io::Result<Datagram> {
        self.socket
            .async_io(Interest::READABLE, || {
                recv_once(self.socket.as_raw_fd(), &mut *buf)
            })
            .await
    }
}

/// The GTSM socket filter: accept a datagram only if its IPv4 TTL or IPv6 hop limit is
/// 255. Offsets from `SKF_NET_OFF` address the IP header (a UDP socket's filter
/// otherwise starts at the UDP header): the TTL is byte 8 of an IPv4 header, the hop
/// limit byte 7 of an IPv6 one.
fn gtsm_filter(family: Family) -> [SockFilter; 4] {
    use nix::libc::{BPF_ABS, BPF_B, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, SKF_NET_OFF};
    let ttl_offset = match family {
        Family::V4 => 8,
        Family::V6 => 7,
    };
    // Two's complement on purpose: the kernel reads `k` as a signed offset.
    let at = (SKF_NET_OFF + ttl_offset) as u32;
    let code = |c: u32| u16::try_from(c).unwrap_or(0);
    [
        SockFilter::new(code(BPF_LD | BPF_B | BPF_ABS), 0, 0, at),
        // Equal: fall through to accept; else skip it to drop.
        SockFilter::new(code(BPF_JMP | BPF_JEQ | BPF_K), 0, 1, TTL.into()),
        SockFilter::new(code(BPF_RET | BPF_K), 0, 0, u32::MAX),
        SockFilter::new(code(BPF_RET | BPF_K), 0, 0, 0),
    ]
}

/// One `recvmsg` with the ancillary data; `WouldBlock` when nothing is queued.
fn recv_once(fd: std::os::fd::RawFd, buf: &mut [u8]) -> io::Result<Datagram> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(nix::libc::in6_pktinfo, nix::libc::c_int);
    let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())?;
    let from = msg
        .address
        .as_ref()
        .and_then(socket_addr)
        .ok_or_else(|| io::Error::other("datagram without a source address"))?;
    let mut datagram = Datagram {
        len: msg.bytes,
        from,
        to: None,
        ifindex: None,
        ttl: None,
        truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
    };
    for c in msg.cmsgs()? {
        match c {
            ControlMessageOwned::Ipv4PacketInfo(info) => {
                datagram.to = Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)).into());
                datagram.ifindex = u32::try_from(info.ipi_ifindex).ok();
            }
            ControlMessageOwned::Ipv6PacketInfo(info) => {
                datagram.to = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr).into());
                datagram.ifindex = Some(info.ipi6_ifindex);
            }
            ControlMessageOwned::Ipv4Ttl(ttl) | ControlMessageOwned::Ipv6HopLimit(ttl) => {
                datagram.ttl = u8::try_from(ttl).ok();
            }
            _ => {}
        }
    }
    Ok(datagram)
}

fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    let v6 = addr.as_sockaddr_in6()?;
    Some(SocketAddr::V6((*v6).into()))
}

/// One session's transmitting socket: bound to the local address and a source port in
/// 49152-65535 (RFC 5881 §4), TTL / hop limit 255, optionally tied to an interface.
#[derive(Debug)]
pub(super) struct TxSocket {
    socket: UdpSocket,
    peer: SocketAddr,
    local: SocketAddr,
}

impl TxSocket {
    /// `scope` is the interface index of an IPv6 link-local pair; `device` the
    /// interface for `SO_BINDTODEVICE`; `first_port` where the search for a free source
    /// port starts (random, so sessions do not all probe the same ports).
    pub(super) fn bind(
        local: IpAddr,
        peer: IpAddr,
        scope: u32,
        device: Option<&str>,
        first_port: u16,
    ) -> Result<TxSocket, Error> {
        let sockaddr = |ip: IpAddr, port: u16| match ip {
            IpAddr::V4(ip) => SocketAddr::from((ip, port)),
            IpAddr::V6(ip) => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope)),
        };
        let peer = sockaddr(peer, CONTROL_PORT);
        let at = sockaddr(local, 0);
        let socket = Socket::new(Domain::for_address(at), Type::DGRAM, Some(Protocol::UDP))
            .map_err(sock_err("socket", at))?;
        match local {
            IpAddr::V4(_) => {
                socket
                    .set_ttl_v4(TTL.into())
                    .map_err(sock_err("IP_TTL", at))?;
                socket
                    .set_tos_v4(TOS_NETWORK_CONTROL)
                    .map_err(sock_err("IP_TOS", at))?;
            }
            IpAddr::V6(_) => {
                socket
                    .set_unicast_hops_v6(TTL.into())
                    .map_err(sock_err("IPV6_UNICAST_HOPS", at))?;
                setsockopt(&socket, sockopt::Ipv6TClass, &(TOS_NETWORK_CONTROL as i32))
                    .map_err(nix_err("IPV6_TCLASS", at))?;
            }
        }
        if let Some(device) = device {
            socket
                .bind_device(Some(device.as_bytes()))
                .map_err(sock_err("SO_BINDTODEVICE", at))?;
        }
        socket
            .set_nonblocking(true)
            .map_err(sock_err("O_NONBLOCK", at))?;
        let (low, high) = (*SOURCE_PORTS.start(), *SOURCE_PORTS.end());
        let span = u32::from(high - low) + 1;
        let first = u32::from(first_port.clamp(low, high) - low);
        // Probe upwards from a random start: a handful of tries finds a free port unless
        // the range is nearly exhausted, and then every port is tried once.
        let mut bound = None;
        for i in 0..span {
            let port = low + u16::try_from((first + i) % span).unwrap_or(0);
            let addr = sockaddr(local, port);
            match socket.bind(&addr.into()) {
                Ok(()) => {
                    bound = Some(addr);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => {
                    return Err(Error::Socket {
                        what: "bind",
                        addr,
                        source: e,
                    });
                }
            }
        }
        let local = bound.ok_or(Error::NoSourcePort(local))?;
        let socket = UdpSocket::from_std(socket.into()).map_err(sock_err("register", local))?;
        Ok(TxSocket {
            socket,
            peer,
            local,
        })
    }

    /// Sends one control packet to the peer's port 3784.
    pub(super) async fn send(&self, payload: &[u8]) -> io::Result<()> {
        self.socket.send_to(payload, self.peer).await.map(|_| ())
    }

    /// The bound source address and port.
    pub(super) fn local(&self) -> SocketAddr {
        self.local
    }
}
