//! ipvs-proxy's own document, `ipvs-proxy.io/v1alpha1` `IpvsProxyConfiguration`: the
//! settings kube-proxy has no field for.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::documents::Unsupported;
use super::{ConfigError, invalid};

/// ipvs-proxy's own settings (`IpvsProxyConfiguration`), resolved with defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extensions {
    /// The longest a removed TCP real server is kept at weight 0 while it still has
    /// connections (kube-proxy has no bound). Default 15 minutes.
    pub max_drain: Duration,
    /// `loadBalancer`: LoadBalancer Services, MetalLB's way.
    pub load_balancer: LoadBalancerSettings,
}

impl Default for Extensions {
    fn default() -> Self {
        Self {
            max_drain: Duration::from_secs(15 * 60),
            load_balancer: LoadBalancerSettings::default(),
        }
    }
}

/// `IpvsProxyConfiguration.loadBalancer`: where MetalLB's objects are and which
/// Services are ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancerSettings {
    /// `enabled` (default true): read MetalLB's objects, allocate and announce. With
    /// no MetalLB objects in the namespace nothing is allocated or announced anyway.
    pub enabled: bool,
    /// `metallbNamespace` (default `metallb-system`): where the MetalLB objects (and the
    /// legacy `config` ConfigMap and BGP password Secrets) are read.
    pub metallb_namespace: String,
    /// `loadBalancerClass`: the `spec.loadBalancerClass` of the Services we serve;
    /// unset (the default) means Services without a class, as MetalLB's default.
    pub load_balancer_class: Option<String>,
    /// `ipam` (default true): run the address allocator (one active in the cluster).
    pub ipam: bool,
    /// `ipamLeaseName` (default `ipvs-proxy-ipam`): the Lease electing the allocator.
    pub ipam_lease_name: String,
    /// `ipamLeaseNamespace` (default `kube-system`, where the DaemonSet runs): the
    /// Lease's namespace, so the agent needs no write access to MetalLB's.
    pub ipam_lease_namespace: String,
    /// `membership`: liveness among the agents for the layer-2 owner election.
    pub membership: MembershipSettings,
    /// `bgp`: the BGP speaker.
    pub bgp: BgpSettings,
}

/// `IpvsProxyConfiguration.loadBalancer.membership`: SWIM among the agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipSettings {
    /// `port` (default 7947, UDP): every agent's membership port.
    pub port: u16,
    /// `keyFile` (default `/etc/ipvs-proxy/membership/key`): the shared key, a Secret
    /// mounted as a file. Without it there is no membership: the layer-2 election runs
    /// over the Ready Nodes only (failover then waits for the Node to turn NotReady).
    pub key_file: PathBuf,
}

impl Default for MembershipSettings {
    fn default() -> Self {
        Self {
            port: 7947,
            key_file: PathBuf::from("/etc/ipvs-proxy/membership/key"),
        }
    }
}

/// `IpvsProxyConfiguration.loadBalancer.bgp`: the BGP speaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpSettings {
    /// `restartMarker` (default `/run/ipvs-proxy/bgp-speaker.running`): the file telling
    /// a restarted agent that it restarts (graceful restart's R bit); it must outlive
    /// the container (a hostPath), not the node.
    pub restart_marker: PathBuf,
}

impl Default for BgpSettings {
    fn default() -> Self {
        Self {
            restart_marker: PathBuf::from("/run/ipvs-proxy/bgp-speaker.running"),
        }
    }
}

impl Default for LoadBalancerSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            metallb_namespace: "metallb-system".into(),
            load_balancer_class: None,
            ipam: true,
            ipam_lease_name: "ipvs-proxy-ipam".into(),
            ipam_lease_namespace: "kube-system".into(),
            membership: MembershipSettings::default(),
            bgp: BgpSettings::default(),
        }
    }
}

