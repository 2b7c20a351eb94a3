//! Socket setup shared by the blocking and async handles.

use std::os::fd::AsFd;

use netlink_sys::{Socket, SocketAddr};
use nix::sys::socket::{getsockopt, setsockopt, sockopt};

use crate::error::Error;
use crate::exchange::{ACK_COST, MAX_CHUNK_BYTES, WANTED_RECEIVE_BUFFER};

/// How much one `sendmsg` may carry on this socket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Bytes per `sendmsg`.
    pub max_bytes: usize,
    /// Requests per `sendmsg`, so that their acknowledgements fit the receive buffer.
    pub max_requests: usize,
}

fn socket_error(action: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Socket { action, source }
}

/// Binds, connects to the kernel and sizes the buffers of a generic-netlink socket.
pub(crate) fn configure(socket: &mut Socket) -> Result<Limits, Error> {
    socket.bind_auto().map_err(socket_error("bind"))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(socket_error("connect"))?;
    // Errors need not echo the whole request back: the sequence number identifies it.
    let _ = socket.set_cap_ack(true);
    // Above rmem_max only SO_RCVBUFFORCE (CAP_NET_ADMIN) helps; fall back to SO_RCVBUF.
    if setsockopt(
        &socket.as_fd(),
        sockopt::RcvBufForce,
        &WANTED_RECEIVE_BUFFER,
    )
    .is_err()
    {
        let _ = setsockopt(&socket.as_fd(), sockopt::RcvBuf, &WANTED_RECEIVE_BUFFER);
    }
    if setsockopt(
        &socket.as_fd(),
        sockopt::SndBufForce,
        &(2 * MAX_CHUNK_BYTES),
    )
    .is_err()
    {
        let _ = setsockopt(&socket.as_fd(), sockopt::SndBuf, &(2 * MAX_CHUNK_BYTES));
    }
    let receive = getsockopt(&socket.as_fd(), sockopt::RcvBuf).map_err(|e| Error::Socket {
        action: "read SO_RCVBUF",
        source: e.into(),
    })?;
    let send = getsockopt(&socket.as_fd(), sockopt::SndBuf).map_err(|e| Error::Socket {
        action: "read SO_SNDBUF",
        source: e.into(),
    })?;
    let limits = Limits {
        // The kernel refuses a sendmsg longer than the send buffer minus a little.
        max_bytes: MAX_CHUNK_BYTES.min(send.saturating_sub(1024)).max(4096),
        max_requests: (receive / ACK_COST).max(16),
    };
    tracing::debug!(receive, send, ?limits, "IPVS netlink socket ready");
    Ok(limits)
}
