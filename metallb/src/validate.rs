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

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::Resource;

use crate::config::{
    BfdProfile, BgpAdvertisement, Community, IpRange, L2Advertisement, LbConfig, Peer, PeerAsn,
    PeerPassword, Pool, ServiceAllocation, WeightedSelector,
};
use crate::crd::{
    self, BFDProfile, BGPAdvertisement, BGPPeer, Community as CommunityObject, IPAddressPool,
};
use crate::duration;
use crate::error::ConfigProblem;
use crate::objects::MetalLbObjects;
use crate::selector::Selector;

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

#[derive(Default)]
struct Report {
    problems: Vec<ConfigProblem>,
    unsupported: Vec<UnsupportedField>,
}

/// Names of the objects left out, so that objects naming them can say why.
#[derive(Default)]
struct LeftOut {
    pools: BTreeSet<String>,
    peers: BTreeSet<String>,
    bfd_profiles: BTreeSet<String>,
}

/// The object a problem is about.
#[derive(Debug, Clone)]
struct Subject {
    kind: &'static str,
    namespace: String,
    name: String,
    /// `namespace/name` of the legacy ConfigMap it was converted from.
    legacy: Option<String>,
}

impl Subject {
    fn problem(&self, report: &mut Report, field: impl Into<String>, message: impl Into<String>) {
        let mut message = message.into();
        if let Some(config_map) = &self.legacy {
            message.push_str(&format!(
                " (converted from the legacy ConfigMap {config_map})"
            ));
        }
        report.problems.push(ConfigProblem {
            kind: self.kind.to_string(),
            // The legacy ConfigMap's parts have no namespace of their own.
            namespace: if self.legacy.is_some() {
                String::new()
            } else {
                self.namespace.clone()
            },
            name: self.name.clone(),
            field: field.into(),
            message,
        });
    }

    fn unsupported(&self, report: &mut Report, field: &str, reason: &str) {
        let object = if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        };
        report.unsupported.push(UnsupportedField {
            kind: self.kind.to_string(),
            object,
            field: field.to_string(),
            reason: reason.to_string(),
        });
    }

    fn describe(&self) -> String {
        match &self.legacy {
            Some(config_map) => format!(
                "{} {} (legacy ConfigMap {config_map})",
                self.kind, self.name
            ),
            None if self.namespace.is_empty() => format!("{} {}", self.kind, self.name),
            None => format!("{} {}/{}", self.kind, self.namespace, self.name),
        }
    }
}

