//! The `metallb.io` custom resources, field for field as MetalLB's CRDs define them
//! (v1beta1, and BGPPeer in v1beta2 as stored and v1beta1 as still served).
//!
//! Every field of the current CRDs is here, including the ones ipvs-proxy does not act
//! on yet: those are accepted and reported once by [`crate::validate()`] (see
//! [`crate::UnsupportedField`]). Optional fields stay `Option` so validation can tell
//! "unset" from a default value.

use k8s_openapi::api::core::v1::SecretReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// `IPAddressPool` (v1beta1): addresses MetalLB may hand out.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "IPAddressPool",
    namespaced,
    status = "IPAddressPoolStatus",
    schema = "disabled",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolSpec {
    /// CIDR prefixes or `start-end` ranges, IPv4 and/or IPv6.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// `false`: addresses are given only to Services asking for this pool or an
    /// address in it. Unset means `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_assign: Option<bool>,
    /// Skip addresses ending in `.0` and `.255`.
    #[serde(
        default,
        rename = "avoidBuggyIPs",
        skip_serializing_if = "Option::is_none"
    )]
    pub avoid_buggy_ips: Option<bool>,
    /// Restricts the pool to some namespaces or Services, with a priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocationSpec>,
}

/// `IPAddressPool.spec.serviceAllocation`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocationSpec {
    /// Lower values are tried first; 0 or unset after every prioritized pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Namespaces whose Services may use the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Label selectors for those namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_selectors: Vec<LabelSelector>,
    /// Label selectors for the Services.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}

/// `IPAddressPool.status`: MetalLB's counters, written by the IPAM leader (MetalLB's
/// controller writes the same).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolStatus {
    /// Assigned IPv4 addresses.
    #[serde(
        default,
        rename = "assignedIPv4",
        skip_serializing_if = "Option::is_none"
    )]
    pub assigned_ipv4: Option<i64>,
    /// Assigned IPv6 addresses.
    #[serde(
        default,
        rename = "assignedIPv6",
        skip_serializing_if = "Option::is_none"
    )]
    pub assigned_ipv6: Option<i64>,
    /// Free IPv4 addresses.
    #[serde(
        default,
        rename = "availableIPv4",
        skip_serializing_if = "Option::is_none"
    )]
    pub available_ipv4: Option<i64>,
    /// Free IPv6 addresses.
    #[serde(
        default,
        rename = "availableIPv6",
        skip_serializing_if = "Option::is_none"
    )]
    pub available_ipv6: Option<i64>,
}

/// `L2Advertisement` (v1beta1): which pools are announced in layer 2, from where.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "L2Advertisement",
    namespaced,
    schema = "disabled",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    /// Pools by name.
    #[serde(
        default,
        rename = "ipAddressPools",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ip_address_pools: Vec<String>,
    /// Pools by label; with no names and no selectors, every pool.
    #[serde(
        default,
        rename = "ipAddressPoolSelectors",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Nodes that may announce; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// Interfaces to announce from; empty means all suitable ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    /// Services announced through this advertisement; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
    /// Soft preferences in the owner election.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred_node_selectors: Vec<PreferredNodeSelector>,
}

/// `L2Advertisement.spec.preferredNodeSelectors[]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PreferredNodeSelector {
    /// 1..=100; weights of matching selectors add up.
    #[serde(default)]
    pub weight: i32,
    /// The nodes that get the weight.
    #[serde(default)]
    pub preference: LabelSelector,
}

/// `BGPAdvertisement` (v1beta1): how pools are announced over BGP.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "BGPAdvertisement",
    namespaced,
    schema = "disabled",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct BGPAdvertisementSpec {
    /// IPv4 prefix length announced (default 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation_length: Option<i32>,
    /// IPv6 prefix length announced (default 128).
    #[serde(
        default,
        rename = "aggregationLengthV6",
        skip_serializing_if = "Option::is_none"
    )]
    pub aggregation_length_v6: Option<i32>,
    /// LOCAL_PREF, sent to iBGP peers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    /// `a:b`, `large:a:b:c`, or a `Community` alias.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
    /// Pools by name.
    #[serde(
        default,
        rename = "ipAddressPools",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ip_address_pools: Vec<String>,
    /// Pools by label; with no names and no selectors, every pool.
    #[serde(
        default,
        rename = "ipAddressPoolSelectors",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Nodes that announce (the next hops); empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// BGPPeer names to announce to; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// Services announced through this advertisement; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}

/// `BFDProfile` (v1beta1): BFD timers for the peers naming it.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "BFDProfile",
    namespaced,
    schema = "disabled",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct BFDProfileSpec {
    /// Required minimum receive interval, ms (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_interval: Option<u32>,
    /// Desired minimum transmit interval, ms (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transmit_interval: Option<u32>,
    /// Detection multiplier (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detect_multiplier: Option<u32>,
    /// Echo receive interval, ms (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_interval: Option<u32>,
    /// Echo mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_mode: Option<bool>,
    /// Wait for the peer's packets before sending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive_mode: Option<bool>,
    /// Multihop only: minimum incoming TTL.
    #[serde(
        default,
        rename = "minimumTtl",
        skip_serializing_if = "Option::is_none"
    )]
    pub minimum_ttl: Option<u32>,
}

/// `Community` (v1beta1): named BGP communities.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[kube(
    group = "metallb.io",
    version = "v1beta1",
    kind = "Community",
    namespaced,
    schema = "disabled",
    derive = "PartialEq",
    derive = "Default"
)]
#[serde(rename_all = "camelCase")]
pub struct CommunitySpec {
    /// The aliases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<CommunityAlias>,
}

/// `Community.spec.communities[]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct CommunityAlias {
    /// The alias.
    #[serde(default)]
    pub name: String,
    /// `a:b` or `large:a:b:c`.
    #[serde(default)]
    pub value: String,
}

