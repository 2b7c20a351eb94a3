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
use std::sync::Arc;
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

/// The warnings of merging parsed files in order: each file's own, and one for each
/// object a later file defines again (the later definition is used).
fn merge_warnings<'a>(files: impl IntoIterator<Item = (String, &'a Manifests)>) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut seen: std::collections::BTreeSet<(Kind, Id)> = Default::default();
    for (label, parsed) in files {
        warnings.extend(parsed.warnings.iter().cloned());
        for object in file_objects(parsed) {
            if !seen.insert(object.clone()) {
                let (kind, (ns, name)) = object;
                warnings.push(format!(
                    "{label}: {} {ns}/{name} defined again; this one is used",
                    kind.name()
                ));
            }
        }
    }
    warnings
}

/// Merges parsed files in order, taking their objects (parsed objects are large: a
/// copy of every one would double the peak memory of a first load). When two files
/// define the same object, the later file wins and a warning says so.
fn merge_files(files: Vec<(String, Manifests)>) -> Merged {
    let mut merged = Merged {
        warnings: merge_warnings(files.iter().map(|(label, parsed)| (label.clone(), parsed))),
        ..Merged::default()
    };
    for (_, parsed) in files {
        for mut service in parsed.services {
            let id = object_id(&service.metadata);
            service.metadata.namespace = Some(id.0.clone());
            merged.services.insert(id, service);
        }
        for mut slice in parsed.slices {
            let id = object_id(&slice.metadata);
            slice.metadata.namespace = Some(id.0.clone());
            merged.slices.insert(id, slice);
        }
    }
    merged
}

/// The objects a file defines, in file order.
fn file_objects(manifests: &Manifests) -> impl Iterator<Item = (Kind, Id)> + '_ {
    manifests
        .services
        .iter()
        .map(|service| (Kind::Service, object_id(&service.metadata)))
        .chain(
            manifests
                .slices
                .iter()
                .map(|slice| (Kind::Slice, object_id(&slice.metadata))),
        )
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
    let merged = merge_files(files);
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

/// Which kind of object an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Service,
    Slice,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::Slice => "EndpointSlice",
        }
    }
}

/// The last definition of object `id` in `manifests`, as an event with its content hash.
fn applied_event(manifests: &Manifests, kind: Kind, id: &Id) -> Option<(u64, SourceEvent)> {
    match kind {
        Kind::Service => {
            let mut service = manifests
                .services
                .iter()
                .rev()
                .find(|s| object_id(&s.metadata) == *id)?
                .clone();
            service.metadata.namespace = Some(id.0.clone());
            Some((content_hash(&service), SourceEvent::ServiceApplied(service)))
        }
        Kind::Slice => {
            let mut slice = manifests
                .slices
                .iter()
                .rev()
                .find(|s| object_id(&s.metadata) == *id)?
                .clone();
            slice.metadata.namespace = Some(id.0.clone());
            Some((content_hash(&slice), SourceEvent::SliceApplied(slice)))
        }
    }
}

/// What the poller remembers of one object: where it is defined and what was sent.
/// Only a hash of the content is kept: holding thousands of parsed objects twice (here
/// and in the model) would double the agent's memory for nothing.
#[derive(Debug, Default)]
struct ObjectRecord {
    /// The files defining it, sorted; more than one only by mistake (the last wins).
    defined_in: Vec<Arc<Path>>,
    /// A hash of its content as last sent; `None` while it was never sent.
    sent: Option<u64>,
}

fn content_hash<T: serde::Serialize>(object: &T) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(object)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

/// What the poller remembers between rounds.
#[derive(Debug, Default)]
struct DirState {
    /// Each file's stamp. The objects a file defines are found through
    /// [`ObjectRecord::defined_in`]: a second list per file would cost as much again.
    files: BTreeMap<PathBuf, Stamp>,
    /// Every object defined in a file or sent, by kind and id.
    objects: BTreeMap<(Kind, Id), ObjectRecord>,
    /// Whether the first snapshot went out.
    loaded: bool,
}

/// One round's outcome.
struct Round {
    events: Vec<SourceEvent>,
    warnings: Vec<String>,
    services: usize,
    slices: usize,
}

/// The files that changed since the last round, parsed.
struct Changes {
    parsed: BTreeMap<PathBuf, (Stamp, Manifests)>,
    removed: Vec<PathBuf>,
}

