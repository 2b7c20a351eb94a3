//! The allocation itself: pools and LoadBalancer Services in, per Service an
//! assignment or a refusal out. Pure and deterministic, so the static source can run
//! it on every node and every node gets the same answer, and the cluster allocator
//! can run it again on every change.
//!
//! The rules are MetalLB's (its controller's `allocateIPs`/`convergeBalancer` and its
//! allocator), with two deliberate differences, both about determinism:
//! - MetalLB walks its pools in Go map order, so among pools of equal priority (and
//!   among the unrestricted pools) it picks one at random. Here they are tried by
//!   name.
//! - MetalLB serves Services in the order its informer delivers them. Here Services
//!   are served oldest first (`metadata.creationTimestamp`, then namespace and name),
//!   so who wins a contested address does not depend on arrival order.
//!
//! # Order of work
//! 1. Addresses held by Services whose requests cannot be read
//!    ([`allocate`]'s `frozen`) are reserved: nobody else gets them.
//! 2. Every Service's current addresses (`status.loadBalancer.ingress`) are kept when
//!    still valid: in one pool that may hand them out and lets the Service in, of the
//!    families the Service wants, matching what it requests (addresses, pool), and
//!    not taken by an older Service it may not share with. An address is never moved
//!    to make room, and a higher-priority pool appearing never moves a Service.
//! 3. The rest, oldest first: requested addresses (`metallb.io/loadBalancerIPs` or
//!    `spec.loadBalancerIP`), else the first free address of the requested pool
//!    (`metallb.io/address-pool`), else the first free address of the pools the
//!    Service's `serviceAllocation` selects (lower `priority` first, `0` after every
//!    prioritized pool), then of the auto-assigning pools without `serviceAllocation`.
//!    A `PreferDualStack` Service keeping one address gets the other family from the
//!    same pool when one is free (unless it requested exactly that one address:
//!    MetalLB adds the second one and then drops both as "not what was requested",
//!    on every pass).
//!
//! Running it again on its own output (each Service's ingress set to what it was
//! given) changes nothing: every assignment is valid, so step 2 keeps it.
//!
//! # Sharing
//! Two Services share an address only when both carry the same
//! `metallb.io/allow-shared-ip` key, their backend keys match (the selector when
//! `externalTrafficPolicy: Local`) and no protocol+port is used by both. A Service with
//! a sharing key that asks for no address lands, like in MetalLB, on the first address
//! of the pool it may join: a compatible shared one or a free one.
//!
//! # Modules
//! - `outcome`: what the allocation answers per Service ([`Assignment`], [`Refusal`]...).
//! - `state`: who uses which address during one run, and whether a Service may keep
//!   or join an address (pools' `serviceAllocation`, families, sharing).
//! - `search`: where a Service without a valid address gets one (requested
//!   addresses, requested pool, prioritized then open pools).

mod outcome;
mod search;
mod state;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use metallb_config::LbConfig;

use k8s_openapi::api::core::v1::{Namespace, Service};

use crate::lb::service::{LbService, LbServiceError, ingress_ips};
use crate::model::{Family, ServiceKey};

pub use outcome::{
    Allocation, Assignment, Dropped, IpList, Refusal, ServiceOutcome, SharingConflict,
};
use state::{Occupant, State};

/// Namespace name → its labels (for `serviceAllocation.namespaceSelectors`). A
/// namespace missing here has no labels.
pub type NamespaceLabels = BTreeMap<String, BTreeMap<String, String>>;

