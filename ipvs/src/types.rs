//! Plain public types: services, destinations, statistics, timeouts, info.
//!
//! Addresses are `std::net` types and ports are host byte order. Conversion to and from the
//! wire attributes lives in [`crate::convert`].

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::packet::constants::*;

/// Address family of a service or destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddressFamily {
    /// IPv4 (`AF_INET`).
    Inet,
    /// IPv6 (`AF_INET6`).
    Inet6,
}

impl AddressFamily {
    /// The family of an address.
    pub fn of(addr: &IpAddr) -> AddressFamily {
        match addr {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        }
    }

    /// The `AF_*` number.
    pub fn number(self) -> u16 {
        match self {
            AddressFamily::Inet => AF_INET,
            AddressFamily::Inet6 => AF_INET6,
        }
    }

    /// The family of an `AF_*` number, if it is IPv4 or IPv6.
    pub fn from_number(number: u16) -> Option<AddressFamily> {
        match number {
            AF_INET => Some(AddressFamily::Inet),
            AF_INET6 => Some(AddressFamily::Inet6),
            _ => None,
        }
    }
}

/// Transport protocol of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u16 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// The protocol of an IP protocol number, if IPVS supports it.
    pub fn from_number(number: u16) -> Option<Protocol> {
        match number {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// What identifies a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceKey {
    /// A protocol, virtual address and port.
    Inet {
        /// Transport protocol.
        protocol: Protocol,
        /// Virtual address.
        addr: IpAddr,
        /// Virtual port (0 with the persistent flag means "all ports").
        port: u16,
    },
    /// A firewall mark set by netfilter rules.
    Fwmark {
        /// Address family of the packets the mark applies to.
        family: AddressFamily,
        /// The mark.
        mark: u32,
    },
}

impl ServiceKey {
    /// A TCP service key.
    pub fn tcp(addr: IpAddr, port: u16) -> ServiceKey {
        ServiceKey::Inet {
            protocol: Protocol::Tcp,
            addr,
            port,
        }
    }

    /// A UDP service key.
    pub fn udp(addr: IpAddr, port: u16) -> ServiceKey {
        ServiceKey::Inet {
            protocol: Protocol::Udp,
            addr,
            port,
        }
    }

    /// The address family of the service.
    pub fn family(&self) -> AddressFamily {
        match self {
            ServiceKey::Inet { addr, .. } => AddressFamily::of(addr),
            ServiceKey::Fwmark { family, .. } => *family,
        }
    }
}

/// Formats like `ipvsadm`: `TCP 10.0.0.1:80`, `UDP [fd00::1]:53`, `FWM 7` (`FWM 7 IPv6`).
impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Inet {
                protocol,
                addr: IpAddr::V4(addr),
                port,
            } => write!(f, "{protocol} {addr}:{port}"),
            ServiceKey::Inet {
                protocol,
                addr: IpAddr::V6(addr),
                port,
            } => write!(f, "{protocol} [{addr}]:{port}"),
            ServiceKey::Fwmark {
                family: AddressFamily::Inet,
                mark,
            } => write!(f, "FWM {mark}"),
            ServiceKey::Fwmark {
                family: AddressFamily::Inet6,
                mark,
            } => write!(f, "FWM {mark} IPv6"),
        }
    }
}

/// A scheduling algorithm.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheduler {
    /// Round robin.
    RoundRobin,
    /// Weighted round robin.
    WeightedRoundRobin,
    /// Least connections.
    LeastConnection,
    /// Weighted least connections.
    WeightedLeastConnection,
    /// Locality-based least connections.
    LocalityBasedLeastConnection,
    /// Locality-based least connections with replication.
    LocalityBasedLeastConnectionReplication,
    /// Destination hashing.
    DestinationHashing,
    /// Source hashing.
    SourceHashing,
    /// Shortest expected delay.
    ShortestExpectedDelay,
    /// Never queue.
    NeverQueue,
    /// Maglev hashing.
    Maglev,
    /// Weighted failover.
    WeightedFailover,
    /// Weighted overflow.
    WeightedOverflow,
    /// Any other scheduler module, by name.
    Other(String),
}

