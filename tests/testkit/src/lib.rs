//! Scaffolding shared by the integration tests (`tests/host`, `tests/kernel`) and the
//! lab examples, so no test file keeps its own copy:
//!
//! - [`k8s`]: Service and EndpointSlice JSON builders and the `tests/fixtures/k8s` reader;
//! - [`apiserver`]: an in-process Kubernetes API server speaking the list/watch protocol;
//!   scripted: fixed lists and watch lines;
//! - [`store_server`]: a stateful in-process API server: objects that clients list,
//!   watch, create, patch and delete, with an access policy and a switch to lose it;
//! - [`cluster`]: the lab's client–node–pods cluster with a manifests directory and an
//!   agent started as the binary or in-process;
//! - [`agent`]: the agent run in-process, in the node's network namespace;
//! - [`speaker`]: the BGP speaker alone run in-process, in a node's network namespace.

pub mod agent;
pub mod apiserver;
pub mod cluster;
pub mod k8s;
pub mod requests;
pub mod speaker;
pub mod store_server;

/// The agent configuration the lab tests run with: kube-proxy's format, a short
/// resync so drift repair shows within a test, metrics on loopback.
pub const LAB_AGENT_CONFIG: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\n\
kind: KubeProxyConfiguration\nmode: ipvs\nipvs:\n  syncPeriod: 3s\n\
metricsBindAddress: 127.0.0.1:10249\n";
