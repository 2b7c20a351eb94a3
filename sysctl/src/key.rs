//! Sysctl keys as lists of path segments.
//!
//! The dotted form (`net.ipv4.conf.eth0.arp_ignore`) is ambiguous as soon as an
//! interface name holds a dot (`eth0.100`, a VLAN): a key is therefore a list of
//! segments, each one a single directory or file name under `/proc/sys`. The text
//! form follows sysctl(8): segments are joined with `.`, and a `.` inside a segment
//! is written `/` (`net.ipv4.conf.eth0/100.arp_ignore`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::Error;

/// A sysctl, addressed by its path segments below `/proc/sys`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    segments: Vec<String>,
}

impl Key {
    /// Builds a key from its path segments, e.g. `["net", "ipv4", "ip_forward"]`.
    ///
    /// Every segment must be a plain file name: not empty, not `.` or `..`, no `/`
    /// and no NUL. Dots inside a segment are kept as they are.
    pub fn from_segments<I, S>(segments: I) -> Result<Key, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let segments: Vec<String> = segments.into_iter().map(Into::into).collect();
        let invalid = |reason| {
            Err(Error::InvalidKey {
                key: segments.join("/"),
                reason,
            })
        };
        if segments.is_empty() {
            return invalid("a key needs at least one segment");
        }
        for segment in &segments {
            if segment.is_empty() {
                return invalid("a segment is empty");
            }
            if segment == "." || segment == ".." {
                return invalid("`.` and `..` are not sysctl names");
            }
            if segment.contains('/') || segment.contains('\0') {
                return invalid("a segment cannot hold `/` or NUL");
            }
        }
        Ok(Key { segments })
    }

    /// `net.ipv4.conf.<interface>.<name>`, for any interface name (dots included).
    pub fn ipv4_conf(interface: &str, name: &str) -> Result<Key, Error> {
        Key::from_segments(["net", "ipv4", "conf", interface, name])
    }

    /// `net.ipv6.conf.<interface>.<name>`, for any interface name (dots included).
    pub fn ipv6_conf(interface: &str, name: &str) -> Result<Key, Error> {
        Key::from_segments(["net", "ipv6", "conf", interface, name])
    }

    /// The path segments.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The file of this key relative to the sysctl root (`/proc/sys`).
    pub fn relative_path(&self) -> PathBuf {
        self.segments.iter().collect()
    }

    /// True when this key lives below `prefix` (given as segments).
    pub fn starts_with(&self, prefix: &[&str]) -> bool {
        self.segments.len() >= prefix.len() && self.segments.iter().zip(prefix).all(|(a, b)| a == b)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.segments.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            f.write_str(&segment.replace('.', "/"))?;
        }
        Ok(())
    }
}

impl FromStr for Key {
    type Err = Error;

    /// Parses the sysctl(8) text form: `.` separates segments and `/` inside the
    /// text stands for a `.` inside a segment (`net.ipv4.conf.eth0/100.arp_ignore`).
    fn from_str(text: &str) -> Result<Key, Error> {
        Key::from_segments(text.split('.').map(|segment| segment.replace('/', ".")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_interface_is_one_segment_and_prints_like_sysctl8() {
        let key = Key::ipv4_conf("eth0.100", "arp_ignore").unwrap();
        assert_eq!(key.segments()[3], "eth0.100");
        assert_eq!(
            key.relative_path(),
            PathBuf::from("net/ipv4/conf/eth0.100/arp_ignore")
        );
        assert_eq!(key.to_string(), "net.ipv4.conf.eth0/100.arp_ignore");
        assert_eq!(
            "net.ipv4.conf.eth0/100.arp_ignore".parse::<Key>().unwrap(),
            key
        );
    }

    #[test]
    fn dotted_text_parses_into_segments() {
        let key: Key = "net.ipv4.vs.conntrack".parse().unwrap();
        assert_eq!(key.segments(), ["net", "ipv4", "vs", "conntrack"]);
        assert!(key.starts_with(&["net", "ipv4", "vs"]));
        assert!(!key.starts_with(&["net", "ipv6"]));
    }

    #[test]
    fn names_that_escape_proc_sys_are_rejected() {
        for bad in [
            Key::ipv4_conf("..", "arp_ignore"),
            Key::ipv4_conf("", "arp_ignore"),
            Key::ipv4_conf("a/b", "arp_ignore"),
            "net..ip_forward".parse(),
            Key::from_segments(Vec::<String>::new()),
        ] {
            let err = bad.unwrap_err();
            assert!(err.to_string().starts_with("invalid sysctl key"), "{err}");
        }
    }
}
