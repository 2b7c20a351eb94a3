//! Numbers of the IPVS generic-netlink ABI, from `include/uapi/linux/ip_vs.h`.

/// Generic-netlink family name the kernel registers for IPVS.
pub const IPVS_GENL_NAME: &str = "IPVS";
/// Version of the IPVS generic-netlink protocol.
pub const IPVS_GENL_VERSION: u8 = 1;

/// Add a service.
pub const IPVS_CMD_NEW_SERVICE: u8 = 1;
/// Modify a service.
pub const IPVS_CMD_SET_SERVICE: u8 = 2;
/// Delete a service.
pub const IPVS_CMD_DEL_SERVICE: u8 = 3;
/// Get one service, or dump all.
pub const IPVS_CMD_GET_SERVICE: u8 = 4;
/// Add a destination.
pub const IPVS_CMD_NEW_DEST: u8 = 5;
/// Modify a destination.
pub const IPVS_CMD_SET_DEST: u8 = 6;
/// Delete a destination.
pub const IPVS_CMD_DEL_DEST: u8 = 7;
/// Dump the destinations of a service.
pub const IPVS_CMD_GET_DEST: u8 = 8;
/// Start a sync daemon.
pub const IPVS_CMD_NEW_DAEMON: u8 = 9;
/// Stop a sync daemon.
pub const IPVS_CMD_DEL_DAEMON: u8 = 10;
/// Get the sync daemon state.
pub const IPVS_CMD_GET_DAEMON: u8 = 11;
/// Set timeouts.
pub const IPVS_CMD_SET_CONFIG: u8 = 12;
/// Get timeouts.
pub const IPVS_CMD_GET_CONFIG: u8 = 13;
/// Command of the reply to `IPVS_CMD_GET_INFO`.
pub const IPVS_CMD_SET_INFO: u8 = 14;
/// Get the version and connection table size.
pub const IPVS_CMD_GET_INFO: u8 = 15;
/// Zero counters of one service or of all.
pub const IPVS_CMD_ZERO: u8 = 16;
/// Delete every service.
pub const IPVS_CMD_FLUSH: u8 = 17;

/// Nested service attributes.
pub const IPVS_CMD_ATTR_SERVICE: u16 = 1;
/// Nested destination attributes.
pub const IPVS_CMD_ATTR_DEST: u16 = 2;
/// Nested sync daemon attributes.
pub const IPVS_CMD_ATTR_DAEMON: u16 = 3;
/// TCP established timeout, seconds.
pub const IPVS_CMD_ATTR_TIMEOUT_TCP: u16 = 4;
/// TCP FIN-wait timeout, seconds.
pub const IPVS_CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5;
/// UDP timeout, seconds.
pub const IPVS_CMD_ATTR_TIMEOUT_UDP: u16 = 6;

/// Address family (u16).
pub const IPVS_SVC_ATTR_AF: u16 = 1;
/// Protocol (u16).
pub const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
/// Virtual address (`union nf_inet_addr`).
pub const IPVS_SVC_ATTR_ADDR: u16 = 3;
/// Virtual port (big endian u16).
pub const IPVS_SVC_ATTR_PORT: u16 = 4;
/// Firewall mark (u32).
pub const IPVS_SVC_ATTR_FWMARK: u16 = 5;
/// Scheduler name (string).
pub const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
/// Flags and mask (`struct ip_vs_flags`).
pub const IPVS_SVC_ATTR_FLAGS: u16 = 7;
/// Persistence timeout, seconds (u32).
pub const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
/// Persistence netmask (IPv4 mask, or IPv6 prefix length).
pub const IPVS_SVC_ATTR_NETMASK: u16 = 9;
/// Nested 32-bit statistics.
pub const IPVS_SVC_ATTR_STATS: u16 = 10;
/// Persistence engine name (string).
pub const IPVS_SVC_ATTR_PE_NAME: u16 = 11;
/// Nested 64-bit statistics.
pub const IPVS_SVC_ATTR_STATS64: u16 = 12;

/// Real server address.
pub const IPVS_DEST_ATTR_ADDR: u16 = 1;
/// Real server port (big endian u16).
pub const IPVS_DEST_ATTR_PORT: u16 = 2;
/// Forwarding method (u32).
pub const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
/// Weight (u32).
pub const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
/// Upper connection threshold (u32).
pub const IPVS_DEST_ATTR_U_THRESH: u16 = 5;
/// Lower connection threshold (u32).
pub const IPVS_DEST_ATTR_L_THRESH: u16 = 6;
/// Active connections (u32).
pub const IPVS_DEST_ATTR_ACTIVE_CONNS: u16 = 7;
/// Inactive connections (u32).
pub const IPVS_DEST_ATTR_INACT_CONNS: u16 = 8;
/// Persistent connection templates (u32).
pub const IPVS_DEST_ATTR_PERSIST_CONNS: u16 = 9;
/// Nested 32-bit statistics.
pub const IPVS_DEST_ATTR_STATS: u16 = 10;
/// Address family of the real server (u16).
pub const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;
/// Nested 64-bit statistics.
pub const IPVS_DEST_ATTR_STATS64: u16 = 12;
/// Tunnel type (u8).
pub const IPVS_DEST_ATTR_TUN_TYPE: u16 = 13;
/// Tunnel port (big endian u16).
pub const IPVS_DEST_ATTR_TUN_PORT: u16 = 14;
/// Tunnel flags (u16).
pub const IPVS_DEST_ATTR_TUN_FLAGS: u16 = 15;

