//! The allocation's rules, one test per rule, and its cost at 10 000 Services.

use std::collections::BTreeMap;

use metallb_config::{Pool, Selector, ServiceAllocation};

use super::*;
use crate::lb::service::ServicePort;

/// An open pool (no restriction, no avoided address).
pub(crate) fn pool(name: &str, ranges: &[&str]) -> Pool {
    Pool {
        name: name.into(),
        labels: BTreeMap::new(),
        ranges: ranges.iter().map(|range| range.parse().unwrap()).collect(),
        auto_assign: true,
        avoid_buggy_ips: false,
        allocation: None,
    }
}

/// A configuration of these pools and nothing else.
pub(crate) fn config(pools: Vec<Pool>) -> LbConfig {
    LbConfig {
        pools: pools
            .into_iter()
            .map(|pool| (pool.name.clone(), pool))
            .collect(),
        ..LbConfig::default()
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn run(config: &LbConfig, services: &[LbService]) -> Allocation {
    allocate(config, services, [], &NamespaceLabels::new())
}

fn ips_of(allocation: &Allocation, name: &str) -> Vec<String> {
    allocation
        .ips(&ServiceKey::new("shop", name))
        .unwrap_or_else(|| panic!("{name}: {:?}", allocation.services))
        .iter()
        .map(IpAddr::to_string)
        .collect()
}

fn refusal(allocation: &Allocation, name: &str) -> Refusal {
    allocation.services[&ServiceKey::new("shop", name)]
        .result
        .clone()
        .unwrap_err()
}

#[test]
fn first_free_address_of_the_first_pool_by_name_skipping_buggy_ones() {
    let mut buggy = pool("b", &["10.1.0.255-10.1.1.1"]);
    buggy.avoid_buggy_ips = true;
    let config = config(vec![pool("z", &["10.9.0.0/24"]), buggy]);
    let services: Vec<LbService> = ["a1", "a2", "a3"].into_iter().map(service).collect();
    let allocation = run(&config, &services);
    assert_eq!(ips_of(&allocation, "a1"), ["10.1.1.1"]);
    assert_eq!(ips_of(&allocation, "a2"), ["10.9.0.0"]);
    assert_eq!(ips_of(&allocation, "a3"), ["10.9.0.1"]);
    assert_eq!(
        allocation.services[&services[1].key]
            .result
            .as_ref()
            .unwrap()
            .pool,
        "z"
    );
}

#[test]
fn prioritized_pools_first_then_unprioritized_then_open_ones() {
    let with = |name: &str, range: &str, priority: i32| {
        let mut pool = pool(name, &[range]);
        pool.allocation = Some(ServiceAllocation {
            priority,
            namespaces: vec!["shop".into()],
            ..ServiceAllocation::default()
        });
        pool
    };
    let config = config(vec![
        pool("a-open", &["10.0.0.1/32"]),
        with("b-unset", "10.0.0.2/32", 0),
        with("c-second", "10.0.0.3/32", 2),
        with("d-first", "10.0.0.4/32", 1),
    ]);
    let services: Vec<LbService> = ["s1", "s2", "s3", "s4", "s5"]
        .into_iter()
        .map(service)
        .collect();
    let allocation = run(&config, &services);
    assert_eq!(ips_of(&allocation, "s1"), ["10.0.0.4"]);
    assert_eq!(ips_of(&allocation, "s2"), ["10.0.0.3"]);
    assert_eq!(ips_of(&allocation, "s3"), ["10.0.0.2"]);
    assert_eq!(ips_of(&allocation, "s4"), ["10.0.0.1"]);
    assert!(matches!(
        refusal(&allocation, "s5"),
        Refusal::Exhausted { .. }
    ));
}

#[test]
fn service_allocation_restricts_namespaces_and_services() {
    let mut restricted = pool("restricted", &["10.0.0.0/30"]);
    restricted.allocation = Some(ServiceAllocation {
        priority: 1,
        namespaces: vec![],
        namespace_selectors: vec![Selector {
            match_labels: [("team".to_string(), "web".to_string())].into(),
            requirements: vec![],
        }],
        service_selectors: vec![Selector {
            match_labels: [("expose".to_string(), "yes".to_string())].into(),
            requirements: vec![],
        }],
    });
    let config = config(vec![restricted]);
    let mut labelled = service("labelled");
    labelled.labels.insert("expose".into(), "yes".into());
    let plain = service("plain");
    let mut asks = service("asks");
    asks.requested_pool = Some("restricted".into());
    let services = vec![labelled, plain, asks];

    let web: NamespaceLabels = [(
        "shop".to_string(),
        [("team".to_string(), "web".to_string())].into(),
    )]
    .into();
    let allocation = allocate(&config, &services, [], &web);
    assert_eq!(ips_of(&allocation, "labelled"), ["10.0.0.0"]);
    assert_eq!(refusal(&allocation, "plain"), Refusal::NoAutoAssignPool);
    assert!(matches!(
        refusal(&allocation, "asks"),
        Refusal::PoolNotAllowed { .. }
    ));

    // Another namespace's labels: nobody gets in.
    let allocation = allocate(&config, &services, [], &NamespaceLabels::new());
    assert!(matches!(
        refusal(&allocation, "labelled"),
        Refusal::NoAutoAssignPool
    ));
}

#[test]
fn auto_assign_false_pools_serve_only_who_asks() {
    let mut manual = pool("manual", &["10.0.0.0/31"]);
    manual.auto_assign = false;
    let config = config(vec![manual]);
    let mut by_pool = service("by-pool");
    by_pool.requested_pool = Some("manual".into());
    let mut by_ip = service("by-ip");
    by_ip.requested_ips = vec![ip("10.0.0.1")];
    let allocation = run(&config, &[service("plain"), by_pool, by_ip]);
    assert_eq!(refusal(&allocation, "plain"), Refusal::NoAutoAssignPool);
    assert_eq!(ips_of(&allocation, "by-pool"), ["10.0.0.0"]);
    assert_eq!(ips_of(&allocation, "by-ip"), ["10.0.0.1"]);
}

#[test]
fn requests_that_cannot_be_met_say_why() {
    let config = config(vec![
        pool("a", &["10.0.0.0/24"]),
        pool("b", &["fd00::/120"]),
    ]);
    let mut outside = service("outside");
    outside.requested_ips = vec![ip("192.168.0.1")];
    let mut unknown = service("unknown");
    unknown.requested_pool = Some("nope".into());
    let mut conflicting = service("conflicting");
    conflicting.requested_ips = vec![ip("10.0.0.7")];
    conflicting.requested_pool = Some("b".into());
    let mut dual = service("dual");
    dual.families = vec![Family::V4, Family::V6];
    dual.dual_stack = true;
    dual.require_dual_stack = true;
    dual.requested_ips = vec![ip("10.0.0.8")];
    let mut split = service("split");
    split.families = vec![Family::V4, Family::V6];
    split.dual_stack = true;
    split.requested_ips = vec![ip("10.0.0.9"), ip("fd00::9")];
    let allocation = run(&config, &[outside, unknown, conflicting, dual, split]);
    assert_eq!(
        refusal(&allocation, "outside"),
        Refusal::NotInAnyPool(ip("192.168.0.1"))
    );
    assert_eq!(
        refusal(&allocation, "unknown"),
        Refusal::UnknownPool("nope".into())
    );
    assert!(matches!(
        refusal(&allocation, "conflicting"),
        Refusal::ConflictingPool { .. }
    ));
    let wrong = refusal(&allocation, "dual");
    assert!(
        wrong
            .to_string()
            .contains("IPv4 and IPv6 (RequireDualStack)"),
        "{wrong}"
    );
    assert!(matches!(
        refusal(&allocation, "split"),
        Refusal::DifferentPools { .. }
    ));
}

#[test]
fn sharing_needs_the_same_key_the_same_backends_and_distinct_ports() {
    let config = config(vec![pool("a", &["10.0.0.0/24"])]);
    let shared = |name: &str, key: Option<&str>, port: u16, backend: &str| {
        let mut service = service(name);
        service.requested_ips = vec![ip("10.0.0.5")];
        service.sharing_key = key.map(String::from);
        service.ports = vec![ServicePort {
            protocol: "TCP",
            port,
        }];
        service.backend_key = backend.into();
        service
    };
    let services = vec![
        shared("a-first", Some("k"), 80, ""),
        shared("b-joins", Some("k"), 443, ""),
        shared("c-same-port", Some("k"), 80, ""),
        shared("d-other-key", Some("j"), 8080, ""),
        shared("e-no-key", None, 8081, ""),
        shared("f-other-backend", Some("k"), 8082, "app=x"),
    ];
    let allocation = run(&config, &services);
    assert_eq!(ips_of(&allocation, "a-first"), ["10.0.0.5"]);
    assert_eq!(ips_of(&allocation, "b-joins"), ["10.0.0.5"]);
    let why = |name| match refusal(&allocation, name) {
        Refusal::InUse { conflict, .. } => conflict,
        other => panic!("{name}: {other}"),
    };
    assert!(matches!(
        why("c-same-port"),
        SharingConflict::PortInUse { port: 80, .. }
    ));
    assert!(matches!(
        why("d-other-key"),
        SharingConflict::KeyDiffers { .. }
    ));
    assert!(matches!(why("e-no-key"), SharingConflict::NotShared(_)));
    assert!(matches!(
        why("f-other-backend"),
        SharingConflict::BackendDiffers { .. }
    ));

    // Without a request, a Service with the key lands on the shared address too.
    let mut follower = service("g-follower");
    follower.sharing_key = Some("k".into());
    follower.ports = vec![ServicePort {
        protocol: "UDP",
        port: 80,
    }];
    let mut services = services;
    services[0].requested_ips = vec![ip("10.0.0.0")];
    services.push(follower);
    let allocation = run(&config, &services);
    assert_eq!(ips_of(&allocation, "g-follower"), ["10.0.0.0"]);
}

#[test]
fn existing_assignments_stay_and_the_oldest_holder_wins_a_contested_address() {
    let mut favourite = pool("a-favourite", &["10.0.0.0/24"]);
    favourite.allocation = Some(ServiceAllocation {
        priority: 1,
        ..ServiceAllocation::default()
    });
    let config = config(vec![favourite, pool("b", &["10.1.0.0/24"])]);
    let mut holder = service("holder");
    holder.ingress_ips = vec![ip("10.1.0.9")];
    holder.created = Some("2026-01-01T00:00:00Z".parse().unwrap());
    let mut younger = service("a-younger");
    younger.ingress_ips = vec![ip("10.1.0.9")];
    younger.created = Some("2026-02-01T00:00:00Z".parse().unwrap());
    let mut gone = service("gone");
    gone.ingress_ips = vec![ip("192.168.0.1")];
    let allocation = run(&config, &[younger, holder, gone]);
    let holder = &allocation.services[&ServiceKey::new("shop", "holder")];
    assert!(holder.kept);
    assert_eq!(ips_of(&allocation, "holder"), ["10.1.0.9"]);
    // The younger claimant loses it and is given a new address.
    let younger = &allocation.services[&ServiceKey::new("shop", "a-younger")];
    assert!(!younger.kept);
    assert!(matches!(
        younger.dropped.as_ref().unwrap().reason,
        Refusal::InUse { .. }
    ));
    assert_eq!(ips_of(&allocation, "a-younger"), ["10.0.0.0"]);
    let gone = &allocation.services[&ServiceKey::new("shop", "gone")];
    assert_eq!(
        gone.dropped.as_ref().unwrap().reason,
        Refusal::NotInAnyPool(ip("192.168.0.1"))
    );
    assert_eq!(ips_of(&allocation, "gone"), ["10.0.0.1"]);
}

#[test]
fn dual_stack_required_needs_one_pool_with_both_families_preferred_takes_one() {
    let config = config(vec![
        pool("a-v4", &["10.0.0.0/32"]),
        pool("b-both", &["10.1.0.0/32", "fd00::/127"]),
    ]);
    let dual = |name: &str, require: bool| {
        let mut service = service(name);
        service.families = vec![Family::V6, Family::V4];
        service.dual_stack = true;
        service.require_dual_stack = require;
        service
    };
    let allocation = run(
        &config,
        &[
            dual("s1-required", true),
            dual("s2-required", true),
            dual("s3-preferred", false),
        ],
    );
    assert_eq!(ips_of(&allocation, "s1-required"), ["fd00::", "10.1.0.0"]);
    assert!(matches!(
        refusal(&allocation, "s2-required"),
        Refusal::Exhausted { .. }
    ));
    // The primary family (IPv6 here) first: the pool with a free IPv6 address.
    assert_eq!(ips_of(&allocation, "s3-preferred"), ["fd00::1"]);

    // A PreferDualStack Service holding one address gets the other family from
    // its pool.
    let mut holder = dual("holder", false);
    holder.ingress_ips = vec![ip("10.1.0.0")];
    let allocation = run(&config, &[holder]);
    assert_eq!(ips_of(&allocation, "holder"), ["fd00::", "10.1.0.0"]);
    assert!(!allocation.services[&ServiceKey::new("shop", "holder")].kept);
}

#[test]
fn frozen_addresses_are_never_given_away() {
    let config = config(vec![pool("a", &["10.0.0.0/31"])]);
    let frozen_key = ServiceKey::new("shop", "broken");
    let frozen_ips = [ip("10.0.0.0")];
    let mut asks = service("asks");
    asks.requested_ips = vec![ip("10.0.0.0")];
    let services = [service("plain"), asks];
    let allocation = allocate(
        &config,
        &services,
        [(&frozen_key, &frozen_ips[..])],
        &NamespaceLabels::new(),
    );
    assert_eq!(ips_of(&allocation, "plain"), ["10.0.0.1"]);
    assert!(matches!(
        refusal(&allocation, "asks"),
        Refusal::InUse {
            conflict: SharingConflict::Frozen(_),
            ..
        }
    ));
    assert!(!allocation.services.contains_key(&frozen_key));
}

#[test]
fn no_pools_refuses_everyone() {
    let mut holder = service("holder");
    holder.ingress_ips = vec![ip("10.0.0.1")];
    let allocation = run(&LbConfig::default(), &[holder]);
    assert_eq!(refusal(&allocation, "holder"), Refusal::NoPools);
}

/// A TCP/80 IPv4 Service `shop/<name>` asking for nothing in particular.
fn service(name: &str) -> LbService {
    LbService {
        key: ServiceKey::new("shop", name),
        uid: None,
        created: None,
        labels: BTreeMap::new(),
        load_balancer_class: None,
        requested_ips: vec![],
        requested_pool: None,
        sharing_key: None,
        allocated_from_pool: None,
        families: vec![Family::V4],
        dual_stack: false,
        require_dual_stack: false,
        ports: vec![ServicePort {
            protocol: "TCP",
            port: 80,
        }],
        local_traffic_policy: false,
        backend_key: String::new(),
        ingress_ips: vec![],
    }
}

mod scale {
    use super::*;

    /// 10 000 Services in one /18: fresh allocation, then the steady state (every
    /// Service keeping its address) the controller recomputes on each change.
    #[test]
    fn ten_thousand_services() {
        let pool = Pool {
            name: "big".into(),
            labels: BTreeMap::new(),
            ranges: vec!["10.0.0.0/18".parse().unwrap()],
            auto_assign: true,
            avoid_buggy_ips: true,
            allocation: None,
        };
        let config = LbConfig {
            pools: [("big".to_string(), pool)].into(),
            ..LbConfig::default()
        };
        let mut services: Vec<LbService> = (0..10_000)
            .map(|index| {
                let mut service = super::service(&format!("s{index:05}"));
                if index % 3 == 0 {
                    service.sharing_key = Some("shared".into());
                    service.ports = vec![ServicePort {
                        protocol: "TCP",
                        port: 1000 + (index % 7) as u16,
                    }];
                }
                service
            })
            .collect();
        let started = std::time::Instant::now();
        let fresh = allocate(&config, &services, [], &NamespaceLabels::new());
        let fresh_time = started.elapsed();
        assert_eq!(fresh.assignments().count(), 10_000);
        for service in &mut services {
            service.ingress_ips = fresh.ips(&service.key).unwrap().to_vec();
        }
        let started = std::time::Instant::now();
        let steady = allocate(&config, &services, [], &NamespaceLabels::new());
        let steady_time = started.elapsed();
        assert!(steady.services.values().all(|outcome| outcome.kept));
        eprintln!("10k Services: fresh {fresh_time:?}, steady {steady_time:?}");
    }
}
