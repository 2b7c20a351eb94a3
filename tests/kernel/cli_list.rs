//! `ipvs-proxy list` against the real `ipvsadm` 1.31: varied IPVS state is built
//! with ipvsadm itself in a fresh network namespace, then both programs list it
//! with the same options and their outputs must be byte-identical. Kernel tests
//! run with `scripts/vm-test -p ipvs-proxy -- cli_list`.
//!
//! The JSON schema stability test runs on the host.

use std::time::Duration;

use ipvs_proxy::listing::JsonListing;
use ipvs_proxy::listing::table::{
    Destination, Family, Forwarding, Netmask, Persistence, Service, ServiceFlags, ServiceKey,
    Stats, Table, Timeouts, Tunnel, TunnelChecksum, TunnelType, protocol,
};
use netns_lab::{Netns, Topology, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_ipvs-proxy");

/// Every kind of service and destination ipvsadm can create, in an order the
/// sort has to fix (including addresses whose C comparison wraps around).
const STATE: &[&str] = &[
    "ip link add kube-ipvs0 type dummy",
    "ip link set kube-ipvs0 up",
    "ip addr add 192.0.2.1/24 dev kube-ipvs0",
    "ip addr add 2001:db8:ff::1/64 dev kube-ipvs0 nodad",
    // Plain round robin, every forwarding method, thresholds; 200.x sorts before 10.x.
    "ipvsadm -A -t 10.96.0.10:80 -s rr",
    "ipvsadm -a -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 3 -x 100 -y 10",
    "ipvsadm -a -t 10.96.0.10:80 -r 10.244.1.4:8080 -m -w 0",
    "ipvsadm -a -t 10.96.0.10:80 -r 200.0.0.1 -g -w 2",
    "ipvsadm -a -t 10.96.0.10:80 -r 10.244.2.9 -i -w 1",
    "ipvsadm -a -t 10.96.0.10:80 -r 192.0.2.1:8080 -m",
    "ipvsadm -a -t 10.96.0.10:80 -r 127.0.0.1:80 -m",
    "ipvsadm -A -t 200.1.2.3:443 -s wrr",
    "ipvsadm -A -t 10.96.0.9:65535 -s lc",
    // Persistence with a netmask, one-packet scheduling, scheduler flags.
    "ipvsadm -A -t 10.96.0.11:443 -s sh -b sh-fallback,sh-port -p 360 -M 255.255.255.0",
    "ipvsadm -a -t 10.96.0.11:443 -r 10.244.1.6 -g",
    "ipvsadm -A -u 10.96.0.53:53 -s mh -b mh-fallback,mh-port -o",
    "ipvsadm -a -u 10.96.0.53:53 -r 10.244.3.1:5353 -m -w 5",
    "ipvsadm -a -u 10.96.0.53:53 -r 10.244.3.2:5353 -m -w 7",
    "ipvsadm -A -u 10.96.0.54:5060 -s dh -p",
    "ipvsadm -A -t 10.96.0.55:80 -s lblc -b flag-1,flag-3",
    "ipvsadm -A --sctp-service 10.96.0.70:3868 -s wlc",
    "ipvsadm -a --sctp-service 10.96.0.70:3868 -r 10.244.4.1:3868 -m",
    // Tunnels: IPIP, GUE with checksum, GRE with remote checksum off.
    "ipvsadm -A -t 10.96.0.80:80 -s sed",
    "ipvsadm -a -t 10.96.0.80:80 -r 10.244.5.1 -i --tun-type ipip",
    "ipvsadm -a -t 10.96.0.80:80 -r 10.244.5.2 -i --tun-type gue --tun-port 6080 --tun-csum",
    "ipvsadm -a -t 10.96.0.80:80 -r 10.244.5.3 -i --tun-type gue --tun-port 6081 --tun-remcsum",
    "ipvsadm -a -t 10.96.0.80:80 -r 10.244.5.4 -i --tun-type gre --tun-nocsum",
    // Firewall marks, IPv4 and IPv6.
    "ipvsadm -A -f 7 -s nq -p 60",
    "ipvsadm -a -f 7 -r 10.244.6.1:0 -m",
    "ipvsadm -A -f 8 -6 -s fo",
    "ipvsadm -a -f 8 -6 -r [2001:db8:1::5]:80 -m",
    // IPv6 services, persistent with a prefix, local and loopback destinations.
    "ipvsadm -A -t [2001:db8::10]:80 -s ovf -p 100 -M 64",
    "ipvsadm -a -t [2001:db8::10]:80 -r [2001:db8:1::2]:8080 -m -w 4 -x 9 -y 3",
    "ipvsadm -a -t [2001:db8::10]:80 -r [2001:db8:1::1]:8080 -m",
    "ipvsadm -a -t [2001:db8::10]:80 -r [::1]:80 -m",
    "ipvsadm -a -t [2001:db8::10]:80 -r [2001:db8:ff::1]:80 -m",
    "ipvsadm -A -u [fd00::1:0:0:53]:53 -s lblcr",
    "ipvsadm -A -t [::ffff:10.1.2.3]:80 -s rr",
];

fn build_state(ns: &Netns) {
    for command in STATE {
        ns.sh(command);
    }
}

/// Runs both listings and returns a description of the difference, if any.
/// Counters, rates and expiry timers move (the kernel's rate estimator ticks
/// every 2 seconds and starting a binary in the emulated VM can take one), so
/// ipvsadm's output is taken between two of ours and must equal one of them; a
/// pair that straddles a tick on both sides is retried before it counts.
fn differs(ns: &Netns, ipvsadm: &str, ours: &str) -> Option<String> {
    let mut last = None;
    for _ in 0..10 {
        let before = ns.exec(ours);
        let theirs = ns.exec(ipvsadm);
        let after = ns.exec(ours);
        let same = |mine: &std::process::Output| {
            without_expiry(&theirs.stdout) == without_expiry(&mine.stdout)
                && theirs.status.code() == mine.status.code()
                && theirs.stderr == mine.stderr
        };
        if same(&before) || same(&after) {
            return None;
        }
        last = Some(format!(
            "`{ipvsadm}` vs `{ours}`:\n--- ipvsadm ({}):\n{}{}\n--- ipvs-proxy ({}):\n{}{}",
            theirs.status,
            String::from_utf8_lossy(&theirs.stdout),
            String::from_utf8_lossy(&theirs.stderr),
            after.status,
            String::from_utf8_lossy(&after.stdout),
            String::from_utf8_lossy(&after.stderr),
        ));
        std::thread::sleep(Duration::from_millis(300));
    }
    last
}

/// The output with the expiry column of connection listings (`-c`) blanked:
/// it counts down every second, and the emulated VM can take seconds to start a
/// binary, so the two programs never print the same instant.
fn without_expiry(stdout: &[u8]) -> String {
    let text = String::from_utf8_lossy(stdout);
    if !text.starts_with("IPVS connection entries\n") {
        return text.into_owned();
    }
    text.lines()
        .enumerate()
        .map(|(i, line)| match (i, line.get(4..9)) {
            (2.., Some(expire)) if expire.as_bytes().get(2) == Some(&b':') => {
                format!("{}-----{}\n", &line[..4], &line[9..])
            }
            _ => format!("{line}\n"),
        })
        .collect()
}

/// Compares `ipvsadm -L <options>` with `ipvs-proxy list <options>`, numeric and
/// with names, and returns every difference.
fn compare_all(ns: &Netns, option_sets: &[&str]) -> Vec<String> {
    let mut failures = Vec::new();
    for options in option_sets {
        for numeric in ["-n", ""] {
            let ipvsadm = format!("ipvsadm -L {numeric} {options}");
            let ours = format!("RUST_LOG=off {BIN} list {numeric} {options}");
            failures.extend(differs(ns, &ipvsadm, &ours));
        }
    }
    failures
}

const LIST_OPTIONS: &[&str] = &[
    "",
    "--stats",
    "--rate",
    "--stats --exact",
    "--rate --exact",
    "--thresholds",
    "--persistent-conn",
    "--tun-info",
    "--sort",
    "--nosort",
    "--timeout",
    "-t 10.96.0.10:80",
    "-t 10.96.0.10:http --stats",
    "-t 10.96.0.11:443 --thresholds",
    "-u 10.96.0.53:53 --rate",
    "-u 10.96.0.53:domain",
    "--sctp-service 10.96.0.70:3868",
    "-t [2001:db8::10]:80 --persistent-conn",
    "-f 7",
    "-f 8 -6",
    "-f 9",
    "-t 10.96.0.99:80",
];

#[test]
#[ignore = "needs the kernel lab"]
fn listing_matches_ipvsadm_for_every_option_and_kind_of_service() {
    let ns = Netns::new("cli-list");
    build_state(&ns);
    let mut failures = compare_all(&ns, LIST_OPTIONS);
    // ipvsadm -S / --save (rules), numeric and named.
    for options in ["-S -n", "-S"] {
        let ours = format!(
            "RUST_LOG=off {BIN} list {}",
            options.replace("-S", "--save")
        );
        failures.extend(differs(&ns, &format!("ipvsadm {options}"), &ours));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
#[ignore = "needs the kernel lab"]
fn empty_table_and_changed_timeouts_match_ipvsadm() {
    let ns = Netns::new("cli-empty");
    let mut failures = compare_all(&ns, &["", "--stats", "--timeout"]);
    ns.sh("ipvsadm --set 901 121 301");
    failures.extend(compare_all(&ns, &["--timeout"]));
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A client, a node running IPVS and a backend; the client pulls `bytes` bytes
/// through the service `10.96.0.20:80` (persistent, so templates exist too).
fn traffic(bytes: u64) -> (Netns, Netns, Netns) {
    let Topology {
        client,
        node,
        mut pods,
    } = Topology::builder("cli-client").forwarding().build();
    let backend = pods.remove(0).ns;
    node.sh("ip link add kube-ipvs0 type dummy && ip addr add 10.96.0.20/32 dev kube-ipvs0");
    node.sh("ip addr add 10.96.0.21/32 dev kube-ipvs0");
    node.sh("ipvsadm -A -t 10.96.0.20:80 -s rr -p 600");
    node.sh("ipvsadm -a -t 10.96.0.20:80 -r 10.244.0.10:8080 -m");
    node.sh("ipvsadm -A -t 10.96.0.21:80 -s rr");
    node.sh("ipvsadm -a -t 10.96.0.21:80 -r 10.244.0.10:8080 -m -w 2");
    client.sh("ip route add 10.96.0.0/12 via 192.168.50.1");

    // Rust's string continuations would eat Python's indentation: use files.
    let dir = std::env::temp_dir().join(format!("cli-traffic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let server_py = dir.join("server.py");
    std::fs::write(
        &server_py,
        format!(
            r#"import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080))
s.listen(8)
chunk = bytes(1 << 20)
while True:
    c, _ = s.accept()
    try:
        left = {bytes} if c.recv(100) == b"go" else 1
        while left > 0:
            n = min(left, len(chunk))
            c.sendall(chunk[:n])
            left -= n
    except OSError:
        pass
    c.close()
"#
        ),
    )
    .unwrap();
    let client_py = dir.join("client.py");
    std::fs::write(
        &client_py,
        r#"import socket, sys
c = socket.create_connection((sys.argv[1], 80))
c.sendall(sys.argv[2].encode())
n = 0
while True:
    d = c.recv(1 << 20)
    if not d:
        break
    n += len(d)
print(n)
"#,
    )
    .unwrap();
    let server = backend.spawn(&format!("python3 {}", server_py.display()));
    // python3 starts slowly in the emulated VM while other tests run.
    let listening = wait_until(Duration::from_secs(90), || {
        backend
            .exec("ss -Hltn 'sport = :8080' | grep -q LISTEN")
            .status
            .success()
    });
    assert!(
        listening,
        "traffic server never listened: {}",
        server.finish()
    );
    let client_py = client_py.display();
    let received = client.sh(&format!("python3 {client_py} 10.96.0.20 go"));
    assert_eq!(
        received.trim(),
        bytes.to_string(),
        "transfer through IPVS was cut short"
    );
    // A few short connections through the second service.
    for _ in 0..3 {
        let one = client.sh(&format!("python3 {client_py} 10.96.0.21 x"));
        assert_eq!(one.trim(), "1");
    }
    (client, node, backend)
}

#[test]
#[ignore = "needs the kernel lab"]
fn counters_and_connections_from_real_traffic_match_ipvsadm() {
    // Over 100 million bytes, so ipvsadm scales the byte counters (K/M).
    let (_client, node, _backend) = traffic(110_000_000);
    // The kernel folds per-CPU counters into the totals every 2 seconds.
    let counted = wait_until(Duration::from_secs(10), || {
        node.sh("ipvsadm -Ln --stats -t 10.96.0.20:80")
            .contains('K')
    });
    assert!(counted, "{}", node.sh("ipvsadm -Ln --stats --exact"));
    let mut failures = compare_all(
        &node,
        &[
            "--stats",
            "--stats --exact",
            "--rate",
            "--rate --exact",
            "--persistent-conn",
            "",
            "-c",
            "-c --persistent-conn",
        ],
    );
    // The connection table really had entries (the template and the connections).
    let conns = node.sh(&format!("RUST_LOG=off {BIN} list -n -c"));
    assert!(conns.contains("10.96.0.20:80"), "{conns}");
    failures.extend(differs(
        &node,
        "ipvsadm -Ln --stats",
        &format!("RUST_LOG=off {BIN} list -n --stats"),
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
#[ignore = "needs the kernel lab"]
fn invoked_as_ipvsadm_it_lists_and_refuses_changes() {
    let ns = Netns::new("cli-alias");
    build_state(&ns);
    let dir = std::env::temp_dir().join(format!("cli-alias-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let alias = dir.join("ipvsadm");
    let _ = std::fs::remove_file(&alias);
    std::os::unix::fs::symlink(BIN, &alias).unwrap();
    let alias = alias.display();

    let mut failures = Vec::new();
    for options in [
        "-Ln",
        "-L -n --stats",
        "-l -n --thresholds",
        "--list -n",
        "-Lnc",
        "-Sn",
        "-S -n",
        "",
    ] {
        failures.extend(differs(
            &ns,
            &format!("ipvsadm {options}"),
            &format!("RUST_LOG=off {alias} {options}"),
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    let before = ns.sh("ipvsadm -Sn");
    for change in [
        "-A -t 10.9.9.9:80 -s rr",
        "-C",
        "-D -t 10.96.0.10:80",
        "-a -t 10.96.0.10:80 -r 10.1.1.1 -m",
        "-d -t 10.96.0.10:80 -r 10.244.1.5:8080",
        "-e -t 10.96.0.10:80 -r 10.244.1.5:8080 -m -w 9",
        "-Z",
        "--set 1 2 3",
    ] {
        let out = ns.exec(&format!("RUST_LOG=off {alias} {change}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "`ipvsadm {change}` was accepted");
        assert!(
            stderr.contains("refused") && stderr.contains("owned by ipvs-proxy"),
            "{stderr}"
        );
    }
    assert_eq!(
        ns.sh("ipvsadm -Sn"),
        before,
        "a refused command changed the table"
    );
    assert_eq!(
        ns.sh("ipvsadm -L --timeout"),
        "Timeout (tcp tcpfin udp): 900 120 300\n"
    );
}

#[test]
#[ignore = "needs the kernel lab"]
fn json_lists_the_kernel_state() {
    let ns = Netns::new("cli-json");
    build_state(&ns);
    let json: serde_json::Value =
        serde_json::from_str(&ns.sh(&format!("RUST_LOG=off {BIN} list --json"))).unwrap();
    let services = json["services"].as_array().unwrap();
    assert_eq!(services.len(), 14, "{json:#}");
    // Same order as ipvsadm: 200.1.2.3 before 10.96.0.9 (the C comparison wraps).
    assert_eq!(services[0]["key"]["address"], "200.1.2.3", "{json:#}");
    let dns = services
        .iter()
        .find(|s| s["key"]["address"] == "10.96.0.53")
        .unwrap();
    assert_eq!(dns["scheduler"], "mh");
    assert_eq!(dns["flags"]["one_packet"], true);
    assert_eq!(dns["destinations"][1]["weight"], 7);
    let persistent = services
        .iter()
        .find(|s| s["key"]["address"] == "10.96.0.11")
        .unwrap();
    assert_eq!(persistent["persistence"]["netmask"], "255.255.255.0");
    assert_eq!(json["timeouts"], serde_json::Value::Null);
    // With --timeout, only the timeouts (as `ipvsadm -L --timeout` prints only them).
    ns.sh("ipvsadm --set 901 121 301");
    let timeouts: serde_json::Value =
        serde_json::from_str(&ns.sh(&format!("RUST_LOG=off {BIN} list --json --timeout"))).unwrap();
    assert_eq!(
        timeouts,
        serde_json::json!({"timeouts": {"tcp": 901, "tcp_fin": 121, "udp": 301}})
    );

    let one: serde_json::Value =
        serde_json::from_str(&ns.sh(&format!("RUST_LOG=off {BIN} list --json -f 8 -6"))).unwrap();
    assert_eq!(one["services"].as_array().unwrap().len(), 1);
    assert_eq!(
        one["services"][0]["destinations"][0]["address"],
        "2001:db8:1::5"
    );
}

/// The JSON document scripts depend on: field names and shapes must not change
/// by accident. Regenerate the fixture only for a deliberate schema change.
#[test]
fn json_schema_is_stable() {
    let stats = Stats {
        conns: 3,
        inpkts: 12,
        outpkts: 10,
        inbytes: 1_234,
        outbytes: 123_456_789_012,
        cps: 1,
        inpps: 2,
        outpps: 3,
        inbps: 400,
        outbps: 500,
    };
    let table = Table {
        version: "1.2.1".into(),
        connection_table_size: 4096,
        services: vec![
            Service {
                key: ServiceKey::Address {
                    protocol: protocol::TCP,
                    address: "10.96.0.10".parse().unwrap(),
                    port: 80,
                },
                scheduler: "sh".into(),
                persistence: Some(Persistence {
                    timeout: 360,
                    netmask: Netmask::V4("255.255.255.0".parse().unwrap()),
                }),
                persistence_engine: None,
                flags: ServiceFlags {
                    one_packet: false,
                    sched_flag_1: true,
                    sched_flag_2: false,
                    sched_flag_3: false,
                },
                stats,
                destinations: vec![
                    Destination {
                        address: "10.244.1.5".parse().unwrap(),
                        port: 8080,
                        forwarding: Forwarding::Masq,
                        tunnel: None,
                        weight: 3,
                        upper_threshold: 100,
                        lower_threshold: 10,
                        active_conns: 1,
                        inactive_conns: 2,
                        persistent_conns: 1,
                        stats,
                    },
                    Destination {
                        address: "10.244.1.4".parse().unwrap(),
                        port: 80,
                        forwarding: Forwarding::Tunnel,
                        tunnel: Some(Tunnel {
                            kind: TunnelType::Gue,
                            port: 6080,
                            checksum: TunnelChecksum::Remote,
                        }),
                        weight: 1,
                        upper_threshold: 0,
                        lower_threshold: 0,
                        active_conns: 0,
                        inactive_conns: 0,
                        persistent_conns: 0,
                        stats: Stats::default(),
                    },
                ],
            },
            Service {
                key: ServiceKey::Fwmark {
                    mark: 8,
                    family: Family::Ipv6,
                },
                scheduler: "rr".into(),
                persistence: Some(Persistence {
                    timeout: 60,
                    netmask: Netmask::V6(64),
                }),
                persistence_engine: Some("sip".into()),
                flags: ServiceFlags::default(),
                stats: Stats::default(),
                destinations: vec![],
            },
        ],
    };
    let listing = JsonListing::new(
        &table,
        false,
        Some(Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300,
        }),
    );
    let json = serde_json::to_string_pretty(&listing).unwrap() + "\n";
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/listing/table.json"
    );
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::write(path, &json).unwrap();
    }
    let golden = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e} (UPDATE_FIXTURES=1 writes it)"));
    assert_eq!(json, golden, "the --json schema changed");
}

#[test]
#[ignore = "needs the kernel lab"]
fn daemon_listing_matches_ipvsadm() {
    let ns = Netns::new("cli-daemon");
    ns.sh("ip link set lo up && ip link add d0 type dummy && ip link set d0 up");
    let daemons = |ns: &Netns| -> serde_json::Value {
        serde_json::from_str(&ns.sh(&format!("RUST_LOG=off {BIN} list --daemon --json"))).unwrap()
    };
    // No daemon: both print nothing and succeed.
    let mut failures = compare_all(&ns, &["--daemon"]);
    assert_eq!(daemons(&ns), serde_json::json!({"daemons": []}));

    ns.sh("ipvsadm --start-daemon master --mcast-interface lo");
    failures.extend(compare_all(&ns, &["--daemon"]));
    ns.sh(
        "ipvsadm --start-daemon backup --mcast-interface d0 --syncid 7 --sync-maxlen 1200 \
         --mcast-group 224.0.0.99 --mcast-port 9000 --mcast-ttl 3",
    );
    failures.extend(compare_all(&ns, &["--daemon"]));
    let both = daemons(&ns);
    assert_eq!(both["daemons"][0]["role"], "master", "{both:#}");
    assert_eq!(both["daemons"][1]["mcast_interface"], "d0", "{both:#}");
    assert_eq!(both["daemons"][1]["mcast_group"], "224.0.0.99", "{both:#}");
    assert_eq!(both["daemons"][1]["mcast_port"], 9000, "{both:#}");

    ns.sh("ipvsadm --stop-daemon master");
    failures.extend(compare_all(&ns, &["--daemon"]));
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // Like ipvsadm, --daemon does not combine with options that shape other listings.
    for options in ["--daemon --stats", "--daemon --timeout", "--daemon -c"] {
        let out = ns.exec(&format!("RUST_LOG=off {BIN} list {options}"));
        assert!(!out.status.success(), "`list {options}` was accepted");
        assert!(
            !ns.exec(&format!("ipvsadm -L {options}")).status.success(),
            "ipvsadm accepts `{options}`"
        );
    }
}
