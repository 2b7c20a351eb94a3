//! Which interfaces a layer-2 address is answered on.
//!
//! # The rule
//!
//! 1. **Named interfaces.** When the L2Advertisements name interfaces
//!    ([`Interfaces::Only`]), the address is answered on each named interface that is
//!    *usable* (below); a name that matches no usable link is skipped.
//! 2. **Otherwise** ([`Interfaces::All`]), on every *usable* interface that is not a
//!    *container link* and holds an address whose subnet contains the IP: the segment
//!    where neighbours ask for it.
//! 3. **Else** on the interface of the node's default route of the IP's family (the
//!    lowest metric among usable ones; a multipath route gives its first usable next
//!    hop), or, when that family has no default route, of the other family's: the
//!    uplink, where a router on the segment holds a route towards the address.
//!
//! A link is *usable* when it is up with a carrier (`IFF_UP` and `IFF_LOWER_UP`), has
//! an Ethernet address, and is none of: `kube-ipvs0` (where the addresses live, so
//! the kernel's own neighbour code never answers for them), loopback, `IFF_NOARP`
//! (dummies, tunnels without a link layer) or enslaved to a bridge or bond (the
//! master answers; the port's frames belong to it).
//!
//! A *container link* is one a CNI or a container runtime made: a veth without any
//! global address (a pod's host-side end never has one, while the uplink of a `kind`
//! node or a container lab is a veth carrying the node's address, and stays usable);
//! an overlay or tunnel kind (vxlan, geneve, ipip, gre, wireguard, tun, ...); or a
//! name one of the common CNIs gives (`cali*`, `cilium*`, `lxc*`, `flannel*`,
//! `cni*`, `weave*`, `vxlan*`, `tunl*`, `docker*`, `kube-bridge`, `nodelocaldns`,
//! `genev_sys*`, `ovn-k8s*`, `antrea*`, `veth*`). They are skipped by the automatic
//! choice only: an advertisement naming one gets it.
//!
//! The choice is re-evaluated on every rtnetlink link, address and default-route
//! event (see `announcer`), never by polling.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use futures_util::TryStreamExt;
use ipnet::IpNet;
use neighbor_frames::MacAddr;
use rtnetlink::Handle;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressScope};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkInfo};
use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage, RouteType};

use crate::lb::decision::Interfaces;

/// The interface the IPVS addresses are on: never answered from.
pub const SERVICE_INTERFACE: &str = "kube-ipvs0";

/// Name prefixes of links that CNIs and container runtimes create.
const CONTAINER_NAME_PREFIXES: &[&str] = &[
    "cali",
    "cilium",
    "lxc",
    "flannel",
    "cni",
    "weave",
    "vxlan",
    "tunl",
    "docker",
    "kube-bridge",
    "nodelocaldns",
    "genev_sys",
    "ovn-k8s",
    "antrea",
    "veth",
];

/// Link kinds that are overlays or tunnels, never the segment clients ask on.
const TUNNEL_KINDS: &[&str] = &[
    "vxlan",
    "geneve",
    "ipip",
    "gre",
    "gretap",
    "ip6gre",
    "ip6gretap",
    "ip6tnl",
    "sit",
    "vti",
    "vti6",
    "wireguard",
    "tun",
    "erspan",
];

/// One link as the announcer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Ethernet address, when the link has a 6-byte one.
    pub mac: Option<MacAddr>,
    /// `IFF_UP`.
    pub up: bool,
    /// `IFF_LOWER_UP`: a carrier.
    pub lower_up: bool,
    /// `IFF_LOOPBACK`.
    pub loopback: bool,
    /// `IFF_NOARP`.
    pub noarp: bool,
    /// Has a master (bridge port, bond member, VRF member).
    pub enslaved: bool,
    /// The `IFLA_INFO_KIND` (`veth`, `bridge`, `vxlan`, ...), when the link has one.
    pub kind: Option<String>,
    /// Its addresses with their prefix lengths (link-local ones included).
    pub addresses: Vec<IpNet>,
}

