//! THE catalog of kube-proxy's ipsets: their names (with the kernel's 31-byte cut),
//! set types and typed entries, defined once for the model, the plan, the iptables
//! rules and the kernel adapter.
//!
//! The names are kube-proxy's so the iptables rules (and runbooks) written for them
//! keep working: the IPv4 set is `KUBE-CLUSTER-IP`, the IPv6 set of the same role is
//! `KUBE-6-` followed by the rest of the name (`KUBE-6-CLUSTER-IP`). Entries are typed
//! ([`SetEntry`]); their `Display` is ipset's own text syntax (`10.96.0.1,tcp:443` for
//! `hash:ip,port`, `30080` for `bitmap:port`), used only for logs, status output and
//! comparisons with `ipset list`, never parsed back.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::OnceLock;

use ipnet::IpNet;

use super::{Family, Protocol};

/// The ipsets kube-proxy's IPVS mode uses, with kube-proxy's names and meanings.
///
/// The iptables rules never list services one by one: they match these sets, which
/// the model fills. A rule is written only while its set is non-empty, so an unused
/// feature costs no rule at all (and a set that does not exist yet is never named).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KubeSet {
    /// `hash:ip,port,ip`: endpoint IP, protocol:port, endpoint IP — a pod reaching
    /// itself through its service (hairpin) is masqueraded.
    LoopBack,
    /// `hash:ip,port`: ClusterIP, protocol:port.
    ClusterIp,
    /// `hash:ip,port`: externalIP, protocol:port of services with
    /// externalTrafficPolicy Cluster.
    ExternalIp,
    /// `hash:ip,port`: externalIP, protocol:port of services with
    /// externalTrafficPolicy Local.
    ExternalIpLocal,
    /// `hash:ip,port`: every load-balancer ingress IP, protocol:port.
    LoadBalancer,
    /// `hash:ip,port`: load-balancer IP, protocol:port with externalTrafficPolicy Local
    /// (not masqueraded, the client address is kept).
    LoadBalancerLocal,
    /// `hash:ip,port`: load-balancer IP, protocol:port that have loadBalancerSourceRanges.
    LoadBalancerFw,
    /// `hash:ip,port,net`: load-balancer IP, protocol:port, allowed source CIDR.
    LoadBalancerSourceCidr,
    /// `hash:ip,port,ip`: load-balancer IP, protocol:port, load-balancer IP — lets the
    /// node itself through when a source range contains a node address.
    LoadBalancerSourceIp,
    /// `bitmap:port`: TCP node ports.
    NodePortTcp,
    /// `bitmap:port`: TCP node ports with externalTrafficPolicy Local.
    NodePortLocalTcp,
    /// `bitmap:port`: UDP node ports.
    NodePortUdp,
    /// `bitmap:port`: UDP node ports with externalTrafficPolicy Local.
    NodePortLocalUdp,
    /// `hash:ip,port`: node IP, sctp:port.
    NodePortSctp,
    /// `hash:ip,port`: node IP, sctp:port with externalTrafficPolicy Local.
    NodePortLocalSctp,
    /// `bitmap:port`: healthCheckNodePorts, accepted in the filter table.
    HealthCheckNodePort,
    /// `hash:ip`: every address bound on kube-ipvs0.
    IpvsIps,
}

/// The longest set name the kernel accepts (`IPSET_MAXNAMELEN` minus the NUL).
pub const SET_NAME_MAX: usize = 31;

/// The kind of a kube-proxy set, which fixes the shape of its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetType {
    /// `hash:ip`: [`SetEntry::Ip`].
    HashIp,
    /// `hash:ip,port`: [`SetEntry::IpPort`].
    HashIpPort,
    /// `hash:ip,port,ip`: [`SetEntry::IpPortIp`].
    HashIpPortIp,
    /// `hash:ip,port,net`: [`SetEntry::IpPortNet`].
    HashIpPortNet,
    /// `bitmap:port` over every port: [`SetEntry::Port`].
    BitmapPort,
}

