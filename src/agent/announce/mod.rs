//! The agent's announcers: the layer-2 responder, the membership among the agents and
//! the BGP speaker with its BFD sessions, fed from the announce decision.
//!
//! ```text
//!  AnnounceModel ──local().l2──▶ watch ──▶ layer-2 announcer (ARP / NDP)
//!       ▲        ──local().bgp─▶ watch ──▶ BGP speaker ◀── peers (after nodeSelectors,
//!       │                                       │           passwords from Secrets)
//!       └── live set ◀── membership (SWIM)      └── BFD sessions (BFDProfile)
//! ```
//!
//! Nothing starts before the agent's first full sync: a restarted speaker would
//! otherwise send End-of-RIB over an empty table and make the routers drop the routes
//! graceful restart kept, and a restarted layer-2 announcer would claim addresses before
//! it knows its peers are alive. Each announcer starts when it first has something to
//! do, so a node without layer-2 addresses opens no packet socket and one without peers
//! no BGP session.

mod bfd_sessions;
mod passwords;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use metallb_config::selector::any_matches;
use metallb_config::{LbConfig, Peer};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::announce::bgp::{
    BgpHandle, BgpStatusView, PeerConfig, PeerRoutes, SpeakerOptions, spawn_bgp_speaker,
};
use crate::announce::l2::{L2Handle, L2Options, L2Status, Wanted, spawn_l2_announcer};
use crate::announce::membership::{
    Membership, MembershipConfig, MembershipError, MembershipMetrics, Seed,
};
use crate::config::LoadBalancerSettings;
use crate::lb::decision::AnnounceModel;
use crate::observe::announce_metrics::AnnounceMetrics;
use bfd_sessions::AgentBfd;
pub(crate) use passwords::SecretSource;
use passwords::resolve_passwords;

/// How long a node keeps answering for its layer-2 addresses after leaving the
/// membership on SIGTERM: the new owner hears the leave, elects itself and sends its
/// gratuitous frames within this time, so neighbours never find nobody answering.
const HANDOVER_GRACE: Duration = Duration::from_millis(500);

/// After the membership starts, how long layer-2 ownership waits for the other agents
/// to be heard (unless every Ready node is live sooner). An agent that restarts alone
/// would otherwise elect itself for every address and answer next to the real owner.
const MEMBERSHIP_SETTLE: Duration = Duration::from_secs(2);

/// How often the membership's rejoin counter is read (see [`AnnounceEvent::Rejoined`]).
const REJOIN_CHECK: Duration = Duration::from_millis(250);

/// This node's addresses, from its Node object's InternalIPs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct NodeAddresses {
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
}

impl NodeAddresses {
    fn of(node: &Node) -> NodeAddresses {
        let mut found = NodeAddresses::default();
        let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref());
        for address in addresses.into_iter().flatten() {
            if address.type_ != "InternalIP" {
                continue;
            }
            match address.address.parse::<IpAddr>() {
                Ok(IpAddr::V4(v4)) if found.v4.is_none() => found.v4 = Some(v4),
                Ok(IpAddr::V6(v6)) if found.v6.is_none() => found.v6 = Some(v6),
                _ => {}
            }
        }
        found
    }

    /// The address peers of the membership reach this node at: IPv4 first.
    fn primary(&self) -> Option<IpAddr> {
        self.v4.map(IpAddr::V4).or(self.v6.map(IpAddr::V6))
    }

    fn of_family(&self, like: IpAddr) -> Option<IpAddr> {
        match like {
            IpAddr::V4(_) => self.v4.map(IpAddr::V4),
            IpAddr::V6(_) => self.v6.map(IpAddr::V6),
        }
    }
}

/// What the announcers tell the run loop.
pub(crate) enum AnnounceEvent {
    /// The membership's live set changed.
    Live(BTreeSet<String>),
    /// The membership had its time to hear the others: layer-2 ownership may start.
    Settled,
    /// The peers (passwords read) changed while the speaker waits to start.
    Peers,
    /// This agent was declared down by the others and joined again: they elected other
    /// owners meanwhile, whose frames neighbours heard last.
    Rejoined,
}

