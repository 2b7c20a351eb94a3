//! Two sessions exchanging packets in memory on a virtual clock: every packet goes
//! through its bytes and arrives after a fixed one-way delay, timers run exactly at
//! `next_deadline`, and either direction can be cut.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use bfd_proto::{Action, Config, Diagnostic, Error, Flags, Packet, Session, State};

const DELAY: Duration = Duration::from_millis(1);

/// Asserts that every gap between packets lies within `lo..=hi`: the jittered range
/// of a transmit interval (RFC 5880 §6.8.7: 75 % to 100 %, 90 % with a multiplier of 1).
#[track_caller]
fn assert_gaps_within(gaps: &[Duration], lo: Duration, hi: Duration) {
    assert!(gaps.iter().all(|g| *g >= lo && *g <= hi), "{gaps:?}");
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

struct Sim {
    t0: Instant,
    now: Instant,
    s: [Session; 2],
    /// (arrival, to, bytes)
    in_flight: Vec<(Instant, usize, Vec<u8>)>,
    /// Whether packets sent by side i reach the other.
    link: [bool; 2],
    sent: [Vec<(Instant, Packet)>; 2],
    received: [Vec<(Instant, Packet)>; 2],
    changes: [Vec<(Instant, State, State, Diagnostic)>; 2],
}

impl Sim {
    fn new(a: Config, b: Config) -> Sim {
        let t0 = Instant::now();
        let session = |c, d| {
            Session::new(c, NonZeroU32::new(d).unwrap(), t0)
                .unwrap()
                .with_rng_seed(u64::from(d) * 7919)
        };
        Sim {
            t0,
            now: t0,
            s: [session(a, 0x1111), session(b, 0x2222)],
            in_flight: Vec::new(),
            link: [true, true],
            sent: [Vec::new(), Vec::new()],
            received: [Vec::new(), Vec::new()],
            changes: [Vec::new(), Vec::new()],
        }
    }

    fn apply(&mut self, side: usize, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send(p) => {
                    if self.link[side] {
                        self.in_flight
                            .push((self.now + DELAY, 1 - side, p.encode()));
                    }
                    self.sent[side].push((self.now, p));
                }
                Action::StateChanged { from, to, diag } => {
                    self.changes[side].push((self.now, from, to, diag))
                }
            }
        }
    }

    /// Runs every event up to and including `until`.
    fn run_until(&mut self, until: Instant) {
        loop {
            let delivery = self.in_flight.iter().map(|f| f.0).min();
            let timers = self.s.iter().filter_map(Session::next_deadline).min();
            let next = match (delivery, timers) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if next > until {
                break;
            }
            assert!(next >= self.now, "time went backwards");
            self.now = next;
            // Deliveries first, then timers, each in a fixed order.
            if let Some(i) = self.in_flight.iter().position(|f| f.0 == next) {
                let (_, to, bytes) = self.in_flight.remove(i);
                let packet = Packet::decode(&bytes).unwrap();
                self.received[to].push((next, packet.clone()));
                let actions = self.s[to].receive(&packet, next).unwrap();
                self.apply(to, actions);
                continue;
            }
            for side in 0..2 {
                if self.s[side].next_deadline().is_some_and(|d| d <= next) {
                    let actions = self.s[side].poll_timers(next);
                    self.apply(side, actions);
                }
            }
        }
        self.now = until;
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    fn states(&self) -> (State, State) {
        (self.s[0].state(), self.s[1].state())
    }

    /// Gaps between consecutive packets side sent in [from, to).
    fn gaps(&self, side: usize, from: Instant, to: Instant) -> Vec<Duration> {
        let times: Vec<Instant> = self.sent[side]
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| *t >= from && *t < to)
            .collect();
        times.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

fn up_pair(a: Config, b: Config) -> Sim {
    let mut sim = Sim::new(a, b);
    sim.run_for(ms(100));
    assert_eq!(sim.states(), (State::Up, State::Up));
    // Let both poll sequences (slow rate → configured rate) finish.
    sim.run_for(Duration::from_secs(3));
    assert!(!sim.s[0].poll_in_progress() && !sim.s[1].poll_in_progress());
    sim
}

#[test]
fn two_active_sessions_come_up_with_a_three_way_handshake() {
    let mut sim = Sim::new(Config::default(), Config::default());
    sim.run_for(ms(100));
    assert_eq!(sim.states(), (State::Up, State::Up));
    for side in 0..2 {
        let path: Vec<(State, State)> = sim.changes[side].iter().map(|c| (c.1, c.2)).collect();
        // Both sent Down at once: each moves to Init on the other's Down, then Up on Init.
        assert_eq!(path, [(State::Down, State::Init), (State::Init, State::Up)]);
        assert_eq!(sim.changes[side][1].0 - sim.t0, 2 * DELAY);
    }
    // Every packet before Up advertises the slow rate (RFC 5880 §6.8.3).
    for (_, p) in sim.sent[0].iter().filter(|(_, p)| p.state != State::Up) {
        assert_eq!(p.desired_min_tx_us, 1_000_000);
        assert_eq!(p.required_min_rx_us, 300_000);
    }
    assert_eq!(sim.s[0].remote_discriminator(), 0x2222);
    assert_eq!(sim.s[1].remote_discriminator(), 0x1111);

    // Steady state: 300 ms with 75-100 % jitter, no P, detection time 3 × 300 ms.
    sim.run_for(Duration::from_secs(10));
    let from = sim.t0 + Duration::from_secs(4);
    for side in 0..2 {
        let gaps = sim.gaps(side, from, sim.now);
        assert!(gaps.len() >= 20, "{gaps:?}");
        assert_gaps_within(&gaps, ms(225), ms(300));
        assert!(gaps.iter().any(|g| *g < ms(270)), "no jitter: {gaps:?}");
        assert!(
            sim.sent[side]
                .iter()
                .filter(|(t, _)| *t >= from)
                .all(|(_, p)| p.flags.is_empty())
        );
        assert_eq!(sim.s[side].detection_time(), Some(ms(900)));
    }
    assert_eq!(sim.states(), (State::Up, State::Up));
}

#[test]
fn a_silent_peer_is_detected_after_the_detection_time() {
    let mut sim = up_pair(Config::default(), Config::default());
    sim.link[1] = false;
    let cut = sim.now;
    sim.run_for(Duration::from_secs(3));
    let last_heard = sim.received[0]
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| *t <= cut + DELAY)
        .max()
        .unwrap();
    let down = sim.changes[0].last().unwrap();
    assert_eq!(
        (down.1, down.2, down.3),
        (
            State::Up,
            State::Down,
            Diagnostic::ControlDetectionTimeExpired
        )
    );
    // Exactly detect mult × agreed interval after the last packet.
    assert_eq!(down.0 - last_heard, ms(900));
    assert_eq!(
        sim.s[0].remote_discriminator(),
        0,
        "forgotten after a detection time"
    );
    // A's Down reaches B at once, which goes down because A said so.
    // (then, hearing A's Down packets while its own cannot get through, Init.)
    let b_down = sim.changes[1].iter().find(|c| c.0 > cut).unwrap();
    assert_eq!(
        sim.changes[1].last().map(|c| (c.1, c.2)),
        Some((State::Down, State::Init))
    );
    assert_eq!(
        (b_down.2, b_down.3),
        (State::Down, Diagnostic::NeighborSignaledSessionDown)
    );
    assert_eq!(b_down.0 - down.0, DELAY);
    // A's packets now: Down, diag 1, no Your Discriminator, at the slow rate.
    let after: Vec<&(Instant, Packet)> = sim.sent[0].iter().filter(|(t, _)| *t >= down.0).collect();
    for (_, p) in &after {
        assert_eq!(p.state, State::Down);
        assert_eq!(p.diagnostic, Diagnostic::ControlDetectionTimeExpired);
        assert_eq!(p.your_discriminator, 0);
        assert_eq!(p.desired_min_tx_us, 1_000_000);
    }
    let gaps = sim.gaps(0, down.0, sim.now);
    assert!(!gaps.is_empty());
    assert_gaps_within(&gaps, ms(750), ms(1000));

    // The link comes back: they meet again.
    sim.link[1] = true;
    sim.run_for(Duration::from_secs(5));
    assert_eq!(sim.states(), (State::Up, State::Up));
}

