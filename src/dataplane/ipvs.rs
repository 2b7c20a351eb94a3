//! The model's virtual and real servers in ipvs-netlink's terms, and back: the IPVS
//! part of a plan's changes, and the observed table as the plan sees it.

use ipvs_netlink as ipvs;

use crate::model::{Protocol, RealServer, VirtualServerKey};
use crate::plan::{Change, ObservedRealServer, ObservedVirtualServer, VirtualServerSpec};

fn ipvs_protocol(protocol: Protocol) -> ipvs::Protocol {
    match protocol {
        Protocol::Tcp => ipvs::Protocol::Tcp,
        Protocol::Udp => ipvs::Protocol::Udp,
        Protocol::Sctp => ipvs::Protocol::Sctp,
    }
}

fn model_protocol(protocol: ipvs::Protocol) -> Protocol {
    match protocol {
        ipvs::Protocol::Tcp => Protocol::Tcp,
        ipvs::Protocol::Udp => Protocol::Udp,
        ipvs::Protocol::Sctp => Protocol::Sctp,
    }
}

/// The IPVS service key of a virtual server.
pub(crate) fn ipvs_key(key: &VirtualServerKey) -> ipvs::ServiceKey {
    ipvs::ServiceKey::Inet {
        protocol: ipvs_protocol(key.protocol),
        addr: key.addr,
        port: key.port,
    }
}

fn ipvs_service(spec: &VirtualServerSpec) -> ipvs::Service {
    let service = ipvs::Service::new(
        ipvs_key(&spec.key),
        ipvs::Scheduler::from_name(&spec.scheduler),
    );
    match spec.persistence_timeout {
        Some(timeout) => service.persistent(timeout),
        None => service,
    }
}

fn ipvs_destination(real_server: &RealServer) -> ipvs::Destination {
    ipvs::Destination::new(
        real_server.addr,
        real_server.port,
        ipvs::ForwardMethod::Masquerade,
    )
    .weight(real_server.weight)
}

/// The IPVS change of a plan change, `None` for changes made elsewhere (addresses,
/// set entries).
pub(crate) fn ipvs_change(change: &Change) -> Option<ipvs::Change> {
    Some(match change {
        Change::AddVirtualServer(spec) => ipvs::Change::AddService(ipvs_service(spec)),
        Change::UpdateVirtualServer(spec) => ipvs::Change::EditService(ipvs_service(spec)),
        Change::DeleteVirtualServer(key) => ipvs::Change::DeleteService(ipvs_key(key)),
        Change::AddRealServer {
            virtual_server,
            real_server,
        } => ipvs::Change::AddDestination(ipvs_key(virtual_server), ipvs_destination(real_server)),
        Change::UpdateRealServer {
            virtual_server,
            real_server,
        } => ipvs::Change::EditDestination(ipvs_key(virtual_server), ipvs_destination(real_server)),
        Change::DeleteRealServer {
            virtual_server,
            addr,
            port,
        } => {
            let destination = ipvs::Destination::new(*addr, *port, ipvs::ForwardMethod::Masquerade);
            ipvs::Change::DeleteDestination(ipvs_key(virtual_server), destination.key())
        }
        Change::AddAddress(_)
        | Change::DeleteAddress(_)
        | Change::AddIpsetEntry { .. }
        | Change::DeleteIpsetEntry { .. } => return None,
    })
}

/// The observed state of one IPVS table, in the model's terms (fwmark services,
/// which ipvs-proxy never creates, are left out).
pub(crate) fn observed_virtual_servers(
    table: Vec<(ipvs::Service, Vec<ipvs::Destination>)>,
) -> Vec<ObservedVirtualServer> {
    table
        .into_iter()
        .filter_map(|(service, destinations)| {
            let ipvs::ServiceKey::Inet {
                protocol,
                addr,
                port,
            } = service.key
            else {
                return None;
            };
            let persistent = service.flags.contains(ipvs::ServiceFlags::PERSISTENT);
            Some(ObservedVirtualServer {
                key: VirtualServerKey {
                    addr,
                    port,
                    protocol: model_protocol(protocol),
                },
                scheduler: service.scheduler.name().to_string(),
                persistence_timeout: persistent.then_some(service.timeout),
                real_servers: destinations
                    .into_iter()
                    .map(|d| ObservedRealServer {
                        addr: d.addr,
                        port: d.port,
                        weight: d.weight,
                        active_connections: d.active_connections,
                        inactive_connections: d.inactive_connections,
                    })
                    .collect(),
            })
        })
        .collect()
}
