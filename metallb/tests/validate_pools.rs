//! Validation of the realistic fixture, of IPAddressPools (addresses, overlaps,
//! `serviceAllocation`), of duplicate names, and of problems in the legacy ConfigMap,
//! from real object YAML. Advertisements and communities: validate_advertisements.rs.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{object, only_problem, pool, problems, validate};
use metallb_config::{Community, PeerAsn, PeerPassword};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn the_realistic_cluster_is_valid_and_read_field_by_field() {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/objects/cluster-valid.yaml"
    ))
    .unwrap();
    let validated = validate(&yaml);
    assert!(validated.problems.is_empty(), "{:#?}", validated.problems);
    let config = &validated.config;

    assert_eq!(
        config.pools.keys().collect::<Vec<_>>(),
        ["expensive", "lan", "production", "staging"]
    );
    assert_eq!(config.pools["staging"].ranges[0].len(), 5);
    let production = &config.pools["production"];
    assert_eq!(production.ranges.len(), 2);
    assert!(production.contains(ip("fc00:f853:ccd:e799::f")));
    assert!(production.auto_assign);
    assert_eq!(production.labels["zone"], "east");
    let lan = &config.pools["lan"];
    assert!(lan.avoid_buggy_ips && lan.allocation.is_none());
    assert_eq!(lan.ranges[0].len(), 11);
    let expensive = &config.pools["expensive"];
    assert!(!expensive.auto_assign);
    let allocation = expensive.allocation.as_ref().unwrap();
    assert_eq!(allocation.priority, 50);
    assert_eq!(allocation.namespaces, ["namespace-a", "namespace-b"]);
    assert_eq!(allocation.namespace_selectors.len(), 1);
    assert_eq!(allocation.service_selectors.len(), 1);

    let names = |list: &[String]| list.to_vec();
    assert_eq!(config.l2_advertisements.len(), 2);
    let everything = &config.l2_advertisements[0];
    assert_eq!(everything.name, "everything");
    assert_eq!(
        names(&everything.pools),
        ["expensive", "lan", "production", "staging"],
        "no pool named nor selected: every pool"
    );
    let workers = &config.l2_advertisements[1];
    assert_eq!(workers.pools, ["lan"]);
    assert_eq!(workers.interfaces, ["eth0"]);
    assert_eq!(workers.node_selectors.len(), 2);
    assert_eq!(
        workers
            .preferred_nodes
            .iter()
            .map(|p| p.weight)
            .collect::<Vec<_>>(),
        [80, 20]
    );

    assert_eq!(config.bgp_advertisements.len(), 2);
    let databases = &config.bgp_advertisements[0];
    assert_eq!(databases.pools, ["expensive"]);
    assert_eq!(
        (
            databases.aggregation_length,
            databases.aggregation_length_v6
        ),
        (32, 128)
    );
    assert_eq!(databases.service_selectors.len(), 1);
    let east = &config.bgp_advertisements[1];
    assert_eq!(east.pools, ["production"], "selected by label");
    assert_eq!(
        (east.aggregation_length, east.aggregation_length_v6),
        (24, 124)
    );
    assert_eq!(east.local_pref, Some(100));
    assert_eq!(
        east.communities,
        [
            Community::Standard(0xffff_ff02),
            Community::Large(4_200_000_000, 1, 2)
        ],
        "the alias and the literal are the same community, sent once"
    );
    assert_eq!(east.peers, ["router-a"]);

    let profile = &config.bfd_profiles["fast"];
    assert_eq!(profile.receive_interval, Duration::from_millis(150));
    assert_eq!(profile.transmit_interval, Duration::from_millis(100));
    assert_eq!(profile.detect_multiplier, 5);
    assert!(profile.passive);
    let defaults = &config.bfd_profiles["defaults"];
    assert_eq!(defaults.receive_interval, Duration::from_millis(300));
    assert_eq!(defaults.transmit_interval, Duration::from_millis(300));
    assert_eq!(defaults.detect_multiplier, 3);
    assert!(!defaults.passive && !defaults.echo_mode && defaults.minimum_ttl.is_none());

    let peers: Vec<&str> = config.peers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        peers,
        [
            "router-a",
            "router-b",
            "router-old",
            "router-vrf",
            "unnumbered"
        ]
    );
    let a = &config.peers[0];
    assert_eq!(a.peer_asn, PeerAsn::Fixed(64513));
    assert_eq!(a.port, 180);
    assert_eq!(a.hold_time, Some(Duration::from_secs(90)));
    assert_eq!(a.keepalive_time, Some(Duration::from_secs(30)), "hold / 3");
    assert_eq!(a.router_id, Some("10.10.10.10".parse().unwrap()));
    assert_eq!(
        a.password,
        Some(PeerPassword::Secret {
            namespace: "metallb-system".into(),
            name: "router-a-md5".into()
        }),
        "the Secret is looked up in the peer's namespace"
    );
    assert_eq!(a.bfd_profile.as_deref(), Some("fast"));
    assert!(a.graceful_restart);
    assert_eq!(a.node_selectors.len(), 2);
    let b = &config.peers[1];
    assert_eq!(b.peer_asn, PeerAsn::Internal);
    assert_eq!(b.address, Some(ip("fd00::1")));
    assert_eq!(b.source_address, Some(ip("fd00::2")));
    assert_eq!(b.port, 179);
    assert_eq!(b.keepalive_time, Some(Duration::from_secs(10)));
    assert_eq!(b.hold_time, Some(Duration::from_secs(30)), "keepalive × 3");
    assert_eq!(b.connect_time, Some(Duration::from_secs(5)));
    assert_eq!(b.password, Some(PeerPassword::Inline("s3cret".into())));
    assert!(b.dual_stack);
    let old = &config.peers[2];
    assert!(
        old.ebgp_multihop,
        "v1beta1 BGPPeer read through the conversion"
    );
    assert_eq!((old.hold_time, old.keepalive_time), (None, None));
    assert_eq!(config.peers[4].peer_asn, PeerAsn::External);
    assert_eq!(config.peers[4].interface.as_deref(), Some("eth1"));
    assert_eq!(config.peers[4].address, None);

    let unsupported: Vec<(&str, &str)> = validated
        .unsupported
        .iter()
        .map(|field| (field.object.as_str(), field.field.as_str()))
        .collect();
    assert_eq!(
        unsupported,
        [
            ("metallb-system/router-vrf", "spec.vrf"),
            ("metallb-system/router-vrf", "spec.localASN"),
            ("metallb-system/router-vrf", "spec.disableMP"),
            ("metallb-system/unnumbered", "spec.interface"),
        ]
    );
}

