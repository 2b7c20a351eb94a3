//! What the agent tells operators and the cluster.
//!
//! - [`status`]: the report behind `ipvs-proxy services`, served on a Unix socket.
//! - [`health`]: `/healthz`, `/livez` and the per-Service health-check node ports.
//! - [`metrics`]: Prometheus metrics with kube-proxy's names plus `ipvs_proxy_*`.
//! - [`k8s_events`]: Kubernetes `Warning` Events for Services that cannot be programmed.
//! - `http`: the small HTTP server the health and metrics listeners share.

pub mod announce_metrics;
pub mod health;
mod http;
pub mod k8s_events;
pub mod metrics;
pub mod status;
