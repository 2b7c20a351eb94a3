//! ipvsadm 1.31's text output, byte for byte: `-L` in all its formats and `-S`.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::names::{Resolver, addr_port, truncate_bytes};
use super::order::{cmp_destinations, cmp_services, merge_sort};
use super::table::{
    Destination, Family, Forwarding, Netmask, Service, ServiceKey, Stats, SyncDaemon, Table,
    Timeouts, TunnelChecksum, TunnelType, protocol,
};

/// Which columns the listing shows; the options of `ipvsadm -L`.
///
/// As in ipvsadm, the first of `stats`, `rate`, `thresholds`, `persistent_conn`,
/// `tun_info` that is set decides the columns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Format {
    /// Counters (`--stats`).
    pub stats: bool,
    /// Rates (`--rate`).
    pub rate: bool,
    /// Connection thresholds (`--thresholds`).
    pub thresholds: bool,
    /// Persistent connections (`--persistent-conn`).
    pub persistent_conn: bool,
    /// Tunnel details (`--tun-info`).
    pub tun_info: bool,
    /// Exact numbers instead of K/M/G/T scaling (`--exact`).
    pub exact: bool,
    /// Kernel order instead of ipvsadm's sort (`--nosort`).
    pub nosort: bool,
    /// Commands that recreate the table (`ipvsadm -S`).
    pub rules: bool,
}

/// The first line of a full listing.
pub fn version_line(table: &Table) -> String {
    format!(
        "IP Virtual Server version {} (size={})\n",
        table.version, table.connection_table_size
    )
}

/// A complete `ipvsadm -L` (or `-S` when `format.rules`).
pub fn list_all(table: &Table, format: Format, names: &dyn Resolver) -> String {
    let mut out = String::new();
    if !format.rules {
        out.push_str(&version_line(table));
    }
    let mut services: Vec<&Service> = table.services.iter().collect();
    if !format.nosort {
        merge_sort(&mut services, |a, b| cmp_services(a, b));
    }
    out.push_str(&title(format));
    for service in services {
        out.push_str(&service_entry(service, format, names));
    }
    out
}

/// `ipvsadm -L -t|-u|-f ...`: the title and one service, without the version line.
pub fn list_one(service: &Service, format: Format, names: &dyn Resolver) -> String {
    let mut out = title(format);
    out.push_str(&service_entry(service, format, names));
    out
}

/// `ipvsadm -L --timeout`.
pub fn timeouts(timeouts: &Timeouts) -> String {
    format!(
        "Timeout (tcp tcpfin udp): {} {} {}\n",
        timeouts.tcp, timeouts.tcp_fin, timeouts.udp
    )
}

/// `ipvsadm -L --daemon`: one line per running sync daemon, master first; settings
/// the kernel does not report (or reports as 0) are left out, as ipvsadm does.
pub fn daemons(daemons: &[SyncDaemon]) -> String {
    let mut out = String::new();
    for daemon in daemons {
        let _ = write!(
            out,
            "{} sync daemon (mcast={}, syncid={}",
            daemon.role, daemon.mcast_interface, daemon.sync_id
        );
        if let Some(max_len) = daemon.sync_max_len.filter(|len| *len != 0) {
            let _ = write!(out, ", maxlen={max_len}");
        }
        if let Some(group) = daemon.mcast_group {
            let _ = write!(out, ", group={group}");
        }
        if let Some(port) = daemon.mcast_port.filter(|port| *port != 0) {
            let _ = write!(out, ", port={port}");
        }
        if let Some(ttl) = daemon.mcast_ttl.filter(|ttl| *ttl != 0) {
            let _ = write!(out, ", ttl={ttl}");
        }
        out.push_str(")\n");
    }
    out
}

