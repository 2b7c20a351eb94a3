//! The per-peer session task: it feeds the `bgp-proto` state machine the events of a
//! real connection (bytes read, timers, BFD, the peer's own connections, route
//! changes) and carries out its actions (connect, send, close, arm timers).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bgp_proto::packet::update::Update;
use bgp_proto::session::{
    Action, Config, DownReason, Event, GracefulRestartConfig, Negotiated, Session, State, TimerKind,
};
use bgp_proto::{Family, Message};
use bytes::BytesMut;
use ipnet::IpNet;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::collision::{Pending, read_pending};
use super::status::{StatusCell, lock, peer_label};
use crate::announce::bgp::metrics::PeerLabel;
use crate::announce::bgp::network::{self, ConnectOptions};
use crate::announce::bgp::{
    BfdState, BgpError, PeerConfig, PeerRoutes, SessionState, Shared, SpeakerOptions,
};
use crate::lb::decision::Route;

/// The longest a connection attempt may take.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What woke the peer task up.
enum Wake {
    /// Stop, gracefully or not.
    Stop(bool),
    /// Bytes (or an error, or the end) on the session's connection.
    Read(io::Result<usize>),
    /// A timer (or the pending connection's deadline) is due.
    Timer,
    /// The routes changed (false: their sender is gone).
    Routes(bool),
    /// The BFD state changed (true: up).
    Bfd(bool),
    /// The BFD session's sender is gone: no more states will come.
    BfdGone,
    /// A connection from the peer (`None`: the listener is gone).
    Accepted(Option<TcpStream>),
    /// Bytes on the connection kept aside during a collision.
    PendingRead(io::Result<usize>),
}

/// Reads into `buf` from the connection, or waits forever without one.
async fn read_some(stream: &mut Option<TcpStream>, buf: &mut BytesMut) -> io::Result<usize> {
    match stream {
        Some(s) => {
            buf.reserve(4096);
            s.read_buf(buf).await
        }
        None => std::future::pending().await,
    }
}

/// One peer's session.
pub(super) struct PeerTask {
    /// The peer, as configured.
    pub(super) cfg: PeerConfig,
    /// The speaker-wide settings.
    pub(super) options: Arc<SpeakerOptions>,
    /// The session's state machine (`bgp-proto`, no I/O).
    pub(super) fsm: Session,
    /// The timers the state machine armed, by deadline.
    pub(super) timers: HashMap<TimerKind, Instant>,
    /// The session's connection, ours or the peer's.
    pub(super) stream: Option<TcpStream>,
    /// Bytes read from `stream` and not yet decoded.
    pub(super) buf: BytesMut,
    /// Our address on the current connection.
    pub(super) local: Option<IpAddr>,
    /// Every peer's routes; this task sends those under `cfg.name`.
    pub(super) routes: watch::Receiver<PeerRoutes>,
    /// False once the routes' sender is gone (no more changes to wait for).
    pub(super) routes_open: bool,
    /// What the peer has from us now (Adj-RIB-Out).
    pub(super) sent: BTreeMap<IpNet, Route>,
    /// What the session negotiated, while Established.
    pub(super) negotiated: Option<Box<Negotiated>>,
    /// The R bit is still to be cleared after the first session went down.
    pub(super) restarting: bool,
    /// The state machine was rebuilt without the R bit and waits for the
    /// connect-retry time to start.
    pub(super) start_pending: bool,
    /// The BFD session's state (true: up), for a peer with a BFD profile.
    pub(super) bfd: Option<watch::Receiver<bool>>,
    /// The last BFD state seen: only a change from up to down closes the session.
    pub(super) bfd_up: bool,
    /// Where the status cell lives.
    pub(super) shared: Arc<Shared>,
    /// The metrics' label of this peer.
    pub(super) label: PeerLabel,
    /// The peer's connections, from the listener.
    pub(super) incoming: mpsc::Receiver<TcpStream>,
    /// False once the listener dropped our queue (no listening socket).
    pub(super) incoming_open: bool,
    /// The peer's connection kept aside during a collision.
    pub(super) pending: Option<Pending>,
}

