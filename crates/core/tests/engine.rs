//! Rule-by-rule tests of the lock table, with time as an input.

use std::sync::Arc;

use lockserver_core::command::REQUEST_ID_RETENTION_MS;
use lockserver_core::*;

const BOOT: NodeEpoch = NodeEpoch { node: 1, epoch: 7 };

struct T {
    table: Table,
    now: u64,
    next_id: u128,
    effects: Vec<Effect>,
}

/// Log time counts whole ms, so every deadline lands one tick after the plain sum: a command
/// stamped T ran somewhere in [T, T + 1).
const TICK: u64 = 1;

fn name(text: &str) -> LockName {
    LockName::new(text).unwrap()
}

impl T {
    fn new() -> T {
        T { table: Table::default(), now: 1_000, next_id: 1, effects: Vec::new() }
    }

    fn id(&mut self) -> HoldId {
        self.next_id += 1;
        HoldId::from_u128(self.next_id)
    }

    fn run(&mut self, command: Command) -> Result<Response, CoreError> {
        self.effects.clear();
        let ctx = Ctx { now_ms: self.now, wall_ms: 1_700_000_000_000 + self.now };
        let response = self.table.apply(ctx, command, &mut self.effects);
        invariants::check(&self.table).expect("invariants hold after every command");
        response
    }

    fn acquire_with(&mut self, f: impl FnOnce(&mut Acquire)) -> Result<Response, CoreError> {
        let hold_id = self.id();
        let mut acquire = Acquire {
            hold_id,
            name: name("db"),
            want: Want::Lock(Mode::Exclusive),
            owner: Arc::from("w"),
            holder: Holder::Anonymous,
            wait: Wait::Try,
            ttl_ms: Some(10_000),
            lock_delay_ms: 0,
            request_id: None,
            origin: Origin { boot: BOOT, via: Via::Request(hold_id.as_u128() as u64) },
        };
        f(&mut acquire);
        self.run(Command::Acquire(acquire))
    }

    fn lock(&mut self, lock: &str, mode: Mode, wait: Wait) -> Result<Response, CoreError> {
        self.acquire_with(|a| {
            a.name = name(lock);
            a.want = Want::Lock(mode);
            a.wait = wait;
        })
    }

    fn release(&mut self, hold_id: HoldId) -> Result<Response, CoreError> {
        self.run(Command::Release { hold_id, reason: ReleaseReason::Client })
    }

    fn granted_ids(&self) -> Vec<HoldId> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Granted { hold, .. } => Some(hold.hold_id),
                _ => None,
            })
            .collect()
    }
}

fn held(response: Result<Response, CoreError>) -> HoldView {
    match response {
        Ok(Response::Granted { hold, .. }) => hold,
        other => panic!("expected a grant, got {other:?}"),
    }
}

fn queued(response: Result<Response, CoreError>) -> HoldId {
    match response {
        Ok(Response::Queued { hold_id, .. }) => hold_id,
        other => panic!("expected to queue, got {other:?}"),
    }
}

