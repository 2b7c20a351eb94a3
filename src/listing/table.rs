//! The listing's view of the kernel IPVS table: exactly what `ipvsadm -L` shows,
//! independent of how it was read. Serialised as the `--json` output.

use std::net::IpAddr;

use serde::Serialize;

/// IP protocol numbers IPVS services use (`IPPROTO_*`).
pub mod protocol {
    /// `IPPROTO_TCP`.
    pub const TCP: u16 = 6;
    /// `IPPROTO_UDP`.
    pub const UDP: u16 = 17;
    /// `IPPROTO_SCTP`.
    pub const SCTP: u16 = 132;
}

/// Everything the listing shows: the IPVS version line and every virtual service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Table {
    /// IPVS version of the kernel, as `major.minor.patch`.
    pub version: String,
    /// Size of the kernel's connection hash table.
    pub connection_table_size: u32,
    /// Virtual services, in the kernel's order (the formatter sorts like ipvsadm).
    pub services: Vec<Service>,
}

/// Address family of a service or destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// `AF_INET`.
    Ipv4,
    /// `AF_INET6`.
    Ipv6,
}

impl Family {
    /// The family of `addr`.
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    /// The kernel's `AF_*` number, which ipvsadm sorts by.
    pub fn number(self) -> u16 {
        match self {
            Family::Ipv4 => 2,
            Family::Ipv6 => 10,
        }
    }
}

/// How a virtual service is matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ServiceKey {
    /// Protocol, virtual address and port.
    Address {
        /// IP protocol number (6 TCP, 17 UDP, 132 SCTP).
        protocol: u16,
        /// Virtual IP address.
        address: IpAddr,
        /// Virtual port.
        port: u16,
    },
    /// A firewall mark set by netfilter.
    Fwmark {
        /// The mark.
        mark: u32,
        /// Address family of the marked packets.
        family: Family,
    },
}

impl ServiceKey {
    /// The service's address family.
    pub fn family(&self) -> Family {
        match self {
            ServiceKey::Address { address, .. } => Family::of(address),
            ServiceKey::Fwmark { family, .. } => *family,
        }
    }

    /// The IP protocol number; 0 for firewall-mark services.
    pub fn protocol(&self) -> u16 {
        match self {
            ServiceKey::Address { protocol, .. } => *protocol,
            ServiceKey::Fwmark { .. } => 0,
        }
    }
}

/// Session persistence of a service (`ipvsadm -p`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Persistence {
    /// Seconds a client stays with its real server after its last connection.
    pub timeout: u32,
    /// Client addresses are grouped by this mask: a dotted IPv4 mask for IPv4
    /// services, a prefix length for IPv6 services.
    pub netmask: Netmask,
}

/// A persistence netmask in the service family's own notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Netmask {
    /// IPv4 mask such as `255.255.255.0`.
    V4(std::net::Ipv4Addr),
    /// IPv6 prefix length such as `64`.
    V6(u8),
}

impl Netmask {
    /// True for the mask that groups nothing (/32 or /128), which ipvsadm omits.
    pub fn is_host(self) -> bool {
        match self {
            Netmask::V4(mask) => mask == std::net::Ipv4Addr::BROADCAST,
            Netmask::V6(prefix) => prefix == 128,
        }
    }
}

/// Service flags shown by the listing (`IP_VS_SVC_F_*` other than persistence).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServiceFlags {
    /// One-packet scheduling (`-o`, shown as `ops`).
    pub one_packet: bool,
    /// Scheduler flag 1 (`sh-fallback` / `mh-fallback` / `flag-1`).
    pub sched_flag_1: bool,
    /// Scheduler flag 2 (`sh-port` / `mh-port` / `flag-2`).
    pub sched_flag_2: bool,
    /// Scheduler flag 3 (`flag-3`).
    pub sched_flag_3: bool,
}

impl ServiceFlags {
    /// `IP_VS_SVC_F_ONEPACKET`.
    pub const ONE_PACKET: u32 = 0x0004;
    /// `IP_VS_SVC_F_SCHED1`.
    pub const SCHED1: u32 = 0x0008;
    /// `IP_VS_SVC_F_SCHED2`.
    pub const SCHED2: u32 = 0x0010;
    /// `IP_VS_SVC_F_SCHED3`.
    pub const SCHED3: u32 = 0x0020;

    /// Decodes the kernel's flag word.
    pub fn from_bits(bits: u32) -> ServiceFlags {
        ServiceFlags {
            one_packet: bits & Self::ONE_PACKET != 0,
            sched_flag_1: bits & Self::SCHED1 != 0,
            sched_flag_2: bits & Self::SCHED2 != 0,
            sched_flag_3: bits & Self::SCHED3 != 0,
        }
    }

    /// True when any scheduler flag is set.
    pub fn any_sched_flag(self) -> bool {
        self.sched_flag_1 || self.sched_flag_2 || self.sched_flag_3
    }

