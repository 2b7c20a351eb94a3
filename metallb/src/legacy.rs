//! MetalLB ≤ 0.12's ConfigMap (`config` key) converted into the custom resources
//! MetalLB's own converter (configmaptocrs) would produce.
//!
//! The output matches the converter's, object for object: peers named `peer1`, `peer2`,
//! ...; one `IPAddressPool` per address pool; one `BGPAdvertisement` per entry of a
//! pool's `bgp-advertisements` (`bgpadvertisement1`, ... counted over all pools) and an
//! empty one for a `bgp` pool that has none; one `L2Advertisement` per `layer2` pool
//! (`l2advertisement1`, ...); one `BFDProfile` per profile; one `Community` named
//! `communities` holding every alias, sorted. Names that are not valid Kubernetes names
//! are rewritten as the converter does (lower case, `_` → `-`, leading non-letters
//! dropped, 63 characters at most) and the references to them follow.
//!
//! Two deliberate differences, both so that one bad entry does not lose the rest: a
//! timer the converter would refuse (and with it the whole ConfigMap) is passed through
//! as written, so [`crate::validate()`] reports it against that peer; a name that cannot
//! be made valid, or a pool `protocol` that is neither `layer2` nor `bgp` (the converter
//! silently makes no advertisement for it), is returned in [`Conversion::notes`].

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use serde::Deserialize;

use crate::crd::{
    BFDProfile, BFDProfileSpec, BGPAdvertisement, BGPAdvertisementSpec, BGPPeer, BGPPeerSpec,
    Community, CommunityAlias, CommunitySpec, IPAddressPool, IPAddressPoolSpec, L2Advertisement,
    L2AdvertisementSpec,
};
use crate::duration;
use crate::error::ObjectError;
use crate::objects::MetalLbObjects;

/// The key of the ConfigMap holding the configuration.
pub const CONFIG_KEY: &str = "config";

/// The converted objects, and what could not be converted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conversion {
    /// The custom resources, in the converter's order (its `legacy` field is `None`).
    pub objects: MetalLbObjects,
    /// Entries left out or converted to nothing, each as a sentence naming the entry
    /// (`address-pools[2]`) and what to do.
    pub notes: Vec<String>,
}

/// Converts MetalLB's legacy ConfigMap. Its objects get the ConfigMap's namespace
/// (`default_namespace` when it has none), as the converter does.
pub fn convert_config_map(
    config_map: &ConfigMap,
    default_namespace: &str,
) -> Result<Conversion, ObjectError> {
    let namespace = config_map
        .metadata
        .namespace
        .as_deref()
        .filter(|namespace| !namespace.is_empty())
        .unwrap_or(default_namespace);
    let name = config_map.metadata.name.clone().unwrap_or_default();
    let error = |message: String| ObjectError::LegacyConfig {
        namespace: namespace.to_string(),
        name: name.clone(),
        message,
    };
    let text = config_map
        .data
        .as_ref()
        .and_then(|data| data.get(CONFIG_KEY))
        .filter(|text| !text.trim().is_empty())
        .ok_or_else(|| error("the key is missing or empty".to_string()))?;
    convert(text, namespace).map_err(error)
}

/// Converts the text of the `config` key; the objects are put in `namespace`.
pub fn convert(text: &str, namespace: &str) -> Result<Conversion, String> {
    let file: ConfigFile = serde_yaml_ng::from_str(text).map_err(|error| error.to_string())?;
    Ok(Converter {
        namespace,
        out: Conversion::default(),
    }
    .run(file))
}

/// The configuration file's top level (configmaptocrs/types.go).
#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    peers: Option<Vec<LegacyPeer>>,
    #[serde(default, rename = "bgp-communities")]
    bgp_communities: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "address-pools")]
    address_pools: Option<Vec<LegacyPool>>,
    #[serde(default, rename = "bfd-profiles")]
    bfd_profiles: Option<Vec<LegacyBfdProfile>>,
}

#[derive(Debug, Default, Deserialize)]
struct LegacyPeer {
    #[serde(default, rename = "my-asn")]
    my_asn: u32,
    #[serde(default, rename = "peer-asn")]
    peer_asn: u32,
    #[serde(default, rename = "peer-address")]
    peer_address: Option<String>,
    #[serde(default, rename = "source-address")]
    source_address: Option<String>,
    #[serde(default, rename = "peer-port")]
    peer_port: u16,
    #[serde(default, rename = "hold-time")]
    hold_time: Option<String>,
    #[serde(default, rename = "keepalive-time")]
    keepalive_time: Option<String>,
    #[serde(default, rename = "router-id")]
    router_id: Option<String>,
    #[serde(default, rename = "node-selectors")]
    node_selectors: Option<Vec<LegacyNodeSelector>>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "bfd-profile")]
    bfd_profile: Option<String>,
    #[serde(default, rename = "ebgp-multihop")]
    ebgp_multihop: bool,
}

