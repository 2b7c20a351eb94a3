//! The one error type of this crate.

use std::path::PathBuf;

use crate::Key;
use crate::module::KernelModule;

/// Everything that can go wrong reading, writing or verifying a sysctl.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key was built from an unusable name segment.
    #[error("invalid sysctl key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// Why it cannot address a file under /proc/sys.
        reason: &'static str,
    },
    /// The file behind the key does not exist in this kernel / network namespace.
    #[error("sysctl {key} does not exist ({}): {hint}", path.display())]
    Missing {
        /// The key looked up.
        key: Key,
        /// The file that was expected.
        path: PathBuf,
        /// What to do about it (load a module, create the interface...).
        hint: String,
    },
    /// The process may not write the sysctl.
    #[error(
        "permission denied writing sysctl {key} ({}): run as root (CAP_NET_ADMIN) \
         with /proc/sys mounted read-write",
        path.display()
    )]
    PermissionDenied {
        /// The key written.
        key: Key,
        /// Its file.
        path: PathBuf,
    },
    /// The kernel refused the value (EINVAL: out of range or malformed).
    #[error("the kernel rejected {value:?} for sysctl {key}")]
    Rejected {
        /// The key written.
        key: Key,
        /// The value the kernel refused.
        value: String,
    },
    /// Any other I/O failure on the sysctl's file.
    #[error("could not {op} sysctl {key} ({}): {source}", path.display())]
    Io {
        /// "read" or "write".
        op: &'static str,
        /// The key accessed.
        key: Key,
        /// Its file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A sysctl expected to hold a number holds something else.
    #[error("sysctl {key} holds {value:?}, which is not an integer")]
    NotAnInteger {
        /// The key read.
        key: Key,
        /// What it held.
        value: String,
    },
    /// A write succeeded but reading back shows another value.
    #[error(
        "sysctl {key} was set to {wrote} but reads back {read_back}: the kernel clamps or \
         ignores the value, or something else on the node (a sysctl.d rule, another agent) \
         rewrites it"
    )]
    NotKept {
        /// The key written.
        key: Key,
        /// The value written.
        wrote: String,
        /// The value read right after.
        read_back: String,
    },
    /// A needed module is not loaded and no modprobe program could be started.
    #[error(
        "{} is not loaded: {}; modprobe is not available here ({}): run `modprobe {}` on \
         the node and add {} to /etc/modules-load.d/, or give the agent modprobe (kmod) \
         and the node's /lib/modules",
        module.name, module.without, program.display(), module.name, module.name
    )]
    ModprobeMissing {
        /// The module.
        module: KernelModule,
        /// The modprobe program that could not be started.
        program: PathBuf,
    },
    /// modprobe found no such module for the running kernel.
    #[error(
        "{} is not loaded: {}; modprobe found no {} module for this kernel ({detail}): \
         mount the node's /lib/modules into the agent, or install the kernel's modules \
         package on the node, then run `modprobe {}` and add {} to /etc/modules-load.d/",
        module.name, module.without, module.name, module.name, module.name
    )]
    ModuleAbsent {
        /// The module.
        module: KernelModule,
        /// What modprobe said.
        detail: String,
    },
    /// modprobe ran and failed for another reason (usually a missing privilege).
    #[error(
        "{} is not loaded: {}; `modprobe {}` failed ({detail}): the agent needs root with \
         CAP_SYS_MODULE to load it, or run `modprobe {}` on the node and add {} to \
         /etc/modules-load.d/",
        module.name, module.without, module.name, module.name, module.name
    )]
    ModprobeFailed {
        /// The module.
        module: KernelModule,
        /// What modprobe said, or its exit status.
        detail: String,
    },
    /// modprobe succeeded but the module's sysctls are still not visible.
    #[error(
        "{} is not loaded: {}; `modprobe {}` succeeded but {} is still missing: the \
         /proc/sys read here is not the node's (run with hostNetwork and the host's /proc), \
         or modprobe is a stub",
        module.name, module.without, module.name, path.display()
    )]
    ModuleNotVisible {
        /// The module.
        module: KernelModule,
        /// The sysctl directory that should have appeared.
        path: PathBuf,
    },
}
