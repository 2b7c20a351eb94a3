//! detectLocalMode from the configuration to the rule that masquerades traffic to
//! ClusterIPs; the load-balancer no-node-access rules from Services' source ranges; and
//! known fields ipvs-proxy does not implement reported by name.

use ipnet::IpNet;
use ipvs_proxy::config::{Config, DetectLocal, parse};
use ipvs_proxy::dataplane::iptables::{
    Family, KubeSet, LbNoNodeAccess, LocalTraffic, RuleInputs, SavedRules, lb_no_node_access,
    local_traffic, node_pod_cidrs, render,
};
use ipvs_proxy::model::{Model, NodeInfo, Protocol};
use k8s_openapi::api::core::v1::{Node, Service};
use serde_json::json;

const HEADER: &str =
    "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n";

fn config(extra: &str) -> Config {
    let loaded = parse(&format!("{HEADER}{extra}")).unwrap();
    assert_eq!(loaded.warnings, Vec::<String>::new(), "for {extra}");
    loaded.config
}

fn warnings(extra: &str) -> Vec<String> {
    parse(&format!("{HEADER}{extra}")).unwrap().warnings
}

fn error(extra: &str) -> String {
    parse(&format!("{HEADER}{extra}")).unwrap_err().to_string()
}

fn cidrs(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|text| text.parse().unwrap()).collect()
}

/// The KUBE-CLUSTER-IP masquerade rule `detect` renders for `family`.
fn masquerade_rule(config: &Config, family: Family, pod_cidrs: &[IpNet]) -> String {
    let mut inputs = RuleInputs::new(family);
    inputs.non_empty_sets.insert(KubeSet::ClusterIp);
    inputs.local_traffic = local_traffic(config, family, pod_cidrs);
    inputs.validate().unwrap();
    render(&inputs, &SavedRules::default())
        .lines()
        .find(|line| line.contains("CLUSTER-IP") && line.ends_with("-j KUBE-MARK-MASQ"))
        .unwrap()
        .to_string()
}

#[test]
fn the_default_mode_is_cluster_cidr_one_cidr_per_family() {
    let config = config("clusterCIDR: 10.244.0.0/16,fd00:10:244::/56\n");
    assert_eq!(config.detect_local, DetectLocal::ClusterCidr);
    assert_eq!(
        masquerade_rule(&config, Family::V4, &[]),
        "-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ"
    );
    assert_eq!(
        masquerade_rule(&config, Family::V6, &[]),
        "-A KUBE-SERVICES -m set --match-set KUBE-6-CLUSTER-IP dst,dst ! -s fd00:10:244::/56 -j KUBE-MARK-MASQ"
    );
    // No cluster CIDR of a family: kube-proxy's rule without a detector.
    let v4_only = config_with("clusterCIDR: 10.244.0.0/16\n");
    assert_eq!(
        local_traffic(&v4_only, Family::V6, &[]),
        LocalTraffic::Undetected
    );
    assert_eq!(
        masquerade_rule(&v4_only, Family::V6, &[]),
        "-A KUBE-SERVICES -m set --match-set KUBE-6-CLUSTER-IP src,dst -j KUBE-MARK-MASQ"
    );
    // Empty clusterCIDR with the mode left to its default asks for nothing: no warning.
    assert_eq!(
        local_traffic(&config_with(""), Family::V4, &[]),
        LocalTraffic::Undetected
    );
}

fn config_with(extra: &str) -> Config {
    parse(&format!("{HEADER}{extra}")).unwrap().config
}

#[test]
fn node_cidr_follows_the_node_objects_pod_cidrs() {
    let config = config("detectLocalMode: NodeCIDR\n");
    assert_eq!(config.detect_local, DetectLocal::NodeCidr);
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "node-a"},
        "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"]},
    }))
    .unwrap();
    let pod_cidrs = node_pod_cidrs(&node);
    assert_eq!(pod_cidrs, cidrs(&["10.244.1.0/24", "fd00:10:244:1::/64"]));
    assert!(
        masquerade_rule(&config, Family::V4, &pod_cidrs).contains(" ! -s 10.244.1.0/24 "),
        "{}",
        masquerade_rule(&config, Family::V4, &pod_cidrs)
    );
    assert_eq!(
        local_traffic(&config, Family::V6, &pod_cidrs),
        LocalTraffic::Cidr("fd00:10:244:1::/64".parse().unwrap())
    );
    // No Node (the static source) or no pod CIDRs yet: nothing is detected.
    assert_eq!(
        local_traffic(&config, Family::V4, &[]),
        LocalTraffic::Undetected
    );
    let bare: Node = serde_json::from_value(json!({"metadata": {"name": "node-a"}})).unwrap();
    assert_eq!(node_pod_cidrs(&bare), Vec::<IpNet>::new());
}