#[test]
fn a_poll_sequence_changes_the_intervals_safely() {
    let mut sim = up_pair(Config::default(), Config::default());
    // A slows down to 1 s both ways while Up: a poll sequence.
    let slow = Config {
        desired_min_tx: Duration::from_secs(1),
        required_min_rx: Duration::from_secs(1),
        ..Config::default()
    };
    let actions = sim.s[0].reconfigure(slow, sim.now).unwrap();
    let start = sim.now;
    assert!(sim.s[0].poll_in_progress());
    // The new values go out at once, with P.
    match &actions[..] {
        [Action::Send(p)] => {
            assert_eq!(p.flags, Flags::POLL);
            assert_eq!(
                (p.desired_min_tx_us, p.required_min_rx_us),
                (1_000_000, 1_000_000)
            );
        }
        other => panic!("{other:?}"),
    }
    // Until the Final, A keeps its old 300 ms pace and its old 300 ms receive rate.
    assert_eq!(sim.s[0].transmit_interval(), ms(300));
    sim.apply(0, actions);
    sim.run_for(ms(5));
    // B answered with F at once (1 ms each way), which ended the poll.
    let fin = sim.sent[1]
        .iter()
        .find(|(t, p)| *t >= start && p.final_bit())
        .unwrap();
    assert_eq!(fin.0 - start, DELAY);
    assert!(!fin.1.poll());
    assert!(!sim.s[0].poll_in_progress());
    assert_eq!(sim.s[0].transmit_interval(), Duration::from_secs(1));
    // B now sends at A's 1 s receive rate and gives A 3 × 1 s.
    assert_eq!(sim.s[1].transmit_interval(), Duration::from_secs(1));
    assert_eq!(sim.s[1].detection_time(), Some(Duration::from_secs(3)));
    sim.run_for(Duration::from_secs(10));
    for side in 0..2 {
        let gaps = sim.gaps(side, start + Duration::from_secs(2), sim.now);
        assert_gaps_within(&gaps, ms(750), ms(1000));
    }
    assert_eq!(sim.states(), (State::Up, State::Up));
}

