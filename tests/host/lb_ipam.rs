//! The LoadBalancer IPAM controller (src/lb/ipam/controller.rs) against testkit's
//! stateful API server: Services as the API server serves them
//! (tests/fixtures/metallb/ipam-services.json), status written through the status
//! subresource, Events, the Lease, two controllers racing for it, and an API server
//! that becomes unreachable. The pools' status counters: lb_ipam_pool_status.rs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ipvs_proxy::lb::ipam::controller::{
    IpamHandle, IpamOptions, REASON_ALLOCATED, REASON_BAD_REQUEST, REASON_CLEARED, REASON_FAILED,
    spawn_ipam,
};
use ipvs_proxy::observe::metrics::Metrics;
use metallb_config::{IpRange, LbConfig, Pool, ServiceAllocation};
use serde_json::{Value, json};
use testkit::store_server::{Reachability, RequestRecord, StoreServer};
use tokio::sync::watch;
use tokio::time::Instant;

pub(crate) const SERVICES: &str = "/api/v1/namespaces/shop/services";
const EVENTS: &str = "/apis/events.k8s.io/v1/events";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/ipvs-proxy-ipam";
const WAIT: Duration = Duration::from_secs(20);

pub(crate) fn fixture_services() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/metallb/ipam-services.json"
    );
    let list: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    list["items"].as_array().unwrap().clone()
}

fn namespace(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
    })
}

/// `production` (as tests/fixtures/metallb/ipaddresspool-production.json, with
/// avoidBuggyIPs), and, when `spare`, one more open address.
pub(crate) fn config(spare: bool) -> LbConfig {
    let range = |text: &str| text.parse::<IpRange>().unwrap();
    let mut pools = BTreeMap::new();
    pools.insert(
        "production".to_string(),
        Pool {
            name: "production".into(),
            labels: BTreeMap::new(),
            ranges: vec![range("192.0.2.0/28"), range("2001:db8:5::/124")],
            auto_assign: true,
            avoid_buggy_ips: true,
            allocation: Some(ServiceAllocation {
                priority: 10,
                namespaces: vec!["shop".into()],
                ..ServiceAllocation::default()
            }),
        },
    );
    if spare {
        pools.insert(
            "spare".to_string(),
            Pool {
                name: "spare".into(),
                labels: BTreeMap::new(),
                ranges: vec![range("203.0.113.1/32")],
                auto_assign: true,
                avoid_buggy_ips: false,
                allocation: None,
            },
        );
    }
    LbConfig {
        pools,
        ..LbConfig::default()
    }
}

pub(crate) fn options(identity: &str) -> IpamOptions {
    let mut options = IpamOptions::new(identity);
    options.lease_duration = Duration::from_secs(2);
    options.lease_grace = Duration::from_secs(1);
    options.confirm_interval = Duration::from_millis(200);
    options.settle = Duration::from_millis(20);
    options.retry = Duration::from_millis(300);
    options
}

struct Controller {
    handle: IpamHandle,
    config: watch::Sender<Arc<LbConfig>>,
}

fn start(server: &StoreServer, identity: &str, config: LbConfig) -> Controller {
    // RUST_LOG=ipvs_proxy=debug shows the controller's side.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (sender, receiver) = watch::channel(Arc::new(config));
    let handle = spawn_ipam(
        server.client_as(identity),
        options(identity),
        receiver,
        Arc::new(Metrics::new()),
    );
    Controller {
        handle,
        config: sender,
    }
}

/// A server holding the namespace `shop` and `services`. The server stamps
/// `creationTimestamp` itself, to the second, as the API server does; the Services are
/// created in name order so that the allocator's order (oldest first, then by name) is
/// the same whether or not a second passes between two of them.
pub(crate) fn server_with(mut services: Vec<Value>) -> StoreServer {
    let server = StoreServer::new();
    server.apply(namespace("shop"));
    services.sort_by_key(|service| service["metadata"]["name"].as_str().unwrap().to_string());
    for service in services {
        server.apply(service);
    }
    server
}

