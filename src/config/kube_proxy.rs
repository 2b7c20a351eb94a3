//! kube-proxy's `KubeProxyConfiguration` (`kubeproxy.config.k8s.io/v1alpha1`): the fields
//! IPVS mode reads, resolved section by section with kube-proxy's defaults and
//! validation.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::documents::Unsupported;
use super::{
    Config, ConfigError, ConntrackSettings, DetectLocal, Extensions, IptablesSettings,
    IpvsSettings, NodePortAddresses, SCHEDULERS, invalid, parse_go_duration,
};

/// Fields kube-proxy defines that ipvs-proxy does not implement. Each is a warning
/// naming it when set to anything but its zero value.
pub(super) const UNSUPPORTED: &[Unsupported] = &[
    Unsupported {
        path: "featureGates",
        why: "",
    },
    Unsupported {
        path: "clientConnection.acceptContentTypes",
        why: "",
    },
    Unsupported {
        path: "clientConnection.contentType",
        why: "",
    },
    Unsupported {
        path: "clientConnection.qps",
        why: "",
    },
    Unsupported {
        path: "clientConnection.burst",
        why: "",
    },
    Unsupported {
        path: "logging",
        why: " (set the RUST_LOG environment variable instead)",
    },
    Unsupported {
        path: "bindAddressHardFail",
        why: " (a port that cannot be bound is logged and not served)",
    },
    Unsupported {
        path: "enableProfiling",
        why: "",
    },
    Unsupported {
        path: "showHiddenMetricsForVersion",
        why: "",
    },
    Unsupported {
        path: "oomScoreAdj",
        why: " (set it in the Pod spec instead)",
    },
    Unsupported {
        path: "iptables.localhostNodePorts",
        why: " (kube-proxy reads it in iptables mode only)",
    },
    Unsupported {
        path: "iptables.syncPeriod",
        why: " (kube-proxy reads it in iptables mode only; IPVS mode uses ipvs.syncPeriod)",
    },
    Unsupported {
        path: "iptables.minSyncPeriod",
        why: " (kube-proxy reads it in iptables mode only; IPVS mode uses ipvs.minSyncPeriod)",
    },
    Unsupported {
        path: "nftables",
        why: " (kube-proxy reads it in nftables mode only)",
    },
    Unsupported {
        path: "winkernel",
        why: " (kube-proxy reads it on Windows only)",
    },
    Unsupported {
        path: "windowsRunAsService",
        why: " (kube-proxy reads it on Windows only)",
    },
    Unsupported {
        path: "portRange",
        why: " (kube-proxy no longer uses it)",
    },
    Unsupported {
        path: "udpIdleTimeout",
        why: " (kube-proxy's userspace mode is gone)",
    },
];

