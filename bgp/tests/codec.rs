//! The codec on hand-made messages: our own encodings parse in netgauze-bgp-pkt, framing
//! over partial buffers, and the NOTIFICATION / RFC 7606 action of malformed messages.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bgp_proto::packet::attribute::{
    Attribute, AttributeValue, Community, FLAG_OPTIONAL, FLAG_TRANSITIVE, LargeCommunity, kind,
};
use bgp_proto::packet::notification::{
    CeaseError, ErrorCode, HeaderError, Notification, OpenError, UpdateError,
};
use bgp_proto::packet::open::{Capability, GracefulRestart, GracefulRestartFamily, Open};
use bgp_proto::packet::route_refresh::RouteRefresh;
use bgp_proto::packet::update::{Announcement, Update};
use bgp_proto::{Error, ErrorAction, Family, Message, SessionCaps};
use bytes::BytesMut;
use ipnet::IpNet;

const FOUR: SessionCaps = SessionCaps {
    four_octet_as: true,
};
const TWO: SessionCaps = SessionCaps {
    four_octet_as: false,
};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn announcement(prefixes: &[&str], next_hop: &str) -> Announcement {
    Announcement {
        prefixes: prefixes.iter().map(|p| net(p)).collect(),
        next_hop: next_hop.parse().unwrap(),
        link_local: None,
        as_path: vec![4_200_000_001],
        local_pref: Some(150),
        communities: vec![Community::new(64512, 7), Community::NO_EXPORT],
        large_communities: vec![LargeCommunity {
            global: 4_200_000_001,
            local1: 3,
            local2: 4,
        }],
    }
}

/// Every message kind we send, as netgauze reads it.
fn our_messages() -> Vec<(Message, SessionCaps)> {
    let gr = Capability::GracefulRestart(GracefulRestart {
        flags: GracefulRestart::RESTART_STATE,
        restart_time: 120,
        families: vec![
            GracefulRestartFamily {
                family: Family::IPV4_UNICAST,
                flags: GracefulRestartFamily::FORWARDING,
            },
            GracefulRestartFamily {
                family: Family::IPV6_UNICAST,
                flags: GracefulRestartFamily::FORWARDING,
            },
        ],
    });
    let open = Open::new(
        4_200_000_001,
        90,
        Ipv4Addr::new(192, 0, 2, 1),
        vec![
            Capability::MultiProtocol(Family::IPV4_UNICAST),
            Capability::MultiProtocol(Family::IPV6_UNICAST),
            Capability::RouteRefresh,
            gr,
        ],
    );
    let mut v6 = announcement(&["2001:db8::/64", "2001:db8:1::1/128"], "2001:db8::1");
    v6.link_local = Some("fe80::1".parse().unwrap());
    let v4 = announcement(&["192.0.2.10/32", "198.51.100.0/24"], "192.0.2.1");
    vec![
        (Message::Open(open), TWO),
        (Message::Keepalive, FOUR),
        (Message::Update(Update::announce(&v4, &FOUR)), FOUR),
        (Message::Update(Update::announce(&v4, &TWO)), TWO),
        (Message::Update(Update::announce(&v6, &FOUR)), FOUR),
        (
            Message::Update(Update::withdraw(&[
                net("192.0.2.10/32"),
                net("2001:db8::/64"),
            ])),
            FOUR,
        ),
        (
            Message::Update(Update::end_of_rib(Family::IPV4_UNICAST)),
            FOUR,
        ),
        (
            Message::Update(Update::end_of_rib(Family::IPV6_UNICAST)),
            FOUR,
        ),
        (
            Message::Notification(Notification::shutdown("node drained")),
            FOUR,
        ),
        (
            Message::Notification(Notification::new(ErrorCode::HoldTimerExpired(0))),
            FOUR,
        ),
        (
            Message::RouteRefresh(RouteRefresh::new(Family::IPV6_UNICAST)),
            FOUR,
        ),
    ]
}

#[test]
fn netgauze_reads_what_we_send() {
    for (msg, caps) in our_messages() {
        let bytes = bgp_proto::encode_to_vec(&msg, &caps).unwrap();
        let back = common::cross_check(&bytes, &caps, &format!("{msg:?}"));
        assert_eq!(back, msg);
    }
}

