//! Path attributes (RFC 4271 §5, RFC 4760, RFC 1997, RFC 6793, RFC 8092) and their
//! RFC 7606 error handling.

use super::notification::UpdateError;
use super::{AS_TRANS, Family, Reader, SessionCaps};
use crate::error::{Error, ErrorAction};
use bytes::{BufMut, BytesMut};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Attribute flag: optional (else well-known).
pub const FLAG_OPTIONAL: u8 = 0x80;
/// Attribute flag: transitive.
pub const FLAG_TRANSITIVE: u8 = 0x40;
/// Attribute flag: partial.
pub const FLAG_PARTIAL: u8 = 0x20;
/// Attribute flag: the length field has two octets.
pub const FLAG_EXTENDED_LENGTH: u8 = 0x10;

/// Attribute type codes this codec interprets.
pub mod kind {
    /// ORIGIN.
    pub const ORIGIN: u8 = 1;
    /// AS_PATH.
    pub const AS_PATH: u8 = 2;
    /// NEXT_HOP.
    pub const NEXT_HOP: u8 = 3;
    /// MULTI_EXIT_DISC.
    pub const MULTI_EXIT_DISC: u8 = 4;
    /// LOCAL_PREF.
    pub const LOCAL_PREF: u8 = 5;
    /// ATOMIC_AGGREGATE.
    pub const ATOMIC_AGGREGATE: u8 = 6;
    /// AGGREGATOR (kept raw: its width depends on the session).
    pub const AGGREGATOR: u8 = 7;
    /// COMMUNITIES (RFC 1997).
    pub const COMMUNITIES: u8 = 8;
    /// MP_REACH_NLRI (RFC 4760).
    pub const MP_REACH_NLRI: u8 = 14;
    /// MP_UNREACH_NLRI (RFC 4760).
    pub const MP_UNREACH_NLRI: u8 = 15;
    /// AS4_PATH (RFC 6793).
    pub const AS4_PATH: u8 = 17;
    /// AS4_AGGREGATOR (RFC 6793, kept raw).
    pub const AS4_AGGREGATOR: u8 = 18;
    /// LARGE_COMMUNITY (RFC 8092).
    pub const LARGE_COMMUNITIES: u8 = 32;
}

/// A path attribute: its flags as received (so re-encoding is byte-exact) and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// The flags octet ([`FLAG_OPTIONAL`], ...). [`FLAG_EXTENDED_LENGTH`] is honoured
    /// on encode and added when the value needs it.
    pub flags: u8,
    /// The value.
    pub value: AttributeValue,
}

/// ORIGIN values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// 0: learned from an interior protocol (or configured).
    Igp,
    /// 1: learned from EGP.
    Egp,
    /// 2: learned some other way.
    Incomplete,
}

/// AS_PATH segment types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegmentKind {
    /// 1: AS_SET.
    Set,
    /// 2: AS_SEQUENCE.
    Sequence,
    /// 3: AS_CONFED_SEQUENCE (RFC 5065).
    ConfedSequence,
    /// 4: AS_CONFED_SET (RFC 5065).
    ConfedSet,
}

/// One AS_PATH segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The segment type.
    pub kind: SegmentKind,
    /// Its ASNs (at most 255).
    pub asns: Vec<u32>,
}

/// An AS_PATH or AS4_PATH.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AsPath {
    /// The segments in order.
    pub segments: Vec<Segment>,
}

impl AsPath {
    /// One AS_SEQUENCE of `asns` (empty path for none, as iBGP originations have).
    pub fn sequence(asns: &[u32]) -> AsPath {
        AsPath {
            segments: asns
                .chunks(255)
                .map(|c| Segment {
                    kind: SegmentKind::Sequence,
                    asns: c.to_vec(),
                })
                .collect(),
        }
    }

