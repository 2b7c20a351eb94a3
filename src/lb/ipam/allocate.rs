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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use metallb_config::{IpRange, LbConfig, Pool};

use k8s_openapi::api::core::v1::{Namespace, Service};

use crate::lb::service::{LbService, LbServiceError, ServicePort, ingress_ips};
use crate::model::{Family, ServiceKey};

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

/// What a Service gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The pool the addresses come from (`metallb.io/ip-allocated-from-pool`).
    pub pool: String,
    /// The addresses, one per family, in the order written to
    /// `status.loadBalancer.ingress`.
    pub ips: Vec<IpAddr>,
}

/// The result for one Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceOutcome {
    /// Its addresses, or why it has none.
    pub result: Result<Assignment, Refusal>,
    /// Whether the addresses are exactly the ones it already held (nothing to write
    /// but possibly the pool annotation).
    pub kept: bool,
    /// Addresses it held that it may not keep, and why (they were released).
    pub dropped: Option<Dropped>,
}

/// Addresses a Service held and lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The addresses it held.
    pub ips: Vec<IpAddr>,
    /// Why it may not keep them.
    pub reason: Refusal,
}

/// The whole allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocation {
    /// Per Service (the frozen ones are not listed: they keep what they hold).
    pub services: BTreeMap<ServiceKey, ServiceOutcome>,
}

impl Allocation {
    /// The addresses assigned to `service`, if any.
    pub fn ips(&self, service: &ServiceKey) -> Option<&[IpAddr]> {
        match &self.services.get(service)?.result {
            Ok(assignment) => Some(&assignment.ips),
            Err(_) => None,
        }
    }

    /// Every assignment.
    pub fn assignments(&self) -> impl Iterator<Item = (&ServiceKey, &Assignment)> {
        self.services
            .iter()
            .filter_map(|(key, outcome)| Some((key, outcome.result.as_ref().ok()?)))
    }
}

/// Why two Services may not share an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SharingConflict {
    /// One of them has no `allow-shared-ip` key.
    #[error("{0} has no metallb.io/allow-shared-ip key")]
    NotShared(ServiceKey),
    /// Their sharing keys differ.
    #[error("sharing key {ours:?} differs from {other}'s {theirs:?}")]
    KeyDiffers {
        /// This Service's key.
        ours: String,
        /// The other Service.
        other: ServiceKey,
        /// The other Service's key.
        theirs: String,
    },
    /// Their backend keys differ (`externalTrafficPolicy: Local` with different
    /// selectors, or one Local and one Cluster).
    #[error(
        "backends differ from {other}'s (externalTrafficPolicy Local needs the same selector on both)"
    )]
    BackendDiffers {
        /// The other Service.
        other: ServiceKey,
    },
    /// Both use this protocol and port.
    #[error("{protocol}/{port} is already used by {other}")]
    PortInUse {
        /// The protocol.
        protocol: &'static str,
        /// The port.
        port: u16,
        /// The other Service.
        other: ServiceKey,
    },
    /// Held by a Service whose requests cannot be read.
    #[error("held by {0}, whose requests cannot be read")]
    Frozen(ServiceKey),
}

/// Why a Service gets no address (or may not keep one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The configuration has no pool at all.
    #[error("no IPAddressPool is configured")]
    NoPools,
    /// A requested address is in no pool.
    #[error("{0} is not in any IPAddressPool")]
    NotInAnyPool(IpAddr),
    /// A requested address is one its pool never hands out (`avoidBuggyIPs`).
    #[error("{ip} ends in .0 or .255 and pool {pool} has avoidBuggyIPs")]
    AvoidedAddress {
        /// The address.
        ip: IpAddr,
        /// The pool.
        pool: String,
    },
    /// The requested addresses are in different pools.
    #[error("{ips} are in different pools ({pools}); one Service's addresses come from one pool")]
    DifferentPools {
        /// The addresses.
        ips: IpList,
        /// Their pools, comma-separated.
        pools: String,
    },
    /// An address is used by another Service that may not share it.
    #[error("{ip} is in use: {conflict}")]
    InUse {
        /// The address.
        ip: IpAddr,
        /// Why it cannot be shared.
        conflict: SharingConflict,
    },
    /// The addresses do not fit the Service's IP families.
    #[error("{ips} do not fit the Service's IP families ({wanted})")]
    WrongFamily {
        /// The addresses.
        ips: IpList,
        /// What the Service wants, e.g. "IPv4 and IPv6 (RequireDualStack)".
        wanted: String,
    },
    /// `metallb.io/address-pool` names no pool.
    #[error("metallb.io/address-pool: no IPAddressPool named {0:?}")]
    UnknownPool(String),
    /// The pool's `serviceAllocation` does not let this Service in.
    #[error("pool {pool} does not allow this Service: {why}")]
    PoolNotAllowed {
        /// The pool.
        pool: String,
        /// Which restriction.
        why: String,
    },
    /// The requested addresses are not in the requested pool.
    #[error(
        "requested addresses {ips} are in pool {actual}, not in the requested pool {requested}"
    )]
    ConflictingPool {
        /// The addresses.
        ips: IpList,
        /// `metallb.io/address-pool`.
        requested: String,
        /// Where the addresses are.
        actual: String,
    },
    /// The Service requests other addresses than the ones it holds.
    #[error("the Service now requests {0}")]
    OtherAddressesRequested(IpList),
    /// The Service requests another pool than the one its addresses are in.
    #[error("the Service now requests pool {0}")]
    OtherPoolRequested(String),
    /// No pool hands out addresses to this Service without being asked.
    #[error(
        "no pool assigns addresses automatically to this Service (every pool has autoAssign: false or a serviceAllocation that does not select it); request one with metallb.io/address-pool or metallb.io/loadBalancerIPs"
    )]
    NoAutoAssignPool,
    /// The pools tried have no free address of the families wanted.
    #[error("no free {wanted} address in pool(s) {pools}")]
    Exhausted {
        /// The pools tried, comma-separated.
        pools: String,
        /// What the Service wants.
        wanted: String,
    },
}

