//! The cluster's LoadBalancer IPAM: one allocator for the whole cluster, elected
//! through a `coordination.k8s.io` Lease, writing each Service's addresses.
//!
//! Every agent runs [`spawn_ipam`]; all of them compete for the Lease (the
//! `kube-lease-manager` crate renews and takes it over), and only the holder works:
//!
//! 1. It confirms the Lease by reading it back: it writes only while the Lease names
//!    it and was renewed less than `duration − grace/2` ago. A failed read, a failed
//!    write that did not reach the API server, or the time running out stops the
//!    writes at once, before another agent may take the Lease over (the other agents
//!    wait for the whole `duration`; `grace/2` is the clock skew tolerated).
//! 2. Once confirmed it lists and watches Services and Namespaces afresh (a
//!    quorum read): the addresses already written, by itself or a previous leader,
//!    are read back before anything is written, so a takeover never moves an
//!    address in use. Each Service is projected to an [`LbService`] as it arrives;
//!    no copy of the object is kept (a cluster may have 10 000 Services).
//! 3. On every change (debounced by `settle`) it runs the pure [`allocate`] and
//!    writes only the differences: `status.loadBalancer.ingress` through the status
//!    subresource and the `metallb.io/ip-allocated-from-pool` annotation (JSON merge
//!    patches), at most `batch` writes before it looks at the Lease again. Events:
//!    `IPAllocated` for each new assignment, `AllocationFailed` for each refusal,
//!    `ClearAssignment` when a Service loses its addresses, `LoadBalancerFailed` for
//!    a Service whose requests cannot be read (it keeps what it holds).
//! 4. A Service deleted frees its addresses; one no longer a LoadBalancer of ours
//!    that still carries the pool annotation of one of our pools gets its status and
//!    annotation cleared.
//!
//! An empty configuration (no `IPAddressPool` at all) writes nothing: it is also what
//! the agent holds before MetalLB's objects are read, and clearing every Service's
//! addresses then would break every LoadBalancer in the cluster on each restart.
//! MetalLB clears them; here the addresses stay until pools exist again.
//!
//! When the controller loses the Lease it drops its view of the cluster and stops
//! watching; the next leadership lists afresh.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference, Service};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::{WatchStreamExt, watcher};
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError, LeaseParams};
use metallb_config::LbConfig;
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::allocate::{Allocation, NamespaceLabels, allocate};
use crate::lb::service::{
    ALLOCATED_FROM_POOL, ANNOTATION_PREFIX, LbService, LbServiceError, OLD_ANNOTATION_PREFIX,
    ingress_ips,
};
use crate::model::ServiceKey;
use crate::observe::k8s_events::{EventOptions, EventReporter};
use crate::observe::metrics::Metrics;

/// Where the Lease lives unless configured: the namespace ipvs-proxy's DaemonSet runs
/// in (manifests/daemonset.yaml), beside the Leases of the other kube-system
/// components. (MetalLB's controller is a Deployment of its own and keeps its objects
/// in `metallb-system`; ipvs-proxy reads MetalLB's objects there but needs no write
/// access to it.)
pub const DEFAULT_LEASE_NAMESPACE: &str = "kube-system";
/// The Lease's name unless configured.
pub const DEFAULT_LEASE_NAME: &str = "ipvs-proxy-ipam";
/// The field manager of the IPAM's writes to Services.
pub const FIELD_MANAGER: &str = "ipvs-proxy-ipam";
/// Event reason: a Service was given addresses.
pub const REASON_ALLOCATED: &str = "IPAllocated";
/// Event reason: a Service gets no address.
pub const REASON_FAILED: &str = "AllocationFailed";
/// Event reason: a Service lost the addresses it held.
pub const REASON_CLEARED: &str = "ClearAssignment";
/// Event reason: a Service's requests cannot be read.
pub const REASON_BAD_REQUEST: &str = "LoadBalancerFailed";
/// The Events' action.
pub const ACTION: &str = "AllocateLoadBalancerIP";
/// The error kind counted in `ipvs_proxy_errors_total` for a failed IPAM write.
const WRITE_ERROR_KIND: &str = "ipam-write";

