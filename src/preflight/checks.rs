//! The node checks behind `ipvs-proxy check`: is this node ready for IPVS mode?
//!
//! Reads the kernel and changes nothing, with one exception: a scheduler module
//! that is not loaded yet is probed by adding, then at once deleting, a
//! firewall-mark service with a mark no one uses ([`PROBE_MARK`]); the kernel loads
//! the module on demand. No packet carries that mark, so no traffic is affected.
//!
//! One line per check, `PASS` or `FAIL`, each failure with the command that fixes
//! it; `--json` prints the same as a document; the exit status is 1 when anything
//! failed.

use std::path::Path;

use crate::dataplane::iptables::{Backend, Family, Iptables};
use ipvs_netlink::{AddressFamily, IpvsHandle, Scheduler, Service, ServiceKey};
use node_sysctl::{BR_NETFILTER, BRIDGE_NETFILTER_SYSCTLS, Finding, NodeSysctls, Options, Sysctl};
use serde::Serialize;

/// Firewall mark of the throw-away service used to probe schedulers.
pub const PROBE_MARK: u32 = 0x1ab5_0001;

/// What the checks are asked to verify (from `ipvs-proxy check`'s flags).
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Schedulers the agent is configured to use.
    pub schedulers: Vec<String>,
    /// Require strict ARP (`ipvs.strictARP`, needed for L2 load-balancer announcements).
    pub strict_arp: bool,
    /// Name of the dummy interface holding service addresses.
    pub interface: String,
    /// Require bridged pod traffic to pass iptables and IPVS (br_netfilter loaded,
    /// `net.bridge.bridge-nf-call-ip(6)tables=1`), as the agent sets up by default.
    pub bridge_netfilter: bool,
}

/// The outcome of one check.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// What was checked (`ipvs`, `scheduler rr`, `sysctl net.ipv4.ip_forward`, ...).
    pub name: String,
    /// Whether the node passes.
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// How to fix a failure.
    pub fix: Option<String>,
}

impl Check {
    /// A passed check.
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }

    /// A failed check with its fix.
    pub fn fail(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// The `--json` document.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    /// Whether every check passed.
    pub ok: bool,
    /// Each check, in order.
    pub checks: &'a [Check],
}

fn check_ipvs(options: &CheckOptions) -> Vec<Check> {
    let mut handle = match IpvsHandle::new() {
        Ok(handle) => handle,
        Err(error) => {
            return vec![Check::fail(
                "ipvs",
                format!("the IPVS netlink family is not usable: {error}"),
                "modprobe ip_vs (and list ip_vs in /etc/modules-load.d/ipvs.conf)",
            )];
        }
    };
    let mut checks = vec![match handle.info() {
        Ok(info) => Check::pass(
            "ipvs",
            format!(
                "IPVS {} (connection table size {})",
                info.version_string(),
                info.conn_table_size
            ),
        ),
        Err(error) => Check::fail(
            "ipvs",
            format!("reading IPVS information failed: {error}"),
            "modprobe ip_vs",
        ),
    }];
    for name in &options.schedulers {
        checks.push(check_scheduler(&mut handle, name));
    }
    checks
}

fn check_scheduler(handle: &mut IpvsHandle, name: &str) -> Check {
    let check = format!("scheduler {name}");
    let module = format!("ip_vs_{name}");
    if Path::new("/sys/module").join(&module).exists() {
        return Check::pass(check, format!("module {module} is loaded"));
    }
    let key = ServiceKey::Fwmark {
        family: AddressFamily::Inet,
        mark: PROBE_MARK,
    };
    if handle.service(&key).is_ok() {
        return Check::fail(
            check,
            format!("cannot probe: a service with the probe mark {PROBE_MARK:#x} already exists"),
            format!("modprobe {module}"),
        );
    }
    match handle.add_service(&Service::new(key, Scheduler::from_name(name))) {
        Ok(()) => {
            let deleted = handle.delete_service(&key);
            match deleted {
                Ok(()) => Check::pass(check, format!("module {module} loads on demand")),
                Err(error) => Check::fail(
                    check,
                    format!("probe service FWM {PROBE_MARK} could not be deleted: {error}"),
                    format!("ipvsadm -D -f {PROBE_MARK}"),
                ),
            }
        }
        Err(error) => Check::fail(
            check,
            format!("the kernel cannot load scheduler {name}: {error}"),
            format!("modprobe {module} (and list it in /etc/modules-load.d/ipvs.conf)"),
        ),
    }
}

