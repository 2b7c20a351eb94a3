//! The BGP speaker: one session per configured peer, announcing this node's
//! LoadBalancer routes, with graceful restart (RFC 4724) as the restarting speaker and
//! BFD as an input that tears a session down.
//!
//! - [`network`]: the TCP connection to a peer (source address, TTL, TCP MD5).
//! - [`tasks`]: one tokio task per peer carrying out the `bgp-proto` state machine's
//!   actions: connects, messages, timers, and the routes sent (Adj-RIB-Out); the
//!   listener on port 179 and connection collisions; the supervisor following the
//!   peers; the status cells and metrics the tasks publish.
//! - [`render`]: the `ipvs-proxy bgp` report.
//! - [`metrics`]: MetalLB's BGP metric names.
//!
//! # Wiring (for the agent)
//!
//! ```text
//! let (peers_tx, peers) = watch::channel(Vec::<PeerConfig>::new());
//! let (routes_tx, routes) = watch::channel(BTreeMap::new());
//! let handle = spawn_bgp_speaker(options, peers, routes);
//! // after each sync: peers_tx.send(this node's peers), routes_tx.send(model.local().bgp.clone())
//! // on SIGTERM: handle.shutdown(true).await   (keeps routes at GR-capable peers)
//! ```
//!
//! # Connections
//!
//! Each session connects to its peer, and the speaker also listens on port 179
//! ([`SpeakerOptions::listen_port`]) for the peers' own connections, taken only from
//! configured peer addresses (with their TCP MD5 keys on the listening socket). A
//! connection arriving while the session's own is exchanging OPENs is a collision
//! (RFC 4271 §6.8): once the peer's OPEN arrives on it, the connection initiated by
//! the side with the higher BGP identifier survives. One arriving while the session is
//! Established is closed. When the port cannot be bound (another BGP daemon on the
//! host), the speaker warns and only connects.
//!
//! # Graceful restart's R bit
//!
//! The speaker sets the restart state bit in its first OPEN to each peer when
//! [`SpeakerOptions::restarting`] is true, or when the file
//! [`SpeakerOptions::restart_marker`] exists at start (default
//! [`DEFAULT_RESTART_MARKER`], on the `/run` tmpfs, so a reboot clears it). The file is
//! created at start and removed by a non-graceful [`BgpHandle::shutdown`]: an agent
//! that crashed or stopped gracefully finds it and says it is restarting, a node that
//! rebooted (forwarding state lost) does not. Later sessions of the same run go
//! without the bit.
//!
//! # BFD
//!
//! A peer with a `bfd_profile` asks [`SpeakerOptions::bfd`] for a
//! `watch::Receiver<bool>` (true: the BFD session is up). When it goes from up to down
//! while the BGP session is up, the BGP session is closed at once (no NOTIFICATION:
//! the path is considered dead) and retried after the connect-retry time. The BFD
//! state is shown in the status. The `announce::bfd` manager provides such receivers;
//! [`BfdSessions`] is the small trait to adapt it with.

pub mod error;
pub mod metrics;
pub mod network;
pub mod render;
pub mod tasks;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::lb::decision::Route;

pub use bgp_proto::session::PeerAs;
pub use error::BgpError;
pub use metrics::BgpMetrics;
pub use render::render_text;

/// Where the restart marker lives unless [`SpeakerOptions::restart_marker`] says
/// otherwise.
pub const DEFAULT_RESTART_MARKER: &str = "/run/ipvs-proxy/bgp-speaker.running";

/// BGP's TCP port, where the speaker takes the peers' connections.
pub const BGP_PORT: u16 = 179;

/// The hold time proposed when the peer's configuration names none (MetalLB's).
pub const DEFAULT_HOLD_TIME: u16 = 90;

/// The time between connection attempts when the peer's configuration names none.
pub const DEFAULT_CONNECT_TIME: Duration = Duration::from_secs(5);

/// The restart time advertised with graceful restart: how long the router keeps our
/// routes while we restart (MetalLB's FRR mode uses 120 s as well).
pub const DEFAULT_RESTART_TIME: u16 = 120;