impl PeerTask {
    /// The task for `cfg`: its status cell is published (Idle) and its metrics set to
    /// zero now; the session starts when [`PeerTask::run`] runs.
    pub(super) fn new(
        cfg: PeerConfig,
        options: Arc<SpeakerOptions>,
        routes: watch::Receiver<PeerRoutes>,
        shared: Arc<Shared>,
        incoming: mpsc::Receiver<TcpStream>,
    ) -> PeerTask {
        let restarting = options.restarting && cfg.graceful_restart;
        // The BFD session starts once the BGP session is up (see `session_up`).
        let (bfd, bfd_up) = (None, false);
        let label = PeerLabel {
            peer: peer_label(&cfg),
        };
        lock(&shared).insert(cfg.name.clone(), StatusCell::new(&cfg, bfd_up));
        if let Some(m) = &options.metrics {
            m.session_up.get_or_create(&label).set(0);
            m.announced_prefixes.get_or_create(&label).set(0);
        }
        PeerTask {
            fsm: Session::new(session_config(&cfg, &options, restarting)),
            cfg,
            options,
            timers: HashMap::new(),
            stream: None,
            buf: BytesMut::new(),
            local: None,
            routes,
            routes_open: true,
            sent: BTreeMap::new(),
            negotiated: None,
            restarting,
            start_pending: false,
            bfd,
            bfd_up,
            shared,
            label,
            incoming,
            incoming_open: true,
            pending: None,
        }
    }

    /// Runs the session until `stop` says how to stop.
    pub(super) async fn run(mut self, mut stop: watch::Receiver<Option<bool>>) {
        info!(peer = %self.cfg.name, address = %self.cfg.address, "bgp: starting the session");
        self.handle(Event::ManualStart).await;
        loop {
            let stopping = *stop.borrow_and_update();
            if let Some(graceful) = stopping {
                self.stop(graceful).await;
                return;
            }
            let next = self
                .timers
                .values()
                .copied()
                .chain(self.pending.as_ref().map(|p| p.deadline))
                .min();
            let established = self.negotiated.is_some();
            let wake = {
                let stream = &mut self.stream;
                let buf = &mut self.buf;
                let routes = &mut self.routes;
                let bfd = &mut self.bfd;
                let routes_open = self.routes_open;
                let incoming = &mut self.incoming;
                let incoming_open = self.incoming_open;
                let pending = &mut self.pending;
                tokio::select! {
                    biased;
                    _ = stop.changed() => Wake::Stop(stop.borrow().unwrap_or(false)),
                    r = read_some(stream, buf) => Wake::Read(r),
                    s = incoming.recv(), if incoming_open => Wake::Accepted(s),
                    r = read_pending(pending) => Wake::PendingRead(r),
                    _ = tokio::time::sleep_until(tokio::time::Instant::from_std(
                        next.unwrap_or_else(Instant::now))), if next.is_some() => Wake::Timer,
                    r = routes.changed(), if routes_open && established => Wake::Routes(r.is_ok()),
                    r = async { bfd.as_mut().expect("guarded").changed().await }, if bfd.is_some() => {
                        match r {
                            Ok(()) => Wake::Bfd(*bfd.as_ref().expect("guarded").borrow()),
                            Err(_) => Wake::BfdGone,
                        }
                    }
                }
            };
            match wake {
                Wake::Stop(graceful) => {
                    self.stop(graceful).await;
                    return;
                }
                Wake::Read(Ok(0)) => {
                    self.connection_lost("the peer closed the connection".into())
                        .await
                }
                Wake::Read(Err(e)) => self.connection_lost(format!("connection error: {e}")).await,
                Wake::Read(Ok(_)) => self.received().await,
                Wake::Timer => self.timers_due().await,
                Wake::Routes(open) => {
                    self.routes_open = open;
                    self.sync_routes().await;
                }
                Wake::Bfd(up) => self.bfd_changed(up).await,
                Wake::BfdGone => {
                    // Counted as down once; then no longer watched (a closed channel
                    // would wake this loop at once, forever).
                    self.bfd = None;
                    self.bfd_changed(false).await;
                }
                Wake::Accepted(Some(stream)) => self.accepted(stream).await,
                Wake::Accepted(None) => self.incoming_open = false,
                Wake::PendingRead(r) => self.pending_read(r).await,
            }
            // Our connection is gone while the peer's waits: go on over the peer's.
            if self.pending.is_some() && matches!(self.fsm.state(), State::Idle | State::Active) {
                let p = self.pending.take().expect("checked");
                self.adopt(p.stream, p.buf, p.open).await;
            }
        }
    }

