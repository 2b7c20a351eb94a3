//! One Service's decision, from its projection, its endpoints, the Nodes and the
//! configuration: the rules of MetalLB's speaker (`speaker/layer2_controller.go`,
//! `speaker/bgp_controller.go`), written afresh.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use metallb_config::selector::any_matches;
use metallb_config::{BgpAdvertisement, Community, LbConfig, Pool, Selector};
use sha2::{Digest, Sha256};

use super::input::{Endpoints, NodeInput, ServiceInput};
use super::{
    BgpAnnouncement, BgpOutcome, Candidate, Interfaces, L2Outcome, Route, ServiceDecision,
};

/// The Nodes by name.
pub(super) type Nodes = BTreeMap<Arc<str>, NodeInput>;

/// An address as Go's `net.IP.String()` writes it, the text MetalLB hashes: IPv4
/// dotted, IPv6 in RFC 5952 form, and an IPv4-mapped IPv6 address as the IPv4
/// address (Go keeps IPv4 addresses in that form and prints them dotted).
pub fn metallb_ip_string(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => v6.to_string(),
        },
        IpAddr::V4(v4) => v4.to_string(),
    }
}

/// The layer-2 election key of `node` for a Service whose first address is `ip`:
/// `sha256(node + "#" + ip)`. Among candidates of equal preference, the smallest key
/// (in byte order) owns the Service.
pub fn election_key(node: &str, ip: IpAddr) -> [u8; 32] {
    key_of(node, &metallb_ip_string(ip))
}

/// [`election_key`] with the address already written as MetalLB writes it.
fn key_of(node: &str, ip: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(node.as_bytes());
    hasher.update(b"#");
    hasher.update(ip.as_bytes());
    hasher.finalize().into()
}

/// The configuration's node selectors resolved against the known Nodes, as MetalLB
/// resolves them when it reads its configuration. Rebuilt when the configuration or a
/// Node changes (both recompute every Service anyway).
#[derive(Debug, Clone, Default)]
pub(super) struct Resolved {
    /// Per L2Advertisement (configuration order): the nodes its `nodeSelectors` select.
    l2_nodes: Vec<BTreeSet<Arc<str>>>,
    /// Per L2Advertisement: each selected node's preference score (0 left out).
    l2_scores: Vec<BTreeMap<Arc<str>, i64>>,
    /// Per BGPAdvertisement: the nodes its `nodeSelectors` select.
    bgp_nodes: Vec<BTreeSet<Arc<str>>>,
    /// Per BGPPeer: the nodes that open a session with it.
    peer_nodes: Vec<BTreeSet<Arc<str>>>,
    /// Per BGPPeer: its name, shared by every announcement naming it.
    peer_names: Vec<Arc<str>>,
}

impl Resolved {
    pub(super) fn new(config: &LbConfig, nodes: &Nodes) -> Resolved {
        let select = |selectors: &[metallb_config::Selector]| -> BTreeSet<Arc<str>> {
            nodes
                .iter()
                .filter(|(_, node)| any_matches(selectors, &node.labels))
                .map(|(name, _)| name.clone())
                .collect()
        };
        let l2_nodes: Vec<_> = config
            .l2_advertisements
            .iter()
            .map(|ad| select(&ad.node_selectors))
            .collect();
        let l2_scores = config
            .l2_advertisements
            .iter()
            .zip(&l2_nodes)
            .map(|(ad, selected)| {
                selected
                    .iter()
                    .filter_map(|name| {
                        let labels = &nodes[name].labels;
                        let score: i64 = ad
                            .preferred_nodes
                            .iter()
                            .filter(|preference| preference.selector.matches(labels))
                            .map(|preference| i64::from(preference.weight))
                            .sum();
                        (score > 0).then(|| (name.clone(), score))
                    })
                    .collect()
            })
            .collect();
        Resolved {
            l2_nodes,
            l2_scores,
            bgp_nodes: config
                .bgp_advertisements
                .iter()
                .map(|ad| select(&ad.node_selectors))
                .collect(),
            peer_nodes: config
                .peers
                .iter()
                .map(|peer| select(&peer.node_selectors))
                .collect(),
            peer_names: config
                .peers
                .iter()
                .map(|peer| Arc::from(peer.name.as_str()))
                .collect(),
        }
    }
}

