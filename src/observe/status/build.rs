//! Building the report: the desired state joined with the kernel's and the pending
//! changes, then cut down to what a [`Filter`] selects.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

use crate::model::inspect::EndpointInfo;
use crate::model::{
    DesiredState, Model, Protocol, ServiceKey, ServiceOutcome, Skipped, VirtualServer,
    VirtualServerKey,
};
use crate::plan::{Change, DrainStarts, ObservedRealServer, ObservedState};

use super::problem::problem;
use super::schema::{
    BgpAnnouncementStatus, BgpNodeStatus, BgpStatus, Filter, KernelRealServer, Layer2Status,
    LoadBalancerStatus, NotProxied, Problem, ProblemKind, RealServerState, RealServerStatus,
    ServiceStatus, StatusReport, VirtualServerStatus,
};
use crate::lb::decision::{AnnounceModel, Interfaces, ServiceDecision};

fn skipped_reason(skipped: &Skipped) -> String {
    match skipped {
        Skipped::ExternalName => "type ExternalName (DNS only)".to_string(),
        Skipped::Headless => "headless (clusterIP: None)".to_string(),
        Skipped::OtherProxy(proxy) => format!("served by another proxy ({proxy:?})"),
        Skipped::NoClusterIp => "no ClusterIP allocated".to_string(),
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

    /// The report with its load-balancer section: per LoadBalancer address and
    /// Service holding it, the pool, the layer-2 owner and eligible nodes, the BGP
    /// routes per node and peer, and why nobody announces it.
    pub fn with_load_balancers(mut self, announce: &AnnounceModel) -> StatusReport {
        let decisions = announce.services();
        self.load_balancers = announce
            .ips()
            .iter()
            .flat_map(|(&address, holders)| {
                holders
                    .iter()
                    .filter_map(|key| decisions.get(key))
                    .map(move |decision| load_balancer_status(address, decision))
            })
            .collect();
        self
    }

    /// The report with what this node's announcers do now: the membership's live set
    /// and, per address this node answers for, the interfaces answering.
    pub fn with_announcers(
        mut self,
        live_nodes: Option<Vec<String>>,
        answering: &BTreeMap<IpAddr, Vec<String>>,
    ) -> StatusReport {
        self.live_nodes = live_nodes;
        for row in &mut self.load_balancers {
            if let Some(interfaces) = answering.get(&row.address) {
                row.layer2.answering = interfaces.clone();
            }
        }
        self
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
            load_balancers: self
                .load_balancers
                .iter()
                .filter(|lb| {
                    filter.matches_service(&lb.namespace, &lb.name)
                        && filter.vip.is_none_or(|vip| vip == lb.address)
                })
                .cloned()
                .collect(),
            live_nodes: self.live_nodes.clone(),
        }
    }
}

