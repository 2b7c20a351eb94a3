//! Validation of L2Advertisements and BGPAdvertisements (pools resolved, selectors,
//! aggregation lengths, peers, conflicting localPrefs) and of communities, from real
//! object YAML.

mod common;

use common::{object, only_problem, pool, problems, validate};
use metallb_config::Community;

#[test]
fn advertisements_resolve_pools_and_report_unknown_or_left_out_ones() {
    let yaml = pool("good", &["10.0.0.0/24"])
        + &pool("broken", &["10.1.0.0/33"])
        + &object(
            "L2Advertisement",
            "l2",
            "ipAddressPools: [good, broken, typo]",
        )
        + &object("L2Advertisement", "all", "")
        + &object("BGPAdvertisement", "bgp", "ipAddressPools: [typo]");
    let validated = validate(&yaml);
    let l2 = problems(&validated, "L2Advertisement", "l2");
    assert_eq!(l2.len(), 2, "{:#?}", validated.problems);
    assert_eq!(l2[0].field, "spec.ipAddressPools[1]");
    assert!(
        l2[0].message.contains("\"broken\" is invalid and left out"),
        "{}",
        l2[0]
    );
    assert_eq!(l2[1].field, "spec.ipAddressPools[2]");
    assert!(
        l2[1].message.contains("no IPAddressPool named \"typo\""),
        "{}",
        l2[1]
    );
    let config = &validated.config;
    let l2 = config
        .l2_advertisements
        .iter()
        .find(|a| a.name == "l2")
        .unwrap();
    assert_eq!(l2.pools, ["good"], "kept for its valid pool");
    let all = config
        .l2_advertisements
        .iter()
        .find(|a| a.name == "all")
        .unwrap();
    assert_eq!(all.pools, ["good"], "every valid pool");
    assert_eq!(config.bgp_advertisements[0].pools, Vec::<String>::new());

    let validated = validate(
        &(pool("good", &["10.0.0.0/24"])
            + &object("L2Advertisement", "dup", "ipAddressPools: [good, good]")),
    );
    only_problem(
        &validated,
        "L2Advertisement",
        "dup",
        "spec.ipAddressPools[1]",
        &["already listed"],
    );
    assert!(validated.config.l2_advertisements.is_empty());
}

#[test]
fn l2_preferred_node_selectors_are_checked() {
    let validated = validate(&object(
        "L2Advertisement",
        "l2",
        "preferredNodeSelectors: [{weight: 0, preference: {matchLabels: {rack: a}}}]",
    ));
    only_problem(
        &validated,
        "L2Advertisement",
        "l2",
        "spec.preferredNodeSelectors[0].weight",
        &["1 to 100"],
    );
    let validated = validate(&object(
        "L2Advertisement",
        "l2",
        "preferredNodeSelectors: [{weight: 10, preference: {matchExpressions: [{key: rack, operator: Exists, values: [a]}]}}]",
    ));
    only_problem(
        &validated,
        "L2Advertisement",
        "l2",
        "spec.preferredNodeSelectors[0].preference",
        &["takes no values"],
    );
    let validated = validate(&object("L2Advertisement", "l2", "interfaces: [eth0, \"\"]"));
    only_problem(
        &validated,
        "L2Advertisement",
        "l2",
        "spec.interfaces[1]",
        &["empty"],
    );
}

