//! Property tests: decoding never panics on random or mutated input, a message decoded
//! from anything encodes back to something that decodes the same, and generated
//! messages survive encode∘decode unchanged.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use bgp_proto::packet::attribute::{Attribute, AttributeValue, Community, LargeCommunity};
use bgp_proto::packet::notification::{ErrorCode, Notification};
use bgp_proto::packet::open::{
    Capability, GracefulRestart, GracefulRestartFamily, Open, OptionalParameter,
};
use bgp_proto::packet::route_refresh::RouteRefresh;
use bgp_proto::packet::update::{Announcement, Update};
use bgp_proto::{Family, Message, SessionCaps};
use bytes::BytesMut;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;

fn caps() -> impl Strategy<Value = SessionCaps> {
    any::<bool>().prop_map(|four_octet_as| SessionCaps { four_octet_as })
}

/// Every captured fixture message, as seeds for mutation.
fn fixtures() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for router in std::fs::read_dir(root).unwrap().flatten() {
        if !router.path().is_dir() {
            continue;
        }
        for session in std::fs::read_dir(router.path()).unwrap().flatten() {
            if !session.path().is_dir() {
                continue;
            }
            for file in std::fs::read_dir(session.path()).unwrap().flatten() {
                out.push(std::fs::read(file.path()).unwrap());
            }
        }
    }
    assert!(out.len() > 50);
    out
}

/// Decodes `bytes` as a stream; whatever decodes must re-encode to bytes that decode
/// to the same message.
fn decode_all(bytes: &[u8], caps: &SessionCaps) {
    let mut buf = BytesMut::from(bytes);
    while let Ok(Some(msg)) = bgp_proto::decode(&mut buf, caps) {
        let again = bgp_proto::encode_to_vec(&msg, caps).expect("a decoded message encodes");
        assert_eq!(
            bgp_proto::decode_message(&again, caps).expect("and decodes again"),
            msg
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), caps in caps()) {
        decode_all(&bytes, &caps);
    }

    #[test]
    fn random_bodies_behind_a_good_header_never_panic(
        kind in 1u8..=5,
        body in proptest::collection::vec(any::<u8>(), 0..600),
        caps in caps(),
    ) {
        let mut msg = vec![0xff; 16];
        msg.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
        msg.push(kind);
        msg.extend_from_slice(&body);
        decode_all(&msg, &caps);
    }

    #[test]
    fn mutated_fixtures_never_panic(
        index in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        caps in caps(),
    ) {
        let seeds = fixtures();
        let mut msg = seeds[index.index(seeds.len())].clone();
        for (at, value) in flips {
            // Past the marker and length, so the mutation reaches the body parsers.
            if msg.len() > 19 {
                let i = 18 + at.index(msg.len() - 18);
                msg[i] = value;
            }
        }
        decode_all(&msg, &caps);
        // Truncated too, with the length field kept consistent.
        let len = 19 + cut.index(msg.len() - 18);
        msg.truncate(len);
        msg[16..18].copy_from_slice(&(len as u16).to_be_bytes());
        decode_all(&msg, &caps);
    }
}

fn family() -> impl Strategy<Value = Family> {
    prop_oneof![
        Just(Family::IPV4_UNICAST),
        Just(Family::IPV6_UNICAST),
        (any::<u16>(), any::<u8>()).prop_map(|(afi, safi)| Family { afi, safi }),
    ]
}

fn capability() -> impl Strategy<Value = Capability> {
    prop_oneof![
        family().prop_map(Capability::MultiProtocol),
        Just(Capability::RouteRefresh),
        any::<u32>().prop_map(Capability::FourOctetAs),
        (
            0u8..16,
            0u16..0x1000,
            proptest::collection::vec((family(), any::<u8>()), 0..4)
        )
            .prop_map(|(flags, restart_time, fams)| Capability::GracefulRestart(
                GracefulRestart {
                    flags,
                    restart_time,
                    families: fams
                        .into_iter()
                        .map(|(family, flags)| GracefulRestartFamily { family, flags })
                        .collect(),
                }
            )),
        (70u8..=255, proptest::collection::vec(any::<u8>(), 0..10))
            .prop_map(|(code, value)| Capability::Unknown { code, value }),
    ]
}

fn open() -> impl Strategy<Value = Open> {
    (
        any::<u16>(),
        any::<u16>(),
        any::<u32>(),
        proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(capability(), 0..6)
                    .prop_map(OptionalParameter::Capabilities),
                (3u8..=255, proptest::collection::vec(any::<u8>(), 0..8))
                    .prop_map(|(kind, value)| OptionalParameter::Unknown { kind, value }),
            ],
            0..3,
        ),
    )
        .prop_map(|(my_as, hold_time, id, params)| Open {
            version: 4,
            my_as,
            hold_time,
            bgp_id: Ipv4Addr::from(id),
            params,
        })
}