impl SetType {
    /// ipset's name of the type (`hash:ip,port`).
    pub fn name(self) -> &'static str {
        match self {
            SetType::HashIp => "hash:ip",
            SetType::HashIpPort => "hash:ip,port",
            SetType::HashIpPortIp => "hash:ip,port,ip",
            SetType::HashIpPortNet => "hash:ip,port,net",
            SetType::BitmapPort => "bitmap:port",
        }
    }
}

impl fmt::Display for SetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl KubeSet {
    /// Every set, in a stable order.
    pub const ALL: [KubeSet; 17] = [
        KubeSet::LoopBack,
        KubeSet::ClusterIp,
        KubeSet::ExternalIp,
        KubeSet::ExternalIpLocal,
        KubeSet::LoadBalancer,
        KubeSet::LoadBalancerLocal,
        KubeSet::LoadBalancerFw,
        KubeSet::LoadBalancerSourceCidr,
        KubeSet::LoadBalancerSourceIp,
        KubeSet::NodePortTcp,
        KubeSet::NodePortLocalTcp,
        KubeSet::NodePortUdp,
        KubeSet::NodePortLocalUdp,
        KubeSet::NodePortSctp,
        KubeSet::NodePortLocalSctp,
        KubeSet::HealthCheckNodePort,
        KubeSet::IpvsIps,
    ];

    /// The IPv4 name, identical to kube-proxy's.
    pub fn v4_name(self) -> &'static str {
        match self {
            KubeSet::LoopBack => "KUBE-LOOP-BACK",
            KubeSet::ClusterIp => "KUBE-CLUSTER-IP",
            KubeSet::ExternalIp => "KUBE-EXTERNAL-IP",
            KubeSet::ExternalIpLocal => "KUBE-EXTERNAL-IP-LOCAL",
            KubeSet::LoadBalancer => "KUBE-LOAD-BALANCER",
            KubeSet::LoadBalancerLocal => "KUBE-LOAD-BALANCER-LOCAL",
            KubeSet::LoadBalancerFw => "KUBE-LOAD-BALANCER-FW",
            KubeSet::LoadBalancerSourceCidr => "KUBE-LOAD-BALANCER-SOURCE-CIDR",
            KubeSet::LoadBalancerSourceIp => "KUBE-LOAD-BALANCER-SOURCE-IP",
            KubeSet::NodePortTcp => "KUBE-NODE-PORT-TCP",
            KubeSet::NodePortLocalTcp => "KUBE-NODE-PORT-LOCAL-TCP",
            KubeSet::NodePortUdp => "KUBE-NODE-PORT-UDP",
            KubeSet::NodePortLocalUdp => "KUBE-NODE-PORT-LOCAL-UDP",
            KubeSet::NodePortSctp => "KUBE-NODE-PORT-SCTP-HASH",
            KubeSet::NodePortLocalSctp => "KUBE-NODE-PORT-LOCAL-SCTP-HASH",
            KubeSet::HealthCheckNodePort => "KUBE-HEALTH-CHECK-NODE-PORT",
            KubeSet::IpvsIps => "KUBE-IPVS-IPS",
        }
    }

    /// The set's name for `family`: IPv6 sets are `KUBE-6-...` so both families
    /// coexist, cut to the kernel's 31 bytes the way kube-proxy cuts them
    /// (`KUBE-6-LOAD-BALANCER-SOURCE-CID`), so the names stay interchangeable.
    pub fn name(self, family: impl Into<Family>) -> &'static str {
        match family.into() {
            Family::V4 => self.v4_name(),
            Family::V6 => {
                // Computed once; the names live as long as the process anyway.
                static IPV6_NAMES: OnceLock<Vec<String>> = OnceLock::new();
                &IPV6_NAMES.get_or_init(|| {
                    KubeSet::ALL
                        .iter()
                        .map(|set| {
                            let mut name = format!("KUBE-6-{}", &set.v4_name()["KUBE-".len()..]);
                            name.truncate(SET_NAME_MAX);
                            name
                        })
                        .collect()
                })[self as usize]
            }
        }
    }

    /// The set and family a kernel set name stands for, when it is one of ours.
    pub fn from_name(name: &str) -> Option<SetId> {
        KubeSet::ALL.into_iter().find_map(|set| {
            [Family::V4, Family::V6]
                .into_iter()
                .find(|family| set.name(*family) == name)
                .map(|family| SetId::new(set, family))
        })
    }

    /// The set's type.
    pub fn set_type(self) -> SetType {
        match self {
            KubeSet::LoopBack | KubeSet::LoadBalancerSourceIp => SetType::HashIpPortIp,
            KubeSet::LoadBalancerSourceCidr => SetType::HashIpPortNet,
            KubeSet::NodePortTcp
            | KubeSet::NodePortLocalTcp
            | KubeSet::NodePortUdp
            | KubeSet::NodePortLocalUdp
            | KubeSet::HealthCheckNodePort => SetType::BitmapPort,
            KubeSet::IpvsIps => SetType::HashIp,
            KubeSet::ClusterIp
            | KubeSet::ExternalIp
            | KubeSet::ExternalIpLocal
            | KubeSet::LoadBalancer
            | KubeSet::LoadBalancerLocal
            | KubeSet::LoadBalancerFw
            | KubeSet::NodePortSctp
            | KubeSet::NodePortLocalSctp => SetType::HashIpPort,
        }
    }
}

