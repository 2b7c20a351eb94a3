//! Kubernetes Events for Services the agent cannot program.
//!
//! The model skips a Service it cannot program (an invalid IP, a family this node does
//! not run, a port another Service already serves) and says why in
//! [`DesiredState::errors`](crate::model::DesiredState::errors). [`EventReporter`]
//! turns those errors into a log line and a `Warning` Event (events.k8s.io/v1) regarding
//! the Service, so `kubectl describe service` shows the owner what is wrong:
//!
//! ```text
//! Type     Reason           From        Message
//! Warning  FailedToProgram  ipvs-proxy  spec.clusterIPs[0] "10.0.0.999" is not an IP address
//! ```
//!
//! A Service is reported once per distinct reason: again when the reason changes, and
//! again after it was fine for a sync and broke anew. Publishing runs on its own task
//! behind a bounded queue, so a sync never waits on the API server; a full queue drops
//! the Event with a log line, and a failed publication is logged and counted
//! (`ipvs_proxy_errors_total{kind="event"}`), never fatal.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::model::input::ServiceInput;
use crate::model::{ServiceError, ServiceKey};
use crate::observe::metrics::Metrics;

/// The `reportingController` of every Event: this agent.
pub const REPORTING_CONTROLLER: &str = "ipvs-proxy";
/// The Event reason for a Service that was skipped, in the `FailedTo<Verb>` form of
/// Kubernetes' own controllers (e.g. the endpoint controller's `FailedToUpdateEndpoint`).
pub const REASON: &str = "FailedToProgram";
/// The Event action: what the agent tried to do with the Service.
pub const ACTION: &str = "ProgramService";
/// The error kind counted in `ipvs_proxy_errors_total` for a Service that was skipped
/// (the agent's existing kind for it).
const BAD_SERVICE_ERROR_KIND: &str = "bad-service";
/// The error kind counted in `ipvs_proxy_errors_total` for an Event that was not
/// published (refused, timed out, or dropped on a full queue).
const EVENT_ERROR_KIND: &str = "event";

/// The API server rejects a longer `note` (1 kB).
const NOTE_LIMIT: usize = 1024;
/// The API server rejects a longer `reportingInstance`.
const INSTANCE_LIMIT: usize = 128;

/// How the publishing task is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventOptions {
    /// Events waiting for the API server; more are dropped (and logged).
    pub queue_capacity: usize,
    /// How long one publication may take before it counts as failed.
    pub publish_timeout: Duration,
}

impl Default for EventOptions {
    fn default() -> Self {
        Self {
            queue_capacity: 256,
            publish_timeout: Duration::from_secs(10),
        }
    }
}

/// What happened to the Events so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCounts {
    /// Handed to the publishing task.
    pub queued: u64,
    /// Accepted by the API server.
    pub published: u64,
    /// Refused by the API server, unanswered within the timeout, or unreachable.
    pub failed: u64,
    /// Not queued because the queue was full.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    queued: AtomicU64,
    published: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// One Event to publish.
#[derive(Debug)]
struct Publication {
    service: ServiceKey,
    regarding: ObjectReference,
    type_: EventType,
    reason: String,
    action: String,
    note: String,
}

/// Logs each Service the agent cannot program, once per distinct reason, and publishes a
/// `Warning` Event regarding it when built with a Kubernetes client.
///
/// Dropping the reporter stops the queue; Events already queued are still published.
#[derive(Debug)]
pub struct EventReporter {
    /// `None` when there is no API server to tell (the static source): log only.
    queue: Option<mpsc::Sender<Publication>>,
    worker: Option<JoinHandle<()>>,
    /// The reason last reported, per Service currently failing.
    reported: BTreeMap<ServiceKey, String>,
    counters: Arc<Counters>,
    metrics: Arc<Metrics>,
}

