//! Whole sessions: two state machines talking through in-memory byte buffers with the
//! codec in between, on a fake clock.

use super::*;
use crate::packet::notification::{OpenError, UpdateError};
use crate::packet::update::Update;
use crate::{decode, encode};
use bytes::BytesMut;
use std::collections::HashMap;

fn config(local_as: u32, peer_as: PeerAs, id: [u8; 4], hold: u16) -> Config {
    Config {
        local_as,
        peer_as,
        router_id: Ipv4Addr::from(id),
        hold_time: hold,
        keepalive_time: None,
        connect_retry: Duration::from_secs(5),
        passive: false,
        families: vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST],
        graceful_restart: None,
    }
}

/// One side: its state machine, armed timers and what it reported.
struct Side {
    fsm: Session,
    timers: HashMap<TimerKind, Instant>,
    ups: Vec<Negotiated>,
    downs: Vec<(DownReason, bool)>,
    sent: Vec<Message>,
    /// Bytes on the way to the other side.
    out: BytesMut,
    wants_connect: bool,
    closed: bool,
    /// Drop everything it sends (a peer that went silent).
    mute: bool,
}

impl Side {
    fn new(config: Config) -> Side {
        Side {
            fsm: Session::new(config),
            timers: HashMap::new(),
            ups: Vec::new(),
            downs: Vec::new(),
            sent: Vec::new(),
            out: BytesMut::new(),
            wants_connect: false,
            closed: false,
            mute: false,
        }
    }

    fn apply(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Connect => self.wants_connect = true,
                Action::SendMessage(m) => {
                    if !self.mute {
                        encode(&m, &self.fsm.caps(), &mut self.out).unwrap();
                    }
                    self.sent.push(m);
                }
                Action::CloseTcp => self.closed = true,
                Action::ArmTimer { kind, deadline } => {
                    self.timers.insert(kind, deadline);
                }
                Action::CancelTimer(kind) => {
                    self.timers.remove(&kind);
                }
                Action::SessionUp(n) => self.ups.push(*n),
                Action::SessionDown { reason, was_up } => self.downs.push((reason, was_up)),
            }
        }
    }

    fn handle(&mut self, e: Event, now: Instant) {
        let actions = self.fsm.handle(e, now);
        self.apply(actions);
    }

    fn notifications(&self) -> Vec<&Notification> {
        self.sent
            .iter()
            .filter_map(|m| match m {
                Message::Notification(n) => Some(n),
                _ => None,
            })
            .collect()
    }
}

/// Hands what `src` wrote to `dst` (a NOTIFICATION written before a close included).
fn deliver(src: &mut Side, dst: &mut Side, now: Instant) -> bool {
    if src.out.is_empty() {
        return false;
    }
    let mut buf = src.out.split();
    loop {
        match decode(&mut buf, &dst.fsm.caps()) {
            Ok(Some(m)) => dst.handle(Event::MessageReceived(m), now),
            Ok(None) => break,
            Err(e) => {
                dst.handle(Event::DecodeFailed(e), now);
                break;
            }
        }
    }
    true
}

/// Two sides and a clock.
struct Pair {
    a: Side,
    b: Side,
    now: Instant,
    connected: bool,
}

impl Pair {
    fn new(a: Config, b: Config) -> Pair {
        Pair {
            a: Side::new(a),
            b: Side::new(b),
            now: Instant::now(),
            connected: false,
        }
    }

    /// Delivers everything in flight until nothing moves.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            if !self.connected && (self.a.wants_connect || self.b.wants_connect) {
                // The initiator's connect reaches a listener that was started.
                let listener_ready = if self.a.wants_connect {
                    self.b.fsm.state() == State::Active || self.b.fsm.state() == State::Connect
                } else {
                    self.a.fsm.state() == State::Active || self.a.fsm.state() == State::Connect
                };
                self.a.wants_connect = false;
                self.b.wants_connect = false;
                if listener_ready {
                    self.connected = true;
                    self.a.closed = false;
                    self.b.closed = false;
                    self.a.handle(Event::TcpConnected, self.now);
                    self.b.handle(Event::TcpConnected, self.now);
                }
                moved = true;
            }
            if self.connected {
                moved |= deliver(&mut self.a, &mut self.b, self.now);
                moved |= deliver(&mut self.b, &mut self.a, self.now);
            }
            if self.connected && (self.a.closed || self.b.closed) {
                // What was written before the close still arrives.
                if self.a.closed {
                    deliver(&mut self.a, &mut self.b, self.now);
                }
                if self.b.closed {
                    deliver(&mut self.b, &mut self.a, self.now);
                }
                self.connected = false;
                self.a.out.clear();
                self.b.out.clear();
                if !self.a.closed {
                    self.a.handle(Event::TcpFailed, self.now);
                }
                if !self.b.closed {
                    self.b.handle(Event::TcpFailed, self.now);
                }
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    /// Moves the clock on in one-second steps, firing due timers.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += Duration::from_secs(1);
            for side in [&mut self.a, &mut self.b] {
                let mut due: Vec<_> = side
                    .timers
                    .iter()
                    .filter(|(_, t)| **t <= self.now)
                    .map(|(k, _)| *k)
                    .collect();
                due.sort_by_key(|k| *k as u8);
                for k in due {
                    side.timers.remove(&k);
                    side.handle(Event::TimerExpired(k), self.now);
                }
            }
            self.pump();
        }
    }

    fn start(&mut self) {
        let now = self.now;
        self.b.handle(Event::ManualStart, now);
        self.a.handle(Event::ManualStart, now);
        self.pump();
    }
}

