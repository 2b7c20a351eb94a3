//! Desired-state model and diff, table-tested on Service/EndpointSlice JSON as the API
//! server returns it (tests/fixtures/k8s).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use testkit::k8s::fixture;

use ipvs_proxy::config::{self, Config};
use ipvs_proxy::model::{
    DesiredState, Family, KubeSet, Model, NodeInfo, Protocol, RealServer, ServiceKey,
    ServiceOutcome, SetEntry, Skipped, VipKind, VirtualServerKey,
};
use ipvs_proxy::plan::{
    Change, DiffOptions, DrainStarts, ObservedState, ObservedVirtualServer, diff,
};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn node_a() -> NodeInfo {
    let node: Node = fixture("node-a.json");
    NodeInfo::from_node(
        &node,
        vec![
            ip("192.168.50.11"),
            ip("fd00:50::11"),
            ip("127.0.0.1"),
            ip("::1"),
            ip("fe80::5054:ff:fe12:3456"),
        ],
    )
}

fn model_with(services: &[&str], slices: &[&str]) -> Model {
    let mut model = Model::new(Config::default(), node_a());
    for name in slices {
        model.apply_slice(fixture::<EndpointSlice>(name));
    }
    for name in services {
        model.apply_service(fixture::<Service>(name));
    }
    model
}

fn vs_key(addr: &str, port: u16, protocol: Protocol) -> VirtualServerKey {
    VirtualServerKey {
        addr: ip(addr),
        port,
        protocol,
    }
}