#[derive(Debug, Default, Deserialize)]
struct LegacyNodeSelector {
    #[serde(default, rename = "match-labels")]
    match_labels: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "match-expressions")]
    match_expressions: Option<Vec<LegacyRequirement>>,
}

#[derive(Debug, Default, Deserialize)]
struct LegacyRequirement {
    #[serde(default)]
    key: String,
    #[serde(default)]
    operator: String,
    #[serde(default)]
    values: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
struct LegacyPool {
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    addresses: Option<Vec<String>>,
    #[serde(default, rename = "auto-assign")]
    auto_assign: Option<bool>,
    #[serde(default, rename = "avoid-buggy-ips")]
    avoid_buggy_ips: Option<bool>,
    #[serde(default, rename = "bgp-advertisements")]
    bgp_advertisements: Option<Vec<LegacyBgpAdvertisement>>,
}

#[derive(Debug, Default, Deserialize)]
struct LegacyBgpAdvertisement {
    #[serde(default, rename = "aggregation-length")]
    aggregation_length: Option<i32>,
    #[serde(default, rename = "aggregation-length-v6")]
    aggregation_length_v6: Option<i32>,
    #[serde(default)]
    localpref: u32,
    #[serde(default)]
    communities: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
struct LegacyBfdProfile {
    #[serde(default)]
    name: String,
    #[serde(default, rename = "receive-interval")]
    receive_interval: Option<u32>,
    #[serde(default, rename = "transmit-interval")]
    transmit_interval: Option<u32>,
    #[serde(default, rename = "detect-multiplier")]
    detect_multiplier: Option<u32>,
    #[serde(default, rename = "echo-interval")]
    echo_interval: Option<u32>,
    #[serde(default, rename = "echo-mode")]
    echo_mode: bool,
    #[serde(default, rename = "passive-mode")]
    passive_mode: bool,
    #[serde(default, rename = "minimum-ttl")]
    minimum_ttl: Option<u32>,
}

struct Converter<'a> {
    namespace: &'a str,
    out: Conversion,
}

impl Converter<'_> {
    fn meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.to_string()),
            ..ObjectMeta::default()
        }
    }

    fn run(mut self, file: ConfigFile) -> Conversion {
        let mut pools = file.address_pools.unwrap_or_default();
        let mut bfd_profiles = file.bfd_profiles.unwrap_or_default();
        let mut peers = file.peers.unwrap_or_default();

        // Names first, as the converter does, so references follow the new names. A
        // name that cannot be made valid leaves its entry out (the converter gives up
        // on the whole ConfigMap).
        let mut pool_ok = vec![true; pools.len()];
        for (index, pool) in pools.iter_mut().enumerate() {
            match k8s_name(&pool.name) {
                Some(name) => pool.name = name,
                None => {
                    pool_ok[index] = false;
                    self.out.notes.push(format!(
                        "address-pools[{index}]: name {:?} cannot be made a Kubernetes name (it needs a letter); the pool is left out: rename it",
                        pool.name
                    ));
                }
            }
        }
        let mut bfd_ok = vec![true; bfd_profiles.len()];
        for (index, profile) in bfd_profiles.iter_mut().enumerate() {
            match k8s_name(&profile.name) {
                Some(name) => profile.name = name,
                None => {
                    bfd_ok[index] = false;
                    self.out.notes.push(format!(
                        "bfd-profiles[{index}]: name {:?} cannot be made a Kubernetes name (it needs a letter); the profile is left out: rename it",
                        profile.name
                    ));
                }
            }
        }
        for peer in &mut peers {
            if let Some(profile) = peer.bfd_profile.as_mut().filter(|p| !p.is_empty()) {
                // An unfixable reference is kept as written: validation then reports
                // the peer's unknown profile.
                if let Some(name) = k8s_name(profile) {
                    *profile = name;
                }
            }
        }

        for (index, peer) in peers.into_iter().enumerate() {
            let peer = self.peer(index, peer);
            self.out.objects.peers.push(peer);
        }
        for (pool, _) in pools.iter().zip(&pool_ok).filter(|(_, ok)| **ok) {
            let converted = IPAddressPool {
                metadata: self.meta(pool.name.clone()),
                spec: IPAddressPoolSpec {
                    addresses: pool.addresses.clone().unwrap_or_default(),
                    auto_assign: pool.auto_assign,
                    // The CRD field is a plain bool with omitempty: only `true` shows.
                    avoid_buggy_ips: pool.avoid_buggy_ips.filter(|avoid| *avoid),
                    service_allocation: None,
                },
                status: None,
            };
            self.out.objects.pools.push(converted);
        }
        let mut index = 1;
        for (pool_index, (pool, _)) in pools
            .iter()
            .zip(&pool_ok)
            .enumerate()
            .filter(|(_, (_, ok))| **ok)
        {
            let advertisements = pool.bgp_advertisements.as_deref().unwrap_or_default();
            for advertisement in advertisements {
                let converted = BGPAdvertisement {
                    metadata: self.meta(format!("bgpadvertisement{index}")),
                    spec: BGPAdvertisementSpec {
                        aggregation_length: advertisement.aggregation_length,
                        aggregation_length_v6: advertisement.aggregation_length_v6,
                        local_pref: (advertisement.localpref != 0)
                            .then_some(advertisement.localpref),
                        communities: advertisement.communities.clone().unwrap_or_default(),
                        ip_address_pools: vec![pool.name.clone()],
                        ..BGPAdvertisementSpec::default()
                    },
                };
                index += 1;
                self.out.objects.bgp_advertisements.push(converted);
            }
            let protocol = pool.protocol.as_deref().unwrap_or("");
            if advertisements.is_empty() && protocol == "bgp" {
                let converted = BGPAdvertisement {
                    metadata: self.meta(format!("bgpadvertisement{index}")),
                    spec: BGPAdvertisementSpec {
                        ip_address_pools: vec![pool.name.clone()],
                        ..BGPAdvertisementSpec::default()
                    },
                };
                index += 1;
                self.out.objects.bgp_advertisements.push(converted);
            }
            if protocol != "bgp" && protocol != "layer2" && advertisements.is_empty() {
                self.out.notes.push(format!(
                    "address-pools[{pool_index}] ({}): protocol {protocol:?} is neither \"layer2\" nor \"bgp\", so the pool is not announced (MetalLB's converter makes no advertisement for it either): set protocol: layer2 or protocol: bgp",
                    pool.name
                ));
            }
        }
        let mut index = 1;
        for (pool, _) in pools.iter().zip(&pool_ok).filter(|(_, ok)| **ok) {
            if pool.protocol.as_deref() == Some("layer2") {
                let converted = L2Advertisement {
                    metadata: self.meta(format!("l2advertisement{index}")),
                    spec: L2AdvertisementSpec {
                        ip_address_pools: vec![pool.name.clone()],
                        ..L2AdvertisementSpec::default()
                    },
                };
                index += 1;
                self.out.objects.l2_advertisements.push(converted);
            }
        }
        for (profile, _) in bfd_profiles.iter().zip(&bfd_ok).filter(|(_, ok)| **ok) {
            let converted = BFDProfile {
                metadata: self.meta(profile.name.clone()),
                spec: BFDProfileSpec {
                    receive_interval: profile.receive_interval,
                    transmit_interval: profile.transmit_interval,
                    detect_multiplier: profile.detect_multiplier,
                    echo_interval: profile.echo_interval,
                    echo_mode: Some(profile.echo_mode),
                    passive_mode: Some(profile.passive_mode),
                    minimum_ttl: profile.minimum_ttl,
                },
            };
            self.out.objects.bfd_profiles.push(converted);
        }
        let aliases = file.bgp_communities.unwrap_or_default();
        if !aliases.is_empty() {
            // A BTreeMap iterates sorted, as the converter sorts the aliases.
            let converted = Community {
                metadata: self.meta("communities".to_string()),
                spec: CommunitySpec {
                    communities: aliases
                        .into_iter()
                        .map(|(name, value)| CommunityAlias { name, value })
                        .collect(),
                },
            };
            self.out.objects.communities.push(converted);
        }
        self.out
    }

    fn peer(&self, index: usize, peer: LegacyPeer) -> BGPPeer {
        let node_selectors = peer
            .node_selectors
            .unwrap_or_default()
            .into_iter()
            .map(|selector| LabelSelector {
                match_labels: selector.match_labels.filter(|labels| !labels.is_empty()),
                match_expressions: selector
                    .match_expressions
                    .filter(|expressions| !expressions.is_empty())
                    .map(|expressions| {
                        expressions
                            .into_iter()
                            .map(|requirement| LabelSelectorRequirement {
                                key: requirement.key,
                                operator: requirement.operator,
                                values: requirement.values.filter(|values| !values.is_empty()),
                            })
                            .collect()
                    }),
            })
            .collect();
        let non_empty = |text: Option<String>| text.filter(|text| !text.is_empty());
        // The converter writes a hold time always (90 s when unset) and a keepalive only
        // when given, both rounded down to whole seconds.
        let hold_time = match non_empty(peer.hold_time) {
            None => duration::format_seconds(Duration::from_secs(90)),
            Some(text) => rounded(&text),
        };
        BGPPeer {
            metadata: self.meta(format!("peer{}", index + 1)),
            spec: BGPPeerSpec {
                my_asn: peer.my_asn,
                peer_asn: (peer.peer_asn != 0).then_some(peer.peer_asn),
                peer_address: non_empty(peer.peer_address),
                source_address: non_empty(peer.source_address),
                peer_port: (peer.peer_port != 0).then_some(peer.peer_port),
                hold_time: Some(hold_time),
                keepalive_time: non_empty(peer.keepalive_time).map(|text| rounded(&text)),
                router_id: non_empty(peer.router_id),
                node_selectors,
                password: non_empty(peer.password),
                bfd_profile: non_empty(peer.bfd_profile),
                ebgp_multi_hop: peer.ebgp_multihop.then_some(true),
                ..BGPPeerSpec::default()
            },
        }
    }
}

