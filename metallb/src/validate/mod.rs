//! From the objects as read to one valid [`LbConfig`]: each invalid object is left
//! out and reported with the field at fault; the rest applies.
//!
//! The rules are MetalLB's (its `internal/config` parser, the CRD schemas and the
//! webhooks), applied per object instead of to the whole configuration: MetalLB
//! refuses a whole configuration for one bad object, ipvs-proxy leaves that object out
//! and keeps the others, so one typo never withdraws every address.
//!
//! Order: the legacy ConfigMap is converted first ([`crate::legacy`]) and its objects
//! are merged after the custom resources; every kind is then taken in name order (a
//! custom resource before a legacy object of the same name). Where two objects clash
//! (same name, overlapping pools, same BGP session) the first in that order is kept
//! and the other is reported naming both.
//!
//! Dependencies, decided here:
//! - An advertisement naming a pool that does not exist or was left out keeps its
//!   other pools and reports the name (MetalLB silently ignores unknown names; a
//!   typo deserves a message, but not losing the valid pools' announcements).
//! - A `BGPAdvertisement` whose aggregation length is shorter than a pool's own prefix
//!   (MetalLB refuses the whole configuration) drops that pool only, reported.
//! - A `BGPAdvertisement` naming an unknown or invalid peer keeps the name (it matches
//!   no session, so it never widens to "all peers") and reports it.
//! - A `BGPAdvertisement` using an unknown or invalid community alias is left out: an
//!   announcement without its community (say `no-export`) would change routing policy.
//! - A `BGPPeer` naming a `BFDProfile` that does not exist or was left out is left
//!   out: a session without the BFD the operator asked for fails over far slower.
//! - Two `BGPAdvertisement`s that would send the same prefix to the same peer from
//!   the same nodes with different `localPref`s (MetalLB refuses the configuration):
//!   the first by name keeps the pool, the other drops it, reported. Nodes are not
//!   known here, so only a sure overlap is refused (either for all nodes, or the
//!   same node selectors).
//! - A duplicated `Community` alias: the first (by object name) is kept.
//!
//! A few checks are stricter than MetalLB, each because MetalLB's behaviour is a trap:
//! a hold time between 0 and 1 s (MetalLB rounds it to 0, i.e. no keepalives at all),
//! negative timers, and an IPv6 router ID (a BGP identifier is four bytes).
//!
//! One module per concern: `report` collects the problems and names the object they
//! are about, `selectors` checks label selectors as MetalLB does, and one module per
//! kind (`bfd`, `community`, `pool`, `peer`, `advertisement`) holds that kind's rules,
//! in the order `validate` takes them (an advertisement depends on pools and peers).

mod advertisement;
mod bfd;
mod community;
mod peer;
mod pool;
mod report;
mod selectors;

use std::collections::{BTreeMap, BTreeSet};

use crate::config::LbConfig;
use crate::error::ConfigProblem;
use crate::objects::MetalLbObjects;
use crate::selector::Selector;

use advertisement::{bgp_advertisement, l2_advertisement};
use bfd::bfd_profile;
use community::community_aliases;
use peer::peer;
use pool::pool;
pub use pool::{parse_pool_address, shortest_prefix};
use report::{Report, ordered};

/// A field ipvs-proxy accepts but does not act on yet (listed in the README): the
/// agent warns once per object and field.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnsupportedField {
    /// The object's kind.
    pub kind: String,
    /// Its namespace/name.
    pub object: String,
    /// The field path, e.g. `spec.vrf`.
    pub field: String,
    /// What ipvs-proxy does instead, for the warning.
    pub reason: String,
}

/// The outcome of [`validate`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Validated {
    /// The valid part.
    pub config: LbConfig,
    /// The objects (or fields) left out, and why.
    pub problems: Vec<ConfigProblem>,
    /// Fields accepted but not acted on.
    pub unsupported: Vec<UnsupportedField>,
}

/// The BGP port when `peerPort` is unset.
pub const DEFAULT_BGP_PORT: u16 = 179;
/// BFD intervals when unset (ms).
pub const DEFAULT_BFD_INTERVAL_MS: u32 = 300;
/// BFD detection multiplier when unset.
pub const DEFAULT_BFD_MULTIPLIER: u8 = 3;
/// IPv4 aggregation length when unset.
pub const DEFAULT_AGGREGATION_LENGTH: u8 = 32;
/// IPv6 aggregation length when unset.
pub const DEFAULT_AGGREGATION_LENGTH_V6: u8 = 128;

