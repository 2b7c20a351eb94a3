//! The BGP speaker (`ipvs_proxy::announce::bgp`) in-process: spawned on its own
//! runtime on a thread inside a node's network namespace, with its peers and routes
//! fed through watch channels as the agent feeds them, and its neighbours' status
//! copied out every 50 ms for the test to read. Stopped (not gracefully) on drop.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ipvs_proxy::announce::bgp::{
    NeighborStatus, PeerConfig, PeerRoutes, SessionState, SpeakerOptions, spawn_bgp_speaker,
};
use ipvs_proxy::lb::decision::Route;
use netns_lab::Netns;
use tokio::sync::{oneshot, watch};

/// A route for `prefix` with `communities` (MetalLB's text: `64512:7`,
/// `large:64512:1:1`) and `local_pref`.
pub fn route(prefix: &str, communities: &[&str], local_pref: Option<u32>) -> Route {
    Route {
        prefix: prefix.parse().unwrap(),
        communities: communities.iter().map(|c| c.parse().unwrap()).collect(),
        local_pref,
    }
}

/// The routes map giving `routes` to the peer named `peer` and nothing to others.
pub fn routes_for(peer: &str, routes: &[Route]) -> PeerRoutes {
    BTreeMap::from([(
        Arc::from(peer),
        routes.iter().cloned().collect::<BTreeSet<_>>(),
    )])
}

/// The speaker running in a node namespace on its own thread and runtime.
#[derive(Debug)]
pub struct InProcessSpeaker {
    peers: watch::Sender<Vec<PeerConfig>>,
    routes: watch::Sender<PeerRoutes>,
    status: Arc<Mutex<Vec<NeighborStatus>>>,
    stop: Option<oneshot::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl InProcessSpeaker {
    /// Starts the speaker in `ns` with `options`, `peers` and `routes`.
    pub fn start(
        ns: &Netns,
        options: SpeakerOptions,
        peers: Vec<PeerConfig>,
        routes: PeerRoutes,
    ) -> InProcessSpeaker {
        let (peers_tx, peers_rx) = watch::channel(peers);
        let (routes_tx, routes_rx) = watch::channel(routes);
        let (stop, mut stop_rx) = oneshot::channel::<bool>();
        let status = Arc::new(Mutex::new(Vec::new()));
        let shown = status.clone();
        let thread = ns.thread_async(move || async move {
            let handle = spawn_bgp_speaker(options, peers_rx, routes_rx);
            loop {
                *shown.lock().unwrap() = handle.status();
                tokio::select! {
                    graceful = &mut stop_rx => {
                        handle.shutdown(graceful.unwrap_or(false)).await;
                        return;
                    }
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        });
        InProcessSpeaker {
            peers: peers_tx,
            routes: routes_tx,
            status,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Replaces the peers (as a changed nodeSelector or BGPPeer would).
    pub fn set_peers(&self, peers: Vec<PeerConfig>) {
        self.peers.send_replace(peers);
    }

    /// Replaces the routes (as the announce decision would).
    pub fn set_routes(&self, routes: PeerRoutes) {
        self.routes.send_replace(routes);
    }

    /// Every neighbour's status, as last copied (at most 50 ms old).
    pub fn statuses(&self) -> Vec<NeighborStatus> {
        self.status.lock().unwrap().clone()
    }

    /// The status of the neighbour named `peer`, if the speaker has it.
    pub fn status(&self, peer: &str) -> Option<NeighborStatus> {
        self.statuses().into_iter().find(|n| n.name == peer)
    }

    /// Whether the session with `peer` is Established.
    pub fn established(&self, peer: &str) -> bool {
        self.status(peer)
            .is_some_and(|n| n.state == SessionState::Established)
    }

    /// Stops the speaker (`graceful`: see `BgpHandle::shutdown`) and waits for it.
    pub fn shutdown(mut self, graceful: bool) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(graceful);
        }
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the speaker's thread panicked");
        }
    }
}

impl Drop for InProcessSpeaker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(false);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
