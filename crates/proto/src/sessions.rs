//! Sessions over plain HTTP: create, keepalive, inspect, close.

use serde::{Deserialize, Serialize};

use crate::locks::Hold;

/// `POST /v1/sessions`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    pub ttl_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// Answer to create and keepalive.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SessionCreated {
    pub session_id: String,
    pub ttl_ms: u64,
}

/// `GET /v1/sessions/{id}`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SessionInfo {
    pub session_id: String,
    pub owner: String,
    pub ttl_ms: u64,
    pub expires_in_ms: u64,
    pub holds: Vec<Hold>,
    /// How many acquires of this session wait.
    pub waiters: u64,
}
