//! Opening everything the control loop needs: capabilities checked, the source started,
//! sysctls applied, the kernel interfaces and iptables probed, health and metrics served.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::DetectLocal;
use crate::dataplane::iptables::{Backend, Iptables};
use crate::dataplane::kernel::Kernel;
use crate::dataplane::netif;
use crate::dataplane::stale_flows::StaleFlowCleaner;
use crate::dataplane::sysctls;
use crate::model::{Family, Model, NodeInfo};
use crate::observe::health::{self, ProxyHealth, ServiceHealthServers};
use crate::observe::k8s_events::EventReporter;
use crate::observe::metrics::{self, Metrics};
use crate::plan::DrainStarts;
use crate::preflight::caps;
use crate::source::{self, SourceEvent};

use super::announce::{Announcers, SecretSource};
use super::lb::{LbCluster, LbInputs, LoadBalancers};
use super::rules::RuleSets;
use super::{Agent, AgentError, AgentOptions, SourceChoice};
use crate::lb::ipam::controller::{IpamHandle, IpamOptions, spawn_ipam};
use crate::observe::announce_metrics::AnnounceMetrics;
use metallb_config::LbConfig;

/// The background tasks the agent owns; aborted when it stops.
pub(super) struct Tasks {
    source: JoinHandle<()>,
    pub(super) node: Option<JoinHandle<()>>,
    /// The MetalLB and Nodes watchers.
    load_balancers: Vec<JoinHandle<()>>,
    /// The cluster IPAM controller (Kubernetes source, `loadBalancer.ipam`).
    pub(super) ipam: Option<IpamHandle>,
}

impl Tasks {
    pub(super) fn abort(&self) {
        self.source.abort();
        if let Some(node) = &self.node {
            node.abort();
        }
        for task in &self.load_balancers {
            task.abort();
        }
        if let Some(ipam) = &self.ipam {
            ipam.abort();
        }
    }

    /// Stops the IPAM controller gracefully: no more writes, and its Lease is released
    /// so another agent takes over at once instead of after the Lease runs out.
    pub(super) async fn stop_ipam(&mut self) {
        if let Some(ipam) = self.ipam.take()
            && let Err(error) = ipam.stop().await
        {
            warn!("the IPAM controller stopped with an error: {error}");
        }
    }
}

/// A started agent, before its first sync.
pub(super) struct Started {
    pub(super) agent: Agent,
    pub(super) events: mpsc::Receiver<SourceEvent>,
    pub(super) tasks: Tasks,
    /// This node's Node object (never changes with the static source).
    pub(super) node_object: watch::Receiver<Option<Node>>,
    /// MetalLB's objects and the Nodes, when LoadBalancer handling is on.
    pub(super) lb_inputs: Option<LbInputs>,
}

