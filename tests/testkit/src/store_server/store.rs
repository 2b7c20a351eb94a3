//! The object store: objects by resource, namespace and name, one global
//! resourceVersion counter (like etcd's revision) bumped by every write, a bounded
//! history of changes for watches to resume from, and a broadcast of every change to
//! open watches.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::fields::Owners;
use super::query::Selector;
use super::resources::ResourceType;

/// A resource's identity in the store: group and plural (all its versions share it).
pub type ResourceKey = (&'static str, &'static str);

/// The key of `resource`.
pub fn key(resource: &ResourceType) -> ResourceKey {
    (resource.group, resource.plural)
}

/// One change, as watches see it.
#[derive(Debug, Clone)]
pub struct Change {
    /// The resourceVersion the change made.
    pub rv: u64,
    /// The resource changed.
    pub resource: ResourceKey,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    /// The object after the change (for a deletion, as it was, with the deletion's
    /// resourceVersion).
    pub object: Value,
    /// The object before the change.
    pub old: Option<Value>,
}

/// An error answered as a `Status`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP code.
    pub code: u16,
    /// The Status reason (`NotFound`, `AlreadyExists`, `Conflict`, ...).
    pub reason: &'static str,
    /// The message.
    pub message: String,
    /// The Status details.
    pub details: Value,
}

impl ApiError {
    /// The error as a Status object.
    pub fn status(&self) -> Value {
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason,
            "details": self.details, "code": self.code,
        })
    }

    fn about(
        code: u16,
        reason: &'static str,
        resource: &ResourceType,
        name: &str,
        message: String,
    ) -> ApiError {
        let mut details = json!({"name": name, "kind": resource.plural});
        if !resource.group.is_empty() {
            details["group"] = json!(resource.group);
        }
        ApiError {
            code,
            reason,
            message,
            details,
        }
    }

    /// `404 NotFound` for `name`.
    pub fn not_found(resource: &ResourceType, name: &str) -> ApiError {
        let message = format!("{} {name:?} not found", resource.qualified());
        ApiError::about(404, "NotFound", resource, name, message)
    }

    /// `409 Conflict`: the object changed since the version the writer read.
    pub fn conflict(resource: &ResourceType, name: &str) -> ApiError {
        let message = format!(
            "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
            resource.qualified()
        );
        ApiError::about(409, "Conflict", resource, name, message)
    }

    /// `409 AlreadyExists` for `name`.
    pub fn already_exists(resource: &ResourceType, name: &str) -> ApiError {
        let message = format!("{} {name:?} already exists", resource.qualified());
        ApiError::about(409, "AlreadyExists", resource, name, message)
    }

    /// `400 BadRequest`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            code: 400,
            reason: "BadRequest",
            message: message.into(),
            details: json!({}),
        }
    }

    /// `422 Invalid` for `name`.
    pub fn invalid(resource: &ResourceType, name: &str, why: &str) -> ApiError {
        let message = format!("{} {name:?} is invalid: {why}", resource.qualified());
        ApiError::about(422, "Invalid", resource, name, message)
    }
}

struct Entry {
    object: Value,
    owners: Owners,
}

/// Where a watch starts.
pub enum WatchStart {
    /// Synthetic ADDED events for every object, then changes (no resourceVersion, or `0`).
    Now,
    /// Every change after this resourceVersion.
    After(u64),
}

/// What the store holds.
pub struct Store {
    rv: u64,
    objects: HashMap<ResourceKey, BTreeMap<(String, String), Entry>>,
    history: VecDeque<Arc<Change>>,
    /// Changes up to this resourceVersion are gone from the history.
    compacted: u64,
    history_limit: usize,
    events: broadcast::Sender<Arc<Change>>,
    serial: u64,
}

/// The time now as the API server writes it.
pub fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn rv_of(object: &Value) -> Option<&str> {
    object["metadata"]["resourceVersion"]
        .as_str()
        .filter(|rv| !rv.is_empty())
}

/// The object without metadata (and status): what a generation counts.
fn generation_content(object: &Value, has_status: bool) -> Value {
    let mut content = object.clone();
    if let Some(map) = content.as_object_mut() {
        map.remove("metadata");
        if has_status {
            map.remove("status");
        }
    }
    content
}