/// Addresses, printed comma-separated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpList(pub Vec<IpAddr>);

impl fmt::Display for IpList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, ip) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{ip}")?;
        }
        Ok(())
    }
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
    let mut readable = Vec::new();
    let mut frozen = Vec::new();
    let mut problems = Vec::new();
    for service in services {
        match LbService::from_service(service, class) {
            Some(Ok(lb)) => readable.push(lb),
            Some(Err(error)) => {
                let key = ServiceKey::of_service(service);
                frozen.push((key.clone(), ingress_ips(service)));
                problems.push((key, error));
            }
            None => {}
        }
    }
    let labels = namespace_labels(namespaces);
    let allocation = allocate(
        config,
        &readable,
        frozen.iter().map(|(key, ips)| (key, ips.as_slice())),
        &labels,
    );
    (allocation, problems)
}

/// Who uses an address.
#[derive(Debug, Clone)]
enum Occupant {
    /// The Service at this index of the sorted list.
    Service(usize),
    /// A Service whose requests cannot be read.
    Frozen(ServiceKey),
}

/// What one Service wants, family-wise.
struct Wanted {
    /// The families, primary first.
    families: Vec<Family>,
    /// Whether it needs all of them (single stack, RequireDualStack) or takes what it
    /// can (PreferDualStack).
    all: bool,
}

impl Wanted {
    fn of(service: &LbService) -> Wanted {
        if service.dual_stack {
            Wanted {
                families: service.families.clone(),
                all: service.require_dual_stack,
            }
        } else {
            Wanted {
                families: vec![service.families.first().copied().unwrap_or(Family::V4)],
                all: true,
            }
        }
    }
}

impl fmt::Display for Wanted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self
            .families
            .iter()
            .map(|family| match family {
                Family::V4 => "IPv4",
                Family::V6 => "IPv6",
            })
            .collect();
        match (names.len(), self.all) {
            (1, _) => f.write_str(names[0]),
            (_, true) => write!(f, "{} (RequireDualStack)", names.join(" and ")),
            (_, false) => write!(f, "{} (PreferDualStack)", names.join(" or ")),
        }
    }
}

struct State<'a> {
    config: &'a LbConfig,
    namespaces: &'a NamespaceLabels,
    services: &'a [&'a LbService],
    /// Address → who uses it.
    used: HashMap<IpAddr, Vec<Occupant>>,
    /// Sharing key → the addresses used by Services with that key, in order.
    by_sharing_key: HashMap<&'a str, BTreeSet<IpAddr>>,
    /// (pool, range index) → no address before this index of the range is free.
    /// Addresses are only ever taken during one run, so the hint only moves forward
    /// and a full pool is not scanned again for every Service.
    first_free: HashMap<(&'a str, usize), u128>,
    /// (range start, sharing key, backend key, ports) → no address of the range
    /// before this one can be joined by a Service with them (see
    /// [`State::first_shared`]).
    shared_hint: HashMap<(IpAddr, &'a str, &'a str, BTreeSet<ServicePort>), IpAddr>,
}

impl<'a> State<'a> {
    fn place(&mut self, index: usize, ips: &[IpAddr]) {
        let service = self.services[index];
        for ip in ips {
            self.used
                .entry(*ip)
                .or_default()
                .push(Occupant::Service(index));
            if let Some(key) = &service.sharing_key {
                self.by_sharing_key
                    .entry(key.as_str())
                    .or_default()
                    .insert(*ip);
            }
        }
    }

