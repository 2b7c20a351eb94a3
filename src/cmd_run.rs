//! `ipvs-proxy run` and `ipvs-proxy cleanup`.
//!
//! `run` wires the pieces of the library together: configuration, sysctls, the
//! kernel adapter, a source of Services and EndpointSlices, the desired-state model,
//! the diff, iptables, health and metrics. Each sync computes the desired state,
//! reads the kernel, applies the minimal plan and records what happened.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use ipvs_proxy::config::{self, Config};
use ipvs_proxy::diff::{self, DiffOptions, DrainStarts, ObservedState, Scope};
use ipvs_proxy::events::{self, EventReporter};
use ipvs_proxy::health::{self, ProxyHealth, ServiceHealthServers, ServiceHealthSpec};
use ipvs_proxy::iptables::{self, Backend, Iptables, KubeSet, LocalTraffic, RuleInputs};
use ipvs_proxy::metrics::{self, Metrics};
use ipvs_proxy::model::{Family, IpsetMembers, Model, NodeInfo};
use ipvs_proxy::reconcile::{Kernel, SERVICE_INTERFACE};
use ipvs_proxy::source::{self, SourceEvent};
use ipvs_proxy::status;
use k8s_openapi::api::core::v1::Node;

/// Arguments of `ipvs-proxy run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// KubeProxyConfiguration file (kubeproxy.config.k8s.io/v1alpha1, mode: ipvs).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Kubeconfig file; in-cluster configuration when neither this nor --manifests is given.
    #[arg(long, conflicts_with = "manifests")]
    pub kubeconfig: Option<PathBuf>,
    /// Directory of Service/EndpointSlice YAML or JSON files (static source, reloaded on change).
    #[arg(long)]
    pub manifests: Option<PathBuf>,
    /// Name of this node (defaults to the config's hostnameOverride, then the hostname).
    #[arg(long)]
    pub hostname_override: Option<String>,
    /// Unix socket answering `ipvs-proxy services` (read-only, mode 0600).
    #[arg(long, default_value = ipvs_proxy::status::DEFAULT_SOCKET)]
    pub status_socket: PathBuf,
}

/// The configuration used when no file is given: kube-proxy's defaults in IPVS mode.
pub(crate) const DEFAULT_CONFIG: &str =
    "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n";

pub(crate) fn load_config(path: Option<&PathBuf>) -> Result<Config> {
    let loaded = match path {
        Some(path) => config::load(path)
            .with_context(|| format!("cannot use the configuration file {}", path.display()))?,
        None => config::parse(DEFAULT_CONFIG).context("built-in default configuration")?,
    };
    for warning in &loaded.warnings {
        warn!("configuration: {warning}");
    }
    Ok(loaded.config)
}

fn node_name(args: &RunArgs, config: &Config) -> String {
    args.hostname_override
        .clone()
        .or_else(|| config.hostname_override.clone())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_string())
        })
        .unwrap_or_default()
        .to_lowercase()
}

/// Logs the heap as the allocator sees it: the bytes the agent holds, and the pages
/// resident for them (with the allocator's own caches and fragmentation). Compared with
/// the process RSS it tells live data from allocator overhead.
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

/// Runs the node agent until SIGINT or SIGTERM.
pub fn run(args: RunArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_agent(args))
}

/// Everything one sync needs, owned by the agent task.
struct Agent {
    config: Config,
    kernel: Kernel,
    model: Model,
    iptables: Vec<Iptables>,
    /// The rule inputs last installed per family (index as `iptables`); a sync whose
    /// inputs are unchanged skips iptables until the next full resync.
    installed_rules: Vec<Option<RuleInputs>>,
    drain: DrainStarts,
    metrics: Arc<Metrics>,
    health: Arc<ProxyHealth>,
    service_health: ServiceHealthServers,
    /// Logs and events (once each) the Services that cannot be programmed.
    events: EventReporter,
    /// Whether MASQUERADE takes `--random-fully` here (probed once at start).
    random_fully: bool,
    /// What the kernel holds on kube-ipvs0 and in our sets, as of the last full read
    /// plus every change applied since. `None` forces the next sync to read it all.
    known: Option<(BTreeSet<IpAddr>, IpsetMembers)>,
    /// This node's Node object, with the Kubernetes source.
    node: Option<Node>,
    /// For deleting stale UDP/SCTP flows after endpoint changes; `None` when the
    /// kernel's conntrack netlink is unavailable (logged once at start).
    conntrack: Option<conntrack_netlink::ConntrackHandle>,
}

