//! Health endpoints with kube-proxy's semantics.
//!
//! - The proxy health server (`healthzBindAddress`, default `0.0.0.0:10256`) answers
//!   `/healthz` and `/livez`. The proxy is unhealthy when an update has been queued
//!   for longer than twice `syncPeriod` without a sync completing; `/healthz` is
//!   also unhealthy while this node is being deleted (or tainted for deletion by the
//!   cluster autoscaler), so load balancers stop sending traffic to it.
//! - One service health server per `externalTrafficPolicy: Local` Service, on its
//!   `healthCheckNodePort`: 200 when the node has local endpoints for it and the proxy
//!   is healthy, 503 otherwise, with kube-proxy's JSON body and
//!   `X-Load-Balancing-Endpoint-Weight` header.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A plain HTTP answer: status, headers and a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// Extra headers (name, value).
    pub headers: Vec<(&'static str, String)>,
    /// Response body.
    pub body: String,
}

impl Answer {
    fn json(status: u16, body: String) -> Answer {
        Answer {
            status,
            headers: vec![
                ("Content-Type", "application/json".to_string()),
                ("X-Content-Type-Options", "nosniff".to_string()),
            ],
            body,
        }
    }

    fn not_found() -> Answer {
        Answer {
            status: 404,
            headers: vec![("Content-Type", "text/plain".to_string())],
            body: "404 page not found\n".to_string(),
        }
    }
}

#[derive(Debug, Default)]
struct ProxyHealthState {
    /// When the oldest update still waiting for a sync was queued.
    oldest_queued: Option<SystemTime>,
    /// When the last sync completed.
    last_updated: Option<SystemTime>,
    /// False while the node is being deleted or is tainted for deletion.
    node_eligible: bool,
}

/// Health of the proxy's sync loop, shared between the loop and the health server.
#[derive(Debug)]
pub struct ProxyHealth {
    timeout: Duration,
    state: Mutex<ProxyHealthState>,
}

