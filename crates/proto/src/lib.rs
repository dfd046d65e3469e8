//! Wire types of the Lockserver native HTTP API (`shared/API.md`), shared by the server and the
//! clients. Depends on nothing of ours: the clients never pull in the server or the core.
//!
//! # Layout
//! - [`error`]: the stable error codes, their HTTP statuses and the error body.
//! - [`locks`]: acquire, renew and check bodies; the hold and name objects.
//! - [`sessions`]: session bodies and objects.
//! - [`admin`]: the admin listings.
//! - [`stream`]: the streaming session's requests, replies, events and close codes.
//! - [`nullable`]: `"ttl_ms"` is three-valued on the wire (absent, `null`, a number).
//!
//! Ids (`hold_id`, `session_id`) travel as 32 lowercase hex digits, tokens as JSON integers
//! below 2^53. Request bodies refuse unknown fields, so a typo is a 400, not a silent default.

pub mod admin;
pub mod error;
pub mod locks;
pub mod nullable;
pub mod sessions;
pub mod stream;

pub use admin::{AdminLocks, AdminName, AdminSession, AdminSessions, AdminWaiter};
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use locks::{
    AcquireLock, AcquireSemaphore, CheckRequest, CheckResponse, Hold, Kind, LockMode, NameState,
    Renew,
};
pub use sessions::{CreateSession, SessionCreated, SessionInfo};
pub use stream::{StreamEvent, StreamOp, StreamReply, StreamRequest};
