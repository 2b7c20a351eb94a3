//! What the peer task publishes about itself: the neighbour's status cell (read by
//! `ipvs-proxy bgp` through the handle) and its per-peer metrics.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use tracing::debug;

use super::peer::PeerTask;
use crate::announce::bgp::metrics::PeerLabel;
use crate::announce::bgp::{
    BfdState, BgpMetrics, NeighborStatus, PeerConfig, SessionState, Shared,
};

/// A neighbour's status and when its state last changed.
#[derive(Debug, Clone)]
pub(crate) struct StatusCell {
    status: NeighborStatus,
    since: Instant,
}

impl StatusCell {
    /// A session that has not started: Idle, nothing sent, the peer's AS as
    /// configured (unknown for internal/external until the session comes up), BFD as
    /// its session says now.
    pub(super) fn new(cfg: &PeerConfig, bfd_up: bool) -> StatusCell {
        let status = NeighborStatus {
            name: cfg.name.clone(),
            address: cfg.address,
            port: cfg.port,
            local_as: cfg.local_as,
            peer_as: match cfg.peer_as {
                bgp_proto::session::PeerAs::Exact(asn) => Some(asn),
                _ => None,
            },
            state: SessionState::Idle,
            since_secs: 0,
            prefixes_sent: 0,
            updates_sent: 0,
            graceful_restart: false,
            bfd: match (&cfg.bfd_profile, bfd_up) {
                (None, _) => BfdState::None,
                (Some(_), false) => BfdState::Down,
                (Some(_), true) => BfdState::Up,
            },
            last_error: None,
        };
        StatusCell {
            status,
            since: Instant::now(),
        }
    }

    /// The status with its age filled in.
    pub(crate) fn snapshot(&self) -> NeighborStatus {
        NeighborStatus {
            since_secs: self.since.elapsed().as_secs(),
            ..self.status.clone()
        }
    }
}

/// The status cells, even after a panic while they were held: they are only shown,
/// and a poisoned lock is no reason to stop every session.
pub(super) fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, BTreeMap<String, StatusCell>> {
    shared.status.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `peer` label of a peer's metrics: `address:port`, as MetalLB labels them.
pub(super) fn peer_label(cfg: &PeerConfig) -> String {
    SocketAddr::new(cfg.address, cfg.port).to_string()
}

impl PeerTask {
    /// Changes this neighbour's status; a change of state restarts its age.
    pub(super) fn status(&self, f: impl FnOnce(&mut NeighborStatus)) {
        if let Some(cell) = lock(&self.shared).get_mut(&self.cfg.name) {
            let before = cell.status.state;
            f(&mut cell.status);
            if cell.status.state != before {
                cell.since = Instant::now();
            }
        }
    }

    /// Updates this peer's metrics, when the speaker has metrics.
    pub(super) fn metric<R>(&self, f: impl FnOnce(&BgpMetrics, &PeerLabel) -> R) {
        if let Some(m) = &self.options.metrics {
            f(m, &self.label);
        }
    }

    /// Records `error` as the neighbour's last error (shown until the session comes
    /// up again).
    pub(super) fn set_error(&self, error: String) {
        debug!(peer = %self.cfg.name, "bgp: {error}");
        self.status(|s| s.last_error = Some(error));
    }
}