fn backends(state: &DesiredState, key: VirtualServerKey) -> BTreeSet<String> {
    state
        .virtual_servers
        .get(&key)
        .unwrap_or_else(|| panic!("no virtual server {key}"))
        .real_servers
        .iter()
        .map(|rs| {
            assert_eq!(rs.weight, 1);
            match rs.addr {
                IpAddr::V4(a) => format!("{a}:{}", rs.port),
                IpAddr::V6(a) => format!("[{a}]:{}", rs.port),
            }
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn node_info_reads_zone_and_primary_addresses() {
    let node = node_a();
    assert_eq!(node.name, "node-a");
    assert_eq!(node.zone.as_deref(), Some("zone-a"));
    assert_eq!(
        node.primary_addresses,
        vec![ip("192.168.50.11"), ip("fd00:50::11")]
    );
}

#[test]
fn cluster_ip_uses_ready_endpoints_per_port() {
    let state = model_with(&["svc-web.json"], &["eps-web.json"]).desired();
    assert!(state.errors.is_empty(), "{:?}", state.errors);
    assert_eq!(state.virtual_servers.len(), 2);
    let http = vs_key("10.96.12.34", 80, Protocol::Tcp);
    assert_eq!(
        backends(&state, http),
        set(&["10.244.1.10:8080", "10.244.2.11:8080"])
    );
    assert_eq!(
        backends(&state, vs_key("10.96.12.34", 443, Protocol::Tcp)),
        set(&["10.244.1.10:8443", "10.244.2.11:8443"])
    );
    let vs = &state.virtual_servers[&http];
    assert_eq!(&*vs.scheduler, "rr");
    assert_eq!(vs.persistence_timeout, None);
    assert_eq!(vs.kind, VipKind::ClusterIp);
    assert_eq!(&*vs.port_name, "http");
    assert_eq!(state.addresses, BTreeSet::from([ip("10.96.12.34")]));
    assert_eq!(
        state.ipsets.texts("KUBE-CLUSTER-IP"),
        set(&["10.96.12.34,tcp:80", "10.96.12.34,tcp:443"])
    );
    assert_eq!(state.ipsets.texts("KUBE-IPVS-IPS"), set(&["10.96.12.34"]));
    // Only node-a's endpoint is local: hairpin entries for it alone.
    assert_eq!(
        state.ipsets.texts("KUBE-LOOP-BACK"),
        set(&[
            "10.244.1.10,tcp:8080,10.244.1.10",
            "10.244.1.10,tcp:8443,10.244.1.10"
        ])
    );
}

#[test]
fn serving_terminating_endpoints_only_when_none_is_ready() {
    let state = model_with(&["svc-web.json"], &["eps-web-terminating.json"]).desired();
    // 10.244.2.13 is terminating but not serving: never used.
    assert_eq!(
        backends(&state, vs_key("10.96.12.34", 80, Protocol::Tcp)),
        set(&["10.244.2.12:8080"])
    );
}

#[test]
fn load_balancer_with_local_policy() {
    let state = model_with(&["svc-ingress-lb-local.json"], &["eps-ingress.json"]).desired();
    assert!(state.errors.is_empty(), "{:?}", state.errors);
    // Cluster IP: all endpoints; external paths: the local one only.
    assert_eq!(
        backends(&state, vs_key("10.96.40.7", 80, Protocol::Tcp)),
        set(&["10.244.1.20:8080", "10.244.2.21:8080"])
    );
    assert_eq!(
        backends(&state, vs_key("203.0.113.10", 80, Protocol::Tcp)),
        set(&["10.244.1.20:8080"])
    );
    // NodePort on the node's IPv4 address only: loopback and link-local are not served,
    // and the Service is IPv4-only.
    let node_ports: Vec<_> = state
        .virtual_servers
        .values()
        .filter(|vs| vs.kind == VipKind::NodePort)
        .map(|vs| vs.key)
        .collect();
    assert_eq!(
        node_ports,
        vec![vs_key("192.168.50.11", 31080, Protocol::Tcp)]
    );
    assert_eq!(backends(&state, node_ports[0]), set(&["10.244.1.20:8080"]));
    assert_eq!(
        state.addresses,
        BTreeSet::from([ip("10.96.40.7"), ip("203.0.113.10")])
    );
    assert_eq!(
        state.ipsets.texts("KUBE-LOAD-BALANCER"),
        set(&["203.0.113.10,tcp:80"])
    );
    assert_eq!(
        state.ipsets.texts("KUBE-LOAD-BALANCER-LOCAL"),
        set(&["203.0.113.10,tcp:80"])
    );
    assert_eq!(
        state.ipsets.texts("KUBE-LOAD-BALANCER-FW"),
        set(&["203.0.113.10,tcp:80"])
    );
    assert_eq!(
        state.ipsets.texts("KUBE-LOAD-BALANCER-SOURCE-CIDR"),
        set(&[
            "203.0.113.10,tcp:80,192.0.2.0/24",
            "203.0.113.10,tcp:80,10.0.0.0/8"
        ])
    );
    // No node address lies in the source ranges.
    assert!(
        state
            .ipsets
            .texts("KUBE-LOAD-BALANCER-SOURCE-IP")
            .is_empty()
    );
    assert_eq!(state.ipsets.texts("KUBE-NODE-PORT-TCP"), set(&["31080"]));
    assert_eq!(
        state.ipsets.texts("KUBE-NODE-PORT-LOCAL-TCP"),
        set(&["31080"])
    );
    assert_eq!(
        state.ipsets.texts("KUBE-HEALTH-CHECK-NODE-PORT"),
        set(&["32123"])
    );
    let health = &state.health_check_node_ports[&32123];
    assert_eq!(health.service, ServiceKey::new("ingress", "ingress"));
    assert_eq!(health.local_endpoints, 1);
}

#[test]
fn local_policy_without_local_endpoints_drops() {
    // On node-b the LB has node-b's endpoint; on node-c it has none and the external
    // virtual servers exist with no real server (traffic dropped, not forwarded).
    let mut model = model_with(&["svc-ingress-lb-local.json"], &["eps-ingress.json"]);
    let mut node = node_a();
    node.name = "node-c".into();
    model.set_node(node);
    let state = model.desired();
    assert!(backends(&state, vs_key("203.0.113.10", 80, Protocol::Tcp)).is_empty());
    assert_eq!(state.health_check_node_ports[&32123].local_endpoints, 0);
    assert_eq!(
        backends(&state, vs_key("10.96.40.7", 80, Protocol::Tcp)).len(),
        2
    );
}

#[test]
fn dual_stack_udp_and_tcp() {
    let state = model_with(
        &["svc-dns-dualstack.json"],
        &["eps-dns-v4.json", "eps-dns-v6.json"],
    )
    .desired();
    assert_eq!(state.virtual_servers.len(), 4);
    assert_eq!(
        backends(&state, vs_key("10.96.0.10", 53, Protocol::Udp)),
        set(&["10.244.1.2:53", "10.244.2.3:53"])
    );
    assert_eq!(
        backends(&state, vs_key("fd00:10:96::a", 53, Protocol::Tcp)),
        set(&["[fd00:10:244:1::2]:53", "[fd00:10:244:2::3]:53"])
    );
    assert_eq!(
        state.ipsets.texts("KUBE-6-CLUSTER-IP"),
        set(&["fd00:10:96::a,tcp:53", "fd00:10:96::a,udp:53"])
    );
    assert_eq!(
        state.ipsets.texts("KUBE-6-IPVS-IPS"),
        set(&["fd00:10:96::a"])
    );
}

#[test]
fn ignored_services() {
    let model = model_with(
        &[
            "svc-headless.json",
            "svc-externalname.json",
            "svc-other-proxy.json",
        ],
        &[],
    );
    let outcome = |name| model.outcome(&ServiceKey::new("default", name)).cloned();
    assert_eq!(
        outcome("db"),
        Some(Ok(ServiceOutcome::Skipped(Skipped::Headless)))
    );
    assert_eq!(
        outcome("upstream"),
        Some(Ok(ServiceOutcome::Skipped(Skipped::ExternalName)))
    );
    assert_eq!(
        outcome("mesh"),
        Some(Ok(ServiceOutcome::Skipped(Skipped::OtherProxy(
            "cilium".into()
        ))))
    );
    let state = model.desired();
    assert!(state.virtual_servers.is_empty());
    assert!(state.addresses.is_empty());
    assert!(state.errors.is_empty());
}

#[test]
fn malformed_services_are_skipped_with_a_reason_without_blocking_others() {
    let state = model_with(
        &[
            "svc-bad-ip.json",
            "svc-wrong-family.json",
            "svc-port-conflict.json",
            "svc-web.json",
        ],
        &["eps-web.json"],
    )
    .desired();
    let reasons: Vec<String> = state.errors.values().map(|e| e.to_string()).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons.contains(
            &"Service default/broken skipped: spec.clusterIPs[0] \"10.96.0.999\" is not an IP address"
                .to_string()
        ),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("Service default/mixed skipped:")
                && r.contains("is IPv6 but spec.ipFamilies[0] is \"IPv4\"")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("Service default/twice skipped:")
                && r.contains("repeats port 80/tcp")),
        "{reasons:?}"
    );
    assert_eq!(state.virtual_servers.len(), 2, "web is still served");
}

#[test]
fn session_affinity_and_internal_local_policy() {
    let mut model = model_with(&["svc-cache-affinity-itp-local.json"], &["eps-cache.json"]);
    let key = vs_key("10.96.8.8", 6379, Protocol::Tcp);
    let state = model.desired();
    assert_eq!(state.virtual_servers[&key].persistence_timeout, Some(600));
    // The only endpoint is on node-b: iTP=Local on node-a drops (API semantics).
    assert!(backends(&state, key).is_empty());
    let mut node = node_a();
    node.name = "node-b".into();
    model.set_node(node);
    assert_eq!(backends(&model.desired(), key), set(&["10.244.2.30:6379"]));
}

#[test]
fn topology_hints_narrow_to_the_zone() {
    let mut model = model_with(&["svc-api-topology.json"], &["eps-api-hints.json"]);
    let key = vs_key("10.96.9.9", 80, Protocol::Tcp);
    assert_eq!(
        backends(&model.desired(), key),
        set(&["10.244.1.40:8080", "10.244.3.42:8080"])
    );
    // A node without a zone label ignores hints.
    let mut node = node_a();
    node.zone = None;
    model.set_node(node);
    assert_eq!(backends(&model.desired(), key).len(), 3);
    // A zone no endpoint is hinted for: hints ignored, all endpoints used.
    let mut node = node_a();
    node.zone = Some("zone-z".into());
    model.set_node(node);
    assert_eq!(backends(&model.desired(), key).len(), 3);
}

#[test]
fn sctp_node_port_and_external_ips_per_family() {
    let model = model_with(&["svc-diameter-sctp.json"], &["eps-diameter.json"]);
    let state = model.desired();
    let keys: BTreeSet<_> = state.virtual_servers.keys().copied().collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            vs_key("10.96.11.11", 3868, Protocol::Sctp),
            vs_key("198.51.100.7", 3868, Protocol::Sctp),
            vs_key("192.168.50.11", 30868, Protocol::Sctp),
        ])
    );
    assert_eq!(
        state.ipsets.texts("KUBE-NODE-PORT-SCTP-HASH"),
        set(&["192.168.50.11,sctp:30868"])
    );
    assert_eq!(
        state.ipsets.texts("KUBE-EXTERNAL-IP"),
        set(&["198.51.100.7,sctp:3868"])
    );
    // The IPv6 external IP has no IPv6 ClusterIP: left out with a warning.
    let Some(Ok(ServiceOutcome::Programmed(contribution))) =
        model.outcome(&ServiceKey::new("telco", "diameter"))
    else {
        panic!("diameter not programmed");
    };
    assert_eq!(contribution.warnings.len(), 1);
    assert!(contribution.warnings[0].contains("2001:db8::7"));
    assert_eq!(
        state.warnings[&ServiceKey::new("telco", "diameter")],
        vec!["spec.externalIPs[1] 2001:db8::7 ignored: the Service has no ClusterIP of its family"]
    );
}

