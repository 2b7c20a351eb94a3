//! Attributes inside `IPSET_ATTR_DATA`: the set header (create, list) and one entry
//! (add, del, test, list members). Both share the numbers 1..=16; above that the same
//! number means different things, so each context has its own enum.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, NLA_F_NESTED, NLA_F_NET_BYTEORDER, Nla, NlaBuffer,
    NlasIterator, Parseable, emit_u16_be, emit_u32_be, parse_string, parse_u8, parse_u16_be,
    parse_u32_be,
};

use super::constants::*;

/// One attribute of a set header (`IPSET_ATTR_DATA` of create and list replies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderAttr {
    /// First address of a bitmap:ip range.
    Ip(NestedIp),
    /// Last address of a bitmap:ip range.
    IpTo(NestedIp),
    /// Prefix length of a bitmap:ip range.
    Cidr(u8),
    /// First port of a bitmap:port range.
    Port(u16),
    /// Last port of a bitmap:port range.
    PortTo(u16),
    /// Default entry timeout in seconds (turns on timeout support).
    Timeout(u32),
    /// Layer-4 protocol.
    Proto(u8),
    /// Extension flags such as `IPSET_FLAG_WITH_COMMENT`.
    CadtFlags(u32),
    /// Restore line number.
    LineNo(u32),
    /// Hash seed (list replies; settable since revision with `initval`).
    InitVal(u32),
    /// Initial hash table size.
    HashSize(u32),
    /// Maximum number of entries.
    MaxElem(u32),
    /// Netmask applied to stored addresses.
    Netmask(u8),
    /// Bucket size of hash types.
    BucketSize(u8),
    /// Resize percentage (obsolete).
    Resize(u8),
    /// Size of list:set sets.
    Size(u32),
    /// Number of entries (reply only).
    Elements(u32),
    /// Number of references, e.g. iptables rules (reply only).
    References(u32),
    /// Memory used by the set in bytes (reply only).
    MemSize(u32),
    /// An attribute this crate does not model, kept verbatim (kind includes flags).
    Other(DefaultNla),
}

/// One attribute of an entry (`IPSET_ATTR_DATA` of add/del/test, members in list replies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryAttr {
    /// The (first) address.
    Ip(NestedIp),
    /// End of an address range.
    IpTo(NestedIp),
    /// Prefix length of the first address.
    Cidr(u8),
    /// The port.
    Port(u16),
    /// End of a port range.
    PortTo(u16),
    /// Entry timeout in seconds.
    Timeout(u32),
    /// Layer-4 protocol number of the port.
    Proto(u8),
    /// Per-entry flags such as nomatch.
    CadtFlags(u32),
    /// Restore line number, echoed back in errors.
    LineNo(u32),
    /// The second address (hash:ip,port,ip and hash:ip,port,net).
    Ip2(NestedIp),
    /// Prefix length of the second address.
    Cidr2(u8),
    /// Entry comment.
    Comment(String),
    /// An attribute this crate does not model, kept verbatim (kind includes flags).
    Other(DefaultNla),
}

/// The address nested in `IPSET_ATTR_IP`, `IPSET_ATTR_IP_TO` and `IPSET_ATTR_IP2`.
///
/// The kernel insists on `NLA_F_NET_BYTEORDER` on addresses it receives but sends its
/// own without it; the flag is kept so captured replies re-emit byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NestedIp {
    /// The address.
    pub addr: IpAddr,
    /// Whether the inner attribute carries `NLA_F_NET_BYTEORDER`.
    pub net_byteorder: bool,
}

impl From<IpAddr> for NestedIp {
    /// An address as requests must send it (flagged network byte order).
    fn from(addr: IpAddr) -> NestedIp {
        NestedIp {
            addr,
            net_byteorder: true,
        }
    }
}

/// The single address attribute nested in `IPSET_ATTR_IP`/`IPSET_ATTR_IP2`.
struct IpAddrNla(NestedIp);

impl Nla for IpAddrNla {
    fn value_len(&self) -> usize {
        match self.0.addr {
            IpAddr::V4(_) => 4,
            IpAddr::V6(_) => 16,
        }
    }
    fn kind(&self) -> u16 {
        let kind = match self.0.addr {
            IpAddr::V4(_) => ATTR_IPADDR_IPV4,
            IpAddr::V6(_) => ATTR_IPADDR_IPV6,
        };
        if self.0.net_byteorder {
            net(kind)
        } else {
            kind
        }
    }
    fn emit_value(&self, buffer: &mut [u8]) {
        match self.0.addr {
            IpAddr::V4(a) => buffer.copy_from_slice(&a.octets()),
            IpAddr::V6(a) => buffer.copy_from_slice(&a.octets()),
        }
    }
}

// A nested address: its own 4-byte header plus 4 or 16 bytes.
const IP_NEST_LEN: [usize; 2] = [4 + 4, 4 + 16];

