//! Captures the kernel's replies to ipset requests and checks the codec parses and
//! re-emits them byte for byte. With `IPSET_CAPTURE_DIR` set it also writes them there
//! (that is how `tests/fixtures/*.bin` were made; see README).

use ipset_netlink::{CmdAttr, Command, IpsetMessage};
use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP};
use netns_lab::Netns;
use nfnetlink_base::NfnlSocket;
use nfnetlink_base::testing::{assert_re_emit_identically, fixture_files, save_fixtures};

fn list(name: &str) -> IpsetMessage {
    IpsetMessage::new(
        Command::List,
        vec![CmdAttr::Protocol(7), CmdAttr::SetName(name.into())],
    )
}

#[test]
#[ignore = "needs the kernel lab"]
fn kernel_replies_parse_and_re_emit_identically() {
    let ns = Netns::new("ipset-cap");
    ns.sh("ipset restore <<'EOF'
create c-ip4 hash:ip family inet hashsize 1024 maxelem 65536 comment
add c-ip4 192.0.2.1 comment \"web\"
add c-ip4 192.0.2.2
create c-ipport6 hash:ip,port family inet6 timeout 600
add c-ipport6 2001:db8::1,tcp:443 timeout 300
add c-ipport6 2001:db8::1,udp:53
create c-ipportnet4 hash:ip,port,net family inet
add c-ipportnet4 10.96.0.1,sctp:80,10.0.0.0/8
create c-ipportip4 hash:ip,port,ip family inet
add c-ipportip4 10.96.0.1,tcp:80,10.244.0.5
create c-net4 hash:net family inet
add c-net4 10.1.0.0/16
create c-bport bitmap:port range 1-1024 comment
add c-bport 80 comment \"http\"
EOF");
    let captures = ns.run(|| {
        let mut socket = NfnlSocket::open().unwrap();
        let mut exchange = |message, flags| socket.capture(message, flags).unwrap();
        let mut out: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
        let protocol = IpsetMessage::new(Command::Protocol, vec![CmdAttr::Protocol(7)]);
        out.push(("protocol_reply".into(), exchange(protocol, NLM_F_ACK)));
        let type_query = IpsetMessage::new(
            Command::Type,
            vec![
                CmdAttr::Protocol(7),
                CmdAttr::TypeName("hash:ip,port,net".into()),
                CmdAttr::Family(2),
            ],
        );
        out.push(("type_reply".into(), exchange(type_query, NLM_F_ACK)));
        for name in [
            "c-ip4",
            "c-ipport6",
            "c-ipportnet4",
            "c-ipportip4",
            "c-net4",
            "c-bport",
        ] {
            out.push((format!("list_{name}"), exchange(list(name), NLM_F_DUMP)));
        }
        out.push((
            "list_missing_set_error".into(),
            exchange(list("nope"), NLM_F_DUMP),
        ));
        out
    });
    let files = fixture_files(&captures);
    assert_re_emit_identically::<IpsetMessage>(&files);
    save_fixtures(&files, "IPSET_CAPTURE_DIR");
}
