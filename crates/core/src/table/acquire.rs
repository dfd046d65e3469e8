//! `Acquire`: grant now, queue, or refuse; `request_id` repeats rejoin their first outcome.

use crate::command::{
    Acquire, Mode, RequestScope, Wait, Want, MAX_DURATION_MS, MAX_LOCK_DELAY_MS, MAX_OWNER_BYTES,
    MAX_REQUEST_ID_BYTES, REQUEST_ID_RETENTION_MS,
};
use crate::effect::{Effect, Response, WaitEnd};
use crate::error::CoreError;
use crate::ids::{HoldId, Holder, MAX_TOKEN};
use std::collections::BTreeMap;

use super::{
    deadline_after, Ending, Entry, EntryState, NameKind, NameState, RequestMeta, Table, Timer,
    WaitState,
};

/// Checks the arguments that do not depend on the table.
pub(crate) fn validate(acquire: &Acquire) -> Result<(), CoreError> {
    if acquire.owner.len() > MAX_OWNER_BYTES {
        return Err(CoreError::InvalidArgument(format!(
            "owner is longer than {MAX_OWNER_BYTES} bytes"
        )));
    }
    if let Some(request_id) = &acquire.request_id {
        if request_id.is_empty() || request_id.len() > MAX_REQUEST_ID_BYTES {
            return Err(CoreError::InvalidArgument(format!(
                "request_id must be 1 to {MAX_REQUEST_ID_BYTES} bytes"
            )));
        }
    }
    if let Want::Semaphore { limit, permits } = acquire.want {
        if limit == 0 {
            return Err(CoreError::InvalidArgument("limit must be at least 1".into()));
        }
        if permits == 0 || permits > limit {
            return Err(CoreError::InvalidArgument(format!(
                "permits must be between 1 and the limit ({limit})"
            )));
        }
    }
    validate_ttl(acquire.ttl_ms)?;
    if acquire.lock_delay_ms > MAX_LOCK_DELAY_MS {
        return Err(CoreError::InvalidArgument(format!(
            "lock_delay_ms must be at most {MAX_LOCK_DELAY_MS}"
        )));
    }
    if let Wait::For(ms) = acquire.wait {
        if ms > MAX_DURATION_MS {
            return Err(CoreError::InvalidArgument(format!(
                "wait_ms must be at most {MAX_DURATION_MS}"
            )));
        }
    }
    Ok(())
}

pub(crate) fn validate_ttl(ttl_ms: Option<u64>) -> Result<(), CoreError> {
    match ttl_ms {
        Some(0) => Err(CoreError::InvalidArgument("ttl_ms must be at least 1".into())),
        Some(ms) if ms > MAX_DURATION_MS => {
            Err(CoreError::InvalidArgument(format!("ttl_ms must be at most {MAX_DURATION_MS}")))
        }
        _ => Ok(()),
    }
}

fn mode_and_permits(want: Want) -> (Mode, u32) {
    match want {
        Want::Lock(mode) => (mode, 1),
        Want::Semaphore { permits, .. } => (Mode::Shared, permits),
    }
}

