//! What `ipvs-proxy run` may lack to do its work: Linux capabilities, read from the
//! `CapEff` (effective) and `CapBnd` (bounding) lines of `/proc/self/status`, and write
//! access to `/proc/sys/net` for the kernel settings.
//!
//! [`check`] is pure over the status text and the probed `/proc/sys/net` access, so it
//! is tested on real values; [`check_self`] reads them for this process.

use std::fmt;
use std::io::ErrorKind;

use crate::dataplane::sysctls::{PROC_SYS_NET_ENV, node_sysctl};

/// The sysctl probed for write access: present in every network namespace, and one the
/// agent writes (strict ARP). Its file is below `/proc/sys`, or below the directory
/// named by [`PROC_SYS_NET_ENV`] when set.
pub const PROBED_SYSCTL: &str = "net.ipv4.conf.all.arp_ignore";

/// A capability the agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    /// `CAP_NET_ADMIN`.
    NetAdmin,
    /// `CAP_NET_RAW`.
    NetRaw,
    /// `CAP_SYS_MODULE`.
    SysModule,
}

/// How badly the agent needs a capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Necessity {
    /// Nothing can be programmed without it: the agent should not start.
    Required,
    /// Some features fail without it.
    Feature,
    /// Worth a note only: the host can do the work instead.
    Note,
}

impl Capability {
    /// Every capability checked, most needed first.
    pub const ALL: [Capability; 3] = [
        Capability::NetAdmin,
        Capability::NetRaw,
        Capability::SysModule,
    ];

    /// The bit number in the capability sets (linux/capability.h).
    pub fn bit(self) -> u32 {
        match self {
            Capability::NetAdmin => 12,
            Capability::NetRaw => 13,
            Capability::SysModule => 16,
        }
    }

    /// The kernel name, e.g. `CAP_NET_ADMIN`.
    pub fn name(self) -> &'static str {
        match self {
            Capability::NetAdmin => "CAP_NET_ADMIN",
            Capability::NetRaw => "CAP_NET_RAW",
            Capability::SysModule => "CAP_SYS_MODULE",
        }
    }

    /// The name in a Pod's `securityContext.capabilities.add`, e.g. `NET_ADMIN`.
    pub fn kubernetes_name(self) -> &'static str {
        &self.name()["CAP_".len()..]
    }

    /// What the agent does with it.
    pub fn purpose(self) -> &'static str {
        match self {
            Capability::NetAdmin => {
                "programming IPVS, ipsets, the kube-ipvs0 addresses and iptables rules"
            }
            Capability::NetRaw => {
                "iptables-legacy (it talks to the kernel over a raw socket) and announcing \
                 load-balancer IPs with ARP/NDP"
            }
            Capability::SysModule => {
                "loading kernel modules; ipvs-proxy relies on the kernel loading ip_vs, its \
                 schedulers, ip_set and xt_set on demand"
            }
        }
    }

    /// How badly the agent needs it.
    pub fn necessity(self) -> Necessity {
        match self {
            Capability::NetAdmin => Necessity::Required,
            Capability::NetRaw => Necessity::Feature,
            Capability::SysModule => Necessity::Note,
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why `/proc/self/status` could not be read as capability sets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapsError {
    /// The file could not be read.
    #[error("cannot read /proc/self/status: {0}")]
    Read(String),
    /// A line is missing (a kernel without capabilities, or not a status file).
    #[error("/proc/self/status has no {0} line")]
    MissingLine(&'static str),
    /// A line does not hold a hexadecimal mask.
    #[error("/proc/self/status line {line} is not a hexadecimal mask: {value:?}")]
    BadMask {
        /// `CapEff` or `CapBnd`.
        line: &'static str,
        /// What it held.
        value: String,
    },
}

/// The capability masks of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapabilitySets {
    /// What the process may use now (`CapEff`).
    pub effective: u64,
    /// What the process could ever gain (`CapBnd`); `None` if the line is absent.
    pub bounding: Option<u64>,
}

impl CapabilitySets {
    /// Parses the `CapEff` and `CapBnd` lines of a `/proc/<pid>/status` text.
    pub fn parse(status: &str) -> Result<Self, CapsError> {
        let effective = mask(status, "CapEff")?.ok_or(CapsError::MissingLine("CapEff"))?;
        let bounding = mask(status, "CapBnd")?;
        Ok(Self {
            effective,
            bounding,
        })
    }

    /// Whether `capability` is effective.
    pub fn has(&self, capability: Capability) -> bool {
        self.effective & (1 << capability.bit()) != 0
    }

    /// Whether `capability` is in the bounding set; `None` if unknown.
    pub fn can_gain(&self, capability: Capability) -> Option<bool> {
        self.bounding
            .map(|bounding| bounding & (1 << capability.bit()) != 0)
    }
}

fn mask(status: &str, line: &'static str) -> Result<Option<u64>, CapsError> {
    let Some(value) = status
        .lines()
        .find_map(|text| text.strip_prefix(line)?.strip_prefix(':'))
    else {
        return Ok(None);
    };
    u64::from_str_radix(value.trim(), 16)
        .map(Some)
        .map_err(|_| CapsError::BadMask {
            line,
            value: value.trim().to_string(),
        })
}

/// Whether this process may write the kernel settings under `/proc/sys/net`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcSysNet {
    /// It may.
    Writable,
    /// `/proc/sys` is mounted read-only, as in an unprivileged container.
    ReadOnly,
    /// The files are writable but not by this user.
    NotPermitted,
    /// The probe failed otherwise (the text says how).
    Unknown(String),
}

/// A capability the process lacks, and whether it could gain it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingCapability {
    /// The capability.
    pub capability: Capability,
    /// Whether it is in the bounding set (`Some(true)`: the process runs as a user
    /// without it; `Some(false)`: the container does not grant it).
    pub in_bounding_set: Option<bool>,
}

