//! Properties of the pure LoadBalancer allocation (src/lb/ipam/allocate.rs) on small
//! random clusters: a few tiny pools (so they run out and addresses get shared, some
//! crossing .255/.0 for avoidBuggyIPs), Services of every family policy, some with
//! requests, sharing keys, restricted pools and addresses they already hold.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipvs_proxy::lb::ipam::{Allocation, NamespaceLabels, allocate};
use ipvs_proxy::lb::{LbService, ServicePort};
use ipvs_proxy::model::{Family, ServiceKey};
use metallb_config::{IpRange, LbConfig, Pool, Selector, ServiceAllocation};
use proptest::prelude::*;

const POOLS: u8 = 4;

/// The `k`-th IPv4 address of pool slot `p`'s neighbourhood: 10.p.0.253 + k, so
/// ranges cross .255 and .0.
fn v4(p: u8, k: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, p, 0, 253)) + k))
}

fn v6(p: u8, k: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfd00, u16::from(p), 0, 0, 0, 0, 0, k))
}

fn tier_selector() -> Selector {
    Selector {
        match_labels: [("tier".to_string(), "front".to_string())].into(),
        requirements: vec![],
    }
}

fn web_selector() -> Selector {
    Selector {
        match_labels: [("team".to_string(), "web".to_string())].into(),
        requirements: vec![],
    }
}

prop_compose! {
    fn arb_pool(slot: u8)(
        v4_range in proptest::option::weighted(0.8, (0u32..3, 1u32..5)),
        v6_len in proptest::option::weighted(0.5, 1u16..4),
        auto_assign in proptest::bool::weighted(0.8),
        avoid_buggy_ips in any::<bool>(),
        allocation in proptest::option::weighted(0.4, (
            0i32..3,
            proptest::sample::subsequence(vec!["a", "b"], 0..=2),
            any::<bool>(),
            any::<bool>(),
        )),
    ) -> Pool {
        let mut ranges = Vec::new();
        if let Some((offset, len)) = v4_range {
            ranges.push(IpRange { start: v4(slot, offset), end: v4(slot, offset + len - 1) });
        }
        if let Some(len) = v6_len {
            ranges.push(IpRange { start: v6(slot, 0), end: v6(slot, len - 1) });
        }
        if ranges.is_empty() {
            ranges.push(IpRange { start: v4(slot, 0), end: v4(slot, 0) });
        }
        Pool {
            name: format!("p{slot}"),
            labels: BTreeMap::new(),
            ranges,
            auto_assign,
            avoid_buggy_ips,
            allocation: allocation.map(|(priority, namespaces, by_namespace_label, by_service_label)| {
                ServiceAllocation {
                    priority,
                    namespaces: namespaces.into_iter().map(String::from).collect(),
                    namespace_selectors: if by_namespace_label { vec![web_selector()] } else { vec![] },
                    service_selectors: if by_service_label { vec![tier_selector()] } else { vec![] },
                }
            }),
        }
    }
}

fn arb_config() -> impl Strategy<Value = LbConfig> {
    (1..=POOLS)
        .prop_flat_map(|count| (0..count).map(arb_pool).collect::<Vec<_>>())
        .prop_map(|pools| LbConfig {
            pools: pools
                .into_iter()
                .map(|pool| (pool.name.clone(), pool))
                .collect(),
            ..LbConfig::default()
        })
}

/// An address somewhere near the pools (slot 4 has no pool).
fn arb_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0..=POOLS, 0u32..7).prop_map(|(p, k)| v4(p, k)),
        (0..=POOLS, 0u16..4).prop_map(|(p, k)| v6(p, k)),
    ]
}

const PORTS: [ServicePort; 3] = [
    ServicePort {
        protocol: "TCP",
        port: 80,
    },
    ServicePort {
        protocol: "TCP",
        port: 443,
    },
    ServicePort {
        protocol: "UDP",
        port: 53,
    },
];