fn ip_nest_len(ip: &NestedIp) -> usize {
    match ip.addr {
        IpAddr::V4(_) => IP_NEST_LEN[0],
        IpAddr::V6(_) => IP_NEST_LEN[1],
    }
}

fn emit_ip_nest(ip: &NestedIp, buffer: &mut [u8]) {
    IpAddrNla(*ip).emit(buffer);
}

/// Parses the value of a nested `IPSET_ATTR_IP`: exactly one IPv4 or IPv6 address.
fn parse_ip_nest(value: &[u8]) -> Result<NestedIp, DecodeError> {
    let mut found = None;
    for nla in NlasIterator::new(value) {
        let nla = nla?;
        let v = nla.value();
        let ip = match (nla.kind(), v.len()) {
            (ATTR_IPADDR_IPV4, 4) => IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3])),
            (ATTR_IPADDR_IPV6, 16) => {
                let mut o = [0u8; 16];
                o.copy_from_slice(v);
                IpAddr::V6(Ipv6Addr::from(o))
            }
            (kind, len) => {
                return Err(format!("bad address attribute: kind {kind}, {len} bytes").into());
            }
        };
        let ip = NestedIp {
            addr: ip,
            net_byteorder: nla.network_byte_order_flag(),
        };
        if found.replace(ip).is_some() {
            return Err("more than one address in an IP attribute".into());
        }
    }
    found.ok_or_else(|| "empty IP attribute".into())
}

/// Length of a string attribute value: the bytes and a terminating NUL.
pub(crate) fn string_len(s: &str) -> usize {
    s.len() + 1
}

/// Writes a string attribute value with its NUL.
pub(crate) fn emit_string(s: &str, buffer: &mut [u8]) {
    buffer[..s.len()].copy_from_slice(s.as_bytes());
    buffer[s.len()] = 0;
}

fn nested(kind: u16) -> u16 {
    kind | NLA_F_NESTED
}

fn net(kind: u16) -> u16 {
    kind | NLA_F_NET_BYTEORDER
}

macro_rules! cadt_common_kind {
    ($self:ident, $ty:ident, $($extra:tt)*) => {
        match $self {
            $ty::Ip(_) => nested(ATTR_IP),
            $ty::IpTo(_) => nested(ATTR_IP_TO),
            $ty::Cidr(_) => ATTR_CIDR,
            $ty::Port(_) => net(ATTR_PORT),
            $ty::PortTo(_) => net(ATTR_PORT_TO),
            $ty::Timeout(_) => net(ATTR_TIMEOUT),
            $ty::Proto(_) => ATTR_PROTO,
            $ty::CadtFlags(_) => net(ATTR_CADT_FLAGS),
            $ty::LineNo(_) => net(ATTR_CADT_LINENO),
            $ty::Other(nla) => nla.kind(),
            $($extra)*
        }
    };
}

/// Parses the attributes header and entry data share (numbers 1..=9), then the
/// context's own `extra` arms; anything else is kept verbatim. `v` names the value.
macro_rules! cadt_common_parse {
    ($buf:ident, $v:ident, $ty:ident, $($extra:tt)*) => {{
        let $v = $buf.value();
        match $buf.kind() {
            ATTR_IP => $ty::Ip(parse_ip_nest($v)?),
            ATTR_IP_TO => $ty::IpTo(parse_ip_nest($v)?),
            ATTR_CIDR => $ty::Cidr(parse_u8($v)?),
            ATTR_PORT => $ty::Port(parse_u16_be($v)?),
            ATTR_PORT_TO => $ty::PortTo(parse_u16_be($v)?),
            ATTR_TIMEOUT => $ty::Timeout(parse_u32_be($v)?),
            ATTR_PROTO => $ty::Proto(parse_u8($v)?),
            ATTR_CADT_FLAGS => $ty::CadtFlags(parse_u32_be($v)?),
            ATTR_CADT_LINENO => $ty::LineNo(parse_u32_be($v)?),
            $($extra)*
            _ => $ty::Other(DefaultNla::parse($buf)?),
        }
    }};
}

