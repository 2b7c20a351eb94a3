//! The validated configuration: what the IPAM and the announcers read. Built by
//! [`crate::validate()`] from [`crate::MetalLbObjects`]; everything here is already
//! checked (ranges parsed, names resolved, defaults filled in).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use crate::selector::Selector;

/// MetalLB's whole configuration, valid objects only.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LbConfig {
    /// Address pools by name.
    pub pools: BTreeMap<String, Pool>,
    /// Layer-2 advertisements, by name order.
    pub l2_advertisements: Vec<L2Advertisement>,
    /// BGP advertisements, by name order.
    pub bgp_advertisements: Vec<BgpAdvertisement>,
    /// BGP peers, by name order.
    pub peers: Vec<Peer>,
    /// BFD profiles by name.
    pub bfd_profiles: BTreeMap<String, BfdProfile>,
}

impl LbConfig {
    /// The pool holding `ip`, if any (pools never overlap once validated).
    pub fn pool_of(&self, ip: IpAddr) -> Option<&Pool> {
        self.pools.values().find(|pool| pool.contains(ip))
    }
}

/// An `IPAddressPool`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    /// Its name.
    pub name: String,
    /// Its labels (for the advertisements' pool selectors).
    pub labels: BTreeMap<String, String>,
    /// Its ranges, in the order given.
    pub ranges: Vec<IpRange>,
    /// Whether addresses are handed out to Services that did not ask for this pool.
    pub auto_assign: bool,
    /// Skip addresses ending in `.0` and `.255` (IPv4 only).
    pub avoid_buggy_ips: bool,
    /// Restrictions on who may use it, if any.
    pub allocation: Option<ServiceAllocation>,
}

impl Pool {
    /// Whether `ip` is in one of its ranges (buggy addresses included: they belong to
    /// the pool even when it never hands them out).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|range| range.contains(ip))
    }

    /// Whether the pool may hand out `ip`: in a range and not a buggy address it avoids.
    pub fn may_assign(&self, ip: IpAddr) -> bool {
        self.contains(ip) && !(self.avoid_buggy_ips && is_buggy(ip))
    }
}

/// Whether an IPv4 address ends in `.0` or `.255` (some old clients mistake them for
/// network or broadcast addresses).
pub fn is_buggy(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => matches!(v4.octets()[3], 0 | 255),
        IpAddr::V6(_) => false,
    }
}

/// `IPAddressPool.spec.serviceAllocation`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceAllocation {
    /// Lower is tried first; 0 means after every prioritized pool.
    pub priority: i32,
    /// Namespaces allowed by name.
    pub namespaces: Vec<String>,
    /// Namespaces allowed by label.
    pub namespace_selectors: Vec<Selector>,
    /// Services allowed by label.
    pub service_selectors: Vec<Selector>,
}

/// An inclusive range of addresses of one family, from a CIDR or `start-end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpRange {
    /// The first address.
    pub start: IpAddr,
    /// The last address (same family, not before `start`).
    pub end: IpAddr,
}

impl IpRange {
    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.start.is_ipv4() && self.start <= ip && ip <= self.end
    }

    /// Whether the two ranges share an address.
    pub fn overlaps(&self, other: &IpRange) -> bool {
        self.start.is_ipv4() == other.start.is_ipv4()
            && self.start <= other.end
            && other.start <= self.end
    }

    /// How many addresses it holds.
    pub fn len(&self) -> u128 {
        // Saturates for the one range longer than u128::MAX: all of IPv6 (`::/0`).
        (to_u128(self.end) - to_u128(self.start)).saturating_add(1)
    }

    /// Never empty; here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `index`-th address of the range, if the range is that long.
    pub fn nth(&self, index: u128) -> Option<IpAddr> {
        (index < self.len()).then(|| from_u128(to_u128(self.start) + index, self.start.is_ipv4()))
    }

    /// Every address in order (lazily: an IPv6 /64 is not materialised).
    pub fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let first = to_u128(self.start);
        let last = to_u128(self.end);
        let v4 = self.start.is_ipv4();
        (0..=last - first).map(move |offset| from_u128(first + offset, v4))
    }
}

impl FromStr for IpRange {
    type Err = String;