/// Connections scheduled.
pub const IPVS_STATS_ATTR_CONNS: u16 = 1;
/// Incoming packets.
pub const IPVS_STATS_ATTR_INPKTS: u16 = 2;
/// Outgoing packets.
pub const IPVS_STATS_ATTR_OUTPKTS: u16 = 3;
/// Incoming bytes.
pub const IPVS_STATS_ATTR_INBYTES: u16 = 4;
/// Outgoing bytes.
pub const IPVS_STATS_ATTR_OUTBYTES: u16 = 5;
/// Connection rate.
pub const IPVS_STATS_ATTR_CPS: u16 = 6;
/// Incoming packet rate.
pub const IPVS_STATS_ATTR_INPPS: u16 = 7;
/// Outgoing packet rate.
pub const IPVS_STATS_ATTR_OUTPPS: u16 = 8;
/// Incoming byte rate.
pub const IPVS_STATS_ATTR_INBPS: u16 = 9;
/// Outgoing byte rate.
pub const IPVS_STATS_ATTR_OUTBPS: u16 = 10;

/// IPVS version number (u32), in `IPVS_CMD_SET_INFO` replies.
pub const IPVS_INFO_ATTR_VERSION: u16 = 1;
/// Connection hash table size (u32), in `IPVS_CMD_SET_INFO` replies.
pub const IPVS_INFO_ATTR_CONN_TAB_SIZE: u16 = 2;

/// Persistent service.
pub const IP_VS_SVC_F_PERSISTENT: u32 = 0x0001;
/// Hashed entry (set by the kernel).
pub const IP_VS_SVC_F_HASHED: u32 = 0x0002;
/// One-packet scheduling.
pub const IP_VS_SVC_F_ONEPACKET: u32 = 0x0004;
/// Scheduler flag 1 (sh-fallback, mh-fallback).
pub const IP_VS_SVC_F_SCHED1: u32 = 0x0008;
/// Scheduler flag 2 (sh-port, mh-port).
pub const IP_VS_SVC_F_SCHED2: u32 = 0x0010;
/// Scheduler flag 3.
pub const IP_VS_SVC_F_SCHED3: u32 = 0x0020;

/// Masquerading (NAT).
pub const IP_VS_CONN_F_MASQ: u32 = 0;
/// Local node.
pub const IP_VS_CONN_F_LOCALNODE: u32 = 1;
/// IP tunnelling.
pub const IP_VS_CONN_F_TUNNEL: u32 = 2;
/// Direct routing.
pub const IP_VS_CONN_F_DROUTE: u32 = 3;
/// Cache bypass.
pub const IP_VS_CONN_F_BYPASS: u32 = 4;
/// Mask of the forwarding method bits.
pub const IP_VS_CONN_F_FWD_MASK: u32 = 7;

/// `AF_INET`.
pub const AF_INET: u16 = 2;
/// `AF_INET6`.
pub const AF_INET6: u16 = 10;

/// Sync daemon state (u32): [`IP_VS_STATE_MASTER`] or [`IP_VS_STATE_BACKUP`].
pub const IPVS_DAEMON_ATTR_STATE: u16 = 1;
/// Multicast interface name (string).
pub const IPVS_DAEMON_ATTR_MCAST_IFN: u16 = 2;
/// Sync ID (u32).
pub const IPVS_DAEMON_ATTR_SYNC_ID: u16 = 3;
/// Largest sync message (u16).
pub const IPVS_DAEMON_ATTR_SYNC_MAXLEN: u16 = 4;
/// IPv4 multicast group (4 bytes, network order).
pub const IPVS_DAEMON_ATTR_MCAST_GROUP: u16 = 5;
/// IPv6 multicast group (16 bytes).
pub const IPVS_DAEMON_ATTR_MCAST_GROUP6: u16 = 6;
/// Multicast port (u16).
pub const IPVS_DAEMON_ATTR_MCAST_PORT: u16 = 7;
/// Multicast TTL (u8).
pub const IPVS_DAEMON_ATTR_MCAST_TTL: u16 = 8;

/// The master sync daemon (sends connection state).
pub const IP_VS_STATE_MASTER: u32 = 0x0001;
/// The backup sync daemon (receives connection state).
pub const IP_VS_STATE_BACKUP: u32 = 0x0002;