impl ProxyHealth {
    /// Creates the tracker; `sync_period` is the configured `ipvs.syncPeriod`
    /// (the health timeout is twice it, as in kube-proxy).
    pub fn new(sync_period: Duration) -> ProxyHealth {
        ProxyHealth {
            timeout: sync_period * 2,
            state: Mutex::new(ProxyHealthState {
                node_eligible: true,
                ..ProxyHealthState::default()
            }),
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

    /// Records whether this node may receive traffic (not being deleted).
    pub fn set_node_eligible(&self, eligible: bool) {
        self.lock().node_eligible = eligible;
    }

    /// True unless an update has waited for longer than the health timeout.
    pub fn is_healthy(&self, now: SystemTime) -> bool {
        let state = self.lock();
        match state.oldest_queued {
            None => true,
            Some(queued) => now.duration_since(queued).unwrap_or_default() < self.timeout,
        }
    }

    /// The answer of `/healthz` (`include_node`) or `/livez` at `now`.
    pub fn answer(&self, now: SystemTime, include_node: bool) -> Answer {
        let healthy = self.is_healthy(now);
        let state = self.lock();
        let eligible = state.node_eligible;
        let ok = healthy && (!include_node || eligible);
        let mut body = serde_json::json!({
            "lastUpdated": rfc3339(state.last_updated.unwrap_or(SystemTime::UNIX_EPOCH)),
            "currentTime": rfc3339(now),
        });
        if include_node {
            body["nodeEligible"] = serde_json::Value::Bool(eligible);
        }
        Answer::json(if ok { 200 } else { 503 }, body.to_string())
    }
}

/// Formats a time as RFC 3339 in UTC with second precision, as Go's `time.Time`
/// marshals in kube-proxy's health bodies.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a (year, month, day) civil date (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The answer of a service health server.
pub fn service_answer(
    namespace: &str,
    name: &str,
    local_endpoints: usize,
    proxy_healthy: bool,
) -> Answer {
    let body = serde_json::json!({
        "service": { "namespace": namespace, "name": name },
        "localEndpoints": local_endpoints,
        "serviceProxyHealthy": proxy_healthy,
    });
    let ok = local_endpoints > 0 && proxy_healthy;
    let mut answer = Answer::json(
        if ok { 200 } else { 503 },
        serde_json::to_string_pretty(&body).unwrap_or_default(),
    );
    answer.headers.push((
        "X-Load-Balancing-Endpoint-Weight",
        local_endpoints.to_string(),
    ));
    answer
}

/// Serves HTTP/1.1 on `listener`, answering every request with `route(path)`.
pub async fn serve<F>(listener: TcpListener, route: F)
where
    F: Fn(&str) -> Answer + Send + Sync + 'static,
{
    let route = Arc::new(route);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(%error, "health server: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let route = route.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let answer = route(req.uri().path());
                async move { Ok::<_, Infallible>(to_response(answer)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn to_response(answer: Answer) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(answer.body)));
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in answer.headers {
        if let Ok(value) = hyper::header::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// Starts the proxy health server (`/healthz`, `/livez`) on an already bound listener.
pub fn spawn_proxy_health_server(
    listener: TcpListener,
    health: Arc<ProxyHealth>,
) -> JoinHandle<()> {
    tokio::spawn(serve(listener, move |path| match path {
        "/healthz" => health.answer(SystemTime::now(), true),
        "/livez" => health.answer(SystemTime::now(), false),
        _ => Answer::not_found(),
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
    bind_ip: std::net::IpAddr,
    proxy: Arc<ProxyHealth>,
    servers: BTreeMap<u16, (SharedSpec, JoinHandle<()>)>,
}

impl ServiceHealthServers {
    /// Creates an empty set whose servers bind on `bind_ip`.
    pub fn new(bind_ip: std::net::IpAddr, proxy: Arc<ProxyHealth>) -> ServiceHealthServers {
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
                    let task = tokio::spawn(serve(listener, move |_path| {
                        let spec = reader.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        service_answer(
                            &spec.namespace,
                            &spec.name,
                            spec.local_endpoints,
                            proxy.is_healthy(SystemTime::now()),
                        )
                    }));
                    self.servers.insert(*port, (shared, task));
                }
                Err(error) => failures.push((*port, error)),
            }
        }
        failures
    }

    /// Ports currently served.
    pub fn ports(&self) -> Vec<u16> {
        self.servers.keys().copied().collect()
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

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn proxy_is_unhealthy_only_after_twice_the_sync_period() {
        let health = ProxyHealth::new(Duration::from_secs(30));
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(health.is_healthy(t0));
        health.queued_update(t0);
        health.queued_update(t0 + Duration::from_secs(50)); // the oldest one counts
        assert!(health.is_healthy(t0 + Duration::from_secs(59)));
        assert!(!health.is_healthy(t0 + Duration::from_secs(61)));
        assert_eq!(
            health.answer(t0 + Duration::from_secs(61), false).status,
            503
        );
        health.updated(t0 + Duration::from_secs(62));
        let answer = health.answer(t0 + Duration::from_secs(63), true);
        assert_eq!(answer.status, 200);
        let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(body["lastUpdated"], "1970-01-12T13:47:42Z");
        assert_eq!(body["nodeEligible"], true);
    }

    #[test]
    fn healthz_fails_but_livez_passes_on_a_node_being_deleted() {
        let health = ProxyHealth::new(Duration::from_secs(30));
        health.set_node_eligible(false);
        let now = SystemTime::now();
        assert_eq!(health.answer(now, true).status, 503);
        assert_eq!(health.answer(now, false).status, 200);
    }

    #[test]
    fn service_answer_matches_kube_proxy() {
        let ok = service_answer("default", "web", 2, true);
        assert_eq!(ok.status, 200);
        let body: serde_json::Value = serde_json::from_str(&ok.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"service":{"namespace":"default","name":"web"},
                "localEndpoints":2,"serviceProxyHealthy":true})
        );
        assert!(
            ok.headers
                .contains(&("X-Load-Balancing-Endpoint-Weight", "2".to_string()))
        );
        assert_eq!(service_answer("default", "web", 0, true).status, 503);
        assert_eq!(service_answer("default", "web", 3, false).status, 503);
    }
}
