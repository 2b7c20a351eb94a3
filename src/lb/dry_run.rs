//! The dry run behind `ipvs-proxy plan`: what the agent would do with a directory of
//! exported objects, computed without the kernel or an API server.
//!
//! [`plan`] is a pure function of the loaded manifests and the agent's settings. It
//! runs the agent's own pieces in the agent's order, so its answer is the agent's:
//! MetalLB's objects through [`metallb_config::validate`], the Services through
//! [`StaticAllocator`] (a configuration, then a snapshot, exactly as the static
//! source feeds it), and the rewritten Services through the announce
//! [`decide`] function. The report lists the invalid objects by object and field,
//! each LoadBalancer Service's addresses and pool (or why it has none), per address
//! the layer-2 owner with the eligible nodes and interfaces, and per node and peer
//! the BGP routes with their communities and LOCAL_PREF.
//!
//! MetalLB's objects are read from the agent's `metallbNamespace` only (objects
//! without a namespace count as in it), as the Kubernetes source reads them: an
//! export of the whole cluster may hold other namespaces' objects, which the agent
//! would never see.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use metallb_config::{ConfigProblem, LbConfig, PeerAsn, Validated, validate};
use serde::Serialize;

use super::decision::{Decision, Inputs, Interfaces, ServiceDecision, decide};
use super::ipam::allocate::namespace_labels;
use super::service::{LbService, LbServiceError, ingress_ips};
use super::static_alloc::StaticAllocator;
use crate::model::ServiceKey;
use crate::source::SourceEvent;
use crate::source::static_dir::Manifests;

/// What the dry run needs besides the manifests: the agent's settings and the node
/// to look from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOptions {
    /// `loadBalancer.loadBalancerClass`: the class of the Services the agent serves
    /// (`None`: Services without a class).
    pub class: Option<String>,
    /// `loadBalancer.metallbNamespace`: where MetalLB's objects are read.
    pub metallb_namespace: String,
    /// Show only this node's announcements (allocations and problems stay whole).
    pub node: Option<String>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            class: None,
            metallb_namespace: metallb_config::DEFAULT_NAMESPACE.to_string(),
            node: None,
        }
    }
}

/// The dry run's answer. Serializes to the JSON of `ipvs-proxy plan --json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanReport {
    /// The node whose announcements are shown; `None`: every node.
    pub node: Option<String>,
    /// The class of the Services served (`None`: Services without a class).
    pub load_balancer_class: Option<String>,
    /// Where MetalLB's objects were read.
    pub metallb_namespace: String,
    /// No object is invalid and every document was read (the exit status is 0).
    pub valid: bool,
    /// Documents that could not be read at all (then nothing else is computed, as
    /// the agent keeps its previous state rather than load a broken directory).
    pub unreadable: Vec<String>,
    /// Invalid objects: MetalLB objects left out of the configuration, and Services
    /// whose LoadBalancer request cannot be read.
    pub problems: Vec<PlanProblem>,
    /// What is ignored or not acted on yet; none of it makes the run fail.
    pub warnings: Vec<String>,
    /// The valid address pools and how many of their addresses are handed out.
    pub pools: Vec<PoolPlan>,
    /// Every LoadBalancer Service of ours: its addresses, or why it has none.
    pub services: Vec<ServicePlan>,
    /// Per address an L2Advertisement selects: the owner, the eligible nodes, the
    /// interfaces, or why nobody owns it (with a node: only the addresses it owns
    /// and those nobody owns).
    pub layer2: Vec<L2Plan>,
    /// Per node, peer and route: what is sent over BGP (with a node: only its own).
    pub bgp: Vec<BgpRoutePlan>,
    /// Services holding addresses that some announcement leaves out, and why.
    pub not_announced: Vec<NotAnnounced>,
}

/// One invalid object or field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanProblem {
    /// The object's kind (`IPAddressPool`, `Service`, ...).
    pub kind: String,
    /// Its namespace (empty for the legacy ConfigMap's parts).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The field at fault (empty: the whole object).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl From<&ConfigProblem> for PlanProblem {
    fn from(problem: &ConfigProblem) -> Self {
        PlanProblem {
            kind: problem.kind.clone(),
            namespace: problem.namespace.clone(),
            name: problem.name.clone(),
            field: problem.field.clone(),
            message: problem.message.clone(),
        }
    }
}