/// How much of the node a sync reads and diffs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncKind {
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

/// One family's rules as installed: the index in `Agent::iptables`, the family, the
/// inputs and whether `iptables-restore` took them.
type IptablesOutcome = (
    usize,
    iptables::Family,
    RuleInputs,
    Result<(), iptables::IptablesError>,
);

/// `iptables-restore` for each family, running on a blocking thread.
type IptablesTask = tokio::task::JoinHandle<(Vec<IptablesOutcome>, Duration)>;

/// Installs the rules of `jobs` (from [`Agent::iptables_jobs`]) on a blocking thread;
/// `None` when there is nothing to install. The rules depend only on the desired
/// state, so this can run while the kernel takes a plan.
fn spawn_iptables(jobs: Vec<(usize, Iptables, RuleInputs)>) -> Option<IptablesTask> {
    (!jobs.is_empty()).then(|| {
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let results = jobs
                .into_iter()
                .map(|(index, iptables, inputs)| {
                    let result = iptables.sync(&inputs);
                    (index, iptables.family(), inputs, result)
                })
                .collect();
            (results, started.elapsed())
        })
    })
}

impl Agent {
    async fn sync(&mut self, kind: SyncKind) {
        let started = Instant::now();
        let mut touched = self.model.take_touched();
        if kind == SyncKind::Draining {
            touched
                .virtual_servers
                .extend(self.drain.keys().map(|(key, _, _)| *key));
        }
        self.report_errors();
        let full = kind == SyncKind::Full || touched.all || self.known.is_none();
        if !full && touched.is_empty() {
            self.health.updated(SystemTime::now());
            return;
        }
        let options = self.diff_options();
        let now = Instant::now();
        let mut reads = 0;
        let (plan, scope) = if full {
            let observed = match self.kernel.observe().await {
                Ok(observed) => observed,
                Err(err) => {
                    error!("cannot read the kernel state, sync skipped: {err}");
                    self.metrics.error("observe");
                    self.known = None;
                    return;
                }
            };
            let plan = diff::diff(self.model.state(), &observed, &options, &self.drain, now);
            self.known = Some((observed.addresses, observed.ipsets));
            (plan, None)
        } else {
            let scope = Scope::of(&touched);
            let servers = match self
                .kernel
                .observe_virtual_servers(&scope.virtual_servers)
                .await
            {
                Ok((servers, requests)) => {
                    reads = requests;
                    servers
                }
                Err(err) => {
                    error!("cannot read the kernel state, sync skipped: {err}");
                    self.metrics.error("observe");
                    self.known = None;
                    return;
                }
            };
            let Some((addresses, ipsets)) = &self.known else {
                unreachable!("an incremental sync has a known state");
            };
            let observed = scope.observed(servers, addresses, ipsets);
            let desired = scope.desired(self.model.state());
            let plan = diff::diff(&desired, &observed, &options, &self.drain, now);
            (plan, Some(scope))
        };
        let changes = plan.changes.len();
        // The rules depend only on the desired state, so iptables-restore runs on a
        // blocking thread while the kernel takes the plan (a few hundred milliseconds
        // of a first sync otherwise spent after it).
        let iptables_task = spawn_iptables(self.iptables_jobs(full, None));
        let report = self.kernel.apply(&plan).await;
        if let Some(conntrack) = self.conntrack.as_mut() {
            let cleaned = ipvs_proxy::conntrack::cleanup_after(&plan.changes, conntrack);
            if !cleaned.is_complete() {
                self.metrics.error("conntrack");
            }
        }
        match scope {
            None => self.drain = plan.draining,
            Some(scope) => {
                self.drain
                    .retain(|(key, _, _), _| !scope.virtual_servers.contains(key));
                self.drain.extend(plan.draining);
            }
        }
        if report.failed.is_empty() {
            if let Some((addresses, ipsets)) = &mut self.known {
                diff::record_applied(&plan.changes, addresses, ipsets);
            }
        } else {
            // What the kernel holds is no longer certain: read it all next time.
            self.known = None;
        }
        let netlink_messages = reads + report.netlink_messages;
        self.metrics.netlink_sent("all", netlink_messages);
        for failed in &report.failed {
            warn!(change = %failed.change, "kernel refused a change: {}", failed.error);
            self.metrics.error("apply");
        }
        let iptables_ms = self.finish_iptables(iptables_task).await;
        if full || touched.health_checks {
            self.sync_service_health().await;
        }
        self.record_programmed();
        let now = SystemTime::now();
        self.metrics.synced(started.elapsed().as_secs_f64(), now);
        self.health.updated(now);
        let scope = if full { "full" } else { "incremental" };
        if changes > 0 || !report.failed.is_empty() {
            info!(
                scope,
                services = touched.services,
                changes,
                applied = report.applied,
                failed = report.failed.len(),
                netlink_messages,
                iptables_ms,
                us = started.elapsed().as_micros() as u64,
                "synced"
            );
        } else {
            debug!(
                scope,
                netlink_messages,
                us = started.elapsed().as_micros() as u64,
                "in sync"
            );
        }
    }

