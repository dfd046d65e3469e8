//! Sessions: open, keepalive, close (voluntary) and detach (the connection dropped).

use std::sync::Arc;

use crate::command::MAX_DURATION_MS;
use crate::effect::{Effect, Response, SessionEnd, WaitEnd};
use crate::error::CoreError;
use crate::ids::{Holder, SessionId};

use super::{deadline_after, Ending, Session, Table, Timer};

fn no_such_session() -> CoreError {
    CoreError::NotFound("session not found or ended".into())
}

impl Table {
    pub(super) fn open_session(
        &mut self,
        session_id: SessionId,
        ttl_ms: u64,
        owner: Arc<str>,
    ) -> Result<Response, CoreError> {
        if ttl_ms == 0 || ttl_ms > MAX_DURATION_MS {
            return Err(CoreError::InvalidArgument(format!(
                "session ttl_ms must be between 1 and {MAX_DURATION_MS}"
            )));
        }
        if owner.len() > crate::command::MAX_OWNER_BYTES {
            return Err(CoreError::InvalidArgument("owner is too long".into()));
        }
        if self.sessions.contains_key(&session_id) {
            return Err(CoreError::Conflict("session id already in use".into()));
        }
        if self.sessions.len() >= self.limits.max_sessions {
            return Err(CoreError::LimitExceeded(format!(
                "the server has {} sessions, the limit",
                self.sessions.len()
            )));
        }
        let deadline = deadline_after(self.now_ms, ttl_ms);
        self.sessions.insert(session_id, Session { ttl_ms, owner, deadline });
        self.timers.insert((deadline, Timer::Session(session_id)));
        Ok(Response::Session { session_id, ttl_ms })
    }

    /// Every listed live session lives `ttl_ms` from now (never shorter than it already had).
    pub(super) fn keep_alive(&mut self, sessions: &[SessionId]) -> Response {
        let mut ttl_ms = Vec::with_capacity(sessions.len());
        for id in sessions {
            ttl_ms.push(self.extend_session(*id, None));
        }
        Response::KeptAlive { ttl_ms }
    }

    /// Moves a session's deadline to at least `now + (grace or its ttl)`; returns its ttl.
    fn extend_session(&mut self, id: SessionId, grace_ms: Option<u64>) -> Option<u64> {
        let now = self.now_ms;
        let session = self.sessions.get_mut(&id)?;
        let wanted = deadline_after(now, grace_ms.unwrap_or(session.ttl_ms));
        if wanted > session.deadline {
            self.timers.remove(&(session.deadline, Timer::Session(id)));
            session.deadline = wanted;
            self.timers.insert((wanted, Timer::Session(id)));
        }
        Some(session.ttl_ms)
    }

    /// A voluntary end: holds released without lock-delay or `lost`, waiters cancelled.
    pub(super) fn close_session(
        &mut self,
        session_id: SessionId,
        effects: &mut Vec<Effect>,
    ) -> Result<Response, CoreError> {
        let session = self.sessions.remove(&session_id).ok_or_else(no_such_session)?;
        self.timers.remove(&(session.deadline, Timer::Session(session_id)));
        for id in self.entries_of(&Holder::Session(session_id)) {
            self.end_entry(id, Ending::Voluntary { waiter: WaitEnd::SessionEnded }, effects);
        }
        effects.push(Effect::SessionEnded { session_id, reason: SessionEnd::Closed });
        Ok(Response::Done)
    }

    /// An involuntary end now, exactly as if the lease had run out at this instant.
    pub(super) fn end_session_now(
        &mut self,
        session_id: SessionId,
        effects: &mut Vec<Effect>,
    ) -> Result<Response, CoreError> {
        if !self.sessions.contains_key(&session_id) {
            return Err(no_such_session());
        }
        self.end_session_involuntarily(session_id, self.now_ms, effects);
        Ok(Response::Done)
    }

    /// The session's connection dropped: it lives until the later of `now + grace_ms` and its
    /// current deadline (last keepalive + ttl), unless a keepalive comes first.
    pub(super) fn detach_session(
        &mut self,
        session_id: SessionId,
        grace_ms: u64,
    ) -> Result<Response, CoreError> {
        if grace_ms > MAX_DURATION_MS {
            return Err(CoreError::InvalidArgument("grace_ms is too large".into()));
        }
        if !self.sessions.contains_key(&session_id) {
            return Err(no_such_session());
        }
        if grace_ms > 0 {
            self.extend_session(session_id, Some(grace_ms));
        }
        Ok(Response::Done)
    }
}
