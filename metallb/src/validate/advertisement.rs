//! `L2Advertisement` and `BGPAdvertisement`: the pools they select (resolved against
//! the pools kept), their selectors, and the BGP-only rules (aggregation lengths,
//! communities, conflicting `localPref`s). Last in `validate` because they name pools
//! and peers.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::community::{Aliases, CommunityError, parse_community, push_once};
use super::pool::shortest_prefix;
use super::report::{Report, Subject, duplicate_names};
use super::selectors::{one_selector, selectors};
use super::{DEFAULT_AGGREGATION_LENGTH, DEFAULT_AGGREGATION_LENGTH_V6, LeftOut};
use crate::config::{BgpAdvertisement, L2Advertisement, LbConfig, WeightedSelector};
use crate::crd::{self, BGPAdvertisement};
use crate::selector::Selector;

/// The pools an advertisement selects: by name and by label; with neither, every
/// valid pool (MetalLB's rule). Unknown and left-out names are reported and skipped.
fn resolve_pools(
    subject: &Subject,
    names: &[String],
    pool_selectors: &[Selector],
    config: &LbConfig,
    left_out: &LeftOut,
    report: &mut Report,
) -> Vec<String> {
    if names.is_empty() && pool_selectors.is_empty() {
        return config.pools.keys().cloned().collect();
    }
    let mut pools = BTreeSet::new();
    for (index, name) in names.iter().enumerate() {
        let field = format!("spec.ipAddressPools[{index}]");
        if config.pools.contains_key(name) {
            pools.insert(name.clone());
        } else if left_out.pools.contains(name) {
            subject.problem(
                report,
                field,
                format!("IPAddressPool {name:?} is invalid and left out (see its own problem); until it is fixed this advertisement does not announce it"),
            );
        } else {
            subject.problem(
                report,
                field,
                format!("no IPAddressPool named {name:?}; the advertisement applies to its other pools: fix the name or create the pool"),
            );
        }
    }
    for pool in config.pools.values() {
        if pool_selectors
            .iter()
            .any(|selector| selector.matches(&pool.labels))
        {
            pools.insert(pool.name.clone());
        }
    }
    pools.into_iter().collect()
}

/// The selectors both kinds of advertisement carry: pools, nodes and Services.
fn common_selectors(
    subject: &Subject,
    [pools, nodes, services]: [&[LabelSelector]; 3],
    report: &mut Report,
) -> [Option<Vec<Selector>>; 3] {
    [
        ("spec.ipAddressPoolSelectors", pools),
        ("spec.nodeSelectors", nodes),
        ("spec.serviceSelectors", services),
    ]
    .map(|(field, list)| selectors(subject, field, list, report))
}

pub(super) fn l2_advertisement(
    subject: &Subject,
    object: &crd::L2Advertisement,
    config: &LbConfig,
    left_out: &LeftOut,
    report: &mut Report,
) -> Option<L2Advertisement> {
    let spec = &object.spec;
    let mut ok = !duplicate_names(
        subject,
        "spec.ipAddressPools",
        &spec.ip_address_pools,
        "pool",
        report,
    );
    let [pool_selectors, node_selectors, service_selectors] = common_selectors(
        subject,
        [
            &spec.ip_address_pool_selectors,
            &spec.node_selectors,
            &spec.service_selectors,
        ],
        report,
    );
    let mut preferred_nodes = Vec::with_capacity(spec.preferred_node_selectors.len());
    for (index, preferred) in spec.preferred_node_selectors.iter().enumerate() {
        let field = format!("spec.preferredNodeSelectors[{index}]");
        if !(1..=100).contains(&preferred.weight) {
            subject.problem(
                report,
                format!("{field}.weight"),
                format!("{} is out of range; the advertisement is left out: give a weight from 1 to 100", preferred.weight),
            );
            ok = false;
        }
        match one_selector(&preferred.preference) {
            Ok(selector) => preferred_nodes.push(WeightedSelector {
                weight: preferred.weight.clamp(1, 100) as u32,
                selector,
            }),
            Err(message) => {
                subject.problem(
                    report,
                    format!("{field}.preference"),
                    format!("{message}; the advertisement is left out"),
                );
                ok = false;
            }
        }
    }
    for (index, interface) in spec.interfaces.iter().enumerate() {
        if interface.is_empty() {
            subject.problem(
                report,
                format!("spec.interfaces[{index}]"),
                "an empty interface name; the advertisement is left out: remove it or name an interface",
            );
            ok = false;
        }
    }
    let (Some(pool_selectors), Some(node_selectors), Some(service_selectors), true) =
        (pool_selectors, node_selectors, service_selectors, ok)
    else {
        return None;
    };
    let pools = resolve_pools(
        subject,
        &spec.ip_address_pools,
        &pool_selectors,
        config,
        left_out,
        report,
    );
    Some(L2Advertisement {
        name: subject.name.clone(),
        pools,
        node_selectors,
        interfaces: spec.interfaces.clone(),
        service_selectors,
        preferred_nodes,
    })
}