/// The objects of one kind in the order they are validated: by name, custom
/// resources before legacy ones of the same name; nameless and same-named objects
/// after the first are reported and dropped.
fn ordered<'a, T: Resource>(
    kind: &'static str,
    resources: &'a [T],
    legacy_objects: &'a [T],
    legacy: Option<&str>,
    report: &mut Report,
) -> Vec<(Subject, &'a T)> {
    let mut all: Vec<(Subject, &'a T)> = Vec::new();
    let sources = [(resources, None), (legacy_objects, legacy)];
    for (objects, origin) in sources {
        for object in objects {
            let meta = object.meta();
            let subject = Subject {
                kind,
                namespace: meta.namespace.clone().unwrap_or_default(),
                name: meta.name.clone().unwrap_or_default(),
                legacy: origin.map(str::to_string),
            };
            if subject.name.is_empty() {
                subject.problem(
                    report,
                    "metadata.name",
                    "the object has no name and is left out: give it a name",
                );
                continue;
            }
            all.push((subject, object));
        }
    }
    // Stable: a custom resource stays before a legacy object of the same name.
    all.sort_by(|(a, _), (b, _)| a.name.cmp(&b.name));
    let mut kept: Vec<(Subject, &'a T)> = Vec::with_capacity(all.len());
    for (subject, object) in all {
        if let Some((first, _)) = kept.last().filter(|(last, _)| last.name == subject.name) {
            let message = format!(
                "{} has the same name and comes first; this one is left out: rename one of them",
                first.describe()
            );
            subject.problem(report, "metadata.name", message);
            continue;
        }
        kept.push((subject, object));
    }
    kept
}

// ---------------------------------------------------------------------------------
// Label selectors

/// Parses a list of selectors the way MetalLB checks them: each must parse, label keys
/// and values must be well-formed, and no selector, expression or value may be
/// repeated. `None` (with problems reported) when any is wrong.
fn selectors(
    subject: &Subject,
    field: &str,
    list: &[LabelSelector],
    report: &mut Report,
) -> Option<Vec<Selector>> {
    let mut parsed: Vec<Selector> = Vec::with_capacity(list.len());
    let mut ok = true;
    for (index, selector) in list.iter().enumerate() {
        let path = format!("{field}[{index}]");
        match one_selector(selector) {
            Ok(selector) => {
                if let Some(first) = parsed.iter().position(|seen| *seen == selector) {
                    subject.problem(
                        report,
                        &path,
                        format!("the same selector as {field}[{first}]: remove one of them"),
                    );
                    ok = false;
                }
                parsed.push(selector);
            }
            Err(message) => {
                subject.problem(report, &path, format!("{message}; the object is left out"));
                ok = false;
            }
        }
    }
    ok.then_some(parsed)
}

/// One selector, checked and with its values sorted (so two selectors differing only
/// in value order compare equal, as MetalLB compares them).
fn one_selector(selector: &LabelSelector) -> Result<Selector, String> {
    let mut parsed = Selector::parse(selector)?;
    parsed.check_syntax()?;
    for (index, requirement) in parsed.requirements.iter_mut().enumerate() {
        if let crate::selector::Operator::In(values) | crate::selector::Operator::NotIn(values) =
            &mut requirement.operator
        {
            values.sort();
            if let Some(pair) = values.windows(2).find(|pair| pair[0] == pair[1]) {
                return Err(format!(
                    "matchExpressions[{index}]: value {:?} is given twice: remove one",
                    pair[0]
                ));
            }
        }
    }
    for (index, requirement) in parsed.requirements.iter().enumerate() {
        if let Some(first) = parsed.requirements[..index]
            .iter()
            .position(|earlier| earlier == requirement)
        {
            return Err(format!(
                "matchExpressions[{index}] repeats matchExpressions[{first}]: remove one"
            ));
        }
    }
    Ok(parsed)
}

fn duplicate_names(
    subject: &Subject,
    field: &str,
    names: &[String],
    what: &str,
    report: &mut Report,
) -> bool {
    let mut found = false;
    for (index, name) in names.iter().enumerate() {
        if let Some(first) = names[..index].iter().position(|earlier| earlier == name) {
            subject.problem(
                report,
                format!("{field}[{index}]"),
                format!(
                    "{what} {name:?} is already listed at {field}[{first}]; the object is left out: remove the repeat"
                ),
            );
            found = true;
        }
    }
    found
}

// ---------------------------------------------------------------------------------
// BFDProfile

fn bfd_profile(subject: &Subject, object: &BFDProfile, report: &mut Report) -> Option<BfdProfile> {
    let spec = &object.spec;
    let mut ok = true;
    let mut check = |field: &str, value: Option<u32>, min: u32, max: u32, unit: &str| {
        if let Some(value) = value
            && !(min..=max).contains(&value)
        {
            subject.problem(
                report,
                format!("spec.{field}"),
                format!(
                    "{value} is out of range: give {min} to {max}{unit}; the profile is left out"
                ),
            );
            ok = false;
        }
    };
    check("receiveInterval", spec.receive_interval, 10, 60_000, " ms");
    check(
        "transmitInterval",
        spec.transmit_interval,
        10,
        60_000,
        " ms",
    );
    check("detectMultiplier", spec.detect_multiplier, 2, 255, "");
    check("echoInterval", spec.echo_interval, 10, 60_000, " ms");
    check("minimumTtl", spec.minimum_ttl, 1, 254, "");
    if !ok {
        return None;
    }
    if spec.echo_mode == Some(true) {
        subject.unsupported(
            report,
            "spec.echoMode",
            "BFD echo mode is not implemented: sessions run in asynchronous mode",
        );
    }
    if spec.echo_interval.is_some() {
        subject.unsupported(
            report,
            "spec.echoInterval",
            "BFD echo mode is not implemented, so the echo interval is not used",
        );
    }
    if spec.minimum_ttl.is_some() {
        subject.unsupported(
            report,
            "spec.minimumTtl",
            "multihop BFD is not implemented: single-hop sessions always use TTL 255",
        );
    }
    let interval = |value: Option<u32>| {
        Duration::from_millis(u64::from(value.unwrap_or(DEFAULT_BFD_INTERVAL_MS)))
    };
    Some(BfdProfile {
        name: subject.name.clone(),
        receive_interval: interval(spec.receive_interval),
        transmit_interval: interval(spec.transmit_interval),
        detect_multiplier: spec
            .detect_multiplier
            .map_or(DEFAULT_BFD_MULTIPLIER, |value| value as u8),
        passive: spec.passive_mode.unwrap_or(false),
        echo_mode: spec.echo_mode.unwrap_or(false),
        minimum_ttl: spec.minimum_ttl.map(|value| value as u8),
    })
}

// ---------------------------------------------------------------------------------
// Communities

/// Why a community string is not a community.
enum CommunityError {
    /// It has the shape of one (`a:b` or `large:a:b:c`) but a bad value.
    Value(String),
    /// It has not: MetalLB then takes it as an alias name.
    NotACommunity,
}

/// MetalLB's community syntax: two `:`-separated 16-bit numbers, or `large:` and
/// three 32-bit numbers; anything with another number of parts is an alias name.
fn parse_community(text: &str) -> Result<Community, CommunityError> {
    let parts: Vec<&str> = text.split(':').collect();
    let number = |part: &str| part.bytes().all(|b| b.is_ascii_digit()) && !part.is_empty();
    match parts.as_slice() {
        [high, low] => match (high.parse::<u16>(), low.parse::<u16>()) {
            (Ok(high), Ok(low)) if number(parts[0]) && number(parts[1]) => {
                Ok(Community::Standard(u32::from(high) << 16 | u32::from(low)))
            }
            _ => Err(CommunityError::Value(format!(
                "{text:?} is not a valid community: each half must be a number from 0 to 65535"
            ))),
        },
        [marker, global, local1, local2] => {
            let parsed: Vec<Option<u32>> = [global, local1, local2]
                .iter()
                .map(|part| number(part).then(|| part.parse::<u32>().ok()).flatten())
                .collect();
            match (*marker, parsed.as_slice()) {
                ("large", [Some(global), Some(local1), Some(local2)]) => {
                    Ok(Community::Large(*global, *local1, *local2))
                }
                ("large", _) => Err(CommunityError::Value(format!(
                    "{text:?} is not a valid large community: each of the three numbers must be from 0 to 4294967295"
                ))),
                _ => Err(CommunityError::Value(format!(
                    "{text:?} is not a valid community: a four-part community must read large:<u32>:<u32>:<u32>"
                ))),
            }
        }
        _ => Err(CommunityError::NotACommunity),
    }
}

/// Alias → its value, or `Err(where it is defined)` for an alias whose definition is
/// invalid (so that an advertisement using it can point there).
type Aliases = BTreeMap<String, Result<Community, String>>;

fn community_aliases(objects: &[(Subject, &CommunityObject)], report: &mut Report) -> Aliases {
    let mut aliases: Aliases = BTreeMap::new();
    let mut defined_in: BTreeMap<String, String> = BTreeMap::new();
    for (subject, object) in objects {
        for (index, alias) in object.spec.communities.iter().enumerate() {
            let field = format!("spec.communities[{index}]");
            if alias.name.is_empty() {
                subject.problem(
                    report,
                    format!("{field}.name"),
                    "the alias has no name and is left out: give it one",
                );
                continue;
            }
            if let Some(first) = defined_in.get(&alias.name) {
                subject.problem(
                    report,
                    format!("{field}.name"),
                    format!(
                        "alias {:?} is already defined by {first}, which is kept; this definition is left out: rename or remove one",
                        alias.name
                    ),
                );
                continue;
            }
            let place = format!("{} {field}", subject.describe());
            defined_in.insert(alias.name.clone(), place.clone());
            let value = match parse_community(&alias.value) {
                Ok(community) => Ok(community),
                Err(CommunityError::Value(message)) => {
                    subject.problem(
                        report,
                        format!("{field}.value"),
                        format!("{message}; alias {:?} is left out", alias.name),
                    );
                    Err(place)
                }
                Err(CommunityError::NotACommunity) => {
                    subject.problem(
                        report,
                        format!("{field}.value"),
                        format!(
                            "{:?} is not a community: write <0-65535>:<0-65535> or large:<u32>:<u32>:<u32>; alias {:?} is left out",
                            alias.value, alias.name
                        ),
                    );
                    Err(place)
                }
            };
            aliases.insert(alias.name.clone(), value);
        }
    }
    aliases
}

// ---------------------------------------------------------------------------------
// IPAddressPool

/// Parses one entry of `spec.addresses` as MetalLB does: a CIDR (host bits are
/// allowed and ignored: `10.0.0.7/24` means `10.0.0.0/24`) or a `start-end` range of
/// one family. A lone address is refused, as MetalLB refuses it.
pub fn parse_pool_address(text: &str) -> Result<IpRange, String> {
    let trimmed = text.trim();
    if !trimmed.contains('-') && !trimmed.contains('/') {
        return Err(if trimmed.parse::<IpAddr>().is_ok() {
            let bits = if trimmed.contains(':') { 128 } else { 32 };
            format!("{text:?} is a single address: write it as {trimmed}/{bits}")
        } else {
            format!("{text:?} is neither a CIDR (10.0.0.0/24) nor a range (10.0.0.10-10.0.0.20)")
        });
    }
    if !trimmed.contains('-') {
        // IpRange's parser takes the CIDR as ipnet reads it; say it in MetalLB's words.
        return trimmed.parse::<IpRange>().map_err(|_| {
            format!("{text:?} is not a valid CIDR (an address, \"/\" and a prefix length within the family)")
        });
    }
    trimmed.parse::<IpRange>()
}

/// The prefix lengths of the CIDRs that exactly cover `range` (MetalLB summarises a
/// `start-end` range into CIDRs): the shortest one is what the aggregation length is
/// checked against.
pub fn shortest_prefix(range: &IpRange) -> u8 {
    let (bits, start, end) = match (range.start, range.end) {
        (IpAddr::V4(start), IpAddr::V4(end)) => (
            32u32,
            u128::from(u32::from(start)),
            u128::from(u32::from(end)),
        ),
        (IpAddr::V6(start), IpAddr::V6(end)) => (128u32, u128::from(start), u128::from(end)),
        _ => return 0,
    };
    let mut shortest = bits as u8;
    let mut current = start;
    loop {
        // The largest aligned block starting at `current` that ends within the range.
        let mut size_log = if current == 0 {
            bits
        } else {
            current.trailing_zeros().min(bits)
        };
        loop {
            let last = if size_log >= 128 {
                u128::MAX
            } else {
                current + ((1u128 << size_log) - 1)
            };
            if last <= end {
                break;
            }
            size_log -= 1;
        }
        shortest = shortest.min((bits - size_log) as u8);
        let last = if size_log >= 128 {
            u128::MAX
        } else {
            current + ((1u128 << size_log) - 1)
        };
        if last >= end {
            return shortest;
        }
        current = last + 1;
    }
}

fn pool(
    subject: &Subject,
    object: &IPAddressPool,
    accepted: &BTreeMap<String, Pool>,
    report: &mut Report,
) -> Option<Pool> {
    let spec = &object.spec;
    let mut ok = true;
    if spec.addresses.is_empty() {
        subject.problem(
            report,
            "spec.addresses",
            "the pool has no addresses and is left out: list CIDRs or start-end ranges",
        );
        return None;
    }
    // By index of spec.addresses; `None` where the entry does not parse.
    let mut parsed: Vec<Option<IpRange>> = Vec::with_capacity(spec.addresses.len());
    for (index, text) in spec.addresses.iter().enumerate() {
        let field = format!("spec.addresses[{index}]");
        match parse_pool_address(text) {
            Ok(range) => {
                if let Some(first) = parsed
                    .iter()
                    .position(|earlier| earlier.is_some_and(|earlier| earlier.overlaps(&range)))
                {
                    subject.problem(
                        report,
                        &field,
                        format!(
                            "{text:?} overlaps spec.addresses[{first}] ({:?}) of the same pool; the pool is left out: make the ranges disjoint",
                            spec.addresses[first]
                        ),
                    );
                    ok = false;
                }
                parsed.push(Some(range));
            }
            Err(message) => {
                subject.problem(report, &field, format!("{message}; the pool is left out"));
                ok = false;
                parsed.push(None);
            }
        }
    }
    let allocation = match &spec.service_allocation {
        None => None,
        Some(allocation) => service_allocation(subject, allocation, report),
    };
    if spec.service_allocation.is_some() && allocation.is_none() {
        ok = false;
    }
    let ranges: Vec<IpRange> = parsed.into_iter().flatten().collect();
    if !ok || ranges.len() != spec.addresses.len() {
        return None;
    }
    // Overlap with a pool kept before this one (name order): this one goes.
    for (index, range) in ranges.iter().enumerate() {
        for other in accepted.values() {
            if let Some(other_index) = other.ranges.iter().position(|r| r.overlaps(range)) {
                subject.problem(
                    report,
                    format!("spec.addresses[{index}]"),
                    format!(
                        "{:?} overlaps {} of IPAddressPool {:?}, which comes first by name and is kept; this pool is left out: make the pools disjoint",
                        spec.addresses[index], other.ranges[other_index], other.name
                    ),
                );
                return None;
            }
        }
    }
    Some(Pool {
        name: subject.name.clone(),
        labels: object.metadata.labels.clone().unwrap_or_default(),
        ranges,
        auto_assign: spec.auto_assign.unwrap_or(true),
        avoid_buggy_ips: spec.avoid_buggy_ips.unwrap_or(false),
        allocation,
    })
}

fn service_allocation(
    subject: &Subject,
    allocation: &crate::crd::ServiceAllocationSpec,
    report: &mut Report,
) -> Option<ServiceAllocation> {
    let mut ok = true;
    for (index, namespace) in allocation.namespaces.iter().enumerate() {
        if namespace.is_empty() {
            subject.problem(
                report,
                format!("spec.serviceAllocation.namespaces[{index}]"),
                "an empty namespace name; the pool is left out: remove it or name a namespace",
            );
            ok = false;
        }
    }
    if duplicate_names(
        subject,
        "spec.serviceAllocation.namespaces",
        &allocation.namespaces,
        "namespace",
        report,
    ) {
        ok = false;
    }
    let namespace_selectors = selectors(
        subject,
        "spec.serviceAllocation.namespaceSelectors",
        &allocation.namespace_selectors,
        report,
    );
    let service_selectors = selectors(
        subject,
        "spec.serviceAllocation.serviceSelectors",
        &allocation.service_selectors,
        report,
    );
    let (Some(namespace_selectors), Some(service_selectors), true) =
        (namespace_selectors, service_selectors, ok)
    else {
        return None;
    };
    Some(ServiceAllocation {
        priority: allocation.priority.unwrap_or(0),
        namespaces: allocation.namespaces.clone(),
        namespace_selectors,
        service_selectors,
    })
}

// ---------------------------------------------------------------------------------
// BGPPeer

/// A `metav1.Duration` field: `Ok(None)` when unset, the problem reported otherwise.
fn timer(
    subject: &Subject,
    field: &str,
    value: &Option<String>,
    report: &mut Report,
) -> Result<Option<Duration>, ()> {
    let Some(text) = value.as_deref() else {
        return Ok(None);
    };
    match duration::parse(text) {
        Ok(parsed) if parsed.negative => {
            subject.problem(
                report,
                field,
                format!("{text:?} is negative; the peer is left out: give a positive duration"),
            );
            Err(())
        }
        Ok(parsed) => Ok(Some(parsed.magnitude)),
        Err(message) => {
            subject.problem(report, field, format!("{message}; the peer is left out"));
            Err(())
        }
    }
}

fn ip_field(
    subject: &Subject,
    field: &str,
    value: Option<&str>,
    what: &str,
    report: &mut Report,
) -> Result<Option<IpAddr>, ()> {
    let Some(text) = value else {
        return Ok(None);
    };
    text.parse::<IpAddr>().map(Some).map_err(|_| {
        subject.problem(
            report,
            field,
            format!("{text:?} is not an IP address; the peer is left out: give the {what} as an IPv4 or IPv6 address"),
        );
    })
}

fn peer(
    subject: &Subject,
    object: &BGPPeer,
    config: &LbConfig,
    left_out: &LeftOut,
    sessions: &mut BTreeMap<(String, String, Vec<Selector>), String>,
    report: &mut Report,
) -> Option<Peer> {
    let spec = &object.spec;
    let mut ok = true;
    let non_empty = |value: &Option<String>| value.clone().filter(|text| !text.is_empty());
    let mut fail = |report: &mut Report, field: &str, message: String| {
        subject.problem(report, field, message);
        ok = false;
    };

    if spec.my_asn == 0 {
        fail(
            report,
            "spec.myASN",
            "myASN is missing (or 0); the peer is left out: give this cluster's AS number".into(),
        );
    }
    let peer_asn = spec.peer_asn.filter(|asn| *asn != 0);
    let dynamic_asn = non_empty(&spec.dynamic_asn);
    let asn = match (peer_asn, dynamic_asn.as_deref()) {
        (Some(_), Some(_)) => {
            fail(
                report,
                "spec.peerASN",
                "both peerASN and dynamicASN are given; the peer is left out: keep only one".into(),
            );
            None
        }
        (None, None) => {
            fail(
                report,
                "spec.peerASN",
                "neither peerASN nor dynamicASN is given; the peer is left out: give the router's AS number, or dynamicASN: internal|external".into(),
            );
            None
        }
        (Some(asn), None) => Some(PeerAsn::Fixed(asn)),
        (None, Some("internal")) => Some(PeerAsn::Internal),
        (None, Some("external")) => Some(PeerAsn::External),
        (None, Some(other)) => {
            fail(
                report,
                "spec.dynamicASN",
                format!("{other:?} is neither \"internal\" nor \"external\"; the peer is left out"),
            );
            None
        }
    };
    let ebgp_multihop = spec.ebgp_multi_hop.unwrap_or(false);
    if ebgp_multihop && peer_asn.is_some() && peer_asn == Some(spec.my_asn) {
        fail(
            report,
            "spec.ebgpMultiHop",
            "ebgpMultiHop is set on an iBGP peer (peerASN equals myASN); the peer is left out: remove ebgpMultiHop".into(),
        );
    }

    let peer_address = non_empty(&spec.peer_address);
    let interface = non_empty(&spec.interface);
    match (&peer_address, &interface) {
        (None, None) => fail(
            report,
            "spec.peerAddress",
            "neither peerAddress nor interface is given; the peer is left out: give the router's address".into(),
        ),
        (Some(_), Some(_)) => fail(
            report,
            "spec.interface",
            "both peerAddress and interface are given; the peer is left out: keep only one".into(),
        ),
        _ => {}
    }
    let address = ip_field(
        subject,
        "spec.peerAddress",
        peer_address.as_deref(),
        "router's address",
        report,
    );
    let source_address = ip_field(
        subject,
        "spec.sourceAddress",
        non_empty(&spec.source_address).as_deref(),
        "source address",
        report,
    );
    let router_id = match non_empty(&spec.router_id) {
        None => Ok(None),
        Some(text) => text.parse::<Ipv4Addr>().map(Some).map_err(|_| {
            let message = if text.parse::<IpAddr>().is_ok() {
                format!("{text:?} is an IPv6 address, but a BGP router ID is four bytes; the peer is left out: give an IPv4 address")
            } else {
                format!("{text:?} is not an IPv4 address; the peer is left out: give the router ID as an IPv4 address")
            };
            subject.problem(report, "spec.routerID", message);
        }),
    };
    let (Ok(address), Ok(source_address), Ok(router_id)) = (address, source_address, router_id)
    else {
        return None;
    };

    // The CRD's bounds; 0 is Go's "unset", which the CRD defaults to 179.
    let port = match spec.peer_port {
        None | Some(0) => DEFAULT_BGP_PORT,
        Some(port) if port > 16384 => {
            fail(
                report,
                "spec.peerPort",
                format!(
                    "{port} is out of range; the peer is left out: give a port from 1 to 16384 (MetalLB's bound)"
                ),
            );
            port
        }
        Some(port) => port,
    };

    let (hold_time, keepalive_time) = {
        let hold = timer(subject, "spec.holdTime", &spec.hold_time, report);
        let keepalive = timer(subject, "spec.keepaliveTime", &spec.keepalive_time, report);
        match (hold, keepalive) {
            (Ok(hold), Ok(keepalive)) => match timers(subject, hold, keepalive, spec, report) {
                Ok(pair) => pair,
                Err(()) => return None,
            },
            _ => return None,
        }
    };
    let connect_time = match timer(subject, "spec.connectTime", &spec.connect_time, report) {
        Err(()) => return None,
        Ok(None) => None,
        Ok(Some(connect)) => {
            let text = spec.connect_time.as_deref().unwrap_or_default();
            if connect.subsec_nanos() != 0 {
                fail(
                    report,
                    "spec.connectTime",
                    format!("{text:?} is not a whole number of seconds; the peer is left out"),
                );
            } else if !(1..=65_535).contains(&connect.as_secs()) {
                fail(
                    report,
                    "spec.connectTime",
                    format!("{text:?} is out of range; the peer is left out: give 1s to 65535s"),
                );
            }
            Some(connect)
        }
    };

    let node_selectors = selectors(subject, "spec.nodeSelectors", &spec.node_selectors, report);

    let password = non_empty(&spec.password);
    let secret = spec.password_secret.as_ref().and_then(|secret| {
        secret
            .name
            .clone()
            .filter(|name| !name.is_empty())
            .map(|name| (secret.namespace.clone(), name))
    });
    let password = match (password, secret) {
        (Some(_), Some(_)) => {
            fail(
                report,
                "spec.passwordSecret",
                "both password and passwordSecret are given; the peer is left out: keep only one"
                    .into(),
            );
            None
        }
        (Some(password), None) => Some(PeerPassword::Inline(password)),
        (None, Some((namespace, name))) => Some(PeerPassword::Secret {
            namespace: namespace
                .filter(|namespace| !namespace.is_empty())
                .unwrap_or_else(|| subject.namespace.clone()),
            name,
        }),
        (None, None) => None,
    };

    let bfd_profile = non_empty(&spec.bfd_profile);
    if let Some(profile) = &bfd_profile
        && !config.bfd_profiles.contains_key(profile)
    {
        let message = if left_out.bfd_profiles.contains(profile) {
            format!(
                "BFDProfile {profile:?} is invalid and left out (see its own problem), so this peer is left out too: fix the profile"
            )
        } else {
            format!(
                "no BFDProfile named {profile:?}; the peer is left out: create the profile or fix the name"
            )
        };
        fail(report, "spec.bfdProfile", message);
    }

    let (Some(asn), Some(node_selectors), true) = (asn, node_selectors, ok) else {
        return None;
    };

    // Two peers for the same session from the same nodes would collide at the router.
    let endpoint = match (&address, &interface) {
        (Some(address), _) => address.to_string(),
        (None, Some(interface)) => format!("interface {interface}"),
        (None, None) => String::new(),
    };
    let vrf = non_empty(&spec.vrf).unwrap_or_default();
    let mut normalized = node_selectors.clone();
    normalized.sort();
    let session = (endpoint.clone(), vrf.clone(), normalized);
    if let Some(first) = sessions.get(&session) {
        let message = format!(
            "BGPPeer {first:?} already opens a session to {endpoint}{} from the same nodes and comes first by name; this one is left out: remove it or give the two peers different nodeSelectors",
            if vrf.is_empty() {
                String::new()
            } else {
                format!(" in VRF {vrf}")
            }
        );
        subject.problem(report, "spec.peerAddress", message);
        return None;
    }
    sessions.insert(session, subject.name.clone());

    if !vrf.is_empty() {
        subject.unsupported(
            report,
            "spec.vrf",
            "sessions in a VRF are not implemented: the session is opened in the default VRF",
        );
    }
    if spec.local_asn.is_some_and(|asn| asn != 0) {
        subject.unsupported(
            report,
            "spec.localASN",
            "local-as is not implemented: myASN is presented to the peer",
        );
    }
    if interface.is_some() {
        subject.unsupported(
            report,
            "spec.interface",
            "unnumbered BGP is not implemented: no session is opened for this peer",
        );
    }
    if spec.disable_mp == Some(true) {
        subject.unsupported(
            report,
            "spec.disableMP",
            "deprecated in MetalLB and without effect: one multiprotocol session is used",
        );
    }
    if bfd_profile.is_some() && ebgp_multihop {
        subject.unsupported(
            report,
            "spec.bfdProfile",
            "multihop BFD (RFC 5883) is not implemented: this multihop session runs without BFD",
        );
    }

    Some(Peer {
        name: subject.name.clone(),
        my_asn: spec.my_asn,
        peer_asn: asn,
        address,
        interface,
        source_address,
        port,
        hold_time,
        keepalive_time,
        connect_time,
        router_id,
        node_selectors,
        password,
        bfd_profile,
        graceful_restart: spec.enable_graceful_restart.unwrap_or(false),
        ebgp_multihop,
        dual_stack: spec.dual_stack_address_family.unwrap_or(false),
    })
}

/// MetalLB's timer rules: one given → the other derived (keepalive = hold / 3, hold =
/// keepalive × 3); the hold time, in whole seconds, is 0 or at least 3; keepalive
/// not above hold.
fn timers(
    subject: &Subject,
    hold: Option<Duration>,
    keepalive: Option<Duration>,
    spec: &crate::crd::BGPPeerSpec,
    report: &mut Report,
) -> Result<(Option<Duration>, Option<Duration>), ()> {
    let hold_text = spec.hold_time.as_deref().unwrap_or_default();
    let keepalive_text = spec.keepalive_time.as_deref().unwrap_or_default();
    let (hold, keepalive, derived_hold) = match (hold, keepalive) {
        (None, None) => return Ok((None, None)),
        (Some(hold), Some(keepalive)) => (hold, keepalive, false),
        (Some(hold), None) => (hold, hold / 3, false),
        (None, Some(keepalive)) => (keepalive.saturating_mul(3), keepalive, true),
    };
    if !hold.is_zero() && hold < Duration::from_secs(3) {
        let message = if derived_hold {
            format!(
                "keepaliveTime {keepalive_text:?} implies a hold time of 3 × that, below 3 s; the peer is left out: give a keepalive of at least 1s, or a holdTime"
            )
        } else if hold < Duration::from_secs(1) {
            format!(
                "{hold_text:?} is below 3 s (MetalLB would round it to 0, which turns keepalives off); the peer is left out: give 0s to turn them off, or at least 3s"
            )
        } else {
            format!("{hold_text:?} is below 3 s; the peer is left out: give 0s or at least 3s")
        };
        let field = if derived_hold {
            "spec.keepaliveTime"
        } else {
            "spec.holdTime"
        };
        subject.problem(report, field, message);
        return Err(());
    }
    if keepalive > hold {
        subject.problem(
            report,
            "spec.keepaliveTime",
            format!("{keepalive_text:?} is longer than holdTime {hold_text:?}; the peer is left out: give a keepalive not above the hold time (a third of it is usual)"),
        );
        return Err(());
    }
    Ok((Some(hold), Some(keepalive)))
}

// ---------------------------------------------------------------------------------
// Advertisements

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

fn l2_advertisement(
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
    let [pool_selectors, node_selectors, service_selectors] = [
        (
            "spec.ipAddressPoolSelectors",
            &spec.ip_address_pool_selectors,
        ),
        ("spec.nodeSelectors", &spec.node_selectors),
        ("spec.serviceSelectors", &spec.service_selectors),
    ]
    .map(|(field, list)| selectors(subject, field, list, report));
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

fn bgp_advertisement(
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
    let [pool_selectors, node_selectors, service_selectors] = [
        (
            "spec.ipAddressPoolSelectors",
            &spec.ip_address_pool_selectors,
        ),
        ("spec.nodeSelectors", &spec.node_selectors),
        ("spec.serviceSelectors", &spec.service_selectors),
    ]
    .map(|(field, list)| selectors(subject, field, list, report));

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

/// Communities are a set (MetalLB keeps them in a map): an alias and a literal of
/// the same value are sent once.
fn push_once(communities: &mut Vec<Community>, community: Community) {
    if !communities.contains(&community) {
        communities.push(community);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(text: &str) -> u8 {
        shortest_prefix(&text.parse().unwrap())
    }

    #[test]
    fn ranges_summarise_to_their_shortest_cidr() {
        assert_eq!(prefix("10.0.0.0/24"), 24);
        assert_eq!(prefix("10.0.0.0-10.0.0.255"), 24);
        assert_eq!(prefix("10.0.0.1-10.0.0.255"), 25);
        assert_eq!(prefix("192.168.0.150-192.168.0.200"), 27);
        assert_eq!(prefix("10.0.0.5-10.0.0.5"), 32);
        assert_eq!(prefix("0.0.0.0/0"), 0);
        assert_eq!(prefix("::/0"), 0);
        assert_eq!(prefix("fd00::/64"), 64);
        assert_eq!(prefix("::1-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), 1);
    }

    #[test]
    fn communities_follow_metallb_syntax() {
        assert!(matches!(
            parse_community("65535:65281"),
            Ok(Community::Standard(0xffff_ff01))
        ));
        assert!(matches!(
            parse_community("large:1:2:3"),
            Ok(Community::Large(1, 2, 3))
        ));
        assert!(matches!(
            parse_community("65536:1"),
            Err(CommunityError::Value(_))
        ));
        assert!(matches!(
            parse_community("+1:1"),
            Err(CommunityError::Value(_))
        ));
        assert!(matches!(
            parse_community("big:1:2:3"),
            Err(CommunityError::Value(_))
        ));
        assert!(matches!(
            parse_community("large:1:2:-3"),
            Err(CommunityError::Value(_))
        ));
        assert!(matches!(
            parse_community("no-export"),
            Err(CommunityError::NotACommunity)
        ));
        assert!(matches!(
            parse_community("1:2:3"),
            Err(CommunityError::NotACommunity)
        ));
    }
}
