//! A directory of Service and EndpointSlice manifests, for nodes without an API server
//! (tests, appliances, a static edge site).
//!
//! Every `*.yaml`, `*.yml` and `*.json` file directly in the directory is read; a file
//! may hold several YAML documents and `List` kinds (`List`, `ServiceList`,
//! `EndpointSliceList`). Hidden entries are skipped, so a mounted ConfigMap's `..data`
//! directory is not read twice. Other kinds are ignored with a warning.
//!
//! The directory is polled: when a file's modification time or size changes, or a file
//! appears or disappears, the whole directory is read again and a new snapshot is sent.
//! A directory that cannot be read keeps the previous snapshot in force and the error
//! is logged until it is fixed; polling does not depend on inotify, so it works on
//! ConfigMap volumes, 9p and NFS alike.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::{SourceError, SourceEvent};

/// How often [`spawn_static`] checks the directory for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The objects read from a directory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifests {
    /// Services, in file order.
    pub services: Vec<Service>,
    /// EndpointSlices, in file order.
    pub slices: Vec<EndpointSlice>,
    /// Objects that were ignored, with the reason.
    pub warnings: Vec<String>,
}

/// Parses the documents of one file; `path` names it in messages.
pub fn parse_manifests(path: &str, text: &str) -> Result<Manifests, SourceError> {
    let mut manifests = Manifests::default();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let number = index + 1;
        let parse_error = |message: String| SourceError::Parse {
            path: path.to_string(),
            document: number,
            message,
        };
        let value = serde_json::Value::deserialize(document)
            .map_err(|error| parse_error(error.to_string()))?;
        if value.is_null() {
            continue;
        }
        add_object(value, &mut manifests, &parse_error, path, number)?;
    }
    Ok(manifests)
}

fn add_object(
    mut value: serde_json::Value,
    manifests: &mut Manifests,
    parse_error: &dyn Fn(String) -> SourceError,
    path: &str,
    document: usize,
) -> Result<(), SourceError> {
    let api_version = value["apiVersion"].as_str().unwrap_or_default().to_string();
    let kind = value["kind"].as_str().unwrap_or_default().to_string();
    let name = value["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    match kind.as_str() {
        "Service" => {
            let service: Service = serde_json::from_value(value)
                .map_err(|error| parse_error(format!("Service {name:?}: {error}")))?;
            manifests.services.push(service);
        }
        "EndpointSlice" => {
            let slice: EndpointSlice = serde_json::from_value(value)
                .map_err(|error| parse_error(format!("EndpointSlice {name:?}: {error}")))?;
            manifests.slices.push(slice);
        }
        "List" | "ServiceList" | "EndpointSliceList" => {
            let item_kind = kind.strip_suffix("List").filter(|k| !k.is_empty());
            let items = match value.get_mut("items").map(serde_json::Value::take) {
                Some(serde_json::Value::Array(items)) => items,
                Some(serde_json::Value::Null) | None => Vec::new(),
                Some(_) => return Err(parse_error(format!("{kind}: items is not a list"))),
            };
            for mut item in items {
                // Typed lists may leave apiVersion/kind out of their items.
                if let (Some(item_kind), Some(object)) = (item_kind, item.as_object_mut()) {
                    object
                        .entry("kind")
                        .or_insert_with(|| item_kind.into());
                    object
                        .entry("apiVersion")
                        .or_insert_with(|| api_version.clone().into());
                }
                add_object(item, manifests, parse_error, path, document)?;
            }
        }
        "" => return Err(parse_error("the object has no kind".into())),
        other => manifests.warnings.push(format!(
            "{path}: document {document}: {other} {name:?} ignored: only Service and EndpointSlice are read"
        )),
    }
    Ok(())
}

fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let read_error = |source| SourceError::Read {
        path: dir.display().to_string(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let wanted = !name.starts_with('.')
            && [".yaml", ".yml", ".json"]
                .iter()
                .any(|ext| name.ends_with(ext))
            && path.is_file();
        if wanted {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads every manifest file in `dir`. When two files define the same object, the
/// later file (by name) wins and a warning says so.
pub fn load_dir(dir: &Path) -> Result<Manifests, SourceError> {
    let mut services: BTreeMap<(String, String), Service> = BTreeMap::new();
    let mut slices: BTreeMap<(String, String), EndpointSlice> = BTreeMap::new();
    let mut warnings = Vec::new();
    for path in manifest_files(dir)? {
        let text = std::fs::read_to_string(&path).map_err(|source| SourceError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let label = path.display().to_string();
        let parsed = parse_manifests(&label, &text)?;
        warnings.extend(parsed.warnings);
        let id = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            (
                meta.namespace.clone().unwrap_or_else(|| "default".into()),
                meta.name.clone().unwrap_or_default(),
            )
        };
        for mut service in parsed.services {
            service.metadata.namespace = Some(id(&service.metadata).0);
            if services
                .insert(id(&service.metadata), service.clone())
                .is_some()
            {
                let (ns, name) = id(&service.metadata);
                warnings.push(format!(
                    "{label}: Service {ns}/{name} defined again; this one is used"
                ));
            }
        }
        for mut slice in parsed.slices {
            slice.metadata.namespace = Some(id(&slice.metadata).0);
            if slices.insert(id(&slice.metadata), slice.clone()).is_some() {
                let (ns, name) = id(&slice.metadata);
                warnings.push(format!(
                    "{label}: EndpointSlice {ns}/{name} defined again; this one is used"
                ));
            }
        }
    }
    Ok(Manifests {
        services: services.into_values().collect(),
        slices: slices.into_values().collect(),
        warnings,
    })
}

type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

fn fingerprint(dir: &Path) -> Result<Fingerprint, SourceError> {
    Ok(manifest_files(dir)?
        .into_iter()
        .map(|path| {
            let meta = std::fs::metadata(&path).ok();
            let modified = meta.as_ref().and_then(|m| m.modified().ok());
            let len = meta.map(|m| m.len()).unwrap_or(0);
            (path, modified, len)
        })
        .collect())
}

/// Watches `dir`, sending a [`SourceEvent::Snapshot`] at start and after every change,
/// polling every [`POLL_INTERVAL`]. Ends when the receiver is dropped.
pub fn spawn_static(dir: PathBuf, events: mpsc::Sender<SourceEvent>) -> JoinHandle<()> {
    spawn_static_every(dir, POLL_INTERVAL, events)
}

/// [`spawn_static`] with a chosen polling interval.
pub fn spawn_static_every(
    dir: PathBuf,
    interval: Duration,
    events: mpsc::Sender<SourceEvent>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen: Option<Fingerprint> = None;
        let mut last_error: Option<String> = None;
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if events.is_closed() {
                return;
            }
            let dir_for_read = dir.clone();
            let previous = seen.clone();
            // File reads block; keep them off the async workers.
            let result = tokio::task::spawn_blocking(move || -> Result<_, SourceError> {
                let print = fingerprint(&dir_for_read)?;
                if previous.as_ref() == Some(&print) {
                    return Ok(None);
                }
                let manifests = load_dir(&dir_for_read)?;
                // A file changed while it was read: take it again next round.
                let after = fingerprint(&dir_for_read)?;
                Ok(Some((
                    if after == print { Some(print) } else { None },
                    manifests,
                )))
            })
            .await;
            match result {
                Ok(Ok(None)) => {}
                Ok(Ok(Some((print, manifests)))) => {
                    last_error = None;
                    for warning in &manifests.warnings {
                        warn!("{warning}");
                    }
                    info!(
                        dir = %dir.display(),
                        services = manifests.services.len(),
                        slices = manifests.slices.len(),
                        "manifests loaded"
                    );
                    seen = print;
                    let snapshot = SourceEvent::Snapshot {
                        services: manifests.services,
                        slices: manifests.slices,
                    };
                    if events.send(snapshot).await.is_err() {
                        return;
                    }
                }
                Ok(Err(err)) => {
                    let message = err.to_string();
                    if last_error.as_deref() != Some(message.as_str()) {
                        error!(
                            "manifests not reloaded, the previous ones stay in force: {message}"
                        );
                        last_error = Some(message);
                    }
                    // Retry on the next tick even if nothing changes.
                    seen = None;
                }
                Err(join_error) => {
                    error!("manifest reader failed: {join_error}");
                }
            }
        }
    })
}