    /// Whether the Service at `index` may use `ip` beside its current users.
    fn may_join(&self, index: usize, ip: IpAddr) -> Result<(), SharingConflict> {
        let service = self.services[index];
        for occupant in self.used.get(&ip).into_iter().flatten() {
            let other = match occupant {
                Occupant::Frozen(key) => return Err(SharingConflict::Frozen(key.clone())),
                Occupant::Service(other) if *other == index => continue,
                Occupant::Service(other) => self.services[*other],
            };
            sharing_ok(service, other)?;
        }
        Ok(())
    }

    /// Whether `pool`'s `serviceAllocation` lets the Service in.
    fn pool_allows(&self, pool: &Pool, service: &LbService) -> Result<(), Refusal> {
        let Some(allocation) = &pool.allocation else {
            return Ok(());
        };
        let refuse = |why: String| {
            Err(Refusal::PoolNotAllowed {
                pool: pool.name.clone(),
                why,
            })
        };
        let namespace = &*service.key.namespace;
        if !allocation.namespaces.is_empty() || !allocation.namespace_selectors.is_empty() {
            let empty = BTreeMap::new();
            let labels = self.namespaces.get(namespace).unwrap_or(&empty);
            let by_name = allocation.namespaces.iter().any(|name| name == namespace);
            let by_label = allocation
                .namespace_selectors
                .iter()
                .any(|selector| selector.matches(labels));
            if !by_name && !by_label {
                return refuse(format!(
                    "namespace {namespace} is neither in serviceAllocation.namespaces nor selected by its namespaceSelectors"
                ));
            }
        }
        if !allocation.service_selectors.is_empty()
            && !allocation
                .service_selectors
                .iter()
                .any(|selector| selector.matches(&service.labels))
        {
            return refuse(
                "the Service's labels match none of serviceAllocation.serviceSelectors".into(),
            );
        }
        Ok(())
    }

    /// The pool holding all of `ips` and allowed to hand them out, or why not.
    fn pool_of(&self, ips: &[IpAddr]) -> Result<&'a Pool, Refusal> {
        let mut found: Vec<&'a Pool> = Vec::new();
        for ip in ips {
            let Some(pool) = self.config.pool_of(*ip) else {
                return Err(Refusal::NotInAnyPool(*ip));
            };
            if !pool.may_assign(*ip) {
                return Err(Refusal::AvoidedAddress {
                    ip: *ip,
                    pool: pool.name.clone(),
                });
            }
            if !found.iter().any(|known| known.name == pool.name) {
                found.push(pool);
            }
        }
        match found.as_slice() {
            [pool] => Ok(pool),
            _ => Err(Refusal::DifferentPools {
                ips: IpList(ips.to_vec()),
                pools: found
                    .iter()
                    .map(|pool| pool.name.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            }),
        }
    }

    /// Whether `ips` fit what the Service wants family-wise.
    fn families_fit(service: &LbService, ips: &[IpAddr]) -> Result<(), Refusal> {
        let wanted = Wanted::of(service);
        let families: BTreeSet<Family> = ips.iter().map(|ip| Family::of(*ip)).collect();
        let fits = families.len() == ips.len()
            && !ips.is_empty()
            && families
                .iter()
                .all(|family| wanted.families.contains(family))
            && (!wanted.all || families.len() == wanted.families.len());
        if fits {
            Ok(())
        } else {
            Err(Refusal::WrongFamily {
                ips: IpList(ips.to_vec()),
                wanted: wanted.to_string(),
            })
        }
    }

    /// Whether the Service may keep what it holds; the pool when it may.
    fn check_existing(&self, index: usize) -> Result<String, Refusal> {
        let service = self.services[index];
        let ips = &service.ingress_ips;
        if self.config.pools.is_empty() {
            return Err(Refusal::NoPools);
        }
        Self::families_fit(service, ips)?;
        let pool = self.pool_of(ips)?;
        self.pool_allows(pool, service)?;
        if let Some(requested) = &service.requested_pool
            && *requested != pool.name
        {
            return Err(Refusal::OtherPoolRequested(requested.clone()));
        }
        if !service.requested_ips.is_empty() {
            let requested: BTreeSet<&IpAddr> = service.requested_ips.iter().collect();
            let held: BTreeSet<&IpAddr> = ips.iter().collect();
            if requested != held {
                return Err(Refusal::OtherAddressesRequested(IpList(
                    service.requested_ips.clone(),
                )));
            }
        }
        for ip in ips {
            self.may_join(index, *ip)
                .map_err(|conflict| Refusal::InUse { ip: *ip, conflict })?;
        }
        Ok(pool.name.clone())
    }

    /// A free (or shareable) address of the family missing from a PreferDualStack
    /// Service's single address, from the same pool.
    fn second_family(&mut self, index: usize, assignment: &Assignment) -> Option<IpAddr> {
        let service = self.services[index];
        let have = Family::of(*assignment.ips.first()?);
        let missing = service
            .families
            .iter()
            .copied()
            .find(|family| *family != have)?;
        let pool = self.config.pools.get(&assignment.pool)?;
        self.free_in_pool(pool, index, missing)
    }

