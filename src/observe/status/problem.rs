//! Each pending [`Change`] told as a [`Problem`] an operator can act on: the plan
//! says what the next sync would do, this says what is wrong now.

use std::net::{IpAddr, SocketAddr};

use crate::model::{DesiredState, VirtualServerKey};
use crate::plan::{Change, ObservedState};

use super::schema::{Problem, ProblemKind};

/// Describes one pending change as a problem, attributed to its Service when the
/// desired state names one.
pub(super) fn problem(
    change: &Change,
    desired: &DesiredState,
    observed: &ObservedState,
) -> Problem {
    let owner_of_vs =
        |key: &VirtualServerKey| desired.virtual_servers.get(key).map(|vs| &vs.service);
    let owner_of_address = |addr: &IpAddr| {
        desired
            .virtual_servers
            .values()
            .find(|vs| vs.key.addr == *addr)
            .map(|vs| &vs.service)
    };
    let observed_rs = |key: &VirtualServerKey, addr: IpAddr, port: u16| {
        observed
            .virtual_servers
            .iter()
            .find(|vs| vs.key == *key)
            .and_then(|vs| {
                vs.real_servers
                    .iter()
                    .find(|rs| rs.addr == addr && rs.port == port)
            })
    };
    let (kind, service, address, message) = match change {
        Change::AddAddress(addr) => (
            ProblemKind::Drift,
            owner_of_address(addr),
            Some(*addr),
            format!("address {addr} is not bound on kube-ipvs0"),
        ),
        Change::DeleteAddress(addr) => (
            ProblemKind::Stale,
            None,
            Some(*addr),
            format!("address {addr} is bound on kube-ipvs0 but no longer desired"),
        ),
        Change::AddIpsetEntry { set, entry } => (
            ProblemKind::Drift,
            None,
            None,
            format!("ipset {set} lacks the entry {entry}"),
        ),
        Change::DeleteIpsetEntry { set, entry } => (
            ProblemKind::Stale,
            None,
            None,
            format!("ipset {set} holds the entry {entry}, no longer desired"),
        ),
        Change::AddVirtualServer(spec) => (
            ProblemKind::Drift,
            owner_of_vs(&spec.key),
            Some(spec.key.addr),
            format!("virtual server {} is missing in the kernel", spec.key),
        ),
        Change::UpdateVirtualServer(spec) => {
            let current = observed
                .virtual_servers
                .iter()
                .find(|vs| vs.key == spec.key);
            let describe = |scheduler: &str, persistence: Option<u32>| match persistence {
                Some(timeout) => format!("{scheduler}, persistent {timeout} s"),
                None => format!("{scheduler}, not persistent"),
            };
            (
                ProblemKind::Drift,
                owner_of_vs(&spec.key),
                Some(spec.key.addr),
                format!(
                    "virtual server {} is {} in the kernel, desired {}",
                    spec.key,
                    current
                        .map(|vs| describe(&vs.scheduler, vs.persistence_timeout))
                        .unwrap_or_default(),
                    describe(&spec.scheduler, spec.persistence_timeout)
                ),
            )
        }
        Change::AddRealServer {
            virtual_server,
            real_server,
        } => (
            ProblemKind::Drift,
            owner_of_vs(virtual_server),
            Some(virtual_server.addr),
            format!(
                "real server {} of {virtual_server} is missing in the kernel",
                SocketAddr::new(real_server.addr, real_server.port)
            ),
        ),
        Change::UpdateRealServer {
            virtual_server,
            real_server,
        } => {
            let endpoint = SocketAddr::new(real_server.addr, real_server.port);
            let wanted = desired
                .virtual_servers
                .get(virtual_server)
                .is_some_and(|vs| vs.real_servers.contains(real_server));
            let current = observed_rs(virtual_server, real_server.addr, real_server.port);
            if wanted {
                (
                    ProblemKind::Drift,
                    owner_of_vs(virtual_server),
                    Some(virtual_server.addr),
                    format!(
                        "real server {endpoint} of {virtual_server} has weight {} in the kernel, desired {}",
                        current.map(|rs| rs.weight).unwrap_or_default(),
                        real_server.weight
                    ),
                )
            } else {
                (
                    ProblemKind::Stale,
                    owner_of_vs(virtual_server),
                    Some(virtual_server.addr),
                    format!(
                        "real server {endpoint} of {virtual_server} is no longer desired; \
                         the next sync drains it ({} active connections)",
                        current.map(|rs| rs.active_connections).unwrap_or_default()
                    ),
                )
            }
        }
        Change::DeleteRealServer {
            virtual_server,
            addr,
            port,
        } => (
            ProblemKind::Stale,
            owner_of_vs(virtual_server),
            Some(virtual_server.addr),
            format!(
                "real server {} of {virtual_server} is in the kernel but no longer desired",
                SocketAddr::new(*addr, *port)
            ),
        ),
        Change::DeleteVirtualServer(key) => (
            ProblemKind::Stale,
            None,
            Some(key.addr),
            format!("virtual server {key} is ours but no longer desired"),
        ),
    };
    Problem {
        kind,
        namespace: service.map(|s| s.namespace.to_string()),
        name: service.map(|s| s.name.to_string()),
        address,
        message,
    }
}

