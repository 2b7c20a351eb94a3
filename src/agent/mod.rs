//! The node agent's control loop, as library code: start the source, set the node up,
//! then sync the kernel with the desired state on every update, every resync period and
//! while real servers drain.
//!
//! ```text
//!  source (API server / manifests) ──SourceEvent──▶ Agent::handle ──▶ model
//!                                                         │ (coalesced, minSyncPeriod)
//!  resync timer ─┐                                        ▼
//!  drain check ──┼──────────────────────────────▶ Agent::sync: kernel.observe ─▶ plan::diff
//!  Node watch ───┘                                        │
//!                                                         ▼
//!              kernel.apply (blocking thread) ∥ iptables-restore (blocking thread)
//!                                                         │
//!                                     stale flows, health, metrics, Events
//! ```
//!
//! The binary's `run` only turns its flags into [`AgentOptions`] and calls [`run`];
//! tests start the agent in-process the same way.
//!
//! - `sync`: the full, incremental, draining and early syncs, and node refreshes.
//! - `rules`: when iptables rules are (re)installed.
//! - `status`: answering `ipvs-proxy services`.
//! - `start`: opening everything the loop needs.

mod announce;
mod lb;
mod rules;
mod start;
mod status;
mod sync;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Node;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::dataplane::iptables;
use crate::dataplane::kernel::Kernel;
use crate::dataplane::stale_flows::StaleFlowCleaner;
use crate::model::{IpsetMembers, Model};
use crate::observe::health::{ProxyHealth, ServiceHealthServers};
use crate::observe::k8s_events::EventReporter;
use crate::observe::metrics::{self, Metrics};
use crate::observe::status::StatusRequest;
use crate::plan::DrainStarts;
use crate::source::SourceEvent;

use rules::RuleSets;

/// Where the agent takes Services and EndpointSlices from.
#[derive(Debug, Clone)]
pub enum SourceChoice {
    /// A directory of Service/EndpointSlice manifests, reloaded on change.
    Static(PathBuf),
    /// The API server: this kubeconfig, or the in-cluster configuration when `None`.
    Kubernetes {
        /// The kubeconfig file.
        kubeconfig: Option<PathBuf>,
    },
}

/// Everything [`run`] needs to start.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The resolved configuration.
    pub config: Config,
    /// This node's name (lower case), as the Node object and the topology hints name it.
    pub node_name: String,
    /// Where Services and EndpointSlices come from.
    pub source: SourceChoice,
    /// The Unix socket answering `ipvs-proxy services`; `None` serves none.
    pub status_socket: Option<PathBuf>,
}

