//! The BGP finite state machine of RFC 4271 §8, sans-IO.
//!
//! A [`Session`] is one peer's state machine for one TCP connection at a time. The
//! caller feeds it [`Event`]s (with the current time) and carries out the [`Action`]s it
//! returns: open or close the connection, send a message (encoded with
//! [`Session::caps`]), arm a timer and report [`Event::TimerExpired`] when its deadline
//! passes, report the session up or down. Nothing here sleeps, reads or writes, so whole
//! sessions run in unit tests with a fake clock.
//!
//! Collision detection (RFC 4271 §6.8) needs two connections to the same peer: the
//! driver keeps a second, accepted connection aside until the peer's OPEN arrives on
//! it, asks [`collision`] which to keep, and either closes the new one (Cease, connection
//! collision resolution) or feeds [`Event::CollisionLost`] to the session and then
//! [`Event::TcpAccepted`] and the OPEN already read, so the session goes on over the
//! peer's connection.

mod negotiate;

pub use negotiate::{Negotiated, PeerAs, check_open};

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorAction};
use crate::packet::notification::{CeaseError, ErrorCode, Notification};
use crate::packet::open::{Capability, GracefulRestart, GracefulRestartFamily, Open};
use crate::packet::{Family, Message, SessionCaps};

/// The hold time proposed while waiting for the peer's OPEN (RFC 4271 §8.2.2 suggests
/// 4 minutes).
pub const LARGE_HOLD_TIME: Duration = Duration::from_secs(240);

/// RFC 4271 session states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not trying.
    Idle,
    /// Waiting for our outgoing TCP connection.
    Connect,
    /// Waiting for the peer to connect (or for the connect-retry timer).
    Active,
    /// Our OPEN is sent; waiting for the peer's.
    OpenSent,
    /// OPENs exchanged; waiting for the peer's KEEPALIVE.
    OpenConfirm,
    /// Up: UPDATEs flow.
    Established,
}

/// The timers the state machine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerKind {
    /// Time between connection attempts; in Idle after a failure, the delay before the
    /// next automatic start.
    ConnectRetry,
    /// The peer is declared dead when nothing arrives before it.
    Hold,
    /// When to send the next KEEPALIVE.
    Keepalive,
}

/// Inputs of the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Start: connect (or, with [`Config::passive`], wait for the peer to connect), and
    /// keep trying after failures.
    ManualStart,
    /// Start without connecting (RFC 4271 event 4, ManualStart with passive TCP
    /// establishment): wait in Active for the peer's connection; when the connect-retry
    /// time passes first, connect as usual (unless [`Config::passive`]).
    ManualStartPassive,
    /// Stop: say goodbye (Cease, administrative shutdown) if connected, and stay Idle.
    ManualStop,
    /// Our outgoing TCP connection is up (RFC 4271 event 16).
    TcpConnected,
    /// The peer's connection to us was accepted (RFC 4271 event 17). Taken in Connect
    /// (the caller abandons its own attempt), in Active, and in Idle while started
    /// (waiting to retry after a failure); ignored in Idle when not started and in the
    /// later states, where the caller either closes the new connection or resolves the
    /// collision with [`collision`] on the peer's OPEN.
    TcpAccepted,
    /// The connection attempt failed or the connection closed.
    TcpFailed,
    /// A message arrived.
    MessageReceived(Message),
    /// A message could not be decoded (the codec's error).
    DecodeFailed(Error),
    /// A timer armed by [`Action::ArmTimer`] expired.
    TimerExpired(TimerKind),
    /// This connection lost a collision (see [`collision`]): close it with Cease/7.
    CollisionLost,
}

/// Why a session went down or an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// We were asked to stop.
    Stopped,
    /// The connection closed or failed.
    ConnectionLost,
    /// Nothing arrived within the hold time.
    HoldTimerExpired,
    /// The peer sent this NOTIFICATION.
    PeerNotification(Notification),
    /// We sent this NOTIFICATION (a bad message, a rejected OPEN, an unexpected message).
    SentNotification(Notification),
}

