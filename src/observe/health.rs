//! Health endpoints with kube-proxy's semantics and bodies.
//!
//! - The proxy health server (`healthzBindAddress`, default `0.0.0.0:10256`) answers
//!   `/healthz` and `/livez`. The proxy is unhealthy when an update has been queued
//!   for longer than twice `syncPeriod` without a sync completing.
//! - One service health server per `externalTrafficPolicy: Local` Service, on its
//!   `healthCheckNodePort`: 200 when the node has local endpoints for it and the proxy
//!   is healthy, 503 otherwise.
//!
//! # Bodies
//!
//! Byte for byte what kube-proxy's `pkg/proxy/healthcheck` writes (the version whose
//! `ProxyHealth` carries a per-family `status`), so scripts and load balancers that
//! read them keep working:
//!
//! - `/healthz` and `/livez`: Go's `json.Marshal` of kube-proxy's `ProxyHealth`,
//!   compact, keys in this order (`nodeEligible` only in `/healthz`, `status` only
//!   once a sync has completed; its keys are the IP families, sorted):
//!   `{"lastUpdated":"…","currentTime":"…","nodeEligible":true,"healthy":true,`
//!   `"status":{"IPv4":{"lastUpdated":"…","healthy":true}}}`. While the answer is
//!   200, the top-level `lastUpdated` is the current time, as kube-proxy keeps for
//!   compatibility; otherwise it is the last completed sync (Go's zero time,
//!   `0001-01-01T00:00:00Z`, before the first).
//! - the service health check: kube-proxy's tab-indented text (not compact, it is a
//!   template there), without a trailing newline:
//!   `{\n\t"service": {\n\t\t"namespace": "ns",\n\t\t"name": "web"\n\t},`
//!   `\n\t"localEndpoints": 1,\n\t"serviceProxyHealthy": true\n}`, with the
//!   `X-Load-Balancing-Endpoint-Weight` header (the local endpoint count).
//!
//! Every answer has `Content-Type: application/json` and
//! `X-Content-Type-Options: nosniff`; other paths of the proxy health server get Go's
//! `404 page not found`.
//!
//! Times are what Go's `time.Time.MarshalJSON` writes: RFC 3339 with the fraction
//! trimmed of trailing zeros (layout `2006-01-02T15:04:05.999999999Z07:00`), in UTC
//! (`Z`), the local zone of kube-proxy's image.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hyper::StatusCode;
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::model::Family;
use crate::observe::http::{self, Answer};

/// Go's zero `time.Time` as JSON: kube-proxy's `lastUpdated` before any sync.
const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

#[derive(Debug, Default)]
struct ProxyHealthState {
    /// When the oldest update still waiting for a sync was queued.
    oldest_queued: Option<SystemTime>,
    /// When the last sync completed.
    last_updated: Option<SystemTime>,
}

/// Health of the proxy's sync loop, shared between the loop and the health servers.
#[derive(Debug)]
pub struct ProxyHealth {
    timeout: Duration,
    /// The IP families the agent programs; one sync covers them all.
    families: Vec<Family>,
    state: Mutex<ProxyHealthState>,
}

