//! Property tests: validation never panics on arbitrary text where operators type text
//! (addresses, durations, communities, names, the legacy ConfigMap), and what it
//! keeps always holds MetalLB's invariants.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use metallb_config::crd::{
    BFDProfile, BFDProfileSpec, BGPAdvertisement, BGPAdvertisementSpec, BGPPeer, BGPPeerSpec,
    Community, CommunityAlias, CommunitySpec, IPAddressPool, IPAddressPoolSpec,
};
use metallb_config::{MetalLbObjects, validate};
use proptest::prelude::*;

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some("metallb-system".to_string()),
        ..ObjectMeta::default()
    }
}

/// Text that is often nearly valid: pieces of addresses, durations and communities
/// glued together, or anything at all.
fn texty() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9a-f:./ -]{0,24}",
        "(large:)?[0-9]{0,11}(:[0-9]{0,11}){0,4}",
        "[-+]?([0-9]{0,20}(\\.[0-9]{0,12})?(ns|us|µs|ms|s|m|h|d|)){0,4}",
        "(10\\.0\\.[0-9]{1,3}\\.[0-9]{1,3}|fd00::[0-9a-f]{1,4})(/[0-9]{1,3}| ?- ?(10\\.0\\.[0-9]{1,3}\\.[0-9]{1,3}|fd00::[0-9a-f]{1,4}))?",
    ]
}

fn objects(texts: Vec<String>, numbers: Vec<i32>) -> MetalLbObjects {
    let text = |i: usize| texts[i % texts.len()].clone();
    let number = |i: usize| numbers[i % numbers.len()];
    let mut objects = MetalLbObjects::default();
    for i in 0..3 {
        objects.pools.push(IPAddressPool {
            metadata: meta(&format!("pool-{i}")),
            spec: IPAddressPoolSpec {
                addresses: vec![text(i), text(i + 3)],
                ..IPAddressPoolSpec::default()
            },
            status: None,
        });
    }
    objects.communities.push(Community {
        metadata: meta("aliases"),
        spec: CommunitySpec {
            communities: vec![
                CommunityAlias {
                    name: text(6),
                    value: text(7),
                },
                CommunityAlias {
                    name: "known".into(),
                    value: text(8),
                },
            ],
        },
    });
    objects.bgp_advertisements.push(BGPAdvertisement {
        metadata: meta("adv"),
        spec: BGPAdvertisementSpec {
            aggregation_length: Some(number(0)),
            aggregation_length_v6: Some(number(1)),
            communities: vec![text(9), "known".into(), text(6)],
            peers: vec![text(10)],
            ..BGPAdvertisementSpec::default()
        },
    });
    objects.bfd_profiles.push(BFDProfile {
        metadata: meta("bfd"),
        spec: BFDProfileSpec {
            receive_interval: Some(number(2) as u32),
            detect_multiplier: Some(number(3) as u32),
            minimum_ttl: Some(number(4) as u32),
            ..BFDProfileSpec::default()
        },
    });
    objects.peers.push(BGPPeer {
        metadata: meta("peer"),
        spec: BGPPeerSpec {
            my_asn: number(5) as u32,
            peer_asn: Some(number(6) as u32),
            peer_address: Some(text(11)),
            source_address: Some(text(12)),
            peer_port: Some(number(7) as u16),
            hold_time: Some(text(13)),
            keepalive_time: Some(text(14)),
            connect_time: Some(text(15)),
            router_id: Some(text(16)),
            bfd_profile: Some("bfd".into()),
            ..BGPPeerSpec::default()
        },
    });
    objects
}

