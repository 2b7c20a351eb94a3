//! One BFD session in asynchronous mode (RFC 5880 §6), sans-IO: packets and the current
//! time go in, packets to send and state changes come out, and [`Session::next_deadline`]
//! tells the caller when to call [`Session::poll_timers`] next.
//!
//! Not implemented, by design: Demand mode of our own (a peer's D bit is honoured), the
//! Echo function (we advertise a zero `Required Min Echo RX Interval`, so a peer never
//! sends us echo packets) and authentication (a packet with the A bit is discarded).

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::Error;
use crate::packet::{Diagnostic, Flags, Packet, State};

/// The slowest a session may advertise while it is not Up (RFC 5880 §6.8.3): one second.
pub const SLOW_TX: Duration = Duration::from_secs(1);

/// MetalLB's `BFDProfile` defaults (and FRR's): 300 ms both ways, multiplier 3.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(300);
/// The default detect multiplier of a `BFDProfile`.
pub const DEFAULT_DETECT_MULT: u8 = 3;

/// A session's local parameters: the `BFDProfile` fields that concern one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// How often we would like to send (`transmitInterval`); advertised as
    /// `Desired Min TX Interval`, and at least [`SLOW_TX`] while not Up.
    pub desired_min_tx: Duration,
    /// How often we accept packets at most (`receiveInterval`); zero asks the peer not
    /// to send periodically (and then we detect nothing).
    pub required_min_rx: Duration,
    /// Missed packets before the peer is declared down (`detectMultiplier`).
    pub detect_mult: u8,
    /// Passive role (`passiveMode`): send nothing until the peer is heard.
    pub passive: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            desired_min_tx: DEFAULT_INTERVAL,
            required_min_rx: DEFAULT_INTERVAL,
            detect_mult: DEFAULT_DETECT_MULT,
            passive: false,
        }
    }
}

impl Config {
    /// A configuration from a MetalLB `BFDProfile`'s fields (milliseconds; `None` takes
    /// the default). The echo fields have no counterpart: this implementation has no
    /// Echo function, and the caller is expected to warn when a profile asks for it.
    pub fn from_profile(
        receive_interval_ms: Option<u32>,
        transmit_interval_ms: Option<u32>,
        detect_multiplier: Option<u8>,
        passive_mode: bool,
    ) -> Config {
        let ms = |v: Option<u32>| v.map_or(DEFAULT_INTERVAL, |ms| Duration::from_millis(ms.into()));
        Config {
            desired_min_tx: ms(transmit_interval_ms),
            required_min_rx: ms(receive_interval_ms),
            detect_mult: detect_multiplier.unwrap_or(DEFAULT_DETECT_MULT),
            passive: passive_mode,
        }
    }

    fn validate(&self) -> Result<(), Error> {
        if self.detect_mult == 0 {
            return Err(Error::InvalidConfig("detect multiplier must be at least 1"));
        }
        if self.desired_min_tx.is_zero() {
            return Err(Error::InvalidConfig(
                "desired min tx interval must not be zero",
            ));
        }
        if micros(self.desired_min_tx).is_none() || micros(self.required_min_rx).is_none() {
            return Err(Error::InvalidConfig(
                "intervals must fit 32 bits of microseconds (about 71 minutes)",
            ));
        }
        Ok(())
    }
}

fn micros(d: Duration) -> Option<u32> {
    u32::try_from(d.as_micros()).ok()
}

fn us(v: u32) -> Duration {
    Duration::from_micros(v.into())
}

/// What the caller must do after feeding the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this packet to the peer (UDP to port 3784, TTL 255).
    Send(Packet),
    /// The session changed state; `diag` is the local diagnostic that now explains it.
    StateChanged {
        /// The previous state.
        from: State,
        /// The new state.
        to: State,
        /// The reason, as our packets now carry it.
        diag: Diagnostic,
    },
}

/// One asynchronous-mode BFD session (the state variables of RFC 5880 §6.8.1).
#[derive(Debug, Clone)]
pub struct Session {
    config: Config,
    local_discr: u32,
    state: State,
    remote_state: State,
    remote_discr: u32,
    local_diag: Diagnostic,
    /// `Desired Min TX` / `Required Min RX` as our packets carry them (µs).
    adv_tx: u32,
    adv_rx: u32,
    /// The values timing uses: during a poll sequence they lag the advertised ones in
    /// the safe direction (§6.8.3: a slower tx, or a faster rx, waits for the Final).
    eff_tx: u32,
    eff_rx: u32,
    remote_min_rx: u32,
    /// Zero until the peer is heard.
    remote_desired_tx: u32,
    remote_detect_mult: u8,
    remote_demand: bool,
    poll_active: bool,
    next_tx: Option<Instant>,
    last_rx: Option<Instant>,
    rng: SmallRng,
}

