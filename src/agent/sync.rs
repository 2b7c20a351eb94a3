//! One sync: read the kernel (all of it, or only what the updates touched), diff against
//! the desired state, apply the plan and record what happened.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use tracing::{debug, error, info, warn};

use crate::dataplane::iptables;
use crate::dataplane::netif;
use crate::model::{DesiredState, IpsetMembers, NodeInfo};
use crate::observe::health::ServiceHealthSpec;
use crate::observe::k8s_events;
use crate::plan::{self, DiffOptions, ObservedState, Scope};

use super::rules::RuleSets;
use super::{Agent, KnownState, SyncKind};

impl Agent {
    /// Brings the kernel to the desired state: everything on a full sync (or when what
    /// the kernel holds is not known), otherwise only the touched part.
    pub(crate) async fn sync(&mut self, kind: SyncKind) {
        let started = Instant::now();
        let mut touched = self.model.take_touched();
        if kind == SyncKind::Draining {
            touched
                .virtual_servers
                .extend(self.drain.keys().map(|(key, _, _)| *key));
        }
        self.report_errors();
        // An incremental sync starts from what the kernel is known to hold; taking it
        // leaves "unknown" behind, so any early return forces the next sync to read all.
        let known = match kind {
            SyncKind::Full => None,
            _ if touched.all => None,
            _ => self.known.take(),
        };
        if known.is_some() && touched.is_empty() {
            // Nothing to do: the known state goes back untouched.
            self.known = known;
            self.health.updated(SystemTime::now());
            return;
        }
        let full = known.is_none();
        let options = self.diff_options();
        let now = Instant::now();
        let mut reads = 0;
        let (plan, scope, mut known) = match known {
            None => {
                let observed = match self.kernel.observe().await {
                    Ok(observed) => observed,
                    Err(err) => {
                        error!("cannot read the kernel state, sync skipped: {err}");
                        self.metrics.error("observe");
                        return;
                    }
                };
                let plan = plan::diff(self.model.state(), &observed, &options, &self.drain, now);
                let known = KnownState {
                    addresses: observed.addresses,
                    ipsets: observed.ipsets,
                };
                (plan, None, known)
            }
            Some(known) => {
                let scope = Scope::of(&touched);
                let servers = match self
                    .kernel
                    .observe_virtual_servers(&scope.virtual_servers)
                    .await
                {
                    Ok((servers, requests)) => {
                        reads = requests;
                        servers
                    }
                    Err(err) => {
                        error!("cannot read the kernel state, sync skipped: {err}");
                        self.metrics.error("observe");
                        return;
                    }
                };
                let observed = scope.observed(servers, &known.addresses, &known.ipsets);
                let desired = scope.desired(self.model.state());
                let plan = plan::diff(&desired, &observed, &options, &self.drain, now);
                (plan, Some(scope), known)
            }
        };
        let changes = plan.changes.len();
        // The rules depend only on the desired state, so iptables-restore runs on a
        // blocking thread while the kernel takes the plan (a few hundred milliseconds
        // of a first sync otherwise spent after it).
        let rules_task = RuleSets::spawn(self.rule_jobs(full, None));
        let report = self.kernel.apply(&plan).await;
        if let Some(cleaner) = &self.stale_flows {
            let cleaned = cleaner.clean_after(&plan.changes).await;
            if !cleaned.is_complete() {
                self.metrics.error("conntrack");
            }
        }
        match scope {
            None => self.drain = plan.draining,
            Some(scope) => {
                self.drain
                    .retain(|(key, _, _), _| !scope.virtual_servers.contains(key));
                self.drain.extend(plan.draining);
            }
        }
        if report.failed.is_empty() {
            plan::record_applied(&plan.changes, &mut known.addresses, &mut known.ipsets);
            self.known = Some(known);
        }
        // Otherwise what the kernel holds is no longer certain: read it all next time.
        let netlink_messages = reads + report.netlink_messages;
        self.metrics.netlink_sent("all", netlink_messages);
        for failed in &report.failed {
            warn!(change = %failed.change, "kernel refused a change: {}", failed.error);
            self.metrics.error("apply");
        }
        let iptables_ms = self.rules.finish(rules_task, &self.metrics).await;
        if full || touched.health_checks {
            self.sync_service_health().await;
        }
        self.record_programmed();
        let now = SystemTime::now();
        self.metrics.synced(started.elapsed().as_secs_f64(), now);
        self.health.updated(now);
        let scope = if full { "full" } else { "incremental" };
        if changes > 0 || !report.failed.is_empty() {
            info!(
                scope,
                services = touched.services,
                changes,
                applied = report.applied,
                failed = report.failed.len(),
                netlink_messages,
                iptables_ms,
                us = started.elapsed().as_micros() as u64,
                "synced"
            );
        } else {
            debug!(
                scope,
                netlink_messages,
                us = started.elapsed().as_micros() as u64,
                "in sync"
            );
        }
    }