    fn allocate_new(&mut self, index: usize) -> Result<Assignment, Refusal> {
        let service = self.services[index];
        if self.config.pools.is_empty() {
            return Err(Refusal::NoPools);
        }
        if !service.requested_ips.is_empty() {
            return self.assign_requested(index);
        }
        if let Some(name) = &service.requested_pool {
            let pool = self
                .config
                .pools
                .get(name)
                .ok_or_else(|| Refusal::UnknownPool(name.clone()))?;
            self.pool_allows(pool, service)?;
            return self
                .best_of(&[pool], index)
                .ok_or_else(|| Refusal::Exhausted {
                    pools: pool.name.clone(),
                    wanted: Wanted::of(service).to_string(),
                });
        }

        // The pools whose serviceAllocation selects the Service, by priority (lower
        // first, unset after), then by name: MetalLB takes a random one among equals.
        let mut pinned: Vec<&'a Pool> = self
            .config
            .pools
            .values()
            .filter(|pool| {
                pool.auto_assign
                    && pool.allocation.is_some()
                    && self.pool_allows(pool, service).is_ok()
            })
            .collect();
        pinned.sort_by_key(|pool| {
            let priority = pool.allocation.as_ref().map_or(0, |a| a.priority);
            (priority <= 0, priority)
        });
        let open: Vec<&'a Pool> = self
            .config
            .pools
            .values()
            .filter(|pool| pool.auto_assign && pool.allocation.is_none())
            .collect();
        if pinned.is_empty() && open.is_empty() {
            return Err(Refusal::NoAutoAssignPool);
        }
        if let Some(assignment) = self.best_of(&pinned, index) {
            return Ok(assignment);
        }
        if let Some(assignment) = self.best_of(&open, index) {
            return Ok(assignment);
        }
        Err(Refusal::Exhausted {
            pools: pinned
                .iter()
                .chain(&open)
                .map(|pool| pool.name.as_str())
                .collect::<Vec<_>>()
                .join(","),
            wanted: Wanted::of(service).to_string(),
        })
    }

    fn assign_requested(&self, index: usize) -> Result<Assignment, Refusal> {
        let service = self.services[index];
        let ips = &service.requested_ips;
        Self::families_fit(service, ips)?;
        let pool = self.pool_of(ips)?;
        if let Some(requested) = &service.requested_pool
            && *requested != pool.name
        {
            return Err(Refusal::ConflictingPool {
                ips: IpList(ips.clone()),
                requested: requested.clone(),
                actual: pool.name.clone(),
            });
        }
        self.pool_allows(pool, service)?;
        for ip in ips {
            self.may_join(index, *ip)
                .map_err(|conflict| Refusal::InUse { ip: *ip, conflict })?;
        }
        Ok(Assignment {
            pool: pool.name.clone(),
            ips: ips.clone(),
        })
    }

