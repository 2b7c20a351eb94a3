//! Fast membership among the agents: which nodes' agents are alive, for the layer-2
//! owner election.
//!
//! Every agent runs one [`Membership`]: SWIM with Lifeguard's refinements (the `foca`
//! crate, sans-IO, driven here by one tokio task with a UDP socket and a timer queue)
//! among the agents of the cluster, every datagram sealed with a shared key. Its output
//! is a watch channel of the live node names, this node included, updated at once on
//! every change; the owner election ranks the eligible nodes among them. The Node objects
//! stay the slow ground truth: the agent passes their InternalIPs as seeds.
//!
//! # Timing
//!
//! See [`tuning`]: probe every 200 ms, 60 ms for a direct ack, 400 ms of suspicion, so a
//! dead, frozen or cut-off agent leaves the others' live sets in about 0.8 s at 3 nodes
//! (bound ~1.2 s for one detector; more members, more probers, sooner); an agent that
//! stops with [`Membership::leave`] (SIGTERM) tells every live member and is dropped at
//! once. Steady traffic is a ping and an ack per member per period: 1.3–1.8 kB/s per
//! node on the wire (measured at 3 nodes), whatever the cluster size.
//!
//! # Security
//!
//! See [`seal`]: XChaCha20-Poly1305 with a key derived from a Secret shared by the
//! agents; a datagram no key opens is dropped and counted, so a stranger on the segment
//! (or an agent with a wrong key) is never admitted and cannot declare anyone down; a
//! recorded datagram replayed later is refused (timestamp window plus nonce memory).
//!
//! # Split brain
//!
//! SWIM chooses availability: when the network splits, each side declares the other
//! down after the detection time and goes on with the members it can reach. A node cut
//! off alone sees only itself, so it elects itself owner of every IP it is eligible for
//! while the others elect among themselves: two nodes answer ARP for one IP until the
//! partition heals — as with MetalLB, whose documentation accepts the same. On a
//! single layer-2 segment the two answers race in the neighbours' caches; only
//! neighbours on the isolated node's side of the cut reach it anyway. When the network
//! heals, the isolated side (alone, it asks its seeds every second; the others ask the
//! members they hold as down every 2 s) rejoins within a few seconds, the cluster-wide
//! view is one again, and every agent computes the same owner (the elected owner sends
//! gratuitous ARP again, which moves the caches back). A partition between two members
//! only, with a third reaching both, is not a split at all: SWIM's indirect probes go
//! through the third and both stay live.
//!
//! The two sides do not split at the same speed: the majority side drops the cut-off
//! node within the detection time (0.3–1 s in the lab), while the cut-off node, which
//! probes one member a period and suspects them one after the other, sees itself alone
//! only after about 2–2.5 s at 3 nodes. So the window where two nodes answer starts
//! late on the isolated side; the owner election could shorten it further by refusing
//! to own anything while this node sees fewer than half of the nodes it expects, at
//! the cost of a single-node cluster owning nothing — a decision for the agent.
//!
//! # Seeds
//!
//! Seeds are the Node objects' names and InternalIPs ([`Seed`]); a member accepts a join
//! request addressed to its own name only. Every rejoin period (1 s), each seed whose
//! node is not live is sent one join request: at start, when alone, after a partition
//! and for new nodes. A node that stays dead costs one small datagram a second from each
//! member.
//!
//! Stopping without leaving (SIGKILL, crash, power loss) and a link going down look
//! alike to the others: detection time. A node whose own link goes down sees everyone
//! else leave; the agent should not act on that (it cannot answer ARP anyway).

pub mod identity;
pub mod metrics;
pub mod seal;
pub mod tuning;

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, BinaryHeap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use foca::{AccumulatingRuntime, Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer};
use rand::RngExt;
use rand::rngs::StdRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use identity::MemberId;
pub use metrics::MembershipMetrics;
pub use seal::{KeyError, Keyring, Refused};
pub use tuning::{Tuning, TuningError};

/// The default membership port: next to MetalLB's memberlist (7946), so both can run
/// on a node while a cluster migrates.
pub const DEFAULT_PORT: u16 = 7947;

/// The default accepted clock difference between agents, either way.
pub const DEFAULT_REPLAY_WINDOW: Duration = Duration::from_secs(10);