#[test]
fn pool_addresses_parse_as_metallb_parses_them() {
    let validated = validate(&pool(
        "p",
        &[
            "10.0.0.7/24",
            "10.0.1.10 - 10.0.1.20",
            "fd00::/120",
            "fd00:1::5-fd00:1::9",
        ],
    ));
    assert!(validated.problems.is_empty(), "{:#?}", validated.problems);
    let ranges = &validated.config.pools["p"].ranges;
    assert_eq!(
        ranges[0].to_string(),
        "10.0.0.0-10.0.0.255",
        "host bits are ignored, as Go's ParseCIDR does"
    );
    assert_eq!(ranges[1].len(), 11);
    assert_eq!(ranges[2].len(), 256);
    assert_eq!(ranges[3].len(), 5);

    for (bad, words) in [
        ("10.0.0.1", &["single address", "10.0.0.1/32"][..]),
        ("fd00::1", &["fd00::1/128"]),
        ("10.0.0.0/33", &["not a valid CIDR"]),
        ("10.0.0/24", &["not a valid CIDR"]),
        ("10.0.0.9-10.0.0.1", &["ends before it starts"]),
        ("10.0.0.1-fd00::1", &["different IP families"]),
        ("10.0.0.1-", &["not an IP address"]),
        ("pool-a", &["not an IP address"]),
        ("", &["neither a CIDR"]),
    ] {
        let validated = validate(&pool("p", &["10.9.0.0/24", bad]));
        let problem = only_problem(&validated, "IPAddressPool", "p", "spec.addresses[1]", words);
        assert!(problem.message.contains("left out"), "{problem}");
        assert!(
            validated.config.pools.is_empty(),
            "{bad}: the pool is left out"
        );
    }
    // A bad entry is not taken for an address when later entries are checked.
    let validated = validate(&pool("p", &["10.0.0.300/8", "0.0.0.0/8"]));
    only_problem(
        &validated,
        "IPAddressPool",
        "p",
        "spec.addresses[0]",
        &["not a valid CIDR"],
    );
    let validated = validate(&object("IPAddressPool", "empty", ""));
    only_problem(
        &validated,
        "IPAddressPool",
        "empty",
        "spec.addresses",
        &["no addresses"],
    );
}

