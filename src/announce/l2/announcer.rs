//! The layer-2 announcer: answers ARP and Neighbor Solicitations for exactly the
//! LoadBalancer IPs this node owns, on the interfaces the [`interfaces`]
//! rule picks, and announces each IP when it starts answering for it.
//!
//! # Use
//!
//! ```ignore
//! let (tx, rx) = tokio::sync::watch::channel(BTreeMap::new());
//! let l2 = spawn_l2_announcer(L2Options::default(), rx)?;   // inside a tokio runtime
//! l2.metrics().register(&mut registry);                      // once, at start
//! tx.send_replace(model.local().l2.clone());                 // after each decision change
//! // ... on SIGTERM, after the membership said goodbye:
//! l2.release_all().await;
//! ```
//!
//! The watch value is the whole set of IPs this node owns ([`Wanted`], the
//! `LocalAnnouncements::l2` of the announce decision): every value replaces the
//! previous one. IPs that leave it stop being answered before anything else happens;
//! IPs that join it are answered from the moment the value is seen, and announced.
//!
//! # One task, a few sockets
//!
//! One task owns the state: it reads the watch channel and rtnetlink's link, address
//! and route multicast groups (a change of links re-reads links, addresses and
//! default routes after a 20 ms quiet period, and re-applies the choice). It keeps
//! one responder task per interface in use (the `network` sockets), which answers
//! from a shared set of owned IPs: removing an IP from that set is what stops the
//! answers, at once, without waiting for the responder. Sockets of interfaces no
//! longer needed are closed.
//!
//! # Takeover burst
//!
//! When an IP starts being answered on an interface, the gratuitous ARP request and
//! reply (IPv4) or the unsolicited Neighbor Advertisement with Override (IPv6) are sent
//! at once, then again at 100 ms, 300 ms, 1 s and 2 s ([`TAKEOVER_BURST`]): the first
//! round moves every neighbour cache that hears it; the quick repeats cover a lost
//! frame, and the ones at 1 and 2 s cover Linux neighbours whose entry was updated
//! less than `locktime` (1 s by default) before and so ignored the first rounds, and
//! switches that learn the port late. MetalLB sends at once and then every 1.1 s for
//! 5 s; front-loading the repeats makes a missed first frame cost 100 ms, not 1.1 s.
//! Losing the IP cancels its remaining burst.
//!
//! # Announcing again
//!
//! [`L2Handle::announce_again`] restarts the burst of every IP answered now, for the
//! agent to call when its live set gains a member (a partition healed, a node's link
//! came back, an agent restarted). In those moments a neighbour may hold another
//! node's MAC for an IP this node owns, learnt from that node's takeover while the
//! views differed; that node stops answering once the views agree, but an entry
//! confirmed by traffic never asks again, so without a new announcement the
//! neighbour would keep sending to a node that no longer owns the IP (served by its
//! kernel with eTP=Cluster, dropped with eTP=Local and no local endpoint).
//!
//! # Release
//!
//! [`L2Handle::release_all`] (and dropping the handle) stops answering for every IP
//! and closes the sockets. Nothing is sent: the new owner announces itself with its
//! own gratuitous frames, which is what moves the neighbours' caches.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{AsyncSocket, SocketAddr};
use rtnetlink::{Handle, MulticastGroup};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::interfaces::{self, Links};
use super::metrics::L2Metrics;
use super::{FRAME_BUFFER, Interface, L2Error, answer, takeover_frames};
use crate::lb::decision::Interfaces;

/// The IPs this node owns in layer-2 mode, each with where its advertisements want
/// it announced: the announcer's input (`LocalAnnouncements::l2`).
pub type Wanted = BTreeMap<IpAddr, Interfaces>;

