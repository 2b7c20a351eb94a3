//! Captures the kernel's ctnetlink replies (dumps of both families, a delete's ack, the
//! error for a missing entry) and checks the codec parses and re-emits them byte for
//! byte. With `CONNTRACK_CAPTURE_DIR` set it also writes them there (that is how
//! `tests/fixtures/*.bin` were made; see README).

use conntrack_netlink::{Family, Flow, NetfilterMessage, parse_datagram};
use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NetlinkPayload};
use netlink_packet_netfilter::conntrack::ConntrackMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessageInner, NetfilterProtoFamily};
use netns_lab::Netns;
use nfnetlink_base::NfnlSocket;
use nfnetlink_base::testing::{assert_re_emit_identically, fixture_files, save_fixtures};

fn request(family: NetfilterProtoFamily, message: ConntrackMessage) -> NetfilterMessage {
    NetfilterMessage::new(NetfilterHeader::new(family, 0, 0), message)
}

/// The flows of a dump's datagrams.
fn flows(family: Family, datagrams: &[Vec<u8>]) -> Vec<Flow> {
    datagrams
        .iter()
        .flat_map(|d| parse_datagram(d).unwrap())
        .filter_map(|m| match m.payload {
            NetlinkPayload::InnerMessage(NetfilterMessage {
                inner: NetfilterMessageInner::Conntrack(ConntrackMessage::New(attributes)),
                ..
            }) => Some(Flow::from_attributes(family, &attributes).unwrap()),
            _ => None,
        })
        .collect()
}

#[test]
#[ignore = "needs the kernel lab"]
fn kernel_replies_parse_and_re_emit_identically() {
    let ns = Netns::new("ct-cap");
    ns.sh("iptables -A INPUT -m conntrack --ctstate INVALID -j DROP");
    ns.sh("sysctl -qw net.netfilter.nf_conntrack_udp_timeout=600");
    ns.sh("ip6tables -A INPUT -m conntrack --ctstate INVALID -j DROP");
    ns.sh("ip link add d0 type dummy && ip link set d0 up");
    ns.sh("ip addr add 10.0.2.2/24 dev d0 && ip addr add fd00:2::2/64 dev d0 nodad");
    // One UDP flow per family to a port nothing listens on, one TCP flow.
    ns.sh("python3 -c '
import socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((\"10.0.2.2\", 40000)); u.sendto(b\"x\", (\"10.0.2.2\", 53))
u6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u6.bind((\"fd00:2::2\", 40000)); u6.sendto(b\"x\", (\"fd00:2::2\", 53))
s = socket.socket(); s.bind((\"10.0.2.2\", 8080)); s.listen()
c = socket.socket(); c.bind((\"10.0.2.2\", 40001)); c.connect((\"10.0.2.2\", 8080)); a, _ = s.accept()
'");
    let captured = ns.run(|| {
        let mut socket = NfnlSocket::open().unwrap();
        let mut exchange = |message, flags| socket.capture(message, flags).unwrap();
        let dump4 = exchange(
            request(NetfilterProtoFamily::IPv4, ConntrackMessage::Get(vec![])),
            NLM_F_DUMP,
        );
        let dump6 = exchange(
            request(NetfilterProtoFamily::IPv6, ConntrackMessage::Get(vec![])),
            NLM_F_DUMP,
        );
        let udp6 = flows(Family::Ipv6, &dump6).remove(0);
        let delete = exchange(
            request(
                NetfilterProtoFamily::IPv6,
                ConntrackMessage::Delete(udp6.delete_attributes()),
            ),
            NLM_F_ACK,
        );
        let missing = exchange(
            request(
                NetfilterProtoFamily::IPv6,
                ConntrackMessage::Delete(udp6.delete_attributes()),
            ),
            NLM_F_ACK,
        );
        vec![
            ("dump_ipv4", dump4),
            ("dump_ipv6", dump6),
            ("delete_ack", delete),
            ("delete_missing_error", missing),
        ]
    });

    let files = fixture_files(&captured);
    assert_re_emit_identically::<NetfilterMessage>(&files);
    save_fixtures(&files, "CONNTRACK_CAPTURE_DIR");
    let dump4 = flows(Family::Ipv4, &captured[0].1);
    let shown: Vec<String> = dump4.iter().map(ToString::to_string).collect();
    assert!(
        shown.contains(&"udp src=10.0.2.2 dst=10.0.2.2 sport=40000 dport=53 src=10.0.2.2 dst=10.0.2.2 sport=53 dport=40000".to_string()),
        "{shown:#?}"
    );
    assert!(
        shown.contains(&"tcp src=10.0.2.2 dst=10.0.2.2 sport=40001 dport=8080 src=10.0.2.2 dst=10.0.2.2 sport=8080 dport=40001".to_string()),
        "{shown:#?}"
    );
}
