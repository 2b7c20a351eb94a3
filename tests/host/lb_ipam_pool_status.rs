//! The IPAM leader's pool side (src/lb/ipam/controller/pool_status.rs) against
//! testkit's stateful API server: each IPAddressPool's `status` counters as MetalLB
//! writes them, and MetalLB's `metallb_allocator_*` metrics.

use std::sync::Arc;

use ipvs_proxy::lb::ipam::IpamMetrics;
use ipvs_proxy::lb::ipam::controller::spawn_ipam_with_metrics;
use ipvs_proxy::observe::metrics::Metrics;
use serde_json::{Value, json};
use testkit::store_server::{RequestRecord, StoreServer};
use tokio::sync::watch;

use crate::lb_ipam::{
    SERVICES, config, everyone_assigned, fixture_services, options, server_with, wait_for_ingress,
};

const WAIT: std::time::Duration = std::time::Duration::from_secs(20);

const POOLS: &str = "/apis/metallb.io/v1beta1/namespaces/metallb-system/ipaddresspools";

fn pool_object(name: &str, addresses: &[&str]) -> Value {
    json!({
        "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": name, "namespace": "metallb-system"},
        "spec": {"addresses": addresses},
    })
}

/// `IPAddressPool.status` as MetalLB names its counters: assigned and available,
/// IPv4 then IPv6.
async fn wait_for_pool_status(server: &StoreServer, pool: &str, counters: [i64; 4]) {
    let [assigned4, available4, assigned6, available6] = counters;
    let expected = json!({
        "assignedIPv4": assigned4, "availableIPv4": available4,
        "assignedIPv6": assigned6, "availableIPv6": available6,
    });
    let path = format!("{POOLS}/{pool}");
    let waited = tokio::time::timeout(
        WAIT,
        server.wait_for(&path, WAIT, |object| {
            object.is_some_and(|object| object["status"] == expected)
        }),
    )
    .await;
    assert!(
        waited.is_ok(),
        "{pool}: status {} instead of {expected}",
        server.get(&path).unwrap()["status"]
    );
}

fn scrape(registry: &prometheus_client::registry::Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

#[tokio::test]
async fn the_leader_writes_each_pools_status_counters_and_sets_metallbs_allocator_metrics() {
    let server = server_with(fixture_services());
    server.apply(pool_object(
        "production",
        &["192.0.2.0/28", "2001:db8:5::/124"],
    ));
    server.apply(pool_object("spare", &["203.0.113.1/32"]));
    server.serve().await;
    let pool_metrics = IpamMetrics::default();
    let mut registry = prometheus_client::registry::Registry::default();
    pool_metrics.register(&mut registry);
    let (_config, receiver) = watch::channel(Arc::new(config(true)));
    let handle = spawn_ipam_with_metrics(
        server.client_as("node-a"),
        options("node-a"),
        receiver,
        Arc::new(Metrics::new()),
        pool_metrics,
    );

    for (name, ips) in everyone_assigned() {
        wait_for_ingress(&server, name, &ips).await;
    }
    // production: a /28 without .0 (avoidBuggyIPs) holds legacy, api, dns and web;
    // its /124 dns's second address. spare: nobody.
    wait_for_pool_status(&server, "production", [4, 11, 1, 15]).await;
    wait_for_pool_status(&server, "spare", [0, 1, 0, 0]).await;
    let pool = server.get(&format!("{POOLS}/production")).unwrap();
    assert_eq!(
        pool["spec"]["addresses"],
        json!(["192.0.2.0/28", "2001:db8:5::/124"]),
        "the status write leaves the spec alone"
    );
    let status_writes: Vec<RequestRecord> = server
        .requests()
        .into_iter()
        .filter(|request| request.is_write() && request.path.starts_with(POOLS))
        .collect();
    assert!(!status_writes.is_empty());
    for write in &status_writes {
        assert!(write.path.ends_with("/status"), "{write:?}");
        assert_eq!(write.method, "PATCH");
        assert_eq!(write.user, "node-a");
    }
    let text = scrape(&registry);
    for line in [
        "metallb_allocator_addresses_in_use_total{pool=\"production\"} 5\n",
        "metallb_allocator_addresses_total{pool=\"production\"} 31\n",
        "metallb_allocator_ipv6_addresses_in_use_total{pool=\"production\"} 1\n",
        "metallb_allocator_addresses_in_use_total{pool=\"spare\"} 0\n",
        "metallb_allocator_addresses_total{pool=\"spare\"} 1\n",
    ] {
        assert!(text.contains(line), "{line} not in:\n{text}");
    }

    // web deleted: its address is free again, and only production's status changes.
    let writes_before = server.requests().len();
    server.delete(&format!("{SERVICES}/web"));
    wait_for_pool_status(&server, "production", [3, 12, 1, 15]).await;
    let rewritten: Vec<String> = server.requests()[writes_before..]
        .iter()
        .filter(|request| request.is_write() && request.path.starts_with(POOLS))
        .map(|request| request.path.clone())
        .collect();
    assert_eq!(rewritten, [format!("{POOLS}/production/status")]);
    assert!(
        scrape(&registry)
            .contains("metallb_allocator_addresses_in_use_total{pool=\"production\"} 4\n")
    );

    // No longer leading: the series go (only the leader reports them).
    handle.stop().await.unwrap();
    assert!(
        !scrape(&registry).contains("pool=\""),
        "{}",
        scrape(&registry)
    );
}