    /// The connection is dead (`why`): dropped at once, no NOTIFICATION.
    async fn connection_lost(&mut self, why: String) {
        self.set_error(why);
        self.stream = None;
        self.handle(Event::TcpFailed).await;
    }

    /// Decodes and handles every whole message received.
    pub(super) async fn received(&mut self) {
        while self.stream.is_some() {
            let decoded = bgp_proto::decode(&mut self.buf, &self.fsm.caps());
            match decoded {
                Ok(None) => break,
                Ok(Some(m)) => {
                    match &m {
                        Message::Open(_) => {
                            self.metric(|m, l| m.opens_received.get_or_create(l).inc())
                        }
                        Message::Keepalive => {
                            self.metric(|m, l| m.keepalives_received.get_or_create(l).inc())
                        }
                        Message::Update(_) => {
                            self.metric(|m, l| m.updates_received.get_or_create(l).inc())
                        }
                        Message::Notification(n) => {
                            self.set_error(format!("the peer sent a NOTIFICATION: {n:?}"))
                        }
                        Message::RouteRefresh(_) => {}
                    }
                    // A ROUTE-REFRESH asks for our routes again.
                    let refresh = matches!(m, Message::RouteRefresh(_));
                    self.handle(Event::MessageReceived(m)).await;
                    if refresh && self.negotiated.is_some() {
                        self.sent.clear();
                        self.sync_routes().await;
                    }
                }
                Err(e) => {
                    self.set_error(format!("bad message from the peer: {e}"));
                    self.handle(Event::DecodeFailed(e)).await;
                }
            }
        }
    }

