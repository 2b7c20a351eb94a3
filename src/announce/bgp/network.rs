//! Sockets towards a peer: an outgoing TCP connection built with socket2 (source
//! address, TTL, TCP MD5 signature) and handed to tokio, and the listening socket on
//! port 179 that takes the peers' own connections (TCP MD5 keys per peer address on
//! it, so a router that only connects, or whose connection wins a collision, is
//! served too).

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::{TcpListener, TcpStream};

use super::error::BgpError;

/// The TTL of our segments. 255 is what a router doing GTSM (RFC 5082, `ttl-security`)
/// checks for on a directly connected session, and it reaches a multihop peer at any
/// distance, so one value serves `ebgpMultiHop` on and off (the option matters to the
/// router's checks, not to what we send).
pub const TTL: u32 = 255;

/// How to reach a peer.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// The peer's address and port.
    pub peer: SocketAddr,
    /// Our address for the session (`sourceAddress`); the kernel picks one otherwise.
    pub source: Option<IpAddr>,
    /// The TCP MD5 signature key (RFC 2385), at most 80 octets.
    pub md5_key: Option<String>,
    /// Give up connecting after this long.
    pub timeout: Duration,
    /// The interface of an IPv6 link-local peer (its scope, and `SO_BINDTODEVICE`).
    pub interface: Option<String>,
}

impl std::fmt::Debug for ConnectOptions {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("peer", &self.peer)
            .field("source", &self.source)
            .field("md5_key", &self.md5_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("interface", &self.interface)
            .finish()
    }
}

/// Opens a TCP connection to the peer: the socket gets its options (MD5 key before
/// the SYN, as the SYN is signed too) and its source address, then connects without
/// blocking the runtime.
pub async fn connect(options: &ConnectOptions) -> Result<TcpStream, BgpError> {
    let scope = match &options.interface {
        Some(name) => {
            nix::net::if_::if_nametoindex(name.as_str()).map_err(|e| BgpError::Socket {
                peer: options.peer,
                source: std::io::Error::from(e),
            })?
        }
        None => 0,
    };
    let peer = match options.peer {
        SocketAddr::V6(v6) if is_link_local(*v6.ip()) => {
            SocketAddr::V6(SocketAddrV6::new(*v6.ip(), v6.port(), 0, scope))
        }
        other => other,
    };
    let socket_error = |source| BgpError::Socket { peer, source };
    let socket = Socket::new(Domain::for_address(peer), Type::STREAM, Some(Protocol::TCP))
        .map_err(socket_error)?;
    socket.set_nonblocking(true).map_err(socket_error)?;
    // BGP messages are small and latency matters more than packing (keepalives).
    socket.set_tcp_nodelay(true).map_err(socket_error)?;
    match peer {
        SocketAddr::V4(_) => socket.set_ttl_v4(TTL),
        SocketAddr::V6(_) => socket.set_unicast_hops_v6(TTL),
    }
    .map_err(socket_error)?;
    if let Some(name) = &options.interface {
        socket
            .bind_device(Some(name.as_bytes()))
            .map_err(socket_error)?;
    }
    if let Some(key) = &options.md5_key {
        set_md5_key(&socket, peer, key.as_bytes())?;
    }
    if let Some(source) = options.source {
        let local = match source {
            IpAddr::V6(ip) if is_link_local(ip) => {
                SocketAddr::V6(SocketAddrV6::new(ip, 0, 0, scope))
            }
            ip => SocketAddr::new(ip, 0),
        };
        socket.bind(&SockAddr::from(local)).map_err(socket_error)?;
    }
    match socket.connect(&SockAddr::from(peer)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(source) => return Err(BgpError::Connect { peer, source }),
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket)).map_err(socket_error)?;
    match tokio::time::timeout(options.timeout, stream.writable()).await {
        Err(_) => return Err(BgpError::ConnectTimeout { peer }),
        Ok(Err(source)) => return Err(BgpError::Connect { peer, source }),
        Ok(Ok(())) => {}
    }
    // Writable means the attempt ended; the pending error says how.
    match stream.take_error() {
        Ok(None) => {}
        Ok(Some(source)) | Err(source) => return Err(BgpError::Connect { peer, source }),
    }
    // A refused connection can also show as writable with no error yet on some kernels:
    // the peer address is only known once connected.
    stream
        .peer_addr()
        .map_err(|source| BgpError::Connect { peer, source })?;
    Ok(stream)
}

/// Whether `ip` is an IPv6 link-local unicast address (fe80::/10), which needs an
/// interface to be reached.
pub fn is_link_local(ip: Ipv6Addr) -> bool {
    ip.is_unicast_link_local()
}

