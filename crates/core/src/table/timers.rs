//! The deadline index: every hold, wait, session, lock-delay and request id that ends at a
//! log time, ordered by (deadline, phase, id).
//!
//! One B-tree per kind of timer, so a key is a deadline and a bare id (24 bytes) instead of a
//! deadline and a tagged `Timer` (32). Deadlines mostly arrive in ascending order, which leaves
//! a B-tree's nodes about half full: each key costs about twice its size.

use std::collections::BTreeSet;

use crate::ids::{HoldId, SessionId};
use crate::name::LockName;

use super::Timer;

#[derive(Debug, Default)]
pub(crate) struct Timers {
    waits: BTreeSet<(u64, HoldId)>,
    sessions: BTreeSet<(u64, SessionId)>,
    holds: BTreeSet<(u64, HoldId)>,
    delays: BTreeSet<(u64, LockName)>,
    requests: BTreeSet<(u64, HoldId)>,
}

impl Timers {
    pub(crate) fn insert(&mut self, (deadline, timer): (u64, Timer)) -> bool {
        match timer {
            Timer::Wait(id) => self.waits.insert((deadline, id)),
            Timer::Session(id) => self.sessions.insert((deadline, id)),
            Timer::Hold(id) => self.holds.insert((deadline, id)),
            Timer::Delay(name) => self.delays.insert((deadline, name)),
            Timer::Request(id) => self.requests.insert((deadline, id)),
        }
    }

    pub(crate) fn remove(&mut self, (deadline, timer): &(u64, Timer)) -> bool {
        match timer {
            Timer::Wait(id) => self.waits.remove(&(*deadline, *id)),
            Timer::Session(id) => self.sessions.remove(&(*deadline, *id)),
            Timer::Hold(id) => self.holds.remove(&(*deadline, *id)),
            Timer::Delay(name) => self.delays.remove(&(*deadline, name.clone())),
            Timer::Request(id) => self.requests.remove(&(*deadline, *id)),
        }
    }

    pub(crate) fn contains(&self, (deadline, timer): &(u64, Timer)) -> bool {
        match timer {
            Timer::Wait(id) => self.waits.contains(&(*deadline, *id)),
            Timer::Session(id) => self.sessions.contains(&(*deadline, *id)),
            Timer::Hold(id) => self.holds.contains(&(*deadline, *id)),
            Timer::Delay(name) => self.delays.contains(&(*deadline, name.clone())),
            Timer::Request(id) => self.requests.contains(&(*deadline, *id)),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.waits.len()
            + self.sessions.len()
            + self.holds.len()
            + self.delays.len()
            + self.requests.len()
    }

    /// The earliest deadline and the kind that comes first at it (the phase order).
    fn first_kind(&self) -> Option<(u64, u8)> {
        [
            self.waits.first().map(|(at, _)| *at),
            self.sessions.first().map(|(at, _)| *at),
            self.holds.first().map(|(at, _)| *at),
            self.delays.first().map(|(at, _)| *at),
            self.requests.first().map(|(at, _)| *at),
        ]
        .into_iter()
        .zip(0u8..)
        .filter_map(|(at, kind)| Some((at?, kind)))
        .min()
    }

    /// The earliest timer, as the single index would order it.
    pub(crate) fn first(&self) -> Option<(u64, Timer)> {
        let (deadline, kind) = self.first_kind()?;
        let timer = match kind {
            0 => Timer::Wait(self.waits.first()?.1),
            1 => Timer::Session(self.sessions.first()?.1),
            2 => Timer::Hold(self.holds.first()?.1),
            3 => Timer::Delay(self.delays.first()?.1.clone()),
            _ => Timer::Request(self.requests.first()?.1),
        };
        Some((deadline, timer))
    }

    /// The earliest deadline.
    pub(crate) fn first_deadline(&self) -> Option<u64> {
        self.first_kind().map(|(deadline, _)| deadline)
    }

    pub(crate) fn pop_first(&mut self) -> Option<(u64, Timer)> {
        let (_, kind) = self.first_kind()?;
        match kind {
            0 => self.waits.pop_first().map(|(at, id)| (at, Timer::Wait(id))),
            1 => self.sessions.pop_first().map(|(at, id)| (at, Timer::Session(id))),
            2 => self.holds.pop_first().map(|(at, id)| (at, Timer::Hold(id))),
            3 => self.delays.pop_first().map(|(at, name)| (at, Timer::Delay(name))),
            _ => self.requests.pop_first().map(|(at, id)| (at, Timer::Request(id))),
        }
    }

    /// Every timer, kind by kind (not in deadline order).
    pub(crate) fn drain(self) -> impl Iterator<Item = (u64, Timer)> {
        let waits = self.waits.into_iter().map(|(at, id)| (at, Timer::Wait(id)));
        let sessions = self.sessions.into_iter().map(|(at, id)| (at, Timer::Session(id)));
        let holds = self.holds.into_iter().map(|(at, id)| (at, Timer::Hold(id)));
        let delays = self.delays.into_iter().map(|(at, name)| (at, Timer::Delay(name)));
        let requests = self.requests.into_iter().map(|(at, id)| (at, Timer::Request(id)));
        waits.chain(sessions).chain(holds).chain(delays).chain(requests)
    }

    #[cfg(test)]
    pub(crate) fn remove_holds(&mut self) {
        self.holds.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_come_out_by_deadline_then_phase_then_id() {
        let mut timers = Timers::default();
        let name = LockName::new("n").unwrap();
        let all = [
            (5, Timer::Request(HoldId::from_u128(1))),
            (5, Timer::Delay(name.clone())),
            (5, Timer::Hold(HoldId::from_u128(9))),
            (5, Timer::Hold(HoldId::from_u128(2))),
            (5, Timer::Session(SessionId::from_u128(3))),
            (5, Timer::Wait(HoldId::from_u128(4))),
            (3, Timer::Request(HoldId::from_u128(5))),
            (7, Timer::Wait(HoldId::from_u128(6))),
        ];
        for timer in all.iter().cloned() {
            assert!(timers.insert(timer));
        }
        assert!(!timers.insert((5, Timer::Delay(name.clone()))), "no duplicates");
        assert!(timers.contains(&(5, Timer::Hold(HoldId::from_u128(9)))));
        assert_eq!(timers.len(), all.len());
        let mut expected: Vec<_> = all.to_vec();
        expected.sort();
        let mut popped = Vec::new();
        while let Some(first) = timers.first() {
            assert_eq!(timers.first_deadline(), Some(first.0));
            assert_eq!(timers.pop_first(), Some(first.clone()));
            popped.push(first);
        }
        assert_eq!(popped, expected);
        assert_eq!(timers.len(), 0);
    }
}
