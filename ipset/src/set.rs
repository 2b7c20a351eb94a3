//! Set types, families, create specifications and listed set headers.

use std::fmt;

use crate::entry::Member;
use crate::packet::HeaderAttr;
use crate::packet::constants::FLAG_WITH_COMMENT;
use crate::packet::{CmdAttr, IpsetMessage};

/// Address family of a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 (`family inet`).
    Inet,
    /// IPv6 (`family inet6`).
    Inet6,
    /// No family (bitmap:port).
    Unspec,
}

impl Family {
    /// The `NFPROTO_*` number.
    pub fn number(self) -> u8 {
        match self {
            Family::Inet => 2,
            Family::Inet6 => 10,
            Family::Unspec => 0,
        }
    }

    /// The family for an `NFPROTO_*` number.
    pub fn from_number(n: u8) -> Option<Family> {
        match n {
            2 => Some(Family::Inet),
            10 => Some(Family::Inet6),
            0 => Some(Family::Unspec),
            _ => None,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Inet => "inet",
            Family::Inet6 => "inet6",
            Family::Unspec => "unspec",
        })
    }
}

/// A set type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SetType {
    /// `hash:ip`.
    HashIp,
    /// `hash:ip,port`.
    HashIpPort,
    /// `hash:ip,port,ip`.
    HashIpPortIp,
    /// `hash:ip,port,net`.
    HashIpPortNet,
    /// `hash:net`.
    HashNet,
    /// `bitmap:port`.
    BitmapPort,
    /// Any other type, by its ipset name.
    Other(String),
}

impl SetType {
    /// The type's ipset name, e.g. `hash:ip,port`.
    pub fn name(&self) -> &str {
        match self {
            SetType::HashIp => "hash:ip",
            SetType::HashIpPort => "hash:ip,port",
            SetType::HashIpPortIp => "hash:ip,port,ip",
            SetType::HashIpPortNet => "hash:ip,port,net",
            SetType::HashNet => "hash:net",
            SetType::BitmapPort => "bitmap:port",
            SetType::Other(name) => name,
        }
    }

    /// The type for an ipset name.
    pub fn from_name(name: &str) -> SetType {
        match name {
            "hash:ip" => SetType::HashIp,
            "hash:ip,port" => SetType::HashIpPort,
            "hash:ip,port,ip" => SetType::HashIpPortIp,
            "hash:ip,port,net" => SetType::HashIpPortNet,
            "hash:net" => SetType::HashNet,
            "bitmap:port" => SetType::BitmapPort,
            other => SetType::Other(other.to_string()),
        }
    }

    /// The kernel module implementing the type, e.g. `ip_set_hash_ipportnet`.
    pub fn module(&self) -> String {
        format!("ip_set_{}", self.name().replace(':', "_").replace(',', ""))
    }

    /// Whether this is a hash type (has hashsize and maxelem).
    pub fn is_hash(&self) -> bool {
        self.name().starts_with("hash:")
    }
}

impl fmt::Display for SetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to create: `ipset create NAME TYPE family F hashsize H maxelem M timeout T comment`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSpec {
    /// Set name, at most 31 bytes.
    pub name: String,
    /// Set type.
    pub set_type: SetType,
    /// Address family (ignored by bitmap:port).
    pub family: Family,
    /// Initial hash size (hash types), kernel default 1024.
    pub hashsize: Option<u32>,
    /// Maximum number of entries (hash types), kernel default 65536.
    pub maxelem: Option<u32>,
    /// Default timeout in seconds; turns on per-entry timeouts.
    pub timeout: Option<u32>,
    /// Whether entries may carry comments.
    pub comment: bool,
    /// Port range of a bitmap:port set (required there), inclusive.
    pub port_range: Option<(u16, u16)>,
}

impl SetSpec {
    /// A spec with kernel defaults for everything but name, type and family.
    pub fn new(name: impl Into<String>, set_type: SetType, family: Family) -> SetSpec {
        SetSpec {
            name: name.into(),
            set_type,
            family,
            hashsize: None,
            maxelem: None,
            timeout: None,
            comment: false,
            port_range: None,
        }
    }

    /// A bitmap:port spec covering `from..=to`.
    pub fn bitmap_port(name: impl Into<String>, from: u16, to: u16) -> SetSpec {
        SetSpec {
            port_range: Some((from, to)),
            ..SetSpec::new(name, SetType::BitmapPort, Family::Unspec)
        }
    }

    /// Sets the hash size.
    pub fn hashsize(mut self, hashsize: u32) -> Self {
        self.hashsize = Some(hashsize);
        self
    }

    /// Sets the maximum number of entries.
    pub fn maxelem(mut self, maxelem: u32) -> Self {
        self.maxelem = Some(maxelem);
        self
    }

