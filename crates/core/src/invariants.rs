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
        if *deadline <= now {
            return Err(format!("{timer:?} is due at {deadline} but still pending at {now}"));
        }
    }
    for (name, state) in &table.names {
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
    for (id, entry) in &table.entries {
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
                if held.token == 0 || held.token >= table.next_token || held.token > MAX_TOKEN {
                    return Err(format!("{id:?} has token {} out of range", held.token));
                }
                if !tokens.insert(held.token) {
                    return Err(format!("token {} is issued twice", held.token));
                }
                if held.token > state.last_token {
                    return Err(format!("{id:?} has a token above its name's last token"));
                }
                if let Some(at) = held.expires_at {
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
    for (name, state) in &table.names {
        check_name(table, name.as_str(), state)?;
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
    for id in &state.holders {
        let entry = table.entries.get(id).ok_or_else(|| format!("{name:?}: unknown holder"))?;
        let held = entry.held().ok_or_else(|| format!("{name:?}: holder {id:?} is waiting"))?;
        if held.token <= last {
            return Err(format!("{name:?}: holder tokens are not increasing"));
        }
        last = held.token;
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