/// One kernel set: a [`KubeSet`] of one family. Ordered by its kernel name, so maps
/// keyed by it list sets the way `ipset list` sorts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SetId {
    /// The set's role.
    pub set: KubeSet,
    /// The address family of its entries.
    pub family: Family,
}

impl SetId {
    /// The `family` set of `set`.
    pub fn new(set: KubeSet, family: Family) -> SetId {
        SetId { set, family }
    }

    /// The kernel name.
    pub fn name(self) -> &'static str {
        self.set.name(self.family)
    }

    /// Every kube-proxy set of both families.
    pub fn all() -> impl Iterator<Item = SetId> {
        [Family::V4, Family::V6]
            .into_iter()
            .flat_map(|family| KubeSet::ALL.map(|set| SetId::new(set, family)))
    }
}

impl Ord for SetId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.name().cmp(other.name())
    }
}

impl PartialOrd for SetId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One member of a kube-proxy set, typed. `Display` prints ipset's syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetEntry {
    /// `hash:ip`: `10.96.0.10`.
    Ip(IpAddr),
    /// `hash:ip,port`: `10.96.0.10,tcp:80`.
    IpPort {
        /// The address.
        addr: IpAddr,
        /// The port's protocol.
        proto: Protocol,
        /// The port.
        port: u16,
    },
    /// `hash:ip,port,ip`: `10.244.1.5,tcp:8080,10.244.1.5`.
    IpPortIp {
        /// The first address.
        addr: IpAddr,
        /// The port's protocol.
        proto: Protocol,
        /// The port.
        port: u16,
        /// The second address.
        addr2: IpAddr,
    },
    /// `hash:ip,port,net`: `203.0.113.10,tcp:80,192.0.2.0/24`.
    IpPortNet {
        /// The address.
        addr: IpAddr,
        /// The port's protocol.
        proto: Protocol,
        /// The port.
        port: u16,
        /// The network; kept as the kernel stores it (host bits cleared), so an
        /// entry read back compares equal to the desired one.
        net: IpNet,
    },
    /// `bitmap:port`: `30080`.
    Port(u16),
}

impl SetEntry {
    /// An `ip,proto:port` entry.
    pub fn ip_port(addr: IpAddr, proto: Protocol, port: u16) -> SetEntry {
        SetEntry::IpPort { addr, proto, port }
    }

    /// An `ip,proto:port,net` entry (the network's host bits are cleared, as the
    /// kernel does).
    pub fn ip_port_net(addr: IpAddr, proto: Protocol, port: u16, net: IpNet) -> SetEntry {
        SetEntry::IpPortNet {
            addr,
            proto,
            port,
            net: net.trunc(),
        }
    }

    /// The type of set this entry belongs in.
    pub fn set_type(&self) -> SetType {
        match self {
            SetEntry::Ip(_) => SetType::HashIp,
            SetEntry::IpPort { .. } => SetType::HashIpPort,
            SetEntry::IpPortIp { .. } => SetType::HashIpPortIp,
            SetEntry::IpPortNet { .. } => SetType::HashIpPortNet,
            SetEntry::Port(_) => SetType::BitmapPort,
        }
    }

