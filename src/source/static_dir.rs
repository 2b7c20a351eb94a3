//! A directory of Service and EndpointSlice manifests, for nodes without an API server
//! (tests, appliances, a static edge site).
//!
//! Every `*.yaml`, `*.yml` and `*.json` file directly in the directory is read; a file
//! may hold several YAML documents and `List` kinds (`List`, `ServiceList`,
//! `EndpointSliceList`). Hidden entries are skipped, so a mounted ConfigMap's `..data`
//! directory is not read twice. Other kinds are ignored with a warning.
//!
//! The directory is polled: when a file's modification time or size changes, or a file
//! appears or disappears, the changed files are read again and one event is sent per
//! object added, changed or removed (the first read sends a snapshot).
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

/// Objects by (namespace, name).
type Id = (String, String);

/// The objects of several files merged in file order, with the warnings of merging.
#[derive(Debug, Clone, Default, PartialEq)]
struct Merged {
    services: BTreeMap<Id, Service>,
    slices: BTreeMap<Id, EndpointSlice>,
    warnings: Vec<String>,
}

fn object_id(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Id {
    (
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Merges parsed files in order: when two files define the same object, the later
/// file wins and a warning says so.
fn merge_files<'a>(files: impl IntoIterator<Item = (String, &'a Manifests)>) -> Merged {
    let mut merged = Merged::default();
    for (label, parsed) in files {
        merged.warnings.extend(parsed.warnings.iter().cloned());
        for service in &parsed.services {
            let mut service = service.clone();
            let id = object_id(&service.metadata);
            service.metadata.namespace = Some(id.0.clone());
            if merged.services.insert(id.clone(), service).is_some() {
                let (ns, name) = id;
                merged.warnings.push(format!(
                    "{label}: Service {ns}/{name} defined again; this one is used"
                ));
            }
        }
        for slice in &parsed.slices {
            let mut slice = slice.clone();
            let id = object_id(&slice.metadata);
            slice.metadata.namespace = Some(id.0.clone());
            if merged.slices.insert(id.clone(), slice).is_some() {
                let (ns, name) = id;
                merged.warnings.push(format!(
                    "{label}: EndpointSlice {ns}/{name} defined again; this one is used"
                ));
            }
        }
    }
    merged
}

fn read_file(path: &Path) -> Result<Manifests, SourceError> {
    let text = std::fs::read_to_string(path).map_err(|source| SourceError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_manifests(&path.display().to_string(), &text)
}

/// Reads every manifest file in `dir`. When two files define the same object, the
/// later file (by name) wins and a warning says so.
pub fn load_dir(dir: &Path) -> Result<Manifests, SourceError> {
    let mut files = Vec::new();
    for path in manifest_files(dir)? {
        let parsed = read_file(&path)?;
        files.push((path.display().to_string(), parsed));
    }
    let merged = merge_files(files.iter().map(|(label, parsed)| (label.clone(), parsed)));
    Ok(Manifests {
        services: merged.services.into_values().collect(),
        slices: merged.slices.into_values().collect(),
        warnings: merged.warnings,
    })
}

/// A file's identity for change detection: modification time and size.
type Stamp = (Option<SystemTime>, u64);
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

/// The parsed files, each with the stamp it was read at, so a reload parses only
/// the files that changed.
type FileCache = BTreeMap<PathBuf, (Stamp, std::sync::Arc<Manifests>)>;

/// Re-reads the files of `print` that are not in `cache` with the same stamp.
fn reload(print: &Fingerprint, cache: &FileCache) -> Result<FileCache, SourceError> {
    let mut next = FileCache::new();
    for (path, modified, len) in print {
        let stamp = (*modified, *len);
        let parsed = match cache.get(path) {
            Some((cached, parsed)) if *cached == stamp => parsed.clone(),
            _ => std::sync::Arc::new(read_file(path)?),
        };
        next.insert(path.clone(), (stamp, parsed));
    }
    Ok(next)
}

/// The events that turn the `before` view into `after`: one per object added, changed
/// or removed.
fn changes(before: &Merged, after: &Merged) -> Vec<SourceEvent> {
    let mut events = Vec::new();
    for (id, service) in &after.services {
        if before.services.get(id) != Some(service) {
            events.push(SourceEvent::ServiceApplied(service.clone()));
        }
    }
    for (id, slice) in &after.slices {
        if before.slices.get(id) != Some(slice) {
            events.push(SourceEvent::SliceApplied(slice.clone()));
        }
    }
    for (namespace, name) in before.slices.keys() {
        if !after
            .slices
            .contains_key(&(namespace.clone(), name.clone()))
        {
            events.push(SourceEvent::SliceDeleted {
                namespace: namespace.clone(),
                name: name.clone(),
            });
        }
    }
    for (namespace, name) in before.services.keys() {
        if !after
            .services
            .contains_key(&(namespace.clone(), name.clone()))
        {
            events.push(SourceEvent::ServiceDeleted(crate::model::ServiceKey::new(
                namespace.clone(),
                name.clone(),
            )));
        }
    }
    events
}

/// Watches `dir`, sending a [`SourceEvent::Snapshot`] at start and, after every change,
/// one event per object added, changed or removed, polling every [`POLL_INTERVAL`].
/// Only changed files are parsed again. Ends when the receiver is dropped.
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
        let mut cache = FileCache::new();
        let mut sent: Option<Merged> = None;
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
            let previous_cache = cache.clone();
            // File reads block; keep them off the async workers.
            let result = tokio::task::spawn_blocking(move || -> Result<_, SourceError> {
                let print = fingerprint(&dir_for_read)?;
                if previous.as_ref() == Some(&print) {
                    return Ok(None);
                }
                let next_cache = reload(&print, &previous_cache)?;
                let merged = merge_files(
                    next_cache
                        .iter()
                        .map(|(path, (_, parsed))| (path.display().to_string(), parsed.as_ref())),
                );
                // A file changed while it was read: take it again next round.
                let after = fingerprint(&dir_for_read)?;
                Ok(Some((
                    if after == print { Some(print) } else { None },
                    next_cache,
                    merged,
                )))
            })
            .await;
            match result {
                Ok(Ok(None)) => {}
                Ok(Ok(Some((print, next_cache, merged)))) => {
                    last_error = None;
                    for warning in &merged.warnings {
                        warn!("{warning}");
                    }
                    seen = print;
                    cache = next_cache;
                    let batch = match &sent {
                        None => {
                            info!(
                                dir = %dir.display(),
                                services = merged.services.len(),
                                slices = merged.slices.len(),
                                "manifests loaded"
                            );
                            vec![SourceEvent::Snapshot {
                                services: merged.services.values().cloned().collect(),
                                slices: merged.slices.values().cloned().collect(),
                            }]
                        }
                        Some(before) => {
                            let batch = changes(before, &merged);
                            info!(
                                dir = %dir.display(),
                                changed = batch.len(),
                                services = merged.services.len(),
                                slices = merged.slices.len(),
                                "manifests reloaded"
                            );
                            batch
                        }
                    };
                    sent = Some(merged);
                    for event in batch {
                        if events.send(event).await.is_err() {
                            return;
                        }
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
