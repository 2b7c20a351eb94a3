//! Reading manifest files: parsing, listing a directory, merging files in order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use metallb_config::MetalLbObjects;
use serde::Deserialize;

use super::poll::Kind;
use crate::source::SourceError;

/// The objects read from a directory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifests {
    /// Services, in file order.
    pub services: Vec<Service>,
    /// EndpointSlices, in file order.
    pub slices: Vec<EndpointSlice>,
    /// MetalLB's objects, Nodes and Namespaces (for LoadBalancer Services).
    pub cluster: ClusterObjects,
    /// Objects that were ignored, with the reason.
    pub warnings: Vec<String>,
}

/// The objects a directory holds for LoadBalancer Services besides Services and
/// EndpointSlices: MetalLB's configuration, the Nodes (who may announce) and the
/// Namespaces (their labels select address pools). They are few, so they travel
/// whole.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterObjects {
    /// MetalLB's custom resources and legacy ConfigMap.
    pub metallb: MetalLbObjects,
    /// Nodes, in file order.
    pub nodes: Vec<Node>,
    /// Namespaces, in file order.
    pub namespaces: Vec<Namespace>,
    /// Secrets (BGP passwords named by `BGPPeer.spec.passwordSecret`), in file order.
    pub secrets: Vec<Secret>,
}

impl ClusterObjects {
    /// Appends another file's objects (a later file's object of the same name is
    /// kept after the earlier one; consumers key by name, so the later wins).
    pub fn extend(&mut self, other: &ClusterObjects) {
        let metallb = &mut self.metallb;
        metallb.pools.extend(other.metallb.pools.iter().cloned());
        metallb
            .l2_advertisements
            .extend(other.metallb.l2_advertisements.iter().cloned());
        metallb
            .bgp_advertisements
            .extend(other.metallb.bgp_advertisements.iter().cloned());
        metallb.peers.extend(other.metallb.peers.iter().cloned());
        metallb
            .bfd_profiles
            .extend(other.metallb.bfd_profiles.iter().cloned());
        metallb
            .communities
            .extend(other.metallb.communities.iter().cloned());
        if other.metallb.legacy.is_some() {
            metallb.legacy = other.metallb.legacy.clone();
        }
        self.nodes.extend(other.nodes.iter().cloned());
        self.namespaces.extend(other.namespaces.iter().cloned());
        self.secrets.extend(other.secrets.iter().cloned());
    }
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
        "Node" => {
            let node: Node = serde_json::from_value(value)
                .map_err(|error| parse_error(format!("Node {name:?}: {error}")))?;
            manifests
                .cluster
                .nodes
                .push(crate::source::cluster_nodes::slim_node(node));
        }
        "Namespace" => {
            let namespace: Namespace = serde_json::from_value(value)
                .map_err(|error| parse_error(format!("Namespace {name:?}: {error}")))?;
            manifests.cluster.namespaces.push(namespace);
        }
        "Secret" => {
            let secret: Secret = serde_json::from_value(value)
                .map_err(|error| parse_error(format!("Secret {name:?}: {error}")))?;
            manifests.cluster.secrets.push(secret);
        }
        _ if api_version.starts_with("metallb.io/") || kind == "ConfigMap" => {
            // A ConfigMap counts when it is MetalLB's legacy configuration (named
            // `config`, with a `config` key), in whichever namespace the file puts it.
            let namespace = value["metadata"]["namespace"]
                .as_str()
                .unwrap_or(metallb_config::DEFAULT_NAMESPACE)
                .to_string();
            let taken = manifests
                .cluster
                .metallb
                .add_document(&value, &namespace)
                .map_err(|error| parse_error(error.to_string()))?;
            if !taken {
                manifests.warnings.push(format!(
                    "{path}: document {document}: {kind} {name:?} ignored: not a MetalLB configuration object"
                ));
            }
        }
        "List" | "ServiceList" | "EndpointSliceList" | "NodeList" | "NamespaceList" => {
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
            "{path}: document {document}: {other} {name:?} ignored: only Services, EndpointSlices, Nodes, Namespaces and MetalLB's objects are read"
        )),
    }
    Ok(())
}

pub(super) fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
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
pub(super) type Id = (String, String);

/// The objects of several files merged in file order, with the warnings of merging.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Merged {
    pub(super) services: BTreeMap<Id, Service>,
    pub(super) slices: BTreeMap<Id, EndpointSlice>,
    pub(super) warnings: Vec<String>,
}

pub(super) fn object_id(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Id {
    (
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone().unwrap_or_default(),
    )
}

/// The warnings of merging parsed files in order: each file's own, and one for each
/// object a later file defines again (the later definition is used).
pub(super) fn merge_warnings<'a>(
    files: impl IntoIterator<Item = (String, &'a Manifests)>,
) -> Vec<String> {
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
pub(super) fn merge_files(files: Vec<(String, Manifests)>) -> Merged {
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
pub(super) fn file_objects(manifests: &Manifests) -> impl Iterator<Item = (Kind, Id)> + '_ {
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

pub(super) fn read_file(path: &Path) -> Result<Manifests, SourceError> {
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
    let mut cluster = ClusterObjects::default();
    for (_, parsed) in &files {
        cluster.extend(&parsed.cluster);
    }
    let merged = merge_files(files);
    Ok(Manifests {
        services: merged.services.into_values().collect(),
        slices: merged.slices.into_values().collect(),
        cluster,
        warnings: merged.warnings,
    })
}

/// Every manifest file's read or parse error in `dir`, not only the first as
/// [`load_dir`] reports: an operator fixing an export wants them all at once.
pub fn parse_errors(dir: &Path) -> Vec<String> {
    match manifest_files(dir) {
        Ok(files) => files
            .iter()
            .filter_map(|path| read_file(path).err().map(|error| error.to_string()))
            .collect(),
        Err(error) => vec![error.to_string()],
    }
}
