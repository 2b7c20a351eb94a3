//! The agent's configuration: kube-proxy's `KubeProxyConfiguration` read as-is, plus
//! ipvs-proxy's own settings in a separate document of their own kind.
//!
//! A configuration file is YAML and may hold several documents separated by `---`:
//! - exactly one `kubeproxy.config.k8s.io/v1alpha1` `KubeProxyConfiguration`, the file an
//!   existing kube-proxy DaemonSet already mounts; fields kube-proxy does not use in IPVS
//!   mode are accepted and ignored, fields kube-proxy does not know are returned as
//!   warnings naming them;
//! - optionally one `ipvs-proxy.io/v1alpha1` `IpvsProxyConfiguration` with the settings
//!   kube-proxy has no field for (the drain bound, the announcer), so nothing of ours is
//!   silently mixed into kube-proxy's schema.
//!
//! Defaults are kube-proxy's. Invalid values are errors naming the field and the allowed
//! values.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

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

/// ipvs-proxy's own settings (`IpvsProxyConfiguration`), resolved with defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Extensions {
    /// The longest a removed TCP real server is kept at weight 0 while it still has
    /// connections (kube-proxy has no bound). Default 15 minutes.
    pub max_drain: Duration,
    /// The address announcer's settings, kept unparsed until the announcer reads them.
    pub announcer: Option<serde_json::Value>,
}

impl Default for Extensions {
    fn default() -> Self {
        Self {
            max_drain: Duration::from_secs(15 * 60),
            announcer: None,
        }
    }
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
    /// `clusterCIDR`, split on commas.
    pub cluster_cidrs: Vec<IpNet>,
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
    /// One message per field nobody knows, e.g. `unknown field ipvs.schedular ignored`.
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
    let mut kube_proxy: Option<RawKubeProxy> = None;
    let mut extensions: Option<RawExtensions> = None;
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let number = index + 1;
        let value =
            serde_yaml_ng::Value::deserialize(document).map_err(|error| ConfigError::Syntax {
                document: number,
                kind: "YAML document".into(),
                message: error.to_string(),
            })?;
        if value.is_null() {
            continue;
        }
        let field = |name: &str| {
            value
                .get(name)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let (api_version, kind) = (field("apiVersion"), field("kind"));
        match (api_version.as_str(), kind.as_str()) {
            (KUBE_PROXY_API_VERSION, KUBE_PROXY_KIND) => {
                if kube_proxy.is_some() {
                    return Err(ConfigError::Documents(format!(
                        "configuration document {number} is a second {KUBE_PROXY_KIND}; keep one"
                    )));
                }
                kube_proxy = Some(deserialize_warning_unknown(
                    value,
                    number,
                    KUBE_PROXY_KIND,
                    &mut warnings,
                )?);
            }
            (IPVS_PROXY_API_VERSION, IPVS_PROXY_KIND) => {
                if extensions.is_some() {
                    return Err(ConfigError::Documents(format!(
                        "configuration document {number} is a second {IPVS_PROXY_KIND}; keep one"
                    )));
                }
                extensions = Some(deserialize_warning_unknown(
                    value,
                    number,
                    IPVS_PROXY_KIND,
                    &mut warnings,
                )?);
            }
            _ => {
                return Err(ConfigError::UnknownKind {
                    document: number,
                    api_version,
                    kind,
                });
            }
        }
    }
    let kube_proxy = kube_proxy.ok_or_else(|| {
        ConfigError::Documents(format!(
            "the configuration has no {KUBE_PROXY_API_VERSION} {KUBE_PROXY_KIND} document"
        ))
    })?;
    let mut config = kube_proxy.resolve()?;
    if let Some(extensions) = extensions {
        config.extensions = extensions.resolve()?;
    }
    Ok(Loaded { config, warnings })
}

fn deserialize_warning_unknown<T: serde::de::DeserializeOwned>(
    value: serde_yaml_ng::Value,
    document: usize,
    kind: &str,
    warnings: &mut Vec<String>,
) -> Result<T, ConfigError> {
    let mut unknown = Vec::new();
    // serde_path_to_error names the field a type error is in; serde_ignored reports
    // the fields nobody reads.
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let ignoring = serde_ignored::Deserializer::new(value, &mut record);
    let parsed =
        serde_path_to_error::deserialize(ignoring).map_err(|error| ConfigError::Syntax {
            document,
            kind: kind.into(),
            message: format!("{}: {}", error.path(), error.inner()),
        })?;
    warnings.extend(
        unknown
            .into_iter()
            .map(|path| format!("{kind}: unknown field {path} ignored")),
    );
    Ok(parsed)
}

