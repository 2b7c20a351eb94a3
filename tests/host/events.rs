//! Events for Services the agent cannot program, published to an in-process API server
//! speaking the real events.k8s.io/v1 API over HTTP. The Service errors come from the
//! model fed with Service JSON as the API server returns it (tests/fixtures/k8s).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::k8s::fixture;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use ipvs_proxy::config::Config;
use ipvs_proxy::model::{Model, NodeInfo, ServiceError, ServiceKey};
use ipvs_proxy::observe::k8s_events::{
    ACTION, EventCounts, EventOptions, EventReporter, REASON, REPORTING_CONTROLLER,
    service_reference,
};
use ipvs_proxy::observe::metrics::Metrics;
use k8s_openapi::api::core::v1::{Node, Service};
use serde_json::{Value, json};

/// How the fake API server answers a POST of an Event.
#[derive(Clone, Copy)]
enum Answer {
    /// 201 with the stored Event, as the API server does.
    Created,
    /// A 500 Status.
    InternalError,
    /// A 403 Status, as with a ClusterRole lacking `create` on events.
    Forbidden,
    /// Never answers.
    Hang,
}

#[derive(Debug, Clone)]
struct Posted {
    method: String,
    path: String,
    body: Value,
}

async fn handle(
    answer: Answer,
    posted: Arc<Mutex<Vec<Posted>>>,
    request: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    posted.lock().unwrap().push(Posted {
        method,
        path,
        body: body.clone(),
    });
    let status = |code: u16, reason: &str, message: &str| {
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code
        })
    };
    let (code, answer) = match answer {
        Answer::Created => {
            let mut stored = body;
            stored["metadata"]["uid"] = json!("0c8b3a4e-5d1f-4f7e-9a52-3f4f2b1d9e01");
            stored["metadata"]["resourceVersion"] = json!("52011");
            stored["metadata"]["creationTimestamp"] = json!("2026-11-24T13:40:00Z");
            (201, stored)
        }
        Answer::InternalError => (
            500,
            status(500, "InternalError", "etcdserver: request timed out"),
        ),
        Answer::Forbidden => (
            403,
            status(
                403,
                "Forbidden",
                "events.events.k8s.io is forbidden: User \"system:serviceaccount:kube-system:ipvs-proxy\" cannot create resource \"events\" in API group \"events.k8s.io\" in the namespace \"default\"",
            ),
        ),
        Answer::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    };
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(answer.to_string())))
        .unwrap()
}

