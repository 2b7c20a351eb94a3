//! The agent binary announcing LoadBalancer addresses over BGP, against real routers.
//!
//! One router namespace (BIRD, FRR's bgpd + bfdd, or GoBGP, one per test) links to
//! three node namespaces, each running `ipvs-proxy run` with the static source: the
//! manifests directory holds the Services, EndpointSlices, Node objects (InternalIP,
//! Ready) and MetalLB's IPAddressPool, BGPAdvertisement, BGPPeers (one per node,
//! selected by hostname), BFDProfile and a password Secret. Each node has one pod
//! behind it, a client sits behind the router. What is checked is what the router
//! says and installs, what the client gets, and what `ipvs-proxy bgp` answers.
//!
//! Node failures are made silent for the failover figures: the node's TCP segments to
//! and from port 179 are dropped before its agent is SIGKILLed, as when a node loses
//! power. Otherwise the kernel would close the BGP connection on the process's exit
//! and any router would drop the next hop at once, BFD or not.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use netns_lab::routers::{Bird, Frr, Gobgp, bird_bgp, fib, next_hops, scratch_dir};
use netns_lab::{Background, Netns, veth, wait_until};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

const ROUTER_AS: u32 = 64513;
const NODE_AS: u32 = 64512;
const VIP: &str = "198.51.100.10";
const VIP6: &str = "2001:db8:100::10";
const CLIENT: &str = "172.16.0.2";

/// One node: its namespace, its pod (busybox httpd answering the client's address
/// and the pod's name at `/cgi-bin/peer`) and its agent.
struct Node {
    name: String,
    ns: Netns,
    _pod: Netns,
    _server: Background,
    agent: Option<Background>,
    config: PathBuf,
    log: PathBuf,
    socket: PathBuf,
}

/// The router, the client and three nodes.
struct Lab {
    router: Netns,
    client: Netns,
    nodes: Vec<Node>,
    dir: PathBuf,
    ipv6: bool,
}

fn sysctl_forwarding(ns: &Netns) {
    ns.sh("sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1");
}

impl Lab {
    /// client 172.16.0.2 — router 172.16.0.1 | 10.0.i.1 — node i 10.0.i.2 (and with
    /// `ipv6` fd00:i::1 — fd00:i::2) | 10.244.i.1 — pod i 10.244.i.10.
    fn new(prefix: &str, ipv6: bool) -> Lab {
        let dir = scratch_dir(prefix);
        std::fs::create_dir_all(dir.join("manifests")).unwrap();
        let router = Netns::new(&format!("{prefix}r"));
        let client = Netns::new(&format!("{prefix}c"));
        sysctl_forwarding(&router);
        veth(
            &router,
            "c0",
            "172.16.0.1/24",
            &client,
            "eth0",
            "172.16.0.2/24",
        );
        client.sh("ip route add default via 172.16.0.1");
        let nodes = (1..=3)
            .map(|i| {
                let ns = Netns::new(&format!("{prefix}n{i}"));
                sysctl_forwarding(&ns);
                veth(
                    &router,
                    &format!("r{i}"),
                    &format!("10.0.{i}.1/24"),
                    &ns,
                    "eth0",
                    &format!("10.0.{i}.2/24"),
                );
                if ipv6 {
                    router.sh(&format!("ip -6 addr add fd00:{i}::1/64 dev r{i} nodad"));
                    ns.sh(&format!("ip -6 addr add fd00:{i}::2/64 dev eth0 nodad"));
                }
                ns.sh(&format!("ip route add default via 10.0.{i}.1"));
                let pod = Netns::new(&format!("{prefix}p{i}"));
                veth(
                    &ns,
                    "pod",
                    &format!("10.244.{i}.1/24"),
                    &pod,
                    "eth0",
                    &format!("10.244.{i}.10/24"),
                );
                pod.sh(&format!("ip route add default via 10.244.{i}.1"));
                let root = dir.join(format!("pod-{i}"));
                std::fs::create_dir_all(root.join("cgi-bin")).unwrap();
                let script = root.join("cgi-bin/peer");
                std::fs::write(
                    &script,
                    format!(
                        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n%s pod-{i}' \"$REMOTE_ADDR\"\n"
                    ),
                )
                .unwrap();
                pod.sh(&format!("chmod 755 {}", script.display()));
                let server = pod.spawn(&format!("busybox httpd -f -p 8080 -h {}", root.display()));
                assert!(wait_until(Duration::from_secs(10), || pod
                    .exec("ss -Hltn 'sport = :8080' | grep -q LISTEN")
                    .status
                    .success()));
                let name = format!("node-{i}");
                let config = dir.join(format!("{name}.yaml"));
                std::fs::write(
                    &config,
                    format!(
                        "{}---\napiVersion: ipvs-proxy.io/v1alpha1\nkind: IpvsProxyConfiguration\n\
                         loadBalancer:\n  bgp:\n    restartMarker: {}\n",
                        testkit::LAB_AGENT_CONFIG,
                        dir.join(format!("{name}.running")).display()
                    ),
                )
                .unwrap();
                Node {
                    log: dir.join(format!("{name}.log")),
                    socket: dir.join(format!("{name}.sock")),
                    name,
                    ns,
                    _pod: pod,
                    _server: server,
                    agent: None,
                    config,
                }
            })
            .collect();
        Lab {
            router,
            client,
            nodes,
            dir,
            ipv6,
        }
    }

