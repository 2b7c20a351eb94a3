//! The BFD control packet (RFC 5880 §4.1): parsed from and emitted back to the exact
//! bytes.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Vers |  Diag   |Sta|P|F|C|A|D|M|  Detect Mult  |    Length     |
//! |                       My Discriminator                        |
//! |                      Your Discriminator                       |
//! |                    Desired Min TX Interval                    |
//! |                   Required Min RX Interval                    |
//! |                 Required Min Echo RX Interval                 |
//! |   Auth Type   |   Auth Len    |    Authentication Data...     |  (if A)
//! ```
//!
//! [`Packet::decode`] applies every reception check of RFC 5880 §6.8.6 that the packet
//! alone can answer (version, lengths, detect multiplier, M bit, discriminators); the
//! checks that need the session (which discriminator is ours, whether authentication is
//! in use) are [`crate::Session::receive`]'s.

use crate::Error;

/// UDP destination port of single-hop BFD control packets (RFC 5881 §4).
pub const CONTROL_PORT: u16 = 3784;
/// The source ports a single-hop sender picks from (RFC 5881 §4).
pub const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// The IPv4 TTL / IPv6 hop limit of every single-hop packet, and the only one a
/// receiver accepts (GTSM, RFC 5881 §5).
pub const TTL: u8 = 255;
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Length of the mandatory section, without authentication.
pub const MANDATORY_LEN: usize = 24;

/// A session state as carried in the `Sta` field (RFC 5880 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// 0: administratively held down.
    AdminDown,
    /// 1: down, or just created.
    Down,
    /// 2: the remote end is heard, the three-way handshake is in progress.
    Init,
    /// 3: the session is up.
    Up,
}

impl State {
    /// The two-bit wire value.
    pub fn code(self) -> u8 {
        match self {
            State::AdminDown => 0,
            State::Down => 1,
            State::Init => 2,
            State::Up => 3,
        }
    }

    /// The state of a two-bit wire value (higher bits are ignored).
    pub fn from_code(code: u8) -> State {
        match code & 0b11 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }
}

/// The `Diag` field: why the sender's session last changed state (RFC 5880 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Diagnostic {
    /// 0.
    NoDiagnostic,
    /// 1: no packet within the detection time.
    ControlDetectionTimeExpired,
    /// 2.
    EchoFunctionFailed,
    /// 3: the neighbour said Down or AdminDown.
    NeighborSignaledSessionDown,
    /// 4.
    ForwardingPlaneReset,
    /// 5.
    PathDown,
    /// 6.
    ConcatenatedPathDown,
    /// 7: taken down by configuration.
    AdministrativelyDown,
    /// 8.
    ReverseConcatenatedPathDown,
    /// 9..=31: reserved values, kept so the packet re-encodes identically.
    Reserved(u8),
}

impl Diagnostic {
    /// The five-bit wire value.
    pub fn code(self) -> u8 {
        match self {
            Diagnostic::NoDiagnostic => 0,
            Diagnostic::ControlDetectionTimeExpired => 1,
            Diagnostic::EchoFunctionFailed => 2,
            Diagnostic::NeighborSignaledSessionDown => 3,
            Diagnostic::ForwardingPlaneReset => 4,
            Diagnostic::PathDown => 5,
            Diagnostic::ConcatenatedPathDown => 6,
            Diagnostic::AdministrativelyDown => 7,
            Diagnostic::ReverseConcatenatedPathDown => 8,
            Diagnostic::Reserved(code) => code & 0x1f,
        }
    }

    /// The diagnostic of a five-bit wire value (higher bits are ignored).
    pub fn from_code(code: u8) -> Diagnostic {
        match code & 0x1f {
            0 => Diagnostic::NoDiagnostic,
            1 => Diagnostic::ControlDetectionTimeExpired,
            2 => Diagnostic::EchoFunctionFailed,
            3 => Diagnostic::NeighborSignaledSessionDown,
            4 => Diagnostic::ForwardingPlaneReset,
            5 => Diagnostic::PathDown,
            6 => Diagnostic::ConcatenatedPathDown,
            7 => Diagnostic::AdministrativelyDown,
            8 => Diagnostic::ReverseConcatenatedPathDown,
            other => Diagnostic::Reserved(other),
        }
    }
}