/// Why a link is not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// It is `kube-ipvs0`.
    ServiceInterface,
    /// Loopback.
    Loopback,
    /// Administratively down or without a carrier.
    Down,
    /// `IFF_NOARP`.
    NoArp,
    /// A port of a bridge, bond or VRF.
    Enslaved,
    /// No Ethernet address.
    NotEthernet,
    /// Made by a CNI or a container runtime (automatic choice only).
    ContainerLink,
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unusable::ServiceInterface => "the service address interface",
            Unusable::Loopback => "loopback",
            Unusable::Down => "down or without carrier",
            Unusable::NoArp => "NOARP",
            Unusable::Enslaved => "enslaved",
            Unusable::NotEthernet => "no Ethernet address",
            Unusable::ContainerLink => "a CNI or container link",
        })
    }
}

impl Link {
    /// Whether the link may answer: `Ok` or why not. `named` says an advertisement
    /// names it, which lifts the container-link exclusion only.
    pub fn usable(&self, named: bool) -> Result<(), Unusable> {
        if self.name == SERVICE_INTERFACE {
            return Err(Unusable::ServiceInterface);
        }
        if self.loopback {
            return Err(Unusable::Loopback);
        }
        if !self.up || !self.lower_up {
            return Err(Unusable::Down);
        }
        if self.noarp {
            return Err(Unusable::NoArp);
        }
        if self.enslaved {
            return Err(Unusable::Enslaved);
        }
        match self.mac {
            Some(mac) if mac.octets() != [0; 6] => {}
            _ => return Err(Unusable::NotEthernet),
        }
        if !named && self.is_container_link() {
            return Err(Unusable::ContainerLink);
        }
        Ok(())
    }

    fn is_container_link(&self) -> bool {
        let kind = self.kind.as_deref().unwrap_or("");
        let veth_without_address = kind == "veth" && !self.addresses.iter().any(is_global);
        veth_without_address
            || TUNNEL_KINDS.contains(&kind)
            || CONTAINER_NAME_PREFIXES
                .iter()
                .any(|prefix| self.name.starts_with(prefix))
    }
}

/// Whether an address is a global one (not link-local, not loopback).
fn is_global(net: &IpNet) -> bool {
    match net.addr() {
        IpAddr::V4(ip) => !ip.is_loopback() && !ip.is_link_local(),
        IpAddr::V6(ip) => !ip.is_loopback() && ip.segments()[0] & 0xffc0 != 0xfe80,
    }
}

/// What the choice needs to know of the node's network: links with their addresses,
/// and the default routes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    /// By interface index.
    pub links: BTreeMap<u32, Link>,
    /// The interfaces of the IPv4 default routes, best (lowest metric) first.
    pub default_v4: Vec<u32>,
    /// The interfaces of the IPv6 default routes, best first.
    pub default_v6: Vec<u32>,
}

impl Links {
    /// The interfaces (by index) to answer for `ip` on, per the module's rule.
    pub fn choose(&self, ip: IpAddr, wanted: &Interfaces) -> BTreeSet<u32> {
        match wanted {
            Interfaces::Only(names) => self
                .links
                .values()
                .filter(|link| names.contains(&link.name) && link.usable(true).is_ok())
                .map(|link| link.index)
                .collect(),
            Interfaces::All => {
                let on_subnet: BTreeSet<u32> = self
                    .links
                    .values()
                    .filter(|link| link.usable(false).is_ok())
                    .filter(|link| link.addresses.iter().any(|net| net.contains(&ip)))
                    .map(|link| link.index)
                    .collect();
                if !on_subnet.is_empty() {
                    return on_subnet;
                }
                let (same, other) = match ip {
                    IpAddr::V4(_) => (&self.default_v4, &self.default_v6),
                    IpAddr::V6(_) => (&self.default_v6, &self.default_v4),
                };
                let uplink = |routes: &Vec<u32>| {
                    routes.iter().copied().find(|index| {
                        self.links
                            .get(index)
                            .is_some_and(|link| link.usable(false).is_ok())
                    })
                };
                uplink(same).or_else(|| uplink(other)).into_iter().collect()
            }
        }
    }

    /// The name of the interface `index`.
    pub fn name(&self, index: u32) -> Option<&str> {
        self.links.get(&index).map(|link| &*link.name)
    }
}

