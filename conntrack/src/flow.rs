//! A conntrack entry as a typed value, built from and turned back into ctnetlink
//! attributes. No I/O.

use std::fmt;
use std::net::IpAddr;

use netlink_packet_core::{DefaultNla, NLA_TYPE_MASK, Nla, parse_u16_be, parse_u32_be};
use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, IPTuple, ProtoTuple, Protocol, Tuple,
};

/// IANA protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IANA protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IANA protocol number of SCTP.
pub const IPPROTO_SCTP: u8 = 132;

/// `CTA_ID`: the kernel's id of an entry, so a delete cannot hit a newer entry that
/// reuses the tuple.
const CTA_ID: u16 = 12;
/// `CTA_ZONE`: the conntrack zone; entries outside zone 0 are found only with it.
const CTA_ZONE: u16 = 18;

/// The address family of a dump (the `nfgenmsg` family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4 (`NFPROTO_IPV4`).
    Ipv4,
    /// IPv6 (`NFPROTO_IPV6`).
    Ipv6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }

    pub(crate) fn netfilter(self) -> NetfilterProtoFamily {
        match self {
            Family::Ipv4 => NetfilterProtoFamily::IPv4,
            Family::Ipv6 => NetfilterProtoFamily::IPv6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        })
    }
}

/// One direction of a flow: addresses, protocol and (for protocols that have them)
/// ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowTuple {
    /// Source address.
    pub source: IpAddr,
    /// Destination address.
    pub destination: IpAddr,
    /// IANA protocol number (e.g. [`IPPROTO_UDP`]).
    pub protocol: u8,
    /// Source port; `None` for protocols without ports (ICMP, GRE).
    pub source_port: Option<u16>,
    /// Destination port; `None` for protocols without ports.
    pub destination_port: Option<u16>,
}

