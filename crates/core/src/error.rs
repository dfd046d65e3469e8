//! The core's error type. Every variant maps to one stable wire code (API.md "Errors").

use serde::{Deserialize, Serialize};

/// Why a command was refused. Messages are lower-case and short; the server adds no internals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CoreError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    /// A try-lock (`wait_ms` 0) could not be granted now.
    #[error("{0}")]
    Locked(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    Unavailable(String),
}

impl CoreError {
    /// The stable wire code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            CoreError::InvalidArgument(_) => "invalid_argument",
            CoreError::NotFound(_) => "not_found",
            CoreError::Locked(_) => "locked",
            CoreError::Conflict(_) => "conflict",
            CoreError::LimitExceeded(_) => "limit_exceeded",
            CoreError::Unavailable(_) => "unavailable",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            CoreError::InvalidArgument(m)
            | CoreError::NotFound(m)
            | CoreError::Locked(m)
            | CoreError::Conflict(m)
            | CoreError::LimitExceeded(m)
            | CoreError::Unavailable(m) => m,
        }
    }
}