impl EventReporter {
    /// A reporter publishing Events through `client` as `ipvs-proxy` on `node`
    /// (`reportingInstance` `ipvs-proxy-<node>`), with the default [`EventOptions`].
    ///
    /// Spawns the publishing task, so it must be called inside a Tokio runtime.
    pub fn new(client: Client, node: &str, metrics: Arc<Metrics>) -> Self {
        Self::with_options(client, node, metrics, EventOptions::default())
    }

    /// Like [`EventReporter::new`] with explicit queue and timeout bounds.
    pub fn with_options(
        client: Client,
        node: &str,
        metrics: Arc<Metrics>,
        options: EventOptions,
    ) -> Self {
        let (queue, receiver) = mpsc::channel(options.queue_capacity.max(1));
        let counters = Arc::new(Counters::default());
        let reporter = Reporter {
            controller: REPORTING_CONTROLLER.to_string(),
            instance: Some(reporting_instance(node)),
        };
        let worker = tokio::spawn(publish_queued(
            client,
            reporter,
            receiver,
            counters.clone(),
            metrics.clone(),
            options.publish_timeout,
        ));
        Self {
            queue: Some(queue),
            worker: Some(worker),
            reported: BTreeMap::new(),
            counters,
            metrics,
        }
    }

    /// A reporter that only logs, for a source without an API server.
    pub fn log_only(metrics: Arc<Metrics>) -> Self {
        Self {
            queue: None,
            worker: None,
            reported: BTreeMap::new(),
            counters: Arc::new(Counters::default()),
            metrics,
        }
    }

    /// Reports the Services that cannot be programmed in this sync: `errors` is the whole
    /// current list (`DesiredState::errors`). A Service is logged and evented when it is
    /// new in the list or its reason changed; Services no longer in the list are
    /// forgotten, so a later breakage is reported again.
    ///
    /// `regarding` gives the Service's object reference (with its uid, which
    /// `kubectl describe` matches Events on), e.g. from [`service_reference`]; when it
    /// returns `None` the Event names the Service by namespace and name only.
    ///
    /// Never waits on the API server.
    pub fn report<'a>(
        &mut self,
        errors: impl IntoIterator<Item = &'a ServiceError>,
        mut regarding: impl FnMut(&ServiceKey) -> Option<ObjectReference>,
    ) {
        // One reason per Service, in case it failed for several.
        let mut current: BTreeMap<&ServiceKey, String> = BTreeMap::new();
        for error in errors {
            current
                .entry(&error.service)
                .and_modify(|reason| {
                    reason.push_str("; ");
                    reason.push_str(&error.reason);
                })
                .or_insert_with(|| error.reason.clone());
        }
        self.reported.retain(|service, _| {
            let fixed = !current.contains_key(service);
            if fixed {
                info!(service = %service, "Service can be programmed again");
            }
            !fixed
        });
        for (service, reason) in current {
            if self.reported.get(service) == Some(&reason) {
                continue;
            }
            warn!(
                "{}",
                ServiceError {
                    service: service.clone(),
                    reason: reason.clone(),
                }
            );
            self.metrics.error(BAD_SERVICE_ERROR_KIND);
            let regarding = regarding(service).unwrap_or_else(|| key_reference(service));
            self.enqueue(Publication {
                service: service.clone(),
                regarding,
                type_: EventType::Warning,
                reason: REASON.to_string(),
                action: ACTION.to_string(),
                note: truncate(&reason, NOTE_LIMIT),
            });
            self.reported.insert(service.clone(), reason);
        }
    }

    /// Publishes one Event regarding `service` with its own type, reason and action
    /// (the LoadBalancer IPAM's `IPAllocated`, `AllocationFailed`, ...). Unlike
    /// [`EventReporter::report`] it does not deduplicate: the caller decides what is
    /// news. `regarding` as in [`EventReporter::report`]. Never waits on the API
    /// server.
    pub fn publish(
        &self,
        service: &ServiceKey,
        regarding: Option<ObjectReference>,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        self.enqueue(Publication {
            service: service.clone(),
            regarding: regarding.unwrap_or_else(|| key_reference(service)),
            type_,
            reason: reason.to_string(),
            action: action.to_string(),
            note: truncate(note, NOTE_LIMIT),
        });
    }

    /// The counts of Events queued, published, failed and dropped so far.
    pub fn counts(&self) -> EventCounts {
        EventCounts {
            queued: self.counters.queued.load(Ordering::Relaxed),
            published: self.counters.published.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting Events and waits until the queued ones are published or failed
    /// (each bounded by the publish timeout).
    pub async fn shutdown(mut self) {
        self.queue = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.await;
        }
    }

    fn enqueue(&self, publication: Publication) {
        let Some(queue) = &self.queue else {
            return;
        };
        match queue.try_send(publication) {
            Ok(()) => {
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                let (publication, why) = match error {
                    mpsc::error::TrySendError::Full(publication) => (
                        publication,
                        "the queue of Events waiting for the API server is full",
                    ),
                    mpsc::error::TrySendError::Closed(publication) => {
                        (publication, "the Event publishing task has stopped")
                    }
                };
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                self.metrics.error(EVENT_ERROR_KIND);
                warn!(service = %publication.service, "Event {} not published: {why}", publication.reason);
            }
        }
    }
}