/// How the IPAM controller runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamOptions {
    /// This agent's identity in the Lease (the node name: unique and readable).
    pub identity: String,
    /// The Lease's namespace.
    pub lease_namespace: String,
    /// The Lease's name.
    pub lease_name: String,
    /// How long a Lease stays valid after its last renewal (whole seconds, ≥ 2).
    pub lease_duration: Duration,
    /// The holder renews this long before the Lease runs out; half of it is the clock
    /// skew tolerated between agents (whole seconds, ≥ 1, below the duration).
    pub lease_grace: Duration,
    /// How often the holder reads the Lease back to confirm it may write (below
    /// half the grace).
    pub confirm_interval: Duration,
    /// `spec.loadBalancerClass` of the Services that are ours (`None`: Services
    /// without a class, as MetalLB without `--lb-class`).
    pub load_balancer_class: Option<String>,
    /// How long to wait after a change for more before computing (bursts of changes
    /// are computed once).
    pub settle: Duration,
    /// When to try again after a write the API server refused.
    pub retry: Duration,
    /// Writes per round; between rounds the Lease is confirmed again.
    pub batch: usize,
    /// The Events' queue and timeout.
    pub events: EventOptions,
}

impl IpamOptions {
    /// The defaults for an agent named `identity`: the Lease
    /// `kube-system/ipvs-proxy-ipam`, valid 15 s and renewed 5 s before it runs out
    /// (Kubernetes' own controllers use 15 s too), confirmed every second.
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            identity: identity.into(),
            lease_namespace: DEFAULT_LEASE_NAMESPACE.to_string(),
            lease_name: DEFAULT_LEASE_NAME.to_string(),
            lease_duration: Duration::from_secs(15),
            lease_grace: Duration::from_secs(5),
            confirm_interval: Duration::from_secs(1),
            load_balancer_class: None,
            settle: Duration::from_millis(200),
            retry: Duration::from_secs(5),
            batch: 64,
            events: EventOptions::default(),
        }
    }

    fn check(&self) -> Result<(), IpamError> {
        let bad = |why: String| Err(IpamError::Options(why));
        if self.identity.is_empty() {
            return bad("the identity is empty".into());
        }
        let whole = |duration: Duration| duration.subsec_nanos() == 0;
        if !whole(self.lease_duration) || !whole(self.lease_grace) {
            return bad("the Lease duration and grace are whole seconds".into());
        }
        if self.lease_grace.is_zero() || self.lease_grace >= self.lease_duration {
            return bad(format!(
                "the Lease grace ({:?}) must be at least 1 s and below its duration ({:?})",
                self.lease_grace, self.lease_duration
            ));
        }
        if self.confirm_interval.is_zero() || self.confirm_interval >= self.lease_grace / 2 {
            return bad(format!(
                "the confirm interval ({:?}) must be below half the Lease grace ({:?})",
                self.confirm_interval, self.lease_grace
            ));
        }
        if self.batch == 0 {
            return bad("the batch size is 0".into());
        }
        Ok(())
    }
}

/// Why the IPAM controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// The options are inconsistent.
    #[error("IPAM options: {0}")]
    Options(String),
    /// The Lease manager's task ended on an error.
    #[error("the IPAM Lease manager stopped: {0}")]
    Lease(#[from] LeaseManagerError),
    /// The controller's task panicked or was aborted.
    #[error("the IPAM task ended abnormally: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The running controller.
#[derive(Debug)]
pub struct IpamHandle {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), IpamError>>,
    writing: watch::Receiver<bool>,
}

impl IpamHandle {
    /// Whether this agent currently holds a confirmed Lease and writes (for the
    /// status page and for tests to wait on).
    pub fn writing(&self) -> watch::Receiver<bool> {
        self.writing.clone()
    }

    /// Whether the controller's task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the controller: no more writes, and the Lease is released so another
    /// agent takes over without waiting for it to run out.
    pub async fn stop(mut self) -> Result<(), IpamError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await?
    }

    /// Stops the controller without waiting. Its writes stop at once; the Lease
    /// manager (a task of its own) still releases the Lease when it notices.
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// Starts the IPAM controller. `config` is the validated MetalLB configuration,
/// updated by the agent's MetalLB source. Must be called inside a Tokio runtime.
pub fn spawn_ipam(
    client: Client,
    options: IpamOptions,
    config: watch::Receiver<Arc<LbConfig>>,
    metrics: Arc<Metrics>,
) -> IpamHandle {
    let (stop, stopped) = oneshot::channel();
    let (writing_tx, writing) = watch::channel(false);
    let task = tokio::spawn(async move {
        options.check()?;
        run(client, options, config, metrics, stopped, writing_tx).await
    });
    IpamHandle {
        stop: Some(stop),
        task,
        writing,
    }
}

