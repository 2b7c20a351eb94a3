//! The MetalLB objects as read, before validation.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Resource;
use serde_json::Value;

use crate::crd::{
    BFDProfile, BGPAdvertisement, BGPPeer, Community, IPAddressPool, L2Advertisement, v1beta1,
};
use crate::error::ObjectError;

/// Every MetalLB object a source found, as read. Order does not matter:
/// [`crate::validate()`] sorts by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetalLbObjects {
    /// `IPAddressPool`s.
    pub pools: Vec<IPAddressPool>,
    /// `L2Advertisement`s.
    pub l2_advertisements: Vec<L2Advertisement>,
    /// `BGPAdvertisement`s.
    pub bgp_advertisements: Vec<BGPAdvertisement>,
    /// `BGPPeer`s (v1beta1 ones converted to v1beta2 on reading).
    pub peers: Vec<BGPPeer>,
    /// `BFDProfile`s.
    pub bfd_profiles: Vec<BFDProfile>,
    /// `Community` alias lists.
    pub communities: Vec<Community>,
    /// The legacy ConfigMap (MetalLB ≤ 0.12), if present: converted by
    /// [`crate::legacy`] during validation.
    pub legacy: Option<ConfigMap>,
}

impl MetalLbObjects {
    /// Whether there is no MetalLB configuration at all.
    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
            && self.l2_advertisements.is_empty()
            && self.bgp_advertisements.is_empty()
            && self.peers.is_empty()
            && self.bfd_profiles.is_empty()
            && self.communities.is_empty()
            && self.legacy.is_none()
    }

    /// The objects in `namespace` (or with none, as a manifest may leave it out): the
    /// Kubernetes source reads MetalLB's objects in one namespace only, and a
    /// directory of manifests is read the same way. Each object left out is named in
    /// `ignored` so the caller can say so.
    pub fn in_namespace(&self, namespace: &str, ignored: &mut Vec<String>) -> MetalLbObjects {
        fn keep<T: Resource<DynamicType = ()> + Clone>(
            items: &[T],
            namespace: &str,
            ignored: &mut Vec<String>,
        ) -> Vec<T> {
            items
                .iter()
                .filter(|item| {
                    let meta = item.meta();
                    match meta.namespace.as_deref() {
                        None => true,
                        Some(ns) if ns == namespace => true,
                        Some(ns) => {
                            ignored.push(format!(
                                "{} {ns}/{}: ignored: MetalLB's objects are read in namespace {namespace} (metallbNamespace)",
                                T::kind(&()),
                                meta.name.as_deref().unwrap_or_default()
                            ));
                            false
                        }
                    }
                })
                .cloned()
                .collect()
        }
        let legacy = self
            .legacy
            .as_ref()
            .filter(|config_map| {
                keep(std::slice::from_ref(*config_map), namespace, ignored).len() == 1
            })
            .cloned();
        MetalLbObjects {
            pools: keep(&self.pools, namespace, ignored),
            l2_advertisements: keep(&self.l2_advertisements, namespace, ignored),
            bgp_advertisements: keep(&self.bgp_advertisements, namespace, ignored),
            peers: keep(&self.peers, namespace, ignored),
            bfd_profiles: keep(&self.bfd_profiles, namespace, ignored),
            communities: keep(&self.communities, namespace, ignored),
            legacy,
        }
    }

    /// Adds one object given as JSON (a manifest document or an API object) if it is
    /// a MetalLB kind. Returns `Ok(false)` for anything else, so a caller can offer
    /// every document of a directory. A ConfigMap counts only when it is MetalLB's
    /// legacy one: named `config` in `namespace` (or named by the caller as such).
    pub fn add_document(&mut self, document: &Value, namespace: &str) -> Result<bool, ObjectError> {
        let api_version = document
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let kind = document.get("kind").and_then(Value::as_str).unwrap_or("");
        let group = api_version
            .split_once('/')
            .map(|(group, _)| group)
            .unwrap_or("");
        if group == crate::GROUP {
            // MetalLB's advertisements, profiles and communities may omit `spec` (every
            // field is optional: `kind: L2Advertisement` alone announces every pool);
            // the derived types want one, so an empty one is supplied.
            let patched;
            let document = if document.get("spec").is_none_or(Value::is_null) {
                let mut copy = document.clone();
                if let Some(object) = copy.as_object_mut() {
                    object.insert("spec".into(), Value::Object(Default::default()));
                }
                patched = copy;
                &patched
            } else {
                document
            };
            match (api_version, kind) {
                (_, "IPAddressPool") => self.pools.push(parse(document, kind)?),
                (_, "L2Advertisement") => self.l2_advertisements.push(parse(document, kind)?),
                (_, "BGPAdvertisement") => self.bgp_advertisements.push(parse(document, kind)?),
                ("metallb.io/v1beta1", "BGPPeer") => {
                    let old: v1beta1::BGPPeer = parse(document, kind)?;
                    self.peers.push(old.into());
                }
                (_, "BGPPeer") => self.peers.push(parse(document, kind)?),
                (_, "BFDProfile") => self.bfd_profiles.push(parse(document, kind)?),
                (_, "Community") => self.communities.push(parse(document, kind)?),
                // ServiceL2Status, ServiceBGPStatus, ConfigurationState, MetalLB (the
                // operator's): status or operator objects, not configuration.
                _ => return Ok(false),
            }
            return Ok(true);
        }
        if api_version == "v1" && kind == "ConfigMap" {
            let config_map: ConfigMap = parse(document, kind)?;
            let is_legacy = config_map.meta().name.as_deref() == Some("config")
                && config_map.meta().namespace.as_deref().unwrap_or(namespace) == namespace
                && config_map
                    .data
                    .as_ref()
                    .is_some_and(|data| data.contains_key("config"));
            if is_legacy {
                self.legacy = Some(config_map);
                return Ok(true);
            }
        }
        Ok(false)
    }
}

fn parse<T: serde::de::DeserializeOwned>(document: &Value, kind: &str) -> Result<T, ObjectError> {
    T::deserialize(document).map_err(|error| ObjectError::Schema {
        kind: kind.to_string(),
        name: document
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("<unnamed>")
            .to_string(),
        message: error.to_string(),
    })
}
