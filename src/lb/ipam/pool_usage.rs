//! How full each pool is: the counters MetalLB's controller writes into each
//! `IPAddressPool`'s `status` (`assignedIPv4`, `assignedIPv6`, `availableIPv4`,
//! `availableIPv6`) and exports as `metallb_allocator_*` metrics, computed from an
//! [`Allocation`] so that the leader publishes what it has just allocated.
//!
//! Counted as MetalLB counts them: an address shared by several Services is one
//! address in use; a pool's capacity leaves out the `.0` and `.255` addresses it
//! avoids (`avoidBuggyIPs`); a family of 2^62 addresses or more "never runs out" and
//! is reported as `i64::MAX` (the status fields are 64-bit integers). Addresses held
//! by Services whose requests cannot be read are in use too: nobody else gets them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use metallb_config::{IpRange, LbConfig, Pool};

use super::allocate::Allocation;

/// A capacity from this size on is reported as `i64::MAX`, as MetalLB does.
const UNBOUNDED: u128 = 1 << 62;

/// One pool's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolUsage {
    /// IPv4 addresses in use (`status.assignedIPv4`).
    pub assigned_ipv4: i64,
    /// IPv6 addresses in use (`status.assignedIPv6`).
    pub assigned_ipv6: i64,
    /// IPv4 addresses still free (`status.availableIPv4`).
    pub available_ipv4: i64,
    /// IPv6 addresses still free (`status.availableIPv6`).
    pub available_ipv6: i64,
}

impl PoolUsage {
    /// Addresses in use, both families (`metallb_allocator_addresses_in_use_total`).
    pub fn in_use(&self) -> i64 {
        self.assigned_ipv4.saturating_add(self.assigned_ipv6)
    }

    /// Addresses the pool may hand out, both families
    /// (`metallb_allocator_addresses_total`).
    pub fn capacity(&self) -> i64 {
        let v4 = self.assigned_ipv4.saturating_add(self.available_ipv4);
        let v6 = self.assigned_ipv6.saturating_add(self.available_ipv6);
        v4.saturating_add(v6)
    }
}

/// Every configured pool's counters (a pool nobody uses included), from the
/// allocation and the addresses held by Services whose requests cannot be read.
pub fn pool_usage<'a>(
    config: &LbConfig,
    allocation: &Allocation,
    frozen: impl IntoIterator<Item = &'a IpAddr>,
) -> BTreeMap<String, PoolUsage> {
    let mut in_use: BTreeMap<&str, BTreeSet<IpAddr>> = BTreeMap::new();
    for (_, assignment) in allocation.assignments() {
        in_use
            .entry(assignment.pool.as_str())
            .or_default()
            .extend(assignment.ips.iter().copied());
    }
    for ip in frozen {
        if let Some(pool) = config.pool_of(*ip).filter(|pool| pool.may_assign(*ip)) {
            in_use.entry(pool.name.as_str()).or_default().insert(*ip);
        }
    }
    config
        .pools
        .values()
        .map(|pool| {
            let used = in_use.get(pool.name.as_str());
            let count = |v4: bool| {
                used.map_or(0, |ips| ips.iter().filter(|ip| ip.is_ipv4() == v4).count()) as u128
            };
            let (assigned_ipv4, available_ipv4) = counters(capacity(pool, true), count(true));
            let (assigned_ipv6, available_ipv6) = counters(capacity(pool, false), count(false));
            let usage = PoolUsage {
                assigned_ipv4,
                assigned_ipv6,
                available_ipv4,
                available_ipv6,
            };
            (pool.name.clone(), usage)
        })
        .collect()
}

/// (assigned, available) as the status reports them.
fn counters(capacity: u128, assigned: u128) -> (i64, i64) {
    let assigned_reported = i64::try_from(assigned).unwrap_or(i64::MAX);
    if capacity >= UNBOUNDED {
        return (
            assigned_reported,
            i64::MAX.saturating_sub(assigned_reported),
        );
    }
    let available = capacity.saturating_sub(assigned);
    (
        assigned_reported,
        i64::try_from(available).unwrap_or(i64::MAX),
    )
}

