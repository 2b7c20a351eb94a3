//! The crate's error type and the meaning of ipset's kernel error codes.

use crate::packet::constants::*;

/// Everything that can go wrong talking to the kernel's ipset.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The netlink socket could not be opened, a send or receive failed, or a reply
    /// datagram was not netlink.
    #[error("ipset {command}: {source}")]
    Netlink {
        /// The ipset command in flight ("open" while opening the socket).
        command: &'static str,
        /// What failed.
        #[source]
        source: nfnetlink_base::Error,
    },
    /// The kernel has no ipset subsystem.
    #[error("ipset is not available in this kernel ({reason}): modprobe ip_set")]
    NotAvailable {
        /// What the handshake got back.
        reason: String,
    },
    /// The kernel speaks no protocol version this crate speaks.
    #[error(
        "the kernel speaks ipset protocol {kernel_min}..={kernel_max}, this crate only {IPSET_PROTOCOL_MIN}..={IPSET_PROTOCOL}"
    )]
    ProtocolMismatch {
        /// Lowest version the kernel accepts.
        kernel_min: u8,
        /// Highest version the kernel accepts.
        kernel_max: u8,
    },
    /// Create of a set whose name is taken (by a set that differs, with exist).
    #[error(
        "set {set} already exists (create with exist=true to accept an identical existing set)"
    )]
    SetExists {
        /// The set name.
        set: String,
    },
    /// The named set does not exist.
    #[error("{command}: set {set} does not exist")]
    SetNotFound {
        /// The ipset command.
        command: &'static str,
        /// The set name.
        set: String,
    },
    /// Destroy or rename of a set an iptables rule or list:set still references.
    #[error(
        "{command}: set {set} is in use by the kernel (an iptables/nftables rule or a list:set references it); remove the reference first"
    )]
    SetInUse {
        /// The ipset command.
        command: &'static str,
        /// The set name.
        set: String,
    },
    /// Add of an entry already in the set, without exist.
    #[error("entry {entry} already exists in set {set} (add with exist=true to ignore)")]
    ElementExists {
        /// The set name.
        set: String,
        /// The entry in ipset syntax.
        entry: String,
    },
    /// Del of an entry not in the set, without exist.
    #[error("entry {entry} is not in set {set} (delete with exist=true to ignore)")]
    ElementMissing {
        /// The set name.
        set: String,
        /// The entry in ipset syntax.
        entry: String,
    },
    /// The kernel lacks the module of a set type.
    #[error(
        "set type {set_type} (family {family}) is not supported by this kernel: modprobe {module}"
    )]
    TypeNotSupported {
        /// The type name.
        set_type: String,
        /// The family asked for.
        family: String,
        /// The kernel module that implements the type.
        module: String,
    },
    /// Rename to a taken name.
    #[error("rename {set} to {to}: a set named {to} already exists")]
    RenameTargetExists {
        /// The set name.
        set: String,
        /// The wanted new name.
        to: String,
    },
    /// Swap with a set that does not exist.
    #[error("swap {set} with {other}: set {other} does not exist")]
    SwapPartnerMissing {
        /// The first set.
        set: String,
        /// The missing second set.
        other: String,
    },
    /// Swap of sets of different type or family.
    #[error(
        "swap {set} with {other}: the sets differ in type or family; only sets of the same type and family can be swapped"
    )]
    SwapTypeMismatch {
        /// The first set.
        set: String,
        /// The second set.
        other: String,
    },
    /// Any other kernel error, with ipset's meaning of the code.
    #[error("{command} on set {set} failed: {meaning} (kernel error {code})")]
    Kernel {
        /// The ipset command.
        command: &'static str,
        /// The set name ("" for commands on all sets).
        set: String,
        /// The positive error code (errno or IPSET_ERR_*).
        code: i32,
        /// What the code means.
        meaning: String,
    },
    /// The caller's input cannot be sent.
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// What was invalid.
        what: String,
        /// Why.
        reason: String,
    },
    /// The kernel's reply could not be decoded.
    #[error("cannot decode the kernel's reply to ipset {command}: {reason}")]
    Decode {
        /// The ipset command.
        command: &'static str,
        /// What was wrong.
        reason: String,
    },
}

impl Error {
    /// Wraps a socket error of `command`, for `map_err`.
    pub(crate) fn netlink(command: &'static str) -> impl FnOnce(nfnetlink_base::Error) -> Error {
        move |source| Error::Netlink { command, source }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a positive kernel error code means to ipset. IPSET_ERR_* codes from 4352 on are
/// type-specific, so `is_bitmap` chooses between the hash and the bitmap meanings.
pub fn describe_code(code: i32, is_bitmap: bool) -> String {
    let text = match code {
        ERR_PROTOCOL => "the kernel rejected the message as malformed (ipset protocol error)",
        ERR_FIND_TYPE => "the set type is not supported by this kernel",
        ERR_MAX_SETS => "the kernel's maximum number of sets is reached (ip_set max_sets)",
        ERR_BUSY => "the set is in use by a kernel component (iptables rule, list:set)",
        ERR_EXIST_SETNAME2 => "the second set name is wrong (taken for rename, missing for swap)",
        ERR_TYPE_MISMATCH => "the sets differ in type or family",
        ERR_EXIST => "the element already exists, or is missing",
        ERR_INVALID_CIDR => "the prefix length is invalid for this set",
        ERR_INVALID_NETMASK => "the netmask is invalid",
        ERR_INVALID_FAMILY => "the address family does not match the set",
        ERR_TIMEOUT => "a timeout was given but the set has no timeout support",
        ERR_REFERENCED => "the set is referenced and cannot be renamed",
        ERR_IPADDR_IPV4 => "an IPv4 address was expected (the set is family inet)",
        ERR_IPADDR_IPV6 => "an IPv6 address was expected (the set is family inet6)",
        ERR_COUNTER => "counters were given but the set has no counter support",
        ERR_COMMENT => "a comment was given but the set was created without comment support",
        ERR_INVALID_MARKMASK => "the markmask is invalid",
        ERR_SKBINFO => "skbinfo was given but the set has no skbinfo support",
        ERR_BITMASK_NETMASK_EXCL => "bitmask and netmask cannot both be set",
        c if c == ERR_TYPE_SPECIFIC && is_bitmap => "the value is outside the bitmap's range",
        c if c == ERR_TYPE_SPECIFIC => "the hash is full (raise maxelem)",
        c if c == ERR_TYPE_SPECIFIC + 1 && is_bitmap => "the bitmap range is too large",
        c if c == ERR_TYPE_SPECIFIC + 1 => "the hash cannot store the element",
        c if c == ERR_TYPE_SPECIFIC + 2 => "invalid protocol",
        c if c == ERR_TYPE_SPECIFIC + 3 => "protocol missing",
        c if c == ERR_TYPE_SPECIFIC + 4 => "ranges are not supported for this element",
        c if c == ERR_TYPE_SPECIFIC + 5 => "invalid range",
        c => return nfnetlink_base::describe_errno(c),
    };
    text.to_string()
}