impl Session {
    /// A session in state Down with our (nonzero, unique per peer, preferably random)
    /// discriminator. An active session is due to send at `now`; a passive one waits for
    /// the peer. Jitter is seeded from the discriminator; see [`Session::with_rng_seed`].
    pub fn new(
        config: Config,
        local_discriminator: NonZeroU32,
        now: Instant,
    ) -> Result<Session, Error> {
        config.validate()?;
        let local_discr = local_discriminator.get();
        let adv_tx = micros(config.desired_min_tx.max(SLOW_TX)).unwrap_or(u32::MAX);
        let adv_rx = micros(config.required_min_rx).unwrap_or(u32::MAX);
        Ok(Session {
            config,
            local_discr,
            state: State::Down,
            remote_state: State::Down,
            remote_discr: 0,
            local_diag: Diagnostic::NoDiagnostic,
            adv_tx,
            adv_rx,
            eff_tx: adv_tx,
            eff_rx: adv_rx,
            // §6.8.1: RemoteMinRxInterval starts at 1 µs.
            remote_min_rx: 1,
            remote_desired_tx: 0,
            remote_detect_mult: 0,
            remote_demand: false,
            poll_active: false,
            next_tx: (!config.passive).then_some(now),
            last_rx: None,
            rng: SmallRng::seed_from_u64(u64::from(local_discr)),
        })
    }

    /// Replaces the jitter generator's seed, so a test can replay exact send times.
    pub fn with_rng_seed(mut self, seed: u64) -> Session {
        self.rng = SmallRng::seed_from_u64(seed);
        self
    }

    /// The local state (`bfd.SessionState`).
    pub fn state(&self) -> State {
        self.state
    }

    /// The peer's state as last heard (`bfd.RemoteSessionState`).
    pub fn remote_state(&self) -> State {
        self.remote_state
    }

    /// Our diagnostic (`bfd.LocalDiag`).
    pub fn local_diagnostic(&self) -> Diagnostic {
        self.local_diag
    }

    /// Our discriminator (`bfd.LocalDiscr`).
    pub fn local_discriminator(&self) -> u32 {
        self.local_discr
    }