fn established_pair() -> Pair {
    let mut a = config(4_200_000_001, PeerAs::Exact(64513), [10, 0, 0, 1], 90);
    a.graceful_restart = Some(GracefulRestartConfig {
        restart_time: 120,
        restarting: true,
        forwarding: true,
    });
    let mut b = config(64513, PeerAs::External, [10, 0, 0, 2], 30);
    b.passive = true;
    b.families = vec![Family::IPV4_UNICAST];
    let mut p = Pair::new(a, b);
    p.start();
    p
}

#[test]
fn active_and_passive_reach_established_and_negotiate() {
    let p = established_pair();
    assert_eq!(p.a.fsm.state(), State::Established);
    assert_eq!(p.b.fsm.state(), State::Established);
    let (na, nb) = (&p.a.ups[0], &p.b.ups[0]);
    // The smaller hold time, a third of it between keepalives.
    assert_eq!((na.hold_time, na.keepalive), (30, 10));
    assert_eq!((nb.hold_time, nb.keepalive), (30, 10));
    assert_eq!(na.peer_as, 64513);
    assert_eq!(nb.peer_as, 4_200_000_001);
    assert!(!na.internal);
    assert!(na.caps.four_octet_as && nb.caps.four_octet_as);
    assert_eq!(na.families, [Family::IPV4_UNICAST]);
    assert_eq!(nb.families, [Family::IPV4_UNICAST]);
    // Only A advertised graceful restart: B sees it with the R and F bits, but it is not
    // negotiated.
    let gr = nb.peer_graceful_restart.as_ref().unwrap();
    assert!(gr.restart_state());
    assert!(gr.families.iter().all(|f| f.forwarding()));
    assert!(!na.graceful_restart && !nb.graceful_restart);
    assert!(na.local_restarting);
    // A connected, B only listened.
    assert!(p.a.sent.iter().any(|m| matches!(m, Message::Open(_))));
}

#[test]
fn graceful_restart_is_negotiated_when_both_advertise_it() {
    let gr = Some(GracefulRestartConfig {
        restart_time: 90,
        restarting: false,
        forwarding: true,
    });
    let mut a = config(64512, PeerAs::Internal, [10, 0, 0, 1], 90);
    a.graceful_restart = gr;
    let mut b = config(64512, PeerAs::Exact(64512), [10, 0, 0, 2], 90);
    b.graceful_restart = gr;
    b.passive = true;
    let mut p = Pair::new(a, b);
    p.start();
    let n = &p.a.ups[0];
    assert!(n.graceful_restart && n.internal && !n.local_restarting);
    assert_eq!(n.peer_graceful_restart.as_ref().unwrap().restart_time, 90);
}

#[test]
fn keepalives_hold_the_session_and_silence_drops_it() {
    let mut p = established_pair();
    p.advance(Duration::from_secs(600));
    assert_eq!(p.a.fsm.state(), State::Established);
    assert!(p.a.downs.is_empty() && p.b.downs.is_empty());
    let keepalives =
        p.a.sent
            .iter()
            .filter(|m| matches!(m, Message::Keepalive))
            .count();
    assert!(
        (59..=62).contains(&keepalives),
        "{keepalives} keepalives in 600 s at 10 s"
    );

    // B goes silent: A's hold timer (30 s) fires and A says so.
    p.b.mute = true;
    p.advance(Duration::from_secs(31));
    assert_eq!(p.a.downs[0], (DownReason::HoldTimerExpired, true));
    assert_eq!(p.a.notifications()[0].code, ErrorCode::HoldTimerExpired(0));
    // Started sessions come back: A connects again after the connect-retry time.
    assert_eq!(p.a.fsm.state(), State::Idle);
    assert!(p.a.timers.contains_key(&TimerKind::ConnectRetry));
    p.b.mute = false;
    p.advance(Duration::from_secs(10));
    assert_eq!(p.a.fsm.state(), State::Established);
    assert_eq!(p.a.ups.len(), 2);
}

