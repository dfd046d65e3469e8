//! Release by id, by `request_id`, by compat owner, by holder; and renew.

use std::sync::Arc;

use crate::command::{ReleaseReason, RequestScope, TtlChange};
use crate::effect::{Effect, Kind, LostReason, Response, WaitEnd};
use crate::error::CoreError;
use crate::ids::{HoldId, Holder};
use crate::name::LockName;

use super::acquire::validate_ttl;
use super::{deadline_after, Ending, EntryState, OptMs, Table, Timer};

fn no_such_hold() -> CoreError {
    CoreError::NotFound("no live hold or waiter with that id".into())
}

impl Table {
    /// Releases a hold or withdraws a waiter. An unknown or expired id is `not_found` and
    /// touches nothing else.
    pub(super) fn release(
        &mut self,
        hold_id: HoldId,
        reason: ReleaseReason,
        effects: &mut Vec<Effect>,
    ) -> Result<Response, CoreError> {
        let how = match reason {
            ReleaseReason::Client => Ending::Voluntary { waiter: WaitEnd::Cancelled },
            ReleaseReason::Undeliverable => Ending::Involuntary {
                lost: LostReason::Undeliverable,
                waiter: WaitEnd::Cancelled,
                at: self.now_ms,
                lock_delay: false,
            },
        };
        if self.end_entry(hold_id, how, effects) {
            Ok(Response::Released)
        } else {
            Err(no_such_hold())
        }
    }

    pub(super) fn release_of(
        &mut self,
        name: &LockName,
        kind: Kind,
        hold_id: HoldId,
        effects: &mut Vec<Effect>,
    ) -> Result<Response, CoreError> {
        let belongs = self.entries.get(&hold_id).is_some_and(|entry| {
            &entry.name == name
                && self.names.get(name).is_some_and(|state| state.kind.kind() == kind)
        });
        if !belongs {
            return Err(CoreError::NotFound(format!(
                "no live {} hold or waiter with that id on this name",
                kind.as_str()
            )));
        }
        self.release(hold_id, ReleaseReason::Client, effects)
    }

    pub(super) fn release_by_request(
        &mut self,
        name: &LockName,
        scope: RequestScope,
        request_id: Arc<str>,
        effects: &mut Vec<Effect>,
    ) -> Result<Response, CoreError> {
        let found = self.by_request.get(&(scope, request_id)).copied();
        let Some(id) = found.filter(|id| self.entries.get(id).is_some_and(|e| &e.name == name))
        else {
            return Err(CoreError::NotFound(
                "no live hold or waiter for that request_id on this name".into(),
            ));
        };
        self.release(id, ReleaseReason::Client, effects)
    }

    /// The Lockserver compat release: only the hold whose identity is `owner` on this name.
    pub(super) fn release_owned(
        &mut self,
        name: &LockName,
        owner: Arc<str>,
        effects: &mut Vec<Effect>,
    ) -> Result<Response, CoreError> {
        let key = (Holder::CompatOwner(owner), name.clone());
        let held_by_owner = self
            .by_holder
            .get(&key)
            .copied()
            .filter(|id| self.entries.get(id).is_some_and(|entry| entry.held().is_some()));
        if let Some(id) = held_by_owner {
            return self.release(id, ReleaseReason::Client, effects);
        }
        match self.names.get(name) {
            Some(state) if !state.holders.is_empty() => {
                Err(CoreError::Locked("the resource is locked by another owner".into()))
            }
            _ => Err(CoreError::NotFound("the resource is not locked".into())),
        }
    }

    /// Everything of one holder goes, voluntarily (a compat connection closed).
    pub(super) fn release_holder(
        &mut self,
        holder: &Holder,
        effects: &mut Vec<Effect>,
    ) -> Result<Response, CoreError> {
        if *holder == Holder::Anonymous {
            return Err(CoreError::InvalidArgument("anonymous holds have no holder".into()));
        }
        let (mut holds, mut waiters) = (0, 0);
        for id in self.entries_of(holder) {
            let held = self.entries.get(&id).is_some_and(|entry| entry.held().is_some());
            if self.end_entry(id, Ending::Voluntary { waiter: WaitEnd::Cancelled }, effects) {
                if held {
                    holds += 1;
                } else {
                    waiters += 1;
                }
            }
        }
        Ok(Response::ReleasedAll { holds, waiters })
    }

    /// Renews a live hold: `Same` renews for its current TTL, `Unlimited` removes the expiry.
    pub(super) fn renew(&mut self, hold_id: HoldId, ttl: TtlChange) -> Result<Response, CoreError> {
        let now = self.now_ms;
        let entry = self.entries.get_mut(&hold_id).ok_or_else(no_such_hold)?;
        let ttl_ms = match ttl {
            TtlChange::Same => entry.ttl_ms.get(),
            TtlChange::Set(ms) => {
                validate_ttl(Some(ms))?;
                Some(ms)
            }
            TtlChange::Unlimited => None,
        };
        let EntryState::Held(held) = &mut entry.state else {
            return Err(CoreError::NotFound("the request is still waiting, not held".into()));
        };
        let old = held.expires_at.get();
        let new = ttl_ms.map(|ttl| deadline_after(now, ttl));
        held.expires_at = OptMs::new(new);
        entry.ttl_ms = OptMs::new(ttl_ms);
        if let Some(old) = old {
            self.timers.remove(&(old, Timer::Hold(hold_id)));
        }
        if let Some(new) = new {
            self.timers.insert((new, Timer::Hold(hold_id)));
        }
        let hold = self.view(hold_id).expect("renewed hold is live");
        Ok(Response::Renewed { hold })
    }
}