/// The addresses of one family the pool may hand out.
fn capacity(pool: &Pool, v4: bool) -> u128 {
    pool.ranges
        .iter()
        .filter(|range| range.start.is_ipv4() == v4)
        .fold(0u128, |total, range| {
            let avoided = if v4 && pool.avoid_buggy_ips {
                buggy_in(range)
            } else {
                0
            };
            total.saturating_add(range.len() - avoided)
        })
}

/// The addresses ending in `.0` or `.255` in an IPv4 range.
fn buggy_in(range: &IpRange) -> u128 {
    let (IpAddr::V4(start), IpAddr::V4(end)) = (range.start, range.end) else {
        return 0;
    };
    let (start, end) = (u128::from(u32::from(start)), u128::from(u32::from(end)));
    // The numbers in 0..=n whose last byte is `last`.
    let up_to = |n: u128, last: u128| if n < last { 0 } else { (n - last) / 256 + 1 };
    let below_start = |last: u128| {
        if start == 0 {
            0
        } else {
            up_to(start - 1, last)
        }
    };
    [0, 255]
        .into_iter()
        .map(|last| up_to(end, last) - below_start(last))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lb::ipam::allocate::tests::{config, pool};
    use crate::lb::ipam::allocate::{Assignment, ServiceOutcome};
    use crate::model::ServiceKey;

    fn assigned(services: &[(&str, &str, &[&str])]) -> Allocation {
        Allocation {
            services: services
                .iter()
                .map(|(name, pool, ips)| {
                    let outcome = ServiceOutcome {
                        result: Ok(Assignment {
                            pool: pool.to_string(),
                            ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
                        }),
                        kept: true,
                        dropped: None,
                    };
                    (ServiceKey::new("shop", *name), outcome)
                })
                .collect(),
        }
    }

    #[test]
    fn avoided_addresses_are_not_capacity() {
        let buggy = |text: &str| buggy_in(&text.parse().unwrap());
        // MetalLB: two per /24 for a /24 or larger, else the ends that are buggy.
        assert_eq!(buggy("10.0.0.0/24"), 2);
        assert_eq!(buggy("10.0.0.0/22"), 8);
        assert_eq!(buggy("10.0.0.0/28"), 1);
        assert_eq!(buggy("10.0.0.240/28"), 1);
        assert_eq!(buggy("10.0.0.16/28"), 0);
        assert_eq!(buggy("10.0.0.255-10.0.1.0"), 2);
        assert_eq!(buggy("0.0.0.0/0"), 1 << 25);
    }

    #[test]
    fn shared_addresses_count_once_and_every_pool_is_listed() {
        let mut lan = pool("lan", &["192.0.2.0/24", "2001:db8::/120"]);
        lan.avoid_buggy_ips = true;
        let config = config(vec![
            lan,
            pool("idle", &["198.51.100.0/30"]),
            pool("huge", &["2001:db8:1::/64"]),
        ]);
        let allocation = assigned(&[
            ("web", "lan", &["192.0.2.1", "2001:db8::1"]),
            ("dns-tcp", "lan", &["192.0.2.2"]),
            ("dns-udp", "lan", &["192.0.2.2"]),
            ("big", "huge", &["2001:db8:1::1"]),
        ]);
        let frozen: Vec<IpAddr> = vec![
            "192.0.2.9".parse().unwrap(),
            // Outside every pool, and an avoided address: not counted.
            "203.0.113.1".parse().unwrap(),
            "192.0.2.255".parse().unwrap(),
        ];
        let usage = pool_usage(&config, &allocation, &frozen);
        assert_eq!(
            usage["lan"],
            PoolUsage {
                assigned_ipv4: 3,
                assigned_ipv6: 1,
                available_ipv4: 254 - 3,
                available_ipv6: 256 - 1,
            }
        );
        assert_eq!(usage["lan"].in_use(), 4);
        assert_eq!(usage["lan"].capacity(), 254 + 256);
        assert_eq!(
            usage["idle"],
            PoolUsage {
                available_ipv4: 4,
                ..PoolUsage::default()
            }
        );
        assert_eq!(usage["huge"].assigned_ipv6, 1);
        assert_eq!(usage["huge"].available_ipv6, i64::MAX - 1);
        assert_eq!(usage["huge"].capacity(), i64::MAX);
    }
}
