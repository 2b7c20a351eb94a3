//! FRR's bfdd in a lab namespace, as a BFD peer for tests.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::{Background, Netns, host_sh};

/// A tmpfs owned by the `frr` user for FRR daemons' Unix sockets (the lab's shared
/// filesystem cannot hold sockets), unmounted on drop.
#[derive(Debug)]
pub struct RunDir(PathBuf);

impl RunDir {
    /// Mounts a fresh tmpfs at `/run/<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> RunDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = PathBuf::from(format!(
            "/run/{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        host_sh(&format!(
            "mkdir -p {0} && mount -t tmpfs {tag} {0} && chown frr:frr {0}",
            dir.display()
        ));
        RunDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).output();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// FRR's bfdd with one single-hop peer (detect multiplier 3, 300 ms timers), its
/// sockets in a [`RunDir`] of its own; killed on drop.
#[derive(Debug)]
pub struct Bfdd {
    // Field order is drop order: bfdd dies before its socket directory goes.
    daemon: Option<Background>,
    dir: RunDir,
}

impl Bfdd {
    /// Starts bfdd in `ns`, peered with `peer` from `local` (addresses as text).
    /// `tag` names its socket directory (see [`RunDir::new`]).
    pub fn start(ns: &Netns, tag: &str, local: &str, peer: &str) -> Bfdd {
        let dir = RunDir::new(tag);
        let d = dir.path().display();
        // No `interface` on the peer: bfdd learns interfaces from zebra, which the lab
        // does not run; a single-hop peer keyed by its addresses needs none.
        std::fs::write(
            dir.path().join("bfdd.conf"),
            format!(
                "bfd\n peer {peer} local-address {local}\n  detect-multiplier 3\n  \
                 receive-interval 300\n  transmit-interval 300\n !\n!\n"
            ),
        )
        .unwrap();
        let daemon = ns.spawn(&format!(
            "/usr/lib/frr/bfdd -f {d}/bfdd.conf --vty_socket {d} -z {d}/zserv.api \
             -i {d}/bfdd.pid --bfdctl {d}/bfdd.sock -u frr -g frr --log stdout"
        ));
        Bfdd {
            daemon: Some(daemon),
            dir,
        }
    }

    /// Runs vtysh commands against this bfdd (`ns` is the namespace it runs in) and
    /// returns what they printed.
    pub fn vtysh(&self, ns: &Netns, cmds: &[&str]) -> String {
        let args: String = cmds.iter().map(|c| format!(" -c '{c}'")).collect();
        ns.sh(&format!(
            "vtysh --vty_socket {} -d bfdd{args}",
            self.dir.path().display()
        ))
    }

    /// Kills bfdd at once: its peer hears nothing more (no AdminDown).
    pub fn kill(&mut self) {
        self.daemon.take();
    }
}

/// The installed bfdd's version line (trimmed), for the figures a test prints.
pub fn bfdd_version() -> String {
    host_sh("/usr/lib/frr/bfdd --version | head -n1")
        .trim()
        .to_string()
}
