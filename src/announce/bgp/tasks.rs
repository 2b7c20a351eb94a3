//! One tokio task per peer: it carries out the `bgp-proto` state machine's actions on
//! a real connection (connect, send, close, timers), keeps the routes sent to the peer
//! (its Adj-RIB-Out) and sends only differences when the routes change; and the
//! supervisor starting, restarting and stopping those tasks as the peers change.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bgp_proto::packet::attribute::{Community, LargeCommunity};
use bgp_proto::packet::notification::{CeaseError, ErrorCode, Notification};
use bgp_proto::packet::open::Open;
use bgp_proto::packet::update::{Announcement, Update};
use bgp_proto::session::{
    Action, Config, DownReason, Event, GracefulRestartConfig, Keep, LARGE_HOLD_TIME, Negotiated,
    Session, State, TimerKind, collision,
};
use bgp_proto::{Family, Message, SessionCaps};
use bytes::BytesMut;
use ipnet::IpNet;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
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

/// Where accepted connections go: per peer address, its session's queue.
type Accepting = Arc<Mutex<HashMap<IpAddr, mpsc::Sender<TcpStream>>>>;

/// The listening sockets (one per address family, bound with the first peer of that
/// family) and the peers they take connections from.
#[derive(Default)]
struct Listeners {
    sockets: HashMap<bool, (Arc<TcpListener>, JoinHandle<()>)>,
    /// Families whose port could not be bound (warned once).
    failed: Vec<bool>,
    accepting: Accepting,
}

impl Listeners {
    /// Registers `cfg`'s address: the listening socket of its family takes its
    /// connections (with its TCP MD5 key) and hands them to the returned queue.
    fn add(&mut self, cfg: &PeerConfig, port: Option<u16>) -> mpsc::Receiver<TcpStream> {
        let (tx, rx) = mpsc::channel(4);
        let Some(port) = port else {
            return rx;
        };
        let v6 = cfg.address.is_ipv6();
        if !self.sockets.contains_key(&v6) && !self.failed.contains(&v6) {
            match network::listen(v6, port) {
                Ok(listener) => {
                    let listener = Arc::new(listener);
                    let task = tokio::spawn(accept(listener.clone(), self.accepting.clone()));
                    self.sockets.insert(v6, (listener, task));
                }
                Err(e) => {
                    warn!("bgp: not taking the peers' connections ({e}); connecting only");
                    self.failed.push(v6);
                }
            }
        }
        if let Some((listener, _)) = self.sockets.get(&v6) {
            if let Some(password) = &cfg.password {
                let peer = SocketAddr::new(cfg.address, cfg.port);
                if let Err(e) = network::set_md5_key(listener.as_ref(), peer, password.0.as_bytes())
                {
                    warn!(peer = %cfg.name, "bgp: the listening socket refused the TCP MD5 key: {e}");
                }
            }
            self.lock().insert(cfg.address, tx);
        }
        rx
    }

