//! The lock table and `apply`.
//!
//! Layout: this file holds the state and the shared mechanics (grant, end an entry, timers);
//! `acquire.rs`, `release.rs`, `session.rs` and `admin.rs` hold one group of commands each,
//! `expiry.rs` the due-deadline sweep that runs before every command and `Resume`, and
//! `query.rs` the read-only views.

mod acquire;
mod admin;
mod entries;
mod expiry;
mod names;
mod query;
mod release;
mod session;
mod timers;

use std::collections::{BTreeMap, HashMap};

use entries::Entries;
use names::Names;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Bound;
use std::sync::Arc;
use timers::Timers;

use crate::command::{Command, Ctx, Mode, RequestScope, Want};
use crate::effect::{Effect, HoldView, Kind, LostReason, Response, WaitEnd};
use crate::error::CoreError;
use crate::ids::{FencingToken, HoldId, Holder, Origin, SessionId, MAX_TOKEN};
use crate::name::LockName;

pub use query::{NameView, SessionView, TableStats, WaiterView};

/// Server limits the table enforces with `limit_exceeded`. Every replica must use the same.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Limits {
    /// Names with holders, waiters or a lock-delay.
    pub max_names: usize,
    /// Holds plus waiting acquires, over all names.
    pub max_entries: usize,
    pub max_waiters_per_name: usize,
    pub max_sessions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_names: 4_000_000,
            max_entries: 4_000_000,
            max_waiters_per_name: 100_000,
            max_sessions: 1_000_000,
        }
    }
}

/// Hashes the random 128-bit ids the node draws: their bits are already uniform, so folding the
/// halves is enough. Only id-keyed maps use it; string keys live in B-trees (no hash flooding).
#[derive(Default, Clone, Copy, Debug)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 =
                (self.0.rotate_left(5) ^ u64::from(byte)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 ^= value;
    }
    fn write_usize(&mut self, value: usize) {
        self.0 ^= value as u64;
    }
}

pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// The deadline `ms` after log time `now`. Log time counts whole milliseconds, so a command
/// stamped `now` ran at some instant in [now, now + 1): the deadline is one tick later than the
/// plain sum, so it never falls before `ms` of real time have passed since that instant.
pub(crate) fn deadline_after(now: u64, ms: u64) -> u64 {
    now.saturating_add(ms).saturating_add(1)
}

/// Time left until `deadline` as clients see it: the tick `deadline_after` adds is not promised
/// to them, so a fresh `ttl_ms` hold shows `expires_in_ms == ttl_ms`.
pub(crate) fn remaining(deadline: u64, now: u64) -> u64 {
    deadline.saturating_sub(now).saturating_sub(1)
}

/// What a name is while it exists.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum NameKind {
    Lock,
    Semaphore { limit: u32 },
}

impl NameKind {
    /// The kind clients name in routes and see in views.
    pub(crate) fn kind(self) -> Kind {
        match self {
            NameKind::Lock => Kind::Lock,
            NameKind::Semaphore { .. } => Kind::Semaphore,
        }
    }

    pub(crate) fn of(want: Want) -> NameKind {
        match want {
            Want::Lock(_) => NameKind::Lock,
            Want::Semaphore { limit, .. } => NameKind::Semaphore { limit },
        }
    }
}

/// One name with holders, waiters or a pending lock-delay. Removed as soon as it has none.
#[derive(Clone, Debug)]
pub(crate) struct NameState {
    pub(crate) kind: NameKind,
    /// Shared holders of a lock, or permits in use of a semaphore; 1 for an exclusive holder.
    pub(crate) used: u32,
    pub(crate) exclusive: bool,
    pub(crate) last_token: u64,
    /// Log time until which nobody is granted (0: no delay).
    pub(crate) delay_until: u64,
    /// Holders in grant order.
    pub(crate) holders: Holders,
    /// Waiters in FIFO order, keyed by the table-wide enqueue sequence. Boxed: most names
    /// never queue anybody, and an empty boxed queue costs 8 bytes instead of 24.
    #[allow(clippy::box_collection)]
    pub(crate) queue: Option<Box<BTreeMap<u64, HoldId>>>,
}

