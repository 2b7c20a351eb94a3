//! A LoadBalancer Service as the IPAM and the announcers see it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;

use crate::model::ServiceKey;

/// MetalLB's annotation prefix.
pub const ANNOTATION_PREFIX: &str = "metallb.io/";
/// The prefix MetalLB used before 0.14, still accepted.
pub const OLD_ANNOTATION_PREFIX: &str = "metallb.universe.tf/";
/// Requested addresses, comma-separated.
pub const LOAD_BALANCER_IPS: &str = "loadBalancerIPs";
/// The pool to allocate from.
pub const ADDRESS_POOL: &str = "address-pool";
/// The sharing key.
pub const ALLOW_SHARED_IP: &str = "allow-shared-ip";
/// Written by the allocator: the pool the address came from.
pub const ALLOCATED_FROM_POOL: &str = "ip-allocated-from-pool";

/// One port of the Service, for the sharing rule (two Services sharing an address
/// must not use the same protocol and port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServicePort {
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: &'static str,
    /// The port.
    pub port: u16,
}

/// What a `type: LoadBalancer` Service asks for and holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbService {
    /// Namespace and name.
    pub key: ServiceKey,
    /// `metadata.uid`, for the Events regarding it (`kubectl describe` matches on it).
    pub uid: Option<String>,
    /// `metadata.creationTimestamp`: the IPAM serves older Services first when
    /// addresses are scarce, so who wins does not depend on the order objects arrive in.
    pub created: Option<Timestamp>,
    /// Its labels (for `serviceSelectors`).
    pub labels: BTreeMap<String, String>,
    /// `spec.loadBalancerClass`.
    pub load_balancer_class: Option<String>,
    /// Addresses asked for: `metallb.io/loadBalancerIPs` or `spec.loadBalancerIP`.
    pub requested_ips: Vec<IpAddr>,
    /// `metallb.io/address-pool`.
    pub requested_pool: Option<String>,
    /// `metallb.io/allow-shared-ip`.
    pub sharing_key: Option<String>,
    /// `metallb.io/ip-allocated-from-pool`, as last written.
    pub allocated_from_pool: Option<String>,
    /// The families the Service wants, in order (`spec.ipFamilies`; IPv4 when unset).
    pub families: Vec<crate::model::Family>,
    /// Whether it wants every family of `families` (`RequireDualStack`,
    /// `PreferDualStack`) or only the first.
    pub dual_stack: bool,
    /// `RequireDualStack` (with two families): an address of each family or none;
    /// `PreferDualStack` takes what it can.
    pub require_dual_stack: bool,
    /// Its ports.
    pub ports: Vec<ServicePort>,
    /// `externalTrafficPolicy: Local`.
    pub local_traffic_policy: bool,
    /// MetalLB's backend key for sharing: the selector when the traffic policy is
    /// Local (only Services with the same pods may share an address then), else empty.
    pub backend_key: String,
    /// The addresses it holds (`status.loadBalancer.ingress[].ip`), in order.
    pub ingress_ips: Vec<IpAddr>,
}

/// Why a LoadBalancer Service's request cannot be read. Reported as an Event on the
/// Service; the Service keeps whatever it holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LbServiceError {
    /// An entry of `metallb.io/loadBalancerIPs` is not an address.
    #[error(
        "annotation {annotation}: {value:?} is not an IP address; give comma-separated addresses"
    )]
    BadRequestedIp {
        /// The annotation's full name.
        annotation: String,
        /// The entry.
        value: String,
    },
    /// `spec.loadBalancerIP` is not an address.
    #[error("spec.loadBalancerIP: {0:?} is not an IP address")]
    BadLoadBalancerIp(String),
    /// Both the annotation and `spec.loadBalancerIP` are set.
    #[error(
        "both spec.loadBalancerIP and the annotation {0} are set; keep only the annotation (spec.loadBalancerIP is deprecated)"
    )]
    ConflictingRequests(String),
    /// More requested addresses than the Service has families, or two of one family.
    #[error(
        "requested addresses {0} do not match the Service's IP families (one address per family in spec.ipFamilies)"
    )]
    FamilyMismatch(String),
}

