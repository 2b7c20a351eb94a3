//! The layer-2 announcer in the agent: three node namespaces and a client on one
//! bridge, each node running the real `ipvs-proxy run` binary with the static source
//! (Services, EndpointSlices, Node objects with their InternalIPs, MetalLB's pool and
//! L2Advertisement) and the shared membership key. Observed from outside only: who
//! answers `arping` and `ndisc6` on the wire, the client's neighbour entries, whether
//! the client's requests get answers, and `ipvs-proxy services --json`.
//!
//! One lab carries every step (so the suite boots one topology and six agent starts,
//! not one per assertion):
//!
//! - exactly one MAC answers for the LoadBalancer IP (IPv4 and IPv6), the one MetalLB's
//!   election (sha256 of `<node>#<ip>`, smallest first) names, and the client reaches
//!   the Service; `services --json` shows the owner, eligible and live nodes and the
//!   interface;
//! - eTP=Local: the IP is answered by the node holding the endpoint and moves with it;
//! - hostile and malformed frames on the wire leave every agent running and answering;
//! - SIGKILL of the owner's agent: the client's neighbour entries move to the new
//!   owner's MAC and requests go on; the restarted agent takes its IPs back;
//! - SIGTERM of the owner's agent: a client request loop sees no failed request;
//! - link-down of the owner: the IP moves, requests resume; link-up: back;
//! - a partition (the membership port dropped on the owner): what happens is printed
//!   (the split-brain window), and after healing exactly one MAC answers again.
//!
//! Figures are printed as `key: value` lines for `scripts/bench-l2`, never asserted.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netns_lab::neigh::{arping, neighbour_mac, wait_link_local};
use netns_lab::{Background, Netns, veth, wait_until};
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use testkit::requests::{Attempt, RequestLoop};

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
/// The eTP=Cluster Service's address.
const VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 70, 100);
/// The eTP=Local Service's address.
const LOCAL_VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 70, 101);
/// The backend of the eTP=Cluster Services: a station on the segment every node
/// reaches directly, so that a node going away never takes the backend with it and
/// what the client sees is the announcer's failover only.
const BACKEND: &str = "192.168.70.50";
const BACKEND6: &str = "fd00:70::50";
const CLIENT_MAC: &str = "02:00:00:00:70:02";
const MEMBERSHIP_PORT: u16 = 7947;
/// The client's request period, as the figures define it.
const REQUEST_PERIOD: Duration = Duration::from_millis(20);

fn node_ip(i: usize) -> String {
    format!("192.168.70.1{i}")
}

fn node_mac(i: usize) -> String {
    format!("02:00:00:00:70:1{i}")
}

/// The node MetalLB's speaker elects for `ip` among `nodes`: sha256("<node>#<ip>"),
/// smallest first.
fn metallb_ranking(nodes: &[&str], ip: &str) -> Vec<usize> {
    use sha2::{Digest, Sha256};
    let mut ranked: Vec<usize> = (0..nodes.len()).collect();
    ranked.sort_by_key(|i| Sha256::digest(format!("{}#{ip}", nodes[*i]).as_bytes()).to_vec());
    ranked
}

/// An IPv6 address of `fd00:70::100/120` whose MetalLB owner among all three nodes and
/// whose runner-up are those of [`VIP`]: so killing one agent moves both families at
/// once and the test watches one failover.
fn vip6() -> Ipv6Addr {
    let want = metallb_ranking(&NODES, &VIP.to_string());
    (0x100u16..0x200)
        .map(|host| Ipv6Addr::new(0xfd00, 0x70, 0, 0, 0, 0, 0, host))
        .find(|ip| metallb_ranking(&NODES, &ip.to_string())[..2] == want[..2])
        .expect("an IPv6 address ranked like the IPv4 one")
}

fn lb_service(name: &str, cluster_ip: &str, vip: &str, extra: Value) -> Value {
    let family = if vip.contains(':') { "IPv6" } else { "IPv4" };
    let mut spec = json!({"type": "LoadBalancer", "clusterIP": cluster_ip,
                          "clusterIPs": [cluster_ip], "ipFamilies": [family],
                          "ports": [testkit::k8s::http_port(None)]});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    let mut service = testkit::k8s::service("l2", name, spec);
    service["metadata"]["annotations"] = json!({"metallb.io/loadBalancerIPs": vip});
    service
}

fn slice(name: &str, service: &str, family: &str, endpoints: &[(&str, &str)]) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, node)| testkit::k8s::endpoint(ip, node, testkit::k8s::READY))
        .collect();
    let mut slice = testkit::k8s::slice("l2", name, service, endpoints);
    slice["addressType"] = json!(family);
    slice
}