prop_compose! {
    fn arb_service(index: usize)(
        namespace in prop_oneof![Just("a"), Just("b")],
        created in proptest::option::of(0i64..3),
        policy in 0u8..6,
        sharing_key in proptest::option::weighted(0.5, prop_oneof![Just("k1"), Just("k2")]),
        ports in proptest::sample::subsequence(PORTS.to_vec(), 1..=2),
        local in proptest::bool::weighted(0.2),
        requested_ips in proptest::option::weighted(0.2, proptest::collection::vec(arb_ip(), 1..=2)),
        requested_pool in proptest::option::weighted(0.15, 0..=POOLS),
        ingress_ips in proptest::option::weighted(0.3, proptest::collection::vec(arb_ip(), 1..=2)),
        front in any::<bool>(),
    ) -> LbService {
        // 0,1: single stack; 2,3: PreferDualStack; 4,5: RequireDualStack; odd: IPv6 first.
        let families = if policy % 2 == 0 { vec![Family::V4, Family::V6] } else { vec![Family::V6, Family::V4] };
        let dual_stack = policy >= 2;
        LbService {
            key: ServiceKey::new(namespace, format!("s{index}")),
            uid: None,
            created: created.map(|day| {
                k8s_openapi::jiff::Timestamp::from_second(1_780_000_000 + day * 86_400).unwrap()
            }),
            labels: if front { [("tier".to_string(), "front".to_string())].into() } else { BTreeMap::new() },
            load_balancer_class: None,
            requested_ips: requested_ips.unwrap_or_default(),
            requested_pool: requested_pool.map(|p| format!("p{p}")),
            sharing_key: sharing_key.map(String::from),
            allocated_from_pool: None,
            families: if dual_stack { families } else { families[..1].to_vec() },
            dual_stack,
            require_dual_stack: policy >= 4,
            ports,
            local_traffic_policy: local,
            backend_key: if local { "app=web".to_string() } else { String::new() },
            ingress_ips: ingress_ips.unwrap_or_default(),
        }
    }
}

fn arb_services() -> impl Strategy<Value = Vec<LbService>> {
    (0usize..14).prop_flat_map(|count| (0..count).map(arb_service).collect::<Vec<_>>())
}

fn arb_namespaces() -> impl Strategy<Value = NamespaceLabels> {
    any::<bool>().prop_map(|web| {
        let mut namespaces = NamespaceLabels::new();
        if web {
            namespaces.insert("a".into(), [("team".to_string(), "web".to_string())].into());
        }
        namespaces
    })
}

fn arb_frozen() -> impl Strategy<Value = Vec<(ServiceKey, Vec<IpAddr>)>> {
    proptest::collection::vec(arb_ip(), 0..=1).prop_map(|ips| {
        ips.into_iter()
            .enumerate()
            .map(|(index, ip)| (ServiceKey::new("c", format!("frozen{index}")), vec![ip]))
            .collect()
    })
}

fn run(
    config: &LbConfig,
    services: &[LbService],
    frozen: &[(ServiceKey, Vec<IpAddr>)],
    namespaces: &NamespaceLabels,
) -> Allocation {
    allocate(
        config,
        services,
        frozen.iter().map(|(key, ips)| (key, ips.as_slice())),
        namespaces,
    )
}

/// Whether the pool's serviceAllocation lets the Service in (the oracle: the rule as
/// the IPAddressPool documentation states it).
fn admits(pool: &Pool, service: &LbService, namespaces: &NamespaceLabels) -> bool {
    let Some(allocation) = &pool.allocation else {
        return true;
    };
    let namespace = &*service.key.namespace;
    let empty = BTreeMap::new();
    let labels = namespaces.get(namespace).unwrap_or(&empty);
    let namespace_ok = (allocation.namespaces.is_empty()
        && allocation.namespace_selectors.is_empty())
        || allocation.namespaces.iter().any(|name| name == namespace)
        || allocation
            .namespace_selectors
            .iter()
            .any(|selector| selector.matches(labels));
    let service_ok = allocation.service_selectors.is_empty()
        || allocation
            .service_selectors
            .iter()
            .any(|selector| selector.matches(&service.labels));
    namespace_ok && service_ok
}

fn may_share(a: &LbService, b: &LbService) -> bool {
    a.sharing_key.is_some()
        && a.sharing_key == b.sharing_key
        && a.backend_key == b.backend_key
        && a.ports.iter().all(|port| !b.ports.contains(port))
}