    /// Programs what an early, partial view touched (the API server's Service, see
    /// [`SourceEvent::Early`]) and nothing else: the diff is cut to those objects and
    /// keeps only additions, because everything the partial model lacks is unknown,
    /// not unwanted. The rules go in before the kernel changes, so the API server's
    /// address is masqueraded from its first packet; rules for sets that already hold
    /// members (an agent restart) are kept. Health, drain and metrics wait for the
    /// first full sync.
    async fn sync_early(&mut self, since_start: Instant) {
        let touched = self.model.take_touched();
        self.report_errors();
        let observed = match self.kernel.observe().await {
            Ok(observed) => observed,
            Err(err) => {
                warn!("cannot read the kernel state, the early sync is skipped: {err}");
                self.metrics.error("observe");
                return;
            }
        };
        let scope = Scope::of(&touched);
        let options = self.diff_options();
        let ObservedState {
            virtual_servers,
            addresses,
            ipsets,
        } = observed;
        let in_scope = virtual_servers
            .into_iter()
            .filter(|vs| scope.virtual_servers.contains(&vs.key))
            .collect();
        let observed = scope.observed(in_scope, &addresses, &ipsets);
        let desired = scope.desired(self.model.state());
        let mut plan = diff::diff(&desired, &observed, &options, &self.drain, Instant::now());
        plan.changes.retain(diff::Change::is_additive);
        let iptables_task = spawn_iptables(self.iptables_jobs(false, Some(&ipsets)));
        self.finish_iptables(iptables_task).await;
        let report = self.kernel.apply(&plan).await;
        for failed in &report.failed {
            warn!(change = %failed.change, "kernel refused a change: {}", failed.error);
            self.metrics.error("apply");
        }
        self.metrics.netlink_sent("all", report.netlink_messages);
        info!(
            services = touched.services,
            changes = plan.changes.len(),
            applied = report.applied,
            failed = report.failed.len(),
            ms_since_start = since_start.elapsed().as_millis() as u64,
            "early sync: the API server's Service programmed ahead of the full lists"
        );
    }

    /// Re-reads this host's addresses and combines them with the Node object; the model
    /// recomputes every Service only when something changed (an address came or went,
    /// the zone label or the primary IPs changed).
    async fn refresh_node(&mut self) {
        let addresses = match ipvs_proxy::reconcile::host_addresses(SERVICE_INTERFACE).await {
            Ok(addresses) => addresses,
            Err(err) => {
                warn!("cannot list this host's addresses, keeping the previous ones: {err}");
                self.metrics.error("host-addresses");
                return;
            }
        };
        let name = self.model.node().name.clone();
        let info = match &self.node {
            Some(node) => NodeInfo::from_node(node, addresses),
            None => NodeInfo {
                name,
                zone: None,
                addresses,
                primary_addresses: Vec::new(),
            },
        };
        if &info != self.model.node() {
            info!(zone = ?info.zone, primary = ?info.primary_addresses, addresses = info.addresses.len(), "node changed");
            self.model.set_node(info);
        }
    }

    /// Logs and events each Service error once, and again if it comes back after
    /// being fixed.
    fn report_errors(&mut self) {
        let model = &self.model;
        self.events.report(model.state().errors.values(), |key| {
            model.service(key).map(events::service_reference)
        });
    }

