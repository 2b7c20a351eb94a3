//! The lab cluster most agent tests need: a client, a node and pods serving HTTP on
//! 8080 (a [`netns_lab::Topology`] with the pods on a bridge), a manifests directory
//! for the static source, a configuration file, and the agent started either as the
//! binary or in-process. Every helper observes from outside: what the client gets,
//! what `ipvsadm` shows, what the health servers answer.

use std::path::PathBuf;
use std::time::Duration;

use ipvs_proxy::agent::{AgentOptions, SourceChoice};
use netns_lab::{Background, Netns, Topology, TopologyBuilder, wait_until};
use serde_json::Value;

use crate::LAB_AGENT_CONFIG;
use crate::agent::InProcessAgent;

/// A CGI script for busybox httpd answering the peer address the backend saw, so a
/// test can tell whether the client's source address survived the trip. busybox
/// prints IPv4 peers of its dual-stack socket as `[::ffff:a.b.c.d]`.
const PEER_ECHO_CGI: &str =
    "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n%s' \"$REMOTE_ADDR\"\n";

/// The node's name in the manifests and on the agent's command line.
pub const NODE_NAME: &str = "node";

/// What each pod runs on port 8080.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// busybox httpd answering `pod-<i>`.
    Named,
    /// busybox httpd answering, at `/cgi-bin/peer`, the address the request came from.
    PeerEcho,
}

/// client (`<client net>.2`) — node (`<client net>.1` | `10.244.0.1` on `cbr0`) — pods
/// `10.244.0.10`, `.11`, ...; the temporary directory and the namespaces go on drop,
/// and a failing test prints the agent's log.
#[derive(Debug)]
pub struct Cluster {
    /// The namespaces.
    pub lab: Topology,
    servers: Vec<Background>,
    dir: PathBuf,
    client_net: String,
}

impl Cluster {
    /// A cluster with `pods` pods running `backend`, the client on `192.168.50.0/24`,
    /// and [`LAB_AGENT_CONFIG`] as the configuration.
    pub fn new(prefix: &str, pods: usize, backend: Backend) -> Cluster {
        Cluster::with_client_net(prefix, "192.168.50", pods, backend)
    }

    /// [`Cluster::new`] with the client on `<client_net>.0/24`.
    pub fn with_client_net(
        prefix: &str,
        client_net: &str,
        pods: usize,
        backend: Backend,
    ) -> Cluster {
        let builder: TopologyBuilder = Topology::builder(prefix)
            .client_net(client_net)
            .pods(pods)
            .bridge();
        let lab = builder.build();
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", lab.node.name()));
        std::fs::create_dir_all(dir.join("manifests"))
            .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let servers = lab
            .pods
            .iter()
            .enumerate()
            .map(|(i, pod)| match backend {
                Backend::Named => pod.ns.http_server(8080, &format!("pod-{i}")),
                Backend::PeerEcho => peer_echo_server(&pod.ns, &dir.join(format!("peer-echo-{i}"))),
            })
            .collect();
        let cluster = Cluster {
            lab,
            servers,
            dir,
            client_net: client_net.to_string(),
        };
        cluster.set_config(LAB_AGENT_CONFIG);
        cluster
    }

    /// The client namespace.
    pub fn client(&self) -> &Netns {
        &self.lab.client
    }

    /// The node namespace.
    pub fn node(&self) -> &Netns {
        &self.lab.node
    }

    /// Pod `i`'s address.
    pub fn ip(&self, pod: usize) -> &str {
        &self.lab.pods[pod].ip
    }

    /// Every pod's address.
    pub fn ips(&self) -> Vec<&str> {
        self.lab.pods.iter().map(|pod| pod.ip.as_str()).collect()
    }

    /// The node's address towards the client.
    pub fn node_ip(&self) -> String {
        format!("{}.1", self.client_net)
    }

    /// Stops pod `i`'s server.
    pub fn stop_server(&mut self, pod: usize) {
        drop(self.servers.remove(pod));
    }

    /// The test's own directory (removed on drop).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The manifests directory the static source reads.
    pub fn manifests(&self) -> PathBuf {
        self.dir.join("manifests")
    }

    /// The configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    /// The agent's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("agent.log")
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The status socket for `ipvs-proxy services`, on the lab's `/run/lab` tmpfs (the
    /// project directory is 9p in the VM, which cannot hold sockets).
    pub fn status_socket(&self) -> PathBuf {
        PathBuf::from(format!("/run/lab/{}/agent.sock", self.lab.node.name()))
    }

