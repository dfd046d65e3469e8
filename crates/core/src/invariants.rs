//! The table's rules as plain functions: tests call them after every step, and `apply` runs
//! them under `debug_assert!` on small tables.

use std::collections::BTreeSet;

use crate::command::Mode;
use crate::ids::{Holder, MAX_TOKEN};
use crate::table::{EntryState, NameKind, Table, Timer};

/// Every rule, including liveness: after a command nothing live is past its deadline and no
/// waiter that could proceed is left waiting.
pub fn check(table: &Table) -> Result<(), String> {
    check_structure(table)?;
    let now = table.now_ms;
    if let Some((deadline, timer)) = table.timers.first() {
        if deadline <= now {
            return Err(format!("{timer:?} is due at {deadline} but still pending at {now}"));
        }
    }
    for (name, state) in table.names.iter() {
        if state.holders.is_empty() && state.waiter_count() == 0 && state.delay_until <= now {
            return Err(format!("{name:?} is unused but still in the table"));
        }
        if state.delay_until > now {
            continue;
        }
        if let Some(head) = state.first_waiter() {
            let entry = &table.entries[&head];
            if state.fits(entry.mode, entry.permits) && table.next_token <= MAX_TOKEN {
                return Err(format!("{name:?}: head waiter {head:?} could be granted but waits"));
            }
        }
    }
    Ok(())
}

/// The rules that hold at every moment, even with due deadlines not yet processed (a restored
/// snapshot): mutual exclusion, counts, tokens and every index agreeing with the entries.
pub fn check_structure(table: &Table) -> Result<(), String> {
    let mut tokens = BTreeSet::new();
    let mut waiting = 0;
    let mut expected_timers = 0;
    for entry in table.entries.values() {
        let id = &entry.id;
        let Some(state) = table.names.get(&entry.name) else {
            return Err(format!("{id:?} refers to {:?}, which is not in the table", entry.name));
        };
        if let Holder::Session(session) = &entry.holder {
            if !table.sessions.contains_key(session) {
                return Err(format!("{id:?} belongs to the missing session {session:?}"));
            }
        }
        if entry.holder != Holder::Anonymous
            && table.by_holder.get(&(entry.holder.clone(), entry.name.clone())) != Some(id)
        {
            return Err(format!("{id:?} is missing from the holder index"));
        }
        if let Some(request) = &entry.request {
            expected_timers += 1;
            if !table.timers.contains(&(request.retain_until, Timer::Request(*id))) {
                return Err(format!("{id:?} has no request-id timer"));
            }
        }
        match &entry.state {
            EntryState::Held(held) => {
                if !state.holders.contains(id) {
                    return Err(format!("{id:?} is held but not listed as a holder"));
                }
                let token = held.token.get();
                if token >= table.next_token || token > MAX_TOKEN {
                    return Err(format!("{id:?} has token {token} out of range"));
                }
                if !tokens.insert(token) {
                    return Err(format!("token {token} is issued twice"));
                }
                if token > state.last_token {
                    return Err(format!("{id:?} has a token above its name's last token"));
                }
                if let Some(at) = held.expires_at.get() {
                    expected_timers += 1;
                    if !table.timers.contains(&(at, Timer::Hold(*id))) {
                        return Err(format!("{id:?} has no expiry timer"));
                    }
                }
            }
            EntryState::Waiting(wait) => {
                waiting += 1;
                if state.queue.as_ref().and_then(|queue| queue.get(&wait.seq)) != Some(id) {
                    return Err(format!("{id:?} waits but is not in its name's queue"));
                }
                if let Some(at) = wait.deadline {
                    expected_timers += 1;
                    if !table.timers.contains(&(at, Timer::Wait(*id))) {
                        return Err(format!("{id:?} has no wait timer"));
                    }
                }
            }
        }
    }
    if waiting != table.waiting_count {
        return Err(format!("waiting count {} but {waiting} waiters", table.waiting_count));
    }
    let indexed = table.entries.values().filter(|e| e.holder != Holder::Anonymous).count();
    if indexed != table.by_holder.len() {
        return Err(format!(
            "holder index has {} rows for {indexed} entries",
            table.by_holder.len()
        ));
    }
    let with_request = table.entries.values().filter(|e| e.request.is_some()).count();
    if with_request != table.by_request.len() {
        return Err("request index disagrees with the entries".into());
    }
    for (name, state) in table.names.iter() {
        check_name(table, name.as_str(), &state)?;
        if state.delay_until > 0 {
            expected_timers += 1;
            if !table.timers.contains(&(state.delay_until, Timer::Delay(name.clone()))) {
                return Err(format!("{name:?} has a lock-delay without a timer"));
            }
        }
    }
    for (id, session) in &table.sessions {
        expected_timers += 1;
        if !table.timers.contains(&(session.deadline, Timer::Session(*id))) {
            return Err(format!("{id:?} has no session timer"));
        }
    }
    if expected_timers != table.timers.len() {
        return Err(format!("{} timers for {expected_timers} deadlines", table.timers.len()));
    }
    Ok(())
}