    /// MetalLB's choice among `pools`, tried in order: the first pool with a free
    /// address of every wanted family; for PreferDualStack failing that, the first
    /// pool with the primary family, else the first with the secondary.
    fn best_of(&mut self, pools: &[&'a Pool], index: usize) -> Option<Assignment> {
        let wanted = Wanted::of(self.services[index]);
        let mut primary: Option<Assignment> = None;
        let mut secondary: Option<Assignment> = None;
        for pool in pools {
            let found: Vec<Option<IpAddr>> = wanted
                .families
                .iter()
                .map(|family| self.free_in_pool(pool, index, *family))
                .collect();
            if found.iter().all(Option::is_some) {
                return Some(Assignment {
                    pool: pool.name.clone(),
                    ips: found.into_iter().flatten().collect(),
                });
            }
            if wanted.all {
                continue;
            }
            let single = |ip: IpAddr| Assignment {
                pool: pool.name.clone(),
                ips: vec![ip],
            };
            if primary.is_none()
                && let Some(Some(ip)) = found.first()
            {
                primary = Some(single(*ip));
            }
            if secondary.is_none()
                && let Some(Some(ip)) = found.get(1)
            {
                secondary = Some(single(*ip));
            }
        }
        primary.or(secondary)
    }

    /// The first address of `family` in `pool`, range by range in the pool's order,
    /// that the Service may use: a free one, or one it may share.
    fn free_in_pool(&mut self, pool: &'a Pool, index: usize, family: Family) -> Option<IpAddr> {
        let service = self.services[index];
        for (range_index, range) in pool.ranges.iter().enumerate() {
            if Family::of(range.start) != family {
                continue;
            }
            let free = self.first_free(pool, range_index);
            // A shared address wins only when it comes before the first free one.
            let shared = match service.sharing_key.as_deref() {
                Some(key) => self.first_shared(pool, index, key, range, free),
                None => None,
            };
            if let Some(best) = shared.or(free) {
                return Some(best);
            }
        }
        None
    }

    /// The first address of `range` before `free` used by Services with sharing key
    /// `key` that the Service may join.
    fn first_shared(
        &mut self,
        pool: &Pool,
        index: usize,
        key: &'a str,
        range: &IpRange,
        free: Option<IpAddr>,
    ) -> Option<IpAddr> {
        let service = self.services[index];
        let signature = (
            range.start,
            key,
            service.backend_key.as_str(),
            service.ports.iter().copied().collect::<BTreeSet<_>>(),
        );
        // Services alike (same key, backends and ports) are refused by the same
        // addresses, and an address refused stays refused in this run (its users only
        // grow): the scan resumes where the last one of them stopped, so thousands of
        // sharing Services do not each walk every shared address.
        let start = self
            .shared_hint
            .get(&signature)
            .copied()
            .unwrap_or(range.start);
        let shared = self.by_sharing_key.get(key)?;
        let mut candidates = match free {
            Some(free) if start < free => shared.range(start..free),
            Some(_) => return None,
            None if start <= range.end => shared.range(start..=range.end),
            None => return None,
        };
        let found = candidates
            .find(|ip| pool.may_assign(**ip) && self.may_join(index, **ip).is_ok())
            .copied();
        if let Some(found) = found {
            self.shared_hint.insert(signature, found);
        }
        found
    }

    /// The first address of the range nobody uses and the pool may hand out.
    fn first_free(&mut self, pool: &'a Pool, range_index: usize) -> Option<IpAddr> {
        let range = &pool.ranges[range_index];
        let hint = self
            .first_free
            .entry((pool.name.as_str(), range_index))
            .or_insert(0);
        let mut offset = *hint;
        while let Some(ip) = range.nth(offset) {
            if pool.may_assign(ip) && !self.used.contains_key(&ip) {
                *hint = offset;
                return Some(ip);
            }
            offset += 1;
        }
        *hint = offset;
        None
    }
}

/// MetalLB's sharing rule between two Services on one address.
fn sharing_ok(service: &LbService, other: &LbService) -> Result<(), SharingConflict> {
    let (Some(ours), Some(theirs)) = (&service.sharing_key, &other.sharing_key) else {
        let unshared = if service.sharing_key.is_none() {
            &service.key
        } else {
            &other.key
        };
        return Err(SharingConflict::NotShared(unshared.clone()));
    };
    if ours != theirs {
        return Err(SharingConflict::KeyDiffers {
            ours: ours.clone(),
            other: other.key.clone(),
            theirs: theirs.clone(),
        });
    }
    if service.backend_key != other.backend_key {
        return Err(SharingConflict::BackendDiffers {
            other: other.key.clone(),
        });
    }
    let theirs: BTreeSet<ServicePort> = other.ports.iter().copied().collect();
    if let Some(port) = service.ports.iter().find(|port| theirs.contains(port)) {
        return Err(SharingConflict::PortInUse {
            protocol: port.protocol,
            port: port.port,
            other: other.key.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::tests_support::service;
    use super::*;
    use metallb_config::{Selector, ServiceAllocation};

    fn pool(name: &str, ranges: &[&str]) -> Pool {
        Pool {
            name: name.into(),
            labels: BTreeMap::new(),
            ranges: ranges.iter().map(|range| range.parse().unwrap()).collect(),
            auto_assign: true,
            avoid_buggy_ips: false,
            allocation: None,
        }
    }

    fn config(pools: Vec<Pool>) -> LbConfig {
        LbConfig {
            pools: pools
                .into_iter()
                .map(|pool| (pool.name.clone(), pool))
                .collect(),
            ..LbConfig::default()
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn run(config: &LbConfig, services: &[LbService]) -> Allocation {
        allocate(config, services, [], &NamespaceLabels::new())
    }

    fn ips_of(allocation: &Allocation, name: &str) -> Vec<String> {
        allocation
            .ips(&ServiceKey::new("shop", name))
            .unwrap_or_else(|| panic!("{name}: {:?}", allocation.services))
            .iter()
            .map(IpAddr::to_string)
            .collect()
    }

    fn refusal(allocation: &Allocation, name: &str) -> Refusal {
        allocation.services[&ServiceKey::new("shop", name)]
            .result
            .clone()
            .unwrap_err()
    }

    #[test]
    fn first_free_address_of_the_first_pool_by_name_skipping_buggy_ones() {
        let mut buggy = pool("b", &["10.1.0.255-10.1.1.1"]);
        buggy.avoid_buggy_ips = true;
        let config = config(vec![pool("z", &["10.9.0.0/24"]), buggy]);
        let services: Vec<LbService> = ["a1", "a2", "a3"].into_iter().map(service).collect();
        let allocation = run(&config, &services);
        assert_eq!(ips_of(&allocation, "a1"), ["10.1.1.1"]);
        assert_eq!(ips_of(&allocation, "a2"), ["10.9.0.0"]);
        assert_eq!(ips_of(&allocation, "a3"), ["10.9.0.1"]);
        assert_eq!(
            allocation.services[&services[1].key]
                .result
                .as_ref()
                .unwrap()
                .pool,
            "z"
        );
    }

    #[test]
    fn prioritized_pools_first_then_unprioritized_then_open_ones() {
        let with = |name: &str, range: &str, priority: i32| {
            let mut pool = pool(name, &[range]);
            pool.allocation = Some(ServiceAllocation {
                priority,
                namespaces: vec!["shop".into()],
                ..ServiceAllocation::default()
            });
            pool
        };
        let config = config(vec![
            pool("a-open", &["10.0.0.1/32"]),
            with("b-unset", "10.0.0.2/32", 0),
            with("c-second", "10.0.0.3/32", 2),
            with("d-first", "10.0.0.4/32", 1),
        ]);
        let services: Vec<LbService> = ["s1", "s2", "s3", "s4", "s5"]
            .into_iter()
            .map(service)
            .collect();
        let allocation = run(&config, &services);
        assert_eq!(ips_of(&allocation, "s1"), ["10.0.0.4"]);
        assert_eq!(ips_of(&allocation, "s2"), ["10.0.0.3"]);
        assert_eq!(ips_of(&allocation, "s3"), ["10.0.0.2"]);
        assert_eq!(ips_of(&allocation, "s4"), ["10.0.0.1"]);
        assert!(matches!(
            refusal(&allocation, "s5"),
            Refusal::Exhausted { .. }
        ));
    }

    #[test]
    fn service_allocation_restricts_namespaces_and_services() {
        let mut restricted = pool("restricted", &["10.0.0.0/30"]);
        restricted.allocation = Some(ServiceAllocation {
            priority: 1,
            namespaces: vec![],
            namespace_selectors: vec![Selector {
                match_labels: [("team".to_string(), "web".to_string())].into(),
                requirements: vec![],
            }],
            service_selectors: vec![Selector {
                match_labels: [("expose".to_string(), "yes".to_string())].into(),
                requirements: vec![],
            }],
        });
        let config = config(vec![restricted]);
        let mut labelled = service("labelled");
        labelled.labels.insert("expose".into(), "yes".into());
        let plain = service("plain");
        let mut asks = service("asks");
        asks.requested_pool = Some("restricted".into());
        let services = vec![labelled, plain, asks];

        let web: NamespaceLabels = [(
            "shop".to_string(),
            [("team".to_string(), "web".to_string())].into(),
        )]
        .into();
        let allocation = allocate(&config, &services, [], &web);
        assert_eq!(ips_of(&allocation, "labelled"), ["10.0.0.0"]);
        assert_eq!(refusal(&allocation, "plain"), Refusal::NoAutoAssignPool);
        assert!(matches!(
            refusal(&allocation, "asks"),
            Refusal::PoolNotAllowed { .. }
        ));

        // Another namespace's labels: nobody gets in.
        let allocation = allocate(&config, &services, [], &NamespaceLabels::new());
        assert!(matches!(
            refusal(&allocation, "labelled"),
            Refusal::NoAutoAssignPool
        ));
    }

    #[test]
    fn auto_assign_false_pools_serve_only_who_asks() {
        let mut manual = pool("manual", &["10.0.0.0/31"]);
        manual.auto_assign = false;
        let config = config(vec![manual]);
        let mut by_pool = service("by-pool");
        by_pool.requested_pool = Some("manual".into());
        let mut by_ip = service("by-ip");
        by_ip.requested_ips = vec![ip("10.0.0.1")];
        let allocation = run(&config, &[service("plain"), by_pool, by_ip]);
        assert_eq!(refusal(&allocation, "plain"), Refusal::NoAutoAssignPool);
        assert_eq!(ips_of(&allocation, "by-pool"), ["10.0.0.0"]);
        assert_eq!(ips_of(&allocation, "by-ip"), ["10.0.0.1"]);
    }

    #[test]
    fn requests_that_cannot_be_met_say_why() {
        let config = config(vec![
            pool("a", &["10.0.0.0/24"]),
            pool("b", &["fd00::/120"]),
        ]);
        let mut outside = service("outside");
        outside.requested_ips = vec![ip("192.168.0.1")];
        let mut unknown = service("unknown");
        unknown.requested_pool = Some("nope".into());
        let mut conflicting = service("conflicting");
        conflicting.requested_ips = vec![ip("10.0.0.7")];
        conflicting.requested_pool = Some("b".into());
        let mut dual = service("dual");
        dual.families = vec![Family::V4, Family::V6];
        dual.dual_stack = true;
        dual.require_dual_stack = true;
        dual.requested_ips = vec![ip("10.0.0.8")];
        let mut split = service("split");
        split.families = vec![Family::V4, Family::V6];
        split.dual_stack = true;
        split.requested_ips = vec![ip("10.0.0.9"), ip("fd00::9")];
        let allocation = run(&config, &[outside, unknown, conflicting, dual, split]);
        assert_eq!(
            refusal(&allocation, "outside"),
            Refusal::NotInAnyPool(ip("192.168.0.1"))
        );
        assert_eq!(
            refusal(&allocation, "unknown"),
            Refusal::UnknownPool("nope".into())
        );
        assert!(matches!(
            refusal(&allocation, "conflicting"),
            Refusal::ConflictingPool { .. }
        ));
        let wrong = refusal(&allocation, "dual");
        assert!(
            wrong
                .to_string()
                .contains("IPv4 and IPv6 (RequireDualStack)"),
            "{wrong}"
        );
        assert!(matches!(
            refusal(&allocation, "split"),
            Refusal::DifferentPools { .. }
        ));
    }

    #[test]
    fn sharing_needs_the_same_key_the_same_backends_and_distinct_ports() {
        let config = config(vec![pool("a", &["10.0.0.0/24"])]);
        let shared = |name: &str, key: Option<&str>, port: u16, backend: &str| {
            let mut service = service(name);
            service.requested_ips = vec![ip("10.0.0.5")];
            service.sharing_key = key.map(String::from);
            service.ports = vec![ServicePort {
                protocol: "TCP",
                port,
            }];
            service.backend_key = backend.into();
            service
        };
        let services = vec![
            shared("a-first", Some("k"), 80, ""),
            shared("b-joins", Some("k"), 443, ""),
            shared("c-same-port", Some("k"), 80, ""),
            shared("d-other-key", Some("j"), 8080, ""),
            shared("e-no-key", None, 8081, ""),
            shared("f-other-backend", Some("k"), 8082, "app=x"),
        ];
        let allocation = run(&config, &services);
        assert_eq!(ips_of(&allocation, "a-first"), ["10.0.0.5"]);
        assert_eq!(ips_of(&allocation, "b-joins"), ["10.0.0.5"]);
        let why = |name| match refusal(&allocation, name) {
            Refusal::InUse { conflict, .. } => conflict,
            other => panic!("{name}: {other}"),
        };
        assert!(matches!(
            why("c-same-port"),
            SharingConflict::PortInUse { port: 80, .. }
        ));
        assert!(matches!(
            why("d-other-key"),
            SharingConflict::KeyDiffers { .. }
        ));
        assert!(matches!(why("e-no-key"), SharingConflict::NotShared(_)));
        assert!(matches!(
            why("f-other-backend"),
            SharingConflict::BackendDiffers { .. }
        ));

        // Without a request, a Service with the key lands on the shared address too.
        let mut follower = service("g-follower");
        follower.sharing_key = Some("k".into());
        follower.ports = vec![ServicePort {
            protocol: "UDP",
            port: 80,
        }];
        let mut services = services;
        services[0].requested_ips = vec![ip("10.0.0.0")];
        services.push(follower);
        let allocation = run(&config, &services);
        assert_eq!(ips_of(&allocation, "g-follower"), ["10.0.0.0"]);
    }

    #[test]
    fn existing_assignments_stay_and_the_oldest_holder_wins_a_contested_address() {
        let mut favourite = pool("a-favourite", &["10.0.0.0/24"]);
        favourite.allocation = Some(ServiceAllocation {
            priority: 1,
            ..ServiceAllocation::default()
        });
        let config = config(vec![favourite, pool("b", &["10.1.0.0/24"])]);
        let mut holder = service("holder");
        holder.ingress_ips = vec![ip("10.1.0.9")];
        holder.created = Some("2026-01-01T00:00:00Z".parse().unwrap());
        let mut younger = service("a-younger");
        younger.ingress_ips = vec![ip("10.1.0.9")];
        younger.created = Some("2026-02-01T00:00:00Z".parse().unwrap());
        let mut gone = service("gone");
        gone.ingress_ips = vec![ip("192.168.0.1")];
        let allocation = run(&config, &[younger, holder, gone]);
        let holder = &allocation.services[&ServiceKey::new("shop", "holder")];
        assert!(holder.kept);
        assert_eq!(ips_of(&allocation, "holder"), ["10.1.0.9"]);
        // The younger claimant loses it and is given a new address.
        let younger = &allocation.services[&ServiceKey::new("shop", "a-younger")];
        assert!(!younger.kept);
        assert!(matches!(
            younger.dropped.as_ref().unwrap().reason,
            Refusal::InUse { .. }
        ));
        assert_eq!(ips_of(&allocation, "a-younger"), ["10.0.0.0"]);
        let gone = &allocation.services[&ServiceKey::new("shop", "gone")];
        assert_eq!(
            gone.dropped.as_ref().unwrap().reason,
            Refusal::NotInAnyPool(ip("192.168.0.1"))
        );
        assert_eq!(ips_of(&allocation, "gone"), ["10.0.0.1"]);
    }

    #[test]
    fn dual_stack_required_needs_one_pool_with_both_families_preferred_takes_one() {
        let config = config(vec![
            pool("a-v4", &["10.0.0.0/32"]),
            pool("b-both", &["10.1.0.0/32", "fd00::/127"]),
        ]);
        let dual = |name: &str, require: bool| {
            let mut service = service(name);
            service.families = vec![Family::V6, Family::V4];
            service.dual_stack = true;
            service.require_dual_stack = require;
            service
        };
        let allocation = run(
            &config,
            &[
                dual("s1-required", true),
                dual("s2-required", true),
                dual("s3-preferred", false),
            ],
        );
        assert_eq!(ips_of(&allocation, "s1-required"), ["fd00::", "10.1.0.0"]);
        assert!(matches!(
            refusal(&allocation, "s2-required"),
            Refusal::Exhausted { .. }
        ));
        // The primary family (IPv6 here) first: the pool with a free IPv6 address.
        assert_eq!(ips_of(&allocation, "s3-preferred"), ["fd00::1"]);

        // A PreferDualStack Service holding one address gets the other family from
        // its pool.
        let mut holder = dual("holder", false);
        holder.ingress_ips = vec![ip("10.1.0.0")];
        let allocation = run(&config, &[holder]);
        assert_eq!(ips_of(&allocation, "holder"), ["fd00::", "10.1.0.0"]);
        assert!(!allocation.services[&ServiceKey::new("shop", "holder")].kept);
    }

    #[test]
    fn frozen_addresses_are_never_given_away() {
        let config = config(vec![pool("a", &["10.0.0.0/31"])]);
        let frozen_key = ServiceKey::new("shop", "broken");
        let frozen_ips = [ip("10.0.0.0")];
        let mut asks = service("asks");
        asks.requested_ips = vec![ip("10.0.0.0")];
        let services = [service("plain"), asks];
        let allocation = allocate(
            &config,
            &services,
            [(&frozen_key, &frozen_ips[..])],
            &NamespaceLabels::new(),
        );
        assert_eq!(ips_of(&allocation, "plain"), ["10.0.0.1"]);
        assert!(matches!(
            refusal(&allocation, "asks"),
            Refusal::InUse {
                conflict: SharingConflict::Frozen(_),
                ..
            }
        ));
        assert!(!allocation.services.contains_key(&frozen_key));
    }

    #[test]
    fn no_pools_refuses_everyone() {
        let mut holder = service("holder");
        holder.ingress_ips = vec![ip("10.0.0.1")];
        let allocation = run(&LbConfig::default(), &[holder]);
        assert_eq!(refusal(&allocation, "holder"), Refusal::NoPools);
    }
}

#[cfg(test)]
mod scale {
    use super::*;

    /// 10 000 Services in one /18: fresh allocation, then the steady state (every
    /// Service keeping its address) the controller recomputes on each change.
    #[test]
    fn ten_thousand_services() {
        let pool = Pool {
            name: "big".into(),
            labels: BTreeMap::new(),
            ranges: vec!["10.0.0.0/18".parse().unwrap()],
            auto_assign: true,
            avoid_buggy_ips: true,
            allocation: None,
        };
        let config = LbConfig {
            pools: [("big".to_string(), pool)].into(),
            ..LbConfig::default()
        };
        let mut services: Vec<LbService> = (0..10_000)
            .map(|index| {
                let mut service = tests_support::service(&format!("s{index:05}"));
                if index % 3 == 0 {
                    service.sharing_key = Some("shared".into());
                    service.ports = vec![ServicePort {
                        protocol: "TCP",
                        port: 1000 + (index % 7) as u16,
                    }];
                }
                service
            })
            .collect();
        let started = std::time::Instant::now();
        let fresh = allocate(&config, &services, [], &NamespaceLabels::new());
        let fresh_time = started.elapsed();
        assert_eq!(fresh.assignments().count(), 10_000);
        for service in &mut services {
            service.ingress_ips = fresh.ips(&service.key).unwrap().to_vec();
        }
        let started = std::time::Instant::now();
        let steady = allocate(&config, &services, [], &NamespaceLabels::new());
        let steady_time = started.elapsed();
        assert!(steady.services.values().all(|outcome| outcome.kept));
        eprintln!("10k Services: fresh {fresh_time:?}, steady {steady_time:?}");
    }
}

#[cfg(test)]
mod tests_support {
    use super::*;

    /// A TCP/80 IPv4 Service `shop/<name>` asking for nothing in particular.
    pub fn service(name: &str) -> LbService {
        LbService {
            key: ServiceKey::new("shop", name),
            uid: None,
            created: None,
            labels: BTreeMap::new(),
            load_balancer_class: None,
            requested_ips: vec![],
            requested_pool: None,
            sharing_key: None,
            allocated_from_pool: None,
            families: vec![Family::V4],
            dual_stack: false,
            require_dual_stack: false,
            ports: vec![ServicePort {
                protocol: "TCP",
                port: 80,
            }],
            local_traffic_policy: false,
            backend_key: String::new(),
            ingress_ips: vec![],
        }
    }
}
