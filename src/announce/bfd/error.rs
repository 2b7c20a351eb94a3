//! The BFD announcer's one error type.

use std::net::{IpAddr, SocketAddr};

use super::SessionKey;

/// Why a BFD session could not be added, changed or removed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket could not be created, configured or bound.
    #[error("BFD socket {what} ({addr}): {source}")]
    Socket {
        /// The step that failed (e.g. "bind", "IP_PKTINFO").
        what: &'static str,
        /// The address the socket is for.
        addr: SocketAddr,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// No source port in 49152-65535 could be bound on the local address.
    #[error("no free BFD source port on {0}")]
    NoSourcePort(IpAddr),
    /// The interface named for `SO_BINDTODEVICE` (or an IPv6 link-local scope) is unknown.
    #[error("unknown interface {name:?}: {source}")]
    Interface {
        /// The interface name.
        name: String,
        /// The system's error.
        #[source]
        source: nix::Error,
    },
    /// The peer and local addresses are unusable together (different families, an
    /// unspecified or multicast address, or an IPv6 link-local pair without interface).
    #[error("invalid BFD session addresses {0}: {1}")]
    Addresses(SessionKey, &'static str),
    /// The session's parameters are out of range.
    #[error("invalid BFD profile for {0}: {1}")]
    Config(SessionKey, #[source] bfd_proto::Error),
    /// A session for these addresses exists already.
    #[error("a BFD session for {0} exists already")]
    Duplicate(SessionKey),
    /// No session for these addresses.
    #[error("no BFD session for {0}")]
    UnknownSession(SessionKey),
    /// The session's task is gone (its runtime shut down).
    #[error("the BFD session task for {0} has stopped")]
    SessionGone(SessionKey),
}
