//! The tasks: one receive task per address family, one task per session.
//!
//! The receive task checks GTSM and parses each datagram, then hands the packet to its
//! session's task through a short queue: by `Your Discriminator` when the peer set it,
//! else (the peer does not know ours yet) by the pair of addresses. A session's task is
//! the only owner of its [`bfd_proto::Session`]: it feeds it packets and commands, sleeps
//! until [`bfd_proto::Session::next_deadline`], sends what the session asks to send and
//! publishes its state changes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bfd_proto::packet::TTL;
use bfd_proto::{Action, Config, Packet, Session};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};

use super::network::{RxSocket, TxSocket};
use super::{SessionKey, SessionState};

/// Packets queued per session before the receive task drops more: a session that far
/// behind has lost its timing anyway, and the queue bounds what a flood can pin.
pub(super) const QUEUE: usize = 64;

/// The largest datagram read whole: a BFD control packet is at most 255 bytes, and a
/// longer datagram is discarded as truncated.
const RECV_BUF: usize = 512;

/// A command from the manager to one session's task.
#[derive(Debug)]
pub(super) enum SessionCmd {
    /// Apply a changed profile; the reply says whether it was valid.
    Reconfigure(Config, oneshot::Sender<Result<(), bfd_proto::Error>>),
    /// Send AdminDown and end; the reply comes once the first AdminDown is sent.
    Remove(oneshot::Sender<()>),
}

/// A packet for a session, with its arrival time.
#[derive(Debug)]
pub(super) struct Inbound {
    packet: Packet,
    at: Instant,
}

/// What the manager and the receive tasks know of a session.
#[derive(Debug)]
pub(super) struct Entry {
    pub key: SessionKey,
    pub packets: mpsc::Sender<Inbound>,
    pub cmds: mpsc::UnboundedSender<SessionCmd>,
    pub state: watch::Receiver<SessionState>,
}

/// The demultiplexing table: every session by its discriminator, and the discriminator
/// by addresses.
#[derive(Debug, Default)]
pub(super) struct Table {
    pub by_discriminator: HashMap<u32, Entry>,
    pub by_key: HashMap<SessionKey, u32>,
}

/// The receive path's counters (see [`super::Stats`] for each one's meaning).
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub received: AtomicU64,
    pub bad_ttl: AtomicU64,
    pub malformed: AtomicU64,
    pub no_session: AtomicU64,
    pub rejected: AtomicU64,
    pub queue_full: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What the manager shares with its tasks. The table's lock is held for map operations
/// only, never across an await.
#[derive(Debug, Default)]
pub(super) struct Shared {
    table: Mutex<Table>,
    pub counters: Counters,
}

impl Shared {
    /// The table, even after a panic while it was held: each change to it is one map
    /// operation, never left half done, so a poisoned lock is no reason to stop BFD.
    pub(super) fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the entry of the session `key`, if there is one.
    pub(super) fn with_entry<R>(&self, key: SessionKey, f: impl FnOnce(&Entry) -> R) -> Option<R> {
        let table = self.table();
        let discriminator = table.by_key.get(&key)?;
        table.by_discriminator.get(discriminator).map(f)
    }

    /// Forgets a session: its packets are no longer routed to it.
    pub(super) fn remove(&self, key: SessionKey) {
        let mut table = self.table();
        if let Some(discriminator) = table.by_key.remove(&key) {
            table.by_discriminator.remove(&discriminator);
        }
    }

    /// Forgets every session (their tasks end as their command channels close).
    pub(super) fn clear(&self) {
        let mut table = self.table();
        table.by_key.clear();
        table.by_discriminator.clear();
    }

    /// The queue of the session a packet is for, if any.
    fn route(
        &self,
        packet: &Packet,
        from: std::net::IpAddr,
        to: Option<std::net::IpAddr>,
    ) -> Option<mpsc::Sender<Inbound>> {
        let table = self.table();
        let discriminator = if packet.your_discriminator != 0 {
            packet.your_discriminator
        } else {
            *table.by_key.get(&SessionKey {
                peer: from,
                local: to?,
            })?
        };
        let entry = table.by_discriminator.get(&discriminator)?;
        // A known discriminator from the wrong addresses is someone else's packet.
        (entry.key.peer == from && to.is_none_or(|to| to == entry.key.local))
            .then(|| entry.packets.clone())
    }
}

