//! ipvs-proxy's own document, `ipvs-proxy.io/v1alpha1` `IpvsProxyConfiguration`: the
//! settings kube-proxy has no field for.

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
        };
        Ok(Extensions {
            max_drain,
            load_balancer,
        })
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
