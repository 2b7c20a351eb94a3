//! Counters of the membership, read by the metrics endpoint (the agent wires them into
//! Prometheus). Plain atomics: the membership task writes, anyone reads.

use std::sync::atomic::{AtomicU64, Ordering};

use super::seal::Refused;

/// What the membership has done since it started.
#[derive(Debug, Default)]
pub struct MembershipMetrics {
    /// Live members now, this node included.
    pub members: AtomicU64,
    /// Datagrams sent.
    pub datagrams_sent: AtomicU64,
    /// Bytes sent (UDP payload: sealed datagrams).
    pub bytes_sent: AtomicU64,
    /// Datagrams that could not be sent (no route, link down).
    pub send_errors: AtomicU64,
    /// Datagrams received and accepted.
    pub datagrams_received: AtomicU64,
    /// Bytes received in accepted datagrams.
    pub bytes_received: AtomicU64,
    /// Datagrams refused: not ours (too short, other magic or version).
    pub refused_malformed: AtomicU64,
    /// Datagrams refused: no key authenticates them (a stranger, a wrong key, tampering).
    pub refused_unauthenticated: AtomicU64,
    /// Datagrams refused: sent outside the replay window (a replay, or a skewed clock).
    pub refused_stale: AtomicU64,
    /// Datagrams refused: a nonce seen already (a replay).
    pub refused_replayed: AtomicU64,
    /// Authenticated datagrams foca could not use (a peer of another version).
    pub undecodable: AtomicU64,
    /// Members that joined (or came back) as seen by this node.
    pub member_ups: AtomicU64,
    /// Members that left or were declared down as seen by this node.
    pub member_downs: AtomicU64,
    /// Times this node's timers came due late enough to show it had not run (a CPU
    /// starved or paused process): their verdicts were postponed.
    pub stalls: AtomicU64,
    /// Times the cluster declared this node down and it rejoined (a new boot).
    pub rejoins: AtomicU64,
}

impl MembershipMetrics {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// All refused datagrams, whatever the reason.
    pub fn refused(&self) -> u64 {
        [
            &self.refused_malformed,
            &self.refused_unauthenticated,
            &self.refused_stale,
            &self.refused_replayed,
        ]
        .into_iter()
        .map(Self::get)
        .sum()
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn count_refused(&self, why: Refused) {
        let counter = match why {
            Refused::Malformed => &self.refused_malformed,
            Refused::Unauthenticated => &self.refused_unauthenticated,
            Refused::Stale => &self.refused_stale,
            Refused::Replayed => &self.refused_replayed,
        };
        Self::add(counter, 1);
    }
}
