//! A property test: random command sequences against a small, obviously-correct reference
//! model (plain vectors and linear scans), comparing every response and effect, with the
//! invariants checked after every step and snapshot/restore determinism checked along the way.

use std::collections::BTreeMap;
use std::sync::Arc;

use lockserver_core::*;
use proptest::prelude::*;

const LIVE: NodeEpoch = NodeEpoch { node: 1, epoch: 2 };
const OLD: NodeEpoch = NodeEpoch { node: 1, epoch: 1 };
const NAMES: [&str; 3] = ["a", "b", "c"];
/// Log time counts whole ms: every deadline lands one tick after the plain sum (see the core).
const TICK: u64 = 1;

#[derive(Clone, Debug)]
enum Op {
    Acquire {
        name: usize,
        want: Want,
        wait: Wait,
        ttl: Option<u64>,
        delay: u64,
        old_boot: bool,
        session: Option<usize>,
        rid: Option<u8>,
    },
    OpenSession {
        s: usize,
        ttl: u64,
    },
    KeepAlive {
        s: usize,
    },
    CloseSession {
        s: usize,
    },
    Release {
        pick: usize,
    },
    Renew {
        pick: usize,
        ttl: Option<u64>,
    },
    AdminName {
        name: usize,
        delay: bool,
    },
    Tick {
        ms: u64,
    },
    Back {
        ms: u64,
    },
    Resume {
        margin: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let want = prop_oneof![
        Just(Want::Lock(Mode::Exclusive)),
        Just(Want::Lock(Mode::Shared)),
        (1u32..=3).prop_map(|permits| Want::Semaphore { limit: 3, permits }),
    ];
    let wait = prop_oneof![Just(Wait::Try), (1u64..40).prop_map(Wait::For), Just(Wait::Forever)];
    let ttl = prop_oneof![Just(None), (1u64..60).prop_map(Some)];
    prop_oneof![
        5 => (
            (0..3usize, want, wait, ttl.clone(), prop_oneof![Just(0u64), 1u64..20], any::<bool>()),
            (prop_oneof![2 => Just(None), 1 => (0..2usize).prop_map(Some)], prop_oneof![2 => Just(None), 1 => (0..2u8).prop_map(Some)]),
        )
            .prop_map(|((name, want, wait, ttl, delay, old), (session, rid))| Op::Acquire {
                name, want, wait, ttl, delay, old_boot: old && matches!(wait, Wait::Forever), session, rid
            }),
        1 => (0..2usize, 5u64..80).prop_map(|(s, ttl)| Op::OpenSession { s, ttl }),
        1 => (0..2usize).prop_map(|s| Op::KeepAlive { s }),
        1 => (0..2usize).prop_map(|s| Op::CloseSession { s }),
        3 => any::<usize>().prop_map(|pick| Op::Release { pick }),
        1 => (any::<usize>(), ttl).prop_map(|(pick, ttl)| Op::Renew { pick, ttl }),
        1 => (0..3usize, any::<bool>()).prop_map(|(name, delay)| Op::AdminName { name, delay }),
        3 => (0u64..30).prop_map(|ms| Op::Tick { ms }),
        1 => (0u64..10).prop_map(|ms| Op::Back { ms }),
        1 => (0u64..20).prop_map(|margin| Op::Resume { margin }),
    ]
}

#[derive(Clone, Debug)]
struct MHold {
    id: u128,
    mode: Mode,
    permits: u32,
    token: u64,
    ttl: Option<u64>,
    expires: Option<u64>,
    delay: u64,
    session: Option<usize>,
    rid: Option<u8>,
}
#[derive(Clone, Debug)]
struct MWait {
    id: u128,
    mode: Mode,
    permits: u32,
    deadline: Option<u64>,
    ttl: Option<u64>,
    delay: u64,
    boot: NodeEpoch,
    session: Option<usize>,
    rid: Option<u8>,
}
#[derive(Clone, Debug, Default)]
struct MName {
    limit: Option<u32>,
    holders: Vec<MHold>,
    queue: Vec<MWait>,
    delay_until: u64,
}

/// What we compare: responses and effects reduced to ids, tokens and reasons.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Out {
    Kept(Option<u64>),
    Granted(u128, u64),
    Queued(u128),
    Err(&'static str),
    Ok,
}
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fx {
    SessionEnded(u128),
    Granted(u128, u64),
    WaitEnded(u128, &'static str),
    Lost(u128, &'static str),
}

#[derive(Default)]
struct Model {
    sessions: BTreeMap<usize, (u64, u64)>,
    now: u64,
    next_token: u64,
    names: BTreeMap<&'static str, MName>,
}

impl Model {
    fn fits(n: &MName, mode: Mode, permits: u32) -> bool {
        match n.limit {
            None => match mode {
                Mode::Exclusive => n.holders.is_empty(),
                Mode::Shared => n.holders.iter().all(|h| h.mode == Mode::Shared),
            },
            Some(limit) => n.holders.iter().map(|h| h.permits).sum::<u32>() + permits <= limit,
        }
    }

    fn grant_all(&mut self, fx: &mut Vec<Fx>) {
        let now = self.now;
        for n in self.names.values_mut() {
            while n.delay_until <= now
                && !n.queue.is_empty()
                && Self::fits(n, n.queue[0].mode, n.queue[0].permits)
            {
                let w = n.queue.remove(0);
                let token = self.next_token;
                self.next_token += 1;
                n.holders.push(MHold {
                    id: w.id,
                    mode: w.mode,
                    permits: w.permits,
                    token,
                    ttl: w.ttl,
                    expires: w.ttl.map(|t| now + t + TICK),
                    delay: w.delay,
                    session: w.session,
                    rid: w.rid,
                });
                fx.push(Fx::Granted(w.id, token));
            }
        }
        self.names
            .retain(|_, n| !(n.holders.is_empty() && n.queue.is_empty() && n.delay_until <= now));
    }

    fn expire(&mut self, fx: &mut Vec<Fx>) {
        let now = self.now;
        let mut waits: Vec<(u64, u128)> = Vec::new();
        let mut holds: Vec<(u64, u128)> = Vec::new();
        for n in self.names.values() {
            waits.extend(
                n.queue.iter().filter_map(|w| w.deadline.filter(|d| *d <= now).map(|d| (d, w.id))),
            );
            holds.extend(
                n.holders.iter().filter_map(|h| h.expires.filter(|d| *d <= now).map(|d| (d, h.id))),
            );
        }
        waits.sort();
        holds.sort();
        for n in self.names.values_mut() {
            if n.delay_until <= now {
                n.delay_until = 0;
            }
        }
        for (_, id) in waits {
            for n in self.names.values_mut() {
                n.queue.retain(|w| w.id != id);
            }
            fx.push(Fx::WaitEnded(id, "timeout"));
        }
        let mut sessions: Vec<(u64, usize)> = self
            .sessions
            .iter()
            .filter(|(_, (_, d))| *d <= now)
            .map(|(s, (_, d))| (*d, *s))
            .collect();
        sessions.sort_by_key(|(d, s)| (*d, 500 + *s as u128));
        for (at, s) in sessions {
            self.end_session(s, Some(at), fx);
        }
        for (at, id) in holds {
            for n in self.names.values_mut() {
                if let Some(i) = n.holders.iter().position(|h| h.id == id) {
                    let h = n.holders.remove(i);
                    if h.delay > 0 && at + h.delay + TICK > now {
                        n.delay_until = n.delay_until.max(at + h.delay + TICK);
                    }
                    fx.push(Fx::Lost(id, "expired"));
                }
            }
        }
    }

    /// Ends session `s`: involuntarily at `at` (lost + lock-delay) or voluntarily (`None`).
    fn end_session(&mut self, s: usize, at: Option<u64>, fx: &mut Vec<Fx>) {
        self.sessions.remove(&s);
        let now = self.now;
        for n in self.names.values_mut() {
            if let Some(i) = n.holders.iter().position(|h| h.session == Some(s)) {
                let h = n.holders.remove(i);
                if let Some(at) = at {
                    if h.delay > 0 && at + h.delay + TICK > now {
                        n.delay_until = n.delay_until.max(at + h.delay + TICK);
                    }
                    fx.push(Fx::Lost(h.id, "session"));
                }
            }
            if let Some(i) = n.queue.iter().position(|w| w.session == Some(s)) {
                let w = n.queue.remove(i);
                fx.push(Fx::WaitEnded(w.id, "cancelled"));
            }
        }
        fx.push(Fx::SessionEnded(500 + s as u128));
    }

    fn all_ids(&self) -> Vec<u128> {
        let mut ids: Vec<u128> = self
            .names
            .values()
            .flat_map(|n| n.holders.iter().map(|h| h.id).chain(n.queue.iter().map(|w| w.id)))
            .collect();
        ids.sort();
        ids
    }

    fn apply(&mut self, now: u64, op: &Op, id: u128, fx: &mut Vec<Fx>) -> Out {
        self.now = self.now.max(now);
        if let Op::Resume { .. } = op {
            let mut dead: Vec<u128> = Vec::new();
            for n in self.names.values_mut() {
                dead.extend(n.queue.iter().filter(|w| w.boot != LIVE).map(|w| w.id));
            }
            // The table cancels in enqueue order; ids grow with enqueue order here.
            dead.sort();
            for n in self.names.values_mut() {
                n.queue.retain(|w| w.boot == LIVE);
            }
            fx.extend(dead.into_iter().map(|id| Fx::WaitEnded(id, "cancelled")));
        }
        self.expire(fx);
        self.grant_all(fx);
        let out = match op {
            Op::Acquire { name, want, wait, ttl, delay, old_boot, session, rid } => {
                let name = NAMES[*name];
                let (limit, mode, permits) = match want {
                    Want::Lock(mode) => (None, *mode, 1),
                    Want::Semaphore { limit, permits } => (Some(*limit), Mode::Shared, *permits),
                };
                if rid.is_some() {
                    let now = self.now;
                    for (entry_name, n) in self.names.iter_mut() {
                        let same = |other: &MName| other.limit == limit && *entry_name == name;
                        if let Some(h) =
                            n.holders.iter().find(|h| h.session == *session && h.rid == *rid)
                        {
                            if !(same(n) && h.mode == mode && h.permits == permits) {
                                return Out::Err("conflict");
                            }
                            return Out::Granted(h.id, h.token);
                        }
                        let fits_name = same(n);
                        if let Some(i) =
                            n.queue.iter().position(|w| w.session == *session && w.rid == *rid)
                        {
                            if !(fits_name
                                && n.queue[i].mode == mode
                                && n.queue[i].permits == permits)
                            {
                                return Out::Err("conflict");
                            }
                            let earlier = n.queue[i].id;
                            fx.push(Fx::WaitEnded(earlier, "cancelled"));
                            if matches!(wait, Wait::Try) {
                                n.queue.remove(i);
                                self.grant_all(fx);
                                return Out::Err("locked");
                            }
                            n.queue[i].deadline = match wait {
                                Wait::For(ms) => Some(now + ms + TICK),
                                _ => None,
                            };
                            n.queue[i].boot = if *old_boot { OLD } else { LIVE };
                            return Out::Queued(earlier);
                        }
                    }
                }
                if let Some(s) = session {
                    if !self.sessions.contains_key(s) {
                        return Out::Err("not_found");
                    }
                    if self.names.get(name).is_some_and(|n| {
                        n.holders.iter().any(|h| h.session == Some(*s))
                            || n.queue.iter().any(|w| w.session == Some(*s))
                    }) {
                        return Out::Err("conflict");
                    }
                }
                let existing = self.names.get(name);
                if existing.is_some_and(|n| n.limit != limit) {
                    return Out::Err("conflict");
                }
                let grantable = existing.is_none_or(|n| {
                    n.queue.is_empty() && n.delay_until <= self.now && Self::fits(n, mode, permits)
                });
                let n =
                    self.names.entry(name).or_insert_with(|| MName { limit, ..MName::default() });
                if grantable {
                    let token = self.next_token;
                    self.next_token += 1;
                    n.holders.push(MHold {
                        id,
                        mode,
                        permits,
                        token,
                        ttl: *ttl,
                        expires: ttl.map(|t| self.now + t + TICK),
                        delay: *delay,
                        session: *session,
                        rid: *rid,
                    });
                    Out::Granted(id, token)
                } else if *wait == Wait::Try {
                    Out::Err("locked")
                } else {
                    let deadline = match wait {
                        Wait::For(ms) => Some(self.now + ms + TICK),
                        _ => None,
                    };
                    let boot = if *old_boot { OLD } else { LIVE };
                    n.queue.push(MWait {
                        id,
                        mode,
                        permits,
                        deadline,
                        ttl: *ttl,
                        delay: *delay,
                        boot,
                        session: *session,
                        rid: *rid,
                    });
                    Out::Queued(id)
                }
            }
            Op::Release { pick } | Op::Renew { pick, .. } => {
                let ids = self.all_ids();
                let target =
                    if ids.is_empty() || pick % 5 == 0 { 999_999 } else { ids[pick % ids.len()] };
                let mut out = Out::Err("not_found");
                for n in self.names.values_mut() {
                    if let Some(i) = n.holders.iter().position(|h| h.id == target) {
                        if let Op::Renew { ttl, .. } = op {
                            let h = &mut n.holders[i];
                            let new_ttl = match ttl {
                                Some(t) => Some(*t),
                                None => h.ttl,
                            };
                            h.ttl = new_ttl;
                            h.expires = new_ttl.map(|t| self.now + t + TICK);
                        } else {
                            n.holders.remove(i);
                        }
                        out = Out::Ok;
                    } else if let Some(i) = n.queue.iter().position(|w| w.id == target) {
                        if let Op::Release { .. } = op {
                            n.queue.remove(i);
                            fx.push(Fx::WaitEnded(target, "cancelled"));
                            out = Out::Ok;
                        }
                    }
                }
                out
            }
            Op::AdminName { name, delay } => {
                let now = self.now;
                match self.names.get_mut(NAMES[*name]) {
                    Some(n) if !(n.holders.is_empty() && n.queue.is_empty()) => {
                        for h in std::mem::take(&mut n.holders) {
                            if *delay && h.delay > 0 {
                                n.delay_until = n.delay_until.max(now + h.delay + TICK);
                            }
                            fx.push(Fx::Lost(h.id, "admin"));
                        }
                        for w in std::mem::take(&mut n.queue) {
                            fx.push(Fx::WaitEnded(w.id, "cancelled"));
                        }
                        Out::Ok
                    }
                    _ => Out::Err("not_found"),
                }
            }
            Op::Tick { .. } | Op::Back { .. } => Out::Ok,
            Op::OpenSession { s, ttl } => {
                if self.sessions.contains_key(s) {
                    return Out::Err("conflict");
                }
                self.sessions.insert(*s, (*ttl, self.now + ttl + TICK));
                Out::Ok
            }
            Op::KeepAlive { s } => match self.sessions.get_mut(s) {
                Some((ttl, deadline)) => {
                    *deadline = (*deadline).max(self.now + *ttl + TICK);
                    Out::Kept(Some(*ttl))
                }
                None => Out::Kept(None),
            },
            Op::CloseSession { s } => {
                if !self.sessions.contains_key(s) {
                    return Out::Err("not_found");
                }
                self.end_session(*s, None, fx);
                Out::Ok
            }
            Op::Resume { margin } => {
                for (_, deadline) in self.sessions.values_mut() {
                    *deadline += margin;
                }
                for n in self.names.values_mut() {
                    for h in &mut n.holders {
                        h.expires = h.expires.map(|e| e + margin);
                    }
                    if n.delay_until > 0 && *margin > 0 {
                        n.delay_until += margin;
                    }
                }
                Out::Ok
            }
        };
        self.grant_all(fx);
        out
    }
}

fn to_command(op: &Op, id: u128, model: &Model) -> Command {
    match op {
        Op::OpenSession { s, ttl } => Command::OpenSession {
            session_id: SessionId::from_u128(500 + *s as u128),
            ttl_ms: *ttl,
            owner: Arc::from("s"),
        },
        Op::KeepAlive { s } => {
            Command::KeepAlive { sessions: vec![SessionId::from_u128(500 + *s as u128)] }
        }
        Op::CloseSession { s } => {
            Command::CloseSession { session_id: SessionId::from_u128(500 + *s as u128) }
        }
        Op::Acquire { name, want, wait, ttl, delay, old_boot, session, rid } => {
            Command::Acquire(Acquire {
                hold_id: HoldId::from_u128(id),
                name: LockName::new(NAMES[*name]).unwrap(),
                want: *want,
                owner: Arc::from("w"),
                holder: session.map_or(Holder::Anonymous, |s| {
                    Holder::Session(SessionId::from_u128(500 + s as u128))
                }),
                wait: *wait,
                ttl_ms: *ttl,
                lock_delay_ms: *delay,
                request_id: rid.map(|r| Arc::from(format!("r{r}"))),
                origin: Origin {
                    boot: if *old_boot { OLD } else { LIVE },
                    via: Via::Request(id as u64),
                },
            })
        }
        Op::Release { pick } | Op::Renew { pick, .. } => {
            // The same pick over the model's ids *before* expiry; the table sees the same ids.
            let ids = model.all_ids();
            let target =
                if ids.is_empty() || pick % 5 == 0 { 999_999 } else { ids[pick % ids.len()] };
            match op {
                Op::Renew { ttl, .. } => Command::Renew {
                    hold_id: HoldId::from_u128(target),
                    ttl: ttl.map_or(TtlChange::Same, TtlChange::Set),
                },
                _ => Command::Release {
                    hold_id: HoldId::from_u128(target),
                    reason: ReleaseReason::Client,
                },
            }
        }
        Op::AdminName { name, delay } => Command::AdminReleaseName {
            name: LockName::new(NAMES[*name]).unwrap(),
            lock_delay: *delay,
        },
        Op::Tick { .. } | Op::Back { .. } => Command::Expire,
        Op::Resume { margin } => {
            Command::Resume { margin_ms: *margin, live: vec![LIVE], token_floor: 0 }
        }
    }
}

fn reduce(response: Result<Response, CoreError>, effects: &[Effect]) -> (Out, Vec<Fx>) {
    let out = match response {
        Ok(Response::Granted { hold, .. }) => Out::Granted(hold.hold_id.as_u128(), hold.token.0),
        Ok(Response::Queued { hold_id, .. }) => Out::Queued(hold_id.as_u128()),
        Ok(Response::KeptAlive { ttl_ms }) => Out::Kept(ttl_ms[0]),
        Ok(_) => Out::Ok,
        Err(err) => Out::Err(err.code()),
    };
    let fx = effects
        .iter()
        .map(|effect| match effect {
            Effect::Granted { hold, .. } => Fx::Granted(hold.hold_id.as_u128(), hold.token.0),
            Effect::WaitEnded { hold_id, reason, .. } => {
                Fx::WaitEnded(hold_id.as_u128(), reason.code())
            }
            Effect::Lost { hold_id, reason, .. } => Fx::Lost(hold_id.as_u128(), reason.as_str()),
            Effect::SessionEnded { session_id, .. } => Fx::SessionEnded(session_id.as_u128()),
        })
        .collect();
    (out, fx)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn table_matches_the_reference_model(ops in proptest::collection::vec(op(), 1..120)) {
        let mut table = Table::default();
        let mut model = Model { next_token: 1, ..Model::default() };
        let mut now = 100u64;
        let mut effects = Vec::new();
        let mut twin: Option<Table> = None;
        for (step, op) in ops.iter().enumerate() {
            match op {
                Op::Tick { ms } => now += ms,
                Op::Back { ms } => now = now.saturating_sub(*ms),
                _ => {}
            }
            let id = 1_000 + step as u128;
            // Release/renew pick among ids alive before this step's expiry, like the model.
            let mut pick_model = Model { sessions: model.sessions.clone(), now: model.now, next_token: model.next_token, names: model.names.clone() };
            let mut scratch = Vec::new();
            pick_model.now = pick_model.now.max(now);
            pick_model.expire(&mut scratch);
            pick_model.grant_all(&mut scratch);
            let command = to_command(op, id, &pick_model);
            effects.clear();
            let ctx = Ctx { now_ms: now, wall_ms: 0 };
            if let Some(twin) = twin.as_mut() {
                let mut twin_effects = Vec::new();
                let twin_response = twin.apply(ctx, command.clone(), &mut twin_effects);
                let response = table.apply(ctx, command, &mut effects);
                prop_assert_eq!(&twin_response, &response, "restored twin diverged at step {}", step);
                prop_assert_eq!(&twin_effects, &effects);
                let got = reduce(response, &effects);
                let mut fx = Vec::new();
                let want = model.apply(now, op, id, &mut fx);
                prop_assert_eq!(got, (want, fx), "step {}: {:?}", step, op);
            } else {
                let response = table.apply(ctx, command, &mut effects);
                let got = reduce(response, &effects);
                let mut fx = Vec::new();
                let want = model.apply(now, op, id, &mut fx);
                prop_assert_eq!(got, (want, fx), "step {}: {:?}", step, op);
            }
            if let Err(broken) = invariants::check(&table) {
                prop_assert!(false, "invariant broken after step {}: {}", step, broken);
            }
            if step == ops.len() / 2 {
                let bytes = table.snapshot();
                let restored = Table::restore(&bytes, Limits::default()).expect("own snapshot restores");
                prop_assert_eq!(restored.snapshot(), bytes);
                twin = Some(restored);
            }
        }
        if let Some(twin) = twin {
            prop_assert_eq!(twin.snapshot(), table.snapshot(), "same commands from the same snapshot");
        }
    }
}
