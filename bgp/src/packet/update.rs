//! UPDATE (RFC 4271 §4.3) with RFC 7606 revised error handling, End-of-RIB markers
//! (RFC 4724 §2) and builders for what an announcer sends.

use super::attribute::{
    AsPath, Attribute, AttributeValue, Community, LargeCommunity, MpNextHop, MpReach, MpUnreach,
    Origin, decode_prefixes, encode_prefixes, kind,
};
use super::notification::{ErrorCode, Notification, UpdateError};
use super::{AS_TRANS, Family, Reader, SessionCaps};
use crate::error::{Error, ErrorAction};
use bytes::{BufMut, BytesMut};
use ipnet::{IpNet, Ipv4Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An UPDATE message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    /// Withdrawn IPv4 unicast prefixes.
    pub withdrawn: Vec<Ipv4Net>,
    /// Path attributes in the order received.
    pub attributes: Vec<Attribute>,
    /// Reachable IPv4 unicast prefixes (NLRI).
    pub nlri: Vec<Ipv4Net>,
}

/// What an announcer originates for a set of prefixes of one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The prefixes, all IPv4 or all IPv6.
    pub prefixes: Vec<IpNet>,
    /// The next hop: IPv4 goes in NEXT_HOP, IPv6 in MP_REACH_NLRI.
    pub next_hop: IpAddr,
    /// An IPv6 link-local next hop sent beside a global one (RFC 2545).
    pub link_local: Option<Ipv6Addr>,
    /// The AS_PATH: empty towards iBGP peers, our AS towards eBGP ones.
    pub as_path: Vec<u32>,
    /// LOCAL_PREF, for iBGP peers only.
    pub local_pref: Option<u32>,
    /// COMMUNITIES.
    pub communities: Vec<Community>,
    /// LARGE_COMMUNITY.
    pub large_communities: Vec<LargeCommunity>,
}

fn update_error(subcode: UpdateError, data: Vec<u8>, reason: impl Into<String>) -> Error {
    Error::reset(ErrorCode::Update(subcode), data, reason)
}

impl Update {
    /// The End-of-RIB marker of `family` (RFC 4724 §2): an empty UPDATE for IPv4
    /// unicast, an MP_UNREACH_NLRI without prefixes for any other family.
    pub fn end_of_rib(family: Family) -> Update {
        if family == Family::IPV4_UNICAST {
            return Update::default();
        }
        Update {
            attributes: vec![Attribute::new(AttributeValue::MpUnreach(MpUnreach {
                family,
                withdrawn: Vec::new(),
            }))],
            ..Update::default()
        }
    }