/// LOCAL_PREF sent to iBGP peers for a route whose advertisement names none
/// (RFC 4271 §5.1.5 wants it in every UPDATE to an internal peer; 100 is the usual
/// default of routers).
pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// The routes per peer (BGPPeer name), as the announce decision gives them
/// (`AnnounceModel::local().bgp`).
pub type PeerRoutes = BTreeMap<Arc<str>, BTreeSet<Route>>;

/// Gives the BFD state of a peer's session, for peers with a BFD profile.
pub trait BfdSessions: Send + Sync {
    /// A receiver of the BFD session's state towards `peer` (true: up), or `None` when
    /// there is no BFD session for it.
    fn watch(&self, peer: &PeerConfig) -> Option<watch::Receiver<bool>>;

    /// The session of `peer` (as given to [`BfdSessions::watch`]) is no longer wanted:
    /// the peer was removed or its configuration changed (a changed BFD profile comes
    /// back through `watch` with the new configuration). Called after the peer's BGP
    /// session stopped; by default nothing is released.
    fn release(&self, peer: &PeerConfig) {
        let _ = peer;
    }
}

/// Speaker-wide settings.
#[derive(Clone)]
pub struct SpeakerOptions {
    /// This node's name (for logs).
    pub node_name: String,
    /// The BGP identifier for peers without `routerID`: usually the node's IPv4
    /// address.
    pub router_id: Ipv4Addr,
    /// The IPv4 next hop for IPv4 routes sent over an IPv6 session (dual stack).
    pub node_ipv4: Option<Ipv4Addr>,
    /// The IPv6 next hop for IPv6 routes sent over an IPv4 session (dual stack); on an
    /// IPv6 session, the session's own address is used.
    pub node_ipv6: Option<Ipv6Addr>,
    /// Advertise the restart state (R bit) in the first OPEN to each peer.
    pub restarting: bool,
    /// The restart marker file (see the module documentation); `None` for none.
    pub restart_marker: Option<PathBuf>,
    /// The restart time advertised with graceful restart, in seconds.
    pub restart_time: u16,
    /// Where BFD session states come from.
    pub bfd: Option<Arc<dyn BfdSessions>>,
    /// Metrics to update, if any.
    pub metrics: Option<Arc<BgpMetrics>>,
    /// The port to take the peers' connections on ([`BGP_PORT`]); `None`: connect
    /// only.
    pub listen_port: Option<u16>,
}

impl fmt::Debug for SpeakerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpeakerOptions")
            .field("node_name", &self.node_name)
            .field("router_id", &self.router_id)
            .field("node_ipv4", &self.node_ipv4)
            .field("node_ipv6", &self.node_ipv6)
            .field("restarting", &self.restarting)
            .field("restart_marker", &self.restart_marker)
            .field("restart_time", &self.restart_time)
            .field("bfd", &self.bfd.is_some())
            .field("listen_port", &self.listen_port)
            .finish_non_exhaustive()
    }
}

impl SpeakerOptions {
    /// Options for `node_name` with router ID `router_id`, the default restart
    /// marker and restart time, and no BFD or metrics.
    pub fn new(node_name: impl Into<String>, router_id: Ipv4Addr) -> SpeakerOptions {
        SpeakerOptions {
            node_name: node_name.into(),
            router_id,
            node_ipv4: Some(router_id),
            node_ipv6: None,
            restarting: false,
            restart_marker: Some(PathBuf::from(DEFAULT_RESTART_MARKER)),
            restart_time: DEFAULT_RESTART_TIME,
            bfd: None,
            metrics: None,
            listen_port: Some(BGP_PORT),
        }
    }
}

