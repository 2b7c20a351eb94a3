//! A directory of Service and EndpointSlice manifests, for nodes without an API server
//! (tests, appliances, a static edge site). For LoadBalancer Services it also holds
//! MetalLB's objects (custom resources or the legacy `config` ConfigMap), Nodes and
//! Namespaces, published whole by [`spawn_static_with_cluster`].
//!
//! Every `*.yaml`, `*.yml` and `*.json` file directly in the directory is read; a file
//! may hold several YAML documents and `List` kinds (`List`, `ServiceList`,
//! `EndpointSliceList`). Hidden entries are skipped, so a mounted ConfigMap's `..data`
//! directory is not read twice. Other kinds are ignored with a warning.
//!
//! The directory is polled: when a file's modification time or size changes, or a file
//! appears or disappears, the changed files are read again and one event is sent per
//! object added, changed or removed (the first read sends a snapshot).
//! A directory that cannot be read keeps the previous snapshot in force and the error
//! is logged until it is fixed; polling does not depend on inotify, so it works on
//! ConfigMap volumes, 9p and NFS alike.
//!
//! `manifests` parses and merges the files; `poll` remembers what was read and turns a
//! changed directory into events; this module runs the poller.

mod manifests;
mod poll;

use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use super::SourceEvent;
pub use manifests::{ClusterObjects, Manifests, load_dir, parse_errors, parse_manifests};
use poll::DirState;

/// How often [`spawn_static`] checks the directory for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Watches `dir`, sending a [`SourceEvent::Snapshot`] at start and, after every change,
/// one event per object added, changed or removed, polling every [`POLL_INTERVAL`].
/// Only changed files are parsed again. Ends when the receiver is dropped.
pub fn spawn_static(dir: PathBuf, events: mpsc::Sender<SourceEvent>) -> JoinHandle<()> {
    spawn_static_every(dir, POLL_INTERVAL, events)
}

/// The directory's MetalLB objects, Nodes and Namespaces; `None` until first read.
pub type ClusterWatch = watch::Receiver<Option<Arc<ClusterObjects>>>;

/// [`spawn_static`] with a chosen polling interval.
pub fn spawn_static_every(
    dir: PathBuf,
    interval: Duration,
    events: mpsc::Sender<SourceEvent>,
) -> JoinHandle<()> {
    spawn_poller(dir, interval, events, None)
}

/// [`spawn_static_every`], also publishing the directory's MetalLB objects, Nodes and
/// Namespaces (for LoadBalancer Services) whenever they change.
pub fn spawn_static_with_cluster(
    dir: PathBuf,
    interval: Duration,
    events: mpsc::Sender<SourceEvent>,
) -> (JoinHandle<()>, ClusterWatch) {
    let (cluster, receiver) = watch::channel(None);
    (spawn_poller(dir, interval, events, Some(cluster)), receiver)
}

fn spawn_poller(
    dir: PathBuf,
    interval: Duration,
    events: mpsc::Sender<SourceEvent>,
    cluster: Option<watch::Sender<Option<Arc<ClusterObjects>>>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut state = Some(DirState::default());
        let mut last_error: Option<String> = None;
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if events.is_closed() {
                return;
            }
            let dir_for_read = dir.clone();
            let Some(mut current) = state.take() else {
                return;
            };
            // File reads block; keep them off the async workers.
            let result = tokio::task::spawn_blocking(move || {
                let round = current.poll(&dir_for_read);
                (current, round)
            })
            .await;
            let result = match result {
                Ok((current, round)) => {
                    state = Some(current);
                    Ok(round)
                }
                Err(join_error) => {
                    // Start over: the next round sends a snapshot again.
                    state = Some(DirState::default());
                    Err(join_error)
                }
            };
            match result {
                Ok(Ok(None)) => {}
                Ok(Ok(Some(round))) => {
                    last_error = None;
                    for warning in &round.warnings {
                        warn!("{warning}");
                    }
                    info!(
                        dir = %dir.display(),
                        events = round.events.len(),
                        services = round.services,
                        slices = round.slices,
                        "manifests loaded"
                    );
                    // The cluster objects first: a Service's first event then finds its
                    // pool and advertisements already known.
                    if let (Some(objects), Some(cluster)) = (round.cluster, &cluster) {
                        cluster.send_replace(Some(Arc::new(objects)));
                    }
                    for event in round.events {
                        if events.send(event).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(Err(err)) => {
                    let message = err.to_string();
                    if last_error.as_deref() != Some(message.as_str()) {
                        error!(
                            "manifests not reloaded, the previous ones stay in force: {message}"
                        );
                        last_error = Some(message);
                    }
                    // The bad file is not remembered, so the next tick tries it again.
                }
                Err(join_error) => {
                    error!("manifest reader failed: {join_error}");
                }
            }
        }
    })
}