    /// Forgets `cfg`'s address (and its key).
    fn remove(&mut self, cfg: &PeerConfig) {
        self.lock().remove(&cfg.address);
        if cfg.password.is_some()
            && let Some((listener, _)) = self.sockets.get(&cfg.address.is_ipv6())
        {
            let peer = SocketAddr::new(cfg.address, cfg.port);
            let _ = network::set_md5_key(listener.as_ref(), peer, b"");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, mpsc::Sender<TcpStream>>> {
        self.accepting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops listening.
    fn close(self) {
        for (_, task) in self.sockets.into_values() {
            task.abort();
        }
    }
}

/// Takes connections on `listener`: a configured peer's goes to its session, anyone
/// else's is closed at once.
async fn accept(listener: Arc<TcpListener>, accepting: Accepting) {
    loop {
        match listener.accept().await {
            Ok((stream, from)) => {
                let ip = from.ip().to_canonical();
                let queue = accepting
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&ip)
                    .cloned();
                match queue {
                    Some(queue) => {
                        if let Err(e) = network::accepted(&stream) {
                            debug!(%from, "bgp: cannot set up an accepted connection: {e}");
                            continue;
                        }
                        if queue.try_send(stream).is_err() {
                            debug!(%from, "bgp: the session is not taking connections; closed");
                        }
                    }
                    None => debug!(%from, "bgp: closed a connection from no configured peer"),
                }
            }
            Err(e) => {
                // Out of descriptors or similar: do not spin.
                warn!("bgp: accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
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
    /// The BFD session's sender is gone: no more states will come.
    BfdGone,
    Accepted(Option<TcpStream>),
    PendingRead(io::Result<usize>),
}

/// The peer's connection accepted while our own was exchanging OPENs: kept aside until
/// the peer's OPEN on it settles the collision.
struct Pending {
    stream: TcpStream,
    buf: BytesMut,
    open: Option<Open>,
    /// Dropped when no OPEN came by then.
    deadline: Instant,
}

/// Reads into the pending connection until its OPEN is in, or waits forever.
async fn read_pending(pending: &mut Option<Pending>) -> io::Result<usize> {
    match pending {
        Some(p) if p.open.is_none() => {
            p.buf.reserve(4096);
            p.stream.read_buf(&mut p.buf).await
        }
        _ => std::future::pending().await,
    }
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
    /// The peer's connections, from the listener.
    incoming: mpsc::Receiver<TcpStream>,
    incoming_open: bool,
    pending: Option<Pending>,
}

impl PeerTask {
    fn new(
        cfg: PeerConfig,
        options: Arc<SpeakerOptions>,
        routes: watch::Receiver<PeerRoutes>,
        shared: Arc<Shared>,
        incoming: mpsc::Receiver<TcpStream>,
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
            incoming,
            incoming_open: true,
            pending: None,
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

    /// A connection from the peer: taken unless our own is further along.
    async fn accepted(&mut self, stream: TcpStream) {
        let from = stream.peer_addr().ok();
        match self.fsm.state() {
            State::Idle | State::Connect | State::Active => {
                debug!(peer = %self.cfg.name, ?from, "bgp: taking the peer's connection");
                self.adopt(stream, BytesMut::new(), None).await;
            }
            State::OpenSent | State::OpenConfirm => {
                debug!(peer = %self.cfg.name, ?from, "bgp: connection collision; waiting for the peer's OPEN");
                self.pending = Some(Pending {
                    stream,
                    buf: BytesMut::new(),
                    open: None,
                    deadline: Instant::now() + LARGE_HOLD_TIME,
                });
            }
            // RFC 4271 §6.8: a collision with an Established session closes the new
            // connection.
            State::Established => {
                debug!(peer = %self.cfg.name, ?from, "bgp: refused a second connection while Established");
                refuse(stream).await;
            }
        }
    }

    /// Continues the session over the peer's connection `stream` (with what was read
    /// from it and the peer's OPEN if already in).
    async fn adopt(&mut self, stream: TcpStream, buf: BytesMut, open: Option<Open>) {
        if self.fsm.state() == State::Idle && self.start_pending {
            // The rebuilt machine (without the R bit) starts now, on this connection.
            self.start_pending = false;
            self.timers.remove(&TimerKind::ConnectRetry);
            self.handle(Event::ManualStartPassive).await;
        }
        if !matches!(
            self.fsm.state(),
            State::Idle | State::Connect | State::Active
        ) {
            refuse(stream).await;
            return;
        }
        self.local = stream.local_addr().ok().map(|a| a.ip().to_canonical());
        self.stream = Some(stream);
        self.buf = buf;
        self.handle(Event::TcpAccepted).await;
        if self.fsm.state() != State::OpenSent {
            // Not started: refused.
            self.stream = None;
            self.buf.clear();
            return;
        }
        if let Some(open) = open {
            self.metric(|m, l| m.opens_received.get_or_create(l).inc());
            self.handle(Event::MessageReceived(Message::Open(open)))
                .await;
        }
        // Whatever followed the OPEN.
        if !self.buf.is_empty() {
            self.received().await;
        }
    }

    /// Bytes on the connection kept aside: its OPEN settles the collision.
    async fn pending_read(&mut self, r: io::Result<usize>) {
        let Some(p) = self.pending.as_mut() else {
            return;
        };
        if !matches!(r, Ok(n) if n > 0) {
            self.pending = None;
            return;
        }
        match bgp_proto::decode(&mut p.buf, &SessionCaps::default()) {
            Ok(None) => {}
            Ok(Some(Message::Open(open))) => {
                p.open = Some(open);
                self.resolve_collision().await;
            }
            // Anything else first: not a peer worth keeping.
            Ok(Some(_)) | Err(_) => self.pending = None,
        }
    }

    /// RFC 4271 §6.8: of the two connections, the one initiated by the side with the
    /// higher BGP identifier stays; the other is closed with Cease, connection
    /// collision resolution.
    async fn resolve_collision(&mut self) {
        let Some(p) = self.pending.take() else {
            return;
        };
        let Some(peer_id) = p.open.as_ref().map(|o| o.bgp_id) else {
            self.pending = Some(p);
            return;
        };
        match self.fsm.state() {
            State::Idle | State::Connect | State::Active => {
                self.adopt(p.stream, p.buf, p.open).await
            }
            State::OpenSent | State::OpenConfirm => {
                match collision(self.fsm.config().router_id, peer_id) {
                    Keep::LocallyInitiated => {
                        info!(peer = %self.cfg.name, "bgp: connection collision; keeping ours");
                        refuse(p.stream).await;
                    }
                    Keep::RemotelyInitiated => {
                        info!(peer = %self.cfg.name, "bgp: connection collision; keeping the peer's");
                        self.handle(Event::CollisionLost).await;
                        self.adopt(p.stream, p.buf, p.open).await;
                    }
                }
            }
            State::Established => refuse(p.stream).await,
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

    async fn connect(&self) -> Result<TcpStream, super::BgpError> {
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

    /// The next hop for routes of `prefix`'s family, and the link-local one beside it.
    fn next_hop(&self, prefix: &IpNet) -> Option<(IpAddr, Option<Ipv6Addr>)> {
        next_hop(
            prefix,
            self.local,
            self.options.node_ipv4,
            self.options.node_ipv6,
        )
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
            let Some((next_hop, link_local)) = self.next_hop(&prefixes[0]) else {
                missing_next_hop = true;
                continue;
            };
            let chunk = if v6 { V6_PER_UPDATE } else { V4_PER_UPDATE };
            for part in prefixes.chunks(chunk) {
                let a = Announcement {
                    prefixes: part.to_vec(),
                    next_hop,
                    link_local,
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

/// Closes a connection we do not keep with Cease, connection collision resolution
/// (RFC 4271 §6.8; the peer learns why instead of seeing a bare close).
async fn refuse(mut stream: TcpStream) {
    let mut out = BytesMut::new();
    let n = Notification::new(ErrorCode::Cease(CeaseError::ConnectionCollisionResolution));
    if bgp_proto::encode(&Message::Notification(n), &SessionCaps::default(), &mut out).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&out)).await;
    }
    let _ = stream.shutdown().await;
}

/// The next hop for routes of `prefix`'s family, with the link-local next hop beside
/// it on a link-local session (RFC 2545 §3, MP_REACH_NLRI with two next hops): our
/// address on the session when of the same family (`local`), else the node's address
/// of that family. A link-local session's global next hop is the node's IPv6 address;
/// without one, the link-local address goes alone.
fn next_hop(
    prefix: &IpNet,
    local: Option<IpAddr>,
    node_ipv4: Option<std::net::Ipv4Addr>,
    node_ipv6: Option<Ipv6Addr>,
) -> Option<(IpAddr, Option<Ipv6Addr>)> {
    match (prefix, local) {
        (IpNet::V4(_), Some(IpAddr::V4(a))) => Some((IpAddr::V4(a), None)),
        (IpNet::V6(_), Some(IpAddr::V6(a))) if network::is_link_local(a) => match node_ipv6 {
            Some(global) => Some((IpAddr::V6(global), Some(a))),
            None => Some((IpAddr::V6(a), None)),
        },
        (IpNet::V6(_), Some(IpAddr::V6(a))) => Some((IpAddr::V6(a), None)),
        (IpNet::V4(_), _) => node_ipv4.map(|a| (IpAddr::V4(a), None)),
        (IpNet::V6(_), _) => node_ipv6.map(|a| (IpAddr::V6(a), None)),
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
    fn next_hops_follow_the_sessions_address_and_add_the_link_local_one() {
        let v4: IpNet = "198.51.100.10/32".parse().unwrap();
        let v6: IpNet = "2001:db8::10/128".parse().unwrap();
        let node4 = Some("10.0.0.2".parse().unwrap());
        let global: Ipv6Addr = "2001:db8:1::2".parse().unwrap();
        let node6 = Some(global);
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let ll: Ipv6Addr = "fe80::2".parse().unwrap();
        // The session's own address for its family.
        assert_eq!(
            next_hop(&v4, ip("10.0.1.2"), node4, node6),
            Some((ip("10.0.1.2").unwrap(), None))
        );
        assert_eq!(
            next_hop(&v6, ip("fd00:1::2"), node4, node6),
            Some((ip("fd00:1::2").unwrap(), None))
        );
        // The node's address for the other family (dual stack), none when unknown.
        assert_eq!(
            next_hop(&v6, ip("10.0.1.2"), node4, node6),
            Some((IpAddr::V6(global), None))
        );
        assert_eq!(next_hop(&v6, ip("10.0.1.2"), node4, None), None);
        assert_eq!(
            next_hop(&v4, ip("fd00:1::2"), node4, node6),
            Some((ip("10.0.0.2").unwrap(), None))
        );
        // A link-local session: the global address plus the link-local one.
        assert_eq!(
            next_hop(&v6, Some(IpAddr::V6(ll)), node4, node6),
            Some((IpAddr::V6(global), Some(ll)))
        );
        assert_eq!(
            next_hop(&v6, Some(IpAddr::V6(ll)), node4, None),
            Some((IpAddr::V6(ll), None))
        );
    }

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
