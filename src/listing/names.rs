//! Addresses and ports as ipvsadm prints them: numerically (`-n`) or by name
//! through the system's resolver and services database.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;

use super::table::protocol;

/// Turns addresses and ports into names; `None` means "print it numerically".
pub trait Resolver {
    /// The host name of `address`, if the system knows one.
    fn host(&self, address: IpAddr) -> Option<String>;
    /// The service name of `port` for IP protocol `protocol`, if known.
    fn service(&self, port: u16, protocol: u16) -> Option<String>;
}

/// Never resolves: `-n`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Numeric;

impl Resolver for Numeric {
    fn host(&self, _: IpAddr) -> Option<String> {
        None
    }
    fn service(&self, _: u16, _: u16) -> Option<String> {
        None
    }
}

/// Resolves like ipvsadm: host names through the C library's resolver (so
/// `/etc/hosts`, DNS and nsswitch apply), ports through `/etc/services`.
#[derive(Debug, Default)]
pub struct System {
    hosts: Mutex<HashMap<IpAddr, Option<String>>>,
    services: Option<Services>,
}

impl System {
    /// A resolver reading the services database from `/etc/services`.
    pub fn new() -> System {
        System {
            hosts: Mutex::default(),
            services: std::fs::read_to_string("/etc/services")
                .ok()
                .map(|text| Services::parse(&text)),
        }
    }
}

impl Resolver for System {
    fn host(&self, address: IpAddr) -> Option<String> {
        // Several rows often share an address; the answer cannot change within one listing.
        let mut cache = self
            .hosts
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        cache
            .entry(address)
            .or_insert_with(|| dns_lookup::lookup_addr(&address).ok())
            .clone()
    }

    fn service(&self, port: u16, protocol: u16) -> Option<String> {
        self.services
            .as_ref()?
            .name(port, protocol)
            .map(str::to_owned)
    }
}

/// The first IPv4 address of host `name`, as ipvsadm's `gethostbyname` lookup.
pub fn lookup_host_v4(name: &str) -> Option<IpAddr> {
    dns_lookup::lookup_host(name)
        .ok()?
        .into_iter()
        .find(IpAddr::is_ipv4)
}

/// The services database (`/etc/services`): port and protocol to name.
#[derive(Clone, Debug, Default)]
pub struct Services {
    names: HashMap<(u16, String), String>,
}

impl Services {
    /// Parses the `name port/protocol [aliases] [# comment]` format. The first
    /// line for a port and protocol wins, as with `getservbyport`.
    pub fn parse(text: &str) -> Services {
        let mut names = HashMap::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let mut fields = line.split_whitespace();
            let (Some(name), Some(port_proto)) = (fields.next(), fields.next()) else {
                continue;
            };
            let Some((port, proto)) = port_proto.split_once('/') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            names
                .entry((port, proto.to_ascii_lowercase()))
                .or_insert_with(|| name.to_owned());
        }
        Services { names }
    }

    /// The name of `port` for IP protocol number `protocol` (TCP, UDP or SCTP).
    pub fn name(&self, port: u16, protocol: u16) -> Option<&str> {
        let proto = match protocol {
            protocol::TCP => "tcp",
            protocol::UDP => "udp",
            protocol::SCTP => "sctp",
            _ => return None,
        };
        self.names
            .get(&(port, proto.to_owned()))
            .map(String::as_str)
    }

    /// The port of service `name` for IP protocol number `protocol`.
    pub fn port(&self, name: &str, protocol: u16) -> Option<u16> {
        let proto = match protocol {
            protocol::TCP => "tcp",
            protocol::UDP => "udp",
            protocol::SCTP => "sctp",
            _ => return None,
        };
        self.names
            .iter()
            .filter(|((_, p), n)| p == proto && n.as_str() == name)
            .map(|((port, _), _)| *port)
            .min()
    }
}