#[test]
fn aggregation_lengths_stay_within_the_family_and_the_pool() {
    let base =
        pool("v4", &["10.0.0.0/24", "192.168.0.150-192.168.0.200"]) + &pool("v6", &["fd00::/120"]);
    let with = |spec: &str| validate(&(base.clone() + &object("BGPAdvertisement", "adv", spec)));

    for (spec, field, words) in [
        (
            "aggregationLength: 33",
            "spec.aggregationLength",
            &["1 to 32"][..],
        ),
        (
            "aggregationLength: 0",
            "spec.aggregationLength",
            &["1 to 32"],
        ),
        (
            "aggregationLengthV6: 129",
            "spec.aggregationLengthV6",
            &["0 to 128"],
        ),
        (
            "aggregationLengthV6: -1",
            "spec.aggregationLengthV6",
            &["0 to 128"],
        ),
    ] {
        let validated = with(spec);
        only_problem(&validated, "BGPAdvertisement", "adv", field, words);
        assert!(validated.config.bgp_advertisements.is_empty(), "{spec}");
    }

    // /24 pool and a range summarising to /27 at its shortest: 27 is the floor.
    let validated = with("aggregationLength: 27, aggregationLengthV6: 120");
    assert!(validated.problems.is_empty(), "{:#?}", validated.problems);
    assert_eq!(validated.config.bgp_advertisements[0].pools, ["v4", "v6"]);
    let validated = with("aggregationLength: 26");
    only_problem(
        &validated,
        "BGPAdvertisement",
        "adv",
        "spec.aggregationLength",
        &[
            "shorter than the /27",
            "\"v4\"",
            "192.168.0.150-192.168.0.200",
        ],
    );
    assert_eq!(
        validated.config.bgp_advertisements[0].pools,
        ["v6"],
        "only the pool it cannot aggregate is dropped"
    );
    let validated = with("aggregationLengthV6: 64");
    only_problem(
        &validated,
        "BGPAdvertisement",
        "adv",
        "spec.aggregationLengthV6",
        &["shorter than the /120"],
    );
}

#[test]
fn service_selectors_need_default_aggregation() {
    let selectors = "serviceSelectors: [{matchLabels: {app: web}}]";
    let validated = validate(&object(
        "BGPAdvertisement",
        "adv",
        &format!("{selectors}, aggregationLength: 32, aggregationLengthV6: 128"),
    ));
    assert!(validated.problems.is_empty(), "explicit defaults are fine");
    let validated = validate(&object(
        "BGPAdvertisement",
        "adv",
        &format!("{selectors}, aggregationLength: 24"),
    ));
    only_problem(
        &validated,
        "BGPAdvertisement",
        "adv",
        "spec.aggregationLength",
        &["serviceSelectors", "default aggregation length (32)"],
    );
    let validated = validate(&object(
        "BGPAdvertisement",
        "adv",
        &format!("{selectors}, aggregationLengthV6: 64"),
    ));
    only_problem(
        &validated,
        "BGPAdvertisement",
        "adv",
        "spec.aggregationLengthV6",
        &["(128)"],
    );
    assert!(validated.config.bgp_advertisements.is_empty());
}

#[test]
fn communities_standard_large_and_aliases() {
    let aliases = object(
        "Community",
        "aliases",
        "communities: [{name: no-export, value: \"65535:65281\"}, {name: big, value: \"large:1:2:3\"}, {name: broken, value: \"70000:1\"}]",
    );
    let with = |communities: &str| {
        validate(
            &(aliases.clone()
                + &object(
                    "BGPAdvertisement",
                    "adv",
                    &format!("communities: {communities}"),
                )),
        )
    };
    let validated = with("[no-export, big, \"64512:1\", \"large:4200000000:0:1\"]");
    let alias_problems = problems(&validated, "Community", "aliases");
    assert_eq!(alias_problems.len(), 1);
    assert_eq!(alias_problems[0].field, "spec.communities[2].value");
    assert!(problems(&validated, "BGPAdvertisement", "adv").is_empty());
    assert_eq!(
        validated.config.bgp_advertisements[0].communities,
        [
            Community::Standard(0xffff_ff01),
            Community::Large(1, 2, 3),
            Community::Standard(64512 << 16 | 1),
            Community::Large(4_200_000_000, 0, 1)
        ]
    );

    for (communities, words) in [
        ("[no-exprot]", &["alias \"no-exprot\"", "not defined"][..]),
        ("[\"65536:1\"]", &["\"65536:1\"", "0 to 65535"]),
        ("[\"large:1:2:x\"]", &["large community"]),
        ("[\"huge:1:2:3\"]", &["large:<u32>:<u32>:<u32>"]),
        (
            "[broken]",
            &["alias \"broken\" is invalid", "spec.communities[2]"],
        ),
    ] {
        let validated = with(communities);
        only_problem(
            &validated,
            "BGPAdvertisement",
            "adv",
            "spec.communities[0]",
            words,
        );
        assert!(
            validated.config.bgp_advertisements.is_empty(),
            "{communities}"
        );
    }
    let validated = with("[\"1:1\", \"1:1\"]");
    only_problem(
        &validated,
        "BGPAdvertisement",
        "adv",
        "spec.communities[1]",
        &["already listed"],
    );

    // The same alias twice: the first object by name wins.
    let validated = validate(
        &(object("Community", "a", "communities: [{name: x, value: \"1:1\"}]")
            + &object("Community", "b", "communities: [{name: x, value: \"2:2\"}]")
            + &object("BGPAdvertisement", "adv", "communities: [x]")),
    );
    only_problem(
        &validated,
        "Community",
        "b",
        "spec.communities[0].name",
        &["already defined by Community metallb-system/a"],
    );
    assert_eq!(
        validated.config.bgp_advertisements[0].communities,
        [Community::Standard(1 << 16 | 1)]
    );
}