impl Nla for HeaderAttr {
    fn value_len(&self) -> usize {
        use HeaderAttr::*;
        match self {
            Ip(ip) | IpTo(ip) => ip_nest_len(ip),
            Cidr(_) | Proto(_) | Netmask(_) | BucketSize(_) | Resize(_) => 1,
            Port(_) | PortTo(_) => 2,
            Timeout(_) | CadtFlags(_) | LineNo(_) | InitVal(_) | HashSize(_) | MaxElem(_)
            | Size(_) | Elements(_) | References(_) | MemSize(_) => 4,
            Other(nla) => nla.value_len(),
        }
    }
    fn kind(&self) -> u16 {
        cadt_common_kind!(self, HeaderAttr,
            HeaderAttr::InitVal(_) => net(ATTR_INITVAL),
            HeaderAttr::HashSize(_) => net(ATTR_HASHSIZE),
            HeaderAttr::MaxElem(_) => net(ATTR_MAXELEM),
            HeaderAttr::Netmask(_) => ATTR_NETMASK,
            HeaderAttr::BucketSize(_) => ATTR_BUCKETSIZE,
            HeaderAttr::Resize(_) => ATTR_RESIZE,
            HeaderAttr::Size(_) => net(ATTR_SIZE),
            HeaderAttr::Elements(_) => net(ATTR_ELEMENTS),
            HeaderAttr::References(_) => net(ATTR_REFERENCES),
            HeaderAttr::MemSize(_) => net(ATTR_MEMSIZE),
        )
    }
    fn emit_value(&self, buffer: &mut [u8]) {
        use HeaderAttr::*;
        match self {
            Ip(ip) | IpTo(ip) => emit_ip_nest(ip, buffer),
            Cidr(v) | Proto(v) | Netmask(v) | BucketSize(v) | Resize(v) => buffer[0] = *v,
            Port(v) | PortTo(v) => emit_u16_be(buffer, *v).expect("2-byte buffer"),
            Timeout(v) | CadtFlags(v) | LineNo(v) | InitVal(v) | HashSize(v) | MaxElem(v)
            | Size(v) | Elements(v) | References(v) | MemSize(v) => {
                emit_u32_be(buffer, *v).expect("4-byte buffer")
            }
            Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&T>> for HeaderAttr {
    fn parse(buf: &NlaBuffer<&T>) -> Result<Self, DecodeError> {
        use HeaderAttr::*;
        Ok(cadt_common_parse!(buf, v, HeaderAttr,
            ATTR_INITVAL => InitVal(parse_u32_be(v)?),
            ATTR_HASHSIZE => HashSize(parse_u32_be(v)?),
            ATTR_MAXELEM => MaxElem(parse_u32_be(v)?),
            ATTR_NETMASK => Netmask(parse_u8(v)?),
            ATTR_BUCKETSIZE => BucketSize(parse_u8(v)?),
            ATTR_RESIZE => Resize(parse_u8(v)?),
            ATTR_SIZE => Size(parse_u32_be(v)?),
            ATTR_ELEMENTS => Elements(parse_u32_be(v)?),
            ATTR_REFERENCES => References(parse_u32_be(v)?),
            ATTR_MEMSIZE => MemSize(parse_u32_be(v)?),
        ))
    }
}

impl Nla for EntryAttr {
    fn value_len(&self) -> usize {
        use EntryAttr::*;
        match self {
            Ip(ip) | IpTo(ip) | Ip2(ip) => ip_nest_len(ip),
            Cidr(_) | Proto(_) | Cidr2(_) => 1,
            Port(_) | PortTo(_) => 2,
            Timeout(_) | CadtFlags(_) | LineNo(_) => 4,
            Comment(s) => string_len(s),
            Other(nla) => nla.value_len(),
        }
    }
    fn kind(&self) -> u16 {
        cadt_common_kind!(self, EntryAttr,
            EntryAttr::Ip2(_) => nested(ATTR_IP2),
            EntryAttr::Cidr2(_) => ATTR_CIDR2,
            EntryAttr::Comment(_) => ATTR_COMMENT,
        )
    }
    fn emit_value(&self, buffer: &mut [u8]) {
        use EntryAttr::*;
        match self {
            Ip(ip) | IpTo(ip) | Ip2(ip) => emit_ip_nest(ip, buffer),
            Cidr(v) | Proto(v) | Cidr2(v) => buffer[0] = *v,
            Port(v) | PortTo(v) => emit_u16_be(buffer, *v).expect("2-byte buffer"),
            Timeout(v) | CadtFlags(v) | LineNo(v) => {
                emit_u32_be(buffer, *v).expect("4-byte buffer")
            }
            Comment(s) => emit_string(s, buffer),
            Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&T>> for EntryAttr {
    fn parse(buf: &NlaBuffer<&T>) -> Result<Self, DecodeError> {
        use EntryAttr::*;
        Ok(cadt_common_parse!(buf, v, EntryAttr,
            ATTR_IP2 => Ip2(parse_ip_nest(v)?),
            ATTR_CIDR2 => Cidr2(parse_u8(v)?),
            ATTR_COMMENT => Comment(parse_string(v)?),
        ))
    }
}

/// Parses every attribute of a nested value with `P`.
pub(crate) fn parse_all<P>(value: &[u8]) -> Result<Vec<P>, DecodeError>
where
    P: for<'a> Parseable<NlaBuffer<&'a [u8]>>,
{
    NlasIterator::new(value)
        .map(|nla| P::parse(&nla?))
        .collect()
}
