//! Kernel modules whose sysctls the node needs, and loading them with modprobe.
//!
//! A module's presence is read from the sysctl directory it registers: that is what
//! the settings need, it works without `/sys/module` (which containers may not
//! mount), and it also covers a module built into the kernel. Loading is global to
//! the kernel; the sysctls a module registers may still be per network namespace
//! (`net.bridge.*` is since Linux 5.3, and a new namespace starts with the
//! `bridge-nf-call-*` settings at 1).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Key, Sysctl};

/// A kernel module known by the sysctl directory it registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelModule {
    /// The module name given to modprobe.
    pub name: &'static str,
    /// The sysctl directory that exists once the module is loaded (`net.bridge`).
    pub sysctl_dir: &'static str,
    /// What breaks while the module is missing, for errors and `check` output.
    pub without: &'static str,
}

/// `br_netfilter`: passes bridged IPv4/IPv6 traffic through iptables and IPVS.
///
/// With a bridge CNI, a pod reaching a Service whose endpoint sits on the same bridge
/// gets the endpoint's reply bridged straight back, never routed through the node:
/// unless bridged traffic passes netfilter, IPVS never sees the reply to un-NAT it,
/// and the client drops a reply from an address it did not talk to.
pub const BR_NETFILTER: KernelModule = KernelModule {
    name: "br_netfilter",
    sysctl_dir: "net.bridge",
    without: "pods on a bridge cannot reach Services whose endpoints share the bridge",
};

/// How a module came to be present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loaded {
    /// It was present already (loaded earlier, or built into the kernel).
    Already,
    /// This call loaded it with modprobe.
    Now,
}

/// Where modprobe is looked for after `PATH`: container images and service managers
/// often run with a `PATH` without the sbin directories.
const MODPROBE_FALLBACKS: [&str; 2] = ["/usr/sbin/modprobe", "/sbin/modprobe"];

/// modprobe's words for "no such module for this kernel" (kmod and busybox).
const NO_SUCH_MODULE: [&str; 2] = ["not found in directory", "module not found"];

impl KernelModule {
    /// The sysctl directory the module registers, as a key.
    pub fn sysctl_key(&self) -> Key {
        self.sysctl_dir
            .parse()
            .expect("built-in module sysctl directories are valid keys")
    }

    /// True when the module's sysctls are visible through `sysctl`.
    pub fn is_loaded(&self, sysctl: &Sysctl) -> bool {
        sysctl.exists(&self.sysctl_key())
    }

    /// The commands that load the module now and at every boot.
    pub fn fix(&self) -> String {
        format!(
            "modprobe {name} && echo {name} > /etc/modules-load.d/{name}.conf",
            name = self.name
        )
    }

    /// Makes sure the module is loaded: when its sysctls are missing, runs
    /// `modprobe <name>` (found in `PATH`, else `/usr/sbin` or `/sbin`) and checks
    /// again.
    pub fn ensure_loaded(&self, sysctl: &Sysctl) -> Result<Loaded, Error> {
        if self.is_loaded(sysctl) {
            return Ok(Loaded::Already);
        }
        self.load_with(sysctl, &find_modprobe())
    }

    /// [`ensure_loaded`](Self::ensure_loaded) with an explicit modprobe program.
    pub fn ensure_loaded_with(&self, sysctl: &Sysctl, modprobe: &Path) -> Result<Loaded, Error> {
        if self.is_loaded(sysctl) {
            return Ok(Loaded::Already);
        }
        self.load_with(sysctl, modprobe)
    }