impl NameState {
    pub(crate) fn new(kind: NameKind) -> NameState {
        NameState {
            kind,
            used: 0,
            exclusive: false,
            last_token: 0,
            delay_until: 0,
            holders: Holders::None,
            queue: None,
        }
    }

    pub(crate) fn waiter_count(&self) -> usize {
        self.queue.as_ref().map_or(0, |queue| queue.len())
    }

    pub(crate) fn first_waiter(&self) -> Option<HoldId> {
        self.queue.as_ref().and_then(|queue| queue.values().next().copied())
    }

    /// Whether a request for `mode`/`permits` is compatible with every current holder.
    pub(crate) fn fits(&self, mode: Mode, permits: u32) -> bool {
        match self.kind {
            NameKind::Lock => match mode {
                Mode::Exclusive => self.used == 0,
                Mode::Shared => !self.exclusive,
            },
            NameKind::Semaphore { limit } => {
                u64::from(self.used) + u64::from(permits) <= u64::from(limit)
            }
        }
    }

    pub(crate) fn is_unused(&self, now_ms: u64) -> bool {
        self.holders.is_empty() && self.waiter_count() == 0 && self.delay_until <= now_ms
    }
}

/// A name's holders in grant order. The usual single holder is kept inline: a held lock then
/// costs no allocation for its holder list.
#[derive(Clone, Debug, Default)]
pub(crate) enum Holders {
    #[default]
    None,
    One(HoldId),
    /// Boxed so the list costs 24 bytes like a `Vec` while `One` stays inline.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<HoldId>>),
}

impl Holders {
    pub(crate) fn push(&mut self, id: HoldId) {
        match self {
            Holders::None => *self = Holders::One(id),
            Holders::One(first) => *self = Holders::Many(Box::new(vec![*first, id])),
            Holders::Many(ids) => ids.push(id),
        }
    }

    pub(crate) fn retain(&mut self, keep: impl FnMut(&HoldId) -> bool) {
        if let Holders::Many(ids) = self {
            ids.retain(keep);
            match ids.len() {
                0 => *self = Holders::None,
                1 => *self = Holders::One(ids[0]),
                _ => {}
            }
        } else if let Holders::One(id) = self {
            let mut keep = keep;
            if !keep(id) {
                *self = Holders::None;
            }
        }
    }
}

impl std::ops::Deref for Holders {
    type Target = [HoldId];

    fn deref(&self) -> &[HoldId] {
        match self {
            Holders::None => &[],
            Holders::One(id) => std::slice::from_ref(id),
            Holders::Many(ids) => ids,
        }
    }
}

impl std::ops::DerefMut for Holders {
    fn deref_mut(&mut self) -> &mut [HoldId] {
        match self {
            Holders::None => &mut [],
            Holders::One(id) => std::slice::from_mut(id),
            Holders::Many(ids) => ids,
        }
    }
}

/// An optional count of milliseconds that is never 0 (a TTL is at least 1 ms, a deadline lies
/// after log time 0), in 8 bytes instead of `Option<u64>`'s 16: it sits in every hold.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct OptMs(Option<std::num::NonZeroU64>);

impl OptMs {
    pub(crate) fn new(value: Option<u64>) -> OptMs {
        debug_assert_ne!(value, Some(0), "a TTL or deadline of 0");
        OptMs(value.and_then(std::num::NonZeroU64::new))
    }

    pub(crate) fn get(self) -> Option<u64> {
        self.0.map(std::num::NonZeroU64::get)
    }
}

/// A waiting acquire or a granted hold: the same id for its whole life.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) id: HoldId,
    pub(crate) name: LockName,
    pub(crate) mode: Mode,
    pub(crate) permits: u32,
    /// At most `MAX_LOCK_DELAY_MS` (60,000), so 16 bits: every byte here is paid per hold.
    pub(crate) lock_delay_ms: u16,
    pub(crate) owner: Arc<str>,
    pub(crate) holder: Holder,
    pub(crate) ttl_ms: OptMs,
    pub(crate) request: Option<Box<RequestMeta>>,
    pub(crate) state: EntryState,
}