    async fn timers_due(&mut self) {
        let now = Instant::now();
        if self.pending.as_ref().is_some_and(|p| p.deadline <= now) {
            self.pending = None;
        }
        let due: Vec<TimerKind> = self
            .timers
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(k, _)| *k)
            .collect();
        for kind in due {
            self.timers.remove(&kind);
            if kind == TimerKind::ConnectRetry && self.start_pending {
                self.start_pending = false;
                self.handle(Event::ManualStart).await;
            } else {
                self.handle(Event::TimerExpired(kind)).await;
            }
        }
    }

    /// Starts following the peer's BFD session, the first time the BGP session is up.
    /// Not before, as BGP bootstraps BFD (RFC 5882): a router such as FRR's
    /// bgpd registers its BFD session again with the connection's addresses once the
    /// session is up, and its new session starts Down; had ours come up with the
    /// first registration, that Down would end the fresh BGP session (Cease, BFD
    /// down) on every start. The BFD session outlives BGP session flaps.
    fn watch_bfd(&mut self) {
        if self.bfd.is_some() {
            return;
        }
        let (Some(_), Some(source)) = (&self.cfg.bfd_profile, &self.options.bfd) else {
            return;
        };
        self.bfd = source.watch(&self.cfg);
        let up = self.bfd.as_mut().is_some_and(|rx| *rx.borrow_and_update());
        self.bfd_up = up;
        self.status(|s| s.bfd = if up { BfdState::Up } else { BfdState::Down });
    }

    async fn bfd_changed(&mut self, up: bool) {
        let was = self.bfd_up;
        self.bfd_up = up;
        self.status(|s| s.bfd = if up { BfdState::Up } else { BfdState::Down });
        if was && !up && self.stream.is_some() {
            warn!(peer = %self.cfg.name, "bgp: BFD went down; closing the session");
            self.connection_lost("BFD went down".into()).await;
        }
    }

    /// Stops the session: with `graceful` and graceful restart negotiated, closes the
    /// connection without a word so the peer keeps our routes; otherwise withdraws
    /// them and says Cease.
    pub(super) async fn stop(&mut self, graceful: bool) {
        let gr = self.negotiated.as_ref().is_some_and(|n| n.graceful_restart);
        if graceful && gr {
            info!(peer = %self.cfg.name, "bgp: closing for a graceful restart; the peer keeps our routes");
            if let Some(mut s) = self.stream.take() {
                let _ = s.shutdown().await;
            }
        } else {
            if self.negotiated.is_some() {
                let all: Vec<IpNet> = self.sent.keys().copied().collect();
                self.withdraw(&all).await;
            }
            self.handle(Event::ManualStop).await;
            if let Some(mut s) = self.stream.take() {
                let _ = s.shutdown().await;
            }
        }
        self.status(|s| s.state = SessionState::Idle);
        self.metric(|m, l| m.session_up.get_or_create(l).set(0));
    }

    /// Feeds one event and carries out the actions, and the events they produce.
    pub(super) async fn handle(&mut self, event: Event) {
        let mut pending = vec![event];
        while let Some(event) = pending.pop() {
            let actions = self.fsm.handle(event, Instant::now());
            for action in actions {
                match action {
                    Action::Connect => match self.connect().await {
                        Ok(stream) => {
                            self.local = stream.local_addr().ok().map(|a| a.ip().to_canonical());
                            self.stream = Some(stream);
                            self.buf.clear();
                            pending.push(Event::TcpConnected);
                        }
                        Err(e) => {
                            self.set_error(e.to_string());
                            pending.push(Event::TcpFailed);
                        }
                    },
                    Action::SendMessage(m) => {
                        self.send(&m).await;
                    }
                    Action::CloseTcp => {
                        self.stream = None;
                        self.buf.clear();
                    }
                    Action::ArmTimer { kind, deadline } => {
                        self.timers.insert(kind, deadline);
                    }
                    Action::CancelTimer(kind) => {
                        self.timers.remove(&kind);
                    }
                    Action::SessionUp(n) => self.session_up(n).await,
                    Action::SessionDown { reason, was_up } => self.session_down(reason, was_up),
                }
            }
            let state = self.fsm.state().into();
            self.status(|s| s.state = state);
        }
    }

    async fn connect(&self) -> Result<TcpStream, BgpError> {
        let options = ConnectOptions {
            peer: SocketAddr::new(self.cfg.address, self.cfg.port),
            source: self.cfg.source_address,
            md5_key: self.cfg.password.as_ref().map(|p| p.0.clone()),
            timeout: self
                .cfg
                .connect_time
                .clamp(Duration::from_secs(1), MAX_CONNECT_TIMEOUT),
            interface: self.cfg.interface.clone(),
        };
        network::connect(&options).await
    }

    /// Encodes and writes `m`; false when the connection is gone or the message could
    /// not be encoded.
    pub(super) async fn send(&mut self, m: &Message) -> bool {
        let mut out = BytesMut::new();
        if let Err(e) = bgp_proto::encode(m, &self.fsm.caps(), &mut out) {
            self.set_error(format!("cannot encode a message: {e}"));
            return false;
        }
        let Some(stream) = &mut self.stream else {
            return false;
        };
        // A failed write shows up as a failed read next.
        if let Err(e) = stream.write_all(&out).await {
            self.set_error(format!("cannot send: {e}"));
            return false;
        }
        match m {
            Message::Open(_) => self.metric(|m, l| m.opens_sent.get_or_create(l).inc()),
            Message::Keepalive => self.metric(|m, l| m.keepalives_sent.get_or_create(l).inc()),
            Message::Notification(_) => {
                self.metric(|m, l| m.notifications_sent.get_or_create(l).inc())
            }
            Message::Update(_) => {
                self.metric(|m, l| {
                    m.updates.get_or_create(l).inc();
                });
                self.status(|s| s.updates_sent += 1);
            }
            Message::RouteRefresh(_) => {}
        }
        true
    }

    async fn session_up(&mut self, n: Box<Negotiated>) {
        info!(
            peer = %self.cfg.name, peer_as = n.peer_as, graceful_restart = n.graceful_restart,
            "bgp: session established"
        );
        let families = n.families.clone();
        let gr = n.graceful_restart;
        let peer_as = n.peer_as;
        self.negotiated = Some(n);
        self.status(|s| {
            s.graceful_restart = gr;
            s.peer_as = Some(peer_as);
            s.last_error = None;
        });
        self.metric(|m, l| m.session_up.get_or_create(l).set(1));
        self.watch_bfd();
        self.sent.clear();
        self.routes.borrow_and_update();
        self.sync_routes().await;
        // End-of-RIB after the initial table (RFC 4724 §2), per family. Harmless to a
        // peer without graceful restart: an empty UPDATE.
        for family in families {
            self.send(&Message::Update(Update::end_of_rib(family)))
                .await;
        }
    }

    fn session_down(&mut self, reason: DownReason, was_up: bool) {
        if was_up {
            info!(peer = %self.cfg.name, ?reason, "bgp: session down");
        }
        match &reason {
            DownReason::Stopped | DownReason::ConnectionLost => {}
            DownReason::HoldTimerExpired => self.set_error("hold timer expired".into()),
            DownReason::PeerNotification(n) => {
                self.set_error(format!("the peer sent a NOTIFICATION: {n:?}"))
            }
            DownReason::SentNotification(n) => {
                self.set_error(format!("we sent a NOTIFICATION: {n:?}"))
            }
        }
        self.negotiated = None;
        self.sent.clear();
        self.local = None;
        self.status(|s| {
            s.prefixes_sent = 0;
            s.graceful_restart = false;
        });
        self.metric(|m, l| {
            m.session_up.get_or_create(l).set(0);
            m.announced_prefixes.get_or_create(l).set(0);
        });
        // The restart is over once a session came up: later OPENs go without the R
        // bit. The new machine starts when the old one would have retried.
        if was_up && self.restarting && !matches!(reason, DownReason::Stopped) {
            self.restarting = false;
            self.fsm = Session::new(session_config(&self.cfg, &self.options, false));
            self.start_pending = true;
        }
    }
}

