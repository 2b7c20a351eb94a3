//! What the running agent programmed and why, for `ipvs-proxy services`.
//!
//! The agent answers on a Unix socket (default [`DEFAULT_SOCKET`], mode 0600). The
//! protocol is read-only: the client sends one line, `status`, and the agent answers
//! with one line of JSON, a [`StatusReply`], then closes the connection.
//!
//! The report ([`StatusReport::build`]) joins the desired state (from the model), the
//! kernel's current state and the changes the next sync would make:
//!
//! - for each Service: its type, session affinity and traffic policies, and each
//!   virtual server (VIP, port, protocol) with its real servers: pod, node, weight,
//!   state (`ready`, `serving-terminating`, `terminating-draining`, `not-desired`) and
//!   the kernel's active and inactive connection counts;
//! - problems: desired state missing from the kernel (`drift`), kernel state we own
//!   but no longer desire (`stale`), Services skipped for a bad spec (`skipped`);
//! - Services deliberately not proxied (ExternalName, headless, another proxy's).
//!
//! # JSON (`ipvs-proxy services --json`)
//!
//! Field names are stable; new fields may be added. Absent values are `null`.
//!
//! ```text
//! {
//!   "node": "node-a",
//!   "services": [{
//!     "namespace": "default", "name": "web", "type": "LoadBalancer",
//!     "session_affinity": "None" | "ClientIP", "affinity_timeout": null | 10800,
//!     "external_traffic_policy": "Cluster" | "Local",
//!     "internal_traffic_policy": "Cluster" | "Local",
//!     "virtual_servers": [{
//!       "address": "10.96.0.10", "port": 80, "protocol": "tcp",
//!       "kind": "cluster-ip" | "node-port" | "external-ip" | "load-balancer",
//!       "port_name": "http", "scheduler": "rr", "persistence_timeout": null | 10800,
//!       "in_kernel": true,
//!       "real_servers": [{
//!         "address": "10.244.1.5", "port": 8080, "pod": "web-0" | null,
//!         "node": "node-a" | null,
//!         "state": "ready" | "serving-terminating" | "terminating-draining" | "not-desired",
//!         "desired_weight": 1 | null,
//!         "kernel": null | {"weight": 1, "active_connections": 0, "inactive_connections": 0},
//!         "draining_seconds": null | 12
//!       }]
//!     }]
//!   }],
//!   "not_proxied": [{"namespace": "default", "name": "db", "reason": "headless (clusterIP: None)"}],
//!   "problems": [{"kind": "drift" | "stale" | "skipped", "namespace": "default" | null,
//!                 "name": "web" | null, "address": "10.96.0.10" | null, "message": "..."}],
//!   "warnings": ["..."]
//! }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::IpAddr;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::model::inspect::EndpointInfo;
use crate::model::{
    DesiredState, Model, Protocol, ServiceKey, ServiceOutcome, Skipped, VipKind, VirtualServer,
    VirtualServerKey,
};
use crate::plan::{Change, DrainStarts, ObservedRealServer, ObservedState};

/// Where the agent listens unless `run --status-socket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/ipvs-proxy/ipvs-proxy.sock";

/// The one request line the status socket understands.
pub const STATUS_REQUEST: &str = "status";

/// How long the client waits for the agent's answer; the agent answers between
/// syncs, and a sync of thousands of Services takes seconds in a slow VM.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// What went wrong serving or querying the status socket.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The client could not connect.
    #[error(
        "cannot reach the agent at {path}: {source}; is `ipvs-proxy run` running on this node?"
    )]
    Unreachable {
        /// The socket path.
        path: PathBuf,
        /// The connect error.
        source: std::io::Error,
    },
    /// Reading or writing the socket failed after connecting.
    #[error("talking to the agent at {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The answer was not a status reply.
    #[error("the agent at {path} sent an answer that is not a status report: {reason}")]
    Protocol {
        /// The socket path.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The agent answered with an error.
    #[error("the agent could not report its state: {0}")]
    Agent(String),
    /// The server could not listen.
    #[error("cannot serve the status socket {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Another process already answers on the socket.
    #[error(
        "another process already answers on the status socket {path}; \
         stop the other agent or pass --status-socket with another path"
    )]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
}

/// Everything `ipvs-proxy services` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The node the agent runs for.
    pub node: String,
    /// Programmed Services, by namespace and name.
    pub services: Vec<ServiceStatus>,
    /// Services deliberately not proxied (not an error).
    pub not_proxied: Vec<NotProxied>,
    /// What is wrong: drift, stale kernel state, skipped Services.
    pub problems: Vec<Problem>,
    /// Parts of programmed Services that were left out, with the reason.
    pub warnings: Vec<String>,
}

/// One programmed Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `spec.type`.
    #[serde(rename = "type")]
    pub service_type: String,
    /// `spec.sessionAffinity`.
    pub session_affinity: String,
    /// The ClientIP affinity timeout in seconds, when affinity is on.
    pub affinity_timeout: Option<u32>,
    /// `spec.externalTrafficPolicy`.
    pub external_traffic_policy: String,
    /// `spec.internalTrafficPolicy`.
    pub internal_traffic_policy: String,
    /// The Service's virtual servers, ClusterIPs first.
    pub virtual_servers: Vec<VirtualServerStatus>,
}

/// One virtual server of a Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualServerStatus {
    /// The VIP.
    pub address: IpAddr,
    /// The virtual port.
    pub port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// `cluster-ip`, `node-port`, `external-ip` or `load-balancer`.
    pub kind: String,
    /// The Service port's name ("" when unnamed).
    pub port_name: String,
    /// The IPVS scheduler.
    pub scheduler: String,
    /// The persistence timeout (sessionAffinity ClientIP).
    pub persistence_timeout: Option<u32>,
    /// Whether the kernel holds the virtual server.
    pub in_kernel: bool,
    /// Desired real servers and any the kernel still holds, by address and port.
    pub real_servers: Vec<RealServerStatus>,
}

