//! The packets FRR's bfdd sent in the kernel lab (`tests/frr_lab.rs`, see
//! `tests/fixtures/README.md`): each parses, re-encodes to its exact bytes, and drives
//! our session through the same steps as on the wire.

use std::num::NonZeroU32;
use std::path::Path;
use std::time::{Duration, Instant};

use bfd_proto::{Action, Config, Diagnostic, Flags, Packet, Session, State};

/// bfdd's discriminator in the captured run, and ours.
const BFDD: u32 = 0x6ec0_a51b;
const OURS: u32 = 0x0bfd_0001;

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("frr-bfdd-{name}.bin"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn packet(name: &str) -> Packet {
    Packet::decode(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn sends(actions: &[Action]) -> Vec<&Packet> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(p) => Some(p),
            Action::StateChanged { .. } => None,
        })
        .collect()
}

#[test]
fn every_fixture_reencodes_byte_identically() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bin") {
            let bytes = std::fs::read(&path).unwrap();
            let packet =
                Packet::decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(packet.encode(), bytes, "{}", path.display());
            assert_eq!(packet.len(), bytes.len());
            count += 1;
        }
    }
    assert_eq!(count, 7, "fixtures in {}", dir.display());
}

#[test]
fn fixtures_carry_what_bfdd_said() {
    let down = packet("down");
    assert_eq!(down.state, State::Down);
    assert_eq!(down.diagnostic, Diagnostic::NoDiagnostic);
    assert_eq!((down.my_discriminator, down.your_discriminator), (BFDD, 0));
    assert_eq!(down.detect_mult, 3);
    // Not Up: one second both ways (RFC 5880 §6.8.3), echo offered at 50 ms.
    assert_eq!(down.desired_min_tx_us, 1_000_000);
    assert_eq!(down.required_min_rx_us, 1_000_000);
    assert_eq!(down.required_min_echo_rx_us, 50_000);
    assert_eq!(down.flags, Flags::empty());
    assert!(down.authentication.is_none());

    let init = packet("init");
    assert_eq!(init.state, State::Init);
    assert_eq!(init.your_discriminator, OURS);

    let up = packet("up");
    assert_eq!(up.state, State::Up);
    assert_eq!(
        (up.desired_min_tx_us, up.required_min_rx_us),
        (300_000, 300_000)
    );
    assert_eq!(up.flags, Flags::empty());

    assert_eq!(packet("up-poll").flags, Flags::POLL);
    assert_eq!(packet("up-final").flags, Flags::FINAL);

    let expired = packet("down-detect-expired");
    assert_eq!(expired.state, State::Down);
    assert_eq!(expired.diagnostic, Diagnostic::ControlDetectionTimeExpired);
    assert_eq!(expired.your_discriminator, 0, "bfdd forgot us");

    // `shutdown` of the peer: AdminDown, and (unlike RFC 5880 §6.8.16's suggestion of a
    // reason) bfdd 8.4 leaves the diagnostic at 0.
    let admin = packet("admin-down");
    assert_eq!(admin.state, State::AdminDown);
    assert_eq!(admin.diagnostic, Diagnostic::NoDiagnostic);
    assert_eq!(admin.your_discriminator, OURS);
}

/// Replays the capture into a fresh session with the discriminator we had in the lab.
#[test]
fn replayed_capture_drives_our_session_as_in_the_lab() {
    let t0 = Instant::now();
    let ms = |n| t0 + Duration::from_millis(n);
    let mut s = Session::new(Config::default(), NonZeroU32::new(OURS).unwrap(), t0).unwrap();
    let first = s.poll_timers(t0);
    assert_eq!(sends(&first)[0].state, State::Down);

    let a = s.receive(&packet("down"), ms(10)).unwrap();
    assert_eq!(
        a[0],
        Action::StateChanged {
            from: State::Down,
            to: State::Init,
            diag: Diagnostic::NoDiagnostic
        }
    );
    let init = sends(&a)[0];
    assert_eq!((init.state, init.your_discriminator), (State::Init, BFDD));
    assert_eq!(init.desired_min_tx_us, 1_000_000, "not Up yet: slow rate");

    let a = s.receive(&packet("init"), ms(20)).unwrap();
    assert_eq!(s.state(), State::Up);
    let up = sends(&a)[0];
    assert_eq!(up.state, State::Up);
    // Up: our 300 ms rates, announced with a poll sequence.
    assert!(up.poll());
    assert_eq!(up.desired_min_tx_us, 300_000);
    assert!(s.poll_in_progress());

    // bfdd's Poll is answered at once with Final and no Poll.
    let a = s.receive(&packet("up-poll"), ms(30)).unwrap();
    let fin = sends(&a);
    assert_eq!(fin.len(), 1);
    assert_eq!(fin[0].flags, Flags::FINAL);
    assert_eq!(fin[0].state, State::Up);

    // bfdd's Final ends our poll sequence; periodic packets stop carrying P.
    assert!(s.receive(&packet("up-final"), ms(40)).unwrap().is_empty());
    assert!(!s.poll_in_progress());
    assert_eq!(s.detection_time(), Some(Duration::from_millis(900)));
    let next = s.next_deadline().unwrap();
    let periodic = s.poll_timers(next);
    assert_eq!(sends(&periodic)[0].flags, Flags::empty());

    assert!(s.receive(&packet("up"), ms(300)).unwrap().is_empty());
    assert_eq!(s.state(), State::Up);

    // An AdminDown peer takes us down, and its further AdminDown packets start no
    // handshake.
    let mut admin = s.clone();
    let a = admin.receive(&packet("admin-down"), ms(350)).unwrap();
    assert_eq!(
        a[0],
        Action::StateChanged {
            from: State::Up,
            to: State::Down,
            diag: Diagnostic::NeighborSignaledSessionDown
        }
    );
    assert!(
        admin
            .receive(&packet("admin-down"), ms(1350))
            .unwrap()
            .is_empty()
    );
    assert_eq!(admin.state(), State::Down);

    // bfdd's Down (it timed us out) takes us down with "neighbor signaled session down".
    let a = s.receive(&packet("down-detect-expired"), ms(400)).unwrap();
    assert_eq!(
        a[0],
        Action::StateChanged {
            from: State::Up,
            to: State::Down,
            diag: Diagnostic::NeighborSignaledSessionDown
        }
    );
    let down = sends(&a)[0];
    assert_eq!(down.state, State::Down);
    assert_eq!(down.diagnostic, Diagnostic::NeighborSignaledSessionDown);
    assert_eq!(down.desired_min_tx_us, 1_000_000, "back to the slow rate");
}

#[test]
fn a_fixture_for_another_session_is_discarded() {
    let t0 = Instant::now();
    let mut s = Session::new(Config::default(), NonZeroU32::new(OURS + 1).unwrap(), t0).unwrap();
    assert_eq!(
        s.receive(&packet("up"), t0),
        Err(bfd_proto::Error::DiscriminatorMismatch {
            local: OURS + 1,
            got: OURS
        })
    );
    assert_eq!(s.state(), State::Down);
    assert_eq!(s.remote_discriminator(), 0);
}
