//! The SWIM timings, chosen for detection well under a second on a LAN (pure).
//!
//! memberlist's LAN defaults (MetalLB's) probe every 1 s with a 500 ms timeout and wait
//! 4 s of suspicion up to 10 nodes: several seconds before a dead node leaves. A LAN
//! round trip is well under a millisecond, so we probe 5 times as often and suspect
//! for 400 ms:
//!
//! | setting | value | why |
//! | --- | --- | --- |
//! | probe period | 200 ms | each member pings one other (round robin over a shuffled list) every period |
//! | probe rtt | 60 ms | no ack by then → indirect pings through up to 3 others (a lost datagram is not a death) |
//! | suspicion | 400 ms | a suspected member refutes within it: the suspicion reaches it and its refutation comes back by gossip, through a third member when the direct path is cut (4 gossip hops) |
//! | gossip | 50 ms to 3 members | only while there are updates to spread (a suspicion, a refutation, a death, a join); each update goes out a bounded number of times, so a shorter period spreads it sooner without costing more |
//! | rejoin | 1 s | seeds (node addresses) not in the live set are sent a join request |
//!
//! Detection of a dead member: with `n` members each of the `n - 1` others probes it
//! within `n - 1` periods (round robin); at 3 nodes the first probe comes after 0–400 ms
//! (about 200 ms on average, two probers), fails at the end of that period (+200 ms),
//! then suspicion (+400 ms), then the Down update is gossiped (same instant to the
//! detector, ≤ 50 ms to the others): about 800 ms on average and at most ~1.2 s at 3
//! nodes for one detector, less the more nodes there are (more probers). The price: an
//! agent that cannot answer for about 0.6 s (a frozen process, a CPU-throttled pod) is
//! declared down, and rejoins (a new boot number) as soon as it runs again; the lab
//! saw the 200 ms gossip with 300 ms suspicion evict a live member behind a partial
//! partition under emulation, hence these two numbers.
//! [`Tuning::worst_case_detection`] computes the bound. A graceful leave is immediate:
//! the departure is sent to every live member.
//!
//! Bandwidth, steady state: per period each member sends one ping and answers on average
//! one ping (≈ 10 datagrams a second, whatever the cluster size, plus the odd roster
//! exchange), each ≈ 55 bytes of foca message + 53 bytes of sealing + 28 of IP/UDP.
//! [`Tuning::steady_bytes_per_second`] bounds it (≈ 2.8 kB/s for 60-byte messages); the
//! kernel lab measured 1.0–1.4 kB/s of UDP payload, 1.3–1.8 kB/s on the wire, 10–13
//! datagrams a second per node at 3 nodes (five runs) (memberlist's defaults: ~1 ping a second, but
//! TCP push-pull syncs every 30 s).

use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use super::seal::OVERHEAD;

/// The SWIM timings (see the module documentation for the defaults and their cost).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuning {
    /// How often each member pings one other.
    pub probe_period: Duration,
    /// How long a direct ping waits for its ack before indirect pings are sent.
    pub probe_rtt: Duration,
    /// How long a suspected member has to refute before it is declared down.
    pub suspicion: Duration,
    /// How often updates are gossiped (to 3 members) while there are any.
    pub gossip_period: Duration,
    /// How often seeds outside the live set are sent a join request.
    pub rejoin_period: Duration,
    /// How many members are expected: sets how many times an update is retransmitted
    /// (4 × log10(n + 1), as memberlist).
    pub expected_members: u32,
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning {
            probe_period: Duration::from_millis(200),
            probe_rtt: Duration::from_millis(60),
            suspicion: Duration::from_millis(400),
            gossip_period: Duration::from_millis(50),
            rejoin_period: Duration::from_secs(1),
            expected_members: 10,
        }
    }
}

/// Why a tuning cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TuningError {
    /// A duration is zero.
    #[error("membership {0} must not be zero")]
    Zero(&'static str),
    /// The probe rtt is not shorter than the probe period.
    #[error("membership probe rtt ({rtt:?}) must be shorter than the probe period ({period:?})")]
    RttNotBelowPeriod {
        /// The rtt.
        rtt: Duration,
        /// The period.
        period: Duration,
    },
}

impl Tuning {
    /// Checks the durations.
    pub fn validate(&self) -> Result<(), TuningError> {
        for (name, value) in [
            ("probe period", self.probe_period),
            ("probe rtt", self.probe_rtt),
            ("suspicion", self.suspicion),
            ("gossip period", self.gossip_period),
            ("rejoin period", self.rejoin_period),
        ] {
            if value.is_zero() {
                return Err(TuningError::Zero(name));
            }
        }
        if self.probe_rtt >= self.probe_period {
            return Err(TuningError::RttNotBelowPeriod {
                rtt: self.probe_rtt,
                period: self.probe_period,
            });
        }
        Ok(())
    }