/// The fields ipvs-proxy implements. Everything else is either in [`UNSUPPORTED`] or
/// unknown, and both are reported.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawKubeProxy {
    mode: Option<String>,
    #[serde(default)]
    ipvs: RawIpvs,
    #[serde(default)]
    iptables: RawIptables,
    #[serde(default)]
    conntrack: RawConntrack,
    #[serde(rename = "clusterCIDR")]
    cluster_cidr: Option<String>,
    detect_local_mode: Option<String>,
    #[serde(default)]
    detect_local: RawDetectLocal,
    node_port_addresses: Option<Vec<String>>,
    hostname_override: Option<String>,
    bind_address: Option<String>,
    healthz_bind_address: Option<String>,
    metrics_bind_address: Option<String>,
    #[serde(default)]
    client_connection: RawClientConnection,
    config_sync_period: Option<String>,
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
struct RawDetectLocal {
    bridge_interface: Option<String>,
    interface_name_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawClientConnection {
    kubeconfig: Option<String>,
}

/// The values `detectLocalMode` takes.
const DETECT_LOCAL_MODES: &str = "one of ClusterCIDR, NodeCIDR, BridgeInterface, \
     InterfaceNamePrefix, or empty (ClusterCIDR)";

impl RawKubeProxy {
    /// The configuration, validated and with kube-proxy's defaults; fields that are set
    /// but have no effect with the other settings (say `detectLocal.bridgeInterface`
    /// with `detectLocalMode: NodeCIDR`) are added to `warnings`.
    pub(super) fn resolve(self, warnings: &mut Vec<String>) -> Result<Config, ConfigError> {
        check_mode(self.mode.as_deref())?;
        let defaults = Config::default();
        let cluster_cidrs = cluster_cidrs(self.cluster_cidr.as_deref())?;
        let detect_local = detect_local(
            self.detect_local_mode.as_deref(),
            &self.detect_local,
            &cluster_cidrs,
            warnings,
        )?;
        let config_sync_period = match duration_field(
            "configSyncPeriod",
            &self.config_sync_period,
            defaults.config_sync_period,
        )? {
            zero if zero.is_zero() => defaults.config_sync_period,
            period => period,
        };
        Ok(Config {
            ipvs: self.ipvs.resolve(&defaults.ipvs)?,
            iptables: self.iptables.resolve()?,
            conntrack: self.conntrack.resolve(&defaults.conntrack)?,
            cluster_cidrs,
            detect_local,
            node_port_addresses: node_port_addresses(self.node_port_addresses)?,
            hostname_override: self
                .hostname_override
                .filter(|name| !name.trim().is_empty()),
            bind_address: match self.bind_address.as_deref() {
                None | Some("") => defaults.bind_address,
                Some(text) => text.parse().map_err(|_| {
                    invalid("bindAddress", text, "an IP address such as 0.0.0.0 or ::")
                })?,
            },
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
                .kubeconfig
                .filter(|path| !path.is_empty()),
            config_sync_period,
            extensions: Extensions::default(),
        })
    }
}

/// `mode`: only `ipvs` is implemented; kube-proxy's default (unset or "") is iptables.
fn check_mode(mode: Option<&str>) -> Result<(), ConfigError> {
    const ONLY_IPVS: &str = "ipvs-proxy only implements \"ipvs\"; set mode: ipvs";
    match mode {
        Some("ipvs") => Ok(()),
        Some("") => Err(invalid("mode", "\"\" (iptables)", ONLY_IPVS)),
        Some(other) => Err(invalid("mode", other, ONLY_IPVS)),
        None => Err(invalid("mode", "unset (iptables)", ONLY_IPVS)),
    }
}

impl RawIpvs {
    fn resolve(self, defaults: &IpvsSettings) -> Result<IpvsSettings, ConfigError> {
        let scheduler = match self.scheduler.as_deref() {
            None | Some("") => defaults.scheduler.clone(),
            Some(name) if SCHEDULERS.contains(&name) => name.to_string(),
            Some(name) => {
                return Err(invalid(
                    "ipvs.scheduler",
                    name,
                    &format!("one of {}", SCHEDULERS.join(", ")),
                ));
            }
        };
        let sync_period =
            duration_field("ipvs.syncPeriod", &self.sync_period, defaults.sync_period)?;
        // kube-proxy's defaulting treats a zero period as unset.
        let sync_period = if sync_period.is_zero() {
            defaults.sync_period
        } else {
            sync_period
        };
        let min_sync_period = duration_field(
            "ipvs.minSyncPeriod",
            &self.min_sync_period,
            defaults.min_sync_period,
        )?;
        if min_sync_period > sync_period {
            return Err(invalid(
                "ipvs.minSyncPeriod",
                self.min_sync_period.unwrap_or_default(),
                "a duration not greater than ipvs.syncPeriod",
            ));
        }
        let exclude_cidrs = self
            .exclude_cidrs
            .unwrap_or_default()
            .iter()
            .map(|text| cidr_field("ipvs.excludeCIDRs", text))
            .collect::<Result<_, _>>()?;
        Ok(IpvsSettings {
            scheduler,
            sync_period,
            min_sync_period,
            strict_arp: self.strict_arp.unwrap_or(false),
            exclude_cidrs,
            tcp_timeout: duration_field("ipvs.tcpTimeout", &self.tcp_timeout, Duration::ZERO)?,
            tcp_fin_timeout: duration_field(
                "ipvs.tcpFinTimeout",
                &self.tcp_fin_timeout,
                Duration::ZERO,
            )?,
            udp_timeout: duration_field("ipvs.udpTimeout", &self.udp_timeout, Duration::ZERO)?,
        })
    }
}

impl RawIptables {
    fn resolve(self) -> Result<IptablesSettings, ConfigError> {
        let masquerade_bit = match self.masquerade_bit {
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
        Ok(IptablesSettings {
            masquerade_all: self.masquerade_all.unwrap_or(false),
            masquerade_bit,
        })
    }
}

impl RawConntrack {
    fn resolve(self, defaults: &ConntrackSettings) -> Result<ConntrackSettings, ConfigError> {
        let count = |field: &str, value: Option<i64>, default: u32| match value {
            None => Ok(default),
            Some(n) if (0..=i64::from(u32::MAX)).contains(&n) => Ok(n as u32),
            Some(n) => Err(invalid(field, n, "an integer from 0 to 4294967295")),
        };
        // Zero leaves the kernel's value alone, as in kube-proxy.
        let optional_duration =
            |field: &str, value: &Option<String>, default: Option<Duration>| match value {
                None => Ok(default),
                Some(_) => duration_field(field, value, Duration::ZERO)
                    .map(|d| if d.is_zero() { None } else { Some(d) }),
            };
        Ok(ConntrackSettings {
            max_per_core: count(
                "conntrack.maxPerCore",
                self.max_per_core,
                defaults.max_per_core,
            )?,
            min: count("conntrack.min", self.min, defaults.min)?,
            tcp_established_timeout: optional_duration(
                "conntrack.tcpEstablishedTimeout",
                &self.tcp_established_timeout,
                defaults.tcp_established_timeout,
            )?,
            tcp_close_wait_timeout: optional_duration(
                "conntrack.tcpCloseWaitTimeout",
                &self.tcp_close_wait_timeout,
                defaults.tcp_close_wait_timeout,
            )?,
            tcp_be_liberal: self.tcp_be_liberal.unwrap_or(false),
            udp_timeout: optional_duration("conntrack.udpTimeout", &self.udp_timeout, None)?,
            udp_stream_timeout: optional_duration(
                "conntrack.udpStreamTimeout",
                &self.udp_stream_timeout,
                None,
            )?,
        })
    }
}

/// `clusterCIDR`: one CIDR, or a dual-stack pair separated by a comma (kube-proxy's
/// validation).
fn cluster_cidrs(text: Option<&str>) -> Result<Vec<IpNet>, ConfigError> {
    let text = text.unwrap_or_default();
    let cidrs: Vec<IpNet> = text
        .split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| cidr_field("clusterCIDR", part))
        .collect::<Result<_, _>>()?;
    let dual_stack_pair = |a: &IpNet, b: &IpNet| a.addr().is_ipv4() != b.addr().is_ipv4();
    match cidrs.as_slice() {
        [] | [_] => Ok(cidrs),
        [a, b] if dual_stack_pair(a, b) => Ok(cidrs),
        _ => Err(invalid(
            "clusterCIDR",
            text,
            "one CIDR, or an IPv4 and an IPv6 CIDR separated by a comma",
        )),
    }
}

/// `detectLocalMode` with its `detectLocal` settings.
fn detect_local(
    mode: Option<&str>,
    raw: &RawDetectLocal,
    cluster_cidrs: &[IpNet],
    warnings: &mut Vec<String>,
) -> Result<DetectLocal, ConfigError> {
    let explicit_cluster_cidr = mode == Some("ClusterCIDR");
    let bridge = raw.bridge_interface.as_deref().unwrap_or_default();
    let prefix = raw.interface_name_prefix.as_deref().unwrap_or_default();
    let detect = match mode.unwrap_or_default() {
        // kube-proxy's default.
        "" | "ClusterCIDR" => DetectLocal::ClusterCidr,
        "NodeCIDR" => DetectLocal::NodeCidr,
        "BridgeInterface" => DetectLocal::BridgeInterface(interface_field(
            "detectLocal.bridgeInterface",
            bridge,
            15,
        )?),
        "InterfaceNamePrefix" => DetectLocal::InterfaceNamePrefix(interface_field(
            "detectLocal.interfaceNamePrefix",
            prefix,
            // iptables appends "+", which must still fit in an interface name.
            14,
        )?),
        other => return Err(invalid("detectLocalMode", other, DETECT_LOCAL_MODES)),
    };
    let mode = detect.mode_name();
    let mut unused = |field: &str, set: bool| {
        if set {
            warnings.push(format!(
                "KubeProxyConfiguration: {field} is ignored: detectLocalMode is {mode}"
            ));
        }
    };
    unused(
        "detectLocal.bridgeInterface",
        !bridge.is_empty() && !matches!(detect, DetectLocal::BridgeInterface(_)),
    );
    unused(
        "detectLocal.interfaceNamePrefix",
        !prefix.is_empty() && !matches!(detect, DetectLocal::InterfaceNamePrefix(_)),
    );
    // IPVS mode reads clusterCIDR for nothing but local-traffic detection.
    unused(
        "clusterCIDR",
        !cluster_cidrs.is_empty() && detect != DetectLocal::ClusterCidr,
    );
    // Left unset, the mode is kube-proxy's default and an empty clusterCIDR asks for
    // nothing; asked for by name, it would silently detect nothing.
    if explicit_cluster_cidr && cluster_cidrs.is_empty() {
        warnings.push(
            "KubeProxyConfiguration: detectLocalMode ClusterCIDR without clusterCIDR: traffic \
             from pods is not told apart, only node traffic with a service address as source \
             is masqueraded"
                .to_string(),
        );
    }
    Ok(detect)
}

/// An interface name for `-i`: `max` characters at most, and nothing iptables would
/// take for syntax.
fn interface_field(field: &str, name: &str, max: usize) -> Result<String, ConfigError> {
    let bad = |c: char| c.is_whitespace() || matches!(c, '/' | '"' | '+' | '!' | '\'');
    if name.is_empty() || name.len() > max || name.chars().any(bad) {
        return Err(invalid(
            field,
            name,
            &format!(
                "an interface name of 1 to {max} characters without whitespace, quotes, \
                 '/', '+' or '!' (required by this detectLocalMode)"
            ),
        ));
    }
    Ok(name.to_string())
}

/// `nodePortAddresses`: CIDRs and the keywords `primary` and `all`.
fn node_port_addresses(list: Option<Vec<String>>) -> Result<NodePortAddresses, ConfigError> {
    let list = match list {
        None => return Ok(NodePortAddresses::All),
        Some(list) if list.is_empty() => return Ok(NodePortAddresses::All),
        Some(list) => list,
    };
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
    Ok(if all {
        NodePortAddresses::All
    } else {
        NodePortAddresses::Filtered { cidrs, primary }
    })
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