#[test]
fn interface_modes_match_the_interface_in_both_families() {
    let bridge =
        config("detectLocalMode: BridgeInterface\ndetectLocal:\n  bridgeInterface: cbr0\n");
    assert_eq!(
        bridge.detect_local,
        DetectLocal::BridgeInterface("cbr0".into())
    );
    for family in [Family::V4, Family::V6] {
        assert!(masquerade_rule(&bridge, family, &[]).contains(" dst,dst ! -i cbr0 -j"));
    }
    let prefix =
        config("detectLocalMode: InterfaceNamePrefix\ndetectLocal:\n  interfaceNamePrefix: cali\n");
    for family in [Family::V4, Family::V6] {
        assert!(masquerade_rule(&prefix, family, &[]).contains(" dst,dst ! -i cali+ -j"));
    }
}

#[test]
fn invalid_detect_local_settings_name_the_field() {
    for (extra, expected) in [
        (
            "detectLocalMode: PodCIDR\n",
            "invalid value \"PodCIDR\" for detectLocalMode: one of ClusterCIDR, NodeCIDR, BridgeInterface, InterfaceNamePrefix",
        ),
        (
            "detectLocalMode: BridgeInterface\n",
            "invalid value \"\" for detectLocal.bridgeInterface",
        ),
        (
            "detectLocalMode: BridgeInterface\ndetectLocal:\n  bridgeInterface: \"br 0\"\n",
            "invalid value \"br 0\" for detectLocal.bridgeInterface",
        ),
        (
            "detectLocalMode: InterfaceNamePrefix\ndetectLocal:\n  interfaceNamePrefix: \"\"\n",
            "invalid value \"\" for detectLocal.interfaceNamePrefix",
        ),
        (
            // The prefix plus iptables' "+" must fit an interface name (15).
            "detectLocalMode: InterfaceNamePrefix\ndetectLocal:\n  interfaceNamePrefix: abcdefghijklmno\n",
            "for detectLocal.interfaceNamePrefix: an interface name of 1 to 14 characters",
        ),
        (
            "clusterCIDR: 10.244.0.0/16,10.245.0.0/16\n",
            "invalid value \"10.244.0.0/16,10.245.0.0/16\" for clusterCIDR: one CIDR, or an IPv4 and an IPv6 CIDR",
        ),
        (
            "clusterCIDR: 10.244.0.0/33\n",
            "invalid value \"10.244.0.0/33\" for clusterCIDR",
        ),
    ] {
        let message = error(extra);
        assert!(
            message.contains(expected),
            "for {extra}\ngot: {message}\nwanted: {expected}"
        );
    }
}

#[test]
fn settings_the_mode_makes_moot_are_warnings() {
    assert_eq!(
        warnings(
            "detectLocalMode: NodeCIDR\nclusterCIDR: 10.244.0.0/16\ndetectLocal:\n  bridgeInterface: cbr0\n"
        ),
        vec![
            "KubeProxyConfiguration: detectLocal.bridgeInterface is ignored: detectLocalMode is NodeCIDR",
            "KubeProxyConfiguration: clusterCIDR is ignored: detectLocalMode is NodeCIDR",
        ]
    );
    assert_eq!(
        warnings("detectLocalMode: ClusterCIDR\n"),
        vec![
            "KubeProxyConfiguration: detectLocalMode ClusterCIDR without clusterCIDR: traffic \
             from pods is not told apart, only node traffic with a service address as source \
             is masqueraded"
        ]
    );
    // kubeadm writes empty detectLocal fields: nothing to say.
    assert_eq!(
        warnings(
            "detectLocalMode: \"\"\ndetectLocal:\n  bridgeInterface: \"\"\n  interfaceNamePrefix: \"\"\n"
        ),
        Vec::<String>::new()
    );
}

