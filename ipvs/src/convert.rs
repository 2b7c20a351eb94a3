//! Conversion between the plain types and the wire attributes, and request building.
//! No I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::error::{Error, Operation};
use crate::packet::constants::*;
use crate::packet::{
    Attribute, DaemonAttribute, DestinationAttribute, IpvsMessage, ServiceAttribute,
    StatsAttribute, StatsField,
};
use crate::types::*;

/// Longest scheduler or persistence engine name the kernel accepts (without the NUL).
pub const MAX_NAME_LEN: usize = 15;

/// One request ready to send: the message and what to say about it if it fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The message.
    pub message: IpvsMessage,
    /// What it does, for errors.
    pub operation: Operation,
    /// Which object it touches, for errors.
    pub object: String,
}

/// The 16-byte `union nf_inet_addr` the kernel uses for addresses.
pub fn encode_address(addr: &IpAddr) -> Vec<u8> {
    let mut bytes = vec![0; 16];
    match addr {
        IpAddr::V4(v4) => bytes[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => bytes.copy_from_slice(&v6.octets()),
    }
    bytes
}

/// Reads an address of the given family from `union nf_inet_addr` bytes.
pub fn decode_address(family: AddressFamily, bytes: &[u8]) -> Result<IpAddr, String> {
    match family {
        AddressFamily::Inet if bytes.len() >= 4 => Ok(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        AddressFamily::Inet6 if bytes.len() >= 16 => {
            let mut octets = [0; 16];
            octets.copy_from_slice(&bytes[..16]);
            Ok(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => Err(format!(
            "{}-byte address is too short for {family:?}",
            bytes.len()
        )),
    }
}

/// The attributes that identify a service.
pub fn key_attributes(key: &ServiceKey) -> Vec<ServiceAttribute> {
    match key {
        ServiceKey::Inet {
            protocol,
            addr,
            port,
        } => vec![
            ServiceAttribute::AddressFamily(AddressFamily::of(addr).number()),
            ServiceAttribute::Protocol(protocol.number()),
            ServiceAttribute::Address(encode_address(addr)),
            ServiceAttribute::Port(*port),
        ],
        ServiceKey::Fwmark { family, mark } => vec![
            ServiceAttribute::AddressFamily(family.number()),
            ServiceAttribute::Fwmark(*mark),
        ],
    }
}

fn check_name(what: &str, name: &str, object: &dyn std::fmt::Display) -> Result<(), Error> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.contains('\0') {
        return Err(Error::InvalidInput {
            object: format!("service {object}"),
            reason: format!(
                "{what} name {name:?} must be 1 to {MAX_NAME_LEN} bytes without NUL (e.g. rr, wlc, sh)"
            ),
        });
    }
    Ok(())
}

/// Every attribute of a service, as an add or edit request carries them.
pub fn service_attributes(service: &Service) -> Result<Vec<ServiceAttribute>, Error> {
    check_name("scheduler", service.scheduler.name(), &service.key)?;
    let netmask = match service.key.family() {
        AddressFamily::Inet if service.netmask <= 32 => {
            let mask = if service.netmask == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(service.netmask))
            };
            mask.to_be_bytes()
        }
        AddressFamily::Inet6 if service.netmask <= 128 => u32::from(service.netmask).to_ne_bytes(),
        family => {
            return Err(Error::InvalidInput {
                object: format!("service {}", service.key),
                reason: format!(
                    "netmask /{} is longer than a {family:?} address",
                    service.netmask
                ),
            });
        }
    };
    let mut attrs = key_attributes(&service.key);
    attrs.push(ServiceAttribute::Scheduler(
        service.scheduler.name().to_string(),
    ));
    if let Some(pe) = &service.pe_name {
        check_name("persistence engine", pe, &service.key)?;
        attrs.push(ServiceAttribute::PersistenceEngine(pe.clone()));
    }
    attrs.push(ServiceAttribute::Flags {
        flags: (service.flags - ServiceFlags::HASHED).bits(),
        mask: !0,
    });
    attrs.push(ServiceAttribute::Timeout(service.timeout));
    attrs.push(ServiceAttribute::Netmask(netmask));
    Ok(attrs)
}

/// The attributes that identify a destination.
pub fn destination_key_attributes(key: &DestinationKey) -> Vec<DestinationAttribute> {
    vec![
        DestinationAttribute::AddressFamily(AddressFamily::of(&key.addr).number()),
        DestinationAttribute::Address(encode_address(&key.addr)),
        DestinationAttribute::Port(key.port),
    ]
}

/// Every writable attribute of a destination, as an add or edit request carries them.
pub fn destination_attributes(dest: &Destination) -> Vec<DestinationAttribute> {
    let mut attrs = destination_key_attributes(&dest.key());
    attrs.extend([
        DestinationAttribute::ForwardMethod(dest.forward.number()),
        DestinationAttribute::Weight(dest.weight),
        DestinationAttribute::UpperThreshold(dest.upper_threshold),
        DestinationAttribute::LowerThreshold(dest.lower_threshold),
    ]);
    if dest.forward == ForwardMethod::Tunnel {
        attrs.extend([
            DestinationAttribute::TunnelType(dest.tunnel_type.number()),
            DestinationAttribute::TunnelPort(dest.tunnel_port),
            DestinationAttribute::TunnelFlags(dest.tunnel_flags.bits()),
        ]);
    }
    attrs
}

/// Reads counters from a statistics nest.
pub fn stats_from_attributes(attrs: &[StatsAttribute]) -> Stats {
    let mut stats = Stats::default();
    for attr in attrs {
        let (field, value) = match attr {
            StatsAttribute::Counter32(field, value) => (*field, u64::from(*value)),
            StatsAttribute::Counter64(field, value) => (*field, *value),
            StatsAttribute::Other(_) => continue,
        };
        let slot = match field {
            StatsField::Connections => &mut stats.connections,
            StatsField::InPackets => &mut stats.in_packets,
            StatsField::OutPackets => &mut stats.out_packets,
            StatsField::InBytes => &mut stats.in_bytes,
            StatsField::OutBytes => &mut stats.out_bytes,
            StatsField::ConnectionRate => &mut stats.connection_rate,
            StatsField::InPacketRate => &mut stats.in_packet_rate,
            StatsField::OutPacketRate => &mut stats.out_packet_rate,
            StatsField::InByteRate => &mut stats.in_byte_rate,
            StatsField::OutByteRate => &mut stats.out_byte_rate,
        };
        *slot = value;
    }
    stats
}

/// Builds a [`Service`] from the kernel's service nest.
pub fn service_from_attributes(attrs: &[ServiceAttribute]) -> Result<Service, String> {
    let mut family = None;
    let mut protocol = None;
    let mut address = None;
    let mut port = 0;
    let mut fwmark = None;
    let mut scheduler = None;
    let mut flags = 0;
    let mut timeout = 0;
    let mut netmask = None;
    let mut pe_name = None;
    let mut stats32 = None;
    let mut stats64 = None;
    for attr in attrs {
        match attr {
            ServiceAttribute::AddressFamily(af) => family = Some(*af),
            ServiceAttribute::Protocol(p) => protocol = Some(*p),
            ServiceAttribute::Address(bytes) => address = Some(bytes.as_slice()),
            ServiceAttribute::Port(p) => port = *p,
            ServiceAttribute::Fwmark(mark) => fwmark = Some(*mark),
            ServiceAttribute::Scheduler(name) => scheduler = Some(Scheduler::from_name(name)),
            ServiceAttribute::Flags { flags: f, .. } => flags = *f,
            ServiceAttribute::Timeout(t) => timeout = *t,
            ServiceAttribute::Netmask(raw) => netmask = Some(*raw),
            ServiceAttribute::PersistenceEngine(pe) => pe_name = Some(pe.clone()),
            ServiceAttribute::Stats(s) => stats32 = Some(s.as_slice()),
            ServiceAttribute::Stats64(s) => stats64 = Some(s.as_slice()),
            ServiceAttribute::Other(_) => {}
        }
    }
    let af = family.ok_or("service without address family")?;
    let family = AddressFamily::from_number(af)
        .ok_or_else(|| format!("service with unsupported address family {af}"))?;
    let key = match (fwmark, protocol, address) {
        (Some(mark), _, _) if mark != 0 => ServiceKey::Fwmark { family, mark },
        (_, Some(number), Some(bytes)) => ServiceKey::Inet {
            protocol: Protocol::from_number(number)
                .ok_or_else(|| format!("service with unsupported protocol {number}"))?,
            addr: decode_address(family, bytes)?,
            port,
        },
        _ => return Err("service without firewall mark or protocol and address".into()),
    };
    let netmask = match (family, netmask) {
        (AddressFamily::Inet, Some(raw)) => u32::from_be_bytes(raw).leading_ones() as u8,
        (AddressFamily::Inet6, Some(raw)) => u32::from_ne_bytes(raw).min(128) as u8,
        (AddressFamily::Inet, None) => 32,
        (AddressFamily::Inet6, None) => 128,
    };
    Ok(Service {
        key,
        scheduler: scheduler.ok_or("service without scheduler")?,
        flags: ServiceFlags::from_bits_retain(flags),
        timeout,
        netmask,
        pe_name,
        stats: stats_from_attributes(stats64.or(stats32).unwrap_or_default()),
    })
}

/// Builds a [`Destination`] from the kernel's destination nest. `service_family` is used
/// when the kernel does not say the destination's own family (kernels before 4.3).
pub fn destination_from_attributes(
    attrs: &[DestinationAttribute],
    service_family: AddressFamily,
) -> Result<Destination, String> {
    let mut family = service_family;
    let mut address = None;
    let mut dest = Destination::new(
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        0,
        ForwardMethod::Masquerade,
    );
    let mut stats32 = None;
    let mut stats64 = None;
    for attr in attrs {
        match attr {
            DestinationAttribute::Address(bytes) => address = Some(bytes.as_slice()),
            DestinationAttribute::Port(port) => dest.port = *port,
            DestinationAttribute::ForwardMethod(method) => {
                dest.forward = ForwardMethod::from_number(*method)
                    .ok_or_else(|| format!("unknown forwarding method {method}"))?
            }
            DestinationAttribute::Weight(weight) => dest.weight = *weight,
            DestinationAttribute::UpperThreshold(t) => dest.upper_threshold = *t,
            DestinationAttribute::LowerThreshold(t) => dest.lower_threshold = *t,
            DestinationAttribute::ActiveConnections(n) => dest.active_connections = *n,
            DestinationAttribute::InactiveConnections(n) => dest.inactive_connections = *n,
            DestinationAttribute::PersistentConnections(n) => dest.persistent_connections = *n,
            DestinationAttribute::Stats(s) => stats32 = Some(s.as_slice()),
            DestinationAttribute::Stats64(s) => stats64 = Some(s.as_slice()),
            DestinationAttribute::AddressFamily(af) => {
                family = AddressFamily::from_number(*af)
                    .ok_or_else(|| format!("destination with unsupported address family {af}"))?
            }
            DestinationAttribute::TunnelType(t) => {
                dest.tunnel_type =
                    TunnelType::from_number(*t).ok_or_else(|| format!("unknown tunnel type {t}"))?
            }
            DestinationAttribute::TunnelPort(port) => dest.tunnel_port = *port,
            DestinationAttribute::TunnelFlags(flags) => {
                dest.tunnel_flags = TunnelFlags::from_bits_retain(*flags)
            }
            DestinationAttribute::Other(_) => {}
        }
    }
    dest.addr = decode_address(family, address.ok_or("destination without address")?)?;
    dest.stats = stats_from_attributes(stats64.or(stats32).unwrap_or_default());
    Ok(dest)
}

fn destination_object(key: &ServiceKey, dest: &DestinationKey) -> String {
    format!("{key} -> {dest}")
}

/// The request that applies one change.
pub fn change_request(change: &Change) -> Result<Request, Error> {
    Ok(match change {
        Change::AddService(service) | Change::EditService(service) => {
            let (command, operation) = match change {
                Change::AddService(_) => (IPVS_CMD_NEW_SERVICE, Operation::AddService),
                _ => (IPVS_CMD_SET_SERVICE, Operation::EditService),
            };
            Request {
                message: IpvsMessage::new(
                    command,
                    vec![Attribute::Service(service_attributes(service)?)],
                ),
                operation,
                object: service.key.to_string(),
            }
        }
        Change::DeleteService(key) => Request {
            message: IpvsMessage::new(
                IPVS_CMD_DEL_SERVICE,
                vec![Attribute::Service(key_attributes(key))],
            ),
            operation: Operation::DeleteService,
            object: key.to_string(),
        },
        Change::AddDestination(key, dest) | Change::EditDestination(key, dest) => {
            let (command, operation) = match change {
                Change::AddDestination(..) => (IPVS_CMD_NEW_DEST, Operation::AddDestination),
                _ => (IPVS_CMD_SET_DEST, Operation::EditDestination),
            };
            Request {
                message: IpvsMessage::new(
                    command,
                    vec![
                        Attribute::Service(key_attributes(key)),
                        Attribute::Destination(destination_attributes(dest)),
                    ],
                ),
                operation,
                object: destination_object(key, &dest.key()),
            }
        }
        Change::DeleteDestination(key, dest) => Request {
            message: IpvsMessage::new(
                IPVS_CMD_DEL_DEST,
                vec![
                    Attribute::Service(key_attributes(key)),
                    Attribute::Destination(destination_key_attributes(dest)),
                ],
            ),
            operation: Operation::DeleteDestination,
            object: destination_object(key, dest),
        },
    })
}

/// The request that sets timeouts (0 leaves a value unchanged).
pub fn set_timeouts_request(timeouts: &Timeouts) -> Request {
    Request {
        message: IpvsMessage::new(
            IPVS_CMD_SET_CONFIG,
            vec![
                Attribute::TimeoutTcp(timeouts.tcp),
                Attribute::TimeoutTcpFin(timeouts.tcp_fin),
                Attribute::TimeoutUdp(timeouts.udp),
            ],
        ),
        operation: Operation::SetTimeouts,
        object: format!(
            "to tcp {} tcpfin {} udp {}",
            timeouts.tcp, timeouts.tcp_fin, timeouts.udp
        ),
    }
}

/// The request that zeroes the counters of one service, or of all when `key` is `None`.
pub fn zero_request(key: Option<&ServiceKey>) -> Request {
    match key {
        Some(key) => Request {
            message: IpvsMessage::new(IPVS_CMD_ZERO, vec![Attribute::Service(key_attributes(key))]),
            operation: Operation::Zero,
            object: key.to_string(),
        },
        None => Request {
            message: IpvsMessage::new(IPVS_CMD_ZERO, vec![]),
            operation: Operation::Zero,
            object: "all services".to_string(),
        },
    }
}

/// Reads timeouts from the reply to `IPVS_CMD_GET_CONFIG`.
pub fn timeouts_from_message(message: &IpvsMessage) -> Timeouts {
    let mut timeouts = Timeouts::default();
    for attr in &message.attributes {
        match attr {
            Attribute::TimeoutTcp(t) => timeouts.tcp = *t,
            Attribute::TimeoutTcpFin(t) => timeouts.tcp_fin = *t,
            Attribute::TimeoutUdp(t) => timeouts.udp = *t,
            _ => {}
        }
    }
    timeouts
}

/// Reads version and table size from the reply to `IPVS_CMD_GET_INFO`.
pub fn info_from_message(message: &IpvsMessage) -> Result<Info, String> {
    let mut version = None;
    let mut size = None;
    for attr in &message.attributes {
        match attr {
            Attribute::Version(v) => version = Some(*v),
            Attribute::ConnTableSize(s) => size = Some(*s),
            _ => {}
        }
    }
    Ok(Info {
        version: version.ok_or("info reply without version")?,
        conn_table_size: size.ok_or("info reply without connection table size")?,
    })
}

/// The dump request that lists every service.
pub fn list_services_request() -> Request {
    Request {
        message: IpvsMessage::new(IPVS_CMD_GET_SERVICE, vec![]),
        operation: Operation::ListServices,
        object: String::new(),
    }
}

/// The request that reads one service.
pub fn get_service_request(key: &ServiceKey) -> Request {
    Request {
        message: IpvsMessage::new(
            IPVS_CMD_GET_SERVICE,
            vec![Attribute::Service(key_attributes(key))],
        ),
        operation: Operation::GetService,
        object: key.to_string(),
    }
}

/// The dump request that lists the destinations of a service.
pub fn list_destinations_request(key: &ServiceKey) -> Request {
    Request {
        message: IpvsMessage::new(
            IPVS_CMD_GET_DEST,
            vec![Attribute::Service(key_attributes(key))],
        ),
        operation: Operation::ListDestinations,
        object: key.to_string(),
    }
}

/// The request that reads version and connection table size.
pub fn info_request() -> Request {
    Request {
        message: IpvsMessage::new(IPVS_CMD_GET_INFO, vec![]),
        operation: Operation::GetInfo,
        object: String::new(),
    }
}

/// The request that reads the timeouts.
pub fn timeouts_request() -> Request {
    Request {
        message: IpvsMessage::new(IPVS_CMD_GET_CONFIG, vec![]),
        operation: Operation::GetTimeouts,
        object: String::new(),
    }
}

/// The request that deletes every service. Dangerous: it removes all IPVS state of the
/// network namespace, including services this program did not create.
pub fn flush_request() -> Request {
    Request {
        message: IpvsMessage::new(IPVS_CMD_FLUSH, vec![]),
        operation: Operation::Flush,
        object: String::new(),
    }
}

fn decode_error(request: &Request, reason: String) -> Error {
    Error::Decode {
        operation: request.operation,
        object: request.object.clone(),
        reason,
    }
}

/// Services from the replies to [`list_services_request`] or [`get_service_request`].
///
/// Repeated services are dropped: the kernel keeps the services of every network namespace
/// in one global hash table and resumes a multi-part dump by position, so when any
/// namespace changes its services between two parts, entries can repeat (or be skipped).
pub fn decode_services(request: &Request, messages: &[IpvsMessage]) -> Result<Vec<Service>, Error> {
    let mut seen = std::collections::HashSet::with_capacity(messages.len());
    let mut services = Vec::with_capacity(messages.len());
    for message in messages {
        let attrs = message
            .service()
            .ok_or_else(|| decode_error(request, "reply without a service nest".into()))?;
        let service =
            service_from_attributes(attrs).map_err(|reason| decode_error(request, reason))?;
        if seen.insert(service.key) {
            services.push(service);
        } else {
            tracing::debug!(key = %service.key, "dropping a service the kernel dumped twice");
        }
    }
    Ok(services)
}

/// Destinations from the replies to [`list_destinations_request`].
pub fn decode_destinations(
    request: &Request,
    service_family: AddressFamily,
    messages: &[IpvsMessage],
) -> Result<Vec<Destination>, Error> {
    messages
        .iter()
        .map(|message| {
            let attrs = message
                .destination()
                .ok_or_else(|| decode_error(request, "reply without a destination nest".into()))?;
            destination_from_attributes(attrs, service_family)
                .map_err(|reason| decode_error(request, reason))
        })
        .collect()
}

/// The only message of a reply that must hold exactly one.
pub fn single<'m>(
    request: &Request,
    messages: &'m [IpvsMessage],
) -> Result<&'m IpvsMessage, Error> {
    match messages {
        [message] => Ok(message),
        _ => Err(decode_error(
            request,
            format!("expected one reply message, got {}", messages.len()),
        )),
    }
}