    /// Writes (atomically) the manifest file `file` holding `objects`.
    fn write(&self, file: &str, objects: &[Value]) {
        let path = self.dir.join("manifests").join(file);
        let tmp = self.dir.join(format!("{file}.tmp"));
        std::fs::write(&tmp, testkit::k8s::manifest(objects)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }

    /// Writes the MetalLB `objects` with the three Node objects, then starts the
    /// three agents.
    fn start_agents(&mut self, mut objects: Vec<Value>) {
        objects.extend((1..=3).map(|i| node_object(i, self.ipv6)));
        self.write("metallb.json", &objects);
        for i in 0..3 {
            self.start(i);
        }
    }

    /// Writes the LoadBalancer Service `web` at `vip` with `traffic_policy` and its
    /// EndpointSlice: one ready endpoint on each node of `on` (1-based).
    fn write_web(&self, vip: &str, traffic_policy: &str, on: &[usize]) {
        self.write(
            "web.json",
            &[
                web_service(vip, traffic_policy),
                web_slice(on, vip.contains(':')),
            ],
        );
    }

    /// Waits up to `timeout` until the router's FIB routes the IPv4 VIP via exactly
    /// `hops` and `also` holds; otherwise panics showing the FIB, `router` (the
    /// router's own view) and the agents' logs.
    fn expect_next_hops(
        &self,
        hops: &[&str],
        timeout: Duration,
        mut also: impl FnMut() -> bool,
        router: impl Fn() -> String,
    ) {
        let reached = wait_until(timeout, || {
            next_hops(&fib(&self.router, VIP)) == set(hops) && also()
        });
        assert!(
            reached,
            "want {hops:?}\n{}\n{}\n{}",
            fib(&self.router, VIP),
            router(),
            self.logs()
        );
    }

    /// Starts node `i`'s agent (0-based).
    fn start(&mut self, i: usize) {
        let manifests = self.dir.join("manifests");
        let node = &mut self.nodes[i];
        node.agent = Some(node.ns.spawn(&format!(
            "{} run --config {} --manifests {} --hostname-override {} --status-socket {} >> {} 2>&1",
            crate::AGENT,
            node.config.display(),
            manifests.display(),
            node.name,
            node.socket.display(),
            node.log.display()
        )));
    }

    /// Sends `signal` to node `i`'s agent and waits for it to exit.
    fn signal(&mut self, i: usize, signal: Signal) {
        let mut agent = self.nodes[i].agent.take().expect("the agent runs");
        agent.signal(signal);
        assert!(
            agent.wait_exit(Duration::from_secs(30)),
            "{} did not exit on {signal}",
            self.nodes[i].name
        );
    }

    /// Whether node `i`'s agent still runs.
    fn running(&mut self, i: usize) -> bool {
        self.nodes[i]
            .agent
            .as_mut()
            .is_some_and(Background::running)
    }

    /// Drops node `i`'s BGP segments both ways (a silent node for the router).
    fn silence_bgp(&self, i: usize) {
        let ns = &self.nodes[i].ns;
        ns.sh("iptables -I OUTPUT -p tcp --dport 179 -j DROP");
        ns.sh("iptables -I OUTPUT -p tcp --sport 179 -j DROP");
    }

    /// `ipvs-proxy bgp --json` on node `i`: the neighbours, by name.
    fn bgp(&self, i: usize) -> Vec<Value> {
        let out = self.bgp_output(i, "--json");
        serde_json::from_str::<Value>(&out)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    fn bgp_output(&self, i: usize, args: &str) -> String {
        let node = &self.nodes[i];
        let out = node.ns.exec(&format!(
            "RUST_LOG=off {} bgp --socket {} {args}",
            crate::AGENT,
            node.socket.display()
        ));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Node `i`'s neighbour `peer` as `ipvs-proxy bgp --json` shows it.
    fn neighbor(&self, i: usize, peer: &str) -> Option<Value> {
        self.bgp(i).into_iter().find(|n| n["name"] == peer)
    }

    fn established(&self, i: usize, peer: &str) -> bool {
        self.neighbor(i, peer)
            .is_some_and(|n| n["state"] == "Established")
    }

    /// Every agent's log, for failure messages.
    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {} ---\n{}\n", n.name, tail.join("\n"))
            })
            .collect()
    }

    /// `curl` from the client: the trimmed body, or `None`.
    fn curl(&self, url: &str) -> Option<String> {
        testkit::cluster::curl(&self.client, url)
    }
}

