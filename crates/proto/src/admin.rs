//! The admin listings.

use serde::{Deserialize, Serialize};

use crate::locks::{Hold, Kind, LockMode};

/// `GET /v1/admin/locks?prefix=&limit=&after=`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AdminLocks {
    pub locks: Vec<AdminName>,
    /// Pass as `after` for the next page; `null` on the last page.
    pub next: Option<String>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AdminName {
    pub name: String,
    pub kind: Kind,
    pub limit: Option<u32>,
    pub holders: Vec<Hold>,
    pub waiters: Vec<AdminWaiter>,
    pub last_token: Option<u64>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AdminWaiter {
    pub owner: String,
    pub mode: Option<LockMode>,
    pub permits: u32,
    pub waiting_ms: u64,
}

/// `GET /v1/admin/sessions`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AdminSessions {
    pub sessions: Vec<AdminSession>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AdminSession {
    pub session_id: String,
    pub owner: String,
    pub ttl_ms: u64,
    pub expires_in_ms: u64,
    pub holds: Vec<Hold>,
    /// How many acquires of this session wait.
    pub waiters: u64,
}