    /// The rules each family should get: those whose inputs changed, or all on a full
    /// sync (which repairs rules someone removed).
    /// `kept_sets`: sets whose rules stay whatever the desired state says, because the
    /// kernel's sets still hold members (a sync from a partial model).
    fn iptables_jobs(
        &self,
        full: bool,
        kept_sets: Option<&IpsetMembers>,
    ) -> Vec<(usize, Iptables, RuleInputs)> {
        let desired = self.model.state();
        let mut jobs = Vec::new();
        for (index, iptables) in self.iptables.iter().enumerate() {
            let family = iptables.family();
            let model_family = match family {
                iptables::Family::V4 => Family::V4,
                iptables::Family::V6 => Family::V6,
            };
            let mut inputs = RuleInputs::new(family);
            inputs.masquerade_all = self.config.iptables.masquerade_all;
            inputs.random_fully = self.random_fully;
            if let Ok(mark) =
                iptables::MasqueradeMark::from_bit(u32::from(self.config.iptables.masquerade_bit))
            {
                inputs.masquerade_mark = mark;
            }
            if let Some(cidr) = self
                .config
                .cluster_cidrs
                .iter()
                .find(|cidr| Family::of(cidr.addr()) == model_family)
            {
                inputs.local_traffic = LocalTraffic::Cidr(*cidr);
            }
            for set in KubeSet::ALL {
                let name = set.name(family);
                if desired.ipsets.has_members(&name)
                    || kept_sets.is_some_and(|kept| kept.has_members(&name))
                {
                    inputs.non_empty_sets.insert(set);
                }
            }
            if !full && self.installed_rules[index].as_ref() == Some(&inputs) {
                continue;
            }
            jobs.push((index, *iptables, inputs));
        }
        jobs
    }

    /// The diff's settings from the configuration.
    fn diff_options(&self) -> DiffOptions {
        DiffOptions {
            exclude_cidrs: self.config.ipvs.exclude_cidrs.clone(),
            max_drain: self.config.extensions.max_drain,
        }
    }

    /// Waits for the rules started by [`spawn_iptables`] and records the outcome;
    /// returns how long `iptables-restore` took, in milliseconds.
    async fn finish_iptables(&mut self, task: Option<IptablesTask>) -> u64 {
        let Some(task) = task else {
            return 0;
        };
        match task.await {
            Ok((results, elapsed)) => {
                self.record_iptables(results);
                elapsed.as_millis() as u64
            }
            Err(err) => {
                error!("iptables rules not installed: the iptables task failed: {err}");
                self.metrics.error("iptables");
                self.installed_rules
                    .iter_mut()
                    .for_each(|rules| *rules = None);
                0
            }
        }
    }

    /// Remembers which rules are in place after [`Agent::iptables_jobs`] ran.
    fn record_iptables(&mut self, results: Vec<IptablesOutcome>) {
        for (index, family, inputs, result) in results {
            match result {
                Ok(()) => self.installed_rules[index] = Some(inputs),
                Err(err) => {
                    error!(%family, "iptables rules not installed: {err}");
                    self.metrics.error("iptables");
                    self.installed_rules[index] = None;
                }
            }
        }
    }

    async fn sync_service_health(&mut self) {
        let wanted: BTreeMap<u16, ServiceHealthSpec> = self
            .model
            .state()
            .health_check_node_ports
            .iter()
            .map(|(port, check)| {
                (
                    *port,
                    ServiceHealthSpec {
                        namespace: check.service.namespace.to_string(),
                        name: check.service.name.to_string(),
                        local_endpoints: check.local_endpoints,
                    },
                )
            })
            .collect();
        for (port, err) in self.service_health.sync(&wanted).await {
            warn!(port, "cannot serve the health check node port: {err}");
            self.metrics.error("health-check-port");
        }
    }

    fn record_programmed(&self) {
        let desired = self.model.state();
        let real_servers = self.model.real_servers();
        self.metrics
            .set_programmed("virtual-server", desired.virtual_servers.len() as i64);
        self.metrics
            .set_programmed("real-server", real_servers as i64);
        self.metrics
            .set_programmed("address", desired.addresses.len() as i64);
    }

