//! Reading and writing sysctl files.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Key};

/// Access to the sysctl tree of the calling thread's namespaces.
///
/// `/proc/sys/net` shows the network namespace of the thread that opens a file, so
/// the same value reads and writes per-namespace settings when used on a thread
/// that has joined another namespace.
#[derive(Clone, Debug)]
pub struct Sysctl {
    root: PathBuf,
}

impl Default for Sysctl {
    fn default() -> Self {
        Sysctl::at("/proc/sys")
    }
}

impl Sysctl {
    /// Sysctls below another root than `/proc/sys` (a host's /proc mounted elsewhere).
    pub fn at(root: impl Into<PathBuf>) -> Sysctl {
        Sysctl { root: root.into() }
    }

    /// The file that holds `key`.
    pub fn path(&self, key: &Key) -> PathBuf {
        self.root.join(key.relative_path())
    }

    /// True when `key` names an existing file or directory (a module or an
    /// interface that provides it is present).
    pub fn exists(&self, key: &Key) -> bool {
        self.path(key).exists()
    }

    /// Reads a sysctl, without its trailing newline.
    pub fn read(&self, key: &Key) -> Result<String, Error> {
        let path = self.path(key);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text.trim_end().to_owned()),
            Err(source) => Err(self.io_error("read", key, path, source)),
        }
    }

    /// Reads a sysctl that holds one integer.
    pub fn read_int(&self, key: &Key) -> Result<i64, Error> {
        let value = self.read(key)?;
        value.trim().parse().map_err(|_| Error::NotAnInteger {
            key: key.clone(),
            value,
        })
    }

    /// Writes a sysctl (one `write(2)` of the whole value, as the kernel expects).
    pub fn write(&self, key: &Key, value: &str) -> Result<(), Error> {
        let path = self.path(key);
        let result = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut file| file.write_all(value.as_bytes()));
        match result {
            Ok(()) => Ok(()),
            Err(source) if source.kind() == ErrorKind::InvalidInput => Err(Error::Rejected {
                key: key.clone(),
                value: value.to_owned(),
            }),
            Err(source) => Err(self.io_error("write", key, path, source)),
        }
    }

    /// The entries of a sysctl directory, sorted (e.g. the interfaces below
    /// `net.ipv4.conf`).
    pub fn list(&self, dir: &Key) -> Result<Vec<String>, Error> {
        let path = self.path(dir);
        let entries = std::fs::read_dir(&path)
            .map_err(|source| self.io_error("list", dir, path.clone(), source))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| self.io_error("list", dir, path.clone(), source))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn io_error(
        &self,
        op: &'static str,
        key: &Key,
        path: PathBuf,
        source: std::io::Error,
    ) -> Error {
        match source.kind() {
            ErrorKind::NotFound => Error::Missing {
                hint: missing_hint(key, &self.root),
                key: key.clone(),
                path,
            },
            ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem if op == "write" => {
                Error::PermissionDenied {
                    key: key.clone(),
                    path,
                }
            }
            _ => Error::Io {
                op,
                key: key.clone(),
                path,
                source,
            },
        }
    }
}

/// What to do when a sysctl file is absent, by the subsystem that provides it.
fn missing_hint(key: &Key, root: &Path) -> String {
    if key.starts_with(&["net", "ipv4", "vs"]) {
        "IPVS is not available in this kernel: modprobe ip_vs".into()
    } else if key.starts_with(&["net", "bridge"]) {
        format!("br_netfilter is not loaded: {}", crate::BR_NETFILTER.fix())
    } else if key.starts_with(&["net", "ipv6"]) && !root.join("net/ipv6").exists() {
        "IPv6 is disabled in this kernel (ipv6.disable=1 or no ipv6 module)".into()
    } else if (key.starts_with(&["net", "ipv4", "conf"])
        || key.starts_with(&["net", "ipv6", "conf"]))
        && key.segments().len() == 5
    {
        format!(
            "no interface {:?} in this network namespace (check `ip link`)",
            key.segments()[3]
        )
    } else {
        "this kernel does not provide it (check the key name and kernel version)".into()
    }
}