impl Scheduler {
    /// Every scheduler the stock kernel ships, in `ipvsadm` order.
    pub const ALL: [Scheduler; 13] = [
        Scheduler::RoundRobin,
        Scheduler::WeightedRoundRobin,
        Scheduler::LeastConnection,
        Scheduler::WeightedLeastConnection,
        Scheduler::LocalityBasedLeastConnection,
        Scheduler::LocalityBasedLeastConnectionReplication,
        Scheduler::DestinationHashing,
        Scheduler::SourceHashing,
        Scheduler::ShortestExpectedDelay,
        Scheduler::NeverQueue,
        Scheduler::Maglev,
        Scheduler::WeightedFailover,
        Scheduler::WeightedOverflow,
    ];

    /// The kernel's name (`rr`, `wlc`, ...).
    pub fn name(&self) -> &str {
        match self {
            Scheduler::RoundRobin => "rr",
            Scheduler::WeightedRoundRobin => "wrr",
            Scheduler::LeastConnection => "lc",
            Scheduler::WeightedLeastConnection => "wlc",
            Scheduler::LocalityBasedLeastConnection => "lblc",
            Scheduler::LocalityBasedLeastConnectionReplication => "lblcr",
            Scheduler::DestinationHashing => "dh",
            Scheduler::SourceHashing => "sh",
            Scheduler::ShortestExpectedDelay => "sed",
            Scheduler::NeverQueue => "nq",
            Scheduler::Maglev => "mh",
            Scheduler::WeightedFailover => "fo",
            Scheduler::WeightedOverflow => "ovf",
            Scheduler::Other(name) => name,
        }
    }

    /// The scheduler with this kernel name; unknown names become [`Scheduler::Other`].
    pub fn from_name(name: &str) -> Scheduler {
        Scheduler::ALL
            .iter()
            .find(|known| known.name() == name)
            .cloned()
            .unwrap_or_else(|| Scheduler::Other(name.to_string()))
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scheduler {
    type Err = std::convert::Infallible;
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Ok(Scheduler::from_name(name))
    }
}

bitflags::bitflags! {
    /// Service flags (`IP_VS_SVC_F_*`). The scheduler flags mean different things per
    /// scheduler, hence the aliases.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct ServiceFlags: u32 {
        /// Persistent service: a client sticks to one destination for `timeout` seconds.
        const PERSISTENT = IP_VS_SVC_F_PERSISTENT;
        /// Set by the kernel on every service in its table.
        const HASHED = IP_VS_SVC_F_HASHED;
        /// One-packet scheduling (UDP).
        const ONE_PACKET = IP_VS_SVC_F_ONEPACKET;
        /// Scheduler flag 1.
        const SCHED1 = IP_VS_SVC_F_SCHED1;
        /// Scheduler flag 2.
        const SCHED2 = IP_VS_SVC_F_SCHED2;
        /// Scheduler flag 3.
        const SCHED3 = IP_VS_SVC_F_SCHED3;
        /// `sh`: fall back to another destination when the chosen one is unavailable.
        const SH_FALLBACK = IP_VS_SVC_F_SCHED1;
        /// `sh`: hash the source port too.
        const SH_PORT = IP_VS_SVC_F_SCHED2;
        /// `mh`: fall back to another destination when the chosen one is unavailable.
        const MH_FALLBACK = IP_VS_SVC_F_SCHED1;
        /// `mh`: hash the source port too.
        const MH_PORT = IP_VS_SVC_F_SCHED2;
        /// Flags this crate does not name are kept.
        const _ = !0;
    }
}

/// Traffic counters and rates of a service or destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Stats {
    /// Connections scheduled.
    pub connections: u64,
    /// Incoming packets.
    pub in_packets: u64,
    /// Outgoing packets.
    pub out_packets: u64,
    /// Incoming bytes.
    pub in_bytes: u64,
    /// Outgoing bytes.
    pub out_bytes: u64,
    /// Connections per second (kernel estimate).
    pub connection_rate: u64,
    /// Incoming packets per second.
    pub in_packet_rate: u64,
    /// Outgoing packets per second.
    pub out_packet_rate: u64,
    /// Incoming bytes per second.
    pub in_byte_rate: u64,
    /// Outgoing bytes per second.
    pub out_byte_rate: u64,
}

