//! The reference merge: [`Model::desired`] computes the merged state from scratch,
//! the simple way. The agent never calls it on its path; it is the oracle the
//! incremental [`Model::state`] (kept by `merged`) is tested against, so it shares no
//! merge code with it.

use std::collections::BTreeMap;

use super::ipset;
use super::merged::Claim;
use super::service::{self, ServiceContribution, ServiceOutcome};
use super::{DesiredState, Family, HealthCheck, Model, ServiceError, VirtualServerKey};

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
        let claim = |c: &ServiceContribution| (c.created, c.service.clone());
        let mut oldest_vs: BTreeMap<VirtualServerKey, Claim> = BTreeMap::new();
        let mut oldest_port: BTreeMap<u16, Claim> = BTreeMap::new();
        for contribution in &programmed {
            for vs in &contribution.virtual_servers {
                let entry = oldest_vs
                    .entry(vs.key)
                    .or_insert_with(|| claim(contribution));
                *entry = entry.clone().min(claim(contribution));
            }
            if let Some((port, _)) = contribution.health_check_node_port {
                let entry = oldest_port
                    .entry(port)
                    .or_insert_with(|| claim(contribution));
                *entry = entry.clone().min(claim(contribution));
            }
        }
        for contribution in programmed {
            let mine = claim(contribution);
            let taken = contribution
                .virtual_servers
                .iter()
                .find_map(|vs| {
                    // Every key was claimed above, by this Service at least.
                    let oldest = oldest_vs.get(&vs.key)?;
                    (*oldest != mine).then(|| {
                        format!(
                            "{} is already claimed by the older Service {}",
                            vs.key, oldest.1
                        )
                    })
                })
                .or_else(|| {
                    contribution.health_check_node_port.and_then(|(port, _)| {
                        let oldest = oldest_port.get(&port)?;
                        (*oldest != mine).then(|| {
                            format!(
                                "healthCheckNodePort {port} is already claimed by the older \
                                 Service {}",
                                oldest.1
                            )
                        })
                    })
                });
            if let Some(reason) = taken {
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
            ipset::IPVS_IPS,
            state
                .addresses
                .iter()
                .map(|addr| (Family::of(*addr), addr.to_string())),
        );
        state.ipsets.0.retain(|_, entries| !entries.is_empty());
        state
    }
}