fn code(response: Result<Response, CoreError>) -> &'static str {
    match response {
        Err(err) => err.code(),
        Ok(other) => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn exclusive_excludes_and_shared_shares() {
    let mut t = T::new();
    let reader1 = held(t.lock("db", Mode::Shared, Wait::Try));
    let reader2 = held(t.lock("db", Mode::Shared, Wait::Try));
    assert_eq!(code(t.lock("db", Mode::Exclusive, Wait::Try)), "locked");
    t.release(reader1.hold_id).unwrap();
    t.release(reader2.hold_id).unwrap();
    let writer = held(t.lock("db", Mode::Exclusive, Wait::Try));
    assert_eq!(code(t.lock("db", Mode::Shared, Wait::Try)), "locked");
    assert_eq!(code(t.lock("db", Mode::Exclusive, Wait::Try)), "locked");
    assert!(held(t.lock("other", Mode::Exclusive, Wait::Try)).token > writer.token);
}

#[test]
fn fifo_without_barging_and_compatible_heads_granted_together() {
    let mut t = T::new();
    let writer = held(t.lock("db", Mode::Exclusive, Wait::Try));
    let r1 = queued(t.lock("db", Mode::Shared, Wait::Forever));
    let r2 = queued(t.lock("db", Mode::Shared, Wait::Forever));
    let w2 = queued(t.lock("db", Mode::Exclusive, Wait::Forever));
    let r3 = queued(t.lock("db", Mode::Shared, Wait::Forever));
    // A reader cannot barge past the queue even though readers will hold soon.
    assert_eq!(code(t.lock("db", Mode::Shared, Wait::Try)), "locked");
    t.release(writer.hold_id).unwrap();
    assert_eq!(t.granted_ids(), vec![r1, r2], "consecutive readers together, writer holds back r3");
    t.release(r1).unwrap();
    assert!(t.granted_ids().is_empty(), "only waiters that can proceed are woken");
    t.release(r2).unwrap();
    assert_eq!(t.granted_ids(), vec![w2]);
    t.release(w2).unwrap();
    assert_eq!(t.granted_ids(), vec![r3]);
}

#[test]
fn semaphore_weighted_permits_and_kind_conflicts() {
    let mut t = T::new();
    let sem = |limit, permits| Want::Semaphore { limit, permits };
    let a = held(t.acquire_with(|a| a.want = sem(5, 3)));
    assert_eq!(a.limit, Some(5));
    assert_eq!(code(t.acquire_with(|a| a.want = sem(5, 3))), "locked");
    let b = held(t.acquire_with(|a| a.want = sem(5, 2)));
    assert_eq!(code(t.acquire_with(|a| a.want = sem(4, 1))), "conflict");
    assert_eq!(code(t.acquire_with(|a| a.want = Want::Lock(Mode::Shared))), "conflict");
    for bad in [sem(5, 0), sem(5, 6), sem(0, 0)] {
        assert_eq!(code(t.acquire_with(|a| a.want = bad)), "invalid_argument");
    }
    t.release(a.hold_id).unwrap();
    t.release(b.hold_id).unwrap();
    held(t.acquire_with(|a| a.want = sem(4, 4)));
}

#[test]
fn sessions_are_not_reentrant_but_anonymous_owners_are_labels() {
    let mut t = T::new();
    let session = SessionId::from_u128(99);
    t.run(Command::OpenSession { session_id: session, ttl_ms: 5_000, owner: Arc::from("s") })
        .unwrap();
    held(t.acquire_with(|a| a.holder = Holder::Session(session)));
    assert_eq!(code(t.acquire_with(|a| a.holder = Holder::Session(session))), "conflict");
    assert_eq!(
        code(t.acquire_with(|a| {
            a.holder = Holder::Session(session);
            a.wait = Wait::Forever
        })),
        "conflict"
    );
    // Same owner label, anonymous: just a busy lock, not a re-entrancy conflict.
    assert_eq!(code(t.lock("db", Mode::Exclusive, Wait::Try)), "locked");
    let owner = Holder::CompatOwner(Arc::from("alice"));
    held(t.acquire_with(|a| {
        a.name = name("x");
        a.holder = owner.clone()
    }));
    assert_eq!(
        code(t.acquire_with(|a| {
            a.name = name("x");
            a.holder = owner.clone()
        })),
        "conflict"
    );
}

#[test]
fn wait_times_out_exactly_at_its_deadline_never_before() {
    let mut t = T::new();
    held(t.lock("db", Mode::Exclusive, Wait::Try));
    let start = t.now;
    let waiter = queued(t.lock("db", Mode::Exclusive, Wait::For(250)));
    // Log time is whole ms and the wait began somewhere in [start, start + 1): its deadline is
    // one tick past 250 ms, so it is still waiting at start + 250.
    t.now = start + 250;
    t.run(Command::Expire).unwrap();
    assert!(t.effects.is_empty(), "no timeout before the deadline");
    assert!(t.table.waiter(waiter, t.now).is_some());
    t.now = start + 250 + TICK;
    t.run(Command::Expire).unwrap();
    assert!(matches!(
        t.effects.as_slice(),
        [Effect::WaitEnded { reason: WaitEnd::Timeout, hold_id, .. }] if *hold_id == waiter
    ));
}

#[test]
fn expired_hold_cannot_be_renewed_or_checked_etcd_11456() {
    let mut t = T::new();
    let hold = held(t.acquire_with(|a| a.ttl_ms = Some(100)));
    t.now += 99 + TICK;
    assert!(t.table.check("db", hold.token.0, t.now));
    t.now += 1;
    // No Expire ran: the renew itself must see the hold gone.
    assert!(!t.table.check("db", hold.token.0, t.now));
    assert_eq!(
        code(t.run(Command::Renew { hold_id: hold.hold_id, ttl: TtlChange::Same })),
        "not_found"
    );
}

#[test]
fn no_grant_to_a_dead_waiter() {
    let mut t = T::new();
    let first = held(t.acquire_with(|a| a.ttl_ms = Some(1_000)));
    let waiter = queued(t.acquire_with(|a| a.wait = Wait::For(500)));
    let late = queued(t.acquire_with(|a| a.wait = Wait::For(5_000)));
    // Both the hold (at +1000) and the first waiter's wait (at +500) are due.
    t.now += 2_000;
    t.run(Command::Expire).unwrap();
    assert_eq!(t.granted_ids(), vec![late]);
    assert!(t.effects.iter().any(|e| matches!(e,
        Effect::WaitEnded { hold_id, reason: WaitEnd::Timeout, .. } if *hold_id == waiter)));
    assert!(t.effects.iter().any(|e| matches!(e,
        Effect::Lost { hold_id, reason: LostReason::Expired, .. } if *hold_id == first.hold_id)));
}

#[test]
fn release_of_expired_hold_never_frees_a_newer_holder() {
    // The original Lockserver's sweeper could delete a newer holder's lock.
    let mut t = T::new();
    let old = held(t.acquire_with(|a| a.ttl_ms = Some(100)));
    t.now += 100 + TICK;
    let new = held(t.lock("db", Mode::Exclusive, Wait::Try));
    assert!(new.token > old.token);
    assert_eq!(code(t.release(old.hold_id)), "not_found");
    assert!(t.table.check("db", new.token.0, t.now));
    assert!(t.effects.is_empty());
}

#[test]
fn clock_never_goes_back() {
    let mut t = T::new();
    let hold = held(t.acquire_with(|a| a.ttl_ms = Some(100)));
    t.now += 100 + TICK;
    t.run(Command::Expire).unwrap();
    t.now -= 500;
    t.run(Command::Expire).unwrap();
    assert_eq!(t.table.now_ms(), 1_100 + TICK);
    assert!(t.table.hold(hold.hold_id, 0).is_none());
}

#[test]
fn request_id_repeat_returns_same_hold_or_same_place() {
    let mut t = T::new();
    let rid = |a: &mut Acquire| a.request_id = Some(Arc::from("r-1"));
    let first = held(t.acquire_with(rid));
    let again = t.acquire_with(rid).unwrap();
    assert!(
        matches!(again, Response::Granted { repeat: true, ref hold } if hold.hold_id == first.hold_id)
    );
    assert_eq!(
        code(t.acquire_with(|a| {
            rid(a);
            a.name = name("other")
        })),
        "conflict"
    );
    // A queued request keeps its place when repeated.
    let place = queued(t.acquire_with(|a| {
        a.request_id = Some(Arc::from("r-2"));
        a.wait = Wait::For(1_000)
    }));
    queued(t.acquire_with(|a| a.wait = Wait::Forever));
    let repeat = t.acquire_with(|a| {
        a.request_id = Some(Arc::from("r-2"));
        a.wait = Wait::For(1_000)
    });
    assert_eq!(repeat, Ok(Response::Queued { hold_id: place, position: 1 }));
    t.release(first.hold_id).unwrap();
    assert_eq!(t.granted_ids(), vec![place]);
    // After the retention window the id no longer deduplicates.
    t.now += REQUEST_ID_RETENTION_MS;
    t.run(Command::Expire).unwrap();
    assert!(t.table.by_request_id(&RequestScope::Label(Arc::from("w")), "r-2").is_none());
}

#[test]
fn release_by_request_and_compat_owner() {
    let mut t = T::new();
    let waiter_holder = held(t.lock("db", Mode::Exclusive, Wait::Try));
    let waiting = queued(t.acquire_with(|a| {
        a.request_id = Some(Arc::from("r"));
        a.wait = Wait::Forever
    }));
    let scope = RequestScope::Label(Arc::from("w"));
    assert_eq!(
        code(t.run(Command::ReleaseByRequest {
            name: name("nope"),
            scope: scope.clone(),
            request_id: Arc::from("r")
        })),
        "not_found"
    );
    t.run(Command::ReleaseByRequest { name: name("db"), scope, request_id: Arc::from("r") })
        .unwrap();
    assert!(matches!(t.effects.as_slice(),
        [Effect::WaitEnded { hold_id, reason: WaitEnd::Cancelled, .. }] if *hold_id == waiting));
    t.release(waiter_holder.hold_id).unwrap();

    let alice = Holder::CompatOwner(Arc::from("alice"));
    let release = |owner: &str| Command::ReleaseOwned { name: name("db"), owner: Arc::from(owner) };
    assert_eq!(code(t.run(release("alice"))), "not_found");
    held(t.acquire_with(|a| a.holder = alice.clone()));
    assert_eq!(code(t.run(release("bob"))), "locked");
    t.run(release("alice")).unwrap();
    assert!(t.table.name_view(&name("db"), t.now).holders.is_empty());
}

#[test]
fn session_expiry_releases_everything_with_lock_delay() {
    let mut t = T::new();
    let session = SessionId::from_u128(5);
    t.run(Command::OpenSession { session_id: session, ttl_ms: 1_000, owner: Arc::from("s") })
        .unwrap();
    let hold = held(t.acquire_with(|a| {
        a.holder = Holder::Session(session);
        a.ttl_ms = None;
        a.lock_delay_ms = 300
    }));
    t.now += 600;
    t.run(Command::KeepAlive { sessions: vec![session] }).unwrap();
    t.now += 1_000; // deadline = 1600 + 1000 + TICK
    t.run(Command::Expire).unwrap();
    assert!(t.effects.is_empty());
    t.now += TICK;
    let waiter = queued(t.lock("db", Mode::Exclusive, Wait::Forever));
    assert!(t.effects.iter().any(|e| matches!(e,
        Effect::Lost { hold_id, reason: LostReason::Session, .. } if *hold_id == hold.hold_id)));
    assert!(t.effects.iter().any(|e| matches!(e, Effect::SessionEnded { .. })));
    t.now += 300;
    t.run(Command::Expire).unwrap();
    assert!(t.granted_ids().is_empty(), "lock-delay still running");
    t.now += TICK;
    t.run(Command::Expire).unwrap();
    assert_eq!(t.granted_ids(), vec![waiter]);
}

#[test]
fn voluntary_close_has_no_lock_delay_and_no_lost() {
    let mut t = T::new();
    let session = SessionId::from_u128(6);
    t.run(Command::OpenSession { session_id: session, ttl_ms: 1_000, owner: Arc::from("s") })
        .unwrap();
    held(t.acquire_with(|a| {
        a.holder = Holder::Session(session);
        a.lock_delay_ms = 60_000
    }));
    t.run(Command::CloseSession { session_id: session }).unwrap();
    assert!(!t.effects.iter().any(|e| matches!(e, Effect::Lost { .. })));
    held(t.lock("db", Mode::Exclusive, Wait::Try));
    assert_eq!(
        code(t.acquire_with(|a| a.lock_delay_ms = 60_001)),
        "invalid_argument",
        "lock-delay is capped at 60 s"
    );
}

#[test]
fn detached_session_lives_until_the_later_of_grace_and_lease() {
    let mut t = T::new();
    let session = SessionId::from_u128(8);
    t.run(Command::OpenSession { session_id: session, ttl_ms: 1_000, owner: Arc::from("s") })
        .unwrap();
    t.run(Command::DetachSession { session_id: session, grace_ms: 3_000 }).unwrap();
    t.now += 3_000;
    assert!(t.table.session(session, t.now).is_some());
    t.now += TICK;
    t.run(Command::Expire).unwrap();
    assert!(t.table.session(session, t.now).is_none());
    let keepalive = t.run(Command::KeepAlive { sessions: vec![session] });
    assert_eq!(keepalive, Ok(Response::KeptAlive { ttl_ms: vec![None] }));
}

#[test]
fn end_session_is_involuntary_now_with_lost_events_and_lock_delay() {
    let mut t = T::new();
    let session = SessionId::from_u128(9);
    t.run(Command::OpenSession { session_id: session, ttl_ms: 60_000, owner: Arc::from("s") })
        .unwrap();
    let hold = held(t.acquire_with(|a| {
        a.holder = Holder::Session(session);
        a.lock_delay_ms = 1_000
    }));
    t.run(Command::EndSession { session_id: session }).unwrap();
    assert!(t.effects.iter().any(|e| matches!(e,
        Effect::Lost { hold_id, reason: LostReason::Session, .. } if *hold_id == hold.hold_id)));
    assert!(t.table.session(session, t.now).is_none());
    assert_eq!(code(t.lock("db", Mode::Exclusive, Wait::Try)), "locked", "lock-delay applies");
    assert_eq!(code(t.run(Command::EndSession { session_id: session })), "not_found");
}

#[test]
fn admin_release_skips_lock_delay_unless_asked_and_cancels_waiters() {
    let mut t = T::new();
    let hold = held(t.acquire_with(|a| a.lock_delay_ms = 5_000));
    let waiter = queued(t.lock("db", Mode::Exclusive, Wait::Forever));
    t.run(Command::AdminReleaseHold { hold_id: hold.hold_id, lock_delay: false }).unwrap();
    assert_eq!(t.granted_ids(), vec![waiter]);
    let w2 = queued(t.lock("db", Mode::Exclusive, Wait::Forever));
    t.run(Command::AdminReleaseName { name: name("db"), lock_delay: true }).unwrap();
    assert!(t.effects.iter().any(|e| matches!(e,
        Effect::WaitEnded { hold_id, reason: WaitEnd::Admin, .. } if *hold_id == w2)));
    assert_eq!(
        code(t.run(Command::AdminReleaseName { name: name("db"), lock_delay: false })),
        "not_found"
    );
    assert!(t.table.name_view(&name("db"), t.now).holders.is_empty());
}

#[test]
fn resume_cancels_dead_boot_waiters_before_granting_and_extends_deadlines() {
    let mut t = T::new();
    let hold = held(t.acquire_with(|a| a.ttl_ms = Some(100)));
    let dead = queued(t.acquire_with(|a| a.wait = Wait::Forever));
    let live_boot = NodeEpoch { node: 1, epoch: 8 };
    t.now += 100 + TICK; // the hold is due exactly when Resume runs
    t.run(Command::Resume { margin_ms: 2_000, live: vec![live_boot], token_floor: 0 }).unwrap();
    assert!(t.granted_ids().is_empty(), "the dead boot's waiter must not be granted");
    assert!(t.effects.iter().any(|e| matches!(e,
        Effect::WaitEnded { hold_id, reason: WaitEnd::NodeGone, .. } if *hold_id == dead)));
    // A hold with time left gets the margin on top.
    let second = held(t.acquire_with(|a| a.ttl_ms = Some(100)));
    t.run(Command::Resume { margin_ms: 2_000, live: vec![live_boot], token_floor: 0 }).unwrap();
    assert_eq!(t.table.hold(second.hold_id, t.now).unwrap().expires_in_ms, Some(2_100));
    assert_ne!(hold.hold_id, second.hold_id);
}

#[test]
fn tokens_increase_across_names_and_survive_snapshots() {
    let mut t = T::new();
    let mut last = 0;
    for i in 0..20 {
        let hold = held(t.lock(&format!("n{}", i % 3), Mode::Exclusive, Wait::Try));
        assert!(hold.token.0 > last);
        last = hold.token.0;
        t.release(hold.hold_id).unwrap();
    }
    let bytes = t.table.snapshot();
    let mut restored = Table::restore(&bytes, Limits::default()).unwrap();
    assert_eq!(restored.snapshot(), bytes, "snapshots are byte-for-byte stable");
    assert_eq!(restored.next_token(), last + 1);
    let mut fx = Vec::new();
    let next = restored
        .apply(
            Ctx { now_ms: t.now, wall_ms: 0 },
            Command::Acquire(Acquire {
                hold_id: HoldId::from_u128(1 << 100),
                name: name("n0"),
                want: Want::Lock(Mode::Exclusive),
                owner: Arc::from(""),
                holder: Holder::Anonymous,
                wait: Wait::Try,
                ttl_ms: None,
                lock_delay_ms: 0,
                request_id: None,
                origin: Origin { boot: BOOT, via: Via::Request(1) },
            }),
            &mut fx,
        )
        .unwrap();
    assert!(matches!(next, Response::Granted { hold, .. } if hold.token.0 == last + 1));
}

#[test]
fn snapshot_restore_rejects_garbage_without_panicking() {
    let t = {
        let mut t = T::new();
        held(t.lock("db", Mode::Exclusive, Wait::Try));
        queued(t.lock("db", Mode::Shared, Wait::For(10)));
        t
    };
    let bytes = t.table.snapshot();
    assert_eq!(Table::restore(b"nope", Limits::default()).unwrap_err(), SnapshotError::BadMagic);
    let mut future = bytes.clone();
    future[8] = 9;
    assert_eq!(
        Table::restore(&future, Limits::default()).unwrap_err(),
        SnapshotError::UnsupportedVersion(9)
    );
    for cut in 12..bytes.len() {
        assert!(Table::restore(&bytes[..cut], Limits::default()).is_err(), "cut at {cut}");
    }
    for i in 12..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[i] ^= 0x5a;
        let _ = Table::restore(&flipped, Limits::default());
    }
}

