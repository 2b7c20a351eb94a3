//! Read, set and verify the kernel settings a service proxy node needs.
//!
//! [`NodeSysctls::detect`] decides which sysctls this node needs (IPVS, forwarding,
//! strict ARP, bridge netfilter) from the options and what the kernel offers;
//! [`NodeSysctls::apply`] sets them, reads every written value back and returns
//! what changed; [`NodeSysctls::check`] only reads and reports drift, including
//! interfaces whose own ARP settings defeat strict ARP. [`BR_NETFILTER`]
//! `.`[`ensure_loaded`](KernelModule::ensure_loaded) loads the bridge netfilter
//! module the bridge sysctls come with; call it before `detect`.
//!
//! Keys are lists of path segments ([`Key`]), so per-interface settings work for
//! every interface name, VLANs such as `eth0.100` included.
//!
//! ```no_run
//! use node_sysctl::{BR_NETFILTER, NodeSysctls, Options, Sysctl};
//! let options = Options { strict_arp: true, ..Options::default() };
//! if options.bridge_netfilter {
//!     if let Err(missing) = BR_NETFILTER.ensure_loaded(&Sysctl::default()) {
//!         eprintln!("{missing}");
//!     }
//! }
//! let node = NodeSysctls::detect(Sysctl::default(), &options)?;
//! for change in node.apply()? {
//!     println!("changed {change}");
//! }
//! # Ok::<(), node_sysctl::Error>(())
//! ```

mod access;
pub mod arp;
mod error;
mod key;
pub mod module;
mod want;

use std::fmt;

pub use access::Sysctl;
pub use arp::{ArpSetting, InterfaceArp};
pub use error::Error;
pub use key::Key;
pub use module::{BR_NETFILTER, KernelModule, Loaded};
pub use want::{Change, Setting, Want};

/// What the operator chose; everything else is detected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Make the node answer ARP only for addresses on the receiving interface
    /// (`ipvs.strictARP`), so service addresses on `kube-ipvs0` are not announced
    /// on the LAN (needed with MetalLB-style L2 announcements). Off by default.
    pub strict_arp: bool,
    /// Pass bridged traffic through iptables and IPVS: manage
    /// `net.bridge.bridge-nf-call-iptables` and `-ip6tables` (1) wherever br_netfilter
    /// is loaded, and report a missing br_netfilter in `check`. Without it, pods on a
    /// bridge cannot reach Services whose endpoints share the bridge. On by default:
    /// kube-proxy leaves this to the operator, and forgetting it breaks bridge CNIs.
    pub bridge_netfilter: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            strict_arp: false,
            bridge_netfilter: true,
        }
    }
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
    /// A module whose sysctls the node needs is not loaded (its settings cannot be
    /// managed until it is).
    ModuleMissing(KernelModule),
}

impl Finding {
    /// True when the finding breaks something the agent relies on; false for
    /// information (an interface whose looser value is overridden by `all`).
    pub fn is_problem(&self) -> bool {
        match self {
            Finding::Drift { .. } => true,
            Finding::Interface(arp) => !arp.is_strict(),
            Finding::ModuleMissing(_) => true,
        }
    }

    /// The command that fixes a problem; `None` for information.
    pub fn fix(&self) -> Option<String> {
        match self {
            Finding::Drift { setting, .. } => Some(format!(
                "sysctl -w {}={}",
                setting.key,
                setting.want.target()
            )),
            Finding::Interface(arp) if !arp.is_strict() => {
                let target = match arp.setting {
                    ArpSetting::Ignore => arp::STRICT_ARP_IGNORE[0],
                    ArpSetting::Announce => arp::STRICT_ARP_ANNOUNCE,
                };
                Some(format!("sysctl -w {}={target}", arp.key()))
            }
            Finding::Interface(_) => None,
            Finding::ModuleMissing(module) => Some(module.fix()),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Drift { setting, actual } => write!(
                f,
                "{} is {actual}, wanted {} ({}): sysctl -w {}={}",
                setting.key,
                setting.want,
                setting.reason,
                setting.key,
                setting.want.target()
            ),
            Finding::Interface(arp) => arp.fmt(f),
            Finding::ModuleMissing(module) => write!(
                f,
                "{} is not loaded: {}; run `modprobe {}` and add it to /etc/modules-load.d/",
                module.name, module.without, module.name
            ),
        }
    }
}

/// The sysctls this node needs, and the access to read and write them.
#[derive(Clone, Debug)]
pub struct NodeSysctls {
    sysctl: Sysctl,
    settings: Vec<Setting>,
    strict_arp: bool,
    bridge_netfilter: bool,
}

/// The sysctls [`Options::bridge_netfilter`] manages (at 1) once br_netfilter is loaded.
pub const BRIDGE_NETFILTER_SYSCTLS: [&str; 2] = [
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
];

/// The kernel release from which `conn_reuse_mode` is left alone (kubernetes#93297).
const CONN_REUSE_FIXED_IN: (u32, u32) = (5, 9);

fn key(text: &str) -> Key {
    text.parse().expect("built-in keys are valid")
}

