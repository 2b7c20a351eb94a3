//! The legacy ConfigMap converter against MetalLB's own expectations: every input of
//! MetalLB's configmaptocrs test data (tests/fixtures/configmaptocrs, copied unchanged)
//! is converted and compared with its golden output, both read into the same types.
//!
//! What is compared is the configuration: each object's kind, name, namespace and
//! spec. Left aside, because they are not configuration: `status` (the goldens carry
//! the zeroed IPAddressPool status Go's serializer prints), `metadata` other than name
//! and namespace, and an empty `passwordSecret: {}` (Go prints the zero value of a
//! non-pointer struct; it means "no secret", as its absence does).

use std::fs;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::ConfigMap;
use metallb_config::MetalLbObjects;
use metallb_config::legacy::{self, Conversion};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/configmaptocrs")
}

/// Every YAML document of `text` as JSON, empty documents skipped.
fn documents(text: &str) -> Vec<serde_json::Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|document| {
            <serde_json::Value as serde::Deserialize>::deserialize(document)
                .expect("a YAML document")
        })
        .filter(|document| !document.is_null())
        .collect()
}

fn golden_objects(path: &Path) -> MetalLbObjects {
    let mut objects = MetalLbObjects::default();
    for document in documents(&fs::read_to_string(path).unwrap()) {
        assert!(
            objects.add_document(&document, "metallb-system").unwrap(),
            "{}: not a MetalLB object: {document}",
            path.display()
        );
    }
    normalize(objects)
}

/// Keeps what is configuration (see the module comment).
fn normalize(mut objects: MetalLbObjects) -> MetalLbObjects {
    fn meta(meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
        *meta = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: meta.name.take(),
            namespace: meta.namespace.take(),
            ..Default::default()
        };
    }
    for pool in &mut objects.pools {
        meta(&mut pool.metadata);
        pool.status = None;
    }
    for peer in &mut objects.peers {
        meta(&mut peer.metadata);
        if peer
            .spec
            .password_secret
            .as_ref()
            .is_some_and(|secret| secret.name.is_none() && secret.namespace.is_none())
        {
            peer.spec.password_secret = None;
        }
    }
    for advertisement in &mut objects.l2_advertisements {
        meta(&mut advertisement.metadata);
    }
    for advertisement in &mut objects.bgp_advertisements {
        meta(&mut advertisement.metadata);
    }
    for profile in &mut objects.bfd_profiles {
        meta(&mut profile.metadata);
    }
    for community in &mut objects.communities {
        meta(&mut community.metadata);
    }
    objects
}

fn convert(path: &Path) -> Conversion {
    let text = fs::read_to_string(path).unwrap();
    if path.parent().unwrap().ends_with("configmap-yaml") {
        let document = documents(&text).pop().unwrap();
        let config_map: ConfigMap = serde_json::from_value(document).unwrap();
        legacy::convert_config_map(&config_map, "metallb-system").unwrap()
    } else {
        legacy::convert(&text, "metallb-system").unwrap()
    }
}

fn cases() -> Vec<PathBuf> {
    let mut cases = Vec::new();
    for directory in ["configmap-yaml", "configmap-data"] {
        for entry in fs::read_dir(fixtures().join(directory)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|ext| ext == "yaml") {
                cases.push(path);
            }
        }
    }
    cases.sort();
    cases
}

#[test]
fn every_input_converts_to_its_golden() {
    let cases = cases();
    assert_eq!(cases.len(), 12, "MetalLB ships 6 inputs in each of 2 forms");
    for input in cases {
        let converted = convert(&input);
        let expected = golden_objects(&input.with_extension("golden"));
        let actual = normalize(converted.objects);
        let name = input.display();
        assert_eq!(actual.peers, expected.peers, "{name}: BGPPeers");
        assert_eq!(actual.pools, expected.pools, "{name}: IPAddressPools");
        assert_eq!(
            actual.bgp_advertisements, expected.bgp_advertisements,
            "{name}: BGPAdvertisements"
        );
        assert_eq!(
            actual.l2_advertisements, expected.l2_advertisements,
            "{name}: L2Advertisements"
        );
        assert_eq!(
            actual.bfd_profiles, expected.bfd_profiles,
            "{name}: BFDProfiles"
        );
        assert_eq!(
            actual.communities, expected.communities,
            "{name}: Communities"
        );
        assert_eq!(actual, expected, "{name}");
        // MetalLB's `full` input has a pool with `protocol: l2`, which the converter
        // silently leaves without an advertisement: ours says so.
        if name.to_string().contains("full") {
            assert_eq!(converted.notes.len(), 1, "{name}: {:?}", converted.notes);
            assert!(converted.notes[0].contains("my-l2-space"));
        } else {
            assert!(converted.notes.is_empty(), "{name}: {:?}", converted.notes);
        }
    }
}

