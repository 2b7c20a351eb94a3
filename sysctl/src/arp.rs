//! Strict ARP and the per-interface `arp_ignore` / `arp_announce` overrides.
//!
//! The kernel uses the larger of `net.ipv4.conf.all.X` and `net.ipv4.conf.<if>.X`
//! for both settings, so setting `all` is enough to make every interface strict,
//! except where an interface's own, larger value means something looser:
//! - `arp_ignore`: 1 (answer only for addresses on the receiving interface), 2 (and
//!   only to senders in that address's subnet) and 8 (never answer) keep the
//!   service addresses on `kube-ipvs0` silent; 3 answers for every global address
//!   of the node, 4-7 are reserved and answer everything.
//! - `arp_announce`: 2 is the strictest; values above 2 fall back to 0's behaviour.

use std::fmt;

use crate::Key;

/// `arp_ignore` values that keep addresses of other interfaces from being answered.
pub const STRICT_ARP_IGNORE: [i64; 3] = [1, 2, 8];
/// The `arp_announce` value of strict ARP.
pub const STRICT_ARP_ANNOUNCE: i64 = 2;

/// The ARP sysctl an interface finding is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArpSetting {
    /// `arp_ignore`: which ARP requests are answered.
    Ignore,
    /// `arp_announce`: which source address ARP requests carry.
    Announce,
}

impl ArpSetting {
    /// The sysctl's file name.
    pub fn name(self) -> &'static str {
        match self {
            ArpSetting::Ignore => "arp_ignore",
            ArpSetting::Announce => "arp_announce",
        }
    }

    /// True when `effective` gives strict ARP behaviour.
    pub fn is_strict(self, effective: i64) -> bool {
        match self {
            ArpSetting::Ignore => STRICT_ARP_IGNORE.contains(&effective),
            ArpSetting::Announce => effective == STRICT_ARP_ANNOUNCE,
        }
    }
}

/// An interface whose own ARP setting differs from `net.ipv4.conf.all`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceArp {
    /// The interface name (may contain dots: `eth0.100`).
    pub interface: String,
    /// Which setting.
    pub setting: ArpSetting,
    /// The interface's own value.
    pub own: i64,
    /// The value of `net.ipv4.conf.all`.
    pub all: i64,
}

impl InterfaceArp {
    /// The value the kernel uses on this interface: the larger of the two.
    pub fn effective(&self) -> i64 {
        self.own.max(self.all)
    }

    /// True when the interface behaves as strict ARP requires.
    pub fn is_strict(&self) -> bool {
        self.setting.is_strict(self.effective())
    }

    /// The key of the interface's own value.
    pub fn key(&self) -> Key {
        Key::ipv4_conf(&self.interface, self.setting.name())
            .expect("interface names read from /proc/sys are valid segments")
    }
}

impl fmt::Display for InterfaceArp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, own, all, effective) =
            (self.setting.name(), self.own, self.all, self.effective());
        let key = self.key();
        if own < all {
            write!(
                f,
                "{key}={own} is looser than net.ipv4.conf.all.{name}={all}; the kernel uses \
                 the larger, so {name} on {} is {effective}",
                self.interface
            )?;
        } else {
            write!(
                f,
                "{key}={own} overrides net.ipv4.conf.all.{name}={all}; the kernel uses the \
                 larger, so {name} on {} is {effective}",
                self.interface
            )?;
        }
        if self.is_strict() {
            write!(f, " (strict)")
        } else {
            let fix = match self.setting {
                ArpSetting::Ignore => "0, 1, 2 or 8",
                ArpSetting::Announce => "2 or less",
            };
            write!(
                f,
                " which is NOT strict ARP: this interface answers or announces service \
                 addresses of kube-ipvs0; set {key} to {fix}"
            )
        }
    }
}
