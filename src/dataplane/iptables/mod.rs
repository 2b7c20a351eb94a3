//! Minimal iptables rules on chains ipvs-proxy owns, installed with iptables-restore.
//!
//! IPVS does the load balancing; iptables only adds what IPVS cannot do on its own:
//! masquerading (marked traffic, `masqueradeAll`, traffic from outside the cluster CIDR,
//! hairpin), loadBalancerSourceRanges, and refusing new connections to service
//! addresses on ports that have no service. Every rule matches an ipset (see
//! [`KubeSet`]), so the rule set has a fixed size whatever the number of services.
//!
//! The chains carry kube-proxy's names (`KUBE-SERVICES`, `KUBE-POSTROUTING`, ...) so
//! that tooling and runbooks written for kube-proxy's IPVS mode keep working.
//!
//! The module is split the way rust-netlink splits codecs from sockets:
//! - [`render`] and [`render_cleanup`] are pure: typed input in, `iptables-restore`
//!   payload out. They are unit-tested on the host.
//! - [`SavedRules`] parses `iptables-save` output (which jumps are installed, which of
//!   our chains exist).
//! - [`Iptables`] is the thin adapter that runs `iptables-save` / `iptables-restore
//!   --noflush` of the detected [`Backend`] and reports iptables' own error text.
//!
//! One sync is one `iptables-restore --noflush` call: our chains are declared in the
//! payload (which flushes and refills them atomically), jumps from the built-in chains
//! are inserted only when missing (duplicates left by a crash are removed), and every
//! other rule and chain on the host is left alone.

mod backend;
mod inputs;
mod rules;
mod save;

pub use backend::{Backend, Iptables};
pub use inputs::{lb_no_node_access, local_traffic, node_pod_cidrs, rule_inputs};
pub use rules::{render, render_cleanup};
pub use save::SavedRules;

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// What went wrong building or installing the rules.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    /// The masquerade bit is outside the 32-bit packet mark.
    #[error(
        "invalid masquerade bit {0}: the packet mark has 32 bits, use a bit from 0 to 31 \
         (kube-proxy's default is 14)"
    )]
    MasqueradeBit(u32),
    /// A local-traffic CIDR belongs to the other address family.
    #[error(
        "cluster CIDR {cidr} is not an {family} network: give the {family} rules an {family} CIDR"
    )]
    CidrFamily {
        /// The CIDR given.
        cidr: IpNet,
        /// The family of the rules being built.
        family: Family,
    },
    /// A load-balancer address belongs to the other address family.
    #[error("load-balancer address {address} is not an {family} address")]
    AddressFamily {
        /// The address given.
        address: IpAddr,
        /// The family of the rules being built.
        family: Family,
    },
    /// An interface name iptables would refuse.
    #[error("invalid interface name {name:?} for local-traffic detection: {reason}")]
    InterfaceName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A program could not be started at all (usually: not installed).
    #[error("could not run {program}: {source} (is the iptables package installed?)")]
    Spawn {
        /// The program.
        program: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A program ran and failed; `stderr` is its own explanation.
    #[error("{program} failed ({status}) while {action}: {stderr}")]
    Command {
        /// The program.
        program: String,
        /// What we were doing.
        action: &'static str,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on standard error, trimmed.
        stderr: String,
    },
}

/// The address family a rule set is for: `iptables` or `ip6tables`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4, programmed with `iptables-*`.
    V4,
    /// IPv6, programmed with `ip6tables-*`.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(address: IpAddr) -> Family {
        match address {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The loopback network, whose traffic never goes through services.
    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.0/8",
            Family::V6 => "::1/128",
        }
    }

    /// The host prefix length used in `--vaddr` and printed by iptables-save.
    fn host_prefix(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// The ipsets the rules match: the catalog lives with the model, which fills them.
pub use crate::model::KubeSet;

/// The packet mark bit that asks KUBE-POSTROUTING to masquerade a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MasqueradeMark {
    bit: u32,
}

impl MasqueradeMark {
    /// kube-proxy's default `iptables.masqueradeBit`.
    pub const DEFAULT_BIT: u32 = 14;

    /// The mark for bit `bit` (0–31) of the 32-bit packet mark.
    pub fn from_bit(bit: u32) -> Result<MasqueradeMark, IptablesError> {
        if bit > 31 {
            return Err(IptablesError::MasqueradeBit(bit));
        }
        Ok(MasqueradeMark { bit })
    }

    /// The mark value, `1 << bit` (0x4000 for the default bit 14).
    pub fn value(self) -> u32 {
        1 << self.bit
    }
}

impl Default for MasqueradeMark {
    fn default() -> Self {
        MasqueradeMark {
            bit: Self::DEFAULT_BIT,
        }
    }
}