/// What a membership needs to start.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// This node's name (the Kubernetes node name).
    pub node_name: String,
    /// The address peers send to: the node's InternalIP and the membership port; the
    /// port is also the seeds' port.
    pub advertise: SocketAddr,
    /// The address the socket binds (usually the unspecified address and the port).
    pub listen: SocketAddr,
    /// The shared secrets, from the Secret: the first seals, any opens (rotation).
    pub secrets: Vec<Vec<u8>>,
    /// The other nodes to join through (their names and InternalIPs).
    pub seeds: Vec<Seed>,
    /// The SWIM timings.
    pub tuning: Tuning,
    /// Accepted clock difference between agents (replay protection).
    pub replay_window: Duration,
}

impl MembershipConfig {
    /// A configuration with the default port, timings and replay window, listening on
    /// all addresses of the advertised address's family.
    pub fn new(node_name: impl Into<String>, node_ip: IpAddr, secret: impl Into<Vec<u8>>) -> Self {
        let unspecified: IpAddr = match node_ip {
            IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
            IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
        };
        MembershipConfig {
            node_name: node_name.into(),
            advertise: SocketAddr::new(node_ip, DEFAULT_PORT),
            listen: SocketAddr::new(unspecified, DEFAULT_PORT),
            secrets: vec![secret.into()],
            seeds: Vec::new(),
            tuning: Tuning::default(),
            replay_window: DEFAULT_REPLAY_WINDOW,
        }
    }
}

/// Why a membership cannot start.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The node name is empty.
    #[error("the membership needs this node's name")]
    NoNodeName,
    /// The secrets cannot make keys.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The timings are unusable.
    #[error(transparent)]
    Tuning(#[from] TuningError),
    /// The UDP socket cannot be bound.
    #[error("bind the membership socket {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// A node to join through: the Node object's name and InternalIP. The name is needed:
/// a member accepts a join request only when it is addressed to its own name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seed {
    /// The node name.
    pub node: String,
    /// Its InternalIP (the membership port is everyone's).
    pub ip: IpAddr,
}

impl Seed {
    /// The node `node` at `ip`.
    pub fn new(node: impl Into<String>, ip: IpAddr) -> Seed {
        Seed {
            node: node.into(),
            ip,
        }
    }
}

enum Command {
    Seeds(Vec<Seed>),
    Leave(oneshot::Sender<()>),
}