/// A TCP MD5 password; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One peer of this node, resolved (passwords read from their Secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The BGPPeer name: the key of the routes map.
    pub name: String,
    /// Our AS.
    pub local_as: u32,
    /// The peer's AS, or which kind to accept.
    pub peer_as: PeerAs,
    /// The peer's address.
    pub address: IpAddr,
    /// The peer's port (179).
    pub port: u16,
    /// Our address for the session.
    pub source_address: Option<IpAddr>,
    /// The hold time we propose, in seconds.
    pub hold_time: u16,
    /// The keepalive interval, in seconds.
    pub keepalive_time: Option<u16>,
    /// Time between connection attempts.
    pub connect_time: Duration,
    /// Our BGP identifier for this session (the speaker's by default).
    pub router_id: Option<Ipv4Addr>,
    /// TCP MD5 password.
    pub password: Option<Password>,
    /// BFD profile name.
    pub bfd_profile: Option<String>,
    /// Advertise graceful restart.
    pub graceful_restart: bool,
    /// The peer may be more than one hop away.
    pub ebgp_multihop: bool,
    /// Announce both address families over this session.
    pub dual_stack: bool,
    /// The interface of an IPv6 link-local peer address (its scope): the session is
    /// link-local, and IPv6 routes carry our link-local address as a second next hop
    /// (RFC 2545).
    pub interface: Option<String>,
}

impl PeerConfig {
    /// A peer from MetalLB's validated configuration, with its password already read
    /// (`password` for an inline one or the Secret's `password` key). `None` for an
    /// unnumbered peer (an interface and no address), which this speaker does not
    /// support.
    pub fn from_metallb(peer: &metallb_config::Peer, password: Option<String>) -> Option<Self> {
        let address = peer.address?;
        let secs = |d: Duration| u16::try_from(d.as_secs()).unwrap_or(u16::MAX);
        Some(PeerConfig {
            name: peer.name.clone(),
            local_as: peer.my_asn,
            peer_as: match peer.peer_asn {
                metallb_config::PeerAsn::Fixed(asn) => PeerAs::Exact(asn),
                metallb_config::PeerAsn::Internal => PeerAs::Internal,
                metallb_config::PeerAsn::External => PeerAs::External,
            },
            address,
            port: peer.port,
            source_address: peer.source_address,
            hold_time: peer.hold_time.map(secs).unwrap_or(DEFAULT_HOLD_TIME),
            keepalive_time: peer.keepalive_time.map(secs),
            connect_time: peer.connect_time.unwrap_or(DEFAULT_CONNECT_TIME),
            router_id: peer.router_id,
            password: password.map(Password),
            bfd_profile: peer.bfd_profile.clone(),
            graceful_restart: peer.graceful_restart,
            ebgp_multihop: peer.ebgp_multihop,
            dual_stack: peer.dual_stack,
            interface: None,
        })
    }

    /// A peer with the defaults: 90 s hold time, 5 s connect time, no password,
    /// BFD or graceful restart.
    pub fn new(name: impl Into<String>, local_as: u32, peer_as: PeerAs, address: IpAddr) -> Self {
        PeerConfig {
            name: name.into(),
            local_as,
            peer_as,
            address,
            port: 179,
            source_address: None,
            hold_time: DEFAULT_HOLD_TIME,
            keepalive_time: None,
            connect_time: DEFAULT_CONNECT_TIME,
            router_id: None,
            password: None,
            bfd_profile: None,
            graceful_restart: false,
            ebgp_multihop: false,
            dual_stack: false,
            interface: None,
        }
    }
}

/// The BGP session states as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionState {
    /// Not trying (stopped, or waiting to retry).
    Idle,
    /// Connecting.
    Connect,
    /// Waiting to retry a connection.
    Active,
    /// OPEN sent.
    OpenSent,
    /// OPENs exchanged.
    OpenConfirm,
    /// Up.
    Established,
}

impl From<bgp_proto::session::State> for SessionState {
    fn from(s: bgp_proto::session::State) -> Self {
        use bgp_proto::session::State as S;
        match s {
            S::Idle => SessionState::Idle,
            S::Connect => SessionState::Connect,
            S::Active => SessionState::Active,
            S::OpenSent => SessionState::OpenSent,
            S::OpenConfirm => SessionState::OpenConfirm,
            S::Established => SessionState::Established,
        }
    }
}

impl fmt::Display for SessionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The BFD state of a neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BfdState {
    /// No BFD for this peer.
    None,
    /// Configured; not up.
    Down,
    /// Up.
    Up,
}

