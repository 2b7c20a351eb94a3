//! The connection table (`ipvsadm -L -c`), read from `/proc/net/ip_vs_conn`
//! as ipvsadm reads it.

use std::net::{IpAddr, Ipv4Addr};

use serde::Serialize;

use super::names::{Resolver, addr_port};
use super::table::protocol;

/// One line of `/proc/net/ip_vs_conn`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Connection {
    /// Protocol name as the kernel prints it (`TCP`, `UDP`, `SCTP`, ...).
    pub protocol: String,
    /// Client address.
    pub client_address: IpAddr,
    /// Client port.
    pub client_port: u16,
    /// Virtual address.
    pub virtual_address: IpAddr,
    /// Virtual port.
    pub virtual_port: u16,
    /// Real server address.
    pub destination_address: IpAddr,
    /// Real server port.
    pub destination_port: u16,
    /// Protocol state (`ESTABLISHED`, `TIME_WAIT`, `NONE`, ...).
    pub state: String,
    /// Seconds until the entry expires.
    pub expires: u32,
    /// Persistence engine name and data, when the entry has them.
    pub persistence_engine: Option<(String, String)>,
}

impl Connection {
    /// The IP protocol number for name lookups (0 when unknown).
    fn protocol_number(&self) -> u16 {
        match self.protocol.as_str() {
            "TCP" => protocol::TCP,
            "UDP" => protocol::UDP,
            "SCTP" => protocol::SCTP,
            _ => 0,
        }
    }
}

/// What was wrong with a line of the connection table.
#[derive(Debug, thiserror::Error)]
#[error("cannot parse line {line} of /proc/net/ip_vs_conn ({reason}): {text:?}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What did not parse.
    pub reason: &'static str,
    /// The line.
    pub text: String,
}

/// An address as the kernel prints it there: 8 hex digits for IPv4, text for IPv6.
fn parse_address(text: &str) -> Option<IpAddr> {
    if let Ok(address) = text.parse::<IpAddr>() {
        return Some(address);
    }
    u32::from_str_radix(text, 16)
        .ok()
        .map(|n| IpAddr::V4(Ipv4Addr::from(n)))
}

/// Parses the table; the first line is the header.
pub fn parse(text: &str) -> Result<Vec<Connection>, ParseError> {
    let mut connections = Vec::new();
    for (index, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let error = |reason| ParseError {
            line: index + 1,
            reason,
            text: line.to_owned(),
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 9 {
            return Err(error("fewer than 9 fields"));
        }
        let address = |i: usize| parse_address(fields[i]).ok_or_else(|| error("bad address"));
        let port = |i: usize| u16::from_str_radix(fields[i], 16).map_err(|_| error("bad port"));
        connections.push(Connection {
            protocol: fields[0].to_owned(),
            client_address: address(1)?,
            client_port: port(2)?,
            virtual_address: address(3)?,
            virtual_port: port(4)?,
            destination_address: address(5)?,
            destination_port: port(6)?,
            state: fields[7].to_owned(),
            expires: fields[8].parse().map_err(|_| error("bad expiry"))?,
            persistence_engine: match (fields.get(9), fields.get(10)) {
                (Some(name), Some(data)) => Some(((*name).to_owned(), (*data).to_owned())),
                _ => None,
            },
        });
    }
    Ok(connections)
}

/// `ipvsadm -L -c` (with `--persistent-conn`: the persistence engine columns).
pub fn list(connections: &[Connection], persistent_conn: bool, names: &dyn Resolver) -> String {
    let mut out = String::from("IPVS connection entries\n");
    if persistent_conn {
        out.push_str(&format!(
            "pro expire {:<11} {:<18} {:<18} {:<18} {:<16} {}\n",
            "state", "source", "virtual", "destination", "pe name", "pe_data"
        ));
    } else {
        out.push_str(&format!(
            "pro expire {:<11} {:<18} {:<18} {}\n",
            "state", "source", "virtual", "destination"
        ));
    }
    for c in connections {
        let proto = c.protocol_number();
        let client = addr_port(names, c.client_address, c.client_port, proto);
        let virt = addr_port(names, c.virtual_address, c.virtual_port, proto);
        let dest = addr_port(names, c.destination_address, c.destination_port, proto);
        let expire = format!("{:02}:{:02}", c.expires / 60, c.expires % 60);
        match (&c.persistence_engine, persistent_conn) {
            (Some((pe_name, pe_data)), true) => out.push_str(&format!(
                "{:<3} {expire:<6} {:<11} {client:<18} {virt:<18} {dest:<16} {pe_name:<18} {pe_data}\n",
                c.protocol, c.state
            )),
            _ => out.push_str(&format!(
                "{:<3} {expire:<6} {:<11} {client:<18} {virt:<18} {dest}\n",
                c.protocol, c.state
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listing::names::Numeric;

    const PROC: &str = "\
Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
TCP C0A83202 B3A2 0A600014 0050 0AF4000A 1F90 TIME_WAIT       119
UDP 2001:0db8:0000:0000:0000:0000:0000:0002 0035 2001:0db8:0000:0000:0000:0000:0000:0001 0035 2001:0db8:0000:0000:0000:0000:0000:0003 0035 UDP             299
";

    #[test]
    fn parses_ipv4_hex_and_ipv6_text_and_prints_ipvsadm_columns() {
        let connections = parse(PROC).unwrap();
        assert_eq!(connections.len(), 2);
        assert_eq!(
            connections[0].client_address,
            "192.168.50.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(connections[0].client_port, 0xB3A2);
        let text = list(&connections, false, &Numeric);
        assert_eq!(
            text,
            "IPVS connection entries\n\
pro expire state       source             virtual            destination\n\
TCP 01:59  TIME_WAIT   192.168.50.2:45986 10.96.0.20:80      10.244.0.10:8080\n\
UDP 04:59  UDP         [2001:db8::2]:53   [2001:db8::1]:53   [2001:db8::3]:53\n"
        );
    }

    #[test]
    fn a_garbled_line_is_an_error_naming_the_line() {
        let err = parse("header\nTCP zz 0050\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.to_string().contains("fewer than 9 fields"), "{err}");
    }
}
