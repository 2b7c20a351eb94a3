//! The agent's configuration: kube-proxy's `KubeProxyConfiguration` read as-is, plus
//! ipvs-proxy's own settings in a separate document of their own kind.
//!
//! A configuration file is YAML and may hold several documents separated by `---`:
//! - exactly one `kubeproxy.config.k8s.io/v1alpha1` `KubeProxyConfiguration`, the file an
//!   existing kube-proxy DaemonSet already mounts;
//! - optionally one `ipvs-proxy.io/v1alpha1` `IpvsProxyConfiguration` with the settings
//!   kube-proxy has no field for (the drain bound), so nothing of ours is silently mixed
//!   into kube-proxy's schema.
//!
//! Nothing is accepted and silently ignored: a field nobody knows, a field ipvs-proxy does
//! not implement (unless left at its zero value, as generated files do), and a field the
//! other settings make moot are each a warning naming the field.
//!
//! - `documents`: splitting the file by kind, unknown and unsupported fields;
//! - `kube_proxy`: the `KubeProxyConfiguration` fields, section by section;
//! - `extensions`: the `IpvsProxyConfiguration`;
//! - `duration`: Go duration strings.
//!
//! Defaults are kube-proxy's. Invalid values are errors naming the field and the allowed
//! values.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

pub use duration::parse_go_duration;
pub use extensions::{BgpSettings, Extensions, LoadBalancerSettings, MembershipSettings};

use documents::Documents;
use extensions::RawExtensions;
use kube_proxy::RawKubeProxy;

mod documents;
mod duration;
mod extensions;
mod kube_proxy;

/// The API group and version of kube-proxy's configuration.
pub const KUBE_PROXY_API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
/// The kind of kube-proxy's configuration document.
pub const KUBE_PROXY_KIND: &str = "KubeProxyConfiguration";
/// The API group and version of ipvs-proxy's own configuration document.
pub const IPVS_PROXY_API_VERSION: &str = "ipvs-proxy.io/v1alpha1";
/// The kind of ipvs-proxy's own configuration document.
pub const IPVS_PROXY_KIND: &str = "IpvsProxyConfiguration";

/// The IPVS schedulers kube-proxy accepts in `ipvs.scheduler`.
pub const SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "sh", "dh", "sed", "nq", "mh",
];

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("could not read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A document is not valid YAML or has a field of the wrong type.
    #[error("configuration document {document} is not a valid {kind}: {message}")]
    Syntax {
        /// 1-based index of the YAML document in the file.
        document: usize,
        /// The kind being parsed.
        kind: String,
        /// The parser's message, with the location.
        message: String,
    },
    /// A document has an apiVersion/kind pair this program does not read.
    #[error(
        "configuration document {document} has apiVersion {api_version:?} kind {kind:?}; expected \
         {KUBE_PROXY_API_VERSION} {KUBE_PROXY_KIND} or {IPVS_PROXY_API_VERSION} {IPVS_PROXY_KIND}"
    )]
    UnknownKind {
        /// 1-based index of the YAML document in the file.
        document: usize,
        /// The document's apiVersion.
        api_version: String,
        /// The document's kind.
        kind: String,
    },
    /// The file has no KubeProxyConfiguration, or more than one document of a kind.
    #[error("{0}")]
    Documents(String),
    /// A field has a value outside its allowed set or range.
    #[error("invalid value {value:?} for {field}: {allowed}")]
    Invalid {
        /// The field's path, e.g. `ipvs.scheduler`.
        field: String,
        /// The value as written.
        value: String,
        /// What is allowed instead.
        allowed: String,
    },
}

/// What the node proxies on NodePorts: which node addresses serve them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodePortAddresses {
    /// Every address of the node (kube-proxy's default when the field is unset).
    All,
    /// Addresses inside these CIDRs, plus the node's primary addresses when `primary` is set.
    Filtered {
        /// CIDRs whose addresses serve NodePorts.
        cidrs: Vec<IpNet>,
        /// The `primary` keyword: the node's primary IPs (from the Node object).
        primary: bool,
    },
}

impl NodePortAddresses {
    /// Whether `addr` serves NodePorts, given the node's primary addresses.
    pub fn matches(&self, addr: IpAddr, primary_addresses: &[IpAddr]) -> bool {
        match self {
            Self::All => true,
            Self::Filtered { cidrs, primary } => {
                cidrs.iter().any(|cidr| cidr.contains(&addr))
                    || (*primary && primary_addresses.contains(&addr))
            }
        }
    }
}

