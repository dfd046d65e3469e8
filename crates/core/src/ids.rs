//! Identifier and value newtypes: hold and session ids, fencing tokens, origins and holders.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::CoreError;

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        ///
        /// Drawn by the accepting node from a CSPRNG (128 bits) and carried in the command; the
        /// core never draws randomness, it only refuses duplicates. On the wire it is 32
        /// lowercase hex digits.
        ///
        /// Stored as two `u64` halves so it packs with 8-byte alignment (it sits in every hold).
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name([u64; 2]);

        impl $name {
            pub const fn from_u128(value: u128) -> $name {
                $name([(value >> 64) as u64, value as u64])
            }

            pub const fn as_u128(self) -> u128 {
                ((self.0[0] as u128) << 64) | self.0[1] as u128
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:032x}", self.as_u128())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:032x})", stringify!($name), self.as_u128())
            }
        }

        impl FromStr for $name {
            type Err = CoreError;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                let well_formed = text.len() == 32
                    && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if !well_formed {
                    return Err(CoreError::InvalidArgument(format!(
                        concat!("malformed ", $what, " (32 lowercase hex digits expected)")
                    )));
                }
                u128::from_str_radix(text, 16).map($name::from_u128).map_err(|_| {
                    CoreError::InvalidArgument(concat!("malformed ", $what).to_string())
                })
            }
        }
    };
}

hex_id!(
    /// Identifies one acquire request for its whole life: its place in a queue while it waits,
    /// then the hold it becomes once granted.
    HoldId,
    "hold id"
);
hex_id!(
    /// Identifies a session.
    SessionId,
    "session id"
);

/// An owner label as the table keeps it. The empty label (what most acquires carry) is one
/// shared allocation instead of one per hold.
pub fn owner_label(label: &str) -> Arc<str> {
    static EMPTY: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(""));
    if label.is_empty() {
        EMPTY.clone()
    } else {
        Arc::from(label)
    }
}

/// The largest fencing token ever issued: tokens stay below 2^53 so JavaScript reads them exactly.
pub const MAX_TOKEN: u64 = (1 << 53) - 1;

/// A fencing token: unique and strictly increasing across every grant of the table.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct FencingToken(pub u64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One boot of one node. A node draws a new epoch every start; waiters whose epoch is no
/// longer live are cancelled by `Resume` before any grant.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct NodeEpoch {
    pub node: u64,
    pub epoch: u64,
}

/// Who is waiting for an answer to an acquire: the serving node's boot plus the session,
/// connection or HTTP request that will receive the grant.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct Origin {
    pub boot: NodeEpoch,
    pub via: Via,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub enum Via {
    Session(SessionId),
    Connection(u64),
    Request(u64),
}

/// The identity a hold belongs to, which decides re-entrancy and bulk release.
///
/// `Anonymous` is a native acquire without a session: its `owner` is only a label and it is
/// never re-entrant-checked. The others refuse a second acquire of the same name while the
/// first holds or waits (`conflict`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub enum Holder {
    Anonymous,
    /// A native session: its holds end when it ends.
    Session(SessionId),
    /// The Lockserver compat surface, whose identity is the owner string.
    CompatOwner(Arc<str>),
    /// A connection of a compat TCP surface (locker): released together on disconnect.
    /// Connection ids must be unique across boots (the server draws them at random).
    Connection(u64),
    /// An RDLM lock, whose identity is its uid: the hold id itself (so never re-entrant).
    Rdlm(HoldId),
}

impl Holder {
    pub fn session(&self) -> Option<SessionId> {
        match self {
            Holder::Session(id) => Some(*id),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_ids_round_trip_as_32_lowercase_hex_digits() {
        let id = HoldId::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let text = id.to_string();
        assert_eq!(text, "0123456789abcdef0011223344556677");
        assert_eq!(text.parse::<HoldId>().unwrap(), id);
        assert_eq!(HoldId::from_u128(1).to_string().len(), 32);
    }

    #[test]
    fn malformed_ids_are_invalid_arguments() {
        for text in
            ["", "abc", "0123456789ABCDEF0011223344556677", &"g".repeat(32), &"0".repeat(33)]
        {
            assert!(matches!(text.parse::<SessionId>(), Err(CoreError::InvalidArgument(_))));
        }
    }
}
