//! The speaker's one error type.

use std::io;
use std::net::SocketAddr;

/// What can go wrong between the speaker and one peer.
#[derive(Debug, thiserror::Error)]
pub enum BgpError {
    /// The socket could not be set up (creation, options, bind).
    #[error("cannot set up a socket to {peer}: {source}")]
    Socket {
        /// The peer.
        peer: SocketAddr,
        /// The system's error.
        source: io::Error,
    },
    /// A TCP MD5 key longer than the kernel takes (80 octets).
    #[error("the TCP MD5 password for {peer} is {len} octets; at most 80 are allowed")]
    PasswordTooLong {
        /// The peer.
        peer: SocketAddr,
        /// The password's length.
        len: usize,
    },
    /// Connecting failed.
    #[error("cannot connect to {peer}: {source}")]
    Connect {
        /// The peer.
        peer: SocketAddr,
        /// The system's error.
        source: io::Error,
    },
    /// Connecting took longer than allowed.
    #[error("connecting to {peer} timed out")]
    ConnectTimeout {
        /// The peer.
        peer: SocketAddr,
    },
    /// A message could not be encoded (a bug, or an attribute set too large).
    #[error("cannot encode a message for {peer}: {source}")]
    Encode {
        /// The peer.
        peer: SocketAddr,
        /// The codec's error.
        source: bgp_proto::Error,
    },
}
