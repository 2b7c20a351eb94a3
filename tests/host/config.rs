//! KubeProxyConfiguration parsing: kube-proxy's defaults, Go durations, unknown fields as
//! warnings, invalid values as errors naming the field, and ipvs-proxy's own document.

use std::net::SocketAddr;
use std::time::Duration;

use ipvs_proxy::config::{ConfigError, NodePortAddresses, parse, parse_go_duration};

const HEADER: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";

/// The ConfigMap kubeadm writes (v1.34), mode switched to ipvs.
const KUBEADM: &str = r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
bindAddress: 0.0.0.0
bindAddressHardFail: false
clientConnection:
  acceptContentTypes: ""
  burst: 0
  contentType: ""
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 0
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
configSyncPeriod: 0s
conntrack:
  maxPerCore: null
  min: null
  tcpBeLiberal: false
  tcpCloseWaitTimeout: null
  tcpEstablishedTimeout: null
  udpStreamTimeout: 0s
  udpTimeout: 0s
detectLocal:
  bridgeInterface: ""
  interfaceNamePrefix: ""
detectLocalMode: ""
enableProfiling: false
healthzBindAddress: ""
hostnameOverride: ""
iptables:
  localhostNodePorts: null
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: ""
  strictARP: true
  syncPeriod: 1m0s
  tcpFinTimeout: 0s
  tcpTimeout: 0s
  udpTimeout: 0s
kind: KubeProxyConfiguration
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: "0"
    text:
      infoBufferSize: "0"
  verbosity: 0
metricsBindAddress: ""
mode: "ipvs"
nftables:
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
nodePortAddresses: null
oomScoreAdj: null
portRange: ""
showHiddenMetricsForVersion: ""
winkernel:
  enableDSR: false
  forwardHealthCheckVip: false
  networkName: ""
  rootHnsEndpointName: ""
  sourceVip: ""
"#;

#[test]
fn kubeadm_config_map_parses_without_warnings() {
    let loaded = parse(KUBEADM).unwrap();
    assert_eq!(loaded.warnings, Vec::<String>::new());
    let config = loaded.config;
    assert_eq!(config.ipvs.scheduler, "rr");
    assert_eq!(config.ipvs.sync_period, Duration::from_secs(60));
    assert!(config.ipvs.strict_arp);
    assert_eq!(config.cluster_cidrs.len(), 2);
    assert_eq!(config.iptables.masquerade_bit, 14);
    assert_eq!(config.iptables.masquerade_mark(), 0x4000);
    assert_eq!(config.node_port_addresses, NodePortAddresses::All);
    assert_eq!(
        config.kubeconfig.as_deref(),
        Some("/var/lib/kube-proxy/kubeconfig.conf")
    );
    // kubeadm writes "" and 0s for unset values; kube-proxy's defaults apply.
    assert_eq!(
        config.healthz_bind_address,
        Some("0.0.0.0:10256".parse().unwrap())
    );
    assert_eq!(
        config.metrics_bind_address,
        Some("127.0.0.1:10249".parse().unwrap())
    );
    assert_eq!(config.config_sync_period, Duration::from_secs(900));
    assert_eq!(config.conntrack.max_per_core, 32768);
    assert_eq!(
        config.conntrack.tcp_established_timeout,
        Some(Duration::from_secs(86400))
    );
    assert_eq!(config.conntrack.udp_timeout, None);
}