impl LbService {
    /// Reads a Service. `None` when it is not `type: LoadBalancer` or belongs to
    /// another load balancer (`spec.loadBalancerClass` other than `our_class`; with no
    /// class configured, only Services without a class are ours, as MetalLB does).
    pub fn from_service(
        service: &Service,
        our_class: Option<&str>,
    ) -> Option<Result<LbService, LbServiceError>> {
        let spec = service.spec.as_ref()?;
        if spec.type_.as_deref() != Some("LoadBalancer") {
            return None;
        }
        let class = spec.load_balancer_class.as_deref();
        if class != our_class {
            return None;
        }
        Some(Self::read(service))
    }

    fn read(service: &Service) -> Result<LbService, LbServiceError> {
        use crate::model::Family;
        let metadata = &service.metadata;
        let spec = service.spec.clone().unwrap_or_default();
        let annotations = metadata.annotations.clone().unwrap_or_default();
        let annotation = |name: &str| {
            annotations
                .get(&format!("{ANNOTATION_PREFIX}{name}"))
                .map(|value| {
                    (
                        format!("{ANNOTATION_PREFIX}{name}"),
                        value.trim().to_string(),
                    )
                })
                .or_else(|| {
                    annotations
                        .get(&format!("{OLD_ANNOTATION_PREFIX}{name}"))
                        .map(|value| {
                            (
                                format!("{OLD_ANNOTATION_PREFIX}{name}"),
                                value.trim().to_string(),
                            )
                        })
                })
                .filter(|(_, value)| !value.is_empty())
        };

        let families: Vec<Family> = match spec.ip_families.as_deref() {
            Some(families) if !families.is_empty() => families
                .iter()
                .map(|family| {
                    if family == "IPv6" {
                        Family::V6
                    } else {
                        Family::V4
                    }
                })
                .collect(),
            _ => match spec
                .cluster_ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok())
            {
                Some(IpAddr::V6(_)) => vec![Family::V6],
                _ => vec![Family::V4],
            },
        };
        let dual_stack = matches!(
            spec.ip_family_policy.as_deref(),
            Some("RequireDualStack" | "PreferDualStack")
        ) && families.len() > 1;
        let require_dual_stack =
            dual_stack && spec.ip_family_policy.as_deref() == Some("RequireDualStack");

        let mut requested_ips = Vec::new();
        let legacy_ip = spec
            .load_balancer_ip
            .as_deref()
            .map(str::trim)
            .filter(|ip| !ip.is_empty());
        if let Some((name, value)) = annotation(LOAD_BALANCER_IPS) {
            if legacy_ip.is_some() {
                return Err(LbServiceError::ConflictingRequests(name));
            }
            for entry in value
                .split(',')
                .map(str::trim)
                .filter(|entry| !entry.is_empty())
            {
                requested_ips.push(entry.parse::<IpAddr>().map_err(|_| {
                    LbServiceError::BadRequestedIp {
                        annotation: name.clone(),
                        value: entry.to_string(),
                    }
                })?);
            }
        } else if let Some(ip) = legacy_ip {
            requested_ips.push(
                ip.parse::<IpAddr>()
                    .map_err(|_| LbServiceError::BadLoadBalancerIp(ip.to_string()))?,
            );
        }
        let v4 = requested_ips.iter().filter(|ip| ip.is_ipv4()).count();
        let v6 = requested_ips.len() - v4;
        let wanted = |family: Family| {
            families.first() == Some(&family) || (dual_stack && families.contains(&family))
        };
        if v4 > 1 || v6 > 1 || (v4 == 1 && !wanted(Family::V4)) || (v6 == 1 && !wanted(Family::V6))
        {
            let list: Vec<String> = requested_ips.iter().map(IpAddr::to_string).collect();
            return Err(LbServiceError::FamilyMismatch(list.join(",")));
        }

        let ports = spec
            .ports
            .iter()
            .flatten()
            .map(|port| ServicePort {
                protocol: match port.protocol.as_deref() {
                    Some("UDP") => "UDP",
                    Some("SCTP") => "SCTP",
                    _ => "TCP",
                },
                port: u16::try_from(port.port).unwrap_or(0),
            })
            .collect();
        let local_traffic_policy = spec.external_traffic_policy.as_deref() == Some("Local");
        let backend_key = if local_traffic_policy {
            // The selector in a canonical form (sorted pairs), so two Services with the
            // same pods have the same key.
            spec.selector
                .iter()
                .flatten()
                .map(|(key, value)| format!("{key}={value}"))
                .collect::<Vec<_>>()
                .join(",")
        } else {
            String::new()
        };
        let ingress_ips = ingress_ips(service);

