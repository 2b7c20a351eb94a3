//! What value a managed sysctl must hold.

use std::fmt;

use crate::Key;

/// The values a managed sysctl may hold, and what to write when it holds another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    /// Exactly this value.
    Exactly(i64),
    /// Any of `accepted` (an administrator's stricter choice is kept); `set` is
    /// written otherwise.
    AnyOf {
        /// Values left as they are.
        accepted: Vec<i64>,
        /// The value written when the current one is not accepted.
        set: i64,
    },
}

impl Want {
    /// True when `value` satisfies this want.
    pub fn accepts(&self, value: i64) -> bool {
        match self {
            Want::Exactly(wanted) => value == *wanted,
            Want::AnyOf { accepted, .. } => accepted.contains(&value),
        }
    }

    /// The value to write when the current one is not accepted.
    pub fn target(&self) -> i64 {
        match self {
            Want::Exactly(wanted) => *wanted,
            Want::AnyOf { set, .. } => *set,
        }
    }
}

impl fmt::Display for Want {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Want::Exactly(wanted) => write!(f, "{wanted}"),
            Want::AnyOf { accepted, .. } => {
                let list: Vec<String> = accepted.iter().map(i64::to_string).collect();
                write!(f, "one of {}", list.join(", "))
            }
        }
    }
}

/// One sysctl the agent manages, with the reason it needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The sysctl.
    pub key: Key,
    /// The value(s) it must hold.
    pub want: Want,
    /// Why the agent needs it, for logs and `check` output.
    pub reason: &'static str,
}

/// A sysctl that `apply` changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The sysctl.
    pub key: Key,
    /// Its value before.
    pub old: String,
    /// Its value now (verified by reading it back).
    pub new: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} -> {}", self.key, self.old, self.new)
    }
}