/// A virtual service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Service {
    /// What identifies the service.
    pub key: ServiceKey,
    /// Scheduling algorithm.
    pub scheduler: Scheduler,
    /// Flags. [`ServiceFlags::HASHED`] is set by the kernel and ignored on writes.
    pub flags: ServiceFlags,
    /// Persistence timeout in seconds (meaningful with [`ServiceFlags::PERSISTENT`]).
    pub timeout: u32,
    /// Persistence granularity as a prefix length (IPv4 `255.255.255.0` is 24; default:
    /// 32 for IPv4, 128 for IPv6).
    pub netmask: u8,
    /// Persistence engine (`sip`), if any.
    pub pe_name: Option<String>,
    /// Counters (64-bit when the kernel sends them, as all kernels since 4.1 do). Ignored on
    /// writes.
    pub stats: Stats,
}

impl Service {
    /// A service with the given key and scheduler, no flags, and the default netmask.
    pub fn new(key: ServiceKey, scheduler: Scheduler) -> Service {
        let netmask = match key.family() {
            AddressFamily::Inet => 32,
            AddressFamily::Inet6 => 128,
        };
        Service {
            key,
            scheduler,
            flags: ServiceFlags::empty(),
            timeout: 0,
            netmask,
            pe_name: None,
            stats: Stats::default(),
        }
    }

    /// Makes the service persistent for `timeout` seconds (like `ipvsadm -p`).
    pub fn persistent(mut self, timeout: u32) -> Service {
        self.flags |= ServiceFlags::PERSISTENT;
        self.timeout = timeout;
        self
    }
}

/// How packets reach a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ForwardMethod {
    /// NAT (`ipvsadm -m`, listed `Masq`).
    Masquerade,
    /// Deliver to a local socket (listed `Local`).
    Local,
    /// IP-in-IP, GUE or GRE tunnel (`-i`, listed `Tunnel`).
    Tunnel,
    /// Direct routing (`-g`, listed `Route`).
    DirectRoute,
    /// Cache bypass (listed `Bypass`).
    Bypass,
}

impl ForwardMethod {
    /// The `IP_VS_CONN_F_*` value.
    pub fn number(self) -> u32 {
        match self {
            ForwardMethod::Masquerade => IP_VS_CONN_F_MASQ,
            ForwardMethod::Local => IP_VS_CONN_F_LOCALNODE,
            ForwardMethod::Tunnel => IP_VS_CONN_F_TUNNEL,
            ForwardMethod::DirectRoute => IP_VS_CONN_F_DROUTE,
            ForwardMethod::Bypass => IP_VS_CONN_F_BYPASS,
        }
    }

    /// The method of an `IP_VS_CONN_F_*` value (other connection flag bits are ignored).
    pub fn from_number(number: u32) -> Option<ForwardMethod> {
        match number & IP_VS_CONN_F_FWD_MASK {
            IP_VS_CONN_F_MASQ => Some(ForwardMethod::Masquerade),
            IP_VS_CONN_F_LOCALNODE => Some(ForwardMethod::Local),
            IP_VS_CONN_F_TUNNEL => Some(ForwardMethod::Tunnel),
            IP_VS_CONN_F_DROUTE => Some(ForwardMethod::DirectRoute),
            IP_VS_CONN_F_BYPASS => Some(ForwardMethod::Bypass),
            _ => None,
        }
    }
}

impl fmt::Display for ForwardMethod {
    /// The word `ipvsadm -Ln` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ForwardMethod::Masquerade => "Masq",
            ForwardMethod::Local => "Local",
            ForwardMethod::Tunnel => "Tunnel",
            ForwardMethod::DirectRoute => "Route",
            ForwardMethod::Bypass => "Bypass",
        })
    }
}

/// Encapsulation used by the tunnel forwarding method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub enum TunnelType {
    /// IP in IP.
    #[default]
    Ipip,
    /// Generic UDP encapsulation (needs a tunnel port).
    Gue,
    /// Generic routing encapsulation.
    Gre,
}

impl TunnelType {
    /// The `IP_VS_CONN_F_TUNNEL_TYPE_*` value.
    pub fn number(self) -> u8 {
        match self {
            TunnelType::Ipip => 0,
            TunnelType::Gue => 1,
            TunnelType::Gre => 2,
        }
    }

    /// The tunnel type of an `IP_VS_CONN_F_TUNNEL_TYPE_*` value.
    pub fn from_number(number: u8) -> Option<TunnelType> {
        match number {
            0 => Some(TunnelType::Ipip),
            1 => Some(TunnelType::Gue),
            2 => Some(TunnelType::Gre),
            _ => None,
        }
    }
}

