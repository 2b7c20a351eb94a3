//! Typed set entries and their translation to and from entry attributes.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::packet::EntryAttr;
use crate::set::SetType;

/// Layer-4 protocol of a port in an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// SCTP (132).
    Sctp,
    /// Any other IP protocol number.
    Other(u8),
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
            Protocol::Other(n) => n,
        }
    }

    /// The protocol for an IP protocol number.
    pub fn from_number(n: u8) -> Protocol {
        match n {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            132 => Protocol::Sctp,
            n => Protocol::Other(n),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Tcp => f.write_str("tcp"),
            Protocol::Udp => f.write_str("udp"),
            Protocol::Sctp => f.write_str("sctp"),
            Protocol::Other(n) => write!(f, "{n}"),
        }
    }
}

/// The element of one set entry. `Display` prints ipset's own syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// hash:ip — `10.0.0.1`.
    Ip(IpAddr),
    /// hash:ip,port — `10.0.0.1,tcp:80`.
    IpPort {
        /// The address.
        ip: IpAddr,
        /// Protocol of the port.
        proto: Protocol,
        /// The port.
        port: u16,
    },
    /// hash:ip,port,ip — `10.0.0.1,tcp:80,10.0.0.2`.
    IpPortIp {
        /// The first address.
        ip: IpAddr,
        /// Protocol of the port.
        proto: Protocol,
        /// The port.
        port: u16,
        /// The second address.
        ip2: IpAddr,
    },
    /// hash:ip,port,net — `10.0.0.1,tcp:80,10.1.0.0/16`.
    IpPortNet {
        /// The address.
        ip: IpAddr,
        /// Protocol of the port.
        proto: Protocol,
        /// The port.
        port: u16,
        /// The network.
        net: IpNet,
    },
    /// hash:net — `10.1.0.0/16` (a host prefix prints as a bare address, as ipset does).
    Net(IpNet),
    /// bitmap:port — `80`.
    Port(u16),
    /// An entry of a set type this crate does not model, as its raw attributes.
    Unmodelled(Vec<EntryAttr>),
}

/// Prints a network the way ipset does: no `/len` for a host prefix.
struct IpsetNet<'a>(&'a IpNet);

impl fmt::Display for IpsetNet<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            write!(f, "{}", self.0.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Ip(ip) => write!(f, "{ip}"),
            Entry::IpPort { ip, proto, port } => write!(f, "{ip},{proto}:{port}"),
            Entry::IpPortIp {
                ip,
                proto,
                port,
                ip2,
            } => write!(f, "{ip},{proto}:{port},{ip2}"),
            Entry::IpPortNet {
                ip,
                proto,
                port,
                net,
            } => write!(f, "{ip},{proto}:{port},{}", IpsetNet(net)),
            Entry::Net(net) => write!(f, "{}", IpsetNet(net)),
            Entry::Port(port) => write!(f, "{port}"),
            Entry::Unmodelled(attrs) => write!(f, "<unmodelled entry {attrs:?}>"),
        }
    }
}

impl Entry {
    /// The set type this entry belongs in, if it is a modelled one.
    pub fn set_type(&self) -> Option<SetType> {
        Some(match self {
            Entry::Ip(_) => SetType::HashIp,
            Entry::IpPort { .. } => SetType::HashIpPort,
            Entry::IpPortIp { .. } => SetType::HashIpPortIp,
            Entry::IpPortNet { .. } => SetType::HashIpPortNet,
            Entry::Net(_) => SetType::HashNet,
            Entry::Port(_) => SetType::BitmapPort,
            Entry::Unmodelled(_) => return None,
        })
    }

    /// The entry's attributes, as sent in add/del/test.
    pub fn to_attrs(&self) -> Vec<EntryAttr> {
        match self {
            Entry::Ip(ip) => vec![EntryAttr::Ip((*ip).into())],
            Entry::IpPort { ip, proto, port } => vec![
                EntryAttr::Ip((*ip).into()),
                EntryAttr::Port(*port),
                EntryAttr::Proto(proto.number()),
            ],
            Entry::IpPortIp {
                ip,
                proto,
                port,
                ip2,
            } => vec![
                EntryAttr::Ip((*ip).into()),
                EntryAttr::Port(*port),
                EntryAttr::Proto(proto.number()),
                EntryAttr::Ip2((*ip2).into()),
            ],
            Entry::IpPortNet {
                ip,
                proto,
                port,
                net,
            } => vec![
                EntryAttr::Ip((*ip).into()),
                EntryAttr::Port(*port),
                EntryAttr::Proto(proto.number()),
                EntryAttr::Ip2(net.addr().into()),
                EntryAttr::Cidr2(net.prefix_len()),
            ],
            Entry::Net(net) => vec![
                EntryAttr::Ip(net.addr().into()),
                EntryAttr::Cidr(net.prefix_len()),
            ],
            Entry::Port(port) => vec![EntryAttr::Port(*port)],
            Entry::Unmodelled(attrs) => attrs.clone(),
        }
    }
}