/// Why a real server is (or still is) behind a virtual server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RealServerState {
    /// A ready endpoint.
    Ready,
    /// A terminating endpoint still serving, used because no endpoint is ready.
    ServingTerminating,
    /// No longer desired; kept at weight 0 while its connections finish.
    TerminatingDraining,
    /// In the kernel but no longer desired; the next sync removes (or drains) it.
    NotDesired,
}

impl RealServerState {
    /// The state as the text and JSON show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::ServingTerminating => "serving-terminating",
            Self::TerminatingDraining => "terminating-draining",
            Self::NotDesired => "not-desired",
        }
    }
}

/// The kernel's view of a real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelRealServer {
    /// Weight in the kernel.
    pub weight: u32,
    /// Active (established) connections.
    pub active_connections: u32,
    /// Inactive connections (e.g. TIME_WAIT).
    pub inactive_connections: u32,
}

/// One real server of a virtual server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealServerStatus {
    /// Endpoint address.
    pub address: IpAddr,
    /// Endpoint port.
    pub port: u16,
    /// The Pod behind the endpoint, from the EndpointSlice's `targetRef`.
    pub pod: Option<String>,
    /// The endpoint's node.
    pub node: Option<String>,
    /// Why it is there.
    pub state: RealServerState,
    /// The weight the agent wants, when it is desired.
    pub desired_weight: Option<u32>,
    /// What the kernel holds, when it holds it.
    pub kernel: Option<KernelRealServer>,
    /// How long it has been draining, when it drains.
    pub draining_seconds: Option<u64>,
}

/// A Service the agent does not proxy on purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotProxied {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// The kinds of [`Problem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// Desired but not (or not so) in the kernel.
    Drift,
    /// In the kernel, ours, but no longer desired.
    Stale,
    /// A Service skipped for a bad spec or a conflict with another Service.
    Skipped,
}

impl ProblemKind {
    /// The kind as the text and JSON show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Drift => "drift",
            Self::Stale => "stale",
            Self::Skipped => "skipped",
        }
    }
}

/// Something wrong on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// What kind of problem.
    pub kind: ProblemKind,
    /// The Service's namespace, when the problem belongs to a known Service.
    pub namespace: Option<String>,
    /// The Service's name, when the problem belongs to a known Service.
    pub name: Option<String>,
    /// The VIP (or bound address) concerned, if any.
    pub address: Option<IpAddr>,
    /// What is wrong, naming the object.
    pub message: String,
}

/// The answer on the status socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusReply {
    /// The report.
    Report(Box<StatusReport>),
    /// Why there is no report (e.g. the kernel could not be read).
    Error(String),
}

/// A request from the socket server to the agent's run loop.
#[derive(Debug)]
pub struct StatusRequest {
    /// Where the run loop sends its answer.
    pub reply: oneshot::Sender<StatusReply>,
}

/// Which part of a report to keep (`services -n/--name/--vip`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only Services of this name.
    pub name: Option<String>,
    /// Only virtual servers on this address.
    pub vip: Option<IpAddr>,
}

impl Filter {
    fn matches_service(&self, namespace: &str, name: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
            && self.name.as_deref().is_none_or(|n| n == name)
    }

    fn matches_problem(&self, problem: &Problem) -> bool {
        let service_ok = match (&problem.namespace, &problem.name) {
            (Some(namespace), Some(name)) => self.matches_service(namespace, name),
            _ => self.namespace.is_none() && self.name.is_none(),
        };
        let vip_ok = match (self.vip, problem.address) {
            (None, _) => true,
            (Some(vip), Some(address)) => vip == address,
            // A Service-level problem (a skipped Service) has no address to match.
            (Some(_), None) => false,
        };
        service_ok && vip_ok
    }
}

fn kind_name(kind: VipKind) -> &'static str {
    match kind {
        VipKind::ClusterIp => "cluster-ip",
        VipKind::NodePort => "node-port",
        VipKind::ExternalIp => "external-ip",
        VipKind::LoadBalancer => "load-balancer",
    }
}

fn skipped_reason(skipped: &Skipped) -> String {
    match skipped {
        Skipped::ExternalName => "type ExternalName (DNS only)".to_string(),
        Skipped::Headless => "headless (clusterIP: None)".to_string(),
        Skipped::OtherProxy(proxy) => format!("served by another proxy ({proxy:?})"),
        Skipped::NoClusterIp => "no ClusterIP allocated".to_string(),
    }
}

fn endpoint_text(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(addr) => format!("{addr}:{port}"),
        IpAddr::V6(addr) => format!("[{addr}]:{port}"),
    }
}

/// The state of a desired real server, from its endpoint's conditions.
fn desired_state(info: Option<&EndpointInfo>) -> RealServerState {
    match info {
        Some(info) if !info.ready && info.serving && info.terminating => {
            RealServerState::ServingTerminating
        }
        _ => RealServerState::Ready,
    }
}