    fn load_with(&self, sysctl: &Sysctl, modprobe: &Path) -> Result<Loaded, Error> {
        let output = match Command::new(modprobe).arg(self.name).output() {
            Ok(output) => output,
            Err(source) if source.kind() == ErrorKind::NotFound => {
                return Err(Error::ModprobeMissing {
                    module: *self,
                    program: modprobe.to_owned(),
                });
            }
            Err(source) => {
                return Err(Error::ModprobeFailed {
                    module: *self,
                    detail: format!("cannot run {}: {source}", modprobe.display()),
                });
            }
        };
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        if !output.status.success() {
            let detail = if stderr.is_empty() {
                output.status.to_string()
            } else {
                stderr
            };
            let lower = detail.to_lowercase();
            return Err(
                if NO_SUCH_MODULE.iter().any(|words| lower.contains(words)) {
                    Error::ModuleAbsent {
                        module: *self,
                        detail,
                    }
                } else {
                    Error::ModprobeFailed {
                        module: *self,
                        detail,
                    }
                },
            );
        }
        if !self.is_loaded(sysctl) {
            return Err(Error::ModuleNotVisible {
                module: *self,
                path: sysctl.path(&self.sysctl_key()),
            });
        }
        tracing::info!(module = self.name, "kernel module loaded");
        Ok(Loaded::Now)
    }
}

/// The first modprobe in `PATH` or the usual sbin directories; plain `modprobe`
/// (which then fails to start, reported as [`Error::ModprobeMissing`]) when none is.
fn find_modprobe() -> PathBuf {
    let in_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("modprobe"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    in_path
        .into_iter()
        .chain(MODPROBE_FALLBACKS.iter().map(PathBuf::from))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from("modprobe"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sysctl root in a fresh temporary directory, standing for a kernel whose
    /// `/proc/sys` has no `net/bridge`.
    fn empty_root(name: &str) -> (PathBuf, Sysctl) {
        let dir = std::env::temp_dir().join(format!("node-sysctl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("net")).unwrap();
        (dir.clone(), Sysctl::at(dir))
    }

    #[test]
    fn present_sysctl_directory_means_loaded_without_running_modprobe() {
        let (dir, sysctl) = empty_root("present");
        std::fs::create_dir_all(dir.join("net/bridge")).unwrap();
        // A modprobe that cannot run proves it is not called.
        let loaded = BR_NETFILTER
            .ensure_loaded_with(&sysctl, Path::new("/nonexistent/modprobe"))
            .unwrap();
        assert_eq!(loaded, Loaded::Already);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_modprobe_says_what_is_missing_and_how_to_fix_it() {
        let (dir, sysctl) = empty_root("nomodprobe");
        let err = BR_NETFILTER
            .ensure_loaded_with(&sysctl, Path::new("/nonexistent/modprobe"))
            .unwrap_err();
        assert!(matches!(err, Error::ModprobeMissing { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with(
                "br_netfilter is not loaded: pods on a bridge cannot reach Services whose \
                 endpoints share the bridge"
            ),
            "{text}"
        );
        assert!(text.contains("/nonexistent/modprobe"), "{text}");
        assert!(text.contains("modprobe br_netfilter"), "{text}");
        assert!(text.contains("/etc/modules-load.d/"), "{text}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn failing_modprobe_is_reported_with_its_status() {
        let (dir, sysctl) = empty_root("false");
        let err = BR_NETFILTER
            .ensure_loaded_with(&sysctl, Path::new("false"))
            .unwrap_err();
        assert!(matches!(err, Error::ModprobeFailed { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("`modprobe br_netfilter` failed"), "{text}");
        assert!(text.contains("exit status: 1"), "{text}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn modprobe_success_without_the_sysctls_is_an_error() {
        // `true` succeeds like a modprobe that loaded the module into another kernel
        // than the one whose /proc/sys is read (or a stub modprobe in an image).
        let (dir, sysctl) = empty_root("true");
        let err = BR_NETFILTER
            .ensure_loaded_with(&sysctl, Path::new("true"))
            .unwrap_err();
        assert!(matches!(err, Error::ModuleNotVisible { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&dir.join("net/bridge").display().to_string()),
            "{text}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn fix_loads_now_and_at_boot() {
        assert_eq!(
            BR_NETFILTER.fix(),
            "modprobe br_netfilter && echo br_netfilter > /etc/modules-load.d/br_netfilter.conf"
        );
        assert_eq!(
            BR_NETFILTER.sysctl_key().segments(),
            ["net".to_string(), "bridge".to_string()]
        );
    }
}