#[derive(Clone, Debug)]
pub(crate) struct RequestMeta {
    pub(crate) request_id: Arc<str>,
    /// Log time after which the request id no longer deduplicates.
    pub(crate) retain_until: u64,
}

#[derive(Clone, Debug)]
pub(crate) enum EntryState {
    Waiting(Box<WaitState>),
    Held(HeldState),
}

#[derive(Clone, Debug)]
pub(crate) struct WaitState {
    pub(crate) seq: u64,
    pub(crate) since_ms: u64,
    /// `None`: waits without deadline.
    pub(crate) deadline: Option<u64>,
    pub(crate) origin: Origin,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct HeldState {
    /// Never 0 (tokens start at 1), which lets `EntryState` keep its tag in this field.
    pub(crate) token: std::num::NonZeroU64,
    pub(crate) granted_wall_ms: u64,
    pub(crate) granted_log_ms: u64,
    /// None: no expiry of its own.
    pub(crate) expires_at: OptMs,
}

impl Entry {
    pub(crate) fn held(&self) -> Option<&HeldState> {
        match &self.state {
            EntryState::Held(held) => Some(held),
            EntryState::Waiting(_) => None,
        }
    }

    pub(crate) fn waiting(&self) -> Option<&WaitState> {
        match &self.state {
            EntryState::Waiting(wait) => Some(wait),
            EntryState::Held(_) => None,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Session {
    pub(crate) ttl_ms: u64,
    pub(crate) owner: Arc<str>,
    pub(crate) deadline: u64,
}

/// A deadline in the timer index. The variant order is the order of work at one instant.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Timer {
    Wait(HoldId),
    Session(SessionId),
    Hold(HoldId),
    Delay(LockName),
    Request(HoldId),
}

impl Timer {
    /// Work at one instant goes in phases: dead waiters first (no grant to a dead waiter), then
    /// sessions and holds, then lock-delays and bookkeeping; grants only after all of them.
    fn phase(&self) -> u8 {
        match self {
            Timer::Wait(_) => 0,
            Timer::Session(_) => 1,
            Timer::Hold(_) => 2,
            Timer::Delay(_) => 3,
            Timer::Request(_) => 4,
        }
    }
}

/// How an entry ends; decides the effect and whether lock-delay applies.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Ending {
    /// Released by its holder, or its session closed: no effect for holds, no lock-delay.
    Voluntary { waiter: WaitEnd },
    /// Ended without the holder asking, at log time `at`.
    Involuntary { lost: LostReason, waiter: WaitEnd, at: u64, lock_delay: bool },
}

/// The lock table. See the crate docs for the model; `apply` is the only mutation.
#[derive(Debug)]
pub struct Table {
    pub(crate) limits: Limits,
    pub(crate) now_ms: u64,
    pub(crate) wall_ms: u64,
    pub(crate) next_token: u64,
    pub(crate) next_seq: u64,
    pub(crate) names: Names,
    pub(crate) entries: Entries,
    pub(crate) sessions: IdMap<SessionId, Session>,
    pub(crate) timers: Timers,
    /// Every entry of a non-anonymous holder: re-entrancy, bulk release, compat release.
    pub(crate) by_holder: BTreeMap<(Holder, LockName), HoldId>,
    /// Entries whose `request_id` still deduplicates.
    pub(crate) by_request: BTreeMap<(RequestScope, Arc<str>), HoldId>,
    pub(crate) waiting_count: usize,
    /// Names touched by the current command, granted to in name order at its end (scratch).
    touched: Vec<LockName>,
}

impl Default for Table {
    fn default() -> Self {
        Table::new(Limits::default())
    }
}

impl Table {
    pub fn new(limits: Limits) -> Table {
        Table {
            limits,
            now_ms: 0,
            wall_ms: 0,
            next_token: 1,
            next_seq: 0,
            names: Names::default(),
            entries: Entries::default(),
            sessions: IdMap::default(),
            timers: Timers::default(),
            by_holder: BTreeMap::new(),
            by_request: BTreeMap::new(),
            waiting_count: 0,
            touched: Vec::new(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The (clamped) log time of the last command.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The token the next grant will carry.
    pub fn next_token(&self) -> u64 {
        self.next_token
    }

    /// The earliest deadline in the table: the leader proposes `Expire` then.
    pub fn next_deadline(&self) -> Option<u64> {
        self.timers.first_deadline()
    }

    /// Applies one command at `ctx`, returning its response; effects on others are appended to
    /// `effects` in a deterministic order. A refused command changes nothing but the clock and
    /// the expiry of what was due.
    pub fn apply(
        &mut self,
        ctx: Ctx,
        command: Command,
        effects: &mut Vec<Effect>,
    ) -> Result<Response, CoreError> {
        self.now_ms = self.now_ms.max(ctx.now_ms);
        self.wall_ms = ctx.wall_ms;
        if let Command::Resume { live, .. } = &command {
            self.cancel_dead_boots(live, effects);
        }
        // Expiry exactly as if an `Expire` had run first, grants included, so the command sees
        // the table that `Expire` would have left.
        self.run_due(effects);
        self.grant_touched(effects);
        let response = match command {
            Command::Acquire(acquire) => self.acquire(acquire, effects),
            Command::Release { hold_id, reason } => self.release(hold_id, reason, effects),
            Command::ReleaseOf { name, kind, hold_id } => {
                self.release_of(&name, kind, hold_id, effects)
            }
            Command::ReleaseByRequest { name, scope, request_id } => {
                self.release_by_request(&name, scope, request_id, effects)
            }
            Command::ReleaseOwned { name, owner } => self.release_owned(&name, owner, effects),
            Command::ReleaseHolder { holder } => self.release_holder(&holder, effects),
            Command::Renew { hold_id, ttl } => self.renew(hold_id, ttl),
            Command::OpenSession { session_id, ttl_ms, owner } => {
                self.open_session(session_id, ttl_ms, owner)
            }
            Command::KeepAlive { sessions } => Ok(self.keep_alive(&sessions)),
            Command::CloseSession { session_id } => self.close_session(session_id, effects),
            Command::DetachSession { session_id, grace_ms } => {
                self.detach_session(session_id, grace_ms)
            }
            Command::AdminReleaseHold { hold_id, lock_delay } => {
                self.admin_release_hold(hold_id, lock_delay, effects)
            }
            Command::AdminReleaseName { name, lock_delay } => {
                self.admin_release_name(&name, lock_delay, effects)
            }
            Command::EndSession { session_id } => self.end_session_now(session_id, effects),
            Command::Expire => Ok(Response::Done),
            Command::Resume { margin_ms, token_floor, .. } => {
                self.extend_deadlines(margin_ms);
                self.next_token = self.next_token.max(token_floor.min(MAX_TOKEN + 1));
                Ok(Response::Done)
            }
        };
        self.grant_touched(effects);
        debug_assert!(
            self.entries.len() > 512 || crate::invariants::check(self).is_ok(),
            "{:?}",
            crate::invariants::check(self)
        );
        response
    }

    // ----- shared mechanics -------------------------------------------------------------

    pub(crate) fn touch(&mut self, name: &LockName) {
        self.touched.push(name.clone());
    }

    /// Grants to the waiters that can now proceed on every touched name, in name order, and
    /// removes names left unused.
    fn grant_touched(&mut self, effects: &mut Vec<Effect>) {
        if self.touched.is_empty() {
            return;
        }
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        for name in &touched {
            self.grant_waiters(name, effects);
            self.forget_if_unused(name);
        }
        touched.clear();
        self.touched = touched;
    }

    /// Grants the head of the queue while it fits: consecutive compatible waiters go together,
    /// and the first that does not fit holds back everyone behind it (no barging).
    fn grant_waiters(&mut self, name: &LockName, effects: &mut Vec<Effect>) {
        loop {
            let Some(state) = self.names.get(name) else {
                return;
            };
            if state.delay_until > self.now_ms {
                return;
            }
            let Some(head) = state.first_waiter() else {
                return;
            };
            let Some(entry) = self.entries.get(&head) else {
                return;
            };
            if !state.fits(entry.mode, entry.permits) || self.next_token > MAX_TOKEN {
                return;
            }
            let origin = match &entry.state {
                EntryState::Waiting(wait) => wait.origin,
                EntryState::Held(_) => return,
            };
            self.dequeue(head);
            self.grant(head);
            let hold = self.view(head).expect("entry was just granted");
            effects.push(Effect::Granted { hold, origin });
        }
    }

    /// Removes a waiting entry from its queue and the wait timer (it stays in `entries`).
    fn dequeue(&mut self, id: HoldId) {
        let Some(entry) = self.entries.get(&id) else {
            return;
        };
        let EntryState::Waiting(wait) = &entry.state else {
            return;
        };
        if let Some(deadline) = wait.deadline {
            self.timers.remove(&(deadline, Timer::Wait(id)));
        }
        let name = entry.name.clone();
        if let Some(mut state) = self.names.get_mut(&name) {
            if let Some(queue) = state.queue.as_mut() {
                queue.remove(&wait.seq);
                if queue.is_empty() {
                    state.queue = None;
                }
            }
        }
        self.waiting_count -= 1;
    }

    /// Turns an entry (new or just dequeued) into a hold: next token, holder bookkeeping, expiry.
    pub(crate) fn grant(&mut self, id: HoldId) {
        let now = self.now_ms;
        let token = self.next_token;
        self.next_token += 1;
        let entry = self.entries.get_mut(&id).expect("granting a known entry");
        let expires_at = entry.ttl_ms.get().map(|ttl| deadline_after(now, ttl));
        entry.state = EntryState::Held(HeldState {
            token: std::num::NonZeroU64::new(token).expect("tokens start at 1"),
            granted_wall_ms: self.wall_ms,
            granted_log_ms: now,
            expires_at: OptMs::new(expires_at),
        });
        let Some(mut state) = self.names.get_mut(&entry.name) else {
            // A new name's first exclusive holder (see `acquire`).
            self.names.insert_held(entry.name.clone(), id, token);
            if let Some(deadline) = expires_at {
                self.timers.insert((deadline, Timer::Hold(id)));
            }
            return;
        };
        match state.kind {
            NameKind::Lock => {
                state.used += 1;
                state.exclusive = entry.mode == Mode::Exclusive;
            }
            NameKind::Semaphore { .. } => state.used += entry.permits,
        }
        state.holders.push(id);
        state.last_token = token;
        drop(state);
        if let Some(deadline) = expires_at {
            self.timers.insert((deadline, Timer::Hold(id)));
        }
    }

    /// Ends an entry, held or waiting, with every index updated; emits the effect `how` calls
    /// for and marks the name for grants. Returns whether the entry existed.
    pub(crate) fn end_entry(&mut self, id: HoldId, how: Ending, effects: &mut Vec<Effect>) -> bool {
        let Some(entry) = self.entries.get(&id) else {
            return false;
        };
        let name = entry.name.clone();
        match &entry.state {
            EntryState::Waiting(wait) => {
                let origin = wait.origin;
                self.dequeue(id);
                let reason = match how {
                    Ending::Voluntary { waiter } | Ending::Involuntary { waiter, .. } => waiter,
                };
                effects.push(Effect::WaitEnded { hold_id: id, name: name.clone(), origin, reason });
            }
            EntryState::Held(held) => {
                let held = *held;
                let (mode, permits, lock_delay_ms) =
                    (entry.mode, entry.permits, entry.lock_delay_ms);
                if let Some(deadline) = held.expires_at.get() {
                    self.timers.remove(&(deadline, Timer::Hold(id)));
                }
                let delay_until = match how {
                    Ending::Involuntary { at, lock_delay: true, .. } if lock_delay_ms > 0 => {
                        Some(deadline_after(at, u64::from(lock_delay_ms)))
                            .filter(|until| *until > self.now_ms)
                    }
                    _ => None,
                };
                // The usual held lock: its name ends with it, unless a lock-delay keeps it.
                if delay_until.is_some() || !self.names.remove_single(&name, id) {
                    let mut state = self.names.get_mut(&name).expect("a held entry's name exists");
                    state.holders.retain(|holder| *holder != id);
                    match state.kind {
                        NameKind::Lock => {
                            state.used -= 1;
                            if mode == Mode::Exclusive {
                                state.exclusive = false;
                            }
                        }
                        NameKind::Semaphore { .. } => state.used -= permits,
                    }
                }
                if let Ending::Involuntary { lost, .. } = how {
                    if let Some(until) = delay_until {
                        self.set_delay(&name, until);
                    }
                    let holder = self.entries[&id].holder.clone();
                    effects.push(Effect::Lost {
                        hold_id: id,
                        name: name.clone(),
                        token: FencingToken(held.token.get()),
                        holder,
                        reason: lost,
                    });
                }
            }
        }
        let entry = *self.entries.remove(&id).expect("entry present");
        if entry.holder != Holder::Anonymous {
            self.by_holder.remove(&(entry.holder.clone(), name.clone()));
        }
        if let Some(request) = entry.request {
            let scope = RequestScope::of(&entry.holder, &entry.owner);
            self.by_request.remove(&(scope, request.request_id.clone()));
            self.timers.remove(&(request.retain_until, Timer::Request(id)));
        }
        self.touch(&name);
        true
    }

    fn set_delay(&mut self, name: &LockName, until: u64) {
        let mut state = self.names.get_mut(name).expect("delayed name exists");
        if until <= state.delay_until {
            return;
        }
        if state.delay_until > 0 {
            self.timers.remove(&(state.delay_until, Timer::Delay(name.clone())));
        }
        state.delay_until = until;
        self.timers.insert((until, Timer::Delay(name.clone())));
    }

    fn forget_if_unused(&mut self, name: &LockName) {
        let Some(state) = self.names.get(name) else {
            return;
        };
        if !state.is_unused(self.now_ms) {
            return;
        }
        if state.delay_until > 0 {
            self.timers.remove(&(state.delay_until, Timer::Delay(name.clone())));
        }
        self.names.remove(name);
    }

    /// The ids of every entry (held or waiting) of a non-anonymous holder, in name order.
    pub(crate) fn entries_of(&self, holder: &Holder) -> Vec<HoldId> {
        let low = (holder.clone(), LockName::lowest());
        self.by_holder
            .range((Bound::Included(low), Bound::Unbounded))
            .take_while(|((entry_holder, _), _)| entry_holder == holder)
            .map(|(_, id)| *id)
            .collect()
    }

    /// The hold as the surfaces show it, at the current log time.
    pub(crate) fn view(&self, id: HoldId) -> Option<HoldView> {
        let entry = self.entries.get(&id)?;
        let held = entry.held()?;
        let state = self.names.get(&entry.name)?;
        let (kind, mode, limit) = match state.kind {
            NameKind::Lock => (Kind::Lock, Some(entry.mode), None),
            NameKind::Semaphore { limit } => (Kind::Semaphore, None, Some(limit)),
        };
        Some(HoldView {
            name: entry.name.clone(),
            hold_id: id,
            kind,
            mode,
            permits: entry.permits,
            limit,
            owner: entry.owner.clone(),
            holder: entry.holder.clone(),
            token: FencingToken(held.token.get()),
            granted_at_ms: held.granted_wall_ms,
            granted_log_ms: held.granted_log_ms,
            ttl_ms: entry.ttl_ms.get(),
            expires_in_ms: held.expires_at.get().map(|at| remaining(at, self.now_ms)),
            request_id: entry.request.as_ref().map(|request| request.request_id.clone()),
        })
    }
}
