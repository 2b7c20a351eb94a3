//! The reference merge: [`Model::desired`] computes the merged state from scratch,
//! the simple way. The agent never calls it on its path; it is the oracle the
//! incremental [`Model::state`] (kept by `merged`) is tested against, so it shares no
//! merge code with it.

use std::collections::BTreeMap;

use super::merged::Claim;
use super::service::{self, ServiceContribution, ServiceOutcome};
use super::{DesiredState, Family, HealthCheck, Model, ServiceError, VirtualServerKey};
use super::{KubeSet, SetEntry};

impl Model {
    /// Merges the per-Service contributions from scratch. Where Services claim the same
    /// virtual server or health-check port, the oldest claimant (then the lower
    /// namespace/name) keeps it and every other claimant is skipped whole with an error
    /// naming it. This is the reference the incremental [`Model::state`] is tested
    /// against.
    pub fn desired(&self) -> DesiredState {
        let mut state = DesiredState {
            node_port_addresses: service::node_port_addresses(&self.node, &self.config),
            ..DesiredState::default()
        };
        let mut programmed: Vec<&ServiceContribution> = Vec::new();
        for outcome in self.outcomes.values() {
            match outcome {
                Ok(ServiceOutcome::Programmed(contribution)) => programmed.push(contribution),
                Ok(ServiceOutcome::Skipped(_)) => {}
                Err(error) => {
                    state.errors.insert(error.service.clone(), error.clone());
                }
            }
        }
        let oldest = OldestClaims::of(&programmed);
        for contribution in programmed {
            if let Some(reason) = oldest.conflict(contribution) {
                state.errors.insert(
                    contribution.service.clone(),
                    ServiceError {
                        service: contribution.service.clone(),
                        reason,
                    },
                );
                continue;
            }
            for vs in &contribution.virtual_servers {
                state.virtual_servers.insert(vs.key, vs.clone());
            }
            if !contribution.warnings.is_empty() {
                state
                    .warnings
                    .insert(contribution.service.clone(), contribution.warnings.clone());
            }
            state
                .addresses
                .extend(contribution.addresses.iter().copied());
            state.ipsets.extend_entries(&contribution.ipsets);
            if let Some((port, local_endpoints)) = contribution.health_check_node_port {
                state.health_check_node_ports.insert(
                    port,
                    HealthCheck {
                        service: contribution.service.clone(),
                        local_endpoints,
                    },
                );
            }
        }
        state.ipsets.add_all(
            KubeSet::IpvsIps,
            state
                .addresses
                .iter()
                .map(|addr| (Family::of(*addr), SetEntry::Ip(*addr))),
        );
        state.ipsets.0.retain(|_, entries| !entries.is_empty());
        state
    }
}

/// The oldest claimant of every virtual server and health-check port.
struct OldestClaims {
    virtual_servers: BTreeMap<VirtualServerKey, Claim>,
    ports: BTreeMap<u16, Claim>,
}

impl OldestClaims {
    fn of(programmed: &[&ServiceContribution]) -> Self {
        let mut oldest = Self {
            virtual_servers: BTreeMap::new(),
            ports: BTreeMap::new(),
        };
        for contribution in programmed {
            let claim = claim(contribution);
            for vs in &contribution.virtual_servers {
                let entry = oldest
                    .virtual_servers
                    .entry(vs.key)
                    .or_insert_with(|| claim.clone());
                *entry = entry.clone().min(claim.clone());
            }
            if let Some((port, _)) = contribution.health_check_node_port {
                let entry = oldest.ports.entry(port).or_insert_with(|| claim.clone());
                *entry = entry.clone().min(claim.clone());
            }
        }
        oldest
    }

    /// Why a Service loses: the first of its keys an older Service claims.
    fn conflict(&self, contribution: &ServiceContribution) -> Option<String> {
        let mine = claim(contribution);
        // Every key was claimed in `of`, by this Service at least: a missing one is no
        // conflict.
        contribution
            .virtual_servers
            .iter()
            .find_map(|vs| {
                let oldest = self.virtual_servers.get(&vs.key)?;
                (*oldest != mine).then(|| {
                    format!(
                        "{} is already claimed by the older Service {}",
                        vs.key, oldest.1
                    )
                })
            })
            .or_else(|| {
                let (port, _) = contribution.health_check_node_port?;
                let oldest = self.ports.get(&port)?;
                (*oldest != mine).then(|| {
                    format!(
                        "healthCheckNodePort {port} is already claimed by the older Service {}",
                        oldest.1
                    )
                })
            })
    }
}

fn claim(contribution: &ServiceContribution) -> Claim {
    (contribution.created, contribution.service.clone())
}
