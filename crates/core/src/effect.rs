//! What `apply` returns: the response to the command, and the effects on others that the
//! server carries out (answer a waiting request, push a `lost` event).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::command::Mode;
use crate::ids::{FencingToken, HoldId, Holder, Origin, SessionId};
use crate::name::LockName;

/// A hold as the surfaces show it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct HoldView {
    pub name: LockName,
    pub hold_id: HoldId,
    pub kind: Kind,
    /// For a lock; `None` for a semaphore.
    pub mode: Option<Mode>,
    pub permits: u32,
    /// For a semaphore; `None` for a lock.
    pub limit: Option<u32>,
    pub owner: Arc<str>,
    pub holder: Holder,
    pub token: FencingToken,
    /// Wall-clock Unix ms of the grant (display only).
    pub granted_at_ms: u64,
    /// Log time of the grant.
    pub granted_log_ms: u64,
    pub ttl_ms: Option<u64>,
    /// Remaining lifetime at the time of the answer; `None` without expiry.
    pub expires_in_ms: Option<u64>,
    pub request_id: Option<Arc<str>>,
}

impl HoldView {
    pub fn session(&self) -> Option<SessionId> {
        self.holder.session()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Kind {
    Lock,
    Semaphore,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Lock => "lock",
            Kind::Semaphore => "semaphore",
        }
    }
}

/// The answer to the command itself.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Response {
    /// Granted now (`repeat`: a `request_id` repeat of an earlier grant).
    Granted {
        hold: HoldView,
        repeat: bool,
    },
    /// Queued: the grant or the failure arrives later as an effect for this `hold_id`.
    Queued {
        hold_id: HoldId,
        position: usize,
    },
    Released,
    Renewed {
        hold: HoldView,
    },
    /// `ReleaseHolder`: how many holds were released and waiters withdrawn.
    ReleasedAll {
        holds: usize,
        waiters: usize,
    },
    Session {
        session_id: SessionId,
        ttl_ms: u64,
    },
    /// `KeepAlive`: per listed session, its TTL, or `None` if it has ended.
    KeptAlive {
        ttl_ms: Vec<Option<u64>>,
    },
    Done,
}

/// An effect on someone other than the caller, in a deterministic order.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Effect {
    /// A queued acquire was granted: answer its origin.
    Granted {
        hold: HoldView,
        origin: Origin,
    },
    /// A queued acquire ended without a grant: answer its origin.
    WaitEnded {
        hold_id: HoldId,
        name: LockName,
        origin: Origin,
        reason: WaitEnd,
    },
    /// A hold ended without its holder asking: push a `lost` event.
    Lost {
        hold_id: HoldId,
        name: LockName,
        token: FencingToken,
        holder: Holder,
        reason: LostReason,
    },
    SessionEnded {
        session_id: SessionId,
        reason: SessionEnd,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum WaitEnd {
    /// `wait_ms` passed (wire code `timeout`).
    Timeout,
    /// Withdrawn by its client (wire code `cancelled`).
    Cancelled,
    /// An admin force-released the name (wire code `cancelled`).
    Admin,
    /// The waiter's session ended (wire code `cancelled`).
    SessionEnded,
    /// The waiter's node boot is gone (wire code `cancelled`).
    NodeGone,
    /// A `request_id` repeat took the place over; the earlier request gets `cancelled`.
    Replaced,
}

impl WaitEnd {
    pub fn code(self) -> &'static str {
        match self {
            WaitEnd::Timeout => "timeout",
            _ => "cancelled",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum LostReason {
    Expired,
    Session,
    Admin,
    Undeliverable,
}

impl LostReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LostReason::Expired => "expired",
            LostReason::Session => "session",
            LostReason::Admin => "admin",
            LostReason::Undeliverable => "undeliverable",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum SessionEnd {
    Expired,
    Closed,
}