/// Outputs of the state machine, to be carried out in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to the peer.
    Connect,
    /// Send this message on the connection.
    SendMessage(Message),
    /// Close the connection (or abandon the connection attempt).
    CloseTcp,
    /// Report [`Event::TimerExpired`] at `deadline` (replacing any earlier deadline of
    /// the same kind).
    ArmTimer {
        /// Which timer.
        kind: TimerKind,
        /// When it expires.
        deadline: Instant,
    },
    /// Forget a timer.
    CancelTimer(TimerKind),
    /// The session is Established with these negotiated parameters.
    SessionUp(Box<Negotiated>),
    /// The session left Established (`was_up`) or an attempt failed.
    SessionDown {
        /// Why.
        reason: DownReason,
        /// Whether it had been Established.
        was_up: bool,
    },
}

/// Graceful restart (RFC 4724) as we advertise it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestartConfig {
    /// Seconds the peer should keep our routes after the session drops.
    pub restart_time: u16,
    /// We are restarting (R bit): the agent came back while forwarding went on.
    pub restarting: bool,
    /// Forwarding state survives our restart (F bit for every family): true for IPVS,
    /// which forwards while the agent is away.
    pub forwarding: bool,
}

/// A session's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Our AS.
    pub local_as: u32,
    /// Which AS the peer must have.
    pub peer_as: PeerAs,
    /// Our BGP identifier (router ID).
    pub router_id: Ipv4Addr,
    /// The hold time we propose, in seconds: 0 (no keepalives) or at least 3.
    pub hold_time: u16,
    /// The keepalive interval wanted; by default a third of the negotiated hold time.
    /// Ignored unless it is below the negotiated hold time.
    pub keepalive_time: Option<u16>,
    /// Time between connection attempts (and before an automatic restart).
    pub connect_retry: Duration,
    /// Never connect; wait for the peer.
    pub passive: bool,
    /// The families we speak (multiprotocol capabilities).
    pub families: Vec<Family>,
    /// Graceful restart, if advertised.
    pub graceful_restart: Option<GracefulRestartConfig>,
}

impl Config {
    /// The OPEN we send.
    pub fn open(&self) -> Open {
        let mut caps: Vec<Capability> = self
            .families
            .iter()
            .map(|f| Capability::MultiProtocol(*f))
            .collect();
        caps.push(Capability::RouteRefresh);
        if let Some(gr) = self.graceful_restart {
            caps.push(Capability::GracefulRestart(GracefulRestart {
                flags: if gr.restarting {
                    GracefulRestart::RESTART_STATE
                } else {
                    0
                },
                restart_time: gr.restart_time.min(0x0fff),
                families: self
                    .families
                    .iter()
                    .map(|&family| GracefulRestartFamily {
                        family,
                        flags: if gr.forwarding {
                            GracefulRestartFamily::FORWARDING
                        } else {
                            0
                        },
                    })
                    .collect(),
            }));
        }
        Open::new(self.local_as, self.hold_time, self.router_id, caps)
    }
}

/// Which connection to keep when both speakers connected to each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Keep the connection we initiated, close the peer's.
    LocallyInitiated,
    /// Keep the connection the peer initiated, close ours.
    RemotelyInitiated,
}

/// RFC 4271 §6.8 collision resolution: the connection initiated by the speaker with the
/// higher BGP identifier survives (identifiers compared as 4-octet unsigned integers).
/// The loser is closed with [`Event::CollisionLost`]. A connection still in OpenSent
/// has no peer identifier yet and cannot collide; one already Established wins always
/// (the caller checks that).
pub fn collision(local_id: Ipv4Addr, remote_id: Ipv4Addr) -> Keep {
    if u32::from(local_id) > u32::from(remote_id) {
        Keep::LocallyInitiated
    } else {
        Keep::RemotelyInitiated
    }
}

/// One peer's state machine.
#[derive(Debug, Clone)]
pub struct Session {
    config: Config,
    state: State,
    /// Started and not stopped: failures lead to an automatic restart.
    started: bool,
    negotiated: Option<Negotiated>,
}