        Ok(LbService {
            // As the model keys Services (no namespace: `default`, as in a manifest
            // applied without one), so the IPAM's and the model's keys agree.
            key: ServiceKey::of_service(service),
            uid: metadata.uid.clone(),
            created: metadata.creation_timestamp.as_ref().map(|time| time.0),
            labels: metadata.labels.clone().unwrap_or_default(),
            load_balancer_class: spec.load_balancer_class.clone(),
            requested_ips,
            requested_pool: annotation(ADDRESS_POOL).map(|(_, value)| value),
            sharing_key: annotation(ALLOW_SHARED_IP).map(|(_, value)| value),
            allocated_from_pool: annotation(ALLOCATED_FROM_POOL).map(|(_, value)| value),
            families,
            dual_stack,
            require_dual_stack,
            ports,
            local_traffic_policy,
            backend_key,
            ingress_ips,
        })
    }
}

/// The addresses a Service holds: `status.loadBalancer.ingress[].ip`, in order
/// (entries without an address, or with one that does not parse, are skipped).
/// Readable even when [`LbService::from_service`] refuses the Service's requests, so
/// the IPAM can keep those addresses reserved.
pub fn ingress_ips(service: &Service) -> Vec<IpAddr> {
    crate::model::input::ingress_entries(service)
        .filter_map(|ingress| ingress.ip.as_deref()?.trim().parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(spec: serde_json::Value, annotations: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"namespace": "shop", "name": "web", "annotations": annotations},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn reads_requests_from_either_annotation_prefix() {
        let lb = LbService::from_service(
            &service(
                json!({"type": "LoadBalancer", "ipFamilies": ["IPv4", "IPv6"],
                       "ipFamilyPolicy": "RequireDualStack",
                       "ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}),
                json!({"metallb.universe.tf/loadBalancerIPs": "10.0.0.5, fd00::5",
                       "metallb.io/allow-shared-ip": "k"}),
            ),
            None,
        )
        .unwrap()
        .unwrap();
        assert_eq!(lb.requested_ips.len(), 2);
        assert_eq!(lb.sharing_key.as_deref(), Some("k"));
        assert!(lb.dual_stack);
        assert_eq!(
            lb.ports[1],
            ServicePort {
                protocol: "UDP",
                port: 53
            }
        );
    }

    #[test]
    fn other_classes_and_types_are_not_ours() {
        let lb = json!({"type": "LoadBalancer", "loadBalancerClass": "other"});
        assert!(LbService::from_service(&service(lb.clone(), json!({})), None).is_none());
        assert!(LbService::from_service(&service(lb, json!({})), Some("other")).is_some());
        let cluster_ip = json!({"type": "ClusterIP"});
        assert!(LbService::from_service(&service(cluster_ip, json!({})), None).is_none());
    }

    #[test]
    fn bad_requests_are_errors_naming_the_field() {
        let bad = |spec, annotations| {
            LbService::from_service(&service(spec, annotations), None)
                .unwrap()
                .unwrap_err()
        };
        let error = bad(
            json!({"type": "LoadBalancer"}),
            json!({"metallb.io/loadBalancerIPs": "10.0.0.1,ten"}),
        );
        assert!(
            error.to_string().contains("\"ten\" is not an IP address"),
            "{error}"
        );
        let error = bad(
            json!({"type": "LoadBalancer", "loadBalancerIP": "10.0.0.1"}),
            json!({"metallb.io/loadBalancerIPs": "10.0.0.2"}),
        );
        assert!(matches!(error, LbServiceError::ConflictingRequests(_)));
        let error = bad(
            json!({"type": "LoadBalancer"}),
            json!({"metallb.io/loadBalancerIPs": "fd00::1"}),
        );
        assert!(matches!(error, LbServiceError::FamilyMismatch(_)));
    }
}
