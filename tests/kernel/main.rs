//! Kernel-lab tests (`#[ignore = "needs the kernel lab"]`, run by `scripts/vm-test`),
//! plus the few host tests of the same areas: one module per area, in one binary so
//! the suite links once and the VM starts one test process.

/// The agent binary, for the tests that exercise it as operators run it.
const AGENT: &str = env!("CARGO_BIN_EXE_ipvs-proxy");

/// br_netfilter is loaded or not for the whole VM, and the tests of this binary run in
/// parallel: the bridge tests, which unload it, hold this for writing; the tests whose
/// `ipvs-proxy check` must find it loaded hold it for reading.
static BR_NETFILTER: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Keeps the bridge tests from unloading br_netfilter while the caller holds this: for
/// tests that read `ipvs-proxy check` or send pod traffic across a Linux bridge.
fn br_netfilter_kept() -> std::sync::RwLockReadGuard<'static, ()> {
    BR_NETFILTER
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

mod agent_apiserver;
mod agent_bgp;
mod agent_bgp_config;
mod agent_bgp_session;
mod agent_e2e;
mod agent_l2;
mod agent_lb;
mod agent_migration;
mod agent_policy;
mod agent_scale;
mod bfd_session;
mod bgp_speaker;
mod bridge;
mod caps;
mod cli_check;
mod cli_list;
mod cli_services;
mod conntrack_cleanup;
mod detect_local;
mod image;
mod iptables;
mod l2_announce;
mod l2_network;
mod lab_smoke;
mod membership;
mod netif;