bitflags::bitflags! {
    /// The six flag bits after `Sta` (RFC 5880 §4.1).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Flags: u8 {
        /// P: the sender asks for a verification (poll sequence).
        const POLL = 0x20;
        /// F: the answer to a poll.
        const FINAL = 0x10;
        /// C: the sender's BFD does not share fate with its control plane.
        const CONTROL_PLANE_INDEPENDENT = 0x08;
        /// A: an authentication section follows. [`Packet::encode`] derives it from
        /// [`Packet::authentication`].
        const AUTHENTICATION = 0x04;
        /// D: the sender wishes to run Demand mode.
        const DEMAND = 0x02;
        /// M: reserved for multipoint; a packet with it is discarded.
        const MULTIPOINT = 0x01;
    }
}

/// The `Auth Type` of an authentication section (RFC 5880 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthType {
    /// 1.
    SimplePassword,
    /// 2.
    KeyedMd5,
    /// 3.
    MeticulousKeyedMd5,
    /// 4.
    KeyedSha1,
    /// 5.
    MeticulousKeyedSha1,
    /// 0 and 6..=255: reserved.
    Other(u8),
}

impl AuthType {
    /// The wire value.
    pub fn code(self) -> u8 {
        match self {
            AuthType::SimplePassword => 1,
            AuthType::KeyedMd5 => 2,
            AuthType::MeticulousKeyedMd5 => 3,
            AuthType::KeyedSha1 => 4,
            AuthType::MeticulousKeyedSha1 => 5,
            AuthType::Other(code) => code,
        }
    }

    /// The type of a wire value.
    pub fn from_code(code: u8) -> AuthType {
        match code {
            1 => AuthType::SimplePassword,
            2 => AuthType::KeyedMd5,
            3 => AuthType::MeticulousKeyedMd5,
            4 => AuthType::KeyedSha1,
            5 => AuthType::MeticulousKeyedSha1,
            other => AuthType::Other(other),
        }
    }
}

/// An authentication section, kept as received so it can be reported (this crate does
/// not verify it, and a session discards packets that carry one).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Authentication {
    auth_type: AuthType,
    data: Vec<u8>,
}

/// The most authentication data a packet can carry: `Length` is one byte.
pub const MAX_AUTH_DATA: usize = 255 - MANDATORY_LEN - 2;

impl Authentication {
    /// A section of `auth_type` whose bytes after `Auth Type` and `Auth Len` are `data`
    /// (for the keyed types: key ID, reserved, sequence number, digest); `None` when
    /// `data` is longer than [`MAX_AUTH_DATA`].
    pub fn new(auth_type: AuthType, data: Vec<u8>) -> Option<Authentication> {
        (data.len() <= MAX_AUTH_DATA).then_some(Authentication { auth_type, data })
    }

    /// The `Auth Type` field.
    pub fn auth_type(&self) -> AuthType {
        self.auth_type
    }

    /// The bytes after `Auth Type` and `Auth Len`.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The `Auth Key ID` (the first data byte for every defined type).
    pub fn key_id(&self) -> Option<u8> {
        self.data.first().copied()
    }

    /// The sequence number of the keyed MD5 / SHA1 types (RFC 5880 §4.3, §4.4).
    pub fn sequence_number(&self) -> Option<u32> {
        match self.auth_type {
            AuthType::KeyedMd5
            | AuthType::MeticulousKeyedMd5
            | AuthType::KeyedSha1
            | AuthType::MeticulousKeyedSha1 => {
                let bytes: [u8; 4] = self.data.get(2..6)?.try_into().ok()?;
                Some(u32::from_be_bytes(bytes))
            }
            _ => None,
        }
    }

    /// The `Auth Len` field: the section's whole length, type and length bytes included.
    pub fn wire_len(&self) -> usize {
        2 + self.data.len()
    }
}

/// A BFD control packet. Intervals are in microseconds, as on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Packet {
    /// `Diag`.
    pub diagnostic: Diagnostic,
    /// `Sta`.
    pub state: State,
    /// P, F, C, D (and M) as received; A is derived from [`Packet::authentication`]
    /// when encoding.
    pub flags: Flags,
    /// `Detect Mult`.
    pub detect_mult: u8,
    /// `My Discriminator`: the sender's own, never zero.
    pub my_discriminator: u32,
    /// `Your Discriminator`: the receiver's as the sender knows it, zero until then.
    pub your_discriminator: u32,
    /// `Desired Min TX Interval` in µs.
    pub desired_min_tx_us: u32,
    /// `Required Min RX Interval` in µs; zero asks the peer not to send periodically.
    pub required_min_rx_us: u32,
    /// `Required Min Echo RX Interval` in µs; zero when the sender does not loop echo
    /// packets back.
    pub required_min_echo_rx_us: u32,
    /// The authentication section, present exactly when the A bit is set.
    pub authentication: Option<Authentication>,
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

