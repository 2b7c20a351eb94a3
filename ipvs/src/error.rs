//! The crate's error type.

use std::fmt;
use std::io;

/// What the crate was doing when something failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Resolving the IPVS generic-netlink family.
    ResolveFamily,
    /// Adding a service.
    AddService,
    /// Editing a service.
    EditService,
    /// Deleting a service.
    DeleteService,
    /// Reading one service.
    GetService,
    /// Listing services.
    ListServices,
    /// Adding a destination.
    AddDestination,
    /// Editing a destination.
    EditDestination,
    /// Deleting a destination.
    DeleteDestination,
    /// Listing destinations.
    ListDestinations,
    /// Reading general information.
    GetInfo,
    /// Reading timeouts.
    GetTimeouts,
    /// Setting timeouts.
    SetTimeouts,
    /// Zeroing counters.
    Zero,
    /// Deleting every service.
    Flush,
    /// Listing the sync daemons.
    ListDaemons,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::ResolveFamily => "resolve the IPVS netlink family",
            Operation::AddService => "add service",
            Operation::EditService => "edit service",
            Operation::DeleteService => "delete service",
            Operation::GetService => "get service",
            Operation::ListServices => "list services",
            Operation::AddDestination => "add destination",
            Operation::EditDestination => "edit destination",
            Operation::DeleteDestination => "delete destination",
            Operation::ListDestinations => "list destinations of",
            Operation::GetInfo => "get IPVS info",
            Operation::GetTimeouts => "get timeouts",
            Operation::SetTimeouts => "set timeouts",
            Operation::Zero => "zero counters of",
            Operation::Flush => "flush all services",
            Operation::ListDaemons => "list sync daemons",
        })
    }
}

/// Everything that can go wrong talking to IPVS.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel has no IPVS generic-netlink family.
    #[error("IPVS is not available in this kernel: load the ip_vs module (modprobe ip_vs)")]
    IpvsUnavailable,

    /// The kernel refused a request.
    #[error("{operation} {object}: {} (errno {errno}){}", io::Error::from_raw_os_error(*.errno), hint(*.operation, *.errno))]
    Kernel {
        /// What was attempted.
        operation: Operation,
        /// The object it was attempted on (`TCP 10.0.0.1:80`, `... -> 10.1.0.5:8080`).
        object: String,
        /// The positive errno the kernel returned.
        errno: i32,
    },

    /// The acknowledgement of a request never arrived because the socket's receive buffer
    /// overflowed (ENOBUFS); whether the kernel applied it is unknown.
    #[error(
        "{operation} {object}: its acknowledgement was lost (netlink receive buffer overrun, ENOBUFS); read the state back to learn whether it was applied"
    )]
    AckLost {
        /// What was attempted.
        operation: Operation,
        /// The object it was attempted on.
        object: String,
    },

    /// A socket call failed.
    #[error("netlink socket: {action} failed: {source}")]
    Socket {
        /// The call (`open`, `send`, `receive`, ...).
        action: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// The kernel's reply could not be decoded.
    #[error("{operation} {object}: cannot decode the kernel's reply: {reason}")]
    Decode {
        /// What was attempted.
        operation: Operation,
        /// The object it was attempted on.
        object: String,
        /// What was wrong with the reply.
        reason: String,
    },

    /// The caller asked for something IPVS cannot express.
    #[error("invalid {object}: {reason}")]
    InvalidInput {
        /// The object that was rejected.
        object: String,
        /// Why, and what to do instead.
        reason: String,
    },
}

impl Error {
    /// The kernel errno, when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// Whether the object already existed (EEXIST).
    pub fn is_already_exists(&self) -> bool {
        self.errno() == Some(libc_errno::EEXIST)
    }

    /// Whether the service (ESRCH) or destination (ENOENT) did not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::Kernel {
                errno, operation, ..
            } => {
                *errno == libc_errno::ESRCH
                    || (*errno == libc_errno::ENOENT
                        && matches!(
                            operation,
                            Operation::EditDestination | Operation::DeleteDestination
                        ))
            }
            _ => false,
        }
    }
}

/// The errno values the crate interprets.
pub(crate) mod libc_errno {
    pub const ENOENT: i32 = 2;
    pub const ESRCH: i32 = 3;
    pub const ENOBUFS: i32 = 105;
    pub const EEXIST: i32 = 17;
    pub const EPERM: i32 = 1;
    pub const EINVAL: i32 = 22;
    pub const EAFNOSUPPORT: i32 = 97;
    pub const EBUSY: i32 = 16;
}

/// What the operator can do about an errno, given what was attempted.
fn hint(operation: Operation, errno: i32) -> &'static str {
    use Operation::*;
    use libc_errno::*;
    match (errno, operation) {
        (EEXIST, AddService) => "; the service already exists: edit it instead",
        (EEXIST, AddDestination) => "; the destination already exists: edit it instead",
        (ESRCH, _) => "; the service does not exist",
        (ENOENT, AddService | EditService) => {
            "; the scheduler or persistence engine is unknown: check the name, or load its module (modprobe ip_vs_<name>)"
        }
        (ENOENT, EditDestination | DeleteDestination) => "; the destination does not exist",
        (EPERM, _) => "; this needs CAP_NET_ADMIN in the network namespace",
        (EAFNOSUPPORT, _) => {
            "; the address family is not supported (IPv6 needs a kernel with CONFIG_IP_VS_IPV6)"
        }
        (EINVAL, AddDestination | EditDestination) => {
            "; the kernel rejected the destination's attributes (weight, thresholds, forwarding method, tunnel settings; mixed address families need tunnel forwarding)"
        }
        (EINVAL, _) => "; the kernel rejected the attributes",
        (EBUSY, _) => "; another dump is running on this socket",
        _ => "",
    }
}
