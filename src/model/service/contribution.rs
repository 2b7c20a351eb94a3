//! The second step for one Service: from its validated [`ServiceSpec`] and endpoints,
//! emit the virtual servers, kube-ipvs0 addresses, ipset entries and health check.
//! Nothing here fails: validation happened in [`super::spec`].

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::ServiceContribution;
use super::spec::{PortSpec, ServiceSpec};
use crate::model::endpoints::{self, Endpoint};
use crate::model::input::SliceInput;
use crate::model::{
    Family, NodeInfo, Protocol, RealServer, VipKind, VirtualServer, VirtualServerKey,
};
use crate::model::{KubeSet, SetEntry};

/// Emits a Service's share. `contribution` arrives with the Service's identity and
/// the spec's warnings; `node_addresses` are the node addresses serving NodePorts.
pub(super) fn emit(
    contribution: &mut ServiceContribution,
    spec: &ServiceSpec,
    slices: &[&SliceInput],
    node: &NodeInfo,
    scheduler: &Arc<str>,
    node_addresses: &BTreeSet<IpAddr>,
) {
    let mut local_ready: BTreeSet<IpAddr> = BTreeSet::new();
    for (&family, &cluster_ip) in &spec.cluster_ips {
        for port in &spec.ports {
            let all =
                endpoints::endpoints_for_port(slices, &port.name, port.protocol, family, node);
            let categorized = endpoints::categorize(&all, node);
            local_ready.extend(all.iter().filter(|e| e.local && e.ready).map(|e| e.addr));
            let internal = if spec.internal_local {
                &categorized.local
            } else {
                &categorized.cluster
            };
            let external = if spec.external_local {
                &categorized.local
            } else {
                &categorized.cluster
            };
            let vip = PortEmitter {
                spec,
                port,
                family,
                scheduler,
            };
            vip.cluster_ip(contribution, cluster_ip, internal);
            vip.external_ips(contribution, external);
            vip.load_balancer_ips(contribution, external, node_addresses);
            vip.node_port(contribution, external, node_addresses);
            vip.hairpin(contribution, &all);
        }
    }

    if let Some(port) = spec.health_check_node_port {
        contribution.health_check_node_port = Some((port, local_ready.len()));
        for family in spec.cluster_ips.keys() {
            contribution
                .ipsets
                .add(KubeSet::HealthCheckNodePort, *family, SetEntry::Port(port));
        }
    }
}

/// Emits what one Service port gives in one family.
struct PortEmitter<'a> {
    spec: &'a ServiceSpec,
    port: &'a PortSpec,
    family: Family,
    scheduler: &'a Arc<str>,
}

