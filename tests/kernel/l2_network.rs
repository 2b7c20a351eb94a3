//! The layer-2 responder's sockets against the real kernel: a node with strict ARP and
//! its LoadBalancer IPs on `kube-ipvs0`, whose kernel answers nothing for them, and a
//! client on the same link. A responder built from `announce::l2` answers `arping` and
//! `ndisc6` from the node's MAC, its gratuitous ARP and unsolicited advertisements move
//! the client's neighbour entries, the solicited-node group shows in the node's
//! multicast list, and hostile frames on the wire do not stop it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use ipvs_proxy::announce::l2::{self, Interface};
use neighbor_frames::{MacAddr, arp, ndp};
use netns_lab::neigh::{neighbour_mac, replies_from, wait_link_local};
use netns_lab::{Netns, veth, wait_until};

const NODE_MAC: &str = "02:00:00:00:60:01";
const VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 60, 100);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x60, 0, 0, 0, 0, 0, 0x100);
/// On the link's subnet but owned by nobody: never answered.
const NOT_OWNED: Ipv4Addr = Ipv4Addr::new(192, 168, 60, 101);
/// A MAC no station has, put in the client's entries for the responder to replace.
const STALE_MAC: &str = "02:00:00:00:60:99";

/// What the test asks the responder's thread to do.
enum Command {
    /// Send this frame on the ARP (false) or NDP (true) socket.
    Send {
        ndp: bool,
        frame: Vec<u8>,
    },
    /// Send the takeover frames of this address (`l2::announce`).
    Announce(IpAddr),
    /// Join or leave the solicited-node group of this address.
    Join(Ipv6Addr),
    Leave(Ipv6Addr),
    /// Report whether the receive loop still runs.
    Alive,
}

type Reply = mpsc::Sender<Result<(), String>>;

/// `l2::respond` on `eth0` of a namespace, on its own runtime and thread, answering for
/// a fixed set of addresses, plus a command channel to send frames and change groups.
struct Responder {
    commands: Option<tokio::sync::mpsc::UnboundedSender<(Command, Reply)>>,
    thread: Option<std::thread::JoinHandle<()>>,
    mac: MacAddr,
}

impl Responder {
    fn start(ns: &Netns, owned: Vec<IpAddr>) -> Responder {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (commands, mut command_rx) = tokio::sync::mpsc::unbounded_channel::<(Command, Reply)>();
        let thread = ns.thread_async(move || async move {
            let interface = match Interface::open("eth0").await {
                Ok(interface) => Arc::new(interface),
                Err(error) => {
                    let _ = ready_tx.send(Err(error.to_string()));
                    return;
                }
            };
            for ip in &owned {
                if let IpAddr::V6(ip) = ip
                    && let Err(error) = interface.groups.join(*ip)
                {
                    let _ = ready_tx.send(Err(error.to_string()));
                    return;
                }
            }
            let responder = tokio::spawn({
                let interface = Arc::clone(&interface);
                async move { l2::respond(&interface, |ip| owned.contains(&ip)).await }
            });
            let _ = ready_tx.send(Ok(interface.mac));
            while let Some((command, reply)) = command_rx.recv().await {
                let result = match command {
                    Command::Send { ndp, frame } => {
                        let socket = if ndp { &interface.ndp } else { &interface.arp };
                        socket.send(&frame).await.map_err(|e| e.to_string())
                    }
                    Command::Announce(ip) => l2::announce(&interface, ip)
                        .await
                        .map_err(|e| e.to_string()),
                    Command::Join(ip) => interface.groups.join(ip).map_err(|e| e.to_string()),
                    Command::Leave(ip) => interface.groups.leave(ip).map_err(|e| e.to_string()),
                    Command::Alive => {
                        if responder.is_finished() {
                            Err("the receive loop ended".to_owned())
                        } else {
                            Ok(())
                        }
                    }
                };
                let _ = reply.send(result);
            }
            responder.abort();
        });
        let mac = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the responder never started")
            .unwrap_or_else(|error| panic!("the responder failed to start: {error}"));
        Responder {
            commands: Some(commands),
            thread: Some(thread),
            mac,
        }
    }

