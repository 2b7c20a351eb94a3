//! The report's types: what `ipvs-proxy services --json` prints and the status socket
//! carries. Field names and values are a documented interface (see the parent
//! module): a change here is a change of the JSON.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::model::{Protocol, VipKind};

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
    /// Per LoadBalancer address and Service holding it: who announces it, or why
    /// nobody does. Left out of the JSON when there is none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_balancers: Vec<LoadBalancerStatus>,
    /// The agents the membership sees alive, this node included (the layer-2
    /// election runs among them); `None` when the membership does not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_nodes: Option<Vec<String>>,
}

/// One LoadBalancer address of one Service (an address shared by two Services
/// has a row for each: each Service is decided on its own, as MetalLB does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadBalancerStatus {
    /// The address.
    pub address: IpAddr,
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The pool holding the Service's addresses, if one does.
    pub pool: Option<String>,
    /// Layer 2.
    pub layer2: Layer2Status,
    /// BGP.
    pub bgp: BgpStatus,
}

/// Who announces an address over layer 2 (ARP / NDP).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer2Status {
    /// The L2Advertisements selecting the Service.
    pub advertisements: Vec<String>,
    /// The node answering for the address.
    pub owner: Option<String>,
    /// The eligible nodes in election order (the owner first).
    pub eligible: Vec<String>,
    /// The owner's interfaces; empty means every interface.
    pub interfaces: Vec<String>,
    /// On the owner, the interfaces answering ARP / NDP for the address now (those
    /// the interface rule picked); empty elsewhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answering: Vec<String>,
    /// Why no node announces it.
    pub why: Option<String>,
}

/// Who announces an address over BGP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpStatus {
    /// The BGPAdvertisements selecting the Service.
    pub advertisements: Vec<String>,
    /// One route per advertisement.
    pub announcements: Vec<BgpAnnouncementStatus>,
    /// Why no node announces it.
    pub why: Option<String>,
}

/// One advertisement's route for an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpAnnouncementStatus {
    /// The BGPAdvertisement.
    pub advertisement: String,
    /// The prefix announced (the address masked to the aggregation length).
    pub prefix: String,
    /// Its communities (`65000:100`, `large:1:2:3`).
    pub communities: Vec<String>,
    /// Its LOCAL_PREF.
    pub local_pref: Option<u32>,
    /// The nodes announcing it, each with the peers it sends it to.
    pub nodes: Vec<BgpNodeStatus>,
}

/// A node announcing a route, and to whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BgpNodeStatus {
    /// The node.
    pub node: String,
    /// The BGPPeers it sends the route to.
    pub peers: Vec<String>,
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
    /// `tcp`, `udp` or `sctp` in the JSON.
    #[serde(with = "protocol_name")]
    pub protocol: Protocol,
    /// `cluster-ip`, `node-port`, `external-ip` or `load-balancer` in the JSON.
    #[serde(with = "vip_kind_name")]
    pub kind: VipKind,
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
    pub(super) fn as_str(self) -> &'static str {
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
    pub(super) fn as_str(self) -> &'static str {
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
    pub(super) fn matches_service(&self, namespace: &str, name: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
            && self.name.as_deref().is_none_or(|n| n == name)
    }

    pub(super) fn matches_problem(&self, problem: &Problem) -> bool {
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

/// The name of a [`VipKind`] in the JSON and the text view.
pub(super) fn vip_kind_str(kind: VipKind) -> &'static str {
    match kind {
        VipKind::ClusterIp => "cluster-ip",
        VipKind::NodePort => "node-port",
        VipKind::ExternalIp => "external-ip",
        VipKind::LoadBalancer => "load-balancer",
    }
}

/// `kind` as its name, so the JSON keeps the text it had when the field was a
/// `String`; the model's enum has no serde of its own.
mod vip_kind_name {
    use serde::de::Error as _;
    use serde::{Deserialize as _, Deserializer, Serializer};

    use super::{VipKind, vip_kind_str};

    const ALL: [VipKind; 4] = [
        VipKind::ClusterIp,
        VipKind::NodePort,
        VipKind::ExternalIp,
        VipKind::LoadBalancer,
    ];

    pub(super) fn serialize<S: Serializer>(kind: &VipKind, out: S) -> Result<S::Ok, S::Error> {
        out.serialize_str(vip_kind_str(*kind))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<VipKind, D::Error> {
        let name = String::deserialize(input)?;
        ALL.into_iter()
            .find(|kind| vip_kind_str(*kind) == name)
            .ok_or_else(|| D::Error::custom(format_args!("unknown virtual server kind `{name}`")))
    }
}

/// `protocol` as [`Protocol::as_str`] writes it (`tcp`, `udp`, `sctp`).
mod protocol_name {
    use serde::de::Error as _;
    use serde::{Deserialize as _, Deserializer, Serializer};

    use super::Protocol;

    const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    pub(super) fn serialize<S: Serializer>(protocol: &Protocol, out: S) -> Result<S::Ok, S::Error> {
        out.serialize_str(protocol.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<Protocol, D::Error> {
        let name = String::deserialize(input)?;
        ALL.into_iter()
            .find(|protocol| protocol.as_str() == name)
            .ok_or_else(|| D::Error::custom(format_args!("unknown protocol `{name}`")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON of a virtual server is what it was when `kind` and `protocol` were
    /// strings, byte for byte, and reads back.
    #[test]
    fn a_virtual_server_keeps_its_json_text() {
        let vs = VirtualServerStatus {
            address: "fd00::10".parse().unwrap(),
            port: 53,
            protocol: Protocol::Udp,
            kind: VipKind::LoadBalancer,
            port_name: "dns".into(),
            scheduler: "rr".into(),
            persistence_timeout: None,
            in_kernel: true,
            real_servers: Vec::new(),
        };
        let text = serde_json::to_string(&vs).unwrap();
        assert_eq!(
            text,
            r#"{"address":"fd00::10","port":53,"protocol":"udp","kind":"load-balancer","port_name":"dns","scheduler":"rr","persistence_timeout":null,"in_kernel":true,"real_servers":[]}"#
        );
        assert_eq!(
            serde_json::from_str::<VirtualServerStatus>(&text).unwrap(),
            vs
        );
        for (kind, name) in [
            (VipKind::ClusterIp, "cluster-ip"),
            (VipKind::NodePort, "node-port"),
            (VipKind::ExternalIp, "external-ip"),
            (VipKind::LoadBalancer, "load-balancer"),
        ] {
            let json = serde_json::to_string(&VirtualServerStatus { kind, ..vs.clone() }).unwrap();
            assert!(json.contains(&format!(r#""kind":"{name}""#)), "{json}");
        }
        let bad = text.replace("load-balancer", "balancer");
        let err = serde_json::from_str::<VirtualServerStatus>(&bad).unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown virtual server kind `balancer`"),
            "{err}"
        );
    }
}