/// One row of the load-balancer section: `address` of the Service `decision`.
fn load_balancer_status(address: IpAddr, decision: &ServiceDecision) -> LoadBalancerStatus {
    let l2 = &decision.l2;
    let bgp = &decision.bgp;
    LoadBalancerStatus {
        address,
        namespace: decision.service.namespace.to_string(),
        name: decision.service.name.to_string(),
        pool: decision.pool.clone(),
        layer2: Layer2Status {
            advertisements: l2.advertisements.clone(),
            owner: l2.owner().map(str::to_string),
            eligible: l2.ranked.iter().map(|c| c.node.to_string()).collect(),
            interfaces: match (&l2.interfaces, l2.owner()) {
                (Interfaces::Only(names), Some(_)) => names.iter().cloned().collect(),
                _ => Vec::new(),
            },
            why: l2.why.clone(),
            answering: Vec::new(),
        },
        bgp: BgpStatus {
            advertisements: bgp.advertisements.clone(),
            announcements: bgp
                .announcements
                .iter()
                .filter(|announcement| announcement.ip == address)
                .map(|announcement| BgpAnnouncementStatus {
                    advertisement: announcement.advertisement.clone(),
                    prefix: announcement.route.prefix.to_string(),
                    communities: announcement
                        .route
                        .communities
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                    local_pref: announcement.route.local_pref,
                    nodes: announcement
                        .nodes
                        .iter()
                        .map(|(node, peers)| BgpNodeStatus {
                            node: node.to_string(),
                            peers: peers.iter().map(ToString::to_string).collect(),
                        })
                        .collect(),
                })
                .collect(),
            why: bgp.why.clone(),
        },
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
        protocol: vs.key.protocol,
        kind: vs.kind,
        port_name: vs.port_name.to_string(),
        scheduler: vs.scheduler.to_string(),
        persistence_timeout: vs.persistence_timeout,
        in_kernel: observed.is_some(),
        real_servers,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::VipKind;
    use crate::observe::status::fixtures::{self, ip, model_with, observed_from, report, vs_key};
    use crate::observe::status::render_text;

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
        assert_eq!(http.kind, VipKind::ClusterIp);
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
        let report = fixtures::report(&model, &observed, &DrainStarts::new());
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

    fn announce_model() -> AnnounceModel {
        use metallb_config::{BgpAdvertisement, L2Advertisement, LbConfig, Peer, PeerAsn, Pool};
        let pool = Pool {
            name: "public".into(),
            labels: BTreeMap::new(),
            ranges: vec!["203.0.113.0/24".parse().unwrap()],
            auto_assign: true,
            avoid_buggy_ips: false,
            allocation: None,
        };
        let config = LbConfig {
            pools: [("public".to_string(), pool)].into(),
            l2_advertisements: vec![L2Advertisement {
                name: "public".into(),
                pools: vec!["public".into()],
                node_selectors: Vec::new(),
                interfaces: Vec::new(),
                service_selectors: Vec::new(),
                preferred_nodes: Vec::new(),
            }],
            bgp_advertisements: vec![BgpAdvertisement {
                name: "transit".into(),
                pools: vec!["public".into()],
                aggregation_length: 32,
                aggregation_length_v6: 128,
                local_pref: Some(120),
                communities: vec!["65000:100".parse().unwrap()],
                node_selectors: Vec::new(),
                peers: Vec::new(),
                service_selectors: Vec::new(),
            }],
            peers: vec![Peer {
                name: "tor".into(),
                my_asn: 64512,
                peer_asn: PeerAsn::Internal,
                address: Some(ip("192.168.50.1")),
                interface: None,
                source_address: None,
                port: 179,
                hold_time: None,
                keepalive_time: None,
                connect_time: None,
                router_id: None,
                node_selectors: Vec::new(),
                password: None,
                bfd_profile: None,
                graceful_restart: false,
                ebgp_multihop: false,
                dual_stack: false,
            }],
            ..LbConfig::default()
        };
        let node_a: k8s_openapi::api::core::v1::Node = fixtures::fixture("node-a.json");
        let mut node_b = node_a.clone();
        node_b.metadata.name = Some("node-b".into());
        let mut announce = AnnounceModel::new("node-a", None);
        announce.set_config(config);
        announce.set_nodes(&[node_a, node_b]);
        announce.apply_service(&fixtures::fixture("svc-ingress-lb-local.json"));
        announce.apply_slice(&fixtures::fixture("eps-ingress.json"));
        announce
    }

    /// The captured ingress Service (policy Local, endpoints on node-a and node-b):
    /// sha256("node-a#203.0.113.10") = 9397… beats node-b's d84a…, and both nodes
    /// send the /32 to the peer.
    #[test]
    fn load_balancer_addresses_show_owner_routes_and_reasons() {
        let model = model_with(&["svc-ingress-lb-local.json"], &["eps-ingress.json"]);
        let observed = observed_from(&model.desired());
        let plain = report(&model, &observed, &DrainStarts::new());
        let json = serde_json::to_value(&plain).unwrap();
        assert!(json.get("load_balancers").is_none(), "{json}");
        assert!(!render_text(&plain).contains("Load-balancer"));

        let full = plain.clone().with_load_balancers(&announce_model());
        assert_eq!(
            full.load_balancers,
            [LoadBalancerStatus {
                address: ip("203.0.113.10"),
                namespace: "ingress".into(),
                name: "ingress".into(),
                pool: Some("public".into()),
                layer2: Layer2Status {
                    advertisements: vec!["public".into()],
                    owner: Some("node-a".into()),
                    eligible: vec!["node-a".into(), "node-b".into()],
                    interfaces: Vec::new(),
                    why: None,
                    answering: Vec::new(),
                },
                bgp: BgpStatus {
                    advertisements: vec!["transit".into()],
                    announcements: vec![BgpAnnouncementStatus {
                        advertisement: "transit".into(),
                        prefix: "203.0.113.10/32".into(),
                        communities: vec!["65000:100".into()],
                        local_pref: Some(120),
                        nodes: ["node-a", "node-b"]
                            .iter()
                            .map(|node| BgpNodeStatus {
                                node: node.to_string(),
                                peers: vec!["tor".into()],
                            })
                            .collect(),
                    }],
                    why: None,
                },
            }]
        );
        let text = render_text(&full);
        let section: Vec<&str> = text
            .lines()
            .skip_while(|line| *line != "Load-balancer IPs:")
            .take(4)
            .collect();
        assert_eq!(
            section,
            [
                "Load-balancer IPs:",
                "  203.0.113.10 ingress/ingress pool public",
                "    layer2 owner node-a on all interfaces; eligible node-a,node-b (L2Advertisement public)",
                "    bgp 203.0.113.10/32 communities 65000:100 local-pref 120 (BGPAdvertisement transit) from node-a to tor; node-b to tor",
            ]
        );
        // The JSON reads back, and the filters apply to the section.
        let json = serde_json::to_string(&full).unwrap();
        assert_eq!(serde_json::from_str::<StatusReport>(&json).unwrap(), full);
        let by_vip = full.filtered(&Filter {
            vip: Some(ip("203.0.113.10")),
            ..Filter::default()
        });
        assert_eq!(by_vip.load_balancers.len(), 1);
        let other = full.filtered(&Filter {
            name: Some("web".into()),
            ..Filter::default()
        });
        assert!(other.load_balancers.is_empty());

        // No endpoint left: nobody announces, and the text says why.
        let mut announce = announce_model();
        announce.delete_slice("ingress", "ingress-q8v4d");
        let text = render_text(&plain.with_load_balancers(&announce));
        assert!(
            text.contains("    layer2 not announced: no ready or serving endpoint\n"),
            "{text}"
        );
        assert!(
            text.contains("    bgp not announced: no eligible node of 2: 2 without a ready or serving endpoint (externalTrafficPolicy Local)\n"),
            "{text}"
        );
    }

    /// What the announcers do shows next to the decision: the membership's live set
    /// once, and on the owner the interfaces answering; both read back from the JSON.
    #[test]
    fn the_announcers_state_shows_live_agents_and_answering_interfaces() {
        let model = model_with(&["svc-ingress-lb-local.json"], &["eps-ingress.json"]);
        let observed = observed_from(&model.desired());
        let plain = report(&model, &observed, &DrainStarts::new());
        let answering = BTreeMap::from([(ip("203.0.113.10"), vec!["eth1".to_string()])]);
        let full = plain
            .clone()
            .with_load_balancers(&announce_model())
            .with_announcers(Some(vec!["node-a".into(), "node-b".into()]), &answering);
        assert_eq!(full.load_balancers[0].layer2.answering, ["eth1"]);
        let text = render_text(&full);
        assert!(
            text.contains("  live agents (membership): node-a,node-b\n"),
            "{text}"
        );
        assert!(
            text.contains("(L2Advertisement public); answering on eth1\n"),
            "{text}"
        );
        let json = serde_json::to_value(&full).unwrap();
        assert_eq!(json["live_nodes"], serde_json::json!(["node-a", "node-b"]));
        assert_eq!(serde_json::from_value::<StatusReport>(json).unwrap(), full);
        // Without a membership or an announcer, nothing extra is shown.
        let quiet = plain
            .with_load_balancers(&announce_model())
            .with_announcers(None, &BTreeMap::new());
        assert!(!render_text(&quiet).contains("live agents"));
        assert!(!render_text(&quiet).contains("answering"));
        assert!(
            serde_json::to_value(&quiet)
                .unwrap()
                .get("live_nodes")
                .is_none()
        );
    }
}