/// A running membership: its task, the live set, the counters. Dropping it stops the
/// task without telling anyone (as a crash would); [`Membership::leave`] tells first.
#[derive(Debug)]
pub struct Membership {
    commands: mpsc::UnboundedSender<Command>,
    live: watch::Receiver<BTreeSet<String>>,
    metrics: Arc<MembershipMetrics>,
    local_addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Membership {
    /// Binds the socket and starts the membership task on the current tokio runtime; it
    /// joins through the seeds at once and again every rejoin period while some seed's
    /// node is not live.
    pub async fn start(config: MembershipConfig) -> Result<Membership, MembershipError> {
        if config.node_name.is_empty() {
            return Err(MembershipError::NoNodeName);
        }
        config.tuning.validate()?;
        let keyring = Keyring::new(&config.secrets)?;
        let socket =
            UdpSocket::bind(config.listen)
                .await
                .map_err(|source| MembershipError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let local_addr = socket
            .local_addr()
            .map_err(|source| MembershipError::Bind {
                addr: config.listen,
                source,
            })?;
        let identity = MemberId::new(config.node_name.clone(), config.advertise, unix_ms());
        // Distinct generators for foca and for the nonces, both seeded by the OS.
        let rng: StdRng = rand::make_rng();
        let foca_rng: StdRng = rand::make_rng();
        let foca_config = config.tuning.foca_config();
        let foca = Foca::new(identity, foca_config.clone(), foca_rng, PostcardCodec);
        let metrics = Arc::new(MembershipMetrics::default());
        let (live_tx, live) = watch::channel(BTreeSet::from([config.node_name.clone()]));
        MembershipMetrics::add(&metrics.members, 1);
        let (commands, command_rx) = mpsc::unbounded_channel();
        let driver = Driver {
            foca,
            foca_config,
            runtime: AccumulatingRuntime::new(),
            socket,
            opener: seal::Opener::new(keyring, config.replay_window.as_millis() as u64),
            rng,
            timers: BinaryHeap::new(),
            next_seq: 0,
            seeds: Vec::new(),
            port: config.advertise.port(),
            name: config.node_name,
            live_tx,
            metrics: Arc::clone(&metrics),
            rejoin_period: config.tuning.rejoin_period,
            stall_threshold: config.tuning.probe_rtt / 2,
            last_postponed: None,
        };
        let task = tokio::spawn(driver.run(config.seeds, command_rx));
        Ok(Membership {
            commands,
            live,
            metrics,
            local_addr,
            task: Some(task),
        })
    }

    /// The live node names, this node included; changes are published at once.
    pub fn live(&self) -> watch::Receiver<BTreeSet<String>> {
        self.live.clone()
    }

    /// The counters.
    pub fn metrics(&self) -> Arc<MembershipMetrics> {
        Arc::clone(&self.metrics)
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Replaces the seeds (the Node objects' names and InternalIPs; this node is
    /// skipped): those not live yet are sent a join request at once.
    pub fn set_seeds(&self, seeds: impl IntoIterator<Item = Seed>) {
        let _ = self
            .commands
            .send(Command::Seeds(seeds.into_iter().collect()));
    }

    /// Leaves the cluster: tells every live member this node is gone (they drop it at
    /// once), then stops. For SIGTERM, before the agent stops answering. Afterwards the
    /// live set is empty.
    pub async fn leave(mut self) {
        let (done, left) = oneshot::channel();
        if self.commands.send(Command::Leave(done)).is_ok() {
            // The task sends a few datagrams; it never takes long, but a shutdown must
            // not hang on it.
            let _ = tokio::time::timeout(Duration::from_secs(1), left).await;
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A foca timer due at `at`; `seq` keeps the order of equal instants.
struct Scheduled {
    at: Instant,
    seq: u64,
    timer: Timer<MemberId>,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// The membership task's state: foca, its runtime, the socket, the timers.
struct Driver {
    foca: Foca<MemberId, PostcardCodec, StdRng, NoCustomBroadcast>,
    foca_config: foca::Config,
    runtime: AccumulatingRuntime<MemberId>,
    socket: UdpSocket,
    opener: seal::Opener,
    rng: StdRng,
    timers: BinaryHeap<Reverse<Scheduled>>,
    next_seq: u64,
    seeds: Vec<MemberId>,
    port: u16,
    name: String,
    live_tx: watch::Sender<BTreeSet<String>>,
    metrics: Arc<MembershipMetrics>,
    rejoin_period: Duration,
    /// How late the earliest timer may fire before it counts as a stall.
    stall_threshold: Duration,
    /// When timers were last postponed after a stall.
    last_postponed: Option<Instant>,
}

impl Driver {
    async fn run(mut self, seeds: Vec<Seed>, mut commands: mpsc::UnboundedReceiver<Command>) {
        self.set_seeds(seeds);
        let mut rejoin = tokio::time::interval(self.rejoin_period);
        rejoin.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Room for any datagram: oversized ones are refused by foca, not truncated here.
        let mut buf = vec![0u8; 65_536];
        loop {
            let next = self.timers.peek().map(|Reverse(s)| s.at);
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Seeds(seeds)) => self.set_seeds(seeds),
                    Some(Command::Leave(done)) => {
                        self.leave().await;
                        let _ = done.send(());
                        return;
                    }
                    // The handle is gone without leaving: stop as a crash would.
                    None => return,
                },
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, _from)) => self.receive(&buf[..len]),
                    Err(error) => tracing::debug!(%error, "membership receive"),
                },
                () = sleep_until(next) => {
                    // Datagrams that arrived while this task was not running (a stall,
                    // a busy runtime) are read before the timeouts are judged, so a
                    // stall of this agent does not make it suspect peers that answered
                    // in time. Bounded, so a flood cannot hold the timers back.
                    for _ in 0..64 {
                        match self.socket.try_recv_from(&mut buf) {
                            Ok((len, _from)) => self.receive(&buf[..len]),
                            Err(_) => break,
                        }
                    }
                    self.fire_due_timers();
                }
                _ = rejoin.tick() => self.join_missing_seeds(),
            }
            self.flush().await;
        }
    }

    fn set_seeds(&mut self, mut seeds: Vec<Seed>) {
        seeds.sort();
        seeds.dedup();
        self.seeds = seeds
            .into_iter()
            .filter(|seed| seed.node != self.name)
            .map(|seed| MemberId::seed(seed.node, SocketAddr::new(seed.ip, self.port)))
            .collect();
        self.join_missing_seeds();
    }

    /// Sends a join request to every seed whose node is not live: at start, when alone,
    /// after a partition, and for nodes that came up later.
    fn join_missing_seeds(&mut self) {
        let live: BTreeSet<&str> = self
            .foca
            .iter_members()
            .map(|m| m.id().name.as_str())
            .collect();
        let missing: Vec<MemberId> = self
            .seeds
            .iter()
            .filter(|seed| !live.contains(seed.name.as_str()))
            .cloned()
            .collect();
        for seed in missing {
            if let Err(error) = self.foca.announce(seed, &mut self.runtime) {
                tracing::debug!(%error, "membership join request");
            }
        }
    }

    fn receive(&mut self, datagram: &[u8]) {
        match self.opener.open(datagram, unix_ms()) {
            Err(why) => {
                self.metrics.count_refused(why);
                tracing::trace!(%why, len = datagram.len(), "membership datagram refused");
            }
            Ok(payload) => {
                MembershipMetrics::add(&self.metrics.datagrams_received, 1);
                MembershipMetrics::add(&self.metrics.bytes_received, datagram.len() as u64);
                if let Err(error) = self.foca.handle_data(&payload, &mut self.runtime) {
                    MembershipMetrics::add(&self.metrics.undecodable, 1);
                    tracing::debug!(%error, "membership datagram not handled");
                }
            }
        }
    }

    fn fire_due_timers(&mut self) {
        let now = Instant::now();
        if self.postpone_after_a_stall(now) {
            return;
        }
        let mut due = Vec::new();
        while let Some(Reverse(next)) = self.timers.peek() {
            if next.at > now {
                break;
            }
            let Some(Reverse(scheduled)) = self.timers.pop() else {
                break;
            };
            due.push(scheduled.timer);
        }
        // When the task lagged, several are due at once: foca wants them in its own
        // order (an indirect probe before the next probe); the sort is stable.
        due.sort();
        for timer in due {
            if let Err(error) = self.foca.handle_timer(timer, &mut self.runtime) {
                tracing::trace!(%error, "membership timer");
            }
        }
    }

    /// When the earliest timer comes due much later than it was set for, this task did
    /// not run in between: the process or the whole machine was starved or paused
    /// (a CPU limit's throttling, a loaded host under a VM). Its peers' answers may be
    /// waiting to be read or, if they starved too, not even sent yet: judging the
    /// probes now would suspect members whose only fault is sharing the stall. So every
    /// timer moves later by the stall plus one probe rtt, giving the peers the time
    /// they were owed (Lifeguard's local health idea in its simplest form). A dead
    /// member is still detected: only this node's own lateness delays it. True when
    /// the timers were moved.
    fn postpone_after_a_stall(&mut self, now: Instant) -> bool {
        let Some(Reverse(earliest)) = self.timers.peek() else {
            return false;
        };
        let late = now.saturating_duration_since(earliest.at);
        if late <= self.stall_threshold {
            return false;
        }
        // Once per two probe periods at most: a process late at every wake-up must
        // still judge its probes, later rather than never.
        if self
            .last_postponed
            .is_some_and(|at| now.saturating_duration_since(at) < self.foca_config.probe_period * 2)
        {
            return false;
        }
        self.last_postponed = Some(now);
        let shift = late + self.foca_config.probe_rtt;
        MembershipMetrics::add(&self.metrics.stalls, 1);
        tracing::debug!(
            late_ms = late.as_millis() as u64,
            "membership timers late: verdicts postponed"
        );
        let timers = std::mem::take(&mut self.timers);
        self.timers = timers
            .into_iter()
            .map(|Reverse(mut scheduled)| {
                scheduled.at += shift;
                Reverse(scheduled)
            })
            .collect();
        true
    }

    async fn leave(&mut self) {
        // Tell every live member directly, not just the 3 random ones foca gossips to.
        let mut config = self.foca_config.clone();
        if let Some(all) = std::num::NonZeroUsize::new(self.foca.num_members()) {
            config.num_indirect_probes = config.num_indirect_probes.max(all);
            let _ = self.foca.set_config(config);
        }
        if let Err(error) = self.foca.leave_cluster(&mut self.runtime) {
            tracing::warn!(%error, "membership leave");
        }
        self.flush().await;
        self.live_tx.send_replace(BTreeSet::new());
        self.metrics
            .members
            .store(0, std::sync::atomic::Ordering::Relaxed);
        tracing::info!("left the membership");
    }

    /// Sends what foca asked to send, schedules its timers, reads its notifications and
    /// publishes the live set if it changed.
    async fn flush(&mut self) {
        while let Some((to, payload)) = self.runtime.to_send() {
            let datagram = self
                .opener
                .keyring()
                .seal(&payload, unix_ms(), self.rng.random());
            match self.socket.send_to(&datagram, to.addr).await {
                Ok(_) => {
                    MembershipMetrics::add(&self.metrics.datagrams_sent, 1);
                    MembershipMetrics::add(&self.metrics.bytes_sent, datagram.len() as u64);
                }
                Err(error) => {
                    MembershipMetrics::add(&self.metrics.send_errors, 1);
                    tracing::trace!(%error, to = %to.addr, "membership send");
                }
            }
        }
        let now = Instant::now();
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.next_seq += 1;
            self.timers.push(Reverse(Scheduled {
                at: now + after,
                seq: self.next_seq,
                timer,
            }));
        }
        while let Some(notification) = self.runtime.to_notify() {
            match notification {
                OwnedNotification::MemberUp(member) => {
                    MembershipMetrics::add(&self.metrics.member_ups, 1);
                    tracing::info!(node = %member.name, addr = %member.addr, "member up");
                }
                OwnedNotification::MemberDown(member) => {
                    MembershipMetrics::add(&self.metrics.member_downs, 1);
                    tracing::info!(node = %member.name, addr = %member.addr, "member down");
                }
                OwnedNotification::Rejoin(me) => {
                    MembershipMetrics::add(&self.metrics.rejoins, 1);
                    tracing::info!(boot = me.boot, "declared down by the cluster; rejoined");
                }
                other => tracing::debug!(notification = ?other, "membership"),
            }
        }
        self.publish_live();
    }

    fn publish_live(&mut self) {
        let mut live: BTreeSet<String> = self
            .foca
            .iter_members()
            .map(|m| m.id().name.clone())
            .collect();
        live.insert(self.name.clone());
        self.metrics
            .members
            .store(live.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.live_tx.send_if_modified(|current| {
            if *current == live {
                false
            } else {
                *current = live;
                true
            }
        });
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    //! Real sockets on loopback addresses (127.0.0.x share one port): the task, the
    //! sealing and foca together. The kernel lab runs the same across namespaces with
    //! link failures and partitions.

    use super::*;

    const SECRET: &[u8] = b"a shared secret of 32 bytes.....";

    async fn member(
        name: &str,
        host: u8,
        port: u16,
        secret: &[u8],
        seeds: &[(&str, u8)],
    ) -> Membership {
        let ip = IpAddr::from([127, 0, 0, host]);
        let mut config = MembershipConfig::new(name, ip, secret);
        config.advertise = SocketAddr::new(ip, port);
        config.listen = config.advertise;
        config.seeds = seeds
            .iter()
            .map(|(name, h)| Seed::new(*name, IpAddr::from([127, 0, 0, *h])))
            .collect();
        Membership::start(config).await.unwrap()
    }

    fn names(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    async fn wait_for(member: &Membership, want: &BTreeSet<String>, within: Duration) -> bool {
        let mut live = member.live();
        tokio::time::timeout(within, live.wait_for(|set| set == want))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn members_join_leave_at_once_and_a_dead_one_is_dropped() {
        let port = 27_947;
        let a = member("a", 11, port, SECRET, &[("b", 12), ("c", 13)]).await;
        let b = member("b", 12, port, SECRET, &[("a", 11)]).await;
        let c = member("c", 13, port, SECRET, &[("a", 11)]).await;
        let all = names(&["a", "b", "c"]);
        for m in [&a, &b, &c] {
            assert!(
                wait_for(m, &all, Duration::from_secs(5)).await,
                "{:?}",
                m.live().borrow()
            );
        }

        let left = Instant::now();
        c.leave().await;
        let ab = names(&["a", "b"]);
        assert!(wait_for(&a, &ab, Duration::from_secs(2)).await);
        assert!(wait_for(&b, &ab, Duration::from_secs(2)).await);
        let leave_ms = left.elapsed().as_millis();
        assert!(leave_ms < 300, "a graceful leave took {leave_ms} ms");

        let killed = Instant::now();
        drop(b);
        assert!(wait_for(&a, &names(&["a"]), Duration::from_secs(3)).await);
        let detect_ms = killed.elapsed().as_millis();
        assert!(detect_ms < 2_000, "a dead member stayed {detect_ms} ms");
        assert!(MembershipMetrics::get(&a.metrics().datagrams_sent) > 0);
        assert_eq!(a.metrics().refused(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_member_with_a_wrong_key_is_never_admitted() {
        let port = 27_948;
        let a = member("a", 21, port, SECRET, &[("b", 22), ("x", 23)]).await;
        let b = member("b", 22, port, SECRET, &[("a", 21), ("x", 23)]).await;
        let stranger = member(
            "x",
            23,
            port,
            b"not the shared secret, though long",
            &[("a", 21), ("b", 22)],
        )
        .await;
        let ab = names(&["a", "b"]);
        assert!(wait_for(&a, &ab, Duration::from_secs(5)).await);
        assert!(wait_for(&b, &ab, Duration::from_secs(5)).await);
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(*a.live().borrow(), ab);
        assert_eq!(*b.live().borrow(), ab);
        assert_eq!(*stranger.live().borrow(), names(&["x"]));
        assert!(MembershipMetrics::get(&a.metrics().refused_unauthenticated) > 0);
        assert!(MembershipMetrics::get(&stranger.metrics().refused_unauthenticated) > 0);
    }

    /// The whole process stalls (as a loaded machine, a VM whose CPU the host takes
    /// away, or a long pause): every member's timers come due together when it runs
    /// again, before any peer had the chance to answer. Nobody may be declared down
    /// for a stall everyone shared.
    #[tokio::test(flavor = "current_thread")]
    async fn a_stall_of_the_whole_process_declares_nobody_down() {
        let port = 27_949;
        let a = member("a", 31, port, SECRET, &[("b", 32), ("c", 33)]).await;
        let b = member("b", 32, port, SECRET, &[("a", 31), ("c", 33)]).await;
        let c = member("c", 33, port, SECRET, &[("a", 31), ("b", 32)]).await;
        let all = names(&["a", "b", "c"]);
        for m in [&a, &b, &c] {
            assert!(wait_for(m, &all, Duration::from_secs(5)).await);
        }
        let downs = |members: &[&Membership]| -> u64 {
            members
                .iter()
                .map(|m| MembershipMetrics::get(&m.metrics().member_downs))
                .sum()
        };
        let before = downs(&[&a, &b, &c]);
        for stall in [700, 300, 900, 150, 600, 450, 800, 250] {
            // Blocks the runtime's only thread: all three members stop at once.
            std::thread::sleep(Duration::from_millis(stall));
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            downs(&[&a, &b, &c]),
            before,
            "a shared stall declared a member down"
        );
        for m in [&a, &b, &c] {
            assert_eq!(*m.live().borrow(), all);
        }
    }

    #[tokio::test]
    async fn bad_configurations_are_refused() {
        let ip = IpAddr::from([127, 0, 0, 1]);
        let short = MembershipConfig::new("a", ip, b"short".to_vec());
        assert!(matches!(
            Membership::start(short).await,
            Err(MembershipError::Key(KeyError::TooShort(5)))
        ));
        let unnamed = MembershipConfig::new("", ip, SECRET);
        assert!(matches!(
            Membership::start(unnamed).await,
            Err(MembershipError::NoNodeName)
        ));
    }
}