impl ProxyHealth {
    /// Creates the tracker; `sync_period` is the configured `ipvs.syncPeriod`
    /// (the health timeout is twice it, as in kube-proxy), `families` the IP
    /// families the agent programs (named in the bodies' `status`).
    pub fn new(sync_period: Duration, families: impl IntoIterator<Item = Family>) -> ProxyHealth {
        let mut families: Vec<Family> = families.into_iter().collect();
        families.sort();
        families.dedup();
        ProxyHealth {
            timeout: sync_period * 2,
            families,
            state: Mutex::new(ProxyHealthState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProxyHealthState> {
        // A panic while holding this lock cannot leave the plain timestamps invalid.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that an update was queued (keeps the oldest pending one).
    pub fn queued_update(&self, at: SystemTime) {
        let mut state = self.lock();
        state.oldest_queued.get_or_insert(at);
    }

    /// Records that a sync completed: nothing is pending any more.
    pub fn updated(&self, at: SystemTime) {
        let mut state = self.lock();
        state.oldest_queued = None;
        state.last_updated = Some(at);
    }

    /// True unless an update has waited for longer than the health timeout.
    fn is_healthy(&self, now: SystemTime) -> bool {
        healthy_at(&self.lock(), self.timeout, now)
    }

    /// The answer of `/healthz` (`healthz`) or `/livez` at `now`.
    pub(crate) fn answer(&self, now: SystemTime, healthz: bool) -> Answer {
        let state = self.lock();
        let healthy = healthy_at(&state, self.timeout, now);
        // This agent does not watch its Node, so it never finds it being deleted:
        // kube-proxy's `nodeEligible` is always true here.
        let node_eligible = true;
        let ok = healthy && (!healthz || node_eligible);
        let status = match state.last_updated {
            None => BTreeMap::new(),
            Some(at) => self
                .families
                .iter()
                .map(|family| {
                    let proxier = ProxierHealthBody {
                        last_updated: go_time(at),
                        healthy,
                    };
                    (family_name(*family), proxier)
                })
                .collect(),
        };
        let body = ProxyHealthBody {
            last_updated: match (ok, state.last_updated) {
                (true, _) => go_time(now),
                (false, Some(at)) => go_time(at),
                (false, None) => GO_ZERO_TIME.to_string(),
            },
            current_time: go_time(now),
            node_eligible: healthz.then_some(node_eligible),
            healthy,
            status,
        };
        Answer::new(
            if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            },
            http::JSON,
            // Serialising plain strings and booleans cannot fail.
            serde_json::to_string(&body).unwrap_or_default(),
        )
    }
}

fn healthy_at(state: &ProxyHealthState, timeout: Duration, now: SystemTime) -> bool {
    match state.oldest_queued {
        None => true,
        Some(queued) => now.duration_since(queued).unwrap_or_default() < timeout,
    }
}

/// kube-proxy's `ProxyHealth`; the field order is the key order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProxyHealthBody {
    last_updated: String,
    current_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    node_eligible: Option<bool>,
    healthy: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    status: BTreeMap<&'static str, ProxierHealthBody>,
}

/// kube-proxy's `ProxierHealth`, one per IP family.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProxierHealthBody {
    last_updated: String,
    healthy: bool,
}

/// The family as Kubernetes' `IPFamily` spells it.
fn family_name(family: Family) -> &'static str {
    match family {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

/// `t` as Go's `time.Time` marshals to JSON in UTC: jiff's RFC 3339 `Display` also
/// trims the fraction to the digits it needs, and writes `Z`.
fn go_time(t: SystemTime) -> String {
    Timestamp::try_from(t).map_or_else(|_| GO_ZERO_TIME.to_string(), |t| t.to_string())
}

/// The answer of a service health server.
fn service_answer(spec: &ServiceHealthSpec, proxy_healthy: bool) -> Answer {
    // Kubernetes names need no escaping; the JSON quoting keeps any other text valid.
    let quote = |text: &str| serde_json::Value::from(text).to_string();
    let body = format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {},\n\t\t\"name\": {}\n\t}},\n\t\
         \"localEndpoints\": {},\n\t\"serviceProxyHealthy\": {proxy_healthy}\n}}",
        quote(&spec.namespace),
        quote(&spec.name),
        spec.local_endpoints,
    );
    let ok = spec.local_endpoints > 0 && proxy_healthy;
    let mut answer = Answer::new(
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        http::JSON,
        body,
    );
    answer.headers.push((
        "X-Load-Balancing-Endpoint-Weight",
        spec.local_endpoints.to_string(),
    ));
    answer
}

/// The proxy health server's routes.
fn proxy_route(health: &ProxyHealth, path: &str) -> Answer {
    match path {
        "/healthz" => health.answer(SystemTime::now(), true),
        "/livez" => health.answer(SystemTime::now(), false),
        _ => Answer::not_found(),
    }
}

/// Starts the proxy health server (`/healthz`, `/livez`) on an already bound listener.
pub fn spawn_proxy_health_server(
    listener: TcpListener,
    health: Arc<ProxyHealth>,
) -> JoinHandle<()> {
    tokio::spawn(http::serve(listener, "health", move |path| {
        proxy_route(&health, path)
    }))
}

/// What one service health server reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceHealthSpec {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// Ready endpoints of the Service on this node.
    pub local_endpoints: usize,
}

type SharedSpec = Arc<Mutex<ServiceHealthSpec>>;

