//! The crate's one error type.

use crate::packet::State;

/// Why a BFD control packet was discarded or a session could not be configured.
///
/// The packet variants follow the reception checks of RFC 5880 §6.8.6 in order, so a
/// caller can count discards per reason (as routers' `show bfd` counters do).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Fewer bytes than the mandatory 24-byte section, or than the `Length` field says.
    #[error("truncated BFD control packet: {available} bytes, {needed} needed")]
    Truncated {
        /// Bytes the packet needs (24, or its `Length` field).
        needed: usize,
        /// Bytes that were there.
        available: usize,
    },
    /// The version field is not 1.
    #[error("unsupported BFD version {0}")]
    BadVersion(u8),
    /// The `Length` field is below the minimum (24, or 26 with the A bit), or leaves room
    /// for something other than exactly the authentication section.
    #[error("bad BFD length field {length} (authentication present: {auth})")]
    BadLength {
        /// The `Length` field.
        length: u8,
        /// Whether the A bit is set.
        auth: bool,
    },
    /// The authentication section's own length does not fit the packet's `Length`.
    #[error(
        "bad BFD authentication section: auth length {auth_len}, {room} bytes after the mandatory section"
    )]
    BadAuthLength {
        /// The section's `Auth Len` field.
        auth_len: u8,
        /// Bytes between the mandatory section and the packet's `Length`.
        room: usize,
    },
    /// `Detect Mult` is zero.
    #[error("BFD detect multiplier is zero")]
    ZeroDetectMult,
    /// The Multipoint (M) bit is set: reserved for point-to-multipoint extensions.
    #[error("BFD multipoint bit set")]
    Multipoint,
    /// Both Poll and Final are set, which no conforming sender does.
    #[error("BFD poll and final bits both set")]
    PollAndFinal,
    /// `My Discriminator` is zero.
    #[error("BFD my discriminator is zero")]
    ZeroMyDiscriminator,
    /// `Your Discriminator` is zero while the sender's state is Init or Up.
    #[error("BFD your discriminator is zero in state {0:?}")]
    ZeroYourDiscriminator(State),
    /// `Your Discriminator` names another session.
    #[error("BFD your discriminator {got} does not match the local discriminator {local}")]
    DiscriminatorMismatch {
        /// The local session's discriminator.
        local: u32,
        /// The packet's `Your Discriminator`.
        got: u32,
    },
    /// The A bit is set: this implementation does not authenticate, so per §6.8.6 such a
    /// packet is discarded (a session with authentication configured would be needed).
    #[error("BFD authentication (type {0}) is not supported")]
    AuthenticationNotSupported(u8),
    /// A session configuration value is out of range.
    #[error("invalid BFD session configuration: {0}")]
    InvalidConfig(&'static str),
}
