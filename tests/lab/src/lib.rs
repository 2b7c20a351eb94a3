//! Test helper for the kernel lab.
//!
//! Kernel-facing tests of ipvs-proxy run inside a real Linux kernel booted in QEMU
//! (`scripts/vm`). Every test gets its own network namespace — IPVS tables, ipsets,
//! sysctls, links and iptables are all per-namespace — so tests run in parallel and
//! leave nothing behind.
//!
//! ```no_run
//! let ns = netns_lab::Netns::new("doc");
//! ns.sh("ip link add kube-ipvs0 type dummy");
//! let links = ns.run(|| std::fs::read_to_string("/proc/thread-self/net/dev").unwrap());
//! assert!(links.contains("kube-ipvs0"));
//! ```
//!
//! Code passed to [`Netns::run`] executes on a fresh thread that has joined the
//! namespace; threads it spawns (a tokio runtime, for instance) inherit it. Read
//! per-namespace `/proc` files through `/proc/thread-self/net/...`: `/proc/self/net`
//! follows the process's main thread, which stays in the original namespace.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{CloneFlags, setns};

pub mod frr;
pub mod neigh;
pub mod routers;
mod topology;

pub use topology::{Pod, Topology, TopologyBuilder};

/// Marker text used in `#[ignore = ...]` of every kernel-lab test.
pub const NEEDS_LAB: &str = "needs the kernel lab";

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// True when this process runs inside the kernel lab VM (set by `scripts/vm`).
pub fn in_lab() -> bool {
    std::env::var_os("IPVS_PROXY_LAB").is_some()
}