impl MissingCapability {
    /// What to do about it.
    pub fn fix(&self) -> String {
        let add = format!(
            "add it to the container (securityContext.capabilities.add: [{}])",
            self.capability.kubernetes_name()
        );
        match (self.capability.necessity(), self.in_bounding_set) {
            (Necessity::Note, _) => {
                "if the host disables on-demand loading, load the modules on the host \
                 (/etc/modules-load.d)"
                    .to_string()
            }
            (_, Some(true)) => format!(
                "it is allowed but not effective: run as root (securityContext.runAsUser: 0) \
                 or give the binary the capability (setcap cap_{}+ep)",
                self.capability.kubernetes_name().to_lowercase()
            ),
            (_, Some(false)) => add,
            (_, None) => format!("run as root or {add}"),
        }
    }
}

impl fmt::Display for MissingCapability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is missing, used for {}: {}",
            self.capability,
            self.capability.purpose(),
            self.fix()
        )
    }
}

/// What the process lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilityReport {
    /// Capabilities that are not effective, most needed first.
    pub missing: Vec<MissingCapability>,
    /// Access to `/proc/sys/net`.
    pub proc_sys_net: ProcSysNet,
    /// Whether strict ARP is configured (it needs `/proc/sys/net` written).
    pub strict_arp: bool,
}

impl CapabilityReport {
    /// The first missing capability without which nothing can be programmed.
    pub fn fatal(&self) -> Option<&MissingCapability> {
        self.missing
            .iter()
            .find(|missing| missing.capability.necessity() == Necessity::Required)
    }

    /// The missing capabilities some features need, to log as warnings.
    pub fn degraded(&self) -> impl Iterator<Item = &MissingCapability> {
        self.missing
            .iter()
            .filter(|missing| missing.capability.necessity() == Necessity::Feature)
    }

    /// The missing capabilities worth a note only.
    pub fn notes(&self) -> impl Iterator<Item = &MissingCapability> {
        self.missing
            .iter()
            .filter(|missing| missing.capability.necessity() == Necessity::Note)
    }