impl Packet {
    /// Parses a control packet from a UDP payload, applying the reception checks of
    /// RFC 5880 §6.8.6 that need no session state. Bytes after the `Length` field's
    /// end are ignored, as the RFC allows the payload to be longer.
    pub fn decode(payload: &[u8]) -> Result<Packet, Error> {
        if payload.len() < MANDATORY_LEN {
            return Err(Error::Truncated {
                needed: MANDATORY_LEN,
                available: payload.len(),
            });
        }
        let version = payload[0] >> 5;
        if version != VERSION {
            return Err(Error::BadVersion(version));
        }
        let flags = Flags::from_bits_retain(payload[1] & 0x3f);
        let auth = flags.contains(Flags::AUTHENTICATION);
        let length = payload[3];
        let min_len = if auth {
            MANDATORY_LEN + 2
        } else {
            MANDATORY_LEN
        };
        // Without authentication nothing may follow the mandatory section: a longer
        // Length would leave bytes that re-encoding could not reproduce.
        if usize::from(length) < min_len || (!auth && usize::from(length) != MANDATORY_LEN) {
            return Err(Error::BadLength { length, auth });
        }
        if usize::from(length) > payload.len() {
            return Err(Error::Truncated {
                needed: usize::from(length),
                available: payload.len(),
            });
        }
        let packet = &payload[..usize::from(length)];
        let detect_mult = packet[2];
        if detect_mult == 0 {
            return Err(Error::ZeroDetectMult);
        }
        if flags.contains(Flags::MULTIPOINT) {
            return Err(Error::Multipoint);
        }
        if flags.contains(Flags::POLL | Flags::FINAL) {
            return Err(Error::PollAndFinal);
        }
        let state = State::from_code(packet[1] >> 6);
        let my_discriminator = be32(packet, 4);
        if my_discriminator == 0 {
            return Err(Error::ZeroMyDiscriminator);
        }
        let your_discriminator = be32(packet, 8);
        if your_discriminator == 0 && matches!(state, State::Init | State::Up) {
            return Err(Error::ZeroYourDiscriminator(state));
        }
        let authentication = if auth {
            let section = &packet[MANDATORY_LEN..];
            let auth_len = section[1];
            if usize::from(auth_len) != section.len() {
                return Err(Error::BadAuthLength {
                    auth_len,
                    room: section.len(),
                });
            }
            Some(Authentication {
                auth_type: AuthType::from_code(section[0]),
                data: section[2..].to_vec(),
            })
        } else {
            None
        };
        Ok(Packet {
            diagnostic: Diagnostic::from_code(packet[0]),
            state,
            flags: flags - Flags::AUTHENTICATION,
            detect_mult,
            my_discriminator,
            your_discriminator,
            desired_min_tx_us: be32(packet, 12),
            required_min_rx_us: be32(packet, 16),
            required_min_echo_rx_us: be32(packet, 20),
            authentication,
        })
    }

    /// The encoded length: the `Length` field.
    pub fn len(&self) -> usize {
        MANDATORY_LEN
            + self
                .authentication
                .as_ref()
                .map_or(0, Authentication::wire_len)
    }