fn node_object(i: usize) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": NODES[i], "labels": {"kubernetes.io/hostname": NODES[i]}},
           "status": {"addresses": [{"type": "InternalIP", "address": node_ip(i)},
                                    {"type": "InternalIP", "address": format!("fd00:70::1{i}")},
                                    {"type": "Hostname", "address": NODES[i]}],
                      "conditions": [{"type": "Ready", "status": "True"}]}})
}

/// A node of the lab: its namespace, the pod namespace behind it and its agent.
struct Node {
    ns: Netns,
    pod: Netns,
    agent: Option<Agent>,
}

/// `ipvs-proxy run` in a node namespace, as a child process of the test (so that it
/// can be sent signals and its exit seen); SIGKILLed on drop.
struct Agent {
    child: Child,
}

impl Agent {
    fn alive(&mut self) -> bool {
        self.child.try_wait().expect("wait for the agent").is_none()
    }

    fn signal(&self, signal: Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal the agent");
    }

    /// Waits up to `timeout` for the agent to exit; its status, if it did.
    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the agent") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The switch, the client, the backend station and three nodes (each with one pod),
/// the manifests directory, the configuration and the key.
struct Lab {
    _switch: Netns,
    client: Netns,
    _backend: Netns,
    nodes: Vec<Node>,
    _servers: Vec<Background>,
    dir: PathBuf,
    vip6: Ipv6Addr,
    /// When the lab was built: the steps print their time from it.
    built: Instant,
}

impl Lab {
    fn build() -> Lab {
        let switch = Netns::new("al2-sw");
        switch.sh("ip link add br0 type bridge && ip link set br0 up");
        let attach = |ns: &Netns, port: &str, mac: &str, host: &str| {
            switch.sh(&format!(
                "ip link add {port} type veth peer name {port}x && ip link set {port}x netns {}",
                ns.name()
            ));
            switch.sh(&format!(
                "ip link set {port} master br0 && ip link set {port} up"
            ));
            ns.sh(&format!(
                "ip link set {port}x name eth0 && ip link set eth0 address {mac} \
                 && ip addr add 192.168.70.{host}/24 dev eth0 \
                 && ip addr add fd00:70::{host}/64 dev eth0 nodad && ip link set eth0 up"
            ));
        };
        let client = Netns::new("al2-client");
        attach(&client, "pc", CLIENT_MAC, "2");
        let backend = Netns::new("al2-backend");
        attach(&backend, "pb", "02:00:00:00:70:50", "50");
        let mut servers = vec![backend.http_server(8080, "backend")];

        let nodes: Vec<Node> = (0..3)
            .map(|i| {
                let ns = Netns::new(&format!("al2-n{i}"));
                attach(&ns, &format!("pn{i}"), &node_mac(i), &format!("1{i}"));
                // The node's pod, for the eTP=Local Service: on a veth of its own.
                let pod = Netns::new(&format!("al2-p{i}"));
                veth(
                    &ns,
                    "to-pod",
                    &format!("10.244.{i}.1/24"),
                    &pod,
                    "eth0",
                    &format!("10.244.{i}.10/24"),
                );
                pod.sh(&format!("ip route add default via 10.244.{i}.1"));
                ns.sh(
                    "sysctl -qw net.ipv4.ip_forward=1 && sysctl -qw net.ipv6.conf.all.forwarding=1",
                );
                // Counts the membership traffic this node sends (whole IP packets),
                // for the bandwidth figure.
                ns.sh(&format!(
                    "iptables -w -A OUTPUT -p udp --dport {MEMBERSHIP_PORT}"
                ));
                Node {
                    ns,
                    pod,
                    agent: None,
                }
            })
            .collect();
        for (i, node) in nodes.iter().enumerate() {
            servers.push(node.pod.http_server(8080, &format!("pod-{}", NODES[i])));
        }
        wait_link_local(&client, "eth0");

        let dir = std::env::temp_dir().join(format!("al2-{}", client.name()));
        std::fs::create_dir_all(dir.join("manifests")).expect("mkdir manifests");
        // The run directory of the status sockets: tmpfs (the project dir is 9p).
        std::fs::create_dir_all(format!("/run/lab/{}", client.name())).expect("mkdir /run/lab");
        std::fs::write(
            dir.join("key"),
            "a shared membership secret of the layer-2 lab, 48 bytes",
        )
        .expect("write the key");
        std::fs::write(
            dir.join("config.yaml"),
            format!(
                "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
                 mode: ipvs\nipvs:\n  strictARP: true\n  syncPeriod: 30s\n\
                 metricsBindAddress: 127.0.0.1:10249\n---\n\
                 apiVersion: ipvs-proxy.io/v1alpha1\nkind: IpvsProxyConfiguration\n\
                 loadBalancer:\n  membership:\n    port: {MEMBERSHIP_PORT}\n    keyFile: {}\n{}",
                dir.join("key").display(),
                membership_timings()
            ),
        )
        .expect("write the configuration");
        let lab = Lab {
            _switch: switch,
            client,
            _backend: backend,
            nodes,
            _servers: servers,
            dir,
            vip6: vip6(),
            built: Instant::now(),
        };
        lab.write(
            "metallb.json",
            &[
                json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                       "metadata": {"name": "lan", "namespace": "metallb-system"},
                       "spec": {"addresses": ["192.168.70.100-192.168.70.120",
                                              "fd00:70::100-fd00:70::1ff"]}}),
                json!({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
                       "metadata": {"name": "lan", "namespace": "metallb-system"},
                       "spec": {"ipAddressPools": ["lan"]}}),
                node_object(0),
                node_object(1),
                node_object(2),
            ],
        );
        lab.write_services(1);
        lab
    }

    /// Writes (atomically) the manifest file `file` holding `objects`.
    fn write(&self, file: &str, objects: &[Value]) {
        let path = self.dir.join("manifests").join(file);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, testkit::k8s::manifest(objects)).expect("write a manifest");
        std::fs::rename(&tmp, &path).expect("rename a manifest");
    }

    /// The Services: `web` (eTP=Cluster, IPv4), `web6` (eTP=Cluster, IPv6) and
    /// `local` (eTP=Local) whose one endpoint is the pod of node `local_on`.
    fn write_services(&self, local_on: usize) {
        let pod = format!("10.244.{local_on}.10");
        self.write(
            "services.json",
            &[
                lb_service("web", "10.96.0.61", &VIP.to_string(), json!({})),
                slice("web-1", "web", "IPv4", &[(BACKEND, "node-a")]),
                lb_service("web6", "fd00:96::61", &self.vip6.to_string(), json!({})),
                slice("web6-1", "web6", "IPv6", &[(BACKEND6, "node-a")]),
                lb_service(
                    "local",
                    "10.96.0.62",
                    &LOCAL_VIP.to_string(),
                    json!({"externalTrafficPolicy": "Local", "healthCheckNodePort": 32062}),
                ),
                slice("local-1", "local", "IPv4", &[(&pod, NODES[local_on])]),
            ],
        );
    }

    fn socket(&self, i: usize) -> PathBuf {
        PathBuf::from(format!("/run/lab/{}/{}.sock", self.client.name(), NODES[i]))
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.log", NODES[i]))
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    /// Starts node `i`'s agent (appending to its log).
    fn start(&mut self, i: usize) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .expect("open the agent log");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                self.nodes[i].ns.name(),
                crate::AGENT,
                "run",
            ])
            .arg("--config")
            .arg(self.dir.join("config.yaml"))
            .arg("--manifests")
            .arg(self.dir.join("manifests"))
            .args(["--hostname-override", NODES[i]])
            .arg("--status-socket")
            .arg(self.socket(i))
            .env("RUST_LOG", "info,ipvs_proxy=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the log"))
            .stderr(log)
            .spawn()
            .expect("spawn the agent");
        self.nodes[i].agent = Some(Agent { child });
    }

    fn agent(&mut self, i: usize) -> &mut Agent {
        self.nodes[i].agent.as_mut().expect("the agent runs")
    }

    /// The nodes whose MAC answered `arping` for `ip` from the client (3 requests).
    fn arp_answers(&self, ip: Ipv4Addr) -> BTreeSet<usize> {
        let text = arping(&self.client, "eth0", ip, 3);
        (0..3)
            .filter(|i| text.to_lowercase().contains(&node_mac(*i)))
            .collect()
    }

    /// The nodes whose MAC answered a Neighbor Solicitation for `ip` from the client.
    fn ndp_answers(&self, ip: Ipv6Addr) -> BTreeSet<usize> {
        let macs = netns_lab::neigh::ndisc_answers(&self.client, "eth0", ip);
        (0..3).filter(|i| macs.contains(&node_mac(*i))).collect()
    }

    /// Waits (generously: an emulated machine) until exactly node `owner` answers for
    /// `ip`, ARP or NDP; panics with the agents' logs otherwise.
    fn assert_only_answer(&self, ip: IpAddr, owner: usize, what: &str) {
        let want = BTreeSet::from([owner]);
        let answers = || match ip {
            IpAddr::V4(ip) => self.arp_answers(ip),
            IpAddr::V6(ip) => self.ndp_answers(ip),
        };
        let mut last = BTreeSet::new();
        let converged = wait_until(Duration::from_secs(60), || {
            last = answers();
            last == want
        });
        println!(
            "agent_l2: [{:>5.1} s] {what}: {ip} answered by {:?}",
            self.built.elapsed().as_secs_f64(),
            last.iter().map(|i| NODES[*i]).collect::<Vec<_>>()
        );
        assert!(
            converged,
            "{what}: {ip} answered by {last:?}, expected only {} ({})\n{}",
            NODES[owner],
            node_mac(owner),
            self.logs()
        );
    }

    /// The client's neighbour entry for `ip` names node `i`'s MAC.
    fn neighbour_is(&self, ip: IpAddr, i: usize) -> bool {
        neighbour_mac(&self.client, "eth0", ip) == Some(node_mac(i))
    }

    /// One request from the client to `ip`:80 (curl): the body, if answered.
    fn get(&self, ip: IpAddr) -> Option<String> {
        let url = match ip {
            IpAddr::V4(ip) => format!("http://{ip}/"),
            IpAddr::V6(ip) => format!("http://[{ip}]/"),
        };
        testkit::cluster::curl(&self.client, &url)
    }

    /// `ipvs-proxy services --json` on node `i`.
    fn services(&self, i: usize) -> Value {
        let out = self.nodes[i].ns.exec(&format!(
            "RUST_LOG=off {} services --json --socket {}",
            crate::AGENT,
            self.socket(i).display()
        ));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|error| {
            panic!(
                "services --json on {}: {error}: {}",
                NODES[i],
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// The `load_balancers` row of `ip` in node `i`'s report, if any.
    fn lb_row(&self, i: usize, ip: IpAddr) -> Option<Value> {
        let report = self.services(i);
        report["load_balancers"]
            .as_array()?
            .iter()
            .find(|row| row["address"] == ip.to_string())
            .cloned()
    }

    /// Bytes of membership traffic node `i` has sent (its OUTPUT counter rule).
    fn membership_bytes(&self, i: usize) -> u64 {
        let out = self.nodes[i].ns.sh("iptables -w -L OUTPUT -v -n -x");
        out.lines()
            .find(|line| {
                line.contains(&format!("udp dpt:{MEMBERSHIP_PORT}")) && !line.contains("DROP")
            })
            .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
            .expect("the membership counter rule")
    }

    /// How many times node `i`'s agent took or gave up an address, from its own
    /// metrics (`ipvs_proxy_l2_ips_acquired_total` + `_released_total`).
    fn ownership_changes(&self, i: usize) -> u64 {
        let metrics = self.nodes[i]
            .ns
            .sh("curl -s --max-time 10 http://127.0.0.1:10249/metrics");
        let value = |name: &str| -> u64 {
            metrics
                .lines()
                .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or(0)
        };
        value("ipvs_proxy_l2_ips_acquired_total ") + value("ipvs_proxy_l2_ips_released_total ")
    }

    /// Every agent's log, for failure messages.
    fn logs(&self) -> String {
        (0..3)
            .map(|i| {
                let log = self.log(i);
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {} (last 60 lines):\n{}", NODES[i], tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.agent = None;
        }
        if std::thread::panicking() {
            for (i, name) in NODES.iter().enumerate() {
                eprintln!("--- agent log of {name}:\n{}", self.log(i));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(format!("/run/lab/{}", self.client.name()));
    }
}

/// The client sending a request every [`REQUEST_PERIOD`] (a new TCP connection each,
/// short timeouts so one lost SYN does not hide the next) until stopped.
fn request_loop(client: &Netns, target: SocketAddr) -> RequestLoop {
    RequestLoop::start(client, REQUEST_PERIOD, move || request(target))
}

/// What a request loop saw.
struct Outcome(Vec<Attempt>);

impl Outcome {
    fn failed(&self) -> usize {
        self.0.iter().filter(|a| !a.ok).count()
    }

    fn answered_after(&self, at: Instant) -> usize {
        self.0.iter().filter(|a| a.ok && a.start >= at).count()
    }

    /// The longest time without an answer that ends after `event`: from one answered
    /// request's end to the next one's (the failover figure). Not simply the
    /// answers on either side of `event`: the disruption (a link set down, a process
    /// killed) lands some milliseconds after the instant taken before causing it, and
    /// answers in between would hide the outage that follows.
    fn outage_after(&self, event: Instant) -> Option<Duration> {
        let mut ends: Vec<Instant> = self.0.iter().filter(|a| a.ok).map(|a| a.end).collect();
        ends.sort();
        let first = ends.iter().rposition(|end| *end <= event)?;
        ends[first..]
            .windows(2)
            .map(|pair| pair[1].duration_since(pair[0]))
            .max()
    }

    /// The count, the failures (where, and when from `event`), and what surrounds the
    /// event: for the figures and for reading a failure.
    fn summary(&self, event: Instant) -> String {
        let ms = |at: Instant| {
            if at >= event {
                at.duration_since(event).as_millis() as i64
            } else {
                -(event.duration_since(at).as_millis() as i64)
            }
        };
        let failures: Vec<String> = self
            .0
            .iter()
            .filter(|a| !a.ok)
            .map(|a| format!("{}@{}ms", a.failed_at, ms(a.start)))
            .collect();
        format!(
            "{} requests ({} before the event), {} failed {failures:?}",
            self.0.len(),
            self.0.iter().filter(|a| a.start < event).count(),
            self.failed()
        )
    }
}

/// One HTTP/1.0 GET to `target`: Ok when a 200 came back, else where it failed.
fn request(target: SocketAddr) -> Result<(), &'static str> {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect_timeout(&target, Duration::from_millis(300)) else {
        return Err("connect");
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(700)));
    let _ = stream.set_write_timeout(Some(Duration::from_millis(300)));
    if stream.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
        return Err("response");
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    if response.starts_with(b"HTTP/1.") && response.windows(5).any(|w| w == b" 200 ") {
        Ok(())
    } else {
        Err("response")
    }
}

/// The strings of a JSON list, as a set (empty for anything else).
fn names(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits for `done` (polling every 20 ms, up to `timeout`); false if it never was.
fn eventually(timeout: Duration, done: impl FnMut() -> bool) -> bool {
    wait_until(timeout, done)
}

fn assert_agents_alive(lab: &mut Lab, what: &str) {
    for (i, name) in NODES.iter().enumerate() {
        if let Some(agent) = lab.nodes[i].agent.as_mut() {
            assert!(
                agent.alive(),
                "{what}: {name}'s agent exited\n{}",
                lab.log(i)
            );
        }
    }
}

#[test]
#[ignore = "needs the kernel lab"]
fn three_agents_elect_one_owner_and_fail_over() {
    let _kept = crate::br_netfilter_kept();
    let mut lab = Lab::build();
    let vip = IpAddr::V4(VIP);
    let vip6 = IpAddr::V6(lab.vip6);
    let ranking = metallb_ranking(&NODES, &VIP.to_string());
    let (owner, second) = (ranking[0], ranking[1]);
    println!(
        "agent_l2: {VIP} and {vip6}: owner {}, then {}, then {}",
        NODES[owner], NODES[second], NODES[ranking[2]]
    );
    for i in 0..3 {
        lab.start(i);
    }

    // One owner, MetalLB's, for each family; the client reaches both Services.
    lab.assert_only_answer(vip, owner, "at start");
    lab.assert_only_answer(vip6, owner, "at start (IPv6)");
    assert!(
        eventually(Duration::from_secs(30), || lab.get(vip).as_deref()
            == Some("backend")),
        "the client does not reach {vip}\n{}",
        lab.logs()
    );
    assert!(
        eventually(Duration::from_secs(30), || lab.get(vip6).as_deref()
            == Some("backend")),
        "the client does not reach {vip6}\n{}",
        lab.logs()
    );
    assert!(
        lab.neighbour_is(vip, owner),
        "{}",
        lab.client.sh("ip neigh")
    );
    assert!(
        lab.neighbour_is(vip6, owner),
        "{}",
        lab.client.sh("ip -6 neigh")
    );

    // `services --json` on another node shows the same owner, all three eligible and
    // live; on the owner, the interface it answers on.
    let all: BTreeSet<String> = NODES.iter().map(|n| n.to_string()).collect();
    let report = lab.services(second);
    assert_eq!(names(&report["live_nodes"]), all, "{report:#}");
    let row = lab.lb_row(second, vip).expect("the address in the report");
    assert_eq!(row["layer2"]["owner"], NODES[owner], "{row:#}");
    assert_eq!(names(&row["layer2"]["eligible"]), all, "{row:#}");
    assert!(names(&row["layer2"]["answering"]).is_empty(), "{row:#}");
    let row = lab
        .lb_row(owner, vip)
        .expect("the address in the owner's report");
    assert_eq!(row["layer2"]["owner"], NODES[owner], "{row:#}");
    assert_eq!(
        names(&row["layer2"]["answering"]),
        BTreeSet::from(["eth0".to_string()]),
        "{row:#}"
    );

    // A minute of quiet: no agent takes or gives up an address (its own counters), and
    // the steady membership traffic, from each node's own counter of what it sends.
    let changes_before: Vec<u64> = (0..3).map(|i| lab.ownership_changes(i)).collect();
    let before: Vec<u64> = (0..3).map(|i| lab.membership_bytes(i)).collect();
    let quiet = Instant::now();
    std::thread::sleep(Duration::from_secs(60));
    let seconds = quiet.elapsed().as_secs_f64();
    let changes_after: Vec<u64> = (0..3).map(|i| lab.ownership_changes(i)).collect();
    assert_eq!(
        changes_after,
        changes_before,
        "an address changed owner during a quiet minute (acquired + released per node)\n{}",
        lab.logs()
    );
    let rates: Vec<f64> = (0..3)
        .map(|i| (lab.membership_bytes(i) - before[i]) as f64 / seconds)
        .collect();
    for (i, rate) in rates.iter().enumerate() {
        println!(
            "agent_l2: membership bytes/s sent by {}: {rate:.0}",
            NODES[i]
        );
        assert!(*rate > 0.0, "{} sends no membership traffic", NODES[i]);
    }
    println!(
        "membership_bytes_per_second_per_node: {:.0}",
        rates.iter().sum::<f64>() / 3.0
    );
    // No owner change while quiet.
    lab.assert_only_answer(vip, owner, "after a quiet period");

    // eTP=Local: the node with the endpoint answers, and the IP follows the endpoint.
    let local = IpAddr::V4(LOCAL_VIP);
    lab.assert_only_answer(local, 1, "eTP=Local on node-b");
    assert!(
        eventually(Duration::from_secs(30), || lab.get(local).as_deref()
            == Some("pod-node-b")),
        "{}",
        lab.logs()
    );
    lab.write_services(2);
    lab.assert_only_answer(local, 2, "eTP=Local moved to node-c");
    assert!(
        eventually(Duration::from_secs(30), || lab.get(local).as_deref()
            == Some("pod-node-c")),
        "{}",
        lab.logs()
    );

    // Hostile frames on the wire: every agent keeps running and the owner answering.
    let frames = crate::l2_network::hostile_frames(
        neighbor_frames::MacAddr::new([0x02, 0, 0, 0, 0x70, 0x02]),
        Ipv4Addr::new(192, 168, 70, 2),
        VIP,
        lab.vip6,
        500,
        0x6a09_e667_f3bc_c908,
        120,
    );
    let sent = frames.len();
    lab.client.run_async(|| async move {
        let interface = ipvs_proxy::announce::l2::Interface::open("eth0")
            .await
            .expect("open the client's eth0");
        for (ndp, frame) in frames {
            let socket = if ndp { &interface.ndp } else { &interface.arp };
            socket.send(&frame).await.expect("send a hostile frame");
        }
    });
    println!("agent_l2: {sent} hostile frames sent");
    std::thread::sleep(Duration::from_millis(500));
    assert_agents_alive(&mut lab, "after hostile frames");
    lab.assert_only_answer(vip, owner, "after hostile frames");
    lab.assert_only_answer(vip6, owner, "after hostile frames (IPv6)");

    // SIGKILL of the owner's agent: the runner-up takes over; the client's entries move
    // to its MAC and requests go on through it.
    let requests = request_loop(&lab.client, SocketAddr::new(vip, 80));
    std::thread::sleep(Duration::from_millis(500));
    let killed = Instant::now();
    lab.agent(owner).signal(Signal::SIGKILL);
    assert!(lab.agent(owner).wait_exit(Duration::from_secs(5)).is_some());
    let moved = eventually(Duration::from_secs(30), || {
        lab.neighbour_is(vip, second) && lab.neighbour_is(vip6, second)
    });
    assert!(
        moved,
        "after SIGKILL the client's entries stay:\n{}{}\n{}",
        lab.client.sh("ip neigh"),
        lab.client.sh("ip -6 neigh"),
        lab.logs()
    );
    std::thread::sleep(Duration::from_secs(1));
    let outcome = Outcome(requests.finish());
    println!("agent_l2: SIGKILL: {}", outcome.summary(killed));
    assert!(
        outcome.answered_after(killed) > 0,
        "no request answered after the kill"
    );
    match outcome.outage_after(killed) {
        Some(gap) => println!("failover_ms_kill: {}", gap.as_millis()),
        None => println!("agent_l2: SIGKILL: no answered request on one side of the kill"),
    }
    lab.assert_only_answer(vip, second, "after SIGKILL of the owner");
    lab.assert_only_answer(vip6, second, "after SIGKILL of the owner (IPv6)");
    assert!(lab.get(vip6).is_some(), "IPv6 requests after the kill");

    // The owner's agent back: it rejoins and, first in the ranking, takes the IPs back.
    lab.start(owner);
    lab.assert_only_answer(vip, owner, "after the owner's restart");
    lab.assert_only_answer(vip6, owner, "after the owner's restart (IPv6)");
    assert!(
        eventually(Duration::from_secs(10), || lab.neighbour_is(vip, owner)),
        "the restarted owner's burst moves the client back: {}",
        lab.client.sh("ip neigh")
    );

    // SIGTERM: the agent leaves the membership, then stops answering; the runner-up
    // has announced itself by then, so the client's requests never fail.
    // (Settled first: the restarted owner's takeover burst runs 2 s.)
    std::thread::sleep(Duration::from_secs(3));
    let requests = request_loop(&lab.client, SocketAddr::new(vip, 80));
    std::thread::sleep(Duration::from_millis(500));
    let terminated = Instant::now();
    lab.agent(owner).signal(Signal::SIGTERM);
    let status = lab.agent(owner).wait_exit(Duration::from_secs(30));
    println!(
        "agent_l2: SIGTERM: exited after {} ms with {status:?}",
        terminated.elapsed().as_millis()
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "the agent exits cleanly on SIGTERM: {status:?}\n{}",
        lab.log(owner)
    );
    let moved = eventually(Duration::from_secs(30), || lab.neighbour_is(vip, second));
    std::thread::sleep(Duration::from_secs(2));
    let outcome = Outcome(requests.finish());
    println!("agent_l2: SIGTERM: {}", outcome.summary(terminated));
    println!("failed_requests_sigterm: {}", outcome.failed());
    assert!(moved, "after SIGTERM: {}", lab.client.sh("ip neigh"));
    // No request may go unanswered for want of an owner ("connect"). One connection
    // open at the very moment the client's entry moves can still break: its next
    // segments reach the new owner, whose kernel never saw it, and are reset (only
    // IPVS connection sync, which kube-proxy does not run, would carry it). With a
    // request every 20 ms, that is seen under load (1 in 67 once, with four VMs on
    // two cores); more than one is a regression.
    let unanswered = outcome
        .0
        .iter()
        .filter(|a| !a.ok && a.failed_at == "connect")
        .count();
    assert_eq!(unanswered, 0, "requests unanswered across SIGTERM");
    assert!(outcome.failed() <= 1, "failed requests across SIGTERM");
    lab.assert_only_answer(vip, second, "after SIGTERM of the owner");
    lab.start(owner);
    lab.assert_only_answer(vip, owner, "after the owner's second restart");
    std::thread::sleep(Duration::from_secs(3));

    // Link-down of the owner: the others see it dead and the runner-up takes over.
    let requests = request_loop(&lab.client, SocketAddr::new(vip, 80));
    std::thread::sleep(Duration::from_millis(500));
    let down = Instant::now();
    lab.nodes[owner].ns.sh("ip link set eth0 down");
    let moved = eventually(Duration::from_secs(30), || lab.neighbour_is(vip, second));
    let resumed = eventually(Duration::from_secs(10), || {
        // The loop's own answers after the event, seen from here: one is enough.
        lab.get(vip).is_some()
    });
    std::thread::sleep(Duration::from_secs(1));
    let outcome = Outcome(requests.finish());
    println!("agent_l2: link-down: {}", outcome.summary(down));
    match outcome.outage_after(down) {
        Some(gap) => println!("failover_ms_linkdown: {}", gap.as_millis()),
        None => println!("agent_l2: link-down: no answered request on one side of the event"),
    }
    assert!(
        moved,
        "after link-down: {}\n{}",
        lab.client.sh("ip neigh"),
        lab.logs()
    );
    assert!(
        resumed && outcome.answered_after(down) > 0,
        "requests resume after link-down"
    );
    lab.assert_only_answer(vip, second, "while the owner's link is down");
    assert_agents_alive(&mut lab, "with the owner's link down");

    // Link back up: one owner again, the first in the ranking.
    let up = Instant::now();
    lab.nodes[owner].ns.sh("ip link set eth0 up");
    lab.assert_only_answer(vip, owner, "after the owner's link came back");
    println!(
        "agent_l2: link-up: one owner again after {} ms",
        up.elapsed().as_millis()
    );
    assert!(
        eventually(Duration::from_secs(30), || lab.get(vip).is_some()),
        "requests after link-up"
    );

    // Partition: the owner's membership traffic dropped, the rest of the network
    // intact. Each side elects over what it reaches: the others elect the runner-up,
    // which announces itself; the cut-off owner, alone, keeps the IP. Both answer ARP
    // until the partition heals (SWIM chooses availability; see
    // announce::membership's documentation): observed and printed, not hidden.
    std::thread::sleep(Duration::from_secs(3));
    let requests = request_loop(&lab.client, SocketAddr::new(vip, 80));
    let cut = Instant::now();
    lab.nodes[owner].ns.sh(&format!(
        "iptables -w -I INPUT -p udp --dport {MEMBERSHIP_PORT} -j DROP && \
         iptables -w -I OUTPUT -p udp --dport {MEMBERSHIP_PORT} -j DROP"
    ));
    let runner_up_took_over = eventually(Duration::from_secs(30), || {
        lab.lb_row(second, vip)
            .is_some_and(|row| row["layer2"]["owner"] == NODES[second])
    });
    assert!(
        runner_up_took_over,
        "the majority side elects the runner-up\n{}",
        lab.logs()
    );
    println!(
        "agent_l2: partition: the majority elected {} after {} ms",
        NODES[second],
        cut.elapsed().as_millis()
    );
    std::thread::sleep(Duration::from_secs(3));
    let split = lab.arp_answers(VIP);
    let isolated = lab.services(owner);
    let isolated_owner = lab
        .lb_row(owner, vip)
        .map_or(Value::Null, |row| row["layer2"]["owner"].clone());
    println!(
        "agent_l2: partition: {VIP} answered by {:?}; the cut-off owner's view: owner {isolated_owner} live {}",
        split.iter().map(|i| NODES[*i]).collect::<Vec<_>>(),
        isolated["live_nodes"]
    );
    assert!(
        split.contains(&second),
        "the runner-up answers during the partition"
    );
    // Heal: one view again, one owner, and the client's traffic never depended on it
    // (both nodes' kernels serve the address).
    let heal = Instant::now();
    lab.nodes[owner].ns.sh(&format!(
        "iptables -w -D INPUT -p udp --dport {MEMBERSHIP_PORT} -j DROP && \
         iptables -w -D OUTPUT -p udp --dport {MEMBERSHIP_PORT} -j DROP"
    ));
    lab.assert_only_answer(vip, owner, "after the partition healed");
    println!(
        "agent_l2: partition healed: one owner again after {} ms; client's entry {:?}",
        heal.elapsed().as_millis(),
        neighbour_mac(&lab.client, "eth0", vip)
    );
    let outcome = Outcome(requests.finish());
    println!("agent_l2: partition: {}", outcome.summary(cut));
    assert!(
        eventually(Duration::from_secs(30), || lab.get(vip).is_some()),
        "requests after the partition healed"
    );
    assert_agents_alive(&mut lab, "at the end");
    // How often a live agent was declared down and rejoined over the whole test: under
    // an emulated, shared CPU this is where the tight timings show.
    let rejoins: Vec<usize> = (0..3)
        .map(|i| lab.log(i).matches("declared down by the cluster").count())
        .collect();
    let stalls: Vec<usize> = (0..3)
        .map(|i| lab.log(i).matches("verdicts postponed").count())
        .collect();
    println!(
        "agent_l2: membership over {:.0} s: rejoins {rejoins:?}, stalls postponed {stalls:?}",
        lab.built.elapsed().as_secs_f64()
    );
}

/// The membership timings of the lab's agents. Three debug agents in an emulated VM
/// starve each other for hundreds of milliseconds, and with the default timings
/// (200 ms / 60 ms / 400 ms) a starved agent is declared down while it still answers, so
/// the test runs with tolerant ones: behaviour is what it checks. The benchmark
/// (`scripts/bench l2`) sets `IPVS_PROXY_LAB_DEFAULT_MEMBERSHIP=1` to measure the
/// defaults' failover.
fn membership_timings() -> &'static str {
    if std::env::var_os("IPVS_PROXY_LAB_DEFAULT_MEMBERSHIP").is_some() {
        ""
    } else {
        "    probeInterval: 1s\n    probeTimeout: 400ms\n    suspicionTimeout: 2s\n"
    }
}