/// Reads links, addresses and default routes over rtnetlink.
pub async fn dump(handle: &Handle) -> Result<Links, rtnetlink::Error> {
    let mut links = BTreeMap::new();
    let mut stream = handle.link().get().execute();
    while let Some(message) = stream.try_next().await? {
        let mut link = Link {
            index: message.header.index,
            name: String::new(),
            mac: None,
            up: message.header.flags.contains(LinkFlags::Up),
            lower_up: message.header.flags.contains(LinkFlags::LowerUp),
            loopback: message.header.flags.contains(LinkFlags::Loopback),
            noarp: message.header.flags.contains(LinkFlags::Noarp),
            enslaved: false,
            kind: None,
            addresses: Vec::new(),
        };
        for attribute in &message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => link.name.clone_from(name),
                LinkAttribute::Address(bytes) => {
                    link.mac = <[u8; 6]>::try_from(bytes.as_slice()).ok().map(MacAddr::new);
                }
                LinkAttribute::Controller(_) => link.enslaved = true,
                LinkAttribute::LinkInfo(infos) => {
                    link.kind = infos.iter().find_map(|info| match info {
                        LinkInfo::Kind(kind) => Some(kind.to_string()),
                        _ => None,
                    });
                }
                _ => {}
            }
        }
        links.insert(link.index, link);
    }

    let mut stream = handle.address().get().execute();
    while let Some(message) = stream.try_next().await? {
        if message.header.scope == AddressScope::Host {
            continue;
        }
        // IFA_LOCAL is the interface's own IPv4 address (IFA_ADDRESS is the peer on a
        // point-to-point link); IPv6 sends IFA_ADDRESS only.
        let local = message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        });
        let address = local.or_else(|| {
            message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
        });
        if let (Some(address), Some(link)) = (address, links.get_mut(&message.header.index))
            && let Ok(net) = IpNet::new(address, message.header.prefix_len)
        {
            link.addresses.push(net);
        }
    }

    let mut default_v4 = Vec::new();
    let mut default_v6 = Vec::new();
    for (family, out) in [
        (AddressFamily::Inet, &mut default_v4),
        (AddressFamily::Inet6, &mut default_v6),
    ] {
        let mut request = RouteMessage::default();
        request.header.address_family = family;
        let mut stream = handle.route().get(request).execute();
        let mut routes = Vec::new();
        while let Some(message) = stream.try_next().await? {
            if let Some(route) = default_route(&message) {
                routes.push(route);
            }
        }
        routes.sort();
        out.extend(routes.into_iter().flat_map(|(_, interfaces)| interfaces));
    }
    Ok(Links {
        links,
        default_v4,
        default_v6,
    })
}

/// The main table's routing table id.
const MAIN_TABLE: u32 = 254;

/// `(metric, interfaces)` of a unicast default route of the main table.
fn default_route(message: &RouteMessage) -> Option<(u32, Vec<u32>)> {
    if !is_default_route(message) {
        return None;
    }
    let mut table = u32::from(message.header.table);
    let mut metric = 0;
    let mut interfaces = Vec::new();
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Table(id) => table = *id,
            RouteAttribute::Priority(priority) => metric = *priority,
            RouteAttribute::Oif(index) => interfaces.push(*index),
            RouteAttribute::MultiPath(hops) => {
                interfaces.extend(hops.iter().map(|hop| hop.interface_index));
            }
            _ => {}
        }
    }
    (table == MAIN_TABLE && !interfaces.is_empty()).then_some((metric, interfaces))
}

