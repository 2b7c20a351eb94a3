//! ipvsadm's row order, reproduced exactly.
//!
//! ipvsadm sorts with the C library's `qsort`, which in glibc (Debian bookworm)
//! is a top-down merge sort, and its comparators subtract unsigned numbers into
//! an `int`. That subtraction wraps, so e.g. `10.0.0.1` sorts *after*
//! `200.0.0.1`. Both quirks are kept here so the order matches byte for byte.

use std::cmp::Ordering;
use std::net::IpAddr;

use super::table::{Destination, Service, ServiceKey};

/// `a - b` of two `u32`s read as a C `int`: the sign ipvsadm's comparators see.
fn wrapped_difference(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

fn address_words(address: &IpAddr) -> Vec<u32> {
    match address {
        IpAddr::V4(v4) => vec![u32::from(*v4)],
        IpAddr::V6(v6) => v6
            .octets()
            .chunks(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    }
}

/// The first nonzero word difference, as the C loops compute it.
fn compare_addresses(a: &IpAddr, b: &IpAddr) -> i32 {
    let (a, b) = (address_words(a), address_words(b));
    a.iter()
        .zip(&b)
        .map(|(x, y)| wrapped_difference(*x, *y))
        .find(|r| *r != 0)
        .unwrap_or(0)
}

/// ipvsadm's service comparator: fwmark, family, protocol, address, port.
pub fn cmp_services(a: &Service, b: &Service) -> i32 {
    let fwmark = |s: &Service| match s.key {
        ServiceKey::Fwmark { mark, .. } => mark,
        ServiceKey::Address { .. } => 0,
    };
    let r = wrapped_difference(fwmark(a), fwmark(b));
    if r != 0 {
        return r;
    }
    let r = i32::from(a.key.family().number()) - i32::from(b.key.family().number());
    if r != 0 {
        return r;
    }
    let r = i32::from(a.key.protocol()) - i32::from(b.key.protocol());
    if r != 0 {
        return r;
    }
    match (&a.key, &b.key) {
        (
            ServiceKey::Address {
                address: aa,
                port: ap,
                ..
            },
            ServiceKey::Address {
                address: ba,
                port: bp,
                ..
            },
        ) => {
            let r = compare_addresses(aa, ba);
            if r != 0 {
                return r;
            }
            i32::from(*ap) - i32::from(*bp)
        }
        _ => 0,
    }
}

/// ipvsadm's destination comparator: address, then port.
pub fn cmp_destinations(a: &Destination, b: &Destination) -> i32 {
    let r = compare_addresses(&a.address, &b.address);
    if r != 0 {
        return r;
    }
    i32::from(a.port) - i32::from(b.port)
}

/// glibc's `msort`: split in half (the smaller half first), sort each, merge
/// taking from the left while `cmp(left, right) <= 0`.
pub fn merge_sort<T: Copy>(items: &mut [T], cmp: impl Fn(&T, &T) -> i32 + Copy) {
    let n = items.len();
    if n <= 1 {
        return;
    }
    let n1 = n / 2;
    let (left, right) = items.split_at_mut(n1);
    merge_sort(left, cmp);
    merge_sort(right, cmp);
    let mut merged = Vec::with_capacity(n);
    let (mut i, mut j) = (0, 0);
    while i < left.len() && j < right.len() {
        if cmp(&left[i], &right[j]).cmp(&0) != Ordering::Greater {
            merged.push(left[i]);
            i += 1;
        } else {
            merged.push(right[j]);
            j += 1;
        }
    }
    merged.extend_from_slice(&left[i..]);
    merged.extend_from_slice(&right[j..]);
    items.copy_from_slice(&merged);
}

/// [`merge_sort`] for items that are not `Copy`: sorts their indices, then
/// reorders.
pub fn merge_sort_by<T: Clone>(items: &mut [T], cmp: impl Fn(&T, &T) -> i32 + Copy) {
    let mut order: Vec<usize> = (0..items.len()).collect();
    merge_sort(&mut order, |a, b| cmp(&items[*a], &items[*b]));
    let sorted: Vec<T> = order.iter().map(|i| items[*i].clone()).collect();
    items.clone_from_slice(&sorted);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_subtraction_puts_low_addresses_after_high_ones_like_ipvsadm() {
        let low: IpAddr = "10.0.0.1".parse().unwrap();
        let high: IpAddr = "200.0.0.1".parse().unwrap();
        let near: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(compare_addresses(&low, &high) > 0);
        assert!(compare_addresses(&low, &near) < 0);
        assert_eq!(compare_addresses(&low, &low), 0);
    }

    #[test]
    fn merge_sort_sorts_and_is_stable() {
        let mut items = [(3, 'a'), (1, 'b'), (3, 'c'), (2, 'd'), (1, 'e')];
        merge_sort(&mut items, |a, b| a.0 - b.0);
        assert_eq!(items, [(1, 'b'), (1, 'e'), (2, 'd'), (3, 'a'), (3, 'c')]);
    }
}
