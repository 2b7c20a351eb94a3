//! Field ownership, the part of server-side apply that makes it safe for racing
//! writers: each field manager owns the leaf fields it set. An apply that would change
//! a field another manager owns fails with a conflict unless forced (this is what
//! keeps two Lease managers from both taking a free Lease); an update (PUT, or a
//! non-apply PATCH) takes over the fields it changes. Lists are atomic leaves, and
//! ownership is kept beside the object rather than rendered as `managedFields`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// Metadata the server manages, never owned by anyone.
const SERVER_FIELDS: &[&str] = &[
    "/apiVersion",
    "/kind",
    "/metadata/name",
    "/metadata/namespace",
    "/metadata/uid",
    "/metadata/resourceVersion",
    "/metadata/generation",
    "/metadata/creationTimestamp",
    "/metadata/deletionTimestamp",
    "/metadata/managedFields",
    "/metadata/selfLink",
];

/// A manager's entry: its name and whether it came from apply.
type Manager = (String, bool);

/// Who owns which leaf (as a JSON pointer) of one object.
#[derive(Debug, Clone, Default)]
pub struct Owners(BTreeMap<Manager, BTreeSet<String>>);

/// The leaves of `value` by JSON pointer: scalars, lists and empty objects.
pub fn leaves(value: &Value) -> BTreeMap<String, &Value> {
    fn walk<'a>(value: &'a Value, pointer: String, out: &mut BTreeMap<String, &'a Value>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, child) in map {
                    let escaped = key.replace('~', "~0").replace('/', "~1");
                    walk(child, format!("{pointer}/{escaped}"), out);
                }
            }
            _ => {
                if !SERVER_FIELDS.contains(&pointer.as_str()) {
                    out.insert(pointer, value);
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(value, String::new(), &mut out);
    out
}

impl Owners {
    /// Ownership of a new object: `manager` owns every field (`apply`: in its apply
    /// entry).
    pub fn created(manager: &str, apply: bool, object: &Value) -> Owners {
        let paths = leaves(object).into_keys().collect();
        Owners(BTreeMap::from([((manager.to_string(), apply), paths)]))
    }

    /// Ownership after an update by `manager` from `old` to `new`: it owns what it
    /// changed or added; removed fields have no owner any more.
    pub fn record_update(&mut self, manager: &str, old: &Value, new: &Value) {
        let (old, new) = (leaves(old), leaves(new));
        let changed: BTreeSet<String> = new
            .iter()
            .filter(|(path, value)| old.get(*path) != Some(*value))
            .map(|(path, _)| path.clone())
            .collect();
        for (owner, paths) in self.0.iter_mut() {
            paths.retain(|path| new.contains_key(path));
            if owner.0 != manager || owner.1 {
                paths.retain(|path| !changed.contains(path));
            }
        }
        self.0
            .entry((manager.to_string(), false))
            .or_default()
            .extend(changed);
        self.0.retain(|_, paths| !paths.is_empty());
    }

    /// The fields `applied` would change that other managers own, as
    /// `(manager, pointer)`.
    pub fn conflicts(
        &self,
        manager: &str,
        current: &Value,
        applied: &Value,
    ) -> Vec<(String, String)> {
        let current = leaves(current);
        let mut conflicts = Vec::new();
        for (path, value) in leaves(applied) {
            if current.get(&path) == Some(&value) {
                continue;
            }
            for ((owner, _), paths) in &self.0 {
                if owner != manager && paths.contains(&path) {
                    conflicts.push((owner.clone(), path.clone()));
                }
            }
        }
        conflicts
    }

    /// Applies `applied` (an apply configuration) by `manager` to `current`: the
    /// configuration is merged in, the fields the manager applied before and no longer
    /// does are removed unless someone else owns them too, and the manager's apply entry
    /// becomes exactly the configuration's fields. With `force`, fields taken from other
    /// managers leave their entries.
    pub fn apply(&mut self, manager: &str, current: &Value, applied: &Value, force: bool) -> Value {
        let key = (manager.to_string(), true);
        let applied_paths: BTreeSet<String> = leaves(applied).into_keys().collect();
        let before = self.0.remove(&key).unwrap_or_default();
        let mut result = current.clone();
        for path in before.difference(&applied_paths) {
            let shared = self.0.values().any(|paths| paths.contains(path));
            if !shared {
                remove_pointer(&mut result, path);
            }
        }
        json_patch::merge(&mut result, applied);
        let current_leaves = leaves(current);
        let applied_leaves = leaves(applied);
        for ((owner, _), paths) in self.0.iter_mut() {
            if owner == manager || force {
                paths.retain(|path| {
                    !applied_paths.contains(path)
                        || current_leaves.get(path) == applied_leaves.get(path)
                });
            }
        }
        self.0.insert(key, applied_paths);
        let final_leaves = leaves(&result);
        for paths in self.0.values_mut() {
            paths.retain(|path| final_leaves.contains_key(path));
        }
        self.0.retain(|_, paths| !paths.is_empty());
        result
    }

    /// Every (manager, from apply, fields) entry, for tests to look at.
    pub fn entries(&self) -> Vec<(String, bool, Vec<String>)> {
        self.0
            .iter()
            .map(|((m, a), p)| (m.clone(), *a, p.iter().cloned().collect()))
            .collect()
    }
}

/// Removes the value at `pointer`, and the objects left empty above it.
fn remove_pointer(value: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let key = last.replace("~1", "/").replace("~0", "~");
    if let Some(Value::Object(map)) = value.pointer_mut(parent) {
        map.remove(&key);
        if map.is_empty() && !parent.is_empty() {
            remove_pointer(value, parent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn apply_conflicts_with_another_managers_field() {
        let mut owners = Owners::default();
        let empty = json!({"metadata": {"name": "l"}});
        let a = json!({"spec": {"holderIdentity": "a", "renewTime": "t1"}});
        assert!(owners.conflicts("a", &empty, &a).is_empty());
        let held = owners.apply("a", &empty, &a, false);
        let b = json!({"spec": {"holderIdentity": "b", "renewTime": "t2"}});
        let conflicts = owners.conflicts("b", &held, &b);
        assert_eq!(conflicts.len(), 2, "{conflicts:?}");
        // The same values conflict with nobody: shared ownership.
        assert!(owners.conflicts("b", &held, &a).is_empty());
        // An update that removes the fields frees them.
        let released = json!({"metadata": {"name": "l"}, "spec": {}});
        owners.record_update("b", &held, &released);
        assert!(owners.conflicts("b", &released, &b).is_empty());
    }

    #[test]
    fn apply_removes_what_the_manager_no_longer_applies() {
        let mut owners = Owners::default();
        let first = owners.apply(
            "m",
            &json!({}),
            &json!({"data": {"a": "1", "b": "2"}}),
            false,
        );
        let second = owners.apply("m", &first, &json!({"data": {"a": "1"}}), false);
        assert_eq!(second, json!({"data": {"a": "1"}}));
    }
}
