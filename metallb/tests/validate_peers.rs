//! Validation of BGPPeers (ASNs, addresses, port, timers, password, BFD profile) and
//! BFDProfiles, and the unsupported-field warnings, from real object YAML.

mod common;

use std::time::Duration;

use common::{object, only_problem, peer, problems, validate};
use metallb_config::Validated;

const BASE: &str = "myASN: 64512, peerASN: 64513, peerAddress: 10.0.0.1";

fn with(extra: &str) -> Validated {
    validate(&peer("p", &format!("{BASE}, {extra}")))
}

fn refused(validated: &Validated, field: &str, words: &[&str]) {
    only_problem(validated, "BGPPeer", "p", field, words);
    assert!(
        validated.config.peers.is_empty(),
        "{field}: the peer is left out"
    );
}

#[test]
fn asns_are_checked() {
    refused(
        &validate(&peer("p", "peerASN: 1, peerAddress: 10.0.0.1")),
        "spec.myASN",
        &["myASN is missing"],
    );
    refused(
        &validate(&peer("p", "myASN: 1, peerAddress: 10.0.0.1")),
        "spec.peerASN",
        &["neither peerASN nor dynamicASN"],
    );
    refused(
        &with("dynamicASN: internal"),
        "spec.peerASN",
        &["both peerASN and dynamicASN"],
    );
    refused(
        &validate(&peer(
            "p",
            "myASN: 1, dynamicASN: sometimes, peerAddress: 10.0.0.1",
        )),
        "spec.dynamicASN",
        &["\"sometimes\""],
    );
    refused(
        &validate(&peer(
            "p",
            "myASN: 64512, peerASN: 64512, peerAddress: 10.0.0.1, ebgpMultiHop: true",
        )),
        "spec.ebgpMultiHop",
        &["iBGP"],
    );
    let validated = validate(&peer(
        "p",
        "myASN: 4200000000, peerASN: 4200000001, peerAddress: 10.0.0.1",
    ));
    assert!(validated.problems.is_empty(), "4-octet ASNs");
}

#[test]
fn exactly_one_of_address_and_interface() {
    refused(
        &validate(&peer("p", "myASN: 1, peerASN: 2")),
        "spec.peerAddress",
        &["neither peerAddress nor interface"],
    );
    refused(
        &with("interface: eth0"),
        "spec.interface",
        &["both peerAddress and interface"],
    );
    refused(
        &validate(&peer("p", "myASN: 1, peerASN: 2, peerAddress: 10.0.0.300")),
        "spec.peerAddress",
        &["\"10.0.0.300\" is not an IP address"],
    );
    refused(
        &with("sourceAddress: here"),
        "spec.sourceAddress",
        &["\"here\""],
    );
}

#[test]
fn router_id_is_an_ipv4_address() {
    refused(
        &with("routerID: \"fd00::1\""),
        "spec.routerID",
        &["IPv6", "four bytes"],
    );
    refused(
        &with("routerID: router-1"),
        "spec.routerID",
        &["not an IPv4 address"],
    );
    let validated = with("routerID: 1.2.3.4");
    assert_eq!(
        validated.config.peers[0].router_id,
        Some("1.2.3.4".parse().unwrap())
    );
}

#[test]
fn port_is_within_the_crd_bounds() {
    assert_eq!(with("peerPort: 0").config.peers[0].port, 179, "0 is unset");
    assert_eq!(with("peerPort: 16384").config.peers[0].port, 16384);
    refused(&with("peerPort: 16385"), "spec.peerPort", &["1 to 16384"]);
}

#[test]
fn timers_follow_metallb() {
    let timers = |extra: &str| {
        let validated = with(extra);
        assert!(
            validated.problems.is_empty(),
            "{extra}: {:#?}",
            validated.problems
        );
        let peer = &validated.config.peers[0];
        (peer.hold_time, peer.keepalive_time)
    };
    let s = |secs: u64| Some(Duration::from_secs(secs));
    assert_eq!(timers("holdTime: 90s"), (s(90), s(30)));
    assert_eq!(timers("holdTime: 1m30s"), (s(90), s(30)));
    assert_eq!(timers("keepaliveTime: 20s"), (s(60), s(20)));
    assert_eq!(timers("holdTime: 9s, keepaliveTime: 9s"), (s(9), s(9)));
    assert_eq!(timers("holdTime: 3s"), (s(3), s(1)));
    assert_eq!(
        timers("holdTime: 0s"),
        (s(0), s(0)),
        "0 turns keepalives off"
    );
    assert_eq!(timers("holdTime: \"0\""), (s(0), s(0)));
    assert_eq!(
        timers("holdTime: 4500ms"),
        (
            Some(Duration::from_millis(4500)),
            Some(Duration::from_millis(1500))
        )
    );
    assert_eq!(timers(""), (None, None), "unset: the speaker's default");

    refused(
        &with("holdTime: 2s"),
        "spec.holdTime",
        &["below 3 s", "0s or at least 3s"],
    );
    refused(&with("holdTime: 2900ms"), "spec.holdTime", &["below 3 s"]);
    refused(
        &with("holdTime: 500ms"),
        "spec.holdTime",
        &["round it to 0"],
    );
    refused(
        &with("keepaliveTime: 900ms"),
        "spec.keepaliveTime",
        &["3 × that"],
    );
    refused(
        &with("holdTime: 30s, keepaliveTime: 31s"),
        "spec.keepaliveTime",
        &["longer than holdTime"],
    );
    refused(
        &with("holdTime: 0s, keepaliveTime: 10s"),
        "spec.keepaliveTime",
        &["longer than holdTime"],
    );
    refused(&with("holdTime: \"90\""), "spec.holdTime", &["no unit"]);
    refused(
        &with("holdTime: 90 s"),
        "spec.holdTime",
        &["not a duration"],
    );
    refused(
        &with("holdTime: 1d"),
        "spec.holdTime",
        &["unknown unit \"d\""],
    );
    refused(
        &with("keepaliveTime: -10s"),
        "spec.keepaliveTime",
        &["negative"],
    );
}

