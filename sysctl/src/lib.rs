//! Read, set and verify the kernel settings a service proxy node needs.
//!
//! [`NodeSysctls::detect`] decides which sysctls this node needs (IPVS, forwarding,
//! strict ARP, bridge netfilter) from the options and what the kernel offers;
//! [`NodeSysctls::apply`] sets them, reads every written value back and returns
//! what changed; [`NodeSysctls::check`] only reads and reports drift, including
//! interfaces whose own ARP settings defeat strict ARP.
//!
//! Keys are lists of path segments ([`Key`]), so per-interface settings work for
//! every interface name, VLANs such as `eth0.100` included.
//!
//! ```no_run
//! use node_sysctl::{NodeSysctls, Options, Sysctl};
//! let node = NodeSysctls::detect(Sysctl::default(), &Options { strict_arp: true })?;
//! for change in node.apply()? {
//!     println!("changed {change}");
//! }
//! # Ok::<(), node_sysctl::Error>(())
//! ```

mod access;
pub mod arp;
mod error;
mod key;
mod want;

use std::fmt;

pub use access::Sysctl;
pub use arp::{ArpSetting, InterfaceArp};
pub use error::Error;
pub use key::Key;
pub use want::{Change, Setting, Want};

/// What the operator chose; everything else is detected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Make the node answer ARP only for addresses on the receiving interface
    /// (`ipvs.strictARP`), so service addresses on `kube-ipvs0` are not announced
    /// on the LAN (needed with MetalLB-style L2 announcements).
    pub strict_arp: bool,
}

/// Something `check` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// A managed sysctl does not hold a wanted value.
    Drift {
        /// The sysctl, what it holds and what it should.
        setting: Setting,
        /// Its current value.
        actual: String,
    },
    /// An interface's own ARP setting differs from `net.ipv4.conf.all`.
    Interface(InterfaceArp),
}

impl Finding {
    /// True when the finding breaks something the agent relies on; false for
    /// information (an interface whose looser value is overridden by `all`).
    pub fn is_problem(&self) -> bool {
        match self {
            Finding::Drift { .. } => true,
            Finding::Interface(arp) => !arp.is_strict(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Drift { setting, actual } => write!(
                f,
                "{} is {actual}, wanted {} ({})",
                setting.key, setting.want, setting.reason
            ),
            Finding::Interface(arp) => arp.fmt(f),
        }
    }
}

/// The sysctls this node needs, and the access to read and write them.
#[derive(Clone, Debug)]
pub struct NodeSysctls {
    sysctl: Sysctl,
    settings: Vec<Setting>,
    strict_arp: bool,
}

/// The kernel release from which `conn_reuse_mode` is left alone (kubernetes#93297).
const CONN_REUSE_FIXED_IN: (u32, u32) = (5, 9);

fn key(text: &str) -> Key {
    text.parse().expect("built-in keys are valid")
}

impl NodeSysctls {
    /// Decides which sysctls this node needs. Reads only: the kernel release, and
    /// whether IPv6 and bridge netfilter are present.
    pub fn detect(sysctl: Sysctl, options: &Options) -> Result<NodeSysctls, Error> {
        let mut settings = Vec::new();
        let mut want = |text: &str, want: Want, reason: &'static str| {
            settings.push(Setting {
                key: key(text),
                want,
                reason,
            })
        };
        want(
            "net.ipv4.vs.conntrack",
            Want::Exactly(1),
            "IPVS keeps conntrack entries so iptables masquerade and filtering see IPVS traffic",
        );
        want(
            "net.ipv4.vs.expire_nodest_conn",
            Want::Exactly(1),
            "connections to a deleted real server are dropped at once instead of timing out",
        );
        want(
            "net.ipv4.vs.expire_quiescent_template",
            Want::Exactly(1),
            "session-affinity templates of a weight-0 real server expire, so clients move on",
        );
        let release = sysctl.read(&key("kernel.osrelease"))?;
        match kernel_version(&release) {
            Some(version) if version < CONN_REUSE_FIXED_IN => want(
                "net.ipv4.vs.conn_reuse_mode",
                Want::Exactly(0),
                "before Linux 5.9, mode 1 with conntrack=1 delays reused connections by 1 s \
                 (kubernetes#93297)",
            ),
            Some(_) => {}
            None => tracing::warn!(
                release,
                "cannot parse the kernel release; leaving net.ipv4.vs.conn_reuse_mode as it is"
            ),
        }
        want(
            "net.ipv4.ip_forward",
            Want::Exactly(1),
            "the node routes traffic to pods on other nodes",
        );
        let ipv6_off = key("net.ipv6.conf.all.disable_ipv6");
        if sysctl.exists(&ipv6_off) && sysctl.read_int(&ipv6_off)? == 0 {
            want(
                "net.ipv6.conf.all.forwarding",
                Want::Exactly(1),
                "the node routes IPv6 traffic to pods on other nodes",
            );
        }
        if sysctl.exists(&key("net.bridge")) {
            want(
                "net.bridge.bridge-nf-call-iptables",
                Want::Exactly(1),
                "bridged pod traffic passes iptables, so service rules see it",
            );
        }
        if options.strict_arp {
            want(
                "net.ipv4.conf.all.arp_ignore",
                Want::AnyOf {
                    accepted: arp::STRICT_ARP_IGNORE.to_vec(),
                    set: 1,
                },
                "strict ARP: answer only for addresses on the receiving interface",
            );
            want(
                "net.ipv4.conf.all.arp_announce",
                Want::Exactly(arp::STRICT_ARP_ANNOUNCE),
                "strict ARP: never use a kube-ipvs0 address as ARP source",
            );
        }
        Ok(NodeSysctls {
            sysctl,
            settings,
            strict_arp: options.strict_arp,
        })
    }

