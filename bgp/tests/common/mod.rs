//! The oracle: netgauze-bgp-pkt, an independent mature BGP parser, and a common
//! "essentials" view of a message that both decoders' results are reduced to.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

use bgp_proto::packet::attribute::{AttributeValue, MpNextHop, Origin};
use bgp_proto::packet::open::Capability;
use bgp_proto::{Message, SessionCaps};
use ipnet::IpNet;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::notification::BgpNotificationMessage as N;
use netgauze_bgp_pkt::path_attribute::{AsPath, MpReach, MpUnreach, PathAttributeValue};
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput as _;

/// What both decoders must agree on.
#[derive(Debug, PartialEq, Eq)]
pub enum Essentials {
    Open {
        version: u8,
        my_as: u16,
        hold_time: u16,
        bgp_id: std::net::Ipv4Addr,
        asn: u32,
        capability_codes: Vec<u8>,
    },
    Update(UpdateEssentials),
    Notification {
        code: u8,
    },
    Keepalive,
    RouteRefresh {
        afi: u16,
        safi: u8,
    },
}

#[derive(Debug, PartialEq, Eq, Default)]
pub struct UpdateEssentials {
    pub withdrawn: Vec<IpNet>,
    pub nlri: Vec<IpNet>,
    pub attribute_types: Vec<u8>,
    pub origin: Option<u8>,
    pub as_path: Vec<u32>,
    pub as4_path: Vec<u32>,
    pub next_hop: Option<IpAddr>,
    pub link_local: Option<Ipv6Addr>,
    pub local_pref: Option<u32>,
    pub med: Option<u32>,
    pub communities: Vec<u32>,
    pub large_communities: Vec<(u32, u32, u32)>,
    pub end_of_rib: Option<(u16, u8)>,
}

/// Parses with netgauze; panics when it refuses or leaves bytes over.
pub fn netgauze_parse(bytes: &[u8], caps: &SessionCaps) -> BgpMessage {
    let mut ctx = BgpParsingContext::new(
        caps.four_octet_as,
        HashMap::new(),
        HashMap::new(),
        true,
        true,
        true,
        true,
    );
    let mut cur = SliceReader::new(bytes);
    let msg = BgpMessage::parse(&mut cur, &mut ctx)
        .unwrap_or_else(|e| panic!("netgauze refuses {bytes:02x?}: {e:?}"));
    assert_eq!(
        cur.remaining(),
        0,
        "netgauze left bytes over in {bytes:02x?}"
    );
    msg
}

pub fn ours(msg: &Message) -> Essentials {
    match msg {
        Message::Open(o) => Essentials::Open {
            version: o.version,
            my_as: o.my_as,
            hold_time: o.hold_time,
            bgp_id: o.bgp_id,
            asn: o.asn(),
            capability_codes: o.capabilities().map(Capability::code).collect(),
        },
        Message::Update(u) => {
            let mut e = UpdateEssentials {
                withdrawn: u.withdrawn_prefixes(),
                nlri: u.announced(),
                attribute_types: u.attributes.iter().map(|a| a.value.kind()).collect(),
                end_of_rib: u.end_of_rib_family().map(|f| (f.afi, f.safi)),
                ..Default::default()
            };
            for a in &u.attributes {
                match &a.value {
                    AttributeValue::Origin(o) => {
                        e.origin = Some(match o {
                            Origin::Igp => 0,
                            Origin::Egp => 1,
                            Origin::Incomplete => 2,
                        })
                    }
                    AttributeValue::AsPath(p) => e.as_path = p.asns().collect(),
                    AttributeValue::As4Path(p) => e.as4_path = p.asns().collect(),
                    AttributeValue::NextHop(n) => e.next_hop = Some(IpAddr::V4(*n)),
                    AttributeValue::MultiExitDisc(m) => e.med = Some(*m),
                    AttributeValue::LocalPref(l) => e.local_pref = Some(*l),
                    AttributeValue::Communities(c) => {
                        e.communities = c.iter().map(|c| c.0).collect()
                    }
                    AttributeValue::LargeCommunities(c) => {
                        e.large_communities =
                            c.iter().map(|c| (c.global, c.local1, c.local2)).collect()
                    }
                    AttributeValue::MpReach(m) => match m.next_hop {
                        MpNextHop::Ipv4(a) => e.next_hop = Some(IpAddr::V4(a)),
                        MpNextHop::Ipv6 { global, link_local } => {
                            e.next_hop = Some(IpAddr::V6(global));
                            e.link_local = link_local;
                        }
                    },
                    _ => {}
                }
            }
            Essentials::Update(e)
        }
        Message::Notification(n) => Essentials::Notification {
            code: n.code.to_bytes().0,
        },
        Message::Keepalive => Essentials::Keepalive,
        Message::RouteRefresh(r) => Essentials::RouteRefresh {
            afi: r.family.afi,
            safi: r.family.safi,
        },
    }
}

