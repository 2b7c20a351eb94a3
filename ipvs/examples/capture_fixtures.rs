//! Captures real kernel replies as byte fixtures for the host codec tests
//! (`tests/codec.rs`), in a fresh network namespace of the kernel lab:
//!
//! ```text
//! cargo build -p ipvs-netlink --example capture_fixtures
//! scripts/vm 'target/debug/examples/capture_fixtures'
//! ```
//!
//! Fixture names given as arguments limit the capture to those (the others keep their
//! bytes; a new capture differs in the socket's port id).

use std::net::IpAddr;

use ipvs_netlink::convert::{self, key_attributes};
use ipvs_netlink::packet::constants::*;
use ipvs_netlink::packet::{Attribute, IpvsMessage};
use ipvs_netlink::*;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_generic::GenlMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_GENERIC};
use netns_lab::Netns;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Sends one request and returns every datagram of the reply, concatenated.
fn exchange(socket: &Socket, family: u16, message: IpvsMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut genl = GenlMessage::from_payload(message);
    genl.set_resolved_family_id(family);
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(genl));
    nl.finalize();
    let mut bytes = vec![0; nl.buffer_len()];
    nl.serialize(&mut bytes);
    socket.send(&bytes, 0).unwrap();
    let mut all = Vec::new();
    loop {
        let mut buffer = vec![0u8; 65536];
        let length = socket.recv(&mut &mut buffer[..], 0).unwrap();
        all.extend_from_slice(&buffer[..length]);
        // Stop at the final message: the ack/error, or the end of a dump.
        let mut offset = 0;
        let mut finished = false;
        while offset < length {
            let message = NetlinkBuffer::new(&buffer[offset..length]);
            if matches!(message.message_type(), NLMSG_ERROR | NLMSG_DONE) {
                finished = true;
            }
            offset += (message.length() as usize + 3) & !3;
        }
        if finished {
            return all;
        }
    }
}

fn main() {
    let ns = Netns::new("capture");
    ns.sh(
        "ip link set lo up; ip link add d0 type dummy; ip link set d0 up; \
           ip addr add 10.0.0.254/8 dev d0; ip -6 addr add fd00::fe/64 dev d0 nodad",
    );
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    ns.run(|| {
        let mut ipvs = IpvsHandle::new().unwrap();
        let tcp = ServiceKey::tcp(ip("10.1.0.1"), 80);
        let mut service = Service::new(tcp, Scheduler::SourceHashing).persistent(300);
        service.flags |= ServiceFlags::SH_FALLBACK | ServiceFlags::SH_PORT;
        service.netmask = 24;
        let mut masq = Destination::new(ip("10.2.0.1"), 8080, ForwardMethod::Masquerade).weight(3);
        masq.upper_threshold = 100;
        masq.lower_threshold = 10;
        let mut gue = Destination::new(ip("10.2.0.2"), 8080, ForwardMethod::Tunnel);
        gue.tunnel_type = TunnelType::Gue;
        gue.tunnel_port = 6080;
        gue.tunnel_flags = TunnelFlags::CSUM;
        let v6 = ServiceKey::udp(ip("fd00::1"), 53);
        let fwmark = ServiceKey::Fwmark {
            family: AddressFamily::Inet,
            mark: 7,
        };
        let results = ipvs
            .apply_batch(&[
                Change::AddService(service.clone()),
                Change::AddDestination(tcp, masq),
                Change::AddDestination(tcp, gue),
                Change::AddService(Service::new(v6, Scheduler::Maglev)),
                Change::AddDestination(
                    v6,
                    Destination::new(ip("fd00::2"), 53, ForwardMethod::DirectRoute),
                ),
                Change::AddService(Service::new(fwmark, Scheduler::WeightedLeastConnection)),
            ])
            .unwrap();
        assert!(results.iter().all(Result::is_ok), "{results:?}");

        let family = ipvs.family_id();
        let mut socket = Socket::new(NETLINK_GENERIC).unwrap();
        socket.bind_auto().unwrap();
        socket.connect(&SocketAddr::new(0, 0)).unwrap();
        let ack = NLM_F_REQUEST | NLM_F_ACK;
        let dump = NLM_F_REQUEST | NLM_F_DUMP;
        let cases: Vec<(&str, IpvsMessage, u16)> = vec![
            (
                "services_dump",
                IpvsMessage::new(IPVS_CMD_GET_SERVICE, vec![]),
                dump,
            ),
            (
                "destinations_dump_tcp",
                convert::list_destinations_request(&tcp).message,
                dump,
            ),
            (
                "destinations_dump_ipv6",
                convert::list_destinations_request(&v6).message,
                dump,
            ),
            (
                "get_service_with_ack",
                convert::get_service_request(&tcp).message,
                ack,
            ),
            ("info", IpvsMessage::new(IPVS_CMD_GET_INFO, vec![]), ack),
            (
                "timeouts",
                IpvsMessage::new(IPVS_CMD_GET_CONFIG, vec![]),
                ack,
            ),
            (
                "error_service_exists",
                convert::change_request(&Change::AddService(service))
                    .unwrap()
                    .message,
                ack,
            ),
            (
                "error_no_such_service",
                IpvsMessage::new(
                    IPVS_CMD_DEL_SERVICE,
                    vec![Attribute::Service(key_attributes(&ServiceKey::tcp(
                        ip("10.9.9.9"),
                        1,
                    )))],
                ),
                ack,
            ),
        ];
        let only: Vec<String> = std::env::args().skip(1).collect();
        let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
        for (seq, (name, message, flags)) in cases.into_iter().enumerate() {
            if !wanted(name) {
                continue;
            }
            let bytes = exchange(&socket, family, message, flags, 1000 + seq as u32);
            std::fs::write(format!("{fixtures}/{name}.bin"), &bytes).unwrap();
            println!("{name}: {} bytes", bytes.len());
        }
        // Both sync daemons, the backup with every option set (last: the daemons stay
        // up until the namespace goes).
        if wanted("daemons_dump") {
            ns.sh("ipvsadm --start-daemon master --mcast-interface lo && \
                 ipvsadm --start-daemon backup --mcast-interface lo --syncid 7 \
                   --sync-maxlen 1000 --mcast-group 224.0.0.99 --mcast-port 9000 --mcast-ttl 3");
            let bytes = exchange(
                &socket,
                family,
                IpvsMessage::new(IPVS_CMD_GET_DAEMON, vec![]),
                dump,
                2000,
            );
            std::fs::write(format!("{fixtures}/daemons_dump.bin"), &bytes).unwrap();
            println!("daemons_dump: {} bytes", bytes.len());
        }
    });
}
