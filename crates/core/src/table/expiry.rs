//! Expiry: before every command, everything whose deadline ≤ now is treated as gone, in phases
//! (dead waiters, then sessions, then holds, then lock-delays), and only then are the freed
//! names granted. `Resume` cancels waiters of dead node boots first and extends deadlines last.

use crate::effect::{Effect, LostReason, SessionEnd, WaitEnd};
use crate::ids::{Holder, NodeEpoch};

use super::{Ending, EntryState, OptMs, Table, Timer};

impl Table {
    pub(super) fn run_due(&mut self, effects: &mut Vec<Effect>) {
        let now = self.now_ms;
        let mut due = Vec::new();
        while self.timers.first_deadline().is_some_and(|deadline| deadline <= now) {
            due.extend(self.timers.pop_first());
        }
        if due.is_empty() {
            return;
        }
        due.sort_by(|a, b| (a.1.phase(), a.0, &a.1).cmp(&(b.1.phase(), b.0, &b.1)));
        for (deadline, timer) in due {
            self.fire(deadline, timer, effects);
        }
    }

    fn fire(&mut self, deadline: u64, timer: Timer, effects: &mut Vec<Effect>) {
        match timer {
            Timer::Wait(id) => {
                let due = self
                    .entries
                    .get(&id)
                    .and_then(|entry| entry.waiting())
                    .is_some_and(|wait| wait.deadline == Some(deadline));
                if due {
                    self.end_entry(id, Ending::Voluntary { waiter: WaitEnd::Timeout }, effects);
                }
            }
            Timer::Session(id) => {
                if self.sessions.get(&id).is_some_and(|session| session.deadline == deadline) {
                    self.end_session_involuntarily(id, deadline, effects);
                }
            }
            Timer::Hold(id) => {
                let due = self
                    .entries
                    .get(&id)
                    .and_then(|entry| entry.held())
                    .is_some_and(|held| held.expires_at.get() == Some(deadline));
                if due {
                    let how = Ending::Involuntary {
                        lost: LostReason::Expired,
                        waiter: WaitEnd::Timeout,
                        at: deadline,
                        lock_delay: true,
                    };
                    self.end_entry(id, how, effects);
                }
            }
            Timer::Delay(name) => {
                let cleared = match self.names.get_mut(&name) {
                    Some(mut state) if state.delay_until == deadline => {
                        state.delay_until = 0;
                        true
                    }
                    _ => false,
                };
                if cleared {
                    self.touch(&name);
                }
            }
            Timer::Request(id) => {
                let Some(entry) = self.entries.get_mut(&id) else {
                    return;
                };
                if entry.request.as_ref().is_some_and(|request| request.retain_until == deadline) {
                    let request = entry.request.take().expect("checked above");
                    let scope = crate::command::RequestScope::of(&entry.holder, &entry.owner);
                    self.by_request.remove(&(scope, request.request_id));
                }
            }
        }
    }

    /// A session's lease ran out at `at`: its holds are lost (with lock-delay), its waiters
    /// cancelled, all in this one step.
    pub(super) fn end_session_involuntarily(
        &mut self,
        id: crate::ids::SessionId,
        at: u64,
        effects: &mut Vec<Effect>,
    ) {
        let Some(session) = self.sessions.remove(&id) else {
            return;
        };
        self.timers.remove(&(session.deadline, Timer::Session(id)));
        let how = Ending::Involuntary {
            lost: LostReason::Session,
            waiter: WaitEnd::SessionEnded,
            at,
            lock_delay: true,
        };
        for entry_id in self.entries_of(&Holder::Session(id)) {
            self.end_entry(entry_id, how, effects);
        }
        effects.push(Effect::SessionEnded { session_id: id, reason: SessionEnd::Expired });
    }

    /// `Resume`, step one: waiters whose serving node boot is not live can never be answered;
    /// they go before any grant, so they never become invisible holders.
    pub(super) fn cancel_dead_boots(&mut self, live: &[NodeEpoch], effects: &mut Vec<Effect>) {
        let mut dead: Vec<(u64, crate::ids::HoldId)> = self
            .entries
            .values()
            .filter_map(|entry| match &entry.state {
                EntryState::Waiting(wait) if !live.contains(&wait.origin.boot) => {
                    Some((wait.seq, entry.id))
                }
                _ => None,
            })
            .collect();
        dead.sort_unstable();
        for (_, id) in dead {
            self.end_entry(id, Ending::Voluntary { waiter: WaitEnd::NodeGone }, effects);
        }
    }

    /// `Resume`, last step: every hold, session and lock-delay deadline moves `margin_ms` later,
    /// so a restart or leader change never shortens one. Wait deadlines belong to live requests
    /// and stay.
    pub(super) fn extend_deadlines(&mut self, margin_ms: u64) {
        if margin_ms == 0 {
            return;
        }
        let timers = std::mem::take(&mut self.timers);
        for (deadline, timer) in timers.drain() {
            let moved = deadline.saturating_add(margin_ms);
            match &timer {
                Timer::Hold(id) => {
                    if let Some(EntryState::Held(held)) =
                        self.entries.get_mut(id).map(|entry| &mut entry.state)
                    {
                        held.expires_at = OptMs::new(Some(moved));
                    }
                    self.timers.insert((moved, timer));
                }
                Timer::Session(id) => {
                    if let Some(session) = self.sessions.get_mut(id) {
                        session.deadline = moved;
                    }
                    self.timers.insert((moved, timer));
                }
                Timer::Delay(name) => {
                    if let Some(mut state) = self.names.get_mut(name) {
                        state.delay_until = moved;
                    }
                    self.timers.insert((moved, timer));
                }
                Timer::Wait(_) | Timer::Request(_) => {
                    self.timers.insert((deadline, timer));
                }
            }
        }
    }
}
