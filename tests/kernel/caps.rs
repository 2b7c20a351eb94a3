//! The capability check of `ipvs-proxy run` on real processes: this test binary is run
//! again under `setpriv` (fewer capabilities, another user) and in a mount namespace
//! with `/proc/sys` read-only, as an unprivileged container has it, and reports what
//! it lacks.

use std::process::Command;

use ipvs_proxy::preflight::caps::{self, Capability, ProcSysNet};

const CHILD: &str = "IPVS_PROXY_CAPS_CHILD";
/// The child test's name as libtest knows it: its path in the test binary (the binary
/// has a module per area, so the name carries the module).
fn child_test() -> String {
    let module = module_path!()
        .split_once("::")
        .map_or("", |(_crate, module)| module);
    format!("{module}::child_prints_its_report")
}
/// Starts each report line (libtest prints its own text on the same line first).
const MARK: &str = "CAPS: ";

/// Not a test of its own: the body of the re-run child, which prints what it lacks.
#[test]
fn child_prints_its_report() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let report = caps::check_self(true).unwrap();
    for missing in &report.missing {
        println!(
            "{MARK}missing {:?} {:?}",
            missing.capability, missing.in_bounding_set
        );
        println!("{MARK}says {missing}");
    }
    println!("{MARK}proc_sys_net {:?}", report.proc_sys_net);
    if let Some(problem) = report.proc_sys_net_problem() {
        println!("{MARK}says {problem}");
    }
}

/// Runs the child under `wrapper` (a command line ending where the test binary goes)
/// and returns its report lines.
fn child_report(wrapper: &[&str]) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    let output = Command::new(wrapper[0])
        .args(&wrapper[1..])
        .arg(&exe)
        .args(["--exact", &child_test(), "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{wrapper:?}: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .filter_map(|line| Some(line.split_once(MARK)?.1.to_string()))
        .collect()
}

fn assert_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let sets = caps::CapabilitySets::parse(&status).unwrap();
    assert!(
        Capability::ALL.iter().all(|c| sets.has(*c)),
        "run as root with every capability (the kernel lab does): {status}"
    );
}

#[test]
#[ignore = "needs the kernel lab"]
fn net_admin_only_process_lacks_net_raw_and_sys_module() {
    assert_root();
    let lines = child_report(&[
        "setpriv",
        "--bounding-set=-all,+net_admin",
        "--inh-caps=-all",
    ]);
    let missing: Vec<&String> = lines.iter().filter(|l| l.starts_with("missing ")).collect();
    assert_eq!(
        missing,
        [
            "missing NetRaw Some(false)",
            "missing SysModule Some(false)"
        ],
        "{lines:#?}"
    );
    assert!(
        lines.contains(&"proc_sys_net Writable".to_string()),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("says CAP_NET_RAW is missing")
                && l.ends_with("capabilities.add: [NET_RAW])")),
        "{lines:#?}"
    );
}

#[test]
#[ignore = "needs the kernel lab"]
fn non_root_user_lacks_everything_and_may_not_write_proc_sys_net() {
    assert_root();
    let lines = child_report(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ]);
    let missing: Vec<&String> = lines.iter().filter(|l| l.starts_with("missing ")).collect();
    assert_eq!(
        missing,
        [
            "missing NetAdmin Some(true)",
            "missing NetRaw Some(true)",
            "missing SysModule Some(true)"
        ],
        "{lines:#?}"
    );
    assert!(
        lines.contains(&"proc_sys_net NotPermitted".to_string()),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("says CAP_NET_ADMIN is missing") && l.contains("runAsUser: 0")),
        "{lines:#?}"
    );
}

#[test]
#[ignore = "needs the kernel lab"]
fn read_only_proc_sys_is_reported_with_the_fix() {
    assert_root();
    let lines = child_report(&[
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec \"$@\"",
        "sh",
    ]);
    assert!(
        !lines.iter().any(|l| l.starts_with("missing ")),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&"proc_sys_net ReadOnly".to_string()),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("read-only")
            && l.contains("arp_ignore=1")
            && l.contains("privileged: true")),
        "{lines:#?}"
    );
    // The mount namespace was private: this process may still write.
    assert_eq!(caps::probe_proc_sys_net(), ProcSysNet::Writable);
}

/// The DaemonSet's arrangement (manifests/base/daemonset.yaml): `/proc/sys` read-only as
/// in any unprivileged container, the host's `/proc/sys/net` bound at another path and
/// named in `IPVS_PROXY_PROC_SYS_NET`: the agent may write the network settings.
#[test]
#[ignore = "needs the kernel lab"]
fn host_proc_sys_net_bound_elsewhere_is_writable_under_a_read_only_proc_sys() {
    assert_root();
    let dir = std::env::temp_dir().join(format!("caps-host-net-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The bind is taken from the read-write /proc first, as the kubelet's hostPath is
    // from the host's: a bind taken from the read-only /proc/sys would be read-only too.
    let script = format!(
        "mount --bind /proc/sys/net {dir} \
         && mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys \
         && IPVS_PROXY_PROC_SYS_NET={dir} exec \"$@\"",
        dir = dir.display()
    );
    let lines = child_report(&[
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
    ]);
    let _ = std::fs::remove_dir(&dir);
    assert!(
        lines.contains(&"proc_sys_net Writable".to_string()),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.contains("read-only")), "{lines:#?}");
}