#[test]
fn announce_builds_what_each_peer_needs() {
    let v4 = announcement(&["192.0.2.10/32"], "192.0.2.1");
    let old = Update::announce(&v4, &TWO);
    // A 2-octet peer: AS_TRANS on the wire, the real path in AS4_PATH.
    let bytes = bgp_proto::encode_to_vec(&Message::Update(old.clone()), &TWO).unwrap();
    let Message::Update(seen) = bgp_proto::decode_message(&bytes, &TWO).unwrap() else {
        panic!()
    };
    assert_eq!(seen.as_path().unwrap().asns().collect::<Vec<_>>(), [23456]);
    assert!(matches!(
        seen.attribute(kind::AS4_PATH),
        Some(AttributeValue::As4Path(p)) if p.asns().eq([4_200_000_001])
    ));
    assert_eq!(Update::announce(&v4, &FOUR).attribute(kind::AS4_PATH), None);
    assert_eq!(seen.next_hop(), Some(Ipv4Addr::new(192, 0, 2, 1)));
    assert_eq!(seen.local_pref(), Some(150));

    let v6 = Update::announce(&announcement(&["2001:db8::/64"], "2001:db8::1"), &FOUR);
    let reach = v6.mp_reach().unwrap();
    assert_eq!(reach.family, Family::IPV6_UNICAST);
    assert_eq!(v6.next_hop(), None);
    assert_eq!(v6.announced(), [net("2001:db8::/64")]);
}

#[test]
fn end_of_rib_markers_are_recognised() {
    assert_eq!(
        Update::end_of_rib(Family::IPV4_UNICAST).end_of_rib_family(),
        Some(Family::IPV4_UNICAST)
    );
    assert_eq!(
        Update::end_of_rib(Family::IPV6_UNICAST).end_of_rib_family(),
        Some(Family::IPV6_UNICAST)
    );
    assert_eq!(
        Update::withdraw(&[net("2001:db8::/64")]).end_of_rib_family(),
        None
    );
    assert_eq!(
        Update::withdraw(&[net("192.0.2.0/24")]).end_of_rib_family(),
        None
    );
    // The v4 marker on the wire: a 23-octet UPDATE.
    let bytes = bgp_proto::encode_to_vec(
        &Message::Update(Update::end_of_rib(Family::IPV4_UNICAST)),
        &FOUR,
    )
    .unwrap();
    assert_eq!(bytes.len(), 23);
}

#[test]
fn decode_waits_for_whole_messages_and_consumes_them() {
    let mut wire = BytesMut::new();
    for (msg, caps) in our_messages().into_iter().filter(|(_, c)| *c == FOUR) {
        bgp_proto::encode(&msg, &caps, &mut wire).unwrap();
    }
    let total = wire.len();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    // One octet at a time: every prefix of a message is "not yet".
    for i in 0..total {
        buf.extend_from_slice(&wire[i..i + 1]);
        while let Some(m) = bgp_proto::decode(&mut buf, &FOUR).unwrap() {
            got.push(m);
        }
    }
    assert!(buf.is_empty());
    let want: Vec<_> = our_messages()
        .into_iter()
        .filter(|(_, c)| *c == FOUR)
        .map(|(m, _)| m)
        .collect();
    assert_eq!(got, want);
}

fn notification_of(err: &Error) -> (ErrorCode, Vec<u8>) {
    let n = err
        .notification()
        .unwrap_or_else(|| panic!("no notification in {err:?}"));
    (n.code, n.data.clone())
}

#[test]
fn header_errors_name_the_rfc_4271_subcode() {
    let mut keepalive = bgp_proto::encode_to_vec(&Message::Keepalive, &FOUR).unwrap();
    keepalive[3] = 0;
    let e = bgp_proto::decode(&mut BytesMut::from(&keepalive[..]), &FOUR).unwrap_err();
    assert_eq!(
        notification_of(&e).0,
        ErrorCode::MessageHeader(HeaderError::ConnectionNotSynchronized)
    );

    let mut long_keepalive = bgp_proto::encode_to_vec(&Message::Keepalive, &FOUR).unwrap();
    long_keepalive[17] = 20;
    long_keepalive.push(0);
    let e = bgp_proto::decode(&mut BytesMut::from(&long_keepalive[..]), &FOUR).unwrap_err();
    assert_eq!(
        notification_of(&e),
        (
            ErrorCode::MessageHeader(HeaderError::BadMessageLength),
            vec![0, 20]
        )
    );

    let mut too_long = vec![0xff; 16];
    too_long.extend_from_slice(&[0x10, 0x01, 2]);
    let e = bgp_proto::decode(&mut BytesMut::from(&too_long[..]), &FOUR).unwrap_err();
    assert_eq!(
        notification_of(&e),
        (
            ErrorCode::MessageHeader(HeaderError::BadMessageLength),
            vec![0x10, 0x01]
        )
    );

    let mut bad_type = bgp_proto::encode_to_vec(&Message::Keepalive, &FOUR).unwrap();
    bad_type[18] = 9;
    let e = bgp_proto::decode(&mut BytesMut::from(&bad_type[..]), &FOUR).unwrap_err();
    assert_eq!(
        notification_of(&e),
        (
            ErrorCode::MessageHeader(HeaderError::BadMessageType),
            vec![9]
        )
    );
}