/// Formats an address like the C library's `inet_ntop`, which differs from
/// Rust's `Display` for IPv4-compatible IPv6 addresses (`::1.2.3.4`).
pub fn inet_ntop(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => inet_ntop6(v6),
    }
}

fn inet_ntop6(address: Ipv6Addr) -> String {
    let words = address.segments();
    // The longest run of two or more zero words (the first of equal runs) becomes "::".
    let (mut best_start, mut best_len) = (None, 0);
    let mut run: Option<(usize, usize)> = None;
    for (i, word) in words.iter().enumerate() {
        if *word == 0 {
            let (start, len) = run.map_or((i, 1), |(s, l)| (s, l + 1));
            run = Some((start, len));
            if len > best_len {
                (best_start, best_len) = (Some(start), len);
            }
        } else {
            run = None;
        }
    }
    if best_len < 2 {
        best_start = None;
    }
    let in_best = |i: usize| best_start.is_some_and(|s| i >= s && i < s + best_len);
    let mut out = String::new();
    for i in 0..8 {
        if in_best(i) {
            if best_start == Some(i) {
                out.push(':');
            }
            continue;
        }
        if i != 0 {
            out.push(':');
        }
        // IPv4-compatible (::a.b.c.d) and IPv4-mapped (::ffff:a.b.c.d) end in dotted quad.
        if i == 6
            && best_start == Some(0)
            && (best_len == 6 || (best_len == 5 && words[5] == 0xffff))
        {
            let [.., a, b, c, d] = address.octets();
            let _ = write!(out, "{a}.{b}.{c}.{d}");
            return out;
        }
        let _ = write!(out, "{:x}", words[i]);
    }
    if best_start.is_some_and(|s| s + best_len == 8) {
        out.push(':');
    }
    out
}

/// Formats an address and port as ipvsadm's `addrport_to_anyname`:
/// `10.0.0.1:80`, `[2001:db8::1]:80`, or names, cut to 59 bytes.
pub fn addr_port(resolver: &dyn Resolver, address: IpAddr, port: u16, protocol: u16) -> String {
    let host = resolver.host(address).unwrap_or_else(|| inet_ntop(address));
    let port = resolver
        .service(port, protocol)
        .unwrap_or_else(|| port.to_string());
    let text = match address {
        IpAddr::V4(_) => format!("{host}:{port}"),
        IpAddr::V6(_) => format!("[{host}]:{port}"),
    };
    truncate_bytes(text, 59)
}

/// Cuts `text` to at most `max` bytes (on a character boundary), as the fixed C
/// buffers of ipvsadm do.
pub fn truncate_bytes(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_text_matches_inet_ntop() {
        for (addr, want) in [
            ("2001:db8::1", "2001:db8::1"),
            ("::", "::"),
            ("::1", "::1"),
            ("2001:db8:0:1:0:0:0:1", "2001:db8:0:1::1"),
            ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),
            ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
            ("fe80::", "fe80::"),
            ("::ffff:10.0.0.1", "::ffff:10.0.0.1"),
            ("::1.2.3.4", "::1.2.3.4"),
            ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
            ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"),
        ] {
            let parsed: Ipv6Addr = addr.parse().unwrap();
            assert_eq!(inet_ntop6(parsed), want, "{addr}");
        }
    }

    #[test]
    fn services_database_first_line_wins_and_protocols_are_separate() {
        let db = Services::parse(
            "# comment\nhttp 80/tcp www # WorldWideWeb\nhttp-alt 80/tcp\nsnmp 161/udp\n\nbad line\n",
        );
        assert_eq!(db.name(80, protocol::TCP), Some("http"));
        assert_eq!(db.name(80, protocol::UDP), None);
        assert_eq!(db.name(161, protocol::UDP), Some("snmp"));
        assert_eq!(db.name(80, 0), None);
        assert_eq!(db.port("snmp", protocol::UDP), Some(161));
    }

    #[test]
    fn long_names_are_cut_like_the_c_buffer() {
        let long = "a".repeat(70);
        assert_eq!(truncate_bytes(long, 59).len(), 59);
    }
}