/// When the takeover frames are sent, from the moment an IP starts being answered on
/// an interface (see the module documentation).
pub const TAKEOVER_BURST: [Duration; 5] = [
    Duration::ZERO,
    Duration::from_millis(100),
    Duration::from_millis(300),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// How long link events are gathered before the links are read again: one change
/// (an interface going down with its addresses and routes) sends several.
const LINK_EVENT_QUIET: Duration = Duration::from_millis(20);

/// After a failed re-read of the links, when to try again.
const RESCAN_RETRY: Duration = Duration::from_millis(500);

/// After a failed receive on a responder socket (the link went down: `ENETDOWN`),
/// how long before reading again; the socket keeps working once the link is up.
const RECEIVE_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The netlink socket's receive buffer: a burst of link events (hundreds of pods
/// starting) must not overflow it, or a change would go unnoticed.
const NETLINK_RECEIVE_BUFFER: usize = 4 << 20;

/// How the announcer runs.
#[derive(Debug, Clone)]
pub struct L2Options {
    /// When the takeover frames are sent, relative to the takeover (default
    /// [`TAKEOVER_BURST`]). An empty schedule sends none.
    pub burst: Vec<Duration>,
    /// Where the announcer counts (shared with the metrics registry).
    pub metrics: Arc<L2Metrics>,
}

impl Default for L2Options {
    fn default() -> L2Options {
        L2Options {
            burst: TAKEOVER_BURST.to_vec(),
            metrics: Arc::default(),
        }
    }
}

/// What the announcer does now: per owned IP, the interfaces answering for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct L2Status {
    /// Every owned IP with the names of the interfaces answering for it; an empty
    /// list means no usable interface (the IP is not answered anywhere).
    pub ips: BTreeMap<IpAddr, Vec<String>>,
}

/// The running announcer. Dropping it releases every IP, as [`L2Handle::release_all`]
/// does, without waiting.
#[derive(Debug)]
pub struct L2Handle {
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<L2Status>,
    metrics: Arc<L2Metrics>,
    task: JoinHandle<()>,
}

impl L2Handle {
    /// The announcer's state, updated after each change (for `ipvs-proxy services`
    /// and tests).
    pub fn status(&self) -> watch::Receiver<L2Status> {
        self.status.clone()
    }

    /// The announcer's counters; [`L2Metrics::register`] puts them in a registry.
    pub fn metrics(&self) -> &Arc<L2Metrics> {
        &self.metrics
    }

    /// Sends the takeover burst again for every IP answered now, on every interface
    /// answering for it (a burst still running starts over). For the agent when its
    /// live set gains a member: see the module documentation. An ownership sent on the
    /// watch channel before this call is applied first.
    pub fn announce_again(&self) {
        let _ = self.commands.send(Command::AnnounceAgain);
    }

    /// Stops answering for every IP, closes the sockets and ends the announcer;
    /// returns once it has. For shutdown, after the node left the membership, so the
    /// new owner's gratuitous frames are what neighbours hear next.
    pub async fn release_all(self) {
        let (done, released) = oneshot::channel();
        if self.commands.send(Command::Release(done)).is_ok() {
            let _ = released.await;
        }
        let _ = self.task.await;
    }
}

/// Starts the layer-2 announcer on the current tokio runtime: it answers ARP and NDP
/// for exactly the IPs in `wanted`'s current value, on the interfaces the
/// [`interfaces`] rule picks, re-evaluated on every new value and on link, address
/// and default-route changes.
///
/// Needs CAP_NET_RAW (the packet sockets). Fails only
/// when the rtnetlink socket cannot be opened; an interface whose sockets cannot be
/// opened is logged and skipped (its IPs show without interfaces in
/// [`L2Handle::status`]).
///
/// Must be called from within a tokio runtime.
pub fn spawn_l2_announcer(
    options: L2Options,
    wanted: watch::Receiver<Wanted>,
) -> Result<L2Handle, L2Error> {
    let (mut connection, netlink, events) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
    ])
    .map_err(|e| L2Error::Netlink(format!("open the multicast socket: {e}")))?;
    if let Err(error) = connection
        .socket_mut()
        .socket_ref()
        .set_rx_buf_sz(NETLINK_RECEIVE_BUFFER)
    {
        tracing::warn!(%error, "could not enlarge the link event socket's receive buffer");
    }
    tokio::spawn(connection);

    let (commands, command_rx) = mpsc::unbounded_channel();
    let (status_tx, status) = watch::channel(L2Status::default());
    let metrics = Arc::clone(&options.metrics);
    let announcer = Announcer {
        burst: options.burst.into(),
        metrics: options.metrics,
        netlink,
        links: Links::default(),
        responders: BTreeMap::new(),
        assigned: BTreeMap::new(),
        bursts: HashMap::new(),
        status: status_tx,
    };
    let task = tokio::spawn(announcer.run(wanted, events, command_rx));
    Ok(L2Handle {
        commands,
        status,
        metrics,
        task,
    })
}

/// What the handle asks of the announcer's task.
#[derive(Debug)]
enum Command {
    /// Restart every answered IP's takeover burst.
    AnnounceAgain,
    /// Release everything, end, and say so.
    Release(oneshot::Sender<()>),
}

/// A task aborted when this is dropped.
#[derive(Debug)]
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The sockets of one interface and the IPs it answers for.
struct Responder {
    interface: Arc<Interface>,
    owned: Arc<RwLock<HashSet<IpAddr>>>,
    _task: Task,
}