#[test]
fn periodic_packets_carry_poll_until_the_final_arrives() {
    let mut sim = up_pair(Config::default(), Config::default());
    sim.link[1] = false; // B's Final cannot reach A
    let faster = Config {
        desired_min_tx: ms(200),
        ..Config::default()
    };
    let start = sim.now;
    let actions = sim.s[0].reconfigure(faster, start).unwrap();
    sim.apply(0, actions);
    sim.run_for(ms(800));
    let polls: Vec<&Packet> = sim.sent[0]
        .iter()
        .filter(|(t, _)| *t >= start)
        .map(|(_, p)| p)
        .collect();
    assert!(polls.len() >= 3, "{polls:?}");
    assert!(polls.iter().all(|p| p.poll()), "{polls:?}");
    // A faster transmit rate takes effect at once (only a slower one waits).
    assert_eq!(
        sim.s[0].transmit_interval(),
        ms(300),
        "B still requires 300 ms"
    );
    sim.link[1] = true;
    sim.run_for(ms(400));
    assert!(!sim.s[0].poll_in_progress());
    let last = &sim.sent[0].last().unwrap().1;
    assert!(!last.poll());
}

#[test]
fn a_faster_receive_rate_waits_for_the_final_before_shortening_detection() {
    let slow_rx = Config {
        required_min_rx: Duration::from_secs(1),
        ..Config::default()
    };
    let mut sim = up_pair(slow_rx, Config::default());
    assert_eq!(sim.s[0].detection_time(), Some(Duration::from_secs(3)));
    let start = sim.now;
    sim.link[1] = false;
    let actions = sim.s[0].reconfigure(Config::default(), start).unwrap();
    sim.apply(0, actions);
    // B may still be sending every second: A must not time it out at 900 ms meanwhile.
    assert_eq!(sim.s[0].detection_time(), Some(Duration::from_secs(3)));
    sim.link[1] = true;
    sim.run_for(ms(1200));
    assert!(!sim.s[0].poll_in_progress());
    assert_eq!(sim.s[0].detection_time(), Some(ms(900)));
    assert_eq!(sim.states(), (State::Up, State::Up));
}

