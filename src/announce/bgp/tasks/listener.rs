//! The listening sockets on BGP's port: one per address family, bound with the first
//! peer of that family, taking connections only from configured peer addresses (with
//! their TCP MD5 keys set on the listening socket) and handing each to its peer's
//! session task, which decides whether to take it (see `collision`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::announce::bgp::PeerConfig;
use crate::announce::bgp::network;

/// Where accepted connections go: per peer address, its session's queue.
type Accepting = Arc<Mutex<HashMap<IpAddr, mpsc::Sender<TcpStream>>>>;

/// The listening sockets (one per address family, bound with the first peer of that
/// family) and the peers they take connections from.
#[derive(Default)]
pub(super) struct Listeners {
    /// Per family (true: IPv6), the socket and the task accepting on it.
    sockets: HashMap<bool, (Arc<TcpListener>, JoinHandle<()>)>,
    /// Families whose port could not be bound (warned once).
    failed: Vec<bool>,
    accepting: Accepting,
}

impl Listeners {
    /// Registers `cfg`'s address: the listening socket of its family takes its
    /// connections (with its TCP MD5 key) and hands them to the returned queue.
    pub(super) fn add(&mut self, cfg: &PeerConfig, port: Option<u16>) -> mpsc::Receiver<TcpStream> {
        let (tx, rx) = mpsc::channel(4);
        let Some(port) = port else {
            return rx;
        };
        let v6 = cfg.address.is_ipv6();
        if !self.sockets.contains_key(&v6) && !self.failed.contains(&v6) {
            match network::listen(v6, port) {
                Ok(listener) => {
                    let listener = Arc::new(listener);
                    let task = tokio::spawn(accept(listener.clone(), self.accepting.clone()));
                    self.sockets.insert(v6, (listener, task));
                }
                Err(e) => {
                    warn!("bgp: not taking the peers' connections ({e}); connecting only");
                    self.failed.push(v6);
                }
            }
        }
        if let Some((listener, _)) = self.sockets.get(&v6) {
            if let Some(password) = &cfg.password {
                let peer = SocketAddr::new(cfg.address, cfg.port);
                if let Err(e) = network::set_md5_key(listener.as_ref(), peer, password.0.as_bytes())
                {
                    warn!(peer = %cfg.name, "bgp: the listening socket refused the TCP MD5 key: {e}");
                }
            }
            self.lock().insert(cfg.address, tx);
        }
        rx
    }

    /// Forgets `cfg`'s address (and its key).
    pub(super) fn remove(&mut self, cfg: &PeerConfig) {
        self.lock().remove(&cfg.address);
        if cfg.password.is_some()
            && let Some((listener, _)) = self.sockets.get(&cfg.address.is_ipv6())
        {
            let peer = SocketAddr::new(cfg.address, cfg.port);
            let _ = network::set_md5_key(listener.as_ref(), peer, b"");
        }
    }

    /// The accepting map, whatever a panicking holder left in it.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, mpsc::Sender<TcpStream>>> {
        self.accepting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops listening.
    pub(super) fn close(self) {
        for (_, task) in self.sockets.into_values() {
            task.abort();
        }
    }
}

/// Takes connections on `listener`: a configured peer's goes to its session, anyone
/// else's is closed at once.
async fn accept(listener: Arc<TcpListener>, accepting: Accepting) {
    loop {
        match listener.accept().await {
            Ok((stream, from)) => {
                let ip = from.ip().to_canonical();
                let queue = accepting
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&ip)
                    .cloned();
                match queue {
                    Some(queue) => {
                        if let Err(e) = network::accepted(&stream) {
                            debug!(%from, "bgp: cannot set up an accepted connection: {e}");
                            continue;
                        }
                        if queue.try_send(stream).is_err() {
                            debug!(%from, "bgp: the session is not taking connections; closed");
                        }
                    }
                    None => debug!(%from, "bgp: closed a connection from no configured peer"),
                }
            }
            Err(e) => {
                // Out of descriptors or similar: do not spin.
                warn!("bgp: accepting a connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
