//! NOTIFICATION (RFC 4271 §4.5) with its error codes and subcodes as enums.

use bytes::{BufMut, BytesMut};

/// Declares a subcode enum with named values and an `Other(u8)` for the rest, so every
/// received value survives a decode/encode round trip.
macro_rules! subcode_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A value without a name here.
            Other(u8),
        }

        impl From<u8> for $name {
            fn from(v: u8) -> Self {
                match v {
                    $($value => $name::$variant,)*
                    v => $name::Other(v),
                }
            }
        }

        impl From<$name> for u8 {
            fn from(v: $name) -> u8 {
                match v {
                    $($name::$variant => $value,)*
                    $name::Other(v) => v,
                }
            }
        }
    };
}

subcode_enum!(
    /// Message Header Error subcodes (code 1).
    HeaderError {
        /// 0: no specific subcode.
        Unspecific = 0,
        /// 1: the marker is not all ones.
        ConnectionNotSynchronized = 1,
        /// 2: the length field is out of range for the message type.
        BadMessageLength = 2,
        /// 3: an unknown message type.
        BadMessageType = 3,
    }
);

subcode_enum!(
    /// OPEN Message Error subcodes (code 2).
    OpenError {
        /// 0: no specific subcode.
        Unspecific = 0,
        /// 1: the version is not 4.
        UnsupportedVersionNumber = 1,
        /// 2: the peer's AS is not the one configured.
        BadPeerAs = 2,
        /// 3: the BGP identifier is invalid.
        BadBgpIdentifier = 3,
        /// 4: an optional parameter is not supported.
        UnsupportedOptionalParameter = 4,
        /// 6: the hold time is 1 or 2 seconds.
        UnacceptableHoldTime = 6,
        /// 7: a required capability is missing (RFC 5492).
        UnsupportedCapability = 7,
        /// 11: the role capability conflicts (RFC 9234).
        RoleMismatch = 11,
    }
);

subcode_enum!(
    /// UPDATE Message Error subcodes (code 3).
    UpdateError {
        /// 0: no specific subcode.
        Unspecific = 0,
        /// 1: the attribute list is malformed.
        MalformedAttributeList = 1,
        /// 2: a well-known attribute is not recognised.
        UnrecognizedWellKnownAttribute = 2,
        /// 3: a well-known mandatory attribute is missing.
        MissingWellKnownAttribute = 3,
        /// 4: an attribute's flags conflict with its type.
        AttributeFlagsError = 4,
        /// 5: an attribute's length is wrong for its type.
        AttributeLengthError = 5,
        /// 6: ORIGIN has an undefined value.
        InvalidOriginAttribute = 6,
        /// 8: NEXT_HOP is not a valid address.
        InvalidNextHopAttribute = 8,
        /// 9: an optional attribute is malformed.
        OptionalAttributeError = 9,
        /// 10: the NLRI field is malformed.
        InvalidNetworkField = 10,
        /// 11: AS_PATH is malformed.
        MalformedAsPath = 11,
    }
);

subcode_enum!(
    /// Cease subcodes (code 6, RFC 4486 and RFC 8203).
    CeaseError {
        /// 0: no specific subcode.
        Unspecific = 0,
        /// 1: the peer's prefix limit was reached.
        MaximumPrefixes = 1,
        /// 2: the session was shut down by its administrator.
        AdministrativeShutdown = 2,
        /// 3: the peer was removed from the configuration.
        PeerDeconfigured = 3,
        /// 4: the session was reset by its administrator.
        AdministrativeReset = 4,
        /// 5: the connection was rejected.
        ConnectionRejected = 5,
        /// 6: another configuration change.
        OtherConfigurationChange = 6,
        /// 7: the connection lost a collision (RFC 4271 §6.8).
        ConnectionCollisionResolution = 7,
        /// 8: out of resources.
        OutOfResources = 8,
        /// 9: a hard reset (RFC 8538).
        HardReset = 9,
        /// 10: BFD said the path is down (RFC 9384).
        BfdDown = 10,
    }
);

