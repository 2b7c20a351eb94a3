//! One run's bookkeeping: who uses which address, and the checks every placement
//! goes through (the pool's `serviceAllocation`, the Service's families, MetalLB's
//! sharing rule). Whether a Service may keep what it holds is decided here too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;

use metallb_config::{LbConfig, Pool};

use super::NamespaceLabels;
use super::outcome::{IpList, Refusal, SharingConflict};
use crate::lb::service::{LbService, ServicePort};
use crate::model::{Family, ServiceKey};

/// Who uses an address.
#[derive(Debug, Clone)]
pub(super) enum Occupant {
    /// The Service at this index of the sorted list.
    Service(usize),
    /// A Service whose requests cannot be read.
    Frozen(ServiceKey),
}

/// What one Service wants, family-wise.
pub(super) struct Wanted {
    /// The families, primary first.
    pub(super) families: Vec<Family>,
    /// Whether it needs all of them (single stack, RequireDualStack) or takes what it
    /// can (PreferDualStack).
    pub(super) all: bool,
}

impl Wanted {
    pub(super) fn of(service: &LbService) -> Wanted {
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

pub(super) struct State<'a> {
    pub(super) config: &'a LbConfig,
    pub(super) namespaces: &'a NamespaceLabels,
    pub(super) services: &'a [&'a LbService],
    /// Address → who uses it.
    pub(super) used: HashMap<IpAddr, Vec<Occupant>>,
    /// Sharing key → the addresses used by Services with that key, in order.
    pub(super) by_sharing_key: HashMap<&'a str, BTreeSet<IpAddr>>,
    /// (pool, range index) → no address before this index of the range is free.
    /// Addresses are only ever taken during one run, so the hint only moves forward
    /// and a full pool is not scanned again for every Service.
    pub(super) first_free: HashMap<(&'a str, usize), u128>,
    /// (range start, sharing key, backend key, ports) → no address of the range
    /// before this one can be joined by a Service with them (see
    /// [`State::first_shared`]).
    pub(super) shared_hint: HashMap<(IpAddr, &'a str, &'a str, BTreeSet<ServicePort>), IpAddr>,
}

impl<'a> State<'a> {
    pub(super) fn place(&mut self, index: usize, ips: &[IpAddr]) {
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
    pub(super) fn may_join(&self, index: usize, ip: IpAddr) -> Result<(), SharingConflict> {
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
    pub(super) fn pool_allows(&self, pool: &Pool, service: &LbService) -> Result<(), Refusal> {
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
    pub(super) fn pool_of(&self, ips: &[IpAddr]) -> Result<&'a Pool, Refusal> {
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
    pub(super) fn families_fit(service: &LbService, ips: &[IpAddr]) -> Result<(), Refusal> {
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
    pub(super) fn check_existing(&self, index: usize) -> Result<String, Refusal> {
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