async fn serve(answer: Answer) -> (SocketAddr, Arc<Mutex<Vec<Posted>>>) {
    let posted = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = posted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let posted = shared.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let posted = posted.clone();
                    async move { Ok::<_, Infallible>(handle(answer, posted, request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    (addr, posted)
}

fn client(addr: SocketAddr) -> kube::Client {
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

fn node_a() -> NodeInfo {
    let node: Node = fixture("node-a.json");
    let ip = |text: &str| text.parse::<IpAddr>().unwrap();
    NodeInfo::from_node(&node, vec![ip("192.168.50.11"), ip("fd00:50::11")])
}

/// The model and the Service objects it holds (the agent looks the object up the same
/// way to give the Event its uid).
struct Cluster {
    model: Model,
    services: BTreeMap<ServiceKey, Service>,
}

impl Cluster {
    fn new(fixtures: &[&str]) -> Self {
        let mut cluster = Self {
            model: Model::new(Config::default(), node_a()),
            services: BTreeMap::new(),
        };
        for name in fixtures {
            cluster.apply(fixture(name));
        }
        cluster
    }

    fn apply(&mut self, service: Service) {
        self.services
            .insert(ServiceKey::of_service(&service), service.clone());
        self.model.apply_service(service);
    }

    fn errors(&self) -> Vec<ServiceError> {
        self.model.desired().errors.into_values().collect()
    }

    fn report(&self, reporter: &mut EventReporter) {
        reporter.report(&self.errors(), |key| {
            self.model.service(key).map(service_reference)
        });
    }
}

fn broken_with_cluster_ip(ip: &str) -> Service {
    let mut service: Value = fixture("svc-bad-ip.json");
    service["spec"]["clusterIP"] = json!(ip);
    service["spec"]["clusterIPs"] = json!([ip]);
    serde_json::from_value(service).unwrap()
}

fn error_of<'a>(errors: &'a [ServiceError], name: &str) -> &'a ServiceError {
    errors
        .iter()
        .find(|error| &*error.service.name == name)
        .unwrap_or_else(|| panic!("no error for {name}: {errors:?}"))
}

fn posts(posted: &Mutex<Vec<Posted>>) -> Vec<Posted> {
    posted.lock().unwrap().clone()
}

fn error_count(metrics: &Metrics, kind: &str) -> u64 {
    let prefix = format!("ipvs_proxy_errors_total{{kind=\"{kind}\"}} ");
    metrics
        .encode()
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |value| value.trim().parse().unwrap())
}

#[tokio::test]
async fn bad_service_yields_one_warning_event_regarding_it() {
    let (addr, posted) = serve(Answer::Created).await;
    let metrics = Arc::new(Metrics::new());
    let mut reporter = EventReporter::new(client(addr), "node-a", metrics.clone());
    let cluster = Cluster::new(&["svc-bad-ip.json", "svc-web.json"]);
    let errors = cluster.errors();
    assert_eq!(errors.len(), 1, "only broken is bad: {errors:?}");
    let broken = error_of(&errors, "broken");

    cluster.report(&mut reporter);
    cluster.report(&mut reporter);
    cluster.report(&mut reporter);
    let counts = reporter.counts();
    reporter.shutdown().await;

    let posts = posts(&posted);
    assert_eq!(posts.len(), 1, "one Event for three syncs: {posts:#?}");
    let post = &posts[0];
    assert_eq!(post.method, "POST");
    assert_eq!(
        post.path,
        "/apis/events.k8s.io/v1/namespaces/default/events"
    );
    let event = &post.body;
    assert_eq!(event["apiVersion"], "events.k8s.io/v1");
    assert_eq!(event["kind"], "Event");
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], REASON);
    assert_eq!(event["action"], ACTION);
    assert_eq!(event["note"], broken.reason.as_str());
    assert!(
        event["note"].as_str().unwrap().contains("10.96.0.999"),
        "{event}"
    );
    assert_eq!(event["reportingController"], REPORTING_CONTROLLER);
    assert_eq!(event["reportingInstance"], "ipvs-proxy-node-a");
    assert_eq!(event["metadata"]["namespace"], "default");
    assert!(
        event["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("broken."),
        "{event}"
    );
    assert!(event["eventTime"].is_string(), "{event}");
    let regarding = &event["regarding"];
    assert_eq!(regarding["apiVersion"], "v1");
    assert_eq!(regarding["kind"], "Service");
    assert_eq!(regarding["namespace"], "default");
    assert_eq!(regarding["name"], "broken");
    assert_eq!(regarding["uid"], "47540486-f92c-4929-7091-02311b8ce3b8");

    assert_eq!(counts.queued, 1);
    assert_eq!(error_count(&metrics, "bad-service"), 1);
    assert_eq!(error_count(&metrics, "event"), 0);
}