#[test]
fn overlapping_pools_keep_the_first_by_name_and_name_both() {
    let yaml = pool("zeta", &["10.0.0.0/24"]) + &pool("alpha", &["10.0.0.128-10.0.0.130"]);
    let validated = validate(&yaml);
    assert_eq!(validated.config.pools.keys().collect::<Vec<_>>(), ["alpha"]);
    let problem = only_problem(
        &validated,
        "IPAddressPool",
        "zeta",
        "spec.addresses[0]",
        &[
            "\"10.0.0.0/24\"",
            "10.0.0.128-10.0.0.130",
            "\"alpha\"",
            "comes first",
        ],
    );
    assert_eq!(problem.namespace, "metallb-system");

    // Within one pool.
    let validated = validate(&pool(
        "p",
        &["10.0.0.0/24", "10.0.1.0/24", "10.0.0.200-10.0.1.5"],
    ));
    only_problem(
        &validated,
        "IPAddressPool",
        "p",
        "spec.addresses[2]",
        &["overlaps spec.addresses[0]", "same pool"],
    );
    // Different families never overlap; adjacent ranges do not either.
    let validated =
        validate(&(pool("a", &["10.0.0.0/24"]) + &pool("b", &["10.0.1.0/24", "fd00::/64"])));
    assert!(validated.problems.is_empty(), "{:#?}", validated.problems);
}

#[test]
fn duplicate_names_keep_the_first_object() {
    let yaml = pool("p", &["10.0.0.0/24"]) + &pool("p", &["10.1.0.0/24"]);
    let validated = validate(&yaml);
    only_problem(
        &validated,
        "IPAddressPool",
        "p",
        "metadata.name",
        &["same name"],
    );
    assert!(validated.config.pools["p"].contains(ip("10.0.0.1")));
    let nameless = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {namespace: metallb-system}\nspec: {addresses: [10.0.0.0/24]}\n";
    let validated = validate(nameless);
    only_problem(
        &validated,
        "IPAddressPool",
        "",
        "metadata.name",
        &["no name"],
    );
}

#[test]
fn service_allocation_is_checked() {
    let with = |allocation: &str| {
        validate(&format!(
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: p, namespace: metallb-system}}\nspec:\n  addresses: [10.0.0.0/24]\n  serviceAllocation: {allocation}\n"
        ))
    };
    let validated = with("{priority: 5}");
    assert!(validated.problems.is_empty());
    let allocation = validated.config.pools["p"].allocation.clone().unwrap();
    assert_eq!(allocation.priority, 5);
    assert!(allocation.namespaces.is_empty() && allocation.service_selectors.is_empty());

    let validated = with("{namespaces: [a, b, a]}");
    only_problem(
        &validated,
        "IPAddressPool",
        "p",
        "spec.serviceAllocation.namespaces[2]",
        &["\"a\"", "already listed"],
    );
    assert!(validated.config.pools.is_empty());
    let validated = with(
        "{serviceSelectors: [{matchExpressions: [{key: app, operator: Equals, values: [x]}]}]}",
    );
    only_problem(
        &validated,
        "IPAddressPool",
        "p",
        "spec.serviceAllocation.serviceSelectors[0]",
        &["unknown operator \"Equals\""],
    );
    let validated =
        with("{namespaceSelectors: [{matchLabels: {team: a}}, {matchLabels: {team: a}}]}");
    only_problem(
        &validated,
        "IPAddressPool",
        "p",
        "spec.serviceAllocation.namespaceSelectors[1]",
        &["same selector as spec.serviceAllocation.namespaceSelectors[0]"],
    );
    let validated = with(
        "{serviceSelectors: [{matchExpressions: [{key: app, operator: In, values: [b, a, b]}]}]}",
    );
    only_problem(
        &validated,
        "IPAddressPool",
        "p",
        "spec.serviceAllocation.serviceSelectors[0]",
        &["\"b\" is given twice"],
    );
    let validated = with("{serviceSelectors: [{matchLabels: {\"bad key!\": x}}]}");
    only_problem(
        &validated,
        "IPAddressPool",
        "p",
        "spec.serviceAllocation.serviceSelectors[0]",
        &["label key \"bad key!\""],
    );
    let validated = with("{serviceSelectors: [{matchLabels: {app.kubernetes.io/name: \"-x\"}}]}");
    only_problem(
        &validated,
        "IPAddressPool",
        "p",
        "spec.serviceAllocation.serviceSelectors[0]",
        &["label value \"-x\""],
    );
}