    /// Replaces the configuration file (read when the agent starts).
    pub fn set_config(&self, yaml: &str) {
        std::fs::write(self.config_path(), yaml).expect("write config.yaml");
    }

    /// Writes (atomically, so the watching agent never reads half a file) the manifest
    /// file `file` holding `objects`.
    pub fn write(&self, file: &str, objects: &[Value]) {
        let path = self.manifests().join(file);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, crate::k8s::manifest(objects)).expect("write a manifest");
        std::fs::rename(&tmp, &path).expect("rename a manifest");
    }

    /// Starts the binary `agent` (`env!("CARGO_BIN_EXE_ipvs-proxy")` of the test) with
    /// `ipvs-proxy run` on the node, the static source and our configuration, plus
    /// `extra` arguments; its output goes to [`Cluster::log`]. Killed on drop.
    pub fn start_binary(&self, agent: &str, extra: &str) -> Background {
        self.node().spawn(&format!(
            "{agent} run --config {} --manifests {} --hostname-override {NODE_NAME} {extra} >> {} 2>&1",
            self.config_path().display(),
            self.manifests().display(),
            self.log_path().display()
        ))
    }

    /// Starts the agent in-process on the node with the static source and our
    /// configuration, its status socket at [`Cluster::status_socket`]. Stopped on drop.
    pub fn start_in_process(&self) -> InProcessAgent {
        let text = std::fs::read_to_string(self.config_path()).expect("read config.yaml");
        let loaded = ipvs_proxy::config::parse(&text).expect("the test's configuration parses");
        let socket = self.status_socket();
        if let Some(parent) = socket.parent() {
            // Best effort: without /run/lab the agent logs that it serves no socket.
            let _ = std::fs::create_dir_all(parent);
        }
        let options = AgentOptions {
            config: loaded.config,
            node_name: NODE_NAME.to_string(),
            source: SourceChoice::Static(self.manifests()),
            status_socket: Some(socket),
        };
        InProcessAgent::start(self.node(), options, &self.log_path())
    }

    /// `curl` from the client: the trimmed body, or `None` when it failed.
    pub fn curl(&self, url: &str) -> Option<String> {
        curl(self.client(), url)
    }

    /// Waits up to `timeout` for `url` to answer the client.
    pub fn wait_for(&self, url: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.curl(url).is_some())
    }

    /// `ipvsadm -Ln` on the node.
    pub fn ipvs(&self) -> String {
        self.node().sh("ipvsadm -Ln")
    }

    /// `(weight, active connections)` of real server `addr` under virtual server
    /// `vip` (as `ipvsadm -Ln` prints them), or `None` when it is not programmed.
    pub fn real_server(&self, vip: &str, addr: &str) -> Option<(u32, u32)> {
        let out = self.node().exec(&format!("ipvsadm -Ln -t {vip}"));
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        table.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                ["->", a, _forward, weight, active, _inactive] if *a == addr => {
                    Some((weight.parse().ok()?, active.parse().ok()?))
                }
                _ => None,
            }
        })
    }

    /// The HTTP status and body a health check NodePort gives the node itself.
    pub fn health(&self, port: u16) -> (u16, String) {
        let out = self.node().exec(&format!(
            "curl -sS --max-time 3 -w '\\n%{{http_code}}' http://{}:{port}/healthz",
            self.node_ip()
        ));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent log ({}):\n{}", self.lab.node.name(), self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(parent) = self.status_socket().parent() {
            let _ = std::fs::remove_dir_all(parent);
        }
    }
}

/// `curl` from `from`: the trimmed body, or `None` when it failed.
pub fn curl(from: &Netns, url: &str) -> Option<String> {
    let out = from.exec(&format!("curl -sS --max-time 3 {url}"));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// busybox httpd on 8080 in `pod` serving [`PEER_ECHO_CGI`] from `root`.
fn peer_echo_server(pod: &Netns, root: &std::path::Path) -> Background {
    let script = root.join("cgi-bin/peer");
    std::fs::create_dir_all(root.join("cgi-bin")).expect("mkdir cgi-bin");
    std::fs::write(&script, PEER_ECHO_CGI).expect("write the CGI script");
    pod.sh(&format!("chmod 755 {}", script.display()));
    let server = pod.spawn(&format!("busybox httpd -f -p 8080 -h {}", root.display()));
    assert!(
        wait_until(Duration::from_secs(10), || pod
            .exec("ss -Hltn 'sport = :8080' | grep -q LISTEN")
            .status
            .success()),
        "peer echo server in {} never listened",
        pod.name()
    );
    server
}