impl Session {
    /// A session in Idle.
    pub fn new(config: Config) -> Session {
        Session {
            config,
            state: State::Idle,
            started: false,
            negotiated: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What was negotiated, from the peer's OPEN on (OpenConfirm and Established).
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// The capabilities to encode and decode messages with now.
    pub fn caps(&self) -> SessionCaps {
        self.negotiated.as_ref().map(|n| n.caps).unwrap_or_default()
    }

    /// Feeds one event; returns what to do, in order.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        self.step(event, now, &mut out);
        out
    }

    fn arm(&self, kind: TimerKind, after: Duration, now: Instant, out: &mut Vec<Action>) {
        out.push(Action::ArmTimer {
            kind,
            deadline: now + after,
        });
    }

    fn start(&mut self, passive: bool, now: Instant, out: &mut Vec<Action>) {
        self.started = true;
        self.arm(TimerKind::ConnectRetry, self.config.connect_retry, now, out);
        if self.config.passive || passive {
            self.state = State::Active;
        } else {
            self.state = State::Connect;
            out.push(Action::Connect);
        }
    }

    /// Sends OPEN on a fresh connection.
    fn connected(&mut self, now: Instant, out: &mut Vec<Action>) {
        out.push(Action::CancelTimer(TimerKind::ConnectRetry));
        out.push(Action::SendMessage(Message::Open(self.config.open())));
        self.arm(TimerKind::Hold, LARGE_HOLD_TIME, now, out);
        self.state = State::OpenSent;
    }

    /// Tears the connection down and goes Idle; a started session restarts after the
    /// connect-retry time.
    fn down(
        &mut self,
        reason: DownReason,
        send: Option<Notification>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if let Some(n) = send {
            out.push(Action::SendMessage(Message::Notification(n)));
        }
        out.push(Action::CloseTcp);
        out.push(Action::CancelTimer(TimerKind::Hold));
        out.push(Action::CancelTimer(TimerKind::Keepalive));
        out.push(Action::CancelTimer(TimerKind::ConnectRetry));
        let was_up = self.state == State::Established;
        out.push(Action::SessionDown { reason, was_up });
        self.state = State::Idle;
        self.negotiated = None;
        if self.started {
            self.arm(TimerKind::ConnectRetry, self.config.connect_retry, now, out);
        }
    }

    /// Sends `n` and goes down with it as the reason.
    fn fail(&mut self, n: Notification, now: Instant, out: &mut Vec<Action>) {
        self.down(DownReason::SentNotification(n.clone()), Some(n), now, out);
    }

    /// Restarts the hold timer on any message (RFC 4271 §8.2.2).
    fn heard(&self, now: Instant, out: &mut Vec<Action>) {
        if let Some(n) = &self.negotiated
            && n.hold_time > 0
        {
            self.arm(
                TimerKind::Hold,
                Duration::from_secs(n.hold_time.into()),
                now,
                out,
            );
        }
    }

    fn keepalive_timer(&self, now: Instant, out: &mut Vec<Action>) {
        if let Some(n) = &self.negotiated
            && n.keepalive > 0
        {
            self.arm(
                TimerKind::Keepalive,
                Duration::from_secs(n.keepalive.into()),
                now,
                out,
            );
        }
    }

    fn step(&mut self, event: Event, now: Instant, out: &mut Vec<Action>) {
        use State::*;
        match (self.state, event) {
            (_, Event::ManualStop) => {
                self.started = false;
                match self.state {
                    Idle => out.push(Action::CancelTimer(TimerKind::ConnectRetry)),
                    Connect | Active => {
                        out.push(Action::CloseTcp);
                        out.push(Action::CancelTimer(TimerKind::ConnectRetry));
                        self.state = Idle;
                    }
                    OpenSent | OpenConfirm | Established => self.down(
                        DownReason::Stopped,
                        Some(Notification::new(ErrorCode::Cease(
                            CeaseError::AdministrativeShutdown,
                        ))),
                        now,
                        out,
                    ),
                }
            }
            (Idle, Event::ManualStart) => self.start(false, now, out),
            (Idle, Event::ManualStartPassive) => self.start(true, now, out),
            (Idle, Event::TimerExpired(TimerKind::ConnectRetry)) if self.started => {
                self.start(false, now, out)
            }
            // Idle after a failure is RFC 4271's Active with a longer wait: the peer
            // may connect in the meantime.
            (Idle, Event::TcpAccepted) if self.started => self.connected(now, out),
            (Idle, _) => {}
            (_, Event::ManualStart | Event::ManualStartPassive) => {}

            (Connect | Active, Event::TcpConnected | Event::TcpAccepted) => {
                self.connected(now, out)
            }
            (Connect, Event::TcpFailed) => {
                self.state = Active;
                self.arm(TimerKind::ConnectRetry, self.config.connect_retry, now, out);
            }
            (Connect | Active, Event::TimerExpired(TimerKind::ConnectRetry)) => {
                self.arm(TimerKind::ConnectRetry, self.config.connect_retry, now, out);
                if !self.config.passive {
                    // Abandon a hanging attempt and try again.
                    if self.state == Connect {
                        out.push(Action::CloseTcp);
                    }
                    out.push(Action::Connect);
                    self.state = Connect;
                }
            }
            (Connect | Active, _) => {}

            (OpenSent | OpenConfirm | Established, Event::TcpFailed) => {
                // RFC 4271 goes from OpenSent to Active; an Idle that restarts after the
                // connect-retry time ends up in the same place.
                self.down(DownReason::ConnectionLost, None, now, out);
            }
            (OpenSent | OpenConfirm | Established, Event::TimerExpired(TimerKind::Hold)) => {
                let n = Notification::new(ErrorCode::HoldTimerExpired(0));
                self.down(DownReason::HoldTimerExpired, Some(n), now, out);
            }
            (OpenConfirm | Established, Event::TimerExpired(TimerKind::Keepalive)) => {
                out.push(Action::SendMessage(Message::Keepalive));
                self.keepalive_timer(now, out);
            }
            (_, Event::TimerExpired(_)) => {}
            // A second connection is the caller's to close or to resolve (see
            // `collision`).
            (_, Event::TcpConnected | Event::TcpAccepted) => {}
            (_, Event::CollisionLost) => {
                let n =
                    Notification::new(ErrorCode::Cease(CeaseError::ConnectionCollisionResolution));
                self.fail(n, now, out);
            }
            (_, Event::MessageReceived(Message::Notification(n))) => {
                self.down(DownReason::PeerNotification(n), None, now, out);
            }
            (_, Event::DecodeFailed(e)) => match (e.action(), e.notification()) {
                (Some(ErrorAction::SessionReset), Some(n)) => self.fail(n.clone(), now, out),
                // RFC 7606: the UPDATE is handled (or ignored: we import nothing) and the
                // session lives on; it still counts as hearing from the peer.
                _ => self.heard(now, out),
            },

            (OpenSent, Event::MessageReceived(Message::Open(open))) => {
                match check_open(&self.config, &open) {
                    Ok(negotiated) => {
                        self.negotiated = Some(negotiated);
                        out.push(Action::SendMessage(Message::Keepalive));
                        match self.negotiated.as_ref().map(|n| n.hold_time) {
                            Some(0) => out.push(Action::CancelTimer(TimerKind::Hold)),
                            _ => self.heard(now, out),
                        }
                        self.keepalive_timer(now, out);
                        self.state = OpenConfirm;
                    }
                    Err(n) => self.fail(n, now, out),
                }
            }
            (OpenConfirm, Event::MessageReceived(Message::Keepalive)) => {
                self.heard(now, out);
                self.state = Established;
                let n = self.negotiated.clone().expect("negotiated in OpenSent");
                out.push(Action::SessionUp(Box::new(n)));
            }
            (
                Established,
                Event::MessageReceived(
                    Message::Keepalive | Message::Update(_) | Message::RouteRefresh(_),
                ),
            ) => self.heard(now, out),
            // Anything else is out of order: an FSM error (RFC 6608 subcodes 1-3 say
            // in which state).
            (state, Event::MessageReceived(_)) => {
                let subcode = match state {
                    OpenSent => 1,
                    OpenConfirm => 2,
                    _ => 3,
                };
                self.fail(Notification::new(ErrorCode::Fsm(subcode)), now, out);
            }
        }
    }
}

#[cfg(test)]
mod tests;