    /// `10.0.0.0/24`, `10.0.0.10-10.0.0.20` (spaces around `-` allowed, as MetalLB
    /// does), or one address as a /32 or /128.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if let Some((start, end)) = text.split_once('-') {
            let start: IpAddr = start
                .trim()
                .parse()
                .map_err(|_| format!("{text:?}: {:?} is not an IP address", start.trim()))?;
            let end: IpAddr = end
                .trim()
                .parse()
                .map_err(|_| format!("{text:?}: {:?} is not an IP address", end.trim()))?;
            if start.is_ipv4() != end.is_ipv4() {
                return Err(format!(
                    "{text:?}: the two ends are of different IP families"
                ));
            }
            if end < start {
                return Err(format!("{text:?}: the range ends before it starts"));
            }
            return Ok(IpRange { start, end });
        }
        if text.contains('/') {
            let net: ipnet::IpNet = text
                .parse()
                .map_err(|_| format!("{text:?} is neither a CIDR nor a start-end range"))?;
            return Ok(IpRange {
                start: net.network(),
                end: net.broadcast(),
            });
        }
        let ip: IpAddr = text
            .parse()
            .map_err(|_| format!("{text:?} is neither a CIDR nor a start-end range"))?;
        Ok(IpRange { start: ip, end: ip })
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(value: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(value as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(value))
    }
}

/// A node label selector with a weight (`preferredNodeSelectors`).
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedSelector {
    /// 1..=100.
    pub weight: u32,
    /// The nodes that get it.
    pub selector: Selector,
}

/// An `L2Advertisement`.
#[derive(Debug, Clone, PartialEq)]
pub struct L2Advertisement {
    /// Its name.
    pub name: String,
    /// The pools it announces, by name (resolved: every pool when it named none).
    pub pools: Vec<String>,
    /// Nodes that may announce; empty means all.
    pub node_selectors: Vec<Selector>,
    /// Interfaces to announce from; empty means the agent chooses.
    pub interfaces: Vec<String>,
    /// Services it announces; empty means all.
    pub service_selectors: Vec<Selector>,
    /// Soft preferences in the owner election.
    pub preferred_nodes: Vec<WeightedSelector>,
}

/// A `BGPAdvertisement`.
#[derive(Debug, Clone, PartialEq)]
pub struct BgpAdvertisement {
    /// Its name.
    pub name: String,
    /// The pools it announces, by name (resolved: every pool when it named none).
    pub pools: Vec<String>,
    /// IPv4 prefix length announced.
    pub aggregation_length: u8,
    /// IPv6 prefix length announced.
    pub aggregation_length_v6: u8,
    /// LOCAL_PREF for iBGP peers.
    pub local_pref: Option<u32>,
    /// Communities, aliases resolved.
    pub communities: Vec<Community>,
    /// Nodes that announce; empty means all.
    pub node_selectors: Vec<Selector>,
    /// Peers (BGPPeer names) to announce to; empty means all.
    pub peers: Vec<String>,
    /// Services it announces; empty means all.
    pub service_selectors: Vec<Selector>,
}

/// A BGP community.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Community {
    /// RFC 1997: `high:low`, 16 bits each.
    Standard(u32),
    /// RFC 8092: `large:global:local1:local2`, 32 bits each.
    Large(u32, u32, u32),
}

impl FromStr for Community {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = text.strip_prefix("large:") {
            let parts: Vec<&str> = rest.split(':').collect();
            let numbers: Option<Vec<u32>> = parts.iter().map(|part| part.parse().ok()).collect();
            return match numbers.as_deref() {
                Some([global, local1, local2]) => Ok(Community::Large(*global, *local1, *local2)),
                _ => Err(format!(
                    "{text:?} is not a large community: want large:<u32>:<u32>:<u32>"
                )),
            };
        }
        match text.split_once(':') {
            Some((high, low)) => match (high.parse::<u16>(), low.parse::<u16>()) {
                (Ok(high), Ok(low)) => {
                    Ok(Community::Standard(u32::from(high) << 16 | u32::from(low)))
                }
                _ => Err(format!(
                    "{text:?} is not a community: want <0-65535>:<0-65535>"
                )),
            },
            None => Err(format!(
                "{text:?} is not a community (<0-65535>:<0-65535> or large:<u32>:<u32>:<u32>)"
            )),
        }
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Community::Standard(value) => write!(f, "{}:{}", value >> 16, value & 0xffff),
            Community::Large(global, local1, local2) => {
                write!(f, "large:{global}:{local1}:{local2}")
            }
        }
    }
}

