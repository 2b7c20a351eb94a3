//! Discovery as clients read it before they know a resource's path: `/version`,
//! `/api`, `/apis`, and each group version's resource list, built from the
//! [`RESOURCES`] table. Open to every user, as the API server's `system:discovery`
//! role makes them. Only the legacy (non-aggregated) documents.

use std::net::SocketAddr;

use serde_json::{Value, json};

use super::resources::RESOURCES;

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The discovery document at `path`, if it is one.
pub fn document(path: &str, addr: Option<SocketAddr>) -> Option<Value> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["version"] => Some(json!({
            "major": "1", "minor": "34", "gitVersion": "v1.34.0-testkit",
            "gitCommit": "", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "", "compiler": "gc", "platform": "linux/amd64",
        })),
        ["api"] => Some(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{
                "clientCIDR": "0.0.0.0/0",
                "serverAddress": addr.map(|a| a.to_string()).unwrap_or_default(),
            }],
        })),
        ["apis"] => {
            let mut groups: Vec<Value> = Vec::new();
            for resource in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
                if groups.iter().any(|g| g["name"] == resource.group) {
                    continue;
                }
                let mut versions: Vec<&str> = RESOURCES
                    .iter()
                    .filter(|r| r.group == resource.group)
                    .flat_map(|r| r.versions.iter().copied())
                    .collect();
                versions.sort_by_key(|v| std::cmp::Reverse(priority(v)));
                versions.dedup();
                let version = |v: &str| json!({"groupVersion": format!("{}/{v}", resource.group), "version": v});
                groups.push(json!({
                    "name": resource.group,
                    "versions": versions.iter().map(|v| version(v)).collect::<Vec<_>>(),
                    "preferredVersion": version(versions[0]),
                }));
            }
            Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        }
        ["api", version] => resource_list("", version),
        ["apis", group, version] => resource_list(group, version),
        _ => None,
    }
}

/// Kubernetes' version priority: GA over beta over alpha, then the higher numbers
/// (`v1` > `v1beta2` > `v1beta1` > `v1alpha1`); the first is the group's preferred.
fn priority(version: &str) -> (u8, u32, u32) {
    let rest = version.strip_prefix('v').unwrap_or(version);
    let digits = |s: &str| s.parse::<u32>().unwrap_or(0);
    let major_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (major, tail) = rest.split_at(major_end);
    match tail {
        "" => (3, digits(major), 0),
        _ if tail.starts_with("beta") => (2, digits(major), digits(&tail[4..])),
        _ if tail.starts_with("alpha") => (1, digits(major), digits(&tail[5..])),
        _ => (0, 0, 0),
    }
}

fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for resource in RESOURCES
        .iter()
        .filter(|r| r.group == group && r.versions.contains(&version))
    {
        resources.push(json!({
            "name": resource.plural, "singularName": resource.kind.to_lowercase(),
            "namespaced": resource.namespaced, "kind": resource.kind, "verbs": VERBS,
        }));
        if resource.status {
            resources.push(json!({
                "name": format!("{}/status", resource.plural), "singularName": "",
                "namespaced": resource.namespaced, "kind": resource.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    Some(json!({
        "kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": super::resources::RESOURCES
            .iter()
            .find(|r| r.group == group)
            .map(|r| r.api_version(version))?,
        "resources": resources,
    }))
}
