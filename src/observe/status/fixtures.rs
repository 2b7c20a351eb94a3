//! What the status tests share: a model from the Kubernetes fixtures, the kernel
//! after a faithful sync, and the report the agent would send for them.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::config::Config;
use crate::model::{DesiredState, Model, NodeInfo, Protocol, VirtualServerKey};
use crate::plan::{DiffOptions, DrainStarts, ObservedState, diff};

use super::StatusReport;

pub(super) fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = format!("{}/tests/fixtures/k8s/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub(super) fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

pub(super) fn model_with(services: &[&str], slices: &[&str]) -> Model {
    let node: Node = fixture("node-a.json");
    let node = NodeInfo::from_node(&node, vec![ip("192.168.50.11")]);
    let mut model = Model::new(Config::default(), node);
    for name in slices {
        model.apply_slice(fixture::<EndpointSlice>(name));
    }
    for name in services {
        model.apply_service(fixture::<Service>(name));
    }
    model
}

/// The kernel after a faithful sync, with 3 active and 1 inactive connection on
/// every real server.
pub(super) fn observed_from(state: &DesiredState) -> ObservedState {
    let mut observed = ObservedState::programmed(state);
    for rs in observed
        .virtual_servers
        .iter_mut()
        .flat_map(|vs| vs.real_servers.iter_mut())
    {
        rs.active_connections = 3;
        rs.inactive_connections = 1;
    }
    observed
}

/// Builds the report the agent would send for `model` and `observed`.
pub(super) fn report(model: &Model, observed: &ObservedState, drain: &DrainStarts) -> StatusReport {
    let desired = model.desired();
    let options = DiffOptions {
        exclude_cidrs: Vec::new(),
        max_drain: Duration::from_secs(300),
    };
    let now = Instant::now();
    let plan = diff(&desired, observed, &options, drain, now);
    StatusReport::build(
        model,
        &desired,
        observed,
        &plan.changes,
        &plan.draining,
        now,
    )
}

pub(super) fn vs_key(addr: &str, port: u16) -> VirtualServerKey {
    VirtualServerKey {
        addr: ip(addr),
        port,
        protocol: Protocol::Tcp,
    }
}