    /// Every ASN, over all segments.
    pub fn asns(&self) -> impl Iterator<Item = u32> + '_ {
        self.segments.iter().flat_map(|s| s.asns.iter().copied())
    }

    fn decode(value: &[u8], four_octet: bool) -> Option<AsPath> {
        let width = if four_octet { 4 } else { 2 };
        let mut r = Reader::new(value);
        let mut segments = Vec::new();
        while r.remaining() > 0 {
            let kind = match r.u8()? {
                1 => SegmentKind::Set,
                2 => SegmentKind::Sequence,
                3 => SegmentKind::ConfedSequence,
                4 => SegmentKind::ConfedSet,
                _ => return None,
            };
            let count = r.u8()? as usize;
            // RFC 7606 §7.2: an empty segment is malformed.
            if count == 0 {
                return None;
            }
            let bytes = r.take(count * width)?;
            let asns = bytes
                .chunks_exact(width)
                .map(|c| match c {
                    [a, b] => u32::from(u16::from_be_bytes([*a, *b])),
                    [a, b, c, d] => u32::from_be_bytes([*a, *b, *c, *d]),
                    _ => unreachable!("chunks of 2 or 4"),
                })
                .collect();
            segments.push(Segment { kind, asns });
        }
        Some(AsPath { segments })
    }

    fn encode(&self, dst: &mut BytesMut, four_octet: bool) -> Result<(), Error> {
        for s in &self.segments {
            dst.put_u8(match s.kind {
                SegmentKind::Set => 1,
                SegmentKind::Sequence => 2,
                SegmentKind::ConfedSequence => 3,
                SegmentKind::ConfedSet => 4,
            });
            dst.put_u8(
                u8::try_from(s.asns.len())
                    .map_err(|_| Error::Unencodable("an AS_PATH segment of more than 255 ASNs"))?,
            );
            for &asn in &s.asns {
                if four_octet {
                    dst.put_u32(asn);
                } else {
                    dst.put_u16(u16::try_from(asn).unwrap_or(AS_TRANS));
                }
            }
        }
        Ok(())
    }
}

/// A community (RFC 1997): by convention the AS in the high half, a value in the low.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Community(pub u32);

impl Community {
    /// NO_EXPORT (RFC 1997).
    pub const NO_EXPORT: Community = Community(0xffff_ff01);
    /// NO_ADVERTISE (RFC 1997).
    pub const NO_ADVERTISE: Community = Community(0xffff_ff02);
    /// NO_EXPORT_SUBCONFED (RFC 1997).
    pub const NO_EXPORT_SUBCONFED: Community = Community(0xffff_ff03);

    /// The community `asn:value`.
    pub fn new(asn: u16, value: u16) -> Community {
        Community((u32::from(asn) << 16) | u32::from(value))
    }
}

/// A large community (RFC 8092): `global:local1:local2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity {
    /// Global administrator (an ASN).
    pub global: u32,
    /// First local data part.
    pub local1: u32,
    /// Second local data part.
    pub local2: u32,
}

/// The next hop of MP_REACH_NLRI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MpNextHop {
    /// A 4-octet IPv4 next hop.
    Ipv4(Ipv4Addr),
    /// A 16-octet global IPv6 next hop, followed by a link-local one when 32 octets
    /// long (RFC 2545 §3).
    Ipv6 {
        /// The global address.
        global: Ipv6Addr,
        /// The link-local address.
        link_local: Option<Ipv6Addr>,
    },
}

/// MP_REACH_NLRI for IPv4 or IPv6 unicast (other families stay raw attributes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpReach {
    /// The family of the prefixes.
    pub family: Family,
    /// The next hop.
    pub next_hop: MpNextHop,
    /// The reachable prefixes.
    pub nlri: Vec<IpNet>,
}

/// MP_UNREACH_NLRI for IPv4 or IPv6 unicast; with no prefixes it is the End-of-RIB
/// marker of its family (RFC 4724 §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpUnreach {
    /// The family of the prefixes.
    pub family: Family,
    /// The withdrawn prefixes.
    pub withdrawn: Vec<IpNet>,
}