/// The agent's announcers and what feeds them.
pub(crate) struct Announcers {
    node: String,
    settings: LoadBalancerSettings,
    metrics: AnnounceMetrics,
    addresses: NodeAddresses,
    labels: BTreeMap<String, String>,
    /// The other nodes (name, InternalIP, Ready), as membership seeds.
    others: Vec<(String, Option<IpAddr>, bool)>,
    /// Whether the first full sync is done (nothing is announced before).
    started: bool,
    /// Whether the next publication hands over the whole decision, not only what it
    /// lists as touched (at start, and when the membership settles).
    republish: bool,
    membership: Option<Membership>,
    /// Why the membership does not run, once said.
    membership_off: Option<String>,
    live: Option<watch::Receiver<BTreeSet<String>>>,
    /// Every agent the membership has seen alive since this agent started.
    heard: BTreeSet<String>,
    /// The membership's live set last seen.
    last_live: BTreeSet<String>,
    /// Whether the owned addresses are to be announced again after the next election.
    announce_again: bool,
    /// The membership's rejoin count last seen.
    rejoins_seen: u64,
    /// The live nodes last given to the election.
    effective_live: Option<BTreeSet<String>>,
    /// Until when layer-2 ownership waits for the membership; `None` once settled.
    settle_until: Option<Instant>,
    l2_wanted: watch::Sender<Wanted>,
    l2: Option<L2Handle>,
    l2_failed: bool,
    routes: watch::Sender<PeerRoutes>,
    /// The peers selecting this node, passwords not yet read.
    peers_wanted: watch::Sender<Vec<Peer>>,
    peers: watch::Receiver<Vec<PeerConfig>>,
    password_task: JoinHandle<()>,
    bgp: Option<BgpHandle>,
    bgp_view: Arc<Mutex<Option<BgpStatusView>>>,
    bfd: Arc<AgentBfd>,
}

impl Announcers {
    /// The announcers of `node`, none started yet.
    pub(crate) fn new(
        node: &str,
        settings: &LoadBalancerSettings,
        metrics: AnnounceMetrics,
        secrets: SecretSource,
    ) -> Announcers {
        let (peers_wanted, peers_wanted_rx) = watch::channel(Vec::new());
        let (peers_tx, peers) = watch::channel(Vec::new());
        let password_task = tokio::spawn(resolve_passwords(
            peers_wanted_rx,
            secrets,
            settings.metallb_namespace.clone(),
            peers_tx,
        ));
        Announcers {
            node: node.to_string(),
            settings: settings.clone(),
            bfd: Arc::new(AgentBfd::new(metrics.bfd.clone())),
            metrics,
            addresses: NodeAddresses::default(),
            labels: BTreeMap::new(),
            others: Vec::new(),
            started: false,
            republish: true,
            membership: None,
            membership_off: None,
            live: None,
            heard: BTreeSet::new(),
            last_live: BTreeSet::new(),
            announce_again: false,
            rejoins_seen: 0,
            effective_live: None,
            settle_until: None,
            l2_wanted: watch::channel(Wanted::new()).0,
            l2: None,
            l2_failed: false,
            routes: watch::channel(PeerRoutes::new()).0,
            peers_wanted,
            peers,
            password_task,
            bgp: None,
            bgp_view: Arc::new(Mutex::new(None)),
        }
    }

    /// Where the status socket reads the BGP neighbours (empty until the speaker runs).
    pub(crate) fn bgp_view(&self) -> Arc<Mutex<Option<BgpStatusView>>> {
        self.bgp_view.clone()
    }

    /// The layer-2 announcer's state (which interfaces answer for which address).
    pub(crate) fn l2_status(&self) -> Option<L2Status> {
        self.l2.as_ref().map(|l2| l2.status().borrow().clone())
    }

    /// The live set of the membership, when it runs.
    pub(crate) fn live_nodes(&self) -> Option<BTreeSet<String>> {
        self.live.as_ref().map(|live| live.borrow().clone())
    }