async fn run(
    client: Client,
    options: IpamOptions,
    mut config: watch::Receiver<Arc<LbConfig>>,
    metrics: Arc<Metrics>,
    mut stop: oneshot::Receiver<()>,
    writing: watch::Sender<bool>,
) -> Result<(), IpamError> {
    let events = EventReporter::with_options(
        client.clone(),
        &options.identity,
        metrics.clone(),
        options.events,
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), &options.lease_namespace);
    let lease = format!("{}/{}", options.lease_namespace, options.lease_name);

    // The Lease manager reads (and creates) the Lease first: retried until the API
    // server answers.
    let manager = loop {
        let built = LeaseManagerBuilder::new(client.clone(), &options.lease_name)
            .with_namespace(&options.lease_namespace)
            .with_parameters(LeaseParams::new(
                &options.identity,
                options.lease_duration.as_secs(),
                options.lease_grace.as_secs(),
            ))
            .build()
            .await;
        match built {
            Ok(manager) => break manager,
            Err(error) => {
                warn!(%lease, "IPAM: cannot read the Lease yet: {error}");
                tokio::select! {
                    _ = tokio::time::sleep(options.retry) => {}
                    _ = &mut stop => {
                        events.shutdown().await;
                        return Ok(());
                    }
                }
            }
        }
    };
    let (mut held, lease_task) = manager.watch().await;

    let mut confirmed_until: Option<Instant> = None;
    let mut confirm = tokio::time::interval(options.confirm_interval);
    confirm.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut session: Option<Session> = None;
    let mut reporter = Reporter {
        events,
        reported: HashMap::new(),
    };

    let mut config_open = true;
    let result = loop {
        let holding = *held.borrow();
        let due = session.as_ref().and_then(|session| session.due);
        tokio::select! {
            _ = &mut stop => break Ok(()),
            changed = held.changed() => {
                if changed.is_err() {
                    break Err(());
                }
                if *held.borrow_and_update() {
                    info!(%lease, identity = %options.identity, "IPAM: holding the Lease");
                    confirmed_until = confirm_lease(&leases, &options, confirmed_until).await;
                } else {
                    info!(%lease, identity = %options.identity, "IPAM: not holding the Lease");
                    confirmed_until = None;
                }
            }
            _ = confirm.tick(), if holding => {
                confirmed_until = confirm_lease(&leases, &options, confirmed_until).await;
            }
            _ = tokio::time::sleep_until(confirmed_until.unwrap_or_else(Instant::now)), if confirmed_until.is_some() => {
                warn!(%lease, "IPAM: the Lease could not be confirmed in time; writes stop");
                confirmed_until = None;
            }
            changed = config.changed(), if config_open => {
                if changed.is_err() {
                    // The source is gone (the agent is stopping): keep the last one.
                    config_open = false;
                    continue;
                }
                if let Some(session) = &mut session {
                    session.mark_dirty(options.settle);
                }
            }
            event = next_event(&mut session), if session.is_some() => {
                if let Some(session) = &mut session {
                    session.apply(event, &options);
                }
            }
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                if let Some(active) = &mut session {
                    let config = config.borrow().clone();
                    let still_confirmed = active
                        .reconcile(&client, &config, &options, &mut reporter, &metrics, confirmed_until)
                        .await;
                    if !still_confirmed {
                        confirmed_until = None;
                    }
                }
            }
        }

        let may_write =
            *held.borrow() && confirmed_until.is_some_and(|until| Instant::now() < until);
        writing.send_if_modified(|writing| std::mem::replace(writing, may_write) != may_write);
        match (&session, may_write) {
            (None, true) => {
                info!(%lease, "IPAM: confirmed holder; reading Services and Namespaces");
                session = Some(Session::start(&client, options.settle));
            }
            (Some(_), false) => {
                info!(%lease, "IPAM: writes stopped; the next leadership reads everything afresh");
                session = None;
                reporter.reported.clear();
            }
            _ => {}
        }
    };

    writing.send_replace(false);
    drop(session);
    // Closing the channel makes the Lease manager release the Lease.
    drop(held);
    let released = lease_task.await;
    reporter.events.shutdown().await;
    match (result, released) {
        (Ok(()), _) => Ok(()),
        (Err(_), Ok(Err(error))) => Err(IpamError::Lease(error)),
        (Err(_), Err(error)) => Err(IpamError::Task(error)),
        (Err(_), Ok(Ok(_))) => Ok(()),
    }
}