#[test]
fn connect_time_is_whole_seconds_in_range() {
    let connect = |extra: &str| with(extra).config.peers[0].connect_time;
    assert_eq!(connect("connectTime: 5s"), Some(Duration::from_secs(5)));
    assert_eq!(connect("connectTime: 2m"), Some(Duration::from_secs(120)));
    assert_eq!(connect("connectTime: 1000ms"), Some(Duration::from_secs(1)));
    refused(
        &with("connectTime: 1500ms"),
        "spec.connectTime",
        &["whole number"],
    );
    refused(
        &with("connectTime: 0s"),
        "spec.connectTime",
        &["1s to 65535s"],
    );
    refused(
        &with("connectTime: 65536s"),
        "spec.connectTime",
        &["1s to 65535s"],
    );
    refused(
        &with("connectTime: soon"),
        "spec.connectTime",
        &["not a duration"],
    );
}

#[test]
fn password_and_secret_are_exclusive() {
    refused(
        &with("password: a, passwordSecret: {name: md5}"),
        "spec.passwordSecret",
        &["both password and passwordSecret"],
    );
    let validated = with("passwordSecret: {name: md5, namespace: other}");
    assert_eq!(
        format!("{:?}", validated.config.peers[0].password),
        "Some(Secret(other/md5))"
    );
    let validated = with("password: hunter2");
    assert_eq!(
        format!("{:?}", validated.config.peers[0].password),
        "Some(Inline(<redacted>))",
        "never printed"
    );
    let validated = with("password: \"\", passwordSecret: {}");
    assert_eq!(
        validated.config.peers[0].password, None,
        "empty means unset"
    );
}

#[test]
fn bfd_profile_must_exist_and_be_valid() {
    refused(
        &with("bfdProfile: fast"),
        "spec.bfdProfile",
        &["no BFDProfile named \"fast\""],
    );
    let validated = validate(
        &(object("BFDProfile", "fast", "detectMultiplier: 1")
            + &peer("p", &format!("{BASE}, bfdProfile: fast"))),
    );
    only_problem(
        &validated,
        "BFDProfile",
        "fast",
        "spec.detectMultiplier",
        &["2 to 255"],
    );
    only_problem(
        &validated,
        "BGPPeer",
        "p",
        "spec.bfdProfile",
        &["\"fast\" is invalid and left out"],
    );
    assert!(validated.config.peers.is_empty());
    let validated = validate(
        &(object("BFDProfile", "fast", "") + &peer("p", &format!("{BASE}, bfdProfile: fast"))),
    );
    assert!(validated.problems.is_empty());
    assert_eq!(
        validated.config.peers[0].bfd_profile.as_deref(),
        Some("fast")
    );
}

#[test]
fn bfd_profile_ranges() {
    for (spec, field, words) in [
        (
            "receiveInterval: 9",
            "spec.receiveInterval",
            &["10 to 60000 ms"][..],
        ),
        (
            "transmitInterval: 60001",
            "spec.transmitInterval",
            &["10 to 60000 ms"],
        ),
        (
            "detectMultiplier: 256",
            "spec.detectMultiplier",
            &["2 to 255"],
        ),
        ("echoInterval: 5", "spec.echoInterval", &["10 to 60000"]),
        ("minimumTtl: 0", "spec.minimumTtl", &["1 to 254"]),
        ("minimumTtl: 255", "spec.minimumTtl", &["1 to 254"]),
    ] {
        let validated = validate(&object("BFDProfile", "b", spec));
        only_problem(&validated, "BFDProfile", "b", field, words);
        assert!(validated.config.bfd_profiles.is_empty(), "{spec}");
    }
    let validated = validate(&object(
        "BFDProfile",
        "b",
        "receiveInterval: 10, transmitInterval: 60000, detectMultiplier: 2, minimumTtl: 254, echoMode: true, echoInterval: 50",
    ));
    assert!(validated.problems.is_empty());
    let profile = &validated.config.bfd_profiles["b"];
    assert_eq!(profile.receive_interval, Duration::from_millis(10));
    assert_eq!(profile.transmit_interval, Duration::from_secs(60));
    assert_eq!(profile.detect_multiplier, 2);
    assert_eq!(profile.minimum_ttl, Some(254));
    assert!(profile.echo_mode);
    let fields: Vec<&str> = validated
        .unsupported
        .iter()
        .map(|field| field.field.as_str())
        .collect();
    assert_eq!(
        fields,
        ["spec.echoMode", "spec.echoInterval", "spec.minimumTtl"]
    );
}