/// The dump request that lists the sync daemons.
pub fn list_daemons_request() -> Request {
    Request {
        message: IpvsMessage::new(IPVS_CMD_GET_DAEMON, vec![]),
        operation: Operation::ListDaemons,
        object: String::new(),
    }
}

/// Reads one sync daemon nest.
pub fn daemon_from_attributes(attrs: &[DaemonAttribute]) -> Result<SyncDaemon, String> {
    let mut state = None;
    let mut daemon = SyncDaemon {
        role: SyncRole::Master,
        mcast_interface: String::new(),
        sync_id: 0,
        sync_max_len: None,
        mcast_group: None,
        mcast_port: None,
        mcast_ttl: None,
    };
    for attr in attrs {
        match attr {
            DaemonAttribute::State(value) => state = Some(*value),
            DaemonAttribute::McastInterface(name) => daemon.mcast_interface = name.clone(),
            DaemonAttribute::SyncId(id) => daemon.sync_id = *id,
            DaemonAttribute::SyncMaxLen(len) => daemon.sync_max_len = Some(*len),
            DaemonAttribute::McastGroup(bytes) => {
                daemon.mcast_group = Some(IpAddr::V4(Ipv4Addr::from(*bytes)))
            }
            DaemonAttribute::McastGroup6(bytes) => {
                daemon.mcast_group = Some(IpAddr::V6(Ipv6Addr::from(*bytes)))
            }
            DaemonAttribute::McastPort(port) => daemon.mcast_port = Some(*port),
            DaemonAttribute::McastTtl(ttl) => daemon.mcast_ttl = Some(*ttl),
            DaemonAttribute::Other(_) => {}
        }
    }
    daemon.role = match state {
        Some(IP_VS_STATE_MASTER) => SyncRole::Master,
        Some(IP_VS_STATE_BACKUP) => SyncRole::Backup,
        Some(other) => return Err(format!("sync daemon with unknown state {other:#x}")),
        None => return Err("sync daemon without a state".to_string()),
    };
    Ok(daemon)
}

/// Sync daemons from the replies to [`list_daemons_request`], master first.
pub fn decode_daemons(
    request: &Request,
    messages: &[IpvsMessage],
) -> Result<Vec<SyncDaemon>, Error> {
    let mut daemons = Vec::with_capacity(messages.len());
    for message in messages {
        let Some(attrs) = message.attributes.iter().find_map(|attr| match attr {
            Attribute::Daemon(attrs) => Some(attrs),
            _ => None,
        }) else {
            return Err(decode_error(request, "reply without a daemon nest".into()));
        };
        daemons
            .push(daemon_from_attributes(attrs).map_err(|reason| decode_error(request, reason))?);
    }
    daemons.sort_by_key(|daemon| daemon.role);
    Ok(daemons)
}

/// Reads the info reply, with the request's context on failure.
pub fn decode_info(request: &Request, messages: &[IpvsMessage]) -> Result<Info, Error> {
    info_from_message(single(request, messages)?).map_err(|reason| decode_error(request, reason))
}