    fn run(&self, command: Command) {
        let (reply_tx, reply_rx) = mpsc::channel();
        self.commands
            .as_ref()
            .expect("running")
            .send((command, reply_tx))
            .expect("the responder thread is gone");
        reply_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("no reply from the responder thread")
            .unwrap_or_else(|error| panic!("{error}"));
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        // Closing the channel ends the command loop, which stops the receive loop.
        self.commands.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A node (strict ARP, VIPs on kube-ipvs0, fixed MAC) and a client joined by a veth.
fn lab() -> (Netns, Netns) {
    let node = Netns::new("l2-node");
    let client = Netns::new("l2-client");
    veth(
        &node,
        "eth0",
        "192.168.60.1/24",
        &client,
        "eth0",
        "192.168.60.2/24",
    );
    node.sh(&format!("ip link set eth0 address {NODE_MAC}"));
    node.sh("ip addr add fd00:60::1/64 dev eth0 nodad");
    client.sh("ip addr add fd00:60::2/64 dev eth0 nodad");
    for scope in ["all", "eth0"] {
        node.sh(&format!(
            "sysctl -qw net.ipv4.conf.{scope}.arp_ignore=1 net.ipv4.conf.{scope}.arp_announce=2"
        ));
    }
    node.sh("ip link add kube-ipvs0 type dummy");
    node.sh(&format!("ip addr add {VIP}/32 dev kube-ipvs0"));
    node.sh(&format!("ip addr add {VIP6}/128 dev kube-ipvs0 nodad"));
    // Gratuitous messages may replace an entry at once, however recently it was set.
    client.sh("sysctl -qw net.ipv4.neigh.eth0.locktime=0 net.ipv6.neigh.eth0.locktime=0");
    wait_link_local(&client, "eth0");
    (node, client)
}

/// Replaces the client's entry for `ip` with [`STALE_MAC`], as if another node had
/// owned the address.
fn plant_stale_entry(client: &Netns, ip: IpAddr) {
    client.sh(&format!(
        "ip neigh replace {ip} lladdr {STALE_MAC} dev eth0 nud stale"
    ));
    assert_eq!(
        neighbour_mac(client, "eth0", ip).as_deref(),
        Some(STALE_MAC)
    );
}

fn assert_entry_moves_to_node(client: &Netns, ip: IpAddr, by: &str) {
    let moved = wait_until(Duration::from_secs(5), || {
        neighbour_mac(client, "eth0", ip).as_deref() == Some(NODE_MAC)
    });
    assert!(
        moved,
        "{by} did not move the client's entry for {ip}: {}",
        client.sh(&format!("ip neigh show {ip}"))
    );
}

#[test]
#[ignore = "needs the kernel lab"]
fn the_responder_answers_arp_and_ndp_for_owned_ips_only() {
    let (node, client) = lab();

    // Before: with strict ARP the kernel answers neither protocol for the VIPs.
    let before = client.exec(&format!("arping -c 1 -w 2 -i eth0 {VIP}"));
    let text = String::from_utf8_lossy(&before.stdout);
    assert_eq!(
        replies_from(&text, NODE_MAC),
        0,
        "the kernel answered ARP: {text}"
    );
    let before = client.exec(&format!("ndisc6 -q -r 1 -w 1000 {VIP6} eth0"));
    assert!(
        !before.status.success(),
        "the kernel answered the NS for {VIP6}"
    );

    let responder = Responder::start(&node, vec![IpAddr::V4(VIP), IpAddr::V6(VIP6)]);
    assert_eq!(
        responder.mac.to_string(),
        NODE_MAC,
        "the MAC read over rtnetlink"
    );

    let arping = client.exec(&format!("arping -c 3 -w 10 -i eth0 {VIP}"));
    let text = String::from_utf8_lossy(&arping.stdout);
    assert!(arping.status.success(), "arping {VIP}: {text}");
    assert_eq!(
        replies_from(&text, NODE_MAC),
        3,
        "three replies from the node: {text}"
    );

    let ndisc = client.exec(&format!("ndisc6 -q -r 3 -w 2000 {VIP6} eth0"));
    let text = String::from_utf8_lossy(&ndisc.stdout);
    assert!(
        ndisc.status.success(),
        "ndisc6 {VIP6}: {text}{}",
        String::from_utf8_lossy(&ndisc.stderr)
    );
    assert_eq!(text.trim().to_lowercase(), NODE_MAC, "the advertised MAC");

    // An address on the link that the node does not own stays unanswered.
    let other = client.exec(&format!("arping -c 1 -w 2 -i eth0 {NOT_OWNED}"));
    let text = String::from_utf8_lossy(&other.stdout);
    assert_eq!(
        replies_from(&text, NODE_MAC),
        0,
        "answered for {NOT_OWNED}: {text}"
    );

    responder.run(Command::Alive);
}

#[test]
#[ignore = "needs the kernel lab"]
fn gratuitous_arp_and_unsolicited_advertisements_move_the_clients_entries() {
    let (node, client) = lab();
    let responder = Responder::start(&node, vec![IpAddr::V4(VIP), IpAddr::V6(VIP6)]);
    let ours = responder.mac;

    // Each ARP form on its own moves an existing entry.
    plant_stale_entry(&client, IpAddr::V4(VIP));
    let frame = arp::gratuitous_request(ours, VIP).to_vec();
    responder.run(Command::Send { ndp: false, frame });
    assert_entry_moves_to_node(&client, IpAddr::V4(VIP), "the gratuitous ARP request");

    plant_stale_entry(&client, IpAddr::V4(VIP));
    let frame = arp::gratuitous_reply(ours, VIP).to_vec();
    responder.run(Command::Send { ndp: false, frame });
    assert_entry_moves_to_node(&client, IpAddr::V4(VIP), "the gratuitous ARP reply");

    // The takeover as the announcer sends it, both families.
    plant_stale_entry(&client, IpAddr::V4(VIP));
    plant_stale_entry(&client, IpAddr::V6(VIP6));
    responder.run(Command::Announce(IpAddr::V4(VIP)));
    responder.run(Command::Announce(IpAddr::V6(VIP6)));
    assert_entry_moves_to_node(&client, IpAddr::V4(VIP), "the IPv4 takeover");
    assert_entry_moves_to_node(&client, IpAddr::V6(VIP6), "the unsolicited advertisement");
}

#[test]
#[ignore = "needs the kernel lab"]
fn solicited_node_groups_are_joined_and_left_on_the_interface() {
    let (node, _client) = lab();
    let responder = Responder::start(&node, vec![IpAddr::V6(VIP6)]);
    let group = ndp::solicited_node(VIP6).to_string();
    let groups = || node.sh("ip -6 maddr show dev eth0");
    assert!(
        groups().contains(&group),
        "{group} not joined:\n{}",
        groups()
    );

    // Another address of the same group: leaving one keeps the group for the other.
    let sibling = Ipv6Addr::new(0xfd00, 0x61, 0, 0, 0, 0, 0, 0x100);
    responder.run(Command::Join(sibling));
    responder.run(Command::Leave(VIP6));
    assert!(groups().contains(&group), "{group} left while still needed");
    responder.run(Command::Leave(sibling));
    let left = wait_until(Duration::from_secs(5), || !groups().contains(&group));
    assert!(left, "{group} still joined:\n{}", groups());
}

/// Frames a hostile or broken station might send, each with whether it goes on the
/// NDP socket (true) or the ARP one, from `from` (at `client_ip`, link-local
/// `fe80::2`): ARP requests for `vip` for other hardware, cut short and from a group
/// address; solicitations for `vip6` with a hop limit of 64, a bad checksum, options
/// of length zero and a payload length past the frame; then `random` frames of random
/// bytes (up to `spread` after the header) behind both EtherTypes, from a fixed-seed
/// generator so that a run is reproducible.
pub(super) fn hostile_frames(
    from: MacAddr,
    client_ip: Ipv4Addr,
    vip: Ipv4Addr,
    vip6: Ipv6Addr,
    random: usize,
    mut seed: u64,
    spread: u64,
) -> Vec<(bool, Vec<u8>)> {
    let client_ll: Ipv6Addr = "fe80::2".parse().unwrap();
    let mut frames = Vec::new();
    let mut frame = arp::request(from, client_ip, vip).to_vec();
    frame[15] = 6;
    frames.push((false, frame));
    frames.push((false, arp::request(from, client_ip, vip)[..30].to_vec()));
    let mut frame = arp::request(from, client_ip, vip).to_vec();
    frame[22] = 0x01;
    frames.push((false, frame));
    let solicitation = ndp::solicitation(from, client_ll, vip6);
    type Corruption = (usize, fn(u8) -> u8);
    let corruptions: [Corruption; 4] = [
        (21, |_| 64),       // hop limit
        (56, |b| b ^ 0x5a), // checksum
        (79, |_| 0),        // source link-layer option length
        (19, |_| 0xff),     // IPv6 payload length
    ];
    for (at, corrupt) in corruptions {
        let mut frame = solicitation.clone();
        frame[at] = corrupt(frame[at]);
        frames.push((true, frame));
    }
    for i in 0..random {
        let mut frame = vec![0xff; 12];
        frame.extend_from_slice(if i % 2 == 0 {
            &[0x08, 0x06]
        } else {
            &[0x86, 0xdd]
        });
        let len = 14 + (seed % spread) as usize;
        while frame.len() < len {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            frame.push((seed >> 56) as u8);
        }
        frames.push((i % 2 == 1, frame));
    }
    frames
}

#[test]
#[ignore = "needs the kernel lab"]
fn hostile_frames_do_not_stop_the_responder() {
    let (node, client) = lab();
    let responder = Responder::start(&node, vec![IpAddr::V4(VIP), IpAddr::V6(VIP6)]);
    let attacker = Responder::start(&client, vec![]);
    let from = attacker.mac;
    let client_ip = Ipv4Addr::new(192, 168, 60, 2);

    let frames = hostile_frames(from, client_ip, VIP, VIP6, 200, 0x9e37_79b9_7f4a_7c15, 100);
    for (ndp, frame) in frames {
        attacker.run(Command::Send { ndp, frame });
    }

    responder.run(Command::Alive);
    let arping = client.exec(&format!("arping -c 1 -w 5 -i eth0 {VIP}"));
    let text = String::from_utf8_lossy(&arping.stdout);
    assert_eq!(
        replies_from(&text, NODE_MAC),
        1,
        "no answer after the hostile frames: {text}"
    );
    let ndisc = client.exec(&format!("ndisc6 -q -r 3 -w 2000 {VIP6} eth0"));
    assert!(
        ndisc.status.success(),
        "no advertisement after the hostile frames"
    );
}

#[test]
#[ignore = "needs the kernel lab"]
fn the_socket_filters_pass_only_arp_requests_and_solicitations() {
    let (node, client) = lab();
    let marker = Ipv4Addr::new(192, 168, 60, 77);
    let marker6 = Ipv6Addr::new(0xfd00, 0x60, 0, 0, 0, 0, 0, 0x77);

    // The node reads both sockets until the two marker requests (sent last) arrive.
    let (ready_tx, ready_rx) = mpsc::channel();
    let listener = node.thread_async(move || async move {
        let interface = Interface::open("eth0").await.expect("open eth0");
        ready_tx.send(()).expect("the test waits");
        let (mut arp_frames, mut ndp_frames) = (Vec::new(), Vec::new());
        let mut arp_buffer = vec![0; 1514];
        let mut ndp_buffer = vec![0; 1514];
        let deadline = tokio::time::sleep(Duration::from_secs(20));
        tokio::pin!(deadline);
        let has = |frames: &Vec<Vec<u8>>, at: std::ops::Range<usize>, what: &[u8]| {
            frames.iter().any(|f| f.get(at.clone()) == Some(what))
        };
        while !(has(&arp_frames, 38..42, &marker.octets())
            && has(&ndp_frames, 62..78, &marker6.octets()))
        {
            tokio::select! {
                len = interface.arp.recv(&mut arp_buffer) => {
                    arp_frames.push(arp_buffer[..len.expect("recv")].to_vec());
                }
                len = interface.ndp.recv(&mut ndp_buffer) => {
                    ndp_frames.push(ndp_buffer[..len.expect("recv")].to_vec());
                }
                () = &mut deadline => break,
            }
        }
        (arp_frames, ndp_frames)
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the listener never started");

    let sender = Responder::start(&client, vec![]);
    let from = sender.mac;
    let node_mac = MacAddr::new([0x02, 0, 0, 0, 0x60, 0x01]);
    let client_ip = Ipv4Addr::new(192, 168, 60, 2);
    let client_ll: Ipv6Addr = "fe80::2".parse().unwrap();
    // What the filters must hold back: an ARP reply, an IPv4 frame, an advertisement
    // and an echo request (a solicitation with its ICMPv6 type changed to 128).
    let request = match neighbor_frames::parse(&arp::request(from, client_ip, VIP)) {
        Ok(Some(neighbor_frames::Request::Arp(request))) => request,
        other => panic!("{other:?}"),
    };
    let mut ipv4 = arp::request(from, client_ip, VIP).to_vec();
    ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
    let mut echo = ndp::solicitation(from, client_ll, VIP6);
    echo[54] = 128;
    let held_back = [
        (false, arp::reply(&request, from).to_vec()),
        (false, ipv4),
        (true, ndp::unsolicited_advertisement(from, VIP6).to_vec()),
        (true, echo),
    ];
    for (ndp, frame) in held_back {
        sender.run(Command::Send { ndp, frame });
    }
    let mut marker_request = arp::request(from, client_ip, marker).to_vec();
    marker_request[..6].copy_from_slice(&node_mac.octets());
    sender.run(Command::Send {
        ndp: false,
        frame: marker_request,
    });
    sender.run(Command::Send {
        ndp: true,
        frame: ndp::solicitation(from, client_ll, marker6),
    });

    let (arp_frames, ndp_frames) = listener.join().expect("the listener panicked");
    assert!(
        arp_frames.iter().any(|f| f[38..42] == marker.octets()),
        "the marker ARP request never arrived"
    );
    assert!(
        ndp_frames
            .iter()
            .any(|f| f.get(62..78) == Some(&marker6.octets()[..])),
        "the marker solicitation never arrived"
    );
    for frame in &arp_frames {
        assert_eq!(frame[12..14], [0x08, 0x06], "not ARP: {frame:02x?}");
        assert_eq!(frame[20..22], [0, 1], "not a request: {frame:02x?}");
    }
    for frame in &ndp_frames {
        assert_eq!(frame[12..14], [0x86, 0xdd], "not IPv6: {frame:02x?}");
        assert_eq!(
            (frame[20], frame[54]),
            (58, 135),
            "not a solicitation: {frame:02x?}"
        );
    }
}