/// A valid address pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolPlan {
    /// Its name.
    pub name: String,
    /// Its ranges: a CIDR when the range is one, else `first-last`.
    pub ranges: Vec<String>,
    /// Hands out addresses to Services that did not ask for it.
    pub auto_assign: bool,
    /// Skips addresses ending in `.0` and `.255`.
    pub avoid_buggy_ips: bool,
    /// How many of its addresses the Services hold after the allocation.
    pub in_use: usize,
}

/// What the allocation did with one Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AllocationOutcome {
    /// It keeps the addresses its manifest's status holds.
    Kept,
    /// It gets new addresses.
    Assigned,
    /// It gets no address.
    Refused,
    /// Its request cannot be read: it keeps what its status holds, untouched.
    Frozen,
    /// No IPAddressPool is configured: its manifest's addresses are used as written.
    AsWritten,
}

/// One LoadBalancer Service's addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServicePlan {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The addresses written to its `status.loadBalancer.ingress`.
    pub addresses: Vec<IpAddr>,
    /// The pool holding them, when one does.
    pub pool: Option<String>,
    /// What the allocation did.
    pub outcome: AllocationOutcome,
    /// Why it has no address, why it is frozen, or which addresses it lost and why.
    pub reason: Option<String>,
}

/// A layer-2 announced address of one Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct L2Plan {
    /// The address.
    pub ip: IpAddr,
    /// The Service holding it, `namespace/name`.
    pub service: String,
    /// Its pool.
    pub pool: Option<String>,
    /// The L2Advertisements selecting the Service.
    pub advertisements: Vec<String>,
    /// The node answering ARP/NDP for it (`None`: nobody, see `why`).
    pub owner: Option<String>,
    /// The eligible nodes in election order (the first is the owner).
    pub candidates: Vec<L2Candidate>,
    /// The owner's interfaces; `None` means every interface.
    pub interfaces: Option<Vec<String>>,
    /// Why no node announces it.
    pub why: Option<String>,
}

/// An eligible node in a layer-2 election.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct L2Candidate {
    /// The node.
    pub node: String,
    /// The sum of the matching `preferredNodeSelectors` weights.
    pub score: i64,
}

/// One route one node sends one peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpRoutePlan {
    /// The node.
    pub node: String,
    /// The BGPPeer (`None`: the node announces but has a session with none of the
    /// advertisement's peers).
    pub peer: Option<String>,
    /// The peer's address (or interface, for an unnumbered session).
    pub peer_address: Option<String>,
    /// The peer's AS (`internal`/`external` for a dynamic one).
    pub peer_asn: Option<String>,
    /// The announced prefix (the address masked to the aggregation length).
    #[serde(serialize_with = "as_text")]
    pub prefix: IpNet,
    /// Its communities.
    pub communities: Vec<String>,
    /// Its LOCAL_PREF, when sent (iBGP peers only).
    pub local_pref: Option<u32>,
    /// The BGPAdvertisements giving it.
    pub advertisements: Vec<String>,
    /// The Services whose addresses it covers, `namespace/name`.
    pub services: Vec<String>,
}

/// A Service whose addresses an announcement leaves out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotAnnounced {
    /// The Service, `namespace/name`.
    pub service: String,
    /// Its addresses.
    pub addresses: Vec<IpAddr>,
    /// Why layer 2 does not announce it, when no advertisement selects it at all
    /// (otherwise its [`L2Plan`] rows say why).
    pub layer2: Option<String>,
    /// Why BGP does not announce it, when a BGPAdvertisement selects it or no
    /// L2Advertisement does.
    pub bgp: Option<String>,
}