/// Reads the Lease back: until when this agent may write, or `None`. `before` is the
/// previous answer (a failure is logged as a warning only when it ends a
/// confirmation, not on every try of an outage).
async fn confirm_lease(
    leases: &Api<Lease>,
    options: &IpamOptions,
    before: Option<Instant>,
) -> Option<Instant> {
    let lease = match leases.get(&options.lease_name).await {
        Ok(lease) => lease,
        Err(error) if before.is_some() => {
            warn!("IPAM: cannot read the Lease back: {error}; writes stop");
            return None;
        }
        Err(error) => {
            debug!("IPAM: cannot read the Lease back: {error}");
            return None;
        }
    };
    let spec = lease.spec?;
    if spec.holder_identity.as_deref() != Some(options.identity.as_str()) {
        return None;
    }
    let renewed: SystemTime = spec.renew_time?.0.into();
    let duration = Duration::from_secs(u64::try_from(spec.lease_duration_seconds?).ok()?);
    let until = renewed + duration - options.lease_grace / 2;
    let left = until.duration_since(SystemTime::now()).ok()?;
    Some(Instant::now() + left)
}

type EventStream<K> = Pin<Box<dyn Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send>>;

/// One watch event of either stream.
// One lives at a time, moved straight into the session: boxing would only add an
// allocation per event.
#[allow(clippy::large_enum_variant)]
enum Change {
    Service(Result<watcher::Event<Service>, watcher::Error>),
    Namespace(Result<watcher::Event<Namespace>, watcher::Error>),
}

