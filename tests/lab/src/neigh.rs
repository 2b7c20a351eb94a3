//! Neighbour checks from a lab namespace with the standard tools: the kernel's
//! neighbour table (`ip neigh`), ARP (`arping`) and NDP (`ndisc6`) probes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::{Netns, wait_until};

/// The MAC in `ns`'s neighbour entry for `ip` on `dev`, if any.
pub fn neighbour_mac(ns: &Netns, dev: &str, ip: IpAddr) -> Option<String> {
    let out = ns.sh(&format!("ip neigh show {ip} dev {dev}"));
    let mut words = out.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next().map(str::to_owned)
}

/// Waits (up to 20 s) for `ns`'s link-local address on `dev`: ndisc6 sends from it,
/// and it exists only some time after the link is up.
pub fn wait_link_local(ns: &Netns, dev: &str) {
    let ready = wait_until(Duration::from_secs(20), || {
        ns.sh(&format!("ip -6 addr show dev {dev} scope link"))
            .contains("fe80::")
    });
    assert!(ready, "no link-local address on {}'s {dev}", ns.name());
}

/// How many replies from `mac` (lower case) an arping output shows.
pub fn replies_from(output: &str, mac: &str) -> usize {
    output
        .lines()
        .filter(|l| l.to_lowercase().contains(mac))
        .count()
}

/// `arping -c count` for `ip` from `ns` on `dev`; what it printed.
pub fn arping(ns: &Netns, dev: &str, ip: Ipv4Addr, count: u32) -> String {
    let out = ns.exec(&format!("arping -c {count} -w {} -i {dev} {ip}", count + 2));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every MAC (lower case, sorted, once each) answering a Neighbor Solicitation for
/// `ip` sent from `ns` on `dev` (ndisc6 waiting for all answers).
pub fn ndisc_answers(ns: &Netns, dev: &str, ip: Ipv6Addr) -> Vec<String> {
    let out = ns.exec(&format!("ndisc6 -m -q -r 2 -w 1000 {ip} {dev}"));
    let mut macs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_lowercase())
        .filter(|l| !l.is_empty())
        .collect();
    macs.sort();
    macs.dedup();
    macs
}
