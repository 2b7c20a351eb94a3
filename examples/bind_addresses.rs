//! Binds N /32 addresses on a fresh `kube-ipvs0` the way the agent does and prints the
//! time; run in a fresh network namespace. The mode picks the path: `pipelined` (one
//! rtnetlink request per address, 64 in flight) or `batched` (many per `sendmsg`).
//!   ip netns exec x target/release/examples/bind_addresses 10000 batched
#![allow(missing_docs)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use futures_util::stream;
use ipvs_proxy::dataplane::netif::ServiceInterface;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: u32 = args
        .next()
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(10000);
    let mode = args.next().unwrap_or_else(|| "pipelined".to_owned());
    let iface = ServiceInterface::ensure("kube-ipvs0")
        .await
        .expect("kube-ipvs0");
    let addresses: Vec<IpAddr> = (0..n)
        .map(|i| IpAddr::V4(Ipv4Addr::from((10 << 24) | (96 << 16) | (1 + i))))
        .collect();
    let started = Instant::now();
    let bound = match mode.as_str() {
        "pipelined" => iface.add(addresses).await,
        "batched" => iface.add_batched(stream::iter(addresses)).await,
        other => panic!("unknown mode {other:?}: pipelined or batched"),
    }
    .expect("bind");
    println!(
        "bind_addresses_seconds: {:.3} ({bound} bound, {mode})",
        started.elapsed().as_secs_f64()
    );
}