impl StatusReport {
    /// Builds the report from the model, its desired state, the kernel's state, the
    /// changes the next sync would make (`pending`, as [`crate::plan::diff`] plans
    /// them) and the drain start times.
    pub fn build(
        model: &Model,
        desired: &DesiredState,
        observed: &ObservedState,
        pending: &[Change],
        draining: &DrainStarts,
        now: Instant,
    ) -> StatusReport {
        let observed_by_key: BTreeMap<VirtualServerKey, _> = observed
            .virtual_servers
            .iter()
            .map(|vs| (vs.key, vs))
            .collect();
        let mut by_service: BTreeMap<&ServiceKey, Vec<&VirtualServer>> = BTreeMap::new();
        for vs in desired.virtual_servers.values() {
            by_service.entry(&vs.service).or_default().push(vs);
        }
        let skipped: BTreeSet<&ServiceKey> = desired.errors.keys().collect();

        let mut report = StatusReport {
            node: model.node_name().to_string(),
            warnings: desired
                .warnings
                .iter()
                .flat_map(|(service, warnings)| {
                    warnings
                        .iter()
                        .map(move |warning| format!("Service {service}: {warning}"))
                })
                .collect(),
            ..StatusReport::default()
        };
        for (key, outcome) in model.outcomes() {
            match outcome {
                Ok(ServiceOutcome::Skipped(reason)) => report.not_proxied.push(NotProxied {
                    namespace: key.namespace.to_string(),
                    name: key.name.to_string(),
                    reason: skipped_reason(reason),
                }),
                Ok(ServiceOutcome::Programmed(_)) if !skipped.contains(key) => {
                    let endpoints = model.endpoint_infos(key);
                    let mut virtual_servers: Vec<&VirtualServer> =
                        by_service.get(key).cloned().unwrap_or_default();
                    virtual_servers.sort_by_key(|vs| (vs.kind, vs.key));
                    let settings = model.service_settings(key);
                    let setting = |pick: fn(&crate::model::inspect::ServiceSettings) -> &String| {
                        settings.as_ref().map(pick).cloned().unwrap_or_default()
                    };
                    report.services.push(ServiceStatus {
                        namespace: key.namespace.to_string(),
                        name: key.name.to_string(),
                        service_type: setting(|s| &s.service_type),
                        session_affinity: setting(|s| &s.session_affinity),
                        affinity_timeout: virtual_servers
                            .first()
                            .and_then(|vs| vs.persistence_timeout),
                        external_traffic_policy: setting(|s| &s.external_traffic_policy),
                        internal_traffic_policy: setting(|s| &s.internal_traffic_policy),
                        virtual_servers: virtual_servers
                            .iter()
                            .map(|vs| {
                                virtual_server_status(
                                    vs,
                                    observed_by_key.get(&vs.key).map(|o| &o.real_servers[..]),
                                    &endpoints,
                                    draining,
                                    now,
                                )
                            })
                            .collect(),
                    });
                }
                _ => {}
            }
        }
        for error in desired.errors.values() {
            report.problems.push(Problem {
                kind: ProblemKind::Skipped,
                namespace: Some(error.service.namespace.to_string()),
                name: Some(error.service.name.to_string()),
                address: None,
                message: error.reason.clone(),
            });
        }
        report.problems.extend(
            pending
                .iter()
                .map(|change| problem(change, desired, observed)),
        );
        report
    }

    /// The part of the report the filter selects. Services not proxied and problems
    /// are kept when they belong to a selected Service (or address); warnings only
    /// without a filter, as they are free text.
    pub fn filtered(&self, filter: &Filter) -> StatusReport {
        let services = self
            .services
            .iter()
            .filter(|s| filter.matches_service(&s.namespace, &s.name))
            .filter_map(|service| {
                let mut service = service.clone();
                if let Some(vip) = filter.vip {
                    service.virtual_servers.retain(|vs| vs.address == vip);
                    if service.virtual_servers.is_empty() {
                        return None;
                    }
                }
                Some(service)
            })
            .collect();
        let unfiltered = filter == &Filter::default();
        StatusReport {
            node: self.node.clone(),
            services,
            not_proxied: self
                .not_proxied
                .iter()
                .filter(|s| filter.vip.is_none() && filter.matches_service(&s.namespace, &s.name))
                .cloned()
                .collect(),
            problems: self
                .problems
                .iter()
                .filter(|p| filter.matches_problem(p))
                .cloned()
                .collect(),
            warnings: if unfiltered {
                self.warnings.clone()
            } else {
                Vec::new()
            },
        }
    }
}

fn virtual_server_status(
    vs: &VirtualServer,
    observed: Option<&[ObservedRealServer]>,
    endpoints: &BTreeMap<IpAddr, EndpointInfo>,
    draining: &DrainStarts,
    now: Instant,
) -> VirtualServerStatus {
    let kernel: BTreeMap<(IpAddr, u16), &ObservedRealServer> = observed
        .unwrap_or_default()
        .iter()
        .map(|rs| ((rs.addr, rs.port), rs))
        .collect();
    let wanted: BTreeMap<(IpAddr, u16), u32> = vs
        .real_servers
        .iter()
        .map(|rs| ((rs.addr, rs.port), rs.weight))
        .collect();
    let ids: BTreeSet<(IpAddr, u16)> = kernel.keys().chain(wanted.keys()).copied().collect();
    let real_servers = ids
        .into_iter()
        .map(|(addr, port)| {
            let info = endpoints.get(&addr);
            let in_kernel = kernel.get(&(addr, port)).map(|rs| KernelRealServer {
                weight: rs.weight,
                active_connections: rs.active_connections,
                inactive_connections: rs.inactive_connections,
            });
            let desired_weight = wanted.get(&(addr, port)).copied();
            let drain_started = draining.get(&(vs.key, addr, port));
            let state = match (desired_weight, in_kernel) {
                (Some(_), _) => desired_state(info),
                (None, Some(k))
                    if k.weight == 0
                        && k.active_connections > 0
                        && vs.key.protocol == Protocol::Tcp =>
                {
                    RealServerState::TerminatingDraining
                }
                (None, _) => RealServerState::NotDesired,
            };
            RealServerStatus {
                address: addr,
                port,
                pod: info.and_then(|info| info.pod.clone()),
                node: info.and_then(|info| info.node.clone()),
                state,
                desired_weight,
                kernel: in_kernel,
                draining_seconds: (state == RealServerState::TerminatingDraining)
                    .then(|| drain_started.map(|start| now.saturating_duration_since(*start)))
                    .flatten()
                    .map(|elapsed| elapsed.as_secs()),
            }
        })
        .collect();
    VirtualServerStatus {
        address: vs.key.addr,
        port: vs.key.port,
        protocol: vs.key.protocol.as_str().to_string(),
        kind: kind_name(vs.kind).to_string(),
        port_name: vs.port_name.to_string(),
        scheduler: vs.scheduler.to_string(),
        persistence_timeout: vs.persistence_timeout,
        in_kernel: observed.is_some(),
        real_servers,
    }
}