#[test]
fn the_converted_goldens_validate_cleanly_except_what_metallb_tolerates() {
    // The goldens are what MetalLB itself accepted after converting (its converter
    // runs MetalLB's parser on them), so validation finds nothing to refuse.
    for input in cases() {
        let golden = golden_objects(&input.with_extension("golden"));
        let validated = metallb_config::validate(&golden);
        assert!(
            validated.problems.is_empty(),
            "{}: {:#?}",
            input.display(),
            validated.problems
        );
    }
}

#[test]
fn a_legacy_config_map_is_validated_like_the_resources() {
    let input = fixtures().join("configmap-yaml/config-yaml-full.yaml");
    let document = documents(&fs::read_to_string(input).unwrap())
        .pop()
        .unwrap();
    let mut objects = MetalLbObjects::default();
    assert!(objects.add_document(&document, "metallb-system").unwrap());
    let validated = metallb_config::validate(&objects);
    let config = &validated.config;
    assert_eq!(
        config.pools.keys().collect::<Vec<_>>(),
        ["my-ip-space", "my-l2-space"]
    );
    assert_eq!(config.bgp_advertisements.len(), 1);
    assert_eq!(config.bgp_advertisements[0].pools, ["my-ip-space"]);
    assert_eq!(
        config.bgp_advertisements[0]
            .communities
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["64512:1", "65535:65281"],
        "the no-export alias resolved from the legacy bgp-communities"
    );
    assert_eq!(config.peers.len(), 1);
    let peer = &config.peers[0];
    assert_eq!(peer.hold_time, Some(std::time::Duration::from_secs(120)));
    assert_eq!(
        peer.keepalive_time,
        Some(std::time::Duration::from_secs(30))
    );
    assert_eq!(peer.bfd_profile.as_deref(), Some("bfdprofile1"));
    assert_eq!(config.bfd_profiles["bfdprofile1"].detect_multiplier, 200);
    // Only the protocol note, on the ConfigMap itself.
    assert_eq!(validated.problems.len(), 1, "{:#?}", validated.problems);
    let problem = &validated.problems[0];
    assert_eq!(
        (
            problem.kind.as_str(),
            problem.namespace.as_str(),
            problem.name.as_str()
        ),
        ("ConfigMap", "metallb-system", "config")
    );
    assert_eq!(problem.field, "data.config");
    // echo-interval and minimum-ttl are set in that profile: warned, not acted on.
    let unsupported: Vec<&str> = validated
        .unsupported
        .iter()
        .map(|field| field.field.as_str())
        .collect();
    assert_eq!(unsupported, ["spec.echoInterval", "spec.minimumTtl"]);
}

#[test]
fn a_broken_legacy_config_map_is_one_problem_and_resources_still_apply() {
    let mut objects = MetalLbObjects::default();
    let config_map = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "config", "namespace": "metallb-system"},
        "data": {"config": "address-pools: [ {name: lan"}
    });
    assert!(objects.add_document(&config_map, "metallb-system").unwrap());
    let pool = serde_json::json!({
        "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": "crd-pool", "namespace": "metallb-system"},
        "spec": {"addresses": ["10.1.0.0/24"]}
    });
    assert!(objects.add_document(&pool, "metallb-system").unwrap());
    let validated = metallb_config::validate(&objects);
    assert_eq!(validated.problems.len(), 1, "{:#?}", validated.problems);
    assert_eq!(validated.problems[0].kind, "ConfigMap");
    assert!(validated.problems[0].message.contains("fix the YAML"));
    assert!(validated.config.pools.contains_key("crd-pool"));
}
