//! Request addressing: the resource path (`/api/v1/...`, `/apis/<group>/<version>/...`),
//! the query parameters, and label and field selectors as the API server reads them.

use std::collections::HashMap;

use serde_json::Value;

use super::resources::{self, ResourceType};

/// What a path addresses.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resource.
    pub resource: &'static ResourceType,
    /// The version asked for.
    pub version: String,
    /// The namespace in the path, if any (`None` on cluster-scoped resources and on
    /// all-namespaces lists).
    pub namespace: Option<String>,
    /// The object's name (`None` for the collection).
    pub name: Option<String>,
    /// The subresource (`status`).
    pub subresource: Option<String>,
}

/// Why a path addresses nothing.
#[derive(Debug)]
pub enum PathError {
    /// Not a resource path, or a resource we do not serve.
    NotFound,
}

/// Parses a resource path.
pub fn parse_path(path: &str) -> Result<Target, PathError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(PathError::NotFound),
    };
    // `namespaces/<ns>/<plural>...` is a namespaced path, except `namespaces/<name>`
    // and `namespaces/<name>/status`, which address a Namespace object.
    let (namespace, rest) = match rest {
        ["namespaces", namespace, plural, rest @ ..] if *plural != "status" => {
            (Some(namespace.to_string()), {
                let mut all = vec![*plural];
                all.extend_from_slice(rest);
                all
            })
        }
        _ => (None, rest.to_vec()),
    };
    let (plural, name, subresource) = match rest.as_slice() {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(name.to_string()), None),
        [plural, name, sub] => (*plural, Some(name.to_string()), Some(sub.to_string())),
        _ => return Err(PathError::NotFound),
    };
    let resource = resources::by_path(group, version, plural).ok_or(PathError::NotFound)?;
    let scope_fits = match (&namespace, &name) {
        (Some(_), _) => resource.namespaced,
        // A namespaced resource without a namespace: only the all-namespaces collection.
        (None, Some(_)) => !resource.namespaced,
        (None, None) => true,
    };
    let subresource_fits = match subresource.as_deref() {
        None => true,
        Some("status") => resource.status,
        Some(_) => false,
    };
    if !scope_fits || !subresource_fits || name.as_deref() == Some("") {
        return Err(PathError::NotFound);
    }
    Ok(Target {
        resource,
        version: version.to_string(),
        namespace,
        name,
        subresource,
    })
}

/// Query parameters, percent-decoded.
pub fn parse_query(query: &str) -> HashMap<String, String> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Whether a query flag (`watch`, `allowWatchBookmarks`, ...) is set.
pub fn flag(query: &HashMap<String, String>, name: &str) -> bool {
    matches!(query.get(name).map(String::as_str), Some("true" | "1"))
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A label or field selector: requirements that must all hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector(Vec<Requirement>);

impl Selector {
    /// Parses `a=b,a==b,a!=b,a,!a,a in (x,y),a notin (x)`; the error names the part
    /// that does not parse.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let requirement = if let Some(key) = part.strip_prefix('!') {
                Requirement::NotExists(key.trim().to_string())
            } else if let Some((key, value)) = part.split_once("!=") {
                Requirement::NotEquals(key.trim().to_string(), value.trim().to_string())
            } else if let Some((key, value)) = part.split_once("==") {
                Requirement::Equals(key.trim().to_string(), value.trim().to_string())
            } else if let Some((key, value)) = part.split_once('=') {
                Requirement::Equals(key.trim().to_string(), value.trim().to_string())
            } else if let Some((key, values)) = set_operands(part, " notin ") {
                Requirement::NotIn(key, values)
            } else if let Some((key, values)) = set_operands(part, " in ") {
                Requirement::In(key, values)
            } else if part.contains(|c: char| c.is_whitespace() || "()".contains(c)) {
                return Err(format!("unable to parse requirement: {part:?}"));
            } else {
                Requirement::Exists(part.to_string())
            };
            requirements.push(requirement);
        }
        Ok(Selector(requirements))
    }

    /// Whether a value lookup (`key` → value) satisfies every requirement.
    pub fn matches(&self, lookup: impl Fn(&str) -> Option<String>) -> bool {
        self.0.iter().all(|requirement| match requirement {
            Requirement::Equals(k, v) => lookup(k).as_deref() == Some(v.as_str()),
            Requirement::NotEquals(k, v) => lookup(k).as_deref() != Some(v.as_str()),
            Requirement::Exists(k) => lookup(k).is_some(),
            Requirement::NotExists(k) => lookup(k).is_none(),
            Requirement::In(k, vs) => lookup(k).is_some_and(|v| vs.contains(&v)),
            Requirement::NotIn(k, vs) => lookup(k).is_none_or(|v| !vs.contains(&v)),
        })
    }

    /// Whether the object's labels satisfy the selector.
    pub fn matches_labels(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.matches(|key| labels.get(key).and_then(Value::as_str).map(str::to_string))
    }

    /// Whether the object's fields satisfy the selector: a key is a dotted path
    /// (`metadata.name`, `spec.nodeName`, `involvedObject.name`). The real API server
    /// accepts only a few fields per resource; this accepts any.
    pub fn matches_fields(&self, object: &Value) -> bool {
        self.matches(|key| {
            let mut value = object;
            for segment in key.split('.') {
                value = value.get(segment)?;
            }
            match value {
                Value::String(s) => Some(s.clone()),
                Value::Null => None,
                other => Some(other.to_string()),
            }
        })
    }
}

/// `key <op> (a, b)` → `(key, [a, b])`.
fn set_operands(part: &str, operator: &str) -> Option<(String, Vec<String>)> {
    let (key, values) = part.split_once(operator)?;
    let values = values.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some((
        key.trim().to_string(),
        values.split(',').map(|v| v.trim().to_string()).collect(),
    ))
}

/// Splits at commas outside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kube_proxy_selector() {
        let selector = Selector::parse(
            "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name",
        )
        .unwrap();
        assert!(selector.matches_labels(&json!({"metadata": {"labels": {"app": "web"}}})));
        assert!(!selector.matches_labels(
            &json!({"metadata": {"labels": {"service.kubernetes.io/headless": ""}}})
        ));
        let set = Selector::parse("tier in (web, api),env notin (dev),app").unwrap();
        assert!(set.matches_labels(&json!({"metadata": {"labels": {"tier": "api", "app": "x"}}})));
        assert!(!set.matches_labels(
            &json!({"metadata": {"labels": {"tier": "api", "app": "x", "env": "dev"}}})
        ));
        assert!(Selector::parse("a b").is_err());
    }

    #[test]
    fn paths() {
        let t = parse_path("/api/v1/namespaces/default/services/web/status").unwrap();
        assert_eq!(
            (
                t.resource.plural,
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.subresource.as_deref()
            ),
            ("services", Some("default"), Some("web"), Some("status"))
        );
        let t = parse_path("/api/v1/namespaces/kube-system/status").unwrap();
        assert_eq!(
            (t.resource.plural, t.name.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        assert!(parse_path("/api/v1/services/web").is_err());
        assert!(parse_path("/apis/metallb.io/v1beta2/namespaces/m/bgppeers").is_ok());
        assert!(parse_path("/apis/metallb.io/v1beta2/namespaces/m/ipaddresspools").is_err());
        assert!(parse_path("/api/v1/namespaces/default/configmaps/x/status").is_err());
    }
}