/// The dry run: what the agent would do with `manifests` (see the module
/// documentation).
pub fn plan(manifests: &Manifests, options: &PlanOptions) -> PlanReport {
    let mut report = PlanReport {
        node: options.node.clone(),
        load_balancer_class: options.class.clone(),
        metallb_namespace: options.metallb_namespace.clone(),
        warnings: manifests.warnings.clone(),
        ..PlanReport::default()
    };
    let class = options.class.as_deref();

    // MetalLB's configuration, as the agent validates it.
    let objects = manifests
        .cluster
        .metallb
        .in_namespace(&options.metallb_namespace, &mut report.warnings);
    let Validated {
        config,
        problems,
        unsupported,
    } = validate(&objects);
    report
        .problems
        .extend(problems.iter().map(PlanProblem::from));
    for field in &unsupported {
        report.warnings.push(format!(
            "{} {}: {} is accepted but not acted on yet: {}",
            field.kind, field.object, field.field, field.reason
        ));
    }

    // The Services: unreadable requests are problems; other classes are not ours.
    for service in &manifests.services {
        let key = ServiceKey::of_service(service);
        match LbService::from_service(service, class) {
            Some(Err(error)) => report.problems.push(service_problem(&key, &error)),
            Some(Ok(_)) => {}
            None => {
                if let Some(other) = foreign_class(service, class) {
                    report.warnings.push(format!(
                        "Service {key}: loadBalancerClass {other:?} is not ours ({}); left alone",
                        match class {
                            Some(class) => format!("ours: {class:?}"),
                            None => "ours: none".to_string(),
                        }
                    ));
                }
            }
        }
    }

    // The allocation, exactly as the static source's allocator writes it.
    let namespaces = namespace_labels(&manifests.cluster.namespaces);
    let mut allocator = StaticAllocator::new(options.class.clone());
    allocator.set_config(config.clone(), namespaces.clone());
    let services = allocator
        .on_event(SourceEvent::Snapshot {
            services: manifests.services.clone(),
            slices: Vec::new(),
        })
        .into_iter()
        .find_map(|event| match event {
            SourceEvent::Snapshot { services, .. } => Some(services),
            _ => None,
        })
        .unwrap_or_default();
    report.services = service_plans(&manifests.services, &config, &allocator, class);
    report.pools = config
        .pools
        .values()
        .map(|pool| PoolPlan {
            name: pool.name.clone(),
            ranges: pool.ranges.iter().map(range_text).collect(),
            auto_assign: pool.auto_assign,
            avoid_buggy_ips: pool.avoid_buggy_ips,
            in_use: report
                .services
                .iter()
                .flat_map(|service| &service.addresses)
                .filter(|ip| pool.contains(**ip))
                .collect::<BTreeSet<_>>()
                .len(),
        })
        .collect();

    // The announce decision over the Services as the allocator rewrote them.
    if let Some(node) = &options.node
        && !manifests
            .cluster
            .nodes
            .iter()
            .any(|known| known.metadata.name.as_deref() == Some(node.as_str()))
    {
        report.warnings.push(format!(
            "node {node:?} is not among the Nodes of the manifests: it announces nothing"
        ));
    }
    let decision = decide(&Inputs {
        services: &services,
        slices: &manifests.slices,
        nodes: &manifests.cluster.nodes,
        config: &config,
        node: options.node.as_deref().unwrap_or(""),
        live: None,
        class,
        ignore_exclude_label: false,
    });
    let node = options.node.as_deref();
    report.layer2 = layer2_plans(&decision, node);
    report.bgp = bgp_plans(&decision, &config, node);
    report.not_announced = decision
        .services
        .values()
        .filter_map(|service| not_announced(service))
        .collect();

    report.valid = report.unreadable.is_empty() && report.problems.is_empty();
    report
}

impl PlanReport {
    /// The report of a directory that could not be read: `errors` name the files and
    /// documents; nothing else is computed.
    pub fn unreadable(errors: Vec<String>, options: &PlanOptions) -> PlanReport {
        PlanReport {
            node: options.node.clone(),
            load_balancer_class: options.class.clone(),
            metallb_namespace: options.metallb_namespace.clone(),
            valid: false,
            unreadable: errors,
            ..PlanReport::default()
        }
    }
}

/// A Service of type LoadBalancer whose class is not `ours`: that class.
fn foreign_class(service: &Service, ours: Option<&str>) -> Option<String> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() != Some("LoadBalancer") {
        return None;
    }
    let class = spec.load_balancer_class.as_deref();
    (class != ours).then(|| class.unwrap_or("").to_string())
}

fn service_problem(key: &ServiceKey, error: &LbServiceError) -> PlanProblem {
    let field = match error {
        LbServiceError::BadRequestedIp { annotation, .. } => {
            format!("metadata.annotations[{annotation}]")
        }
        LbServiceError::BadLoadBalancerIp(_) | LbServiceError::ConflictingRequests(_) => {
            "spec.loadBalancerIP".to_string()
        }
        LbServiceError::FamilyMismatch(_) => "spec.ipFamilies".to_string(),
    };
    PlanProblem {
        kind: "Service".into(),
        namespace: key.namespace.to_string(),
        name: key.name.to_string(),
        field,
        message: error.to_string(),
    }
}

