//! Finding addresses for a Service that holds none it may keep: its requested
//! addresses, else its requested pool, else the pools that select it by priority,
//! then the open ones; within a pool, the first address it may use (a free one, or
//! an earlier one it may share).

use std::collections::BTreeSet;
use std::net::IpAddr;

use metallb_config::{IpRange, Pool};

use super::outcome::{Assignment, IpList, Refusal};
use super::state::{State, Wanted};
use crate::model::Family;

impl<'a> State<'a> {
    /// A free (or shareable) address of the family missing from a PreferDualStack
    /// Service's single address, from the same pool.
    pub(super) fn second_family(
        &mut self,
        index: usize,
        assignment: &Assignment,
    ) -> Option<IpAddr> {
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

    pub(super) fn allocate_new(&mut self, index: usize) -> Result<Assignment, Refusal> {
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

    pub(super) fn assign_requested(&self, index: usize) -> Result<Assignment, Refusal> {
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
    pub(super) fn best_of(&mut self, pools: &[&'a Pool], index: usize) -> Option<Assignment> {
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
    pub(super) fn free_in_pool(
        &mut self,
        pool: &'a Pool,
        index: usize,
        family: Family,
    ) -> Option<IpAddr> {
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
    pub(super) fn first_shared(
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
    pub(super) fn first_free(&mut self, pool: &'a Pool, range_index: usize) -> Option<IpAddr> {
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