/// A set member: the entry and its per-entry extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The element.
    pub entry: Entry,
    /// Entry comment (the set must have been created with comment support).
    pub comment: Option<String>,
    /// Remaining (list) or initial (add) timeout in seconds.
    pub timeout: Option<u32>,
}

impl Member {
    /// A member with a comment.
    pub fn with_comment(entry: Entry, comment: impl Into<String>) -> Member {
        Member {
            entry,
            comment: Some(comment.into()),
            timeout: None,
        }
    }

    /// The attributes of this member for add/del/test.
    pub fn to_attrs(&self) -> Vec<EntryAttr> {
        let mut attrs = self.entry.to_attrs();
        if let Some(timeout) = self.timeout {
            attrs.push(EntryAttr::Timeout(timeout));
        }
        if let Some(comment) = &self.comment {
            attrs.push(EntryAttr::Comment(comment.clone()));
        }
        attrs
    }

    /// Decodes a member of a set of `set_type` from its list attributes.
    pub fn from_attrs(set_type: &SetType, attrs: &[EntryAttr]) -> Result<Member, String> {
        let mut ip = None;
        let mut ip2 = None;
        let mut cidr = None;
        let mut cidr2 = None;
        let mut port = None;
        let mut proto = None;
        let mut comment = None;
        let mut timeout = None;
        for attr in attrs {
            match attr {
                EntryAttr::Ip(a) => ip = Some(a.addr),
                EntryAttr::Ip2(a) => ip2 = Some(a.addr),
                EntryAttr::Cidr(c) => cidr = Some(*c),
                EntryAttr::Cidr2(c) => cidr2 = Some(*c),
                EntryAttr::Port(p) => port = Some(*p),
                EntryAttr::Proto(p) => proto = Some(Protocol::from_number(*p)),
                EntryAttr::Comment(c) => comment = Some(c.clone()),
                EntryAttr::Timeout(t) => timeout = Some(*t),
                _ => {}
            }
        }
        let missing = |what: &str| format!("{set_type} member without {what}: {attrs:?}");
        let net = |addr: IpAddr, len: Option<u8>| -> Result<IpNet, String> {
            let len = len.unwrap_or(if addr.is_ipv4() { 32 } else { 128 });
            IpNet::new(addr, len).map_err(|_| format!("{set_type} member with bad prefix /{len}"))
        };
        let entry = match set_type {
            SetType::HashIp => Entry::Ip(ip.ok_or_else(|| missing("address"))?),
            SetType::HashIpPort => Entry::IpPort {
                ip: ip.ok_or_else(|| missing("address"))?,
                proto: proto.ok_or_else(|| missing("protocol"))?,
                port: port.ok_or_else(|| missing("port"))?,
            },
            SetType::HashIpPortIp => Entry::IpPortIp {
                ip: ip.ok_or_else(|| missing("address"))?,
                proto: proto.ok_or_else(|| missing("protocol"))?,
                port: port.ok_or_else(|| missing("port"))?,
                ip2: ip2.ok_or_else(|| missing("second address"))?,
            },
            SetType::HashIpPortNet => Entry::IpPortNet {
                ip: ip.ok_or_else(|| missing("address"))?,
                proto: proto.ok_or_else(|| missing("protocol"))?,
                port: port.ok_or_else(|| missing("port"))?,
                net: net(ip2.ok_or_else(|| missing("network"))?, cidr2)?,
            },
            SetType::HashNet => Entry::Net(net(ip.ok_or_else(|| missing("network"))?, cidr)?),
            SetType::BitmapPort => Entry::Port(port.ok_or_else(|| missing("port"))?),
            SetType::Other(_) => Entry::Unmodelled(attrs.to_vec()),
        };
        Ok(Member {
            entry,
            comment,
            timeout,
        })
    }
}

impl From<Entry> for Member {
    fn from(entry: Entry) -> Member {
        Member {
            entry,
            comment: None,
            timeout: None,
        }
    }
}

impl fmt::Display for Member {
    /// ipset's save syntax for the member: `10.0.0.1 timeout 30 comment "web"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.entry)?;
        if let Some(timeout) = self.timeout {
            write!(f, " timeout {timeout}")?;
        }
        if let Some(comment) = &self.comment {
            write!(f, " comment \"{comment}\"")?;
        }
        Ok(())
    }
}
