//! `IPAddressPool`: address parsing as MetalLB does it, overlaps inside a pool and
//! between pools, and the `serviceAllocation` rules the IPAM applies.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::report::{Report, Subject, duplicate_names};
use super::selectors::selectors;
use crate::config::{IpRange, Pool, ServiceAllocation};
use crate::crd::IPAddressPool;

/// Parses one entry of `spec.addresses` as MetalLB does: a CIDR (host bits are
/// allowed and ignored: `10.0.0.7/24` means `10.0.0.0/24`) or a `start-end` range of
/// one family. A lone address is refused, as MetalLB refuses it.
pub fn parse_pool_address(text: &str) -> Result<IpRange, String> {
    let trimmed = text.trim();
    if !trimmed.contains('-') && !trimmed.contains('/') {
        return Err(if trimmed.parse::<IpAddr>().is_ok() {
            let bits = if trimmed.contains(':') { 128 } else { 32 };
            format!("{text:?} is a single address: write it as {trimmed}/{bits}")
        } else {
            format!("{text:?} is neither a CIDR (10.0.0.0/24) nor a range (10.0.0.10-10.0.0.20)")
        });
    }
    if !trimmed.contains('-') {
        // IpRange's parser takes the CIDR as ipnet reads it; say it in MetalLB's words.
        return trimmed.parse::<IpRange>().map_err(|_| {
            format!("{text:?} is not a valid CIDR (an address, \"/\" and a prefix length within the family)")
        });
    }
    trimmed.parse::<IpRange>()
}

/// The prefix lengths of the CIDRs that exactly cover `range` (MetalLB summarises a
/// `start-end` range into CIDRs): the shortest one is what the aggregation length is
/// checked against.
pub fn shortest_prefix(range: &IpRange) -> u8 {
    let (bits, start, end) = match (range.start, range.end) {
        (IpAddr::V4(start), IpAddr::V4(end)) => (
            32u32,
            u128::from(u32::from(start)),
            u128::from(u32::from(end)),
        ),
        (IpAddr::V6(start), IpAddr::V6(end)) => (128u32, u128::from(start), u128::from(end)),
        _ => return 0,
    };
    let mut shortest = bits as u8;
    let mut current = start;
    loop {
        // The largest aligned block starting at `current` that ends within the range.
        let mut size_log = if current == 0 {
            bits
        } else {
            current.trailing_zeros().min(bits)
        };
        loop {
            let last = if size_log >= 128 {
                u128::MAX
            } else {
                current + ((1u128 << size_log) - 1)
            };
            if last <= end {
                break;
            }
            size_log -= 1;
        }
        shortest = shortest.min((bits - size_log) as u8);
        let last = if size_log >= 128 {
            u128::MAX
        } else {
            current + ((1u128 << size_log) - 1)
        };
        if last >= end {
            return shortest;
        }
        current = last + 1;
    }
}