    /// The address an entry is keyed by (its first address), if any.
    pub fn addr(&self) -> Option<IpAddr> {
        match self {
            SetEntry::Ip(addr)
            | SetEntry::IpPort { addr, .. }
            | SetEntry::IpPortIp { addr, .. }
            | SetEntry::IpPortNet { addr, .. } => Some(*addr),
            SetEntry::Port(_) => None,
        }
    }
}

impl fmt::Display for SetEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetEntry::Ip(addr) => write!(f, "{addr}"),
            SetEntry::IpPort { addr, proto, port } => write!(f, "{addr},{proto}:{port}"),
            SetEntry::IpPortIp {
                addr,
                proto,
                port,
                addr2,
            } => write!(f, "{addr},{proto}:{port},{addr2}"),
            SetEntry::IpPortNet {
                addr,
                proto,
                port,
                net,
            } => {
                write!(f, "{addr},{proto}:{port},")?;
                // ipset prints a host network as a bare address.
                if net.prefix_len() == net.max_prefix_len() {
                    write!(f, "{}", net.addr())
                } else {
                    write!(f, "{net}")
                }
            }
            SetEntry::Port(port) => write!(f, "{port}"),
        }
    }
}

/// One Service's set entries. A Service has a handful, so a list: a map of sets
/// would allocate two tree nodes per Service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetEntries(Vec<(SetId, SetEntry)>);

impl SetEntries {
    /// Adds one entry to the family's set (once).
    pub fn add(&mut self, set: KubeSet, family: Family, entry: SetEntry) {
        debug_assert_eq!(set.set_type(), entry.set_type(), "{entry} in {set:?}");
        let set = SetId::new(set, family);
        if !self.contains(set, &entry) {
            self.0.push((set, entry));
        }
    }

    /// Whether a set holds an entry.
    pub fn contains(&self, set: SetId, entry: &SetEntry) -> bool {
        self.0
            .iter()
            .any(|(known_set, known)| *known_set == set && known == entry)
    }

    /// Every `(set, entry)`.
    pub fn iter(&self) -> impl Iterator<Item = (SetId, &SetEntry)> {
        self.0.iter().map(|(set, entry)| (*set, entry))
    }

    /// Frees spare capacity (the list is kept as long as its Service).
    pub fn shrink_to_fit(&mut self) {
        self.0.shrink_to_fit();
    }
}

/// The members of kube-proxy's sets, by set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpsetMembers(pub BTreeMap<SetId, BTreeSet<SetEntry>>);

impl IpsetMembers {
    /// Adds one entry to the family's set.
    pub fn add(&mut self, set: KubeSet, family: Family, entry: SetEntry) {
        self.insert(SetId::new(set, family), &entry);
    }

    /// Adds one entry to a set.
    pub fn insert(&mut self, set: SetId, entry: &SetEntry) {
        self.0.entry(set).or_default().insert(*entry);
    }

    /// Removes one entry, dropping the set from the map once it is empty.
    pub fn remove(&mut self, set: SetId, entry: &SetEntry) {
        if let Some(entries) = self.0.get_mut(&set) {
            entries.remove(entry);
            if entries.is_empty() {
                self.0.remove(&set);
            }
        }
    }

    /// Adds several entries.
    pub fn add_all(&mut self, set: KubeSet, entries: impl IntoIterator<Item = (Family, SetEntry)>) {
        for (family, entry) in entries {
            self.add(set, family, entry);
        }
    }

    /// Adds every member of `other`.
    pub fn extend(&mut self, other: &IpsetMembers) {
        for (set, entries) in &other.0 {
            self.0.entry(*set).or_default().extend(entries.iter());
        }
    }

    /// Adds every entry of one Service's [`SetEntries`].
    pub fn extend_entries(&mut self, other: &SetEntries) {
        for (set, entry) in other.iter() {
            self.insert(set, entry);
        }
    }

    /// The entries of one set, empty when it has none.
    pub fn get(&self, set: &SetId) -> BTreeSet<SetEntry> {
        self.0.get(set).cloned().unwrap_or_default()
    }