fn check_ipset() -> Check {
    match ipset_netlink::IpsetHandle::new() {
        Ok(handle) => Check::pass("ipset", format!("ipset protocol {}", handle.protocol())),
        Err(error) => Check::fail(
            "ipset",
            format!("the ipset netlink interface is not usable: {error}"),
            "modprobe ip_set ip_set_hash_ip ip_set_hash_ipport ip_set_hash_ipportip \
             ip_set_hash_ipportnet ip_set_hash_net ip_set_bitmap_port xt_set",
        ),
    }
}

fn check_iptables() -> Check {
    let backend = Backend::detect();
    let iptables = Iptables::new(backend, Family::V4);
    let program = backend.program(Family::V4, "save");
    match iptables.save() {
        Ok(_) => Check::pass("iptables", format!("{program} works")),
        Err(error) => Check::fail(
            "iptables",
            format!("{program} failed: {error}"),
            "install iptables (apt-get install iptables) and load its modules \
             (modprobe ip_tables iptable_nat iptable_filter, or nf_tables)",
        ),
    }
}

/// br_netfilter, without which a pod on a bridge cannot reach a Service whose endpoint
/// shares the bridge (the endpoint's reply is bridged past IPVS).
fn check_br_netfilter(sysctl: &Sysctl) -> Vec<Check> {
    let name = format!("module {}", BR_NETFILTER.name);
    if BR_NETFILTER.is_loaded(sysctl) {
        return vec![Check::pass(
            name,
            format!(
                "loaded ({} present)",
                sysctl.path(&BR_NETFILTER.sysctl_key()).display()
            ),
        )];
    }
    // The bridge sysctls cannot be read or set until the module is loaded: one line
    // each, so the report lists everything a bridge CNI needs.
    let mut checks = vec![Check::fail(
        name,
        format!(
            "{} is not loaded: {}",
            BR_NETFILTER.name, BR_NETFILTER.without
        ),
        BR_NETFILTER.fix(),
    )];
    for key in BRIDGE_NETFILTER_SYSCTLS {
        checks.push(Check::fail(
            format!("sysctl {key}"),
            format!(
                "does not exist until {} is loaded; wanted 1 so bridged pod traffic passes \
                 iptables and IPVS",
                BR_NETFILTER.name
            ),
            format!("modprobe {} && sysctl -w {key}=1", BR_NETFILTER.name),
        ));
    }
    checks
}

fn check_sysctls(options: &CheckOptions) -> Vec<Check> {
    let sysctl = Sysctl::default();
    let bridge_netfilter = options.bridge_netfilter;
    let options = Options {
        strict_arp: options.strict_arp,
        bridge_netfilter,
    };
    let node = match NodeSysctls::detect(sysctl.clone(), &options) {
        Ok(node) => node,
        Err(error) => {
            return vec![Check::fail(
                "sysctl",
                format!("cannot read the node's sysctls: {error}"),
                "run as root with /proc/sys mounted (hostNetwork, privileged)",
            )];
        }
    };
    let findings = match node.check() {
        Ok(findings) => findings,
        Err(error) => {
            return vec![Check::fail(
                "sysctl",
                format!("cannot read the node's sysctls: {error}"),
                "modprobe ip_vs (net.ipv4.vs.* appear with it)",
            )];
        }
    };
    let mut checks = Vec::new();
    if bridge_netfilter {
        checks.extend(check_br_netfilter(&sysctl));
    }
    for setting in node.settings() {
        let name = format!("sysctl {}", setting.key);
        let drift = findings.iter().find_map(|finding| match finding {
            Finding::Drift { setting: s, actual } if s.key == setting.key => Some(actual),
            _ => None,
        });
        checks.push(match drift {
            Some(actual) => Check::fail(
                name,
                format!("is {actual}, wanted {}: {}", setting.want, setting.reason),
                format!("sysctl -w {}={}", setting.key, setting.want.target()),
            ),
            None => Check::pass(
                name,
                match sysctl.read(&setting.key) {
                    Ok(value) => format!("is {value}"),
                    Err(error) => error.to_string(),
                },
            ),
        });
    }
    // Interface-level ARP overrides: shown even when harmless, failed when they
    // defeat strict ARP.
    for finding in &findings {
        if let Finding::Interface(arp) = finding {
            let name = format!("arp {}", arp.interface);
            checks.push(if finding.is_problem() {
                let target = match arp.setting {
                    node_sysctl::ArpSetting::Ignore => 1,
                    node_sysctl::ArpSetting::Announce => 2,
                };
                Check::fail(
                    name,
                    arp.to_string(),
                    format!("sysctl -w {}={target}", arp.key()),
                )
            } else {
                Check::pass(name, arp.to_string())
            });
        }
    }
    checks
}