/// Listens for the peers' connections on `port` of every address of `family` (IPv4:
/// `0.0.0.0`, IPv6: `[::]` for IPv6 only, so each family has its own socket and TCP MD5
/// keys go to the socket of their family). Segments leave with TTL 255 as on our own
/// connections; accepted connections inherit the keys.
pub fn listen(v6: bool, port: u16) -> Result<TcpListener, BgpError> {
    let any: SocketAddr = if v6 {
        (std::net::Ipv6Addr::UNSPECIFIED, port).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, port).into()
    };
    let socket_error = |source| BgpError::Socket { peer: any, source };
    let socket = Socket::new(Domain::for_address(any), Type::STREAM, Some(Protocol::TCP))
        .map_err(socket_error)?;
    socket.set_nonblocking(true).map_err(socket_error)?;
    socket.set_reuse_address(true).map_err(socket_error)?;
    if v6 {
        socket.set_only_v6(true).map_err(socket_error)?;
        socket.set_unicast_hops_v6(TTL).map_err(socket_error)?;
    } else {
        socket.set_ttl_v4(TTL).map_err(socket_error)?;
    }
    socket.bind(&SockAddr::from(any)).map_err(socket_error)?;
    socket.listen(64).map_err(socket_error)?;
    TcpListener::from_std(std::net::TcpListener::from(socket)).map_err(socket_error)
}

/// Readies a connection accepted from a peer like our own: no Nagle, TTL 255.
pub fn accepted(stream: &TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let socket = socket2::SockRef::from(stream);
    match stream.peer_addr()? {
        SocketAddr::V4(_) => socket.set_ttl_v4(TTL),
        SocketAddr::V6(_) => socket.set_unicast_hops_v6(TTL),
    }
}

/// The kernel's `struct tcp_md5sig` (include/uapi/linux/tcp.h), which libc does not
/// define: the peer's address as a `sockaddr_storage`, flags and prefix length (used
/// only with `TCP_MD5SIG_EXT`), the key's length, an interface index (padding before
/// Linux 4.14) and the key.
#[repr(C)]
struct TcpMd5Sig {
    addr: [u8; 128],
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: i32,
    key: [u8; 80],
}

/// The longest key the kernel takes (`TCP_MD5SIG_MAXKEYLEN`).
pub const MD5_MAX_KEY: usize = 80;

/// `peer` laid out as the kernel's `sockaddr_in` or `sockaddr_in6` at the start of a
/// `sockaddr_storage`. The port is left zero: the kernel matches keys by address only.
fn sockaddr_bytes(peer: IpAddr) -> [u8; 128] {
    let mut out = [0u8; 128];
    match peer {
        IpAddr::V4(a) => {
            out[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            // sin_port (2 octets) stays zero; sin_addr follows.
            out[4..8].copy_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            // sin6_port (2) and sin6_flowinfo (4) stay zero; sin6_addr follows.
            out[8..24].copy_from_slice(&a.octets());
        }
    }
    out
}

/// Sets the TCP MD5 signature key for segments to and from `peer` on `socket`
/// (`TCP_MD5SIG`; on a listening socket, for the connections it accepts from `peer`);
/// an empty key removes it.
///
/// Neither socket2 nor nix has this option, so the structure is built here and passed
/// to `setsockopt` directly, which is `unsafe`: the kernel reads `size_of::<TcpMd5Sig>()`
/// bytes from the pointer.
#[allow(unsafe_code)]
pub fn set_md5_key(socket: &impl AsRawFd, peer: SocketAddr, key: &[u8]) -> Result<(), BgpError> {
    if key.len() > MD5_MAX_KEY {
        return Err(BgpError::PasswordTooLong {
            peer,
            len: key.len(),
        });
    }
    let mut sig = TcpMd5Sig {
        addr: sockaddr_bytes(peer.ip()),
        flags: 0,
        prefixlen: 0,
        keylen: key.len() as u16,
        ifindex: 0,
        key: [0; 80],
    };
    sig.key[..key.len()].copy_from_slice(key);
    // SAFETY: `sig` is a live, initialised `#[repr(C)]` value laid out as the kernel's
    // `struct tcp_md5sig` (216 bytes, checked by a unit test); the length passed is its
    // size, and the kernel only reads from the pointer during the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            (&raw const sig).cast(),
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(BgpError::Socket {
            peer,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_md5_structure_has_the_kernels_size_and_address_layout() {
        assert_eq!(std::mem::size_of::<TcpMd5Sig>(), 216);
        let v4 = sockaddr_bytes("192.0.2.1".parse().unwrap());
        assert_eq!(u16::from_ne_bytes([v4[0], v4[1]]), libc::AF_INET as u16);
        assert_eq!(&v4[4..8], &[192, 0, 2, 1]);
        let v6 = sockaddr_bytes("2001:db8::1".parse().unwrap());
        assert_eq!(u16::from_ne_bytes([v6[0], v6[1]]), libc::AF_INET6 as u16);
        assert_eq!(v6[8], 0x20);
        assert_eq!(v6[23], 1);
    }

    #[test]
    fn the_kernel_takes_a_key_and_refuses_a_long_one() {
        let peer: SocketAddr = "127.0.0.2:179".parse().unwrap();
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        set_md5_key(&socket, peer, b"secret").unwrap();
        // Removing it again (empty key) is accepted too.
        set_md5_key(&socket, peer, b"").unwrap();
        assert!(matches!(
            set_md5_key(&socket, peer, &[b'x'; 81]),
            Err(BgpError::PasswordTooLong { len: 81, .. })
        ));
    }
}
