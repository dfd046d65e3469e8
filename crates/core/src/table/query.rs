//! Read-only views. Each judges liveness at the given log time exactly as a command would:
//! a hold, waiter or session whose deadline ≤ `now_ms` is not shown, even before `Expire` ran.

use std::ops::Bound;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::command::{Mode, RequestScope};
use crate::effect::{HoldView, Kind};
use crate::ids::{FencingToken, HoldId, Holder, SessionId};
use crate::name::LockName;

use super::{remaining, Entry, EntryState, NameKind, NameState, Table};

/// A name as `GET /v1/locks/{name}` and the admin listing show it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct NameView {
    pub name: LockName,
    /// `None` for a name nobody holds or waits on.
    pub kind: Option<Kind>,
    pub limit: Option<u32>,
    pub holders: Vec<HoldView>,
    pub waiters: Vec<WaiterView>,
    pub last_token: Option<FencingToken>,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct WaiterView {
    pub hold_id: HoldId,
    pub name: LockName,
    pub owner: Arc<str>,
    pub holder: Holder,
    pub mode: Option<Mode>,
    pub permits: u32,
    pub waiting_ms: u64,
    /// Remaining wait; `None` waits without deadline.
    pub wait_remaining_ms: Option<u64>,
    /// Wall-clock estimate of when the wait began (display only).
    pub since_wall_ms: u64,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SessionView {
    pub session_id: SessionId,
    pub owner: Arc<str>,
    pub ttl_ms: u64,
    pub expires_in_ms: u64,
    pub holds: Vec<HoldView>,
    pub waiters: usize,
}

impl Table {
    fn session_live(&self, holder: &Holder, now_ms: u64) -> bool {
        match holder {
            Holder::Session(id) => self.sessions.get(id).is_some_and(|s| s.deadline > now_ms),
            _ => true,
        }
    }

    fn entry_live(&self, entry: &Entry, now_ms: u64) -> bool {
        let own_deadline_ok = match &entry.state {
            EntryState::Held(held) => held.expires_at.get().is_none_or(|at| at > now_ms),
            EntryState::Waiting(wait) => wait.deadline.is_none_or(|at| at > now_ms),
        };
        own_deadline_ok && self.session_live(&entry.holder, now_ms)
    }

    fn view_at(&self, id: HoldId, now_ms: u64) -> Option<HoldView> {
        let entry = self.entries.get(&id)?;
        if entry.held().is_none() || !self.entry_live(entry, now_ms) {
            return None;
        }
        let mut view = self.view(id)?;
        let expires_at = entry.held().and_then(|held| held.expires_at.get());
        view.expires_in_ms = expires_at.map(|at| remaining(at, now_ms));
        Some(view)
    }

    /// The live hold with this id.
    pub fn hold(&self, id: HoldId, now_ms: u64) -> Option<HoldView> {
        self.view_at(id, now_ms.max(self.now_ms))
    }

    /// The live waiting acquire with this id.
    pub fn waiter(&self, id: HoldId, now_ms: u64) -> Option<WaiterView> {
        let now_ms = now_ms.max(self.now_ms);
        let entry = self.entries.get(&id)?;
        if entry.waiting().is_none() || !self.entry_live(entry, now_ms) {
            return None;
        }
        self.waiter_view(id, entry, now_ms)
    }

    fn waiter_view(&self, id: HoldId, entry: &Entry, now_ms: u64) -> Option<WaiterView> {
        let wait = entry.waiting()?;
        let kind = self.names.get(&entry.name)?.kind;
        let waiting_ms = now_ms.saturating_sub(wait.since_ms);
        Some(WaiterView {
            hold_id: id,
            name: entry.name.clone(),
            owner: entry.owner.clone(),
            holder: entry.holder.clone(),
            mode: (kind == NameKind::Lock).then_some(entry.mode),
            permits: entry.permits,
            waiting_ms,
            wait_remaining_ms: wait.deadline.map(|at| remaining(at, now_ms)),
            since_wall_ms: self.wall_ms.saturating_sub(self.now_ms.saturating_sub(wait.since_ms)),
        })
    }

    /// `check`: whether a live hold of `name` carries `token` (Chubby's CheckSequencer).
    pub fn check(&self, name: &str, token: u64, now_ms: u64) -> bool {
        let now_ms = now_ms.max(self.now_ms);
        let Some(state) = self.names.get(name) else {
            return false;
        };
        state.holders.iter().any(|id| {
            self.entries.get(id).is_some_and(|entry| {
                entry.held().is_some_and(|held| held.token.get() == token)
                    && self.entry_live(entry, now_ms)
            })
        })
    }

    /// One name with its live holders and waiters.
    pub fn name_view(&self, name: &LockName, now_ms: u64) -> NameView {
        let now_ms = now_ms.max(self.now_ms);
        match self.names.get(name) {
            Some(state) => self.state_view(name, &state, now_ms),
            None => NameView {
                name: name.clone(),
                kind: None,
                limit: None,
                holders: Vec::new(),
                waiters: Vec::new(),
                last_token: None,
            },
        }
    }

    fn state_view(&self, name: &LockName, state: &NameState, now_ms: u64) -> NameView {
        let holders = state.holders.iter().filter_map(|id| self.view_at(*id, now_ms)).collect();
        let waiters = state
            .queue
            .iter()
            .flat_map(|queue| queue.values())
            .filter_map(|id| {
                let entry = self.entries.get(id)?;
                if !self.entry_live(entry, now_ms) {
                    return None;
                }
                self.waiter_view(*id, entry, now_ms)
            })
            .collect();
        let (kind, limit) = match state.kind {
            NameKind::Lock => (Kind::Lock, None),
            NameKind::Semaphore { limit } => (Kind::Semaphore, Some(limit)),
        };
        NameView {
            name: name.clone(),
            kind: Some(kind),
            limit,
            holders,
            waiters,
            last_token: (state.last_token > 0).then_some(FencingToken(state.last_token)),
        }
    }

    /// Admin listing: names starting with `prefix`, after the cursor `after`, in name order, at
    /// most `limit` of them; the second value is the cursor for the next page.
    pub fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now_ms: u64,
    ) -> (Vec<NameView>, Option<String>) {
        let now_ms = now_ms.max(self.now_ms);
        let start: Bound<&str> = match after {
            Some(cursor) if cursor >= prefix => Bound::Excluded(cursor),
            _ => Bound::Included(prefix),
        };
        let mut page = Vec::new();
        let mut range = self
            .names
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(|(name, _)| name.as_str().starts_with(prefix));
        for (name, state) in range.by_ref() {
            if page.len() == limit {
                let next = page.last().map(|view: &NameView| view.name.as_str().to_string());
                return (page, next);
            }
            page.push(self.state_view(name, &state, now_ms));
        }
        (page, None)
    }

    /// One live session with its live holds.
    pub fn session(&self, id: SessionId, now_ms: u64) -> Option<SessionView> {
        let now_ms = now_ms.max(self.now_ms);
        let session = self.sessions.get(&id)?;
        if session.deadline <= now_ms {
            return None;
        }
        let mut holds = Vec::new();
        let mut waiters = 0;
        for entry_id in self.entries_of(&Holder::Session(id)) {
            match self.entries.get(&entry_id).map(|entry| &entry.state) {
                Some(EntryState::Held(_)) => holds.extend(self.view_at(entry_id, now_ms)),
                Some(EntryState::Waiting(wait)) => {
                    waiters += usize::from(wait.deadline.is_none_or(|at| at > now_ms))
                }
                None => {}
            }
        }
        Some(SessionView {
            session_id: id,
            owner: session.owner.clone(),
            ttl_ms: session.ttl_ms,
            expires_in_ms: remaining(session.deadline, now_ms),
            holds,
            waiters,
        })
    }

    /// Every live session, in id order.
    pub fn sessions(&self, now_ms: u64) -> Vec<SessionView> {
        let mut ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter().filter_map(|id| self.session(id, now_ms)).collect()
    }

    /// The entry an acquire with this scope and `request_id` created, while it dedupes.
    pub fn by_request_id(&self, scope: &RequestScope, request_id: &str) -> Option<HoldId> {
        self.by_request.get(&(scope.clone(), Arc::from(request_id))).copied()
    }

    /// Counts for metrics: names, holds, waiters, sessions.
    pub fn stats(&self) -> TableStats {
        TableStats {
            names: self.names.len(),
            holds: self.entries.len() - self.waiting_count,
            waiters: self.waiting_count,
            sessions: self.sessions.len(),
            next_token: self.next_token,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct TableStats {
    pub names: usize,
    pub holds: usize,
    pub waiters: usize,
    pub sessions: usize,
    pub next_token: u64,
}