/// A path attribute's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeValue {
    /// ORIGIN (type 1).
    Origin(Origin),
    /// AS_PATH (type 2), 2- or 4-octet per [`SessionCaps::four_octet_as`].
    AsPath(AsPath),
    /// NEXT_HOP (type 3).
    NextHop(Ipv4Addr),
    /// MULTI_EXIT_DISC (type 4).
    MultiExitDisc(u32),
    /// LOCAL_PREF (type 5).
    LocalPref(u32),
    /// ATOMIC_AGGREGATE (type 6).
    AtomicAggregate,
    /// COMMUNITIES (type 8).
    Communities(Vec<Community>),
    /// MP_REACH_NLRI (type 14).
    MpReach(MpReach),
    /// MP_UNREACH_NLRI (type 15).
    MpUnreach(MpUnreach),
    /// AS4_PATH (type 17), always 4-octet.
    As4Path(AsPath),
    /// LARGE_COMMUNITY (type 32).
    LargeCommunities(Vec<LargeCommunity>),
    /// Any other attribute (or MP_(UN)REACH of another family), kept as received.
    Unknown {
        /// The type code.
        kind: u8,
        /// The value.
        value: Vec<u8>,
    },
}

impl AttributeValue {
    /// The type code.
    pub fn kind(&self) -> u8 {
        match self {
            AttributeValue::Origin(_) => kind::ORIGIN,
            AttributeValue::AsPath(_) => kind::AS_PATH,
            AttributeValue::NextHop(_) => kind::NEXT_HOP,
            AttributeValue::MultiExitDisc(_) => kind::MULTI_EXIT_DISC,
            AttributeValue::LocalPref(_) => kind::LOCAL_PREF,
            AttributeValue::AtomicAggregate => kind::ATOMIC_AGGREGATE,
            AttributeValue::Communities(_) => kind::COMMUNITIES,
            AttributeValue::MpReach(_) => kind::MP_REACH_NLRI,
            AttributeValue::MpUnreach(_) => kind::MP_UNREACH_NLRI,
            AttributeValue::As4Path(_) => kind::AS4_PATH,
            AttributeValue::LargeCommunities(_) => kind::LARGE_COMMUNITIES,
            AttributeValue::Unknown { kind, .. } => *kind,
        }
    }
}

/// The optional and transitive bits a known attribute must carry, and what to do when
/// it is malformed (RFC 7606 §7 and the RFCs of each attribute).
fn rules(kind: u8) -> Option<(u8, ErrorAction)> {
    use ErrorAction::*;
    let well_known = FLAG_TRANSITIVE;
    let opt_trans = FLAG_OPTIONAL | FLAG_TRANSITIVE;
    Some(match kind {
        kind::ORIGIN | kind::AS_PATH | kind::NEXT_HOP | kind::LOCAL_PREF => {
            (well_known, TreatAsWithdraw)
        }
        kind::ATOMIC_AGGREGATE => (well_known, AttributeDiscard),
        kind::MULTI_EXIT_DISC => (FLAG_OPTIONAL, TreatAsWithdraw),
        kind::AGGREGATOR | kind::AS4_PATH | kind::AS4_AGGREGATOR => (opt_trans, AttributeDiscard),
        kind::COMMUNITIES | kind::LARGE_COMMUNITIES => (opt_trans, TreatAsWithdraw),
        kind::MP_REACH_NLRI | kind::MP_UNREACH_NLRI => (FLAG_OPTIONAL, SessionReset),
        _ => return None,
    })
}

/// A malformed attribute: the action and the UPDATE subcode.
pub(crate) struct AttrError {
    pub(crate) action: ErrorAction,
    pub(crate) subcode: UpdateError,
    pub(crate) reason: String,
}

