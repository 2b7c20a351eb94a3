//! Members of kube-proxy's ipsets, named and formatted as kube-proxy does so the
//! iptables rules written for them keep working.
//!
//! Set names are the IPv4 names (`KUBE-CLUSTER-IP`); the IPv6 set of the same role is
//! `KUBE-6-` followed by the rest of the name (`KUBE-6-CLUSTER-IP`). Entries use ipset's
//! own text syntax, e.g. `10.96.0.1,tcp:443` for `hash:ip,port` and `30080` for
//! `bitmap:port`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use super::Family;

/// `hash:ip,port,ip`: endpointIP,proto:port,endpointIP of local endpoints (hairpin).
pub const LOOP_BACK: &str = "KUBE-LOOP-BACK";
/// `hash:ip,port`: clusterIP,proto:port.
pub const CLUSTER_IP: &str = "KUBE-CLUSTER-IP";
/// `hash:ip,port`: externalIP,proto:port with externalTrafficPolicy Cluster.
pub const EXTERNAL_IP: &str = "KUBE-EXTERNAL-IP";
/// `hash:ip,port`: externalIP,proto:port with externalTrafficPolicy Local.
pub const EXTERNAL_IP_LOCAL: &str = "KUBE-EXTERNAL-IP-LOCAL";
/// `hash:ip,port`: every load-balancer IP,proto:port.
pub const LOAD_BALANCER: &str = "KUBE-LOAD-BALANCER";
/// `hash:ip,port`: load-balancer IP,proto:port with externalTrafficPolicy Local.
pub const LOAD_BALANCER_LOCAL: &str = "KUBE-LOAD-BALANCER-LOCAL";
/// `hash:ip,port`: load-balancer IP,proto:port that has loadBalancerSourceRanges.
pub const LOAD_BALANCER_FW: &str = "KUBE-LOAD-BALANCER-FW";
/// `hash:ip,port,net`: load-balancer IP,proto:port,allowed CIDR.
pub const LOAD_BALANCER_SOURCE_CIDR: &str = "KUBE-LOAD-BALANCER-SOURCE-CIDR";
/// `hash:ip,port,ip`: load-balancer IP,proto:port,load-balancer IP when a source range
/// contains a node address (traffic from the node itself stays allowed).
pub const LOAD_BALANCER_SOURCE_IP: &str = "KUBE-LOAD-BALANCER-SOURCE-IP";
/// `bitmap:port`: TCP node ports.
pub const NODE_PORT_TCP: &str = "KUBE-NODE-PORT-TCP";
/// `bitmap:port`: TCP node ports with externalTrafficPolicy Local.
pub const NODE_PORT_LOCAL_TCP: &str = "KUBE-NODE-PORT-LOCAL-TCP";
/// `bitmap:port`: UDP node ports.
pub const NODE_PORT_UDP: &str = "KUBE-NODE-PORT-UDP";
/// `bitmap:port`: UDP node ports with externalTrafficPolicy Local.
pub const NODE_PORT_LOCAL_UDP: &str = "KUBE-NODE-PORT-LOCAL-UDP";
/// `hash:ip,port`: nodeIP,sctp:port.
pub const NODE_PORT_SCTP_HASH: &str = "KUBE-NODE-PORT-SCTP-HASH";
/// `hash:ip,port`: nodeIP,sctp:port with externalTrafficPolicy Local.
pub const NODE_PORT_LOCAL_SCTP_HASH: &str = "KUBE-NODE-PORT-LOCAL-SCTP-HASH";
/// `bitmap:port`: health-check node ports.
pub const HEALTH_CHECK_NODE_PORT: &str = "KUBE-HEALTH-CHECK-NODE-PORT";
/// `hash:ip`: every address bound on kube-ipvs0.
pub const IPVS_IPS: &str = "KUBE-IPVS-IPS";

/// Every set kube-proxy's IPVS mode uses (IPv4 names).
pub const ALL_SETS: &[&str] = &[
    LOOP_BACK,
    CLUSTER_IP,
    EXTERNAL_IP,
    EXTERNAL_IP_LOCAL,
    LOAD_BALANCER,
    LOAD_BALANCER_LOCAL,
    LOAD_BALANCER_FW,
    LOAD_BALANCER_SOURCE_CIDR,
    LOAD_BALANCER_SOURCE_IP,
    NODE_PORT_TCP,
    NODE_PORT_LOCAL_TCP,
    NODE_PORT_UDP,
    NODE_PORT_LOCAL_UDP,
    NODE_PORT_SCTP_HASH,
    NODE_PORT_LOCAL_SCTP_HASH,
    HEALTH_CHECK_NODE_PORT,
    IPVS_IPS,
];

