//! Reads the listing's view of the kernel IPVS table through `ipvs-netlink`:
//! a thin conversion from that crate's types to [`super::table`].

use std::net::Ipv4Addr;

use ipvs_netlink::{AddressFamily, ForwardMethod, IpvsHandle, TunnelFlags};

use super::table::{
    Destination, Family, Forwarding, Netmask, Persistence, Service, ServiceFlags, ServiceKey,
    Stats, SyncDaemon, Table, Timeouts, Tunnel, TunnelChecksum, TunnelType,
};

/// Why the kernel's IPVS table could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading the kernel's IPVS table: {0}")]
pub struct Error(#[from] ipvs_netlink::Error);

/// The services, destinations, counters and version of the kernel's IPVS table
/// in this network namespace.
pub fn read_table() -> Result<Table, Error> {
    let mut handle = IpvsHandle::new()?;
    let info = handle.info()?;
    let services = handle
        .services_with_destinations()?
        .into_iter()
        .map(|(service, destinations)| service_view(service, destinations))
        .collect();
    Ok(Table {
        version: info.version_string(),
        connection_table_size: info.conn_table_size,
        services,
    })
}

/// The kernel's TCP, TCP FIN and UDP timeouts.
pub fn read_timeouts() -> Result<Timeouts, Error> {
    let timeouts = IpvsHandle::new()?.timeouts()?;
    Ok(Timeouts {
        tcp: timeouts.tcp,
        tcp_fin: timeouts.tcp_fin,
        udp: timeouts.udp,
    })
}

/// The running connection-synchronisation daemons, master first.
pub fn read_daemons() -> Result<Vec<SyncDaemon>, Error> {
    Ok(IpvsHandle::new()?
        .daemons()?
        .into_iter()
        .map(|daemon| SyncDaemon {
            role: daemon.role.to_string(),
            mcast_interface: daemon.mcast_interface,
            sync_id: daemon.sync_id,
            sync_max_len: daemon.sync_max_len,
            mcast_group: daemon.mcast_group,
            mcast_port: daemon.mcast_port,
            mcast_ttl: daemon.mcast_ttl,
        })
        .collect())
}

fn family(family: AddressFamily) -> Family {
    match family {
        AddressFamily::Inet => Family::Ipv4,
        AddressFamily::Inet6 => Family::Ipv6,
    }
}

/// The persistence netmask in the family's notation; the crate keeps a prefix length.
fn netmask(family: Family, prefix: u8) -> Netmask {
    match family {
        Family::Ipv4 => {
            let prefix = u32::from(prefix.min(32));
            let bits = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            Netmask::V4(Ipv4Addr::from(bits))
        }
        Family::Ipv6 => Netmask::V6(prefix),
    }
}

fn stats(stats: &ipvs_netlink::Stats) -> Stats {
    Stats {
        conns: stats.connections,
        inpkts: stats.in_packets,
        outpkts: stats.out_packets,
        inbytes: stats.in_bytes,
        outbytes: stats.out_bytes,
        cps: stats.connection_rate,
        inpps: stats.in_packet_rate,
        outpps: stats.out_packet_rate,
        inbps: stats.in_byte_rate,
        outbps: stats.out_byte_rate,
    }
}

/// Converts one service and its destinations.
pub fn service_view(
    service: ipvs_netlink::Service,
    destinations: Vec<ipvs_netlink::Destination>,
) -> Service {
    let key = match service.key {
        ipvs_netlink::ServiceKey::Inet {
            protocol,
            addr,
            port,
        } => ServiceKey::Address {
            protocol: protocol.number(),
            address: addr,
            port,
        },
        ipvs_netlink::ServiceKey::Fwmark { family: f, mark } => ServiceKey::Fwmark {
            mark,
            family: family(f),
        },
    };
    let persistence = service
        .flags
        .contains(ipvs_netlink::ServiceFlags::PERSISTENT)
        .then(|| Persistence {
            timeout: service.timeout,
            netmask: netmask(key.family(), service.netmask),
        });
    Service {
        persistence,
        persistence_engine: service.pe_name.filter(|name| !name.is_empty()),
        flags: ServiceFlags::from_bits(service.flags.bits()),
        scheduler: service.scheduler.name().to_owned(),
        stats: stats(&service.stats),
        destinations: destinations.iter().map(destination_view).collect(),
        key,
    }
}

fn destination_view(destination: &ipvs_netlink::Destination) -> Destination {
    let forwarding = match destination.forward {
        ForwardMethod::Masquerade => Forwarding::Masq,
        ForwardMethod::Local => Forwarding::Local,
        ForwardMethod::Tunnel => Forwarding::Tunnel,
        ForwardMethod::DirectRoute => Forwarding::Route,
        ForwardMethod::Bypass => Forwarding::Bypass,
    };
    let tunnel = (forwarding == Forwarding::Tunnel).then(|| Tunnel {
        kind: match destination.tunnel_type {
            ipvs_netlink::TunnelType::Ipip => TunnelType::Ipip,
            ipvs_netlink::TunnelType::Gue => TunnelType::Gue,
            ipvs_netlink::TunnelType::Gre => TunnelType::Gre,
        },
        port: destination.tunnel_port,
        checksum: if destination.tunnel_flags.contains(TunnelFlags::REMCSUM) {
            TunnelChecksum::Remote
        } else if destination.tunnel_flags.contains(TunnelFlags::CSUM) {
            TunnelChecksum::Checksum
        } else {
            TunnelChecksum::None
        },
    });
    Destination {
        address: destination.addr,
        port: destination.port,
        forwarding,
        tunnel,
        // ipvsadm prints the weight as a C int.
        weight: destination.weight as i32,
        upper_threshold: destination.upper_threshold,
        lower_threshold: destination.lower_threshold,
        active_conns: destination.active_connections,
        inactive_conns: destination.inactive_connections,
        persistent_conns: destination.persistent_connections,
        stats: stats(&destination.stats),
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    #[test]
    fn ipv4_prefixes_become_dotted_masks() {
        assert_eq!(
            netmask(Family::Ipv4, 24),
            Netmask::V4(Ipv4Addr::new(255, 255, 255, 0))
        );
        assert_eq!(netmask(Family::Ipv4, 32), Netmask::V4(Ipv4Addr::BROADCAST));
        assert_eq!(netmask(Family::Ipv4, 0), Netmask::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(netmask(Family::Ipv6, 64), Netmask::V6(64));
    }

    #[test]
    fn a_persistent_sh_service_converts_with_flags_and_tunnel() {
        let mut service = ipvs_netlink::Service::new(
            ipvs_netlink::ServiceKey::tcp(IpAddr::from([10, 96, 0, 1]), 80),
            ipvs_netlink::Scheduler::from_name("sh"),
        )
        .persistent(300);
        service.netmask = 24;
        service.flags |= ipvs_netlink::ServiceFlags::SH_PORT;
        let mut tunnel =
            ipvs_netlink::Destination::new(IpAddr::from([10, 0, 0, 2]), 80, ForwardMethod::Tunnel);
        tunnel.tunnel_type = ipvs_netlink::TunnelType::Gue;
        tunnel.tunnel_port = 6080;
        tunnel.tunnel_flags = TunnelFlags::CSUM;
        let view = service_view(service, vec![tunnel]);
        assert_eq!(view.scheduler, "sh");
        assert_eq!(view.flags.sched_flag_names("sh"), ["sh-port"]);
        assert_eq!(
            view.persistence,
            Some(Persistence {
                timeout: 300,
                netmask: Netmask::V4(Ipv4Addr::new(255, 255, 255, 0))
            })
        );
        assert_eq!(
            view.destinations[0].tunnel,
            Some(Tunnel {
                kind: TunnelType::Gue,
                port: 6080,
                checksum: TunnelChecksum::Checksum
            })
        );
    }
}
