//! What the poller remembers between rounds, and how a changed directory becomes
//! events: a snapshot the first time, then one event per object changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::manifests::{
    ClusterObjects, Id, Manifests, file_objects, manifest_files, merge_files, merge_warnings,
    object_id, read_file,
};
use crate::source::{SourceError, SourceEvent};

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
pub(super) enum Kind {
    Service,
    Slice,
}

impl Kind {
    pub(super) fn name(self) -> &'static str {
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
pub(super) struct DirState {
    /// Each file's stamp. The objects a file defines are found through
    /// [`ObjectRecord::defined_in`]: a second list per file would cost as much again.
    files: BTreeMap<PathBuf, Stamp>,
    /// Every object defined in a file or sent, by kind and id.
    objects: BTreeMap<(Kind, Id), ObjectRecord>,
    /// Whether the first snapshot went out.
    loaded: bool,
    /// Each file's MetalLB objects, Nodes and Namespaces (few: kept whole).
    cluster_by_file: BTreeMap<PathBuf, ClusterObjects>,
    /// Their merge as last sent.
    cluster_sent: Option<ClusterObjects>,
}

/// One round's outcome.
pub(super) struct Round {
    pub(super) events: Vec<SourceEvent>,
    pub(super) warnings: Vec<String>,
    pub(super) services: usize,
    pub(super) slices: usize,
    /// The directory's MetalLB objects, Nodes and Namespaces, when they changed (and
    /// always in the first round).
    pub(super) cluster: Option<ClusterObjects>,
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
    pub(super) fn poll(&mut self, dir: &Path) -> Result<Option<Round>, SourceError> {
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
        let cluster = self.cluster_changes(&changes);
        if !self.loaded {
            self.loaded = true;
            let mut round = self.first_snapshot(changes.parsed, warnings);
            round.cluster = cluster;
            return Ok(Some(round));
        }
        let mut round = self.changed_objects(affected, &changes.parsed);
        round.warnings.extend(warnings);
        round.cluster = cluster;
        Ok(Some(round))
    }

    /// Records the changed files' cluster objects; their merge in file order when it
    /// differs from what was sent.
    fn cluster_changes(&mut self, changes: &Changes) -> Option<ClusterObjects> {
        for path in &changes.removed {
            self.cluster_by_file.remove(path);
        }
        for (path, (_, manifests)) in &changes.parsed {
            if manifests.cluster == ClusterObjects::default() {
                self.cluster_by_file.remove(path);
            } else {
                self.cluster_by_file
                    .insert(path.clone(), manifests.cluster.clone());
            }
        }
        let mut merged = ClusterObjects::default();
        for objects in self.cluster_by_file.values() {
            merged.extend(objects);
        }
        if self.cluster_sent.as_ref() == Some(&merged) {
            return None;
        }
        self.cluster_sent = Some(merged.clone());
        Some(merged)
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
            cluster: None,
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
            cluster: None,
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