/// The column titles for `format`.
pub fn title(format: Format) -> String {
    const LOCAL: &str = "Prot LocalAddress:Port";
    const REMOTE: &str = "  -> RemoteAddress:Port\n";
    if format.stats {
        format!(
            "{LOCAL:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n{REMOTE}",
            "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
        )
    } else if format.rate {
        format!(
            "{LOCAL:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n{REMOTE}",
            "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"
        )
    } else if format.thresholds {
        format!(
            "{LOCAL:<33} {:<10} {:<10} {:<10} {:<10}\n{REMOTE}",
            "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
        )
    } else if format.persistent_conn {
        format!(
            "{LOCAL:<33} {:<9} {:<11} {:<10} {:<10}\n{REMOTE}",
            "Weight", "PersistConn", "ActiveConn", "InActConn"
        )
    } else if format.tun_info {
        "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n".to_owned()
    } else if !format.rules {
        "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n".to_owned()
    } else {
        String::new()
    }
}

/// A counter as ipvsadm's `print_largenum`: 9 columns, scaled to K/M/G/T past
/// 100 million unless `exact`.
pub fn large_number(value: u64, exact: bool) -> String {
    if exact {
        let width = value.to_string().len().max(8) + 1;
        return format!("{value:>width$}");
    }
    match value {
        0..100_000_000 => format!("{value:>9}"),
        100_000_000..1_000_000_000 => format!("{:>8}K", value / 1_000),
        1_000_000_000..100_000_000_000 => format!("{:>8}M", value / 1_000_000),
        100_000_000_000..100_000_000_000_000 => format!("{:>8}G", value / 1_000_000_000),
        _ => format!("{:>8}T", value / 1_000_000_000_000),
    }
}

fn protocol_name(protocol: u16) -> &'static str {
    match protocol {
        protocol::TCP => "TCP",
        protocol::UDP => "UDP",
        protocol::SCTP => "SCTP",
        _ => "?",
    }
}

fn protocol_option(protocol: u16) -> &'static str {
    match protocol {
        protocol::TCP => "-t",
        protocol::UDP => "-u",
        protocol::SCTP => "--sctp-service",
        _ => "--xxx-service",
    }
}

/// ipvsadm names forwarding methods it has no word for with C's "(null)".
fn forwarding_name(forwarding: Forwarding) -> &'static str {
    match forwarding {
        Forwarding::Masq => "Masq",
        Forwarding::Local => "Local",
        Forwarding::Tunnel => "Tunnel",
        Forwarding::Route => "Route",
        Forwarding::Bypass => "(null)",
    }
}

fn forwarding_switch(forwarding: Forwarding) -> &'static str {
    match forwarding {
        Forwarding::Masq => "-m",
        Forwarding::Tunnel => "-i",
        Forwarding::Local | Forwarding::Route => "-g",
        Forwarding::Bypass => "(null)",
    }
}

fn tunnel_name(kind: TunnelType) -> &'static str {
    match kind {
        TunnelType::Ipip => "ipip",
        TunnelType::Gue => "gue",
        TunnelType::Gre => "gre",
    }
}

fn checksum_short(checksum: TunnelChecksum) -> &'static str {
    match checksum {
        TunnelChecksum::None => "-c",
        TunnelChecksum::Checksum => "+c",
        TunnelChecksum::Remote => "r+c",
    }
}

fn checksum_option(checksum: TunnelChecksum) -> &'static str {
    match checksum {
        TunnelChecksum::None => "--tun-nocsum",
        TunnelChecksum::Checksum => "--tun-csum",
        TunnelChecksum::Remote => "--tun-remcsum",
    }
}

fn tunnel_info(destination: &Destination) -> String {
    match (destination.forwarding, destination.tunnel) {
        (Forwarding::Tunnel, Some(tunnel)) => match tunnel.kind {
            TunnelType::Ipip => "ipip".to_owned(),
            TunnelType::Gue => format!("gue:{}:{}", tunnel.port, checksum_short(tunnel.checksum)),
            TunnelType::Gre => format!("gre:{}", checksum_short(tunnel.checksum)),
        },
        _ => "n/a".to_owned(),
    }
}

fn netmask_text(netmask: Netmask) -> String {
    match netmask {
        Netmask::V4(mask) => mask.to_string(),
        Netmask::V6(prefix) => prefix.to_string(),
    }
}