#[test]
fn the_same_session_twice_keeps_the_first_by_name() {
    let yaml = peer("b-peer", BASE)
        + &peer(
            "a-peer",
            "myASN: 64512, peerASN: 64513, peerAddress: 10.0.0.1, holdTime: 9s",
        )
        + &peer(
            "c-peer",
            "myASN: 64512, peerASN: 64513, peerAddress: 10.0.0.1, nodeSelectors: [{matchLabels: {rack: a}}]",
        )
        + &peer(
            "d-peer",
            "myASN: 64512, peerASN: 64513, peerAddress: 10.0.0.1, vrf: red",
        );
    let validated = validate(&yaml);
    only_problem(
        &validated,
        "BGPPeer",
        "b-peer",
        "spec.peerAddress",
        &["\"a-peer\" already opens a session to 10.0.0.1"],
    );
    let names: Vec<&str> = validated
        .config
        .peers
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["a-peer", "c-peer", "d-peer"],
        "other nodes or VRF: other sessions"
    );
}

#[test]
fn node_selectors_are_checked() {
    refused(
        &with("nodeSelectors: [{matchLabels: {a: b}}, {matchLabels: {a: b}}]"),
        "spec.nodeSelectors[1]",
        &["same selector"],
    );
    refused(
        &with("nodeSelectors: [{matchExpressions: [{key: a, operator: In}]}]"),
        "spec.nodeSelectors[0]",
        &["needs at least one value"],
    );
}

#[test]
fn unsupported_fields_are_listed_once_each() {
    let validated = validate(
        &(object("BFDProfile", "b", "")
            + &peer(
                "p",
                "myASN: 64512, peerASN: 65000, peerAddress: 10.0.0.1, vrf: red, localASN: 65001, disableMP: true, ebgpMultiHop: true, bfdProfile: b",
            )
            + &peer("q", "myASN: 64512, dynamicASN: external, interface: eth1")),
    );
    assert!(validated.problems.is_empty(), "{:#?}", validated.problems);
    let fields: Vec<(&str, &str, &str)> = validated
        .unsupported
        .iter()
        .map(|f| (f.kind.as_str(), f.object.as_str(), f.field.as_str()))
        .collect();
    assert_eq!(
        fields,
        [
            ("BGPPeer", "metallb-system/p", "spec.vrf"),
            ("BGPPeer", "metallb-system/p", "spec.localASN"),
            ("BGPPeer", "metallb-system/p", "spec.disableMP"),
            ("BGPPeer", "metallb-system/p", "spec.bfdProfile"),
            ("BGPPeer", "metallb-system/q", "spec.interface"),
        ]
    );
    assert!(validated.unsupported[3].reason.contains("multihop BFD"));
    // Defaults MetalLB's converter writes are not warned about.
    let validated = validate(&object(
        "BFDProfile",
        "b",
        "echoMode: false, passiveMode: false",
    ));
    assert!(validated.unsupported.is_empty());
    // An invalid object's fields are not warned about: its problem says enough.
    let validated = validate(&peer("p", "myASN: 64512, peerAddress: 10.0.0.1, vrf: red"));
    assert_eq!(problems(&validated, "BGPPeer", "p").len(), 1);
    assert!(validated.unsupported.is_empty());
}

#[test]
fn a_v1beta1_peer_is_read_through_the_conversion() {
    let validated = validate(
        "apiVersion: metallb.io/v1beta1\nkind: BGPPeer\nmetadata: {name: old, namespace: metallb-system}\nspec: {myASN: 64512, peerASN: 64513, peerAddress: 10.0.0.1, holdTime: 3m, routerID: 10.0.0.2}\n",
    );
    assert!(validated.problems.is_empty(), "{:#?}", validated.problems);
    let peer = &validated.config.peers[0];
    assert_eq!(peer.hold_time, Some(Duration::from_secs(180)));
    assert_eq!(peer.keepalive_time, Some(Duration::from_secs(60)));
    assert_eq!(peer.router_id, Some("10.0.0.2".parse().unwrap()));
}