    /// Always false: a control packet has at least its mandatory section (present
    /// because `len` without `is_empty` trips a lint).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Appends the packet's bytes to `out`. The A bit is set exactly when there is an
    /// authentication section; the other flags are written as they are.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut flags = self.flags - Flags::AUTHENTICATION;
        if self.authentication.is_some() {
            flags |= Flags::AUTHENTICATION;
        }
        // len() is at most 24 + 2 + MAX_AUTH_DATA = 255 (Authentication::new holds it).
        let length = u8::try_from(self.len()).unwrap_or(u8::MAX);
        out.push((VERSION << 5) | self.diagnostic.code());
        out.push((self.state.code() << 6) | flags.bits());
        out.push(self.detect_mult);
        out.push(length);
        for field in [
            self.my_discriminator,
            self.your_discriminator,
            self.desired_min_tx_us,
            self.required_min_rx_us,
            self.required_min_echo_rx_us,
        ] {
            out.extend_from_slice(&field.to_be_bytes());
        }
        if let Some(auth) = &self.authentication {
            out.push(auth.auth_type.code());
            out.push(u8::try_from(auth.wire_len()).unwrap_or(u8::MAX));
            out.extend_from_slice(&auth.data);
        }
    }

    /// The packet's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        self.encode_into(&mut out);
        out
    }

    /// Whether the P bit is set.
    pub fn poll(&self) -> bool {
        self.flags.contains(Flags::POLL)
    }

    /// Whether the F bit is set.
    pub fn final_bit(&self) -> bool {
        self.flags.contains(Flags::FINAL)
    }

    /// Whether the D bit is set.
    pub fn demand(&self) -> bool {
        self.flags.contains(Flags::DEMAND)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Packet {
        Packet {
            diagnostic: Diagnostic::NoDiagnostic,
            state: State::Down,
            flags: Flags::empty(),
            detect_mult: 3,
            my_discriminator: 0x0102_0304,
            your_discriminator: 0,
            desired_min_tx_us: 1_000_000,
            required_min_rx_us: 300_000,
            required_min_echo_rx_us: 0,
            authentication: None,
        }
    }

    #[test]
    fn encodes_the_rfc_layout() {
        let bytes = sample().encode();
        assert_eq!(
            bytes,
            [
                0x20, 0x40, 3, 24, 1, 2, 3, 4, 0, 0, 0, 0, 0x00, 0x0f, 0x42, 0x40, 0x00, 0x04,
                0x93, 0xe0, 0, 0, 0, 0
            ]
        );
        assert_eq!(Packet::decode(&bytes), Ok(sample()));
    }

    #[test]
    fn keyed_md5_section_is_kept_and_reported() {
        let mut packet = sample();
        let mut data = vec![7, 0, 0, 0, 0, 42];
        data.extend_from_slice(&[0xaa; 16]);
        packet.authentication = Authentication::new(AuthType::KeyedMd5, data);
        let bytes = packet.encode();
        assert_eq!(bytes.len(), 24 + 24);
        assert_eq!(bytes[1] & 0x04, 0x04, "A bit");
        assert_eq!(bytes[3], 48);
        let back = Packet::decode(&bytes).unwrap();
        let auth = back.authentication.as_ref().unwrap();
        assert_eq!(auth.key_id(), Some(7));
        assert_eq!(auth.sequence_number(), Some(42));
        assert_eq!(back, packet);
    }

    #[test]
    fn reception_checks_have_their_own_errors() {
        let good = sample().encode();
        let with = |at: usize, value: u8| {
            let mut bytes = good.clone();
            bytes[at] = value;
            Packet::decode(&bytes)
        };
        assert_eq!(
            Packet::decode(&good[..23]),
            Err(Error::Truncated {
                needed: 24,
                available: 23
            })
        );
        assert_eq!(with(0, 0x40), Err(Error::BadVersion(2)));
        assert_eq!(
            with(3, 23),
            Err(Error::BadLength {
                length: 23,
                auth: false
            })
        );
        assert_eq!(
            with(3, 25),
            Err(Error::BadLength {
                length: 25,
                auth: false
            })
        );
        assert_eq!(with(2, 0), Err(Error::ZeroDetectMult));
        assert_eq!(with(1, 0x41), Err(Error::Multipoint));
        assert_eq!(with(1, 0x70), Err(Error::PollAndFinal));
        assert_eq!(with(1, 0xc0), Err(Error::ZeroYourDiscriminator(State::Up)));
        let mut zero_mine = good.clone();
        zero_mine[4..8].fill(0);
        assert_eq!(Packet::decode(&zero_mine), Err(Error::ZeroMyDiscriminator));
        // A set: the section must be there and fill the rest of Length exactly.
        assert_eq!(
            with(1, 0x44),
            Err(Error::BadLength {
                length: 24,
                auth: true
            })
        );
        let mut auth = good.clone();
        auth[1] = 0x44;
        auth[3] = 28;
        auth.extend_from_slice(&[1, 5, 1, b'x']);
        assert_eq!(
            Packet::decode(&auth),
            Err(Error::BadAuthLength {
                auth_len: 5,
                room: 4
            })
        );
        auth[25] = 4;
        let simple = Packet::decode(&auth).unwrap().authentication.unwrap();
        assert_eq!(simple.auth_type(), AuthType::SimplePassword);
        assert_eq!(simple.data(), [1, b'x']);
    }

    #[test]
    fn trailing_payload_after_length_is_ignored() {
        let mut bytes = sample().encode();
        bytes.extend_from_slice(&[0xff; 8]);
        assert_eq!(Packet::decode(&bytes), Ok(sample()));
    }
}
