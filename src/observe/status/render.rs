//! The text view of `ipvs-proxy services`.

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::schema::{KernelRealServer, LoadBalancerStatus, StatusReport, vip_kind_str};

/// Renders a report as text, in ipvsadm's layout: one block per Service, one line
/// per virtual server, one `->` line per real server, then the problems.
pub fn render_text(report: &StatusReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Node {}", report.node);
    let _ = writeln!(out, "Prot LocalAddress:Port Scheduler Flags Kind Port-name");
    let _ = writeln!(
        out,
        "  -> RemoteAddress:Port           Weight ActiveConn InActConn State                Pod                            Node"
    );
    for service in &report.services {
        let affinity = match service.affinity_timeout {
            Some(timeout) if service.session_affinity == "ClientIP" => {
                format!("ClientIP {timeout}s")
            }
            _ => service.session_affinity.clone(),
        };
        let _ = writeln!(
            out,
            "Service {}/{} type {} affinity {} externalTrafficPolicy {} internalTrafficPolicy {}",
            service.namespace,
            service.name,
            service.service_type,
            affinity,
            service.external_traffic_policy,
            service.internal_traffic_policy
        );
        for vs in &service.virtual_servers {
            let mut line = format!(
                "{:<4} {} {}",
                vs.protocol.as_str().to_uppercase(),
                SocketAddr::new(vs.address, vs.port),
                vs.scheduler
            );
            if let Some(timeout) = vs.persistence_timeout {
                let _ = write!(line, " persistent {timeout}");
            }
            let _ = write!(line, " {}", vip_kind_str(vs.kind));
            if !vs.port_name.is_empty() {
                let _ = write!(line, " {}", vs.port_name);
            }
            if !vs.in_kernel {
                line.push_str(" MISSING-IN-KERNEL");
            }
            let _ = writeln!(out, "{line}");
            for rs in &vs.real_servers {
                let count = |pick: fn(&KernelRealServer) -> u32| {
                    rs.kernel
                        .as_ref()
                        .map(|k| pick(k).to_string())
                        .unwrap_or_else(|| "-".to_string())
                };
                let weight = rs
                    .kernel
                    .map(|k| k.weight)
                    .or(rs.desired_weight)
                    .unwrap_or_default();
                let mut state = rs.state.as_str().to_string();
                if let Some(seconds) = rs.draining_seconds {
                    let _ = write!(state, " {seconds}s");
                }
                if rs.kernel.is_none() {
                    state.push_str(" MISSING");
                } else if rs
                    .desired_weight
                    .is_some_and(|w| Some(w) != rs.kernel.map(|k| k.weight))
                {
                    state.push_str(" WEIGHT-DRIFT");
                }
                let _ = writeln!(
                    out,
                    "  -> {:<28} {:<6} {:<10} {:<9} {:<20} {:<30} {}",
                    SocketAddr::new(rs.address, rs.port),
                    weight,
                    count(|k| k.active_connections),
                    count(|k| k.inactive_connections),
                    state,
                    rs.pod.as_deref().unwrap_or("-"),
                    rs.node.as_deref().unwrap_or("-"),
                );
            }
        }
    }
    render_load_balancers(&mut out, &report.load_balancers, report.live_nodes.as_ref());
    if !report.not_proxied.is_empty() {
        let _ = writeln!(out, "Not proxied:");
        for service in &report.not_proxied {
            let _ = writeln!(
                out,
                "  {}/{}: {}",
                service.namespace, service.name, service.reason
            );
        }
    }
    if !report.warnings.is_empty() {
        let _ = writeln!(out, "Warnings:");
        for warning in &report.warnings {
            let _ = writeln!(out, "  {warning}");
        }
    }
    if report.problems.is_empty() {
        let _ = writeln!(out, "Problems: none");
    } else {
        let _ = writeln!(out, "Problems:");
        for problem in &report.problems {
            let service = match (&problem.namespace, &problem.name) {
                (Some(namespace), Some(name)) => format!("{namespace}/{name}"),
                _ => "-".to_string(),
            };
            let _ = writeln!(
                out,
                "  {:<8} {:<30} {}",
                problem.kind.as_str(),
                service,
                problem.message
            );
        }
    }
    out
}