pub(super) fn pool(
    subject: &Subject,
    object: &IPAddressPool,
    accepted: &BTreeMap<String, Pool>,
    report: &mut Report,
) -> Option<Pool> {
    let spec = &object.spec;
    let mut ok = true;
    if spec.addresses.is_empty() {
        subject.problem(
            report,
            "spec.addresses",
            "the pool has no addresses and is left out: list CIDRs or start-end ranges",
        );
        return None;
    }
    // By index of spec.addresses; `None` where the entry does not parse.
    let mut parsed: Vec<Option<IpRange>> = Vec::with_capacity(spec.addresses.len());
    for (index, text) in spec.addresses.iter().enumerate() {
        let field = format!("spec.addresses[{index}]");
        match parse_pool_address(text) {
            Ok(range) => {
                if let Some(first) = parsed
                    .iter()
                    .position(|earlier| earlier.is_some_and(|earlier| earlier.overlaps(&range)))
                {
                    subject.problem(
                        report,
                        &field,
                        format!(
                            "{text:?} overlaps spec.addresses[{first}] ({:?}) of the same pool; the pool is left out: make the ranges disjoint",
                            spec.addresses[first]
                        ),
                    );
                    ok = false;
                }
                parsed.push(Some(range));
            }
            Err(message) => {
                subject.problem(report, &field, format!("{message}; the pool is left out"));
                ok = false;
                parsed.push(None);
            }
        }
    }
    let allocation = match &spec.service_allocation {
        None => None,
        Some(allocation) => service_allocation(subject, allocation, report),
    };
    if spec.service_allocation.is_some() && allocation.is_none() {
        ok = false;
    }
    let ranges: Vec<IpRange> = parsed.into_iter().flatten().collect();
    if !ok || ranges.len() != spec.addresses.len() {
        return None;
    }
    // Overlap with a pool kept before this one (name order): this one goes.
    for (index, range) in ranges.iter().enumerate() {
        for other in accepted.values() {
            if let Some(other_index) = other.ranges.iter().position(|r| r.overlaps(range)) {
                subject.problem(
                    report,
                    format!("spec.addresses[{index}]"),
                    format!(
                        "{:?} overlaps {} of IPAddressPool {:?}, which comes first by name and is kept; this pool is left out: make the pools disjoint",
                        spec.addresses[index], other.ranges[other_index], other.name
                    ),
                );
                return None;
            }
        }
    }
    Some(Pool {
        name: subject.name.clone(),
        labels: object.metadata.labels.clone().unwrap_or_default(),
        ranges,
        auto_assign: spec.auto_assign.unwrap_or(true),
        avoid_buggy_ips: spec.avoid_buggy_ips.unwrap_or(false),
        allocation,
    })
}

fn service_allocation(
    subject: &Subject,
    allocation: &crate::crd::ServiceAllocationSpec,
    report: &mut Report,
) -> Option<ServiceAllocation> {
    let mut ok = true;
    for (index, namespace) in allocation.namespaces.iter().enumerate() {
        if namespace.is_empty() {
            subject.problem(
                report,
                format!("spec.serviceAllocation.namespaces[{index}]"),
                "an empty namespace name; the pool is left out: remove it or name a namespace",
            );
            ok = false;
        }
    }
    if duplicate_names(
        subject,
        "spec.serviceAllocation.namespaces",
        &allocation.namespaces,
        "namespace",
        report,
    ) {
        ok = false;
    }
    let namespace_selectors = selectors(
        subject,
        "spec.serviceAllocation.namespaceSelectors",
        &allocation.namespace_selectors,
        report,
    );
    let service_selectors = selectors(
        subject,
        "spec.serviceAllocation.serviceSelectors",
        &allocation.service_selectors,
        report,
    );
    let (Some(namespace_selectors), Some(service_selectors), true) =
        (namespace_selectors, service_selectors, ok)
    else {
        return None;
    };
    Some(ServiceAllocation {
        priority: allocation.priority.unwrap_or(0),
        namespaces: allocation.namespaces.clone(),
        namespace_selectors,
        service_selectors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(text: &str) -> u8 {
        shortest_prefix(&text.parse().unwrap())
    }

    #[test]
    fn ranges_summarise_to_their_shortest_cidr() {
        assert_eq!(prefix("10.0.0.0/24"), 24);
        assert_eq!(prefix("10.0.0.0-10.0.0.255"), 24);
        assert_eq!(prefix("10.0.0.1-10.0.0.255"), 25);
        assert_eq!(prefix("192.168.0.150-192.168.0.200"), 27);
        assert_eq!(prefix("10.0.0.5-10.0.0.5"), 32);
        assert_eq!(prefix("0.0.0.0/0"), 0);
        assert_eq!(prefix("::/0"), 0);
        assert_eq!(prefix("fd00::/64"), 64);
        assert_eq!(prefix("::1-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), 1);
    }
}
