//! Native BFD for the BGP announcer: single-hop asynchronous-mode sessions (RFC 5880,
//! RFC 5881) over IPv4 and IPv6, driven by tokio tasks around the sans-IO
//! [`bfd_proto::Session`].
//!
//! The BGP side registers a session per peer with [`BfdManager::add_session`] and watches
//! the [`SessionState`] it gets back: Down after Up means the path to the peer is gone
//! and the BGP session should be torn down at once.
//!
//! - `network`: the sockets (port 3784 per family in, one source port per session out,
//!   TTL 255 both ways: GTSM).
//! - `tasks`: one receive task per family demultiplexes packets (by `Your
//!   Discriminator`, or by addresses while the peer does not know ours yet) to one task
//!   per session, which owns the session, its timers and its transmitting socket.
//!
//! Sessions end with an AdminDown to the peer when removed ([`BfdManager::remove_session`],
//! [`BfdManager::shutdown`]); dropping the manager stops them silently, and the peer
//! then times them out.

mod error;
mod network;
mod tasks;

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

pub use bfd_proto::{Config, Diagnostic, State};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

pub use error::Error;
use network::{Family, RxSocket, TxSocket};
use tasks::{Entry, SessionCmd, Shared};

/// A session's identity: the peer's address and ours (the BGP session's endpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    /// The peer's address.
    pub peer: IpAddr,
    /// Our address on the link to the peer: the source of our packets and the
    /// destination of the peer's.
    pub local: IpAddr,
}

impl fmt::Display for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (local {})", self.peer, self.local)
    }
}

/// What a session's watchers see: its state, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionState {
    /// The local session state; Init is the handshake on its way to Up.
    pub state: State,
    /// Why the session last changed state (`Control Detection Time Expired` when the
    /// peer went silent, `Neighbor Signaled Session Down` when it said so, ...).
    pub diagnostic: Diagnostic,
    /// The peer's state as last heard: AdminDown when the peer was shut down on purpose.
    pub remote_state: State,
}

impl SessionState {
    /// Whether the session is Up.
    pub fn is_up(&self) -> bool {
        self.state == State::Up
    }

    /// Whether the session is down because the peer was administratively shut down.
    /// RFC 5882 §3.2: that is no forwarding failure, and a client may keep its routing
    /// session (the BGP side decides).
    pub fn peer_admin_down(&self) -> bool {
        self.state == State::Down && self.remote_state == State::AdminDown
    }
}

impl Default for SessionState {
    fn default() -> SessionState {
        SessionState {
            state: State::Down,
            diagnostic: Diagnostic::NoDiagnostic,
            remote_state: State::Down,
        }
    }
}

/// Counters of the receive path, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams read from the port 3784 sockets.
    pub received: u64,
    /// Discarded in user space for a TTL / hop limit other than 255 (GTSM: they crossed
    /// a router). The kernel's socket filter drops those first (counted in the socket's
    /// `drops`, `/proc/net/udp`), so this stays zero unless the filter let one through.
    pub bad_ttl: u64,
    /// Discarded as no BFD control packet (RFC 5880 §6.8.6 checks of the packet alone).
    pub malformed: u64,
    /// Discarded for matching no session (unknown discriminator or addresses).
    pub no_session: u64,
    /// Discarded by their session (e.g. authentication, which is not supported).
    pub rejected: u64,
    /// Dropped because a session's queue was full (it is not keeping up).
    pub queue_full: u64,
}

/// The BFD sessions of one agent: registers and removes sessions and owns the receive
/// sockets. Must be used within a tokio runtime; dropping it stops every task without
/// telling the peers.
#[derive(Debug)]
pub struct BfdManager {
    shared: Arc<Shared>,
    receivers: Mutex<HashMap<Family, JoinHandle<()>>>,
}

impl Default for BfdManager {
    fn default() -> BfdManager {
        BfdManager::new()
    }
}