#[test]
fn a_passive_session_waits_to_hear_its_peer() {
    let passive = Config {
        passive: true,
        ..Config::default()
    };
    let mut both = Sim::new(passive, passive);
    both.run_for(Duration::from_secs(10));
    assert!(both.sent[0].is_empty() && both.sent[1].is_empty());
    assert_eq!(both.states(), (State::Down, State::Down));
    assert_eq!(both.s[0].next_deadline(), None);

    let mut sim = Sim::new(passive, Config::default());
    sim.link[1] = false;
    sim.run_for(Duration::from_secs(3));
    assert!(sim.sent[0].is_empty(), "passive spoke first");
    sim.link[1] = true;
    sim.run_for(ms(1100));
    let heard = sim.received[0].first().unwrap().0;
    assert!(sim.sent[0].first().unwrap().0 >= heard);
    assert_eq!(sim.states(), (State::Up, State::Up));

    // Silence from the active side: the passive one goes down, forgets it, and stops.
    sim.run_for(Duration::from_secs(3));
    sim.link[1] = false;
    let cut = sim.now;
    sim.run_for(Duration::from_secs(5));
    assert_eq!(sim.s[0].state(), State::Down);
    assert_eq!(sim.s[0].remote_discriminator(), 0);
    let after = sim.sent[0]
        .iter()
        .filter(|(t, _)| *t > cut + Duration::from_secs(1))
        .count();
    assert_eq!(
        after, 0,
        "passive kept sending to a peer it no longer hears"
    );
}

#[test]
fn admin_down_takes_the_peer_down_and_admin_up_brings_it_back() {
    let mut sim = up_pair(Config::default(), Config::default());
    let start = sim.now;
    let actions = sim.s[0].admin_down(start);
    assert_eq!(
        actions[0],
        Action::StateChanged {
            from: State::Up,
            to: State::AdminDown,
            diag: Diagnostic::AdministrativelyDown
        }
    );
    sim.apply(0, actions);
    sim.run_for(Duration::from_secs(10));
    assert_eq!(sim.states(), (State::AdminDown, State::Down));
    let b = sim.changes[1].last().unwrap();
    assert_eq!(
        (b.2, b.3),
        (State::Down, Diagnostic::NeighborSignaledSessionDown)
    );
    assert_eq!(b.0 - start, DELAY);
    // B never starts a handshake with an AdminDown peer; A keeps telling it why, slowly.
    assert_eq!(sim.changes[1].len(), 3);
    let from_a: Vec<&Packet> = sim.sent[0]
        .iter()
        .filter(|(t, _)| *t >= start)
        .map(|(_, p)| p)
        .collect();
    assert!(from_a.len() >= 9);
    assert!(
        from_a.iter().all(
            |p| p.state == State::AdminDown && p.diagnostic == Diagnostic::AdministrativelyDown
        )
    );
    let gaps = sim.gaps(0, start, sim.now);
    assert!(gaps.iter().all(|g| *g >= ms(750)), "{gaps:?}");
    assert!(sim.s[0].admin_down(sim.now).is_empty(), "already down");

    let up_at = sim.now;
    let actions = sim.s[0].admin_up(up_at);
    sim.apply(0, actions);
    sim.run_for(ms(100));
    assert_eq!(sim.states(), (State::Up, State::Up));
    assert!(sim.s[0].admin_up(sim.now).is_empty(), "already enabled");
}

#[test]
fn detect_mult_one_narrows_the_jitter() {
    let one = Config {
        detect_mult: 1,
        ..Config::default()
    };
    let mut sim = up_pair(one, one);
    let from = sim.now;
    sim.run_for(Duration::from_secs(10));
    let gaps = sim.gaps(0, from, sim.now);
    assert!(gaps.len() >= 30);
    assert_gaps_within(&gaps, ms(225), ms(270));
    assert_eq!(sim.states(), (State::Up, State::Up));
}

#[test]
fn the_jitter_seed_replays_exactly() {
    let times = |seed: u64| {
        let t0 = Instant::now();
        let mut s = Session::new(Config::default(), NonZeroU32::new(9).unwrap(), t0)
            .unwrap()
            .with_rng_seed(seed);
        let mut out = Vec::new();
        for _ in 0..10 {
            let d = s.next_deadline().unwrap();
            s.poll_timers(d);
            out.push(d - t0);
        }
        out
    };
    assert_eq!(times(1), times(1));
    assert_ne!(times(1), times(2));
    // Alone and Down: one packet at once, then the slow rate, 750-1000 ms apart.
    let t = times(3);
    assert_eq!(t[0], Duration::ZERO);
    assert!(
        t.windows(2)
            .all(|w| w[1] - w[0] >= ms(750) && w[1] - w[0] <= ms(1000)),
        "{t:?}"
    );
}