fn service_name(service: &Service, format: Format, names: &dyn Resolver) -> String {
    match &service.key {
        ServiceKey::Fwmark { mark, family } => match (format.rules, family) {
            (true, Family::Ipv6) => format!("-f {mark} -6"),
            (true, Family::Ipv4) => format!("-f {mark}"),
            (false, Family::Ipv6) => format!("FWM  {mark} IPv6"),
            (false, Family::Ipv4) => format!("FWM  {mark}"),
        },
        ServiceKey::Address {
            protocol,
            address,
            port,
        } => {
            let virtual_name = addr_port(names, *address, *port, *protocol);
            if format.rules {
                format!("{} {virtual_name}", protocol_option(*protocol))
            } else {
                let text = format!("{:<4} {virtual_name}", protocol_name(*protocol));
                match address {
                    IpAddr::V4(_) => truncate_bytes(text, 33),
                    IpAddr::V6(_) => text,
                }
            }
        }
    }
}

/// One service line and its destination lines.
pub fn service_entry(service: &Service, format: Format, names: &dyn Resolver) -> String {
    let mut out = String::new();
    let name = service_name(service, format, names);
    let sched_flags = service.flags.sched_flag_names(&service.scheduler).join(",");
    if format.rules {
        let _ = write!(out, "-A {name} -s {}", service.scheduler);
        if let Some(persistence) = &service.persistence {
            let _ = write!(out, " -p {}", persistence.timeout);
            if !persistence.netmask.is_host() {
                let _ = write!(out, " -M {}", netmask_text(persistence.netmask));
            }
        }
        if let Some(engine) = &service.persistence_engine {
            let _ = write!(out, " --pe {engine}");
        }
        if service.flags.one_packet {
            out.push_str(" -o");
        }
        if service.flags.any_sched_flag() {
            let _ = write!(out, " -b {sched_flags}");
        }
    } else if format.stats {
        let _ = write!(
            out,
            "{name:<33}{}",
            stats_columns(&service.stats, format.exact)
        );
    } else if format.rate {
        let _ = write!(
            out,
            "{name:<33}{}",
            rate_columns(&service.stats, format.exact)
        );
    } else {
        let _ = write!(out, "{name} {}", service.scheduler);
        if service.flags.any_sched_flag() {
            let _ = write!(out, " ({sched_flags})");
        }
        if let Some(persistence) = &service.persistence {
            let _ = write!(out, " persistent {}", persistence.timeout);
            if !persistence.netmask.is_host() {
                let _ = write!(out, " mask {}", netmask_text(persistence.netmask));
            }
            // ipvsadm shows the persistence engine only for persistent services.
            if let Some(engine) = &service.persistence_engine {
                let _ = write!(out, " pe {engine}");
            }
        }
        if service.flags.one_packet {
            out.push_str(" ops");
        }
    }
    out.push('\n');

    let mut destinations: Vec<&Destination> = service.destinations.iter().collect();
    if !format.nosort {
        merge_sort(&mut destinations, |a, b| cmp_destinations(a, b));
    }
    let protocol = service.key.protocol();
    for destination in destinations {
        let mut dname = addr_port(names, destination.address, destination.port, protocol);
        if !format.rules && Family::of(&destination.address) == Family::Ipv4 {
            dname = truncate_bytes(dname, 28);
        }
        destination_line(&mut out, destination, &name, &dname, format);
    }
    out
}