fn check_name(table: &Table, name: &str, state: &crate::table::NameState) -> Result<(), String> {
    let mut last = 0;
    let mut exclusive = 0;
    let mut shared = 0;
    let mut permits = 0u64;
    for id in state.holders.iter() {
        let entry = table.entries.get(id).ok_or_else(|| format!("{name:?}: unknown holder"))?;
        let held = entry.held().ok_or_else(|| format!("{name:?}: holder {id:?} is waiting"))?;
        if held.token.get() <= last {
            return Err(format!("{name:?}: holder tokens are not increasing"));
        }
        last = held.token.get();
        match entry.mode {
            Mode::Exclusive => exclusive += 1,
            Mode::Shared => shared += 1,
        }
        permits += u64::from(entry.permits);
    }
    match state.kind {
        NameKind::Lock => {
            if exclusive > 1 {
                return Err(format!("{name:?} has {exclusive} exclusive holders"));
            }
            if exclusive == 1 && shared > 0 {
                return Err(format!("{name:?} has exclusive and shared holders together"));
            }
            if state.exclusive != (exclusive == 1) || state.used as usize != exclusive + shared {
                return Err(format!("{name:?}: lock counters disagree with the holders"));
            }
        }
        NameKind::Semaphore { limit } => {
            if permits > u64::from(limit) {
                return Err(format!("{name:?}: {permits} permits held, limit {limit}"));
            }
            if u64::from(state.used) != permits {
                return Err(format!("{name:?}: permit counter disagrees with the holders"));
            }
        }
    }
    if let Some(queue) = &state.queue {
        if queue.is_empty() {
            return Err(format!("{name:?} keeps an empty queue"));
        }
        for id in queue.values() {
            let entry = table.entries.get(id).ok_or_else(|| format!("{name:?}: unknown waiter"))?;
            if entry.name.as_str() != name || entry.waiting().is_none() {
                return Err(format!("{name:?}: queued {id:?} is not a waiter of this name"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::command::{Acquire, Command, Ctx, Wait, Want};
    use crate::ids::{HoldId, NodeEpoch, Origin, SessionId, Via};
    use crate::name::LockName;
    use crate::table::NameState;

    const X_HOLDER: u128 = 1;
    const X_WAITER: u128 = 2;
    const READER_1: u128 = 3;
    const READER_2: u128 = 4;
    const PERMITS: u128 = 5;
    const SESSION_HOLD: u128 = 6;
    const SESSION: u128 = 99;

    fn id(value: u128) -> HoldId {
        HoldId::from_u128(value)
    }

    /// A valid table: "x" held exclusively with a waiter, "s" with two readers, "m" a semaphore
    /// hold (2 of 3, the only entry with a TTL), and a session's hold on "z".
    fn table() -> Table {
        let mut table = Table::default();
        let mut effects = Vec::new();
        let ctx = Ctx { now_ms: 1, wall_ms: 0 };
        let session = SessionId::from_u128(SESSION);
        let open =
            Command::OpenSession { session_id: session, ttl_ms: 1_000, owner: Arc::from("") };
        table.apply(ctx, open, &mut effects).unwrap();
        let entries = [
            (X_HOLDER, "x", Want::Lock(Mode::Exclusive), Holder::Anonymous, None),
            (X_WAITER, "x", Want::Lock(Mode::Exclusive), Holder::Anonymous, None),
            (READER_1, "s", Want::Lock(Mode::Shared), Holder::Anonymous, None),
            (READER_2, "s", Want::Lock(Mode::Shared), Holder::Anonymous, None),
            (PERMITS, "m", Want::Semaphore { limit: 3, permits: 2 }, Holder::Anonymous, Some(500)),
            (SESSION_HOLD, "z", Want::Lock(Mode::Exclusive), Holder::Session(session), None),
        ];
        for (hold_id, name, want, holder, ttl_ms) in entries {
            let acquire = Acquire {
                hold_id: id(hold_id),
                name: LockName::new(name).unwrap(),
                want,
                owner: Arc::from(""),
                holder,
                wait: Wait::Forever,
                ttl_ms,
                lock_delay_ms: 0,
                request_id: None,
                origin: Origin { boot: NodeEpoch { node: 1, epoch: 1 }, via: Via::Request(1) },
            };
            table.apply(ctx, Command::Acquire(acquire), &mut effects).unwrap();
        }
        table
    }

    fn entry(table: &mut Table, hold_id: u128) -> &mut crate::table::Entry {
        table.entries.get_mut(&id(hold_id)).unwrap()
    }

    fn name_state<'a>(
        table: &'a mut Table,
        name: &str,
    ) -> impl std::ops::DerefMut<Target = NameState> + 'a {
        table.names.get_mut(&LockName::new(name).unwrap()).unwrap()
    }

    #[test]
    fn each_broken_rule_is_reported() {
        assert_eq!(check(&table()), Ok(()), "the untouched table is valid");
        type Break = fn(&mut Table);
        let cases: Vec<(&str, Break)> = vec![
            ("2 exclusive holders", |t| {
                entry(t, READER_1).mode = Mode::Exclusive;
                entry(t, READER_2).mode = Mode::Exclusive;
            }),
            ("exclusive and shared holders together", |t| {
                entry(t, READER_2).mode = Mode::Exclusive;
            }),
            ("4 permits held, limit 3", |t| entry(t, PERMITS).permits = 4),
            ("holder tokens are not increasing", |t| name_state(t, "s").holders.reverse()),
            ("is issued twice", |t| {
                let token = entry(t, READER_1).held().unwrap().token;
                if let EntryState::Held(held) = &mut entry(t, READER_2).state {
                    held.token = token;
                }
            }),
            ("token above its name's last token", |t| name_state(t, "s").last_token -= 1),
            ("lock counters disagree", |t| name_state(t, "x").exclusive = false),
            ("permit counter disagrees", |t| name_state(t, "m").used = 3),
            ("is due at", |t| t.now_ms = 10_000),
            ("belongs to the missing session", |t| {
                t.sessions.remove(&SessionId::from_u128(SESSION));
            }),
            ("waits but is not in its name's queue", |t| name_state(t, "x").queue = None),
            ("has no expiry timer", |t| t.timers.remove_holds()),
            ("waiting count", |t| t.waiting_count += 1),
            ("is unused but still in the table", |t| {
                t.names.insert(LockName::new("ghost").unwrap(), NameState::new(NameKind::Lock));
            }),
            ("could be granted but waits", |t| {
                t.entries.remove(&id(X_HOLDER));
                let mut x = name_state(t, "x");
                x.holders = crate::table::Holders::None;
                x.used = 0;
                x.exclusive = false;
            }),
        ];
        for (rule, break_it) in cases {
            let mut table = table();
            break_it(&mut table);
            let err = check(&table).expect_err(rule);
            assert!(err.contains(rule), "{rule}: reported as {err:?}");
        }
    }

    /// `apply` asserts the invariants after every command in debug builds (release builds,
    /// which the test suite runs, compile the assertion out).
    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "exclusive holders")]
    fn apply_checks_the_invariants_in_debug_builds() {
        let mut table = table();
        entry(&mut table, READER_1).mode = Mode::Exclusive;
        entry(&mut table, READER_2).mode = Mode::Exclusive;
        let _ = table.apply(Ctx { now_ms: 2, wall_ms: 0 }, Command::Expire, &mut Vec::new());
    }
}