/// The services as a restarted allocator reads them back: ingress and pool
/// annotation as written.
fn as_written(services: &[LbService], allocation: &Allocation) -> Vec<LbService> {
    services
        .iter()
        .map(|service| {
            let mut service = service.clone();
            match &allocation.services[&service.key].result {
                Ok(assignment) => {
                    service.ingress_ips = assignment.ips.clone();
                    service.allocated_from_pool = Some(assignment.pool.clone());
                }
                Err(_) => {
                    service.ingress_ips.clear();
                    service.allocated_from_pool = None;
                }
            }
            service
        })
        .collect()
}

fn rank(pool: &Pool) -> (bool, bool, i32, String) {
    // Pinned (with serviceAllocation) before open; prioritized before unset; lower
    // priority first; then by name.
    match &pool.allocation {
        Some(allocation) => (
            false,
            allocation.priority <= 0,
            allocation.priority,
            pool.name.clone(),
        ),
        None => (true, false, 0, pool.name.clone()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn no_address_is_given_twice_unless_sharing_allows_it(
        config in arb_config(), services in arb_services(), frozen in arb_frozen(),
        namespaces in arb_namespaces(),
    ) {
        let allocation = run(&config, &services, &frozen, &namespaces);
        let by_key: BTreeMap<&ServiceKey, &LbService> =
            services.iter().map(|service| (&service.key, service)).collect();
        let mut users: BTreeMap<IpAddr, Vec<&ServiceKey>> = BTreeMap::new();
        for (key, assignment) in allocation.assignments() {
            for ip in &assignment.ips {
                users.entry(*ip).or_default().push(key);
            }
        }
        for (_, ips) in &frozen {
            for ip in ips {
                prop_assert!(!users.contains_key(ip), "frozen {ip} given to {:?}", users[ip]);
            }
        }
        for (ip, keys) in &users {
            for (i, a) in keys.iter().enumerate() {
                for b in &keys[i + 1..] {
                    prop_assert!(
                        may_share(by_key[a], by_key[b]),
                        "{ip} given to {a} and {b}, who may not share it"
                    );
                }
            }
        }
    }

    #[test]
    fn every_address_is_in_its_pool_of_the_right_family_and_as_requested(
        config in arb_config(), services in arb_services(), frozen in arb_frozen(),
        namespaces in arb_namespaces(),
    ) {
        let allocation = run(&config, &services, &frozen, &namespaces);
        prop_assert_eq!(allocation.services.len(), services.len());
        for service in &services {
            let Ok(assignment) = &allocation.services[&service.key].result else {
                continue;
            };
            let pool = &config.pools[&assignment.pool];
            prop_assert!(admits(pool, service, &namespaces), "{} in {}", service.key, pool.name);
            let families: BTreeSet<Family> =
                assignment.ips.iter().map(|ip| Family::of(*ip)).collect();
            prop_assert_eq!(families.len(), assignment.ips.len(), "one address per family");
            for ip in &assignment.ips {
                prop_assert!(pool.may_assign(*ip), "{} not in {}", ip, pool.name);
                prop_assert!(service.families.contains(&Family::of(*ip)));
            }
            if !service.dual_stack {
                prop_assert_eq!(assignment.ips.len(), 1);
                prop_assert_eq!(Family::of(assignment.ips[0]), service.families[0]);
            } else if service.require_dual_stack {
                prop_assert_eq!(assignment.ips.len(), 2);
            }
            let kept = allocation.services[&service.key].kept;
            if kept {
                prop_assert_eq!(&assignment.ips, &service.ingress_ips);
            }
            if !service.requested_ips.is_empty() {
                let requested: BTreeSet<&IpAddr> = service.requested_ips.iter().collect();
                let got: BTreeSet<&IpAddr> = assignment.ips.iter().collect();
                prop_assert_eq!(requested, got);
            }
            if let Some(pool) = &service.requested_pool {
                prop_assert_eq!(pool, &assignment.pool);
            }
            // (A Service holding addresses keeps them, and a PreferDualStack one gets
            // its second family from the same pool, whatever the pool's autoAssign.)
            if service.requested_ips.is_empty()
                && service.requested_pool.is_none()
                && service.ingress_ips.is_empty()
            {
                prop_assert!(pool.auto_assign, "{} auto-assigned from {}", service.key, pool.name);
            }
        }
    }

    #[test]
    fn better_pools_are_full_when_a_service_is_given_a_worse_one(
        config in arb_config(), services in arb_services(), namespaces in arb_namespaces(),
    ) {
        // Only new, unrequested, single-stack assignments: the others are bound by
        // what they hold or ask for.
        let services: Vec<LbService> = services
            .into_iter()
            .map(|mut service| {
                service.ingress_ips.clear();
                service.requested_ips.clear();
                service.requested_pool = None;
                service
            })
            .collect();
        let allocation = run(&config, &services, &[], &namespaces);
        let used: BTreeSet<IpAddr> = allocation
            .assignments()
            .flat_map(|(_, assignment)| assignment.ips.iter().copied())
            .collect();
        for service in services.iter().filter(|service| !service.dual_stack) {
            let Ok(assignment) = &allocation.services[&service.key].result else {
                continue;
            };
            let given = &config.pools[&assignment.pool];
            let family = service.families[0];
            for better in config.pools.values().filter(|pool| {
                pool.auto_assign && admits(pool, service, &namespaces) && rank(pool) < rank(given)
            }) {
                for range in better.ranges.iter().filter(|range| Family::of(range.start) == family) {
                    for ip in range.iter() {
                        prop_assert!(
                            !better.may_assign(ip) || used.contains(&ip),
                            "{} got {} from {} while {} of the better pool {} was free",
                            service.key, assignment.ips[0], given.name, ip, better.name
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_result_does_not_depend_on_the_input_order(
        (config, services, shuffled) in (arb_config(), arb_services()).prop_flat_map(|(config, services)| {
            let shuffled = Just(services.clone()).prop_shuffle();
            (Just(config), Just(services), shuffled)
        }),
        frozen in arb_frozen(),
        namespaces in arb_namespaces(),
    ) {
        prop_assert_eq!(
            run(&config, &services, &frozen, &namespaces),
            run(&config, &shuffled, &frozen, &namespaces)
        );
    }

    #[test]
    fn running_again_on_its_own_output_changes_nothing(
        config in arb_config(), services in arb_services(), frozen in arb_frozen(),
        namespaces in arb_namespaces(),
    ) {
        let first = run(&config, &services, &frozen, &namespaces);
        let restarted = as_written(&services, &first);
        let second = run(&config, &restarted, &frozen, &namespaces);
        for service in &services {
            let before = &first.services[&service.key];
            let after = &second.services[&service.key];
            prop_assert_eq!(before.result.is_ok(), after.result.is_ok(), "{}", service.key);
            if let (Ok(before), Ok(after)) = (&before.result, &after.result) {
                prop_assert_eq!(before, after);
            }
            if after.result.is_ok() {
                prop_assert!(after.kept, "{} was not kept: {:?}", service.key, after);
            }
        }
    }

    #[test]
    fn a_removed_service_frees_its_addresses(
        config in arb_config(), services in arb_services(), namespaces in arb_namespaces(),
        pick in any::<proptest::sample::Index>(),
    ) {
        let settled = as_written(&services, &run(&config, &services, &[], &namespaces));
        let allocation = run(&config, &settled, &[], &namespaces);
        // A Service whose addresses nobody else uses.
        let alone: Vec<&LbService> = settled
            .iter()
            .filter(|service| {
                !service.ingress_ips.is_empty()
                    && allocation.assignments().all(|(key, assignment)| {
                        *key == service.key
                            || assignment.ips.iter().all(|ip| !service.ingress_ips.contains(ip))
                    })
            })
            .collect();
        prop_assume!(!alone.is_empty());
        let removed = alone[pick.index(alone.len())].clone();
        // Its successor asks for exactly its addresses, without a sharing key. It is
        // the oldest Service, so a PreferDualStack Service missing a family does not
        // take a freed address first.
        let mut successor = removed.clone();
        successor.key = ServiceKey::new(&*removed.key.namespace, "successor");
        successor.created = Some(k8s_openapi::jiff::Timestamp::from_second(0).unwrap());
        successor.ingress_ips.clear();
        successor.requested_ips = removed.ingress_ips.clone();
        successor.requested_pool = None;
        successor.sharing_key = None;
        let mut after: Vec<LbService> = settled
            .iter()
            .filter(|service| service.key != removed.key)
            .cloned()
            .collect();
        after.push(successor.clone());
        let next = run(&config, &after, &[], &namespaces);
        prop_assert!(!next.services.contains_key(&removed.key));
        let got: BTreeSet<&IpAddr> = next.ips(&successor.key).unwrap_or_default().iter().collect();
        let freed: BTreeSet<&IpAddr> = removed.ingress_ips.iter().collect();
        prop_assert_eq!(got, freed, "{:?}", next.services[&successor.key]);
        for service in &after {
            if service.key != successor.key && !service.ingress_ips.is_empty() {
                let now = next.ips(&service.key).unwrap_or_default();
                prop_assert!(
                    service.ingress_ips.iter().all(|ip| now.contains(ip)),
                    "{} moved from {:?} to {:?}", service.key, service.ingress_ips, now
                );
            }
        }
    }
}

/// The fixture Services as a manifests directory would hold them (with their
/// creation times): served oldest first, the address MetalLB wrote kept, the
/// unreadable and the foreign ones left alone.
#[test]
fn fixture_objects_are_served_oldest_first() {
    use ipvs_proxy::lb::ipam::{Refusal, allocate_objects};
    use k8s_openapi::api::core::v1::{Namespace, Service};

    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/metallb/ipam-services.json"
    );
    let list: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut services: Vec<Service> = serde_json::from_value(list["items"].clone()).unwrap();
    // One more whose request cannot be read, holding an address.
    let mut broken = services[0].clone();
    broken.metadata.name = Some("broken".into());
    broken.metadata.annotations =
        Some([("metallb.io/loadBalancerIPs".to_string(), "nope".to_string())].into());
    broken.status = serde_json::from_value(
        serde_json::json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.2"}]}}),
    )
    .unwrap();
    services.push(broken);
    let namespaces: Vec<Namespace> =
        vec![serde_json::from_value(serde_json::json!({"metadata": {"name": "shop"}})).unwrap()];
    let config = LbConfig {
        pools: [(
            "production".to_string(),
            Pool {
                name: "production".into(),
                labels: BTreeMap::new(),
                ranges: vec![
                    "192.0.2.0/28".parse().unwrap(),
                    "2001:db8:5::/124".parse().unwrap(),
                ],
                auto_assign: true,
                avoid_buggy_ips: true,
                allocation: Some(ServiceAllocation {
                    priority: 10,
                    namespaces: vec!["shop".into()],
                    ..ServiceAllocation::default()
                }),
            },
        )]
        .into(),
        ..LbConfig::default()
    };
    let (allocation, problems) = allocate_objects(&config, &services, &namespaces, None);
    let ips = |name: &str| -> Vec<String> {
        allocation
            .ips(&ServiceKey::new("shop", name))
            .unwrap_or_default()
            .iter()
            .map(IpAddr::to_string)
            .collect()
    };
    assert_eq!(ips("legacy"), ["192.0.2.1"]);
    assert_eq!(ips("api"), ["192.0.2.10"]);
    // web (10:00) before dns (10:05); .2 is held by the broken one.
    assert_eq!(ips("web"), ["192.0.2.3"]);
    assert_eq!(ips("dns"), ["192.0.2.4", "2001:db8:5::"]);
    assert_eq!(
        allocation.services[&ServiceKey::new("shop", "outside")].result,
        Err(Refusal::NotInAnyPool("198.51.100.9".parse().unwrap()))
    );
    for name in ["elsewhere", "internal", "broken"] {
        assert!(
            !allocation
                .services
                .contains_key(&ServiceKey::new("shop", name))
        );
    }
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].0, ServiceKey::new("shop", "broken"));
}
