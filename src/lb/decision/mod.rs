//! The announce decision: per LoadBalancer IP, who announces it and how.
//!
//! MetalLB's speaker decides every Service on every node from the same inputs, so all
//! nodes agree without talking to each other; this module does the same, with the
//! same rules, so a cluster moving from MetalLB keeps the same announcers:
//!
//! - the pool is the one holding all of the Service's ingress addresses (none, or
//!   addresses spread over two pools: not announced);
//! - an advertisement selects the Service when it names the pool and one of its
//!   `serviceSelectors` matches the Service's labels (none: every Service);
//! - **layer 2**: nothing is announced without a ready or serving endpoint
//!   (`ready` unset or true, or `serving` true). The candidates are the live nodes
//!   (every Node when no live set is known) that are not `NetworkUnavailable`, do
//!   not carry `node.kubernetes.io/exclude-from-external-load-balancers`, and are
//!   selected by one of the advertisements' `nodeSelectors`; with
//!   `externalTrafficPolicy: Local`, only those with a ready or serving endpoint.
//!   They are ranked by the sum of the matching `preferredNodeSelectors` weights
//!   (highest first), then by `sha256(node + "#" + ip)` in byte order, where `ip` is
//!   the Service's *first* ingress address; the first is the owner and announces
//!   every address of the Service on the interfaces of its advertisements (all
//!   interfaces when one of them names none). A Service with `allow-shared-ip` whose
//!   advertisements have `serviceSelectors` is refused, as MetalLB refuses it;
//! - **BGP**: each node decides for itself (there is no election): it announces when
//!   one of the Service's BGP advertisements selects it, the advertisements'
//!   LOCAL_PREFs do not conflict, it is neither `NetworkUnavailable` nor excluded,
//!   and the Service has a ready or serving endpoint (on this node, for
//!   `externalTrafficPolicy: Local`). Each of its advertisements gives one route per
//!   ingress address: the address masked to the aggregation length, its communities
//!   and LOCAL_PREF, sent to the advertisement's peers (all when it names none) among
//!   the peers whose `nodeSelectors` select the node. The live-node set plays no part
//!   here, as in MetalLB: a node that is down has no BGP session to announce over.
//!
//! [`decide`] computes everything from scratch from the Kubernetes objects;
//! [`AnnounceModel`] keeps compact projections and the per-Service results, so one
//! Service or EndpointSlice change recomputes one Service. Both give a
//! [`Decision`]; [`LocalAnnouncements`] is this node's part of it, what the layer-2
//! and BGP announcers act on.

mod elect;
mod input;
mod model;
mod reference;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use metallb_config::Community;

use crate::model::ServiceKey;

pub use elect::{election_key, metallb_ip_string};
pub use input::{EXCLUDE_LABEL, NodeInput, ServiceInput, SliceInput};
pub use model::AnnounceModel;
pub use reference::{Inputs, decide};

/// The whole decision: per Service, per address, and what this node announces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Every LoadBalancer Service with at least one ingress address.
    pub services: BTreeMap<ServiceKey, Arc<ServiceDecision>>,
    /// Every ingress address and the Services holding it (more than one when shared).
    pub ips: BTreeMap<IpAddr, BTreeSet<ServiceKey>>,
    /// What this node announces.
    pub local: LocalAnnouncements,
}

impl Decision {
    /// The decisions of the Services holding `ip`, in key order.
    pub fn services_of(&self, ip: IpAddr) -> impl Iterator<Item = &ServiceDecision> + '_ {
        self.ips
            .get(&ip)
            .into_iter()
            .flatten()
            .filter_map(|key| self.services.get(key).map(|decision| &**decision))
    }
}

/// What one LoadBalancer Service gets announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDecision {
    /// The Service.
    pub service: ServiceKey,
    /// Its ingress addresses, in `status.loadBalancer.ingress` order (the first one
    /// keys the layer-2 election).
    pub ips: Vec<IpAddr>,
    /// The pool holding them, when one pool holds them all.
    pub pool: Option<String>,
    /// Layer 2.
    pub l2: L2Outcome,
    /// BGP.
    pub bgp: BgpOutcome,
}

