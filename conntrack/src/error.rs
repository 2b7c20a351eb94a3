//! The crate's error type.

use nix::errno::Errno;

/// Everything that can go wrong dumping or deleting conntrack entries.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The netlink socket could not be opened, a send or receive failed, or a reply
    /// datagram was not netlink.
    #[error("conntrack {operation}: {source}")]
    Netlink {
        /// The conntrack operation in flight ("open", "dump", "delete").
        operation: &'static str,
        /// What failed.
        #[source]
        source: nfnetlink_base::Error,
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
    /// Wraps a socket error of `operation`, for `map_err`.
    pub(crate) fn netlink(operation: &'static str) -> impl FnOnce(nfnetlink_base::Error) -> Error {
        move |source| Error::Netlink { operation, source }
    }

    /// The error for a positive kernel error `code` answering `operation` on `target`.
    pub(crate) fn from_code(operation: &'static str, target: String, code: i32) -> Error {
        match code {
            // nfnetlink answers a subsystem it cannot find (and cannot autoload) so.
            EOPNOTSUPP => Error::NotAvailable {
                reason: format!("{operation} of {target} answered EOPNOTSUPP"),
            },
            code => Error::Kernel {
                operation,
                target,
                code,
                meaning: nfnetlink_base::describe_errno(code),
            },
        }
    }
}

/// errno values the client tells apart.
pub(crate) const ENOENT: i32 = Errno::ENOENT as i32;
pub(crate) const EOPNOTSUPP: i32 = Errno::EOPNOTSUPP as i32;

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
