//! The merged desired state, kept up to date one Service at a time.
//!
//! [`Model::desired`](super::Model::desired) merges every Service from scratch; the
//! agent cannot afford that on every EndpointSlice update with thousands of Services.
//! [`Merged`] applies one Service's old and new contribution to the merged state in
//! time proportional to that Service, with reference counts for what Services share
//! (a kube-ipvs0 address, an ipset entry such as a NodePort), and records what it
//! touched so the agent reads and diffs only those parts of the kernel.
//!
//! Conflicts follow the same rule as the full merge: a Service is programmed only if,
//! for each of its virtual servers and its health-check port, it is the oldest Service
//! (then the lowest namespace/name) claiming it. Whether a Service wins thus depends
//! only on the claims on its own keys, so one update re-evaluates only the Services
//! sharing a key with it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::jiff::Timestamp;

use super::kube_sets::{KubeSet, SetEntry, SetId};
use super::service::{ServiceContribution, ServiceOutcome};
use super::{
    DesiredState, Family, HealthCheck, ServiceError, ServiceKey, VirtualServerKey, compact,
};

/// Who claims a key, in the order that decides a conflict (older first).
pub(super) type Claim = (Option<Timestamp>, ServiceKey);

/// What an update changed in the merged state since [`Merged::take_touched`] was last
/// called: the parts of the kernel the next sync must read and diff.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    /// Everything may have changed (a relist, a new node address): diff it all.
    pub all: bool,
    /// Virtual servers added, removed or changed.
    pub virtual_servers: BTreeSet<VirtualServerKey>,
    /// kube-ipvs0 addresses that became or stopped being desired.
    pub addresses: BTreeSet<IpAddr>,
    /// ipset entries `(set, entry)` that became or stopped being desired.
    pub entries: BTreeSet<(SetId, SetEntry)>,
    /// Whether the health-check NodePorts changed.
    pub health_checks: bool,
    /// How many Service updates were folded in.
    pub services: usize,
}

impl Touched {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.all
            && self.virtual_servers.is_empty()
            && self.addresses.is_empty()
            && self.entries.is_empty()
            && !self.health_checks
    }
}

/// The merged state with the bookkeeping that keeps it current.
#[derive(Debug, Clone, Default)]
pub(super) struct Merged {
    pub(super) state: DesiredState,
    vs_claims: BTreeMap<VirtualServerKey, Claims>,
    health_check_claims: BTreeMap<u16, Claims>,
    winners: BTreeSet<ServiceKey>,
    address_refs: BTreeMap<IpAddr, usize>,
    entry_refs: BTreeMap<(SetId, SetEntry), usize>,
    real_servers: usize,
    touched: Touched,
    /// Addresses and entries whose presence flipped during the current update, with
    /// their presence before it: an update that removes and re-adds one (a Service's
    /// old contribution out, its new one in) did not touch it.
    flipped_addresses: BTreeMap<IpAddr, bool>,
    flipped_entries: BTreeMap<(SetId, SetEntry), bool>,
}

/// The claimants of one key, oldest first. Almost every key has one claimant, so a
/// sorted list: a `BTreeSet` would allocate a node for eleven per key.
#[derive(Debug, Clone, Default)]
pub(super) struct Claims(Vec<Claim>);

impl Claims {
    fn insert(&mut self, claim: Claim) {
        if let Err(at) = self.0.binary_search(&claim) {
            self.0.insert(at, claim);
        }
    }

    fn remove(&mut self, claim: &Claim) {
        if let Ok(at) = self.0.binary_search(claim) {
            self.0.remove(at);
        }
    }

    fn first(&self) -> Option<&Claim> {
        self.0.first()
    }

