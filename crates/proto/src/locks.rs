//! Locks and semaphores: acquire, renew and check bodies; the hold and name objects.

use serde::{Deserialize, Serialize};

use crate::nullable;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockMode {
    #[default]
    Exclusive,
    Shared,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Lock,
    Semaphore,
}

/// `POST /v1/locks/{name}`: every field optional.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcquireLock {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<LockMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Absent: 0 (try-lock). `null` (wait without deadline) is refused over HTTP.
    #[serde(default, with = "nullable", skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<Option<u64>>,
    /// Absent: the server's default TTL, or none with a session; `null`: no expiry.
    #[serde(default, with = "nullable", skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<Option<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// `POST /v1/semaphores/{name}`: `limit` required, `permits` defaults to 1.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcquireSemaphore {
    pub limit: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permits: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, with = "nullable", skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<Option<u64>>,
    #[serde(default, with = "nullable", skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<Option<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// `POST .../{hold_id}/renew`: absent `ttl_ms` renews for the current TTL, `null` removes it.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Renew {
    #[serde(default, with = "nullable", skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<Option<u64>>,
}

/// `POST .../{name}/check`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    pub token: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct CheckResponse {
    pub valid: bool,
}

/// The hold object.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Hold {
    pub name: String,
    pub hold_id: String,
    pub kind: Kind,
    /// `null` for a semaphore.
    pub mode: Option<LockMode>,
    pub permits: u32,
    /// `null` for a lock.
    pub limit: Option<u32>,
    pub owner: String,
    pub session: Option<String>,
    pub token: u64,
    /// Wall-clock Unix ms, for display only.
    pub granted_at_ms: u64,
    /// `null` for a hold without expiry.
    pub expires_in_ms: Option<u64>,
}

/// `GET /v1/{locks|semaphores}/{name}`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct NameState {
    pub name: String,
    pub kind: Kind,
    pub limit: Option<u32>,
    pub holders: Vec<Hold>,
    /// How many requests wait.
    pub waiters: u64,
    pub last_token: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_three_valued() {
        let absent: AcquireLock = serde_json::from_str("{}").unwrap();
        assert_eq!(absent.ttl_ms, None);
        let null: AcquireLock = serde_json::from_str(r#"{"ttl_ms":null}"#).unwrap();
        assert_eq!(null.ttl_ms, Some(None));
        let set: AcquireLock = serde_json::from_str(r#"{"ttl_ms":5}"#).unwrap();
        assert_eq!(set.ttl_ms, Some(Some(5)));
        assert_eq!(serde_json::to_string(&null).unwrap(), r#"{"ttl_ms":null}"#);
        assert_eq!(serde_json::to_string(&absent).unwrap(), "{}");
    }

    #[test]
    fn bad_bodies_are_refused() {
        for body in [
            r#"{"wait":1}"#,
            r#"{"wait_ms":-1}"#,
            r#"{"wait_ms":1.5}"#,
            r#"{"wait_ms":"1"}"#,
            r#"{"wait_ms":184467440737095516150}"#,
            r#"{"mode":"writer"}"#,
            r#"{"mode":"exclusive""#,
        ] {
            assert!(serde_json::from_str::<AcquireLock>(body).is_err(), "{body}");
        }
        assert!(serde_json::from_str::<AcquireSemaphore>("{}").is_err(), "limit is required");
    }
}