/// Everything one Service's decision reads besides its own projection.
pub(super) struct Context<'a> {
    pub(super) nodes: &'a Nodes,
    pub(super) live: Option<&'a BTreeSet<String>>,
    pub(super) config: &'a LbConfig,
    pub(super) resolved: &'a Resolved,
    /// MetalLB's `--ignore-exclude-lb`: the exclude label counts for nothing.
    pub(super) ignore_exclude_label: bool,
}

/// Decides one Service.
pub(super) fn decide_service(
    service: &ServiceInput,
    endpoints: &Endpoints,
    context: &Context<'_>,
) -> ServiceDecision {
    let mut decision = ServiceDecision {
        service: service.key.clone(),
        ips: service.ips.clone(),
        pool: None,
        l2: L2Outcome::default(),
        bgp: BgpOutcome::default(),
    };
    let pool = match pool_for(service, context.config) {
        Ok(pool) => pool,
        Err(why) => {
            decision.l2.why = Some(why.clone());
            decision.bgp.why = Some(why);
            return decision;
        }
    };
    decision.pool = Some(pool.name.clone());
    decision.l2 = layer2(service, endpoints, pool, context);
    decision.bgp = bgp(service, endpoints, pool, context);
    decision
}

/// The pool holding every address of the Service.
fn pool_for<'a>(service: &ServiceInput, config: &'a LbConfig) -> Result<&'a Pool, String> {
    if let Some(why) = &service.bad_ingress {
        return Err(why.clone());
    }
    let Some(&first) = service.ips.first() else {
        return Err("no ingress address".to_string());
    };
    let pool = config
        .pool_of(first)
        .ok_or_else(|| format!("no address pool holds {first}"))?;
    match service.ips.iter().find(|ip| !pool.contains(**ip)) {
        Some(other) => Err(format!(
            "{other} is not in pool {} with {first}: the addresses of a Service must come from one pool",
            pool.name
        )),
        None => Ok(pool),
    }
}

/// Why nodes were left out, for the `why` of a Service no node announces.
#[derive(Debug, Default)]
struct LeftOut {
    not_live: usize,
    network_unavailable: usize,
    excluded: usize,
    not_selected: usize,
    conflicting: usize,
    no_local_endpoint: usize,
    no_endpoint: usize,
}

impl LeftOut {
    fn explain(&self, kind: &str, total: usize) -> String {
        let mut parts = Vec::new();
        let mut part = |count: usize, text: &str| {
            if count > 0 {
                parts.push(format!("{count} {text}"));
            }
        };
        part(self.not_live, "not live");
        part(self.network_unavailable, "NetworkUnavailable");
        part(
            self.excluded,
            "labelled exclude-from-external-load-balancers",
        );
        part(
            self.not_selected,
            &format!("not selected by the {kind}Advertisements' nodeSelectors"),
        );
        part(self.conflicting, "with conflicting LOCAL_PREFs");
        part(
            self.no_local_endpoint,
            "without a ready or serving endpoint (externalTrafficPolicy Local)",
        );
        part(self.no_endpoint, "without a ready or serving endpoint");
        if total == 0 {
            "no eligible node: no Node is known".to_string()
        } else {
            format!("no eligible node of {total}: {}", parts.join(", "))
        }
    }
}