#[test]
fn conflicting_external_ip_goes_to_the_older_service() {
    let state = model_with(&["svc-ext-new.json", "svc-ext-old.json"], &[]).desired();
    let vs = &state.virtual_servers[&vs_key("198.51.100.20", 80, Protocol::Tcp)];
    assert_eq!(vs.service, ServiceKey::new("default", "ext-old"));
    assert_eq!(state.errors.len(), 1);
    let error = state.errors.values().next().unwrap();
    assert_eq!(error.service, ServiceKey::new("default", "a-ext-new"));
    assert!(
        error
            .reason
            .contains("already claimed by the older Service default/ext-old"),
        "{}",
        error.reason
    );
    // The loser is skipped whole: its ClusterIP is not bound either.
    assert!(!state.addresses.contains(&ip("10.96.20.2")));
}

#[test]
fn updates_of_fields_the_model_does_not_read_cost_nothing() {
    let mut model = model_with(&["svc-web.json"], &["eps-web.json"]);
    let _ = model.take_touched();
    let before = model.recomputations();
    // What the API server changes on every write, and what kubectl apply adds.
    let mut service: Service = fixture("svc-web.json");
    service.metadata.resource_version = Some("999999".into());
    service.metadata.annotations = Some(
        [(
            "kubectl.kubernetes.io/last-applied-configuration".to_string(),
            "{\"big\": \"blob\"}".to_string(),
        )]
        .into(),
    );
    model.apply_service(service);
    let mut slice: EndpointSlice = fixture("eps-web.json");
    slice.metadata.resource_version = Some("1000000".into());
    slice.metadata.generation = Some(42);
    model.apply_slice(slice);
    assert_eq!(model.recomputations(), before);
    assert!(model.take_touched().is_empty());
    // A change the model reads is recomputed.
    let mut slice: EndpointSlice = fixture("eps-web.json");
    slice.endpoints.as_mut().unwrap().truncate(1);
    model.apply_slice(slice);
    assert_eq!(model.recomputations(), before + 1);
    assert!(!model.take_touched().is_empty());
}