fn ingress(server: &StoreServer, name: &str) -> Vec<String> {
    let service = server
        .get(&format!("{SERVICES}/{name}"))
        .unwrap_or_else(|| panic!("no Service {name}"));
    service["status"]["loadBalancer"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|ingress| ingress["ip"].as_str().unwrap().to_string())
        .collect()
}

fn pool_annotation(server: &StoreServer, name: &str) -> Option<String> {
    server.get(&format!("{SERVICES}/{name}")).unwrap()["metadata"]["annotations"]
        ["metallb.io/ip-allocated-from-pool"]
        .as_str()
        .map(String::from)
}

pub(crate) async fn wait_for_ingress(server: &StoreServer, name: &str, expected: &[&str]) {
    server
        .wait_for(&format!("{SERVICES}/{name}"), WAIT, |service| {
            let got: Vec<&str> = service
                .and_then(|service| service["status"]["loadBalancer"]["ingress"].as_array())
                .into_iter()
                .flatten()
                .filter_map(|ingress| ingress["ip"].as_str())
                .collect();
            got == expected
        })
        .await;
}

async fn wait_for_pool(server: &StoreServer, name: &str, pool: Option<&str>) {
    server
        .wait_for(&format!("{SERVICES}/{name}"), WAIT, |service| {
            service.is_some_and(|service| {
                service["metadata"]["annotations"]["metallb.io/ip-allocated-from-pool"].as_str()
                    == pool
            })
        })
        .await;
}

