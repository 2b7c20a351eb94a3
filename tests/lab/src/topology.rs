//! The lab's one network shape: a client namespace, a node namespace (where IPVS and
//! the agent run) and N pod namespaces behind it, joined by veth pairs with addresses
//! and default routes.
//!
//! ```text
//!  client ──eth0 [C.2] ─── [C.1] to-client── node ──to-pod [P.1] ─── [P.10] eth0── pod 0
//!                                                 └─cbr0  [P.1] ─┬─ [P.10] eth0── pod 0
//!                                                                └─ [P.11] eth0── pod 1 ...
//! ```
//!
//! With [`TopologyBuilder::bridge`] the pods hang off a Linux bridge `cbr0` in the node
//! (ports `vp0`, `vp1`, ...), as with a bridge CNI; without it the single pod is at the
//! end of the veth `to-pod`. Every `/24` prefix is given as its first three octets.
//!
//! ```no_run
//! let lab = netns_lab::Topology::builder("doc").pods(2).bridge().build();
//! lab.node.sh("ipvsadm -A -t 10.96.0.10:80 -s rr");
//! assert_eq!(lab.pods[1].ip, "10.244.0.11");
//! ```

use crate::{Netns, veth};

/// How to build a [`Topology`]; see the module documentation for the shape.
#[derive(Debug, Clone)]
pub struct TopologyBuilder {
    prefix: String,
    client_net: String,
    pod_net: String,
    pods: usize,
    first_host: usize,
    bridge: bool,
    forwarding: bool,
    ipv6: bool,
}

/// A client, a node and its pods, each in its own namespace (deleted on drop).
#[derive(Debug)]
pub struct Topology {
    /// The client, `<client net>.2`, default route via the node.
    pub client: Netns,
    /// The node, `<client net>.1` towards the client and `<pod net>.1` towards the pods.
    pub node: Netns,
    /// The pods, `<pod net>.10`, `.11`, ... (see [`TopologyBuilder::first_host`]),
    /// default route via the node.
    pub pods: Vec<Pod>,
}

/// One pod namespace of a [`Topology`].
#[derive(Debug)]
pub struct Pod {
    /// Its namespace.
    pub ns: Netns,
    /// Its IPv4 address on `eth0`, without prefix length.
    pub ip: String,
}

impl Topology {
    /// A builder for namespaces named after `prefix`: client net `192.168.50`, pod net
    /// `10.244.0`, one pod on a plain veth, IPv4 only, forwarding left as the kernel
    /// has it (off: tests of the agent see it turn it on).
    pub fn builder(prefix: &str) -> TopologyBuilder {
        TopologyBuilder {
            prefix: prefix.to_string(),
            client_net: "192.168.50".to_string(),
            pod_net: "10.244.0".to_string(),
            pods: 1,
            first_host: 10,
            bridge: false,
            forwarding: false,
            ipv6: false,
        }
    }
}

impl TopologyBuilder {
    /// The client-side `/24`, as its first three octets (`"192.168.60"`).
    pub fn client_net(mut self, net: &str) -> Self {
        self.client_net = net.to_string();
        self
    }

    /// The pod-side `/24`, as its first three octets (`"10.0.2"`).
    pub fn pod_net(mut self, net: &str) -> Self {
        self.pod_net = net.to_string();
        self
    }

    /// How many pods (0 is allowed: a client and a node only).
    pub fn pods(mut self, pods: usize) -> Self {
        self.pods = pods;
        self
    }

    /// The first pod's host number in the pod net (10 unless set).
    pub fn first_host(mut self, host: usize) -> Self {
        self.first_host = host;
        self
    }

    /// Puts the pods on a bridge `cbr0` in the node, as a bridge CNI does.
    pub fn bridge(mut self) -> Self {
        self.bridge = true;
        self
    }

    /// Turns IPv4 (and with [`Self::ipv6`] IPv6) forwarding on in the node.
    pub fn forwarding(mut self) -> Self {
        self.forwarding = true;
        self
    }

    /// Adds IPv6 next to IPv4: client net `fd00:1::/64`, pod net `fd00:2::/64`, with
    /// the same host numbers (`fd00:1::2`, `fd00:2::1`, `fd00:2::a` for pod 0, ...).
    pub fn ipv6(mut self) -> Self {
        self.ipv6 = true;
        self
    }

    /// Creates the namespaces and links; panics (naming the command) when the kernel
    /// refuses any step.
    pub fn build(self) -> Topology {
        assert!(
            self.bridge || self.pods <= 1,
            "more than one pod needs the bridge"
        );
        let (c, p) = (&self.client_net, &self.pod_net);
        let client = Netns::new(&format!("{}-cl", self.prefix));
        let node = Netns::new(&format!("{}-nd", self.prefix));
        veth(
            &client,
            "eth0",
            &format!("{c}.2/24"),
            &node,
            "to-client",
            &format!("{c}.1/24"),
        );
        client.sh(&format!("ip route add default via {c}.1"));
        if self.ipv6 {
            client.sh("ip addr add fd00:1::2/64 dev eth0 nodad");
            node.sh("ip addr add fd00:1::1/64 dev to-client nodad");
            client.sh("ip -6 route add default via fd00:1::1");
        }
        if self.bridge {
            node.sh(&format!(
                "ip link add cbr0 type bridge && ip addr add {p}.1/24 dev cbr0 && ip link set cbr0 up"
            ));
            if self.ipv6 {
                node.sh("ip addr add fd00:2::1/64 dev cbr0 nodad");
            }
        }
        let mut pods = Vec::new();
        for i in 0..self.pods {
            let ns = Netns::new(&format!("{}-pod", self.prefix));
            let host = self.first_host + i;
            let ip = format!("{p}.{host}");
            if self.bridge {
                node.sh(&format!(
                    "ip link add vp{i} type veth peer name eth0 netns {} && \
                     ip link set vp{i} master cbr0 up",
                    ns.name()
                ));
                ns.sh(&format!(
                    "ip addr add {ip}/24 dev eth0 && ip link set eth0 up"
                ));
            } else {
                veth(
                    &node,
                    "to-pod",
                    &format!("{p}.1/24"),
                    &ns,
                    "eth0",
                    &format!("{ip}/24"),
                );
            }
            ns.sh(&format!("ip route add default via {p}.1"));
            if self.ipv6 {
                if !self.bridge {
                    node.sh("ip addr add fd00:2::1/64 dev to-pod nodad");
                }
                ns.sh(&format!("ip addr add fd00:2::{host:x}/64 dev eth0 nodad"));
                ns.sh("ip -6 route add default via fd00:2::1");
            }
            pods.push(Pod { ns, ip });
        }
        if self.forwarding {
            node.sh("sysctl -qw net.ipv4.ip_forward=1");
            if self.ipv6 {
                node.sh("sysctl -qw net.ipv6.conf.all.forwarding=1");
            }
        }
        Topology { client, node, pods }
    }
}