/// `BGPPeer` in v1beta2, the stored version.
pub mod v1beta2 {
    use super::*;

    /// `BGPPeer` (v1beta2): a BGP session opened from the selected nodes.
    #[derive(CustomResource, Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
    #[kube(
        group = "metallb.io",
        version = "v1beta2",
        kind = "BGPPeer",
        namespaced,
        schema = "disabled",
        derive = "PartialEq",
        derive = "Default"
    )]
    #[serde(rename_all = "camelCase")]
    pub struct BGPPeerSpec {
        /// Our AS number.
        #[serde(default, rename = "myASN")]
        pub my_asn: u32,
        /// The peer's AS number (or `dynamicASN`).
        #[serde(default, rename = "peerASN", skip_serializing_if = "Option::is_none")]
        pub peer_asn: Option<u32>,
        /// The AS number to present instead of `myASN` (FRR mode in MetalLB).
        #[serde(default, rename = "localASN", skip_serializing_if = "Option::is_none")]
        pub local_asn: Option<u32>,
        /// `internal` or `external`: accept any AS of that kind.
        #[serde(
            default,
            rename = "dynamicASN",
            skip_serializing_if = "Option::is_none"
        )]
        pub dynamic_asn: Option<String>,
        /// The peer's address (or `interface`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub peer_address: Option<String>,
        /// Unnumbered BGP over this interface.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub interface: Option<String>,
        /// Our address for the session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub source_address: Option<String>,
        /// The peer's port (default 179).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub peer_port: Option<u16>,
        /// Proposed hold time (a Kubernetes duration, e.g. `90s`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub hold_time: Option<String>,
        /// Keepalive interval.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub keepalive_time: Option<String>,
        /// Connect retry interval, whole seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub connect_time: Option<String>,
        /// Our BGP identifier.
        #[serde(default, rename = "routerID", skip_serializing_if = "Option::is_none")]
        pub router_id: Option<String>,
        /// Nodes that open this session; empty means all.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub node_selectors: Vec<LabelSelector>,
        /// TCP MD5 password, inline.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub password: Option<String>,
        /// TCP MD5 password from a `kubernetes.io/basic-auth` Secret (key `password`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub password_secret: Option<SecretReference>,
        /// A `BFDProfile` name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub bfd_profile: Option<String>,
        /// Advertise graceful restart.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub enable_graceful_restart: Option<bool>,
        /// The peer is more than one hop away.
        #[serde(
            default,
            rename = "ebgpMultiHop",
            skip_serializing_if = "Option::is_none"
        )]
        pub ebgp_multi_hop: Option<bool>,
        /// The VRF to open the session in.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub vrf: Option<String>,
        /// Deprecated: one session per address family.
        #[serde(default, rename = "disableMP", skip_serializing_if = "Option::is_none")]
        pub disable_mp: Option<bool>,
        /// Announce both families over this session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub dual_stack_address_family: Option<bool>,
    }
}

/// `BGPPeer` in v1beta1, deprecated but still served.
pub mod v1beta1 {
    use super::*;

    /// `BGPPeer` (v1beta1).
    #[derive(CustomResource, Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
    #[kube(
        group = "metallb.io",
        version = "v1beta1",
        kind = "BGPPeer",
        namespaced,
        schema = "disabled",
        derive = "PartialEq",
        derive = "Default"
    )]
    #[serde(rename_all = "camelCase")]
    pub struct BGPPeerSpec {
        /// Our AS number.
        #[serde(default, rename = "myASN")]
        pub my_asn: u32,
        /// The peer's AS number.
        #[serde(default, rename = "peerASN")]
        pub peer_asn: u32,
        /// The peer's address.
        #[serde(default)]
        pub peer_address: String,
        /// Our address for the session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub source_address: Option<String>,
        /// The peer's port.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub peer_port: Option<u16>,
        /// Proposed hold time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub hold_time: Option<String>,
        /// Keepalive interval.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub keepalive_time: Option<String>,
        /// Our BGP identifier.
        #[serde(default, rename = "routerID", skip_serializing_if = "Option::is_none")]
        pub router_id: Option<String>,
        /// Nodes that open this session (same shape as a label selector).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub node_selectors: Vec<LabelSelector>,
        /// TCP MD5 password.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub password: Option<String>,
        /// A `BFDProfile` name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub bfd_profile: Option<String>,
        /// The peer is more than one hop away.
        #[serde(
            default,
            rename = "ebgpMultiHop",
            skip_serializing_if = "Option::is_none"
        )]
        pub ebgp_multi_hop: Option<bool>,
    }

    impl From<BGPPeer> for super::v1beta2::BGPPeer {
        /// The conversion MetalLB's webhook makes: the same fields, renamed where
        /// v1beta2 renamed them.
        fn from(old: BGPPeer) -> Self {
            let spec = old.spec;
            super::v1beta2::BGPPeer {
                metadata: old.metadata,
                spec: super::v1beta2::BGPPeerSpec {
                    my_asn: spec.my_asn,
                    peer_asn: Some(spec.peer_asn),
                    peer_address: Some(spec.peer_address),
                    source_address: spec.source_address,
                    peer_port: spec.peer_port,
                    hold_time: spec.hold_time,
                    keepalive_time: spec.keepalive_time,
                    router_id: spec.router_id,
                    node_selectors: spec.node_selectors,
                    password: spec.password,
                    bfd_profile: spec.bfd_profile,
                    ebgp_multi_hop: spec.ebgp_multi_hop,
                    ..Default::default()
                },
            }
        }
    }
}

pub use v1beta2::{BGPPeer, BGPPeerSpec};