    /// Sets the default timeout.
    pub fn timeout(mut self, seconds: u32) -> Self {
        self.timeout = Some(seconds);
        self
    }

    /// Turns on entry comments.
    pub fn with_comments(mut self) -> Self {
        self.comment = true;
        self
    }

    /// The header attributes sent in create.
    pub(crate) fn header_attrs(&self) -> Vec<HeaderAttr> {
        let mut attrs = Vec::new();
        if let Some((from, to)) = self.port_range {
            attrs.push(HeaderAttr::Port(from));
            attrs.push(HeaderAttr::PortTo(to));
        }
        if let Some(v) = self.hashsize {
            attrs.push(HeaderAttr::HashSize(v));
        }
        if let Some(v) = self.maxelem {
            attrs.push(HeaderAttr::MaxElem(v));
        }
        if let Some(v) = self.timeout {
            attrs.push(HeaderAttr::Timeout(v));
        }
        if self.comment {
            attrs.push(HeaderAttr::CadtFlags(FLAG_WITH_COMMENT));
        }
        attrs
    }
}

/// A set's header as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetHeader {
    /// Set name.
    pub name: String,
    /// Set type.
    pub set_type: SetType,
    /// Type revision in use.
    pub revision: u8,
    /// Family.
    pub family: Family,
    /// Hash size (hash types).
    pub hashsize: Option<u32>,
    /// Maximum entries (hash types).
    pub maxelem: Option<u32>,
    /// Default timeout, if timeouts are on.
    pub timeout: Option<u32>,
    /// Whether entries may carry comments.
    pub comment: bool,
    /// Port range (bitmap:port).
    pub port_range: Option<(u16, u16)>,
    /// References held by iptables rules, list:set sets, ...
    pub references: u32,
    /// Number of entries.
    pub elements: Option<u32>,
    /// Memory in use in bytes.
    pub memsize: u32,
}

/// A listed set: header and members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetInfo {
    /// The header.
    pub header: SetHeader,
    /// The members, in kernel order.
    pub members: Vec<Member>,
}

impl SetInfo {
    /// Builds the set from the (possibly several) list messages of one set, in order.
    pub(crate) fn from_messages(messages: &[IpsetMessage]) -> Result<SetInfo, String> {
        let first = messages.first().ok_or("no list message")?;
        let name = first
            .find(|a| match a {
                CmdAttr::SetName(s) => Some(s.clone()),
                _ => None,
            })
            .ok_or("list reply without set name")?;
        let type_name = first
            .find(|a| match a {
                CmdAttr::TypeName(s) => Some(s.clone()),
                _ => None,
            })
            .ok_or_else(|| format!("list reply for set {name} without type name"))?;
        let set_type = SetType::from_name(&type_name);
        let revision = first
            .find(|a| match a {
                CmdAttr::Revision(r) => Some(*r),
                _ => None,
            })
            .unwrap_or(0);
        let family_number = first
            .find(|a| match a {
                CmdAttr::Family(f) => Some(*f),
                _ => None,
            })
            .unwrap_or(0);
        let family = Family::from_number(family_number)
            .ok_or_else(|| format!("set {name} has unknown family {family_number}"))?;
        let mut header = SetHeader {
            name: name.clone(),
            set_type: set_type.clone(),
            revision,
            family,
            hashsize: None,
            maxelem: None,
            timeout: None,
            comment: false,
            port_range: None,
            references: 0,
            elements: None,
            memsize: 0,
        };
        let mut port_from = None;
        let mut port_to = None;
        let mut members = Vec::new();
        for message in messages {
            for attr in &message.attributes {
                match attr {
                    CmdAttr::Header(attrs) => {
                        for attr in attrs {
                            match attr {
                                HeaderAttr::HashSize(v) => header.hashsize = Some(*v),
                                HeaderAttr::MaxElem(v) => header.maxelem = Some(*v),
                                HeaderAttr::Timeout(v) => header.timeout = Some(*v),
                                HeaderAttr::CadtFlags(v) => {
                                    header.comment = v & FLAG_WITH_COMMENT != 0
                                }
                                HeaderAttr::Port(v) => port_from = Some(*v),
                                HeaderAttr::PortTo(v) => port_to = Some(*v),
                                HeaderAttr::References(v) => header.references = *v,
                                HeaderAttr::Elements(v) => header.elements = Some(*v),
                                HeaderAttr::MemSize(v) => header.memsize = *v,
                                _ => {}
                            }
                        }
                    }
                    CmdAttr::Entries(entries) => {
                        for attrs in entries {
                            members.push(Member::from_attrs(&set_type, attrs)?);
                        }
                    }
                    _ => {}
                }
            }
        }
        if let (Some(from), Some(to)) = (port_from, port_to) {
            header.port_range = Some((from, to));
        }
        Ok(SetInfo { header, members })
    }
}
