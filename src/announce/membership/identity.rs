//! Who a member is on the wire (pure).
//!
//! A member is its Kubernetes node name (what the owner election ranks), the socket
//! address its peers send to, and a boot number: the Unix time in milliseconds when the
//! agent started, plus one each time the cluster declared it down and it rejoined. A
//! restarted agent therefore is a *new* member that supersedes the old one at once
//! (foca's identity renewal), instead of waiting out the old one's Down state.
//!
//! Members are keyed by name (foca's `Identity::Addr`): one live entry per node, and a
//! node whose address changes is the same node. Encoded with postcard (foca's codec):
//! the name as a length-prefixed string, the address, the boot number as a varint —
//! about 30 bytes for `worker-3` on IPv4.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// One agent in the membership: node name, address, boot number.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct MemberId {
    /// The Kubernetes node name.
    pub name: String,
    /// Where its peers send membership datagrams.
    pub addr: SocketAddr,
    /// When this incarnation of the agent started (Unix ms), bumped on each rejoin.
    pub boot: u64,
}

impl MemberId {
    /// A member for the node `name` reachable at `addr`, booted at `boot` (Unix ms).
    pub fn new(name: impl Into<String>, addr: SocketAddr, boot: u64) -> MemberId {
        MemberId {
            name: name.into(),
            addr,
            boot,
        }
    }

    /// The identity a join request to a seed is addressed to: its node name and address,
    /// boot unknown (a member accepts a join request addressed to its name, any boot).
    pub(crate) fn seed(name: String, addr: SocketAddr) -> MemberId {
        MemberId {
            name,
            addr,
            boot: 0,
        }
    }
}

impl foca::Identity for MemberId {
    type Addr = String;

    /// Rejoining after being declared down: the same node with the next boot number,
    /// which wins over the identity the cluster holds as down.
    fn renew(&self) -> Option<Self> {
        Some(MemberId {
            name: self.name.clone(),
            addr: self.addr,
            boot: self.boot.wrapping_add(1),
        })
    }

    fn addr(&self) -> String {
        self.name.clone()
    }

    /// The later boot wins; equal boots (two agents started in the same millisecond
    /// with one node name, a misconfiguration) are ordered by address so that every
    /// member decides alike.
    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.boot, self.addr) > (adversary.boot, adversary.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    fn id(name: &str, addr: &str, boot: u64) -> MemberId {
        MemberId::new(name, addr.parse().unwrap(), boot)
    }

    #[test]
    fn restarted_agent_supersedes_the_old_one() {
        let old = id("worker-1", "10.0.0.1:7947", 1_000);
        let restarted = id("worker-1", "10.0.0.1:7947", 5_000);
        assert_eq!(old.addr(), restarted.addr());
        assert!(restarted.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&restarted));
    }

    #[test]
    fn renewal_keeps_the_node_and_wins() {
        let down = id("worker-1", "10.0.0.1:7947", 1_000);
        let renewed = down.renew().unwrap();
        assert_eq!(renewed.name, "worker-1");
        assert_eq!(renewed.addr, down.addr);
        assert_eq!(renewed.boot, 1_001);
        assert!(renewed.win_addr_conflict(&down));
    }

    #[test]
    fn equal_boots_are_ordered_by_address_the_same_way_everywhere() {
        let a = id("dup", "10.0.0.1:7947", 7);
        let b = id("dup", "10.0.0.2:7947", 7);
        assert!(b.win_addr_conflict(&a) ^ a.win_addr_conflict(&b));
    }

    #[test]
    fn postcard_encoding_round_trips_and_is_small() {
        let member = id("worker-3", "192.168.50.13:7947", 1_800_000_000_000);
        let bytes = postcard::to_allocvec(&member).unwrap();
        assert!(bytes.len() <= 32, "{} bytes", bytes.len());
        let back: MemberId = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, member);
        let v6 = id("w", "[fd00:2::a]:7947", 1);
        let back: MemberId = postcard::from_bytes(&postcard::to_allocvec(&v6).unwrap()).unwrap();
        assert_eq!(back, v6);
    }
}