#[cfg(test)]
mod tests {
    use crate::observe::status::fixtures::{ip, model_with, observed_from, report, vs_key};
    use crate::observe::status::render_text;
    use crate::plan::{DrainStarts, ObservedVirtualServer};

    use super::*;

    #[test]
    fn a_real_server_missing_in_the_kernel_is_drift_of_its_service() {
        let model = model_with(&["svc-web.json"], &["eps-web.json"]);
        let mut observed = observed_from(&model.desired());
        let http = observed
            .virtual_servers
            .iter_mut()
            .find(|vs| vs.key == vs_key("10.96.12.34", 80))
            .unwrap();
        http.real_servers.retain(|rs| rs.addr != ip("10.244.2.11"));
        let report = report(&model, &observed, &DrainStarts::new());
        assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
        let problem = &report.problems[0];
        assert_eq!(problem.kind, ProblemKind::Drift);
        assert_eq!(problem.namespace.as_deref(), Some("default"));
        assert_eq!(problem.name.as_deref(), Some("web"));
        assert_eq!(problem.address, Some(ip("10.96.12.34")));
        assert_eq!(
            problem.message,
            "real server 10.244.2.11:8080 of 10.96.12.34:80/tcp is missing in the kernel"
        );
        let missing = &report.services[0].virtual_servers[0].real_servers[1];
        assert_eq!(missing.address, ip("10.244.2.11"));
        assert_eq!(missing.kernel, None);
        assert_eq!(missing.desired_weight, Some(1));
        let text = render_text(&report);
        assert!(
            text.lines()
                .any(|line| line.starts_with("  -> 10.244.2.11:8080")
                    && line.contains("ready MISSING")
                    && line.contains("pod-10-244-2-11")),
            "{text}"
        );
    }

    #[test]
    fn a_missing_virtual_server_and_a_stale_one_are_flagged() {
        let model = model_with(&["svc-web.json"], &["eps-web.json"]);
        let mut observed = observed_from(&model.desired());
        observed
            .virtual_servers
            .retain(|vs| vs.key != vs_key("10.96.12.34", 443));
        // A virtual server on an address bound on kube-ipvs0 is ours; nobody wants it.
        observed.addresses.insert(ip("10.96.99.1"));
        observed.virtual_servers.push(ObservedVirtualServer {
            key: vs_key("10.96.99.1", 80),
            scheduler: "rr".into(),
            persistence_timeout: None,
            real_servers: Vec::new(),
        });
        let report = report(&model, &observed, &DrainStarts::new());
        let https = &report.services[0].virtual_servers[1];
        assert!(!https.in_kernel);
        let messages: Vec<(ProblemKind, &str)> = report
            .problems
            .iter()
            .map(|p| (p.kind, p.message.as_str()))
            .collect();
        for expected in [
            (
                ProblemKind::Drift,
                "virtual server 10.96.12.34:443/tcp is missing in the kernel",
            ),
            (
                ProblemKind::Stale,
                "virtual server 10.96.99.1:80/tcp is ours but no longer desired",
            ),
            (
                ProblemKind::Stale,
                "address 10.96.99.1 is bound on kube-ipvs0 but no longer desired",
            ),
        ] {
            assert!(messages.contains(&expected), "{messages:#?}");
        }
        assert!(
            render_text(&report).contains("10.96.12.34:443 rr cluster-ip https MISSING-IN-KERNEL")
        );
    }
}
