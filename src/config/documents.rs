//! The file's YAML documents: which kind each one is, at most one of each, and the
//! fields nobody reads turned into warnings naming them.
//!
//! A field ends up in one of three places: the typed `Raw*` structs (what ipvs-proxy
//! implements), a list of known-but-unsupported fields (taken out of the document before
//! it is typed, and a warning when they ask for anything), or nowhere (an unknown field,
//! reported by `serde_ignored`).

use serde_yaml_ng::Value;

use super::{
    ConfigError, IPVS_PROXY_API_VERSION, IPVS_PROXY_KIND, KUBE_PROXY_API_VERSION, KUBE_PROXY_KIND,
};

/// A field ipvs-proxy knows but does not implement.
#[derive(Debug, Clone, Copy)]
pub(super) struct Unsupported {
    /// Its dotted path, e.g. `iptables.localhostNodePorts`.
    pub(super) path: &'static str,
    /// Appended to the warning, e.g. ` (kube-proxy reads it in iptables mode only)`.
    pub(super) why: &'static str,
}

/// The documents of one configuration file, by kind, each with its 1-based index.
#[derive(Debug, Default)]
pub(super) struct Documents {
    /// The `KubeProxyConfiguration`.
    pub(super) kube_proxy: Option<(usize, Value)>,
    /// The `IpvsProxyConfiguration`, when there is one.
    pub(super) extensions: Option<(usize, Value)>,
}

impl Documents {
    /// Splits `text` into its documents; empty documents are skipped.
    pub(super) fn split(text: &str) -> Result<Documents, ConfigError> {
        let mut documents = Documents::default();
        for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let number = index + 1;
            let value =
                serde::Deserialize::deserialize(document).map_err(|error| ConfigError::Syntax {
                    document: number,
                    kind: "YAML document".into(),
                    message: error.to_string(),
                })?;
            documents.add(number, value)?;
        }
        Ok(documents)
    }

    fn add(&mut self, number: usize, value: Value) -> Result<(), ConfigError> {
        if value.is_null() {
            return Ok(());
        }
        let field = |name: &str| {
            value
                .get(name)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let (api_version, kind) = (field("apiVersion"), field("kind"));
        let (slot, kind_name) = match (api_version.as_str(), kind.as_str()) {
            (KUBE_PROXY_API_VERSION, KUBE_PROXY_KIND) => (&mut self.kube_proxy, KUBE_PROXY_KIND),
            (IPVS_PROXY_API_VERSION, IPVS_PROXY_KIND) => (&mut self.extensions, IPVS_PROXY_KIND),
            _ => {
                return Err(ConfigError::UnknownKind {
                    document: number,
                    api_version,
                    kind,
                });
            }
        };
        if slot.is_some() {
            return Err(ConfigError::Documents(format!(
                "configuration document {number} is a second {kind_name}; keep one"
            )));
        }
        *slot = Some((number, value));
        Ok(())
    }
}

/// Types one document as `T`. `apiVersion` and `kind` (already checked) and the
/// `unsupported` fields are taken out first; an unsupported field that is set to anything
/// but its zero value, and every field `T` does not know, is a warning naming it.
pub(super) fn typed<T: serde::de::DeserializeOwned>(
    mut value: Value,
    document: usize,
    kind: &str,
    unsupported: &[Unsupported],
    warnings: &mut Vec<String>,
) -> Result<T, ConfigError> {
    take(&mut value, "apiVersion");
    take(&mut value, "kind");
    for field in unsupported {
        if take(&mut value, field.path).is_some_and(|taken| is_set(&taken)) {
            warnings.push(format!(
                "{kind}: {} is not supported by ipvs-proxy and is ignored{}",
                field.path, field.why
            ));
        }
    }
    let mut unknown = Vec::new();
    // serde_path_to_error names the field a type error is in; serde_ignored reports
    // the fields nobody reads.
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
    let ignoring = serde_ignored::Deserializer::new(value, &mut record);
    let parsed =
        serde_path_to_error::deserialize(ignoring).map_err(|error| ConfigError::Syntax {
            document,
            kind: kind.into(),
            message: format!("{}: {}", error.path(), error.inner()),
        })?;
    warnings.extend(
        unknown
            .into_iter()
            .map(|path| format!("{kind}: unknown field {path} ignored")),
    );
    Ok(parsed)
}

/// Removes the field at the dotted `path` and returns its value.
fn take(value: &mut Value, path: &str) -> Option<Value> {
    let (parents, last) = match path.rsplit_once('.') {
        Some((parents, last)) => (Some(parents), last),
        None => (None, path),
    };
    let mut node = value;
    for key in parents.into_iter().flat_map(|parents| parents.split('.')) {
        node = node.get_mut(key)?;
    }
    // shift_remove keeps the other fields in document order, so warnings follow the file.
    node.as_mapping_mut()?.shift_remove(last)
}

/// Whether a value asks for anything: generated files (kubeadm's ConfigMap) write every
/// field, unset ones as null, false, 0, "" or "0s", which ask for nothing and so are no
/// reason to warn.
fn is_set(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(set) => *set,
        Value::Number(number) => number.as_f64() != Some(0.0),
        Value::String(text) => !matches!(text.trim(), "" | "0" | "0s"),
        Value::Sequence(items) => !items.is_empty(),
        Value::Mapping(fields) => fields.values().any(is_set),
        Value::Tagged(tagged) => is_set(&tagged.value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml_ng::from_str(text).unwrap()
    }

    #[test]
    fn zero_values_ask_for_nothing() {
        for unset in [
            "null",
            "false",
            "0",
            "\"\"",
            "0s",
            "[]",
            "{}",
            "{a: 0, b: {c: \"0\"}}",
        ] {
            assert!(!is_set(&yaml(unset)), "{unset}");
        }
        for set in ["true", "-999", "x", "[1]", "{a: {b: 1}}", "1Mi"] {
            assert!(is_set(&yaml(set)), "{set}");
        }
    }

    #[test]
    fn take_removes_nested_fields_only_where_they_are() {
        let mut value = yaml("a: 1\nb:\n  c: 2\n  d: 3\n");
        assert_eq!(take(&mut value, "b.c"), Some(yaml("2")));
        assert_eq!(take(&mut value, "b.c"), None);
        assert_eq!(take(&mut value, "x.y"), None);
        assert_eq!(take(&mut value, "a"), Some(yaml("1")));
        assert_eq!(value, yaml("b:\n  d: 3\n"));
    }
}
