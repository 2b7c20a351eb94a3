//! Property tests: no input bytes make the parser (or a session fed what it accepts)
//! panic, what it accepts re-encodes to the same bytes, and every well-formed packet
//! round-trips.

use std::num::NonZeroU32;
use std::path::Path;
use std::time::{Duration, Instant};

use bfd_proto::{AuthType, Authentication, Config, Diagnostic, Flags, Packet, Session, State};
use proptest::prelude::*;

fn fixtures() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    out.sort();
    assert!(!out.is_empty());
    out
}

/// What `decode` accepted must be what `encode` gives back, for the bytes up to `Length`.
fn check_decode(bytes: &[u8]) -> Option<Packet> {
    let packet = Packet::decode(bytes).ok()?;
    assert_eq!(packet.encode(), bytes[..packet.len()], "{packet:?}");
    assert_eq!(usize::from(bytes[3]), packet.len());
    Some(packet)
}

fn state() -> impl Strategy<Value = State> {
    (0u8..4).prop_map(State::from_code)
}

fn packet() -> impl Strategy<Value = Packet> {
    let auth = proptest::option::of(
        (
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 0..=bfd_proto::packet::MAX_AUTH_DATA),
        )
            .prop_map(|(t, d)| Authentication::new(AuthType::from_code(t), d).unwrap()),
    );
    (
        (0u8..32).prop_map(Diagnostic::from_code),
        state(),
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        1u8..,
        1u32..,
        1u32..,
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        auth,
    )
        .prop_map(
            |(
                diagnostic,
                state,
                (p, f, c, d),
                detect_mult,
                my,
                your,
                tx,
                rx,
                echo,
                authentication,
            )| {
                let mut flags = Flags::empty();
                flags.set(Flags::POLL, p && !f);
                flags.set(Flags::FINAL, f);
                flags.set(Flags::CONTROL_PLANE_INDEPENDENT, c);
                flags.set(Flags::DEMAND, d);
                Packet {
                    diagnostic,
                    state,
                    flags,
                    detect_mult,
                    my_discriminator: my,
                    your_discriminator: your,
                    desired_min_tx_us: tx,
                    required_min_rx_us: rx,
                    required_min_echo_rx_us: echo,
                    authentication,
                }
            },
        )
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        check_decode(&bytes);
    }

    #[test]
    fn mutated_fixtures_never_panic(
        pick in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        tail in proptest::collection::vec(any::<u8>(), 0..40),
        cut in any::<prop::sample::Index>(),
    ) {
        let all = fixtures();
        let mut bytes = all[pick.index(all.len())].clone();
        bytes.extend_from_slice(&tail);
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let keep = cut.index(bytes.len() + 1);
        check_decode(&bytes);
        check_decode(&bytes[..keep]);
    }

    #[test]
    fn well_formed_packets_round_trip(p in packet()) {
        let bytes = p.encode();
        prop_assert_eq!(bytes.len(), p.len());
        prop_assert_eq!(Packet::decode(&bytes), Ok(p));
    }

    /// A session fed any accepted packets and timer runs, in any order, never panics and
    /// keeps its own invariants.
    #[test]
    fn sessions_survive_any_accepted_packets(
        steps in proptest::collection::vec((proptest::option::of(packet()), 0u64..2_000, any::<bool>()), 1..60),
        passive in any::<bool>(),
    ) {
        let t0 = Instant::now();
        let config = Config { passive, ..Config::default() };
        let mut s = Session::new(config, NonZeroU32::new(42).unwrap(), t0).unwrap();
        let mut now = t0;
        for (packet, advance, aimed) in steps {
            now += Duration::from_millis(advance);
            let actions = match packet {
                Some(mut p) => {
                    if aimed && p.your_discriminator != 0 {
                        p.your_discriminator = 42;
                    }
                    s.receive(&p, now).unwrap_or_default()
                }
                None => s.poll_timers(now),
            };
            for action in actions {
                if let bfd_proto::Action::Send(p) = action {
                    prop_assert_eq!(p.my_discriminator, 42);
                    prop_assert!(!(p.poll() && p.final_bit()));
                    prop_assert_eq!(Packet::decode(&p.encode()), Ok(p.clone()));
                    if p.state != State::Up {
                        prop_assert!(p.desired_min_tx_us >= 1_000_000);
                    }
                }
            }
            if let Some(d) = s.next_deadline() {
                prop_assert!(d + Duration::from_secs(3600) > now);
            }
        }
    }
}