/// The Events regarding `name`, as (reason, note).
fn events_for(server: &StoreServer, name: &str) -> Vec<(String, String)> {
    server
        .list(EVENTS)
        .into_iter()
        .filter(|event| event["regarding"]["name"] == name)
        .map(|event| {
            (
                event["reason"].as_str().unwrap_or_default().to_string(),
                event["note"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

async fn wait_for_event(server: &StoreServer, name: &str, reason: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some((_, note)) = events_for(server, name)
            .into_iter()
            .find(|(got, _)| got == reason)
        {
            return note;
        }
        assert!(
            Instant::now() < deadline,
            "no {reason} Event for {name}: {:?}",
            events_for(server, name)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_writing(handle: &IpamHandle, writing: bool) {
    let mut state = handle.writing();
    tokio::time::timeout(WAIT, state.wait_for(|now| *now == writing))
        .await
        .unwrap_or_else(|_| panic!("writing never became {writing}"))
        .unwrap();
}

/// The writes to Services (object or status), by user.
fn service_writes(server: &StoreServer) -> Vec<RequestRecord> {
    server
        .requests()
        .into_iter()
        .filter(|request| request.is_write() && request.path.contains("/services/"))
        .collect()
}

pub(crate) fn everyone_assigned() -> [(&'static str, Vec<&'static str>); 4] {
    [
        // Held before (written by MetalLB): kept.
        ("legacy", vec!["192.0.2.1"]),
        // Requested.
        ("api", vec!["192.0.2.10"]),
        // The first new Service: .0 is avoided (avoidBuggyIPs) and .1 is legacy's.
        ("dns", vec!["192.0.2.2", "2001:db8:5::"]),
        ("web", vec!["192.0.2.3"]),
    ]
}

#[tokio::test]
async fn services_get_addresses_the_pool_annotation_and_events() {
    let server = server_with(fixture_services());
    server.serve().await;
    let controller = start(&server, "node-a", config(false));

    for (name, ips) in everyone_assigned() {
        wait_for_ingress(&server, name, &ips).await;
        wait_for_pool(&server, name, Some("production")).await;
    }
    let note = wait_for_event(&server, "web", REASON_ALLOCATED).await;
    assert_eq!(note, "Assigned IP [192.0.2.3] from pool production");
    let note = wait_for_event(&server, "outside", REASON_FAILED).await;
    assert!(
        note.contains("198.51.100.9 is not in any IPAddressPool"),
        "{note}"
    );

    // Not ours: another class, a ClusterIP Service, and a refused one hold nothing.
    for name in ["elsewhere", "internal", "outside"] {
        assert_eq!(ingress(&server, name), Vec::<String>::new(), "{name}");
        assert_eq!(pool_annotation(&server, name), None, "{name}");
    }
    // legacy already held its address and pool: nothing written to it; the others'
    // status went through the status subresource with merge patches.
    let writes = service_writes(&server);
    assert!(
        writes.iter().all(
            |write| !write.path.ends_with("/legacy") && !write.path.ends_with("/legacy/status")
        ),
        "{writes:#?}"
    );
    for name in ["web", "api", "dns"] {
        let status: Vec<&RequestRecord> = writes
            .iter()
            .filter(|write| write.path == format!("{SERVICES}/{name}/status"))
            .collect();
        assert_eq!(status.len(), 1, "{name}: {writes:#?}");
        assert_eq!(status[0].method, "PATCH");
        assert_eq!(
            status[0].content_type.as_deref(),
            Some("application/merge-patch+json")
        );
        assert_eq!(status[0].user, "node-a");
    }
    controller.handle.stop().await.unwrap();
}

#[tokio::test]
async fn delete_and_type_change_release_addresses() {
    // One address (.1, avoidBuggyIPs keeps .0 out) in a /31: the first Service gets
    // it, the second waits for it.
    let mut config = config(false);
    let production = config.pools.get_mut("production").unwrap();
    production.ranges = vec!["192.0.2.0/31".parse().unwrap()];
    let services: Vec<Value> = fixture_services()
        .into_iter()
        .filter(|service| ["web", "dns"].contains(&service["metadata"]["name"].as_str().unwrap()))
        .map(|mut service| {
            // Both single-stack IPv4 here.
            service["spec"]["ipFamilies"] = json!(["IPv4"]);
            service["spec"]["ipFamilyPolicy"] = json!("SingleStack");
            service["spec"]["clusterIPs"] = json!([service["spec"]["clusterIP"]]);
            service
        })
        .collect();
    let server = server_with(services);
    server.serve().await;
    let controller = start(&server, "node-a", config);

    // Both created in the same second or dns first: dns is served first.
    wait_for_ingress(&server, "dns", &["192.0.2.1"]).await;
    let note = wait_for_event(&server, "web", REASON_FAILED).await;
    assert!(
        note.contains("no free IPv4 address in pool(s) production"),
        "{note}"
    );

    // dns becomes a ClusterIP Service: its status and annotation are cleared and web
    // gets the address.
    let mut dns = server.get(&format!("{SERVICES}/dns")).unwrap();
    dns["spec"]["type"] = json!("ClusterIP");
    server.apply(dns);
    wait_for_ingress(&server, "dns", &[]).await;
    wait_for_pool(&server, "dns", None).await;
    let note = wait_for_event(&server, "dns", REASON_CLEARED).await;
    assert!(note.contains("no longer a LoadBalancer"), "{note}");
    wait_for_ingress(&server, "web", &["192.0.2.1"]).await;

    // web deleted: a new Service gets the address.
    server.delete(&format!("{SERVICES}/web"));
    let mut api = fixture_services()
        .into_iter()
        .find(|service| service["metadata"]["name"] == "api")
        .unwrap();
    api["metadata"]["annotations"] = json!({});
    server.apply(api);
    wait_for_ingress(&server, "api", &["192.0.2.1"]).await;
    controller.handle.stop().await.unwrap();
}

#[tokio::test]
async fn a_restarted_controller_keeps_every_assignment_and_writes_nothing() {
    let server = server_with(fixture_services());
    server.serve().await;
    let first = start(&server, "node-a", config(true));
    for (name, ips) in everyone_assigned() {
        wait_for_ingress(&server, name, &ips).await;
    }
    // Let the annotation writes land too.
    for (name, _) in everyone_assigned() {
        wait_for_pool(&server, name, Some("production")).await;
    }
    first.handle.stop().await.unwrap();
    let before: Vec<Value> = server.list(SERVICES);
    server.clear_requests();

    // A new controller (another node) after a restart, and a new Service that would
    // sort first by name: it must go around the addresses in use.
    let mut early = fixture_services()
        .into_iter()
        .find(|service| service["metadata"]["name"] == "web")
        .unwrap();
    early["metadata"]["name"] = json!("aaa-new");
    early["metadata"]["creationTimestamp"] = json!("2026-11-21T00:00:00Z");
    server.apply(early);
    let second = start(&server, "node-b", config(true));
    wait_writing(&second.handle, true).await;
    wait_for_ingress(&server, "aaa-new", &["192.0.2.4"]).await;
    for (name, ips) in everyone_assigned() {
        assert_eq!(ingress(&server, name), ips, "{name}");
    }
    // Its only Service writes are for the new Service.
    let writes = service_writes(&server);
    assert!(!writes.is_empty());
    assert!(
        writes
            .iter()
            .all(|write| write.path.contains("/services/aaa-new")),
        "{writes:#?}"
    );
    for service in before {
        let name = service["metadata"]["name"].as_str().unwrap();
        let now = server.get(&format!("{SERVICES}/{name}")).unwrap();
        assert_eq!(
            now["metadata"]["resourceVersion"], service["metadata"]["resourceVersion"],
            "{name} was written again"
        );
    }
    second.handle.stop().await.unwrap();
}

#[tokio::test]
async fn two_controllers_race_for_the_lease_and_exactly_one_writes() {
    let server = server_with(fixture_services());
    server.serve().await;
    let a = start(&server, "node-a", config(true));
    let b = start(&server, "node-b", config(true));
    for (name, ips) in everyone_assigned() {
        wait_for_ingress(&server, name, &ips).await;
    }
    let holder = server.get(LEASE).unwrap()["spec"]["holderIdentity"]
        .as_str()
        .unwrap()
        .to_string();
    let (leader, follower, follower_name) = if holder == "node-a" {
        (a, b, "node-b")
    } else {
        (b, a, "node-a")
    };
    assert!(*leader.handle.writing().borrow());
    assert!(!*follower.handle.writing().borrow());
    let writers: Vec<String> = service_writes(&server)
        .into_iter()
        .map(|write| write.user)
        .collect();
    assert!(
        writers.iter().all(|user| *user == holder),
        "Service writes by {writers:?}, Lease held by {holder}"
    );
    // The follower did not even watch Services.
    assert!(
        server
            .requests()
            .iter()
            .all(|request| request.user != follower_name || !request.path.contains("services")),
        "the follower read Services"
    );

    // The leader stops (releasing the Lease): the follower takes over, reads the
    // addresses back, moves none, and serves a new Service.
    leader.handle.stop().await.unwrap();
    server.clear_requests();
    let mut late = fixture_services()
        .into_iter()
        .find(|service| service["metadata"]["name"] == "web")
        .unwrap();
    late["metadata"]["name"] = json!("late");
    late["metadata"]["creationTimestamp"] = json!("2026-11-22T00:00:00Z");
    server.apply(late);
    wait_writing(&follower.handle, true).await;
    wait_for_ingress(&server, "late", &["192.0.2.4"]).await;
    for (name, ips) in everyone_assigned() {
        assert_eq!(ingress(&server, name), ips, "{name}");
    }
    let writes = service_writes(&server);
    assert!(
        writes
            .iter()
            .all(|write| write.user == follower_name && write.path.contains("/services/late")),
        "{writes:#?}"
    );
    assert_eq!(
        server.get(LEASE).unwrap()["spec"]["holderIdentity"],
        follower_name
    );
    follower.handle.stop().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_api_server_stops_the_leaders_writes() {
    let server = server_with(fixture_services());
    server.serve().await;
    let a = start(&server, "node-a", config(true));
    for (name, ips) in everyone_assigned() {
        wait_for_ingress(&server, name, &ips).await;
        wait_for_pool(&server, name, Some("production")).await;
    }
    wait_writing(&a.handle, true).await;

    // node-a loses its way to the API server: it stops writing within the confirm
    // interval, long before its Lease runs out.
    server.set_reachability_for("node-a", Reachability::Refuse);
    let cut = Instant::now();
    wait_writing(&a.handle, false).await;
    assert!(
        cut.elapsed() < Duration::from_secs(2),
        "{:?}",
        cut.elapsed()
    );
    let node_a_writes = |server: &StoreServer| {
        service_writes(server)
            .into_iter()
            .filter(|write| write.user == "node-a" && write.status != 0)
            .count()
    };
    let written_before = node_a_writes(&server);
    // web, api and dns: status and annotation each (legacy had both already).
    assert_eq!(written_before, 6);

    // node-b takes the Lease over once it ran out and serves a new Service.
    let b = start(&server, "node-b", config(true));
    wait_writing(&b.handle, true).await;
    let mut late = fixture_services()
        .into_iter()
        .find(|service| service["metadata"]["name"] == "web")
        .unwrap();
    late["metadata"]["name"] = json!("late");
    server.apply(late);
    wait_for_ingress(&server, "late", &["192.0.2.4"]).await;

    // node-a comes back: it is not the holder, so it writes nothing.
    server.set_reachability_for("node-a", Reachability::Up);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!*a.handle.writing().borrow());
    assert_eq!(
        node_a_writes(&server),
        written_before,
        "node-a wrote after losing the API server: {:#?}",
        service_writes(&server)
    );
    assert_eq!(
        server.get(LEASE).unwrap()["spec"]["holderIdentity"],
        "node-b"
    );
    a.handle.stop().await.unwrap();
    b.handle.stop().await.unwrap();
}

fn fixture_service(name: &str) -> Value {
    fixture_services()
        .into_iter()
        .find(|service| service["metadata"]["name"] == name)
        .unwrap()
}

#[tokio::test]
async fn a_configuration_change_moves_services_out_of_a_removed_pool_but_an_empty_one_writes_nothing()
 {
    let server = server_with(vec![fixture_service("web")]);
    server.serve().await;
    let controller = start(&server, "node-a", config(false));
    wait_for_ingress(&server, "web", &["192.0.2.1"]).await;

    // production is gone: web's address is in no pool any more; it gets spare's.
    let mut spare_only = config(true);
    spare_only.pools.remove("production");
    controller.config.send_replace(Arc::new(spare_only));
    wait_for_ingress(&server, "web", &["203.0.113.1"]).await;
    wait_for_pool(&server, "web", Some("spare")).await;
    let note = wait_for_event(&server, "web", REASON_ALLOCATED).await;
    assert!(note.contains("from pool"), "{note}");

    // No pool at all (as before MetalLB's objects are read): nothing is written.
    server.clear_requests();
    controller
        .config
        .send_replace(Arc::new(LbConfig::default()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(service_writes(&server), Vec::<RequestRecord>::new());
    assert_eq!(ingress(&server, "web"), ["203.0.113.1"]);
    controller.handle.stop().await.unwrap();
}

#[tokio::test]
async fn a_service_whose_request_cannot_be_read_keeps_its_address_and_gets_an_event() {
    // api holds 192.0.2.10 but its annotation is now garbage.
    let mut api = fixture_service("api");
    api["metadata"]["annotations"]["metallb.io/loadBalancerIPs"] = json!("192.0.2.10,ten");
    api["status"] = json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}});
    // web asks for that very address.
    let mut web = fixture_service("web");
    web["metadata"]["annotations"] = json!({"metallb.io/loadBalancerIPs": "192.0.2.10"});
    let server = server_with(vec![api, web]);
    server.serve().await;
    let controller = start(&server, "node-a", config(false));

    let note = wait_for_event(&server, "api", REASON_BAD_REQUEST).await;
    assert!(note.contains("\"ten\" is not an IP address"), "{note}");
    let note = wait_for_event(&server, "web", REASON_FAILED).await;
    assert!(
        note.contains("192.0.2.10 is in use: held by shop/api, whose requests cannot be read"),
        "{note}"
    );
    assert_eq!(ingress(&server, "api"), ["192.0.2.10"]);
    assert_eq!(ingress(&server, "web"), Vec::<String>::new());
    // Reported once, not on every pass.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let failures = events_for(&server, "web")
        .into_iter()
        .filter(|(reason, _)| reason == REASON_FAILED)
        .count();
    assert_eq!(failures, 1);
    controller.handle.stop().await.unwrap();
}
