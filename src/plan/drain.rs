//! Graceful termination of real servers that are no longer desired: TCP ones with
//! active connections drain at weight 0 until the connections end or `maxDrainSeconds`
//! pass; the start times live in memory ([`DrainStarts`]), the draining state itself
//! is read back from the kernel (weight 0 and not desired).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::{Change, ObservedRealServer};
use crate::model::{Protocol, RealServer, VirtualServerKey};

/// When each draining real server (virtual server, address, port) started draining.
pub type DrainStarts = BTreeMap<(VirtualServerKey, IpAddr, u16), Instant>;

/// What becomes of `real_server` of `key`, no longer desired: deleted at once (UDP,
/// SCTP, or no active connection), set to weight 0 (its drain starts `now`), left at
/// weight 0 (still draining), or deleted once it has drained for `max_drain`. Records
/// every real server still draining afterwards in `draining`.
pub(super) fn retire(
    key: VirtualServerKey,
    real_server: &ObservedRealServer,
    max_drain: Duration,
    drain_starts: &DrainStarts,
    now: Instant,
    draining: &mut DrainStarts,
) -> Option<Change> {
    let delete = Change::DeleteRealServer {
        virtual_server: key,
        addr: real_server.addr,
        port: real_server.port,
    };
    if key.protocol != Protocol::Tcp || real_server.active_connections == 0 {
        return Some(delete);
    }
    let drain_key = (key, real_server.addr, real_server.port);
    if real_server.weight != 0 {
        draining.insert(drain_key, now);
        return Some(Change::UpdateRealServer {
            virtual_server: key,
            real_server: RealServer {
                addr: real_server.addr,
                port: real_server.port,
                weight: 0,
            },
        });
    }
    let started = drain_starts.get(&drain_key).copied().unwrap_or(now);
    if now.saturating_duration_since(started) >= max_drain {
        Some(delete)
    } else {
        draining.insert(drain_key, started);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(60);

    fn real_server(weight: u32, active_connections: u32) -> ObservedRealServer {
        ObservedRealServer {
            addr: "10.244.1.5".parse().unwrap(),
            port: 8080,
            weight,
            active_connections,
            inactive_connections: 0,
        }
    }

    fn key(protocol: Protocol) -> VirtualServerKey {
        VirtualServerKey {
            addr: "10.96.0.10".parse().unwrap(),
            port: 80,
            protocol,
        }
    }

    #[test]
    fn only_tcp_with_active_connections_drains() {
        let now = Instant::now();
        let mut draining = DrainStarts::new();
        for (protocol, rs) in [
            (Protocol::Udp, real_server(1, 5)),
            (Protocol::Sctp, real_server(1, 5)),
            (Protocol::Tcp, real_server(1, 0)),
        ] {
            let change = retire(
                key(protocol),
                &rs,
                MAX,
                &DrainStarts::new(),
                now,
                &mut draining,
            );
            assert!(matches!(change, Some(Change::DeleteRealServer { .. })));
        }
        assert!(draining.is_empty());

        let rs = real_server(1, 2);
        let change = retire(
            key(Protocol::Tcp),
            &rs,
            MAX,
            &DrainStarts::new(),
            now,
            &mut draining,
        );
        assert!(matches!(
            change,
            Some(Change::UpdateRealServer { real_server, .. }) if real_server.weight == 0
        ));
        assert_eq!(draining.values().copied().collect::<Vec<_>>(), [now]);
    }

    #[test]
    fn a_drain_ends_after_max_drain() {
        let start = Instant::now();
        let rs = real_server(0, 2);
        let drain_key = (key(Protocol::Tcp), rs.addr, rs.port);
        let starts = DrainStarts::from([(drain_key, start)]);

        let mut draining = DrainStarts::new();
        let soon = start + MAX / 2;
        assert_eq!(
            retire(key(Protocol::Tcp), &rs, MAX, &starts, soon, &mut draining),
            None
        );
        assert_eq!(draining.get(&drain_key), Some(&start));

        let mut draining = DrainStarts::new();
        let late = start + MAX;
        let change = retire(key(Protocol::Tcp), &rs, MAX, &starts, late, &mut draining);
        assert!(matches!(change, Some(Change::DeleteRealServer { .. })));
        assert!(draining.is_empty());
    }
}
