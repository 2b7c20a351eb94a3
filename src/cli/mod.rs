//! The subcommands: each parses its flags and calls into the library. No subcommand
//! imports another; what two share lives here or in the library.

pub mod bgp;
pub mod check;
pub mod cleanup;
pub mod list;
pub mod plan;
pub mod run;
pub mod services;

use std::path::Path;

use anyhow::{Context, Result};
use tracing::warn;

use ipvs_proxy::config::{self, Config};

/// The configuration file (or kube-proxy's IPVS-mode defaults), its warnings logged.
pub fn load_config(path: Option<&Path>) -> Result<Config> {
    let loaded = config::load_or_default(path).with_context(|| match path {
        Some(path) => format!("cannot use the configuration file {}", path.display()),
        None => "built-in default configuration".to_string(),
    })?;
    for warning in &loaded.warnings {
        warn!("configuration: {warning}");
    }
    Ok(loaded.config)
}