fn node_object(i: usize, ipv6: bool) -> Value {
    let mut addresses = vec![json!({"type": "InternalIP", "address": format!("10.0.{i}.2")})];
    if ipv6 {
        addresses.push(json!({"type": "InternalIP", "address": format!("fd00:{i}::2")}));
    }
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": format!("node-{i}"),
                        "labels": {"kubernetes.io/hostname": format!("node-{i}")}},
           "status": {"addresses": addresses,
                      "conditions": [{"type": "Ready", "status": "True"}]}})
}

fn metallb(kind: &str, version: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": format!("metallb.io/{version}"), "kind": kind,
           "metadata": {"name": name, "namespace": "metallb-system"}, "spec": spec})
}

/// `object` with the fields of `extra` added (or replaced).
fn with_fields(mut object: Value, extra: Value) -> Value {
    if let (Some(object), Value::Object(extra)) = (object.as_object_mut(), extra) {
        object.extend(extra);
    }
    object
}

/// The IPAddressPool `name` of `addresses` and a BGPAdvertisement of it with the
/// fields of `advertisement`.
fn bgp_pool(name: &str, addresses: &[&str], advertisement: Value) -> [Value; 2] {
    let spec = with_fields(json!({"ipAddressPools": [name]}), advertisement);
    [
        metallb(
            "IPAddressPool",
            "v1beta1",
            name,
            json!({ "addresses": addresses }),
        ),
        metallb("BGPAdvertisement", "v1beta1", name, spec),
    ]
}

/// A BGPPeer for node `i` only, with `extra` fields in its spec.
fn bgp_peer(
    name: &str,
    i: usize,
    address: &str,
    my_asn: u32,
    peer_asn: u32,
    extra: Value,
) -> Value {
    let spec = json!({"myASN": my_asn, "peerASN": peer_asn, "peerAddress": address,
                      "connectTime": "2s",
                      "nodeSelectors": [{"matchLabels":
                          {"kubernetes.io/hostname": format!("node-{i}")}}]});
    metallb("BGPPeer", "v1beta2", name, with_fields(spec, extra))
}

/// The LoadBalancer Service `web` pinned at `vip` with `traffic_policy` (its cluster
/// IP in the family of `vip`).
fn web_service(vip: &str, traffic_policy: &str) -> Value {
    let v6 = vip.contains(':');
    let cluster_ip = if v6 { "fd00:96::10" } else { "10.96.0.10" };
    let mut service = testkit::k8s::service(
        "lab",
        "web",
        json!({"type": "LoadBalancer", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
               "ipFamilies": [if v6 { "IPv6" } else { "IPv4" }],
               "externalTrafficPolicy": traffic_policy,
               "ports": [testkit::k8s::http_port(None)]}),
    );
    service["metadata"]["annotations"] = json!({"metallb.io/loadBalancerIPs": vip});
    service
}