#[test]
fn unused_names_are_forgotten_and_listing_pages() {
    let mut t = T::new();
    for i in 0..5 {
        let hold = held(t.lock(&format!("job/{i}"), Mode::Exclusive, Wait::Try));
        if i == 4 {
            t.release(hold.hold_id).unwrap();
        }
    }
    queued(t.lock("job/0", Mode::Shared, Wait::Forever));
    t.now += 30;
    let (page, next) = t.table.list("job/", None, 2, t.now);
    assert_eq!(page.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["job/0", "job/1"]);
    assert_eq!(page[0].waiters.len(), 1);
    assert_eq!(page[0].waiters[0].waiting_ms, 30);
    assert_eq!(page[0].last_token, Some(page[0].holders[0].token));
    let (rest, end) = t.table.list("job/", next.as_deref(), 10, t.now);
    assert_eq!(rest.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["job/2", "job/3"]);
    assert_eq!(end, None, "job/4 was released and forgotten");
    assert_eq!(t.table.stats().names, 4);
    assert_eq!(t.table.name_view(&name("job/4"), t.now).last_token, None);
}

#[test]
fn limits_give_limit_exceeded() {
    let mut t = T::new();
    t.table = Table::new(Limits {
        max_names: 2,
        max_entries: 3,
        max_waiters_per_name: 1,
        max_sessions: 1,
    });
    held(t.lock("a", Mode::Exclusive, Wait::Try));
    held(t.lock("b", Mode::Exclusive, Wait::Try));
    assert_eq!(code(t.lock("c", Mode::Exclusive, Wait::Try)), "limit_exceeded");
    queued(t.lock("a", Mode::Exclusive, Wait::Forever));
    assert_eq!(code(t.lock("b", Mode::Exclusive, Wait::Forever)), "limit_exceeded");
    assert_eq!(code(t.lock("a", Mode::Exclusive, Wait::Forever)), "limit_exceeded");
    let open = |id| Command::OpenSession {
        session_id: SessionId::from_u128(id),
        ttl_ms: 10,
        owner: Arc::from(""),
    };
    t.run(open(1)).unwrap();
    assert_eq!(code(t.run(open(2))), "limit_exceeded");
}