/// Whether two versions differ other than in their resourceVersion.
fn differs(a: &Value, b: &Value) -> bool {
    let mut a = a.clone();
    let mut b = b.clone();
    a["metadata"]["resourceVersion"] = Value::Null;
    b["metadata"]["resourceVersion"] = Value::Null;
    a != b
}

impl Store {
    /// An empty store keeping the last `history_limit` changes.
    pub fn new(history_limit: usize) -> Store {
        Store {
            rv: 0,
            objects: HashMap::new(),
            history: VecDeque::new(),
            compacted: 0,
            history_limit,
            events: broadcast::channel(8192).0,
            serial: 0,
        }
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Forgets the history: watches from any earlier resourceVersion get `410 Gone`.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    fn objects_of(&self, resource: &ResourceType) -> Option<&BTreeMap<(String, String), Entry>> {
        self.objects.get(&key(resource))
    }

    /// One object.
    pub fn get(
        &self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.objects_of(resource)
            .and_then(|objects| objects.get(&(namespace.to_string(), name.to_string())))
            .map(|entry| entry.object.clone())
            .ok_or_else(|| ApiError::not_found(resource, name))
    }

    /// Field owners of one object, as `(manager, from apply, fields)`.
    pub fn owners(
        &self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
    ) -> Vec<(String, bool, Vec<String>)> {
        self.objects_of(resource)
            .and_then(|objects| objects.get(&(namespace.to_string(), name.to_string())))
            .map(|entry| entry.owners.entries())
            .unwrap_or_default()
    }

    /// The objects in `namespace` (all namespaces when `None`) that the selectors
    /// match, by namespace and name.
    pub fn list(
        &self,
        resource: &ResourceType,
        namespace: Option<&str>,
        labels: &Selector,
        fields: &Selector,
    ) -> Vec<Value> {
        let Some(objects) = self.objects_of(resource) else {
            return Vec::new();
        };
        objects
            .iter()
            .filter(|((ns, _), _)| namespace.is_none_or(|wanted| wanted == ns))
            .map(|(_, entry)| &entry.object)
            .filter(|object| labels.matches_labels(object) && fields.matches_fields(object))
            .cloned()
            .collect()
    }

    /// A watch from `start`: the events to send first, and the receiver of later
    /// changes; `Err(compacted)` when the history no longer reaches back to `start`.
    #[allow(clippy::type_complexity)]
    pub fn watch(
        &self,
        resource: &ResourceType,
        start: WatchStart,
    ) -> Result<(Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>), u64> {
        // Subscribing under the lock the writers hold: no change falls between the
        // backlog and the stream.
        let receiver = self.events.subscribe();
        let backlog = match start {
            WatchStart::Now => self
                .objects_of(resource)
                .into_iter()
                .flat_map(|objects| objects.values())
                .map(|entry| {
                    Arc::new(Change {
                        rv: self.rv,
                        resource: key(resource),
                        kind: "ADDED",
                        object: entry.object.clone(),
                        old: None,
                    })
                })
                .collect(),
            WatchStart::After(rv) if rv < self.compacted => return Err(self.compacted),
            WatchStart::After(rv) => self
                .history
                .iter()
                .filter(|change| change.rv > rv && change.resource == key(resource))
                .cloned()
                .collect(),
        };
        Ok((backlog, receiver))
    }

    /// Every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.events.subscribe()
    }

    fn next_uid(&mut self) -> String {
        self.serial += 1;
        format!("5eed0000-0000-4000-8000-{:012x}", self.serial)
    }

    /// Five characters for `generateName`.
    fn random_suffix(&mut self) -> String {
        self.serial += 1;
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut n = self.serial.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
        (0..5)
            .map(|_| {
                let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
                n /= ALPHABET.len() as u64;
                c
            })
            .collect()
    }