pub(super) fn bgp_advertisement(
    subject: &Subject,
    object: &BGPAdvertisement,
    config: &LbConfig,
    left_out: &LeftOut,
    aliases: &Aliases,
    report: &mut Report,
) -> Option<BgpAdvertisement> {
    let spec = &object.spec;
    let mut ok = true;
    for (field, names, what) in [
        ("spec.ipAddressPools", &spec.ip_address_pools, "pool"),
        ("spec.communities", &spec.communities, "community"),
        ("spec.peers", &spec.peers, "peer"),
    ] {
        if duplicate_names(subject, field, names, what, report) {
            ok = false;
        }
    }
    let [pool_selectors, node_selectors, service_selectors] = common_selectors(
        subject,
        [
            &spec.ip_address_pool_selectors,
            &spec.node_selectors,
            &spec.service_selectors,
        ],
        report,
    );

    let aggregation_length = match spec.aggregation_length {
        None => Some(DEFAULT_AGGREGATION_LENGTH),
        Some(length @ 1..=32) => Some(length as u8),
        Some(length) => {
            subject.problem(
                report,
                "spec.aggregationLength",
                format!("{length} is not an IPv4 prefix length; the advertisement is left out: give 1 to 32"),
            );
            None
        }
    };
    let aggregation_length_v6 = match spec.aggregation_length_v6 {
        None => Some(DEFAULT_AGGREGATION_LENGTH_V6),
        Some(length @ 0..=128) => Some(length as u8),
        Some(length) => {
            subject.problem(
                report,
                "spec.aggregationLengthV6",
                format!("{length} is not an IPv6 prefix length; the advertisement is left out: give 0 to 128"),
            );
            None
        }
    };
    if !spec.service_selectors.is_empty() {
        for (field, value, default) in [
            ("spec.aggregationLength", spec.aggregation_length, 32),
            ("spec.aggregationLengthV6", spec.aggregation_length_v6, 128),
        ] {
            if value.is_some_and(|value| value != default) {
                subject.problem(
                    report,
                    field,
                    format!("serviceSelectors can only be used with the default aggregation length ({default}); the advertisement is left out: remove one of them or split the advertisement"),
                );
                ok = false;
            }
        }
    }

    let mut communities = Vec::with_capacity(spec.communities.len());
    for (index, text) in spec.communities.iter().enumerate() {
        let field = format!("spec.communities[{index}]");
        match aliases.get(text) {
            Some(Ok(community)) => push_once(&mut communities, *community),
            Some(Err(place)) => {
                subject.problem(
                    report,
                    field,
                    format!("community alias {text:?} is invalid and left out ({place}, see its problem), so this advertisement is left out too: fix the alias"),
                );
                ok = false;
            }
            None => match parse_community(text) {
                Ok(community) => push_once(&mut communities, community),
                Err(CommunityError::Value(message)) => {
                    subject.problem(
                        report,
                        field,
                        format!("{message}; the advertisement is left out"),
                    );
                    ok = false;
                }
                Err(CommunityError::NotACommunity) => {
                    subject.problem(
                        report,
                        field,
                        format!("community alias {text:?} is not defined by any Community object; the advertisement is left out: define the alias or write the value (<0-65535>:<0-65535> or large:<u32>:<u32>:<u32>)"),
                    );
                    ok = false;
                }
            },
        }
    }

    let (
        Some(pool_selectors),
        Some(node_selectors),
        Some(service_selectors),
        Some(aggregation_length),
        Some(aggregation_length_v6),
        true,
    ) = (
        pool_selectors,
        node_selectors,
        service_selectors,
        aggregation_length,
        aggregation_length_v6,
        ok,
    )
    else {
        return None;
    };

    for (index, name) in spec.peers.iter().enumerate() {
        if config.peers.iter().any(|peer| peer.name == *name) {
            continue;
        }
        let message = if left_out.peers.contains(name) {
            format!(
                "BGPPeer {name:?} is invalid and left out (see its own problem): nothing is announced to it until it is fixed"
            )
        } else {
            format!(
                "no BGPPeer named {name:?}: nothing is announced through this name; fix the name or create the peer"
            )
        };
        subject.problem(report, format!("spec.peers[{index}]"), message);
    }

    let mut pools = resolve_pools(
        subject,
        &spec.ip_address_pools,
        &pool_selectors,
        config,
        left_out,
        report,
    );
    // MetalLB refuses an aggregation length shorter than a pool's own prefix (for a
    // range: than every CIDR it summarises to). Only that pool is dropped here.
    pools.retain(|name| {
        let Some(pool) = config.pools.get(name) else {
            return false;
        };
        for range in &pool.ranges {
            let (length, field) = if range.start.is_ipv4() {
                (aggregation_length, "spec.aggregationLength")
            } else {
                (aggregation_length_v6, "spec.aggregationLengthV6")
            };
            let prefix = shortest_prefix(range);
            if length < prefix {
                subject.problem(
                    report,
                    field,
                    format!(
                        "{length} is shorter than the /{prefix} of IPAddressPool {name:?} ({range}); this advertisement does not announce that pool: give at least {prefix}"
                    ),
                );
                return false;
            }
        }
        true
    });

    // MetalLB refuses two advertisements that would send the same prefix to the same
    // peer from the same node with different LOCAL_PREFs (a speaker can send only one).
    // Nodes are not known here, so only a sure overlap counts: either advertisement
    // for all nodes, or the same node selectors. The first by name keeps the pool.
    if service_selectors.is_empty() {
        pools.retain(|name| {
            let Some(pool) = config.pools.get(name) else {
                return false;
            };
            let has_v4 = pool.ranges.iter().any(|range| range.start.is_ipv4());
            let has_v6 = pool.ranges.iter().any(|range| !range.start.is_ipv4());
            let conflict = config.bgp_advertisements.iter().find(|earlier| {
                let v4_differs = earlier.aggregation_length != aggregation_length;
                let v6_differs = earlier.aggregation_length_v6 != aggregation_length_v6;
                let other_prefixes = match (has_v4, has_v6) {
                    (true, false) => v4_differs,
                    (false, true) => v6_differs,
                    _ => v4_differs && v6_differs,
                };
                let same_peers = earlier.peers.is_empty()
                    || spec.peers.is_empty()
                    || earlier.peers.iter().any(|peer| spec.peers.contains(peer));
                let same_nodes = earlier.node_selectors.is_empty()
                    || node_selectors.is_empty()
                    || sorted(&earlier.node_selectors) == sorted(&node_selectors);
                earlier.service_selectors.is_empty()
                    && earlier.pools.contains(name)
                    && earlier.local_pref.unwrap_or(0) != spec.local_pref.unwrap_or(0)
                    && !other_prefixes
                    && same_peers
                    && same_nodes
            });
            if let Some(earlier) = conflict {
                subject.problem(
                    report,
                    "spec.localPref",
                    format!(
                        "BGPAdvertisement {:?} comes first by name and announces IPAddressPool {name:?} with the same prefix lengths to the same peers from the same nodes with localPref {}; this advertisement does not announce that pool: give the same localPref, or different peers or nodes",
                        earlier.name,
                        earlier.local_pref.unwrap_or(0)
                    ),
                );
                return false;
            }
            true
        });
    }

    Some(BgpAdvertisement {
        name: subject.name.clone(),
        pools,
        aggregation_length,
        aggregation_length_v6,
        local_pref: spec.local_pref,
        communities,
        node_selectors,
        peers: spec.peers.clone(),
        service_selectors,
    })
}

fn sorted(selectors: &[Selector]) -> Vec<Selector> {
    let mut sorted = selectors.to_vec();
    sorted.sort();
    sorted
}