/// The set of running service health servers, keyed by `healthCheckNodePort`.
#[derive(Debug)]
pub struct ServiceHealthServers {
    bind_ip: IpAddr,
    proxy: Arc<ProxyHealth>,
    servers: BTreeMap<u16, (SharedSpec, JoinHandle<()>)>,
}

impl ServiceHealthServers {
    /// Creates an empty set whose servers bind on `bind_ip`.
    pub fn new(bind_ip: IpAddr, proxy: Arc<ProxyHealth>) -> ServiceHealthServers {
        ServiceHealthServers {
            bind_ip,
            proxy,
            servers: BTreeMap::new(),
        }
    }

    /// Makes the running servers equal to `wanted`: starts new ports, stops ports no
    /// longer wanted and updates the counts of the others. A port that cannot be bound
    /// is reported in the returned list and skipped; the others are unaffected.
    pub async fn sync(
        &mut self,
        wanted: &BTreeMap<u16, ServiceHealthSpec>,
    ) -> Vec<(u16, std::io::Error)> {
        self.servers.retain(|port, (_, task)| {
            let keep = wanted.contains_key(port);
            if !keep {
                task.abort();
            }
            keep
        });
        let mut failures = Vec::new();
        for (port, spec) in wanted {
            if let Some((shared, _)) = self.servers.get(port) {
                *shared.lock().unwrap_or_else(|e| e.into_inner()) = spec.clone();
                continue;
            }
            match TcpListener::bind(SocketAddr::new(self.bind_ip, *port)).await {
                Ok(listener) => {
                    let shared: SharedSpec = Arc::new(Mutex::new(spec.clone()));
                    let (reader, proxy) = (shared.clone(), self.proxy.clone());
                    // kube-proxy answers every path of a health check port.
                    let task = tokio::spawn(http::serve(listener, "service health", move |_| {
                        let spec = reader.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        service_answer(&spec, proxy.is_healthy(SystemTime::now()))
                    }));
                    self.servers.insert(*port, (shared, task));
                }
                Err(error) => failures.push((*port, error)),
            }
        }
        failures
    }
}

impl Drop for ServiceHealthServers {
    fn drop(&mut self) {
        for (_, task) in self.servers.values() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
    }