/// Fields of the document that are reserved for features not built yet.
pub(super) const UNSUPPORTED: &[Unsupported] = &[Unsupported {
    path: "announcer",
    why: " (announcing LoadBalancer IPs comes in a later version)",
}];

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawExtensions {
    max_drain_seconds: Option<i64>,
    load_balancer: Option<RawLoadBalancer>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLoadBalancer {
    enabled: Option<bool>,
    metallb_namespace: Option<String>,
    load_balancer_class: Option<String>,
    ipam: Option<bool>,
    ipam_lease_name: Option<String>,
    ipam_lease_namespace: Option<String>,
    membership: Option<RawMembership>,
    bgp: Option<RawBgp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMembership {
    port: Option<i64>,
    key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBgp {
    restart_marker: Option<String>,
}

impl RawExtensions {
    pub(super) fn resolve(self) -> Result<Extensions, ConfigError> {
        let max_drain = match self.max_drain_seconds {
            None => Extensions::default().max_drain,
            Some(seconds @ 1..) => Duration::from_secs(seconds as u64),
            Some(seconds) => {
                return Err(invalid(
                    "IpvsProxyConfiguration.maxDrainSeconds",
                    seconds,
                    "a whole number of seconds greater than 0",
                ));
            }
        };
        let defaults = LoadBalancerSettings::default();
        let raw = self.load_balancer.unwrap_or_default();
        let name_field = |field: &str, value: Option<String>, default: String| match value {
            None => Ok(default),
            Some(value) if is_dns_label(&value) => Ok(value),
            Some(value) => Err(invalid(
                &format!("IpvsProxyConfiguration.loadBalancer.{field}"),
                format!("{value:?}"),
                "a DNS label (lower-case letters, digits and '-', at most 63)",
            )),
        };
        let load_balancer = LoadBalancerSettings {
            enabled: raw.enabled.unwrap_or(defaults.enabled),
            metallb_namespace: name_field(
                "metallbNamespace",
                raw.metallb_namespace,
                defaults.metallb_namespace,
            )?,
            load_balancer_class: raw.load_balancer_class.filter(|class| !class.is_empty()),
            ipam: raw.ipam.unwrap_or(defaults.ipam),
            ipam_lease_name: name_field(
                "ipamLeaseName",
                raw.ipam_lease_name,
                defaults.ipam_lease_name,
            )?,
            ipam_lease_namespace: name_field(
                "ipamLeaseNamespace",
                raw.ipam_lease_namespace,
                defaults.ipam_lease_namespace,
            )?,
            membership: raw.membership.unwrap_or_default().resolve()?,
            bgp: raw.bgp.unwrap_or_default().resolve()?,
        };
        Ok(Extensions {
            max_drain,
            load_balancer,
        })
    }
}

impl RawMembership {
    fn resolve(self) -> Result<MembershipSettings, ConfigError> {
        let defaults = MembershipSettings::default();
        let port = match self.port {
            None => defaults.port,
            Some(port @ 1..=65535) => port as u16,
            Some(port) => {
                return Err(invalid(
                    "IpvsProxyConfiguration.loadBalancer.membership.port",
                    port,
                    "a UDP port from 1 to 65535",
                ));
            }
        };
        Ok(MembershipSettings {
            port,
            key_file: absolute_path(
                "IpvsProxyConfiguration.loadBalancer.membership.keyFile",
                self.key_file,
                defaults.key_file,
            )?,
        })
    }
}

impl RawBgp {
    fn resolve(self) -> Result<BgpSettings, ConfigError> {
        Ok(BgpSettings {
            restart_marker: absolute_path(
                "IpvsProxyConfiguration.loadBalancer.bgp.restartMarker",
                self.restart_marker,
                BgpSettings::default().restart_marker,
            )?,
        })
    }
}

fn absolute_path(
    field: &str,
    value: Option<String>,
    default: PathBuf,
) -> Result<PathBuf, ConfigError> {
    match value {
        None => Ok(default),
        Some(path) if path.starts_with('/') => Ok(PathBuf::from(path)),
        Some(path) => Err(invalid(field, format!("{path:?}"), "an absolute path")),
    }
}

fn is_dns_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}