#[test]
fn hold_time_zero_means_no_keepalives() {
    let a = config(64512, PeerAs::Exact(64513), [10, 0, 0, 1], 0);
    let mut b = config(64513, PeerAs::Exact(64512), [10, 0, 0, 2], 90);
    b.passive = true;
    let mut p = Pair::new(a, b);
    p.start();
    assert_eq!(p.a.ups[0].hold_time, 0);
    assert_eq!(p.a.ups[0].keepalive, 0);
    p.advance(Duration::from_secs(1000));
    assert_eq!(p.b.fsm.state(), State::Established);
    assert!(!p.a.timers.contains_key(&TimerKind::Hold));
    assert!(!p.b.timers.contains_key(&TimerKind::Keepalive));
}

#[test]
fn keepalive_time_is_used_when_below_the_hold_time() {
    let mut a = config(64512, PeerAs::Exact(64513), [10, 0, 0, 1], 90);
    a.keepalive_time = Some(5);
    let mut b = config(64513, PeerAs::Exact(64512), [10, 0, 0, 2], 90);
    b.passive = true;
    let mut p = Pair::new(a, b);
    p.start();
    assert_eq!(p.a.ups[0].keepalive, 5);
    assert_eq!(p.b.ups[0].keepalive, 30);
}

#[test]
fn manual_stop_says_goodbye_and_stays_down() {
    let mut p = established_pair();
    let now = p.now;
    p.a.handle(Event::ManualStop, now);
    p.pump();
    assert_eq!(
        p.a.notifications()[0].code,
        ErrorCode::Cease(CeaseError::AdministrativeShutdown)
    );
    assert_eq!(p.a.downs[0], (DownReason::Stopped, true));
    assert!(matches!(
        &p.b.downs[0],
        (DownReason::PeerNotification(_), true)
    ));
    p.advance(Duration::from_secs(60));
    assert_eq!(p.a.fsm.state(), State::Idle);
    assert_eq!(p.a.ups.len(), 1);
    // B is started and passive: it waits in Active again.
    assert_eq!(p.b.fsm.state(), State::Active);
}

#[test]
fn connect_failures_retry_on_the_connect_retry_timer() {
    let mut s = Side::new(config(64512, PeerAs::Exact(64513), [10, 0, 0, 1], 90));
    let t0 = Instant::now();
    s.handle(Event::ManualStart, t0);
    assert!(s.wants_connect);
    assert_eq!(s.fsm.state(), State::Connect);
    s.handle(Event::TcpFailed, t0);
    assert_eq!(s.fsm.state(), State::Active);
    s.wants_connect = false;
    let retry = s.timers[&TimerKind::ConnectRetry];
    assert_eq!(retry, t0 + Duration::from_secs(5));
    s.handle(Event::TimerExpired(TimerKind::ConnectRetry), retry);
    assert!(s.wants_connect);
    assert_eq!(s.fsm.state(), State::Connect);
}

/// A session in OpenSent fed `open`; returns the NOTIFICATION it sent, if any.
fn answer_to(config: Config, open: Open) -> Option<Notification> {
    let mut s = Side::new(config);
    let now = Instant::now();
    s.handle(Event::ManualStart, now);
    s.handle(Event::TcpConnected, now);
    assert_eq!(s.fsm.state(), State::OpenSent);
    s.handle(Event::MessageReceived(Message::Open(open)), now);
    s.notifications().first().map(|n| (*n).clone())
}

fn peer_open(asn: u32, hold: u16, id: [u8; 4]) -> Open {
    Open::new(
        asn,
        hold,
        Ipv4Addr::from(id),
        vec![Capability::MultiProtocol(Family::IPV4_UNICAST)],
    )
}