impl Table {
    pub(super) fn acquire(
        &mut self,
        acquire: Acquire,
        effects: &mut Vec<Effect>,
    ) -> Result<Response, CoreError> {
        validate(&acquire)?;
        if let Some(request_id) = &acquire.request_id {
            let key = (RequestScope::of(&acquire.holder, &acquire.owner), request_id.clone());
            if let Some(&earlier) = self.by_request.get(&key) {
                return self.repeat(earlier, &acquire, effects);
            }
        }
        if self.entries.contains_key(&acquire.hold_id) {
            return Err(CoreError::Conflict("hold id already in use".into()));
        }
        if let Holder::Session(session_id) = &acquire.holder {
            if !self.sessions.contains_key(session_id) {
                return Err(CoreError::NotFound("session not found or ended".into()));
            }
        }
        if acquire.holder != Holder::Anonymous
            && self.by_holder.contains_key(&(acquire.holder.clone(), acquire.name.clone()))
        {
            return Err(CoreError::Conflict(
                "this holder already holds or waits on the name (locks are not re-entrant)".into(),
            ));
        }
        let kind = NameKind::of(acquire.want);
        let (mode, permits) = mode_and_permits(acquire.want);
        let existing = self.names.get(&acquire.name);
        let existing = existing.as_deref();
        if let Some(state) = existing {
            if state.kind != kind {
                return Err(CoreError::Conflict(describe_kind_mismatch(state.kind, kind)));
            }
        }
        let grantable = existing.is_none_or(|state| {
            state.waiter_count() == 0
                && state.delay_until <= self.now_ms
                && state.fits(mode, permits)
        });
        if grantable && self.next_token > MAX_TOKEN {
            return Err(CoreError::Unavailable("fencing tokens are exhausted".into()));
        }
        let wait = match acquire.wait {
            Wait::For(0) => Wait::Try,
            other => other,
        };
        if !grantable {
            if wait == Wait::Try {
                return Err(CoreError::Locked(self.describe_busy(&acquire.name)));
            }
            let waiters = existing.map_or(0, |state| state.waiter_count());
            if waiters >= self.limits.max_waiters_per_name {
                return Err(CoreError::LimitExceeded(format!(
                    "the name has {waiters} waiters, the limit"
                )));
            }
        }
        if existing.is_none() && self.names.len() >= self.limits.max_names {
            return Err(CoreError::LimitExceeded(format!(
                "the server holds {} names, the limit",
                self.names.len()
            )));
        }
        if self.entries.len() >= self.limits.max_entries {
            return Err(CoreError::LimitExceeded(format!(
                "the server holds {} holds and waiters, the limit",
                self.entries.len()
            )));
        }

        // Every check passed: from here on the command succeeds.
        let id = acquire.hold_id;
        let now = self.now_ms;
        // A new name granted to one exclusive holder at once is stored by `grant` as just that
        // holder; any other new name starts as an empty state here.
        let single = existing.is_none() && grantable && want_is_exclusive_lock(acquire.want);
        if !single {
            self.names.get_or_insert(&acquire.name, NameState::new(kind));
        }
        let request = acquire.request_id.clone().map(|request_id| {
            let retain_until = now.saturating_add(REQUEST_ID_RETENTION_MS);
            let scope = RequestScope::of(&acquire.holder, &acquire.owner);
            self.by_request.insert((scope, request_id.clone()), id);
            self.timers.insert((retain_until, Timer::Request(id)));
            Box::new(RequestMeta { request_id, retain_until })
        });
        if acquire.holder != Holder::Anonymous {
            self.by_holder.insert((acquire.holder.clone(), acquire.name.clone()), id);
        }
        let name = acquire.name.clone();
        let state = if grantable {
            // A placeholder the grant replaces at once.
            EntryState::Held(super::HeldState {
                token: std::num::NonZeroU64::MIN,
                granted_wall_ms: 0,
                granted_log_ms: 0,
                expires_at: super::OptMs::default(),
            })
        } else {
            EntryState::Waiting(Box::new(self.enqueue(&name, id, wait, acquire.origin)))
        };
        self.entries.insert(Box::new(Entry {
            id,
            name: acquire.name,
            mode,
            permits,
            // Validated above: at most MAX_LOCK_DELAY_MS, which fits.
            lock_delay_ms: acquire.lock_delay_ms as u16,
            owner: acquire.owner,
            holder: acquire.holder,
            ttl_ms: super::OptMs::new(acquire.ttl_ms),
            request,
            state,
        }));
        if grantable {
            self.grant(id);
            let hold = self.view(id).expect("just granted");
            return Ok(Response::Granted { hold, repeat: false });
        }
        let position = self.names.get(&name).map_or(0, |state| state.waiter_count());
        Ok(Response::Queued { hold_id: id, position })
    }