impl BfdManager {
    /// A manager without sessions; the receive socket of a family is bound with its
    /// first session, so an IPv4-only node never opens an IPv6 socket.
    pub fn new() -> BfdManager {
        BfdManager {
            shared: Arc::new(Shared::default()),
            receivers: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a session with `config` (from the peer's `BFDProfile`, see
    /// [`Config::from_profile`]); `interface` ties its packets to one interface
    /// (`SO_BINDTODEVICE`) and is required for an IPv6 link-local pair. Returns the
    /// session's state, Down until the three-way handshake with the peer completes.
    pub fn add_session(
        &self,
        key: SessionKey,
        config: Config,
        interface: Option<&str>,
    ) -> Result<watch::Receiver<SessionState>, Error> {
        check_addresses(key, interface)?;
        let scope = match interface {
            Some(name) => {
                nix::net::if_::if_nametoindex(name).map_err(|source| Error::Interface {
                    name: name.to_string(),
                    source,
                })?
            }
            None => 0,
        };
        self.ensure_receiver(Family::of(key.local))?;
        let mut table = self.shared.table();
        if table.by_key.contains_key(&key) {
            return Err(Error::Duplicate(key));
        }
        let discriminator = loop {
            // RFC 5880 §6.8.1: unique per session, and random is recommended so a
            // restarted agent is not mistaken for its previous incarnation.
            match NonZeroU32::new(random_u32()) {
                Some(d) if !table.by_discriminator.contains_key(&d.get()) => break d,
                _ => {}
            }
        };
        let session = bfd_proto::Session::new(config, discriminator, Instant::now())
            .map_err(|e| Error::Config(key, e))?;
        let first_port = u16::try_from(random_u32() >> 16).unwrap_or(0);
        let tx = TxSocket::bind(key.local, key.peer, scope, interface, first_port)?;
        tracing::debug!(session = %key, source = %tx.local(), discriminator, "BFD session added");
        let (packets_tx, packets_rx) = mpsc::channel(tasks::QUEUE);
        let (cmds_tx, cmds_rx) = mpsc::unbounded_channel();
        let (state_tx, state_rx) = watch::channel(SessionState::default());
        let entry = Entry {
            key,
            packets: packets_tx,
            cmds: cmds_tx,
            state: state_rx.clone(),
        };
        table.by_key.insert(key, discriminator.get());
        table.by_discriminator.insert(discriminator.get(), entry);
        drop(table);
        tokio::spawn(tasks::session(
            key,
            session,
            tx,
            packets_rx,
            cmds_rx,
            state_tx,
            self.shared.clone(),
        ));
        Ok(state_rx)
    }

    /// Another watcher of an existing session's state.
    pub fn subscribe(&self, key: SessionKey) -> Option<watch::Receiver<SessionState>> {
        self.shared.with_entry(key, |e| e.state.clone())
    }

    /// The sessions and their states, by key.
    pub fn sessions(&self) -> Vec<(SessionKey, SessionState)> {
        let table = self.shared.table();
        let mut all: Vec<_> = table
            .by_discriminator
            .values()
            .map(|e| (e.key, *e.state.borrow()))
            .collect();
        all.sort_by_key(|(k, _)| *k);
        all
    }

    /// Applies a changed profile to a session; while Up, new intervals take effect
    /// through a poll sequence with the peer (RFC 5880 §6.8.3).
    pub async fn reconfigure(&self, key: SessionKey, config: Config) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        self.command(key, SessionCmd::Reconfigure(config, reply))?;
        answer
            .await
            .map_err(|_| Error::SessionGone(key))?
            .map_err(|e| Error::Config(key, e))
    }

    /// Ends a session: the peer is told AdminDown (diagnostic 7, a few times, so one lost
    /// packet does not leave it to time out) and the session's watchers see AdminDown.
    /// Returns once the first AdminDown is sent.
    pub async fn remove_session(&self, key: SessionKey) -> Result<(), Error> {
        let (reply, answer) = oneshot::channel();
        self.command(key, SessionCmd::Remove(reply))?;
        self.shared.remove(key);
        answer.await.map_err(|_| Error::SessionGone(key))
    }

    /// Removes every session (AdminDown to all peers at once) and closes the receive
    /// sockets: the end of the manager's life (the agent stopping without graceful
    /// restart).
    pub async fn shutdown(&self) {
        let removals = self
            .sessions()
            .into_iter()
            .map(|(key, _)| self.remove_session(key));
        futures_util::future::join_all(removals).await;
        for (_, task) in self
            .receivers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
        {
            task.abort();
        }
    }

    /// The receive path's counters so far.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            received: get(&c.received),
            bad_ttl: get(&c.bad_ttl),
            malformed: get(&c.malformed),
            no_session: get(&c.no_session),
            rejected: get(&c.rejected),
            queue_full: get(&c.queue_full),
        }
    }