/// A network namespace that exists for the lifetime of this value.
///
/// Created with `ip netns add` (so the standard tools can enter it with
/// `ip netns exec`), its loopback is brought up, and it is deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a fresh namespace whose name starts with `prefix`.
    ///
    /// Panics with the tool's message if the namespace cannot be created: a test
    /// that cannot build its topology must fail loudly, never pass.
    pub fn new(prefix: &str) -> Netns {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{}-{id}", std::process::id());
        run_checked(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.sh("ip link set lo up");
        ns
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on a new thread inside this namespace and returns its result.
    ///
    /// A panic inside `f` is propagated to the caller.
    pub fn run<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = Path::new("/run/netns").join(&self.name);
        std::thread::scope(|scope| {
            let handle = scope.spawn(move || {
                let file =
                    File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns into {}: {e}", path.display()));
                f()
            });
            match handle.join() {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Starts `f` on a new thread inside this namespace and returns at once; the
    /// thread (and every thread it spawns) stays in the namespace. For long-running
    /// work such as an agent on its own runtime; [`Netns::run`] waits instead.
    pub fn thread<F, R>(&self, f: F) -> std::thread::JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        // Opened here, so a missing namespace fails in the caller, not the thread.
        let path = Path::new("/run/netns").join(&self.name);
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        std::thread::Builder::new()
            .name(format!("in-{}", self.name))
            .spawn(move || {
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns into {}: {e}", path.display()));
                drop(file);
                f()
            })
            .unwrap_or_else(|e| panic!("spawn a thread for {}: {e}", self.name))
    }

    /// Runs the future `make` returns on a current-thread tokio runtime (every driver
    /// enabled) on a new thread inside this namespace, and returns its output: the
    /// async form of [`Netns::run`].
    pub fn run_async<F, Fut>(&self, make: F) -> Fut::Output
    where
        F: FnOnce() -> Fut + Send,
        Fut: std::future::Future,
        Fut::Output: Send,
    {
        self.run(move || runtime().block_on(make()))
    }

    /// Starts the future `make` returns on a current-thread tokio runtime (every
    /// driver enabled) on a new thread inside this namespace and returns at once: the
    /// async form of [`Netns::thread`], for a server or an announcer under test.
    pub fn thread_async<F, Fut>(&self, make: F) -> std::thread::JoinHandle<Fut::Output>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future,
        Fut::Output: Send + 'static,
    {
        self.thread(move || runtime().block_on(make()))
    }

    /// Runs a shell command inside the namespace and returns its raw output.
    pub fn exec(&self, cmd: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", cmd])
            .output()
            .unwrap_or_else(|e| panic!("spawn `{cmd}` in {}: {e}", self.name))
    }

    /// Runs a shell command inside the namespace, panics (with its stderr) if it
    /// fails, and returns its standard output.
    pub fn sh(&self, cmd: &str) -> String {
        let out = self.exec(cmd);
        if !out.status.success() {
            panic!(
                "`{cmd}` in netns {} failed ({}):\n{}{}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts a long-running command inside the namespace (a server, a capture).
    /// The command runs in a process group of its own, and the whole group (pipelines,
    /// children) is killed when the returned guard is dropped.
    pub fn spawn(&self, cmd: &str) -> Background {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name,
                "sh",
                "-c",
                &format!("exec {cmd}"),
            ])
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn `{cmd}` in {}: {e}", self.name));
        Background { child }
    }

    /// Starts an HTTP server (busybox httpd) on `port` in this namespace whose every
    /// page `/` answers `body`, and waits until it listens. Killed on drop.
    pub fn http_server(&self, port: u16, body: &str) -> Background {
        let dir = std::env::temp_dir().join(format!(
            "lab-http-{}-{}-{port}",
            self.name,
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        std::fs::write(dir.join("index.html"), format!("{body}\n"))
            .unwrap_or_else(|e| panic!("write index.html: {e}"));
        let server = self.spawn(&format!("busybox httpd -f -p {port} -h {}", dir.display()));
        let listening = wait_until(std::time::Duration::from_secs(10), || {
            self.exec(&format!("ss -Hltn 'sport = :{port}' | grep -q LISTEN"))
                .status
                .success()
        });
        assert!(
            listening,
            "http server on port {port} in {} never listened",
            self.name
        );
        server
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Best effort: a failing delete must not mask the test's own result.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A process started with [`Netns::spawn`]; killed on drop.
#[derive(Debug)]
pub struct Background {
    child: std::process::Child,
}

impl Background {
    fn kill_group(&mut self) {
        // The child leads its own process group (see `Netns::spawn`): killing the group
        // also ends the processes it started, such as both sides of a pipeline.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.kill();
    }

    /// The process id of the command ([`Netns::spawn`] execs it in place of the shell).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the command alone (not its group): SIGTERM for a graceful
    /// stop, SIGKILL for a crash of the process under test.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
        }
    }

    /// Waits up to `timeout` for the command to exit; whether it did.
    pub fn wait_exit(&mut self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Whether the command is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the process group and returns everything it printed (stdout, then stderr).
    pub fn finish(mut self) -> String {
        self.kill_group();
        let mut text = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut out, &mut text);
        }
        if let Some(mut err) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut err, &mut text);
        }
        let _ = self.child.wait();
        text
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill_group();
        let _ = self.child.wait();
    }
}

/// A current-thread runtime with IO and timers, for [`Netns::run_async`] and
/// [`Netns::thread_async`].
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Connects two namespaces with a veth pair and assigns the given addresses
/// (CIDR notation, e.g. `"10.0.0.1/24"`); both ends are brought up.
pub fn veth(a: &Netns, a_if: &str, a_addr: &str, b: &Netns, b_if: &str, b_addr: &str) {
    let tmp = format!("vt{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    a.sh(&format!("ip link add {a_if} type veth peer name {tmp}"));
    a.sh(&format!("ip link set {tmp} netns {}", b.name()));
    b.sh(&format!("ip link set {tmp} name {b_if}"));
    for (ns, ifname, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
        let nodad = if addr.contains(':') { " nodad" } else { "" };
        ns.sh(&format!("ip addr add {addr} dev {ifname}{nodad}"));
        ns.sh(&format!("ip link set {ifname} up"));
    }
}

/// Runs a command on the (lab) host outside any test namespace; panics on failure.
pub fn host_sh(cmd: &str) -> String {
    let out = run_checked(Command::new("sh").args(["-c", cmd]));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_checked(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Polls `check` every 20 ms until it returns true or `timeout` passes; returns
/// whether it became true. For waiting on a server to listen or state to converge.
pub fn wait_until(timeout: std::time::Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