/// The receive task of one family's port 3784 socket.
pub(super) async fn receive(socket: RxSocket, shared: Arc<Shared>) {
    let mut buf = [0u8; RECV_BUF];
    loop {
        let datagram = match socket.recv(&mut buf).await {
            Ok(d) => d,
            Err(e) => {
                // Transient (ICMP errors queued on the socket, ENOBUFS): go on, without
                // spinning if the error repeats.
                tracing::warn!(error = %e, "BFD receive failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let at = Instant::now();
        let c = &shared.counters;
        bump(&c.received);
        if datagram.ttl != Some(TTL) {
            // GTSM (RFC 5881 §5): not sent by a neighbour on this link.
            bump(&c.bad_ttl);
            tracing::debug!(from = %datagram.from, ttl = ?datagram.ttl, "BFD packet with a TTL below 255 discarded");
            continue;
        }
        let packet = if datagram.truncated {
            Err(bfd_proto::Error::Truncated {
                needed: RECV_BUF + 1,
                available: RECV_BUF,
            })
        } else {
            Packet::decode(&buf[..datagram.len])
        };
        let packet = match packet {
            Ok(p) => p,
            Err(e) => {
                bump(&c.malformed);
                tracing::debug!(from = %datagram.from, error = %e, "BFD packet discarded");
                continue;
            }
        };
        let Some(queue) = shared.route(&packet, datagram.from.ip(), datagram.to) else {
            bump(&c.no_session);
            tracing::debug!(from = %datagram.from, to = ?datagram.to, ifindex = ?datagram.ifindex, your_discriminator = packet.your_discriminator, "BFD packet for no session");
            continue;
        };
        match queue.try_send(Inbound { packet, at }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => bump(&c.queue_full),
            Err(TrySendError::Closed(_)) => bump(&c.no_session),
        }
    }
}

/// One session's task: runs until removed (AdminDown to the peer) or until the manager
/// is dropped (silently).
pub(super) async fn session(
    key: SessionKey,
    mut session: Session,
    tx: TxSocket,
    mut packets: mpsc::Receiver<Inbound>,
    mut cmds: mpsc::UnboundedReceiver<SessionCmd>,
    state: watch::Sender<SessionState>,
    shared: Arc<Shared>,
) {
    let out = Output {
        key,
        tx: &tx,
        state: &state,
    };
    loop {
        let deadline = session.next_deadline();
        let actions = tokio::select! {
            Some(inbound) = packets.recv() => {
                match session.receive(&inbound.packet, inbound.at) {
                    Ok(actions) => actions,
                    Err(e) => {
                        bump(&shared.counters.rejected);
                        tracing::debug!(session = %key, error = %e, "BFD packet discarded");
                        continue;
                    }
                }
            }
            () = sleep_until(deadline) => session.poll_timers(Instant::now()),
            cmd = cmds.recv() => match cmd {
                Some(SessionCmd::Reconfigure(config, reply)) => {
                    let (result, actions) = match session.reconfigure(config, Instant::now()) {
                        Ok(actions) => (Ok(()), actions),
                        Err(e) => (Err(e), Vec::new()),
                    };
                    let _ = reply.send(result);
                    actions
                }
                Some(SessionCmd::Remove(reply)) => {
                    let actions = session.admin_down(Instant::now());
                    out.apply(&session, actions).await;
                    let _ = reply.send(());
                    linger(&mut session, &out, &shared).await;
                    tracing::debug!(session = %key, "BFD session removed");
                    return;
                }
                // The manager is gone: stop without a word; the peer times us out.
                None => return,
            },
        };
        out.apply(&session, actions).await;
    }
}

/// After the first AdminDown, the session's own timer repeats it (at the slow rate) for
/// about a detection time, so that one lost packet does not leave the peer to time the
/// session out instead. A new session for the same addresses ends this at once: the
/// peer would take our old AdminDown for news about the new session.
async fn linger(session: &mut Session, out: &Output<'_>, shared: &Shared) {
    let until =
        Instant::now() + session.transmit_interval() * u32::from(session.config().detect_mult);
    while let Some(deadline) = session.next_deadline().filter(|d| *d < until) {
        sleep_until(Some(deadline)).await;
        if shared.with_entry(out.key, |_| ()).is_some() {
            return;
        }
        let actions = session.poll_timers(Instant::now());
        out.apply(session, actions).await;
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// Where a session's actions go: its socket and its watchers.
struct Output<'a> {
    key: SessionKey,
    tx: &'a TxSocket,
    state: &'a watch::Sender<SessionState>,
}

impl Output<'_> {
    async fn apply(&self, session: &Session, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send(packet) => {
                    if let Err(e) = self.tx.send(&packet.encode()).await {
                        // Unreachable peer, interface down: the session's timers decide
                        // what that means; nothing to do here but say so.
                        tracing::debug!(session = %self.key, error = %e, "BFD send failed");
                    }
                }
                Action::StateChanged { from, to, diag } => {
                    tracing::info!(session = %self.key, ?from, ?to, ?diag, "BFD session state");
                    self.state.send_replace(SessionState {
                        state: to,
                        diagnostic: diag,
                        remote_state: session.remote_state(),
                    });
                }
            }
        }
    }
}