impl DirState {
    /// Reads the files that changed since the last round and returns the events that
    /// bring a consumer up to date: a snapshot the first time, then one event per
    /// object added, changed or removed. `Ok(None)` when nothing changed. On an error
    /// nothing is remembered, so the next round tries again.
    fn poll(&mut self, dir: &Path) -> Result<Option<Round>, SourceError> {
        let Some(changes) = self.read_changes(dir)? else {
            return Ok(None);
        };
        let warnings = merge_warnings(
            changes
                .parsed
                .iter()
                .map(|(path, (_, manifests))| (path.display().to_string(), manifests)),
        );
        let affected = self.reindex(&changes);
        if !self.loaded {
            self.loaded = true;
            return Ok(Some(self.first_snapshot(changes.parsed, warnings)));
        }
        let mut round = self.changed_objects(affected, &changes.parsed);
        round.warnings.extend(warnings);
        Ok(Some(round))
    }

    /// Parses the files whose stamp changed; `None` when nothing changed since the
    /// snapshot went out, or a file changed while it was read (taken next round).
    fn read_changes(&self, dir: &Path) -> Result<Option<Changes>, SourceError> {
        let print = fingerprint(dir)?;
        let unchanged = print.len() == self.files.len()
            && print.iter().all(|(path, modified, len)| {
                self.files
                    .get(path)
                    .is_some_and(|stamp| *stamp == (*modified, *len))
            });
        if unchanged && self.loaded {
            return Ok(None);
        }
        // Parse every changed file first: one bad file keeps everything as it was.
        let mut parsed: BTreeMap<PathBuf, (Stamp, Manifests)> = BTreeMap::new();
        for (path, modified, len) in &print {
            let stamp = (*modified, *len);
            if self.files.get(path).is_some_and(|known| *known == stamp) {
                continue;
            }
            parsed.insert(path.clone(), (stamp, read_file(path)?));
        }
        if fingerprint(dir)? != print {
            return Ok(None);
        }
        let present: std::collections::BTreeSet<&PathBuf> =
            print.iter().map(|(path, _, _)| path).collect();
        let removed = self
            .files
            .keys()
            .filter(|path| !present.contains(path))
            .cloned()
            .collect();
        Ok(Some(Changes { parsed, removed }))
    }

    /// Records which objects the changed and removed files define now; returns every
    /// object whose defining files changed.
    fn reindex(&mut self, changes: &Changes) -> std::collections::BTreeSet<(Kind, Id)> {
        let mut affected: std::collections::BTreeSet<(Kind, Id)> = Default::default();
        // The objects of changed and removed files: one pass over all objects.
        let mut replaced: std::collections::BTreeSet<&Path> = Default::default();
        for path in changes.parsed.keys().chain(changes.removed.iter()) {
            if self.files.remove(path).is_some() {
                replaced.insert(path.as_path());
            }
        }
        if !replaced.is_empty() {
            for (object, record) in &mut self.objects {
                let before = record.defined_in.len();
                record
                    .defined_in
                    .retain(|known| !replaced.contains(&**known));
                if record.defined_in.len() != before {
                    affected.insert(object.clone());
                }
            }
        }
        for (path, (stamp, manifests)) in &changes.parsed {
            let shared: Arc<Path> = Arc::from(path.as_path());
            for object in file_objects(manifests) {
                let paths = &mut self.objects.entry(object.clone()).or_default().defined_in;
                if let Err(at) = paths.binary_search(&shared) {
                    paths.insert(at, shared.clone());
                }
                affected.insert(object);
            }
            self.files.insert(path.clone(), *stamp);
        }
        affected
    }

    /// The first round: every object of every file, merged in file order (a later
    /// file wins), as one snapshot. The parsed objects move into it (no second copy).
    fn first_snapshot(
        &mut self,
        parsed: BTreeMap<PathBuf, (Stamp, Manifests)>,
        warnings: Vec<String>,
    ) -> Round {
        let files = parsed
            .into_iter()
            .map(|(path, (_, manifests))| (path.display().to_string(), manifests))
            .collect();
        let merged = merge_files(files);
        for (id, service) in &merged.services {
            if let Some(record) = self.objects.get_mut(&(Kind::Service, id.clone())) {
                record.sent = Some(content_hash(service));
            }
        }
        for (id, slice) in &merged.slices {
            if let Some(record) = self.objects.get_mut(&(Kind::Slice, id.clone())) {
                record.sent = Some(content_hash(slice));
            }
        }
        // Built one insert at a time, the map's nodes are partly empty.
        crate::model::compact(&mut self.objects);
        Round {
            services: merged.services.len(),
            slices: merged.slices.len(),
            events: vec![SourceEvent::Snapshot {
                services: merged.services.into_values().collect(),
                slices: merged.slices.into_values().collect(),
            }],
            warnings,
        }
    }