    /// The family whose End-of-RIB marker this UPDATE is, if it is one.
    pub fn end_of_rib_family(&self) -> Option<Family> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        match self.attributes.as_slice() {
            [] => Some(Family::IPV4_UNICAST),
            [a] => match &a.value {
                AttributeValue::MpUnreach(m) if m.withdrawn.is_empty() => Some(m.family),
                // An End-of-RIB of a family we keep raw: AFI and SAFI only.
                AttributeValue::Unknown {
                    kind: kind::MP_UNREACH_NLRI,
                    value,
                } if value.len() == 3 => Some(Family {
                    afi: u16::from_be_bytes([value[0], value[1]]),
                    safi: value[2],
                }),
                _ => None,
            },
            _ => None,
        }
    }

    /// Announces `a` with ORIGIN IGP. With a peer lacking 4-octet AS support
    /// (`caps.four_octet_as` false) and an ASN above 65535 in the path, AS_PATH carries
    /// AS_TRANS and AS4_PATH the real path (RFC 6793 §4.2.2).
    pub fn announce(a: &Announcement, caps: &SessionCaps) -> Update {
        // The AS_PATH as it will be on the wire, so that a decode gives it back equal.
        let wire_path: Vec<u32> = if caps.four_octet_as {
            a.as_path.clone()
        } else {
            a.as_path
                .iter()
                .map(|&asn| {
                    if asn > u32::from(u16::MAX) {
                        u32::from(AS_TRANS)
                    } else {
                        asn
                    }
                })
                .collect()
        };
        let mut attributes = vec![
            Attribute::new(AttributeValue::Origin(Origin::Igp)),
            Attribute::new(AttributeValue::AsPath(AsPath::sequence(&wire_path))),
        ];
        let mut nlri = Vec::new();
        match a.next_hop {
            IpAddr::V4(nh) if a.prefixes.iter().all(|p| matches!(p, IpNet::V4(_))) => {
                attributes.push(Attribute::new(AttributeValue::NextHop(nh)));
                nlri = a
                    .prefixes
                    .iter()
                    .filter_map(|p| match p {
                        IpNet::V4(p) => Some(*p),
                        IpNet::V6(_) => None,
                    })
                    .collect();
            }
            nh => {
                let v6 = a.prefixes.iter().any(|p| matches!(p, IpNet::V6(_)));
                let next_hop = match nh {
                    IpAddr::V4(a) => MpNextHop::Ipv4(a),
                    IpAddr::V6(global) => MpNextHop::Ipv6 {
                        global,
                        link_local: a.link_local,
                    },
                };
                attributes.push(Attribute::new(AttributeValue::MpReach(MpReach {
                    family: if v6 {
                        Family::IPV6_UNICAST
                    } else {
                        Family::IPV4_UNICAST
                    },
                    next_hop,
                    nlri: a.prefixes.clone(),
                })));
            }
        }
        if let Some(lp) = a.local_pref {
            attributes.push(Attribute::new(AttributeValue::LocalPref(lp)));
        }
        if !a.communities.is_empty() {
            attributes.push(Attribute::new(AttributeValue::Communities(
                a.communities.clone(),
            )));
        }
        if !caps.four_octet_as && a.as_path.iter().any(|&asn| asn > u32::from(u16::MAX)) {
            attributes.push(Attribute::new(AttributeValue::As4Path(AsPath::sequence(
                &a.as_path,
            ))));
        }
        if !a.large_communities.is_empty() {
            attributes.push(Attribute::new(AttributeValue::LargeCommunities(
                a.large_communities.clone(),
            )));
        }
        // Attributes go in ascending type order, as RFC 4271 §5 asks senders to.
        attributes.sort_by_key(|a| a.value.kind());
        Update {
            withdrawn: Vec::new(),
            attributes,
            nlri,
        }
    }

    /// Withdraws `prefixes`: IPv4 in the withdrawn routes field, IPv6 in MP_UNREACH_NLRI.
    pub fn withdraw(prefixes: &[IpNet]) -> Update {
        let mut withdrawn = Vec::new();
        let mut v6 = Vec::new();
        for p in prefixes {
            match p {
                IpNet::V4(p) => withdrawn.push(*p),
                IpNet::V6(_) => v6.push(*p),
            }
        }
        let mut attributes = Vec::new();
        if !v6.is_empty() {
            attributes.push(Attribute::new(AttributeValue::MpUnreach(MpUnreach {
                family: Family::IPV6_UNICAST,
                withdrawn: v6,
            })));
        }
        Update {
            withdrawn,
            attributes,
            nlri: Vec::new(),
        }
    }

    /// The first attribute of type `kind`.
    pub fn attribute(&self, kind: u8) -> Option<&AttributeValue> {
        self.attributes
            .iter()
            .map(|a| &a.value)
            .find(|v| v.kind() == kind)
    }

    /// ORIGIN.
    pub fn origin(&self) -> Option<Origin> {
        match self.attribute(kind::ORIGIN)? {
            AttributeValue::Origin(o) => Some(*o),
            _ => None,
        }
    }

    /// AS_PATH.
    pub fn as_path(&self) -> Option<&AsPath> {
        match self.attribute(kind::AS_PATH)? {
            AttributeValue::AsPath(p) => Some(p),
            _ => None,
        }
    }

    /// NEXT_HOP.
    pub fn next_hop(&self) -> Option<Ipv4Addr> {
        match self.attribute(kind::NEXT_HOP)? {
            AttributeValue::NextHop(a) => Some(*a),
            _ => None,
        }
    }

    /// LOCAL_PREF.
    pub fn local_pref(&self) -> Option<u32> {
        match self.attribute(kind::LOCAL_PREF)? {
            AttributeValue::LocalPref(x) => Some(*x),
            _ => None,
        }
    }

    /// COMMUNITIES (empty when absent).
    pub fn communities(&self) -> &[Community] {
        match self.attribute(kind::COMMUNITIES) {
            Some(AttributeValue::Communities(c)) => c,
            _ => &[],
        }
    }

    /// LARGE_COMMUNITY (empty when absent).
    pub fn large_communities(&self) -> &[LargeCommunity] {
        match self.attribute(kind::LARGE_COMMUNITIES) {
            Some(AttributeValue::LargeCommunities(c)) => c,
            _ => &[],
        }
    }

    /// MP_REACH_NLRI of IPv4 or IPv6 unicast.
    pub fn mp_reach(&self) -> Option<&MpReach> {
        match self.attribute(kind::MP_REACH_NLRI)? {
            AttributeValue::MpReach(m) => Some(m),
            _ => None,
        }
    }

    /// MP_UNREACH_NLRI of IPv4 or IPv6 unicast.
    pub fn mp_unreach(&self) -> Option<&MpUnreach> {
        match self.attribute(kind::MP_UNREACH_NLRI)? {
            AttributeValue::MpUnreach(m) => Some(m),
            _ => None,
        }
    }

    /// Every prefix announced, in NLRI and MP_REACH_NLRI.
    pub fn announced(&self) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = self.nlri.iter().map(|p| IpNet::V4(*p)).collect();
        out.extend(
            self.mp_reach()
                .into_iter()
                .flat_map(|m| m.nlri.iter().copied()),
        );
        out
    }

    /// Every prefix withdrawn, in withdrawn routes and MP_UNREACH_NLRI.
    pub fn withdrawn_prefixes(&self) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = self.withdrawn.iter().map(|p| IpNet::V4(*p)).collect();
        out.extend(
            self.mp_unreach()
                .into_iter()
                .flat_map(|m| m.withdrawn.iter().copied()),
        );
        out
    }

    pub(crate) fn decode(body: &[u8], caps: &SessionCaps) -> Result<Update, Error> {
        let mut r = Reader::new(body);
        let list_err =
            |reason: &str| update_error(UpdateError::MalformedAttributeList, Vec::new(), reason);
        let withdrawn_len = r.u16().ok_or_else(|| list_err("truncated"))? as usize;
        let withdrawn_bytes = r
            .take(withdrawn_len)
            .ok_or_else(|| list_err("withdrawn routes length exceeds the message"))?;
        let attrs_len = r.u16().ok_or_else(|| list_err("truncated"))? as usize;
        let attr_bytes = r
            .take(attrs_len)
            .ok_or_else(|| list_err("total path attribute length exceeds the message"))?;
        let nlri_bytes = r.buf;
        // RFC 7606 §5.3: a malformed prefix field makes the rest unparseable.
        let network_err = || {
            update_error(
                UpdateError::InvalidNetworkField,
                Vec::new(),
                "malformed prefix",
            )
        };
        let as_v4 = |p: Vec<IpNet>| {
            p.into_iter()
                .filter_map(|p| match p {
                    IpNet::V4(p) => Some(p),
                    IpNet::V6(_) => None,
                })
                .collect::<Vec<_>>()
        };
        let withdrawn = as_v4(decode_prefixes(withdrawn_bytes, false).ok_or_else(network_err)?);
        let nlri = as_v4(decode_prefixes(nlri_bytes, false).ok_or_else(network_err)?);

        // The worst RFC 7606 outcome so far short of a reset, with the NOTIFICATION
        // RFC 4271 would have sent.
        let mut worst: Option<(ErrorAction, Notification, String)> = None;
        let mut note = |action: ErrorAction, n: Notification, reason: String| {
            if worst.as_ref().is_none_or(|(a, ..)| action > *a) {
                worst = Some((action, n, reason));
            }
        };
        let mut seen = [false; 256];
        let mut attributes = Vec::new();
        let mut a = Reader::new(attr_bytes);
        while a.remaining() > 0 {
            let start = a.buf;
            // RFC 7606 §4: an attribute running past the list is treat-as-withdraw; the
            // total length still locates the NLRI.
            let (Some(flags), Some(kind)) = (a.u8(), a.u8()) else {
                note(
                    ErrorAction::TreatAsWithdraw,
                    Notification::new(ErrorCode::Update(UpdateError::MalformedAttributeList)),
                    "truncated attribute header".into(),
                );
                break;
            };
            let len = if flags & super::attribute::FLAG_EXTENDED_LENGTH != 0 {
                a.u16().map(usize::from)
            } else {
                a.u8().map(usize::from)
            };
            let Some(value) = len.and_then(|len| a.take(len)) else {
                note(
                    ErrorAction::TreatAsWithdraw,
                    Notification::new(ErrorCode::Update(UpdateError::AttributeLengthError)),
                    format!("attribute {kind} runs past the attribute list"),
                );
                break;
            };
            let whole = &start[..start.len() - a.remaining()];
            if std::mem::replace(&mut seen[kind as usize], true) {
                // RFC 7606 §3(g): repeated MP_(UN)REACH resets, any other repeat is
                // dropped.
                if kind == kind::MP_REACH_NLRI || kind == kind::MP_UNREACH_NLRI {
                    return Err(list_err("repeated MP_REACH_NLRI or MP_UNREACH_NLRI"));
                }
                continue;
            }
            match Attribute::decode(flags, kind, value, caps) {
                Ok(attr) => attributes.push(attr),
                Err(e) => {
                    let n = Notification {
                        code: ErrorCode::Update(e.subcode),
                        data: whole.to_vec(),
                    };
                    if e.action == ErrorAction::SessionReset {
                        return Err(Error::Malformed {
                            notification: n,
                            action: e.action,
                            withdrawn: Vec::new(),
                            reason: e.reason,
                        });
                    }
                    note(e.action, n, e.reason);
                }
            }
        }
        let update = Update {
            withdrawn,
            attributes,
            nlri,
        };
        // RFC 7606 §3(d): well-known mandatory attributes are needed only with prefixes
        // to announce (NEXT_HOP only for the NLRI field, RFC 4760 §3).
        let reach =
            !update.nlri.is_empty() || update.mp_reach().is_some_and(|m| !m.nlri.is_empty());
        if reach {
            let mut mandatory = vec![kind::ORIGIN, kind::AS_PATH];
            if !update.nlri.is_empty() {
                mandatory.push(kind::NEXT_HOP);
            }
            // A present but malformed attribute already decided the outcome.
            if let Some(missing) = mandatory.into_iter().find(|k| !seen[*k as usize]) {
                note(
                    ErrorAction::TreatAsWithdraw,
                    Notification {
                        code: ErrorCode::Update(UpdateError::MissingWellKnownAttribute),
                        data: vec![missing],
                    },
                    format!("missing well-known attribute {missing}"),
                );
            }
        }
        match worst {
            Some((ErrorAction::TreatAsWithdraw, notification, reason)) => {
                let mut withdrawn = update.withdrawn_prefixes();
                withdrawn.extend(update.announced());
                Err(Error::Malformed {
                    notification,
                    action: ErrorAction::TreatAsWithdraw,
                    withdrawn,
                    reason,
                })
            }
            // Attribute-discard: the bad attributes were left out above.
            _ => Ok(update),
        }
    }

    pub(crate) fn encode(&self, dst: &mut BytesMut, caps: &SessionCaps) -> Result<(), Error> {
        let withdrawn_at = dst.len();
        dst.put_u16(0);
        encode_prefixes(
            self.withdrawn
                .iter()
                .map(|p| IpNet::V4(*p))
                .collect::<Vec<_>>()
                .iter(),
            dst,
        );
        let wlen = dst.len() - withdrawn_at - 2;
        let attrs_at = dst.len();
        dst.put_u16(0);
        for a in &self.attributes {
            a.encode(dst, caps)?;
        }
        let alen = dst.len() - attrs_at - 2;
        let (Ok(wlen), Ok(alen)) = (u16::try_from(wlen), u16::try_from(alen)) else {
            return Err(Error::TooLong(dst.len()));
        };
        dst[withdrawn_at..withdrawn_at + 2].copy_from_slice(&wlen.to_be_bytes());
        dst[attrs_at..attrs_at + 2].copy_from_slice(&alen.to_be_bytes());
        encode_prefixes(
            self.nlri
                .iter()
                .map(|p| IpNet::V4(*p))
                .collect::<Vec<_>>()
                .iter(),
            dst,
        );
        Ok(())
    }
}
