//! Rule-by-rule tests of the lock table, with time as an input.

use std::sync::Arc;

use lockserver_core::command::{MAX_DURATION_MS, MAX_LOCK_DELAY_MS, REQUEST_ID_RETENTION_MS};
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

/// Who waits for the answer to an acquire made through `T::acquire_with`: one HTTP request
/// served by this test's node boot.
fn origin_of(hold_id: HoldId) -> Origin {
    Origin { boot: BOOT, via: Via::Request(hold_id.as_u128() as u64) }
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
            origin: origin_of(hold_id),
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

// ----- one test per rule of issue 2 that the scenarios above only touch in passing -----------

/// The waiters an effect list wakes, with the origin each grant is answered to; panics on any
/// effect other than a grant.
fn woken(effects: &[Effect]) -> Vec<(HoldId, Origin)> {
    effects
        .iter()
        .map(|effect| match effect {
            Effect::Granted { hold, origin } => (hold.hold_id, *origin),
            other => panic!("only grants expected, got {other:?}"),
        })
        .collect()
}

fn kind_of(want: Want) -> Kind {
    match want {
        Want::Lock(_) => Kind::Lock,
        Want::Semaphore { .. } => Kind::Semaphore,
    }
}

#[test]
fn a_queued_writer_holds_back_later_readers() {
    // (what holds, a request that must wait, a later request that fits beside the holder)
    let cases = [
        ("lock", Want::Lock(Mode::Shared), Want::Lock(Mode::Exclusive), Want::Lock(Mode::Shared)),
        (
            "semaphore",
            Want::Semaphore { limit: 3, permits: 1 },
            Want::Semaphore { limit: 3, permits: 3 },
            Want::Semaphore { limit: 3, permits: 1 },
        ),
    ];
    for (case, holding, blocked, later) in cases {
        let mut t = T::new();
        // Without a queue, `later` is granted beside the holder: the refusals below are the
        // queue's doing.
        held(t.acquire_with(|a| {
            a.name = name("control");
            a.want = holding
        }));
        held(t.acquire_with(|a| {
            a.name = name("control");
            a.want = later
        }));

        let holder = held(t.acquire_with(|a| a.want = holding));
        let writer = queued(t.acquire_with(|a| {
            a.want = blocked;
            a.wait = Wait::Forever
        }));
        assert_eq!(code(t.acquire_with(|a| a.want = later)), "locked", "{case}: no barging");
        let response = t.acquire_with(|a| {
            a.want = later;
            a.wait = Wait::Forever
        });
        assert!(
            matches!(response, Ok(Response::Queued { position: 2, .. })),
            "{case}: {response:?}"
        );
        let reader = queued(response);
        t.release(holder.hold_id).unwrap();
        assert_eq!(woken(&t.effects), [(writer, origin_of(writer))], "{case}");
        t.release(writer).unwrap();
        assert_eq!(woken(&t.effects), [(reader, origin_of(reader))], "{case}");
    }
}

#[test]
fn only_the_waiters_that_can_proceed_are_woken() {
    let mut t = T::new();
    let writer = held(t.lock("db", Mode::Exclusive, Wait::Try));
    let r1 = queued(t.lock("db", Mode::Shared, Wait::Forever));
    let r2 = queued(t.lock("db", Mode::Shared, Wait::Forever));
    queued(t.lock("db", Mode::Exclusive, Wait::Forever));
    queued(t.lock("db", Mode::Shared, Wait::Forever));
    t.release(writer.hold_id).unwrap();
    assert_eq!(woken(&t.effects), [(r1, origin_of(r1)), (r2, origin_of(r2))]);
    t.release(r1).unwrap();
    assert!(
        woken(&t.effects).is_empty(),
        "r2 still reads: the writer cannot proceed, nobody is woken"
    );

    let sem = |permits| Want::Semaphore { limit: 4, permits };
    let wait_for = |t: &mut T, permits| {
        queued(t.acquire_with(|a| {
            a.name = name("pool");
            a.want = sem(permits);
            a.wait = Wait::Forever
        }))
    };
    let all = held(t.acquire_with(|a| {
        a.name = name("pool");
        a.want = sem(4)
    }));
    let one = wait_for(&mut t, 1);
    let two = wait_for(&mut t, 2);
    let big = wait_for(&mut t, 2);
    let last = wait_for(&mut t, 1);
    t.release(all.hold_id).unwrap();
    // 4 free: `one` and `two` take 3; `big` needs 2 of the 1 left and holds `last` back.
    assert_eq!(woken(&t.effects), [(one, origin_of(one)), (two, origin_of(two))]);
    t.release(one).unwrap();
    assert_eq!(woken(&t.effects), [(big, origin_of(big))]);
    t.release(two).unwrap();
    assert_eq!(woken(&t.effects), [(last, origin_of(last))]);
    t.release(big).unwrap();
    assert!(woken(&t.effects).is_empty());
}

#[test]
fn permits_outside_1_to_limit_are_invalid_argument() {
    // (limit, permits, accepted)
    let cases = [
        (5, 0, false),
        (5, 6, false),
        (5, u32::MAX, false),
        (0, 0, false),
        (0, 1, false),
        (1, 1, true),
        (5, 1, true),
        (5, 5, true),
        (u32::MAX, u32::MAX, true),
    ];
    for (limit, permits, accepted) in cases {
        let mut t = T::new();
        let response = t.acquire_with(|a| a.want = Want::Semaphore { limit, permits });
        if accepted {
            let hold = held(response);
            assert_eq!((hold.permits, hold.limit), (permits, Some(limit)));
        } else {
            assert_eq!(code(response), "invalid_argument", "limit {limit}, permits {permits}");
            assert_eq!(t.table.stats().names, 0, "a refused acquire leaves no name behind");
        }
    }
}

#[test]
fn kind_or_limit_mismatch_is_conflict_while_holders_waiters_or_lock_delay_exist() {
    #[derive(Clone, Copy, Debug)]
    enum Remains {
        Holder,
        WaiterDuringLockDelay,
        LockDelay,
        Nothing,
    }
    let lock = Want::Lock(Mode::Exclusive);
    let two_of_two = Want::Semaphore { limit: 2, permits: 2 };
    let one_of_three = Want::Semaphore { limit: 3, permits: 1 };
    for (in_use, other) in [(lock, one_of_three), (two_of_two, lock), (two_of_two, one_of_three)] {
        for remains in
            [Remains::Holder, Remains::WaiterDuringLockDelay, Remains::LockDelay, Remains::Nothing]
        {
            let case = format!("{in_use:?} then {other:?}, {remains:?}");
            let mut t = T::new();
            let hold = held(t.acquire_with(|a| {
                a.want = in_use;
                a.ttl_ms = Some(10);
                a.lock_delay_ms = 1_000
            }));
            let (holders, waiters) = match remains {
                Remains::Holder => (1, 0),
                Remains::WaiterDuringLockDelay => {
                    queued(t.acquire_with(|a| {
                        a.want = in_use;
                        a.wait = Wait::Forever
                    }));
                    t.now += 10 + TICK; // the hold expires into its lock-delay
                    (0, 1)
                }
                Remains::LockDelay => {
                    t.now += 10 + TICK;
                    (0, 0)
                }
                Remains::Nothing => {
                    t.release(hold.hold_id).unwrap();
                    let response = t.acquire_with(|a| {
                        a.want = other;
                        a.wait = Wait::Forever
                    });
                    assert_eq!(held(response).kind, kind_of(other), "{case}");
                    continue;
                }
            };
            let response = t.acquire_with(|a| {
                a.want = other;
                a.wait = Wait::Forever
            });
            assert_eq!(code(response), "conflict", "{case}");
            let view = t.table.name_view(&name("db"), t.now);
            assert_eq!(view.kind, Some(kind_of(in_use)), "{case}: the name keeps its kind");
            assert_eq!((view.holders.len(), view.waiters.len()), (holders, waiters), "{case}");
        }
    }
}

#[test]
fn a_holder_already_waiting_on_a_name_cannot_acquire_it_again() {
    let session = SessionId::from_u128(77);
    let holders =
        [Holder::Session(session), Holder::CompatOwner(Arc::from("alice")), Holder::Connection(4)];
    for holder in holders {
        let mut t = T::new();
        t.run(Command::OpenSession { session_id: session, ttl_ms: 60_000, owner: Arc::from("s") })
            .unwrap();
        let blocker = held(t.lock("db", Mode::Exclusive, Wait::Try));
        let waiting = queued(t.acquire_with(|a| {
            a.holder = holder.clone();
            a.wait = Wait::Forever
        }));
        for (mode, wait) in [
            (Mode::Exclusive, Wait::Try),
            (Mode::Shared, Wait::For(100)),
            (Mode::Exclusive, Wait::Forever),
        ] {
            let again = t.acquire_with(|a| {
                a.holder = holder.clone();
                a.want = Want::Lock(mode);
                a.wait = wait
            });
            assert_eq!(code(again), "conflict", "{holder:?} {mode:?} {wait:?}");
        }
        // The refused acquires changed nothing: the first keeps its place and is granted.
        t.release(blocker.hold_id).unwrap();
        assert_eq!(t.granted_ids(), vec![waiting], "{holder:?}");
    }
}

#[test]
fn wait_zero_is_a_try_lock_timed_waits_time_out_and_unbounded_waits_never_do() {
    for wait in [Wait::Try, Wait::For(0)] {
        let mut t = T::new();
        held(t.lock("db", Mode::Exclusive, Wait::Try));
        assert_eq!(code(t.lock("db", Mode::Exclusive, wait)), "locked", "{wait:?}");
        assert_eq!(t.table.stats().waiters, 0, "{wait:?} never queues");
    }
    let mut t = T::new();
    let too_long = Wait::For(MAX_DURATION_MS + 1);
    assert_eq!(code(t.lock("db", Mode::Exclusive, too_long)), "invalid_argument");
    let holder = held(t.acquire_with(|a| a.ttl_ms = None));
    let start = t.now;
    let timed = queued(t.lock("db", Mode::Exclusive, Wait::For(250)));
    let unbounded = queued(t.lock("db", Mode::Exclusive, Wait::Forever));
    assert_eq!(t.table.waiter(timed, t.now).unwrap().wait_remaining_ms, Some(250));
    assert_eq!(t.table.waiter(unbounded, t.now).unwrap().wait_remaining_ms, None);
    t.now = start + 250 + TICK;
    t.run(Command::Expire).unwrap();
    match t.effects.as_slice() {
        [Effect::WaitEnded { hold_id, origin, reason, .. }] => {
            assert_eq!((*hold_id, *origin, reason.code()), (timed, origin_of(timed), "timeout"));
        }
        other => panic!("expected the timed waiter's timeout, got {other:?}"),
    }
    t.now += MAX_DURATION_MS;
    t.run(Command::Expire).unwrap();
    assert!(t.effects.is_empty(), "ten years on, the unbounded wait goes on");
    let waiter = t.table.waiter(unbounded, t.now).unwrap();
    assert_eq!(waiter.waiting_ms, MAX_DURATION_MS + 250 + TICK);
    t.release(holder.hold_id).unwrap();
    assert_eq!(t.granted_ids(), vec![unbounded]);
}

#[test]
fn cancelling_a_waiter_answers_it_cancelled_and_lets_those_behind_it_in() {
    let mut t = T::new();
    let reader = held(t.lock("db", Mode::Shared, Wait::Try));
    let writer = queued(t.lock("db", Mode::Exclusive, Wait::Forever));
    let later_reader = queued(t.lock("db", Mode::Shared, Wait::Forever));
    assert_eq!(t.release(writer), Ok(Response::Released));
    match t.effects.as_slice() {
        [Effect::WaitEnded { hold_id, origin, reason, .. }, Effect::Granted { hold, .. }] => {
            assert_eq!(
                (*hold_id, *origin, *reason, reason.code()),
                (writer, origin_of(writer), WaitEnd::Cancelled, "cancelled")
            );
            assert_eq!(hold.hold_id, later_reader, "nothing queues ahead of the reader any more");
        }
        other => panic!("expected the writer cancelled and the reader granted, got {other:?}"),
    }
    assert!(t.table.waiter(writer, t.now).is_none());
    assert_eq!(code(t.release(writer)), "not_found");
    assert!(t.effects.is_empty());
    let holders = t.table.name_view(&name("db"), t.now).holders;
    let ids: Vec<HoldId> = holders.iter().map(|hold| hold.hold_id).collect();
    assert_eq!(ids, [reader.hold_id, later_reader]);
}

#[test]
fn renew_without_ttl_renews_for_the_current_ttl_and_null_removes_the_expiry() {
    let mut t = T::new();
    let renew = |t: &mut T, hold_id, ttl| match t.run(Command::Renew { hold_id, ttl }) {
        Ok(Response::Renewed { hold }) => (hold.ttl_ms, hold.expires_in_ms),
        other => panic!("expected a renewal, got {other:?}"),
    };
    let hold = held(t.acquire_with(|a| a.ttl_ms = Some(1_000)));
    let waiter = queued(t.lock("db", Mode::Exclusive, Wait::Forever));
    let refused = t.run(Command::Renew { hold_id: waiter, ttl: TtlChange::Same });
    assert_eq!(code(refused), "not_found", "a waiter has nothing to renew");
    t.release(waiter).unwrap();

    t.now += 600;
    assert_eq!(renew(&mut t, hold.hold_id, TtlChange::Same), (Some(1_000), Some(1_000)));
    t.now += 1_000;
    assert!(t.table.check("db", hold.token.0, t.now), "alive 1000 ms after the renewal");
    assert_eq!(renew(&mut t, hold.hold_id, TtlChange::Set(200)), (Some(200), Some(200)));
    t.now += 100;
    assert_eq!(
        renew(&mut t, hold.hold_id, TtlChange::Same),
        (Some(200), Some(200)),
        "the current TTL, not the first one"
    );
    assert_eq!(renew(&mut t, hold.hold_id, TtlChange::Unlimited), (None, None));
    assert_eq!(renew(&mut t, hold.hold_id, TtlChange::Same), (None, None));
    t.now += MAX_DURATION_MS;
    assert!(t.table.check("db", hold.token.0, t.now), "no expiry after renew(null)");
    let zero = t.run(Command::Renew { hold_id: hold.hold_id, ttl: TtlChange::Set(0) });
    assert_eq!(code(zero), "invalid_argument");
    assert_eq!(t.table.hold(hold.hold_id, t.now).unwrap().expires_in_ms, None, "unchanged");
    assert_eq!(renew(&mut t, hold.hold_id, TtlChange::Set(50)), (Some(50), Some(50)));
    t.now += 50 + TICK;
    assert!(!t.table.check("db", hold.token.0, t.now));
    let late = t.run(Command::Renew { hold_id: hold.hold_id, ttl: TtlChange::Same });
    assert_eq!(code(late), "not_found");
}

#[test]
fn check_is_true_only_for_the_token_of_a_live_hold_on_that_name() {
    let mut t = T::new();
    let first = held(t.lock("db", Mode::Exclusive, Wait::Try));
    let elsewhere = held(t.lock("other", Mode::Exclusive, Wait::Try));
    assert!(t.table.check("db", first.token.0, t.now));
    assert!(!t.table.check("other", first.token.0, t.now), "a token belongs to its name");
    assert!(!t.table.check("db", elsewhere.token.0, t.now));
    assert!(!t.table.check("db", t.table.next_token(), t.now), "a token never issued");
    assert!(!t.table.check("nobody", first.token.0, t.now));
    t.release(first.hold_id).unwrap();
    assert!(!t.table.check("db", first.token.0, t.now), "released");
    let second = held(t.lock("db", Mode::Exclusive, Wait::Try));
    assert!(t.table.check("db", second.token.0, t.now));
    assert!(!t.table.check("db", first.token.0, t.now), "an older holder's token is stale");

    let r1 = held(t.lock("shared", Mode::Shared, Wait::Try));
    let r2 = held(t.lock("shared", Mode::Shared, Wait::Try));
    assert!(
        t.table.check("shared", r1.token.0, t.now) && t.table.check("shared", r2.token.0, t.now)
    );
    let sem = held(t.acquire_with(|a| {
        a.name = name("pool");
        a.want = Want::Semaphore { limit: 2, permits: 1 }
    }));
    assert!(t.table.check("pool", sem.token.0, t.now));
}

#[test]
fn tokens_stay_below_2_pow_53() {
    assert_eq!(MAX_TOKEN, (1 << 53) - 1);
    let mut t = T::new();
    let resume = |floor| Command::Resume { margin_ms: 0, live: vec![BOOT], token_floor: floor };
    t.run(resume(MAX_TOKEN - 1)).unwrap();
    let a = held(t.lock("a", Mode::Exclusive, Wait::Try));
    let last = held(t.lock("b", Mode::Exclusive, Wait::Try));
    assert_eq!((a.token.0, last.token.0), (MAX_TOKEN - 1, MAX_TOKEN));
    // The next token would be 2^53: no grant, now or later.
    assert_eq!(code(t.lock("c", Mode::Exclusive, Wait::Try)), "unavailable");
    assert_eq!(t.table.name_view(&name("c"), t.now).kind, None, "the refusal left nothing");
    let waiter = queued(t.lock("a", Mode::Exclusive, Wait::Forever));
    t.release(a.hold_id).unwrap();
    assert!(t.granted_ids().is_empty(), "no waiter is granted token 2^53");
    assert!(t.table.waiter(waiter, t.now).is_some());
    t.run(resume(u64::MAX)).unwrap();
    assert_eq!(t.table.next_token(), MAX_TOKEN + 1, "a floor never lifts tokens past the bound");
    t.table = Table::restore(&t.table.snapshot(), Limits::default()).unwrap();
    assert_eq!(code(t.lock("c", Mode::Exclusive, Wait::Try)), "unavailable", "after a restore too");
}

#[test]
fn lock_delay_holds_a_name_back_only_after_an_involuntary_end() {
    #[derive(Clone, Copy, Debug)]
    enum HowItEnds {
        ClientRelease,
        Undeliverable,
        SessionClose,
        TtlExpiry,
        SessionExpiry,
        EndSession,
        AdminHold { lock_delay: bool },
        AdminName { lock_delay: bool },
    }
    let cases = [
        (HowItEnds::ClientRelease, false),
        (HowItEnds::Undeliverable, false),
        (HowItEnds::SessionClose, false),
        (HowItEnds::TtlExpiry, true),
        (HowItEnds::SessionExpiry, true),
        (HowItEnds::EndSession, true),
        (HowItEnds::AdminHold { lock_delay: false }, false),
        (HowItEnds::AdminHold { lock_delay: true }, true),
        (HowItEnds::AdminName { lock_delay: false }, false),
        (HowItEnds::AdminName { lock_delay: true }, true),
    ];
    for (end, delayed) in cases {
        let mut t = T::new();
        let session = SessionId::from_u128(11);
        t.run(Command::OpenSession { session_id: session, ttl_ms: 100, owner: Arc::from("s") })
            .unwrap();
        let hold = held(t.acquire_with(|a| {
            a.lock_delay_ms = 500;
            if matches!(end, HowItEnds::TtlExpiry) {
                a.ttl_ms = Some(100);
            } else {
                a.holder = Holder::Session(session);
                a.ttl_ms = None;
            }
        }));
        let id = hold.hold_id;
        let command = match end {
            HowItEnds::ClientRelease => {
                Some(Command::Release { hold_id: id, reason: ReleaseReason::Client })
            }
            HowItEnds::Undeliverable => {
                Some(Command::Release { hold_id: id, reason: ReleaseReason::Undeliverable })
            }
            HowItEnds::SessionClose => Some(Command::CloseSession { session_id: session }),
            HowItEnds::EndSession => Some(Command::EndSession { session_id: session }),
            HowItEnds::AdminHold { lock_delay } => {
                Some(Command::AdminReleaseHold { hold_id: id, lock_delay })
            }
            HowItEnds::AdminName { lock_delay } => {
                Some(Command::AdminReleaseName { name: name("db"), lock_delay })
            }
            // Due at the deadline; the next command finds it so.
            HowItEnds::TtlExpiry | HowItEnds::SessionExpiry => None,
        };
        let ended_at = match command {
            Some(command) => {
                t.run(command).unwrap();
                t.now
            }
            None => t.now + 100 + TICK,
        };
        if delayed {
            t.now = ended_at + 500;
            let early = t.lock("db", Mode::Exclusive, Wait::Try);
            assert_eq!(code(early), "locked", "{end:?}: still in its lock-delay");
            t.now += TICK;
        } else {
            t.now = ended_at;
        }
        let response = t.lock("db", Mode::Exclusive, Wait::Try);
        assert!(matches!(response, Ok(Response::Granted { .. })), "{end:?}: {response:?}");
    }
}

#[test]
fn lock_delay_is_capped_at_60_s() {
    assert_eq!(MAX_LOCK_DELAY_MS, 60_000);
    let mut t = T::new();
    for too_long in [60_001, u64::MAX] {
        assert_eq!(code(t.acquire_with(|a| a.lock_delay_ms = too_long)), "invalid_argument");
    }
    held(t.acquire_with(|a| {
        a.ttl_ms = Some(100);
        a.lock_delay_ms = 60_000
    }));
    let expired_at = t.now + 100 + TICK;
    t.now = expired_at + 60_000;
    assert_eq!(code(t.lock("db", Mode::Exclusive, Wait::Try)), "locked", "the whole 60 s");
    t.now += TICK;
    held(t.lock("db", Mode::Exclusive, Wait::Try));
}

#[test]
fn ending_a_session_releases_every_hold_and_cancels_every_waiter_in_one_step() {
    #[derive(Clone, Copy, Debug)]
    enum How {
        Close,
        LeaseRunsOut,
        EndSession,
    }
    for how in [How::Close, How::LeaseRunsOut, How::EndSession] {
        let mut t = T::new();
        let session = SessionId::from_u128(12);
        t.run(Command::OpenSession { session_id: session, ttl_ms: 1_000, owner: Arc::from("s") })
            .unwrap();
        let mine = |a: &mut Acquire| {
            a.holder = Holder::Session(session);
            a.ttl_ms = None
        };
        let on_a = held(t.acquire_with(|a| {
            mine(a);
            a.name = name("a")
        }));
        let on_b = held(t.acquire_with(|a| {
            mine(a);
            a.name = name("b");
            a.want = Want::Semaphore { limit: 2, permits: 2 }
        }));
        let other = held(t.lock("c", Mode::Exclusive, Wait::Try));
        let waiting = queued(t.acquire_with(|a| {
            mine(a);
            a.name = name("c");
            a.wait = Wait::Forever
        }));
        let next_a = queued(t.lock("a", Mode::Exclusive, Wait::Forever));
        let next_b = queued(t.acquire_with(|a| {
            a.name = name("b");
            a.want = Want::Semaphore { limit: 2, permits: 1 };
            a.wait = Wait::Forever
        }));
        let (lost, reason) = match how {
            How::Close => {
                t.run(Command::CloseSession { session_id: session }).unwrap();
                (vec![], SessionEnd::Closed)
            }
            How::LeaseRunsOut => {
                t.now += 1_000 + TICK;
                t.run(Command::Expire).unwrap();
                (vec![on_a.hold_id, on_b.hold_id], SessionEnd::Expired)
            }
            How::EndSession => {
                t.run(Command::EndSession { session_id: session }).unwrap();
                (vec![on_a.hold_id, on_b.hold_id], SessionEnd::Expired)
            }
        };
        // All of it in the effects of this one command.
        let lost_now: Vec<HoldId> = t
            .effects
            .iter()
            .filter_map(|e| match e {
                Effect::Lost { hold_id, reason: LostReason::Session, .. } => Some(*hold_id),
                _ => None,
            })
            .collect();
        assert_eq!(lost_now, lost, "{how:?}");
        let cancelled: Vec<(HoldId, &str)> = t
            .effects
            .iter()
            .filter_map(|e| match e {
                Effect::WaitEnded { hold_id, reason: WaitEnd::SessionEnded, .. } => {
                    Some((*hold_id, WaitEnd::SessionEnded.code()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(cancelled, [(waiting, "cancelled")], "{how:?}");
        assert!(
            t.effects.contains(&Effect::SessionEnded { session_id: session, reason }),
            "{how:?}"
        );
        assert_eq!(t.granted_ids(), vec![next_a, next_b], "{how:?}");
        assert_eq!(t.effects.len(), lost.len() + 4, "{how:?}: nothing else: {:?}", t.effects);
        assert!(t.table.session(session, t.now).is_none());
        let stats = t.table.stats();
        assert_eq!((stats.holds, stats.waiters, stats.sessions), (3, 0, 0), "{how:?}");
        assert!(t.table.check("c", other.token.0, t.now), "{how:?}: others' holds stay");
    }
}

#[test]
fn resume_extends_hold_session_and_lock_delay_deadlines_by_the_margin_but_not_waits() {
    let mut t = T::new();
    let start = t.now;
    let session = SessionId::from_u128(13);
    t.run(Command::OpenSession { session_id: session, ttl_ms: 1_000, owner: Arc::from("s") })
        .unwrap();
    let hold = held(t.acquire_with(|a| {
        a.name = name("h");
        a.ttl_ms = Some(1_000)
    }));
    let waiter = queued(t.acquire_with(|a| {
        a.name = name("h");
        a.wait = Wait::For(1_000)
    }));
    held(t.acquire_with(|a| {
        a.name = name("d");
        a.ttl_ms = Some(10);
        a.lock_delay_ms = 1_000
    }));
    t.now = start + 10 + TICK;
    t.run(Command::Expire).unwrap(); // "d" is now in its lock-delay, until start + 1012
    let hold_left = t.table.hold(hold.hold_id, t.now).unwrap().expires_in_ms.unwrap();
    let session_left = t.table.session(session, t.now).unwrap().expires_in_ms;
    let wait_left = t.table.waiter(waiter, t.now).unwrap().wait_remaining_ms;

    t.run(Command::Resume { margin_ms: 5_000, live: vec![BOOT], token_floor: 0 }).unwrap();
    assert!(t.effects.is_empty());
    assert_eq!(t.table.hold(hold.hold_id, t.now).unwrap().expires_in_ms, Some(hold_left + 5_000));
    assert_eq!(t.table.session(session, t.now).unwrap().expires_in_ms, session_left + 5_000);
    assert_eq!(t.table.waiter(waiter, t.now).unwrap().wait_remaining_ms, wait_left);

    // At the old deadlines only the wait ends.
    t.now = start + 1_000 + TICK;
    t.run(Command::Expire).unwrap();
    assert!(matches!(t.effects.as_slice(),
        [Effect::WaitEnded { hold_id, reason: WaitEnd::Timeout, .. }] if *hold_id == waiter));
    let delay_end = start + 10 + TICK + 1_000 + TICK + 5_000;
    t.now = delay_end - 1;
    assert_eq!(code(t.lock("d", Mode::Exclusive, Wait::Try)), "locked", "lock-delay extended");
    t.now = delay_end;
    held(t.lock("d", Mode::Exclusive, Wait::Try));
}

#[test]
fn every_waiter_records_its_owner_with_node_id_and_boot_epoch() {
    let mut t = T::new();
    let session = SessionId::from_u128(21);
    t.run(Command::OpenSession { session_id: session, ttl_ms: 60_000, owner: Arc::from("s") })
        .unwrap();
    let holder = held(t.lock("db", Mode::Exclusive, Wait::Try));
    let restarted = NodeEpoch { node: 2, epoch: 3 };
    let node_2_now = NodeEpoch { node: 2, epoch: 4 };
    let requests = [
        (Holder::Session(session), Origin { boot: BOOT, via: Via::Session(session) }),
        (Holder::Connection(9), Origin { boot: restarted, via: Via::Connection(9) }),
        (Holder::Anonymous, Origin { boot: node_2_now, via: Via::Request(7) }),
        (Holder::CompatOwner(Arc::from("alice")), Origin { boot: BOOT, via: Via::Request(8) }),
    ];
    let mut waiters = Vec::new();
    for (who, origin) in requests {
        let id = queued(t.acquire_with(|a| {
            a.holder = who;
            a.want = Want::Lock(Mode::Shared);
            a.wait = Wait::Forever;
            a.origin = origin
        }));
        waiters.push((id, origin));
    }
    // The origins are table state: they survive a snapshot.
    t.table = Table::restore(&t.table.snapshot(), Limits::default()).unwrap();
    t.run(Command::Resume { margin_ms: 0, live: vec![BOOT, node_2_now], token_floor: 0 }).unwrap();
    let (gone, gone_origin) = waiters[1];
    assert_eq!(
        t.effects,
        [Effect::WaitEnded {
            hold_id: gone,
            name: name("db"),
            origin: gone_origin,
            reason: WaitEnd::NodeGone
        }],
        "only the waiter served by the restarted boot is cancelled"
    );
    t.release(holder.hold_id).unwrap();
    assert_eq!(woken(&t.effects), [waiters[0], waiters[2], waiters[3]]);
}

/// A table with sessions, waiters on locks and semaphores, request ids and a lock-delay.
fn busy_table() -> T {
    let mut t = T::new();
    let open = |id, ttl_ms| Command::OpenSession {
        session_id: SessionId::from_u128(id),
        ttl_ms,
        owner: Arc::from(format!("s{id}")),
    };
    t.run(open(1, 500)).unwrap();
    t.run(open(2, 5_000)).unwrap();
    held(t.acquire_with(|a| {
        a.name = name("a");
        a.holder = Holder::Session(SessionId::from_u128(1));
        a.ttl_ms = None;
        a.lock_delay_ms = 200
    }));
    queued(t.acquire_with(|a| {
        a.name = name("a");
        a.wait = Wait::For(1_000);
        a.request_id = Some(Arc::from("r1"))
    }));
    let pool = |permits| Want::Semaphore { limit: 3, permits };
    held(t.acquire_with(|a| {
        a.name = name("m");
        a.want = pool(2);
        a.ttl_ms = Some(300)
    }));
    queued(t.acquire_with(|a| {
        a.name = name("m");
        a.want = pool(2);
        a.wait = Wait::Forever;
        a.holder = Holder::Session(SessionId::from_u128(2))
    }));
    held(t.acquire_with(|a| {
        a.name = name("r");
        a.want = Want::Lock(Mode::Shared)
    }));
    queued(t.acquire_with(|a| {
        a.name = name("r");
        a.holder = Holder::CompatOwner(Arc::from("alice"));
        a.wait = Wait::Forever
    }));
    held(t.acquire_with(|a| {
        a.name = name("x");
        a.ttl_ms = Some(50);
        a.lock_delay_ms = 100
    }));
    t.now += 60;
    t.run(Command::Expire).unwrap();
    t
}

/// A fixed script of commands over `busy_table`'s names; every response and effect, in order.
fn drive(t: &mut T) -> Vec<(Result<Response, CoreError>, Vec<Effect>)> {
    const S2: SessionId = SessionId::from_u128(2);
    type Step = fn(&mut T) -> Result<Response, CoreError>;
    let steps: [Step; 10] = [
        |t| t.lock("x", Mode::Exclusive, Wait::Forever),
        |t| {
            t.now += 100;
            t.run(Command::KeepAlive { sessions: vec![S2] })
        },
        |t| {
            t.acquire_with(|a| {
                a.name = name("a");
                a.wait = Wait::For(2_000);
                a.request_id = Some(Arc::from("r1"))
            })
        },
        |t| t.run(Command::Resume { margin_ms: 100, live: vec![BOOT], token_floor: 0 }),
        |t| {
            t.now += 400; // "m"'s hold runs out: session 2's waiter takes its permits
            t.lock("y", Mode::Shared, Wait::Try)
        },
        |t| {
            t.now += 100; // session 1 runs out: "a" goes into its lock-delay
            t.run(Command::Expire)
        },
        |t| t.run(Command::AdminReleaseName { name: name("r"), lock_delay: true }),
        |t| t.run(Command::CloseSession { session_id: S2 }),
        |t| t.run(Command::DetachSession { session_id: S2, grace_ms: 10 }),
        |t| {
            t.now += 200; // the lock-delay is over: "a" passes to the request-id waiter
            t.run(Command::Expire)
        },
    ];
    steps
        .into_iter()
        .map(|step| {
            let response = step(t);
            (response, t.effects.clone())
        })
        .collect()
}

#[test]
fn same_commands_from_the_same_snapshot_give_identical_snapshot_bytes() {
    let mut original = busy_table();
    let start = original.table.snapshot();
    assert_eq!(Table::restore(&start, Limits::default()).unwrap().snapshot(), start);
    let mut runs = Vec::new();
    for _ in 0..2 {
        let mut t = T {
            table: Table::restore(&start, Limits::default()).unwrap(),
            now: original.now,
            next_id: original.next_id,
            effects: Vec::new(),
        };
        let log = drive(&mut t);
        runs.push((log, t.table.snapshot()));
    }
    // The original's maps grew through another history; its bytes must not differ either.
    let log = drive(&mut original);
    runs.push((log, original.table.snapshot()));
    assert_eq!(runs[0], runs[1], "two replays from the same snapshot");
    assert_eq!(runs[0], runs[2], "a replay and the table that was snapshotted");
    let (log, end) = &runs[0];
    assert_ne!(end, &start, "the script changed the table");
    assert!(log.iter().any(|(_, effects)| !effects.is_empty()), "the script had effects");
}

#[test]
fn a_name_with_no_holders_waiters_or_lock_delay_is_forgotten() {
    fn open(t: &mut T) -> SessionId {
        let session = SessionId::from_u128(31);
        t.run(Command::OpenSession { session_id: session, ttl_ms: 100, owner: Arc::from("s") })
            .unwrap();
        session
    }
    type Scenario = fn(&mut T);
    let scenarios: Vec<(&str, Scenario)> = vec![
        ("client release of a hold with a request id", |t| {
            let hold = held(t.acquire_with(|a| a.request_id = Some(Arc::from("r"))));
            t.release(hold.hold_id).unwrap();
        }),
        ("a waiter cancelled, then the holder released", |t| {
            let hold = held(t.lock("db", Mode::Exclusive, Wait::Try));
            let waiter = queued(t.lock("db", Mode::Exclusive, Wait::For(10)));
            t.release(waiter).unwrap();
            t.release(hold.hold_id).unwrap();
        }),
        ("a waiter timed out, then the holder released", |t| {
            let hold = held(t.lock("db", Mode::Exclusive, Wait::Try));
            queued(t.lock("db", Mode::Exclusive, Wait::For(10)));
            t.now += 10 + TICK;
            t.release(hold.hold_id).unwrap();
        }),
        ("a request id try-repeat withdrew the waiter, then the holder released", |t| {
            let hold = held(t.lock("db", Mode::Exclusive, Wait::Try));
            let rid = |a: &mut Acquire| a.request_id = Some(Arc::from("r"));
            queued(t.acquire_with(|a| {
                rid(a);
                a.wait = Wait::Forever
            }));
            assert_eq!(code(t.acquire_with(rid)), "locked");
            t.release(hold.hold_id).unwrap();
        }),
        ("a TTL expiry without lock-delay", |t| {
            held(t.acquire_with(|a| a.ttl_ms = Some(10)));
            t.now += 10 + TICK;
            t.run(Command::Expire).unwrap();
        }),
        ("a TTL expiry, then its lock-delay passed", |t| {
            held(t.acquire_with(|a| {
                a.ttl_ms = Some(10);
                a.lock_delay_ms = 100
            }));
            t.now += 10 + TICK;
            t.run(Command::Expire).unwrap();
            assert_eq!(t.table.stats().names, 1, "kept while its lock-delay runs");
            t.now += 100 + TICK;
            t.run(Command::Expire).unwrap();
        }),
        ("semaphore holders released", |t| {
            let sem = Want::Semaphore { limit: 3, permits: 1 };
            let one = held(t.acquire_with(|a| a.want = sem));
            let two = held(t.acquire_with(|a| a.want = sem));
            t.release(one.hold_id).unwrap();
            t.release(two.hold_id).unwrap();
        }),
        ("a session closed", |t| {
            let session = open(t);
            held(t.acquire_with(|a| a.holder = Holder::Session(session)));
            t.run(Command::CloseSession { session_id: session }).unwrap();
        }),
        ("a session's lease ran out", |t| {
            let session = open(t);
            held(t.acquire_with(|a| a.holder = Holder::Session(session)));
            t.now += 100 + TICK;
            t.run(Command::Expire).unwrap();
        }),
        ("a compat connection closed", |t| {
            held(t.acquire_with(|a| a.holder = Holder::Connection(5)));
            t.run(Command::ReleaseHolder { holder: Holder::Connection(5) }).unwrap();
        }),
        ("an admin released the name", |t| {
            held(t.lock("db", Mode::Shared, Wait::Try));
            queued(t.lock("db", Mode::Exclusive, Wait::Forever));
            t.run(Command::AdminReleaseName { name: name("db"), lock_delay: false }).unwrap();
        }),
    ];
    for (case, scenario) in scenarios {
        let mut t = T::new();
        scenario(&mut t);
        let stats = t.table.stats();
        assert_eq!(
            (stats.names, stats.holds, stats.waiters, stats.sessions),
            (0, 0, 0, 0),
            "{case}"
        );
        assert_eq!(t.table.next_deadline(), None, "{case}: no timer outlives its name");
        assert_eq!(t.table.list("", None, 10, t.now), (vec![], None), "{case}");
    }
}

#[test]
fn admin_list_shows_holders_waiters_with_wait_times_and_last_token_paged_by_cursor() {
    let mut t = T::new();
    let start = t.now;
    let r1 = held(t.lock("a", Mode::Shared, Wait::Try));
    let r2 = held(t.lock("a", Mode::Shared, Wait::Try));
    let writer = queued(t.lock("a", Mode::Exclusive, Wait::For(500)));
    t.now += 10;
    let reader = queued(t.lock("a", Mode::Shared, Wait::Forever));
    let gone = held(t.acquire_with(|a| {
        a.name = name("b");
        a.ttl_ms = Some(10);
        a.lock_delay_ms = 1_000
    }));
    let sem = held(t.acquire_with(|a| {
        a.name = name("c");
        a.want = Want::Semaphore { limit: 3, permits: 2 }
    }));
    let d = held(t.lock("d", Mode::Exclusive, Wait::Try));
    t.now = start + 40;
    t.run(Command::Expire).unwrap(); // "b"'s hold runs out into its lock-delay

    let (all, next) = t.table.list("", None, 10, t.now);
    assert_eq!(next, None);
    let [a, b, c, d_view] = all.as_slice() else { panic!("four names expected, got {all:?}") };
    let ids = |holds: &[HoldView]| holds.iter().map(|h| (h.hold_id, h.token)).collect::<Vec<_>>();
    assert_eq!(ids(&a.holders), [(r1.hold_id, r1.token), (r2.hold_id, r2.token)]);
    let waits: Vec<_> =
        a.waiters.iter().map(|w| (w.hold_id, w.waiting_ms, w.wait_remaining_ms)).collect();
    assert_eq!(waits, [(writer, 40, Some(460)), (reader, 30, None)]);
    assert_eq!(a.last_token, Some(r2.token));
    // "b" only has its lock-delay left: no holders, but the last token is still shown.
    assert_eq!((b.kind, b.holders.len(), b.waiters.len()), (Some(Kind::Lock), 0, 0));
    assert_eq!(b.last_token, Some(gone.token));
    assert_eq!((c.kind, c.limit, c.holders[0].permits), (Some(Kind::Semaphore), Some(3), 2));
    assert_eq!(c.last_token, Some(sem.token));
    assert_eq!(ids(&d_view.holders), [(d.hold_id, d.token)]);

    for page_size in [1, 2, 3, 4] {
        let mut pages = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let (page, next) = t.table.list("", cursor.as_deref(), page_size, t.now);
            assert!(page.len() <= page_size);
            pages.extend(page);
            assert!(pages.len() <= all.len(), "page size {page_size}: the cursor went back");
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(pages, all, "page size {page_size} walks every name once, in order");
    }
    let (only_c, next) = t.table.list("c", None, 10, t.now);
    assert_eq!((only_c.as_slice(), next), (&all[2..3], None), "a prefix selects");
}
