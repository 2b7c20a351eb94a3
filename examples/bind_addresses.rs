//! Binds N /32 addresses on a fresh `kube-ipvs0` the way the agent does (pipelined
//! rtnetlink requests) and prints the time; run in a fresh network namespace.
//!   ip netns exec x target/release/examples/bind_addresses 10000
#![allow(missing_docs)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use ipvs_proxy::netif::ServiceInterface;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(10000);
    let iface = ServiceInterface::ensure("kube-ipvs0")
        .await
        .expect("kube-ipvs0");
    let addresses: Vec<IpAddr> = (0..n)
        .map(|i| IpAddr::V4(Ipv4Addr::from((10 << 24) | (96 << 16) | (1 + i))))
        .collect();
    let started = Instant::now();
    let bound = iface.add(addresses).await.expect("bind");
    println!(
        "bind_addresses_seconds: {:.3} ({bound} bound)",
        started.elapsed().as_secs_f64()
    );
}
