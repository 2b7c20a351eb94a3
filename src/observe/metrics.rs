//! Prometheus metrics, with kube-proxy's names where the meaning is the same
//! (subsystem `kubeproxy`) and our own under `ipvs_proxy_`.
//!
//! Served on `metricsBindAddress` (default `127.0.0.1:10249`) at `/metrics`, next to
//! `/proxyMode` (`ipvs`) and `/healthz`, as kube-proxy's metrics listener does.

use std::sync::Arc;
use std::time::SystemTime;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use hyper::StatusCode;

use crate::observe::health::ProxyHealth;
use crate::observe::http::{self, Answer};

/// A label set with one `kind` label (error kinds, object kinds).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    /// What is counted.
    kind: String,
}

/// A label set with one `traffic_policy` label (`internal` or `external`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrafficPolicyLabel {
    /// `internal` or `external`.
    traffic_policy: String,
}

/// Every metric the agent exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Time of each full or partial sync.
    sync_duration: Histogram,
    /// Unix time of the last completed sync.
    sync_last_timestamp: Gauge<f64, AtomicU64>,
    /// Unix time of the last queued change.
    pub sync_last_queued_timestamp: Gauge<f64, AtomicU64>,
    /// From a change's API timestamp (or its arrival) until it is programmed.
    /// Registered for kube-proxy's set of names; nothing observes it yet.
    network_programming_duration: Histogram,
    /// EndpointSlice changes seen.
    pub endpoint_changes: Counter,
    /// Service changes seen.
    pub service_changes: Counter,
    /// Services with a Local traffic policy and no local endpoint, by policy.
    /// Registered for kube-proxy's set of names; nothing sets it yet.
    no_local_endpoints: Family<TrafficPolicyLabel, Gauge>,
    /// Netlink messages sent to the kernel, by family (ipvs, ipset, route).
    netlink_messages: Family<KindLabel, Counter>,
    /// Errors, by kind (ipvs, ipset, iptables, address, bad-service, ...).
    errors: Family<KindLabel, Counter>,
    /// Objects currently programmed, by kind (virtual-server, real-server, address, ...).
    objects_programmed: Family<KindLabel, Gauge>,
    /// Sysctl values the agent had to change.
    pub sysctl_changes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Adds the announcers' metrics (before the registry is shared).
    pub fn register_announcers(&mut self, announcers: &super::announce_metrics::AnnounceMetrics) {
        announcers.register(&mut self.registry);
    }

    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut metrics = Metrics {
            sync_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            sync_last_timestamp: Gauge::default(),
            sync_last_queued_timestamp: Gauge::default(),
            network_programming_duration: Histogram::new(exponential_buckets(0.001, 2.0, 20)),
            endpoint_changes: Counter::default(),
            service_changes: Counter::default(),
            no_local_endpoints: Family::default(),
            netlink_messages: Family::default(),
            errors: Family::default(),
            objects_programmed: Family::default(),
            sysctl_changes: Counter::default(),
            registry: Registry::default(),
        };
        metrics.registry.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            metrics.sync_duration.clone(),
        );
        metrics.registry.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            metrics.sync_last_timestamp.clone(),
        );
        metrics.registry.register(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            metrics.sync_last_queued_timestamp.clone(),
        );
        metrics.registry.register(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            metrics.network_programming_duration.clone(),
        );
        metrics.registry.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes",
            "Cumulative proxy rules Endpoint changes",
            metrics.endpoint_changes.clone(),
        );
        metrics.registry.register(
            "kubeproxy_sync_proxy_rules_service_changes",
            "Cumulative proxy rules Service changes",
            metrics.service_changes.clone(),
        );
        metrics.registry.register(
            "kubeproxy_sync_proxy_rules_no_local_endpoints",
            "Number of services with a Local traffic policy and no endpoints",
            metrics.no_local_endpoints.clone(),
        );
        metrics.registry.register(
            "ipvs_proxy_netlink_messages",
            "Netlink messages sent to the kernel, by family",
            metrics.netlink_messages.clone(),
        );
        metrics.registry.register(
            "ipvs_proxy_errors",
            "Errors by kind",
            metrics.errors.clone(),
        );
        metrics.registry.register(
            "ipvs_proxy_objects_programmed",
            "Kernel objects currently programmed by ipvs-proxy, by kind",
            metrics.objects_programmed.clone(),
        );
        metrics.registry.register(
            "ipvs_proxy_sysctl_changes",
            "Kernel settings ipvs-proxy had to change",
            metrics.sysctl_changes.clone(),
        );
        metrics
    }

    /// Counts one error of `kind`.
    pub fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Counts `n` netlink messages sent for `family`.
    pub fn netlink_sent(&self, family: &str, n: u64) {
        self.netlink_messages
            .get_or_create(&KindLabel {
                kind: family.to_string(),
            })
            .inc_by(n);
    }

    /// Sets the number of objects of `kind` currently programmed.
    pub fn set_programmed(&self, kind: &str, n: i64) {
        self.objects_programmed
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .set(n);
    }

    /// Records a completed sync that took `seconds`, finishing at `at`.
    pub fn synced(&self, seconds: f64, at: SystemTime) {
        self.sync_duration.observe(seconds);
        self.sync_last_timestamp.set(unix_seconds(at));
    }

    /// The exposition text (OpenMetrics).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// Seconds since the Unix epoch.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Starts the metrics server (`/metrics`, `/proxyMode`, `/healthz`) on a bound listener.
pub fn spawn_metrics_server(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<ProxyHealth>,
) -> JoinHandle<()> {
    tokio::spawn(http::serve(listener, "metrics", move |path| match path {
        "/metrics" => Answer::new(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        // As kube-proxy's metrics server answers it.
        "/proxyMode" => Answer::new(StatusCode::OK, http::PLAIN_TEXT, "ipvs".to_string()),
        "/healthz" => health.answer(SystemTime::now(), false),
        _ => Answer::not_found(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_uses_kube_proxy_names() {
        let metrics = Metrics::new();
        metrics.endpoint_changes.inc_by(3);
        metrics.synced(
            0.25,
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(42),
        );
        metrics.error("ipvs");
        metrics.netlink_sent("ipvs", 7);
        let text = metrics.encode();
        assert!(
            text.contains("kubeproxy_sync_proxy_rules_endpoint_changes_total 3"),
            "{text}"
        );
        assert!(
            text.contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds 42.0"),
            "{text}"
        );
        assert!(
            text.contains("kubeproxy_sync_proxy_rules_duration_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("ipvs_proxy_errors_total{kind=\"ipvs\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ipvs_proxy_netlink_messages_total{kind=\"ipvs\"} 7"),
            "{text}"
        );
    }
}