/// Why the agent could not start or stopped early.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A capability the agent cannot work without is missing.
    #[error("ipvs-proxy cannot run: {0}")]
    Capability(String),
    /// The Kubernetes client could not be built.
    #[error("cannot connect to the Kubernetes API: {0}")]
    Connect(#[source] crate::source::SourceError),
    /// The host's addresses (for NodePorts and the address families) could not be read.
    #[error("cannot list this host's addresses: {0}")]
    HostAddresses(#[source] crate::dataplane::netif::NetifError),
    /// IPVS, kube-ipvs0 or the ipsets could not be opened.
    #[error("cannot open the kernel interfaces: {0}")]
    Kernel(#[source] crate::dataplane::kernel::KernelError),
    /// A start-up task (the iptables probe) panicked or was cancelled.
    #[error("{what} failed: {source}")]
    Task {
        /// The task.
        what: &'static str,
        /// Why it ended.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The source closed its channel before the first full view of the cluster.
    #[error("the source ended before delivering any Service")]
    SourceEnded,
}

/// How much of the node a sync reads and diffs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SyncKind {
    /// Only what the updates since the last sync touched.
    Incremental,
    /// Everything: the periodic resync that repairs drift.
    Full,
    /// Like incremental, plus the virtual servers with draining real servers, whose
    /// connection counts decide when the drain ends.
    Draining,
}

/// How often draining real servers are checked for their last connection.
const DRAIN_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// What the kernel holds on kube-ipvs0 and in our sets, as of the last full read plus
/// every change applied since. An incremental sync diffs against it instead of reading
/// every address and set.
#[derive(Debug)]
pub(crate) struct KnownState {
    addresses: BTreeSet<IpAddr>,
    ipsets: IpsetMembers,
}

/// Everything one sync needs, owned by the agent task.
pub(crate) struct Agent {
    config: Config,
    kernel: Kernel,
    model: Model,
    rules: RuleSets,
    drain: DrainStarts,
    metrics: Arc<Metrics>,
    health: Arc<ProxyHealth>,
    service_health: ServiceHealthServers,
    /// Logs and events (once each) the Services that cannot be programmed.
    events: EventReporter,
    /// Whether MASQUERADE takes `--random-fully` here (probed once at start).
    random_fully: bool,
    /// `None` forces the next sync to read everything.
    known: Option<KnownState>,
    /// This node's Node object, with the Kubernetes source.
    node: Option<Node>,
    /// Deletes stale UDP/SCTP flows after endpoint changes; `None` when the kernel's
    /// conntrack netlink is unavailable (logged once at start).
    stale_flows: Option<StaleFlowCleaner>,
    /// LoadBalancer Services (MetalLB's configuration, the announce decision and, with
    /// the static source, the allocation); `None` when `loadBalancer.enabled` is false.
    lb: Option<lb::LoadBalancers>,
    /// The layer-2 announcer, the membership and the BGP speaker; `None` when
    /// `loadBalancer.enabled` is false.
    announcers: Option<announce::Announcers>,
    /// With the static source: the manifests' Secrets (BGP passwords).
    static_secrets:
        Option<tokio::sync::watch::Sender<Arc<Vec<k8s_openapi::api::core::v1::Secret>>>>,
}

/// Runs the node agent until `shutdown` completes (the binary passes SIGINT/SIGTERM).
/// The programmed kernel state is left in place on the way out.
pub async fn run(
    options: AgentOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let started = Instant::now();
    let start::Started {
        mut agent,
        mut events,
        mut tasks,
        mut node_object,
        lb_inputs,
    } = start::start(&options).await?;
    let mut lb_inputs_open = lb_inputs.is_some();
    let mut lb_inputs = lb_inputs;

    // Nothing but an early part (the API server's Service, programmed additively) is
    // programmed before the source delivered its first full view: a sync on a partial
    // model would remove every Service this node already serves.
    let first = loop {
        let Some(event) = events.recv().await else {
            tasks.abort();
            return Err(AgentError::SourceEnded);
        };
        match event {
            SourceEvent::Early { services, slices } => {
                agent.model.apply_early(services, slices);
                agent.sync_early(started).await;
            }
            first => break first,
        }
    };
    // The manifests' MetalLB objects arrive with their first snapshot: take them
    // first, so the first sync programs allocated LoadBalancer addresses at once.
    while let Some(Some(change)) =
        futures_util::FutureExt::now_or_never(next_lb_change(&mut lb_inputs))
    {
        agent.apply_lb_change(change).await;
    }
    agent.handle(first);
    log_heap("model built");
    agent.sync(SyncKind::Full).await;
    info!("first sync done");
    log_heap("first sync done");
    // The announcers start only now, with the whole decision (see `announce`).
    if let (Some(announcers), Some(lb)) = (agent.announcers.as_mut(), agent.lb.as_mut()) {
        announcers.start(&mut lb.announce).await;
    }

    let min_sync = agent.config.ipvs.min_sync_period;
    let mut resync =
        tokio::time::interval(agent.config.ipvs.sync_period.max(Duration::from_secs(1)));
    // A full sync slower than the period (a loaded node) must not queue a burst of
    // full syncs that would keep updates waiting.
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.tick().await;
    let mut last_sync = Instant::now();
    let mut node_watch_open = tasks.node.is_some();
    let mut drain_check = tokio::time::interval(DRAIN_CHECK_INTERVAL);
    drain_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Status socket for `ipvs-proxy services` (answered by the select arm below).
    let (status_tx, mut status_requests) = mpsc::channel::<StatusRequest>(8);
    let bgp_answer: Option<crate::observe::status::BgpAnswer> =
        agent.announcers.as_ref().map(|announcers| {
            let view = announcers.bgp_view();
            let answer: crate::observe::status::BgpAnswer = Arc::new(move || {
                match view
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .as_ref()
                {
                    Some(view) => view.reply_line(),
                    None => "{\"neighbors\":[]}\n".to_string(),
                }
            });
            answer
        });
    let status_server = options
        .status_socket
        .as_deref()
        .and_then(|path| status::spawn_server(path, status_tx, bgp_answer));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else {
                    warn!("the source ended; keeping the programmed state");
                    break;
                };
                agent.handle(event);
                // Coalesce a burst: take what is already queued, then respect minSyncPeriod.
                while let Ok(more) = events.try_recv() {
                    agent.handle(more);
                }
                let wait = min_sync.saturating_sub(last_sync.elapsed());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                    while let Ok(more) = events.try_recv() {
                        agent.handle(more);
                    }
                }
                agent.sync(SyncKind::Incremental).await;
                last_sync = Instant::now();
                agent.publish_announcements();
            }
            change = next_lb_change(&mut lb_inputs), if lb_inputs_open => {
                let Some(change) = change else {
                    lb_inputs_open = false;
                    continue;
                };
                if agent.apply_lb_change(change).await {
                    agent.sync(SyncKind::Incremental).await;
                    last_sync = Instant::now();
                }
                agent.publish_announcements();
            }
            event = next_announce_event(&mut agent.announcers) => {
                if let (Some(announcers), Some(lb)) = (agent.announcers.as_mut(), agent.lb.as_mut()) {
                    announcers.on_event(event, &mut lb.announce);
                }
            }

            changed = node_object.changed(), if node_watch_open => {
                if changed.is_err() {
                    node_watch_open = false;
                    continue;
                }
                let latest = node_object.borrow_and_update().clone();
                let pod_cidrs_changed = agent.log_pod_cidrs(latest.as_ref());
                agent.node = latest;
                agent.refresh_node().await;
                // New pod CIDRs change only the rules, which an incremental sync with
                // nothing touched would not look at.
                let kind = if pod_cidrs_changed { SyncKind::Full } else { SyncKind::Incremental };
                agent.sync(kind).await;
                last_sync = Instant::now();
            }
            _ = drain_check.tick(), if !agent.drain.is_empty() => {
                agent.sync(SyncKind::Draining).await;
            }
            _ = resync.tick() => {
                agent.refresh_node().await;
                agent.sync(SyncKind::Full).await;
                last_sync = Instant::now();
            }
            Some(request) = status_requests.recv() => agent.answer_status(request).await,
            () = &mut shutdown => {
                info!("stopping; leaving the kernel state in place");
                break;
            }
        }
    }
    if let Some(announcers) = agent.announcers.take() {
        announcers.shutdown().await;
    }
    tasks.stop_ipam().await;
    tasks.abort();
    if let Some(server) = status_server {
        server.abort();
        if let Some(path) = &options.status_socket {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(())
}

impl Agent {
    /// Applies a change of the LoadBalancer inputs to the decision and the announcers;
    /// returns whether the proxy model changed (allocated addresses, static source),
    /// which needs a sync.
    async fn apply_lb_change(&mut self, change: lb::LbChange) -> bool {
        let Some(lb) = self.lb.as_mut() else {
            return false;
        };
        let nodes: Option<Vec<Node>> = match &change {
            lb::LbChange::Cluster(objects) => {
                if let Some(secrets) = &self.static_secrets {
                    secrets.send_if_modified(|now| {
                        let changed = **now != objects.secrets;
                        if changed {
                            *now = Arc::new(objects.secrets.clone());
                        }
                        changed
                    });
                }
                Some(objects.nodes.clone())
            }
            lb::LbChange::Nodes(nodes) => Some(nodes.values().cloned().collect()),
            lb::LbChange::MetalLb(_) | lb::LbChange::Leading(_) => None,
        };
        let events = lb.apply(change);
        if let Some(announcers) = self.announcers.as_mut() {
            if let Some(nodes) = &nodes {
                announcers.set_nodes(nodes).await;
            }
            announcers.set_config(lb.announce.config());
        }
        let changed = !events.is_empty();
        for event in events {
            self.handle_routed(event);
        }
        changed
    }

    /// Hands what changed in the announce decision to the announcers.
    fn publish_announcements(&mut self) {
        if let (Some(announcers), Some(lb)) = (self.announcers.as_mut(), self.lb.as_mut()) {
            announcers.publish(&mut lb.announce);
        }
    }

    /// With `detectLocalMode: NodeCIDR`, says when the Node's pod CIDRs (which the rules
    /// follow) change; kube-proxy waits for them at start and restarts on a change.
    /// Returns whether they changed.
    fn log_pod_cidrs(&self, latest: Option<&Node>) -> bool {
        if self.config.detect_local != crate::config::DetectLocal::NodeCidr {
            return false;
        }
        let cidrs = |node: Option<&Node>| node.map(iptables::node_pod_cidrs).unwrap_or_default();
        let (before, after) = (cidrs(self.node.as_ref()), cidrs(latest));
        if before != after || self.node.is_none() {
            if after.is_empty() {
                warn!(
                    "detectLocalMode NodeCIDR: the Node has no spec.podCIDRs yet; traffic from pods is not told apart"
                );
            } else {
                info!(pod_cidrs = ?after, "detectLocalMode NodeCIDR: traffic from these pod CIDRs is local");
            }
        }
        before != after
    }

    /// Folds one source event into the model (through the LoadBalancer part first,
    /// which may write allocated addresses in and add events); the next sync programs
    /// it.
    fn handle(&mut self, event: SourceEvent) {
        match self.lb.as_mut() {
            Some(lb) => {
                for event in lb.route(event) {
                    self.handle_routed(event);
                }
            }
            None => self.handle_routed(event),
        }
    }

    /// Folds an event that already went through the LoadBalancer part into the model.
    fn handle_routed(&mut self, event: SourceEvent) {
        match event {
            SourceEvent::Snapshot { services, slices } => {
                self.metrics.service_changes.inc_by(services.len() as u64);
                self.metrics.endpoint_changes.inc_by(slices.len() as u64);
                self.model.replace_all(services, slices);
            }
            SourceEvent::ServicesRelisted(services) => {
                self.metrics.service_changes.inc_by(services.len() as u64);
                self.model.replace_services(services);
            }
            SourceEvent::SlicesRelisted(slices) => {
                self.metrics.endpoint_changes.inc_by(slices.len() as u64);
                self.model.replace_slices(slices);
            }
            // Sources send it before the first snapshot only (handled in `run`);
            // should one come later, its objects are as current as any change.
            SourceEvent::Early { services, slices } => {
                for slice in slices {
                    self.metrics.endpoint_changes.inc();
                    self.model.apply_slice(slice);
                }
                for service in services {
                    self.metrics.service_changes.inc();
                    self.model.apply_service(service);
                }
            }
            SourceEvent::ServiceApplied(service) => {
                self.metrics.service_changes.inc();
                self.model.apply_service(service);
            }
            SourceEvent::ServiceDeleted(key) => {
                self.metrics.service_changes.inc();
                self.model.remove_service(&key);
            }
            SourceEvent::SliceApplied(slice) => {
                self.metrics.endpoint_changes.inc();
                self.model.apply_slice(slice);
            }
            SourceEvent::SliceDeleted { namespace, name } => {
                self.metrics.endpoint_changes.inc();
                self.model.remove_slice(&namespace, &name);
            }
        }
        let now = SystemTime::now();
        self.health.queued_update(now);
        self.metrics
            .sync_last_queued_timestamp
            .set(metrics::unix_seconds(now));
    }
}

/// The membership's next event; pending forever without announcers.
async fn next_announce_event(
    announcers: &mut Option<announce::Announcers>,
) -> announce::AnnounceEvent {
    match announcers {
        Some(announcers) => announcers.next_event().await,
        None => std::future::pending().await,
    }
}

/// The next change of the LoadBalancer inputs; pending forever without them.
async fn next_lb_change(inputs: &mut Option<lb::LbInputs>) -> Option<lb::LbChange> {
    match inputs {
        Some(inputs) => inputs.next_change().await,
        None => std::future::pending().await,
    }
}

/// Logs the heap as the allocator sees it: the bytes the agent holds, and the pages
/// resident for them (with the allocator's own caches and fragmentation). Compared with
/// the process RSS it tells live data from allocator overhead. Reads nothing when the
/// process runs another allocator (jemalloc is the binary's).
fn log_heap(stage: &str) {
    use tikv_jemalloc_ctl::{epoch, stats};
    if epoch::advance().is_err() {
        return;
    }
    if let (Ok(allocated), Ok(resident)) = (stats::allocated::read(), stats::resident::read()) {
        let mib = |bytes: usize| format!("{:.1}", bytes as f64 / 1048576.0);
        debug!(
            allocated_mib = %mib(allocated),
            resident_mib = %mib(resident),
            "heap after {stage}"
        );
    }
}