/// Each LoadBalancer Service of ours with its addresses as `allocator` wrote them.
/// The reasons (refusals, released addresses) come from the pure allocation run on
/// the very inputs the allocator's first round reads: the manifests' Services, their
/// own status as what is held, the unreadable ones frozen on it.
fn service_plans(
    manifests: &[Service],
    config: &LbConfig,
    allocator: &StaticAllocator,
    class: Option<&str>,
) -> Vec<ServicePlan> {
    let mut readable = Vec::new();
    let mut frozen: Vec<(ServiceKey, Vec<IpAddr>, String)> = Vec::new();
    for service in manifests {
        match LbService::from_service(service, class) {
            Some(Ok(lb)) => readable.push(lb),
            Some(Err(error)) => frozen.push((
                ServiceKey::of_service(service),
                ingress_ips(service),
                error.to_string(),
            )),
            None => {}
        }
    }
    let allocation = allocator.allocation();
    let active = allocator.is_active();
    let mut plans = Vec::new();
    for lb in &readable {
        let addresses = allocator
            .addresses(&lb.key)
            .map(<[IpAddr]>::to_vec)
            .unwrap_or_else(|| lb.ingress_ips.clone());
        let outcome = allocation.services.get(&lb.key);
        let (kind, reason) = match outcome {
            _ if !active => (AllocationOutcome::AsWritten, None),
            None => (AllocationOutcome::Refused, None),
            Some(outcome) => {
                let dropped = outcome.dropped.as_ref().map(|dropped| {
                    format!(
                        "released {}: {}",
                        super::ipam::IpList(dropped.ips.clone()),
                        dropped.reason
                    )
                });
                match &outcome.result {
                    Err(refusal) => (
                        AllocationOutcome::Refused,
                        Some(match dropped {
                            Some(dropped) => format!("{refusal}; {dropped}"),
                            None => refusal.to_string(),
                        }),
                    ),
                    Ok(_) if outcome.kept => (AllocationOutcome::Kept, dropped),
                    Ok(_) => (AllocationOutcome::Assigned, dropped),
                }
            }
        };
        plans.push(ServicePlan {
            namespace: lb.key.namespace.to_string(),
            name: lb.key.name.to_string(),
            pool: pool_of(config, &addresses),
            addresses,
            outcome: kind,
            reason,
        });
    }
    for (key, ips, error) in frozen {
        plans.push(ServicePlan {
            namespace: key.namespace.to_string(),
            name: key.name.to_string(),
            pool: pool_of(config, &ips),
            addresses: ips,
            outcome: AllocationOutcome::Frozen,
            reason: Some(format!(
                "request cannot be read ({error}); keeps what it holds"
            )),
        });
    }
    plans.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    plans
}

/// A range as an operator writes it: a CIDR when it is one, else `first-last`.
fn range_text(range: &metallb_config::IpRange) -> String {
    let max = if range.start.is_ipv4() { 32 } else { 128 };
    (0..=max)
        .filter_map(|length| IpNet::new(range.start, length).ok())
        .find(|net| net.network() == range.start && net.broadcast() == range.end)
        .map(|net| net.to_string())
        .unwrap_or_else(|| range.to_string())
}

/// The pool holding every one of `ips`.
fn pool_of(config: &LbConfig, ips: &[IpAddr]) -> Option<String> {
    let pool = config.pool_of(*ips.first()?)?;
    ips.iter()
        .all(|ip| pool.contains(*ip))
        .then(|| pool.name.clone())
}

