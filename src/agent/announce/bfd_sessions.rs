//! BFD sessions for the speaker's peers, from their `BFDProfile`s.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metallb_config::BfdProfile;
use tokio::sync::watch;
use tracing::{info, warn};

use super::NodeAddresses;
use crate::announce::bfd::{BfdManager, Config as BfdConfig, Error as BfdError, SessionKey};
use crate::announce::bgp::{BfdSessions, PeerConfig};

/// BFD sessions for the speaker's peers, from their `BFDProfile`s.
pub(super) struct AgentBfd {
    manager: Arc<std::sync::OnceLock<Arc<BfdManager>>>,
    profiles: Mutex<BTreeMap<String, BfdProfile>>,
    addresses: Mutex<NodeAddresses>,
    /// The sessions started for peers, with the profile each follows, so a changed
    /// profile reaches its sessions.
    sessions: Mutex<BTreeMap<SessionKey, String>>,
}

impl AgentBfd {
    pub(super) fn new(manager: Arc<std::sync::OnceLock<Arc<BfdManager>>>) -> AgentBfd {
        AgentBfd {
            manager,
            profiles: Mutex::new(BTreeMap::new()),
            addresses: Mutex::new(NodeAddresses::default()),
            sessions: Mutex::new(BTreeMap::new()),
        }
    }

    /// Takes the `BFDProfile`s. A profile whose timers changed is applied to its
    /// running sessions in place: while Up, the new intervals take effect through a
    /// poll sequence with the router (RFC 5880 §6.8.3), so the BGP session does not
    /// flap. Must be called within a tokio runtime.
    pub(super) fn set_profiles(&self, profiles: BTreeMap<String, BfdProfile>) {
        let old = std::mem::replace(
            &mut *self.profiles.lock().unwrap_or_else(PoisonError::into_inner),
            profiles.clone(),
        );
        let Some(manager) = self.manager.get().cloned() else {
            return;
        };
        let sessions = self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for (key, name) in sessions {
            let Some(profile) = profiles.get(&name) else {
                if old.contains_key(&name) {
                    warn!(profile = %name, session = %key, "BFD profile removed: the session keeps its last timers until its peer changes");
                }
                continue;
            };
            if old.get(&name) == Some(profile) {
                continue;
            }
            let config = config_of(profile);
            let manager = manager.clone();
            tokio::spawn(async move {
                match manager.reconfigure(key, config).await {
                    Ok(()) => {
                        info!(profile = %name, session = %key, "BFD profile changed: new timers applied")
                    }
                    Err(error) => {
                        warn!(profile = %name, session = %key, "BFD profile changed but the session cannot take it: {error}")
                    }
                }
            });
        }
    }

    /// Ends every session (AdminDown to the routers): the speaker stopped for good
    /// or is restarted with other addresses.
    pub(super) async fn release_all(&self) {
        let keys: Vec<SessionKey> =
            std::mem::take(&mut *self.sessions.lock().unwrap_or_else(PoisonError::into_inner))
                .into_keys()
                .collect();
        if let Some(manager) = self.manager.get() {
            for key in keys {
                let _ = manager.remove_session(key).await;
            }
        }
    }

    pub(super) fn set_addresses(&self, addresses: NodeAddresses) {
        *self
            .addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = addresses;
    }
}

impl AgentBfd {
    fn key_of(&self, peer: &PeerConfig) -> Option<SessionKey> {
        let local = peer.source_address.or_else(|| {
            self.addresses
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .of_family(peer.address)
        })?;
        Some(SessionKey {
            peer: peer.address,
            local,
        })
    }
}

impl BfdSessions for AgentBfd {
    /// A peer removed or changed: its BFD session ends (AdminDown to the router), so a
    /// changed profile starts a new session with the new timers.
    fn release(&self, peer: &PeerConfig) {
        let (Some(manager), Some(key)) = (self.manager.get(), self.key_of(peer)) else {
            return;
        };
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
        // The first poll takes the session out of the table and tells its task to say
        // AdminDown; waiting for that is not needed before a new session of the same
        // key is added, so the rest of the future is dropped.
        let _ = futures_util::FutureExt::now_or_never(manager.remove_session(key));
    }

    fn watch(&self, peer: &PeerConfig) -> Option<watch::Receiver<bool>> {
        let profile_name = peer.bfd_profile.as_ref()?;
        let profile = self
            .profiles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(profile_name)
            .cloned();
        let Some(profile) = profile else {
            warn!(peer = %peer.name, profile = %profile_name, "BFD profile not found: no BFD for this peer");
            return None;
        };
        let Some(key) = self.key_of(peer) else {
            warn!(peer = %peer.name, "no local address of the peer's family for BFD: no BFD for this peer");
            return None;
        };
        let config = config_of(&profile);
        let manager = self.manager.get_or_init(|| Arc::new(BfdManager::new()));
        let state = match manager.add_session(key, config, None) {
            Ok(state) => state,
            Err(BfdError::Duplicate(_)) => manager.subscribe(key)?,
            Err(error) => {
                warn!(peer = %peer.name, "the BFD session cannot start: {error}");
                return None;
            }
        };
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, profile_name.clone());
        Some(up_down(state))
    }
}

/// A session's configuration from its profile.
fn config_of(profile: &BfdProfile) -> BfdConfig {
    let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
    BfdConfig::from_profile(
        Some(ms(profile.receive_interval)),
        Some(ms(profile.transmit_interval)),
        Some(profile.detect_multiplier),
        profile.passive,
    )
}

/// A session's state as up / down, for the speaker.
fn up_down(
    mut state: watch::Receiver<crate::announce::bfd::SessionState>,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(state.borrow_and_update().is_up());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = state.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let up = state.borrow_and_update().is_up();
                    tx.send_if_modified(|now| std::mem::replace(now, up) != up);
                }
                () = tx.closed() => return,
            }
        }
    });
    rx
}