/// `IFF_NOARP` of `<linux/if.h>`.
const IFF_NOARP: u32 = 0x80;

fn check_interface(name: &str) -> Check {
    let check = format!("interface {name}");
    let path = Path::new("/sys/class/net").join(name).join("flags");
    let flags = match std::fs::read_to_string(&path) {
        Ok(flags) => flags,
        Err(_) => {
            return Check::fail(
                check,
                format!("{name} does not exist"),
                format!(
                    "start the agent (ipvs-proxy run creates it), or by hand: \
                     ip link add {name} type dummy"
                ),
            );
        }
    };
    match u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16) {
        Ok(bits) if bits & IFF_NOARP != 0 => {
            Check::pass(check, format!("present, NOARP (flags {})", flags.trim()))
        }
        Ok(bits) => Check::fail(
            check,
            format!(
                "present but answers ARP (flags {bits:#x}): it would announce service addresses"
            ),
            format!("ip link set {name} arp off"),
        ),
        Err(_) => Check::fail(
            check,
            format!("unreadable flags {:?} in {}", flags.trim(), path.display()),
            format!("ip link show {name}"),
        ),
    }
}

fn check_conntrack() -> Check {
    let max = Path::new("/proc/sys/net/netfilter/nf_conntrack_max");
    match std::fs::read_to_string(max) {
        Ok(value) => Check::pass(
            "conntrack",
            format!("nf_conntrack loaded (nf_conntrack_max {})", value.trim()),
        ),
        Err(_) => Check::fail(
            "conntrack",
            "nf_conntrack is not loaded: IPVS masquerade needs it",
            "modprobe nf_conntrack",
        ),
    }
}

/// Every check, in a fixed order.
pub fn checks(options: &CheckOptions) -> Vec<Check> {
    let mut checks = check_ipvs(options);
    checks.push(check_ipset());
    checks.push(check_iptables());
    checks.push(check_conntrack());
    checks.extend(check_sysctls(options));
    checks.push(check_interface(&options.interface));
    checks
}

/// The human-readable report: one line per check.
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for check in checks {
        let status = if check.ok { "PASS" } else { "FAIL" };
        out.push_str(&format!("{status} {}: {}", check.name, check.detail));
        if let Some(fix) = &check.fix {
            out.push_str(&format!("\n     fix: {fix}"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_carry_their_fix_on_the_next_line() {
        let text = render(&[
            Check::pass("ipvs", "IPVS 1.2.1"),
            Check::fail("conntrack", "not loaded", "modprobe nf_conntrack"),
        ]);
        assert_eq!(
            text,
            "PASS ipvs: IPVS 1.2.1\nFAIL conntrack: not loaded\n     fix: modprobe nf_conntrack\n"
        );
    }

    #[test]
    fn br_netfilter_lines_say_what_is_missing_and_the_fix() {
        // A sysctl tree without net/bridge stands for a node without br_netfilter.
        let root = std::env::temp_dir().join(format!("preflight-brnf-{}", std::process::id()));
        std::fs::create_dir_all(root.join("net")).unwrap();
        let text = render(&check_br_netfilter(&Sysctl::at(&root)));
        assert_eq!(
            text,
            "FAIL module br_netfilter: br_netfilter is not loaded: pods on a bridge cannot \
             reach Services whose endpoints share the bridge\n     \
             fix: modprobe br_netfilter && echo br_netfilter > \
             /etc/modules-load.d/br_netfilter.conf\n\
             FAIL sysctl net.bridge.bridge-nf-call-iptables: does not exist until br_netfilter \
             is loaded; wanted 1 so bridged pod traffic passes iptables and IPVS\n     \
             fix: modprobe br_netfilter && sysctl -w net.bridge.bridge-nf-call-iptables=1\n\
             FAIL sysctl net.bridge.bridge-nf-call-ip6tables: does not exist until \
             br_netfilter is loaded; wanted 1 so bridged pod traffic passes iptables and \
             IPVS\n     \
             fix: modprobe br_netfilter && sysctl -w net.bridge.bridge-nf-call-ip6tables=1\n"
        );
        std::fs::create_dir_all(root.join("net/bridge")).unwrap();
        let checks = check_br_netfilter(&Sysctl::at(&root));
        assert_eq!(checks.len(), 1);
        assert!(checks[0].ok);
        assert_eq!(checks[0].name, "module br_netfilter");
        std::fs::remove_dir_all(root).unwrap();
    }
}