/// The object reference of a Service for [`EventReporter::report`]: apiVersion, kind,
/// namespace, name and uid (what `kubectl describe` matches Events on).
pub fn service_reference(service: &ServiceInput) -> ObjectReference {
    ObjectReference {
        uid: service.uid.as_deref().map(String::from),
        ..key_reference(&service.key)
    }
}

/// A reference by namespace and name, for a Service whose object is not at hand.
fn key_reference(service: &ServiceKey) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".to_string()),
        kind: Some("Service".to_string()),
        namespace: Some(service.namespace.to_string()),
        name: Some(service.name.to_string()),
        ..ObjectReference::default()
    }
}

/// `ipvs-proxy-<node>`, cut to the length the API server accepts.
fn reporting_instance(node: &str) -> String {
    truncate(&format!("{REPORTING_CONTROLLER}-{node}"), INSTANCE_LIMIT)
}

/// `text` cut to at most `limit` bytes on a character boundary.
fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

async fn publish_queued(
    client: Client,
    reporter: Reporter,
    mut queue: mpsc::Receiver<Publication>,
    counters: Arc<Counters>,
    metrics: Arc<Metrics>,
    timeout: Duration,
) {
    while let Some(publication) = queue.recv().await {
        // A fresh Recorder per Event: its cache keys on the reason but not the note, so
        // a Service whose reason text changed would have its old note patched as a
        // repeat. Which reports are new is decided by the EventReporter instead.
        let recorder = Recorder::new(client.clone(), reporter.clone());
        let event = Event {
            type_: publication.type_,
            reason: publication.reason.clone(),
            note: Some(publication.note),
            action: publication.action,
            secondary: None,
        };
        let outcome =
            tokio::time::timeout(timeout, recorder.publish(&event, &publication.regarding)).await;
        let failure = match outcome {
            Ok(Ok(())) => {
                counters.published.fetch_add(1, Ordering::Relaxed);
                debug!(service = %publication.service, "Event {} published", publication.reason);
                continue;
            }
            Ok(Err(kube::Error::Api(status))) => {
                let hint = if status.is_forbidden() {
                    ": ipvs-proxy's ClusterRole must allow create on events in \
                     events.k8s.io (manifests/base/rbac.yaml)"
                } else {
                    ""
                };
                format!(
                    "the API server answered {} {}: {}{hint}",
                    status.code, status.reason, status.message
                )
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer from the API server within {timeout:?}"),
        };
        counters.failed.fetch_add(1, Ordering::Relaxed);
        metrics.error(EVENT_ERROR_KIND);
        warn!(service = %publication.service, "Event {} not published: {failure}", publication.reason);
    }
}
