//! One tokio task per peer: it carries out the `bgp-proto` state machine's actions on
//! a real connection (connect, send, close, timers), keeps the routes sent to the peer
//! (its Adj-RIB-Out) and sends only differences when the routes change; and the
//! supervisor starting, restarting and stopping those tasks as the peers change.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bgp_proto::packet::attribute::{Community, LargeCommunity};
use bgp_proto::packet::update::{Announcement, Update};
use bgp_proto::session::{
    Action, Config, DownReason, Event, GracefulRestartConfig, Negotiated, Session, TimerKind,
};
use bgp_proto::{Family, Message};
use bytes::BytesMut;
use ipnet::IpNet;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::metrics::PeerLabel;
use super::network::{self, ConnectOptions};
use super::{
    BfdState, DEFAULT_LOCAL_PREF, NeighborStatus, PeerConfig, PeerRoutes, SessionState, Shared,
    SpeakerOptions,
};
use crate::lb::decision::Route;

/// At most this many IPv4 prefixes per UPDATE (5 octets each: well within 4096).
const V4_PER_UPDATE: usize = 500;
/// At most this many IPv6 prefixes per UPDATE (17 octets each).
const V6_PER_UPDATE: usize = 150;
/// The longest a connection attempt may take.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A neighbour's status and when its state last changed.
#[derive(Debug, Clone)]
pub(crate) struct StatusCell {
    status: NeighborStatus,
    since: Instant,
}

impl StatusCell {
    /// The status with its age filled in.
    pub(crate) fn snapshot(&self) -> NeighborStatus {
        NeighborStatus {
            since_secs: self.since.elapsed().as_secs(),
            ..self.status.clone()
        }
    }
}

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
            let task = PeerTask::new(cfg.clone(), options.clone(), routes.clone(), shared.clone());
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
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, BTreeMap<String, StatusCell>> {
    shared.status.lock().unwrap_or_else(|p| p.into_inner())
}

fn peer_label(cfg: &PeerConfig) -> String {
    SocketAddr::new(cfg.address, cfg.port).to_string()
}

/// What woke the peer task up.
enum Wake {
    Stop(bool),
    Read(io::Result<usize>),
    Timer,
    Routes(bool),
    Bfd(bool),
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
struct PeerTask {
    cfg: PeerConfig,
    options: Arc<SpeakerOptions>,
    fsm: Session,
    timers: HashMap<TimerKind, Instant>,
    stream: Option<TcpStream>,
    buf: BytesMut,
    /// Our address on the current connection.
    local: Option<IpAddr>,
    routes: watch::Receiver<PeerRoutes>,
    routes_open: bool,
    /// What the peer has from us now (Adj-RIB-Out).
    sent: BTreeMap<IpNet, Route>,
    negotiated: Option<Box<Negotiated>>,
    /// The R bit is still to be cleared after the first session went down.
    restarting: bool,
    /// The state machine was rebuilt without the R bit and waits for the
    /// connect-retry time to start.
    start_pending: bool,
    bfd: Option<watch::Receiver<bool>>,
    bfd_up: bool,
    shared: Arc<Shared>,
    label: PeerLabel,
}

impl PeerTask {
    fn new(
        cfg: PeerConfig,
        options: Arc<SpeakerOptions>,
        routes: watch::Receiver<PeerRoutes>,
        shared: Arc<Shared>,
    ) -> PeerTask {
        let restarting = options.restarting && cfg.graceful_restart;
        let bfd = match (&cfg.bfd_profile, &options.bfd) {
            (Some(_), Some(source)) => source.watch(&cfg),
            _ => None,
        };
        let bfd_up = bfd.as_ref().is_some_and(|rx| *rx.borrow());
        let label = PeerLabel {
            peer: peer_label(&cfg),
        };
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
        lock(&shared).insert(
            cfg.name.clone(),
            StatusCell {
                status,
                since: Instant::now(),
            },
        );
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
        }
    }

    fn status(&self, f: impl FnOnce(&mut NeighborStatus)) {
        if let Some(cell) = lock(&self.shared).get_mut(&self.cfg.name) {
            let before = cell.status.state;
            f(&mut cell.status);
            if cell.status.state != before {
                cell.since = Instant::now();
            }
        }
    }

    fn metric<R>(&self, f: impl FnOnce(&super::BgpMetrics, &PeerLabel) -> R) {
        if let Some(m) = &self.options.metrics {
            f(m, &self.label);
        }
    }