async fn next_event(session: &mut Option<Session>) -> Change {
    match session {
        Some(session) => tokio::select! {
            Some(event) = session.services.next() => Change::Service(event),
            Some(event) = session.namespaces.next() => Change::Namespace(event),
            else => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// What the controller knows of one Service.
// Nearly every entry is `Ours`: boxing it would add an allocation per Service to save
// space on the rare others.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
enum Tracked {
    /// A LoadBalancer of ours.
    Ours(LbService),
    /// A LoadBalancer of ours whose requests cannot be read: it keeps what it holds.
    Unreadable {
        uid: Option<String>,
        ingress: Vec<IpAddr>,
        error: LbServiceError,
    },
    /// Not (or no longer) ours, but carrying a pool annotation: released when that
    /// pool is one of ours.
    Foreign {
        uid: Option<String>,
        ingress: Vec<IpAddr>,
        pool: String,
    },
}

impl Tracked {
    fn of(service: &Service, class: Option<&str>) -> Option<Tracked> {
        match LbService::from_service(service, class) {
            Some(Ok(lb)) => Some(Tracked::Ours(lb)),
            Some(Err(error)) => Some(Tracked::Unreadable {
                uid: service.metadata.uid.clone(),
                ingress: ingress_ips(service),
                error,
            }),
            None => {
                let annotations = service.metadata.annotations.as_ref()?;
                let pool = annotations
                    .get(&format!("{ANNOTATION_PREFIX}{ALLOCATED_FROM_POOL}"))
                    .or_else(|| {
                        annotations.get(&format!("{OLD_ANNOTATION_PREFIX}{ALLOCATED_FROM_POOL}"))
                    })?;
                Some(Tracked::Foreign {
                    uid: service.metadata.uid.clone(),
                    ingress: ingress_ips(service),
                    pool: pool.clone(),
                })
            }
        }
    }
}

/// A leadership's view of the cluster, rebuilt each time the Lease is (re)confirmed.
struct Session {
    services: EventStream<Service>,
    namespaces: EventStream<Namespace>,
    tracked: BTreeMap<ServiceKey, Tracked>,
    /// Services seen since the (re)list began, swapped in when it ends.
    listing: Option<BTreeMap<ServiceKey, Tracked>>,
    services_listed: bool,
    labels: NamespaceLabels,
    labels_listing: Option<NamespaceLabels>,
    namespaces_listed: bool,
    /// When to compute next.
    due: Option<Instant>,
    settle: Duration,
}

impl Session {
    fn start(client: &Client, settle: Duration) -> Session {
        // Quorum reads (the default list semantic): what a previous leader wrote just
        // before it stopped is in the first list.
        let services = watcher::watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .boxed();
        let namespaces = watcher::watcher(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .boxed();
        Session {
            services,
            namespaces,
            tracked: BTreeMap::new(),
            listing: None,
            services_listed: false,
            labels: NamespaceLabels::new(),
            labels_listing: None,
            namespaces_listed: false,
            due: None,
            settle,
        }
    }

    fn mark_dirty(&mut self, settle: Duration) {
        // Sooner than a pending retry, never later than an earlier pending change.
        let at = Instant::now() + settle;
        self.due = Some(self.due.map_or(at, |due| due.min(at)));
    }

    fn apply(&mut self, change: Change, options: &IpamOptions) {
        let class = options.load_balancer_class.as_deref();
        let changed = match change {
            Change::Service(Ok(event)) => self.apply_service(event, class),
            Change::Namespace(Ok(event)) => self.apply_namespace(event),
            Change::Service(Err(error)) => {
                warn!("IPAM: watching Services: {error}");
                false
            }
            Change::Namespace(Err(error)) => {
                warn!("IPAM: watching Namespaces: {error}");
                false
            }
        };
        if changed {
            self.mark_dirty(self.settle);
        }
    }

    fn apply_service(&mut self, event: watcher::Event<Service>, class: Option<&str>) -> bool {
        match event {
            watcher::Event::Init => {
                self.listing = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply(service) => {
                if let (Some(listing), Some(tracked)) =
                    (&mut self.listing, Tracked::of(&service, class))
                {
                    listing.insert(ServiceKey::of_service(&service), tracked);
                }
                false
            }
            watcher::Event::InitDone => {
                if let Some(listing) = self.listing.take() {
                    self.tracked = listing;
                }
                self.services_listed = true;
                true
            }
            watcher::Event::Apply(service) => {
                let key = ServiceKey::of_service(&service);
                match Tracked::of(&service, class) {
                    Some(tracked) => self.tracked.insert(key, tracked.clone()) != Some(tracked),
                    None => self.tracked.remove(&key).is_some(),
                }
            }
            watcher::Event::Delete(service) => self
                .tracked
                .remove(&ServiceKey::of_service(&service))
                .is_some(),
        }
    }

    fn apply_namespace(&mut self, event: watcher::Event<Namespace>) -> bool {
        let name_labels = |namespace: &Namespace| {
            (
                namespace.metadata.name.clone().unwrap_or_default(),
                namespace.metadata.labels.clone().unwrap_or_default(),
            )
        };
        match event {
            watcher::Event::Init => {
                self.labels_listing = Some(NamespaceLabels::new());
                false
            }
            watcher::Event::InitApply(namespace) => {
                if let Some(listing) = &mut self.labels_listing {
                    let (name, labels) = name_labels(&namespace);
                    listing.insert(name, labels);
                }
                false
            }
            watcher::Event::InitDone => {
                if let Some(listing) = self.labels_listing.take() {
                    self.labels = listing;
                }
                self.namespaces_listed = true;
                true
            }
            watcher::Event::Apply(namespace) => {
                let (name, labels) = name_labels(&namespace);
                self.labels.insert(name, labels.clone()) != Some(labels)
            }
            watcher::Event::Delete(namespace) => {
                self.labels.remove(&name_labels(&namespace).0).is_some()
            }
        }
    }

    /// Computes the allocation and writes up to a batch of differences. Returns
    /// false when a write could not reach the API server (the Lease is then not
    /// confirmed any more).
    async fn reconcile(
        &mut self,
        client: &Client,
        config: &LbConfig,
        options: &IpamOptions,
        reporter: &mut Reporter,
        metrics: &Metrics,
        confirmed_until: Option<Instant>,
    ) -> bool {
        self.due = None;
        if !self.services_listed || !self.namespaces_listed {
            return true;
        }
        if config.pools.is_empty() {
            debug!("IPAM: no IPAddressPool configured; nothing is written");
            return true;
        }
        let ours = self.tracked.values().filter_map(|tracked| match tracked {
            Tracked::Ours(lb) => Some(lb),
            _ => None,
        });
        let frozen: Vec<(&ServiceKey, &[IpAddr])> = self
            .tracked
            .iter()
            .filter_map(|(key, tracked)| match tracked {
                Tracked::Unreadable { ingress, .. } => Some((key, ingress.as_slice())),
                _ => None,
            })
            .collect();
        let allocation = allocate(config, ours, frozen, &self.labels);
        let writes = plan_writes(&self.tracked, &allocation, config);

        // Events that need no write.
        reporter
            .reported
            .retain(|key, _| self.tracked.contains_key(key));
        for (key, tracked) in &self.tracked {
            match tracked {
                Tracked::Unreadable { uid, error, .. } => reporter.once(
                    key,
                    uid,
                    EventType::Warning,
                    REASON_BAD_REQUEST,
                    &error.to_string(),
                ),
                Tracked::Ours(lb) => match allocation.services.get(key).map(|o| &o.result) {
                    Some(Err(refusal)) => reporter.once(
                        key,
                        &lb.uid,
                        EventType::Warning,
                        REASON_FAILED,
                        &format!("Failed to allocate IP for {key}: {refusal}"),
                    ),
                    _ => {
                        reporter.reported.remove(key);
                    }
                },
                Tracked::Foreign { .. } => {}
            }
        }

        let mut client_ok = true;
        let mut left = options.batch;
        let mut unfinished = false;
        for write in writes {
            if left == 0 {
                unfinished = true;
                break;
            }
            if confirmed_until.is_none_or(|until| Instant::now() >= until) {
                // The Lease ran out while writing: not one more write.
                return false;
            }
            left -= 1;
            match write.send(client).await {
                Ok(()) => {
                    write.record(&mut self.tracked);
                    write.report(reporter);
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    debug!(service = %write.key, "IPAM: Service gone before the write");
                }
                Err(kube::Error::Api(status)) => {
                    metrics.error(WRITE_ERROR_KIND);
                    warn!(service = %write.key, "IPAM: the API server refused {}: {} {}", write.what(), status.code, status.message);
                    self.due.get_or_insert(Instant::now() + options.retry);
                }
                Err(error) => {
                    metrics.error(WRITE_ERROR_KIND);
                    warn!(service = %write.key, "IPAM: {} failed: {error}; writes stop until the Lease is confirmed again", write.what());
                    client_ok = false;
                    break;
                }
            }
        }
        if unfinished {
            self.due = Some(Instant::now());
        }
        client_ok
    }
}

/// Events. The ones following a write are news by definition; the refusals, computed
/// on every pass, are published once per Service and distinct message while leading
/// (again after the Service was served in between).
struct Reporter {
    events: EventReporter,
    reported: HashMap<ServiceKey, String>,
}

impl Reporter {
    fn now(
        &mut self,
        key: &ServiceKey,
        uid: &Option<String>,
        type_: EventType,
        reason: &str,
        note: &str,
    ) {
        match type_ {
            EventType::Normal => info!(service = %key, "IPAM: {reason}: {note}"),
            EventType::Warning => warn!(service = %key, "IPAM: {reason}: {note}"),
        }
        self.events
            .publish(key, Some(reference(key, uid)), type_, reason, ACTION, note);
    }

    fn once(
        &mut self,
        key: &ServiceKey,
        uid: &Option<String>,
        type_: EventType,
        reason: &str,
        note: &str,
    ) {
        let text = format!("{reason}: {note}");
        if self.reported.get(key) == Some(&text) {
            return;
        }
        self.now(key, uid, type_, reason, note);
        self.reported.insert(key.clone(), text);
    }
}

fn reference(key: &ServiceKey, uid: &Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".to_string()),
        kind: Some("Service".to_string()),
        namespace: Some(key.namespace.to_string()),
        name: Some(key.name.to_string()),
        uid: uid.clone(),
        ..ObjectReference::default()
    }
}

/// One Service's writes.
#[derive(Debug)]
struct Write {
    key: ServiceKey,
    uid: Option<String>,
    /// The new ingress (`Some(empty)` clears it), if it changes.
    ingress: Option<Vec<IpAddr>>,
    /// The new pool annotation (`Some(None)` removes it), if it changes.
    pool: Option<Option<String>>,
    /// The Event once written.
    event: Option<(EventType, &'static str, String)>,
}

impl Write {
    fn what(&self) -> &'static str {
        if self.ingress.is_some() {
            "the status write"
        } else {
            "the annotation write"
        }
    }

    async fn send(&self, client: &Client) -> Result<(), kube::Error> {
        let api: Api<Service> = Api::namespaced(client.clone(), &self.key.namespace);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        if let Some(ips) = &self.ingress {
            let ingress: Value = if ips.is_empty() {
                Value::Null
            } else {
                ips.iter().map(|ip| json!({"ip": ip.to_string()})).collect()
            };
            let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
            api.patch_status(&self.key.name, &params, &Patch::Merge(&patch))
                .await?;
        }
        if let Some(pool) = &self.pool {
            let mut annotations = serde_json::Map::new();
            annotations.insert(
                format!("{ANNOTATION_PREFIX}{ALLOCATED_FROM_POOL}"),
                pool.as_ref().map_or(Value::Null, |pool| json!(pool)),
            );
            if pool.is_none() {
                annotations.insert(
                    format!("{OLD_ANNOTATION_PREFIX}{ALLOCATED_FROM_POOL}"),
                    Value::Null,
                );
            }
            let patch = json!({"metadata": {"annotations": annotations}});
            api.patch(&self.key.name, &params, &Patch::Merge(&patch))
                .await?;
        }
        Ok(())
    }

    /// What the Service holds now that the write went through (the watch will say
    /// the same a moment later; until then nothing is written twice).
    fn record(&self, tracked: &mut BTreeMap<ServiceKey, Tracked>) {
        match tracked.get_mut(&self.key) {
            Some(Tracked::Ours(lb)) => {
                if let Some(ips) = &self.ingress {
                    lb.ingress_ips = ips.clone();
                }
                if let Some(pool) = &self.pool {
                    lb.allocated_from_pool = pool.clone();
                }
            }
            Some(Tracked::Foreign { .. }) => {
                tracked.remove(&self.key);
            }
            _ => {}
        }
    }

    fn report(&self, reporter: &mut Reporter) {
        if let Some((type_, reason, note)) = &self.event {
            reporter.now(&self.key, &self.uid, *type_, reason, note);
        }
    }
}

/// The writes that bring the Services to `allocation`, in Service order.
fn plan_writes(
    tracked: &BTreeMap<ServiceKey, Tracked>,
    allocation: &Allocation,
    config: &LbConfig,
) -> Vec<Write> {
    let list = |ips: &[IpAddr]| {
        ips.iter()
            .map(IpAddr::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut writes = Vec::new();
    for (key, tracked) in tracked {
        match tracked {
            Tracked::Ours(lb) => {
                let Some(outcome) = allocation.services.get(key) else {
                    continue;
                };
                let (ips, pool): (&[IpAddr], Option<&str>) = match &outcome.result {
                    Ok(assignment) => (&assignment.ips, Some(&assignment.pool)),
                    Err(_) => (&[], None),
                };
                let ingress = (lb.ingress_ips != ips).then(|| ips.to_vec());
                let pool_change =
                    (lb.allocated_from_pool.as_deref() != pool).then(|| pool.map(String::from));
                if ingress.is_none() && pool_change.is_none() {
                    continue;
                }
                let event = match (&outcome.result, &outcome.dropped) {
                    (Ok(assignment), _) if ingress.is_some() => Some((
                        EventType::Normal,
                        REASON_ALLOCATED,
                        format!(
                            "Assigned IP [{}] from pool {}",
                            list(&assignment.ips),
                            assignment.pool
                        ),
                    )),
                    (Err(_), Some(dropped)) => Some((
                        EventType::Warning,
                        REASON_CLEARED,
                        format!("Released [{}]: {}", list(&dropped.ips), dropped.reason),
                    )),
                    _ => None,
                };
                writes.push(Write {
                    key: key.clone(),
                    uid: lb.uid.clone(),
                    ingress,
                    pool: pool_change,
                    event,
                });
            }
            Tracked::Foreign { uid, ingress, pool } => {
                // Ours to release only when the pool is one of ours and holds the
                // addresses (another load balancer's Service is left alone).
                let Some(ours) = config.pools.get(pool) else {
                    continue;
                };
                if !ingress.iter().all(|ip| ours.contains(*ip)) {
                    continue;
                }
                writes.push(Write {
                    key: key.clone(),
                    uid: uid.clone(),
                    ingress: (!ingress.is_empty()).then(Vec::new),
                    pool: Some(None),
                    event: Some((
                        EventType::Normal,
                        REASON_CLEARED,
                        format!(
                            "Released [{}]: no longer a LoadBalancer Service of ours",
                            list(ingress)
                        ),
                    )),
                });
            }
            Tracked::Unreadable { .. } => {}
        }
    }
    writes
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;

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
            .filter_map(|service| {
                Some((ServiceKey::of_service(service), Tracked::of(service, None)?))
            })
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
}