    /// Takes the Nodes: this node's addresses and labels, the seeds.
    pub(crate) async fn set_nodes<'a>(&mut self, nodes: impl IntoIterator<Item = &'a Node>) {
        self.others.clear();
        let nodes: Vec<&Node> = nodes.into_iter().collect();
        // This node first: the others' seed addresses are taken in its family.
        if let Some(node) = nodes
            .iter()
            .find(|node| node.metadata.name.as_deref() == Some(self.node.as_str()))
        {
            let addresses = NodeAddresses::of(node);
            if addresses != self.addresses {
                info!(node = %self.node, ipv4 = ?addresses.v4, ipv6 = ?addresses.v6, "this node's InternalIPs");
                self.bfd.set_addresses(addresses);
                self.addresses = addresses;
                self.restart_bgp().await;
            }
            self.labels = node.metadata.labels.clone().unwrap_or_default();
        }
        for node in nodes {
            let name = node.metadata.name.as_deref().unwrap_or_default();
            if name == self.node {
                continue;
            }
            let ready = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|conditions| {
                    conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                });
            let address = self
                .addresses
                .primary()
                .and_then(|ours| NodeAddresses::of(node).of_family(ours));
            self.others.push((name.to_string(), address, ready));
        }
        if let Some(membership) = &self.membership {
            membership.set_seeds(self.seeds());
        }
        if self.started {
            self.start_membership().await;
        }
    }

    fn seeds(&self) -> Vec<Seed> {
        self.others
            .iter()
            .filter_map(|(name, ip, _)| ip.map(|ip| Seed::new(name.clone(), ip)))
            .collect()
    }

    /// Takes the validated MetalLB configuration: the peers selecting this node and
    /// the BFD profiles.
    pub(crate) fn set_config(&mut self, config: &LbConfig) {
        let peers: Vec<Peer> = config
            .peers
            .iter()
            .filter(|peer| any_matches(&peer.node_selectors, &self.labels))
            .cloned()
            .collect();
        self.bfd.set_profiles(config.bfd_profiles.clone());
        send_if_changed(&self.peers_wanted, peers);
    }

    /// After the first full sync: from now on the announcers act.
    pub(crate) async fn start(&mut self, announce: &mut AnnounceModel) {
        self.started = true;
        self.start_membership().await;
        self.publish(announce);
    }

    async fn start_membership(&mut self) {
        if self.membership.is_some() || self.membership_off.is_some() {
            return;
        }
        let Some(ip) = self.addresses.primary() else {
            return;
        };
        let settings = &self.settings.membership;
        let secret = match read_key(&settings.key_file) {
            Ok(secret) => secret,
            Err(why) => {
                warn!(
                    "layer-2 failover will follow the Node objects only (a dead node's \
                     addresses move when it turns NotReady, after about 40 s): {why}"
                );
                self.membership_off = Some(why);
                return;
            }
        };
        let mut config = MembershipConfig::new(self.node.clone(), ip, secret);
        config.advertise.set_port(settings.port);
        config.listen.set_port(settings.port);
        config.seeds = self.seeds();
        config.tuning.probe_period = settings.probe_interval;
        config.tuning.probe_rtt = settings.probe_timeout;
        config.tuning.suspicion = settings.suspicion_timeout;
        match Membership::start(config).await {
            Ok(membership) => {
                info!(port = settings.port, %ip, "membership started");
                let _ = self.metrics.membership.set(membership.metrics());
                self.live = Some(membership.live());
                self.membership = Some(membership);
                let others_ready = self.others.iter().any(|(_, _, ready)| *ready);
                self.settle_until = others_ready.then(|| Instant::now() + MEMBERSHIP_SETTLE);
            }
            Err(error) => {
                let why = match error {
                    MembershipError::Bind { .. } => format!(
                        "the membership cannot start: {error} (is another agent or MetalLB's \
                         speaker on UDP port {}? set loadBalancer.membership.port)",
                        settings.port
                    ),
                    error => format!(
                        "the membership cannot start with the key in {}: {error}",
                        settings.key_file.display()
                    ),
                };
                warn!("{why}");
                self.membership_off = Some(why);
            }
        }
    }

    /// Waits for the membership's next change or its settling, or for the peers the
    /// speaker waits for; pending without any.
    pub(crate) async fn next_event(&mut self) -> AnnounceEvent {
        let settle = self.settle_until;
        let live = self.live.as_mut();
        let waiting_for_peers = self.bgp.is_none() && self.started;
        let peers = &mut self.peers;
        let membership_metrics = self.membership.as_ref().map(Membership::metrics);
        let rejoins_seen = &mut self.rejoins_seen;
        tokio::select! {
            () = async {
                let Some(metrics) = membership_metrics else {
                    return std::future::pending().await;
                };
                loop {
                    tokio::time::sleep(REJOIN_CHECK).await;
                    let rejoins = MembershipMetrics::get(&metrics.rejoins);
                    if rejoins != *rejoins_seen {
                        *rejoins_seen = rejoins;
                        return;
                    }
                }
            } => AnnounceEvent::Rejoined,
            () = async {
                if !waiting_for_peers || peers.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            } => AnnounceEvent::Peers,
            () = async {
                match settle {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                self.settle_until = None;
                AnnounceEvent::Settled
            }
            set = async {
                match live {
                    Some(live) => match live.changed().await {
                        Ok(()) => live.borrow_and_update().clone(),
                        // The membership ended: no more changes.
                        Err(_) => std::future::pending().await,
                    },
                    None => std::future::pending().await,
                }
            } => AnnounceEvent::Live(set),
        }
    }

    /// Takes a membership event into the decision; returns whether to publish.
    pub(crate) fn on_event(&mut self, event: AnnounceEvent, announce: &mut AnnounceModel) {
        match event {
            AnnounceEvent::Live(live) => {
                info!(live = ?live, "membership: live agents");
                // A member came (back): a healed partition, a returning link, an agent
                // restarted. Neighbours may hold another node's MAC for addresses this
                // node owns: the owner announces them again once the election ran.
                let gained = live.iter().any(|name| !self.last_live.contains(name));
                self.last_live = live.clone();
                self.announce_again |= gained;
                self.heard.extend(live.iter().cloned());
                let every_ready_live = self
                    .others
                    .iter()
                    .filter(|(_, _, ready)| *ready)
                    .all(|(name, _, _)| live.contains(name));
                if every_ready_live && self.settle_until.take().is_some() {
                    self.republish = true;
                }
            }
            AnnounceEvent::Settled => {
                info!("membership settled; layer-2 ownership starts");
                self.republish = true;
            }
            AnnounceEvent::Peers => {}
            AnnounceEvent::Rejoined => {
                info!("membership: this agent was declared down and joined again");
                self.announce_again = true;
            }
        }
        self.publish(announce);
        if std::mem::take(&mut self.announce_again)
            && let Some(l2) = &self.l2
        {
            l2.announce_again();
        }
    }

    /// Gives the election the nodes to rank: the agents the membership sees alive, and
    /// the Ready nodes whose agent it never heard. An agent never heard is starting, or
    /// not deployed there (a migration, a node selector): judged by its Node object, as
    /// every node is without a membership, so agents that just started, or that run
    /// with and without the key, all rank the same nodes. An agent heard once and gone
    /// since is dead: its node is not ranked until it is heard again.
    fn update_live(&mut self, announce: &mut AnnounceModel) {
        let Some(live) = self.live_nodes() else {
            return;
        };
        let mut effective = live;
        for (name, _, ready) in &self.others {
            if *ready && !self.heard.contains(name) {
                effective.insert(name.clone());
            }
        }
        if self.effective_live.as_ref() != Some(&effective) {
            self.effective_live = Some(effective.clone());
            announce.set_live_nodes(Some(effective));
        }
    }

    /// Publishes the decision's local part to the announcers, starting them when they
    /// first have something to do.
    pub(crate) fn publish(&mut self, announce: &mut AnnounceModel) {
        if !self.started {
            return;
        }
        self.update_live(announce);
        let touched = announce.take_touched();
        let everything = std::mem::take(&mut self.republish);
        let local = announce.local();
        if everything || !touched.l2.is_empty() {
            // While the membership settles, this node owns nothing: what it owned
            // before a restart waits too, as the real owner may be another node.
            let l2: Wanted = if self.settle_until.is_some() {
                Wanted::new()
            } else {
                local.l2.clone()
            };
            send_if_changed(&self.l2_wanted, l2);
            if !self.l2_wanted.borrow().is_empty() {
                self.start_l2();
            }
        }
        if everything || !touched.bgp.is_empty() {
            let bgp = local.bgp.clone();
            send_if_changed(&self.routes, bgp);
        }
        self.start_bgp();
    }

    fn start_l2(&mut self) {
        if self.l2.is_some() || self.l2_failed {
            return;
        }
        let options = L2Options {
            metrics: self.metrics.l2.clone(),
            ..L2Options::default()
        };
        match spawn_l2_announcer(options, self.l2_wanted.subscribe()) {
            Ok(handle) => {
                info!("layer-2 announcer started");
                self.l2 = Some(handle);
            }
            Err(error) => {
                warn!("the layer-2 announcer cannot start, no address is answered: {error}");
                self.l2_failed = true;
            }
        }
    }

    fn start_bgp(&mut self) {
        if self.bgp.is_some() || self.peers.borrow().is_empty() {
            return;
        }
        let router_id = match self.addresses.v4 {
            Some(v4) => v4,
            None => match self.peers.borrow().iter().find_map(|peer| peer.router_id) {
                Some(id) => id,
                None => {
                    warn!(
                        "the BGP speaker needs a router ID: this node has no IPv4 InternalIP \
                         and no BGPPeer sets spec.routerID"
                    );
                    return;
                }
            },
        };
        let mut options = SpeakerOptions::new(self.node.clone(), router_id);
        options.node_ipv4 = self.addresses.v4;
        options.node_ipv6 = self.addresses.v6;
        options.restart_marker = Some(self.settings.bgp.restart_marker.clone());
        options.bfd = Some(self.bfd.clone());
        options.metrics = Some(self.metrics.bgp.clone());
        let handle = spawn_bgp_speaker(options, self.peers.clone(), self.routes.subscribe());
        *self.bgp_view.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle.status_view());
        info!(%router_id, "BGP speaker started");
        self.bgp = Some(handle);
    }

    /// The node's addresses changed under a running speaker: its router ID, next hops
    /// and BFD sources are stale, so it stops (withdrawing the routes with the old next
    /// hops, as the old address may be gone) and starts again with the new ones.
    async fn restart_bgp(&mut self) {
        let Some(bgp) = self.bgp.take() else {
            return;
        };
        info!("this node's addresses changed: the BGP speaker restarts with them");
        *self.bgp_view.lock().unwrap_or_else(PoisonError::into_inner) = None;
        bgp.shutdown(false).await;
        self.bfd.release_all().await;
        self.start_bgp();
    }

    /// On SIGTERM: leave the membership (the others elect new owners at once), keep
    /// answering while they take over, then stop answering and close the BGP sessions
    /// (gracefully: with graceful restart negotiated the routers keep the routes while
    /// IPVS goes on forwarding).
    pub(crate) async fn shutdown(mut self) {
        self.password_task.abort();
        let owned_any = !self.l2_wanted.borrow().is_empty();
        if let Some(membership) = self.membership.take() {
            membership.leave().await;
            if owned_any {
                tokio::time::sleep(HANDOVER_GRACE).await;
            }
        }
        if let Some(l2) = self.l2.take() {
            l2.release_all().await;
        }
        if let Some(bgp) = self.bgp.take() {
            bgp.shutdown(true).await;
        }
    }
}

/// Publishes `value` unless the channel holds an equal one, so receivers wake only on
/// a real change.
fn send_if_changed<T: PartialEq>(sender: &watch::Sender<T>, value: T) {
    sender.send_if_modified(|now| {
        if *now == value {
            return false;
        }
        *now = value;
        true
    });
}

/// Reads the membership key file (trailing newline trimmed).
fn read_key(path: &Path) -> Result<Vec<u8>, String> {
    match std::fs::read(path) {
        Ok(mut key) => {
            while key.last().is_some_and(|b| b.is_ascii_whitespace()) {
                key.pop();
            }
            if key.is_empty() {
                Err(format!(
                    "the membership key file {} is empty",
                    path.display()
                ))
            } else {
                Ok(key)
            }
        }
        Err(error) => Err(format!(
            "cannot read the membership key {}: {error} (mount the Secret there, or set \
             loadBalancer.membership.keyFile)",
            path.display()
        )),
    }
}
