//! The crate's one error type.
//!
//! A decode error is ready to act on: it carries the NOTIFICATION that RFC 4271 §6 says
//! to send, and for UPDATE attribute errors the RFC 7606 classification that replaces a
//! session reset with a gentler action where it is safe.

use crate::packet::notification::{ErrorCode, Notification};
use ipnet::IpNet;
use thiserror::Error;

/// What the receiver of a malformed message must do (RFC 7606 §2, RFC 4271 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorAction {
    /// Drop only the malformed attribute and process the rest of the UPDATE.
    AttributeDiscard,
    /// Handle every prefix the UPDATE carries as if it had been withdrawn; the session
    /// stays up.
    TreatAsWithdraw,
    /// Send the NOTIFICATION and close the session.
    SessionReset,
}

/// Errors of decoding or encoding BGP messages.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// A received message is malformed.
    #[error("malformed BGP message ({:?}): {reason}", notification.code)]
    Malformed {
        /// The NOTIFICATION to send (RFC 4271 §6) when `action` is a session reset; for
        /// RFC 7606 actions, the one RFC 4271 alone would have required (for logs).
        notification: Notification,
        /// What to do about it.
        action: ErrorAction,
        /// For [`ErrorAction::TreatAsWithdraw`]: every prefix of the UPDATE (withdrawn,
        /// NLRI, MP_REACH and MP_UNREACH), all to be handled as withdrawn.
        withdrawn: Vec<IpNet>,
        /// Why, for humans.
        reason: String,
    },
    /// An encoded message would exceed the 4096 octets BGP allows.
    #[error("an encoded BGP message would be {0} octets, more than 4096")]
    TooLong(usize),
    /// A message that cannot be put on the wire (a field exceeds its width).
    #[error("cannot encode: {0}")]
    Unencodable(&'static str),
}

/// The decoder's error type (the crate's one error type).
pub type DecodeError = Error;

impl Error {
    /// A session-reset error with the NOTIFICATION `code` and `data`.
    pub(crate) fn reset(code: ErrorCode, data: Vec<u8>, reason: impl Into<String>) -> Error {
        Error::Malformed {
            notification: Notification { code, data },
            action: ErrorAction::SessionReset,
            withdrawn: Vec::new(),
            reason: reason.into(),
        }
    }

    /// What to do about the error; encode errors are ours, so they reset nothing.
    pub fn action(&self) -> Option<ErrorAction> {
        match self {
            Error::Malformed { action, .. } => Some(*action),
            _ => None,
        }
    }

    /// The NOTIFICATION to send when the error resets the session.
    pub fn notification(&self) -> Option<&Notification> {
        match self {
            Error::Malformed {
                notification,
                action: ErrorAction::SessionReset,
                ..
            } => Some(notification),
            _ => None,
        }
    }
}