    fn handle(&mut self, event: SourceEvent) {
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
            // Sources send it before the first snapshot only (handled in `run_agent`);
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

async fn bind(addr: Option<std::net::SocketAddr>, what: &str) -> Option<tokio::net::TcpListener> {
    let addr = addr?;
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => Some(listener),
        Err(err) => {
            warn!("{what} not served: cannot listen on {addr}: {err}");
            None
        }
    }
}

async fn run_agent(args: RunArgs) -> Result<()> {
    let started = Instant::now();
    let config = load_config(args.config.as_ref())?;
    match ipvs_proxy::caps::check_self(config.ipvs.strict_arp) {
        Ok(report) => {
            if let Some(missing) = report.fatal() {
                bail!("ipvs-proxy cannot run: {missing}");
            }
            for missing in report.degraded() {
                warn!("{missing}");
            }
            for missing in report.notes() {
                info!("{missing}");
            }
            if let Some(problem) = report.proc_sys_net_problem() {
                warn!("{problem}");
            }
        }
        Err(err) => warn!("capabilities not checked: {err}"),
    }
    let node = node_name(&args, &config);
    info!(node = %node, scheduler = %config.ipvs.scheduler, "ipvs-proxy starting");

    let metrics = Arc::new(Metrics::new());
    // The source starts before the node is set up, so its first requests (the API
    // server's Service above all) overlap with the sysctls, the interface, the sets and
    // the iptables probes; its events wait in the channel.
    let (events_tx, mut events) = mpsc::channel::<SourceEvent>(1024);
    // The Node object (zone label for topology hints, primary IPs for
    // `nodePortAddresses: [primary]`) exists only with the Kubernetes source.
    let (source_task, node_task, mut node_object, event_reporter) = match &args.manifests {
        Some(dir) => {
            info!(dir = %dir.display(), "static source");
            let (_, never) = tokio::sync::watch::channel(None);
            (
                source::spawn_static(dir.clone(), events_tx),
                None,
                never,
                EventReporter::log_only(metrics.clone()),
            )
        }
        None => {
            let kubeconfig = args
                .kubeconfig
                .clone()
                .or_else(|| config.kubeconfig.as_ref().map(PathBuf::from));
            let client = source::kubernetes::client(kubeconfig)
                .await
                .context("cannot connect to the Kubernetes API")?;
            let (node_tx, node_object) = tokio::sync::watch::channel(None);
            let node_task =
                source::kubernetes::spawn_node_watch(client.clone(), node.clone(), node_tx);
            (
                source::kubernetes::spawn_with_client(client.clone(), events_tx),
                Some(node_task),
                node_object,
                EventReporter::new(client, &node, metrics.clone()),
            )
        }
    };

    apply_sysctls(&config, &metrics);

    let host_addresses = ipvs_proxy::reconcile::host_addresses(SERVICE_INTERFACE)
        .await
        .context("cannot list this host's addresses")?;
    let mut families: BTreeSet<Family> = BTreeSet::from([Family::V4]);
    if host_addresses.iter().any(IpAddr::is_ipv6) {
        families.insert(Family::V6);
    }
    // The iptables probes start programs (a few hundred milliseconds on a slow node):
    // they run on a blocking thread while the kernel interfaces open.
    let probe_families = families.clone();
    let iptables_probe = tokio::task::spawn_blocking(move || {
        let backend = Backend::detect();
        let iptables: Vec<Iptables> = probe_families
            .iter()
            .map(|family| {
                Iptables::new(
                    backend,
                    match family {
                        Family::V4 => iptables::Family::V4,
                        Family::V6 => iptables::Family::V6,
                    },
                )
            })
            .collect();
        let random_fully = iptables
            .first()
            .is_some_and(Iptables::supports_random_fully);
        (backend, iptables, random_fully)
    });
    let kernel = Kernel::open(families.clone())
        .await
        .context("cannot open the kernel interfaces")?;
    let (backend, iptables, random_fully) =
        iptables_probe.await.context("the iptables probe failed")?;
    info!(?backend, "iptables backend");

    let health = Arc::new(ProxyHealth::new(config.ipvs.sync_period));
    if let Some(listener) = bind(config.healthz_bind_address, "/healthz").await {
        health::spawn_proxy_health_server(listener, health.clone());
    }
    if let Some(listener) = bind(config.metrics_bind_address, "/metrics").await {
        metrics::spawn_metrics_server(listener, metrics.clone(), health.clone());
    }

    let node_info = NodeInfo {
        name: node.clone(),
        zone: None,
        addresses: host_addresses,
        primary_addresses: Vec::new(),
    };
    let mut agent = Agent {
        model: Model::new(config.clone(), node_info),
        // Health check node ports answer on every node address, as kube-proxy's do.
        service_health: ServiceHealthServers::new(IpAddr::from([0, 0, 0, 0]), health.clone()),
        installed_rules: vec![None; iptables.len()],
        config,
        kernel,
        iptables,
        drain: DrainStarts::new(),
        metrics,
        health,
        events: event_reporter,
        random_fully,
        known: None,
        node: None,
        conntrack: match conntrack_netlink::ConntrackHandle::new() {
            Ok(handle) => Some(handle),
            Err(err) => {
                warn!("stale UDP conntrack entries will not be cleaned: {err}");
                None
            }
        },
    };

    // Nothing but an early part (the API server's Service, programmed additively) is
    // programmed before the source delivered its first full view: a sync on a partial
    // model would remove every Service this node already serves.
    let first = loop {
        let Some(event) = events.recv().await else {
            bail!("the source ended before delivering any Service");
        };
        match event {
            SourceEvent::Early { services, slices } => {
                agent.model.apply_early(services, slices);
                agent.sync_early(started).await;
            }
            first => break first,
        }
    };
    agent.handle(first);
    log_heap("model built");
    agent.sync(SyncKind::Full).await;
    info!("first sync done");
    log_heap("first sync done");

    let min_sync = agent.config.ipvs.min_sync_period;
    let mut resync =
        tokio::time::interval(agent.config.ipvs.sync_period.max(Duration::from_secs(1)));
    resync.tick().await;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    let mut last_sync = Instant::now();
    let mut node_watch_open = node_task.is_some();
    let mut drain_check = tokio::time::interval(DRAIN_CHECK_INTERVAL);
    drain_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Status socket for `ipvs-proxy services` (answered by the select arm below).
    let (status_tx, mut status_requests) = mpsc::channel::<status::StatusRequest>(8);
    let status_server = spawn_status_server(&args.status_socket, status_tx);
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
            }
            changed = node_object.changed(), if node_watch_open => {
                if changed.is_err() {
                    node_watch_open = false;
                    continue;
                }
                let latest = node_object.borrow_and_update().clone();
                agent.node = latest;
                agent.refresh_node().await;
                agent.sync(SyncKind::Incremental).await;
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
            _ = tokio::signal::ctrl_c() => { info!("interrupted; leaving the kernel state in place"); break; }
            _ = terminate.recv() => { info!("terminated; leaving the kernel state in place"); break; }
        }
    }
    source_task.abort();
    if let Some(node_task) = node_task {
        node_task.abort();
    }
    if let Some(server) = status_server {
        server.abort();
        let _ = std::fs::remove_file(&args.status_socket);
    }
    Ok(())
}