    /// The sysctls managed on this node.
    pub fn settings(&self) -> &[Setting] {
        &self.settings
    }

    /// Sets every managed sysctl that does not hold a wanted value, reads it back,
    /// and returns what changed. Stops at the first failure.
    pub fn apply(&self) -> Result<Vec<Change>, Error> {
        let mut changes = Vec::new();
        for setting in &self.settings {
            let old = self.sysctl.read(&setting.key)?;
            if parse_int(&setting.key, &old)
                .map(|value| setting.want.accepts(value))
                .unwrap_or(false)
            {
                continue;
            }
            let new = setting.want.target().to_string();
            self.sysctl.write(&setting.key, &new)?;
            let read_back = self.sysctl.read(&setting.key)?;
            if read_back != new {
                return Err(Error::NotKept {
                    key: setting.key.clone(),
                    wrote: new,
                    read_back,
                });
            }
            tracing::debug!(key = %setting.key, %old, %new, "sysctl changed");
            changes.push(Change {
                key: setting.key.clone(),
                old,
                new,
            });
        }
        Ok(changes)
    }

    /// Reads every managed sysctl and, with strict ARP, every interface's own ARP
    /// settings; changes nothing.
    pub fn check(&self) -> Result<Vec<Finding>, Error> {
        let mut findings = Vec::new();
        for setting in &self.settings {
            let actual = self.sysctl.read(&setting.key)?;
            let value = parse_int(&setting.key, &actual)?;
            if !setting.want.accepts(value) {
                findings.push(Finding::Drift {
                    setting: setting.clone(),
                    actual,
                });
            }
        }
        if self.strict_arp {
            findings.extend(self.interface_arp()?.into_iter().map(Finding::Interface));
        }
        Ok(findings)
    }

    /// Every interface whose own `arp_ignore` / `arp_announce` differs from
    /// `net.ipv4.conf.all`, with the value the kernel effectively uses.
    pub fn interface_arp(&self) -> Result<Vec<InterfaceArp>, Error> {
        let conf = key("net.ipv4.conf");
        let mut found = Vec::new();
        for setting in [ArpSetting::Ignore, ArpSetting::Announce] {
            let all = self
                .sysctl
                .read_int(&Key::ipv4_conf("all", setting.name())?)?;
            for interface in self.sysctl.list(&conf)? {
                if interface == "all" || interface == "default" {
                    continue;
                }
                let own = match self
                    .sysctl
                    .read_int(&Key::ipv4_conf(&interface, setting.name())?)
                {
                    Ok(own) => own,
                    // The interface went away between listing and reading.
                    Err(Error::Missing { .. }) => continue,
                    Err(other) => return Err(other),
                };
                if own != all {
                    found.push(InterfaceArp {
                        interface,
                        setting,
                        own,
                        all,
                    });
                }
            }
        }
        Ok(found)
    }
}

fn parse_int(key: &Key, value: &str) -> Result<i64, Error> {
    value.trim().parse().map_err(|_| Error::NotAnInteger {
        key: key.clone(),
        value: value.to_owned(),
    })
}

/// `(major, minor)` of a kernel release string such as `6.1.0-28-amd64`.
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_parse_and_order() {
        assert_eq!(kernel_version("6.1.0-28-amd64"), Some((6, 1)));
        assert_eq!(kernel_version("5.8.18"), Some((5, 8)));
        assert_eq!(kernel_version("4.19.0-27-cloud-amd64"), Some((4, 19)));
        assert_eq!(kernel_version("garbage"), None);
        assert!(kernel_version("5.8.18").unwrap() < CONN_REUSE_FIXED_IN);
        assert!(kernel_version("5.10.0").unwrap() >= CONN_REUSE_FIXED_IN);
        assert!(kernel_version("4.19.0").unwrap() < CONN_REUSE_FIXED_IN);
    }

    #[test]
    fn effective_arp_value_is_the_larger_and_three_is_not_strict() {
        let arp = |own, all| InterfaceArp {
            interface: "eth0.100".into(),
            setting: ArpSetting::Ignore,
            own,
            all,
        };
        assert_eq!(arp(0, 1).effective(), 1);
        assert!(arp(0, 1).is_strict());
        assert!(arp(2, 1).is_strict());
        assert!(arp(8, 1).is_strict());
        assert!(!arp(3, 1).is_strict());
        assert!(!arp(5, 1).is_strict());
        let text = arp(3, 1).to_string();
        assert!(
            text.contains("net.ipv4.conf.eth0/100.arp_ignore=3"),
            "{text}"
        );
        assert!(text.contains("NOT strict"), "{text}");
        let announce = InterfaceArp {
            interface: "eth1".into(),
            setting: ArpSetting::Announce,
            own: 3,
            all: 2,
        };
        assert!(!announce.is_strict());
    }

    #[test]
    fn any_of_keeps_a_stricter_admin_choice() {
        let want = Want::AnyOf {
            accepted: vec![1, 2, 8],
            set: 1,
        };
        assert!(want.accepts(2));
        assert!(!want.accepts(3));
        assert_eq!(want.target(), 1);
        assert_eq!(want.to_string(), "one of 1, 2, 8");
    }
}