#[test]
fn a_command_sees_the_grants_expiry_would_have_made() {
    // The writer expires; the queued reader is granted by that expiry, so a reader's try-lock
    // in the same command is compatible with it rather than stuck behind a stale queue.
    let mut t = T::new();
    held(t.acquire_with(|a| a.ttl_ms = Some(100)));
    let reader = queued(t.lock("db", Mode::Shared, Wait::Forever));
    t.now += 100 + TICK;
    let second = held(t.lock("db", Mode::Shared, Wait::Try));
    assert_eq!(t.granted_ids(), vec![reader]);
    let first_token = t.table.name_view(&name("db"), t.now).holders[0].token;
    assert!(first_token < second.token, "the earlier waiter is granted first");
}

#[test]
fn kind_conflicts_while_only_a_lock_delay_remains() {
    let mut t = T::new();
    held(t.acquire_with(|a| {
        a.ttl_ms = Some(10);
        a.lock_delay_ms = 1_000
    }));
    t.now += 10 + TICK;
    let semaphore = Want::Semaphore { limit: 2, permits: 1 };
    assert_eq!(code(t.acquire_with(|a| a.want = semaphore)), "conflict");
    assert_eq!(code(t.lock("db", Mode::Exclusive, Wait::Try)), "locked");
    t.now += 1_000 + TICK;
    held(t.acquire_with(|a| a.want = semaphore));
}