/// Validates every object (the legacy ConfigMap converted first).
pub fn validate(objects: &MetalLbObjects) -> Validated {
    let mut report = Report::default();
    let mut legacy_objects = MetalLbObjects::default();
    let mut legacy_origin = String::new();
    if let Some(config_map) = &objects.legacy {
        let namespace = config_map
            .metadata
            .namespace
            .clone()
            .filter(|namespace| !namespace.is_empty())
            .unwrap_or_else(|| crate::DEFAULT_NAMESPACE.to_string());
        let name = config_map.metadata.name.clone().unwrap_or_default();
        legacy_origin = format!("{namespace}/{name}");
        let problem = |message: String| ConfigProblem {
            kind: "ConfigMap".to_string(),
            namespace: namespace.clone(),
            name: name.clone(),
            field: format!("data.{}", crate::legacy::CONFIG_KEY),
            message,
        };
        match crate::legacy::convert_config_map(config_map, &namespace) {
            Ok(conversion) => {
                for note in conversion.notes {
                    report.problems.push(problem(note));
                }
                legacy_objects = conversion.objects;
            }
            Err(error) => report.problems.push(problem(format!(
                "{error}; none of the legacy configuration applies: fix the YAML (MetalLB ≤ 0.12 format) or convert it to custom resources"
            ))),
        }
    }
    let legacy = Some(legacy_origin.as_str());

    let bfd_objects = ordered(
        "BFDProfile",
        &objects.bfd_profiles,
        &legacy_objects.bfd_profiles,
        legacy,
        &mut report,
    );
    let community_objects = ordered(
        "Community",
        &objects.communities,
        &legacy_objects.communities,
        legacy,
        &mut report,
    );
    let pool_objects = ordered(
        "IPAddressPool",
        &objects.pools,
        &legacy_objects.pools,
        legacy,
        &mut report,
    );
    let peer_objects = ordered(
        "BGPPeer",
        &objects.peers,
        &legacy_objects.peers,
        legacy,
        &mut report,
    );
    let l2_objects = ordered(
        "L2Advertisement",
        &objects.l2_advertisements,
        &legacy_objects.l2_advertisements,
        legacy,
        &mut report,
    );
    let bgp_objects = ordered(
        "BGPAdvertisement",
        &objects.bgp_advertisements,
        &legacy_objects.bgp_advertisements,
        legacy,
        &mut report,
    );

    let mut config = LbConfig::default();
    let mut left_out = LeftOut::default();

    for (subject, object) in &bfd_objects {
        match bfd_profile(subject, object, &mut report) {
            Some(profile) => {
                config.bfd_profiles.insert(profile.name.clone(), profile);
            }
            None => {
                left_out.bfd_profiles.insert(subject.name.clone());
            }
        }
    }

    let aliases = community_aliases(&community_objects, &mut report);

    for (subject, object) in &pool_objects {
        match pool(subject, object, &config.pools, &mut report) {
            Some(pool) => {
                config.pools.insert(pool.name.clone(), pool);
            }
            None => {
                left_out.pools.insert(subject.name.clone());
            }
        }
    }

    // Sessions already taken: (address or interface, VRF, node selectors) → peer name.
    let mut sessions: BTreeMap<(String, String, Vec<Selector>), String> = BTreeMap::new();
    for (subject, object) in &peer_objects {
        match peer(
            subject,
            object,
            &config,
            &left_out,
            &mut sessions,
            &mut report,
        ) {
            Some(peer) => config.peers.push(peer),
            None => {
                left_out.peers.insert(subject.name.clone());
            }
        }
    }

    for (subject, object) in &l2_objects {
        if let Some(advertisement) =
            l2_advertisement(subject, object, &config, &left_out, &mut report)
        {
            config.l2_advertisements.push(advertisement);
        }
    }
    for (subject, object) in &bgp_objects {
        if let Some(advertisement) =
            bgp_advertisement(subject, object, &config, &left_out, &aliases, &mut report)
        {
            config.bgp_advertisements.push(advertisement);
        }
    }

    Validated {
        config,
        problems: report.problems,
        unsupported: report.unsupported,
    }
}

/// Names of the objects left out, so that objects naming them can say why.
#[derive(Default)]
struct LeftOut {
    pools: BTreeSet<String>,
    peers: BTreeSet<String>,
    bfd_profiles: BTreeSet<String>,
}