fn layer2_plans(decision: &Decision, node: Option<&str>) -> Vec<L2Plan> {
    let mut plans = Vec::new();
    for service in decision.services.values() {
        let l2 = &service.l2;
        if l2.advertisements.is_empty() {
            continue;
        }
        let owner = l2.owner().map(str::to_string);
        // With a node: the addresses it owns, and those nobody owns (a cluster-wide
        // fact, like a problem).
        if node.is_some() && owner.is_some() && owner.as_deref() != node {
            continue;
        }
        for &ip in &service.ips {
            plans.push(L2Plan {
                ip,
                service: service.service.to_string(),
                pool: service.pool.clone(),
                advertisements: l2.advertisements.clone(),
                owner: owner.clone(),
                candidates: l2
                    .ranked
                    .iter()
                    .map(|candidate| L2Candidate {
                        node: candidate.node.to_string(),
                        score: candidate.score,
                    })
                    .collect(),
                interfaces: match &l2.interfaces {
                    Interfaces::All => None,
                    Interfaces::Only(names) => Some(names.iter().cloned().collect()),
                },
                why: l2.why.clone(),
            });
        }
    }
    plans.sort_by(|a, b| (a.ip, &a.service).cmp(&(b.ip, &b.service)));
    plans
}

/// The routes per node, peer and route, Services and advertisements merged as the
/// speaker merges them (one route per peer, however many Services it covers).
fn bgp_plans(decision: &Decision, config: &LbConfig, node: Option<&str>) -> Vec<BgpRoutePlan> {
    type RouteKey = (String, Option<String>, IpNet, Vec<String>, Option<u32>);
    let mut routes: BTreeMap<RouteKey, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for service in decision.services.values() {
        for announcement in &service.bgp.announcements {
            for (announcer, peers) in &announcement.nodes {
                if node.is_some_and(|node| node != &**announcer) {
                    continue;
                }
                let communities: Vec<String> = announcement
                    .route
                    .communities
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                let mut add = |peer: Option<String>, local_pref: Option<u32>| {
                    let entry = routes
                        .entry((
                            announcer.to_string(),
                            peer,
                            announcement.route.prefix,
                            communities.clone(),
                            local_pref,
                        ))
                        .or_default();
                    entry.0.insert(announcement.advertisement.clone());
                    entry.1.insert(service.service.to_string());
                };
                if peers.is_empty() {
                    add(None, announcement.route.local_pref);
                }
                for peer in peers {
                    let internal = config
                        .peers
                        .iter()
                        .find(|known| known.name == **peer)
                        .is_some_and(|known| match known.peer_asn {
                            PeerAsn::Fixed(asn) => asn == known.my_asn,
                            PeerAsn::Internal => true,
                            PeerAsn::External => false,
                        });
                    // LOCAL_PREF is an iBGP attribute: never sent to an eBGP peer.
                    add(
                        Some(peer.to_string()),
                        announcement.route.local_pref.filter(|_| internal),
                    );
                }
            }
        }
    }
    routes
        .into_iter()
        .map(
            |((node, peer, prefix, communities, local_pref), (advertisements, services))| {
                let known = peer
                    .as_deref()
                    .and_then(|peer| config.peers.iter().find(|known| known.name == peer));
                BgpRoutePlan {
                    node,
                    peer_address: known.and_then(|known| {
                        known
                            .address
                            .map(|address| address.to_string())
                            .or_else(|| known.interface.clone())
                    }),
                    peer_asn: known.map(|known| match known.peer_asn {
                        PeerAsn::Fixed(asn) => asn.to_string(),
                        PeerAsn::Internal => "internal".to_string(),
                        PeerAsn::External => "external".to_string(),
                    }),
                    peer,
                    prefix,
                    communities,
                    local_pref,
                    advertisements: advertisements.into_iter().collect(),
                    services: services.into_iter().collect(),
                }
            },
        )
        .collect()
}

/// A prefix as its text (`ipnet`'s serde support is an optional feature).
fn as_text<S: serde::Serializer>(prefix: &IpNet, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(prefix)
}