    /// Programs what an early, partial view touched (the API server's Service, see
    /// [`crate::source::SourceEvent::Early`]) and nothing else: the diff is cut to those
    /// objects and keeps only additions, because everything the partial model lacks is
    /// unknown, not unwanted. The rules go in before the kernel changes, so the API
    /// server's address is masqueraded from its first packet; rules for sets that
    /// already hold members (an agent restart) are kept. Health, drain and metrics wait
    /// for the first full sync.
    pub(crate) async fn sync_early(&mut self, since_start: Instant) {
        let touched = self.model.take_touched();
        self.report_errors();
        let observed = match self.kernel.observe().await {
            Ok(observed) => observed,
            Err(err) => {
                warn!("cannot read the kernel state, the early sync is skipped: {err}");
                self.metrics.error("observe");
                return;
            }
        };
        let scope = Scope::of(&touched);
        let options = self.diff_options();
        let ObservedState {
            virtual_servers,
            addresses,
            ipsets,
        } = observed;
        let in_scope = virtual_servers
            .into_iter()
            .filter(|vs| scope.virtual_servers.contains(&vs.key))
            .collect();
        let observed = scope.observed(in_scope, &addresses, &ipsets);
        let desired = scope.desired(self.model.state());
        let mut plan = plan::diff(&desired, &observed, &options, &self.drain, Instant::now());
        plan.changes.retain(plan::Change::is_additive);
        let rules_task = RuleSets::spawn(self.rule_jobs(false, Some(&ipsets)));
        self.rules.finish(rules_task, &self.metrics).await;
        let report = self.kernel.apply(&plan).await;
        for failed in &report.failed {
            warn!(change = %failed.change, "kernel refused a change: {}", failed.error);
            self.metrics.error("apply");
        }
        self.metrics.netlink_sent("all", report.netlink_messages);
        info!(
            services = touched.services,
            changes = plan.changes.len(),
            applied = report.applied,
            failed = report.failed.len(),
            ms_since_start = since_start.elapsed().as_millis() as u64,
            "early sync: the API server's Service programmed ahead of the full lists"
        );
    }

    /// Re-reads this host's addresses and combines them with the Node object; the model
    /// recomputes every Service only when something changed (an address came or went,
    /// the zone label or the primary IPs changed).
    pub(crate) async fn refresh_node(&mut self) {
        let addresses = match netif::host_addresses(netif::DEFAULT_NAME).await {
            Ok(addresses) => addresses,
            Err(err) => {
                warn!("cannot list this host's addresses, keeping the previous ones: {err}");
                self.metrics.error("host-addresses");
                return;
            }
        };
        let name = self.model.node().name.clone();
        let info = match &self.node {
            Some(node) => NodeInfo::from_node(node, addresses),
            None => NodeInfo {
                name,
                zone: None,
                addresses,
                primary_addresses: Vec::new(),
            },
        };
        if &info != self.model.node() {
            info!(zone = ?info.zone, primary = ?info.primary_addresses, addresses = info.addresses.len(), "node changed");
            self.model.set_node(info);
        }
    }

    /// Logs and events each Service error once, and again if it comes back after
    /// being fixed.
    fn report_errors(&mut self) {
        let model = &self.model;
        self.events.report(model.state().errors.values(), |key| {
            model.service(key).map(k8s_events::service_reference)
        });
    }

    /// The rule sets to install: those whose inputs changed, or all on a full sync.
    fn rule_jobs(
        &self,
        full: bool,
        kept_sets: Option<&IpsetMembers>,
    ) -> Vec<super::rules::RuleJob> {
        // detectLocalMode NodeCIDR reads the Node's pod CIDRs; without a Node (the
        // static source) there are none and nothing is detected.
        let pod_cidrs = self
            .node
            .as_ref()
            .map(iptables::node_pod_cidrs)
            .unwrap_or_default();
        self.rules.jobs(full, |family| {
            iptables::rule_inputs(
                &self.model,
                &self.config,
                family,
                self.random_fully,
                kept_sets,
                &pod_cidrs,
            )
        })
    }

    /// The diff's settings from the configuration.
    pub(crate) fn diff_options(&self) -> DiffOptions {
        DiffOptions {
            exclude_cidrs: self.config.ipvs.exclude_cidrs.clone(),
            max_drain: self.config.extensions.max_drain,
        }
    }

    async fn sync_service_health(&mut self) {
        let wanted = health_check_specs(self.model.state());
        for (port, err) in self.service_health.sync(&wanted).await {
            warn!(port, "cannot serve the health check node port: {err}");
            self.metrics.error("health-check-port");
        }
    }

    fn record_programmed(&self) {
        let desired = self.model.state();
        let real_servers = self.model.real_servers();
        self.metrics
            .set_programmed("virtual-server", desired.virtual_servers.len() as i64);
        self.metrics
            .set_programmed("real-server", real_servers as i64);
        self.metrics
            .set_programmed("address", desired.addresses.len() as i64);
    }
}

/// The health-check node ports the desired state asks for, as the health servers take them.
fn health_check_specs(desired: &DesiredState) -> BTreeMap<u16, ServiceHealthSpec> {
    desired
        .health_check_node_ports
        .iter()
        .map(|(port, check)| {
            (
                *port,
                ServiceHealthSpec {
                    namespace: check.service.namespace.to_string(),
                    name: check.service.name.to_string(),
                    local_endpoints: check.local_endpoints,
                },
            )
        })
        .collect()
}
