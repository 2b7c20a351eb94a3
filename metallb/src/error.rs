//! What can be wrong with MetalLB objects.

use std::fmt;

/// One invalid object (or field of one): the object is left out of the
/// [`crate::LbConfig`], the others still apply. Shown to operators and sent as a
/// Kubernetes Event on the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The object's kind, e.g. `IPAddressPool`.
    pub kind: String,
    /// Its namespace (empty for the legacy ConfigMap's parts).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The field at fault, as a path (`spec.addresses[1]`); empty for the whole object.
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.kind)?;
        if !self.namespace.is_empty() {
            write!(f, "{}/", self.namespace)?;
        }
        write!(f, "{}", self.name)?;
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A document that cannot be read as a MetalLB object at all.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The document is a MetalLB kind but does not match its schema.
    #[error("{kind} {name}: {message}")]
    Schema {
        /// The kind.
        kind: String,
        /// The object's name, if it could be read.
        name: String,
        /// The deserializer's message (names the field).
        message: String,
    },
    /// The legacy ConfigMap's `config` key is not valid YAML of MetalLB's format.
    #[error("ConfigMap {namespace}/{name}: key \"config\": {message}")]
    LegacyConfig {
        /// The ConfigMap's namespace.
        namespace: String,
        /// The ConfigMap's name.
        name: String,
        /// What is wrong.
        message: String,
    },
}
