//! BFD sessions for the speaker's peers, from their `BFDProfile`s.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metallb_config::BfdProfile;
use tokio::sync::watch;
use tracing::warn;

use super::NodeAddresses;
use crate::announce::bfd::{BfdManager, Config as BfdConfig, Error as BfdError, SessionKey};
use crate::announce::bgp::{BfdSessions, PeerConfig};

/// BFD sessions for the speaker's peers, from their `BFDProfile`s.
pub(super) struct AgentBfd {
    manager: Arc<std::sync::OnceLock<Arc<BfdManager>>>,
    profiles: Mutex<BTreeMap<String, BfdProfile>>,
    addresses: Mutex<NodeAddresses>,
}

impl AgentBfd {
    pub(super) fn new(manager: Arc<std::sync::OnceLock<Arc<BfdManager>>>) -> AgentBfd {
        AgentBfd {
            manager,
            profiles: Mutex::new(BTreeMap::new()),
            addresses: Mutex::new(NodeAddresses::default()),
        }
    }

    pub(super) fn set_profiles(&self, profiles: BTreeMap<String, BfdProfile>) {
        *self.profiles.lock().unwrap_or_else(PoisonError::into_inner) = profiles;
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
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        let config = BfdConfig::from_profile(
            Some(ms(profile.receive_interval)),
            Some(ms(profile.transmit_interval)),
            Some(profile.detect_multiplier),
            profile.passive,
        );
        let manager = self.manager.get_or_init(|| Arc::new(BfdManager::new()));
        let state = match manager.add_session(key, config, None) {
            Ok(state) => state,
            Err(BfdError::Duplicate(_)) => manager.subscribe(key)?,
            Err(error) => {
                warn!(peer = %peer.name, "the BFD session cannot start: {error}");
                return None;
            }
        };
        Some(up_down(state))
    }
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