/// Fields kube-proxy defines, whether or not IPVS mode uses them. The ones ipvs-proxy does
/// not use are typed loosely so any valid kube-proxy file is accepted without warnings.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawKubeProxy {
    #[allow(dead_code)]
    api_version: Option<String>,
    #[allow(dead_code)]
    kind: Option<String>,
    mode: Option<String>,
    #[serde(default)]
    ipvs: RawIpvs,
    #[serde(default)]
    iptables: RawIptables,
    #[serde(default)]
    conntrack: RawConntrack,
    #[serde(rename = "clusterCIDR")]
    cluster_cidr: Option<String>,
    node_port_addresses: Option<Vec<String>>,
    hostname_override: Option<String>,
    bind_address: Option<String>,
    healthz_bind_address: Option<String>,
    metrics_bind_address: Option<String>,
    client_connection: Option<RawClientConnection>,
    config_sync_period: Option<String>,
    // Accepted and unused in IPVS mode.
    #[allow(dead_code)]
    detect_local_mode: Option<String>,
    #[allow(dead_code)]
    detect_local: Option<serde_json::Value>,
    #[allow(dead_code)]
    oom_score_adj: Option<i64>,
    #[allow(dead_code)]
    feature_gates: Option<serde_json::Value>,
    #[allow(dead_code)]
    logging: Option<serde_json::Value>,
    #[allow(dead_code)]
    nftables: Option<serde_json::Value>,
    #[allow(dead_code)]
    winkernel: Option<serde_json::Value>,
    #[allow(dead_code)]
    windows_run_as_service: Option<bool>,
    #[allow(dead_code)]
    port_range: Option<String>,
    #[allow(dead_code)]
    enable_profiling: Option<bool>,
    #[allow(dead_code)]
    show_hidden_metrics_for_version: Option<String>,
    #[allow(dead_code)]
    bind_address_hard_fail: Option<bool>,
    #[allow(dead_code)]
    udp_idle_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIpvs {
    scheduler: Option<String>,
    sync_period: Option<String>,
    min_sync_period: Option<String>,
    #[serde(rename = "strictARP")]
    strict_arp: Option<bool>,
    #[serde(rename = "excludeCIDRs")]
    exclude_cidrs: Option<Vec<String>>,
    tcp_timeout: Option<String>,
    tcp_fin_timeout: Option<String>,
    udp_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIptables {
    masquerade_all: Option<bool>,
    masquerade_bit: Option<i64>,
    #[allow(dead_code)]
    sync_period: Option<String>,
    #[allow(dead_code)]
    min_sync_period: Option<String>,
    #[allow(dead_code)]
    localhost_node_ports: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConntrack {
    max_per_core: Option<i64>,
    min: Option<i64>,
    tcp_established_timeout: Option<String>,
    tcp_close_wait_timeout: Option<String>,
    tcp_be_liberal: Option<bool>,
    udp_timeout: Option<String>,
    udp_stream_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawClientConnection {
    kubeconfig: Option<String>,
    #[allow(dead_code)]
    accept_content_types: Option<String>,
    #[allow(dead_code)]
    content_type: Option<String>,
    #[allow(dead_code)]
    qps: Option<f64>,
    #[allow(dead_code)]
    burst: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawExtensions {
    #[allow(dead_code)]
    api_version: Option<String>,
    #[allow(dead_code)]
    kind: Option<String>,
    max_drain_seconds: Option<i64>,
    announcer: Option<serde_json::Value>,
}

fn invalid(field: &str, value: impl std::fmt::Display, allowed: &str) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        value: value.to_string(),
        allowed: allowed.into(),
    }
}

fn duration_field(
    field: &str,
    value: &Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(text) => parse_go_duration(text).map_err(|allowed| invalid(field, text, &allowed)),
    }
}

fn cidr_field(field: &str, text: &str) -> Result<IpNet, ConfigError> {
    text.trim()
        .parse::<IpNet>()
        .map_err(|_| invalid(field, text, "a CIDR such as 10.0.0.0/8 or fd00::/64"))
}

fn socket_field(
    field: &str,
    value: &Option<String>,
    default: SocketAddr,
) -> Result<Option<SocketAddr>, ConfigError> {
    match value.as_deref() {
        None => Ok(Some(default)),
        // kube-proxy's defaulting treats an empty address as unset.
        Some("") => Ok(Some(default)),
        Some(text) => {
            if let Ok(addr) = text.parse::<SocketAddr>() {
                return Ok(Some(addr));
            }
            // kube-proxy also accepts a bare IP and uses the default port.
            text.parse::<IpAddr>()
                .map(|ip| Some(SocketAddr::new(ip, default.port())))
                .map_err(|_| {
                    invalid(
                        field,
                        text,
                        "IP:port such as 0.0.0.0:10256, [::]:10256, or an IP",
                    )
                })
        }
    }
}

impl RawKubeProxy {
    fn resolve(self) -> Result<Config, ConfigError> {
        let defaults = Config::default();
        match self.mode.as_deref() {
            Some("ipvs") => {}
            Some(other) => {
                let shown = if other.is_empty() {
                    "\"\" (iptables)"
                } else {
                    other
                };
                return Err(invalid(
                    "mode",
                    shown,
                    "ipvs-proxy only implements \"ipvs\"; set mode: ipvs",
                ));
            }
            None => {
                return Err(invalid(
                    "mode",
                    "unset (iptables)",
                    "ipvs-proxy only implements \"ipvs\"; set mode: ipvs",
                ));
            }
        }

        let scheduler = match self.ipvs.scheduler.as_deref() {
            None | Some("") => "rr".to_string(),
            Some(name) if SCHEDULERS.contains(&name) => name.to_string(),
            Some(name) => {
                return Err(invalid(
                    "ipvs.scheduler",
                    name,
                    &format!("one of {}", SCHEDULERS.join(", ")),
                ));
            }
        };
        let sync_period = duration_field(
            "ipvs.syncPeriod",
            &self.ipvs.sync_period,
            defaults.ipvs.sync_period,
        )?;
        // kube-proxy's defaulting treats a zero period as unset.
        let sync_period = if sync_period.is_zero() {
            defaults.ipvs.sync_period
        } else {
            sync_period
        };
        let min_sync_period = duration_field(
            "ipvs.minSyncPeriod",
            &self.ipvs.min_sync_period,
            defaults.ipvs.min_sync_period,
        )?;
        if min_sync_period > sync_period {
            return Err(invalid(
                "ipvs.minSyncPeriod",
                self.ipvs.min_sync_period.unwrap_or_default(),
                "a duration not greater than ipvs.syncPeriod",
            ));
        }
        let exclude_cidrs = self
            .ipvs
            .exclude_cidrs
            .unwrap_or_default()
            .iter()
            .map(|text| cidr_field("ipvs.excludeCIDRs", text))
            .collect::<Result<_, _>>()?;
        let ipvs = IpvsSettings {
            scheduler,
            sync_period,
            min_sync_period,
            strict_arp: self.ipvs.strict_arp.unwrap_or(false),
            exclude_cidrs,
            tcp_timeout: duration_field("ipvs.tcpTimeout", &self.ipvs.tcp_timeout, Duration::ZERO)?,
            tcp_fin_timeout: duration_field(
                "ipvs.tcpFinTimeout",
                &self.ipvs.tcp_fin_timeout,
                Duration::ZERO,
            )?,
            udp_timeout: duration_field("ipvs.udpTimeout", &self.ipvs.udp_timeout, Duration::ZERO)?,
        };

        let masquerade_bit = match self.iptables.masquerade_bit {
            None => 14,
            Some(bit @ 0..=31) => bit as u8,
            Some(bit) => {
                return Err(invalid(
                    "iptables.masqueradeBit",
                    bit,
                    "an integer from 0 to 31",
                ));
            }
        };
        let iptables = IptablesSettings {
            masquerade_all: self.iptables.masquerade_all.unwrap_or(false),
            masquerade_bit,
        };

        let count = |field: &str, value: Option<i64>, default: u32| match value {
            None => Ok(default),
            Some(n) if (0..=i64::from(u32::MAX)).contains(&n) => Ok(n as u32),
            Some(n) => Err(invalid(field, n, "an integer from 0 to 4294967295")),
        };
        let optional_duration =
            |field: &str, value: &Option<String>, default: Option<Duration>| match value {
                None => Ok(default),
                Some(_) => duration_field(field, value, Duration::ZERO)
                    .map(|d| if d.is_zero() { None } else { Some(d) }),
            };
        let conntrack = ConntrackSettings {
            max_per_core: count("conntrack.maxPerCore", self.conntrack.max_per_core, 32768)?,
            min: count("conntrack.min", self.conntrack.min, 131072)?,
            tcp_established_timeout: optional_duration(
                "conntrack.tcpEstablishedTimeout",
                &self.conntrack.tcp_established_timeout,
                defaults.conntrack.tcp_established_timeout,
            )?,
            tcp_close_wait_timeout: optional_duration(
                "conntrack.tcpCloseWaitTimeout",
                &self.conntrack.tcp_close_wait_timeout,
                defaults.conntrack.tcp_close_wait_timeout,
            )?,
            tcp_be_liberal: self.conntrack.tcp_be_liberal.unwrap_or(false),
            udp_timeout: optional_duration(
                "conntrack.udpTimeout",
                &self.conntrack.udp_timeout,
                None,
            )?,
            udp_stream_timeout: optional_duration(
                "conntrack.udpStreamTimeout",
                &self.conntrack.udp_stream_timeout,
                None,
            )?,
        };

        let cluster_cidrs = self
            .cluster_cidr
            .unwrap_or_default()
            .split(',')
            .filter(|part| !part.trim().is_empty())
            .map(|part| cidr_field("clusterCIDR", part))
            .collect::<Result<_, _>>()?;

        let node_port_addresses = match self.node_port_addresses {
            None => NodePortAddresses::All,
            Some(list) if list.is_empty() => NodePortAddresses::All,
            Some(list) => {
                let mut cidrs = Vec::new();
                let mut primary = false;
                let mut all = false;
                for entry in &list {
                    match entry.trim() {
                        "primary" => primary = true,
                        "all" => all = true,
                        // IPVS mode never serves NodePorts on localhost.
                        "localhost" => {}
                        text => cidrs.push(text.parse::<IpNet>().map_err(|_| {
                            invalid(
                                "nodePortAddresses",
                                text,
                                "CIDRs such as 192.168.0.0/16, or the keywords primary, all",
                            )
                        })?),
                    }
                }
                if all {
                    NodePortAddresses::All
                } else {
                    NodePortAddresses::Filtered { cidrs, primary }
                }
            }
        };

        let bind_address = match self.bind_address.as_deref() {
            None | Some("") => defaults.bind_address,
            Some(text) => text
                .parse()
                .map_err(|_| invalid("bindAddress", text, "an IP address such as 0.0.0.0 or ::"))?,
        };

        let config_sync_period = match duration_field(
            "configSyncPeriod",
            &self.config_sync_period,
            defaults.config_sync_period,
        )? {
            zero if zero.is_zero() => defaults.config_sync_period,
            period => period,
        };

        Ok(Config {
            ipvs,
            iptables,
            conntrack,
            cluster_cidrs,
            node_port_addresses,
            hostname_override: self
                .hostname_override
                .filter(|name| !name.trim().is_empty()),
            bind_address,
            healthz_bind_address: socket_field(
                "healthzBindAddress",
                &self.healthz_bind_address,
                SocketAddr::from(([0, 0, 0, 0], 10256)),
            )?,
            metrics_bind_address: socket_field(
                "metricsBindAddress",
                &self.metrics_bind_address,
                SocketAddr::from(([127, 0, 0, 1], 10249)),
            )?,
            kubeconfig: self
                .client_connection
                .and_then(|connection| connection.kubeconfig)
                .filter(|path| !path.is_empty()),
            config_sync_period,
            extensions: Extensions::default(),
        })
    }
}

impl RawExtensions {
    fn resolve(self) -> Result<Extensions, ConfigError> {
        let defaults = Extensions::default();
        let max_drain = match self.max_drain_seconds {
            None => defaults.max_drain,
            Some(seconds @ 1..) => Duration::from_secs(seconds as u64),
            Some(seconds) => {
                return Err(invalid(
                    "IpvsProxyConfiguration.maxDrainSeconds",
                    seconds,
                    "a whole number of seconds greater than 0",
                ));
            }
        };
        Ok(Extensions {
            max_drain,
            announcer: self.announcer,
        })
    }
}

/// Parses a Go `time.Duration` string such as `30s`, `1m0s`, `1h30m`, `250ms` or `0`.
///
/// Negative durations are rejected: no configuration field accepts them. On error the
/// message describes the accepted syntax.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    const SYNTAX: &str =
        "a non-negative Go duration such as 30s, 1m0s, 1h30m or 250ms (units ns, us, ms, s, m, h)";
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let rest = text.strip_prefix('+').unwrap_or(text);
    if rest.is_empty() || rest.starts_with('-') {
        return Err(SYNTAX.into());
    }
    let mut total_nanos: u128 = 0;
    let mut rest = rest;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| SYNTAX.to_string())?;
        if number_len == 0 {
            return Err(SYNTAX.into());
        }
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(SYNTAX.into()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(SYNTAX.into());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| SYNTAX.to_string())?
        };
        let mut nanos = whole
            .checked_mul(unit_nanos)
            .ok_or_else(|| SYNTAX.to_string())?;
        let mut scale = unit_nanos;
        for digit in fraction.chars() {
            scale /= 10;
            nanos += u128::from(digit.to_digit(10).ok_or_else(|| SYNTAX.to_string())?) * scale;
        }
        total_nanos = total_nanos
            .checked_add(nanos)
            .ok_or_else(|| SYNTAX.to_string())?;
        rest = after;
    }
    let seconds = u64::try_from(total_nanos / 1_000_000_000).map_err(|_| SYNTAX.to_string())?;
    Ok(Duration::new(seconds, (total_nanos % 1_000_000_000) as u32))
}
