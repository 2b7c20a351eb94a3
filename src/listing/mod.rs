//! The IPVS table as `ipvsadm -L` shows it, and as JSON for scripts.
//!
//! [`model`] is the listing's own view of the kernel state, filled from the
//! kernel by the binary's `list` command; [`text`] prints it byte for byte as
//! ipvsadm 1.31 does (columns, K/M/G/T scaling, name resolution, sort order);
//! [`conn`] does the same for the connection table.
//!
//! # JSON output (`ipvs-proxy list --json`)
//!
//! One object; field names are stable, new fields may be added. Numbers are JSON
//! numbers (counters are unsigned 64-bit), addresses are strings in their usual
//! text form, absent values are `null`.
//!
//! ```text
//! {
//!   "version": "1.2.1",                  // kernel IPVS version
//!   "connection_table_size": 4096,
//!   "services": [{
//!     "key": {"kind": "address", "protocol": 6, "address": "10.96.0.10", "port": 80}
//!          | {"kind": "fwmark", "mark": 1, "family": "ipv4" | "ipv6"},
//!     "scheduler": "rr",
//!     "persistence": null | {"timeout": 300, "netmask": "255.255.255.0" | 64},
//!     "persistence_engine": null | "sip",
//!     "flags": {"one_packet": false, "sched_flag_1": false,
//!               "sched_flag_2": false, "sched_flag_3": false},
//!     "stats": {"conns", "inpkts", "outpkts", "inbytes", "outbytes",
//!               "cps", "inpps", "outpps", "inbps", "outbps"},   // all numbers
//!     "destinations": [{
//!       "address": "10.244.1.5", "port": 8080,
//!       "forwarding": "masq" | "local" | "tunnel" | "route" | "bypass",
//!       "tunnel": null | {"type": "ipip" | "gue" | "gre", "port": 0,
//!                         "checksum": "none" | "checksum" | "remote"},
//!       "weight": 1, "upper_threshold": 0, "lower_threshold": 0,
//!       "active_conns": 0, "inactive_conns": 0, "persistent_conns": 0,
//!       "stats": { ...as above... }
//!     }]
//!   }],
//!   "timeouts": null | {"tcp": 900, "tcp_fin": 120, "udp": 300}
//! }
//! ```
//!
//! With `--timeout` the output is instead `{"timeouts": {"tcp": 900, "tcp_fin": 120,
//! "udp": 300}}` (the listing's `timeouts` field stays `null`, kept for compatibility).
//!
//! With `--daemon` the output is instead `{"daemons": [{"role": "master" | "backup",
//! "mcast_interface": "eth0", "sync_id": 0, "sync_max_len": 1472 | null,
//! "mcast_group": "224.0.0.81" | null, "mcast_port": 8848 | null, "mcast_ttl": 1 | null}]}`.
//!
//! With `-c` the output is instead `{"connections": [...]}`, each entry with
//! `protocol`, `client_address`, `client_port`, `virtual_address`, `virtual_port`,
//! `destination_address`, `destination_port`, `state`, `expires` (seconds) and
//! `persistence_engine` (`null` or `[name, data]`).
//!
//! Services and destinations appear in ipvsadm's order unless `--nosort`.

pub mod conn;
pub mod kernel;
pub mod names;
pub mod order;
pub mod table;
pub mod text;

use serde::Serialize;

use table::{Service, Table, Timeouts};

/// The `--json` document of a service listing.
#[derive(Clone, Debug, Serialize)]
pub struct JsonListing {
    /// Kernel IPVS version.
    pub version: String,
    /// Size of the connection hash table.
    pub connection_table_size: u32,
    /// The services shown, in output order.
    pub services: Vec<Service>,
    /// Kernel timeouts, when asked for with `--timeout`.
    pub timeouts: Option<Timeouts>,
}

impl JsonListing {
    /// The services of `table`, and their destinations, in ipvsadm's order (or
    /// the kernel's with `nosort`).
    pub fn new(table: &Table, nosort: bool, timeouts: Option<Timeouts>) -> JsonListing {
        let mut services = table.services.clone();
        if !nosort {
            order::merge_sort_by(&mut services, order::cmp_services);
            for service in &mut services {
                order::merge_sort_by(&mut service.destinations, order::cmp_destinations);
            }
        }
        JsonListing {
            version: table.version.clone(),
            connection_table_size: table.connection_table_size,
            services,
            timeouts,
        }
    }
}
