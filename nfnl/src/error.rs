//! The crate's error type.

use std::io;

use netlink_packet_core::DecodeError;

/// What can go wrong on an nfnetlink socket, whatever the subsystem. The kernel's
/// refusals are not errors here: they are answers ([`crate::Verdict::Refused`], the
/// codes of [`crate::NfnlSocket::acks`]) that the subsystem crate gives a meaning.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket could not be opened, bound, connected or configured.
    #[error(
        "cannot open a NETLINK_NETFILTER socket: {0} (is nfnetlink in this kernel? modprobe nfnetlink)"
    )]
    Socket(#[source] io::Error),
    /// Sending a request failed.
    #[error("netlink send failed: {0}")]
    Send(#[source] io::Error),
    /// Receiving a reply failed, or none came within the reply timeout.
    #[error("netlink receive failed: {0}")]
    Receive(#[source] io::Error),
    /// A reply datagram is not valid netlink, or a message of it not a valid body.
    #[error("cannot decode a netlink reply: {0}")]
    Decode(#[source] DecodeError),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The text of a positive errno `code`, as the C library words it.
pub fn describe_errno(code: i32) -> String {
    io::Error::from_raw_os_error(code).to_string()
}