fn destination_line(
    out: &mut String,
    d: &Destination,
    service_name: &str,
    dname: &str,
    format: Format,
) {
    if format.rules {
        let _ = write!(
            out,
            "-a {service_name} -r {dname} {} -w {}",
            forwarding_switch(d.forwarding),
            d.weight
        );
        if let (Forwarding::Tunnel, Some(tunnel)) = (d.forwarding, d.tunnel) {
            let _ = write!(out, " --tun-type {}", tunnel_name(tunnel.kind));
            match tunnel.kind {
                TunnelType::Ipip => {}
                TunnelType::Gue => {
                    let _ = write!(
                        out,
                        " --tun-port {} {}",
                        tunnel.port,
                        checksum_option(tunnel.checksum)
                    );
                }
                TunnelType::Gre => {
                    let _ = write!(out, " {}", checksum_option(tunnel.checksum));
                }
            }
        }
        out.push('\n');
    } else if format.stats {
        let _ = writeln!(
            out,
            "  -> {dname:<28}{}",
            stats_columns(&d.stats, format.exact)
        );
    } else if format.rate {
        // ipvsadm prints the connection and packet rates of destinations unscaled.
        let _ = writeln!(
            out,
            "  -> {dname:<28} {:>8} {:>8} {:>8}{}{}",
            d.stats.cps,
            d.stats.inpps,
            d.stats.outpps,
            large_number(d.stats.inbps, format.exact),
            large_number(d.stats.outbps, format.exact)
        );
    } else if format.thresholds {
        let _ = writeln!(
            out,
            "  -> {dname:<28} {:<10} {:<10} {:<10} {:<10}",
            d.upper_threshold, d.lower_threshold, d.active_conns, d.inactive_conns
        );
    } else if format.persistent_conn {
        let _ = writeln!(
            out,
            "  -> {dname:<28} {:<9} {:<11} {:<10} {:<10}",
            d.weight, d.persistent_conns, d.active_conns, d.inactive_conns
        );
    } else if format.tun_info {
        let _ = writeln!(
            out,
            "  -> {dname:<28} {:<7} {:<13} {:<6} {:<10} {:<10}",
            forwarding_name(d.forwarding),
            tunnel_info(d),
            d.weight,
            d.active_conns,
            d.inactive_conns
        );
    } else {
        let _ = writeln!(
            out,
            "  -> {dname:<28} {:<7} {:<6} {:<10} {:<10}",
            forwarding_name(d.forwarding),
            d.weight,
            d.active_conns,
            d.inactive_conns
        );
    }
}

fn stats_columns(stats: &Stats, exact: bool) -> String {
    [
        stats.conns,
        stats.inpkts,
        stats.outpkts,
        stats.inbytes,
        stats.outbytes,
    ]
    .into_iter()
    .map(|n| large_number(n, exact))
    .collect()
}