/// A YAML double-quoted scalar holding exactly `text`: everything outside printable
/// ASCII escaped (YAML takes U+2028 and friends as line breaks, which JSON quoting
/// leaves raw).
fn yaml_quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn validation_never_panics_and_keeps_pools_disjoint(
        texts in prop::collection::vec(texty(), 1..20),
        numbers in prop::collection::vec(any::<i32>(), 1..10),
    ) {
        let validated = validate(&objects(texts, numbers));
        let pools: Vec<_> = validated.config.pools.values().collect();
        for (i, a) in pools.iter().enumerate() {
            for b in &pools[i + 1..] {
                for ra in &a.ranges {
                    prop_assert!(!b.ranges.iter().any(|rb| rb.overlaps(ra)), "{} and {} overlap", a.name, b.name);
                }
            }
        }
        for advertisement in &validated.config.bgp_advertisements {
            prop_assert!((1..=32).contains(&advertisement.aggregation_length));
            prop_assert!(advertisement.aggregation_length_v6 <= 128);
            for pool in &advertisement.pools {
                prop_assert!(validated.config.pools.contains_key(pool));
            }
        }
        for peer in &validated.config.peers {
            if let (Some(hold), Some(keepalive)) = (peer.hold_time, peer.keepalive_time) {
                prop_assert!(keepalive <= hold);
                prop_assert!(hold.is_zero() || hold.as_secs() >= 3);
            }
            if let Some(profile) = &peer.bfd_profile {
                prop_assert!(validated.config.bfd_profiles.contains_key(profile));
            }
        }
        for problem in &validated.problems {
            prop_assert!(!problem.message.is_empty() && !problem.kind.is_empty());
        }
    }

    #[test]
    fn a_legacy_config_map_of_any_text_never_panics(text in any::<String>(), yamlish in "[-a-z:\\[\\]{}, \n0-9./]{0,200}") {
        for config in [text, yamlish] {
            let objects = MetalLbObjects {
                legacy: Some(ConfigMap {
                    metadata: meta("config"),
                    data: Some(BTreeMap::from([("config".to_string(), config)])),
                    ..ConfigMap::default()
                }),
                ..MetalLbObjects::default()
            };
            let _ = validate(&objects);
        }
    }

    #[test]
    fn a_well_formed_legacy_config_with_any_values_never_panics(
        texts in prop::collection::vec(texty(), 1..12),
        numbers in prop::collection::vec(any::<u16>(), 1..6),
    ) {
        let text = |i: usize| yaml_quoted(&texts[i % texts.len()]);
        let number = |i: usize| numbers[i % numbers.len()];
        let yaml = format!(
            "peers:\n- {{my-asn: {}, peer-asn: {}, peer-address: {}, hold-time: {}, keepalive-time: {}, bfd-profile: {}}}\naddress-pools:\n- {{name: {}, protocol: {}, addresses: [{}, {}], bgp-advertisements: [{{aggregation-length: {}, communities: [{}]}}]}}\nbgp-communities: {{{}: {}}}\nbfd-profiles:\n- {{name: {}, detect-multiplier: {}}}\n",
            number(0), number(1), text(0), text(1), text(2), text(3), text(4), text(5), text(6), text(7), number(2), text(8), text(9), text(10), text(3), number(3)
        );
        let converted = metallb_config::legacy::convert(&yaml, "metallb-system");
        prop_assert!(converted.is_ok(), "{yaml}: {converted:?}");
        let objects = MetalLbObjects {
            legacy: Some(ConfigMap {
                metadata: meta("config"),
                data: Some(BTreeMap::from([("config".to_string(), yaml)])),
                ..ConfigMap::default()
            }),
            ..MetalLbObjects::default()
        };
        let validated = validate(&objects);
        for problem in &validated.problems {
            prop_assert!(problem.kind == "ConfigMap" || problem.namespace.is_empty(), "{problem}");
        }
    }
}

#[test]
fn quoting_round_trips_line_separators_and_escapes() {
    for text in ["\u{2028}", "a\"b\\c", "\u{1F600}\t\n", ""] {
        let parsed: String = serde_yaml_ng::from_str(&yaml_quoted(text)).unwrap();
        assert_eq!(parsed, text);
    }
}