fn not_announced(service: &ServiceDecision) -> Option<NotAnnounced> {
    let (l2, bgp) = (&service.l2, &service.bgp);
    // An address an L2Advertisement selects has its layer-2 row, with the reason
    // when nobody owns it; here only the Services no advertisement selects at all.
    let unselected = l2.advertisements.is_empty() && bgp.advertisements.is_empty();
    let l2_why = l2.why.clone().filter(|_| unselected);
    let bgp_why = bgp
        .why
        .clone()
        .filter(|_| !bgp.advertisements.is_empty() || l2.advertisements.is_empty())
        // One reason said once (no pool holds the addresses, ...).
        .filter(|why| l2_why.as_ref() != Some(why));
    (l2_why.is_some() || bgp_why.is_some()).then(|| NotAnnounced {
        service: service.service.to_string(),
        addresses: service.ips.clone(),
        layer2: l2_why,
        bgp: bgp_why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::static_dir::parse_manifests;

    const CLUSTER: &str = r#"
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: lan, namespace: metallb-system}
spec: {addresses: [192.168.1.240/30]}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: lan, namespace: metallb-system}
---
apiVersion: v1
kind: Node
metadata: {name: node-a}
---
apiVersion: v1
kind: Node
metadata: {name: node-b}
---
# MetalLB gave it an address of a pool since removed.
apiVersion: v1
kind: Service
metadata: {name: moved, namespace: shop, creationTimestamp: "2026-01-01T00:00:00Z"}
spec: {type: LoadBalancer, clusterIP: 10.96.0.1, ports: [{port: 80}]}
status: {loadBalancer: {ingress: [{ip: 10.1.2.3}]}}
---
# No endpoint: nobody owns its address.
apiVersion: v1
kind: Service
metadata: {name: idle, namespace: shop, creationTimestamp: "2026-01-02T00:00:00Z"}
spec: {type: LoadBalancer, clusterIP: 10.96.0.2, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: moved-1, namespace: shop, labels: {kubernetes.io/service-name: moved}}
addressType: IPv4
endpoints: [{addresses: [10.244.0.1], nodeName: node-b}]
"#;

    fn manifests(text: &str) -> Manifests {
        parse_manifests("test.yaml", text).unwrap()
    }

    #[test]
    fn an_address_of_a_removed_pool_is_released_and_replaced() {
        let report = plan(&manifests(CLUSTER), &PlanOptions::default());
        assert!(report.valid, "{report:?}");
        let moved = &report.services[1];
        assert_eq!(moved.name, "moved");
        assert_eq!(moved.outcome, AllocationOutcome::Assigned);
        assert_eq!(
            moved.addresses,
            ["192.168.1.240".parse::<IpAddr>().unwrap()]
        );
        let reason = moved.reason.as_deref().unwrap();
        assert!(reason.starts_with("released 10.1.2.3: "), "{reason}");
        assert_eq!(report.pools[0].in_use, 2);
    }

    #[test]
    fn a_node_sees_its_own_addresses_and_those_nobody_owns() {
        let every = plan(&manifests(CLUSTER), &PlanOptions::default());
        let rows: Vec<(String, Option<String>)> = every
            .layer2
            .iter()
            .map(|l2| (l2.ip.to_string(), l2.owner.clone()))
            .collect();
        assert_eq!(
            rows,
            [
                ("192.168.1.240".to_string(), Some("node-a".to_string())),
                ("192.168.1.241".to_string(), None),
            ]
        );
        assert_eq!(
            every.layer2[1].why.as_deref(),
            Some("no ready or serving endpoint")
        );
        let options = |node: &str| PlanOptions {
            node: Some(node.to_string()),
            ..PlanOptions::default()
        };
        let a = plan(&manifests(CLUSTER), &options("node-a"));
        assert_eq!(a.layer2, every.layer2);
        let b = plan(&manifests(CLUSTER), &options("node-b"));
        assert_eq!(b.layer2, every.layer2[1..]);
        assert_eq!(b.services, every.services);
    }

    #[test]
    fn without_pools_the_manifests_addresses_are_used_as_written() {
        let text = CLUSTER.replacen("kind: IPAddressPool", "kind: Ignored", 1);
        let mut loaded =
            manifests(&text.replacen("apiVersion: metallb.io/v1beta1", "apiVersion: v1", 1));
        loaded.warnings.clear();
        let report = plan(&loaded, &PlanOptions::default());
        assert!(report.pools.is_empty());
        assert_eq!(report.services[1].outcome, AllocationOutcome::AsWritten);
        assert_eq!(
            report.services[1].addresses,
            ["10.1.2.3".parse::<IpAddr>().unwrap()]
        );
        assert!(report.services[0].addresses.is_empty());
        // An address in no pool is not announced, and the report says why.
        assert_eq!(
            report.not_announced,
            [NotAnnounced {
                service: "shop/moved".into(),
                addresses: vec!["10.1.2.3".parse().unwrap()],
                layer2: Some("no address pool holds 10.1.2.3".into()),
                bgp: None,
            }]
        );
    }
}
