//! The objects of `scripts/bench agent`'s shape for the memory examples: N ClusterIP
//! Services in `bench` with one EndpointSlice of M ready endpoints each, the first few
//! Services of type LoadBalancer with an ingress address.

/// An IPv4 address from its 32-bit value.
pub fn ip(v: u32) -> String {
    std::net::Ipv4Addr::from(v).to_string()
}

/// The manifest text (JSON documents joined by `---`) of `services` Services with
/// `endpoints` endpoints each, the first `load_balancers` of them LoadBalancers;
/// `node_of` names the node of the endpoint at address value `v`.
pub fn manifest_text(
    services: u32,
    endpoints: u32,
    load_balancers: u32,
    node_of: impl Fn(u32) -> String,
) -> String {
    let mut docs = Vec::new();
    for i in 0..services {
        let vip = ip((10 << 24) | (96 << 16) | (1 + i));
        let name = format!("svc-{i}");
        let mut service = serde_json::json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "bench"},
            "spec": {"clusterIP": vip, "clusterIPs": [vip],
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}});
        if i < load_balancers {
            let ingress = ip((192 << 24) | (168 << 16) | (1 << 8) | (100 + i));
            service["spec"]["type"] = "LoadBalancer".into();
            service["status"] = serde_json::json!({"loadBalancer": {"ingress": [{"ip": ingress}]}});
        }
        docs.push(service);
        let endpoints: Vec<_> = (0..endpoints)
            .map(|d| {
                let v = (10 << 24) | (128 << 16) | (i * 16 + d);
                serde_json::json!({"addresses": [ip(v)], "nodeName": node_of(v),
                                   "conditions": {"ready": true}})
            })
            .collect();
        docs.push(serde_json::json!({"apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-1"), "namespace": "bench",
                "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints}));
    }
    docs.iter()
        .map(|doc| doc.to_string())
        .collect::<Vec<_>>()
        .join("\n---\n")
}