#[test]
fn advertisements_naming_unknown_peers_keep_the_names() {
    let yaml = common::peer(
        "good",
        "myASN: 64512, peerASN: 64513, peerAddress: 10.0.0.1",
    ) + &common::peer("bad", "myASN: 64512, peerAddress: 10.0.0.2")
        + &object(
            "BGPAdvertisement",
            "adv",
            "peers: [good, bad, typo], localPref: 50",
        );
    let validated = validate(&yaml);
    let found = problems(&validated, "BGPAdvertisement", "adv");
    assert_eq!(found.len(), 2, "{:#?}", validated.problems);
    assert_eq!(found[0].field, "spec.peers[1]");
    assert!(found[0].message.contains("\"bad\" is invalid"));
    assert_eq!(found[1].field, "spec.peers[2]");
    assert!(found[1].message.contains("no BGPPeer named \"typo\""));
    let advertisement = &validated.config.bgp_advertisements[0];
    assert_eq!(
        advertisement.peers,
        ["good", "bad", "typo"],
        "never widened to all peers"
    );
    assert_eq!(advertisement.local_pref, Some(50));
}

#[test]
fn different_local_prefs_for_the_same_announcement_keep_the_first() {
    let base = pool("v4", &["10.0.0.0/24"]) + &pool("other", &["10.1.0.0/24"]);
    let validated = validate(
        &(base.clone()
            + &object(
                "BGPAdvertisement",
                "a",
                "ipAddressPools: [v4], localPref: 100",
            )
            + &object("BGPAdvertisement", "b", "localPref: 200")),
    );
    only_problem(
        &validated,
        "BGPAdvertisement",
        "b",
        "spec.localPref",
        &["\"a\" comes first", "\"v4\"", "localPref 100"],
    );
    let b = &validated.config.bgp_advertisements[1];
    assert_eq!(b.pools, ["other"], "only the clashing pool is dropped");

    // Different aggregation, disjoint peers, other nodes or service selectors: no clash.
    for second in [
        "localPref: 200, aggregationLength: 28",
        "localPref: 200, peers: [r2]",
        "localPref: 200, serviceSelectors: [{matchLabels: {app: x}}]",
        "localPref: 100",
    ] {
        let validated = validate(
            &(base.clone()
                + &object(
                    "BGPAdvertisement",
                    "a",
                    "ipAddressPools: [v4], localPref: 100, peers: [r1], nodeSelectors: [{matchLabels: {rack: a}}]",
                )
                + &object("BGPAdvertisement", "b", second)),
        );
        assert!(
            problems(&validated, "BGPAdvertisement", "b")
                .iter()
                .all(|problem| problem.field != "spec.localPref"),
            "{second}: {:#?}",
            validated.problems
        );
    }
}
