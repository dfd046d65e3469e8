//! The streaming session (`GET /v1/session`, WebSocket): one JSON object per text frame.
//!
//! Client → server: a [`StreamRequest`], flat (every op's fields in one object, `op` says which
//! apply) so a typo in a field name is refused rather than ignored. Server → client: a
//! [`StreamReply`] (has `id`) or a [`StreamEvent`] (has `event`).

use serde::{Deserialize, Serialize};

use crate::error::ErrorDetail;
use crate::locks::{Hold, Kind, LockMode};
use crate::nullable;

/// The operations of the stream.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamOp {
    Hello,
    Acquire,
    Release,
    Renew,
    Cancel,
    Check,
    Ping,
}

impl StreamOp {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamOp::Hello => "hello",
            StreamOp::Acquire => "acquire",
            StreamOp::Release => "release",
            StreamOp::Renew => "renew",
            StreamOp::Cancel => "cancel",
            StreamOp::Check => "check",
            StreamOp::Ping => "ping",
        }
    }
}

/// One request. `id` (a client-chosen integer) is echoed in the reply.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamRequest {
    pub id: Option<u64>,
    pub op: Option<StreamOp>,
    /// hello: `null` (or absent) opens a new session; an id resumes that one.
    #[serde(default, with = "nullable", skip_serializing_if = "Option::is_none")]
    pub session_id: Option<Option<String>>,
    /// hello: the session's lease; acquire: the hold's own TTL (absent or `null`: none, the
    /// session covers it); renew: absent renews for the current TTL, `null` removes it.
    #[serde(default, with = "nullable", skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<Option<u64>>,
    /// hello: how long the session outlives a dropped connection (at least its lease).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_ms: Option<u64>,
    /// hello: the session's label (acquire: the hold's, defaulting to the session's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// acquire, check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// acquire: `lock` (default) or `semaphore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    /// acquire of a lock: `exclusive` (default) or `shared`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<LockMode>,
    /// acquire of a semaphore: required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// acquire of a semaphore: default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permits: Option<u32>,
    /// acquire: absent or 0 tries once; `null` waits without a deadline.
    #[serde(default, with = "nullable", skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<Option<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// release, renew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_id: Option<String>,
    /// cancel: the `id` of the pending acquire to withdraw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<u64>,
    /// check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
}

/// A reply: `ok` with the op's payload, or `error`. `id` is `null` only when the request's id
/// could not be read.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct StreamReply {
    pub id: Option<u64>,
    pub ok: bool,
    /// acquire, renew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Hold>,
    /// hello.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// hello: the session's lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// hello: the grace after a dropped connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_ms: Option<u64>,
    /// hello: whether an existing session was resumed (its buffered replies follow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed: Option<bool>,
    /// ping (and hello): the lease the committed keepalive gave, counted from when it was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    /// check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid: Option<bool>,
    /// cancel: the hold that was given back because its grant won the race.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

impl StreamReply {
    pub fn ok(id: u64) -> StreamReply {
        StreamReply { id: Some(id), ok: true, ..StreamReply::default() }
    }

    pub fn error(id: Option<u64>, error: ErrorDetail) -> StreamReply {
        StreamReply { id, ok: false, error: Some(error), ..StreamReply::default() }
    }
}

/// Why a hold was lost.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LostReason {
    Expired,
    Session,
    Admin,
    Undeliverable,
}

/// A pushed event: today only `lost`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StreamEvent {
    Lost { hold_id: String, name: String, token: u64, reason: LostReason },
}

/// Close codes the server uses (besides the standard 1009 "too big" and 1012 "restarting").
pub mod close {
    /// The session ended (its lease ran out, or it was closed); the reason says which.
    pub const SESSION_ENDED: u16 = 4000;
    /// A `hello` on another connection resumed this session.
    pub const RESUMED_ELSEWHERE: u16 = 4001;
    /// The client did not read its replies: more than the server's buffer limit was waiting.
    pub const TOO_SLOW: u16 = 4002;
    /// No frame (not even a pong) from the client for twice the heartbeat interval.
    pub const NO_PONG: u16 = 4003;
    /// A frame larger than the server's limit.
    pub const TOO_BIG: u16 = 1009;
    /// The server is shutting down; resume the session after it restarts.
    pub const RESTARTING: u16 = 1012;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_flat_and_refuse_unknown_fields() {
        let hello: StreamRequest = serde_json::from_str(
            r#"{"id":1,"op":"hello","session_id":null,"ttl_ms":2000,"grace_ms":0,"owner":"w1"}"#,
        )
        .unwrap();
        assert_eq!(hello.op, Some(StreamOp::Hello));
        assert_eq!(hello.session_id, Some(None));
        assert_eq!(hello.ttl_ms, Some(Some(2000)));
        let acquire: StreamRequest =
            serde_json::from_str(r#"{"id":2,"op":"acquire","name":"db","wait_ms":null}"#).unwrap();
        assert_eq!(acquire.wait_ms, Some(None));
        assert!(
            serde_json::from_str::<StreamRequest>(r#"{"id":3,"op":"release","hid":"x"}"#).is_err()
        );
        assert!(serde_json::from_str::<StreamRequest>(r#"{"id":3,"op":"jump"}"#).is_err());
    }

    #[test]
    fn replies_and_events_have_the_documented_shape() {
        let reply = StreamReply { valid: Some(true), ..StreamReply::ok(6) };
        assert_eq!(serde_json::to_string(&reply).unwrap(), r#"{"id":6,"ok":true,"valid":true}"#);
        let event = StreamEvent::Lost {
            hold_id: "ab".into(),
            name: "db".into(),
            token: 42,
            reason: LostReason::Expired,
        };
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"event":"lost","hold_id":"ab","name":"db","token":42,"reason":"expired"}"#
        );
    }
}
