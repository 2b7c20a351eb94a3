//! MetalLB's configuration, read as MetalLB's users wrote it.
//!
//! ipvs-proxy replaces MetalLB's controller and speaker, so it reads MetalLB's own
//! objects unchanged: the `metallb.io` custom resources ([`crd`]) and the ConfigMap of
//! MetalLB ≤ 0.12 ([`legacy`]), gathered into [`MetalLbObjects`]. [`validate()`] turns
//! them into one typed [`LbConfig`]: parsed address ranges, advertisements with their
//! pools resolved, peers with their timers. An invalid object is left out and reported
//! as a [`ConfigProblem`] naming the object and the field; the rest still applies.
//!
//! The crate holds no I/O: the agent's sources fetch the objects (from the API server
//! or a directory of manifests) and hand them over.

pub mod config;
pub mod crd;
pub mod duration;
mod error;
pub mod legacy;
pub mod objects;
pub mod selector;
pub mod validate;

pub use config::{
    BfdProfile, BgpAdvertisement, Community, IpRange, L2Advertisement, LbConfig, Peer, PeerAsn,
    PeerPassword, Pool, ServiceAllocation, WeightedSelector,
};
pub use error::{ConfigProblem, ObjectError};
pub use objects::MetalLbObjects;
pub use selector::Selector;
pub use validate::{UnsupportedField, Validated, validate};

/// The API group of MetalLB's custom resources.
pub const GROUP: &str = "metallb.io";
/// The namespace MetalLB's objects live in unless configured otherwise.
pub const DEFAULT_NAMESPACE: &str = "metallb-system";