    /// Why the kernel settings cannot be written, and what to do; `None` when they can.
    pub fn proc_sys_net_problem(&self) -> Option<String> {
        let settings = if self.strict_arp {
            "net.ipv4.vs.conntrack, net.ipv4.ip_forward and the other IPVS settings, nor \
             strict ARP (net.ipv4.conf.all.arp_ignore=1, arp_announce=2)"
        } else {
            "net.ipv4.vs.conntrack, net.ipv4.ip_forward and the other IPVS settings"
        };
        match &self.proc_sys_net {
            ProcSysNet::Writable => None,
            ProcSysNet::ReadOnly => Some(format!(
                "/proc/sys is mounted read-only in this container, so ipvs-proxy cannot set \
                 {settings}: mount the host's /proc/sys/net elsewhere (a hostPath volume, \
                 e.g. at /host/proc/sys/net) and name that directory in {PROC_SYS_NET_ENV}, \
                 as manifests/base/daemonset.yaml does, or run the container with \
                 securityContext.privileged: true, or set them on the host (/etc/sysctl.d)"
            )),
            ProcSysNet::NotPermitted => Some(format!(
                "this user may not write /proc/sys/net, so ipvs-proxy cannot set {settings}: \
                 run as root, or set them on the host (/etc/sysctl.d)"
            )),
            ProcSysNet::Unknown(why) => Some(format!(
                "cannot tell whether /proc/sys/net is writable ({PROBED_SYSCTL}: {why}); \
                 ipvs-proxy may be unable to set {settings}"
            )),
        }
    }
}

/// What a process with this `/proc/<pid>/status` text and this `/proc/sys/net` access
/// lacks. `strict_arp` is the configuration's `ipvs.strictARP`.
pub fn check(
    status: &str,
    proc_sys_net: ProcSysNet,
    strict_arp: bool,
) -> Result<CapabilityReport, CapsError> {
    let sets = CapabilitySets::parse(status)?;
    let missing = Capability::ALL
        .into_iter()
        .filter(|capability| !sets.has(*capability))
        .map(|capability| MissingCapability {
            capability,
            in_bounding_set: sets.can_gain(capability),
        })
        .collect();
    Ok(CapabilityReport {
        missing,
        proc_sys_net,
        strict_arp,
    })
}

/// Probes write access to `/proc/sys/net` (or the directory [`PROC_SYS_NET_ENV`]
/// names) by opening [`PROBED_SYSCTL`]'s file for writing. Nothing is written: a
/// sysctl changes only on `write`.
pub fn probe_proc_sys_net() -> ProcSysNet {
    let key = PROBED_SYSCTL.parse().expect("a valid built-in key");
    match std::fs::OpenOptions::new()
        .write(true)
        .open(node_sysctl().path(&key))
    {
        Ok(_) => ProcSysNet::Writable,
        Err(error) if error.kind() == ErrorKind::ReadOnlyFilesystem => ProcSysNet::ReadOnly,
        Err(error) if error.kind() == ErrorKind::PermissionDenied => ProcSysNet::NotPermitted,
        Err(error) => ProcSysNet::Unknown(error.to_string()),
    }
}

