//! Heap bytes held by the desired-state model for N ClusterIP Services x M endpoints
//! (the shape of `scripts/bench agent`), stage by stage.
//!   cargo run --release --example model_memory -- [services] [endpoints]
#![allow(missing_docs)]

#[path = "support/bench_objects.rs"]
mod bench_objects;

use ipvs_proxy::config;
use ipvs_proxy::model::{Model, NodeInfo};
use ipvs_proxy::source::static_dir::parse_manifests;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Bytes the program has allocated and not freed, per jemalloc's statistics.
fn mib() -> f64 {
    tikv_jemalloc_ctl::epoch::advance().expect("jemalloc epoch");
    tikv_jemalloc_ctl::stats::allocated::read().expect("jemalloc stats") as f64 / 1048576.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10000);
    let per: u32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let text = bench_objects::manifest_text(n, per, 0, |v| {
        if v % 50 == 0 {
            "node".to_string()
        } else {
            format!("node-{}", v % 100)
        }
    });
    let text_again = text.clone();
    // The text is freed after parsing: count from a base without it.
    let base = mib() - text.len() as f64 / 1048576.0;
    let manifests = parse_manifests("services.json", &text).expect("manifests parse");
    drop(text);
    let parsed = mib() - base;
    println!("parsed_objects_mib: {parsed:.1}");
    let config = config::parse(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n",
    )
    .expect("config")
    .config;
    let node = NodeInfo {
        name: "node".into(),
        addresses: vec!["192.168.1.10".parse().unwrap()],
        ..NodeInfo::default()
    };
    let model_config = ipvs_proxy::model::ModelConfig::from(&config);
    let node_port_addresses = ipvs_proxy::model::service::node_port_addresses(&node, &model_config);
    {
        let before = mib();
        let mut interner = ipvs_proxy::model::input::Interner::default();
        let inputs: Vec<_> = manifests
            .services
            .iter()
            .map(|service| {
                ipvs_proxy::model::input::ServiceInput::from_service(service, &mut interner)
            })
            .collect();
        println!("service_inputs_mib: {:.1}", mib() - before);
        let slices: Vec<_> = manifests
            .slices
            .iter()
            .map(|slice| ipvs_proxy::model::input::SliceInput::from_slice(slice, &mut interner))
            .collect();
        println!("plus_slice_inputs_mib: {:.1}", mib() - before);
        let contributions: Vec<_> = inputs
            .iter()
            .zip(&slices)
            .map(|(service, slice)| {
                ipvs_proxy::model::service::contribution(
                    service,
                    &[slice],
                    &node,
                    &model_config,
                    &node_port_addresses,
                )
            })
            .collect();
        println!("plus_contributions_mib: {:.1}", mib() - before);
        drop(contributions);
    }
    let mut model = Model::new(config, node);
    model.replace_all(manifests.services, manifests.slices);
    let _ = model.take_touched();
    let total = mib() - base;
    println!("model_mib: {total:.1}");
    println!(
        "model_bytes_per_service: {:.0}",
        total * 1048576.0 / n as f64
    );
    let known = (
        model.state().addresses.clone(),
        model.state().ipsets.clone(),
    );
    println!("known_cache_mib: {:.1}", mib() - base - total);
    drop(known);
    let desired = model.desired();
    println!("one_more_desired_state_mib: {:.1}", mib() - base - total);
    drop(desired);

    // The static source's own bookkeeping, from a directory holding the same objects.
    let dir = std::env::temp_dir().join(format!("model-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    std::fs::write(dir.join("services.json"), &text_again).expect("manifest file");
    drop(text_again);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let before = mib();
        let (sender, mut receiver) = tokio::sync::mpsc::channel(16);
        let task = ipvs_proxy::source::static_dir::spawn_static(dir.clone(), sender);
        let first = receiver.recv().await.expect("a snapshot");
        drop(first);
        println!("static_source_mib: {:.1}", mib() - before);
        task.abort();
    });
    let _ = std::fs::remove_dir_all(&dir);
}