#[test]
fn duplicate_ids_are_refused_and_renew_can_remove_the_expiry() {
    let mut t = T::new();
    let hold = held(t.lock("db", Mode::Exclusive, Wait::Try));
    let duplicate = t.acquire_with(|a| {
        a.hold_id = hold.hold_id;
        a.name = name("other")
    });
    assert_eq!(code(duplicate), "conflict");
    let session = || Command::OpenSession {
        session_id: SessionId::from_u128(3),
        ttl_ms: 100,
        owner: Arc::from(""),
    };
    t.run(session()).unwrap();
    assert_eq!(code(t.run(session())), "conflict");
    let renewed = t.run(Command::Renew { hold_id: hold.hold_id, ttl: TtlChange::Unlimited });
    assert!(matches!(renewed, Ok(Response::Renewed { ref hold }) if hold.expires_in_ms.is_none()));
    t.now += 1_000_000;
    assert!(t.table.check("db", hold.token.0, t.now), "no expiry after renew(null)");
    let again = t.run(Command::Renew { hold_id: hold.hold_id, ttl: TtlChange::Set(50) });
    assert!(matches!(again, Ok(Response::Renewed { ref hold }) if hold.expires_in_ms == Some(50)));
}

#[test]
fn resume_raises_the_next_token_to_the_floor_and_never_lowers_it() {
    let mut t = T::new();
    let first = held(t.lock("a", Mode::Exclusive, Wait::Try));
    t.run(Command::Resume { margin_ms: 0, live: vec![], token_floor: 1_000 }).unwrap();
    let raised = held(t.lock("b", Mode::Exclusive, Wait::Try));
    assert_eq!(raised.token.0, 1_000);
    t.run(Command::Resume { margin_ms: 0, live: vec![], token_floor: 5 }).unwrap();
    let next = held(t.lock("c", Mode::Exclusive, Wait::Try));
    assert_eq!(next.token.0, 1_001, "a lower floor never moves tokens back");
    assert!(first.token < raised.token);
}