/// Describes one pending change as a problem, attributed to its Service when the
/// desired state names one.
fn problem(change: &Change, desired: &DesiredState, observed: &ObservedState) -> Problem {
    let owner_of_vs =
        |key: &VirtualServerKey| desired.virtual_servers.get(key).map(|vs| &vs.service);
    let owner_of_address = |addr: &IpAddr| {
        desired
            .virtual_servers
            .values()
            .find(|vs| vs.key.addr == *addr)
            .map(|vs| &vs.service)
    };
    let observed_rs = |key: &VirtualServerKey, addr: IpAddr, port: u16| {
        observed
            .virtual_servers
            .iter()
            .find(|vs| vs.key == *key)
            .and_then(|vs| {
                vs.real_servers
                    .iter()
                    .find(|rs| rs.addr == addr && rs.port == port)
            })
    };
    let (kind, service, address, message) = match change {
        Change::AddAddress(addr) => (
            ProblemKind::Drift,
            owner_of_address(addr),
            Some(*addr),
            format!("address {addr} is not bound on kube-ipvs0"),
        ),
        Change::DeleteAddress(addr) => (
            ProblemKind::Stale,
            None,
            Some(*addr),
            format!("address {addr} is bound on kube-ipvs0 but no longer desired"),
        ),
        Change::AddIpsetEntry { set, entry } => (
            ProblemKind::Drift,
            None,
            None,
            format!("ipset {set} lacks the entry {entry}"),
        ),
        Change::DeleteIpsetEntry { set, entry } => (
            ProblemKind::Stale,
            None,
            None,
            format!("ipset {set} holds the entry {entry}, no longer desired"),
        ),
        Change::AddVirtualServer(spec) => (
            ProblemKind::Drift,
            owner_of_vs(&spec.key),
            Some(spec.key.addr),
            format!("virtual server {} is missing in the kernel", spec.key),
        ),
        Change::UpdateVirtualServer(spec) => {
            let current = observed
                .virtual_servers
                .iter()
                .find(|vs| vs.key == spec.key);
            let describe = |scheduler: &str, persistence: Option<u32>| match persistence {
                Some(timeout) => format!("{scheduler}, persistent {timeout} s"),
                None => format!("{scheduler}, not persistent"),
            };
            (
                ProblemKind::Drift,
                owner_of_vs(&spec.key),
                Some(spec.key.addr),
                format!(
                    "virtual server {} is {} in the kernel, desired {}",
                    spec.key,
                    current
                        .map(|vs| describe(&vs.scheduler, vs.persistence_timeout))
                        .unwrap_or_default(),
                    describe(&spec.scheduler, spec.persistence_timeout)
                ),
            )
        }
        Change::AddRealServer {
            virtual_server,
            real_server,
        } => (
            ProblemKind::Drift,
            owner_of_vs(virtual_server),
            Some(virtual_server.addr),
            format!(
                "real server {} of {virtual_server} is missing in the kernel",
                endpoint_text(real_server.addr, real_server.port)
            ),
        ),
        Change::UpdateRealServer {
            virtual_server,
            real_server,
        } => {
            let endpoint = endpoint_text(real_server.addr, real_server.port);
            let wanted = desired
                .virtual_servers
                .get(virtual_server)
                .is_some_and(|vs| vs.real_servers.contains(real_server));
            let current = observed_rs(virtual_server, real_server.addr, real_server.port);
            if wanted {
                (
                    ProblemKind::Drift,
                    owner_of_vs(virtual_server),
                    Some(virtual_server.addr),
                    format!(
                        "real server {endpoint} of {virtual_server} has weight {} in the kernel, desired {}",
                        current.map(|rs| rs.weight).unwrap_or_default(),
                        real_server.weight
                    ),
                )
            } else {
                (
                    ProblemKind::Stale,
                    owner_of_vs(virtual_server),
                    Some(virtual_server.addr),
                    format!(
                        "real server {endpoint} of {virtual_server} is no longer desired; \
                         the next sync drains it ({} active connections)",
                        current.map(|rs| rs.active_connections).unwrap_or_default()
                    ),
                )
            }
        }
        Change::DeleteRealServer {
            virtual_server,
            addr,
            port,
        } => (
            ProblemKind::Stale,
            owner_of_vs(virtual_server),
            Some(virtual_server.addr),
            format!(
                "real server {} of {virtual_server} is in the kernel but no longer desired",
                endpoint_text(*addr, *port)
            ),
        ),
        Change::DeleteVirtualServer(key) => (
            ProblemKind::Stale,
            None,
            Some(key.addr),
            format!("virtual server {key} is ours but no longer desired"),
        ),
    };
    Problem {
        kind,
        namespace: service.map(|s| s.namespace.to_string()),
        name: service.map(|s| s.name.to_string()),
        address,
        message,
    }
}

