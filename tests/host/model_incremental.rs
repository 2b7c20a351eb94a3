//! The incrementally maintained state (`Model::state`) against the from-scratch merge
//! (`Model::desired`): after every update of a long pseudo-random sequence over real
//! object JSON, including conflicting Services, the two must be equal, and each update
//! must report as touched exactly what changed.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use testkit::k8s::fixture;

use ipvs_proxy::config::Config;
use ipvs_proxy::model::{
    DesiredState, Model, NodeInfo, Protocol, ServiceKey, Touched, VirtualServerKey,
};
use ipvs_proxy::plan::{
    self, DiffOptions, DrainStarts, ObservedState, ObservedVirtualServer, Scope,
};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

fn node(addresses: &[&str]) -> NodeInfo {
    NodeInfo {
        name: "node-a".into(),
        zone: Some("zone-a".into()),
        addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        primary_addresses: Vec::new(),
    }
}

const SERVICES: &[&str] = &[
    "svc-api-topology.json",
    "svc-bad-ip.json",
    "svc-cache-affinity-itp-local.json",
    "svc-diameter-sctp.json",
    "svc-dns-dualstack.json",
    "svc-ext-new.json",
    "svc-ext-old.json",
    "svc-externalname.json",
    "svc-headless.json",
    "svc-ingress-lb-local.json",
    "svc-other-proxy.json",
    "svc-port-conflict.json",
    "svc-web.json",
    "svc-wrong-family.json",
];

const SLICES: &[&str] = &[
    "eps-api-hints.json",
    "eps-cache.json",
    "eps-diameter.json",
    "eps-dns-v4.json",
    "eps-dns-v6.json",
    "eps-ingress.json",
    "eps-web-terminating.json",
    "eps-web.json",
];

/// A small deterministic generator, so a failure replays.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

/// The same Service with a different creation time, so conflicts change hands.
fn aged(mut service: Service, year: u32) -> Service {
    let text = format!("\"{year}-01-01T00:00:00Z\"");
    service.metadata.creation_timestamp = Some(serde_json::from_str(&text).unwrap());
    service
}

/// The same slice with its endpoints cut to the first `keep`.
fn trimmed(mut slice: EndpointSlice, keep: usize) -> EndpointSlice {
    if let Some(endpoints) = slice.endpoints.as_mut() {
        endpoints.truncate(keep);
    }
    slice
}

/// Everything a touched report must cover: each part that differs between two states.
fn differences(before: &DesiredState, after: &DesiredState) -> Touched {
    let mut touched = Touched::default();
    let keys: BTreeSet<_> = before
        .virtual_servers
        .keys()
        .chain(after.virtual_servers.keys())
        .copied()
        .collect();
    for key in keys {
        if before.virtual_servers.get(&key) != after.virtual_servers.get(&key) {
            touched.virtual_servers.insert(key);
        }
    }
    touched.addresses = before
        .addresses
        .symmetric_difference(&after.addresses)
        .copied()
        .collect();
    let sets: BTreeSet<_> = before
        .ipsets
        .0
        .keys()
        .chain(after.ipsets.0.keys())
        .collect();
    for set in sets {
        for entry in before
            .ipsets
            .get(set)
            .symmetric_difference(&after.ipsets.get(set))
        {
            touched.entries.insert((*set, *entry));
        }
    }
    touched.health_checks = before.health_check_node_ports != after.health_check_node_ports;
    touched
}

#[test]
fn incremental_state_equals_the_full_merge_after_every_update() {
    let services: Vec<Service> = SERVICES.iter().map(|name| fixture(name)).collect();
    let slices: Vec<EndpointSlice> = SLICES.iter().map(|name| fixture(name)).collect();
    let mut model = Model::new(Config::default(), node(&["192.168.50.11", "fd00:50::11"]));
    let mut rng = Lcg(7);
    let mut touched_counts = Vec::new();
    for step in 0..600 {
        let before = model.state().clone();
        let what = rng.below(10);
        let description = match what {
            0 | 1 => {
                let service = services[rng.below(services.len())].clone();
                let key = ServiceKey::of_service(&service);
                model.apply_service(service);
                format!("apply Service {key}")
            }
            2 => {
                let service = aged(
                    services[rng.below(services.len())].clone(),
                    2000 + rng.below(30) as u32,
                );
                let key = ServiceKey::of_service(&service);
                model.apply_service(service);
                format!("apply aged Service {key}")
            }
            3 => {
                let key = ServiceKey::of_service(&services[rng.below(services.len())]);
                model.remove_service(&key);
                format!("remove Service {key}")
            }
            4 | 5 => {
                let slice = slices[rng.below(slices.len())].clone();
                let name = slice.metadata.name.clone().unwrap_or_default();
                model.apply_slice(slice);
                format!("apply slice {name}")
            }
            6 => {
                let keep = rng.below(3);
                let slice = trimmed(slices[rng.below(slices.len())].clone(), keep);
                let name = slice.metadata.name.clone().unwrap_or_default();
                model.apply_slice(slice);
                format!("apply slice {name} trimmed to {keep}")
            }
            7 => {
                let slice = &slices[rng.below(slices.len())];
                let namespace = slice.metadata.namespace.clone().unwrap_or_default();
                let name = slice.metadata.name.clone().unwrap_or_default();
                model.remove_slice(&namespace, &name);
                format!("remove slice {namespace}/{name}")
            }
            8 => {
                // A relist: a random subset of everything, one object maybe changed.
                let keep: Vec<Service> = services
                    .iter()
                    .filter(|_| rng.below(4) != 0)
                    .cloned()
                    .collect();
                let mut keep_slices: Vec<EndpointSlice> = slices
                    .iter()
                    .filter(|_| rng.below(4) != 0)
                    .cloned()
                    .collect();
                if let Some(first) = keep_slices.first_mut() {
                    *first = trimmed(first.clone(), 1);
                }
                let counts = (keep.len(), keep_slices.len());
                model.replace_all(keep, keep_slices);
                format!("relist with {counts:?}")
            }
            _ => {
                let choices: [&[&str]; 3] = [
                    &["192.168.50.11", "fd00:50::11"],
                    &["192.168.50.11"],
                    &["192.168.50.11", "192.168.60.11", "fd00:50::11"],
                ];
                let addresses = choices[rng.below(choices.len())];
                model.set_node(node(addresses));
                format!("node addresses {addresses:?}")
            }
        };
        let full = model.desired();
        assert_eq!(
            model.state(),
            &full,
            "step {step}: {description}: the incremental state differs from the full merge"
        );
        let touched = model.take_touched();
        if !touched.all {
            let needed = differences(&before, &full);
            assert!(
                needed.virtual_servers.is_subset(&touched.virtual_servers)
                    && needed.addresses.is_subset(&touched.addresses)
                    && needed.entries.is_subset(&touched.entries)
                    && (!needed.health_checks || touched.health_checks),
                "step {step}: {description}: touched {touched:?} misses some of {needed:?}"
            );
            touched_counts.push(touched.virtual_servers.len());
        }
    }
    // The sequence exercised incremental updates, not only full rebuilds.
    assert!(touched_counts.len() > 300, "{}", touched_counts.len());
}