/// [`check`] for this process.
pub fn check_self(strict_arp: bool) -> Result<CapabilityReport, CapsError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|error| CapsError::Read(error.to_string()))?;
    check(&status, probe_proc_sys_net(), strict_arp)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/self/status` capability lines, as the kernel prints them.
    fn status(effective: &str, bounding: &str) -> String {
        format!(
            "Name:\tipvs-proxy\nUmask:\t0022\nState:\tR (running)\nUid:\t0\t0\t0\t0\n\
             CapInh:\t0000000000000000\nCapPrm:\t{effective}\nCapEff:\t{effective}\n\
             CapBnd:\t{bounding}\nCapAmb:\t0000000000000000\nNoNewPrivs:\t0\n"
        )
    }

    fn missing(report: &CapabilityReport) -> Vec<Capability> {
        report.missing.iter().map(|m| m.capability).collect()
    }

    #[test]
    fn root_on_the_host_lacks_nothing() {
        // Root on a 5.x/6.x host: capabilities 0..=40.
        let report = check(
            &status("000001ffffffffff", "000001ffffffffff"),
            ProcSysNet::Writable,
            true,
        )
        .unwrap();
        assert_eq!(missing(&report), Vec::<Capability>::new());
        assert!(report.fatal().is_none());
        assert_eq!(report.proc_sys_net_problem(), None);
    }

    #[test]
    fn a_sandbox_without_sys_resource_lacks_nothing_we_use() {
        // Taken from this project's build sandbox: everything but CAP_SYS_RESOURCE (24).
        let report = check(
            &status("000001fffeffffff", "000001fffeffffff"),
            ProcSysNet::Writable,
            false,
        )
        .unwrap();
        assert!(report.missing.is_empty(), "{report:?}");
    }

    #[test]
    fn net_admin_only_container_lacks_net_raw_and_sys_module() {
        // capabilities: drop: [ALL], add: [NET_ADMIN]
        let report = check(
            &status("0000000000001000", "0000000000001000"),
            ProcSysNet::ReadOnly,
            true,
        )
        .unwrap();
        assert_eq!(
            missing(&report),
            vec![Capability::NetRaw, Capability::SysModule]
        );
        assert!(report.fatal().is_none());
        let degraded: Vec<String> = report.degraded().map(ToString::to_string).collect();
        assert_eq!(degraded.len(), 1);
        assert!(degraded[0].starts_with("CAP_NET_RAW is missing, used for iptables-legacy"));
        assert!(
            degraded[0]
                .ends_with("add it to the container (securityContext.capabilities.add: [NET_RAW])"),
            "{}",
            degraded[0]
        );
        let notes: Vec<String> = report.notes().map(ToString::to_string).collect();
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("/etc/modules-load.d"), "{}", notes[0]);
        let problem = report.proc_sys_net_problem().unwrap();
        assert!(problem.contains("read-only"), "{problem}");
        assert!(problem.contains("arp_ignore=1"), "{problem}");
        assert!(problem.contains("privileged: true"), "{problem}");
    }

    #[test]
    fn default_container_runtime_set_lacks_net_admin() {
        // containerd/Docker default: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID
        // SETPCAP NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP.
        let report = check(
            &status("00000000a80425fb", "00000000a80425fb"),
            ProcSysNet::ReadOnly,
            false,
        )
        .unwrap();
        assert_eq!(
            missing(&report),
            vec![Capability::NetAdmin, Capability::SysModule]
        );
        let fatal = report.fatal().unwrap().to_string();
        assert!(
            fatal.starts_with("CAP_NET_ADMIN is missing, used for programming IPVS"),
            "{fatal}"
        );
        assert!(
            fatal.ends_with("securityContext.capabilities.add: [NET_ADMIN])"),
            "{fatal}"
        );
        let problem = report.proc_sys_net_problem().unwrap();
        assert!(!problem.contains("arp_ignore"), "no strict ARP: {problem}");
    }

    #[test]
    fn non_root_user_with_a_full_bounding_set_is_told_to_run_as_root() {
        let report = check(
            &status("0000000000000000", "000001ffffffffff"),
            ProcSysNet::NotPermitted,
            false,
        )
        .unwrap();
        assert_eq!(missing(&report), Capability::ALL.to_vec());
        let fatal = report.fatal().unwrap();
        assert_eq!(fatal.in_bounding_set, Some(true));
        assert!(fatal.fix().contains("runAsUser: 0"), "{}", fatal.fix());
        assert!(
            fatal.fix().contains("setcap cap_net_admin+ep"),
            "{}",
            fatal.fix()
        );
        assert!(
            report
                .proc_sys_net_problem()
                .unwrap()
                .contains("may not write")
        );
    }

    #[test]
    fn malformed_status_is_an_error_not_a_pass() {
        assert_eq!(
            check("Name:\tx\n", ProcSysNet::Writable, false),
            Err(CapsError::MissingLine("CapEff"))
        );
        assert_eq!(
            check("CapEff:\tzz\n", ProcSysNet::Writable, false),
            Err(CapsError::BadMask {
                line: "CapEff",
                value: "zz".into()
            })
        );
        // Without CapBnd the fix cannot tell how the capability would be gained.
        let report = check("CapEff:\t0000000000002000\n", ProcSysNet::Writable, false).unwrap();
        assert_eq!(report.fatal().unwrap().in_bounding_set, None);
        assert!(
            report
                .fatal()
                .unwrap()
                .fix()
                .starts_with("run as root or add it")
        );
    }

    #[test]
    fn this_process_can_be_checked() {
        // Whatever this machine grants, the probe and the parse must succeed.
        let report = check_self(false).unwrap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let sets = CapabilitySets::parse(&status).unwrap();
        for capability in Capability::ALL {
            assert_eq!(
                report.missing.iter().any(|m| m.capability == capability),
                !sets.has(capability)
            );
        }
    }
}