impl NodeSysctls {
    /// Decides which sysctls this node needs. Reads only: the kernel release, and
    /// whether IPv6 and bridge netfilter are present (load br_netfilter first with
    /// [`BR_NETFILTER`]`.ensure_loaded` to have the bridge settings managed).
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
        // Per network namespace since Linux 5.3: the values of the namespace whose
        // /proc/sys is read are the ones that count.
        if options.bridge_netfilter && BR_NETFILTER.is_loaded(&sysctl) {
            want(
                BRIDGE_NETFILTER_SYSCTLS[0],
                Want::Exactly(1),
                "IPv4 traffic bridged between pods passes iptables and IPVS, so a reply \
                 from a Service endpoint on the same bridge is un-NATed",
            );
            want(
                BRIDGE_NETFILTER_SYSCTLS[1],
                Want::Exactly(1),
                "IPv6 traffic bridged between pods passes ip6tables and IPVS, so a reply \
                 from a Service endpoint on the same bridge is un-NATed",
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
            bridge_netfilter: options.bridge_netfilter,
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
    /// settings; with bridge netfilter, reports a missing br_netfilter. Changes
    /// nothing.
    pub fn check(&self) -> Result<Vec<Finding>, Error> {
        let mut findings = Vec::new();
        if self.bridge_netfilter && !BR_NETFILTER.is_loaded(&self.sysctl) {
            findings.push(Finding::ModuleMissing(BR_NETFILTER));
        }
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

    /// A sysctl tree of plain files standing for a node: kernel 6.1, IPv6 on, and
    /// br_netfilter's directory when `bridge` holds the two values.
    fn node_tree(name: &str, bridge: Option<(&str, &str)>) -> (std::path::PathBuf, Sysctl) {
        let dir =
            std::env::temp_dir().join(format!("node-sysctl-lib-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let file = |path: &str, value: &str| {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, format!("{value}\n")).unwrap();
        };
        file("kernel/osrelease", "6.1.0-28-amd64");
        for vs in [
            "conntrack",
            "expire_nodest_conn",
            "expire_quiescent_template",
        ] {
            file(&format!("net/ipv4/vs/{vs}"), "1");
        }
        file("net/ipv4/ip_forward", "1");
        file("net/ipv6/conf/all/disable_ipv6", "0");
        file("net/ipv6/conf/all/forwarding", "1");
        if let Some((v4, v6)) = bridge {
            file("net/bridge/bridge-nf-call-iptables", v4);
            file("net/bridge/bridge-nf-call-ip6tables", v6);
        }
        (dir.clone(), Sysctl::at(dir))
    }

    fn keys(node: &NodeSysctls) -> Vec<String> {
        node.settings().iter().map(|s| s.key.to_string()).collect()
    }

    #[test]
    fn bridge_netfilter_is_on_by_default_and_strict_arp_off() {
        let options = Options::default();
        assert!(options.bridge_netfilter);
        assert!(!options.strict_arp);
    }

    #[test]
    fn bridge_sysctls_are_managed_set_and_reported_with_their_fix() {
        let (dir, sysctl) = node_tree("bridge", Some(("0", "0")));
        let node = NodeSysctls::detect(sysctl.clone(), &Options::default()).unwrap();
        let managed = keys(&node);
        assert!(managed.contains(&"net.bridge.bridge-nf-call-iptables".to_string()));
        assert!(managed.contains(&"net.bridge.bridge-nf-call-ip6tables".to_string()));

        let findings = node.check().unwrap();
        let text: Vec<String> = findings.iter().map(ToString::to_string).collect();
        assert_eq!(findings.len(), 2, "{text:?}");
        assert!(
            text[0].starts_with("net.bridge.bridge-nf-call-iptables is 0, wanted 1"),
            "{text:?}"
        );
        assert!(
            text[0].ends_with(": sysctl -w net.bridge.bridge-nf-call-iptables=1"),
            "{text:?}"
        );
        assert_eq!(
            findings[1].fix().as_deref(),
            Some("sysctl -w net.bridge.bridge-nf-call-ip6tables=1")
        );

        let changes: Vec<String> = node
            .apply()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            changes,
            [
                "net.bridge.bridge-nf-call-iptables: 0 -> 1",
                "net.bridge.bridge-nf-call-ip6tables: 0 -> 1"
            ]
        );
        assert!(node.check().unwrap().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_br_netfilter_is_a_problem_with_the_module_fix() {
        let (dir, sysctl) = node_tree("nobridge", None);
        let node = NodeSysctls::detect(sysctl, &Options::default()).unwrap();
        assert!(!keys(&node).iter().any(|k| k.starts_with("net.bridge")));
        let findings = node.check().unwrap();
        assert_eq!(findings, [Finding::ModuleMissing(BR_NETFILTER)]);
        assert!(findings[0].is_problem());
        assert_eq!(
            findings[0].to_string(),
            "br_netfilter is not loaded: pods on a bridge cannot reach Services whose \
             endpoints share the bridge; run `modprobe br_netfilter` and add it to \
             /etc/modules-load.d/"
        );
        assert_eq!(findings[0].fix(), Some(BR_NETFILTER.fix()));
        // Nothing to apply: the bridge settings wait for the module.
        assert!(node.apply().unwrap().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bridge_netfilter_off_leaves_the_bridge_alone() {
        let options = Options {
            bridge_netfilter: false,
            ..Options::default()
        };
        for (name, bridge) in [("off-present", Some(("0", "1"))), ("off-absent", None)] {
            let (dir, sysctl) = node_tree(name, bridge);
            let node = NodeSysctls::detect(sysctl.clone(), &options).unwrap();
            assert!(!keys(&node).iter().any(|k| k.starts_with("net.bridge")));
            assert!(node.check().unwrap().is_empty());
            assert!(node.apply().unwrap().is_empty());
            if bridge.is_some() {
                let key = "net.bridge.bridge-nf-call-iptables".parse().unwrap();
                assert_eq!(sysctl.read(&key).unwrap(), "0");
            }
            std::fs::remove_dir_all(dir).unwrap();
        }
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
