//! BGP routers in lab namespaces, as peers for the BGP announcer's tests, benchmarks
//! and demo: BIRD, FRR (zebra + bgpd, and bfdd when asked) and GoBGP, each with its
//! files in a scratch directory and its daemons killed on drop, plus readers of the
//! router's kernel FIB.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::frr::RunDir;
use crate::{Background, Netns, veth, wait_until};

/// A fresh scratch directory `/run/lab/<tag>-<pid>-<n>` (the lab's tmpfs).
pub fn scratch_dir(tag: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = PathBuf::from(format!(
        "/run/lab/{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    dir
}

/// A router namespace `<prefix>r` and `n` node namespaces `<prefix>n<i>` (i from 1),
/// each node linked to the router: node i's `eth0` on 10.0.i.2/24, the router's `r<i>`
/// on 10.0.i.1/24.
pub fn star(prefix: &str, n: usize) -> (Netns, Vec<Netns>) {
    let router = Netns::new(&format!("{prefix}r"));
    let nodes = (1..=n)
        .map(|i| {
            let node = Netns::new(&format!("{prefix}n{i}"));
            veth(
                &router,
                &format!("r{i}"),
                &format!("10.0.{i}.1/24"),
                &node,
                "eth0",
                &format!("10.0.{i}.2/24"),
            );
            node
        })
        .collect();
    (router, nodes)
}

/// The next hops (`via X` words) of an `ip route show` output.
pub fn next_hops(routes: &str) -> BTreeSet<String> {
    routes
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "via")
        .map(|w| w[1].to_string())
        .collect()
}

/// `ip route show <prefix>` in `ns` (`-6` for an IPv6 prefix).
pub fn fib(ns: &Netns, prefix: &str) -> String {
    let family = if prefix.contains(':') { "-6 " } else { "" };
    String::from_utf8_lossy(&ns.exec(&format!("ip {family}route show {prefix}")).stdout)
        .into_owned()
}

/// Runs `cmd` in the namespace named `ns` and returns its standard output, whatever
/// its exit status (the routers' clients fail while their daemon starts).
fn output(ns: &str, cmd: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", cmd])
        .output()
        .unwrap_or_else(|e| panic!("spawn `{cmd}` in {ns}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// BIRD 2 with a kernel protocol per family that merges equal BGP paths into ECMP
/// routes (`merge paths on`), so the router's FIB shows one next hop per node.
#[derive(Debug)]
pub struct Bird {
    ns: String,
    dir: PathBuf,
    daemon: Option<Background>,
}

impl Bird {
    /// Starts BIRD in `ns` with router ID `router_id` and `protocols` (BGP protocol
    /// blocks, BFD and so on), and waits until `birdc` answers.
    pub fn start(ns: &Netns, router_id: &str, protocols: &str) -> Bird {
        let dir = scratch_dir("bird");
        std::fs::write(
            dir.join("bird.conf"),
            format!(
                "router id {router_id};\nprotocol device {{ }}\n\
                 protocol kernel {{ ipv4 {{ export all; }}; merge paths on; }}\n\
                 protocol kernel {{ ipv6 {{ export all; }}; merge paths on; }}\n{protocols}"
            ),
        )
        .unwrap();
        let daemon = ns.spawn(&format!(
            "bird -f -c {d}/bird.conf -s {d}/bird.ctl -P {d}/bird.pid",
            d = dir.display()
        ));
        let mut bird = Bird {
            ns: ns.name().to_string(),
            dir,
            daemon: Some(daemon),
        };
        if !wait_until(Duration::from_secs(20), || {
            bird.birdc("show status").contains("Daemon is up")
        }) {
            let log = bird.daemon.take().map(Background::finish);
            panic!("BIRD never answered:\n{}", log.unwrap_or_default());
        }
        bird
    }

    /// What `birdc <cmd>` prints.
    pub fn birdc(&self, cmd: &str) -> String {
        output(
            &self.ns,
            &format!("birdc -s {}/bird.ctl {cmd}", self.dir.display()),
        )
    }

    /// The configuration file, to edit and `birdc configure`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("bird.conf")
    }
}

/// A BIRD BGP protocol towards a node at `neighbor` in AS `neighbor_as` from `local`
/// in AS `local_as`, importing the neighbour's address family and exporting nothing;
/// `extra` goes inside the block (`passive on;`, `password "...";`, `bfd on;`, ...).
pub fn bird_bgp(
    name: &str,
    local: &str,
    local_as: u32,
    neighbor: &str,
    neighbor_as: u32,
    extra: &str,
) -> String {
    let family = if neighbor.contains(':') {
        "ipv6"
    } else {
        "ipv4"
    };
    format!(
        "protocol bgp {name} {{\n  local {local} as {local_as};\n  neighbor {neighbor} as {neighbor_as};\n  \
         {extra}\n  {family} {{ import all; export none; }};\n}}\n"
    )
}

/// FRR's zebra and bgpd (and bfdd when `bfd` is set) with `bgpd_conf`, their sockets in
/// a [`RunDir`]; zebra installs bgpd's best paths (ECMP with `maximum-paths`) in the
/// namespace's kernel FIB. Killed on drop.
#[derive(Debug)]
pub struct Frr {
    ns: String,
    // Field order is drop order: the daemons die before their socket directory goes.
    daemons: Vec<Background>,
    dir: RunDir,
}

impl Frr {
    /// Starts zebra, bgpd with `bgpd_conf` and, with `bfd`, bfdd in `ns`; waits until
    /// bgpd answers vtysh.
    pub fn start(ns: &Netns, bgpd_conf: &str, bfd: bool) -> Frr {
        let dir = RunDir::new("frr");
        let d = dir.path().display().to_string();
        std::fs::write(dir.path().join("zebra.conf"), "hostname lab\n").unwrap();
        std::fs::write(dir.path().join("bgpd.conf"), bgpd_conf).unwrap();
        std::fs::write(dir.path().join("bfdd.conf"), "hostname lab\n").unwrap();
        let mut daemons = vec![ns.spawn(&format!(
            "/usr/lib/frr/zebra -f {d}/zebra.conf -i {d}/zebra.pid -z {d}/zserv.api \
             --vty_socket {d} -u frr -g frr -P 0"
        ))];
        let zserv = dir.path().join("zserv.api");
        if !wait_until(Duration::from_secs(60), || zserv.exists()) {
            let log = daemons.pop().map(Background::finish).unwrap_or_default();
            panic!("zebra never opened its socket:\n{log}");
        }
        if bfd {
            daemons.push(ns.spawn(&format!(
                "/usr/lib/frr/bfdd -f {d}/bfdd.conf --vty_socket {d} -z {d}/zserv.api \
                 -i {d}/bfdd.pid --bfdctl {d}/bfdd.sock -u frr -g frr -P 0"
            )));
        }
        daemons.push(ns.spawn(&format!(
            "/usr/lib/frr/bgpd -f {d}/bgpd.conf -i {d}/bgpd.pid -z {d}/zserv.api \
             --vty_socket {d} -S -P 0"
        )));
        let frr = Frr {
            ns: ns.name().to_string(),
            daemons,
            dir,
        };
        if !wait_until(Duration::from_secs(60), || {
            frr.vtysh("bgpd", "show bgp summary json").contains('{')
        }) {
            let log: String = frr.daemons.into_iter().map(Background::finish).collect();
            panic!("bgpd never answered:\n{log}");
        }
        frr
    }

    /// What `vtysh -d <daemon> -c '<cmd>'` prints.
    pub fn vtysh(&self, daemon: &str, cmd: &str) -> String {
        output(
            &self.ns,
            &format!(
                "vtysh --vty_socket {} -d {daemon} -c '{cmd}'",
                self.dir.path().display()
            ),
        )
    }

    /// The socket directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// GoBGP's gobgpd with a TOML configuration and its API on 127.0.0.1:50051 of the
/// namespace. It keeps its routes in its own RIB (`gobgp global rib`); the lab runs
/// no zebra for it, so its kernel FIB stays empty.
#[derive(Debug)]
pub struct Gobgp {
    ns: String,
    dir: PathBuf,
    daemon: Option<Background>,
}

impl Gobgp {
    /// Starts gobgpd in `ns` with `toml` as its configuration; waits until it answers.
    pub fn start(ns: &Netns, toml: &str) -> Gobgp {
        let dir = scratch_dir("gobgp");
        std::fs::write(dir.join("gobgpd.toml"), toml).unwrap();
        let daemon = ns.spawn(&format!(
            "gobgpd -f {}/gobgpd.toml -t toml --api-hosts 127.0.0.1:50051 --pprof-disable",
            dir.display()
        ));
        let mut gobgp = Gobgp {
            ns: ns.name().to_string(),
            dir,
            daemon: Some(daemon),
        };
        if !wait_until(Duration::from_secs(60), || !gobgp.cli("global").is_empty()) {
            let log = gobgp.daemon.take().map(Background::finish);
            panic!("gobgpd never answered:\n{}", log.unwrap_or_default());
        }
        gobgp
    }

    /// What `gobgp <args>` prints.
    pub fn cli(&self, args: &str) -> String {
        output(&self.ns, &format!("gobgp -u 127.0.0.1 -p 50051 {args}"))
    }

    /// The scratch directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Frr {
    /// Stops bgpd with `signal` and waits (up to 30 s) for it to exit, then kills the
    /// other daemons; whether bgpd exited. SIGTERM is bgpd's own shutdown (it ends its
    /// sessions itself); SIGKILL leaves the kernel to close its connections, as when a
    /// container runtime kills what is left of a terminated pod.
    pub fn stop_bgpd(mut self, signal: nix::sys::signal::Signal) -> bool {
        // bgpd is started last (see `Frr::start`).
        let Some(mut bgpd) = self.daemons.pop() else {
            return false;
        };
        bgpd.signal(signal);
        bgpd.wait_exit(Duration::from_secs(30))
    }
}

/// Samples a router's FIB for a prefix every 50 ms until stopped: whether a next hop
/// was there, and when.
pub struct FibWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(Instant, bool)>>,
}

impl FibWatch {
    /// Starts sampling `ip route show <prefix>` in `router` for `next_hop`.
    pub fn start(router: &Netns, prefix: &str, next_hop: &str) -> FibWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (prefix, next_hop) = (prefix.to_string(), next_hop.to_string());
        let thread = router.thread({
            let stop = std::sync::Arc::clone(&stop);
            move || {
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let out = Command::new("ip")
                        .args(["route", "show", &prefix])
                        .output()
                        .expect("ip route show");
                    let present =
                        next_hops(&String::from_utf8_lossy(&out.stdout)).contains(&next_hop);
                    samples.push((Instant::now(), present));
                    std::thread::sleep(Duration::from_millis(50));
                }
                samples
            }
        });
        FibWatch { stop, thread }
    }

    /// Stops sampling; the samples, in order.
    pub fn finish(self) -> FibSamples {
        self.stop.store(true, Ordering::Relaxed);
        FibSamples(self.thread.join().expect("the FIB watch panicked"))
    }
}

/// What a [`FibWatch`] saw: (when, whether the next hop was there).
pub struct FibSamples(pub Vec<(Instant, bool)>);

impl FibSamples {
    /// When the next hop was missing.
    pub fn missing(&self) -> Vec<Instant> {
        self.0
            .iter()
            .filter(|(_, present)| !present)
            .map(|(at, _)| *at)
            .collect()
    }

    /// The longest time the next hop was missing: from the first sample without it to
    /// the next sample with it (or the last sample).
    pub fn longest_missing(&self) -> Duration {
        let mut longest = Duration::ZERO;
        let mut missing_since = None;
        for (at, present) in &self.0 {
            match (present, missing_since) {
                (false, None) => missing_since = Some(*at),
                (true, Some(since)) => {
                    longest = longest.max(at.duration_since(since));
                    missing_since = None;
                }
                _ => {}
            }
        }
        if let (Some(since), Some((last, _))) = (missing_since, self.0.last()) {
            longest = longest.max(last.duration_since(since));
        }
        longest
    }
}