/// The state machine's configuration for a peer.
fn session_config(cfg: &PeerConfig, options: &SpeakerOptions, restarting: bool) -> Config {
    let (own, other) = match cfg.address {
        IpAddr::V4(_) => (Family::IPV4_UNICAST, Family::IPV6_UNICAST),
        IpAddr::V6(_) => (Family::IPV6_UNICAST, Family::IPV4_UNICAST),
    };
    let mut families = vec![own];
    if cfg.dual_stack {
        families.push(other);
        families.sort();
    }
    Config {
        local_as: cfg.local_as,
        peer_as: cfg.peer_as,
        router_id: cfg.router_id.unwrap_or(options.router_id),
        hold_time: cfg.hold_time,
        keepalive_time: cfg.keepalive_time,
        connect_retry: cfg.connect_time,
        passive: false,
        families,
        graceful_restart: cfg.graceful_restart.then_some(GracefulRestartConfig {
            restart_time: options.restart_time,
            restarting,
            // IPVS forwards while the agent restarts.
            forwarding: true,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bgp_proto::session::PeerAs;

    #[test]
    fn sessions_speak_the_peers_family_and_both_with_dual_stack() {
        let options = SpeakerOptions::new("n1", "10.0.0.2".parse().unwrap());
        let mut peer =
            PeerConfig::new("r", 64512, PeerAs::Exact(64513), "fd00::1".parse().unwrap());
        peer.graceful_restart = true;
        let c = session_config(&peer, &options, true);
        assert_eq!(c.families, vec![Family::IPV6_UNICAST]);
        assert_eq!(
            c.router_id,
            "10.0.0.2".parse::<std::net::Ipv4Addr>().unwrap()
        );
        let gr = c.graceful_restart.unwrap();
        assert!(gr.restarting && gr.forwarding);
        peer.dual_stack = true;
        peer.graceful_restart = false;
        let c = session_config(&peer, &options, true);
        assert_eq!(c.families, vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST]);
        assert_eq!(c.graceful_restart, None);
    }
}