/// Logs what the capability check found; fails only when the agent cannot work at all.
fn check_capabilities(strict_arp: bool) -> Result<(), AgentError> {
    match caps::check_self(strict_arp) {
        Ok(report) => {
            if let Some(missing) = report.fatal() {
                return Err(AgentError::Capability(missing.to_string()));
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
    Ok(())
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

/// Starts the source and opens the node's kernel interfaces.
pub(super) async fn start(options: &AgentOptions) -> Result<Started, AgentError> {
    let config = &options.config;
    check_capabilities(config.ipvs.strict_arp)?;
    let node = options.node_name.clone();
    info!(node = %node, scheduler = %config.ipvs.scheduler, "ipvs-proxy starting");

    let lb_settings = &config.extensions.load_balancer;
    let announce_metrics = AnnounceMetrics::default();
    let mut metrics = Metrics::new();
    if lb_settings.enabled {
        metrics.register_announcers(&announce_metrics);
    }
    let metrics = Arc::new(metrics);
    // The source starts before the node is set up, so its first requests (the API
    // server's Service above all) overlap with the sysctls, the interface, the sets and
    // the iptables probes; its events wait in the channel.
    let (events_tx, events) = mpsc::channel::<SourceEvent>(1024);
    // The Node object (zone label for topology hints, primary IPs for
    // `nodePortAddresses: [primary]`) exists only with the Kubernetes source.
    let mut lb_tasks = Vec::new();
    let mut ipam = None;
    // The validated MetalLB configuration for the IPAM controller, and the Events on
    // invalid MetalLB objects (sent by the IPAM leader only, so N nodes do not send N).
    let mut lb_cluster: Option<LbCluster> = None;
    // Where the BGP passwords are read, and with the static source the channel the
    // run loop refreshes from the manifests.
    let mut static_secrets = None;
    let secret_source;
    let (source_task, node_task, node_object, event_reporter, lb_inputs) = match &options.source {
        SourceChoice::Static(dir) => {
            info!(dir = %dir.display(), "static source");
            if config.detect_local == DetectLocal::NodeCidr {
                warn!(
                    "configuration: detectLocalMode NodeCIDR reads the Node object's \
                     spec.podCIDRs, which the static source does not have: traffic from pods \
                     is not told apart, only node traffic with a service address as source \
                     is masqueraded"
                );
            }
            let (_, never) = watch::channel(None);
            let (secrets_tx, secrets_rx) = watch::channel(Arc::new(Vec::new()));
            static_secrets = Some(secrets_tx);
            secret_source = SecretSource::Static(secrets_rx);
            let (source_task, cluster) = source::static_dir::spawn_static_with_cluster(
                dir.clone(),
                source::static_dir::POLL_INTERVAL,
                events_tx,
            );
            (
                source_task,
                None,
                never,
                EventReporter::log_only(metrics.clone()),
                lb_settings.enabled.then_some(LbInputs::Static(cluster)),
            )
        }
        SourceChoice::Kubernetes { kubeconfig } => {
            let kubeconfig = kubeconfig
                .clone()
                .or_else(|| config.kubeconfig.as_ref().map(Into::into));
            let client = source::kubernetes::client(kubeconfig)
                .await
                .map_err(AgentError::Connect)?;
            secret_source = SecretSource::Kubernetes(client.clone());
            let (node_tx, node_object) = watch::channel(None);
            let node_task = source::node::spawn_node_watch(client.clone(), node.clone(), node_tx);
            let lb_inputs = if lb_settings.enabled {
                let (metallb, metallb_task) = source::metallb::spawn_metallb_watch(
                    client.clone(),
                    &lb_settings.metallb_namespace,
                );
                let (nodes, nodes_task) = source::cluster_nodes::spawn_nodes_watch(client.clone());
                lb_tasks.extend([metallb_task, nodes_task]);
                let (config_tx, config_rx) = watch::channel(Arc::new(LbConfig::default()));
                let leading = if lb_settings.ipam {
                    let mut options = IpamOptions::new(node.clone());
                    options.lease_namespace = lb_settings.ipam_lease_namespace.clone();
                    options.lease_name = lb_settings.ipam_lease_name.clone();
                    options.load_balancer_class = lb_settings.load_balancer_class.clone();
                    let handle = spawn_ipam(client.clone(), options, config_rx, metrics.clone());
                    let leading = handle.writing();
                    ipam = Some(handle);
                    Some(leading)
                } else {
                    None
                };
                lb_cluster = Some(LbCluster {
                    config: config_tx,
                    events: EventReporter::new(client.clone(), &node, metrics.clone()),
                });
                Some(LbInputs::Kubernetes {
                    metallb,
                    nodes,
                    leading,
                })
            } else {
                None
            };
            (
                source::kubernetes::spawn_with_client(client.clone(), events_tx),
                Some(node_task),
                node_object,
                EventReporter::new(client, &node, metrics.clone()),
                lb_inputs,
            )
        }
    };
    let tasks = Tasks {
        source: source_task,
        node: node_task,
        load_balancers: lb_tasks,
        ipam,
    };

    sysctls::apply(config, &metrics);

    let host_addresses = match netif::host_addresses(netif::DEFAULT_NAME).await {
        Ok(addresses) => addresses,
        Err(err) => {
            tasks.abort();
            return Err(AgentError::HostAddresses(err));
        }
    };
    let mut families: BTreeSet<Family> = BTreeSet::from([Family::V4]);
    if host_addresses.iter().any(IpAddr::is_ipv6) {
        families.insert(Family::V6);
    }
    let health = Arc::new(ProxyHealth::new(
        config.ipvs.sync_period,
        families.iter().copied(),
    ));
    // The iptables probes start programs (a few hundred milliseconds on a slow node):
    // they run on a blocking thread while the kernel interfaces open.
    let probe_families = families.clone();
    let iptables_probe = tokio::task::spawn_blocking(move || {
        let backend = Backend::detect();
        let iptables: Vec<Iptables> = probe_families
            .iter()
            .map(|family| Iptables::new(backend, (*family).into()))
            .collect();
        let random_fully = iptables
            .first()
            .is_some_and(Iptables::supports_random_fully);
        (backend, iptables, random_fully)
    });
    let kernel = match Kernel::open(families).await {
        Ok(kernel) => kernel,
        Err(err) => {
            tasks.abort();
            return Err(AgentError::Kernel(err));
        }
    };
    let (backend, iptables, random_fully) = match iptables_probe.await {
        Ok(probed) => probed,
        Err(source) => {
            tasks.abort();
            return Err(AgentError::Task {
                what: "the iptables probe",
                source,
            });
        }
    };
    info!(?backend, "iptables backend");

    if let Some(listener) = bind(config.healthz_bind_address, "/healthz").await {
        health::spawn_proxy_health_server(listener, health.clone());
    }
    if let Some(listener) = bind(config.metrics_bind_address, "/metrics").await {
        metrics::spawn_metrics_server(listener, metrics.clone(), health.clone());
    }

    let lb = lb_inputs.is_some().then(|| {
        LoadBalancers::new(
            lb_settings,
            &node,
            matches!(options.source, SourceChoice::Static(_)),
            lb_cluster,
        )
    });
    let announcers = lb
        .is_some()
        .then(|| Announcers::new(&node, lb_settings, announce_metrics, secret_source));
    let node_info = NodeInfo {
        name: node,
        zone: None,
        addresses: host_addresses,
        primary_addresses: Vec::new(),
    };
    let agent = Agent {
        model: Model::new(config, node_info),
        // Health check node ports answer on every node address, as kube-proxy's do.
        service_health: ServiceHealthServers::new(IpAddr::from([0, 0, 0, 0]), health.clone()),
        rules: RuleSets::new(iptables),
        config: config.clone(),
        kernel,
        drain: DrainStarts::new(),
        metrics,
        health,
        events: event_reporter,
        random_fully,
        known: None,
        node: None,
        lb,
        announcers,
        static_secrets,
        stale_flows: match StaleFlowCleaner::open() {
            Ok(cleaner) => Some(cleaner),
            Err(err) => {
                warn!("stale UDP conntrack entries will not be cleaned: {err}");
                None
            }
        },
    };
    Ok(Started {
        agent,
        events,
        tasks,
        node_object,
        lb_inputs,
    })
}