/// Renders a report as text, in ipvsadm's layout: one block per Service, one line
/// per virtual server, one `->` line per real server, then the problems.
pub fn render_text(report: &StatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Node {}", report.node);
    let _ = writeln!(out, "Prot LocalAddress:Port Scheduler Flags Kind Port-name");
    let _ = writeln!(
        out,
        "  -> RemoteAddress:Port           Weight ActiveConn InActConn State                Pod                            Node"
    );
    for service in &report.services {
        let affinity = match service.affinity_timeout {
            Some(timeout) if service.session_affinity == "ClientIP" => {
                format!("ClientIP {timeout}s")
            }
            _ => service.session_affinity.clone(),
        };
        let _ = writeln!(
            out,
            "Service {}/{} type {} affinity {} externalTrafficPolicy {} internalTrafficPolicy {}",
            service.namespace,
            service.name,
            service.service_type,
            affinity,
            service.external_traffic_policy,
            service.internal_traffic_policy
        );
        for vs in &service.virtual_servers {
            let mut line = format!(
                "{:<4} {} {}",
                vs.protocol.to_uppercase(),
                endpoint_text(vs.address, vs.port),
                vs.scheduler
            );
            if let Some(timeout) = vs.persistence_timeout {
                let _ = write!(line, " persistent {timeout}");
            }
            let _ = write!(line, " {}", vs.kind);
            if !vs.port_name.is_empty() {
                let _ = write!(line, " {}", vs.port_name);
            }
            if !vs.in_kernel {
                line.push_str(" MISSING-IN-KERNEL");
            }
            let _ = writeln!(out, "{line}");
            for rs in &vs.real_servers {
                let count = |pick: fn(&KernelRealServer) -> u32| {
                    rs.kernel
                        .as_ref()
                        .map(|k| pick(k).to_string())
                        .unwrap_or_else(|| "-".to_string())
                };
                let weight = rs
                    .kernel
                    .map(|k| k.weight)
                    .or(rs.desired_weight)
                    .unwrap_or_default();
                let mut state = rs.state.as_str().to_string();
                if let Some(seconds) = rs.draining_seconds {
                    let _ = write!(state, " {seconds}s");
                }
                if rs.kernel.is_none() {
                    state.push_str(" MISSING");
                } else if rs
                    .desired_weight
                    .is_some_and(|w| Some(w) != rs.kernel.map(|k| k.weight))
                {
                    state.push_str(" WEIGHT-DRIFT");
                }
                let _ = writeln!(
                    out,
                    "  -> {:<28} {:<6} {:<10} {:<9} {:<20} {:<30} {}",
                    endpoint_text(rs.address, rs.port),
                    weight,
                    count(|k| k.active_connections),
                    count(|k| k.inactive_connections),
                    state,
                    rs.pod.as_deref().unwrap_or("-"),
                    rs.node.as_deref().unwrap_or("-"),
                );
            }
        }
    }
    if !report.not_proxied.is_empty() {
        let _ = writeln!(out, "Not proxied:");
        for service in &report.not_proxied {
            let _ = writeln!(
                out,
                "  {}/{}: {}",
                service.namespace, service.name, service.reason
            );
        }
    }
    if !report.warnings.is_empty() {
        let _ = writeln!(out, "Warnings:");
        for warning in &report.warnings {
            let _ = writeln!(out, "  {warning}");
        }
    }
    if report.problems.is_empty() {
        let _ = writeln!(out, "Problems: none");
    } else {
        let _ = writeln!(out, "Problems:");
        for problem in &report.problems {
            let service = match (&problem.namespace, &problem.name) {
                (Some(namespace), Some(name)) => format!("{namespace}/{name}"),
                _ => "-".to_string(),
            };
            let _ = writeln!(
                out,
                "  {:<8} {:<30} {}",
                problem.kind.as_str(),
                service,
                problem.message
            );
        }
    }
    out
}

/// Listens on `path` and forwards each `status` request to the run loop through
/// `requests`; the run loop answers on the request's oneshot channel. A stale socket
/// file from a previous run is replaced; a live one is an error. The socket is
/// created with mode 0600 (the report names every Service and pod of the node).
///
/// Must be called inside a tokio runtime.
pub fn spawn_status_server(
    path: PathBuf,
    requests: mpsc::Sender<StatusRequest>,
) -> Result<tokio::task::JoinHandle<()>, StatusError> {
    let bind_error = |source| StatusError::Bind {
        path: path.clone(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(bind_error)?;
    }
    if let Ok(metadata) = std::fs::symlink_metadata(&path) {
        if !metadata.file_type().is_socket() {
            return Err(bind_error(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            )));
        }
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(StatusError::InUse { path });
        }
        std::fs::remove_file(&path).map_err(bind_error)?;
    }
    let listener = tokio::net::UnixListener::bind(&path).map_err(bind_error)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(bind_error)?;
    Ok(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve_connection(stream, requests.clone()));
                }
                Err(err) => {
                    warn!(path = %path.display(), "status socket: accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }))
}

/// The longest request line accepted.
const MAX_REQUEST: u64 = 1024;

async fn serve_connection(stream: tokio::net::UnixStream, requests: mpsc::Sender<StatusRequest>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST));
    let read = tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
    let reply = match read {
        Err(_) => StatusReply::Error("no request line within 5 seconds".to_string()),
        Ok(Err(err)) => StatusReply::Error(format!("cannot read the request: {err}")),
        Ok(Ok(_)) if line.trim() == STATUS_REQUEST => ask_run_loop(&requests).await,
        Ok(Ok(_)) => StatusReply::Error(format!(
            "unknown request {:?}; this socket answers only {STATUS_REQUEST:?}",
            line.trim()
        )),
    };
    let mut text = serde_json::to_string(&reply)
        .unwrap_or_else(|err| format!("{{\"error\":\"cannot encode the report: {err}\"}}"));
    text.push('\n');
    if let Err(err) = write.write_all(text.as_bytes()).await {
        debug!("status socket: the client left before the answer: {err}");
    }
    let _ = write.shutdown().await;
}

async fn ask_run_loop(requests: &mpsc::Sender<StatusRequest>) -> StatusReply {
    let (reply, answer) = oneshot::channel();
    if requests.send(StatusRequest { reply }).await.is_err() {
        return StatusReply::Error("the agent's run loop has stopped".to_string());
    }
    match tokio::time::timeout(CLIENT_TIMEOUT, answer).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(_)) => StatusReply::Error("the run loop dropped the request".to_string()),
        Err(_) => StatusReply::Error(format!(
            "the run loop did not answer within {} seconds",
            CLIENT_TIMEOUT.as_secs()
        )),
    }
}

