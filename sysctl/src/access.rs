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
    /// Where the `net` keys are instead, when set ([`Sysctl::with_net_at`]).
    net: Option<PathBuf>,
}

impl Default for Sysctl {
    fn default() -> Self {
        Sysctl::at("/proc/sys")
    }
}

impl Sysctl {
    /// Sysctls below another root than `/proc/sys` (a host's /proc mounted elsewhere).
    pub fn at(root: impl Into<PathBuf>) -> Sysctl {
        Sysctl {
            root: root.into(),
            net: None,
        }
    }

    /// The same tree, but the `net` keys below `dir` (the host's `/proc/sys/net` bound
    /// elsewhere): an unprivileged container has `/proc/sys` read-only, so a
    /// host-network agent is given the node's `/proc/sys/net` at another path, and
    /// everything else (`kernel.osrelease`) is still read where it is.
    pub fn with_net_at(self, dir: impl Into<PathBuf>) -> Sysctl {
        Sysctl {
            net: Some(dir.into()),
            ..self
        }
    }

    /// The file that holds `key`.
    pub fn path(&self, key: &Key) -> PathBuf {
        match &self.net {
            Some(net) if key.starts_with(&["net"]) => {
                net.join(key.segments()[1..].iter().collect::<PathBuf>())
            }
            _ => self.root.join(key.relative_path()),
        }
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
                hint: missing_hint(
                    key,
                    &self.net.clone().unwrap_or_else(|| self.root.join("net")),
                ),
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
fn missing_hint(key: &Key, net: &Path) -> String {
    if key.starts_with(&["net", "ipv4", "vs"]) {
        "IPVS is not available in this kernel: modprobe ip_vs".into()
    } else if key.starts_with(&["net", "bridge"]) {
        format!("br_netfilter is not loaded: {}", crate::BR_NETFILTER.fix())
    } else if key.starts_with(&["net", "ipv6"]) && !net.join("ipv6").exists() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_keys_resolve_below_the_net_directory_and_the_rest_below_the_root() {
        let base = std::env::temp_dir().join(format!("sysctl-net-at-{}", std::process::id()));
        let (root, net) = (base.join("proc/sys"), base.join("host/proc/sys/net"));
        std::fs::create_dir_all(root.join("kernel")).unwrap();
        std::fs::create_dir_all(root.join("net/ipv4")).unwrap();
        std::fs::create_dir_all(net.join("ipv4/vs")).unwrap();
        std::fs::write(root.join("kernel/osrelease"), "6.1.0\n").unwrap();
        std::fs::write(root.join("net/ipv4/ip_forward"), "0\n").unwrap();
        std::fs::write(net.join("ipv4/ip_forward"), "0\n").unwrap();
        std::fs::write(net.join("ipv4/vs/conntrack"), "0\n").unwrap();
        let sysctl = Sysctl::at(&root).with_net_at(&net);
        let key = |text: &str| text.parse::<Key>().unwrap();

        assert_eq!(sysctl.read(&key("kernel.osrelease")).unwrap(), "6.1.0");
        sysctl.write(&key("net.ipv4.ip_forward"), "1").unwrap();
        sysctl.write(&key("net.ipv4.vs.conntrack"), "1").unwrap();
        // Regular files keep their old newline where a sysctl would not: compare the
        // first character.
        let first = |path: PathBuf| std::fs::read_to_string(path).unwrap()[..1].to_string();
        assert_eq!(first(net.join("ipv4/ip_forward")), "1");
        assert_eq!(first(net.join("ipv4/vs/conntrack")), "1");
        // The root's own net directory is not touched.
        assert_eq!(
            std::fs::read_to_string(root.join("net/ipv4/ip_forward")).unwrap(),
            "0\n"
        );
        // A missing IPv6 tree is judged where the net keys are.
        let missing = sysctl
            .read(&key("net.ipv6.conf.all.forwarding"))
            .unwrap_err();
        assert!(
            missing.to_string().contains("IPv6 is disabled"),
            "{missing}"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