    fn iter(&self) -> impl Iterator<Item = &Claim> {
        self.0.iter()
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

type Outcomes = BTreeMap<ServiceKey, Result<ServiceOutcome, ServiceError>>;

fn programmed(
    outcome: Option<&Result<ServiceOutcome, ServiceError>>,
) -> Option<&ServiceContribution> {
    match outcome {
        Some(Ok(ServiceOutcome::Programmed(contribution))) => Some(contribution),
        _ => None,
    }
}

fn claim_of(contribution: &ServiceContribution) -> Claim {
    (contribution.created, contribution.service.clone())
}

impl Merged {
    /// An empty state with the given NodePort addresses.
    pub(super) fn new(node_port_addresses: BTreeSet<IpAddr>) -> Self {
        let mut merged = Merged::default();
        merged.state.node_port_addresses = node_port_addresses;
        merged.touched.all = true;
        merged
    }

    /// How many real servers the merged virtual servers hold.
    pub(super) fn real_servers(&self) -> usize {
        self.real_servers
    }

    /// Rebuilds the large maps with full nodes, after a bulk load (see
    /// [`compact`](super::compact)).
    pub(super) fn compact(&mut self) {
        compact(&mut self.vs_claims);
        compact(&mut self.winners);
        compact(&mut self.address_refs);
        compact(&mut self.entry_refs);
        compact(&mut self.state.virtual_servers);
        compact(&mut self.state.addresses);
        for entries in self.state.ipsets.0.values_mut() {
            compact(entries);
        }
    }

    /// Marks everything as touched (the node changed).
    pub(super) fn touch_all(&mut self) {
        self.touched.all = true;
    }

    /// Returns and resets what changed.
    pub(super) fn take_touched(&mut self) -> Touched {
        std::mem::take(&mut self.touched)
    }

    /// Folds in the update of `key`: `old` is its previous outcome, its new one (if any)
    /// is already in `outcomes`.
    pub(super) fn update(
        &mut self,
        key: &ServiceKey,
        old: Option<&Result<ServiceOutcome, ServiceError>>,
        outcomes: &Outcomes,
    ) {
        self.touched.services += 1;
        let old = programmed(old);
        if self.winners.remove(key)
            && let Some(old) = old
        {
            self.unmerge(old);
        }
        self.state.errors.remove(key);
        self.state.warnings.remove(key);

        let mut neighbours = BTreeSet::new();
        if let Some(old) = old {
            self.unclaim(old, &mut neighbours);
        }
        let new_outcome = outcomes.get(key);
        let new = programmed(new_outcome);
        if let Some(new) = new {
            self.claim(new, &mut neighbours);
        }
        neighbours.remove(key);
        for neighbour in &neighbours {
            if let Some(contribution) = programmed(outcomes.get(neighbour)) {
                self.evaluate(contribution);
            }
        }
        match (new_outcome, new) {
            (_, Some(new)) => self.evaluate(new),
            (Some(Err(error)), _) => {
                self.state.errors.insert(key.clone(), error.clone());
            }
            _ => {}
        }
        for (addr, was_present) in std::mem::take(&mut self.flipped_addresses) {
            if self.state.addresses.contains(&addr) != was_present {
                self.touched.addresses.insert(addr);
            }
        }
        for ((set, entry), was_present) in std::mem::take(&mut self.flipped_entries) {
            if self.state.ipsets.contains(set, &entry) != was_present {
                self.touched.entries.insert((set, entry));
            }
        }
    }

    fn unclaim(
        &mut self,
        contribution: &ServiceContribution,
        neighbours: &mut BTreeSet<ServiceKey>,
    ) {
        let claim = claim_of(contribution);
        for vs in &contribution.virtual_servers {
            if let Some(claims) = self.vs_claims.get_mut(&vs.key) {
                claims.remove(&claim);
                neighbours.extend(claims.iter().map(|(_, service)| service.clone()));
                if claims.is_empty() {
                    self.vs_claims.remove(&vs.key);
                }
            }
        }
        if let Some((port, _)) = contribution.health_check_node_port
            && let Some(claims) = self.health_check_claims.get_mut(&port)
        {
            claims.remove(&claim);
            neighbours.extend(claims.iter().map(|(_, service)| service.clone()));
            if claims.is_empty() {
                self.health_check_claims.remove(&port);
            }
        }
    }

    fn claim(&mut self, contribution: &ServiceContribution, neighbours: &mut BTreeSet<ServiceKey>) {
        let claim = claim_of(contribution);
        for vs in &contribution.virtual_servers {
            let claims = self.vs_claims.entry(vs.key).or_default();
            neighbours.extend(claims.iter().map(|(_, service)| service.clone()));
            claims.insert(claim.clone());
        }
        if let Some((port, _)) = contribution.health_check_node_port {
            let claims = self.health_check_claims.entry(port).or_default();
            neighbours.extend(claims.iter().map(|(_, service)| service.clone()));
            claims.insert(claim.clone());
        }
    }

    /// Why `contribution` loses to an older Service, if it does.
    fn conflict(&self, contribution: &ServiceContribution) -> Option<String> {
        let claim = claim_of(contribution);
        let older = |claims: Option<&Claims>| {
            claims
                .and_then(|claims| claims.first())
                .filter(|first| **first != claim)
                .map(|(_, service)| service.clone())
        };
        contribution
            .virtual_servers
            .iter()
            .find_map(|vs| {
                older(self.vs_claims.get(&vs.key))
                    .map(|other| format!("{} is already claimed by the older Service {other}", vs.key))
            })
            .or_else(|| {
                contribution.health_check_node_port.and_then(|(port, _)| {
                    older(self.health_check_claims.get(&port)).map(|other| {
                        format!("healthCheckNodePort {port} is already claimed by the older Service {other}")
                    })
                })
            })
    }

    /// Merges or unmerges `contribution` according to the claims on its keys.
    fn evaluate(&mut self, contribution: &ServiceContribution) {
        let key = &contribution.service;
        match self.conflict(contribution) {
            None => {
                self.state.errors.remove(key);
                if self.winners.insert(key.clone()) {
                    self.merge(contribution);
                }
            }
            Some(reason) => {
                if self.winners.remove(key) {
                    self.unmerge(contribution);
                }
                self.state.errors.insert(
                    key.clone(),
                    ServiceError {
                        service: key.clone(),
                        reason,
                    },
                );
            }
        }
    }

    fn merge(&mut self, contribution: &ServiceContribution) {
        for vs in &contribution.virtual_servers {
            self.real_servers += vs.real_servers.len();
            self.touched.virtual_servers.insert(vs.key);
            if let Some(replaced) = self.state.virtual_servers.insert(vs.key, vs.clone()) {
                self.real_servers -= replaced.real_servers.len();
            }
        }
        for addr in &contribution.addresses {
            let count = self.address_refs.entry(*addr).or_default();
            *count += 1;
            if *count == 1 {
                self.state.addresses.insert(*addr);
                self.flipped_addresses.entry(*addr).or_insert(false);
                let set = SetId::new(KubeSet::IpvsIps, Family::of(*addr));
                self.add_entry(set, &SetEntry::Ip(*addr));
            }
        }
        for (set, entry) in contribution.ipsets.iter() {
            self.add_entry(set, entry);
        }
        if let Some((port, local_endpoints)) = contribution.health_check_node_port {
            self.touched.health_checks = true;
            self.state.health_check_node_ports.insert(
                port,
                HealthCheck {
                    service: contribution.service.clone(),
                    local_endpoints,
                },
            );
        }
        if !contribution.warnings.is_empty() {
            self.state
                .warnings
                .insert(contribution.service.clone(), contribution.warnings.clone());
        }
    }

    fn unmerge(&mut self, contribution: &ServiceContribution) {
        for vs in &contribution.virtual_servers {
            if self
                .state
                .virtual_servers
                .get(&vs.key)
                .is_some_and(|merged| merged.service == contribution.service)
            {
                let removed = self.state.virtual_servers.remove(&vs.key);
                self.real_servers -= removed.map_or(0, |vs| vs.real_servers.len());
                self.touched.virtual_servers.insert(vs.key);
            }
        }
        for addr in &contribution.addresses {
            if let Some(count) = self.address_refs.get_mut(addr) {
                *count -= 1;
                if *count == 0 {
                    self.address_refs.remove(addr);
                    self.state.addresses.remove(addr);
                    self.flipped_addresses.entry(*addr).or_insert(true);
                    let set = SetId::new(KubeSet::IpvsIps, Family::of(*addr));
                    self.remove_entry(set, &SetEntry::Ip(*addr));
                }
            }
        }
        for (set, entry) in contribution.ipsets.iter() {
            self.remove_entry(set, entry);
        }
        if let Some((port, _)) = contribution.health_check_node_port
            && self
                .state
                .health_check_node_ports
                .get(&port)
                .is_some_and(|check| check.service == contribution.service)
        {
            self.touched.health_checks = true;
            self.state.health_check_node_ports.remove(&port);
        }
        self.state.warnings.remove(&contribution.service);
    }

    fn add_entry(&mut self, set: SetId, entry: &SetEntry) {
        let key = (set, *entry);
        let count = self.entry_refs.entry(key).or_default();
        *count += 1;
        if *count == 1 {
            self.state.ipsets.insert(set, entry);
            self.flipped_entries.entry(key).or_insert(false);
        }
    }

    fn remove_entry(&mut self, set: SetId, entry: &SetEntry) {
        let key = (set, *entry);
        let Some(count) = self.entry_refs.get_mut(&key) else {
            return;
        };
        *count -= 1;
        if *count > 0 {
            return;
        }
        self.entry_refs.remove(&key);
        self.state.ipsets.remove(set, entry);
        self.flipped_entries.entry(key).or_insert(true);
    }
}
