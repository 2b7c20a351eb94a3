//! Numbers of the ipset netlink ABI (`include/uapi/linux/netfilter/ipset/ip_set.h`).

use nix::errno::Errno;

/// Highest protocol version this crate speaks.
pub(crate) const IPSET_PROTOCOL: u8 = 7;
/// Lowest protocol version this crate speaks.
pub(crate) const IPSET_PROTOCOL_MIN: u8 = 6;
/// Longest set or type name, including the terminating NUL.
pub(crate) const IPSET_MAXNAMELEN: usize = 32;
/// Longest entry comment the kernel accepts, excluding the NUL.
pub(crate) const IPSET_MAX_COMMENT_SIZE: usize = 255;

// Command-level attributes.
pub(crate) const ATTR_PROTOCOL: u16 = 1;
pub(crate) const ATTR_SETNAME: u16 = 2;
pub(crate) const ATTR_TYPENAME: u16 = 3; // also SETNAME2 for rename/swap
pub(crate) const ATTR_REVISION: u16 = 4;
pub(crate) const ATTR_FAMILY: u16 = 5;
pub(crate) const ATTR_FLAGS: u16 = 6;
pub(crate) const ATTR_DATA: u16 = 7;
pub(crate) const ATTR_ADT: u16 = 8;
pub(crate) const ATTR_LINENO: u16 = 9;
pub(crate) const ATTR_PROTOCOL_MIN: u16 = 10; // also REVISION_MIN for TYPE

// Attributes shared by create and add/del/test data (CADT).
pub(crate) const ATTR_IP: u16 = 1;
pub(crate) const ATTR_IP_TO: u16 = 2;
pub(crate) const ATTR_CIDR: u16 = 3;
pub(crate) const ATTR_PORT: u16 = 4;
pub(crate) const ATTR_PORT_TO: u16 = 5;
pub(crate) const ATTR_TIMEOUT: u16 = 6;
pub(crate) const ATTR_PROTO: u16 = 7;
pub(crate) const ATTR_CADT_FLAGS: u16 = 8;
pub(crate) const ATTR_CADT_LINENO: u16 = 9;

// Create-only (and header) attributes.
pub(crate) const ATTR_INITVAL: u16 = 17;
pub(crate) const ATTR_HASHSIZE: u16 = 18;
pub(crate) const ATTR_MAXELEM: u16 = 19;
pub(crate) const ATTR_NETMASK: u16 = 20;
pub(crate) const ATTR_BUCKETSIZE: u16 = 21;
pub(crate) const ATTR_RESIZE: u16 = 22;
pub(crate) const ATTR_SIZE: u16 = 23;
pub(crate) const ATTR_ELEMENTS: u16 = 24;
pub(crate) const ATTR_REFERENCES: u16 = 25;
pub(crate) const ATTR_MEMSIZE: u16 = 26;

// Add/del/test-only attributes.
pub(crate) const ATTR_IP2: u16 = 20;
pub(crate) const ATTR_CIDR2: u16 = 21;
pub(crate) const ATTR_COMMENT: u16 = 26;

// Nested inside ATTR_IP / ATTR_IP2.
pub(crate) const ATTR_IPADDR_IPV4: u16 = 1;
pub(crate) const ATTR_IPADDR_IPV6: u16 = 2;

// Command-level flags (IPSET_ATTR_FLAGS).
pub(crate) const FLAG_LIST_HEADER: u32 = 1 << 2;

// CADT flags (IPSET_ATTR_CADT_FLAGS).
pub(crate) const FLAG_WITH_COMMENT: u32 = 1 << 4;

// errno values ipset's answers are told apart by.
pub(crate) const ENOENT: i32 = Errno::ENOENT as i32;
pub(crate) const EEXIST: i32 = Errno::EEXIST as i32;
pub(crate) const EBUSY: i32 = Errno::EBUSY as i32;

// ipset's own error codes, which the kernel returns as negative netlink errors.
pub(crate) const ERR_PROTOCOL: i32 = 4097;
pub(crate) const ERR_FIND_TYPE: i32 = 4098;
pub(crate) const ERR_MAX_SETS: i32 = 4099;
pub(crate) const ERR_BUSY: i32 = 4100;
pub(crate) const ERR_EXIST_SETNAME2: i32 = 4101;
pub(crate) const ERR_TYPE_MISMATCH: i32 = 4102;
pub(crate) const ERR_EXIST: i32 = 4103;
pub(crate) const ERR_INVALID_CIDR: i32 = 4104;
pub(crate) const ERR_INVALID_NETMASK: i32 = 4105;
pub(crate) const ERR_INVALID_FAMILY: i32 = 4106;
pub(crate) const ERR_TIMEOUT: i32 = 4107;
pub(crate) const ERR_REFERENCED: i32 = 4108;
pub(crate) const ERR_IPADDR_IPV4: i32 = 4109;
pub(crate) const ERR_IPADDR_IPV6: i32 = 4110;
pub(crate) const ERR_COUNTER: i32 = 4111;
pub(crate) const ERR_COMMENT: i32 = 4112;
pub(crate) const ERR_INVALID_MARKMASK: i32 = 4113;
pub(crate) const ERR_SKBINFO: i32 = 4114;
pub(crate) const ERR_BITMASK_NETMASK_EXCL: i32 = 4115;
pub(crate) const ERR_TYPE_SPECIFIC: i32 = 4352;