/// An UPDATE with `attrs` (raw attribute octets) and `nlri`.
fn raw_update(attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 0];
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(nlri);
    let mut msg = vec![0xff; 16];
    msg.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    msg.push(2);
    msg.extend_from_slice(&body);
    msg
}

const ORIGIN: [u8; 4] = [0x40, 1, 1, 0];
const AS_PATH: [u8; 3] = [0x40, 2, 0];
const NEXT_HOP: [u8; 7] = [0x40, 3, 4, 192, 0, 2, 1];
const NLRI: [u8; 4] = [24, 198, 51, 100];

fn with(extra: &[u8]) -> Vec<u8> {
    [&ORIGIN[..], &AS_PATH, &NEXT_HOP, extra].concat()
}

fn action_of(bytes: &[u8]) -> Result<Message, Error> {
    bgp_proto::decode_message(bytes, &FOUR)
}

#[test]
fn rfc_7606_treat_as_withdraw() {
    // COMMUNITIES of 3 octets.
    let e = action_of(&raw_update(&with(&[0xc0, 8, 3, 1, 2, 3]), &NLRI)).unwrap_err();
    let Error::Malformed {
        action,
        withdrawn,
        notification,
        ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(*action, ErrorAction::TreatAsWithdraw);
    assert_eq!(withdrawn, &[net("198.51.100.0/24")]);
    assert_eq!(
        notification.code,
        ErrorCode::Update(UpdateError::AttributeLengthError)
    );
    assert_eq!(notification.data, [0xc0, 8, 3, 1, 2, 3]);
    // No NOTIFICATION is due: the session stays.
    assert!(e.notification().is_none());

    // ORIGIN 7, a missing NEXT_HOP, LOCAL_PREF of 2 octets, a LARGE_COMMUNITY of 5,
    // AS_PATH with an empty segment, ORIGIN with the optional bit.
    for (bytes, subcode) in [
        (
            raw_update(&[&[0x40, 1, 1, 7][..], &AS_PATH, &NEXT_HOP].concat(), &NLRI),
            UpdateError::InvalidOriginAttribute,
        ),
        (
            raw_update(&[&ORIGIN[..], &AS_PATH].concat(), &NLRI),
            UpdateError::MissingWellKnownAttribute,
        ),
        (
            raw_update(&with(&[0x40, 5, 2, 0, 1]), &NLRI),
            UpdateError::AttributeLengthError,
        ),
        (
            raw_update(&with(&[0xc0, 32, 5, 0, 0, 0, 0, 0]), &NLRI),
            UpdateError::AttributeLengthError,
        ),
        (
            raw_update(
                &[&ORIGIN[..], &[0x40, 2, 2, 2, 0], &NEXT_HOP].concat(),
                &NLRI,
            ),
            UpdateError::MalformedAsPath,
        ),
        (
            raw_update(&[&[0xc0, 1, 1, 0][..], &AS_PATH, &NEXT_HOP].concat(), &NLRI),
            UpdateError::AttributeFlagsError,
        ),
        // An attribute running past the list.
        (
            raw_update(&with(&[0xc0, 8, 9, 1, 2, 3, 4]), &NLRI),
            UpdateError::AttributeLengthError,
        ),
    ] {
        let e = action_of(&bytes).unwrap_err();
        assert_eq!(e.action(), Some(ErrorAction::TreatAsWithdraw), "{e:?}");
        let Error::Malformed { notification, .. } = &e else {
            panic!()
        };
        assert_eq!(notification.code, ErrorCode::Update(subcode), "{e:?}");
    }
}

#[test]
fn rfc_7606_attribute_discard_keeps_the_rest() {
    // ATOMIC_AGGREGATE with a value, AS4_PATH malformed: dropped, the UPDATE stands.
    for bad in [&[0x40, 6, 1, 0][..], &[0xc0, 17, 3, 2, 1, 0]] {
        let Message::Update(u) = action_of(&raw_update(&with(bad), &NLRI)).unwrap() else {
            panic!()
        };
        assert_eq!(u.attributes.len(), 3);
        assert_eq!(
            u.nlri,
            [net("198.51.100.0/24").to_string().parse().unwrap()]
        );
    }
    // A repeated attribute: the first one counts.
    let Message::Update(u) = action_of(&raw_update(&with(&[0x40, 1, 1, 2]), &NLRI)).unwrap() else {
        panic!()
    };
    assert_eq!(u.origin(), Some(bgp_proto::packet::attribute::Origin::Igp));
}

#[test]
fn rfc_7606_session_reset_cases() {
    // Malformed MP_REACH_NLRI (next hop of 5 octets), a prefix longer than 32, an
    // unrecognised well-known attribute, total attribute length past the message.
    let mp = [0x80, 14, 9, 0, 2, 1, 5, 1, 2, 3, 4, 5];
    let cases = [
        (
            raw_update(&with(&mp), &[]),
            UpdateError::OptionalAttributeError,
        ),
        (
            raw_update(&with(&[]), &[33, 1, 2, 3, 4, 5]),
            UpdateError::InvalidNetworkField,
        ),
        (
            raw_update(&with(&[0x40, 99, 0]), &NLRI),
            UpdateError::UnrecognizedWellKnownAttribute,
        ),
    ];
    for (bytes, subcode) in cases {
        let e = action_of(&bytes).unwrap_err();
        assert_eq!(e.action(), Some(ErrorAction::SessionReset), "{e:?}");
        assert_eq!(notification_of(&e).0, ErrorCode::Update(subcode));
    }
    let mut bytes = raw_update(&with(&[]), &NLRI);
    bytes[22] = 0xff; // total path attribute length
    let e = action_of(&bytes).unwrap_err();
    assert_eq!(
        notification_of(&e).0,
        ErrorCode::Update(UpdateError::MalformedAttributeList)
    );
}

#[test]
fn unknown_attributes_and_capabilities_survive_byte_exact() {
    // An optional transitive attribute 250 with the extended-length flag on a short value.
    let bytes = raw_update(&with(&[0xd0, 250, 0, 2, 0xab, 0xcd]), &NLRI);
    let msg = action_of(&bytes).unwrap();
    let Message::Update(u) = &msg else { panic!() };
    assert_eq!(
        u.attributes[3],
        Attribute {
            flags: FLAG_OPTIONAL | FLAG_TRANSITIVE | 0x10,
            value: AttributeValue::Unknown {
                kind: 250,
                value: vec![0xab, 0xcd]
            }
        }
    );
    assert_eq!(bgp_proto::encode_to_vec(&msg, &FOUR).unwrap(), bytes);
}

#[test]
fn open_carries_as_trans_for_4_octet_asns() {
    let open = Open::new(4_200_000_001, 90, Ipv4Addr::new(10, 0, 0, 1), vec![]);
    assert_eq!(open.my_as, 23456);
    assert_eq!(open.asn(), 4_200_000_001);
    let open = Open::new(64512, 90, Ipv4Addr::new(10, 0, 0, 1), vec![]);
    assert_eq!(open.my_as, 64512);
    assert_eq!(open.four_octet_as(), Some(64512));
    let mut bytes = bgp_proto::encode_to_vec(&Message::Open(open), &FOUR).unwrap();
    // Optional parameters length one too long.
    bytes[28] += 1;
    let e = action_of(&bytes).unwrap_err();
    assert_eq!(
        notification_of(&e).0,
        ErrorCode::Open(OpenError::Unspecific)
    );
}

#[test]
fn shutdown_communication_round_trips() {
    let n = Notification::shutdown("maintenance ☕");
    assert_eq!(n.code, ErrorCode::Cease(CeaseError::AdministrativeShutdown));
    assert_eq!(n.shutdown_message(), Some("maintenance ☕"));
    let long = "é".repeat(200);
    assert!(
        Notification::shutdown(&long)
            .shutdown_message()
            .unwrap()
            .len()
            <= 255
    );
}

#[test]
fn encode_refuses_oversized_messages_and_leaves_the_buffer() {
    let many: Vec<IpNet> = (0..2000u32)
        .map(|i| {
            IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap())
        })
        .collect();
    let a = Announcement {
        prefixes: many,
        next_hop: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        link_local: None,
        as_path: vec![],
        local_pref: None,
        communities: vec![],
        large_communities: vec![],
    };
    let mut buf = BytesMut::from(&b"x"[..]);
    let e = bgp_proto::encode(
        &Message::Update(Update::announce(&a, &FOUR)),
        &FOUR,
        &mut buf,
    )
    .unwrap_err();
    assert!(matches!(e, Error::TooLong(_)), "{e:?}");
    assert_eq!(&buf[..], b"x");
    let _ = Ipv6Addr::LOCALHOST;
}