bitflags::bitflags! {
    /// Tunnel checksum options (`IP_VS_TUNNEL_ENCAP_FLAG_*`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct TunnelFlags: u16 {
        /// Add an outer checksum.
        const CSUM = 1;
        /// Remote checksum offload.
        const REMCSUM = 2;
        /// Flags this crate does not name are kept.
        const _ = !0;
    }
}

/// A destination (real server) of a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    /// Real server address. Its family may differ from the service's only with tunnels.
    pub addr: IpAddr,
    /// Real server port (host order).
    pub port: u16,
    /// Forwarding method.
    pub forward: ForwardMethod,
    /// Weight (0 stops new connections).
    pub weight: u32,
    /// Upper connection threshold (0: no limit).
    pub upper_threshold: u32,
    /// Lower connection threshold (0: none).
    pub lower_threshold: u32,
    /// Tunnel encapsulation (only used with [`ForwardMethod::Tunnel`]).
    pub tunnel_type: TunnelType,
    /// GUE port (only used with [`TunnelType::Gue`]).
    pub tunnel_port: u16,
    /// Tunnel checksum options.
    pub tunnel_flags: TunnelFlags,
    /// Active connections (read only).
    pub active_connections: u32,
    /// Inactive connections (read only).
    pub inactive_connections: u32,
    /// Persistent connection templates (read only).
    pub persistent_connections: u32,
    /// Counters (read only).
    pub stats: Stats,
}

impl Destination {
    /// A destination with weight 1, no thresholds and the given forwarding method.
    pub fn new(addr: IpAddr, port: u16, forward: ForwardMethod) -> Destination {
        Destination {
            addr,
            port,
            forward,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
            tunnel_type: TunnelType::Ipip,
            tunnel_port: 0,
            tunnel_flags: TunnelFlags::empty(),
            active_connections: 0,
            inactive_connections: 0,
            persistent_connections: 0,
            stats: Stats::default(),
        }
    }

    /// Sets the weight.
    pub fn weight(mut self, weight: u32) -> Destination {
        self.weight = weight;
        self
    }

    /// The address and port that identify this destination within its service.
    pub fn key(&self) -> DestinationKey {
        DestinationKey {
            addr: self.addr,
            port: self.port,
        }
    }
}

/// What identifies a destination within a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestinationKey {
    /// Real server address.
    pub addr: IpAddr,
    /// Real server port (host order).
    pub port: u16,
}

impl fmt::Display for DestinationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(addr) => write!(f, "{addr}:{}", self.port),
            IpAddr::V6(addr) => write!(f, "[{addr}]:{}", self.port),
        }
    }
}

/// Connection timeouts in seconds. On writes, 0 leaves a value unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Timeouts {
    /// Established TCP connections.
    pub tcp: u32,
    /// TCP connections after FIN.
    pub tcp_fin: u32,
    /// UDP "connections".
    pub udp: u32,
}

/// General IPVS information.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Info {
    /// Version as the kernel encodes it (`0x010201` is 1.2.1).
    pub version: u32,
    /// Size of the connection hash table.
    pub conn_table_size: u32,
}

impl Info {
    /// The version as `major.minor.patch`, as `ipvsadm` prints it.
    pub fn version_string(&self) -> String {
        format!(
            "{}.{}.{}",
            (self.version >> 16) & 0xff,
            (self.version >> 8) & 0xff,
            self.version & 0xff
        )
    }
}

/// Which side of connection synchronisation a sync daemon is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SyncRole {
    /// Sends this node's connection state.
    Master,
    /// Receives another node's connection state.
    Backup,
}

impl fmt::Display for SyncRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SyncRole::Master => "master",
            SyncRole::Backup => "backup",
        })
    }
}

/// A running connection-synchronisation daemon (`ipvsadm --start-daemon`). Settings an
/// older kernel does not report are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SyncDaemon {
    /// Master or backup.
    pub role: SyncRole,
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

/// One change to apply, for [`crate::IpvsHandle::apply_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Add a service.
    AddService(Service),
    /// Replace the settings of an existing service.
    EditService(Service),
    /// Delete a service and its destinations.
    DeleteService(ServiceKey),
    /// Add a destination to a service.
    AddDestination(ServiceKey, Destination),
    /// Replace the settings of an existing destination.
    EditDestination(ServiceKey, Destination),
    /// Delete a destination from a service.
    DeleteDestination(ServiceKey, DestinationKey),
}