/// Asks the agent listening on `path` for its report (blocking).
pub fn query(path: &Path, timeout: Duration) -> Result<StatusReport, StatusError> {
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|source| {
        StatusError::Unreachable {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let io = |source| StatusError::Io {
        path: path.to_path_buf(),
        source,
    };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream
        .write_all(format!("{STATUS_REQUEST}\n").as_bytes())
        .map_err(io)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(io)?;
    parse_reply(path, &answer)
}

fn parse_reply(path: &Path, answer: &str) -> Result<StatusReport, StatusError> {
    let reply: StatusReply =
        serde_json::from_str(answer.trim()).map_err(|err| StatusError::Protocol {
            path: path.to_path_buf(),
            reason: err.to_string(),
        })?;
    match reply {
        StatusReply::Report(report) => Ok(*report),
        StatusReply::Error(message) => Err(StatusError::Agent(message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::NodeInfo;
    use crate::plan::{DiffOptions, ObservedVirtualServer, diff};
    use k8s_openapi::api::core::v1::{Node, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;

    fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
        let path = format!("{}/tests/fixtures/k8s/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn model_with(services: &[&str], slices: &[&str]) -> Model {
        let node: Node = fixture("node-a.json");
        let node = NodeInfo::from_node(&node, vec![ip("192.168.50.11")]);
        let mut model = Model::new(Config::default(), node);
        for name in slices {
            model.apply_slice(fixture::<EndpointSlice>(name));
        }
        for name in services {
            model.apply_service(fixture::<Service>(name));
        }
        model
    }

    /// The kernel after a faithful sync, with 3 active and 1 inactive connection on
    /// every real server.
    fn observed_from(state: &DesiredState) -> ObservedState {
        let mut observed = ObservedState::programmed(state);
        for rs in observed
            .virtual_servers
            .iter_mut()
            .flat_map(|vs| vs.real_servers.iter_mut())
        {
            rs.active_connections = 3;
            rs.inactive_connections = 1;
        }
        observed
    }

    /// Builds the report the agent would send for `model` and `observed`.
    fn report(model: &Model, observed: &ObservedState, drain: &DrainStarts) -> StatusReport {
        let desired = model.desired();
        let options = DiffOptions {
            exclude_cidrs: Vec::new(),
            max_drain: Duration::from_secs(300),
        };
        let now = Instant::now();
        let plan = diff(&desired, observed, &options, drain, now);
        StatusReport::build(
            model,
            &desired,
            observed,
            &plan.changes,
            &plan.draining,
            now,
        )
    }

    fn vs_key(addr: &str, port: u16) -> VirtualServerKey {
        VirtualServerKey {
            addr: ip(addr),
            port,
            protocol: Protocol::Tcp,
        }
    }

    #[test]
    fn a_synced_service_shows_its_vips_pods_nodes_and_counters() {
        let model = model_with(&["svc-web.json"], &["eps-web.json"]);
        let observed = observed_from(&model.desired());
        let report = report(&model, &observed, &DrainStarts::new());
        assert_eq!(report.node, "node-a");
        assert!(report.problems.is_empty(), "{:#?}", report.problems);
        assert_eq!(report.services.len(), 1);
        let web = &report.services[0];
        assert_eq!(
            (web.namespace.as_str(), web.name.as_str()),
            ("default", "web")
        );
        assert_eq!(web.service_type, "ClusterIP");
        assert_eq!(web.session_affinity, "None");
        assert_eq!(web.internal_traffic_policy, "Cluster");
        let vips: Vec<(IpAddr, u16, &str)> = web
            .virtual_servers
            .iter()
            .map(|vs| (vs.address, vs.port, vs.port_name.as_str()))
            .collect();
        assert_eq!(
            vips,
            [
                (ip("10.96.12.34"), 80, "http"),
                (ip("10.96.12.34"), 443, "https")
            ]
        );
        let http = &web.virtual_servers[0];
        assert!(http.in_kernel);
        assert_eq!(http.kind, "cluster-ip");
        // Two ready endpoints; the serving-terminating one is not used while others are ready.
        let servers: Vec<(IpAddr, Option<&str>, Option<&str>, RealServerState)> = http
            .real_servers
            .iter()
            .map(|rs| (rs.address, rs.pod.as_deref(), rs.node.as_deref(), rs.state))
            .collect();
        assert_eq!(
            servers,
            [
                (
                    ip("10.244.1.10"),
                    Some("pod-10-244-1-10"),
                    Some("node-a"),
                    RealServerState::Ready
                ),
                (
                    ip("10.244.2.11"),
                    Some("pod-10-244-2-11"),
                    Some("node-b"),
                    RealServerState::Ready
                ),
            ]
        );
        assert_eq!(
            http.real_servers[0].kernel,
            Some(KernelRealServer {
                weight: 1,
                active_connections: 3,
                inactive_connections: 1
            })
        );
    }

    #[test]
    fn a_real_server_missing_in_the_kernel_is_drift_of_its_service() {
        let model = model_with(&["svc-web.json"], &["eps-web.json"]);
        let mut observed = observed_from(&model.desired());
        let http = observed
            .virtual_servers
            .iter_mut()
            .find(|vs| vs.key == vs_key("10.96.12.34", 80))
            .unwrap();
        http.real_servers.retain(|rs| rs.addr != ip("10.244.2.11"));
        let report = report(&model, &observed, &DrainStarts::new());
        assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
        let problem = &report.problems[0];
        assert_eq!(problem.kind, ProblemKind::Drift);
        assert_eq!(problem.namespace.as_deref(), Some("default"));
        assert_eq!(problem.name.as_deref(), Some("web"));
        assert_eq!(problem.address, Some(ip("10.96.12.34")));
        assert_eq!(
            problem.message,
            "real server 10.244.2.11:8080 of 10.96.12.34:80/tcp is missing in the kernel"
        );
        let missing = &report.services[0].virtual_servers[0].real_servers[1];
        assert_eq!(missing.address, ip("10.244.2.11"));
        assert_eq!(missing.kernel, None);
        assert_eq!(missing.desired_weight, Some(1));
        let text = render_text(&report);
        assert!(
            text.lines()
                .any(|line| line.starts_with("  -> 10.244.2.11:8080")
                    && line.contains("ready MISSING")
                    && line.contains("pod-10-244-2-11")),
            "{text}"
        );
    }

    #[test]
    fn a_missing_virtual_server_and_a_stale_one_are_flagged() {
        let model = model_with(&["svc-web.json"], &["eps-web.json"]);
        let mut observed = observed_from(&model.desired());
        observed
            .virtual_servers
            .retain(|vs| vs.key != vs_key("10.96.12.34", 443));
        // A virtual server on an address bound on kube-ipvs0 is ours; nobody wants it.
        observed.addresses.insert(ip("10.96.99.1"));
        observed.virtual_servers.push(ObservedVirtualServer {
            key: vs_key("10.96.99.1", 80),
            scheduler: "rr".into(),
            persistence_timeout: None,
            real_servers: Vec::new(),
        });
        let report = report(&model, &observed, &DrainStarts::new());
        let https = &report.services[0].virtual_servers[1];
        assert!(!https.in_kernel);
        let messages: Vec<(ProblemKind, &str)> = report
            .problems
            .iter()
            .map(|p| (p.kind, p.message.as_str()))
            .collect();
        for expected in [
            (
                ProblemKind::Drift,
                "virtual server 10.96.12.34:443/tcp is missing in the kernel",
            ),
            (
                ProblemKind::Stale,
                "virtual server 10.96.99.1:80/tcp is ours but no longer desired",
            ),
            (
                ProblemKind::Stale,
                "address 10.96.99.1 is bound on kube-ipvs0 but no longer desired",
            ),
        ] {
            assert!(messages.contains(&expected), "{messages:#?}");
        }
        assert!(
            render_text(&report).contains("10.96.12.34:443 rr cluster-ip https MISSING-IN-KERNEL")
        );
    }

    #[test]
    fn a_removed_endpoint_with_connections_is_shown_draining() {
        let model = model_with(&["svc-web.json"], &["eps-web.json"]);
        let mut observed = observed_from(&model.desired());
        let key = vs_key("10.96.12.34", 80);
        let http = observed
            .virtual_servers
            .iter_mut()
            .find(|vs| vs.key == key)
            .unwrap();
        http.real_servers.push(ObservedRealServer {
            addr: ip("10.244.3.3"),
            port: 8080,
            weight: 0,
            active_connections: 2,
            inactive_connections: 0,
        });
        let mut drain = DrainStarts::new();
        drain.insert(
            (key, ip("10.244.3.3"), 8080),
            Instant::now() - Duration::from_secs(42),
        );
        let report = report(&model, &observed, &drain);
        assert!(report.problems.is_empty(), "{:#?}", report.problems);
        let draining = report.services[0].virtual_servers[0]
            .real_servers
            .iter()
            .find(|rs| rs.address == ip("10.244.3.3"))
            .unwrap();
        assert_eq!(draining.state, RealServerState::TerminatingDraining);
        assert_eq!(draining.desired_weight, None);
        assert!(
            (42..=43).contains(&draining.draining_seconds.unwrap()),
            "{draining:?}"
        );
        // The same server at weight 1 is not draining yet: stale, and the next sync drains it.
        let http = observed
            .virtual_servers
            .iter_mut()
            .find(|vs| vs.key == key)
            .unwrap();
        http.real_servers.last_mut().unwrap().weight = 1;
        let report = super::tests::report(&model, &observed, &DrainStarts::new());
        let stale = report.services[0].virtual_servers[0]
            .real_servers
            .iter()
            .find(|rs| rs.address == ip("10.244.3.3"))
            .unwrap();
        assert_eq!(stale.state, RealServerState::NotDesired);
        assert_eq!(report.problems.len(), 1);
        assert_eq!(report.problems[0].kind, ProblemKind::Stale);
        assert!(
            report.problems[0]
                .message
                .contains("the next sync drains it (2 active connections)"),
            "{:?}",
            report.problems[0]
        );
    }

    #[test]
    fn serving_terminating_endpoints_affinity_and_policies_are_reported() {
        let model = model_with(
            &["svc-web.json", "svc-cache-affinity-itp-local.json"],
            &["eps-web-terminating.json", "eps-cache.json"],
        );
        let observed = observed_from(&model.desired());
        let report = report(&model, &observed, &DrainStarts::new());
        let web = report.services.iter().find(|s| s.name == "web").unwrap();
        let servers = &web.virtual_servers[0].real_servers;
        assert_eq!(servers.len(), 1, "{servers:#?}");
        assert_eq!(servers[0].address, ip("10.244.2.12"));
        assert_eq!(servers[0].state, RealServerState::ServingTerminating);
        let cache = report.services.iter().find(|s| s.name == "cache").unwrap();
        assert_eq!(cache.session_affinity, "ClientIP");
        assert_eq!(cache.affinity_timeout, Some(600));
        assert_eq!(cache.internal_traffic_policy, "Local");
        // internalTrafficPolicy Local on node-a: the only endpoint runs on node-b.
        assert!(cache.virtual_servers[0].real_servers.is_empty());
        let text = render_text(&report);
        assert!(
            text.contains("Service default/cache type ClusterIP affinity ClientIP 600s externalTrafficPolicy Cluster internalTrafficPolicy Local"),
            "{text}"
        );
        assert!(text.contains("serving-terminating"), "{text}");
    }

    #[test]
    fn skipped_and_not_proxied_services_carry_their_reason() {
        let model = model_with(
            &["svc-web.json", "svc-bad-ip.json", "svc-headless.json"],
            &["eps-web.json"],
        );
        let observed = observed_from(&model.desired());
        let report = report(&model, &observed, &DrainStarts::new());
        assert_eq!(report.services.len(), 1);
        assert_eq!(
            report.problems,
            [Problem {
                kind: ProblemKind::Skipped,
                namespace: Some("default".into()),
                name: Some("broken".into()),
                address: None,
                message: "spec.clusterIPs[0] \"10.96.0.999\" is not an IP address".into(),
            }]
        );
        assert_eq!(
            report.not_proxied,
            [NotProxied {
                namespace: "default".into(),
                name: "db".into(),
                reason: "headless (clusterIP: None)".into(),
            }]
        );
        let text = render_text(&report);
        assert!(
            text.contains(
                "  skipped  default/broken                 spec.clusterIPs[0] \"10.96.0.999\" is not an IP address"
            ),
            "{text}"
        );
        assert!(
            text.contains("  default/db: headless (clusterIP: None)"),
            "{text}"
        );
    }

    #[test]
    fn the_text_view_lays_out_services_servers_and_problems() {
        let model = model_with(
            &["svc-web.json", "svc-bad-ip.json", "svc-headless.json"],
            &["eps-web.json"],
        );
        let mut observed = observed_from(&model.desired());
        let http = observed
            .virtual_servers
            .iter_mut()
            .find(|vs| vs.key == vs_key("10.96.12.34", 80))
            .unwrap();
        http.real_servers.retain(|rs| rs.addr != ip("10.244.2.11"));
        let text = render_text(&report(&model, &observed, &DrainStarts::new()));
        assert_eq!(
            text,
            concat!(
                "Node node-a\n",
                "Prot LocalAddress:Port Scheduler Flags Kind Port-name\n",
                "  -> RemoteAddress:Port           Weight ActiveConn InActConn State                Pod                            Node\n",
                "Service default/web type ClusterIP affinity None externalTrafficPolicy Cluster internalTrafficPolicy Cluster\n",
                "TCP  10.96.12.34:80 rr cluster-ip http\n",
                "  -> 10.244.1.10:8080             1      3          1         ready                pod-10-244-1-10                node-a\n",
                "  -> 10.244.2.11:8080             1      -          -         ready MISSING        pod-10-244-2-11                node-b\n",
                "TCP  10.96.12.34:443 rr cluster-ip https\n",
                "  -> 10.244.1.10:8443             1      3          1         ready                pod-10-244-1-10                node-a\n",
                "  -> 10.244.2.11:8443             1      3          1         ready                pod-10-244-2-11                node-b\n",
                "Not proxied:\n",
                "  default/db: headless (clusterIP: None)\n",
                "Problems:\n",
                "  skipped  default/broken                 spec.clusterIPs[0] \"10.96.0.999\" is not an IP address\n",
                "  drift    default/web                    real server 10.244.2.11:8080 of 10.96.12.34:80/tcp is missing in the kernel\n",
            )
        );
    }

    #[test]
    fn filters_select_services_vips_and_their_problems() {
        let model = model_with(
            &[
                "svc-web.json",
                "svc-cache-affinity-itp-local.json",
                "svc-bad-ip.json",
            ],
            &["eps-web.json", "eps-cache.json"],
        );
        let mut observed = observed_from(&model.desired());
        observed
            .virtual_servers
            .retain(|vs| vs.key != vs_key("10.96.12.34", 443));
        let full = report(&model, &observed, &DrainStarts::new());
        assert_eq!(full.services.len(), 2);
        // The skipped Service, the missing :443 virtual server and its two real servers.
        assert_eq!(full.problems.len(), 4, "{:#?}", full.problems);

        let by_name = full.filtered(&Filter {
            name: Some("cache".into()),
            ..Filter::default()
        });
        assert_eq!(by_name.services.len(), 1);
        assert_eq!(by_name.services[0].name, "cache");
        assert!(by_name.problems.is_empty(), "{:#?}", by_name.problems);

        let by_vip = full.filtered(&Filter {
            vip: Some(ip("10.96.12.34")),
            ..Filter::default()
        });
        assert_eq!(by_vip.services.len(), 1);
        assert_eq!(by_vip.services[0].name, "web");
        assert!(by_vip.problems.iter().all(|p| p.kind == ProblemKind::Drift));
        assert!(!by_vip.problems.is_empty());

        let other_namespace = full.filtered(&Filter {
            namespace: Some("kube-system".into()),
            ..Filter::default()
        });
        assert!(other_namespace.services.is_empty());
        assert!(other_namespace.problems.is_empty());

        let broken = full.filtered(&Filter {
            namespace: Some("default".into()),
            name: Some("broken".into()),
            vip: None,
        });
        assert!(broken.services.is_empty());
        assert_eq!(broken.problems.len(), 1);
        assert_eq!(broken.problems[0].kind, ProblemKind::Skipped);
    }

    #[test]
    fn the_json_reply_round_trips_and_errors_are_clear() {
        let model = model_with(&["svc-web.json"], &["eps-web.json"]);
        let observed = observed_from(&model.desired());
        let report = report(&model, &observed, &DrainStarts::new());
        let wire = serde_json::to_string(&StatusReply::Report(Box::new(report.clone()))).unwrap();
        let path = Path::new("/run/test.sock");
        assert_eq!(parse_reply(path, &wire).unwrap(), report);
        let value: serde_json::Value = serde_json::from_str(&wire).unwrap();
        let rs = &value["report"]["services"][0]["virtual_servers"][0]["real_servers"][0];
        assert_eq!(rs["state"], "ready");
        assert_eq!(rs["pod"], "pod-10-244-1-10");
        assert_eq!(rs["kernel"]["active_connections"], 3);
        assert_eq!(value["report"]["services"][0]["type"], "ClusterIP");

        let err = parse_reply(path, r#"{"error":"cannot read the kernel state: x"}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the agent could not report its state: cannot read the kernel state: x"
        );
        let err = parse_reply(path, "HTTP/1.1 400 Bad Request").unwrap_err();
        assert!(err.to_string().contains("not a status report"), "{err}");

        let nowhere = std::env::temp_dir().join(format!("no-agent-{}.sock", std::process::id()));
        let err = query(&nowhere, Duration::from_secs(1)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot reach the agent at {}: ",
                nowhere.display()
            )) && text.ends_with("; is `ipvs-proxy run` running on this node?"),
            "{text}"
        );
    }

    #[test]
    fn the_socket_answers_status_refuses_other_requests_and_is_private() {
        let dir = std::env::temp_dir().join(format!("status-test-{}", std::process::id()));
        let path = dir.join("agent.sock");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let expected = StatusReport {
            node: "node-a".into(),
            ..StatusReport::default()
        };
        let (tx, mut rx) = mpsc::channel::<StatusRequest>(1);
        let server = {
            let _inside = runtime.enter();
            let answer = expected.clone();
            runtime.spawn(async move {
                while let Some(request) = rx.recv().await {
                    let _ = request
                        .reply
                        .send(StatusReply::Report(Box::new(answer.clone())));
                }
            });
            spawn_status_server(path.clone(), tx).unwrap()
        };
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(query(&path, Duration::from_secs(10)).unwrap(), expected);

        let mut stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
        stream.write_all(b"delete everything\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.contains("unknown request"), "{answer}");

        // A second agent on the same path is refused while the first answers.
        let (other, _rx) = mpsc::channel::<StatusRequest>(1);
        let err = {
            let _inside = runtime.enter();
            spawn_status_server(path.clone(), other).unwrap_err()
        };
        assert!(matches!(err, StatusError::InUse { .. }), "{err}");

        // After the agent stops, the left-over socket file is replaced on restart.
        server.abort();
        drop(runtime);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (again, _rx) = mpsc::channel::<StatusRequest>(1);
        {
            let _inside = runtime.enter();
            spawn_status_server(path.clone(), again).unwrap();
        }
        drop(runtime);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
