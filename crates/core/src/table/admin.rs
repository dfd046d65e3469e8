//! Admin force-release of one hold or of a whole name.

use crate::effect::{Effect, LostReason, Response, WaitEnd};
use crate::error::CoreError;
use crate::ids::HoldId;
use crate::name::LockName;

use super::{Ending, Table};

impl Table {
    /// Releases one hold (its holder gets `lost`, reason `admin`); no lock-delay unless asked.
    pub(super) fn admin_release_hold(
        &mut self,
        hold_id: HoldId,
        lock_delay: bool,
        effects: &mut Vec<Effect>,
    ) -> Result<Response, CoreError> {
        if self.entries.get(&hold_id).is_none_or(|entry| entry.held().is_none()) {
            return Err(CoreError::NotFound("no live hold with that id".into()));
        }
        let how = self.admin_ending(lock_delay);
        self.end_entry(hold_id, how, effects);
        Ok(Response::Released)
    }

    /// Releases every hold of the name (in grant order) and fails every waiter (in queue order)
    /// with `cancelled`.
    pub(super) fn admin_release_name(
        &mut self,
        name: &LockName,
        lock_delay: bool,
        effects: &mut Vec<Effect>,
    ) -> Result<Response, CoreError> {
        let Some(state) = self.names.get(name) else {
            return Err(CoreError::NotFound("nothing holds or waits on that name".into()));
        };
        let mut ids = state.holders.to_vec();
        ids.extend(state.queue.iter().flat_map(|queue| queue.values().copied()));
        if ids.is_empty() {
            return Err(CoreError::NotFound("nothing holds or waits on that name".into()));
        }
        let how = self.admin_ending(lock_delay);
        for id in ids {
            self.end_entry(id, how, effects);
        }
        Ok(Response::Released)
    }

    fn admin_ending(&self, lock_delay: bool) -> Ending {
        Ending::Involuntary {
            lost: LostReason::Admin,
            waiter: WaitEnd::Admin,
            at: self.now_ms,
            lock_delay,
        }
    }
}