/// The advertisements (indexes into `ads`, in order) of `pool` that select the
/// Service, their names, and when there is none, why (`kind` names the
/// advertisement kind in that message). `ads` yields each advertisement's name, pools
/// and service selectors.
fn selecting<'a>(
    kind: &str,
    ads: impl Iterator<Item = (&'a String, &'a Vec<String>, &'a Vec<Selector>)>,
    pool: &Pool,
    service: &ServiceInput,
) -> (Vec<usize>, Vec<String>, Option<String>) {
    let mut of_pool = false;
    let mut selected = Vec::new();
    let mut names = Vec::new();
    for (i, (name, pools, selectors)) in ads.enumerate() {
        if !pools.contains(&pool.name) {
            continue;
        }
        of_pool = true;
        if any_matches(selectors, &service.labels) {
            selected.push(i);
            names.push(name.clone());
        }
    }
    let why = selected.is_empty().then(|| {
        if of_pool {
            format!(
                "no {kind} of pool {} selects the Service (serviceSelectors)",
                pool.name
            )
        } else {
            format!("no {kind} announces pool {}", pool.name)
        }
    });
    (selected, names, why)
}

fn layer2(
    service: &ServiceInput,
    endpoints: &Endpoints,
    pool: &Pool,
    context: &Context<'_>,
) -> L2Outcome {
    let config = context.config;
    let (ads, names, why) = selecting(
        "L2Advertisement",
        config
            .l2_advertisements
            .iter()
            .map(|ad| (&ad.name, &ad.pools, &ad.service_selectors)),
        pool,
        service,
    );
    let mut outcome = L2Outcome {
        advertisements: names,
        why,
        ..L2Outcome::default()
    };
    if ads.is_empty() {
        return outcome;
    }
    if !endpoints.serving {
        outcome.why = Some("no ready or serving endpoint".to_string());
        return outcome;
    }
    if service.shared
        && let Some(&with_selectors) = ads
            .iter()
            .find(|&&i| !config.l2_advertisements[i].service_selectors.is_empty())
    {
        outcome.why = Some(format!(
            "allow-shared-ip cannot be used with the serviceSelectors of L2Advertisement {} (MetalLB refuses it too)",
            config.l2_advertisements[with_selectors].name
        ));
        return outcome;
    }

    let resolved = context.resolved;
    let mut left_out = LeftOut::default();
    let mut candidates = Vec::new();
    for (name, node) in context.nodes {
        if context.live.is_some_and(|live| !live.contains(&**name)) {
            left_out.not_live += 1;
        } else if node.network_unavailable {
            left_out.network_unavailable += 1;
        } else if node.excluded && !context.ignore_exclude_label {
            left_out.excluded += 1;
        } else if !ads.iter().any(|&i| resolved.l2_nodes[i].contains(name)) {
            left_out.not_selected += 1;
        } else if service.local && !endpoints.nodes.contains(name) {
            left_out.no_local_endpoint += 1;
        } else {
            let score = ads
                .iter()
                .filter_map(|&i| resolved.l2_scores[i].get(name))
                .sum();
            candidates.push(Candidate {
                node: name.clone(),
                score,
            });
        }
    }
    if candidates.is_empty() {
        outcome.why = Some(left_out.explain("L2", context.nodes.len()));
        return outcome;
    }
    // MetalLB keys the election on the first address, whatever the family, so a
    // dual-stack Service has one owner for both.
    let first = metallb_ip_string(service.ips[0]);
    candidates.sort_by_cached_key(|candidate| {
        (Reverse(candidate.score), key_of(&candidate.node, &first))
    });
    let owner = &candidates[0].node;
    let mut interfaces = Interfaces::Only(BTreeSet::new());
    for &i in ads
        .iter()
        .filter(|&&i| resolved.l2_nodes[i].contains(owner))
    {
        let ad = &config.l2_advertisements[i];
        interfaces = interfaces.union(&if ad.interfaces.is_empty() {
            Interfaces::All
        } else {
            Interfaces::Only(ad.interfaces.iter().cloned().collect())
        });
    }
    outcome.ranked = candidates;
    outcome.interfaces = interfaces;
    outcome
}