#[test]
fn a_peer_requiring_no_packets_gets_none() {
    let mut sim = up_pair(
        Config::default(),
        Config {
            required_min_rx: Duration::ZERO,
            ..Config::default()
        },
    );
    let from = sim.now;
    sim.run_for(Duration::from_secs(3));
    assert!(sim.sent[0].iter().all(|(t, _)| *t < from));
    // B detects nothing (it asked for nothing), A still hears B.
    assert_eq!(sim.s[1].detection_time(), None);
    assert_eq!(sim.states(), (State::Up, State::Up));
}

#[test]
fn packets_that_are_not_for_us_change_nothing() {
    let t0 = Instant::now();
    let mut s = Session::new(Config::default(), NonZeroU32::new(5).unwrap(), t0).unwrap();
    let mut p = Packet::decode(
        &s.poll_timers(t0)
            .iter()
            .find_map(|a| match a {
                Action::Send(p) => Some(p.encode()),
                Action::StateChanged { .. } => None,
            })
            .unwrap(),
    )
    .unwrap();
    p.my_discriminator = 77;
    p.your_discriminator = 6;
    p.state = State::Init;
    assert_eq!(
        s.receive(&p, t0),
        Err(Error::DiscriminatorMismatch { local: 5, got: 6 })
    );
    p.your_discriminator = 5;
    p.authentication =
        bfd_proto::Authentication::new(bfd_proto::AuthType::SimplePassword, b"\x01secret".to_vec());
    assert_eq!(s.receive(&p, t0), Err(Error::AuthenticationNotSupported(1)));
    assert_eq!((s.state(), s.remote_discriminator()), (State::Down, 0));
    p.authentication = None;
    s.receive(&p, t0).unwrap();
    assert_eq!((s.state(), s.remote_discriminator()), (State::Up, 77));
}

#[test]
fn invalid_configurations_are_refused() {
    let t0 = Instant::now();
    let d = NonZeroU32::new(1).unwrap();
    for bad in [
        Config {
            detect_mult: 0,
            ..Config::default()
        },
        Config {
            desired_min_tx: Duration::ZERO,
            ..Config::default()
        },
        Config {
            required_min_rx: Duration::from_secs(5000),
            ..Config::default()
        },
    ] {
        assert!(
            matches!(Session::new(bad, d, t0), Err(Error::InvalidConfig(_))),
            "{bad:?}"
        );
    }
    let profile = Config::from_profile(Some(100), None, Some(5), true);
    assert_eq!(profile.required_min_rx, ms(100));
    assert_eq!(profile.desired_min_tx, ms(300));
    assert_eq!((profile.detect_mult, profile.passive), (5, true));
}

#[test]
fn intervals_and_multipliers_are_negotiated_per_direction() {
    let a = Config {
        desired_min_tx: ms(100),
        required_min_rx: ms(500),
        detect_mult: 5,
        passive: false,
    };
    let b = Config {
        desired_min_tx: ms(200),
        required_min_rx: ms(50),
        detect_mult: 2,
        passive: false,
    };
    let mut sim = up_pair(a, b);
    // Each sends at the larger of its own desired tx and the other's required rx...
    assert_eq!(sim.s[0].transmit_interval(), ms(100));
    assert_eq!(sim.s[1].transmit_interval(), ms(500));
    // ...and detects with the other's multiplier times the larger of its own required
    // rx and the other's desired tx.
    assert_eq!(sim.s[0].detection_time(), Some(ms(2 * 500)));
    assert_eq!(sim.s[1].detection_time(), Some(ms(5 * 100)));
    let from = sim.now;
    sim.run_for(Duration::from_secs(10));
    let a_gaps = sim.gaps(0, from, sim.now);
    let b_gaps = sim.gaps(1, from, sim.now);
    assert_gaps_within(&a_gaps, ms(75), ms(100));
    assert_gaps_within(&b_gaps, ms(375), ms(500));
    assert_eq!(sim.states(), (State::Up, State::Up));
}