/// Decodes prefixes of an NLRI field (RFC 4271 §4.3): a length octet and as many
/// octets as the length needs. `None` when malformed.
pub(crate) fn decode_prefixes(mut buf: &[u8], v6: bool) -> Option<Vec<IpNet>> {
    let max = if v6 { 128 } else { 32 };
    let mut out = Vec::new();
    while let Some((&len, rest)) = buf.split_first() {
        if len > max {
            return None;
        }
        let n = (len as usize).div_ceil(8);
        let bytes = rest.get(..n)?;
        buf = &rest[n..];
        out.push(if v6 {
            let mut a = [0u8; 16];
            a[..n].copy_from_slice(bytes);
            IpNet::V6(Ipv6Net::new(a.into(), len).ok()?)
        } else {
            let mut a = [0u8; 4];
            a[..n].copy_from_slice(bytes);
            IpNet::V4(Ipv4Net::new(a.into(), len).ok()?)
        });
    }
    Some(out)
}

/// Encodes prefixes as an NLRI field; the address octets past the prefix length are
/// not sent, those inside it are sent as stored (so a decode round-trips).
pub(crate) fn encode_prefixes<'a>(
    prefixes: impl IntoIterator<Item = &'a IpNet>,
    dst: &mut BytesMut,
) {
    for p in prefixes {
        let len = p.prefix_len();
        let n = (len as usize).div_ceil(8);
        dst.put_u8(len);
        match p {
            IpNet::V4(p) => dst.put_slice(&p.addr().octets()[..n]),
            IpNet::V6(p) => dst.put_slice(&p.addr().octets()[..n]),
        }
    }
}

fn family_is_v6(family: Family) -> Option<bool> {
    match family {
        Family::IPV4_UNICAST => Some(false),
        Family::IPV6_UNICAST => Some(true),
        _ => None,
    }
}

fn prefixes_match_family(prefixes: &[IpNet], v6: bool) -> bool {
    prefixes.iter().all(|p| matches!(p, IpNet::V6(_)) == v6)
}

impl Attribute {
    /// An attribute with the flags RFC 4271 prescribes for its type (optional
    /// transitive for types this codec does not know).
    pub fn new(value: AttributeValue) -> Attribute {
        let flags = rules(value.kind()).map_or(FLAG_OPTIONAL | FLAG_TRANSITIVE, |(f, _)| f);
        Attribute { flags, value }
    }