#[test]
fn release_of_checks_name_and_kind_in_the_same_command() {
    let mut t = T::new();
    let hold = held(t.lock("db", Mode::Exclusive, Wait::Try));
    let waiter = queued(t.lock("db", Mode::Exclusive, Wait::For(5_000)));
    let release_of = |t: &mut T, lock: &str, kind: Kind, hold_id| {
        t.run(Command::ReleaseOf { name: name(lock), kind, hold_id })
    };
    // Another name, the other kind, an unknown id: not_found, and nothing changes.
    assert_eq!(code(release_of(&mut t, "other", Kind::Lock, hold.hold_id)), "not_found");
    assert_eq!(code(release_of(&mut t, "db", Kind::Semaphore, hold.hold_id)), "not_found");
    let unknown = t.id();
    assert_eq!(code(release_of(&mut t, "db", Kind::Lock, unknown)), "not_found");
    assert!(t.effects.is_empty());
    assert!(t.table.hold(hold.hold_id, t.now).is_some());
    // A waiter is withdrawn; the holder's release then hands nothing to the withdrawn waiter.
    assert_eq!(release_of(&mut t, "db", Kind::Lock, waiter), Ok(Response::Released));
    assert_eq!(release_of(&mut t, "db", Kind::Lock, hold.hold_id), Ok(Response::Released));
    assert!(t.granted_ids().is_empty());
    assert_eq!(code(release_of(&mut t, "db", Kind::Lock, hold.hold_id)), "not_found");
}