/// The `ipvs` section, resolved with defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsSettings {
    /// The scheduler of every virtual server (default `rr`).
    pub scheduler: String,
    /// The longest time between full syncs (default 30 s).
    pub sync_period: Duration,
    /// The shortest time between syncs (default 0: every change syncs).
    pub min_sync_period: Duration,
    /// Set `arp_ignore=1`/`arp_announce=2` so VIPs on kube-ipvs0 are not answered for.
    pub strict_arp: bool,
    /// Virtual servers inside these CIDRs are never deleted.
    pub exclude_cidrs: Vec<IpNet>,
    /// IPVS TCP timeout; zero keeps the kernel's value.
    pub tcp_timeout: Duration,
    /// IPVS TCP FIN timeout; zero keeps the kernel's value.
    pub tcp_fin_timeout: Duration,
    /// IPVS UDP timeout; zero keeps the kernel's value.
    pub udp_timeout: Duration,
}

/// The `iptables` fields kube-proxy reads in IPVS mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptablesSettings {
    /// Masquerade all traffic sent to ClusterIPs.
    pub masquerade_all: bool,
    /// The fwmark bit marking packets for masquerading (default 14).
    pub masquerade_bit: u8,
}

impl IptablesSettings {
    /// The fwmark value `1 << masqueradeBit`.
    pub fn masquerade_mark(&self) -> u32 {
        1u32 << self.masquerade_bit
    }
}

/// How traffic from pods is told apart from other traffic (kube-proxy's
/// `detectLocalMode`): traffic to a ClusterIP that does not come from a pod is
/// masqueraded, so replies come back through this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetectLocal {
    /// `ClusterCIDR`, the default: sources inside `clusterCIDR` (its CIDR of the family)
    /// are pods. A family without a cluster CIDR has no detection.
    ClusterCidr,
    /// `NodeCIDR`: sources inside the Node object's `spec.podCIDRs` (its first CIDR of
    /// the family) are pods. Needs the Node, so the Kubernetes source.
    NodeCidr,
    /// `BridgeInterface`: packets entering through this bridge come from pods.
    BridgeInterface(String),
    /// `InterfaceNamePrefix`: packets entering through an interface whose name starts
    /// with this prefix come from pods.
    InterfaceNamePrefix(String),
}

impl DetectLocal {
    /// The mode's name in `detectLocalMode`.
    pub fn mode_name(&self) -> &'static str {
        match self {
            DetectLocal::ClusterCidr => "ClusterCIDR",
            DetectLocal::NodeCidr => "NodeCIDR",
            DetectLocal::BridgeInterface(_) => "BridgeInterface",
            DetectLocal::InterfaceNamePrefix(_) => "InterfaceNamePrefix",
        }
    }
}

/// The `conntrack` section, resolved with defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConntrackSettings {
    /// nf_conntrack_max per CPU; zero leaves the limit alone (default 32768).
    pub max_per_core: u32,
    /// The lower bound of nf_conntrack_max (default 131072).
    pub min: u32,
    /// nf_conntrack_tcp_timeout_established; `None` leaves it alone (default 24h).
    pub tcp_established_timeout: Option<Duration>,
    /// nf_conntrack_tcp_timeout_close_wait; `None` leaves it alone (default 1h).
    pub tcp_close_wait_timeout: Option<Duration>,
    /// nf_conntrack_tcp_be_liberal.
    pub tcp_be_liberal: bool,
    /// nf_conntrack_udp_timeout; `None` leaves it alone.
    pub udp_timeout: Option<Duration>,
    /// nf_conntrack_udp_timeout_stream; `None` leaves it alone.
    pub udp_stream_timeout: Option<Duration>,
}