    fn commit(
        &mut self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
        new: Option<(Value, Owners)>,
    ) -> Value {
        self.rv += 1;
        let rv = self.rv;
        let objects = self.objects.entry(key(resource)).or_default();
        let id = (namespace.to_string(), name.to_string());
        let old = objects.remove(&id).map(|entry| entry.object);
        let (kind, object) = match new {
            Some((mut object, owners)) => {
                object["metadata"]["resourceVersion"] = json!(rv.to_string());
                objects.insert(
                    id,
                    Entry {
                        object: object.clone(),
                        owners,
                    },
                );
                (if old.is_some() { "MODIFIED" } else { "ADDED" }, object)
            }
            None => {
                let mut object = old.clone().expect("a deletion of a stored object");
                object["metadata"]["resourceVersion"] = json!(rv.to_string());
                ("DELETED", object)
            }
        };
        let change = Arc::new(Change {
            rv,
            resource: key(resource),
            kind,
            object: object.clone(),
            old,
        });
        self.history.push_back(change.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.rv;
            }
        }
        let _ = self.events.send(change);
        object
    }

    /// Creates `object` in `namespace`; `manager` owns its fields (`apply`: as its
    /// server-side apply entry). `from_api`: as a client's POST (a status is dropped
    /// where status is a subresource); otherwise as the test seeds it.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &mut self,
        resource: &ResourceType,
        namespace: Option<&str>,
        mut object: Value,
        manager: &str,
        apply: bool,
        from_api: bool,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request("the body is not a JSON object"));
        }
        let namespace = namespace.unwrap_or_default();
        match object["metadata"]["namespace"].as_str() {
            Some(ns) if resource.namespaced && !ns.is_empty() && ns != namespace => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {}
        }
        let name = match (
            object["metadata"]["name"].as_str(),
            object["metadata"]["generateName"].as_str(),
        ) {
            (Some(name), _) if !name.is_empty() => name.to_string(),
            (_, Some(prefix)) if !prefix.is_empty() => format!("{prefix}{}", self.random_suffix()),
            _ => {
                return Err(ApiError::invalid(
                    resource,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
        };
        if self.get(resource, namespace, &name).is_ok() {
            return Err(ApiError::already_exists(resource, &name));
        }
        if from_api && resource.status {
            object.as_object_mut().map(|map| map.remove("status"));
        }
        object["apiVersion"] = json!(resource.api_version(resource.versions[0]));
        object["kind"] = json!(resource.kind);
        let metadata = &mut object["metadata"];
        metadata["name"] = json!(name);
        if resource.namespaced {
            metadata["namespace"] = json!(namespace);
        } else if let Some(map) = metadata.as_object_mut() {
            map.remove("namespace");
        }
        metadata["uid"] = json!(self.next_uid());
        metadata["creationTimestamp"] = json!(now());
        metadata["generation"] = json!(1);
        let owners = Owners::created(manager, apply, &object);
        if dry_run {
            object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
            return Ok(object);
        }
        Ok(self.commit(resource, namespace, &name, Some((object, owners))))
    }

    /// Updates an existing object: `compute` gets the stored object and its owners and
    /// returns the new object. `status`: through the status subresource (only `.status`
    /// changes); otherwise the stored status is kept where status is a subresource.
    /// `manager`: who takes the changed fields (`None` when `compute` recorded
    /// ownership itself, as apply does). A stale `metadata.resourceVersion` in the
    /// result is a conflict; an update that changes nothing writes nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
        status: bool,
        manager: Option<&str>,
        dry_run: bool,
        compute: impl FnOnce(&Value, &mut Owners) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let id = (namespace.to_string(), name.to_string());
        let (old, mut owners) = match self.objects.get(&key(resource)).and_then(|o| o.get(&id)) {
            Some(entry) => (entry.object.clone(), entry.owners.clone()),
            None => return Err(ApiError::not_found(resource, name)),
        };
        let mut new = compute(&old, &mut owners)?;
        if !new.is_object() {
            return Err(ApiError::bad_request("the body is not a JSON object"));
        }
        if let Some(rv) = rv_of(&new)
            && Some(rv) != rv_of(&old)
        {
            return Err(ApiError::conflict(resource, name));
        }
        if new["metadata"]["name"].as_str().is_some_and(|n| n != name)
            || (resource.namespaced
                && new["metadata"]["namespace"]
                    .as_str()
                    .is_some_and(|n| n != namespace))
        {
            return Err(ApiError::bad_request(
                "the name or namespace of the object provided does not match the request",
            ));
        }
        if status {
            let mut only_status = old.clone();
            match new.get("status") {
                Some(value) => only_status["status"] = value.clone(),
                None => {
                    only_status.as_object_mut().map(|m| m.remove("status"));
                }
            }
            new = only_status;
        } else {
            if resource.status {
                match old.get("status") {
                    Some(value) => new["status"] = value.clone(),
                    None => {
                        new.as_object_mut().map(|m| m.remove("status"));
                    }
                }
            }
            for field in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "generation",
                "name",
                "namespace",
            ] {
                match old["metadata"].get(field) {
                    Some(value) => new["metadata"][field] = value.clone(),
                    None => {
                        new["metadata"].as_object_mut().map(|m| m.remove(field));
                    }
                }
            }
            new["apiVersion"] = old["apiVersion"].clone();
            new["kind"] = old["kind"].clone();
            if generation_content(&old, resource.status)
                != generation_content(&new, resource.status)
            {
                let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
                new["metadata"]["generation"] = json!(generation);
            }
        }
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if !differs(&old, &new) {
            return Ok(old);
        }
        if let Some(manager) = manager {
            owners.record_update(manager, &old, &new);
        }
        if dry_run {
            return Ok(new);
        }
        let finalized = new["metadata"].get("deletionTimestamp").is_some()
            && new["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty());
        if finalized {
            return Ok(self.commit(resource, namespace, name, None));
        }
        Ok(self.commit(resource, namespace, name, Some((new, owners))))
    }

    /// Deletes an object, honouring the preconditions (`uid`, `resourceVersion`) of
    /// DeleteOptions. An object with finalizers only gets its deletionTimestamp; it goes
    /// when an update empties them.
    pub fn delete(
        &mut self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
        preconditions: &Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let old = self.get(resource, namespace, name)?;
        for (field, precondition) in [("uid", "uid"), ("resourceVersion", "resourceVersion")] {
            if let Some(expected) = preconditions[precondition].as_str()
                && old["metadata"][field].as_str() != Some(expected)
            {
                let mut error = ApiError::conflict(resource, name);
                error.message = format!(
                    "Operation cannot be fulfilled on {} {name:?}: Precondition failed: {field}: {expected}, actual: {}",
                    resource.qualified(),
                    old["metadata"][field].as_str().unwrap_or_default()
                );
                return Err(error);
            }
        }
        let has_finalizers = old["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if dry_run {
            return Ok(old);
        }
        if has_finalizers {
            if old["metadata"].get("deletionTimestamp").is_some() {
                return Ok(old);
            }
            let mut marked = old;
            marked["metadata"]["deletionTimestamp"] = json!(now());
            return Ok(self.set_deletion(resource, namespace, name, marked));
        }
        Ok(self.commit(resource, namespace, name, None))
    }

    /// Deletes an object at once, finalizers or not; returns it as deleted.
    pub fn remove(
        &mut self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        self.get(resource, namespace, name).ok()?;
        Some(self.commit(resource, namespace, name, None))
    }

    fn set_deletion(
        &mut self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
        object: Value,
    ) -> Value {
        let id = (namespace.to_string(), name.to_string());
        let owners = self
            .objects
            .get(&key(resource))
            .and_then(|o| o.get(&id))
            .map(|entry| entry.owners.clone())
            .unwrap_or_default();
        self.commit(resource, namespace, name, Some((object, owners)))
    }

    /// Puts `object` as the test gives it (status included): created, or replacing the
    /// stored object (keeping its uid and creation time).
    pub fn put(
        &mut self,
        resource: &ResourceType,
        namespace: &str,
        object: Value,
    ) -> Result<Value, ApiError> {
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let Ok(old) = self.get(resource, namespace, &name) else {
            return self.create(
                resource,
                Some(namespace),
                object,
                "testkit",
                false,
                false,
                false,
            );
        };
        let mut new = object;
        new["apiVersion"] = old["apiVersion"].clone();
        new["kind"] = old["kind"].clone();
        for field in ["uid", "creationTimestamp", "name", "namespace"] {
            new["metadata"][field] = old["metadata"][field].clone();
        }
        if new["metadata"].get("generation").is_none() {
            new["metadata"]["generation"] = old["metadata"]["generation"].clone();
        }
        let id = (namespace.to_string(), name.clone());
        let mut owners = self.objects[&key(resource)][&id].owners.clone();
        owners.record_update("testkit", &old, &new);
        Ok(self.commit(resource, namespace, &name, Some((new, owners))))
    }
}