#[test]
fn defaults_are_kube_proxys() {
    let config = parse(&format!("{HEADER}mode: ipvs\n")).unwrap().config;
    assert_eq!(config.ipvs.scheduler, "rr");
    assert_eq!(config.ipvs.sync_period, Duration::from_secs(30));
    assert_eq!(config.ipvs.min_sync_period, Duration::ZERO);
    assert!(!config.ipvs.strict_arp);
    assert_eq!(
        config.healthz_bind_address,
        Some("0.0.0.0:10256".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(
        config.metrics_bind_address,
        Some("127.0.0.1:10249".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(config.conntrack.min, 131072);
    assert_eq!(
        config.conntrack.tcp_close_wait_timeout,
        Some(Duration::from_secs(3600))
    );
    assert_eq!(config.config_sync_period, Duration::from_secs(900));
    assert_eq!(config.extensions.max_drain, Duration::from_secs(900));
}

#[test]
fn full_ipvs_section() {
    let text = format!(
        "{HEADER}mode: ipvs\nipvs:\n  scheduler: wlc\n  syncPeriod: 1m30s\n  minSyncPeriod: 500ms\n  \
         excludeCIDRs: [\"10.250.0.0/16\", \"fd00:250::/64\"]\n  tcpTimeout: 900s\n  tcpFinTimeout: 2m\n  \
         udpTimeout: 1.5s\niptables:\n  masqueradeAll: true\n  masqueradeBit: 5\n\
         nodePortAddresses: [\"192.168.0.0/16\", primary]\nhostnameOverride: node-a\n\
         healthzBindAddress: \"[::]:10256\"\nmetricsBindAddress: 0.0.0.0\n"
    );
    let config = parse(&text).unwrap().config;
    assert_eq!(config.ipvs.scheduler, "wlc");
    assert_eq!(config.ipvs.sync_period, Duration::from_secs(90));
    assert_eq!(config.ipvs.min_sync_period, Duration::from_millis(500));
    assert_eq!(config.ipvs.exclude_cidrs.len(), 2);
    assert_eq!(config.ipvs.tcp_timeout, Duration::from_secs(900));
    assert_eq!(config.ipvs.tcp_fin_timeout, Duration::from_secs(120));
    assert_eq!(config.ipvs.udp_timeout, Duration::from_millis(1500));
    assert!(config.iptables.masquerade_all);
    assert_eq!(config.iptables.masquerade_mark(), 0x20);
    assert_eq!(
        config.node_port_addresses,
        NodePortAddresses::Filtered {
            cidrs: vec!["192.168.0.0/16".parse().unwrap()],
            primary: true
        }
    );
    assert_eq!(config.hostname_override.as_deref(), Some("node-a"));
    assert_eq!(
        config.healthz_bind_address,
        Some("[::]:10256".parse().unwrap())
    );
    assert_eq!(
        config.metrics_bind_address,
        Some("0.0.0.0:10249".parse().unwrap())
    );
}

#[test]
fn unknown_fields_are_warnings_naming_them() {
    let text = format!("{HEADER}mode: ipvs\nipvs:\n  schedular: wrr\nfancyFeature: true\n");
    let loaded = parse(&text).unwrap();
    assert_eq!(
        loaded.warnings,
        vec![
            "KubeProxyConfiguration: unknown field ipvs.schedular ignored",
            "KubeProxyConfiguration: unknown field fancyFeature ignored",
        ]
    );
    assert_eq!(loaded.config.ipvs.scheduler, "rr");
}

fn error_of(text: &str) -> String {
    match parse(text) {
        Ok(loaded) => panic!("accepted: {loaded:?}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn invalid_values_name_the_field_and_what_is_allowed() {
    let cases = [
        (
            format!("{HEADER}mode: iptables\n"),
            "invalid value \"iptables\" for mode: ipvs-proxy only implements \"ipvs\"; set mode: ipvs",
        ),
        (
            format!("{HEADER}\n"),
            "invalid value \"unset (iptables)\" for mode",
        ),
        (
            format!("{HEADER}mode: ipvs\nipvs:\n  scheduler: fastest\n"),
            "invalid value \"fastest\" for ipvs.scheduler: one of rr, wrr, lc, wlc, lblc, lblcr, sh, dh, sed, nq, mh",
        ),
        (
            format!("{HEADER}mode: ipvs\nipvs:\n  syncPeriod: 30\n"),
            "configuration document 1 is not a valid KubeProxyConfiguration: ipvs.syncPeriod: invalid type: integer `30`, expected a string",
        ),
        (
            format!("{HEADER}mode: ipvs\nipvs:\n  syncPeriod: 10s\n  minSyncPeriod: 1m\n"),
            "invalid value \"1m\" for ipvs.minSyncPeriod: a duration not greater than ipvs.syncPeriod",
        ),
        (
            format!("{HEADER}mode: ipvs\nipvs:\n  excludeCIDRs: [\"10.0.0.0/33\"]\n"),
            "invalid value \"10.0.0.0/33\" for ipvs.excludeCIDRs",
        ),
        (
            format!("{HEADER}mode: ipvs\niptables:\n  masqueradeBit: 32\n"),
            "invalid value \"32\" for iptables.masqueradeBit: an integer from 0 to 31",
        ),
        (
            format!("{HEADER}mode: ipvs\nnodePortAddresses: [\"eth0\"]\n"),
            "invalid value \"eth0\" for nodePortAddresses",
        ),
        (
            format!("{HEADER}mode: ipvs\nhealthzBindAddress: \"localhost:1\"\n"),
            "invalid value \"localhost:1\" for healthzBindAddress",
        ),
        (
            format!("{HEADER}mode: ipvs\nipvs:\n  strictARP: \"maybe\"\n"),
            "configuration document 1 is not a valid KubeProxyConfiguration: ipvs.strictARP",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\n".to_string(),
            "configuration document 1 has apiVersion \"v1\" kind \"ConfigMap\"",
        ),
        (
            format!(
                "apiVersion: ipvs-proxy.io/v1alpha1\nkind: IpvsProxyConfiguration\nmaxDrainSeconds: 0\n---\n{HEADER}mode: ipvs\n"
            ),
            "invalid value \"0\" for IpvsProxyConfiguration.maxDrainSeconds",
        ),
        (
            "apiVersion: ipvs-proxy.io/v1alpha1\nkind: IpvsProxyConfiguration\n".to_string(),
            "has no kubeproxy.config.k8s.io/v1alpha1 KubeProxyConfiguration",
        ),
    ];
    for (text, expected) in cases {
        let message = error_of(&text);
        assert!(
            message.starts_with(expected) || message.contains(expected),
            "for\n{text}\ngot: {message}\nwanted: {expected}"
        );
    }
}

#[test]
fn extensions_live_in_their_own_document() {
    let text = format!(
        "{HEADER}mode: ipvs\n---\napiVersion: ipvs-proxy.io/v1alpha1\nkind: IpvsProxyConfiguration\n\
         maxDrainSeconds: 120\nannouncer:\n  mode: bgp\n  peers: [\"192.168.50.1\"]\n  unknownThing: 1\n"
    );
    let loaded = parse(&text).unwrap();
    assert_eq!(loaded.config.extensions.max_drain, Duration::from_secs(120));
    // The announcer is not built yet: its section is named in a warning, not kept.
    assert_eq!(
        loaded.warnings,
        vec![
            "IpvsProxyConfiguration: announcer is not supported by ipvs-proxy and is ignored \
             (announcing LoadBalancer IPs comes in a later version)"
        ]
    );
    // Extension fields in the kube-proxy document are not silently accepted.
    let mixed = parse(&format!("{HEADER}mode: ipvs\nmaxDrainSeconds: 10\n")).unwrap();
    assert_eq!(
        mixed.warnings,
        vec!["KubeProxyConfiguration: unknown field maxDrainSeconds ignored"]
    );
    assert_eq!(mixed.config.extensions.max_drain, Duration::from_secs(900));
}

#[test]
fn load_balancer_settings_default_to_metallb_and_are_checked() {
    let defaults = parse(&format!("{HEADER}mode: ipvs\n"))
        .unwrap()
        .config
        .extensions
        .load_balancer;
    assert!(defaults.enabled && defaults.ipam);
    assert_eq!(defaults.metallb_namespace, "metallb-system");
    assert_eq!(defaults.load_balancer_class, None);
    assert_eq!(
        (
            defaults.ipam_lease_namespace.as_str(),
            defaults.ipam_lease_name.as_str()
        ),
        ("kube-system", "ipvs-proxy-ipam")
    );
    let text = format!(
        "{HEADER}mode: ipvs\n---\napiVersion: ipvs-proxy.io/v1alpha1\nkind: IpvsProxyConfiguration\n\
         loadBalancer:\n  metallbNamespace: lb\n  loadBalancerClass: example.com/lb\n  ipam: false\n"
    );
    let settings = parse(&text).unwrap().config.extensions.load_balancer;
    assert_eq!(settings.metallb_namespace, "lb");
    assert_eq!(
        settings.load_balancer_class.as_deref(),
        Some("example.com/lb")
    );
    assert!(!settings.ipam);
    let bad = format!(
        "{HEADER}mode: ipvs\n---\napiVersion: ipvs-proxy.io/v1alpha1\nkind: IpvsProxyConfiguration\n\
         loadBalancer:\n  metallbNamespace: Metal_LB\n"
    );
    let message = error_of(&bad);
    assert!(
        message.contains("IpvsProxyConfiguration.loadBalancer.metallbNamespace"),
        "{message}"
    );
}

#[test]
fn announcer_settings_default_and_are_checked() {
    let defaults = parse(&format!("{HEADER}mode: ipvs\n"))
        .unwrap()
        .config
        .extensions
        .load_balancer;
    assert_eq!(defaults.membership.port, 7947);
    assert_eq!(
        defaults.membership.key_file,
        std::path::Path::new("/etc/ipvs-proxy/membership/key")
    );
    assert_eq!(
        defaults.bgp.restart_marker,
        std::path::Path::new("/run/ipvs-proxy/bgp-speaker.running")
    );
    let document = |body: &str| {
        format!(
            "{HEADER}mode: ipvs\n---\napiVersion: ipvs-proxy.io/v1alpha1\nkind: IpvsProxyConfiguration\n\
             loadBalancer:\n{body}"
        )
    };
    let settings = parse(&document(
        "  membership:\n    port: 17947\n    keyFile: /secrets/key\n  bgp:\n    restartMarker: /var/run/gr\n",
    ))
    .unwrap()
    .config
    .extensions
    .load_balancer;
    assert_eq!(settings.membership.port, 17947);
    assert_eq!(
        settings.membership.key_file,
        std::path::Path::new("/secrets/key")
    );
    assert_eq!(
        settings.bgp.restart_marker,
        std::path::Path::new("/var/run/gr")
    );
    for (body, field) in [
        (
            "  membership:\n    port: 70000\n",
            "loadBalancer.membership.port",
        ),
        (
            "  membership:\n    port: 0\n",
            "loadBalancer.membership.port",
        ),
        (
            "  membership:\n    keyFile: key\n",
            "loadBalancer.membership.keyFile",
        ),
        (
            "  bgp:\n    restartMarker: run/marker\n",
            "loadBalancer.bgp.restartMarker",
        ),
    ] {
        let message = error_of(&document(body));
        assert!(message.contains(field), "{body}: {message}");
    }
}

#[test]
fn go_durations() {
    let ok = [
        ("0", Duration::ZERO),
        ("0s", Duration::ZERO),
        ("30s", Duration::from_secs(30)),
        ("1m0s", Duration::from_secs(60)),
        ("1h30m", Duration::from_secs(5400)),
        ("24h0m0s", Duration::from_secs(86400)),
        ("250ms", Duration::from_millis(250)),
        ("1.5h", Duration::from_secs(5400)),
        ("2us", Duration::from_micros(2)),
        ("7ns", Duration::from_nanos(7)),
    ];
    for (text, expected) in ok {
        assert_eq!(parse_go_duration(text), Ok(expected), "{text}");
    }
    for bad in ["", "30", "-1s", "1d", "s", "1.2.3s", "ms5"] {
        assert!(parse_go_duration(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn load_reports_the_missing_file() {
    let error =
        ipvs_proxy::config::load(std::path::Path::new("/nonexistent/kube-proxy.yaml")).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }));
    assert!(
        error
            .to_string()
            .starts_with("could not read the configuration file /nonexistent/kube-proxy.yaml:")
    );
}
