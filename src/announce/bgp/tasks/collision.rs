//! Connections from the peer: one arriving while the session has none is taken; one
//! arriving while the session's own connection is exchanging OPENs is a collision
//! (RFC 4271 §6.8), kept aside until the peer's OPEN on it names the peer's BGP
//! identifier, then the connection initiated by the higher identifier survives; one
//! arriving while Established is closed.

use std::io;
use std::time::{Duration, Instant};

use bgp_proto::packet::notification::{CeaseError, ErrorCode, Notification};
use bgp_proto::packet::open::Open;
use bgp_proto::session::{Event, Keep, LARGE_HOLD_TIME, State, TimerKind, collision};
use bgp_proto::{Message, SessionCaps};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tracing::{debug, info};

use super::peer::PeerTask;

/// The peer's connection accepted while our own was exchanging OPENs: kept aside until
/// the peer's OPEN on it settles the collision.
pub(super) struct Pending {
    /// The peer's connection.
    pub(super) stream: TcpStream,
    /// What was read from it so far.
    pub(super) buf: BytesMut,
    /// The peer's OPEN, once read.
    pub(super) open: Option<Open>,
    /// Dropped when no OPEN came by then.
    pub(super) deadline: Instant,
}

/// Reads into the pending connection until its OPEN is in, or waits forever.
pub(super) async fn read_pending(pending: &mut Option<Pending>) -> io::Result<usize> {
    match pending {
        Some(p) if p.open.is_none() => {
            p.buf.reserve(4096);
            p.stream.read_buf(&mut p.buf).await
        }
        _ => std::future::pending().await,
    }
}

impl PeerTask {
    /// A connection from the peer: taken unless our own is further along.
    pub(super) async fn accepted(&mut self, stream: TcpStream) {
        let from = stream.peer_addr().ok();
        match self.fsm.state() {
            State::Idle | State::Connect | State::Active => {
                debug!(peer = %self.cfg.name, ?from, "bgp: taking the peer's connection");
                self.adopt(stream, BytesMut::new(), None).await;
            }
            State::OpenSent | State::OpenConfirm => {
                debug!(peer = %self.cfg.name, ?from, "bgp: connection collision; waiting for the peer's OPEN");
                self.pending = Some(Pending {
                    stream,
                    buf: BytesMut::new(),
                    open: None,
                    deadline: Instant::now() + LARGE_HOLD_TIME,
                });
            }
            // RFC 4271 §6.8: a collision with an Established session closes the new
            // connection.
            State::Established => {
                debug!(peer = %self.cfg.name, ?from, "bgp: refused a second connection while Established");
                refuse(stream).await;
            }
        }
    }

    /// Continues the session over the peer's connection `stream` (with what was read
    /// from it and the peer's OPEN if already in).
    pub(super) async fn adopt(&mut self, stream: TcpStream, buf: BytesMut, open: Option<Open>) {
        if self.fsm.state() == State::Idle && self.start_pending {
            // The rebuilt machine (without the R bit) starts now, on this connection.
            self.start_pending = false;
            self.timers.remove(&TimerKind::ConnectRetry);
            self.handle(Event::ManualStartPassive).await;
        }
        if !matches!(
            self.fsm.state(),
            State::Idle | State::Connect | State::Active
        ) {
            refuse(stream).await;
            return;
        }
        self.local = stream.local_addr().ok().map(|a| a.ip().to_canonical());
        self.stream = Some(stream);
        self.buf = buf;
        self.handle(Event::TcpAccepted).await;
        if self.fsm.state() != State::OpenSent {
            // Not started: refused.
            self.stream = None;
            self.buf.clear();
            return;
        }
        if let Some(open) = open {
            self.metric(|m, l| m.opens_received.get_or_create(l).inc());
            self.handle(Event::MessageReceived(Message::Open(open)))
                .await;
        }
        // Whatever followed the OPEN.
        if !self.buf.is_empty() {
            self.received().await;
        }
    }

    /// Bytes on the connection kept aside: its OPEN settles the collision.
    pub(super) async fn pending_read(&mut self, r: io::Result<usize>) {
        let Some(p) = self.pending.as_mut() else {
            return;
        };
        if !matches!(r, Ok(n) if n > 0) {
            self.pending = None;
            return;
        }
        match bgp_proto::decode(&mut p.buf, &SessionCaps::default()) {
            Ok(None) => {}
            Ok(Some(Message::Open(open))) => {
                p.open = Some(open);
                self.resolve_collision().await;
            }
            // Anything else first: not a peer worth keeping.
            Ok(Some(_)) | Err(_) => self.pending = None,
        }
    }

    /// RFC 4271 §6.8: of the two connections, the one initiated by the side with the
    /// higher BGP identifier stays; the other is closed with Cease, connection
    /// collision resolution.
    async fn resolve_collision(&mut self) {
        let Some(p) = self.pending.take() else {
            return;
        };
        let Some(peer_id) = p.open.as_ref().map(|o| o.bgp_id) else {
            self.pending = Some(p);
            return;
        };
        match self.fsm.state() {
            State::Idle | State::Connect | State::Active => {
                self.adopt(p.stream, p.buf, p.open).await
            }
            State::OpenSent | State::OpenConfirm => {
                match collision(self.fsm.config().router_id, peer_id) {
                    Keep::LocallyInitiated => {
                        info!(peer = %self.cfg.name, "bgp: connection collision; keeping ours");
                        refuse(p.stream).await;
                    }
                    Keep::RemotelyInitiated => {
                        info!(peer = %self.cfg.name, "bgp: connection collision; keeping the peer's");
                        self.handle(Event::CollisionLost).await;
                        self.adopt(p.stream, p.buf, p.open).await;
                    }
                }
            }
            State::Established => refuse(p.stream).await,
        }
    }
}

/// Closes a connection we do not keep with Cease, connection collision resolution
/// (RFC 4271 §6.8; the peer learns why instead of seeing a bare close).
async fn refuse(mut stream: TcpStream) {
    let mut out = BytesMut::new();
    let n = Notification::new(ErrorCode::Cease(CeaseError::ConnectionCollisionResolution));
    if bgp_proto::encode(&Message::Notification(n), &SessionCaps::default(), &mut out).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&out)).await;
    }
    let _ = stream.shutdown().await;
}
