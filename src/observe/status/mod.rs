//! What the running agent programmed and why, for `ipvs-proxy services`.
//!
//! The agent answers on a Unix socket (default [`DEFAULT_SOCKET`], mode 0600). The
//! protocol is read-only: the client sends one line, `status`, and the agent answers
//! with one line of JSON, a [`StatusReply`], then closes the connection.
//!
//! The report ([`StatusReport::build`]) joins the desired state (from the model), the
//! kernel's current state and the changes the next sync would make:
//!
//! - for each Service: its type, session affinity and traffic policies, and each
//!   virtual server (VIP, port, protocol) with its real servers: pod, node, weight,
//!   state (`ready`, `serving-terminating`, `terminating-draining`, `not-desired`) and
//!   the kernel's active and inactive connection counts;
//! - problems: desired state missing from the kernel (`drift`), kernel state we own
//!   but no longer desire (`stale`), Services skipped for a bad spec (`skipped`);
//! - Services deliberately not proxied (ExternalName, headless, another proxy's);
//! - per LoadBalancer address (when the agent announces them, see
//!   [`StatusReport::with_load_balancers`]): its Service and pool, the layer-2 owner
//!   with the eligible nodes in election order and the interfaces, the BGP routes
//!   per node and peer, and why nobody announces it. `load_balancers` is left out of
//!   the JSON when there is no such address.
//!
//! # JSON (`ipvs-proxy services --json`)
//!
//! Field names are stable; new fields may be added. Absent values are `null`.
//!
//! ```text
//! {
//!   "node": "node-a",
//!   "services": [{
//!     "namespace": "default", "name": "web", "type": "LoadBalancer",
//!     "session_affinity": "None" | "ClientIP", "affinity_timeout": null | 10800,
//!     "external_traffic_policy": "Cluster" | "Local",
//!     "internal_traffic_policy": "Cluster" | "Local",
//!     "virtual_servers": [{
//!       "address": "10.96.0.10", "port": 80, "protocol": "tcp",
//!       "kind": "cluster-ip" | "node-port" | "external-ip" | "load-balancer",
//!       "port_name": "http", "scheduler": "rr", "persistence_timeout": null | 10800,
//!       "in_kernel": true,
//!       "real_servers": [{
//!         "address": "10.244.1.5", "port": 8080, "pod": "web-0" | null,
//!         "node": "node-a" | null,
//!         "state": "ready" | "serving-terminating" | "terminating-draining" | "not-desired",
//!         "desired_weight": 1 | null,
//!         "kernel": null | {"weight": 1, "active_connections": 0, "inactive_connections": 0},
//!         "draining_seconds": null | 12
//!       }]
//!     }]
//!   }],
//!   "not_proxied": [{"namespace": "default", "name": "db", "reason": "headless (clusterIP: None)"}],
//!   "problems": [{"kind": "drift" | "stale" | "skipped", "namespace": "default" | null,
//!                 "name": "web" | null, "address": "10.96.0.10" | null, "message": "..."}],
//!   "warnings": ["..."],
//!   "load_balancers": [{
//!     "address": "192.168.1.240", "namespace": "shop", "name": "web", "pool": "lan" | null,
//!     "layer2": {"advertisements": ["lan"], "owner": "node-a" | null,
//!                "eligible": ["node-a", "node-d"], "interfaces": [] | ["eth1"],
//!                "why": null | "no ready or serving endpoint"},
//!     "bgp": {"advertisements": ["agg"],
//!             "announcements": [{"advertisement": "agg", "prefix": "10.0.0.0/24",
//!                                "communities": ["65000:100"], "local_pref": 100 | null,
//!                                "nodes": [{"node": "node-a", "peers": ["tor1"]}]}],
//!             "why": null | "..."}
//!   }]
//! }
//! ```
//!
//! # Layout
//!
//! - `schema`: the report's types (the JSON above), the error and the [`Filter`];
//! - `build`: [`StatusReport::build`] and [`StatusReport::filtered`];
//! - `problem`: each pending change told as a [`Problem`];
//! - `render`: the text view, [`render_text`];
//! - `socket`: the agent's server and the client.

mod build;
mod problem;
mod render;
mod schema;
mod socket;

#[cfg(test)]
mod fixtures;

pub use render::render_text;
pub use schema::{
    BgpAnnouncementStatus, BgpNodeStatus, BgpStatus, Filter, KernelRealServer, Layer2Status,
    LoadBalancerStatus, NotProxied, Problem, ProblemKind, RealServerState, RealServerStatus,
    ServiceStatus, StatusError, StatusReply, StatusReport, VirtualServerStatus,
};
pub use socket::{
    BgpAnswer, CLIENT_TIMEOUT, DEFAULT_SOCKET, StatusRequest, query, spawn_status_server,
    spawn_status_server_with_bgp,
};