/// `web`'s EndpointSlice with one ready endpoint on each node of `on` (1-based): pod
/// `i`'s address (IPv4) or `fd00:244:i::10` (IPv6).
fn web_slice(on: &[usize], v6: bool) -> Value {
    let endpoints: Vec<Value> = on
        .iter()
        .map(|i| {
            let ip = if v6 {
                format!("fd00:244:{i}::10")
            } else {
                format!("10.244.{i}.10")
            };
            testkit::k8s::endpoint(&ip, &format!("node-{i}"), testkit::k8s::READY)
        })
        .collect();
    let mut slice = testkit::k8s::slice("lab", "web-1", "web", endpoints);
    if v6 {
        slice["addressType"] = json!("IPv6");
    }
    slice
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Counts, until stopped, the client's failed requests to `url` and the samples of
/// the router's FIB where `next_hop` was missing from `prefix`'s route.
struct Watch {
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicUsize>,
    total: Arc<AtomicUsize>,
    gaps: Arc<AtomicUsize>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn start(lab: &Lab, url: &str, prefix: &str, next_hop: &str) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let (failed, total, gaps) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let client = lab.client.name().to_string();
        let router = lab.router.name().to_string();
        let requests = {
            let (stop, failed, total, url) =
                (stop.clone(), failed.clone(), total.clone(), url.to_string());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let ok = std::process::Command::new("ip")
                        .args([
                            "netns",
                            "exec",
                            &client,
                            "curl",
                            "-sf",
                            "--max-time",
                            "2",
                            &url,
                        ])
                        .output()
                        .is_ok_and(|o| o.status.success());
                    total.fetch_add(1, Ordering::SeqCst);
                    if !ok {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        let fib_watch = {
            let (stop, gaps) = (stop.clone(), gaps.clone());
            let (prefix, next_hop) = (prefix.to_string(), next_hop.to_string());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let out = std::process::Command::new("ip")
                        .args(["netns", "exec", &router, "ip", "route", "show", &prefix])
                        .output()
                        .unwrap();
                    if !next_hops(&String::from_utf8_lossy(&out.stdout)).contains(&next_hop) {
                        gaps.fetch_add(1, Ordering::SeqCst);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Watch {
            stop,
            failed,
            total,
            gaps,
            threads: vec![requests, fib_watch],
        }
    }

    /// Stops and returns (failed requests, requests, FIB gaps).
    fn finish(self) -> (usize, usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        (
            self.failed.load(Ordering::SeqCst),
            self.total.load(Ordering::SeqCst),
            self.gaps.load(Ordering::SeqCst),
        )
    }
}

/// The lines a command running in a namespace prints (stdout and stderr), each
/// stamped with the wall-clock time it arrived: an event source (`ip monitor`,
/// `tcpdump -l`) that times a change without polling. Killed on drop.
struct Events {
    child: std::process::Child,
    lines: Arc<std::sync::Mutex<Vec<(std::time::SystemTime, String)>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Events {
    /// Starts `cmd` in `ns` and waits up to 10 s for a first line containing `ready`
    /// (an empty `ready` does not wait).
    fn start(ns: &Netns, cmd: &str, ready: &str) -> Events {
        use std::io::BufRead as _;
        let mut child = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(),
                "sh",
                "-c",
                &format!("exec {cmd} 2>&1"),
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn `{cmd}`: {e}"));
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let reader = {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    lines
                        .lock()
                        .unwrap()
                        .push((std::time::SystemTime::now(), line));
                }
            })
        };
        let events = Events {
            child,
            lines,
            reader: Some(reader),
        };
        let started = ready.is_empty()
            // Long: under a loaded emulated CPU tcpdump took over 10 s to say it listens.
            || wait_until(Duration::from_secs(60), || {
                events.lines().iter().any(|(_, l)| l.contains(ready))
            });
        assert!(started, "`{cmd}` did not start: {:?}", events.lines());
        events
    }

    /// The lines so far.
    fn lines(&self) -> Vec<(std::time::SystemTime, String)> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Milliseconds from `since` to the first `ip monitor route` line about `prefix` at or
/// after it.
fn first_change(
    routes: &[(std::time::SystemTime, String)],
    prefix: &str,
    since: std::time::SystemTime,
) -> Option<f64> {
    routes
        .iter()
        .map(|(t, l)| (ms_between(since, *t), l))
        .find(|(ms, l)| *ms >= 0.0 && l.contains(prefix))
        .map(|(ms, _)| ms)
}

/// Milliseconds from `from` to `to` (negative when `to` is earlier).
fn ms_between(from: std::time::SystemTime, to: std::time::SystemTime) -> f64 {
    match to.duration_since(from) {
        Ok(d) => d.as_secs_f64() * 1e3,
        Err(e) => -e.duration().as_secs_f64() * 1e3,
    }
}

/// The capture time of a `tcpdump -tt` line (its first word, seconds since the epoch).
fn captured_at(line: &str) -> Option<std::time::SystemTime> {
    let secs: f64 = line.split_whitespace().next()?.parse().ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_secs_f64(secs))
}

/// Whether a `tcpdump -n` line shows a packet from `from` to `to`, each an address
/// with a port, or `*` for any port (`10.0.2.1.*`, `10.0.2.2.3784`). Only the
/// addresses and ports are read: tcpdump decodes the node's BFD packets, sent from
/// port 49152, as a Broadcom LI shim.
fn flows(line: &str, from: &str, to: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    let matches = |endpoint: &str, pattern: &str| match pattern.strip_suffix('*') {
        Some(address) => endpoint
            .rsplit_once('.')
            .is_some_and(|(a, _)| format!("{a}.") == address),
        None => endpoint == pattern,
    };
    words.len() > 4
        && words[1] == "IP"
        && words[3] == ">"
        && matches(words[2], from)
        && matches(words[4].trim_end_matches(':'), to)
}

/// A "router" at `address:1179` on the router namespace that answers every connection
/// with garbage: no BGP marker, a header announcing an absurd length, an unknown
/// message type. Stops when `stop` is set; counts the connections served.
fn garbage_peer(
    router: &Netns,
    address: &str,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    let address = format!("{address}:1179");
    router.thread(move || {
        let listener = std::net::TcpListener::bind(&address).unwrap();
        listener.set_nonblocking(true).unwrap();
        let mut n = 0usize;
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    use std::io::Write as _;
                    n += 1;
                    let bytes: Vec<u8> = match n % 3 {
                        0 => vec![0x42; 100],
                        1 => [[0xff; 16].as_slice(), &[0xff, 0xff, 1]].concat(),
                        _ => [[0xff; 16].as_slice(), &[0, 19, 9]].concat(),
                    };
                    let _ = s.write_all(&bytes);
                    served.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    })
}

/// BIRD, eBGP (AS 64513 ↔ three nodes in AS 64512), graceful restart, BIRD connecting
/// too (so connections collide): the ECMP route goes via exactly the nodes with a
/// local endpoint (eTP=Local) and follows the pods; the client reaches the Service
/// with its own address; communities and large communities show in `birdc`; an agent
/// restart loses no request and the router never loses the next hop; a garbage peer
/// beside the router changes nothing.
#[test]
#[ignore = "needs the kernel lab"]
fn bird_ecmp_follows_the_pods_and_survives_a_restart_and_a_garbage_peer() {
    let mut lab = Lab::new("abb", false);
    lab.router.sh("ip addr add 10.0.1.9/24 dev r1");
    let protocols: String = (1..=3)
        .map(|i| {
            bird_bgp(
                &format!("node{i}"),
                &format!("10.0.{i}.1"),
                ROUTER_AS,
                &format!("10.0.{i}.2"),
                NODE_AS,
                "graceful restart on;\n  connect retry time 2;",
            )
        })
        .collect();
    let bird = Bird::start(&lab.router, "10.0.0.1", &protocols);
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let garbage = garbage_peer(&lab.router, "10.0.1.9", stop.clone(), served.clone());

    let mut objects = bgp_pool(
        "bgp",
        &["198.51.100.0/28"],
        json!({"communities": ["64512:7", "large:64512:1:1"]}),
    )
    .to_vec();
    objects.push(bgp_peer(
        "garbage",
        1,
        "10.0.1.9",
        NODE_AS,
        ROUTER_AS,
        json!({"peerPort": 1179}),
    ));
    objects.extend((1..=3).map(|i| {
        bgp_peer(
            &format!("router-{i}"),
            i,
            &format!("10.0.{i}.1"),
            NODE_AS,
            ROUTER_AS,
            json!({"enableGracefulRestart": true, "holdTime": "9s"}),
        )
    }));
    lab.write_web(VIP, "Local", &[1, 2]);
    lab.start_agents(objects);

    // ECMP via the nodes with a local endpoint only; node 3's session is up with
    // nothing to announce.
    lab.expect_next_hops(
        &["10.0.1.2", "10.0.2.2"],
        Duration::from_secs(300),
        || lab.established(2, "router-3"),
        || bird.birdc("show protocols"),
    );
    let shown = bird.birdc(&format!("show route {VIP}/32 all"));
    assert!(shown.contains("(64512,7)"), "{shown}");
    assert!(shown.contains("(64512, 1, 1)"), "{shown}");
    assert!(shown.contains("BGP.as_path: 64512"), "{shown}");
    let n1 = lab.neighbor(0, "router-1").unwrap();
    assert_eq!(n1["prefixes_sent"], 1, "{n1}");
    assert_eq!(n1["graceful_restart"], true, "{n1}");
    assert_eq!(lab.neighbor(2, "router-3").unwrap()["prefixes_sent"], 0);
    let text = lab.bgp_output(0, "");
    assert!(
        text.contains("router-1") && text.contains("Established"),
        "{text}"
    );

    // The client reaches the Service through the router, with its own address.
    let url = format!("http://{VIP}/cgi-bin/peer");
    let mut answer = None;
    wait_until(Duration::from_secs(60), || {
        answer = lab.curl(&url);
        answer.is_some()
    });
    let answer = answer.unwrap_or_else(|| panic!("no answer\n{}", lab.logs()));
    // busybox shows an IPv4 peer of its dual-stack socket as [::ffff:a.b.c.d].
    assert!(
        answer.contains(&format!(":{CLIENT}]")) || answer.starts_with(CLIENT),
        "source address lost: {answer}"
    );

    // The pods move to nodes 2 and 3: the route follows.
    lab.write_web(VIP, "Local", &[2, 3]);
    lab.expect_next_hops(
        &["10.0.2.2", "10.0.3.2"],
        Duration::from_secs(180),
        || true,
        || bird.birdc("show protocols"),
    );
    assert!(wait_until(Duration::from_secs(20), || lab
        .curl(&url)
        .is_some()));

    // Graceful restart of the agent of the node serving the client: SIGTERM keeps
    // the routes at the router (stale), IPVS goes on forwarding, the agent comes back.
    let serving = lab.curl(&url).unwrap();
    let i: usize = serving
        .rsplit("pod-")
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("which pod? {serving}"));
    let next_hop = format!("10.0.{i}.2");
    let watch = Watch::start(&lab, &url, VIP, &next_hop);
    std::thread::sleep(Duration::from_secs(1));
    let restart_at = Instant::now();
    lab.signal(i - 1, Signal::SIGTERM);
    lab.start(i - 1);
    let back = wait_until(Duration::from_secs(300), || {
        lab.established(i - 1, &format!("router-{i}"))
            && lab.neighbor(i - 1, &format!("router-{i}")).unwrap()["prefixes_sent"] == 1
    });
    assert!(back, "{}\n{}", bird.birdc("show protocols all"), lab.logs());
    std::thread::sleep(Duration::from_secs(3));
    let (failed, total, gaps) = watch.finish();
    println!(
        "gr_restart_failed_requests: {failed}\ngr_restart_requests: {total}\n\
         gr_restart_s: {:.1}",
        restart_at.elapsed().as_secs_f64()
    );
    assert_eq!(
        failed,
        0,
        "requests failed during the restart\n{}",
        lab.logs()
    );
    assert_eq!(
        gaps, 0,
        "the router lost node {i}'s next hop during the restart"
    );
    let caps = bird.birdc(&format!("show protocols all node{i}"));
    assert!(caps.contains("Restart recovery"), "{caps}");

    // The garbage peer was tried again and again; nothing else moved.
    assert!(
        wait_until(Duration::from_secs(30), || served.load(Ordering::SeqCst)
            >= 3),
        "the garbage peer was never reached"
    );
    for node in 0..3 {
        assert!(lab.running(node), "agent {} died\n{}", node + 1, lab.logs());
        assert!(lab.established(node, &format!("router-{}", node + 1)));
    }
    let g = lab.neighbor(0, "garbage").unwrap();
    assert_ne!(g["state"], "Established", "{g}");
    assert!(!g["last_error"].is_null(), "{g}");
    let protocols = bird.birdc("show protocols");
    assert_eq!(
        protocols
            .lines()
            .filter(|l| l.contains("Established"))
            .count(),
        3,
        "{protocols}"
    );
    assert_eq!(
        next_hops(&fib(&lab.router, VIP)),
        set(&["10.0.2.2", "10.0.3.2"])
    );
    stop.store(true, Ordering::SeqCst);
    garbage.join().unwrap();
}

/// FRR (bgpd + bfdd, zebra for its FIB), nodes in the 4-octet AS 4200000001, every
/// session with a TCP MD5 password (inline, from a Secret, and a wrong one): the two
/// nodes with the right password form the ECMP route, the third never gets a
/// session. Node 2's peer has a BFD profile: when the node goes silent, FRR drops its
/// next hop on BFD; node 1's has none and goes on the hold timer (both measured).
#[test]
#[ignore = "needs the kernel lab"]
fn frr_md5_four_octet_as_and_bfd_failover() {
    const NODE_AS4: u32 = 4_200_000_001;
    let mut lab = Lab::new("abf", false);
    let mut conf = format!(
        "frr defaults datacenter\nhostname lab\nrouter bgp {ROUTER_AS}\n bgp router-id 10.0.0.1\n \
         no bgp ebgp-requires-policy\n"
    );
    for i in 1..=3 {
        conf.push_str(&format!(
            " neighbor 10.0.{i}.2 remote-as {NODE_AS4}\n neighbor 10.0.{i}.2 password s3cret-{i}\n"
        ));
    }
    conf.push_str(" neighbor 10.0.2.2 bfd\n");
    conf.push_str(" address-family ipv4 unicast\n  maximum-paths 8\n exit-address-family\nexit\n");
    let frr = Frr::start(&lab.router, &conf, true);

    let mut objects = bgp_pool("bgp", &["198.51.100.0/28"], json!({})).to_vec();
    objects.extend([
        metallb(
            "BFDProfile",
            "v1beta1",
            "fast",
            json!({"receiveInterval": 300, "transmitInterval": 300, "detectMultiplier": 3}),
        ),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
               "metadata": {"name": "router-2-password", "namespace": "metallb-system"},
               "data": {"password": "czNjcmV0LTI="}}),
        bgp_peer(
            "router-1",
            1,
            "10.0.1.1",
            NODE_AS4,
            ROUTER_AS,
            json!({"password": "s3cret-1", "holdTime": "9s"}),
        ),
        bgp_peer(
            "router-2",
            2,
            "10.0.2.1",
            NODE_AS4,
            ROUTER_AS,
            json!({"passwordSecret": {"name": "router-2-password", "namespace": "metallb-system"},
                   "bfdProfile": "fast", "holdTime": "9s"}),
        ),
        bgp_peer(
            "router-3",
            3,
            "10.0.3.1",
            NODE_AS4,
            ROUTER_AS,
            json!({"password": "not-the-password", "holdTime": "9s"}),
        ),
    ]);
    // eTP=Cluster: every node announces while the Service has a ready endpoint.
    lab.write_web(VIP, "Cluster", &[1]);
    lab.start_agents(objects);
    let summary = || frr.vtysh("bgpd", "show bgp summary");
    lab.expect_next_hops(
        &["10.0.1.2", "10.0.2.2"],
        Duration::from_secs(300),
        || true,
        summary,
    );
    // The 4-octet AS in FRR's own view of the paths.
    let paths = || -> Vec<Value> {
        let text = frr.vtysh("bgpd", &format!("show bgp ipv4 unicast {VIP}/32 json"));
        serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["paths"].as_array().cloned())
            .unwrap_or_default()
    };
    let both = wait_until(Duration::from_secs(60), || paths().len() == 2);
    assert!(
        both,
        "{:#?}\n{}\n{}\n{}",
        paths(),
        summary(),
        frr.vtysh("bfdd", "show bfd peers"),
        lab.logs()
    );
    let paths = paths();
    for p in &paths {
        assert_eq!(p["aspath"]["string"], NODE_AS4.to_string(), "{p}");
    }
    // The wrong password: no session, on either side.
    let n3 = frr.vtysh("bgpd", "show bgp neighbors 10.0.3.2 json");
    let n3: Value = serde_json::from_str(&n3).unwrap();
    assert_ne!(n3["10.0.3.2"]["bgpState"], "Established", "{n3:#}");
    let ours = lab.neighbor(2, "router-3").unwrap();
    assert_ne!(ours["state"], "Established", "{ours}");
    // BFD up on both sides.
    let bfd_up = wait_until(Duration::from_secs(30), || {
        lab.neighbor(1, "router-2")
            .is_some_and(|n| n["bfd"] == "Up")
            && frr.vtysh("bfdd", "show bfd peers").contains("Status: up")
    });
    assert!(
        bfd_up,
        "{}\n{:?}",
        frr.vtysh("bfdd", "show bfd peers"),
        lab.neighbor(1, "router-2")
    );
    assert_eq!(lab.neighbor(0, "router-1").unwrap()["bfd"], "None");

    // Node 2 goes silent: BFD takes its next hop away. Timed three ways: polling the
    // FIB (a process per sample), the FIB change as `ip monitor` reports it, and the
    // BFD and BGP packets on the router's link to the node (`tcpdump -tt`), so the
    // figure splits into BFD detection and the router's own BGP + zebra work.
    let peers = frr.vtysh("bfdd", "show bfd peers json");
    println!(
        "bfd_router_peer: {}",
        peers.split_whitespace().collect::<String>()
    );
    println!(
        "bfd_agent_neighbor: {}",
        lab.neighbor(1, "router-2").unwrap_or_default()
    );
    let capture = Events::start(
        &lab.router,
        "tcpdump -l -n -tt -i r2 udp port 3784 or tcp port 179",
        "listening on",
    );
    let monitor = Events::start(&lab.router, "ip monitor route", "");
    std::thread::sleep(Duration::from_secs(1));
    lab.silence_bgp(1);
    let killed_at = std::time::SystemTime::now();
    let killed = Instant::now();
    lab.signal(1, Signal::SIGKILL);
    let dropped = wait_until(Duration::from_secs(60), || {
        next_hops(&fib(&lab.router, VIP)) == set(&["10.0.1.2"])
    });
    let polled_ms = killed.elapsed().as_millis();
    assert!(dropped, "{}\n{}", fib(&lab.router, VIP), summary());
    std::thread::sleep(Duration::from_millis(300));
    let (packets, routes) = (capture.lines(), monitor.lines());
    drop((capture, monitor));
    let after = |t: &std::time::SystemTime| ms_between(killed_at, *t);
    let fib_event = first_change(&routes, VIP, killed_at);
    // The first packet after the kill that `what` picks.
    let first = |what: &dyn Fn(&str) -> bool| {
        packets.iter().find_map(|(_, l)| {
            let t = after(&captured_at(l)?);
            (t >= 0.0 && what(l)).then_some(t)
        })
    };
    let last_from_node = packets
        .iter()
        .filter(|(_, l)| flows(l, "10.0.2.2.*", "10.0.2.1.3784"))
        .filter_map(|(_, l)| Some(after(&captured_at(l)?)))
        .next_back();
    let router_down =
        first(&|l| flows(l, "10.0.2.1.*", "10.0.2.2.3784") && l.contains("State Down"));
    // The NOTIFICATION (Cease, BFD down): the first router segment carrying data, on
    // whichever side opened the connection.
    let notification = first(&|l| {
        (flows(l, "10.0.2.1.*", "10.0.2.2.179") || flows(l, "10.0.2.1.179", "10.0.2.2.*"))
            && l.contains("length")
            && !l.contains("length 0")
    });
    let bfd_ms = fib_event.unwrap_or(polled_ms as f64);
    println!("bfd_failover_ms: {bfd_ms:.0}");
    println!("bfd_failover_ms_polled: {polled_ms}");
    let show = |v: Option<f64>| v.map_or("unseen".to_string(), |v| format!("{v:+.0} ms"));
    println!(
        "bfd_failover_breakdown: last BFD packet from the node {}, router's BFD Down {} \
         ({} after that packet), router's NOTIFICATION {}, FIB change {} ({} after BFD Down)",
        show(last_from_node),
        show(router_down),
        show(router_down.zip(last_from_node).map(|(d, l)| d - l)),
        show(notification),
        show(fib_event),
        show(fib_event.zip(router_down).map(|(f, d)| f - d)),
    );
    // What the router sent and installed around the detection, for the breakdown.
    for (_, l) in &packets {
        let at = captured_at(l).map_or(f64::NAN, |c| after(&c));
        if (-400.0..2000.0).contains(&at) {
            println!("bfd_failover_packet: {at:+.0} ms {l}");
        }
    }
    for (t, l) in &routes {
        println!("bfd_failover_route: {:+.0} ms {l}", after(t));
    }
    let n2 = frr.vtysh("bgpd", "show bgp neighbors 10.0.2.2 json");
    let n2: Value = serde_json::from_str(&n2).unwrap();
    // FRR ends the session itself on BFD down, with a Cease NOTIFICATION saying so.
    let reason = n2["10.0.2.2"]["lastNotificationReason"].to_string();
    println!("bfd_failover_reason: {reason}");
    assert!(reason.contains("BFD"), "{n2:#}");

    // Node 1 goes silent without BFD: only the hold timer (9 s) notices. Timed by
    // `ip monitor` as well, the poll only confirms.
    let monitor = Events::start(&lab.router, "ip monitor route", "");
    lab.silence_bgp(0);
    let killed_at = std::time::SystemTime::now();
    let killed = Instant::now();
    lab.signal(0, Signal::SIGKILL);
    let dropped = wait_until(Duration::from_secs(60), || {
        !fib(&lab.router, VIP).contains("via")
    });
    let polled_ms = killed.elapsed().as_millis();
    assert!(dropped, "{}\n{}", fib(&lab.router, VIP), summary());
    std::thread::sleep(Duration::from_millis(300));
    let hold_ms = first_change(&monitor.lines(), VIP, killed_at).unwrap_or(polled_ms as f64);
    println!("failover_ms_without_bfd: {hold_ms:.0}");
    assert!(lab.running(2), "{}", lab.logs());
}