    /// Puts `id` at the back of `name`'s queue and arms its wait timer.
    fn enqueue(
        &mut self,
        name: &crate::name::LockName,
        id: HoldId,
        wait: Wait,
        origin: crate::ids::Origin,
    ) -> WaitState {
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut state = self.names.get_mut(name).expect("enqueue on an existing name");
        state.queue.get_or_insert_with(|| Box::new(BTreeMap::new())).insert(seq, id);
        self.waiting_count += 1;
        let deadline = match wait {
            Wait::For(ms) => Some(deadline_after(self.now_ms, ms)),
            Wait::Forever | Wait::Try => None,
        };
        if let Some(deadline) = deadline {
            self.timers.insert((deadline, super::Timer::Wait(id)));
        }
        WaitState { seq, since_ms: self.now_ms, deadline, origin }
    }

    /// A repeat of an earlier acquire (same scope and `request_id`): the same hold, or the same
    /// place in the queue with the new request's origin and wait.
    fn repeat(
        &mut self,
        earlier: HoldId,
        acquire: &Acquire,
        effects: &mut Vec<Effect>,
    ) -> Result<Response, CoreError> {
        let entry = self.entries.get(&earlier).expect("request index points at an entry");
        let (mode, permits) = mode_and_permits(acquire.want);
        let same_request = entry.name == acquire.name
            && entry.mode == mode
            && entry.permits == permits
            && self.names.get(&entry.name).is_some_and(|s| s.kind == NameKind::of(acquire.want));
        if !same_request {
            return Err(CoreError::Conflict(
                "request_id was already used for a different acquire".into(),
            ));
        }
        let wait = match &entry.state {
            EntryState::Held(_) => {
                let hold = self.view(earlier).expect("held entry has a view");
                return Ok(Response::Granted { hold, repeat: true });
            }
            EntryState::Waiting(wait) => wait.as_ref().clone(),
        };
        let new_wait = match acquire.wait {
            Wait::For(0) => Wait::Try,
            other => other,
        };
        if new_wait == Wait::Try {
            self.end_entry(earlier, Ending::Voluntary { waiter: WaitEnd::Replaced }, effects);
            return Err(CoreError::Locked(self.describe_busy(&acquire.name)));
        }
        if wait.origin != acquire.origin {
            effects.push(Effect::WaitEnded {
                hold_id: earlier,
                name: acquire.name.clone(),
                origin: wait.origin,
                reason: WaitEnd::Replaced,
            });
        }
        let deadline = match new_wait {
            Wait::For(ms) => Some(deadline_after(self.now_ms, ms)),
            Wait::Forever | Wait::Try => None,
        };
        if let Some(old) = wait.deadline {
            self.timers.remove(&(old, Timer::Wait(earlier)));
        }
        if let Some(new) = deadline {
            self.timers.insert((new, Timer::Wait(earlier)));
        }
        let entry = self.entries.get_mut(&earlier).expect("still present");
        if let EntryState::Waiting(state) = &mut entry.state {
            state.deadline = deadline;
            state.origin = acquire.origin;
        }
        let position = self.names.get(&acquire.name).map_or(0, |state| {
            state.queue.as_ref().map_or(0, |queue| queue.range(..=wait.seq).count())
        });
        Ok(Response::Queued { hold_id: earlier, position })
    }

    fn describe_busy(&self, name: &crate::name::LockName) -> String {
        match self.names.get(name) {
            Some(state) if state.delay_until > self.now_ms => {
                format!("lock-delay in effect for {} ms more", state.delay_until - self.now_ms)
            }
            Some(state) if state.waiter_count() > 0 && state.holders.is_empty() => {
                "the name has waiters ahead".into()
            }
            _ => "the name is held".into(),
        }
    }
}

fn want_is_exclusive_lock(want: Want) -> bool {
    matches!(want, Want::Lock(Mode::Exclusive))
}

fn describe_kind_mismatch(existing: NameKind, wanted: NameKind) -> String {
    match (existing, wanted) {
        (NameKind::Lock, NameKind::Semaphore { .. }) => {
            "the name is in use as a lock, not a semaphore".into()
        }
        (NameKind::Semaphore { .. }, NameKind::Lock) => {
            "the name is in use as a semaphore, not a lock".into()
        }
        (NameKind::Semaphore { limit: have }, NameKind::Semaphore { limit: want }) => {
            format!("the semaphore is in use with limit {have}, not {want}")
        }
        (NameKind::Lock, NameKind::Lock) => "the name is in use with another kind".into(),
    }
}