    /// One event per affected object whose content differs from what was sent: applied
    /// again from its (last) defining file, or deleted when no file defines it.
    fn changed_objects(
        &mut self,
        affected: std::collections::BTreeSet<(Kind, Id)>,
        parsed: &BTreeMap<PathBuf, (Stamp, Manifests)>,
    ) -> Round {
        let mut round = Round {
            events: Vec::new(),
            warnings: Vec::new(),
            services: 0,
            slices: 0,
        };
        for (kind, id) in affected {
            let key = (kind, id.clone());
            let Some(owner) = self.owner(&key) else {
                let record = self.objects.remove(&key);
                if record.is_some_and(|record| record.sent.is_some()) {
                    round.events.push(deleted_event(kind, &id));
                }
                continue;
            };
            // The defining file is a changed one (its objects are at hand) or, when an
            // unchanged file defines the object too, that file is read again.
            let reread;
            let manifests = match parsed.get(&*owner) {
                Some((_, manifests)) => manifests,
                None => match read_file(&owner) {
                    Ok(manifests) => {
                        reread = manifests;
                        &reread
                    }
                    Err(error) => {
                        round.warnings.push(format!(
                            "{} {}/{} not reloaded: {error}",
                            kind.name(),
                            id.0,
                            id.1
                        ));
                        continue;
                    }
                },
            };
            let Some((hash, event)) = applied_event(manifests, kind, &id) else {
                continue;
            };
            if let Some(record) = self.objects.get_mut(&key) {
                if record.sent != Some(hash) {
                    round.events.push(event);
                }
                record.sent = Some(hash);
            }
        }
        for ((kind, _), record) in &self.objects {
            if record.sent.is_some() {
                match kind {
                    Kind::Service => round.services += 1,
                    Kind::Slice => round.slices += 1,
                }
            }
        }
        round
    }

    /// The last file (by name) defining the object, if any.
    fn owner(&self, key: &(Kind, Id)) -> Option<Arc<Path>> {
        self.objects
            .get(key)
            .and_then(|record| record.defined_in.last())
            .cloned()
    }
}

/// The event that removes an object no file defines any more.
fn deleted_event(kind: Kind, id: &Id) -> SourceEvent {
    match kind {
        Kind::Service => {
            SourceEvent::ServiceDeleted(crate::model::ServiceKey::new(id.0.clone(), id.1.clone()))
        }
        Kind::Slice => SourceEvent::SliceDeleted {
            namespace: id.0.clone(),
            name: id.1.clone(),
        },
    }
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
        let mut state = Some(DirState::default());
        let mut last_error: Option<String> = None;
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if events.is_closed() {
                return;
            }
            let dir_for_read = dir.clone();
            let Some(mut current) = state.take() else {
                return;
            };
            // File reads block; keep them off the async workers.
            let result = tokio::task::spawn_blocking(move || {
                let round = current.poll(&dir_for_read);
                (current, round)
            })
            .await;
            let result = match result {
                Ok((current, round)) => {
                    state = Some(current);
                    Ok(round)
                }
                Err(join_error) => {
                    // Start over: the next round sends a snapshot again.
                    state = Some(DirState::default());
                    Err(join_error)
                }
            };
            match result {
                Ok(Ok(None)) => {}
                Ok(Ok(Some(round))) => {
                    last_error = None;
                    for warning in &round.warnings {
                        warn!("{warning}");
                    }
                    info!(
                        dir = %dir.display(),
                        events = round.events.len(),
                        services = round.services,
                        slices = round.slices,
                        "manifests loaded"
                    );
                    for event in round.events {
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
                    // The bad file is not remembered, so the next tick tries it again.
                }
                Err(join_error) => {
                    error!("manifest reader failed: {join_error}");
                }
            }
        }
    })
}
