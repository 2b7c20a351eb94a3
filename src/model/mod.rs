//! The desired state: what IPVS, kube-ipvs0 and the ipsets should hold on this node,
//! computed purely from Services, EndpointSlices, this Node and the configuration.
//!
//! Each Service is computed on its own into a [`ServiceContribution`]
//! ([`service::contribution`]); [`Model`] keeps the inputs (compact projections of the
//! objects, [`input`]) and the contributions keyed by Service, so a changed Service or
//! EndpointSlice recomputes only that Service, and keeps their merge current
//! ([`Model::state`]). [`Model::desired`] merges the contributions from scratch: the
//! reference the incremental merge is tested against. A malformed Service yields a
//! [`ServiceError`] for that Service alone; the others are unaffected.
//!
//! The files follow the layers: `types` (the vocabulary, plain data the kernel adapters
//! map onto `ipvs-netlink`, rtnetlink and `ipset-netlink`), [`input`] (projections of
//! the Kubernetes objects), [`service`] (one Service's share), `store` (the [`Model`]),
//! `merged` (the incremental merge), `reference` (the merge from scratch) and
//! [`inspect`] (read-only views for `ipvs-proxy services`).

mod endpoints;
pub mod input;
pub mod inspect;
pub mod kube_sets;
mod merged;
mod reference;
pub mod service;
mod store;
mod types;

pub use kube_sets::{IpsetMembers, KubeSet, SetEntry, SetId};
pub use merged::Touched;
pub use service::{ServiceContribution, ServiceOutcome, Skipped};
pub use store::Model;
pub(crate) use store::slice_id;
pub(crate) use types::compact;
pub use types::{
    DesiredState, Family, HEADLESS_LABEL, HealthCheck, ModelConfig, NodeInfo, Protocol, RealServer,
    SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL, ServiceError, ServiceKey, VipKind, VirtualServer,
    VirtualServerKey, ZONE_LABEL,
};