#[test]
fn updates_recompute_only_the_changed_service() {
    let mut model = model_with(
        &[
            "svc-web.json",
            "svc-dns-dualstack.json",
            "svc-ingress-lb-local.json",
        ],
        &["eps-web.json", "eps-dns-v4.json", "eps-ingress.json"],
    );
    let before = model.recomputations();
    model.apply_slice(fixture("eps-web-terminating.json"));
    assert_eq!(model.recomputations(), before + 1);
    model.remove_slice("default", "web-7xk2p");
    assert_eq!(model.recomputations(), before + 2);
    let state = model.desired();
    assert!(backends(&state, vs_key("10.96.12.34", 80, Protocol::Tcp)).is_empty());
    model.remove_service(&ServiceKey::new("default", "web"));
    assert!(!model.desired().addresses.contains(&ip("10.96.12.34")));
    // A slice of an unknown Service does not compute anything.
    model.apply_slice(fixture("eps-cache.json"));
    assert_eq!(model.recomputations(), before + 2);
}

#[test]
fn configured_scheduler_and_node_port_addresses() {
    let loaded = config::parse(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n\
         ipvs:\n  scheduler: mh\nnodePortAddresses: [\"10.255.0.0/16\", primary]\n",
    )
    .unwrap();
    let mut model = Model::new(loaded.config, node_a());
    model.apply_slice(fixture("eps-ingress.json"));
    model.apply_service(fixture("svc-ingress-lb-local.json"));
    let state = model.desired();
    assert!(
        state
            .virtual_servers
            .values()
            .all(|vs| &*vs.scheduler == "mh")
    );
    assert_eq!(
        state.node_port_addresses,
        BTreeSet::from([ip("192.168.50.11"), ip("fd00:50::11")])
    );
}

// ---------------------------------------------------------------- diff

fn options() -> DiffOptions {
    DiffOptions {
        exclude_cidrs: vec!["10.250.0.0/16".parse().unwrap()],
        max_drain: Duration::from_secs(300),
    }
}

/// The observed state after applying `state` faithfully.
fn observed_from(state: &DesiredState) -> ObservedState {
    ObservedState::programmed(state)
}

#[test]
fn diff_from_empty_is_ordered_and_converges() {
    let state = model_with(&["svc-ingress-lb-local.json"], &["eps-ingress.json"]).desired();
    let plan = diff(
        &state,
        &ObservedState::default(),
        &options(),
        &DrainStarts::new(),
        Instant::now(),
    );
    let first_vs = plan
        .changes
        .iter()
        .position(|c| matches!(c, Change::AddVirtualServer(_)))
        .unwrap();
    let last_address = plan
        .changes
        .iter()
        .rposition(|c| matches!(c, Change::AddAddress(_)))
        .unwrap();
    assert!(
        last_address < first_vs,
        "addresses are bound before IPVS serves them"
    );
    let adds = plan
        .changes
        .iter()
        .filter(|c| matches!(c, Change::AddVirtualServer(_)))
        .count();
    assert_eq!(adds, state.virtual_servers.len());
    // Applying faithfully leaves nothing to do.
    let again = diff(
        &state,
        &observed_from(&state),
        &options(),
        &DrainStarts::new(),
        Instant::now(),
    );
    assert_eq!(again.changes, vec![]);
}

#[test]
fn diff_drains_removed_tcp_backends_and_deletes_udp_at_once() {
    let mut model = model_with(
        &["svc-web.json", "svc-dns-dualstack.json"],
        &["eps-web.json", "eps-dns-v4.json"],
    );
    let before = model.desired();
    let mut observed = observed_from(&before);
    for vs in &mut observed.virtual_servers {
        for rs in &mut vs.real_servers {
            rs.active_connections = 3;
        }
    }
    // 10.244.2.11 (web) and 10.244.2.3 (dns) go away.
    let mut web: EndpointSlice = fixture("eps-web.json");
    web.endpoints
        .as_mut()
        .unwrap()
        .retain(|e| e.addresses[0] != "10.244.2.11");
    model.apply_slice(web);
    let mut dns: EndpointSlice = fixture("eps-dns-v4.json");
    dns.endpoints
        .as_mut()
        .unwrap()
        .retain(|e| e.addresses[0] != "10.244.2.3");
    model.apply_slice(dns);
    let desired = model.desired();

    let t0 = Instant::now();
    let plan = diff(&desired, &observed, &options(), &DrainStarts::new(), t0);
    let http = vs_key("10.96.12.34", 80, Protocol::Tcp);
    let dns_udp = vs_key("10.96.0.10", 53, Protocol::Udp);
    let dns_tcp = vs_key("10.96.0.10", 53, Protocol::Tcp);
    assert!(plan.changes.contains(&Change::UpdateRealServer {
        virtual_server: http,
        real_server: RealServer {
            addr: ip("10.244.2.11"),
            port: 8080,
            weight: 0
        },
    }));
    assert!(plan.changes.contains(&Change::DeleteRealServer {
        virtual_server: dns_udp,
        addr: ip("10.244.2.3"),
        port: 53,
    }));
    assert!(plan.changes.contains(&Change::UpdateRealServer {
        virtual_server: dns_tcp,
        real_server: RealServer {
            addr: ip("10.244.2.3"),
            port: 53,
            weight: 0
        },
    }));
    assert_eq!(plan.draining.len(), 3, "web http, web https, dns tcp");

    // The kernel now shows weight 0. Within the bound: nothing to do.
    for vs in &mut observed.virtual_servers {
        for rs in &mut vs.real_servers {
            if rs.addr == ip("10.244.2.11") || rs.addr == ip("10.244.2.3") {
                rs.weight = 0;
            }
        }
        if vs.key == dns_udp {
            vs.real_servers.retain(|rs| rs.addr != ip("10.244.2.3"));
        }
    }
    let later = diff(
        &desired,
        &observed,
        &options(),
        &plan.draining,
        t0 + Duration::from_secs(60),
    );
    assert_eq!(later.changes, vec![]);
    assert_eq!(later.draining, plan.draining, "drain start kept");

    // Connections on http end: deleted; https still busy past the bound: deleted too.
    for vs in &mut observed.virtual_servers {
        if vs.key == http {
            for rs in &mut vs.real_servers {
                rs.active_connections = 0;
            }
        }
    }
    let at_60 = diff(
        &desired,
        &observed,
        &options(),
        &later.draining,
        t0 + Duration::from_secs(61),
    );
    assert_eq!(
        at_60.changes,
        vec![Change::DeleteRealServer {
            virtual_server: http,
            addr: ip("10.244.2.11"),
            port: 8080
        }]
    );
    let expired = diff(
        &desired,
        &observed,
        &options(),
        &at_60.draining,
        t0 + Duration::from_secs(301),
    );
    assert_eq!(expired.changes.len(), 3, "{:?}", expired.changes);
    assert!(expired.draining.is_empty());

    // After a restart (no drain starts), a weight-0 undesired real server is recognised
    // as draining and not reset or deleted at once.
    let restarted = diff(
        &desired,
        &observed,
        &options(),
        &DrainStarts::new(),
        t0 + Duration::from_secs(400),
    );
    assert!(!restarted.changes.iter().any(|c| matches!(
        c,
        Change::DeleteRealServer { virtual_server, .. } if *virtual_server == dns_tcp
    )));
    assert_eq!(restarted.draining.len(), 2);
}

#[test]
fn diff_re_adds_a_draining_backend_that_comes_back() {
    let state = model_with(&["svc-web.json"], &["eps-web.json"]).desired();
    let mut observed = observed_from(&state);
    observed.virtual_servers[0].real_servers[0].weight = 0;
    let plan = diff(
        &state,
        &observed,
        &options(),
        &DrainStarts::new(),
        Instant::now(),
    );
    assert_eq!(plan.changes.len(), 1);
    assert!(matches!(
        plan.changes[0],
        Change::UpdateRealServer {
            real_server: RealServer { weight: 1, .. },
            ..
        }
    ));
}

#[test]
fn diff_never_touches_foreign_or_excluded_virtual_servers() {
    let state = model_with(&["svc-web.json"], &["eps-web.json"]).desired();
    let mut observed = observed_from(&state);
    let foreign = |addr: &str, port: u16| ObservedVirtualServer {
        key: vs_key(addr, port, Protocol::Tcp),
        scheduler: "wlc".into(),
        persistence_timeout: None,
        real_servers: vec![],
    };
    // keepalived's VIP on a node address, not in our NodePort sets.
    observed.virtual_servers.push(foreign("192.168.50.11", 443));
    // An address in excludeCIDRs, even bound on kube-ipvs0: neither deleted nor unbound.
    observed.virtual_servers.push(foreign("10.250.0.1", 80));
    observed.addresses.insert(ip("10.250.0.1"));
    // A stale ClusterIP of ours (bound), a stale NodePort of ours (in our set), and a
    // virtual server of a deleted Service we find only in KUBE-IPVS-IPS.
    observed.virtual_servers.push(foreign("10.96.99.1", 80));
    observed.addresses.insert(ip("10.96.99.1"));
    observed
        .virtual_servers
        .push(foreign("192.168.50.11", 30999));
    observed
        .ipsets
        .add(KubeSet::NodePortTcp, Family::V4, SetEntry::Port(30999));
    observed.virtual_servers.push(foreign("10.96.99.2", 80));
    observed
        .ipsets
        .add(KubeSet::IpvsIps, Family::V4, SetEntry::Ip(ip("10.96.99.2")));
    // A set that is not ours cannot even be named in the observed state: the kernel
    // adapter reads only the catalog's sets.

    let plan = diff(
        &state,
        &observed,
        &options(),
        &DrainStarts::new(),
        Instant::now(),
    );
    let deleted: BTreeSet<_> = plan
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::DeleteVirtualServer(key) => Some(*key),
            _ => None,
        })
        .collect();
    assert_eq!(
        deleted,
        BTreeSet::from([
            vs_key("10.96.99.1", 80, Protocol::Tcp),
            vs_key("192.168.50.11", 30999, Protocol::Tcp),
            vs_key("10.96.99.2", 80, Protocol::Tcp),
        ])
    );
    // Unbind surplus addresses and stale set entries after the virtual servers go.
    let tail: Vec<String> = plan.changes[deleted.len()..]
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        tail,
        vec![
            "delete 10.96.99.2 from ipset KUBE-IPVS-IPS",
            "delete 30999 from ipset KUBE-NODE-PORT-TCP",
            "unbind 10.96.99.1 from kube-ipvs0",
        ]
    );
}