/// How traffic that comes from inside the cluster is told apart, for masquerading
/// traffic to ClusterIPs that comes from outside (kube-proxy's `detectLocalMode`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LocalTraffic {
    /// No detector: only node-originated traffic whose source is a ClusterIP is
    /// masqueraded (the VIP bound on kube-ipvs0 can be picked as source address).
    #[default]
    Undetected,
    /// Sources inside this CIDR (clusterCIDR or the node's podCIDR) are local.
    Cidr(IpNet),
    /// Packets entering through this interface (a bridge) are local.
    Interface(String),
    /// Packets entering through an interface whose name starts with this prefix are local.
    InterfacePrefix(String),
}

/// A load-balancer port whose source ranges exclude every node address: the node
/// itself must not reach it either (filter KUBE-IPVS-OUT-FILTER, kubernetes#119656).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LbNoNodeAccess {
    /// The load-balancer ingress IP.
    pub address: IpAddr,
    /// The port's protocol.
    pub protocol: crate::model::Protocol,
    /// The port.
    pub port: u16,
}

/// Everything the rule set depends on. Small on purpose: per-service state lives in
/// the ipsets, not here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInputs {
    /// Which family these rules are for.
    pub family: Family,
    /// Sets that currently hold at least one entry; rules matching other sets are
    /// left out.
    pub non_empty_sets: BTreeSet<KubeSet>,
    /// `iptables.masqueradeAll`: masquerade all traffic to ClusterIPs.
    pub masquerade_all: bool,
    /// How traffic from inside the cluster is recognised.
    pub local_traffic: LocalTraffic,
    /// The mark bit used for "masquerade this".
    pub masquerade_mark: MasqueradeMark,
    /// Add `--random-fully` to MASQUERADE (iptables ≥ 1.6.2; see
    /// [`Iptables::supports_random_fully`]).
    pub random_fully: bool,
    /// Load-balancer ports the node itself must not reach.
    pub lb_no_node_access: Vec<LbNoNodeAccess>,
}

impl RuleInputs {
    /// Inputs with every set empty and kube-proxy's defaults.
    pub fn new(family: Family) -> RuleInputs {
        RuleInputs {
            family,
            non_empty_sets: BTreeSet::new(),
            masquerade_all: false,
            local_traffic: LocalTraffic::Undetected,
            masquerade_mark: MasqueradeMark::default(),
            random_fully: false,
            lb_no_node_access: Vec::new(),
        }
    }

    /// Checks what the types cannot: families agree and interface names are valid.
    /// [`Iptables::sync`] calls it before rendering.
    pub fn validate(&self) -> Result<(), IptablesError> {
        match &self.local_traffic {
            LocalTraffic::Undetected => {}
            LocalTraffic::Cidr(cidr) => {
                if Family::of(cidr.addr()) != self.family {
                    return Err(IptablesError::CidrFamily {
                        cidr: *cidr,
                        family: self.family,
                    });
                }
            }
            LocalTraffic::Interface(name) => check_interface(name, 15)?,
            // iptables appends "+" to the prefix, which must still fit.
            LocalTraffic::InterfacePrefix(name) => check_interface(name, 14)?,
        }
        for entry in &self.lb_no_node_access {
            if Family::of(entry.address) != self.family {
                return Err(IptablesError::AddressFamily {
                    address: entry.address,
                    family: self.family,
                });
            }
        }
        Ok(())
    }

    fn has(&self, set: KubeSet) -> bool {
        self.non_empty_sets.contains(&set)
    }
}

fn check_interface(name: &str, max: usize) -> Result<(), IptablesError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > max {
        "it is longer than an interface name can be"
    } else if name
        .chars()
        .any(|c| c.is_whitespace() || c == '/' || c == '"' || c == '+' || c == '!')
    {
        "it contains whitespace, '/', '\"', '+' or '!'"
    } else {
        return Ok(());
    };
    Err(IptablesError::InterfaceName {
        name: name.to_string(),
        reason,
    })
}

/// The iptables tables we write to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// `nat`: marking and masquerading.
    Nat,
    /// `filter`: accepting, dropping and rejecting.
    Filter,
}

impl Table {
    /// The table's name in iptables.
    pub fn name(self) -> &'static str {
        match self {
            Table::Nat => "nat",
            Table::Filter => "filter",
        }
    }
}

