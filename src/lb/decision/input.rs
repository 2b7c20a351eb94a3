//! Compact projections of the objects the decision reads: only what it needs, so the
//! model can keep one per object and compare them cheaply.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::lb::LbService;
use crate::lb::service::{ALLOW_SHARED_IP, ANNOTATION_PREFIX, OLD_ANNOTATION_PREFIX};
use crate::model::ServiceKey;

/// The label that keeps a node out of every load balancer (MetalLB honours it unless
/// told to ignore it).
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// A LoadBalancer Service as the decision reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInput {
    /// Namespace and name (namespace `default` when unset, as its slices name it).
    pub key: ServiceKey,
    /// Its labels, for the advertisements' `serviceSelectors`.
    pub labels: BTreeMap<String, String>,
    /// `externalTrafficPolicy: Local`.
    pub local: bool,
    /// It carries an `allow-shared-ip` annotation (any value, even empty: MetalLB
    /// only looks for the key).
    pub shared: bool,
    /// `status.loadBalancer.ingress[].ip`, in order.
    pub ips: Vec<IpAddr>,
    /// An ingress entry that is not an address: MetalLB then announces none of the
    /// Service's addresses, and neither do we.
    pub bad_ingress: Option<String>,
}

impl ServiceInput {
    /// The projection of a Service; `None` when it is not a LoadBalancer Service of
    /// ours (`our_class`, as [`LbService::from_service`] decides) or holds no
    /// ingress address yet.
    pub fn from_service(service: &Service, our_class: Option<&str>) -> Option<ServiceInput> {
        // A Service whose MetalLB annotations are malformed still holds the addresses
        // it was given; the speaker announces them (the allocator reports the
        // annotations), so only the class and type decide here.
        let (labels, local) = match LbService::from_service(service, our_class)? {
            Ok(lb) => (lb.labels, lb.local_traffic_policy),
            Err(_) => (
                service.metadata.labels.clone().unwrap_or_default(),
                service
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.external_traffic_policy.as_deref())
                    == Some("Local"),
            ),
        };
        let ingress = service
            .status
            .as_ref()
            .and_then(|status| status.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_deref())
            .unwrap_or_default();
        if ingress.is_empty() {
            return None;
        }
        let mut ips = Vec::with_capacity(ingress.len());
        let mut bad_ingress = None;
        for entry in ingress {
            match entry.ip.as_deref().map(str::parse::<IpAddr>) {
                Some(Ok(ip)) => ips.push(ip),
                _ if bad_ingress.is_none() => {
                    bad_ingress = Some(format!(
                        "status.loadBalancer.ingress holds {:?}, not an IP address",
                        entry
                            .ip
                            .as_deref()
                            .or(entry.hostname.as_deref())
                            .unwrap_or("")
                    ));
                }
                _ => {}
            }
        }
        let annotations = service.metadata.annotations.as_ref();
        let shared = annotations.is_some_and(|annotations| {
            annotations.contains_key(&format!("{ANNOTATION_PREFIX}{ALLOW_SHARED_IP}"))
                || annotations.contains_key(&format!("{OLD_ANNOTATION_PREFIX}{ALLOW_SHARED_IP}"))
        });
        Some(ServiceInput {
            key: ServiceKey::of_service(service),
            labels,
            local,
            shared,
            ips,
            bad_ingress,
        })
    }
}

/// An EndpointSlice as the decision reads it: which nodes have an endpoint that can
/// take traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SliceInput {
    /// An endpoint can take traffic: `ready` unset or true, or `serving` true
    /// (MetalLB's rule, so a terminating endpoint that still serves counts).
    pub serving: bool,
    /// The nodes of such endpoints.
    pub nodes: BTreeSet<Arc<str>>,
}

impl SliceInput {
    /// The projection of a slice and the Service it belongs to (`None` for a slice
    /// without the `kubernetes.io/service-name` label).
    pub fn from_slice(slice: &EndpointSlice) -> Option<(ServiceKey, SliceInput)> {
        let owner = ServiceKey::of_slice(slice)?;
        let mut input = SliceInput::default();
        for node in serving_endpoints(slice) {
            input.serving = true;
            if let Some(node) = node {
                input.nodes.insert(Arc::from(node));
            }
        }
        Some((owner, input))
    }
}

/// The node of each endpoint of `slice` that can take traffic (`None`: the endpoint
/// names none).
fn serving_endpoints(slice: &EndpointSlice) -> impl Iterator<Item = Option<&str>> {
    slice.endpoints.iter().flatten().filter_map(|endpoint| {
        // The API server refuses endpoints without addresses; MetalLB's BGP side
        // skips them too.
        if endpoint.addresses.is_empty() {
            return None;
        }
        let conditions = endpoint.conditions.as_ref();
        let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
        let serving = conditions.and_then(|c| c.serving).unwrap_or(false);
        (ready || serving).then_some(endpoint.node_name.as_deref())
    })
}

/// What [`super::AnnounceModel`] keeps of a slice that has an endpoint able to take
/// traffic (one that has none counts as absent, so being kept means `serving`): the
/// nodes of such endpoints, sorted, without repeats, each name taken from `intern` so
/// that every slice naming a node shares one copy of its name.
pub(super) fn kept_nodes(
    slice: &EndpointSlice,
    mut intern: impl FnMut(&str) -> Arc<str>,
) -> Option<Box<[Arc<str>]>> {
    let mut serving = false;
    let mut names: Vec<&str> = Vec::new();
    for node in serving_endpoints(slice) {
        serving = true;
        names.extend(node);
    }
    if !serving {
        return None;
    }
    names.sort_unstable();
    names.dedup();
    Some(names.into_iter().map(&mut intern).collect())
}

/// A Node as the decision reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInput {
    /// Its labels (advertisement, preference and peer node selectors).
    pub labels: BTreeMap<String, String>,
    /// Its `NetworkUnavailable` condition is `True`.
    pub network_unavailable: bool,
    /// It carries [`EXCLUDE_LABEL`].
    pub excluded: bool,
}

impl NodeInput {
    /// The projection of a Node and its name.
    pub fn from_node(node: &Node) -> (String, NodeInput) {
        let labels = node.metadata.labels.clone().unwrap_or_default();
        let network_unavailable = node
            .status
            .as_ref()
            .and_then(|status| status.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|condition| condition.type_ == "NetworkUnavailable" && condition.status == "True");
        let excluded = labels.contains_key(EXCLUDE_LABEL);
        (
            node.metadata.name.clone().unwrap_or_default(),
            NodeInput {
                labels,
                network_unavailable,
                excluded,
            },
        )
    }
}

/// A Service's endpoints, all slices together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Endpoints {
    /// An endpoint can take traffic.
    pub(super) serving: bool,
    /// The nodes of such endpoints.
    pub(super) nodes: BTreeSet<Arc<str>>,
}

impl Endpoints {
    pub(super) fn of<'a>(slices: impl IntoIterator<Item = &'a SliceInput>) -> Endpoints {
        let mut endpoints = Endpoints::default();
        for slice in slices {
            endpoints.serving |= slice.serving;
            endpoints.nodes.extend(slice.nodes.iter().cloned());
        }
        endpoints
    }

    /// The endpoints of the slices [`kept_nodes`] kept (each has one that can take
    /// traffic).
    pub(super) fn of_kept<'a>(slices: impl IntoIterator<Item = &'a [Arc<str>]>) -> Endpoints {
        let mut endpoints = Endpoints::default();
        for nodes in slices {
            endpoints.serving = true;
            endpoints.nodes.extend(nodes.iter().cloned());
        }
        endpoints
    }
}