fn bgp(
    service: &ServiceInput,
    endpoints: &Endpoints,
    pool: &Pool,
    context: &Context<'_>,
) -> BgpOutcome {
    let config = context.config;
    let resolved = context.resolved;
    let (ads, names, why) = selecting(
        "BGPAdvertisement",
        config
            .bgp_advertisements
            .iter()
            .map(|ad| (&ad.name, &ad.pools, &ad.service_selectors)),
        pool,
        service,
    );
    let mut outcome = BgpOutcome {
        advertisements: names,
        why,
        ..BgpOutcome::default()
    };
    if ads.is_empty() {
        return outcome;
    }
    for &i in &ads {
        let ad = &config.bgp_advertisements[i];
        for &ip in &service.ips {
            outcome.announcements.push(BgpAnnouncement {
                advertisement: ad.name.clone(),
                ip,
                route: route(ad, ip),
                nodes: Vec::new(),
            });
        }
    }
    let per_ad = service.ips.len();
    let mut left_out = LeftOut::default();
    let mut announcing = 0;
    for (name, node) in context.nodes {
        let mine: Vec<usize> = (0..ads.len())
            .filter(|&position| resolved.bgp_nodes[ads[position]].contains(name))
            .collect();
        if mine.is_empty() {
            left_out.not_selected += 1;
            continue;
        }
        let conflict = mine.iter().enumerate().any(|(n, &a)| {
            mine[n + 1..]
                .iter()
                .any(|&b| !compatible_local_pref(ads[a], ads[b], pool, config, resolved))
        });
        if conflict {
            left_out.conflicting += 1;
        } else if node.network_unavailable {
            left_out.network_unavailable += 1;
        } else if node.excluded && !context.ignore_exclude_label {
            left_out.excluded += 1;
        } else if service.local && !endpoints.nodes.contains(name) {
            left_out.no_local_endpoint += 1;
        } else if !endpoints.serving {
            left_out.no_endpoint += 1;
        } else {
            announcing += 1;
            let sessions: Vec<usize> = (0..config.peers.len())
                .filter(|&p| resolved.peer_nodes[p].contains(name))
                .collect();
            for position in mine {
                let ad = &config.bgp_advertisements[ads[position]];
                let peers: Vec<Arc<str>> = sessions
                    .iter()
                    .filter(|&&p| ad.peers.is_empty() || ad.peers.contains(&config.peers[p].name))
                    .map(|&p| resolved.peer_names[p].clone())
                    .collect();
                for announcement in
                    &mut outcome.announcements[position * per_ad..(position + 1) * per_ad]
                {
                    announcement.nodes.push((name.clone(), peers.clone()));
                }
            }
        }
    }
    if announcing == 0 {
        outcome.why = Some(left_out.explain("BGP", context.nodes.len()));
    }
    outcome
}

/// One advertisement's route for `ip`.
fn route(ad: &BgpAdvertisement, ip: IpAddr) -> Route {
    let length = match ip {
        IpAddr::V4(_) => ad.aggregation_length,
        IpAddr::V6(_) => ad.aggregation_length_v6,
    };
    let prefix = IpNet::new(ip, length)
        .unwrap_or_else(|_| IpNet::from(ip))
        .trunc();
    let mut communities: Vec<Community> = ad.communities.clone();
    // MetalLB keeps a set and sorts it comparing a standard community as the large
    // community `value:0:0`.
    communities.sort_by_key(|community| {
        let key = match *community {
            Community::Standard(value) => (value, 0, 0),
            Community::Large(global, local1, local2) => (global, local1, local2),
        };
        (key, *community)
    });
    communities.dedup();
    Route {
        prefix,
        communities,
        local_pref: ad.local_pref,
    }
}