/// A `BGPPeer`.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    /// Its name.
    pub name: String,
    /// Our AS.
    pub my_asn: u32,
    /// The peer's AS.
    pub peer_asn: PeerAsn,
    /// The peer's address (`None` for an unnumbered session on `interface`).
    pub address: Option<IpAddr>,
    /// Unnumbered BGP over this interface.
    pub interface: Option<String>,
    /// Our address for the session.
    pub source_address: Option<IpAddr>,
    /// The peer's port.
    pub port: u16,
    /// Proposed hold time (`None`: the speaker's default, 90 s).
    pub hold_time: Option<Duration>,
    /// Keepalive interval (`None`: a third of the hold time).
    pub keepalive_time: Option<Duration>,
    /// Connect retry interval (`None`: the speaker's default).
    pub connect_time: Option<Duration>,
    /// Our BGP identifier (`None`: the node's IPv4 address).
    pub router_id: Option<Ipv4Addr>,
    /// Nodes that open this session; empty means all.
    pub node_selectors: Vec<Selector>,
    /// TCP MD5 password.
    pub password: Option<PeerPassword>,
    /// BFD profile name (exists in [`LbConfig::bfd_profiles`]).
    pub bfd_profile: Option<String>,
    /// Advertise graceful restart.
    pub graceful_restart: bool,
    /// The peer may be more than one hop away.
    pub ebgp_multihop: bool,
    /// Announce both families over this session.
    pub dual_stack: bool,
}

/// The peer's AS number, or which kind of AS to accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAsn {
    /// This AS exactly.
    Fixed(u32),
    /// The same AS as ours (iBGP).
    Internal,
    /// Any AS but ours (eBGP).
    External,
}

/// Where a TCP MD5 password comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum PeerPassword {
    /// Given in the BGPPeer.
    Inline(String),
    /// The `password` key of this Secret.
    Secret {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
    },
}

impl fmt::Debug for PeerPassword {
    /// Never prints the password itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerPassword::Inline(_) => f.write_str("Inline(<redacted>)"),
            PeerPassword::Secret { namespace, name } => write!(f, "Secret({namespace}/{name})"),
        }
    }
}

/// A `BFDProfile`, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct BfdProfile {
    /// Its name.
    pub name: String,
    /// Required minimum receive interval.
    pub receive_interval: Duration,
    /// Desired minimum transmit interval.
    pub transmit_interval: Duration,
    /// Detection multiplier.
    pub detect_multiplier: u8,
    /// Wait for the peer's packets before sending.
    pub passive: bool,
    /// Echo mode requested (not implemented: reported as unsupported).
    pub echo_mode: bool,
    /// Multihop minimum TTL.
    pub minimum_ttl: Option<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_from_cidrs_and_start_end() {
        let cidr: IpRange = "192.168.1.0/30".parse().unwrap();
        assert_eq!(cidr.to_string(), "192.168.1.0-192.168.1.3");
        assert_eq!(cidr.len(), 4);
        let span: IpRange = "10.0.0.250 - 10.0.1.2".parse().unwrap();
        assert_eq!(span.len(), 9);
        assert_eq!(span.nth(6), Some("10.0.1.0".parse().unwrap()));
        let v6: IpRange = "fd00::/120".parse().unwrap();
        assert_eq!(v6.len(), 256);
        assert!(v6.contains("fd00::ff".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert!(
            "10.0.0.5-10.0.0.1"
                .parse::<IpRange>()
                .unwrap_err()
                .contains("ends before")
        );
        assert!(
            "10.0.0.1-fd00::1"
                .parse::<IpRange>()
                .unwrap_err()
                .contains("families")
        );
        assert!("10.0.0/24".parse::<IpRange>().is_err());
        assert!(cidr.overlaps(&"192.168.1.3-192.168.1.9".parse().unwrap()));
        assert!(!cidr.overlaps(&"192.168.1.4/30".parse().unwrap()));
    }

    #[test]
    fn communities_parse_and_print_back() {
        for text in ["65000:100", "0:0", "65535:65535", "large:4200000000:1:2"] {
            assert_eq!(text.parse::<Community>().unwrap().to_string(), text);
        }
        for bad in ["65536:1", "1", "large:1:2", "a:b", "large:1:2:x"] {
            assert!(bad.parse::<Community>().is_err(), "{bad}");
        }
    }
}