/// The chains ipvs-proxy owns, per table. Declaring them in a restore payload
/// flushes them; cleanup deletes them.
pub const OWNED_CHAINS: [(Table, &str); 11] = [
    (Table::Nat, "KUBE-SERVICES"),
    (Table::Nat, "KUBE-POSTROUTING"),
    (Table::Nat, "KUBE-NODE-PORT"),
    (Table::Nat, "KUBE-LOAD-BALANCER"),
    (Table::Nat, "KUBE-MARK-MASQ"),
    (Table::Filter, "KUBE-FORWARD"),
    (Table::Filter, "KUBE-NODE-PORT"),
    (Table::Filter, "KUBE-PROXY-FIREWALL"),
    (Table::Filter, "KUBE-SOURCE-RANGES-FIREWALL"),
    (Table::Filter, "KUBE-IPVS-FILTER"),
    (Table::Filter, "KUBE-IPVS-OUT-FILTER"),
];

/// A jump from a built-in chain into one of our chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Jump {
    /// The table of both chains.
    pub table: Table,
    /// The built-in chain.
    pub from: &'static str,
    /// Our chain.
    pub to: &'static str,
    /// The rule's comment, which identifies it as ours.
    pub comment: &'static str,
}

impl Jump {
    /// The rule specification after the chain name, exactly as iptables-save prints it.
    pub fn spec(&self) -> String {
        format!("-m comment --comment \"{}\" -j {}", self.comment, self.to)
    }
}

/// Our jumps, in the order they appear at the top of each built-in chain.
pub const JUMPS: [Jump; 9] = [
    Jump {
        table: Table::Nat,
        from: "PREROUTING",
        to: "KUBE-SERVICES",
        comment: "ipvs-proxy: service addresses",
    },
    Jump {
        table: Table::Nat,
        from: "OUTPUT",
        to: "KUBE-SERVICES",
        comment: "ipvs-proxy: service addresses",
    },
    Jump {
        table: Table::Nat,
        from: "POSTROUTING",
        to: "KUBE-POSTROUTING",
        comment: "ipvs-proxy: masquerade marked traffic",
    },
    Jump {
        table: Table::Filter,
        from: "INPUT",
        to: "KUBE-IPVS-FILTER",
        comment: "ipvs-proxy: only service ports on service addresses",
    },
    Jump {
        table: Table::Filter,
        from: "INPUT",
        to: "KUBE-PROXY-FIREWALL",
        comment: "ipvs-proxy: load-balancer source ranges",
    },
    Jump {
        table: Table::Filter,
        from: "INPUT",
        to: "KUBE-NODE-PORT",
        comment: "ipvs-proxy: health check node ports",
    },
    Jump {
        table: Table::Filter,
        from: "FORWARD",
        to: "KUBE-PROXY-FIREWALL",
        comment: "ipvs-proxy: load-balancer source ranges",
    },
    Jump {
        table: Table::Filter,
        from: "FORWARD",
        to: "KUBE-FORWARD",
        comment: "ipvs-proxy: forward masqueraded traffic",
    },
    Jump {
        table: Table::Filter,
        from: "OUTPUT",
        to: "KUBE-IPVS-OUT-FILTER",
        comment: "ipvs-proxy: node access to load balancers",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_offending_value_and_the_fix() {
        let mut inputs = RuleInputs::new(Family::V4);
        inputs.local_traffic = LocalTraffic::Cidr("fd00:10::/64".parse().unwrap());
        let error = inputs.validate().unwrap_err().to_string();
        assert_eq!(
            error,
            "cluster CIDR fd00:10::/64 is not an IPv4 network: give the IPv4 rules an IPv4 CIDR"
        );

        inputs.local_traffic = LocalTraffic::InterfacePrefix("a-very-long-name".into());
        assert!(matches!(
            inputs.validate(),
            Err(IptablesError::InterfaceName { .. })
        ));
        inputs.local_traffic = LocalTraffic::Interface("br 0".into());
        assert!(
            inputs
                .validate()
                .unwrap_err()
                .to_string()
                .contains("\"br 0\"")
        );
        inputs.local_traffic = LocalTraffic::Interface("cni0".into());
        inputs.validate().unwrap();

        inputs.lb_no_node_access.push(LbNoNodeAccess {
            address: "2001:db8::1".parse().unwrap(),
            protocol: crate::model::Protocol::Tcp,
            port: 80,
        });
        assert_eq!(
            inputs.validate().unwrap_err().to_string(),
            "load-balancer address 2001:db8::1 is not an IPv4 address"
        );
    }

    #[test]
    fn mask_bit_errors_say_which_bits_are_valid() {
        let error = MasqueradeMark::from_bit(40).unwrap_err().to_string();
        assert!(error.contains("invalid masquerade bit 40"), "{error}");
        assert!(error.contains("0 to 31"), "{error}");
        assert_eq!(MasqueradeMark::default().value(), 0x4000);
    }
}