/// A timer rounded down to whole seconds and printed as Go prints it; anything
/// unparsable or negative is passed through for validation to report.
fn rounded(text: &str) -> String {
    match duration::parse(text) {
        Ok(parsed) if !parsed.negative => {
            duration::format_seconds(Duration::from_secs(parsed.magnitude.as_secs()))
        }
        _ => text.to_string(),
    }
}

/// The converter's name fix: a name that is already a valid Kubernetes name
/// (`^[a-z][-a-z0-9]{0,61}[a-z0-9]$`) is kept; any other is cut to 63 characters,
/// lower-cased, `_` turned into `-`, and everything before the first letter dropped.
/// `None` when no letter is left.
pub fn k8s_name(name: &str) -> Option<String> {
    if is_k8s_name(name) {
        return Some(name.to_string());
    }
    // Go cuts at 63 bytes; on a multi-byte character boundary we cut before it.
    let mut end = name.len().min(63);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let fixed = name[..end].to_lowercase().replace('_', "-");
    let first_letter = fixed.find(|c: char| c.is_ascii_lowercase())?;
    Some(fixed[first_letter..].to_string())
}

fn is_k8s_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (2..=63).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[bytes.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_fixed_as_the_converter_fixes_them() {
        assert_eq!(k8s_name("my-pool").as_deref(), Some("my-pool"));
        assert_eq!(
            k8s_name("01-numbered-addresspool").as_deref(),
            Some("numbered-addresspool")
        );
        assert_eq!(
            k8s_name("Capitalized_Pool").as_deref(),
            Some("capitalized-pool")
        );
        assert_eq!(k8s_name("a").as_deref(), Some("a"));
        assert_eq!(k8s_name("0123"), None);
        assert_eq!(k8s_name(&"x".repeat(70)).unwrap().len(), 63);
    }

    #[test]
    fn timers_are_rounded_down_or_passed_through() {
        assert_eq!(rounded("120s"), "2m0s");
        assert_eq!(rounded("90500ms"), "1m30s");
        assert_eq!(rounded("2.9s"), "2s");
        assert_eq!(rounded("-3s"), "-3s");
        assert_eq!(rounded("ninety"), "ninety");
    }

    #[test]
    fn a_pool_with_an_unknown_protocol_gets_no_advertisement_and_a_note() {
        let converted = convert(
            "address-pools:\n- {name: lan, protocol: l2, addresses: [10.0.0.0/24]}\n",
            "metallb-system",
        )
        .unwrap();
        assert_eq!(converted.objects.pools.len(), 1);
        assert!(converted.objects.l2_advertisements.is_empty());
        assert!(converted.objects.bgp_advertisements.is_empty());
        assert_eq!(converted.notes.len(), 1);
        assert!(
            converted.notes[0].contains("protocol \"l2\""),
            "{:?}",
            converted.notes
        );
    }
}
