//! The routes a peer should have and the UPDATEs that bring what it has from us (the
//! session's Adj-RIB-Out) there: withdrawals of what is gone, then announcements
//! grouped by family and attributes, in chunks that keep each UPDATE well within 4096
//! octets.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bgp_proto::packet::attribute::{Community, LargeCommunity};
use bgp_proto::packet::update::{Announcement, Update};
use bgp_proto::{Family, Message};
use ipnet::IpNet;

use super::peer::PeerTask;
use crate::announce::bgp::DEFAULT_LOCAL_PREF;
use crate::announce::bgp::network;
use crate::lb::decision::Route;

/// At most this many IPv4 prefixes per UPDATE (5 octets each: well within 4096).
const V4_PER_UPDATE: usize = 500;
/// At most this many IPv6 prefixes per UPDATE (17 octets each).
const V6_PER_UPDATE: usize = 150;

impl PeerTask {
    /// The routes the peer should have: this peer's routes whose family the session
    /// carries, one per prefix (the first in order when advertisements disagree).
    fn desired(&self) -> BTreeMap<IpNet, Route> {
        let Some(n) = &self.negotiated else {
            return BTreeMap::new();
        };
        let routes = self.routes.borrow();
        let mut out = BTreeMap::new();
        for route in routes.get(self.cfg.name.as_str()).into_iter().flatten() {
            let family = match route.prefix {
                IpNet::V4(_) => Family::IPV4_UNICAST,
                IpNet::V6(_) => Family::IPV6_UNICAST,
            };
            if n.families.contains(&family) {
                out.entry(route.prefix).or_insert_with(|| route.clone());
            }
        }
        out
    }

    /// The next hop for routes of `prefix`'s family, and the link-local one beside it.
    fn next_hop(&self, prefix: &IpNet) -> Option<(IpAddr, Option<Ipv6Addr>)> {
        next_hop(
            prefix,
            self.local,
            self.options.node_ipv4,
            self.options.node_ipv6,
        )
    }

    /// Sends the differences between what the peer has and what it should have.
    pub(super) async fn sync_routes(&mut self) {
        let Some(n) = self.negotiated.clone() else {
            return;
        };
        let desired = self.desired();
        let gone: Vec<IpNet> = self
            .sent
            .keys()
            .filter(|p| !desired.contains_key(p))
            .copied()
            .collect();
        self.withdraw(&gone).await;
        // Same attributes, same family: one UPDATE (or a few) for all of them.
        let mut groups: BTreeMap<(bool, Vec<metallb_config::Community>, Option<u32>), Vec<IpNet>> =
            BTreeMap::new();
        for (prefix, route) in &desired {
            if self.sent.get(prefix) != Some(route) {
                groups
                    .entry((
                        matches!(prefix, IpNet::V6(_)),
                        route.communities.clone(),
                        route.local_pref,
                    ))
                    .or_default()
                    .push(*prefix);
            }
        }
        let mut missing_next_hop = false;
        for ((v6, communities, local_pref), prefixes) in groups {
            let Some((next_hop, link_local)) = self.next_hop(&prefixes[0]) else {
                missing_next_hop = true;
                continue;
            };
            let chunk = if v6 { V6_PER_UPDATE } else { V4_PER_UPDATE };
            let (communities, large_communities) = split_communities(&communities);
            for part in prefixes.chunks(chunk) {
                let a = Announcement {
                    prefixes: part.to_vec(),
                    next_hop,
                    link_local,
                    // An iBGP speaker does not prepend its AS; LOCAL_PREF goes to
                    // internal peers only (RFC 4271 §5.1.2, §5.1.5).
                    as_path: if n.internal {
                        vec![]
                    } else {
                        vec![self.cfg.local_as]
                    },
                    local_pref: n.internal.then(|| local_pref.unwrap_or(DEFAULT_LOCAL_PREF)),
                    communities: communities.clone(),
                    large_communities: large_communities.clone(),
                };
                if !self
                    .send(&Message::Update(Update::announce(&a, &n.caps)))
                    .await
                {
                    break;
                }
                for p in part {
                    if let Some(route) = desired.get(p) {
                        self.sent.insert(*p, route.clone());
                    }
                }
            }
        }
        if missing_next_hop {
            self.set_error(
                "no next hop for routes of the other address family (node address unknown)".into(),
            );
        }
        let (sent, wanted) = (self.sent.len(), desired.len());
        self.status(|s| s.prefixes_sent = sent);
        self.metric(|m, l| {
            m.announced_prefixes.get_or_create(l).set(sent as i64);
            m.pending_prefixes.get_or_create(l).set(wanted as i64);
        });
    }