    /// The entries of a set given by its kernel name, in ipset's text syntax as
    /// `ipset list` prints them (for status output and cross-checks with the kernel).
    pub fn texts(&self, name: &str) -> BTreeSet<String> {
        KubeSet::from_name(name)
            .and_then(|set| self.0.get(&set))
            .map(|entries| entries.iter().map(SetEntry::to_string).collect())
            .unwrap_or_default()
    }

    /// Whether `set` has at least one member (without copying it, unlike [`IpsetMembers::get`]).
    pub fn has_members(&self, set: SetId) -> bool {
        self.0.get(&set).is_some_and(|entries| !entries.is_empty())
    }

    /// Whether a set holds an entry.
    pub fn contains(&self, set: SetId, entry: &SetEntry) -> bool {
        self.0
            .get(&set)
            .is_some_and(|entries| entries.contains(entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_names_are_cut_to_31_bytes_and_map_back() {
        assert_eq!(KubeSet::ClusterIp.name(Family::V6), "KUBE-6-CLUSTER-IP");
        assert_eq!(
            KubeSet::LoadBalancerSourceCidr.name(Family::V6),
            "KUBE-6-LOAD-BALANCER-SOURCE-CID"
        );
        assert_eq!(
            KubeSet::NodePortLocalSctp.name(Family::V6),
            "KUBE-6-NODE-PORT-LOCAL-SCTP-HAS"
        );
        for set in SetId::all() {
            assert!(set.name().len() <= SET_NAME_MAX, "{set}");
            assert_eq!(KubeSet::from_name(set.name()), Some(set));
        }
        assert_eq!(KubeSet::from_name("CALICO-SOMETHING"), None);
    }

    #[test]
    fn entries_print_in_ipset_syntax() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let net = |text: &str| text.parse::<IpNet>().unwrap();
        let cases = [
            (
                SetEntry::ip_port(ip("10.96.0.1"), Protocol::Tcp, 443),
                "10.96.0.1,tcp:443",
            ),
            (
                SetEntry::ip_port(ip("fd00::1"), Protocol::Udp, 53),
                "fd00::1,udp:53",
            ),
            (
                SetEntry::IpPortIp {
                    addr: ip("10.244.1.5"),
                    proto: Protocol::Tcp,
                    port: 8080,
                    addr2: ip("10.244.1.5"),
                },
                "10.244.1.5,tcp:8080,10.244.1.5",
            ),
            (
                SetEntry::ip_port_net(ip("192.0.2.10"), Protocol::Tcp, 80, net("203.0.113.7/24")),
                "192.0.2.10,tcp:80,203.0.113.0/24",
            ),
            (
                SetEntry::ip_port_net(ip("192.0.2.10"), Protocol::Sctp, 80, net("203.0.113.7/32")),
                "192.0.2.10,sctp:80,203.0.113.7",
            ),
            (SetEntry::Port(30080), "30080"),
            (SetEntry::Ip(ip("10.96.0.10")), "10.96.0.10"),
        ];
        for (entry, text) in cases {
            assert_eq!(entry.to_string(), text);
        }
    }

    #[test]
    fn sets_order_by_kernel_name() {
        let mut members = IpsetMembers::default();
        members.add(
            KubeSet::IpvsIps,
            Family::V4,
            SetEntry::Ip("10.96.0.1".parse().unwrap()),
        );
        members.add(KubeSet::NodePortTcp, Family::V4, SetEntry::Port(30080));
        members.add(
            KubeSet::ClusterIp,
            Family::V6,
            SetEntry::ip_port("fd00::1".parse().unwrap(), Protocol::Tcp, 80),
        );
        let names: Vec<&str> = members.0.keys().map(|set| set.name()).collect();
        assert_eq!(
            names,
            ["KUBE-6-CLUSTER-IP", "KUBE-IPVS-IPS", "KUBE-NODE-PORT-TCP"]
        );
        assert_eq!(
            members.texts("KUBE-NODE-PORT-TCP"),
            BTreeSet::from(["30080".to_string()])
        );
    }
}