struct Announcer {
    burst: Arc<[Duration]>,
    metrics: Arc<L2Metrics>,
    netlink: Handle,
    links: Links,
    /// By interface index.
    responders: BTreeMap<u32, Responder>,
    /// Per IP, the interfaces answering for it now.
    assigned: BTreeMap<IpAddr, BTreeSet<u32>>,
    /// The takeover bursts still running.
    bursts: HashMap<(IpAddr, u32), Task>,
    status: watch::Sender<L2Status>,
}

impl Announcer {
    async fn run(
        mut self,
        mut wanted: watch::Receiver<Wanted>,
        mut events: impl futures_util::Stream<Item = (NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>
        + Unpin,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) {
        let mut retry = if self.rescan().await {
            None
        } else {
            Some(Instant::now() + RESCAN_RETRY)
        };
        let mut current = wanted.borrow_and_update().clone();
        self.reconcile(&current);
        let mut wanted_open = true;
        loop {
            tokio::select! {
                // A release goes first: nothing else should be started once asked.
                biased;
                command = commands.recv() => match command {
                    Some(Command::AnnounceAgain) => {
                        // A new ownership sent just before the request is applied
                        // first: an IP given away must not be announced again.
                        if wanted_open && wanted.has_changed().unwrap_or(false) {
                            current = wanted.borrow_and_update().clone();
                            self.reconcile(&current);
                        }
                        self.announce_again();
                    }
                    Some(Command::Release(done)) => {
                        self.release_all();
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        self.release_all();
                        return;
                    }
                },
                changed = wanted.changed(), if wanted_open => {
                    if changed.is_ok() {
                        current = wanted.borrow_and_update().clone();
                        self.reconcile(&current);
                    } else {
                        // The agent dropped its sender: keep answering the last value
                        // until released.
                        wanted_open = false;
                    }
                }
                Some((message, _)) = events.next() => {
                    if !changes_the_choice(&message) {
                        continue;
                    }
                    tokio::time::sleep(LINK_EVENT_QUIET).await;
                    while let Some(Some(_)) = events.next().now_or_never() {}
                    if self.rescan().await {
                        retry = None;
                        self.reconcile(&current);
                    } else {
                        retry = Some(Instant::now() + RESCAN_RETRY);
                    }
                }
                () = sleep_until(retry), if retry.is_some() => {
                    if self.rescan().await {
                        retry = None;
                        self.reconcile(&current);
                    } else {
                        retry = Some(Instant::now() + RESCAN_RETRY);
                    }
                }
            }
        }
    }

    /// Reads links, addresses and default routes again; false when that failed (the
    /// previous view stays).
    async fn rescan(&mut self) -> bool {
        self.metrics.rescanned();
        match interfaces::dump(&self.netlink).await {
            Ok(links) => {
                self.links = links;
                true
            }
            Err(error) => {
                tracing::warn!(%error, "could not read the node's links; retrying");
                false
            }
        }
    }

    /// Makes the responders answer for exactly `wanted` on the chosen interfaces.
    fn reconcile(&mut self, wanted: &Wanted) {
        let desired: BTreeMap<IpAddr, BTreeSet<u32>> = wanted
            .iter()
            .map(|(ip, interfaces)| (*ip, self.links.choose(*ip, interfaces)))
            .collect();

        // Interfaces whose responder no longer matches the link (gone, renamed, new
        // MAC) or that nothing needs any more.
        let needed: BTreeSet<u32> = desired.values().flatten().copied().collect();
        let stale: BTreeSet<u32> = self
            .responders
            .iter()
            .filter(|(index, responder)| {
                !needed.contains(index)
                    || self.links.links.get(index).is_none_or(|link| {
                        link.name != responder.interface.name
                            || link.mac != Some(responder.interface.mac)
                    })
            })
            .map(|(index, _)| *index)
            .collect();

        // First stop answering what is no longer ours here.
        let assigned = self.assignments();
        for (ip, index) in assigned {
            let keep = !stale.contains(&index)
                && desired.get(&ip).is_some_and(|want| want.contains(&index));
            if !keep {
                self.unassign(ip, index);
            }
        }
        for index in &stale {
            if let Some(responder) = self.responders.remove(index) {
                tracing::info!(interface = %responder.interface.name, "stopped answering on the interface");
            }
        }

        // Then open what is missing and start answering.
        for index in &needed {
            if self.responders.contains_key(index) {
                continue;
            }
            let Some(link) = self.links.links.get(index) else {
                continue;
            };
            let Some(mac) = link.mac else { continue };
            match Interface::with_link(&link.name, *index, mac) {
                Ok(interface) => {
                    tracing::info!(interface = %link.name, %mac, "answering ARP and NDP on the interface");
                    self.responders
                        .insert(*index, self.start_responder(Arc::new(interface)));
                }
                Err(error) => {
                    tracing::warn!(interface = %link.name, %error, "cannot answer on the interface");
                }
            }
        }
        let now = Instant::now();
        for (ip, indices) in &desired {
            for index in indices {
                let answering = self.assigned.get(ip).is_some_and(|set| set.contains(index));
                if !answering && self.responders.contains_key(index) {
                    self.assign(*ip, *index, now);
                }
            }
        }
        self.publish(wanted);
    }

    fn start_responder(&self, interface: Arc<Interface>) -> Responder {
        let owned = Arc::new(RwLock::new(HashSet::new()));
        let task = tokio::spawn(serve(
            Arc::clone(&interface),
            Arc::clone(&owned),
            Arc::clone(&self.metrics),
        ));
        Responder {
            interface,
            owned,
            _task: Task(task),
        }
    }

    fn assign(&mut self, ip: IpAddr, index: u32, start: Instant) {
        let Some(responder) = self.responders.get(&index) else {
            return;
        };
        let interface = Arc::clone(&responder.interface);
        if let IpAddr::V6(v6) = ip
            && let Err(error) = interface.groups.join(v6)
        {
            // Unicast solicitations (reachability probes) are still answered, and the
            // unsolicited advertisements still go out.
            tracing::warn!(%ip, interface = %interface.name, %error, "could not join the solicited-node group");
        }
        write(&responder.owned).insert(ip);
        self.assigned.entry(ip).or_default().insert(index);
        self.metrics.acquired();
        tracing::info!(%ip, interface = %interface.name, "answering for the address");
        self.start_burst(interface, ip, index, start);
    }

    /// Starts (or starts over: replacing the entry aborts a running one) the takeover
    /// burst of `ip` on the interface `index`.
    fn start_burst(&mut self, interface: Arc<Interface>, ip: IpAddr, index: u32, start: Instant) {
        let burst = tokio::spawn(announce_burst(
            interface,
            ip,
            start,
            Arc::clone(&self.burst),
            Arc::clone(&self.metrics),
        ));
        self.bursts.insert((ip, index), Task(burst));
    }

    /// Restarts the takeover burst of every (IP, interface) answered now.
    fn announce_again(&mut self) {
        let now = Instant::now();
        for (ip, index) in self.assignments() {
            let Some(responder) = self.responders.get(&index) else {
                continue;
            };
            let interface = Arc::clone(&responder.interface);
            tracing::debug!(%ip, interface = %interface.name, "announcing the address again");
            self.start_burst(interface, ip, index, now);
        }
    }

    fn unassign(&mut self, ip: IpAddr, index: u32) {
        if let Some(set) = self.assigned.get_mut(&ip) {
            set.remove(&index);
            if set.is_empty() {
                self.assigned.remove(&ip);
            }
        }
        self.bursts.remove(&(ip, index));
        let Some(responder) = self.responders.get(&index) else {
            return;
        };
        write(&responder.owned).remove(&ip);
        if let IpAddr::V6(v6) = ip
            && let Err(error) = responder.interface.groups.leave(v6)
        {
            tracing::debug!(%ip, %error, "could not leave the solicited-node group");
        }
        self.metrics.released();
        tracing::info!(%ip, interface = %responder.interface.name, "stopped answering for the address");
    }

    /// Every (address, interface index) answered now, copied so that the caller can
    /// unassign while walking them.
    fn assignments(&self) -> Vec<(IpAddr, u32)> {
        self.assigned
            .iter()
            .flat_map(|(ip, indices)| indices.iter().map(move |index| (*ip, *index)))
            .collect()
    }

    fn release_all(&mut self) {
        let assigned = self.assignments();
        for (ip, index) in assigned {
            self.unassign(ip, index);
        }
        self.responders.clear();
        self.bursts.clear();
        self.publish(&Wanted::new());
    }

    fn publish(&self, wanted: &Wanted) {
        let ips: BTreeMap<IpAddr, Vec<String>> = wanted
            .keys()
            .map(|ip| {
                let names = self
                    .assigned
                    .get(ip)
                    .into_iter()
                    .flatten()
                    .filter_map(|index| self.responders.get(index))
                    .map(|responder| responder.interface.name.clone())
                    .collect();
                (*ip, names)
            })
            .collect();
        let unplaced = ips.values().filter(|names| names.is_empty()).count();
        {
            // Warned once when an address loses its last interface, not at every event.
            let before = self.status.borrow();
            for (ip, names) in &ips {
                if names.is_empty() && before.ips.get(ip).is_none_or(|was| !was.is_empty()) {
                    tracing::warn!(%ip, "no usable interface to answer for the address on");
                }
            }
        }
        self.metrics
            .set_state(ips.len(), unplaced, self.responders.len());
        self.status.send_if_modified(|status| {
            let changed = status.ips != ips;
            status.ips = ips;
            changed
        });
    }
}

/// Waits until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Whether a netlink event can change the interface choice: any link or address
/// change, and default routes.
fn changes_the_choice(message: &NetlinkMessage<RouteNetlinkMessage>) -> bool {
    let NetlinkPayload::InnerMessage(message) = &message.payload else {
        // An overrun (ENOBUFS) or another non-route message: re-read to be safe.
        return true;
    };
    match message {
        RouteNetlinkMessage::NewLink(_)
        | RouteNetlinkMessage::DelLink(_)
        | RouteNetlinkMessage::NewAddress(_)
        | RouteNetlinkMessage::DelAddress(_) => true,
        RouteNetlinkMessage::NewRoute(route) | RouteNetlinkMessage::DelRoute(route) => {
            interfaces::is_default_route(route)
        }
        _ => false,
    }
}

fn write(owned: &RwLock<HashSet<IpAddr>>) -> std::sync::RwLockWriteGuard<'_, HashSet<IpAddr>> {
    // The set is changed by single inserts and removes: consistent after a panic.
    owned
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read(owned: &RwLock<HashSet<IpAddr>>) -> std::sync::RwLockReadGuard<'_, HashSet<IpAddr>> {
    owned
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The responder of one interface: answers the requests for the IPs in `owned`,
/// counting them. Runs until aborted; socket errors are counted, never fatal (a
/// packet socket reports `ENETDOWN` once when its link goes down and works again
/// when it comes back).
async fn serve(
    interface: Arc<Interface>,
    owned: Arc<RwLock<HashSet<IpAddr>>>,
    metrics: Arc<L2Metrics>,
) {
    let mut arp_buffer = vec![0; FRAME_BUFFER];
    let mut ndp_buffer = vec![0; FRAME_BUFFER];
    loop {
        let (socket, received, buffer) = tokio::select! {
            len = interface.arp.recv(&mut arp_buffer) => (&interface.arp, len, &arp_buffer),
            len = interface.ndp.recv(&mut ndp_buffer) => (&interface.ndp, len, &ndp_buffer),
        };
        let len = match received {
            Ok(len) => len,
            Err(error) => {
                metrics.socket_error();
                tracing::debug!(interface = %interface.name, %error, "receive failed");
                tokio::time::sleep(RECEIVE_ERROR_PAUSE).await;
                continue;
            }
        };
        let asked = Cell::new(None);
        let owns = |ip| {
            let ours = read(&owned).contains(&ip);
            if ours {
                asked.set(Some(ip));
            }
            ours
        };
        match answer(&buffer[..len], interface.mac, owns) {
            Ok(Some(reply)) => {
                let Some(ip) = asked.get() else { continue };
                metrics.request_received(ip);
                match socket.send(&reply).await {
                    Ok(()) => metrics.response_sent(ip),
                    Err(error) => {
                        metrics.socket_error();
                        tracing::debug!(interface = %interface.name, %ip, %error, "reply failed");
                    }
                }
            }
            Ok(None) => {}
            Err(error) => {
                metrics.invalid_frame();
                tracing::debug!(interface = %interface.name, %error, "dropped an invalid frame");
            }
        }
    }
}

/// Sends the takeover frames of `ip` on `interface` at each offset of `schedule`
/// from `start`.
async fn announce_burst(
    interface: Arc<Interface>,
    ip: IpAddr,
    start: Instant,
    schedule: Arc<[Duration]>,
    metrics: Arc<L2Metrics>,
) {
    let frames = takeover_frames(interface.mac, ip);
    let socket = match ip {
        IpAddr::V4(_) => &interface.arp,
        IpAddr::V6(_) => &interface.ndp,
    };
    for offset in schedule.iter() {
        tokio::time::sleep_until(start + *offset).await;
        for frame in &frames {
            match socket.send(frame).await {
                Ok(()) => metrics.gratuitous_sent(ip),
                Err(error) => {
                    metrics.socket_error();
                    tracing::debug!(interface = %interface.name, %ip, %error, "gratuitous frame failed");
                }
            }
        }
    }
}
