//! From the desired state and the configuration to [`RuleInputs`]: the one place where
//! the iptables adapter reads the model. Pure, so the agent only decides *when* rules are
//! installed, never what they are.

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;

use crate::config::{Config, DetectLocal};
use crate::model::{self, IpsetMembers, Model, VipKind};

use super::{Family, KubeSet, LbNoNodeAccess, LocalTraffic, MasqueradeMark, RuleInputs};

impl From<model::Family> for Family {
    fn from(family: model::Family) -> Family {
        match family {
            model::Family::V4 => Family::V4,
            model::Family::V6 => Family::V6,
        }
    }
}

impl From<Family> for model::Family {
    fn from(family: Family) -> model::Family {
        match family {
            Family::V4 => model::Family::V4,
            Family::V6 => model::Family::V6,
        }
    }
}

/// The rules `family` should have for the model's desired state.
///
/// `random_fully`: whether MASQUERADE takes `--random-fully` here (probed once).
/// `kept_sets`: sets whose rules stay whatever the desired state says, because the
/// kernel's sets still hold members (a sync from a partial model).
/// `node_pod_cidrs`: the Node object's `spec.podCIDRs` (see [`node_pod_cidrs`]), for
/// `detectLocalMode: NodeCIDR`.
pub fn rule_inputs(
    model: &Model,
    config: &Config,
    family: Family,
    random_fully: bool,
    kept_sets: Option<&IpsetMembers>,
    node_pod_cidrs: &[IpNet],
) -> RuleInputs {
    let desired = model.state();
    let mut inputs = RuleInputs::new(family);
    inputs.masquerade_all = config.iptables.masquerade_all;
    inputs.random_fully = random_fully;
    if let Ok(mark) = MasqueradeMark::from_bit(u32::from(config.iptables.masquerade_bit)) {
        inputs.masquerade_mark = mark;
    }
    inputs.local_traffic = local_traffic(config, family, node_pod_cidrs);
    for set in KubeSet::ALL {
        let set_id = model::SetId::new(set, model::Family::from(family));
        if desired.ipsets.has_members(set_id)
            || kept_sets.is_some_and(|kept| kept.has_members(set_id))
        {
            inputs.non_empty_sets.insert(set);
        }
    }
    inputs.lb_no_node_access = lb_no_node_access(model, family);
    inputs
}

/// kube-proxy's local-traffic detector for `family`: the first CIDR of the family
/// (`clusterCIDR` or the Node's pod CIDRs), or the interface, which serves both
/// families. No CIDR of the family means no detection.
pub fn local_traffic(config: &Config, family: Family, node_pod_cidrs: &[IpNet]) -> LocalTraffic {
    let first_of_family = |cidrs: &[IpNet]| {
        cidrs
            .iter()
            .find(|cidr| Family::of(cidr.addr()) == family)
            .map_or(LocalTraffic::Undetected, |cidr| LocalTraffic::Cidr(*cidr))
    };
    match &config.detect_local {
        DetectLocal::ClusterCidr => first_of_family(&config.cluster_cidrs),
        DetectLocal::NodeCidr => first_of_family(node_pod_cidrs),
        DetectLocal::BridgeInterface(name) => LocalTraffic::Interface(name.clone()),
        DetectLocal::InterfaceNamePrefix(prefix) => LocalTraffic::InterfacePrefix(prefix.clone()),
    }
}

/// The Node object's `spec.podCIDRs`, as `detectLocalMode: NodeCIDR` reads them;
/// entries that are not CIDRs are skipped, as kube-proxy skips them.
pub fn node_pod_cidrs(node: &Node) -> Vec<IpNet> {
    node.spec
        .as_ref()
        .and_then(|spec| spec.pod_cidrs.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|text| text.trim().parse().ok())
        .collect()
}

/// The load-balancer ports the node itself must not reach: those of Services with
/// `loadBalancerSourceRanges` of this family that contain no node address.
///
/// kube-proxy installs the same rules (KUBE-IPVS-OUT-FILTER, kubernetes#119656) for the
/// load-balancer IPs in KUBE-LOAD-BALANCER-FW that get no KUBE-LOAD-BALANCER-SOURCE-IP
/// entry. Under IPVS a connection from the node to a VIP bound on kube-ipvs0 is sourced
/// from the VIP itself and never passes KUBE-PROXY-FIREWALL (INPUT, FORWARD), so
/// without these rules the node would reach a load balancer whose ranges exclude it.
/// The node addresses are the ones the model tests the ranges against for the
/// SOURCE-IP entries, so the two always agree.
pub fn lb_no_node_access(model: &Model, family: Family) -> Vec<LbNoNodeAccess> {
    let node_addresses = model::service::node_port_addresses(model.node(), model.config());
    let mut entries = Vec::new();
    for server in model.state().virtual_servers.values() {
        let key = server.key;
        if server.kind != VipKind::LoadBalancer || Family::of(key.addr) != family {
            continue;
        }
        let Some(service) = model.service(&server.service) else {
            continue;
        };
        let ranges: Vec<IpNet> = service
            .source_ranges
            .iter()
            .filter_map(|text| text.trim().parse::<IpNet>().ok())
            .filter(|range| Family::of(range.addr()) == family)
            .collect();
        let node_allowed = node_addresses
            .iter()
            .any(|addr| ranges.iter().any(|range| range.contains(addr)));
        if !ranges.is_empty() && !node_allowed {
            entries.push(LbNoNodeAccess {
                address: key.addr,
                protocol: key.protocol,
                port: key.port,
            });
        }
    }
    entries
}
