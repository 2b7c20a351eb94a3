//! Kernel-lab tests (`#[ignore = "needs the kernel lab"]`, run by `scripts/vm-test`),
//! plus the few host tests of the same areas: one module per area, in one binary so
//! the suite links once and the VM starts one test process.

/// The agent binary, for the tests that exercise it as operators run it.
const AGENT: &str = env!("CARGO_BIN_EXE_ipvs-proxy");

mod agent_apiserver;
mod agent_e2e;
mod agent_migration;
mod agent_policy;
mod agent_scale;
mod bridge;
mod caps;
mod cli_check;
mod cli_list;
mod cli_services;
mod conntrack_cleanup;
mod detect_local;
mod iptables;
mod lab_smoke;
mod netif;