/// GoBGP, iBGP in AS 64512 over IPv6 sessions (GoBGP connects to the nodes itself):
/// the IPv6 LoadBalancer address reaches GoBGP's RIB from exactly the nodes with a
/// local endpoint, with LOCAL_PREF, communities and large communities, and follows
/// the endpoints.
#[test]
#[ignore = "needs the kernel lab"]
fn gobgp_learns_an_ipv6_address_over_ibgp_with_local_pref_and_communities() {
    let mut lab = Lab::new("abg", true);
    let mut toml =
        format!("[global.config]\n  as = {NODE_AS}\n  router-id = \"10.0.0.1\"\n  port = 179\n");
    for i in 1..=3 {
        toml.push_str(&format!(
            "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"fd00:{i}::2\"\n    \
             peer-as = {NODE_AS}\n  [neighbors.timers.config]\n    connect-retry = 2\n  \
             [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      \
             afi-safi-name = \"ipv6-unicast\"\n"
        ));
    }
    let gobgp = Gobgp::start(&lab.router, &toml);
    let mut objects = bgp_pool(
        "v6",
        &["2001:db8:100::/120"],
        json!({"localPref": 250, "communities": ["64512:7", "large:64512:1:1"]}),
    )
    .to_vec();
    objects.extend((1..=3).map(|i| {
        bgp_peer(
            &format!("router-{i}"),
            i,
            &format!("fd00:{i}::1"),
            NODE_AS,
            NODE_AS,
            json!({}),
        )
    }));
    lab.write_web(VIP6, "Local", &[1, 3]);
    lab.start_agents(objects);
    let rib = || gobgp.cli(&format!("global rib -a ipv6 {VIP6}/128"));
    let hops = |rib: &str| -> BTreeSet<String> {
        ["fd00:1::2", "fd00:2::2", "fd00:3::2"]
            .into_iter()
            .filter(|h| rib.contains(h))
            .map(String::from)
            .collect()
    };
    let learned = wait_until(Duration::from_secs(300), || {
        hops(&rib()) == set(&["fd00:1::2", "fd00:3::2"]) && lab.established(1, "router-2")
    });
    assert!(
        learned,
        "{}\n{}\n{}",
        rib(),
        gobgp.cli("neighbor"),
        lab.logs()
    );
    let shown = rib();
    println!("{shown}");
    assert!(shown.contains("LocalPref: 250"), "{shown}");
    assert!(shown.contains("64512:7"), "{shown}");
    assert!(shown.contains("64512:1:1"), "{shown}");
    let n = lab.neighbor(0, "router-1").unwrap();
    assert_eq!(n["peer_as"], NODE_AS, "{n}");
    assert_eq!(n["prefixes_sent"], 1, "{n}");

    // The endpoints move to node 2 only.
    lab.write_web(VIP6, "Local", &[2]);
    let moved = wait_until(Duration::from_secs(180), || {
        hops(&rib()) == set(&["fd00:2::2"])
    });
    assert!(moved, "{}\n{}", rib(), lab.logs());
}
