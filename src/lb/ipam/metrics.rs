//! MetalLB's allocator metrics, with its names and `pool` label, so existing
//! dashboards and alerts keep working: `metallb_allocator_addresses_in_use_total` and
//! `metallb_allocator_addresses_total` (and their `ipv4_`/`ipv6_` variants).
//!
//! Only the IPAM leader sets them, as only MetalLB's one controller does: an agent
//! that stops leading removes its series, so summing over the agents counts each pool
//! once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::pool_usage::PoolUsage;

/// The `pool` label: the `IPAddressPool`'s name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabel {
    /// The pool's name.
    pub pool: String,
}

/// The allocator's gauges, shared between the IPAM controller and the registry
/// (clones share the series).
#[derive(Debug, Clone, Default)]
pub struct IpamMetrics {
    /// `metallb_allocator_addresses_in_use_total`.
    in_use: Family<PoolLabel, Gauge>,
    /// `metallb_allocator_ipv4_addresses_in_use_total`.
    in_use_v4: Family<PoolLabel, Gauge>,
    /// `metallb_allocator_ipv6_addresses_in_use_total`.
    in_use_v6: Family<PoolLabel, Gauge>,
    /// `metallb_allocator_addresses_total`.
    capacity: Family<PoolLabel, Gauge>,
    /// `metallb_allocator_ipv4_addresses_total`.
    capacity_v4: Family<PoolLabel, Gauge>,
    /// `metallb_allocator_ipv6_addresses_total`.
    capacity_v6: Family<PoolLabel, Gauge>,
    /// The pools with series, to remove the ones gone.
    pools: Arc<Mutex<Vec<String>>>,
}

impl IpamMetrics {
    /// Registers every gauge into `registry` under MetalLB's names.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("metallb_allocator");
        for (name, help, family) in [
            (
                "addresses_in_use_total",
                "Number of IP addresses in use, per pool",
                &self.in_use,
            ),
            (
                "ipv4_addresses_in_use_total",
                "Number of IPv4 addresses in use, per pool",
                &self.in_use_v4,
            ),
            (
                "ipv6_addresses_in_use_total",
                "Number of IPv6 addresses in use, per pool",
                &self.in_use_v6,
            ),
            (
                "addresses_total",
                "Number of usable IP addresses, per pool",
                &self.capacity,
            ),
            (
                "ipv4_addresses_total",
                "Number of usable IPv4 addresses, per pool",
                &self.capacity_v4,
            ),
            (
                "ipv6_addresses_total",
                "Number of usable IPv6 addresses, per pool",
                &self.capacity_v6,
            ),
        ] {
            r.register(name, help, family.clone());
        }
    }

    /// Sets every pool's series; the pools not in `usage` lose theirs.
    pub fn set(&self, usage: &BTreeMap<String, PoolUsage>) {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        for gone in pools.iter().filter(|pool| !usage.contains_key(*pool)) {
            self.remove(gone);
        }
        for (pool, usage) in usage {
            let label = PoolLabel { pool: pool.clone() };
            let v4 = usage.assigned_ipv4.saturating_add(usage.available_ipv4);
            let v6 = usage.assigned_ipv6.saturating_add(usage.available_ipv6);
            for (family, value) in [
                (&self.in_use, usage.in_use()),
                (&self.in_use_v4, usage.assigned_ipv4),
                (&self.in_use_v6, usage.assigned_ipv6),
                (&self.capacity, usage.capacity()),
                (&self.capacity_v4, v4),
                (&self.capacity_v6, v6),
            ] {
                family.get_or_create(&label).set(value);
            }
        }
        *pools = usage.keys().cloned().collect();
    }

    /// Removes every series (this agent stopped leading).
    pub fn clear(&self) {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        for pool in pools.drain(..) {
            self.remove(&pool);
        }
    }

    fn remove(&self, pool: &str) {
        let label = PoolLabel { pool: pool.into() };
        for family in [
            &self.in_use,
            &self.in_use_v4,
            &self.in_use_v6,
            &self.capacity,
            &self.capacity_v4,
            &self.capacity_v6,
        ] {
            family.remove(&label);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    fn scrape(registry: &Registry) -> String {
        let mut text = String::new();
        encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn metallb_names_per_pool_and_series_of_gone_pools_removed() {
        let metrics = IpamMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let usage = |assigned_ipv4, available_ipv4| PoolUsage {
            assigned_ipv4,
            available_ipv4,
            ..PoolUsage::default()
        };
        metrics.set(&BTreeMap::from([
            ("lan".to_string(), usage(3, 251)),
            ("old".to_string(), usage(0, 4)),
        ]));
        let text = scrape(&registry);
        assert!(text.contains("metallb_allocator_addresses_in_use_total{pool=\"lan\"} 3\n"));
        assert!(text.contains("metallb_allocator_addresses_total{pool=\"lan\"} 254\n"));
        assert!(text.contains("metallb_allocator_ipv6_addresses_total{pool=\"lan\"} 0\n"));
        assert!(text.contains("metallb_allocator_addresses_total{pool=\"old\"} 4\n"));

        metrics.set(&BTreeMap::from([("lan".to_string(), usage(4, 250))]));
        let text = scrape(&registry);
        assert!(text.contains("metallb_allocator_addresses_in_use_total{pool=\"lan\"} 4\n"));
        assert!(!text.contains("pool=\"old\""));

        metrics.clear();
        assert!(!scrape(&registry).contains("pool=\""));
    }
}