/// The whole configuration, validated, with kube-proxy's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The `ipvs` section.
    pub ipvs: IpvsSettings,
    /// The `iptables` fields used in IPVS mode.
    pub iptables: IptablesSettings,
    /// The `conntrack` section.
    pub conntrack: ConntrackSettings,
    /// `clusterCIDR`: one CIDR, or an IPv4 and an IPv6 one.
    pub cluster_cidrs: Vec<IpNet>,
    /// `detectLocalMode` and `detectLocal`: how traffic from pods is told apart.
    pub detect_local: DetectLocal,
    /// `nodePortAddresses`.
    pub node_port_addresses: NodePortAddresses,
    /// `hostnameOverride`: the Node name to use instead of the host name.
    pub hostname_override: Option<String>,
    /// `bindAddress` (default 0.0.0.0).
    pub bind_address: IpAddr,
    /// `healthzBindAddress` (default 0.0.0.0:10256, also when ""); a bare IP takes the
    /// default port. Always `Some` from [`parse`]; `None` lets a caller disable it.
    pub healthz_bind_address: Option<SocketAddr>,
    /// `metricsBindAddress` (default 127.0.0.1:10249, also when ""). Always `Some` from
    /// [`parse`]; `None` lets a caller disable it.
    pub metrics_bind_address: Option<SocketAddr>,
    /// `clientConnection.kubeconfig`, when set.
    pub kubeconfig: Option<String>,
    /// `configSyncPeriod` (default 15m): the informers' resync period.
    pub config_sync_period: Duration,
    /// ipvs-proxy's own settings.
    pub extensions: Extensions,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ipvs: IpvsSettings {
                scheduler: "rr".into(),
                sync_period: Duration::from_secs(30),
                min_sync_period: Duration::ZERO,
                strict_arp: false,
                exclude_cidrs: Vec::new(),
                tcp_timeout: Duration::ZERO,
                tcp_fin_timeout: Duration::ZERO,
                udp_timeout: Duration::ZERO,
            },
            iptables: IptablesSettings {
                masquerade_all: false,
                masquerade_bit: 14,
            },
            conntrack: ConntrackSettings {
                max_per_core: 32768,
                min: 131072,
                tcp_established_timeout: Some(Duration::from_secs(24 * 3600)),
                tcp_close_wait_timeout: Some(Duration::from_secs(3600)),
                tcp_be_liberal: false,
                udp_timeout: None,
                udp_stream_timeout: None,
            },
            cluster_cidrs: Vec::new(),
            detect_local: DetectLocal::ClusterCidr,
            node_port_addresses: NodePortAddresses::All,
            hostname_override: None,
            bind_address: IpAddr::from([0, 0, 0, 0]),
            healthz_bind_address: Some(SocketAddr::from(([0, 0, 0, 0], 10256))),
            metrics_bind_address: Some(SocketAddr::from(([127, 0, 0, 1], 10249))),
            kubeconfig: None,
            config_sync_period: Duration::from_secs(15 * 60),
            extensions: Extensions::default(),
        }
    }
}

/// A parsed configuration and the unknown fields that were ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// One message per field that has no effect: unknown (`KubeProxyConfiguration:
    /// unknown field ipvs.schedular ignored`), not implemented
    /// (`KubeProxyConfiguration: oomScoreAdj is not supported by ipvs-proxy and is
    /// ignored`), or unused with the other settings.
    pub warnings: Vec<String>,
}

/// Reads and parses a configuration file.
pub fn load(path: &std::path::Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text)
}

/// The configuration used when no file is given: kube-proxy's defaults in IPVS mode.
pub const DEFAULT_CONFIG: &str =
    "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n";

/// Reads `path`, or takes kube-proxy's IPVS-mode defaults when there is no file.
pub fn load_or_default(path: Option<&std::path::Path>) -> Result<Loaded, ConfigError> {
    match path {
        Some(path) => load(path),
        None => parse(DEFAULT_CONFIG),
    }
}

/// Parses configuration YAML (one or more documents, see the module docs).
pub fn parse(text: &str) -> Result<Loaded, ConfigError> {
    let mut warnings = Vec::new();
    let documents = Documents::split(text)?;
    let Some((number, kube_proxy)) = documents.kube_proxy else {
        return Err(ConfigError::Documents(format!(
            "the configuration has no {KUBE_PROXY_API_VERSION} {KUBE_PROXY_KIND} document"
        )));
    };
    let kube_proxy: RawKubeProxy = documents::typed(
        kube_proxy,
        number,
        KUBE_PROXY_KIND,
        kube_proxy::UNSUPPORTED,
        &mut warnings,
    )?;
    let extensions: Option<RawExtensions> = match documents.extensions {
        Some((number, value)) => Some(documents::typed(
            value,
            number,
            IPVS_PROXY_KIND,
            extensions::UNSUPPORTED,
            &mut warnings,
        )?),
        None => None,
    };
    let mut config = kube_proxy.resolve(&mut warnings)?;
    if let Some(extensions) = extensions {
        config.extensions = extensions.resolve()?;
    }
    Ok(Loaded { config, warnings })
}

fn invalid(field: &str, value: impl std::fmt::Display, allowed: &str) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        value: value.to_string(),
        allowed: allowed.into(),
    }
}
