//! [`LockError`]: what can go wrong, with "not acquired" and "outcome unknown" kept apart.

use std::fmt;
use std::time::Duration;

use lockserver_proto::{ErrorCode, ErrorDetail};

use crate::handle::LostReason;

/// Why an operation failed.
///
/// Only [`Timeout`](LockError::Timeout) and [`Locked`](LockError::Locked) mean "not acquired,
/// certainly". [`Connection`](LockError::Connection) means the outcome is unknown: the client
/// gives back whatever the request may have created (by its id, or by ending the session), but
/// it never reports a grant it cannot prove.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum LockError {
    /// Waited the whole timeout without a grant.
    Timeout(Duration),
    /// A try (`try_acquire`, or a zero timeout) found the name held.
    Locked,
    /// The hold is gone: lost before the operation (expired, force-released, session ended,
    /// or the client's local lease deadline passed).
    Lost(LostReason),
    /// The name is not 1–255 bytes of UTF-8 without control characters.
    InvalidName(String),
    /// A bad argument (permits outside `1..=limit`, a duration too large, ...).
    InvalidArgument(String),
    /// The server refused the credential (`unauthorized`) or the right (`forbidden`).
    Auth(String),
    /// The server could not be reached or the connection broke: the outcome is unknown.
    Connection(String),
    /// The server refused for another reason (`conflict`, `cancelled`, `limit_exceeded`,
    /// `not_found`, `not_leader`, `unavailable`, `internal`).
    Server { code: ErrorCode, message: String },
}

impl LockError {
    /// The server's error code, when the server answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            LockError::Timeout(_) => Some(ErrorCode::Timeout),
            LockError::Locked => Some(ErrorCode::Locked),
            LockError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the outcome is unknown (the request may or may not have taken effect).
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, LockError::Connection(_))
            || matches!(self, LockError::Server { code: ErrorCode::Internal, .. })
    }

    pub(crate) fn connection(what: impl fmt::Display) -> LockError {
        LockError::Connection(what.to_string())
    }

    /// An error the server sent. `wait` is the timeout the request carried, for `Timeout`.
    pub(crate) fn from_detail(detail: ErrorDetail, wait: Duration) -> LockError {
        let ErrorDetail { code, message, .. } = detail;
        match code {
            ErrorCode::Timeout => LockError::Timeout(wait),
            ErrorCode::Locked => LockError::Locked,
            ErrorCode::Unauthorized | ErrorCode::Forbidden => LockError::Auth(message),
            ErrorCode::InvalidArgument => LockError::InvalidArgument(message),
            code => LockError::Server { code, message },
        }
    }
}

/// Checks a name as the server does (1–255 bytes of UTF-8, no control characters), so a bad
/// name fails before any request with [`LockError::InvalidName`].
pub(crate) fn validate_name(name: &str) -> Result<(), LockError> {
    if name.is_empty() || name.len() > 255 {
        return Err(LockError::InvalidName(format!(
            "a name is 1 to 255 bytes, this one is {}",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(LockError::InvalidName("a name has no control characters".into()));
    }
    Ok(())
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::Timeout(wait) => write!(f, "not acquired within {wait:?}"),
            LockError::Locked => f.write_str("not acquired: the name is held"),
            LockError::Lost(reason) => write!(f, "the hold is lost ({reason})"),
            LockError::InvalidName(message) => write!(f, "invalid name: {message}"),
            LockError::InvalidArgument(message) => write!(f, "invalid argument: {message}"),
            LockError::Auth(message) => write!(f, "not authorized: {message}"),
            LockError::Connection(message) => {
                write!(f, "connection failed, outcome unknown: {message}")
            }
            LockError::Server { code, message } => write!(f, "server error {code}: {message}"),
        }
    }
}

impl std::error::Error for LockError {}