fn rate_columns(stats: &Stats, exact: bool) -> String {
    [
        stats.cps,
        stats.inpps,
        stats.outpps,
        stats.inbps,
        stats.outbps,
    ]
    .into_iter()
    .map(|n| large_number(n, exact))
    .collect()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::listing::names::Numeric;
    use crate::listing::table::{Persistence, ServiceFlags};

    fn destination(address: &str, port: u16, forwarding: Forwarding, weight: i32) -> Destination {
        Destination {
            address: address.parse().unwrap(),
            port,
            forwarding,
            tunnel: None,
            weight,
            upper_threshold: 0,
            lower_threshold: 0,
            active_conns: 0,
            inactive_conns: 0,
            persistent_conns: 0,
            stats: Stats::default(),
        }
    }

    fn service(key: ServiceKey, scheduler: &str, destinations: Vec<Destination>) -> Service {
        Service {
            key,
            scheduler: scheduler.to_owned(),
            persistence: None,
            persistence_engine: None,
            flags: ServiceFlags::default(),
            stats: Stats::default(),
            destinations,
        }
    }

    fn tcp(address: &str, port: u16) -> ServiceKey {
        ServiceKey::Address {
            protocol: protocol::TCP,
            address: address.parse().unwrap(),
            port,
        }
    }

    #[test]
    fn numbers_scale_at_ipvsadm_thresholds() {
        assert_eq!(large_number(0, false), "        0");
        assert_eq!(large_number(99_999_999, false), " 99999999");
        assert_eq!(large_number(100_000_000, false), "  100000K");
        assert_eq!(large_number(999_999_999, false), "  999999K");
        assert_eq!(large_number(1_000_000_000, false), "    1000M");
        assert_eq!(large_number(99_999_999_999, false), "   99999M");
        assert_eq!(large_number(100_000_000_000, false), "     100G");
        assert_eq!(large_number(100_000_000_000_000, false), "     100T");
        assert_eq!(large_number(u64::MAX, false), "18446744T");
    }

    #[test]
    fn exact_numbers_keep_one_space_once_wider_than_eight_digits() {
        assert_eq!(large_number(7, true), "        7");
        assert_eq!(large_number(12_345_678, true), " 12345678");
        assert_eq!(large_number(123_456_789, true), " 123456789");
        assert_eq!(large_number(u64::MAX, true), " 18446744073709551615");
    }

    #[test]
    fn default_listing_has_ipvsadm_columns_and_trailing_padding() {
        let mut persistent = service(
            tcp("10.96.0.11", 443),
            "sh",
            vec![destination("10.244.1.6", 443, Forwarding::Route, 1)],
        );
        persistent.persistence = Some(Persistence {
            timeout: 360,
            netmask: Netmask::V4(Ipv4Addr::new(255, 255, 255, 0)),
        });
        persistent.flags.sched_flag_1 = true;
        persistent.flags.sched_flag_2 = true;
        persistent.flags.one_packet = true;
        let table = Table {
            version: "1.2.1".into(),
            connection_table_size: 4096,
            services: vec![
                persistent,
                service(
                    tcp("10.96.0.10", 80),
                    "rr",
                    vec![
                        destination("10.244.1.5", 8080, Forwarding::Masq, 3),
                        destination("10.244.1.4", 8080, Forwarding::Tunnel, 0),
                    ],
                ),
                service(
                    ServiceKey::Fwmark {
                        mark: 7,
                        family: Family::Ipv6,
                    },
                    "wlc",
                    vec![destination("2001:db8::5", 0, Forwarding::Local, 1)],
                ),
            ],
        };
        let text = list_all(&table, Format::default(), &Numeric);
        assert_eq!(
            text,
            "IP Virtual Server version 1.2.1 (size=4096)\n\
Prot LocalAddress:Port Scheduler Flags\n\
\x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
TCP  10.96.0.10:80 rr\n\
\x20 -> 10.244.1.4:8080              Tunnel  0      0          0         \n\
\x20 -> 10.244.1.5:8080              Masq    3      0          0         \n\
TCP  10.96.0.11:443 sh (sh-fallback,sh-port) persistent 360 mask 255.255.255.0 ops\n\
\x20 -> 10.244.1.6:443               Route   1      0          0         \n\
FWM  7 IPv6 wlc\n\
\x20 -> [2001:db8::5]:0              Local   1      0          0         \n"
        );
    }

    #[test]
    fn stats_columns_are_nine_wide_after_a_33_wide_name() {
        let mut svc = service(
            tcp("10.0.0.1", 80),
            "rr",
            vec![destination("10.0.0.2", 80, Forwarding::Masq, 1)],
        );
        svc.stats.conns = 5;
        svc.stats.inbytes = 123_456_789_012;
        svc.destinations[0].stats.inpkts = 42;
        let format = Format {
            stats: true,
            ..Format::default()
        };
        assert_eq!(
            list_one(&svc, format, &Numeric),
            "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n\
\x20 -> RemoteAddress:Port\n\
TCP  10.0.0.1:80                         5        0        0     123G        0\n\
\x20 -> 10.0.0.2:80                         0       42        0        0        0\n"
        );
    }

    #[test]
    fn rules_recreate_the_service_like_ipvsadm_save() {
        let mut svc = service(
            tcp("10.0.0.1", 80),
            "mh",
            vec![destination("10.0.0.2", 80, Forwarding::Route, 2)],
        );
        svc.flags.sched_flag_1 = true;
        svc.persistence = Some(Persistence {
            timeout: 300,
            netmask: Netmask::V4(Ipv4Addr::BROADCAST),
        });
        let format = Format {
            rules: true,
            ..Format::default()
        };
        assert_eq!(
            service_entry(&svc, format, &Numeric),
            "-A -t 10.0.0.1:80 -s mh -p 300 -b mh-fallback\n-a -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 2\n"
        );
    }
}