/// Whether a route message is a unicast default route (what a route event must be to
/// change the choice).
pub fn is_default_route(message: &RouteMessage) -> bool {
    message.header.destination_prefix_length == 0 && message.header.kind == RouteType::Unicast
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, addresses: &[&str]) -> Link {
        Link {
            index,
            name: name.to_owned(),
            mac: Some(MacAddr::new([2, 0, 0, 0, 0, index as u8])),
            up: true,
            lower_up: true,
            loopback: false,
            noarp: false,
            enslaved: false,
            kind: None,
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn node() -> Links {
        let mut lo = link(1, "lo", &["127.0.0.1/8", "::1/128"]);
        lo.loopback = true;
        lo.mac = Some(MacAddr::new([0; 6]));
        let mut ipvs = link(5, SERVICE_INTERFACE, &["192.168.1.100/32"]);
        ipvs.noarp = true;
        ipvs.kind = Some("dummy".into());
        let mut pod = link(6, "cali1234", &["fe80::ecee:eeff:feee:eeee/64"]);
        pod.kind = Some("veth".into());
        let mut port = link(7, "eno3", &[]);
        port.enslaved = true;
        let links = [
            lo,
            link(2, "eth0", &["192.168.1.10/24", "2001:db8:1::10/64"]),
            link(3, "eth1", &["10.20.0.10/16"]),
            link(4, "eth2", &["192.168.1.11/24"]),
            ipvs,
            pod,
            port,
        ];
        Links {
            links: links.into_iter().map(|l| (l.index, l)).collect(),
            default_v4: vec![3, 2],
            default_v6: vec![],
        }
    }

    fn only(names: &[&str]) -> Interfaces {
        Interfaces::Only(names.iter().map(|n| (*n).to_owned()).collect())
    }

    fn set(indices: &[u32]) -> BTreeSet<u32> {
        indices.iter().copied().collect()
    }

    #[test]
    fn every_interface_on_the_subnet_answers() {
        let ip = "192.168.1.100".parse().unwrap();
        assert_eq!(node().choose(ip, &Interfaces::All), set(&[2, 4]));
        let ip = "10.20.200.1".parse().unwrap();
        assert_eq!(node().choose(ip, &Interfaces::All), set(&[3]));
        let ip = "2001:db8:1::100".parse().unwrap();
        assert_eq!(node().choose(ip, &Interfaces::All), set(&[2]));
    }

    #[test]
    fn off_subnet_addresses_go_to_the_best_default_route() {
        let ip = "203.0.113.7".parse().unwrap();
        assert_eq!(node().choose(ip, &Interfaces::All), set(&[3]));
        // The best one is down: the next.
        let mut links = node();
        links.links.get_mut(&3).unwrap().lower_up = false;
        assert_eq!(links.choose(ip, &Interfaces::All), set(&[2]));
        // No IPv6 default route: the IPv4 one.
        let ip = "2001:db8:99::1".parse().unwrap();
        assert_eq!(node().choose(ip, &Interfaces::All), set(&[3]));
        // No route at all: nowhere.
        let mut links = node();
        links.default_v4.clear();
        assert!(links.choose(ip, &Interfaces::All).is_empty());
    }

    #[test]
    fn named_interfaces_win_over_subnets() {
        let ip = "192.168.1.100".parse().unwrap();
        assert_eq!(node().choose(ip, &only(&["eth1"])), set(&[3]));
        assert_eq!(
            node().choose(ip, &only(&["eth1", "eth2", "nope"])),
            set(&[3, 4])
        );
        // Named pod links are honoured; the hard exclusions are not lifted.
        assert_eq!(node().choose(ip, &only(&["cali1234"])), set(&[6]));
        for name in [SERVICE_INTERFACE, "lo", "eno3"] {
            assert!(node().choose(ip, &only(&[name])).is_empty(), "{name}");
        }
    }

    #[test]
    fn unusable_links_say_why() {
        let links = node();
        assert_eq!(links.links[&1].usable(true), Err(Unusable::Loopback));
        assert_eq!(
            links.links[&5].usable(true),
            Err(Unusable::ServiceInterface)
        );
        assert_eq!(links.links[&6].usable(false), Err(Unusable::ContainerLink));
        assert_eq!(links.links[&7].usable(false), Err(Unusable::Enslaved));
        let mut down = link(9, "eth9", &[]);
        down.up = false;
        assert_eq!(down.usable(true), Err(Unusable::Down));
        let mut noarp = link(9, "eth9", &[]);
        noarp.noarp = true;
        assert_eq!(noarp.usable(true), Err(Unusable::NoArp));
        let mut tunnel = link(9, "uplink", &["10.0.0.1/24"]);
        tunnel.kind = Some("vxlan".into());
        assert_eq!(tunnel.usable(false), Err(Unusable::ContainerLink));
        let mut no_mac = link(9, "wg0", &[]);
        no_mac.mac = None;
        assert_eq!(no_mac.usable(true), Err(Unusable::NotEthernet));
    }

    #[test]
    fn a_veth_carrying_the_nodes_address_is_an_uplink() {
        // A kind node's or a container lab's eth0 is a veth with the node's address.
        let mut uplink = link(9, "eth0", &["172.18.0.2/16", "fe80::1/64"]);
        uplink.kind = Some("veth".into());
        assert_eq!(uplink.usable(false), Ok(()));
        uplink.addresses.truncate(0);
        uplink.addresses.push("fe80::1/64".parse().unwrap());
        assert_eq!(uplink.usable(false), Err(Unusable::ContainerLink));
    }
}