#[test]
fn unsupported_fields_are_warnings_naming_them_unless_left_at_zero() {
    let text = "iptables:\n  localhostNodePorts: true\n  masqueradeAll: true\n  syncPeriod: 30s\n\
                oomScoreAdj: -999\nlogging:\n  verbosity: 4\nfeatureGates:\n  SomeGate: true\n\
                clientConnection:\n  qps: 50\n  kubeconfig: /k\nnftables:\n  masqueradeBit: null\n\
                enableProfiling: false\n";
    let loaded = parse(&format!("{HEADER}{text}")).unwrap();
    assert_eq!(
        loaded.warnings,
        vec![
            "KubeProxyConfiguration: featureGates is not supported by ipvs-proxy and is ignored",
            "KubeProxyConfiguration: clientConnection.qps is not supported by ipvs-proxy and is ignored",
            "KubeProxyConfiguration: logging is not supported by ipvs-proxy and is ignored (set the RUST_LOG environment variable instead)",
            "KubeProxyConfiguration: oomScoreAdj is not supported by ipvs-proxy and is ignored (set it in the Pod spec instead)",
            "KubeProxyConfiguration: iptables.localhostNodePorts is not supported by ipvs-proxy and is ignored (kube-proxy reads it in iptables mode only)",
            "KubeProxyConfiguration: iptables.syncPeriod is not supported by ipvs-proxy and is ignored (kube-proxy reads it in iptables mode only; IPVS mode uses ipvs.syncPeriod)",
        ]
    );
    // What is implemented next to them still applies.
    assert!(loaded.config.iptables.masquerade_all);
    assert_eq!(loaded.config.kubeconfig.as_deref(), Some("/k"));
}

fn lb_service(ranges: &[&str]) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": "lb", "namespace": "ns"},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.60", "clusterIPs": ["10.96.0.60"],
                 "loadBalancerSourceRanges": ranges,
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
                           {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}, {"ip": "2001:db8::10"}]}},
    }))
    .unwrap()
}

fn model_with(service: Service) -> Model {
    let node = NodeInfo {
        name: "node".into(),
        addresses: vec!["192.168.50.1".parse().unwrap()],
        ..NodeInfo::default()
    };
    let mut model = Model::new(config("clusterCIDR: 10.244.0.0/16\n"), node);
    model.apply_service(service);
    model
}

#[test]
fn lb_ports_whose_source_ranges_exclude_the_node_get_no_node_access_rules() {
    let excluded = model_with(lb_service(&["198.51.100.0/24"]));
    let entries = lb_no_node_access(&excluded, Family::V4);
    assert_eq!(
        entries,
        vec![
            LbNoNodeAccess {
                address: "203.0.113.10".parse().unwrap(),
                protocol: Protocol::Udp,
                port: 53
            },
            LbNoNodeAccess {
                address: "203.0.113.10".parse().unwrap(),
                protocol: Protocol::Tcp,
                port: 80
            },
        ]
    );
    let mut inputs = RuleInputs::new(Family::V4);
    inputs.lb_no_node_access = entries;
    let payload = render(&inputs, &SavedRules::default());
    assert!(payload.contains(
        "-A KUBE-IPVS-OUT-FILTER -s 203.0.113.10/32 -m ipvs --vaddr 203.0.113.10/32 --vproto udp --vport 53 -j DROP\n"
    ));
    // The ranges are IPv4 only: the IPv6 load balancer is not firewalled at all.
    assert_eq!(lb_no_node_access(&excluded, Family::V6), vec![]);

    // A range containing a node address lets the node through; no ranges, no rule.
    let included = model_with(lb_service(&["198.51.100.0/24", "192.168.50.0/24"]));
    assert_eq!(lb_no_node_access(&included, Family::V4), vec![]);
    assert_eq!(
        lb_no_node_access(&model_with(lb_service(&[])), Family::V4),
        vec![]
    );
}
