//! Commands: every mutation of the table is one of these, applied in log order.
//!
//! A command is part of the persisted log (the server wraps it in its own versioned entry), so
//! its shape only changes together with a format version.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::effect::Kind;
use crate::ids::{HoldId, Holder, NodeEpoch, Origin, SessionId};
use crate::name::LockName;

/// Longest `request_id`, in bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 64;
/// Longest `owner` label, in bytes.
pub const MAX_OWNER_BYTES: usize = 255;
/// Longest lock-delay, in ms.
pub const MAX_LOCK_DELAY_MS: u64 = 60_000;
/// Longest TTL, wait or grace the core accepts (about 10 years): keeps deadline sums far from
/// overflow. The server enforces its own, tighter bounds.
pub const MAX_DURATION_MS: u64 = 10 * 365 * 24 * 3_600_000;
/// How long a `request_id` keeps deduplicating its acquire.
pub const REQUEST_ID_RETENTION_MS: u64 = 10 * 60_000;

/// The time context of one command: the proposing node's log clock and, for display only, its
/// wall clock. Both are in the log, so replay is deterministic.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Ctx {
    /// Log time in ms; the core clamps it to be non-decreasing.
    pub now_ms: u64,
    /// Wall-clock Unix ms, used only for `granted_at_ms`.
    pub wall_ms: u64,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Command {
    Acquire(Acquire),
    /// Release a hold, or withdraw a waiting acquire, by its id.
    Release {
        hold_id: HoldId,
        reason: ReleaseReason,
    },
    /// A client's release of a hold (or withdrawal of a waiter) addressed by name, kind and id:
    /// `not_found` unless the id is live on `name` and `name` is of `kind`. One command, so the
    /// check and the release see the same table.
    ReleaseOf {
        name: LockName,
        kind: Kind,
        hold_id: HoldId,
    },
    /// Release the hold (or withdraw the waiter) that the acquire with this `request_id` created.
    ReleaseByRequest {
        name: LockName,
        scope: RequestScope,
        request_id: Arc<str>,
    },
    /// The Lockserver compat release: the hold of `name` whose identity is `owner`.
    ReleaseOwned {
        name: LockName,
        owner: Arc<str>,
    },
    /// Release every hold and withdraw every waiter of a holder (a compat connection closed).
    ReleaseHolder {
        holder: Holder,
    },
    Renew {
        hold_id: HoldId,
        ttl: TtlChange,
    },
    OpenSession {
        session_id: SessionId,
        ttl_ms: u64,
        owner: Arc<str>,
    },
    /// Coalesced keepalives: every listed session gets `now + ttl`.
    KeepAlive {
        sessions: Vec<SessionId>,
    },
    /// A voluntary end: holds released without lock-delay, waiters cancelled.
    CloseSession {
        session_id: SessionId,
    },
    /// The session's connection dropped: it lives until the later of `now + grace_ms` and its
    /// current lease deadline, unless resumed by a keepalive.
    DetachSession {
        session_id: SessionId,
        grace_ms: u64,
    },
    AdminReleaseHold {
        hold_id: HoldId,
        lock_delay: bool,
    },
    AdminReleaseName {
        name: LockName,
        lock_delay: bool,
    },
    /// Makes due expiries visible and emits their effects (every command does this first).
    Expire,
    /// The first command of a new leader or a restarted node: cancel waiters whose node boot is
    /// not in `live`, then extend every hold, session and lock-delay deadline by `margin_ms`,
    /// and raise the next fencing token to at least `token_floor` (the `--in-memory` high-water
    /// mark of an earlier run; 0 when the log itself carries every token issued).
    Resume {
        margin_ms: u64,
        live: Vec<NodeEpoch>,
        token_floor: u64,
    },
    /// The session ends now, involuntarily, as if its lease had run out (lock-delays apply,
    /// holds are `lost` with reason `session`): e.g. its detached stream's buffer overflowed.
    EndSession {
        session_id: SessionId,
    },
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Acquire {
    /// The id the request keeps while it waits and the hold keeps once granted.
    pub hold_id: HoldId,
    pub name: LockName,
    pub want: Want,
    /// A free label (the identity on the Lockserver compat surface).
    pub owner: Arc<str>,
    pub holder: Holder,
    pub wait: Wait,
    /// `None`: no expiry of its own (lives until released, its session ends, or an admin).
    pub ttl_ms: Option<u64>,
    /// Held back from others for this long after an involuntary end (≤ 60 s).
    pub lock_delay_ms: u64,
    pub request_id: Option<Arc<str>>,
    pub origin: Origin,
}

/// What an acquire asks for; it also fixes the kind of the name.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum Want {
    Lock(Mode),
    Semaphore { limit: u32, permits: u32 },
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub enum Mode {
    Exclusive,
    Shared,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Exclusive => "exclusive",
            Mode::Shared => "shared",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Wait {
    /// Fail at once with `locked` if the grant is not possible now.
    Try,
    /// Wait up to this many ms, then fail with `timeout`.
    For(u64),
    /// Wait without a deadline (until granted, cancelled, or the session ends).
    Forever,
}

/// The identity a `request_id` is scoped to: the holder, or for an anonymous native acquire its
/// owner label.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub enum RequestScope {
    Holder(Holder),
    Label(Arc<str>),
}

impl RequestScope {
    /// The scope an acquire's `request_id` lives in.
    pub fn of(holder: &Holder, owner: &Arc<str>) -> RequestScope {
        match holder {
            Holder::Anonymous => RequestScope::Label(owner.clone()),
            other => RequestScope::Holder(other.clone()),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum ReleaseReason {
    /// The client asked.
    Client,
    /// The grant could not be delivered to the requester.
    Undeliverable,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum TtlChange {
    /// Renew for the hold's current TTL.
    Same,
    Set(u64),
    /// Remove the expiry.
    Unlimited,
}
