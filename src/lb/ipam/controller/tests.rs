//! The writes planned from an allocation, and the options' checks.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use metallb_config::LbConfig;
use serde_json::{Value, json};

use super::session::Tracked;
use super::writes::{Write, plan_writes};
use super::*;
use crate::lb::ipam::allocate::{NamespaceLabels, allocate};
use crate::model::ServiceKey;

fn service(value: Value) -> Service {
    serde_json::from_value(value).unwrap()
}

fn lb_service(name: &str, annotations: Value, ingress: &[&str]) -> Service {
    let ingress: Vec<Value> = ingress.iter().map(|ip| json!({"ip": ip})).collect();
    service(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": "shop", "name": name, "uid": format!("uid-{name}"),
                     "annotations": annotations},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
        "status": {"loadBalancer": {"ingress": ingress}},
    }))
}

fn config() -> LbConfig {
    let pool = metallb_config::Pool {
        name: "production".into(),
        labels: BTreeMap::new(),
        ranges: vec!["192.0.2.0/30".parse().unwrap()],
        auto_assign: true,
        avoid_buggy_ips: false,
        allocation: None,
    };
    LbConfig {
        pools: [("production".to_string(), pool)].into(),
        ..LbConfig::default()
    }
}

fn tracked(services: &[Service]) -> BTreeMap<ServiceKey, Tracked> {
    services
        .iter()
        .filter_map(|service| Some((ServiceKey::of_service(service), Tracked::of(service, None)?)))
        .collect()
}

fn plan(services: &[Service]) -> Vec<Write> {
    let tracked = tracked(services);
    let ours = tracked.values().filter_map(|tracked| match tracked {
        Tracked::Ours(lb) => Some(lb),
        _ => None,
    });
    let allocation = allocate(&config(), ours, [], &NamespaceLabels::new());
    plan_writes(&tracked, &allocation, &config())
}

#[test]
fn only_differences_are_written() {
    let pool = json!({"metallb.io/ip-allocated-from-pool": "production"});
    let writes = plan(&[
        // Holds its address and pool: nothing to write.
        lb_service("done", pool.clone(), &["192.0.2.0"]),
        // Holds its address, no annotation (the old prefix is read too).
        lb_service(
            "old-prefix",
            json!({"metallb.universe.tf/ip-allocated-from-pool": "production"}),
            &["192.0.2.1"],
        ),
        lb_service("no-annotation", json!({}), &["192.0.2.2"]),
        // New.
        lb_service("new", json!({}), &[]),
    ]);
    let names: Vec<&str> = writes.iter().map(|write| &*write.key.name).collect();
    assert_eq!(names, ["new", "no-annotation"]);
    let production = Some(Some("production".to_string()));
    assert_eq!(writes[0].ingress, Some(vec!["192.0.2.3".parse().unwrap()]));
    assert_eq!(writes[0].pool, production);
    assert_eq!(writes[1].ingress, None);
    assert_eq!(writes[1].pool, production);
    assert_eq!(writes[0].event.as_ref().unwrap().1, REASON_ALLOCATED);
    assert!(writes[1].event.is_none());
}

#[test]
fn a_service_no_longer_ours_is_released_only_from_our_pools() {
    let not_lb = |name: &str, pool: &str, ip: &str| {
        service(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"namespace": "shop", "name": name,
                         "annotations": {"metallb.io/ip-allocated-from-pool": pool}},
            "spec": {"type": "ClusterIP"},
            "status": {"loadBalancer": {"ingress": [{"ip": ip}]}},
        }))
    };
    let writes = plan(&[
        not_lb("was-ours", "production", "192.0.2.1"),
        not_lb("other-pool", "elsewhere", "198.51.100.1"),
        not_lb("outside-our-pool", "production", "198.51.100.2"),
    ]);
    assert_eq!(writes.len(), 1);
    assert_eq!(&*writes[0].key.name, "was-ours");
    assert_eq!(writes[0].ingress, Some(vec![]));
    assert_eq!(writes[0].pool, Some(None));
}

#[test]
fn options_are_checked() {
    assert!(IpamOptions::new("node-a").check().is_ok());
    let mut options = IpamOptions::new("node-a");
    options.lease_grace = options.lease_duration;
    assert!(matches!(options.check(), Err(IpamError::Options(_))));
    let mut options = IpamOptions::new("node-a");
    options.confirm_interval = options.lease_grace;
    assert!(
        options
            .check()
            .unwrap_err()
            .to_string()
            .contains("confirm interval")
    );
    assert!(IpamOptions::new("").check().is_err());
}
