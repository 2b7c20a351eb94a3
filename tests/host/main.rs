//! Host tests: everything that needs no kernel lab (configuration, model, plan,
//! sources, Events), one module per area, in one binary so the suite links once.

mod apiserver_stateful;
mod cli_plan;
mod config;
mod config_detect_local;
mod events;
mod lb_decision;
mod lb_ipam;
mod lb_ipam_alloc;
mod lb_ipam_pool_status;
mod manifests;
mod model;
mod model_incremental;
mod rbac;
mod source_kube;
mod source_static;
