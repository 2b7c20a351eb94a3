//! Host tests of the typed model: ipset syntax, module names, error texts.

use ipset_netlink::{
    Entry, EntryAttr, Error, Family, Member, Protocol, SetSpec, SetType, describe_code,
};

#[test]
fn entries_print_in_ipset_syntax() {
    let ip = |s: &str| s.parse().unwrap();
    let cases = [
        (Entry::Ip(ip("10.0.0.1")), "10.0.0.1"),
        (
            Entry::IpPort {
                ip: ip("10.0.0.1"),
                proto: Protocol::Tcp,
                port: 80,
            },
            "10.0.0.1,tcp:80",
        ),
        (
            Entry::IpPort {
                ip: ip("fd00::1"),
                proto: Protocol::Sctp,
                port: 9,
            },
            "fd00::1,sctp:9",
        ),
        (
            Entry::IpPortIp {
                ip: ip("10.0.0.1"),
                proto: Protocol::Udp,
                port: 53,
                ip2: ip("10.0.0.2"),
            },
            "10.0.0.1,udp:53,10.0.0.2",
        ),
        (
            Entry::IpPortNet {
                ip: ip("10.0.0.1"),
                proto: Protocol::Tcp,
                port: 22,
                net: "10.1.0.0/16".parse().unwrap(),
            },
            "10.0.0.1,tcp:22,10.1.0.0/16",
        ),
        (Entry::Net("10.2.3.4/32".parse().unwrap()), "10.2.3.4"),
        (Entry::Net("fd00::/64".parse().unwrap()), "fd00::/64"),
        (Entry::Port(30080), "30080"),
    ];
    for (entry, text) in cases {
        assert_eq!(entry.to_string(), text);
    }
    let member = Member::with_comment(Entry::Port(80), "http");
    assert_eq!(member.to_string(), "80 comment \"http\"");
}

#[test]
fn members_decode_from_the_attributes_they_encode_to() {
    let entry = Entry::IpPortNet {
        ip: "10.0.0.1".parse().unwrap(),
        proto: Protocol::Sctp,
        port: 5060,
        net: "192.168.0.0/24".parse().unwrap(),
    };
    let member = Member {
        entry,
        comment: Some("c".into()),
        timeout: Some(5),
    };
    let attrs = member.to_attrs();
    assert!(attrs.contains(&EntryAttr::Cidr2(24)));
    assert_eq!(
        Member::from_attrs(&SetType::HashIpPortNet, &attrs).unwrap(),
        member
    );
    let err = Member::from_attrs(&SetType::HashIpPort, &[EntryAttr::Port(1)]).unwrap_err();
    assert!(err.contains("without address"), "{err}");
}

#[test]
fn set_types_name_their_kernel_module() {
    assert_eq!(SetType::HashIpPortNet.module(), "ip_set_hash_ipportnet");
    assert_eq!(SetType::BitmapPort.module(), "ip_set_bitmap_port");
    assert_eq!(SetType::from_name("hash:ip,port,ip"), SetType::HashIpPortIp);
    assert_eq!(
        SetType::from_name("list:set"),
        SetType::Other("list:set".into())
    );
    assert_eq!(Family::Inet6.number(), 10);
}

#[test]
fn kernel_codes_have_ipset_meanings() {
    assert!(describe_code(4112, false).contains("comment support"));
    assert!(describe_code(4352, false).contains("maxelem"));
    assert!(describe_code(4352, true).contains("range"));
    assert!(describe_code(2, false).contains("No such file"));
    let e = Error::TypeNotSupported {
        set_type: "hash:ip,port,net".into(),
        family: "inet".into(),
        module: SetType::HashIpPortNet.module(),
    };
    assert!(
        e.to_string().contains("modprobe ip_set_hash_ipportnet"),
        "{e}"
    );
}

#[test]
fn spec_builders_fill_in_options() {
    let spec = SetSpec::new("s", SetType::HashIp, Family::Inet)
        .hashsize(64)
        .maxelem(10)
        .timeout(3)
        .with_comments();
    assert_eq!(
        (spec.hashsize, spec.maxelem, spec.timeout, spec.comment),
        (Some(64), Some(10), Some(3), true)
    );
    assert_eq!(SetSpec::bitmap_port("p", 1, 2).port_range, Some((1, 2)));
}

#[test]
fn handle_can_move_into_spawn_blocking() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<ipset_netlink::IpsetHandle>();
    assert_send::<Error>();
}