pub fn theirs(msg: &BgpMessage) -> Essentials {
    match msg {
        BgpMessage::Open(o) => Essentials::Open {
            version: o.version(),
            my_as: o.my_as(),
            hold_time: o.hold_time(),
            bgp_id: o.bgp_id(),
            asn: o.my_asn4(),
            capability_codes: o
                .capabilities()
                .iter()
                .map(|c| c.code().map(|c| c as u8).unwrap_or_else(|c| c))
                .collect(),
        },
        BgpMessage::Update(u) => {
            let mut e = UpdateEssentials {
                withdrawn: u
                    .withdraw_routes()
                    .iter()
                    .map(|p| IpNet::V4(p.network().address()))
                    .collect(),
                nlri: u
                    .nlri()
                    .iter()
                    .map(|p| IpNet::V4(p.network().address()))
                    .collect(),
                attribute_types: u
                    .path_attributes()
                    .iter()
                    .map(|a| {
                        a.path_attribute_type()
                            .map(|t| t as u8)
                            .unwrap_or_else(|t| t)
                    })
                    .collect(),
                end_of_rib: u.end_of_rib().map(|t| {
                    (
                        t.address_family() as u16,
                        t.subsequent_address_family() as u8,
                    )
                }),
                ..Default::default()
            };
            for a in u.path_attributes() {
                match a.value() {
                    PathAttributeValue::Origin(o) => e.origin = Some(*o as u8),
                    PathAttributeValue::AsPath(AsPath::As2PathSegments(s)) => {
                        e.as_path = s
                            .iter()
                            .flat_map(|s| s.as_numbers().iter().map(|&a| u32::from(a)))
                            .collect()
                    }
                    PathAttributeValue::AsPath(AsPath::As4PathSegments(s)) => {
                        e.as_path = s
                            .iter()
                            .flat_map(|s| s.as_numbers().iter().copied())
                            .collect()
                    }
                    PathAttributeValue::As4Path(p) => {
                        e.as4_path = p
                            .segments()
                            .iter()
                            .flat_map(|s| s.as_numbers().iter().copied())
                            .collect()
                    }
                    PathAttributeValue::NextHop(n) => e.next_hop = Some(IpAddr::V4(n.next_hop())),
                    PathAttributeValue::MultiExitDiscriminator(m) => e.med = Some(m.metric()),
                    PathAttributeValue::LocalPreference(l) => e.local_pref = Some(l.metric()),
                    PathAttributeValue::Communities(c) => {
                        e.communities = c.communities().iter().map(|c| c.value()).collect()
                    }
                    PathAttributeValue::LargeCommunities(c) => {
                        e.large_communities = c
                            .communities()
                            .iter()
                            .map(|c| (c.global_admin(), c.local_data1(), c.local_data2()))
                            .collect()
                    }
                    PathAttributeValue::MpReach(MpReach::Ipv4Unicast {
                        next_hop,
                        next_hop_local,
                        nlri,
                    }) => {
                        e.next_hop = Some(*next_hop);
                        e.link_local = *next_hop_local;
                        e.nlri
                            .extend(nlri.iter().map(|p| IpNet::V4(p.network().address())));
                    }
                    PathAttributeValue::MpReach(MpReach::Ipv6Unicast {
                        next_hop_global,
                        next_hop_local,
                        nlri,
                    }) => {
                        e.next_hop = Some(IpAddr::V6(*next_hop_global));
                        e.link_local = *next_hop_local;
                        e.nlri
                            .extend(nlri.iter().map(|p| IpNet::V6(p.network().address())));
                    }
                    PathAttributeValue::MpUnreach(MpUnreach::Ipv4Unicast { nlri }) => e
                        .withdrawn
                        .extend(nlri.iter().map(|p| IpNet::V4(p.network().address()))),
                    PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast { nlri }) => e
                        .withdrawn
                        .extend(nlri.iter().map(|p| IpNet::V6(p.network().address()))),
                    _ => {}
                }
            }
            Essentials::Update(e)
        }
        BgpMessage::Notification(n) => Essentials::Notification {
            code: match n {
                N::MessageHeaderError(_) => 1,
                N::OpenMessageError(_) => 2,
                N::UpdateMessageError(_) => 3,
                N::HoldTimerExpiredError(_) => 4,
                N::FiniteStateMachineError(_) => 5,
                N::CeaseError(_) => 6,
                N::RouteRefreshError(_) => 7,
            },
        },
        BgpMessage::KeepAlive => Essentials::Keepalive,
        BgpMessage::RouteRefresh(r) => Essentials::RouteRefresh {
            afi: r.address_type().address_family() as u16,
            safi: r.address_type().subsequent_address_family() as u8,
        },
    }
}

/// Decodes `bytes` with both decoders, checks ours re-encodes byte-identically and that
/// both agree on the essentials; returns our message.
pub fn cross_check(bytes: &[u8], caps: &SessionCaps, what: &str) -> Message {
    let msg = bgp_proto::decode_message(bytes, caps).unwrap_or_else(|e| panic!("{what}: {e}"));
    let again = bgp_proto::encode_to_vec(&msg, caps).unwrap();
    assert_eq!(again, bytes, "{what}: re-encoding differs");
    let ng = netgauze_parse(bytes, caps);
    assert_eq!(ours(&msg), theirs(&ng), "{what}: the decoders disagree");
    msg
}