#[tokio::test]
async fn changed_reason_posts_again_and_a_fixed_service_is_forgotten() {
    let (addr, posted) = serve(Answer::Created).await;
    let metrics = Arc::new(Metrics::new());
    let mut reporter = EventReporter::new(client(addr), "node-a", metrics.clone());
    let mut cluster = Cluster::new(&["svc-bad-ip.json", "svc-wrong-family.json"]);
    let mut expected_notes = Vec::new();

    // Two bad Services: one Event each.
    cluster.report(&mut reporter);
    let errors = cluster.errors();
    let mut first: Vec<(String, String)> = errors
        .iter()
        .map(|e| (e.service.name.to_string(), e.reason.clone()))
        .collect();
    first.sort();
    expected_notes.extend(first);

    // broken's reason changes: one more Event, for broken only.
    cluster.apply(broken_with_cluster_ip("10.96.0.1000"));
    cluster.report(&mut reporter);
    cluster.report(&mut reporter);
    let changed = error_of(&cluster.errors(), "broken").reason.clone();
    assert!(changed.contains("10.96.0.1000"), "{changed}");
    expected_notes.push(("broken".into(), changed.clone()));

    // broken is fixed: nothing is posted, and it is forgotten.
    cluster.apply(broken_with_cluster_ip("10.96.0.99"));
    assert_eq!(cluster.errors().len(), 1, "only mixed is still bad");
    cluster.report(&mut reporter);

    // broken breaks again the same way: evented again.
    cluster.apply(broken_with_cluster_ip("10.96.0.1000"));
    cluster.report(&mut reporter);
    expected_notes.push(("broken".into(), changed));

    reporter.shutdown().await;
    let posts = posts(&posted);
    let notes: Vec<(String, String)> = posts
        .iter()
        .map(|post| {
            (
                post.body["regarding"]["name"].as_str().unwrap().to_string(),
                post.body["note"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(notes, expected_notes);
    assert!(
        posts
            .iter()
            .all(|post| post.body["regarding"]["uid"].is_string()),
        "every Event names its Service's uid"
    );
    assert_eq!(error_count(&metrics, "bad-service"), 4);
}

#[tokio::test]
async fn failing_api_server_is_logged_and_counted_not_fatal() {
    // The log lines are shown with --nocapture.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    for (answer, what) in [(Answer::InternalError, "500"), (Answer::Forbidden, "403")] {
        let (addr, posted) = serve(answer).await;
        let metrics = Arc::new(Metrics::new());
        let mut reporter = EventReporter::new(client(addr), "node-a", metrics.clone());
        let mut cluster = Cluster::new(&["svc-bad-ip.json"]);
        cluster.report(&mut reporter);
        // The next sync still works and reports what is new.
        cluster.apply(fixture("svc-wrong-family.json"));
        cluster.report(&mut reporter);
        let started = Instant::now();
        reporter.shutdown().await;
        assert!(started.elapsed() < Duration::from_secs(5), "{what}");
        assert_eq!(posts(&posted).len(), 2, "{what}: both were attempted");
        assert_eq!(
            error_count(&metrics, "event"),
            2,
            "{what}: both failures are counted"
        );
        assert_eq!(error_count(&metrics, "bad-service"), 2, "{what}");
    }
}

#[tokio::test]
async fn hung_api_server_never_blocks_the_sync() {
    let (addr, posted) = serve(Answer::Hang).await;
    let metrics = Arc::new(Metrics::new());
    let options = EventOptions {
        queue_capacity: 2,
        publish_timeout: Duration::from_millis(500),
    };
    let mut reporter =
        EventReporter::with_options(client(addr), "node-a", metrics.clone(), options);
    let errors: Vec<ServiceError> = (0..10)
        .map(|i| ServiceError {
            service: ServiceKey::new("default", format!("broken-{i}")),
            reason: format!(
                "spec.clusterIPs[0] \"10.96.0.{}\" is not an IP address",
                990 + i
            ),
        })
        .collect();

    let started = Instant::now();
    for error in &errors {
        reporter.report(std::slice::from_ref(error), |_| None);
        // Each sync reports one Service; the others are then fine, and forgotten.
    }
    reporter.report(&errors, |_| None);
    let reporting = started.elapsed();
    assert!(
        reporting < Duration::from_millis(200),
        "11 syncs reported in {reporting:?} with the API server not answering"
    );

    let counts: EventCounts = reporter.counts();
    // Ten Services one at a time, then the nine not reported last together.
    assert_eq!(counts.queued + counts.dropped, 19, "{counts:?}");
    // At most the queue plus the one being published got in.
    assert!(counts.queued <= 3, "{counts:?}");
    assert!(counts.dropped >= 16, "{counts:?}");
    assert_eq!(counts.published, 0, "{counts:?}");

    let started = Instant::now();
    reporter.shutdown().await;
    let drained = started.elapsed();
    // Each queued Event waits out its timeout, one after the other.
    assert!(drained < Duration::from_secs(5), "drained in {drained:?}");
    let posted = posts(&posted);
    assert!(!posted.is_empty(), "the first Event reached the server");
    assert!(
        posted
            .iter()
            .all(|post| post.body["regarding"]["uid"].is_null()
                && post.body["regarding"]["kind"] == "Service"),
        "without the object, the Event names the Service by namespace and name"
    );
    assert_eq!(
        error_count(&metrics, "event"),
        19,
        "every Event dropped or timed out is counted"
    );
}

#[tokio::test]
async fn long_notes_and_node_names_are_cut_to_the_api_limits() {
    let (addr, posted) = serve(Answer::Created).await;
    let node = "n".repeat(200);
    let mut reporter = EventReporter::new(client(addr), &node, Arc::new(Metrics::new()));
    let reason = format!("spec.ports: {}", "é".repeat(700));
    reporter.report(
        &[ServiceError {
            service: ServiceKey::new("shop", "cart"),
            reason: reason.clone(),
        }],
        |_| None,
    );
    reporter.shutdown().await;
    let posts = posts(&posted);
    assert_eq!(posts.len(), 1);
    let event = &posts[0].body;
    assert_eq!(
        posts[0].path,
        "/apis/events.k8s.io/v1/namespaces/shop/events"
    );
    let note = event["note"].as_str().unwrap();
    assert!(note.len() <= 1024 && note.len() > 1000, "{}", note.len());
    assert!(reason.starts_with(note));
    let instance = event["reportingInstance"].as_str().unwrap();
    assert_eq!(instance.len(), 128);
    assert!(instance.starts_with("ipvs-proxy-nnn"));
}

#[tokio::test]
async fn without_an_api_server_bad_services_are_only_logged_once() {
    let metrics = Arc::new(Metrics::new());
    let mut reporter = EventReporter::log_only(metrics.clone());
    let cluster = Cluster::new(&["svc-bad-ip.json", "svc-wrong-family.json"]);
    cluster.report(&mut reporter);
    cluster.report(&mut reporter);
    assert_eq!(reporter.counts(), EventCounts::default());
    assert_eq!(error_count(&metrics, "bad-service"), 2);
    reporter.shutdown().await;
}