impl FlowTuple {
    /// Reads a `CTA_TUPLE_ORIG`/`CTA_TUPLE_REPLY` nest.
    fn from_nest(nest: &[Tuple], which: &str) -> Result<FlowTuple, String> {
        let mut source = None;
        let mut destination = None;
        let mut protocol = None;
        let mut source_port = None;
        let mut destination_port = None;
        for part in nest {
            match part {
                Tuple::Ip(ips) => {
                    for ip in ips {
                        match ip {
                            IPTuple::SourceAddress(a) => source = Some(*a),
                            IPTuple::DestinationAddress(a) => destination = Some(*a),
                            _ => {}
                        }
                    }
                }
                Tuple::Proto(protos) => {
                    for proto in protos {
                        match proto {
                            ProtoTuple::Protocol(p) => protocol = Some(u8::from(*p)),
                            ProtoTuple::SourcePort(p) => source_port = Some(*p),
                            ProtoTuple::DestinationPort(p) => destination_port = Some(*p),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        let missing = |what: &str| format!("{which} tuple without {what}");
        Ok(FlowTuple {
            source: source.ok_or_else(|| missing("a source address"))?,
            destination: destination.ok_or_else(|| missing("a destination address"))?,
            protocol: protocol.ok_or_else(|| missing("a protocol number"))?,
            source_port,
            destination_port,
        })
    }

    /// The tuple as a ctnetlink nest.
    fn to_nest(self) -> Vec<Tuple> {
        let mut protos = vec![ProtoTuple::Protocol(Protocol::from(self.protocol))];
        if let Some(port) = self.source_port {
            protos.push(ProtoTuple::SourcePort(port));
        }
        if let Some(port) = self.destination_port {
            protos.push(ProtoTuple::DestinationPort(port));
        }
        vec![
            Tuple::Ip(vec![
                IPTuple::SourceAddress(self.source),
                IPTuple::DestinationAddress(self.destination),
            ]),
            Tuple::Proto(protos),
        ]
    }
}

impl fmt::Display for FlowTuple {
    /// conntrack(8)'s spelling: `src=A dst=B sport=P dport=Q`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "src={} dst={}", self.source, self.destination)?;
        if let Some(port) = self.source_port {
            write!(f, " sport={port}")?;
        }
        if let Some(port) = self.destination_port {
            write!(f, " dport={port}")?;
        }
        Ok(())
    }
}

/// A conntrack entry: both directions plus what identifies it for a delete.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Flow {
    /// The address family.
    pub family: Family,
    /// The tuple of the first packet (client → service address).
    pub original: FlowTuple,
    /// The tuple the answer is expected with; after DNAT its source is the backend.
    pub reply: FlowTuple,
    /// The kernel's entry id (`CTA_ID`), when the kernel sent it.
    pub id: Option<u32>,
    /// The conntrack zone (`CTA_ZONE`), when not the default zone.
    pub zone: Option<u16>,
}

impl Flow {
    /// Builds a flow from the attributes of a dump reply. Fails (with the reason) when a
    /// tuple is missing or incomplete.
    pub fn from_attributes(
        family: Family,
        attributes: &[ConntrackAttribute],
    ) -> Result<Flow, String> {
        let mut original = None;
        let mut reply = None;
        let mut id = None;
        let mut zone = None;
        for attribute in attributes {
            match attribute {
                ConntrackAttribute::CtaTupleOrig(nest) => {
                    original = Some(FlowTuple::from_nest(nest, "original")?)
                }
                ConntrackAttribute::CtaTupleReply(nest) => {
                    reply = Some(FlowTuple::from_nest(nest, "reply")?)
                }
                ConntrackAttribute::Other(nla) if nla.kind() & NLA_TYPE_MASK == CTA_ID => {
                    let value = nla_value(nla);
                    id = Some(parse_u32_be(&value).map_err(|e| format!("CTA_ID: {e}"))?)
                }
                ConntrackAttribute::Other(nla) if nla.kind() & NLA_TYPE_MASK == CTA_ZONE => {
                    let value = nla_value(nla);
                    zone = Some(parse_u16_be(&value).map_err(|e| format!("CTA_ZONE: {e}"))?)
                }
                _ => {}
            }
        }
        Ok(Flow {
            family,
            original: original.ok_or("entry without CTA_TUPLE_ORIG")?,
            reply: reply.ok_or("entry without CTA_TUPLE_REPLY")?,
            id,
            zone,
        })
    }

    /// The attributes of an `IPCTNL_MSG_CT_DELETE` for exactly this entry: its original
    /// tuple, its id (so a newer entry with the same tuple survives) and its zone.
    pub fn delete_attributes(&self) -> Vec<ConntrackAttribute> {
        let mut attributes = vec![ConntrackAttribute::CtaTupleOrig(self.original.to_nest())];
        if let Some(id) = self.id {
            attributes.push(ConntrackAttribute::Other(DefaultNla::new(
                CTA_ID,
                id.to_be_bytes().to_vec(),
            )));
        }
        if let Some(zone) = self.zone.filter(|zone| *zone != 0) {
            attributes.push(ConntrackAttribute::Other(DefaultNla::new(
                CTA_ZONE,
                zone.to_be_bytes().to_vec(),
            )));
        }
        attributes
    }
}

/// The value bytes of an attribute the codec leaves unmodelled.
fn nla_value(nla: &DefaultNla) -> Vec<u8> {
    let mut value = vec![0u8; nla.value_len()];
    nla.emit_value(&mut value);
    value
}

/// conntrack(8)'s name of a protocol number.
pub fn protocol_name(protocol: u8) -> String {
    match protocol {
        1 => "icmp".into(),
        IPPROTO_TCP => "tcp".into(),
        IPPROTO_UDP => "udp".into(),
        58 => "icmpv6".into(),
        IPPROTO_SCTP => "sctp".into(),
        other => format!("unknown({other})"),
    }
}

impl fmt::Display for Flow {
    /// conntrack(8)'s tuple part: `udp src=… dst=… sport=… dport=… src=… dst=… …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            protocol_name(self.original.protocol),
            self.original,
            self.reply
        )
    }
}