    fn set_error(&self, error: String) {
        debug!(peer = %self.cfg.name, "bgp: {error}");
        self.status(|s| s.last_error = Some(error));
    }

    async fn run(mut self, mut stop: watch::Receiver<Option<bool>>) {
        info!(peer = %self.cfg.name, address = %self.cfg.address, "bgp: starting the session");
        self.handle(Event::ManualStart).await;
        loop {
            let stopping = *stop.borrow_and_update();
            if let Some(graceful) = stopping {
                self.stop(graceful).await;
                return;
            }
            let next = self.timers.values().min().copied();
            let established = self.negotiated.is_some();
            let wake = {
                let stream = &mut self.stream;
                let buf = &mut self.buf;
                let routes = &mut self.routes;
                let bfd = &mut self.bfd;
                let routes_open = self.routes_open;
                tokio::select! {
                    biased;
                    _ = stop.changed() => Wake::Stop(stop.borrow().unwrap_or(false)),
                    r = read_some(stream, buf) => Wake::Read(r),
                    _ = tokio::time::sleep_until(tokio::time::Instant::from_std(
                        next.unwrap_or_else(Instant::now))), if next.is_some() => Wake::Timer,
                    r = routes.changed(), if routes_open && established => Wake::Routes(r.is_ok()),
                    r = async { bfd.as_mut().expect("guarded").changed().await }, if bfd.is_some() => {
                        match r {
                            Ok(()) => Wake::Bfd(*bfd.as_ref().expect("guarded").borrow()),
                            Err(_) => Wake::Bfd(false),
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
                    self.set_error("the peer closed the connection".into());
                    self.stream = None;
                    self.handle(Event::TcpFailed).await;
                }
                Wake::Read(Err(e)) => {
                    self.set_error(format!("connection error: {e}"));
                    self.stream = None;
                    self.handle(Event::TcpFailed).await;
                }
                Wake::Read(Ok(_)) => self.received().await,
                Wake::Timer => self.timers_due().await,
                Wake::Routes(open) => {
                    self.routes_open = open;
                    self.sync_routes().await;
                }
                Wake::Bfd(up) => self.bfd_changed(up).await,
            }
        }
    }

    /// Decodes and handles every whole message received.
    async fn received(&mut self) {
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

    async fn bfd_changed(&mut self, up: bool) {
        let was = self.bfd_up;
        self.bfd_up = up;
        self.status(|s| s.bfd = if up { BfdState::Up } else { BfdState::Down });
        if was && !up && self.stream.is_some() {
            warn!(peer = %self.cfg.name, "bgp: BFD went down; closing the session");
            self.set_error("BFD went down".into());
            self.stream = None;
            self.handle(Event::TcpFailed).await;
        }
    }

    /// Stops the session: with `graceful` and graceful restart negotiated, closes the
    /// connection without a word so the peer keeps our routes; otherwise withdraws
    /// them and says Cease.
    async fn stop(&mut self, graceful: bool) {
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
    async fn handle(&mut self, event: Event) {
        let mut pending = vec![event];
        while let Some(event) = pending.pop() {
            let actions = self.fsm.handle(event, Instant::now());
            for action in actions {
                match action {
                    Action::Connect => match self.connect().await {
                        Ok(stream) => {
                            self.local = stream.local_addr().ok().map(|a| a.ip());
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

    async fn connect(&self) -> Result<TcpStream, super::BgpError> {
        let options = ConnectOptions {
            peer: SocketAddr::new(self.cfg.address, self.cfg.port),
            source: self.cfg.source_address,
            md5_key: self.cfg.password.as_ref().map(|p| p.0.clone()),
            timeout: self
                .cfg
                .connect_time
                .clamp(Duration::from_secs(1), MAX_CONNECT_TIMEOUT),
        };
        network::connect(&options).await
    }

    /// Encodes and writes `m`; false when the connection is gone or the message could
    /// not be encoded.
    async fn send(&mut self, m: &Message) -> bool {
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

    /// The routes the peer should have: this peer's routes whose family the session
    /// carries, one per prefix (the first in order when advertisements disagree).
    fn desired(&self) -> BTreeMap<IpNet, Route> {
        let Some(n) = &self.negotiated else {
            return BTreeMap::new();
        };
        let routes = self.routes.borrow();
        let mut out = BTreeMap::new();
        for route in routes.get(self.cfg.name.as_str()).into_iter().flatten() {
            let family = match route.prefix {
                IpNet::V4(_) => Family::IPV4_UNICAST,
                IpNet::V6(_) => Family::IPV6_UNICAST,
            };
            if n.families.contains(&family) {
                out.entry(route.prefix).or_insert_with(|| route.clone());
            }
        }
        out
    }

    /// The next hop for routes of `prefix`'s family: our address on the session when of
    /// the same family, else the node's address of that family.
    fn next_hop(&self, prefix: &IpNet) -> Option<IpAddr> {
        match (prefix, self.local) {
            (IpNet::V4(_), Some(IpAddr::V4(a))) => Some(IpAddr::V4(a)),
            (IpNet::V6(_), Some(IpAddr::V6(a))) if !a.is_unicast_link_local() => {
                Some(IpAddr::V6(a))
            }
            (IpNet::V4(_), _) => self.options.node_ipv4.map(IpAddr::V4),
            (IpNet::V6(_), _) => self.options.node_ipv6.map(IpAddr::V6),
        }
    }

    /// Sends the differences between what the peer has and what it should have.
    async fn sync_routes(&mut self) {
        let Some(n) = self.negotiated.clone() else {
            return;
        };
        let desired = self.desired();
        let gone: Vec<IpNet> = self
            .sent
            .keys()
            .filter(|p| !desired.contains_key(p))
            .copied()
            .collect();
        self.withdraw(&gone).await;
        // Same attributes, same family: one UPDATE (or a few) for all of them.
        let mut groups: BTreeMap<(bool, Vec<metallb_config::Community>, Option<u32>), Vec<IpNet>> =
            BTreeMap::new();
        for (prefix, route) in &desired {
            if self.sent.get(prefix) != Some(route) {
                groups
                    .entry((
                        matches!(prefix, IpNet::V6(_)),
                        route.communities.clone(),
                        route.local_pref,
                    ))
                    .or_default()
                    .push(*prefix);
            }
        }
        let mut missing_next_hop = false;
        for ((v6, communities, local_pref), prefixes) in groups {
            let Some(next_hop) = self.next_hop(&prefixes[0]) else {
                missing_next_hop = true;
                continue;
            };
            let chunk = if v6 { V6_PER_UPDATE } else { V4_PER_UPDATE };
            for part in prefixes.chunks(chunk) {
                let a = Announcement {
                    prefixes: part.to_vec(),
                    next_hop,
                    link_local: None,
                    as_path: if n.internal {
                        vec![]
                    } else {
                        vec![self.cfg.local_as]
                    },
                    local_pref: n.internal.then(|| local_pref.unwrap_or(DEFAULT_LOCAL_PREF)),
                    communities: communities
                        .iter()
                        .filter_map(|c| match c {
                            metallb_config::Community::Standard(v) => Some(Community(*v)),
                            metallb_config::Community::Large(..) => None,
                        })
                        .collect(),
                    large_communities: communities
                        .iter()
                        .filter_map(|c| match c {
                            metallb_config::Community::Large(global, local1, local2) => {
                                Some(LargeCommunity {
                                    global: *global,
                                    local1: *local1,
                                    local2: *local2,
                                })
                            }
                            metallb_config::Community::Standard(_) => None,
                        })
                        .collect(),
                };
                if !self
                    .send(&Message::Update(Update::announce(&a, &n.caps)))
                    .await
                {
                    break;
                }
                for p in part {
                    if let Some(route) = desired.get(p) {
                        self.sent.insert(*p, route.clone());
                    }
                }
            }
        }
        if missing_next_hop {
            self.set_error(
                "no next hop for routes of the other address family (node address unknown)".into(),
            );
        }
        let (sent, wanted) = (self.sent.len(), desired.len());
        self.status(|s| s.prefixes_sent = sent);
        self.metric(|m, l| {
            m.announced_prefixes.get_or_create(l).set(sent as i64);
            m.pending_prefixes.get_or_create(l).set(wanted as i64);
        });
    }

    /// Withdraws `prefixes`, per family and in chunks.
    async fn withdraw(&mut self, prefixes: &[IpNet]) {
        let (v4, v6): (Vec<IpNet>, Vec<IpNet>) =
            prefixes.iter().partition(|p| matches!(p, IpNet::V4(_)));
        for (list, chunk) in [(v4, V4_PER_UPDATE), (v6, V6_PER_UPDATE)] {
            for part in list.chunks(chunk) {
                if !self.send(&Message::Update(Update::withdraw(part))).await {
                    return;
                }
                for p in part {
                    self.sent.remove(p);
                }
            }
        }
        let sent = self.sent.len();
        self.status(|s| s.prefixes_sent = sent);
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