    /// The scheduler flags by the names ipvsadm gives them for `scheduler`.
    pub fn sched_flag_names(self, scheduler: &str) -> Vec<&'static str> {
        let names: [&'static str; 3] = match scheduler {
            "sh" => ["sh-fallback", "sh-port", ""],
            "mh" => ["mh-fallback", "mh-port", ""],
            _ => ["flag-1", "flag-2", "flag-3"],
        };
        [self.sched_flag_1, self.sched_flag_2, self.sched_flag_3]
            .into_iter()
            .zip(names)
            .filter(|(set, name)| *set && !name.is_empty())
            .map(|(_, name)| name)
            .collect()
    }
}

/// Traffic counters and rate estimates of a service or destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Connections scheduled.
    pub conns: u64,
    /// Packets in.
    pub inpkts: u64,
    /// Packets out.
    pub outpkts: u64,
    /// Bytes in.
    pub inbytes: u64,
    /// Bytes out.
    pub outbytes: u64,
    /// Connections per second.
    pub cps: u64,
    /// Packets in per second.
    pub inpps: u64,
    /// Packets out per second.
    pub outpps: u64,
    /// Bytes in per second.
    pub inbps: u64,
    /// Bytes out per second.
    pub outbps: u64,
}

/// One virtual service and its real servers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Service {
    /// How the service is matched.
    pub key: ServiceKey,
    /// Scheduler name (`rr`, `wrr`, `sh`, `mh`, ...).
    pub scheduler: String,
    /// Persistence, when the service is persistent.
    pub persistence: Option<Persistence>,
    /// Persistence engine name (`sip`), when one is set.
    pub persistence_engine: Option<String>,
    /// Flags.
    pub flags: ServiceFlags,
    /// Counters.
    pub stats: Stats,
    /// Real servers, in the kernel's order.
    pub destinations: Vec<Destination>,
}

/// How packets reach a real server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Forwarding {
    /// NAT (`-m`).
    Masq,
    /// The real server is this node.
    Local,
    /// IP-in-IP, GUE or GRE tunnel (`-i`).
    Tunnel,
    /// Direct routing (`-g`).
    Route,
    /// Cache bypass.
    Bypass,
}

impl Forwarding {
    /// `IP_VS_CONN_F_FWD_MASK`.
    pub const MASK: u32 = 0x7;

    /// Decodes the forwarding bits of a destination's connection flags.
    pub fn from_conn_flags(flags: u32) -> Forwarding {
        match flags & Self::MASK {
            0 => Forwarding::Masq,
            1 => Forwarding::Local,
            2 => Forwarding::Tunnel,
            3 => Forwarding::Route,
            _ => Forwarding::Bypass,
        }
    }
}

/// Encapsulation of a tunnel destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelType {
    /// IP-in-IP.
    Ipip,
    /// Generic UDP encapsulation.
    Gue,
    /// GRE.
    Gre,
}

/// Checksum handling of GUE/GRE tunnels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TunnelChecksum {
    /// No checksum (`-c`).
    None,
    /// Checksum (`+c`).
    Checksum,
    /// Remote checksum offload (`r+c`).
    Remote,
}

/// Tunnel parameters of a tunnel destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Tunnel {
    /// Encapsulation.
    #[serde(rename = "type")]
    pub kind: TunnelType,
    /// UDP destination port (GUE only).
    pub port: u16,
    /// Checksum handling.
    pub checksum: TunnelChecksum,
}

/// One real server of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Destination {
    /// Real server address (its family may differ from the service's for tunnels).
    pub address: IpAddr,
    /// Real server port.
    pub port: u16,
    /// Forwarding method.
    pub forwarding: Forwarding,
    /// Tunnel parameters, for tunnel destinations.
    pub tunnel: Option<Tunnel>,
    /// Scheduling weight.
    pub weight: i32,
    /// Upper connection threshold (0: none).
    pub upper_threshold: u32,
    /// Lower connection threshold (0: none).
    pub lower_threshold: u32,
    /// Established connections.
    pub active_conns: u32,
    /// Other connections.
    pub inactive_conns: u32,
    /// Persistence templates pointing at this server.
    pub persistent_conns: u32,
    /// Counters.
    pub stats: Stats,
}

/// Kernel IPVS connection timeouts (`ipvsadm -L --timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Timeouts {
    /// Established TCP, in seconds.
    pub tcp: u32,
    /// TCP after FIN, in seconds.
    pub tcp_fin: u32,
    /// UDP, in seconds.
    pub udp: u32,
}

/// A running connection-synchronisation daemon (`ipvsadm -L --daemon`). Settings the
/// kernel does not report are `None`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SyncDaemon {
    /// `master` or `backup`.
    pub role: String,
    /// The multicast interface.
    pub mcast_interface: String,
    /// The sync ID.
    pub sync_id: u32,
    /// The largest sync message, in bytes.
    pub sync_max_len: Option<u16>,
    /// The multicast group.
    pub mcast_group: Option<IpAddr>,
    /// The multicast port.
    pub mcast_port: Option<u16>,
    /// The multicast TTL.
    pub mcast_ttl: Option<u8>,
}