// ---- `ipvs-proxy services`: the status socket (report built by ipvs_proxy::status) ----

fn spawn_status_server(
    path: &std::path::Path,
    requests: mpsc::Sender<status::StatusRequest>,
) -> Option<tokio::task::JoinHandle<()>> {
    match status::spawn_status_server(path.to_path_buf(), requests) {
        Ok(server) => Some(server),
        Err(err) => {
            warn!("`ipvs-proxy services` will not work: {err}");
            None
        }
    }
}

impl Agent {
    /// Answers one status request with the model, the kernel's state now and the
    /// changes the next sync would make.
    async fn answer_status(&mut self, request: status::StatusRequest) {
        let reply = match self.kernel.observe().await {
            Ok(observed) => {
                let desired = self.model.state();
                let options = self.diff_options();
                let now = Instant::now();
                let plan = diff::diff(desired, &observed, &options, &self.drain, now);
                status::StatusReply::Report(Box::new(status::StatusReport::build(
                    &self.model,
                    desired,
                    &observed,
                    &plan.changes,
                    &plan.draining,
                    now,
                )))
            }
            Err(err) => status::StatusReply::Error(format!("cannot read the kernel state: {err}")),
        };
        let _ = request.reply.send(reply);
    }
}

fn apply_sysctls(config: &Config, metrics: &Metrics) {
    let options = node_sysctl::Options {
        strict_arp: config.ipvs.strict_arp,
        ..node_sysctl::Options::default()
    };
    let sysctls = match node_sysctl::NodeSysctls::detect(node_sysctl::Sysctl::default(), &options) {
        Ok(sysctls) => sysctls,
        Err(err) => {
            warn!("cannot read the kernel settings: {err}");
            metrics.error("sysctl");
            return;
        }
    };
    match sysctls.apply() {
        Ok(changes) => {
            for change in &changes {
                info!("sysctl {change}");
                metrics.sysctl_changes.inc();
            }
        }
        Err(err) => {
            warn!("cannot apply the kernel settings: {err}");
            metrics.error("sysctl");
        }
    }
}