#[test]
fn open_checks_send_the_rfc_4271_notifications() {
    let ours = || config(64512, PeerAs::Exact(64513), [10, 0, 0, 1], 90);
    assert_eq!(answer_to(ours(), peer_open(64513, 90, [10, 0, 0, 2])), None);

    let code = |n: Option<Notification>| n.map(|n| (n.code, n.data));
    assert_eq!(
        code(answer_to(ours(), peer_open(64513, 2, [10, 0, 0, 2]))),
        Some((ErrorCode::Open(OpenError::UnacceptableHoldTime), vec![]))
    );
    assert_eq!(
        code(answer_to(ours(), peer_open(64999, 90, [10, 0, 0, 2]))),
        Some((
            ErrorCode::Open(OpenError::BadPeerAs),
            64999u16.to_be_bytes().to_vec()
        ))
    );
    assert_eq!(
        code(answer_to(ours(), peer_open(64513, 90, [10, 0, 0, 1]))).map(|c| c.0),
        Some(ErrorCode::Open(OpenError::BadBgpIdentifier))
    );
    assert_eq!(
        code(answer_to(ours(), peer_open(64513, 90, [0, 0, 0, 0]))).map(|c| c.0),
        Some(ErrorCode::Open(OpenError::BadBgpIdentifier))
    );
    let mut v3 = peer_open(64513, 90, [10, 0, 0, 2]);
    v3.version = 3;
    assert_eq!(
        code(answer_to(ours(), v3)),
        Some((
            ErrorCode::Open(OpenError::UnsupportedVersionNumber),
            vec![0, 4]
        ))
    );
    // No family in common.
    let v6_only = Open::new(
        64513,
        90,
        Ipv4Addr::new(10, 0, 0, 2),
        vec![Capability::MultiProtocol(Family { afi: 25, safi: 65 })],
    );
    assert_eq!(
        code(answer_to(ours(), v6_only)).map(|c| c.0),
        Some(ErrorCode::Open(OpenError::UnsupportedCapability))
    );
    // A 4-octet ASN whose My AS is neither itself nor AS_TRANS.
    let mut liar = peer_open(4_200_000_000, 90, [10, 0, 0, 2]);
    liar.my_as = 64513;
    let c = config(64512, PeerAs::Exact(4_200_000_000), [10, 0, 0, 1], 90);
    assert_eq!(
        code(answer_to(c, liar)).map(|c| c.0),
        Some(ErrorCode::Open(OpenError::BadPeerAs))
    );
}

#[test]
fn dynamic_peer_as_internal_and_external() {
    let internal = || config(64512, PeerAs::Internal, [10, 0, 0, 1], 90);
    let external = || config(64512, PeerAs::External, [10, 0, 0, 1], 90);
    assert_eq!(
        answer_to(internal(), peer_open(64512, 90, [10, 0, 0, 2])),
        None
    );
    assert!(answer_to(internal(), peer_open(64513, 90, [10, 0, 0, 2])).is_some());
    assert_eq!(
        answer_to(external(), peer_open(65001, 90, [10, 0, 0, 2])),
        None
    );
    assert!(answer_to(external(), peer_open(64512, 90, [10, 0, 0, 2])).is_some());
}

#[test]
fn out_of_order_messages_are_fsm_errors() {
    let mut s = Side::new(config(64512, PeerAs::Exact(64513), [10, 0, 0, 1], 90));
    let now = Instant::now();
    s.handle(Event::ManualStart, now);
    s.handle(Event::TcpConnected, now);
    s.handle(
        Event::MessageReceived(Message::Update(Update::default())),
        now,
    );
    assert_eq!(s.notifications()[0].code, ErrorCode::Fsm(1));
    assert_eq!(s.fsm.state(), State::Idle);
    assert!(matches!(
        &s.downs[0],
        (DownReason::SentNotification(_), false)
    ));
}

#[test]
fn rfc_7606_errors_keep_the_session_and_resets_end_it() {
    let mut p = established_pair();
    let now = p.now;
    let withdraw = Error::Malformed {
        notification: Notification::new(ErrorCode::Update(UpdateError::AttributeLengthError)),
        action: ErrorAction::TreatAsWithdraw,
        withdrawn: Vec::new(),
        reason: "test".into(),
    };
    p.a.handle(Event::DecodeFailed(withdraw), now);
    assert_eq!(p.a.fsm.state(), State::Established);
    assert!(p.a.notifications().is_empty());

    // A real malformed UPDATE on the wire: NLRI prefix of length 33 (session reset).
    let mut bad = BytesMut::new();
    encode(
        &Message::Update(Update::default()),
        &SessionCaps::default(),
        &mut bad,
    )
    .unwrap();
    bad.extend_from_slice(&[33, 1, 2, 3, 4, 5]);
    let len = bad.len() as u16;
    bad[16..18].copy_from_slice(&len.to_be_bytes());
    p.b.out.extend_from_slice(&bad);
    p.pump();
    assert_eq!(
        p.a.notifications()[0].code,
        ErrorCode::Update(UpdateError::InvalidNetworkField)
    );
    assert!(matches!(
        &p.b.downs[0],
        (DownReason::PeerNotification(_), true)
    ));
}

