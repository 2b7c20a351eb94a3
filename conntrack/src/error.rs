//! The crate's error type.

use std::io;

/// Everything that can go wrong dumping or deleting conntrack entries.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The netlink socket could not be opened or bound.
    #[error(
        "cannot open a NETLINK_NETFILTER socket: {0} (is nfnetlink in this kernel? modprobe nfnetlink)"
    )]
    Socket(#[source] io::Error),
    /// Sending or receiving failed.
    #[error("netlink {op} for conntrack {operation} failed: {source}")]
    Io {
        /// "send" or "receive".
        op: &'static str,
        /// The conntrack operation in flight ("dump", "delete").
        operation: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The kernel has no ctnetlink (conntrack over netlink).
    #[error(
        "conntrack over netlink is not available in this kernel ({reason}): modprobe nf_conntrack_netlink"
    )]
    NotAvailable {
        /// What the kernel answered.
        reason: String,
    },
    /// The kernel refused a request.
    #[error("conntrack {operation} of {target} failed: {meaning} (kernel error {code})")]
    Kernel {
        /// The operation ("dump", "delete").
        operation: &'static str,
        /// What it was about: a flow, or the family of a dump.
        target: String,
        /// The positive errno.
        code: i32,
        /// What the code means.
        meaning: String,
    },
    /// The kernel's reply could not be decoded.
    #[error("cannot decode the kernel's reply to conntrack {operation}: {reason}")]
    Decode {
        /// The operation ("dump", "delete").
        operation: &'static str,
        /// What was wrong.
        reason: String,
    },
}

impl Error {
    /// The error for a positive kernel error `code` answering `operation` on `target`.
    pub(crate) fn from_code(operation: &'static str, target: String, code: i32) -> Error {
        match code {
            // nfnetlink answers a subsystem it cannot find (and cannot autoload) so.
            libc_eopnotsupp if libc_eopnotsupp == EOPNOTSUPP => Error::NotAvailable {
                reason: format!("{operation} of {target} answered EOPNOTSUPP"),
            },
            code => Error::Kernel {
                operation,
                target,
                code,
                meaning: io::Error::from_raw_os_error(code).to_string(),
            },
        }
    }
}

/// errno values the client tells apart.
pub(crate) const ENOENT: i32 = 2;
pub(crate) const EOPNOTSUPP: i32 = 95;

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
