//! The speaker's tasks: a supervisor starting, restarting and stopping one task per
//! peer as the peers change, and the per-peer task carrying out the `bgp-proto` state
//! machine's actions on a real connection.
//!
//! - `listener`: the listening sockets on port 179 and the hand-over of a configured
//!   peer's connection to its session.
//! - `peer`: the per-peer session task (connect, send, receive, timers, BFD, stop).
//! - `collision`: a connection from the peer while the session has its own, settled
//!   by BGP identifier (RFC 4271 §6.8).
//! - `routes`: what the peer should have, and the UPDATEs that bring its
//!   Adj-RIB-Out there.
//! - `status`: the neighbours' status cells and the per-peer metrics.

mod collision;
mod listener;
mod peer;
mod routes;
mod status;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use super::{PeerConfig, PeerRoutes, Shared, SpeakerOptions};
use listener::Listeners;
use peer::PeerTask;
pub(crate) use status::StatusCell;
use status::{lock, peer_label};

/// Runs until `stop` says how to stop: starts a task per peer, restarts a peer's task
/// when its configuration changes, stops the task of a peer that is gone (withdrawing
/// its routes), and at the end stops every task as asked.
pub(crate) async fn supervise(
    options: Arc<SpeakerOptions>,
    mut peers: watch::Receiver<Vec<PeerConfig>>,
    routes: watch::Receiver<PeerRoutes>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<Option<bool>>,
) {
    type Running = (PeerConfig, watch::Sender<Option<bool>>, JoinHandle<()>);
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    let mut peers_open = true;
    let mut listeners = Listeners::default();
    loop {
        let wanted: BTreeMap<String, PeerConfig> = peers
            .borrow_and_update()
            .iter()
            .map(|p| (p.name.clone(), p.clone()))
            .collect();
        let gone: Vec<String> = running
            .iter()
            .filter(|(name, (cfg, ..))| wanted.get(*name) != Some(cfg))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some((cfg, tx, task)) = running.remove(&name) {
                info!(peer = %name, "bgp: peer removed or changed; stopping its session");
                let _ = tx.send(Some(false));
                let _ = task.await;
                listeners.remove(&cfg);
                if let (Some(_), Some(bfd)) = (&cfg.bfd_profile, &options.bfd) {
                    bfd.release(&cfg);
                }
                lock(&shared).remove(&name);
                if let Some(m) = &options.metrics {
                    m.remove(&peer_label(&cfg));
                }
            }
        }
        for (name, cfg) in wanted {
            if running.contains_key(&name) {
                continue;
            }
            let (tx, rx) = watch::channel(None);
            let incoming = listeners.add(&cfg, options.listen_port);
            let task = PeerTask::new(
                cfg.clone(),
                options.clone(),
                routes.clone(),
                shared.clone(),
                incoming,
            );
            running.insert(name, (cfg, tx, tokio::spawn(task.run(rx))));
        }
        tokio::select! {
            changed = peers.changed(), if peers_open => peers_open = changed.is_ok(),
            _ = stop.changed() => break,
        }
    }
    let graceful = stop.borrow().unwrap_or(false);
    for (_, tx, _) in running.values() {
        let _ = tx.send(Some(graceful));
    }
    for (_, (_, _, task)) in running {
        let _ = task.await;
    }
    listeners.close();
}