/// A NOTIFICATION's error code with its subcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 1: Message Header Error.
    MessageHeader(HeaderError),
    /// 2: OPEN Message Error.
    Open(OpenError),
    /// 3: UPDATE Message Error.
    Update(UpdateError),
    /// 4: Hold Timer Expired (subcode 0 normally).
    HoldTimerExpired(u8),
    /// 5: Finite State Machine Error (subcodes of RFC 6608).
    Fsm(u8),
    /// 6: Cease.
    Cease(CeaseError),
    /// 7: ROUTE-REFRESH Message Error (RFC 7313).
    RouteRefresh(u8),
    /// Any other code.
    Other {
        /// The error code.
        code: u8,
        /// The subcode.
        subcode: u8,
    },
}

impl ErrorCode {
    /// The code and subcode octets.
    pub fn to_bytes(self) -> (u8, u8) {
        match self {
            ErrorCode::MessageHeader(s) => (1, s.into()),
            ErrorCode::Open(s) => (2, s.into()),
            ErrorCode::Update(s) => (3, s.into()),
            ErrorCode::HoldTimerExpired(s) => (4, s),
            ErrorCode::Fsm(s) => (5, s),
            ErrorCode::Cease(s) => (6, s.into()),
            ErrorCode::RouteRefresh(s) => (7, s),
            ErrorCode::Other { code, subcode } => (code, subcode),
        }
    }

    /// The code for the code and subcode octets.
    pub fn from_bytes(code: u8, subcode: u8) -> ErrorCode {
        match code {
            1 => ErrorCode::MessageHeader(subcode.into()),
            2 => ErrorCode::Open(subcode.into()),
            3 => ErrorCode::Update(subcode.into()),
            4 => ErrorCode::HoldTimerExpired(subcode),
            5 => ErrorCode::Fsm(subcode),
            6 => ErrorCode::Cease(subcode.into()),
            7 => ErrorCode::RouteRefresh(subcode),
            code => ErrorCode::Other { code, subcode },
        }
    }
}

/// A NOTIFICATION message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Notification {
    /// The error code and subcode.
    pub code: ErrorCode,
    /// The diagnostic data (for a Cease with subcode 2 or 4, RFC 8203's shutdown
    /// communication: a length octet and UTF-8 text).
    pub data: Vec<u8>,
}

impl Notification {
    /// A NOTIFICATION without data.
    pub fn new(code: ErrorCode) -> Notification {
        Notification {
            code,
            data: Vec::new(),
        }
    }

    /// An administrative shutdown (Cease/2) carrying an RFC 8203 message (cut at 255
    /// octets on a character boundary).
    pub fn shutdown(message: &str) -> Notification {
        let mut end = message.len().min(255);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let mut data = vec![end as u8];
        data.extend_from_slice(&message.as_bytes()[..end]);
        Notification {
            code: ErrorCode::Cease(CeaseError::AdministrativeShutdown),
            data,
        }
    }

    /// The RFC 8203 shutdown communication of a Cease/2 or Cease/4, if well formed.
    pub fn shutdown_message(&self) -> Option<&str> {
        match self.code {
            ErrorCode::Cease(
                CeaseError::AdministrativeShutdown | CeaseError::AdministrativeReset,
            ) => {
                let (&len, text) = self.data.split_first()?;
                std::str::from_utf8(text.get(..len as usize)?).ok()
            }
            _ => None,
        }
    }

    pub(crate) fn decode(body: &[u8]) -> Notification {
        // The header check guaranteed at least the two code octets.
        Notification {
            code: ErrorCode::from_bytes(body[0], body[1]),
            data: body[2..].to_vec(),
        }
    }

    pub(crate) fn encode(&self, dst: &mut BytesMut) {
        let (code, subcode) = self.code.to_bytes();
        dst.put_u8(code);
        dst.put_u8(subcode);
        dst.put_slice(&self.data);
    }
}