#[test]
fn diff_updates_scheduler_and_persistence_in_place() {
    let state = model_with(&["svc-cache-affinity-itp-local.json"], &["eps-cache.json"]).desired();
    let mut observed = observed_from(&state);
    observed.virtual_servers[0].persistence_timeout = None;
    observed.virtual_servers[0].scheduler = "wrr".into();
    let plan = diff(
        &state,
        &observed,
        &options(),
        &DrainStarts::new(),
        Instant::now(),
    );
    assert_eq!(plan.changes.len(), 1);
    assert_eq!(
        plan.changes[0].to_string(),
        "update virtual server 10.96.8.8:6379/tcp (rr)"
    );
}

#[test]
fn scale_five_thousand_services() {
    // 5000 Services x 2 ports x 10 endpoints, built from the web fixtures.
    let template_service: serde_json::Value = fixture("svc-web.json");
    let template_slice: serde_json::Value = fixture("eps-web.json");
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for index in 0..5000u32 {
        let name = format!("web-{index}");
        let mut service = template_service.clone();
        service["metadata"]["name"] = name.clone().into();
        let cluster_ip = format!("10.96.{}.{}", index / 250, index % 250 + 1);
        service["spec"]["clusterIP"] = cluster_ip.clone().into();
        service["spec"]["clusterIPs"] = serde_json::json!([cluster_ip]);
        services.push(serde_json::from_value::<Service>(service).unwrap());
        let mut slice = template_slice.clone();
        slice["metadata"]["name"] = format!("{name}-abcde").into();
        slice["metadata"]["labels"]["kubernetes.io/service-name"] = name.into();
        let endpoints: Vec<serde_json::Value> = (0..10u32)
            .map(|e| {
                serde_json::json!({
                    "addresses": [format!("10.{}.{}.{}", 100 + index / 250, index % 250, e + 1)],
                    "conditions": {"ready": true, "serving": true, "terminating": false},
                    "nodeName": if e == 0 { "node-a" } else { "node-b" }
                })
            })
            .collect();
        slice["endpoints"] = endpoints.into();
        slices.push(serde_json::from_value::<EndpointSlice>(slice).unwrap());
    }
    let changed_slice = slices[42].clone();

    let started = Instant::now();
    let mut model = Model::new(Config::default(), node_a());
    model.replace_all(services, slices);
    let build = started.elapsed();
    let started = Instant::now();
    let state = model.desired();
    let merge = started.elapsed();
    assert_eq!(state.virtual_servers.len(), 10_000);
    assert_eq!(
        state
            .virtual_servers
            .values()
            .map(|vs| vs.real_servers.len())
            .sum::<usize>(),
        100_000
    );

    let before = model.recomputations();
    let started = Instant::now();
    let mut slice = changed_slice;
    slice.endpoints.as_mut().unwrap().truncate(3);
    model.apply_slice(slice);
    let update = started.elapsed();
    assert_eq!(model.recomputations(), before + 1);
    let started = Instant::now();
    let plan = diff(
        &model.desired(),
        &observed_from(&state),
        &options(),
        &DrainStarts::new(),
        Instant::now(),
    );
    let diff_time = started.elapsed();
    // 7 endpoints removed from 2 virtual servers, none busy: 14 deletions and the
    // 7 hairpin-free remote endpoints leave no ipset change.
    assert_eq!(plan.changes.len(), 14, "{:?}", plan.changes);
    println!(
        "5000 services / 10000 virtual servers / 100000 real servers: build {build:?}, \
         merge {merge:?}, one slice update {update:?}, merge+diff {diff_time:?}"
    );
}