/// The layer-2 part of a Service's decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct L2Outcome {
    /// The L2Advertisements selecting the Service (pool and `serviceSelectors`).
    pub advertisements: Vec<String>,
    /// The eligible nodes in election order; the first is the owner. Empty when no
    /// node announces.
    pub ranked: Vec<Candidate>,
    /// Where the owner announces.
    pub interfaces: Interfaces,
    /// Why no node announces (`None` when the owner does).
    pub why: Option<String>,
}

impl L2Outcome {
    /// The node announcing the Service's addresses.
    pub fn owner(&self) -> Option<&str> {
        self.ranked.first().map(|candidate| &*candidate.node)
    }
}

/// An eligible node in the layer-2 election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The node.
    pub node: Arc<str>,
    /// The sum of the weights of the `preferredNodeSelectors` selecting it.
    pub score: i64,
}

/// The interfaces a layer-2 address is announced on.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Interfaces {
    /// Every interface (an advertisement names none).
    #[default]
    All,
    /// Only these.
    Only(BTreeSet<String>),
}

impl Interfaces {
    /// Both sets of interfaces: an address announced for two Services is announced
    /// wherever either wants it.
    pub fn union(&self, other: &Interfaces) -> Interfaces {
        match (self, other) {
            (Interfaces::Only(a), Interfaces::Only(b)) => {
                Interfaces::Only(a.union(b).cloned().collect())
            }
            _ => Interfaces::All,
        }
    }
}

impl fmt::Display for Interfaces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Interfaces::All => f.write_str("all"),
            Interfaces::Only(names) => {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                f.write_str(&names.join(","))
            }
        }
    }
}

/// The BGP part of a Service's decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BgpOutcome {
    /// The BGPAdvertisements selecting the Service (pool and `serviceSelectors`).
    pub advertisements: Vec<String>,
    /// One per advertisement and ingress address, in advertisement then address
    /// order.
    pub announcements: Vec<BgpAnnouncement>,
    /// Why no node announces (`None` when one does).
    pub why: Option<String>,
}

/// One advertisement's route for one ingress address, and who sends it to whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpAnnouncement {
    /// The BGPAdvertisement.
    pub advertisement: String,
    /// The ingress address.
    pub ip: IpAddr,
    /// The route.
    pub route: Route,
    /// The nodes announcing it, by name, each with the peers (BGPPeer names) it sends
    /// it to: the advertisement's peers among those with a session on the node.
    pub nodes: Vec<(Arc<str>, Vec<Arc<str>>)>,
}

/// A BGP route with its attributes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    /// The address masked to the aggregation length.
    pub prefix: IpNet,
    /// Communities, in MetalLB's order (a standard community sorts as the large
    /// community `value:0:0`).
    pub communities: Vec<Community>,
    /// LOCAL_PREF (sent to iBGP peers).
    pub local_pref: Option<u32>,
}

/// What this node announces: the input of the layer-2 and BGP announcers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalAnnouncements {
    /// Layer 2: each address this node owns, with its interfaces.
    pub l2: BTreeMap<IpAddr, Interfaces>,
    /// BGP: per peer (BGPPeer name), the routes to send it.
    pub bgp: BTreeMap<Arc<str>, BTreeSet<Route>>,
}

/// What changed in [`LocalAnnouncements`] since the announcers last looked. Each
/// update applies only differences, so what one update leaves as it was is never
/// listed; over several updates, something that changed and changed back may be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalTouched {
    /// Addresses whose layer-2 announcement appeared, went or changed interfaces.
    pub l2: BTreeSet<IpAddr>,
    /// Peers whose set of routes changed.
    pub bgp: BTreeSet<Arc<str>>,
}

impl LocalTouched {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.l2.is_empty() && self.bgp.is_empty()
    }
}