/// The namespaces' labels by name, from Namespace objects.
pub fn namespace_labels<'a>(
    namespaces: impl IntoIterator<Item = &'a k8s_openapi::api::core::v1::Namespace>,
) -> NamespaceLabels {
    namespaces
        .into_iter()
        .map(|namespace| {
            (
                namespace.metadata.name.clone().unwrap_or_default(),
                namespace.metadata.labels.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// Computes the allocation. `services` are the LoadBalancer Services of our class;
/// `frozen` the addresses held by Services of ours whose requests cannot be read
/// (they keep them untouched until fixed); `namespaces` the namespaces' labels.
///
/// Deterministic: the result depends only on the values given, not their order.
pub fn allocate<'a>(
    config: &LbConfig,
    services: impl IntoIterator<Item = &'a LbService>,
    frozen: impl IntoIterator<Item = (&'a ServiceKey, &'a [IpAddr])>,
    namespaces: &NamespaceLabels,
) -> Allocation {
    let mut services: Vec<&LbService> = services.into_iter().collect();
    // Oldest first; a Service without a creation time (a static manifest) after the
    // dated ones; then by name. Keys are unique, so this is a total order.
    services.sort_by(|a, b| {
        (a.created.is_none(), a.created, &a.key).cmp(&(b.created.is_none(), b.created, &b.key))
    });
    let mut frozen: Vec<(&ServiceKey, &[IpAddr])> = frozen.into_iter().collect();
    frozen.sort();

    let mut state = State {
        config,
        namespaces,
        services: &services,
        used: HashMap::new(),
        by_sharing_key: HashMap::new(),
        first_free: HashMap::new(),
        shared_hint: HashMap::new(),
    };
    for (key, ips) in &frozen {
        for ip in ips.iter() {
            state
                .used
                .entry(*ip)
                .or_default()
                .push(Occupant::Frozen((*key).clone()));
        }
    }

    let mut outcomes: Vec<Option<ServiceOutcome>> = vec![None; services.len()];
    let mut dropped: Vec<Option<Dropped>> = vec![None; services.len()];

    // Step 2: keep what is still valid.
    for (index, service) in services.iter().enumerate() {
        if service.ingress_ips.is_empty() {
            continue;
        }
        match state.check_existing(index) {
            Ok(pool) => {
                state.place(index, &service.ingress_ips);
                outcomes[index] = Some(ServiceOutcome {
                    result: Ok(Assignment {
                        pool,
                        ips: service.ingress_ips.clone(),
                    }),
                    kept: true,
                    dropped: None,
                });
            }
            Err(reason) => {
                dropped[index] = Some(Dropped {
                    ips: service.ingress_ips.clone(),
                    reason,
                })
            }
        }
    }

    // Step 3: the rest, and the second family of PreferDualStack Services.
    for (index, service) in services.iter().enumerate() {
        if let Some(outcome) = &mut outcomes[index] {
            if let Ok(assignment) = &mut outcome.result
                && service.dual_stack
                && assignment.ips.len() == 1
                && service.requested_ips.is_empty()
                && let Some(extra) = state.second_family(index, assignment)
            {
                state.place(index, &[extra]);
                assignment.ips.push(extra);
                let order = |ip: &IpAddr| {
                    service
                        .families
                        .iter()
                        .position(|family| *family == Family::of(*ip))
                };
                assignment.ips.sort_by_key(order);
                outcome.kept = false;
            }
            continue;
        }
        let result = state.allocate_new(index);
        if let Ok(assignment) = &result {
            state.place(index, &assignment.ips);
        }
        outcomes[index] = Some(ServiceOutcome {
            result,
            kept: false,
            dropped: dropped[index].take(),
        });
    }

    Allocation {
        services: services
            .iter()
            .zip(outcomes)
            .filter_map(|(service, outcome)| Some((service.key.clone(), outcome?)))
            .collect(),
    }
}

/// The LoadBalancer Services of one class, as the allocation takes them: the ones
/// whose requests were read, and the ones whose requests cannot be read (they keep
/// what they hold untouched until fixed: [`allocate`]'s `frozen`).
///
/// Every caller holding whole Service objects reads them through this (the static
/// source's [`StaticAllocator`](crate::lb::static_alloc::StaticAllocator) and
/// [`allocate_objects`]), so a Service is ours, readable or frozen by one rule.
#[derive(Debug, Clone, Default)]
pub struct OurServices {
    /// The Services whose requests were read.
    pub readable: Vec<LbService>,
    /// The Services whose requests cannot be read.
    pub unreadable: Vec<Unreadable>,
}

/// A LoadBalancer Service of ours whose requests cannot be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreadable {
    /// The Service.
    pub key: ServiceKey,
    /// The addresses it holds (`status.loadBalancer.ingress`): reserved for it.
    pub ips: Vec<IpAddr>,
    /// Why its requests cannot be read.
    pub error: LbServiceError,
}

impl OurServices {
    /// Reads the Services of class `class` (see [`LbService::from_service`]); the
    /// others are left out.
    pub fn read<'a>(services: impl IntoIterator<Item = &'a Service>, class: Option<&str>) -> Self {
        let mut ours = OurServices::default();
        for service in services {
            match LbService::from_service(service, class) {
                Some(Ok(lb)) => ours.readable.push(lb),
                Some(Err(error)) => ours.unreadable.push(Unreadable {
                    key: ServiceKey::of_service(service),
                    ips: ingress_ips(service),
                    error,
                }),
                None => {}
            }
        }
        ours
    }

    /// The addresses held by the unreadable Services, as [`allocate`]'s `frozen`.
    pub fn frozen(&self) -> impl Iterator<Item = (&ServiceKey, &[IpAddr])> {
        self.unreadable
            .iter()
            .map(|service| (&service.key, service.ips.as_slice()))
    }
}

/// [`allocate`] on Kubernetes objects, for the callers that hold whole objects (the
/// static source reading manifests, `ipvs-proxy plan`): the Services of class `class`
/// (see [`LbService::from_service`]) and the Namespaces' labels. Returns the
/// allocation and the Services whose requests cannot be read (they keep what they
/// hold and appear only there).
pub fn allocate_objects<'a>(
    config: &LbConfig,
    services: impl IntoIterator<Item = &'a Service>,
    namespaces: impl IntoIterator<Item = &'a Namespace>,
    class: Option<&str>,
) -> (Allocation, Vec<(ServiceKey, LbServiceError)>) {
    let ours = OurServices::read(services, class);
    let labels = namespace_labels(namespaces);
    let allocation = allocate(config, &ours.readable, ours.frozen(), &labels);
    let problems = ours
        .unreadable
        .into_iter()
        .map(|service| (service.key, service.error))
        .collect();
    (allocation, problems)
}