/// The name of a set for a family: IPv6 sets are `KUBE-6-…`.
pub fn set_name(base: &str, family: Family) -> String {
    match family {
        Family::V4 => base.to_string(),
        // The kernel limits set names to 31 bytes; like kube-proxy, cut the IPv6 name
        // (KUBE-6-LOAD-BALANCER-SOURCE-CIDR → KUBE-6-LOAD-BALANCER-SOURCE-CID).
        Family::V6 => {
            let mut name = format!("KUBE-6-{}", base.strip_prefix("KUBE-").unwrap_or(base));
            name.truncate(31);
            name
        }
    }
}

/// [`set_name`] for one of the kube-proxy sets of [`ALL_SETS`], without allocating.
///
/// # Panics
/// When `base` is not one of [`ALL_SETS`] (a programming error).
pub fn static_set_name(base: &'static str, family: Family) -> &'static str {
    static IPV6_NAMES: OnceLock<BTreeMap<&'static str, &'static str>> = OnceLock::new();
    match family {
        Family::V4 => base,
        Family::V6 => IPV6_NAMES.get_or_init(|| {
            ALL_SETS
                .iter()
                .map(|base| {
                    let name: &'static str = Box::leak(set_name(base, Family::V6).into_boxed_str());
                    (*base, name)
                })
                .collect()
        })[base],
    }
}

/// One Service's set entries as `(set name, entry)`. A Service has a handful, so a
/// list: a map of sets would allocate two tree nodes per Service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetEntries(Vec<(&'static str, Box<str>)>);

impl SetEntries {
    /// Adds one entry to the family's set (once).
    pub fn add(&mut self, base: &'static str, family: Family, entry: String) {
        let set = static_set_name(base, family);
        if !self.contains(set, &entry) {
            self.0.push((set, entry.into_boxed_str()));
        }
    }

    /// Whether a set (by full name) holds an entry.
    pub fn contains(&self, set: &str, entry: &str) -> bool {
        self.0
            .iter()
            .any(|(name, known)| *name == set && **known == *entry)
    }

    /// Every `(set name, entry)`.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.0.iter().map(|(set, entry)| (*set, &**entry))
    }

    /// Frees spare capacity (the list is kept as long as its Service).
    pub fn shrink_to_fit(&mut self) {
        self.0.shrink_to_fit();
    }
}

/// Set name → entries (ipset text syntax).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpsetMembers(pub BTreeMap<String, BTreeSet<String>>);

impl IpsetMembers {
    /// Adds one entry to the family's set.
    pub fn add(&mut self, base: &str, family: Family, entry: String) {
        self.0
            .entry(set_name(base, family))
            .or_default()
            .insert(entry);
    }

    /// Adds one entry to a set by full name; copies the set name only for a new set.
    pub fn insert(&mut self, set: &str, entry: &str) {
        match self.0.get_mut(set) {
            Some(entries) => {
                entries.insert(entry.to_string());
            }
            None => {
                self.0
                    .insert(set.to_string(), BTreeSet::from([entry.to_string()]));
            }
        }
    }

    /// Adds several entries.
    pub fn add_all(&mut self, base: &str, entries: impl IntoIterator<Item = (Family, String)>) {
        for (family, entry) in entries {
            self.add(base, family, entry);
        }
    }

    /// Adds every member of `other`.
    pub fn extend(&mut self, other: &IpsetMembers) {
        for (set, entries) in &other.0 {
            self.0
                .entry(set.clone())
                .or_default()
                .extend(entries.iter().cloned());
        }
    }

    /// Adds every entry of one Service's [`SetEntries`].
    pub fn extend_entries(&mut self, other: &SetEntries) {
        for (set, entry) in other.iter() {
            self.insert(set, entry);
        }
    }

    /// The entries of one set (by full name), empty when it has none.
    pub fn get(&self, set: &str) -> BTreeSet<String> {
        self.0.get(set).cloned().unwrap_or_default()
    }

    /// Whether `set` has at least one member (without copying it, unlike [`IpsetMembers::get`]).
    pub fn has_members(&self, set: &str) -> bool {
        self.0.get(set).is_some_and(|entries| !entries.is_empty())
    }

    /// Whether a set (by full name) holds an entry.
    pub fn contains(&self, set: &str, entry: &str) -> bool {
        self.0
            .get(set)
            .is_some_and(|entries| entries.contains(entry))
    }
}