    fn header<'a>(answer: &'a Answer, name: &str) -> Option<&'a str> {
        answer
            .headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The layouts Go's `time.Time.MarshalJSON` writes in UTC.
    #[test]
    fn times_are_written_as_go_marshals_them() {
        assert_eq!(go_time(at(0, 0)), "1970-01-01T00:00:00Z");
        assert_eq!(go_time(at(1_795_000_000, 0)), "2026-11-18T11:06:40Z");
        assert_eq!(
            go_time(at(1_795_000_000, 500_000_000)),
            "2026-11-18T11:06:40.5Z"
        );
        assert_eq!(
            go_time(at(1_795_000_000, 120)),
            "2026-11-18T11:06:40.00000012Z"
        );
        assert_eq!(
            go_time(at(1_795_000_000, 123_456_789)),
            "2026-11-18T11:06:40.123456789Z"
        );
        assert_eq!(
            go_time(at(951_782_400, 1_000)),
            "2000-02-29T00:00:00.000001Z"
        );
    }

    #[test]
    fn healthz_and_livez_bodies_are_kube_proxys() {
        let health = ProxyHealth::new(Duration::from_secs(30), [Family::V6, Family::V4]);
        let t0 = at(1_795_000_000, 0);

        // Before the first sync: healthy, no per-family status yet.
        let answer = health.answer(t0, true);
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(
            answer.body,
            r#"{"lastUpdated":"2026-11-18T11:06:40Z","currentTime":"2026-11-18T11:06:40Z","nodeEligible":true,"healthy":true}"#
        );
        assert_eq!(
            answer.headers,
            [
                ("Content-Type", "application/json".to_string()),
                ("X-Content-Type-Options", "nosniff".to_string()),
            ]
        );
        assert_eq!(
            health.answer(t0, false).body,
            r#"{"lastUpdated":"2026-11-18T11:06:40Z","currentTime":"2026-11-18T11:06:40Z","healthy":true}"#
        );

        // Synced: 200, lastUpdated is now, each family reports the sync's time.
        health.updated(at(1_795_000_010, 250_000_000));
        let now = at(1_795_000_020, 0);
        assert_eq!(
            health.answer(now, true).body,
            concat!(
                r#"{"lastUpdated":"2026-11-18T11:07:00Z","currentTime":"2026-11-18T11:07:00Z","#,
                r#""nodeEligible":true,"healthy":true,"status":{"#,
                r#""IPv4":{"lastUpdated":"2026-11-18T11:06:50.25Z","healthy":true},"#,
                r#""IPv6":{"lastUpdated":"2026-11-18T11:06:50.25Z","healthy":true}}}"#
            )
        );

        // An update waiting for longer than 2 × syncPeriod: 503 and the last sync's time.
        health.queued_update(at(1_795_000_030, 0));
        let late = at(1_795_000_091, 0);
        let answer = health.answer(late, false);
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            answer.body,
            concat!(
                r#"{"lastUpdated":"2026-11-18T11:06:50.25Z","currentTime":"2026-11-18T11:08:11Z","#,
                r#""healthy":false,"status":{"#,
                r#""IPv4":{"lastUpdated":"2026-11-18T11:06:50.25Z","healthy":false},"#,
                r#""IPv6":{"lastUpdated":"2026-11-18T11:06:50.25Z","healthy":false}}}"#
            )
        );
    }

    #[test]
    fn unhealthy_before_the_first_sync_reports_go_zero_time() {
        let health = ProxyHealth::new(Duration::from_secs(1), [Family::V4]);
        health.queued_update(at(100, 0));
        let answer = health.answer(at(103, 0), true);
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            answer.body,
            r#"{"lastUpdated":"0001-01-01T00:00:00Z","currentTime":"1970-01-01T00:01:43Z","nodeEligible":true,"healthy":false}"#
        );
    }

    #[test]
    fn proxy_is_unhealthy_only_after_twice_the_sync_period() {
        let health = ProxyHealth::new(Duration::from_secs(30), [Family::V4]);
        let t0 = at(1_000_000, 0);
        assert!(health.is_healthy(t0));
        health.queued_update(t0);
        health.queued_update(t0 + Duration::from_secs(50)); // the oldest one counts
        assert!(health.is_healthy(t0 + Duration::from_secs(59)));
        assert!(!health.is_healthy(t0 + Duration::from_secs(61)));
        health.updated(t0 + Duration::from_secs(62));
        assert!(health.is_healthy(t0 + Duration::from_secs(200)));
    }

    #[test]
    fn other_paths_get_gos_not_found() {
        let health = ProxyHealth::new(Duration::from_secs(30), [Family::V4]);
        let answer = proxy_route(&health, "/metrics");
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
        assert_eq!(answer.body, "404 page not found\n");
        assert_eq!(
            header(&answer, "Content-Type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(header(&answer, "X-Content-Type-Options"), Some("nosniff"));
        assert_eq!(proxy_route(&health, "/livez").status, StatusCode::OK);
    }

    #[test]
    fn service_answer_is_kube_proxys_text() {
        let spec = |local_endpoints| ServiceHealthSpec {
            namespace: "default".into(),
            name: "web".into(),
            local_endpoints,
        };
        let ok = service_answer(&spec(2), true);
        assert_eq!(ok.status, StatusCode::OK);
        assert_eq!(
            ok.body,
            "{\n\t\"service\": {\n\t\t\"namespace\": \"default\",\n\t\t\"name\": \"web\"\n\t},\n\t\"localEndpoints\": 2,\n\t\"serviceProxyHealthy\": true\n}"
        );
        assert_eq!(
            ok.headers,
            [
                ("Content-Type", "application/json".to_string()),
                ("X-Content-Type-Options", "nosniff".to_string()),
                ("X-Load-Balancing-Endpoint-Weight", "2".to_string()),
            ]
        );
        let none = service_answer(&spec(0), true);
        assert_eq!(none.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            none.body.contains("\"localEndpoints\": 0,"),
            "{}",
            none.body
        );
        assert_eq!(header(&none, "X-Load-Balancing-Endpoint-Weight"), Some("0"));
        let unhealthy = service_answer(&spec(3), false);
        assert_eq!(unhealthy.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            unhealthy
                .body
                .ends_with("\"serviceProxyHealthy\": false\n}"),
            "{}",
            unhealthy.body
        );
    }
}
