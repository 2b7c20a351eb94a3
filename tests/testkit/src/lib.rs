//! Helpers shared by the integration tests; each test uses a part of them.
#![allow(dead_code)]

pub mod apiserver;

/// The agent configuration the lab tests run with: kube-proxy's format, a short
/// resync so drift repair shows within a test, metrics on loopback.
pub const LAB_AGENT_CONFIG: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\n\
kind: KubeProxyConfiguration\nmode: ipvs\nipvs:\n  syncPeriod: 3s\n\
metricsBindAddress: 127.0.0.1:10249\n";