    /// Withdraws `prefixes`, per family and in chunks.
    pub(super) async fn withdraw(&mut self, prefixes: &[IpNet]) {
        let (v4, v6): (Vec<IpNet>, Vec<IpNet>) =
            prefixes.iter().partition(|p| matches!(p, IpNet::V4(_)));
        for (list, chunk) in [(v4, V4_PER_UPDATE), (v6, V6_PER_UPDATE)] {
            for part in list.chunks(chunk) {
                if !self.send(&Message::Update(Update::withdraw(part))).await {
                    return;
                }
                for p in part {
                    self.sent.remove(p);
                }
            }
        }
        let sent = self.sent.len();
        self.status(|s| s.prefixes_sent = sent);
    }
}

/// MetalLB's communities as an UPDATE carries them: the standard ones in COMMUNITIES
/// (RFC 1997), the large ones in LARGE_COMMUNITY (RFC 8092).
fn split_communities(
    communities: &[metallb_config::Community],
) -> (Vec<Community>, Vec<LargeCommunity>) {
    let mut standard = Vec::new();
    let mut large = Vec::new();
    for c in communities {
        match *c {
            metallb_config::Community::Standard(v) => standard.push(Community(v)),
            metallb_config::Community::Large(global, local1, local2) => {
                large.push(LargeCommunity {
                    global,
                    local1,
                    local2,
                })
            }
        }
    }
    (standard, large)
}

/// The next hop for routes of `prefix`'s family, with the link-local next hop beside
/// it on a link-local session (RFC 2545 §3, MP_REACH_NLRI with two next hops): our
/// address on the session when of the same family (`local`), else the node's address
/// of that family. A link-local session's global next hop is the node's IPv6 address;
/// without one, the link-local address goes alone.
fn next_hop(
    prefix: &IpNet,
    local: Option<IpAddr>,
    node_ipv4: Option<Ipv4Addr>,
    node_ipv6: Option<Ipv6Addr>,
) -> Option<(IpAddr, Option<Ipv6Addr>)> {
    match (prefix, local) {
        (IpNet::V4(_), Some(IpAddr::V4(a))) => Some((IpAddr::V4(a), None)),
        (IpNet::V6(_), Some(IpAddr::V6(a))) if network::is_link_local(a) => match node_ipv6 {
            Some(global) => Some((IpAddr::V6(global), Some(a))),
            None => Some((IpAddr::V6(a), None)),
        },
        (IpNet::V6(_), Some(IpAddr::V6(a))) => Some((IpAddr::V6(a), None)),
        (IpNet::V4(_), _) => node_ipv4.map(|a| (IpAddr::V4(a), None)),
        (IpNet::V6(_), _) => node_ipv6.map(|a| (IpAddr::V6(a), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn communities_split_into_standard_and_large_keeping_their_order() {
        let communities: Vec<metallb_config::Community> = ["64512:8", "large:64512:1:2", "64512:7"]
            .iter()
            .map(|c| c.parse().unwrap())
            .collect();
        let (standard, large) = split_communities(&communities);
        assert_eq!(
            standard,
            vec![Community((64512 << 16) | 8), Community((64512 << 16) | 7)]
        );
        assert_eq!(
            large,
            vec![LargeCommunity {
                global: 64512,
                local1: 1,
                local2: 2
            }]
        );
    }

    #[test]
    fn next_hops_follow_the_sessions_address_and_add_the_link_local_one() {
        let v4: IpNet = "198.51.100.10/32".parse().unwrap();
        let v6: IpNet = "2001:db8::10/128".parse().unwrap();
        let node4 = Some("10.0.0.2".parse().unwrap());
        let global: Ipv6Addr = "2001:db8:1::2".parse().unwrap();
        let node6 = Some(global);
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let ll: Ipv6Addr = "fe80::2".parse().unwrap();
        // The session's own address for its family.
        assert_eq!(
            next_hop(&v4, ip("10.0.1.2"), node4, node6),
            Some((ip("10.0.1.2").unwrap(), None))
        );
        assert_eq!(
            next_hop(&v6, ip("fd00:1::2"), node4, node6),
            Some((ip("fd00:1::2").unwrap(), None))
        );
        // The node's address for the other family (dual stack), none when unknown.
        assert_eq!(
            next_hop(&v6, ip("10.0.1.2"), node4, node6),
            Some((IpAddr::V6(global), None))
        );
        assert_eq!(next_hop(&v6, ip("10.0.1.2"), node4, None), None);
        assert_eq!(
            next_hop(&v4, ip("fd00:1::2"), node4, node6),
            Some((ip("10.0.0.2").unwrap(), None))
        );
        // A link-local session: the global address plus the link-local one.
        assert_eq!(
            next_hop(&v6, Some(IpAddr::V6(ll)), node4, node6),
            Some((IpAddr::V6(global), Some(ll)))
        );
        assert_eq!(
            next_hop(&v6, Some(IpAddr::V6(ll)), node4, None),
            Some((IpAddr::V6(ll), None))
        );
    }
}
