//! Where Services and EndpointSlices come from: a directory of manifests
//! ([`static_dir`]) or the Kubernetes API ([`kubernetes`]). Both deliver
//! [`SourceEvent`]s on a channel: first a full [`SourceEvent::Snapshot`], then
//! changes, and a new snapshot whenever the full view is re-read (a changed directory),
//! or one resource's complete list when the Kubernetes source relists it after
//! `410 Gone`. The Kubernetes source may send one
//! [`SourceEvent::Early`] before the first snapshot: the API server's own Service, so a
//! new node reaches the API server long before thousands of Services are listed.

pub mod cluster_nodes;
pub mod kubernetes;
pub mod metallb;
pub mod node;
pub mod static_dir;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::model::ServiceKey;

pub use kubernetes::spawn_kubernetes;
pub use static_dir::spawn_static;

/// A change in the Services and EndpointSlices the node must serve.
// Each event is moved once through a channel; boxing the objects would only add an
// allocation per event.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum SourceEvent {
    /// Part of the view, sent before the first [`SourceEvent::Snapshot`] only: the API
    /// server's own Service (`default/kubernetes`) and its EndpointSlices. It adds to
    /// what is known and says nothing about anything else, so a consumer must not
    /// remove state because it is missing here; the snapshot that follows supersedes it.
    Early {
        /// The Services (the `kubernetes` Service).
        services: Vec<Service>,
        /// Their EndpointSlices.
        slices: Vec<EndpointSlice>,
    },
    /// The complete current view; replaces everything known before.
    Snapshot {
        /// Every Service.
        services: Vec<Service>,
        /// Every EndpointSlice.
        slices: Vec<EndpointSlice>,
    },
    /// Every Service again (the Kubernetes source relisted them after its watch lost
    /// its place): replaces the Services known before; EndpointSlices are unchanged.
    ServicesRelisted(Vec<Service>),
    /// Every EndpointSlice again: replaces the slices known before; Services are
    /// unchanged.
    SlicesRelisted(Vec<EndpointSlice>),
    /// A Service was added or changed.
    ServiceApplied(Service),
    /// A Service was deleted.
    ServiceDeleted(ServiceKey),
    /// An EndpointSlice was added or changed.
    SliceApplied(EndpointSlice),
    /// An EndpointSlice was deleted.
    SliceDeleted {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

/// Why a source could not deliver.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A manifest file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file or directory.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A manifest file is not valid YAML/JSON or holds an invalid object.
    #[error("{path}: document {document}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// 1-based index of the YAML document in the file.
        document: usize,
        /// What is wrong.
        message: String,
    },
    /// The Kubernetes client could not be configured.
    #[error(
        "cannot configure the Kubernetes client ({what}): {message}; pass --kubeconfig or run in a Pod with a service account"
    )]
    Client {
        /// Which configuration was tried.
        what: String,
        /// The client's message.
        message: String,
    },
}
