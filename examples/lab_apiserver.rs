//! A stand-in Kubernetes API server for lab benchmarks: serves the `kubernetes`
//! Service (endpoint `<apiserver-endpoint>`), `<services>` ClusterIP Services with
//! `<endpoints>` endpoints each, and one Node, over the real list/watch protocol
//! (the test suite's in-process server, `testkit::apiserver`). Watches stay
//! open and silent. Prints `listening: <addr>` once it accepts connections.
//!   lab_apiserver 127.0.0.1:6000 10000 10 192.168.50.10:6443
#![allow(missing_docs)]

use std::net::{Ipv4Addr, SocketAddr};

use serde_json::{Value, json};
use testkit::apiserver::{
    ApiServer, DEFAULT_SERVICES, DEFAULT_SLICES, NODES, Resource, SERVICES, SLICES, fixture, list,
    raw_list,
};

fn ip(base: u32, offset: u32) -> String {
    Ipv4Addr::from(base + offset).to_string()
}

fn objects(index: u32, endpoints: u32) -> (Value, Value) {
    let name = format!("svc-{index}");
    // 10.96.0.2 onwards: 10.96.0.1 is the API server's.
    let vip = ip(u32::from(Ipv4Addr::new(10, 96, 0, 2)), index);
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "bench", "resourceVersion": "400"},
        "spec": {"clusterIP": vip, "clusterIPs": [vip], "type": "ClusterIP",
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]},
    });
    let endpoint_base = u32::from(Ipv4Addr::new(10, 128, 0, 0)) + index * 16;
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-1"), "namespace": "bench", "resourceVersion": "400",
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": (0..endpoints)
            .map(|e| json!({"addresses": [ip(endpoint_base, e)], "nodeName": format!("node-{}", e % 100),
                            "conditions": {"ready": true}}))
            .collect::<Vec<_>>(),
    });
    (service, slice)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: lab_apiserver <listen-addr> <services> <endpoints> <apiserver-endpoint>";
    let listen: SocketAddr = args.next().and_then(|a| a.parse().ok()).expect(usage);
    let services: u32 = args.next().and_then(|a| a.parse().ok()).expect(usage);
    let endpoints: u32 = args.next().and_then(|a| a.parse().ok()).expect(usage);
    let endpoint: SocketAddr = args.next().and_then(|a| a.parse().ok()).expect(usage);

    let mut api_service = fixture("svc-kubernetes.json");
    api_service["spec"]["ports"][0]["targetPort"] = json!(endpoint.port());
    let mut api_slice = fixture("eps-kubernetes.json");
    api_slice["endpoints"][0]["addresses"] = json!([endpoint.ip().to_string()]);
    api_slice["ports"][0]["port"] = json!(endpoint.port());

    // Serialized one object at a time: as one `Value` tree the lists would take
    // hundreds of megabytes of the VM's memory from the agent being measured.
    let mut all_services = vec![api_service.to_string()];
    let mut all_slices = vec![api_slice.to_string()];
    for index in 0..services {
        let (service, slice) = objects(index, endpoints);
        all_services.push(service.to_string());
        all_slices.push(slice.to_string());
    }
    let slices_kind = ("EndpointSliceList", "discovery.k8s.io/v1");
    let mut api = ApiServer::default();
    api.resources.insert(
        DEFAULT_SERVICES,
        Resource::listing(list("ServiceList", "v1", "400", vec![api_service])),
    );
    api.resources.insert(
        DEFAULT_SLICES,
        Resource::listing(list(slices_kind.0, slices_kind.1, "400", vec![api_slice])),
    );
    api.resources.insert(
        SERVICES,
        Resource {
            raw_lists: [raw_list("ServiceList", "v1", "400", all_services)].into(),
            ..Resource::default()
        },
    );
    api.resources.insert(
        SLICES,
        Resource {
            raw_lists: [raw_list(slices_kind.0, slices_kind.1, "400", all_slices)].into(),
            ..Resource::default()
        },
    );
    api.resources.insert(
        NODES,
        Resource::listing(list("NodeList", "v1", "400", vec![fixture("node-a.json")])),
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .unwrap_or_else(|err| panic!("cannot listen on {listen}: {err}"));
    let _server = testkit::apiserver::serve_on(listener, api);
    println!("listening: {listen}");
    std::future::pending::<()>().await;
}