    /// The peer's discriminator (`bfd.RemoteDiscr`), zero when not heard within a
    /// detection time.
    pub fn remote_discriminator(&self) -> u32 {
        self.remote_discr
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether we are waiting for a Final to our Poll.
    pub fn poll_in_progress(&self) -> bool {
        self.poll_active
    }

    /// The agreed transmit interval before jitter: the larger of our desired min tx and
    /// the peer's required min rx (§6.8.7).
    pub fn transmit_interval(&self) -> Duration {
        us(self.eff_tx.max(self.remote_min_rx))
    }

    /// The detection time (§6.8.4): the peer's detect multiplier times the larger of our
    /// required min rx and the peer's desired min tx; `None` before the peer is heard or
    /// when we asked not to receive periodic packets.
    pub fn detection_time(&self) -> Option<Duration> {
        if self.remote_desired_tx == 0 || self.eff_rx == 0 {
            return None;
        }
        Some(us(self.eff_rx.max(self.remote_desired_tx)) * u32::from(self.remote_detect_mult))
    }

    /// When the detection timer fires, if it runs.
    pub fn detection_deadline(&self) -> Option<Instant> {
        Some(self.last_rx? + self.detection_time()?)
    }

    /// The earliest instant at which [`Session::poll_timers`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.next_tx, self.detection_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Processes a received control packet (already through [`Packet::decode`]) per
    /// RFC 5880 §6.8.6. An error means the packet was discarded and nothing changed.
    pub fn receive(&mut self, packet: &Packet, now: Instant) -> Result<Vec<Action>, Error> {
        if packet.your_discriminator != 0 && packet.your_discriminator != self.local_discr {
            return Err(Error::DiscriminatorMismatch {
                local: self.local_discr,
                got: packet.your_discriminator,
            });
        }
        if let Some(auth) = &packet.authentication {
            return Err(Error::AuthenticationNotSupported(auth.auth_type().code()));
        }
        let old_interval = self.transmit_interval();
        self.remote_discr = packet.my_discriminator;
        self.remote_state = packet.state;
        self.remote_demand = packet.demand();
        self.remote_min_rx = packet.required_min_rx_us;
        self.remote_desired_tx = packet.desired_min_tx_us;
        self.remote_detect_mult = packet.detect_mult;
        if packet.final_bit() && self.poll_active {
            self.poll_active = false;
            self.eff_tx = self.adv_tx;
            self.eff_rx = self.adv_rx;
        }
        let mut actions = Vec::new();
        if self.state == State::AdminDown {
            // §6.8.6: an AdminDown session discards the packet after noting the peer.
            self.retime(old_interval, now);
            return Ok(actions);
        }
        self.last_rx = Some(now);
        let next = match (self.state, packet.state) {
            (State::Down, State::AdminDown) => None,
            (_, State::AdminDown) => Some((State::Down, Diagnostic::NeighborSignaledSessionDown)),
            (State::Down, State::Down) => Some((State::Init, Diagnostic::NoDiagnostic)),
            (State::Down, State::Init) | (State::Init, State::Init | State::Up) => {
                Some((State::Up, Diagnostic::NoDiagnostic))
            }
            (State::Up, State::Down) => {
                Some((State::Down, Diagnostic::NeighborSignaledSessionDown))
            }
            _ => None,
        };
        if let Some((to, diag)) = next {
            self.change_state(to, diag, &mut actions);
        }
        if packet.poll() {
            // §6.8.6: answer a Poll at once, whatever the timers, the state or the role.
            // A packet cannot carry both bits, so any Poll of ours waits for the next one.
            actions.push(Action::Send(self.packet(Flags::FINAL)));
            self.next_tx = self.may_transmit().then(|| now + self.jittered());
        } else if next.is_some() {
            self.send_now(now, &mut actions);
        } else {
            self.retime(old_interval, now);
        }
        Ok(actions)
    }

    /// Runs the timers due at `now`: the detection timer (a silent peer takes an Init or
    /// Up session Down with diagnostic 1, and is forgotten) and the periodic transmission.
    pub fn poll_timers(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.detection_deadline().is_some_and(|d| now >= d) {
            self.last_rx = None;
            // §6.8.1: RemoteDiscr is zero once nothing was heard for a detection time;
            // the peer's other variables go back to their initial values with it.
            self.remote_discr = 0;
            self.remote_state = State::Down;
            self.remote_min_rx = 1;
            self.remote_desired_tx = 0;
            self.remote_demand = false;
            if matches!(self.state, State::Init | State::Up) {
                self.change_state(
                    State::Down,
                    Diagnostic::ControlDetectionTimeExpired,
                    &mut actions,
                );
                self.send_now(now, &mut actions);
            } else {
                self.next_tx = self.next_tx.filter(|_| self.may_transmit());
            }
        }
        if self.next_tx.is_some_and(|t| now >= t) {
            if self.may_transmit() {
                actions.push(Action::Send(self.packet(self.periodic_flags())));
                self.next_tx = Some(now + self.jittered());
            } else {
                self.next_tx = None;
            }
        }
        actions
    }

    /// Takes the session administratively down (§6.8.16): diagnostic 7, and the peer is
    /// told at once. AdminDown packets go on at the slow rate, so the peer keeps hearing
    /// why the session is down rather than timing it out.
    pub fn admin_down(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.state != State::AdminDown {
            self.change_state(
                State::AdminDown,
                Diagnostic::AdministrativelyDown,
                &mut actions,
            );
            self.last_rx = None;
            self.send_now(now, &mut actions);
        }
        actions
    }

    /// Brings an AdminDown session back to Down, from where the handshake starts again.
    pub fn admin_up(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.state == State::AdminDown {
            self.change_state(State::Down, Diagnostic::NoDiagnostic, &mut actions);
            self.send_now(now, &mut actions);
        }
        actions
    }

    /// Applies new local parameters. While Up, a change of either interval starts a poll
    /// sequence (§6.8.3): a slower transmit rate or a faster receive rate only takes effect
    /// for timing once the peer answers with Final.
    pub fn reconfigure(&mut self, config: Config, now: Instant) -> Result<Vec<Action>, Error> {
        config.validate()?;
        let old_interval = self.transmit_interval();
        let old = self.config;
        self.config = config;
        let changed = self.readvertise();
        let mut actions = Vec::new();
        if changed || old.detect_mult != config.detect_mult {
            // §6.8.7: a packet whose contents changed SHOULD go out at once.
            self.send_now(now, &mut actions);
        } else {
            self.retime(old_interval, now);
        }
        Ok(actions)
    }

    /// Recomputes the advertised intervals from the config and state; returns whether
    /// they changed (and starts a poll sequence if Up).
    fn readvertise(&mut self) -> bool {
        let tx = if self.state == State::Up {
            self.config.desired_min_tx
        } else {
            self.config.desired_min_tx.max(SLOW_TX)
        };
        let tx = micros(tx).unwrap_or(u32::MAX);
        let rx = micros(self.config.required_min_rx).unwrap_or(u32::MAX);
        if (tx, rx) == (self.adv_tx, self.adv_rx) {
            return false;
        }
        self.adv_tx = tx;
        self.adv_rx = rx;
        if self.state == State::Up {
            self.eff_tx = self.eff_tx.min(tx);
            self.eff_rx = self.eff_rx.max(rx);
            self.poll_active = true;
        } else {
            self.eff_tx = tx;
            self.eff_rx = rx;
            self.poll_active = false;
        }
        true
    }

    fn change_state(&mut self, to: State, diag: Diagnostic, actions: &mut Vec<Action>) {
        let from = self.state;
        self.state = to;
        self.local_diag = diag;
        actions.push(Action::StateChanged { from, to, diag });
        if from == State::Up || to == State::Up {
            // Up uses the configured rates, anything else at most one packet a second.
            self.poll_active = false;
            self.readvertise();
            if to != State::Up {
                self.eff_tx = self.adv_tx;
                self.eff_rx = self.adv_rx;
            }
        }
    }

    /// The flags of a packet sent on our own initiative: Poll while a poll sequence
    /// waits for its Final (RFC 5880 §6.5), none otherwise.
    fn periodic_flags(&self) -> Flags {
        if self.poll_active {
            Flags::POLL
        } else {
            Flags::empty()
        }
    }

    /// Sends the current packet out of turn (a change the peer should hear now) and
    /// restarts the periodic timer from here.
    fn send_now(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self.passive_silent() {
            self.next_tx = None;
            return;
        }
        actions.push(Action::Send(self.packet(self.periodic_flags())));
        self.next_tx = self.may_transmit().then(|| now + self.jittered());
    }

    /// Keeps the periodic timer consistent after the peer's parameters changed: stopped
    /// when we may not send, started when we now may, brought forward when the interval
    /// shrank.
    fn retime(&mut self, old_interval: Duration, now: Instant) {
        if !self.may_transmit() {
            self.next_tx = None;
            return;
        }
        let interval = self.transmit_interval();
        match self.next_tx {
            None => self.next_tx = Some(now),
            Some(t) if interval < old_interval => {
                let sooner = now + self.jittered();
                self.next_tx = Some(t.min(sooner));
            }
            Some(_) => {}
        }
    }

    fn passive_silent(&self) -> bool {
        self.config.passive && self.remote_discr == 0
    }

    /// §6.8.7: whether periodic transmission runs.
    fn may_transmit(&self) -> bool {
        !self.passive_silent()
            && self.remote_min_rx != 0
            && !(self.remote_demand && self.state == State::Up && self.remote_state == State::Up)
    }

    /// The transmit interval less 0-25 % (0-10 % more with a multiplier of 1, so one
    /// late packet cannot exceed the detection time), §6.8.7.
    fn jittered(&mut self) -> Duration {
        let interval = self.transmit_interval().as_micros() as u64;
        let high = if self.config.detect_mult == 1 {
            interval * 9 / 10
        } else {
            interval
        };
        let low = interval * 3 / 4;
        Duration::from_micros(self.rng.random_range(low..=high.max(low)))
    }

    fn packet(&self, flags: Flags) -> Packet {
        Packet {
            diagnostic: self.local_diag,
            state: self.state,
            flags,
            detect_mult: self.config.detect_mult,
            my_discriminator: self.local_discr,
            your_discriminator: self.remote_discr,
            desired_min_tx_us: self.adv_tx,
            required_min_rx_us: self.adv_rx,
            required_min_echo_rx_us: 0,
            authentication: None,
        }
    }
}