/// The load-balancer section: one block per address and Service, a line per
/// protocol the Service's advertisements use. Nothing at all without addresses, so
/// a node without LoadBalancer Services prints what it always printed.
fn render_load_balancers(
    out: &mut String,
    rows: &[LoadBalancerStatus],
    live_nodes: Option<&Vec<String>>,
) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "Load-balancer IPs:");
    if let Some(live) = live_nodes {
        let _ = writeln!(out, "  live agents (membership): {}", live.join(","));
    }
    for row in rows {
        let _ = writeln!(
            out,
            "  {} {}/{} pool {}",
            row.address,
            row.namespace,
            row.name,
            row.pool.as_deref().unwrap_or("-")
        );
        let (l2, bgp) = (&row.layer2, &row.bgp);
        if row.pool.is_none() || (l2.advertisements.is_empty() && bgp.advertisements.is_empty()) {
            let mut reasons: Vec<&str> =
                l2.why.iter().chain(&bgp.why).map(String::as_str).collect();
            reasons.dedup();
            let _ = writeln!(out, "    not announced: {}", reasons.join("; "));
            continue;
        }
        if !l2.advertisements.is_empty() {
            match (&l2.owner, &l2.why) {
                (Some(owner), _) => {
                    let interfaces = if l2.interfaces.is_empty() {
                        "all interfaces".to_string()
                    } else {
                        l2.interfaces.join(",")
                    };
                    let answering = if l2.answering.is_empty() {
                        String::new()
                    } else {
                        format!("; answering on {}", l2.answering.join(","))
                    };
                    let _ = writeln!(
                        out,
                        "    layer2 owner {owner} on {interfaces}; eligible {} (L2Advertisement {}){answering}",
                        l2.eligible.join(","),
                        l2.advertisements.join(",")
                    );
                }
                (None, why) => {
                    let _ = writeln!(
                        out,
                        "    layer2 not announced: {}",
                        why.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        if !bgp.advertisements.is_empty() {
            let mut announced = false;
            for announcement in bgp.announcements.iter().filter(|a| !a.nodes.is_empty()) {
                announced = true;
                let mut line = format!("    bgp {}", announcement.prefix);
                if !announcement.communities.is_empty() {
                    let _ = write!(line, " communities {}", announcement.communities.join(","));
                }
                if let Some(local_pref) = announcement.local_pref {
                    let _ = write!(line, " local-pref {local_pref}");
                }
                let nodes: Vec<String> = announcement
                    .nodes
                    .iter()
                    .map(|node| {
                        let peers = if node.peers.is_empty() {
                            "no peer".to_string()
                        } else {
                            node.peers.join(",")
                        };
                        format!("{} to {peers}", node.node)
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "{line} (BGPAdvertisement {}) from {}",
                    announcement.advertisement,
                    nodes.join("; ")
                );
            }
            if !announced {
                let _ = writeln!(
                    out,
                    "    bgp not announced: {}",
                    bgp.why.as_deref().unwrap_or("-")
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::status::fixtures::{ip, model_with, observed_from, report, vs_key};
    use crate::plan::DrainStarts;

    #[test]
    fn the_text_view_lays_out_services_servers_and_problems() {
        let model = model_with(
            &["svc-web.json", "svc-bad-ip.json", "svc-headless.json"],
            &["eps-web.json"],
        );
        let mut observed = observed_from(&model.desired());
        let http = observed
            .virtual_servers
            .iter_mut()
            .find(|vs| vs.key == vs_key("10.96.12.34", 80))
            .unwrap();
        http.real_servers.retain(|rs| rs.addr != ip("10.244.2.11"));
        let text = render_text(&report(&model, &observed, &DrainStarts::new()));
        assert_eq!(
            text,
            concat!(
                "Node node-a\n",
                "Prot LocalAddress:Port Scheduler Flags Kind Port-name\n",
                "  -> RemoteAddress:Port           Weight ActiveConn InActConn State                Pod                            Node\n",
                "Service default/web type ClusterIP affinity None externalTrafficPolicy Cluster internalTrafficPolicy Cluster\n",
                "TCP  10.96.12.34:80 rr cluster-ip http\n",
                "  -> 10.244.1.10:8080             1      3          1         ready                pod-10-244-1-10                node-a\n",
                "  -> 10.244.2.11:8080             1      -          -         ready MISSING        pod-10-244-2-11                node-b\n",
                "TCP  10.96.12.34:443 rr cluster-ip https\n",
                "  -> 10.244.1.10:8443             1      3          1         ready                pod-10-244-1-10                node-a\n",
                "  -> 10.244.2.11:8443             1      3          1         ready                pod-10-244-2-11                node-b\n",
                "Not proxied:\n",
                "  default/db: headless (clusterIP: None)\n",
                "Problems:\n",
                "  skipped  default/broken                 spec.clusterIPs[0] \"10.96.0.999\" is not an IP address\n",
                "  drift    default/web                    real server 10.244.2.11:8080 of 10.96.12.34:80/tcp is missing in the kernel\n",
            )
        );
    }

    /// IPv6 endpoints are bracketed and padded like IPv4 ones.
    #[test]
    fn ipv6_addresses_are_bracketed_in_their_columns() {
        use crate::model::{Protocol, VipKind};
        use crate::observe::status::{
            RealServerState, RealServerStatus, ServiceStatus, VirtualServerStatus,
        };

        let report = StatusReport {
            node: "node-a".into(),
            services: vec![ServiceStatus {
                namespace: "default".into(),
                name: "dns".into(),
                service_type: "ClusterIP".into(),
                session_affinity: "None".into(),
                affinity_timeout: None,
                external_traffic_policy: "Cluster".into(),
                internal_traffic_policy: "Cluster".into(),
                virtual_servers: vec![VirtualServerStatus {
                    address: ip("fd00:10::a"),
                    port: 53,
                    protocol: Protocol::Udp,
                    kind: VipKind::ClusterIp,
                    port_name: String::new(),
                    scheduler: "rr".into(),
                    persistence_timeout: None,
                    in_kernel: true,
                    real_servers: vec![RealServerStatus {
                        address: ip("fd00:244::5"),
                        port: 5353,
                        pod: None,
                        node: None,
                        state: RealServerState::Ready,
                        desired_weight: Some(1),
                        kernel: Some(KernelRealServer {
                            weight: 1,
                            active_connections: 0,
                            inactive_connections: 2,
                        }),
                        draining_seconds: None,
                    }],
                }],
            }],
            ..StatusReport::default()
        };
        let text = render_text(&report);
        let lines: Vec<&str> = text.lines().skip(4).take(2).collect();
        assert_eq!(
            lines,
            [
                "UDP  [fd00:10::a]:53 rr cluster-ip",
                "  -> [fd00:244::5]:5353           1      0          2         ready                -                              -",
            ]
        );
    }
}