#[test]
fn problems_in_the_legacy_config_map_name_the_converted_object() {
    let config = "peers:\n- {my-asn: 64512, peer-asn: 64513, peer-address: 10.0.0.1, hold-time: 2s}\naddress-pools:\n- {name: My_Pool, protocol: layer2, addresses: [10.0.0.0/24]}\n- {name: clash, protocol: bgp, addresses: [10.9.0.0/24]}\n";
    let config_map = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "config", "namespace": "metallb-system"},
        "data": {"config": config}
    });
    let yaml =
        serde_yaml_ng::to_string(&config_map).unwrap() + "---\n" + &pool("clash", &["10.8.0.0/24"]);
    let validated = validate(&yaml);
    let problem = only_problem(
        &validated,
        "BGPPeer",
        "peer1",
        "spec.holdTime",
        &[
            "\"2s\" is below 3 s",
            "legacy ConfigMap metallb-system/config",
        ],
    );
    assert_eq!(
        problem.namespace, "",
        "a legacy part has no namespace of its own"
    );
    let clash = problems(&validated, "IPAddressPool", "clash");
    assert_eq!(clash.len(), 1, "{:#?}", validated.problems);
    assert!(
        clash[0]
            .message
            .contains("IPAddressPool metallb-system/clash has the same name")
    );
    let config = &validated.config;
    assert!(
        config.pools["clash"].contains(ip("10.8.0.1")),
        "the resource wins"
    );
    assert!(
        config.pools.contains_key("my-pool"),
        "renamed as MetalLB's converter does"
    );
    assert_eq!(config.l2_advertisements[0].pools, ["my-pool"]);
    assert!(config.peers.is_empty());
}

#[test]
fn every_mistake_is_reported_once_and_the_rest_applies() {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/objects/cluster-invalid.yaml"
    ))
    .unwrap();
    let validated = validate(&yaml);
    let mut found: Vec<(&str, &str, &str)> = validated
        .problems
        .iter()
        .map(|p| (p.kind.as_str(), p.name.as_str(), p.field.as_str()))
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("BFDProfile", "slow", "spec.transmitInterval"),
            ("BGPAdvertisement", "no-export", "spec.communities[0]"),
            ("BGPAdvertisement", "too-wide", "spec.aggregationLength"),
            ("BGPPeer", "fast-hold", "spec.holdTime"),
            ("BGPPeer", "with-slow-bfd", "spec.bfdProfile"),
            ("IPAddressPool", "overlapping", "spec.addresses[0]"),
            ("IPAddressPool", "typo", "spec.addresses[0]"),
            ("L2Advertisement", "l2", "spec.ipAddressPools[1]"),
        ],
        "{:#?}",
        validated.problems
    );
    for problem in &validated.problems {
        assert!(problem.to_string().starts_with(&format!(
            "{} metallb-system/{}: {}: ",
            problem.kind, problem.name, problem.field
        )));
    }
    let config = &validated.config;
    assert_eq!(config.pools.keys().collect::<Vec<_>>(), ["good"]);
    assert_eq!(config.l2_advertisements[0].pools, ["good"]);
    assert_eq!(
        config.bgp_advertisements.len(),
        1,
        "too-wide stays, without its pool"
    );
    assert!(config.bgp_advertisements[0].pools.is_empty());
    assert_eq!(
        config
            .peers
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["fine"]
    );
}