/// One neighbour's status, for `ipvs-proxy bgp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighborStatus {
    /// The BGPPeer name.
    pub name: String,
    /// The peer's address.
    pub address: IpAddr,
    /// The peer's port.
    pub port: u16,
    /// Our AS.
    pub local_as: u32,
    /// The peer's AS: as negotiated, or as configured (`None` for internal/external
    /// until the session comes up).
    pub peer_as: Option<u32>,
    /// The session state.
    pub state: SessionState,
    /// Seconds since the session came up or went down (or since the speaker started).
    pub since_secs: u64,
    /// Prefixes currently announced to the peer.
    pub prefixes_sent: usize,
    /// UPDATE messages sent over the speaker's life.
    pub updates_sent: u64,
    /// Graceful restart negotiated on the current session.
    pub graceful_restart: bool,
    /// The BFD state.
    pub bfd: BfdState,
    /// The last error, if any.
    pub last_error: Option<String>,
}

/// The answer to a `bgp` request on the status socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BgpReply {
    /// Every neighbour's status.
    Neighbors(Vec<NeighborStatus>),
    /// Why there is no answer.
    Error(String),
}

/// Shared between the speaker's tasks and its handle.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Per peer name, its status.
    pub(crate) status: Mutex<BTreeMap<String, tasks::StatusCell>>,
}

/// The running speaker.
#[derive(Debug)]
pub struct BgpHandle {
    shared: Arc<Shared>,
    stop: watch::Sender<Option<bool>>,
    supervisor: JoinHandle<()>,
    restart_marker: Option<PathBuf>,
}

/// A cloneable view of the neighbours' status, for whoever answers `ipvs-proxy bgp`
/// (the status socket) while the agent keeps the [`BgpHandle`] to shut it down.
#[derive(Debug, Clone)]
pub struct BgpStatusView(Arc<Shared>);

impl BgpStatusView {
    /// Every neighbour's status, by name.
    pub fn neighbors(&self) -> Vec<NeighborStatus> {
        let status = self.0.status.lock().unwrap_or_else(|p| p.into_inner());
        status.values().map(tasks::StatusCell::snapshot).collect()
    }

    /// The answer to a `bgp` request, as one JSON line (newline included).
    pub fn reply_line(&self) -> String {
        let mut line = serde_json::to_string(&BgpReply::Neighbors(self.neighbors()))
            .unwrap_or_else(|e| format!("{{\"error\":\"cannot encode the neighbours: {e}\"}}"));
        line.push('\n');
        line
    }
}

impl BgpHandle {
    /// Every neighbour's status, by name.
    pub fn status(&self) -> Vec<NeighborStatus> {
        self.status_view().neighbors()
    }

    /// A view of the status that outlives borrowing the handle.
    pub fn status_view(&self) -> BgpStatusView {
        BgpStatusView(self.shared.clone())
    }

    /// Stops every session and waits for the tasks to end. With `graceful` and graceful
    /// restart negotiated with a peer, the connection is just closed, so the peer keeps
    /// our routes (stale) for the restart time while IPVS goes on forwarding; otherwise
    /// every route is withdrawn and the session closed with a Cease NOTIFICATION. A
    /// non-graceful shutdown also removes the restart marker.
    pub async fn shutdown(self, graceful: bool) {
        let _ = self.stop.send(Some(graceful));
        let _ = self.supervisor.await;
        if !graceful && let Some(marker) = &self.restart_marker {
            let _ = std::fs::remove_file(marker);
        }
    }
}