#[test]
fn one_slice_update_touches_only_its_service() {
    let mut model = Model::new(Config::default(), node(&["192.168.50.11"]));
    for name in SLICES {
        model.apply_slice(fixture(name));
    }
    for name in SERVICES {
        model.apply_service(fixture(name));
    }
    let all = model.take_touched();
    assert!(all.all, "the first fill is a full change");
    assert!(model.take_touched().is_empty());

    let web: EndpointSlice = fixture("eps-web.json");
    let web_before = model.state().clone();
    model.apply_slice(trimmed(web, 1));
    let touched = model.take_touched();
    assert!(!touched.all);
    assert_eq!(touched.services, 1);
    let web = ServiceKey::new("default", "web");
    assert!(!touched.virtual_servers.is_empty());
    for key in &touched.virtual_servers {
        assert_eq!(web_before.virtual_servers[key].service, web, "{key}");
    }
    // Only real servers changed: no address, ipset entry or health check.
    let addresses: BTreeSet<IpAddr> = touched.addresses.clone();
    assert!(addresses.is_empty(), "{addresses:?}");
    assert!(
        touched
            .entries
            .iter()
            .all(|(set, _)| set.name() == "KUBE-LOOP-BACK"),
        "{:?}",
        touched.entries
    );
    assert!(!touched.health_checks);
}

/// What the kernel would hold after `state` was programmed, plus a foreign virtual
/// server (another program's) that no plan may touch.
fn kernel_holding(state: &DesiredState) -> ObservedState {
    let mut kernel = ObservedState::programmed(state);
    kernel.virtual_servers.push(ObservedVirtualServer {
        key: VirtualServerKey {
            addr: "192.0.2.200".parse().unwrap(),
            port: 80,
            protocol: Protocol::Tcp,
        },
        scheduler: "wlc".into(),
        persistence_timeout: None,
        real_servers: Vec::new(),
    });
    kernel
}

#[test]
fn the_plan_for_the_touched_scope_equals_the_full_plan() {
    let services: Vec<Service> = SERVICES.iter().map(|name| fixture(name)).collect();
    let slices: Vec<EndpointSlice> = SLICES.iter().map(|name| fixture(name)).collect();
    let mut model = Model::new(Config::default(), node(&["192.168.50.11", "fd00:50::11"]));
    let options = DiffOptions {
        exclude_cidrs: Vec::new(),
        max_drain: Duration::from_secs(60),
    };
    let now = Instant::now();
    let mut rng = Lcg(11);
    let mut compared = 0;
    let mut nonempty = 0;
    for step in 0..400 {
        let before = model.state().clone();
        match rng.below(5) {
            0 => model.apply_service(services[rng.below(services.len())].clone()),
            1 => model.remove_service(&ServiceKey::of_service(
                &services[rng.below(services.len())],
            )),
            2 => model.apply_slice(slices[rng.below(slices.len())].clone()),
            3 => model.apply_slice(trimmed(
                slices[rng.below(slices.len())].clone(),
                rng.below(3),
            )),
            _ => {
                let slice = &slices[rng.below(slices.len())];
                model.remove_slice(
                    slice.metadata.namespace.as_deref().unwrap_or_default(),
                    slice.metadata.name.as_deref().unwrap_or_default(),
                );
            }
        }
        let touched = model.take_touched();
        let kernel = kernel_holding(&before);
        let full = plan::diff(model.state(), &kernel, &options, &DrainStarts::new(), now);
        if touched.all {
            continue;
        }
        let scope = Scope::of(&touched);
        let read: Vec<ObservedVirtualServer> = kernel
            .virtual_servers
            .iter()
            .filter(|vs| scope.virtual_servers.contains(&vs.key))
            .cloned()
            .collect();
        let observed = scope.observed(read, &kernel.addresses, &kernel.ipsets);
        let scoped = plan::diff(
            &scope.desired(model.state()),
            &observed,
            &options,
            &DrainStarts::new(),
            now,
        );
        assert_eq!(scoped.changes, full.changes, "step {step}");
        compared += 1;
        nonempty += usize::from(!full.changes.is_empty());
    }
    assert!(compared > 300 && nonempty > 50, "{compared} {nonempty}");
}