#[test]
fn collisions_keep_the_higher_identifiers_connection() {
    let hi = Ipv4Addr::new(10, 0, 0, 9);
    let lo = Ipv4Addr::new(10, 0, 0, 10);
    // Compared as integers: 10.0.0.10 > 10.0.0.9.
    assert_eq!(collision(lo, hi), Keep::LocallyInitiated);
    assert_eq!(collision(hi, lo), Keep::RemotelyInitiated);

    let mut p = established_pair();
    let now = p.now;
    p.a.handle(Event::CollisionLost, now);
    p.pump();
    assert_eq!(
        p.a.notifications()[0].code,
        ErrorCode::Cease(CeaseError::ConnectionCollisionResolution)
    );
}

fn sent_open(actions: &[Action]) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::SendMessage(Message::Open(_))))
}

#[test]
fn a_passive_start_waits_for_the_peer_and_connects_after_the_retry_time() {
    let now = Instant::now();
    let mut s = Session::new(config(64512, PeerAs::Exact(64513), [10, 0, 0, 1], 90));
    let actions = s.handle(Event::ManualStartPassive, now);
    assert_eq!(s.state(), State::Active);
    assert!(!actions.contains(&Action::Connect), "{actions:?}");
    // Nobody came: it connects itself.
    let actions = s.handle(Event::TimerExpired(TimerKind::ConnectRetry), now);
    assert!(actions.contains(&Action::Connect), "{actions:?}");
    assert_eq!(s.state(), State::Connect);
    // The peer's connection arrives first: it is taken, our OPEN goes on it.
    let actions = s.handle(Event::TcpAccepted, now);
    assert!(sent_open(&actions), "{actions:?}");
    assert_eq!(s.state(), State::OpenSent);
}

#[test]
fn accepted_connections_are_taken_while_waiting_to_retry_but_not_when_stopped() {
    let now = Instant::now();
    let mut s = Session::new(config(64512, PeerAs::Exact(64513), [10, 0, 0, 1], 90));
    // Never started: refused.
    assert!(s.handle(Event::TcpAccepted, now).is_empty());
    assert_eq!(s.state(), State::Idle);
    s.handle(Event::ManualStart, now);
    s.handle(Event::TcpFailed, now);
    s.handle(Event::TcpConnected, now);
    // The attempt dies in OpenSent: Idle, waiting for the retry time.
    s.handle(Event::TcpFailed, now);
    assert_eq!(s.state(), State::Idle);
    let actions = s.handle(Event::TcpAccepted, now);
    assert!(sent_open(&actions), "{actions:?}");
    assert!(actions.contains(&Action::CancelTimer(TimerKind::ConnectRetry)));
    assert_eq!(s.state(), State::OpenSent);
    // A second accepted connection is the caller's business.
    assert!(s.handle(Event::TcpAccepted, now).is_empty());
    s.handle(Event::ManualStop, now);
    assert!(s.handle(Event::TcpAccepted, now).is_empty());
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn a_lost_collision_moves_the_session_onto_the_peers_connection() {
    let now = Instant::now();
    let local = [10, 0, 0, 1];
    let mut s = Session::new(config(64512, PeerAs::Exact(64513), local, 90));
    s.handle(Event::ManualStart, now);
    s.handle(Event::TcpConnected, now);
    assert_eq!(s.state(), State::OpenSent);
    // The peer's own connection brings its OPEN; its identifier is higher, so its
    // connection wins.
    let open = peer_open(64513, 90, [10, 0, 0, 2]);
    assert_eq!(
        collision(Ipv4Addr::from(local), open.bgp_id),
        Keep::RemotelyInitiated
    );
    let actions = s.handle(Event::CollisionLost, now);
    assert!(actions.contains(&Action::SendMessage(Message::Notification(
        Notification::new(ErrorCode::Cease(CeaseError::ConnectionCollisionResolution))
    ))));
    assert!(actions.contains(&Action::CloseTcp));
    let actions = s.handle(Event::TcpAccepted, now);
    assert!(sent_open(&actions), "{actions:?}");
    let actions = s.handle(Event::MessageReceived(Message::Open(open)), now);
    assert!(actions.contains(&Action::SendMessage(Message::Keepalive)));
    assert_eq!(s.state(), State::OpenConfirm);
    let actions = s.handle(Event::MessageReceived(Message::Keepalive), now);
    assert!(
        actions.iter().any(|a| matches!(a, Action::SessionUp(_))),
        "{actions:?}"
    );
    assert_eq!(s.state(), State::Established);
}