/// Starts the speaker: one session per peer in `peers` (changes start, stop and
/// restart sessions: a changed peer's session is restarted), each announcing the
/// peer's routes from `routes` and following its changes. Must be called inside a
/// tokio runtime.
pub fn spawn_bgp_speaker(
    mut options: SpeakerOptions,
    peers: watch::Receiver<Vec<PeerConfig>>,
    routes: watch::Receiver<PeerRoutes>,
) -> BgpHandle {
    if let Some(marker) = &options.restart_marker {
        if marker.exists() {
            options.restarting = true;
        }
        if let Some(dir) = marker.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = std::fs::write(marker, b"") {
            tracing::warn!(marker = %marker.display(), "bgp: cannot write the restart marker: {e}");
        }
    }
    let shared = Arc::new(Shared::default());
    let (stop, stop_rx) = watch::channel(None);
    let restart_marker = options.restart_marker.clone();
    let supervisor = tokio::spawn(tasks::supervise(
        Arc::new(options),
        peers,
        routes,
        shared.clone(),
        stop_rx,
    ));
    BgpHandle {
        shared,
        stop,
        supervisor,
        restart_marker,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metallb_peers_convert_with_defaults_and_unnumbered_ones_are_skipped() {
        let mut peer = metallb_config::Peer {
            name: "r1".into(),
            my_asn: 64512,
            peer_asn: metallb_config::PeerAsn::External,
            address: Some("10.0.0.1".parse().unwrap()),
            interface: None,
            source_address: None,
            port: 1179,
            hold_time: Some(Duration::from_secs(30)),
            keepalive_time: None,
            connect_time: None,
            router_id: None,
            node_selectors: Vec::new(),
            password: None,
            bfd_profile: Some("fast".into()),
            graceful_restart: true,
            ebgp_multihop: false,
            dual_stack: false,
        };
        let cfg = PeerConfig::from_metallb(&peer, Some("pw".into())).unwrap();
        assert_eq!(cfg.peer_as, PeerAs::External);
        assert_eq!(cfg.port, 1179);
        assert_eq!(cfg.hold_time, 30);
        assert_eq!(cfg.connect_time, DEFAULT_CONNECT_TIME);
        assert_eq!(cfg.password, Some(Password("pw".into())));
        assert!(!format!("{cfg:?}").contains("pw\""), "{cfg:?}");
        assert!(cfg.graceful_restart);
        assert_eq!(cfg.bfd_profile.as_deref(), Some("fast"));
        peer.address = None;
        peer.interface = Some("eth0".into());
        assert_eq!(PeerConfig::from_metallb(&peer, None), None);
    }

    #[test]
    fn the_bgp_reply_has_the_status_sockets_json_shape() {
        // The status socket's generic error (`StatusReply::Error`) reads as ours.
        let error: BgpReply = serde_json::from_str(r#"{"error":"unknown request"}"#).unwrap();
        assert_eq!(error, BgpReply::Error("unknown request".into()));
        let reply = BgpReply::Neighbors(vec![NeighborStatus {
            name: "r".into(),
            address: "10.0.0.1".parse().unwrap(),
            port: 179,
            local_as: 64512,
            peer_as: None,
            state: SessionState::Active,
            since_secs: 1,
            prefixes_sent: 0,
            updates_sent: 0,
            graceful_restart: false,
            bfd: BfdState::None,
            last_error: None,
        }]);
        let text = serde_json::to_string(&reply).unwrap();
        assert!(text.starts_with(r#"{"neighbors":[{"name":"r""#), "{text}");
        assert_eq!(serde_json::from_str::<BgpReply>(&text).unwrap(), reply);
    }

    #[tokio::test]
    async fn the_restart_marker_is_kept_by_a_graceful_stop_and_removed_by_a_full_one() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("sub/bgp.running");
        let mut options = SpeakerOptions::new("n1", "10.0.0.2".parse().unwrap());
        options.restart_marker = Some(marker.clone());
        let (_peers_tx, peers) = watch::channel(Vec::new());
        let (_routes_tx, routes) = watch::channel(PeerRoutes::new());
        let handle = spawn_bgp_speaker(options.clone(), peers.clone(), routes.clone());
        assert!(marker.exists());
        assert_eq!(handle.status(), Vec::new());
        assert_eq!(handle.status_view().reply_line(), "{\"neighbors\":[]}\n");
        handle.shutdown(true).await;
        assert!(marker.exists(), "a graceful stop keeps the marker");
        let handle = spawn_bgp_speaker(options, peers, routes);
        handle.shutdown(false).await;
        assert!(!marker.exists(), "a full stop removes the marker");
    }
}