    /// Decodes one attribute: known types interpreted (or an RFC 7606 verdict), the
    /// rest kept raw.
    pub(crate) fn decode(
        flags: u8,
        kind: u8,
        value: &[u8],
        caps: &SessionCaps,
    ) -> Result<Attribute, AttrError> {
        let Some((expected_flags, action)) = rules(kind) else {
            if flags & FLAG_OPTIONAL == 0 {
                return Err(AttrError {
                    action: ErrorAction::SessionReset,
                    subcode: UpdateError::UnrecognizedWellKnownAttribute,
                    reason: format!("unrecognised well-known attribute {kind}"),
                });
            }
            return Ok(Attribute {
                flags,
                value: AttributeValue::Unknown {
                    kind,
                    value: value.to_vec(),
                },
            });
        };
        let err = |subcode, reason: &str| AttrError {
            action,
            subcode,
            reason: format!("attribute {kind}: {reason}"),
        };
        if flags & (FLAG_OPTIONAL | FLAG_TRANSITIVE) != expected_flags {
            return Err(err(
                UpdateError::AttributeFlagsError,
                "flags conflict with the type",
            ));
        }
        let len_err = || err(UpdateError::AttributeLengthError, "bad length");
        let u32_value = || {
            value
                .try_into()
                .map(u32::from_be_bytes)
                .map_err(|_| len_err())
        };
        let v = match kind {
            kind::ORIGIN => match value {
                [0] => AttributeValue::Origin(Origin::Igp),
                [1] => AttributeValue::Origin(Origin::Egp),
                [2] => AttributeValue::Origin(Origin::Incomplete),
                [_] => return Err(err(UpdateError::InvalidOriginAttribute, "undefined origin")),
                _ => return Err(len_err()),
            },
            kind::AS_PATH => AttributeValue::AsPath(
                AsPath::decode(value, caps.four_octet_as)
                    .ok_or_else(|| err(UpdateError::MalformedAsPath, "malformed AS_PATH"))?,
            ),
            kind::AS4_PATH => AttributeValue::As4Path(
                AsPath::decode(value, true)
                    .ok_or_else(|| err(UpdateError::MalformedAsPath, "malformed AS4_PATH"))?,
            ),
            kind::NEXT_HOP => AttributeValue::NextHop(Ipv4Addr::from(u32_value()?)),
            kind::MULTI_EXIT_DISC => AttributeValue::MultiExitDisc(u32_value()?),
            kind::LOCAL_PREF => AttributeValue::LocalPref(u32_value()?),
            kind::ATOMIC_AGGREGATE if value.is_empty() => AttributeValue::AtomicAggregate,
            kind::ATOMIC_AGGREGATE => return Err(len_err()),
            kind::COMMUNITIES if !value.is_empty() && value.len() % 4 == 0 => {
                AttributeValue::Communities(
                    value
                        .chunks_exact(4)
                        .map(|c| Community(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                        .collect(),
                )
            }
            kind::COMMUNITIES => return Err(len_err()),
            kind::LARGE_COMMUNITIES if !value.is_empty() && value.len() % 12 == 0 => {
                AttributeValue::LargeCommunities(
                    value
                        .chunks_exact(12)
                        .map(|c| LargeCommunity {
                            global: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                            local1: u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
                            local2: u32::from_be_bytes([c[8], c[9], c[10], c[11]]),
                        })
                        .collect(),
                )
            }
            kind::LARGE_COMMUNITIES => return Err(len_err()),
            kind::MP_REACH_NLRI | kind::MP_UNREACH_NLRI => {
                let reach = kind == kind::MP_REACH_NLRI;
                let bad = || {
                    err(
                        UpdateError::OptionalAttributeError,
                        if reach {
                            "malformed MP_REACH_NLRI"
                        } else {
                            "malformed MP_UNREACH_NLRI"
                        },
                    )
                };
                let mut r = Reader::new(value);
                let family = Family {
                    afi: r.u16().ok_or_else(bad)?,
                    safi: r.u8().ok_or_else(bad)?,
                };
                let Some(v6) = family_is_v6(family) else {
                    return Ok(raw(flags, kind, value));
                };
                if !reach {
                    let withdrawn = decode_prefixes(r.buf, v6).ok_or_else(bad)?;
                    return Ok(Attribute {
                        flags,
                        value: AttributeValue::MpUnreach(MpUnreach { family, withdrawn }),
                    });
                }
                let nh_len = r.u8().ok_or_else(bad)? as usize;
                let nh = r.take(nh_len).ok_or_else(bad)?;
                let next_hop = match nh.len() {
                    4 => MpNextHop::Ipv4(<[u8; 4]>::try_from(nh).expect("4 octets").into()),
                    16 => MpNextHop::Ipv6 {
                        global: <[u8; 16]>::try_from(nh).expect("16 octets").into(),
                        link_local: None,
                    },
                    32 => MpNextHop::Ipv6 {
                        global: <[u8; 16]>::try_from(&nh[..16]).expect("16 octets").into(),
                        link_local: Some(
                            <[u8; 16]>::try_from(&nh[16..]).expect("16 octets").into(),
                        ),
                    },
                    _ => return Err(bad()),
                };
                // The reserved octet (once the SNPA count) is ignored on receipt.
                r.u8().ok_or_else(bad)?;
                let nlri = decode_prefixes(r.buf, v6).ok_or_else(bad)?;
                AttributeValue::MpReach(MpReach {
                    family,
                    next_hop,
                    nlri,
                })
            }
            // AGGREGATOR and AS4_AGGREGATOR: known rules, value kept raw.
            _ => return Ok(raw(flags, kind, value)),
        };
        Ok(Attribute { flags, value: v })
    }

    pub(crate) fn encode(&self, dst: &mut BytesMut, caps: &SessionCaps) -> Result<(), Error> {
        let mut v = BytesMut::new();
        match &self.value {
            AttributeValue::Origin(o) => v.put_u8(match o {
                Origin::Igp => 0,
                Origin::Egp => 1,
                Origin::Incomplete => 2,
            }),
            AttributeValue::AsPath(p) => p.encode(&mut v, caps.four_octet_as)?,
            AttributeValue::As4Path(p) => p.encode(&mut v, true)?,
            AttributeValue::NextHop(a) => v.put_slice(&a.octets()),
            AttributeValue::MultiExitDisc(x) | AttributeValue::LocalPref(x) => v.put_u32(*x),
            AttributeValue::AtomicAggregate => {}
            AttributeValue::Communities(cs) => cs.iter().for_each(|c| v.put_u32(c.0)),
            AttributeValue::LargeCommunities(cs) => cs.iter().for_each(|c| {
                v.put_u32(c.global);
                v.put_u32(c.local1);
                v.put_u32(c.local2);
            }),
            AttributeValue::MpReach(m) => {
                let v6 = family_is_v6(m.family).ok_or(Error::Unencodable(
                    "MP_REACH_NLRI of a family other than unicast",
                ))?;
                if !prefixes_match_family(&m.nlri, v6) {
                    return Err(Error::Unencodable(
                        "MP_REACH_NLRI prefixes of another family",
                    ));
                }
                v.put_u16(m.family.afi);
                v.put_u8(m.family.safi);
                match m.next_hop {
                    MpNextHop::Ipv4(a) => {
                        v.put_u8(4);
                        v.put_slice(&a.octets());
                    }
                    MpNextHop::Ipv6 { global, link_local } => {
                        v.put_u8(if link_local.is_some() { 32 } else { 16 });
                        v.put_slice(&global.octets());
                        if let Some(ll) = link_local {
                            v.put_slice(&ll.octets());
                        }
                    }
                }
                v.put_u8(0);
                encode_prefixes(&m.nlri, &mut v);
            }
            AttributeValue::MpUnreach(m) => {
                let v6 = family_is_v6(m.family).ok_or(Error::Unencodable(
                    "MP_UNREACH_NLRI of a family other than unicast",
                ))?;
                if !prefixes_match_family(&m.withdrawn, v6) {
                    return Err(Error::Unencodable(
                        "MP_UNREACH_NLRI prefixes of another family",
                    ));
                }
                v.put_u16(m.family.afi);
                v.put_u8(m.family.safi);
                encode_prefixes(&m.withdrawn, &mut v);
            }
            AttributeValue::Unknown { value, .. } => v.put_slice(value),
        }
        let long = self.flags & FLAG_EXTENDED_LENGTH != 0 || v.len() > 255;
        if long {
            dst.put_u8(self.flags | FLAG_EXTENDED_LENGTH);
            dst.put_u8(self.value.kind());
            dst.put_u16(u16::try_from(v.len()).map_err(|_| Error::TooLong(v.len()))?);
        } else {
            dst.put_u8(self.flags);
            dst.put_u8(self.value.kind());
            dst.put_u8(v.len() as u8);
        }
        dst.put_slice(&v);
        Ok(())
    }
}

fn raw(flags: u8, kind: u8, value: &[u8]) -> Attribute {
    Attribute {
        flags,
        value: AttributeValue::Unknown {
            kind,
            value: value.to_vec(),
        },
    }
}