/// Whether two advertisements of one Service may both apply on a node: MetalLB
/// withdraws the Service on that node otherwise. They are compatible with the same
/// LOCAL_PREF, or when they cannot produce the same route to the same peer from the
/// same node (different aggregation lengths for every family of the pool, disjoint
/// peers, disjoint nodes).
fn compatible_local_pref(
    a: usize,
    b: usize,
    pool: &Pool,
    config: &LbConfig,
    resolved: &Resolved,
) -> bool {
    let (first, second) = (&config.bgp_advertisements[a], &config.bgp_advertisements[b]);
    // MetalLB's LOCAL_PREF 0 means unset.
    if first.local_pref.unwrap_or(0) == second.local_pref.unwrap_or(0) {
        return true;
    }
    let has_v4 = pool.ranges.iter().any(|range| range.start.is_ipv4());
    let has_v6 = pool.ranges.iter().any(|range| range.start.is_ipv6());
    let v4_differs = first.aggregation_length != second.aggregation_length;
    let v6_differs = first.aggregation_length_v6 != second.aggregation_length_v6;
    // Different for every family the pool holds (a pool of neither is compatible).
    if (!has_v4 || v4_differs) && (!has_v6 || v6_differs) {
        return true;
    }
    if !first.peers.is_empty()
        && !second.peers.is_empty()
        && !first.peers.iter().any(|peer| second.peers.contains(peer))
    {
        return true;
    }
    resolved.bgp_nodes[a].is_disjoint(&resolved.bgp_nodes[b])
}

/// This node's part of a Service's decision: the addresses it owns with their
/// interfaces, and the routes it sends per peer.
pub(super) fn local_part(decision: &ServiceDecision, node: &str) -> LocalPart {
    let l2 = if decision.l2.owner() == Some(node) {
        decision
            .ips
            .iter()
            .map(|&ip| (ip, decision.l2.interfaces.clone()))
            .collect()
    } else {
        Vec::new()
    };
    let mut bgp = Vec::new();
    for announcement in &decision.bgp.announcements {
        if let Some((_, peers)) = announcement
            .nodes
            .iter()
            .find(|(announcer, _)| &**announcer == node)
        {
            for peer in peers {
                bgp.push((peer.clone(), announcement.route.clone()));
            }
        }
    }
    // One route may come from two addresses of the same prefix or two advertisements
    // alike; the Service contributes it once.
    bgp.sort();
    bgp.dedup();
    LocalPart { l2, bgp }
}

/// One Service's share of a node's announcements.
#[derive(Debug, Default)]
pub(super) struct LocalPart {
    /// The addresses the node owns, with their interfaces.
    pub(super) l2: Vec<(IpAddr, Interfaces)>,
    /// The routes it sends, per peer, sorted and without duplicates.
    pub(super) bgp: Vec<(Arc<str>, Route)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_text_is_go_s() {
        for (ip, text) in [
            ("192.168.1.240", "192.168.1.240"),
            ("fd00:10::5", "fd00:10::5"),
            ("::ffff:10.0.0.1", "10.0.0.1"),
            ("2001:db8:0:1:0:0:0:1", "2001:db8:0:1::1"),
            ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
            ("2001:db8:1:1:1:1:0:1", "2001:db8:1:1:1:1:0:1"),
        ] {
            assert_eq!(metallb_ip_string(ip.parse().unwrap()), text, "{ip}");
        }
    }

    /// `printf 'node-a#192.168.1.240' | sha256sum` → 0905ce28e61d7edb…
    #[test]
    fn the_key_is_sha256_of_node_hash_ip() {
        let key = election_key("node-a", "192.168.1.240".parse().unwrap());
        assert_eq!(
            key[..8],
            [0x09, 0x05, 0xce, 0x28, 0xe6, 0x1d, 0x7e, 0xdb],
            "{key:02x?}"
        );
        let key = election_key("node-c", "fd00:10::5".parse().unwrap());
        assert_eq!(key[..4], [0x4d, 0x53, 0x18, 0x06], "{key:02x?}");
    }
}