    /// The foca configuration: memberlist's LAN shape with these timings, datagrams
    /// small enough to be sealed within 1400 bytes.
    pub fn foca_config(&self) -> foca::Config {
        let mut config = foca::Config::new_lan(
            std::num::NonZeroU32::new(self.expected_members.max(1)).expect("at least 1"),
        );
        config.probe_period = self.probe_period;
        config.probe_rtt = self.probe_rtt;
        config.suspect_to_down_after = self.suspicion;
        config.num_indirect_probes = NonZeroUsize::new(3).expect("3");
        config.max_packet_size = NonZeroUsize::new(1400 - OVERHEAD).expect("positive");
        config.notify_down_members = true;
        config.max_transmissions = config.max_transmissions.max(NonZeroU8::new(3).expect("3"));
        config.periodic_gossip = Some(foca::PeriodicParams {
            frequency: self.gossip_period,
            num_members: NonZeroUsize::new(3).expect("3"),
        });
        // Members held as down (a partition's other side) are asked to rejoin, so a
        // healed partition merges without waiting for the seeds' rejoin.
        config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: self.rejoin_period * 2,
            num_members: NonZeroUsize::new(2).expect("2"),
        });
        // And the live roster is exchanged now and then, for members no seed names.
        config.periodic_announce = Some(foca::PeriodicParams {
            frequency: Duration::from_secs(10),
            num_members: NonZeroUsize::new(1).expect("1"),
        });
        config
    }

    /// The longest a dead member stays in one detector's live set with `members`
    /// members (itself included), when no datagram is lost: the longest wait for that
    /// detector's probe of it (a round robin over the `members - 1` others, reshuffled
    /// each round, so up to `2 (members - 1) - 1` periods apart), the failed probe's
    /// period, the suspicion. Every other member probes too, so the usual is far less.
    pub fn worst_case_detection(&self, members: u32) -> Duration {
        let others = members.saturating_sub(1).max(1);
        let wait = self.probe_period * (2 * others - 1);
        wait + self.probe_period + self.suspicion
    }

    /// Steady-state bytes a second sent by one member, IP and UDP headers included,
    /// for a foca message of `message_bytes`: one ping and on average one ack a period.
    pub fn steady_bytes_per_second(&self, message_bytes: usize) -> u64 {
        let datagram = (message_bytes + OVERHEAD + 28) as u64;
        let per_period = 2 * datagram;
        per_period * 1_000 / self.probe_period.as_millis().max(1) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_reach_foca() {
        let tuning = Tuning::default();
        tuning.validate().unwrap();
        let config = tuning.foca_config();
        assert_eq!(config.probe_period, Duration::from_millis(200));
        assert_eq!(config.probe_rtt, Duration::from_millis(60));
        assert_eq!(config.suspect_to_down_after, Duration::from_millis(400));
        assert_eq!(config.max_packet_size.get() + OVERHEAD, 1400);
        assert!(config.notify_down_members);
    }

    #[test]
    fn default_detection_bound_is_about_a_second_at_3_and_grows_slowly() {
        let tuning = Tuning::default();
        assert_eq!(tuning.worst_case_detection(3), Duration::from_millis(1_200));
        assert_eq!(tuning.worst_case_detection(2), Duration::from_millis(800));
        // Round robin from one detector; with more members more probers find it sooner,
        // so this is the bound of one, not the usual.
        assert_eq!(
            tuning.worst_case_detection(10),
            Duration::from_millis(4_000)
        );
        let memberlist = Tuning {
            probe_period: Duration::from_secs(1),
            probe_rtt: Duration::from_millis(500),
            suspicion: Duration::from_secs(4),
            ..Tuning::default()
        };
        assert!(memberlist.worst_case_detection(3) >= Duration::from_secs(6));
    }

    #[test]
    fn bandwidth_estimate_is_a_few_kilobytes() {
        let rate = Tuning::default().steady_bytes_per_second(60);
        assert_eq!(rate, 2 * (60 + 53 + 28) * 5);
        assert!(rate < 4_000, "{rate}");
    }

    #[test]
    fn zero_and_inverted_timings_are_refused() {
        let zero = Tuning {
            suspicion: Duration::ZERO,
            ..Tuning::default()
        };
        assert_eq!(zero.validate(), Err(TuningError::Zero("suspicion")));
        let inverted = Tuning {
            probe_rtt: Duration::from_millis(200),
            ..Tuning::default()
        };
        assert!(matches!(
            inverted.validate(),
            Err(TuningError::RttNotBelowPeriod { .. })
        ));
    }
}