    fn command(&self, key: SessionKey, cmd: SessionCmd) -> Result<(), Error> {
        self.shared
            .with_entry(key, |e| e.cmds.send(cmd).is_ok())
            .ok_or(Error::UnknownSession(key))?
            .then_some(())
            .ok_or(Error::SessionGone(key))
    }

    fn ensure_receiver(&self, family: Family) -> Result<(), Error> {
        let mut receivers = self
            .receivers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if receivers.get(&family).is_some_and(|t| !t.is_finished()) {
            return Ok(());
        }
        let socket = RxSocket::bind(family)?;
        receivers.insert(
            family,
            tokio::spawn(tasks::receive(socket, self.shared.clone())),
        );
        Ok(())
    }
}

impl Drop for BfdManager {
    fn drop(&mut self) {
        for task in self
            .receivers
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            task.abort();
        }
        // The session tasks end when their command channels close.
        self.shared.clear();
    }
}

fn check_addresses(key: SessionKey, interface: Option<&str>) -> Result<(), Error> {
    let bad = |why| Err(Error::Addresses(key, why));
    if key.peer.is_ipv4() != key.local.is_ipv4() {
        return bad("peer and local address are of different families");
    }
    for ip in [key.peer, key.local] {
        if ip.is_unspecified() || ip.is_multicast() {
            return bad("unspecified or multicast address");
        }
    }
    if let (IpAddr::V6(local), None) = (key.local, interface) {
        if local.is_unicast_link_local() {
            return bad("an IPv6 link-local session needs its interface");
        }
    }
    Ok(())
}

/// 32 random bits from the standard library's randomly keyed hasher (keys come from the
/// OS), for discriminators and source ports: no generator crate needed for so little.
fn random_u32() -> u32 {
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() >> 16) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(peer: &str, local: &str) -> SessionKey {
        SessionKey {
            peer: peer.parse().unwrap(),
            local: local.parse().unwrap(),
        }
    }

    #[test]
    fn addresses_are_checked_before_any_socket() {
        let ok = |k, i| check_addresses(k, i).is_ok();
        assert!(ok(key("10.0.0.1", "10.0.0.2"), None));
        assert!(ok(key("fd00::1", "fd00::2"), None));
        assert!(ok(key("fe80::1", "fe80::2"), Some("eth0")));
        assert!(!ok(key("10.0.0.1", "fd00::2"), None), "mixed families");
        assert!(!ok(key("0.0.0.0", "10.0.0.2"), None), "unspecified peer");
        assert!(!ok(key("10.0.0.1", "0.0.0.0"), None), "unspecified local");
        assert!(!ok(key("224.0.0.5", "10.0.0.2"), None), "multicast peer");
        assert!(
            !ok(key("fe80::1", "fe80::2"), None),
            "link-local without interface"
        );
    }

    #[test]
    fn peer_admin_down_only_when_down_because_of_it() {
        let mut s = SessionState::default();
        assert!(!s.is_up() && !s.peer_admin_down());
        s.remote_state = State::AdminDown;
        assert!(s.peer_admin_down());
        s.state = State::AdminDown;
        assert!(!s.peer_admin_down(), "our own AdminDown");
    }

    #[test]
    fn discriminators_vary() {
        let drawn: std::collections::HashSet<u32> = (0..64).map(|_| random_u32()).collect();
        assert!(drawn.len() > 60, "{drawn:?}");
    }
}