impl PortEmitter<'_> {
    /// Adds a virtual server on `addr:vport` with these endpoints as real servers.
    fn add(
        &self,
        contribution: &mut ServiceContribution,
        addr: IpAddr,
        vport: u16,
        kind: VipKind,
        endpoints: &[Endpoint],
    ) {
        let port = self.port;
        contribution.virtual_servers.push(Arc::new(VirtualServer {
            key: VirtualServerKey {
                addr,
                port: vport,
                protocol: port.protocol,
            },
            scheduler: self.scheduler.clone(),
            persistence_timeout: self.spec.persistence_timeout,
            kind,
            service: contribution.service.clone(),
            port_name: port.name.clone(),
            real_servers: endpoints
                .iter()
                .map(|endpoint| RealServer {
                    addr: endpoint.addr,
                    port: endpoint.port,
                    weight: 1,
                })
                .collect(),
        }));
    }

    /// The ClusterIP: its virtual server, its address on kube-ipvs0, its set entry.
    fn cluster_ip(
        &self,
        contribution: &mut ServiceContribution,
        cluster_ip: IpAddr,
        internal: &[Endpoint],
    ) {
        let (port, family) = (self.port, self.family);
        self.add(
            contribution,
            cluster_ip,
            port.port,
            VipKind::ClusterIp,
            internal,
        );
        contribution.addresses.push(cluster_ip);
        contribution.ipsets.add(
            KubeSet::ClusterIp,
            family,
            SetEntry::ip_port(cluster_ip, port.protocol, port.port),
        );
    }

    /// The external IPs of this family.
    fn external_ips(&self, contribution: &mut ServiceContribution, external: &[Endpoint]) {
        let (port, family) = (self.port, self.family);
        let external_local = self.spec.external_local;
        for &addr in self
            .spec
            .external_ips
            .iter()
            .filter(|a| Family::of(**a) == family)
        {
            self.add(contribution, addr, port.port, VipKind::ExternalIp, external);
            contribution.addresses.push(addr);
            let set = if external_local {
                KubeSet::ExternalIpLocal
            } else {
                KubeSet::ExternalIp
            };
            contribution.ipsets.add(
                set,
                family,
                SetEntry::ip_port(addr, port.protocol, port.port),
            );
        }
    }

    /// The load-balancer IPs of this family, with their source-range firewall.
    fn load_balancer_ips(
        &self,
        contribution: &mut ServiceContribution,
        external: &[Endpoint],
        node_addresses: &BTreeSet<IpAddr>,
    ) {
        let (port, family) = (self.port, self.family);
        let external_local = self.spec.external_local;
        for &addr in self
            .spec
            .load_balancer_ips
            .iter()
            .filter(|a| Family::of(**a) == family)
        {
            self.add(
                contribution,
                addr,
                port.port,
                VipKind::LoadBalancer,
                external,
            );
            contribution.addresses.push(addr);
            let entry = SetEntry::ip_port(addr, port.protocol, port.port);
            contribution
                .ipsets
                .add(KubeSet::LoadBalancer, family, entry);
            if external_local {
                contribution
                    .ipsets
                    .add(KubeSet::LoadBalancerLocal, family, entry);
            }
            let ranges: Vec<&IpNet> = self
                .spec
                .source_ranges
                .iter()
                .filter(|range| Family::of(range.addr()) == family)
                .collect();
            if !ranges.is_empty() {
                contribution
                    .ipsets
                    .add(KubeSet::LoadBalancerFw, family, entry);
                for range in &ranges {
                    contribution.ipsets.add(
                        KubeSet::LoadBalancerSourceCidr,
                        family,
                        SetEntry::ip_port_net(addr, port.protocol, port.port, **range),
                    );
                }
                if node_addresses
                    .iter()
                    .any(|node_ip| ranges.iter().any(|range| range.contains(node_ip)))
                {
                    contribution.ipsets.add(
                        KubeSet::LoadBalancerSourceIp,
                        family,
                        SetEntry::IpPortIp {
                            addr,
                            proto: port.protocol,
                            port: port.port,
                            addr2: addr,
                        },
                    );
                }
            }
        }
    }

    /// The NodePort on every node address of this family, and its set entries.
    fn node_port(
        &self,
        contribution: &mut ServiceContribution,
        external: &[Endpoint],
        node_addresses: &BTreeSet<IpAddr>,
    ) {
        let (port, family) = (self.port, self.family);
        let external_local = self.spec.external_local;
        let Some(node_port) = port.node_port else {
            return;
        };
        for &addr in node_addresses.iter().filter(|a| Family::of(**a) == family) {
            self.add(contribution, addr, node_port, VipKind::NodePort, external);
        }
        let (set, local_set) = match port.protocol {
            Protocol::Tcp => (KubeSet::NodePortTcp, KubeSet::NodePortLocalTcp),
            Protocol::Udp => (KubeSet::NodePortUdp, KubeSet::NodePortLocalUdp),
            Protocol::Sctp => (KubeSet::NodePortSctp, KubeSet::NodePortLocalSctp),
        };
        let entries: Vec<SetEntry> = if port.protocol == Protocol::Sctp {
            node_addresses
                .iter()
                .filter(|a| Family::of(**a) == family)
                .map(|addr| SetEntry::ip_port(*addr, Protocol::Sctp, node_port))
                .collect()
        } else {
            vec![SetEntry::Port(node_port)]
        };
        for entry in entries {
            if external_local {
                contribution.ipsets.add(local_set, family, entry);
            }
            contribution.ipsets.add(set, family, entry);
        }
    }

    /// Hairpin: a local endpoint reaching itself through the Service is masqueraded.
    fn hairpin(&self, contribution: &mut ServiceContribution, all: &[Endpoint]) {
        let (port, family) = (self.port, self.family);
        for endpoint in all.iter().filter(|endpoint| endpoint.local) {
            contribution.ipsets.add(
                KubeSet::LoopBack,
                family,
                SetEntry::IpPortIp {
                    addr: endpoint.addr,
                    proto: port.protocol,
                    port: endpoint.port,
                    addr2: endpoint.addr,
                },
            );
        }
    }
}