fn v4_prefix() -> impl Strategy<Value = IpNet> {
    (any::<u32>(), 0u8..=32)
        .prop_map(|(a, len)| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), len).unwrap().trunc()))
}

fn v6_prefix() -> impl Strategy<Value = IpNet> {
    (any::<u128>(), 0u8..=128)
        .prop_map(|(a, len)| IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), len).unwrap().trunc()))
}

fn update(caps: SessionCaps) -> impl Strategy<Value = Update> {
    let v6 = any::<bool>();
    (
        v6,
        proptest::collection::vec(v4_prefix(), 1..20),
        proptest::collection::vec(v6_prefix(), 1..20),
        any::<u32>(),
        proptest::option::of(any::<u128>()),
        proptest::collection::vec(any::<u32>(), 0..5),
        proptest::option::of(any::<u32>()),
        proptest::collection::vec(any::<u32>().prop_map(Community), 0..5),
        proptest::collection::vec((any::<u32>(), any::<u32>(), any::<u32>()), 0..4),
        // Distinct type codes: a repeated attribute is discarded on decode (RFC 7606
        // §3 g), so a message carrying one twice does not round-trip by design.
        proptest::collection::btree_map(
            100u8..=250,
            proptest::collection::vec(any::<u8>(), 0..300),
            0..3,
        ),
    )
        .prop_map(
            move |(v6, p4, p6, nh, ll, path, lp, communities, large, unknown)| {
                let a = Announcement {
                    prefixes: if v6 { p6 } else { p4 },
                    next_hop: if v6 {
                        IpAddr::V6(Ipv6Addr::from(u128::from(nh) << 64))
                    } else {
                        IpAddr::V4(Ipv4Addr::from(nh))
                    },
                    link_local: if v6 { ll.map(Ipv6Addr::from) } else { None },
                    as_path: path,
                    local_pref: lp,
                    communities,
                    large_communities: large
                        .into_iter()
                        .map(|(global, local1, local2)| LargeCommunity {
                            global,
                            local1,
                            local2,
                        })
                        .collect(),
                };
                let mut u = Update::announce(&a, &caps);
                for (kind, value) in unknown {
                    // Optional transitive, partial: an attribute passed along unrecognised.
                    u.attributes.push(Attribute {
                        flags: 0xe0,
                        value: AttributeValue::Unknown { kind, value },
                    });
                }
                u
            },
        )
}

fn message(caps: SessionCaps) -> impl Strategy<Value = Message> {
    prop_oneof![
        open().prop_map(Message::Open),
        update(caps).prop_map(Message::Update),
        proptest::collection::vec(prop_oneof![v4_prefix(), v6_prefix()], 0..30)
            .prop_map(|p| Message::Update(Update::withdraw(&p))),
        (
            any::<u8>(),
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(c, s, data)| {
                Message::Notification(Notification {
                    code: ErrorCode::from_bytes(c, s),
                    data,
                })
            }),
        Just(Message::Keepalive),
        (family(), any::<u8>())
            .prop_map(|(family, subtype)| Message::RouteRefresh(RouteRefresh { family, subtype })),
    ]
}

/// Clears the extended-length flag, which encode sets on values over 255 octets (and
/// decode then keeps, for byte-exactness).
fn without_extended_length(mut msg: Message) -> Message {
    if let Message::Update(u) = &mut msg {
        for a in &mut u.attributes {
            a.flags &= !bgp_proto::packet::attribute::FLAG_EXTENDED_LENGTH;
        }
    }
    msg
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn generated_messages_round_trip(
        (caps, msg) in caps().prop_flat_map(|c| (Just(c), message(c)))
    ) {
        let mut buf = BytesMut::new();
        match bgp_proto::encode(&msg, &caps, &mut buf) {
            Ok(()) => {
                let back = bgp_proto::decode(&mut buf, &caps).unwrap().unwrap();
                prop_assert_eq!(without_extended_length(back), without_extended_length(msg));
                prop_assert!(buf.is_empty());
            }
            // Only size limits may refuse a generated message.
            Err(bgp_proto::Error::TooLong(_)) | Err(bgp_proto::Error::Unencodable(_)) => {}
            Err(e) => prop_assert!(false, "{e}"),
        }
    }
}
