//! The PostgreSQL backend against a real PostgreSQL that each test starts itself
//! (tests/common/pg.rs): the shared conformance suite in both lock scopes and across processes,
//! and one test for each flaw of the original crate's PostgreSQL backend that we fix.

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use common::backend_suite::{self as suite, Caps};
use common::pg::Pg;
use lockserver_client::postgres::tokio_postgres::{self, NoTls};
use lockserver_client::postgres::{
    lock_key, semaphore_slot_key, LockScope, PostgresLockProvider, PostgresLockProviderBuilder,
};
use lockserver_client::proto::ErrorCode;
use lockserver_client::{LockError, LockHandle, LostReason};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

async fn provider(pg: &Pg) -> PostgresLockProvider {
    provider_with(pg, |builder| builder).await
}

async fn provider_with(
    pg: &Pg,
    settings: impl FnOnce(PostgresLockProviderBuilder) -> PostgresLockProviderBuilder,
) -> PostgresLockProvider {
    let builder = PostgresLockProvider::builder().connection_string(&pg.url());
    settings(builder).build().await.expect("a provider")
}

/// A plain connection that looks at the server from outside (pg_locks, pg_stat_activity).
async fn admin(pg: &Pg) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&pg.url(), NoTls).await.expect("admin");
    tokio::spawn(connection);
    client
}

/// The sessions holding (or waiting for, `granted = false`) advisory key `key`.
async fn lockers(admin: &tokio_postgres::Client, key: i64, granted: bool) -> Vec<i32> {
    let rows = admin
        .query(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 \
             AND ((classid::bigint << 32) | objid::bigint) = $1 AND granted = $2 ORDER BY pid",
            &[&key, &granted],
        )
        .await
        .expect("pg_locks");
    rows.iter().map(|row| row.get(0)).collect()
}

/// The slot key among `slots` that a session waits for, if any.
async fn waiting_slot(admin: &tokio_postgres::Client, slots: &[i64]) -> Option<i64> {
    for slot in slots {
        if !lockers(admin, *slot, false).await.is_empty() {
            return Some(*slot);
        }
    }
    None
}

/// Polls `check` until it gives a value (every 20 ms, up to `within`); panics with `what`
/// otherwise.
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("not within {within:?}: {what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_backend_conformance() {
    let pg = Pg::start();
    let (a, b, c) = (provider(&pg).await, provider(&pg).await, provider(&pg).await);
    let caps = Caps { tokens: true };
    suite::exclusive(&a, &b, "pg-exclusive", caps).await;
    suite::reader_writer(&a, &b, &c, "pg-rw").await;
    suite::semaphore(&a, &b, &c, "pg-sem").await;
    suite::drop_releases(&a, &b, "pg-drop").await;
    suite::names_of_any_shape(&a, "pg-names").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_backend_conformance_transaction_scoped() {
    let pg = Pg::start();
    let scoped = |builder: PostgresLockProviderBuilder| builder.scope(LockScope::Transaction);
    let a = provider_with(&pg, scoped).await;
    let b = provider_with(&pg, scoped).await;
    let c = provider_with(&pg, scoped).await;
    let caps = Caps { tokens: true };
    suite::exclusive(&a, &b, "pgx-exclusive", caps).await;
    suite::reader_writer(&a, &b, &c, "pgx-rw").await;
    suite::semaphore(&a, &b, &c, "pgx-sem").await;
    suite::drop_releases(&a, &b, "pgx-drop").await;
    suite::names_of_any_shape(&a, "pgx-names").await;
}

#[test]
fn postgres_backend_exclusive_across_processes() {
    let pg = Pg::start();
    let url = pg.url();
    suite::contention(
        "postgres_backend_contention_child",
        "pg-contention",
        3,
        20,
        &[("BACKEND_SUITE_PG", &url)],
    );
}

/// Runs only as a child of the test above (a no-op otherwise).
#[tokio::test(flavor = "multi_thread")]
async fn postgres_backend_contention_child() {
    let Some((name, cycles, dir)) = suite::contention_child_args() else { return };
    let url = std::env::var("BACKEND_SUITE_PG").expect("connection string");
    let provider =
        PostgresLockProvider::builder().connection_string(&url).build().await.expect("provider");
    suite::contention_child(&provider, &name, cycles, &dir).await;
}

/// The original treated a zero timeout as "wait forever".
#[tokio::test(flavor = "multi_thread")]
async fn zero_timeout_tries_once_not_forever() {
    let pg = Pg::start();
    let (a, b) = (provider(&pg).await, provider(&pg).await);
    let held = a.lock("zero").acquire(None).await.expect("acquire");
    let started = Instant::now();
    let tried =
        tokio::time::timeout(Duration::from_secs(5), b.lock("zero").acquire(Some(Duration::ZERO)))
            .await
            .expect("a zero timeout answers at once, it does not wait");
    assert_eq!(tried.unwrap_err(), LockError::Locked);
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    let read = b.rw_lock("zero").acquire_read(Some(Duration::ZERO)).await;
    assert_eq!(read.unwrap_err(), LockError::Locked, "a shared try is refused too");
    let ticket = b.semaphore("zero-sem", 1).acquire(Some(Duration::ZERO)).await.expect("free");
    let full = a.semaphore("zero-sem", 1).acquire(Some(Duration::ZERO)).await;
    assert_eq!(full.unwrap_err(), LockError::Locked, "a full semaphore's try is refused");
    ticket.release().await.unwrap();
    held.release().await.unwrap();
    let free = b.lock("zero").acquire(Some(Duration::ZERO)).await.expect("free now");
    free.release().await.unwrap();
}

/// The original returned a dropped handle's connection to the pool with the lock still held:
/// nobody else could take it, and the pool's next user re-entered it without knowing.
#[tokio::test(flavor = "multi_thread")]
async fn dropping_a_handle_does_not_leak_the_lock_into_the_pool() {
    let pg = Pg::start();
    let admin = admin(&pg).await;
    let a = provider_with(&pg, |builder| builder.max_pool_size(1)).await;
    let b = provider(&pg).await;
    let handle = a.lock("leak").acquire(None).await.expect("acquire");
    drop(handle);
    let b_holds = b.lock("leak").acquire(Some(Duration::from_secs(5))).await;
    let b_holds = b_holds.expect("another provider gets the dropped lock");
    // a's only connection came back to its pool holding nothing: it cannot re-enter "leak"...
    let again = a.lock("leak").try_acquire().await.expect("try");
    assert!(again.is_none(), "a's pooled connection still held the dropped lock");
    // ...and it serves a different name.
    let other = a.lock("leak-other").acquire(Some(Duration::from_secs(5))).await;
    let other = other.expect("the pool's connection is usable again");
    assert_eq!(lockers(&admin, lock_key("leak"), true).await.len(), 1, "only b holds it");
    other.release().await.unwrap();
    b_holds.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_signal_fires_when_the_connection_dies() {
    let pg = Pg::start();
    let admin = admin(&pg).await;
    let (a, b) = (provider(&pg).await, provider(&pg).await);
    let handle = a.lock("doomed").acquire(None).await.expect("acquire");
    let mut lost = handle.lost();
    assert!(!lost.is_lost());
    let pids = lockers(&admin, handle.key(), true).await;
    assert_eq!(pids.len(), 1);
    admin.execute("SELECT pg_terminate_backend($1)", &[&pids[0]]).await.expect("terminate");
    let reason = tokio::time::timeout(Duration::from_secs(5), lost.wait()).await;
    assert_eq!(reason.expect("lost within 5 s"), Some(LostReason::ConnectionLost));
    assert_eq!(handle.release().await, Err(LockError::Lost(LostReason::ConnectionLost)));
    let next = b.lock("doomed").acquire(Some(Duration::from_secs(5))).await;
    next.expect("the dead session's lock is free").release().await.unwrap();
    // The provider whose connection died still works (a new connection).
    let again = a.lock("doomed").acquire(Some(Duration::from_secs(5))).await;
    again.expect("a's pool recovers").release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_signal_fires_when_the_server_stops() {
    let mut pg = Pg::start();
    let a = provider(&pg).await;
    let handle = a.lock("server-stops").acquire(None).await.expect("acquire");
    let ticket = a.semaphore("server-stops-sem", 2).acquire(None).await.expect("ticket");
    let (mut lost, mut ticket_lost) = (handle.lost(), ticket.lost());
    tokio::task::block_in_place(|| pg.stop());
    let within = Duration::from_secs(5);
    let reason = tokio::time::timeout(within, lost.wait()).await.expect("lost within 5 s");
    assert_eq!(reason, Some(LostReason::ConnectionLost));
    let reason = tokio::time::timeout(within, ticket_lost.wait()).await.expect("ticket lost");
    assert_eq!(reason, Some(LostReason::ConnectionLost));
    let next = a.lock("another").acquire(Some(Duration::from_secs(2))).await;
    assert!(matches!(next, Err(LockError::Connection(_))), "no server: {next:?}");
}

/// A session that stops answering (here: its backend process is paused, as a partition would
/// look) is lost after 3 keepalive intervals without an answer, and its lock is freed once
/// the server sees the closed socket.
#[tokio::test(flavor = "multi_thread")]
async fn lost_signal_fires_when_the_server_stops_answering() {
    let pg = Pg::start();
    let admin = admin(&pg).await;
    let interval = Duration::from_millis(200);
    let a = provider_with(&pg, |builder| builder.keepalive_interval(interval)).await;
    let b = provider(&pg).await;
    let handle = a.lock("paused").acquire(None).await.expect("acquire");
    let pid = lockers(&admin, handle.key(), true).await[0];
    let mut lost = handle.lost();
    let paused_at = Instant::now();
    kill(Pid::from_raw(pid), Signal::SIGSTOP).expect("pause the backend");
    let reason = tokio::time::timeout(Duration::from_secs(5), lost.wait()).await;
    kill(Pid::from_raw(pid), Signal::SIGCONT).expect("resume the backend");
    assert_eq!(reason.expect("lost within 5 s"), Some(LostReason::ConnectionLost));
    assert!(paused_at.elapsed() >= interval * 2, "lost before the keepalive timed out");
    let next = b.lock("paused").acquire(Some(Duration::from_secs(5))).await;
    next.expect("the lost lock's session ended").release().await.unwrap();
    assert_eq!(handle.release().await, Err(LockError::Lost(LostReason::ConnectionLost)));
}

/// `LockScope::Transaction` holds `pg_advisory_xact_lock` in a transaction the handle keeps
/// open; release (or drop) ends it, and a failed attempt leaves no transaction open.
#[tokio::test(flavor = "multi_thread")]
async fn transaction_scoped_locks_live_in_an_open_transaction_until_release() {
    let pg = Pg::start();
    let admin = admin(&pg).await;
    let scoped = |builder: PostgresLockProviderBuilder| builder.scope(LockScope::Transaction);
    let x = provider_with(&pg, scoped).await;
    let y = provider_with(&pg, scoped).await;
    let session = provider(&pg).await;
    let state_of = |key: i64| {
        let admin = &admin;
        async move {
            let rows = admin
                .query(
                    "SELECT a.state FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
                     WHERE l.locktype = 'advisory' AND l.granted \
                     AND ((l.classid::bigint << 32) | l.objid::bigint) = $1",
                    &[&key],
                )
                .await
                .expect("state");
            rows.iter().map(|row| row.get::<_, String>(0)).collect::<Vec<_>>()
        }
    };
    let in_transaction = || {
        let admin = &admin;
        async move {
            let row = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'",
                    &[],
                )
                .await
                .expect("count");
            row.get::<_, i64>(0)
        }
    };

    let held = x.lock("tx").acquire(None).await.expect("acquire");
    assert_eq!(state_of(held.key()).await, ["idle in transaction"]);
    let by_session = session.lock("tx-session").acquire(None).await.expect("acquire");
    assert_eq!(state_of(by_session.key()).await, ["idle"], "a session lock: no transaction");
    by_session.release().await.unwrap();

    // Waits in the other provider fail without leaving a transaction open.
    assert!(y.lock("tx").try_acquire().await.unwrap().is_none());
    let timed = y.lock("tx").acquire(Some(Duration::from_millis(200))).await;
    assert!(matches!(timed, Err(LockError::Timeout(_))), "{timed:?}");
    assert_eq!(in_transaction().await, 1, "only the holder's transaction is open");

    // A reader in a transaction excludes the writer's session lock on the same key.
    held.release().await.unwrap();
    assert_eq!(in_transaction().await, 0, "release ended the transaction");
    let reader = x.rw_lock("tx").acquire_read(None).await.expect("read");
    assert!(session.rw_lock("tx").try_acquire_write().await.unwrap().is_none());
    drop(reader);
    let writer = session.rw_lock("tx").acquire_write(Some(Duration::from_secs(5))).await;
    writer.expect("dropping the reader ended its transaction").release().await.unwrap();
    eventually(Duration::from_secs(5), "no transaction left open", || async {
        (in_transaction().await == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_rise_across_holders() {
    let pg = Pg::start();
    let a = provider(&pg).await;
    let b = provider(&pg).await;
    let x = provider_with(&pg, |builder| builder.scope(LockScope::Transaction)).await;
    let mut last = 0;
    for _ in 0..3 {
        for provider in [&a, &b] {
            let handle = provider.lock("tokens").acquire(Some(Duration::from_secs(5))).await;
            let handle = handle.expect("acquire");
            let token = LockHandle::token(&handle).expect("a token").get();
            assert!(token > last, "token {token} after {last}");
            last = token;
            handle.release().await.unwrap();
        }
    }
    // Readers get tokens too, each its own; the writer after them a larger one.
    let r1 = a.rw_lock("tokens").acquire_read(None).await.unwrap();
    let r2 = b.rw_lock("tokens").acquire_read(None).await.unwrap();
    let (t1, t2) = (r1.token().get(), r2.token().get());
    assert!(t1 > last && t2 > t1, "readers {t1}, {t2} after {last}");
    r1.release().await.unwrap();
    r2.release().await.unwrap();
    let writer = x.rw_lock("tokens").acquire_write(None).await.unwrap();
    assert!(writer.token().get() > t2, "a transaction-scoped provider shares the sequence");
    last = writer.token().get();
    writer.release().await.unwrap();
    let ticket = b.semaphore("tokens", 2).acquire(None).await.unwrap();
    assert!(ticket.token().get() > last, "semaphore tickets draw from the same sequence");
    ticket.release().await.unwrap();
}

/// A timed wait is one statement blocked in the server on an advisory lock for the whole
/// wait (not a loop of tries), and the release wakes it at once.
#[tokio::test(flavor = "multi_thread")]
async fn timed_wait_does_not_poll() {
    let pg = Pg::start();
    let admin = admin(&pg).await;
    let (a, b) = (provider(&pg).await, provider(&pg).await);
    let held = a.lock("no-poll").acquire(None).await.expect("acquire");
    let waiter = tokio::spawn(async move {
        let handle = b.lock("no-poll").acquire(Some(Duration::from_secs(20))).await;
        (handle, Instant::now())
    });
    let waiting = "SELECT pid, query_start::text FROM pg_stat_activity \
                   WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'";
    let first = eventually(Duration::from_secs(5), "the waiter blocks on an advisory lock", || {
        let admin = &admin;
        async move {
            let rows = admin.query(waiting, &[]).await.expect("activity");
            (rows.len() == 1).then(|| (rows[0].get::<_, i32>(0), rows[0].get::<_, String>(1)))
        }
    })
    .await;
    // The observation window: a polling client would have re-issued its statement by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = admin.query(waiting, &[]).await.expect("activity");
    assert_eq!(later.len(), 1, "still exactly one waiter");
    assert_eq!((later[0].get::<_, i32>(0), later[0].get::<_, String>(1)), first, "same statement");
    let released_at = Instant::now();
    held.release().await.unwrap();
    let (handle, granted_at) = waiter.await.unwrap();
    let handle = handle.expect("granted after the release");
    assert!(granted_at - released_at < Duration::from_millis(500), "woken by the release");
    handle.release().await.unwrap();
}

/// A semaphore waiter blocked on one slot is woken by NOTIFY when another slot is released
/// (the recheck is 30 s here, so only the wake-up can explain a quick grant).
#[tokio::test(flavor = "multi_thread")]
async fn semaphore_waiter_wakes_when_any_ticket_is_released() {
    let pg = Pg::start();
    let admin = admin(&pg).await;
    let slow_recheck =
        |builder: PostgresLockProviderBuilder| builder.semaphore_recheck(Duration::from_secs(30));
    let a = provider_with(&pg, slow_recheck).await;
    let c = provider_with(&pg, slow_recheck).await;
    let semaphore = a.semaphore("wake", 3);
    let mut tickets = Vec::new();
    for _ in 0..3 {
        tickets.push(semaphore.acquire(Some(Duration::ZERO)).await.expect("a free ticket"));
    }
    let slots: Vec<i64> = (0..3).map(|slot| semaphore_slot_key("wake", slot)).collect();
    let mut held: Vec<i64> = tickets.iter().map(|ticket| ticket.key()).collect();
    held.sort();
    let mut expected = slots.clone();
    expected.sort();
    assert_eq!(held, expected, "three tickets take the three slots");
    let waiter = tokio::spawn(async move {
        let ticket = c.semaphore("wake", 3).acquire(Some(Duration::from_secs(20))).await;
        (ticket, Instant::now())
    });
    let waited_on = eventually(Duration::from_secs(5), "the waiter blocks on a slot", || {
        waiting_slot(&admin, &slots)
    })
    .await;
    let position = tickets.iter().position(|ticket| ticket.key() != waited_on).unwrap();
    let released = tickets.remove(position);
    let released_key = released.key();
    let released_at = Instant::now();
    released.release().await.unwrap();
    let (ticket, granted_at) = waiter.await.unwrap();
    let ticket = ticket.expect("a ticket after the release");
    assert!(granted_at - released_at < Duration::from_secs(2), "woken, not rechecked");
    assert_eq!(ticket.key(), released_key, "it took the released slot");
    ticket.release().await.unwrap();
    for ticket in tickets {
        ticket.release().await.unwrap();
    }
}

/// A slot freed without a NOTIFY (its holder's connection died) is found by the recheck.
#[tokio::test(flavor = "multi_thread")]
async fn semaphore_waiter_finds_a_slot_freed_by_a_dead_holder() {
    let pg = Pg::start();
    let admin = admin(&pg).await;
    let a = provider(&pg).await;
    let c =
        provider_with(&pg, |builder| builder.semaphore_recheck(Duration::from_millis(300))).await;
    let first = a.semaphore("dead", 2).acquire(None).await.unwrap();
    let second = a.semaphore("dead", 2).acquire(None).await.unwrap();
    let waiter =
        tokio::spawn(
            async move { c.semaphore("dead", 2).acquire(Some(Duration::from_secs(20))).await },
        );
    let slots = [first.key(), second.key()];
    let waited_on = eventually(Duration::from_secs(5), "the waiter blocks on a slot", || {
        waiting_slot(&admin, &slots)
    })
    .await;
    let victim = slots.into_iter().find(|slot| *slot != waited_on).unwrap();
    let pid = lockers(&admin, victim, true).await[0];
    admin.execute("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap();
    let ticket = tokio::time::timeout(Duration::from_secs(3), waiter).await;
    let ticket = ticket.expect("found within a few rechecks").unwrap().expect("a ticket");
    assert_eq!(ticket.key(), victim);
    ticket.release().await.unwrap();
    drop((first, second));
}

/// Dropping an `acquire` future mid-wait cancels the wait in the server: no ghost waiter stays
/// queued (it would be granted the lock later, with nobody to release it).
#[tokio::test(flavor = "multi_thread")]
async fn an_abandoned_wait_leaves_no_waiter_behind() {
    let pg = Pg::start();
    let admin = admin(&pg).await;
    let (a, b, c) = (provider(&pg).await, provider(&pg).await, provider(&pg).await);
    let key = lock_key("abandon");
    let held = a.lock("abandon").acquire(None).await.expect("acquire");
    let lock_b = b.lock("abandon");
    let abandoned = tokio::time::timeout(Duration::from_millis(300), lock_b.acquire(None)).await;
    assert!(abandoned.is_err(), "still held: the wait was abandoned");
    eventually(Duration::from_secs(5), "the abandoned waiter left the queue", || async {
        lockers(&admin, key, false).await.is_empty().then_some(())
    })
    .await;
    held.release().await.unwrap();
    let free = c.lock("abandon").try_acquire().await.expect("try");
    free.expect("nobody took it in between").release().await.unwrap();
}

/// The key of a name is the documented SQL expression, so other tools can take the same lock.
#[tokio::test(flavor = "multi_thread")]
async fn names_map_to_the_documented_sql_key() {
    let pg = Pg::start();
    let admin = admin(&pg).await;
    let a = provider(&pg).await;
    for name in ["invoices", "ünïcødé-名前-🔒", &"long-".repeat(50)] {
        let handle = a.lock(name).acquire(None).await.expect("acquire");
        let row = admin
            .query_one(
                "SELECT ('x' || left(encode(sha256(convert_to($1, 'UTF8')), 'hex'), 16))\
                 ::bit(64)::bigint",
                &[&name],
            )
            .await
            .expect("key in SQL");
        let key: i64 = row.get(0);
        assert_eq!(key, lock_key(name));
        assert_eq!(lockers(&admin, key, true).await.len(), 1, "{name} is held under its key");
        handle.release().await.unwrap();
    }
    let too_long = a.lock(&"x".repeat(256)).acquire(None).await;
    assert!(matches!(too_long, Err(LockError::InvalidName(_))), "{too_long:?}");
    let control = a.lock("tab\there").acquire(None).await;
    assert!(matches!(control, Err(LockError::InvalidName(_))), "{control:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_errors_map_to_lock_errors() {
    let pg = Pg::start();
    let build = |url: String| async move {
        PostgresLockProvider::builder().connection_string(&url).build().await.map(|_| ())
    };
    let bad = build("host=127.0.0.1 port=notaport".into()).await;
    assert!(matches!(bad, Err(LockError::InvalidArgument(_))), "{bad:?}");
    let none = PostgresLockProvider::builder().build().await.map(|_| ());
    assert!(matches!(none, Err(LockError::InvalidArgument(_))), "{none:?}");
    let role = build(format!("host=127.0.0.1 port={} user=nobody_here", pg.port)).await;
    assert!(matches!(role, Err(LockError::Auth(_))), "an unknown role: {role:?}");
    let db = build(format!("host=127.0.0.1 port={} user=postgres dbname=nope", pg.port)).await;
    assert!(matches!(db, Err(LockError::InvalidArgument(_))), "an unknown database: {db:?}");
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let refused = build(format!("host=127.0.0.1 port={} user=postgres", closed_port.port())).await;
    assert!(matches!(refused, Err(LockError::Connection(_))), "{refused:?}");
}

/// Each held lock pins a connection: a full pool fails a try with `limit_exceeded` (not
/// `locked`: the name is free) and bounds a timed wait.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_pool_fails_a_try_and_bounds_a_wait() {
    let pg = Pg::start();
    let a = provider_with(&pg, |builder| builder.max_pool_size(1)).await;
    let held = a.lock("pool-1").acquire(None).await.expect("acquire");
    match a.lock("pool-2").try_acquire().await {
        Err(LockError::Server { code: ErrorCode::LimitExceeded, .. }) => {}
        other => panic!("a try with a full pool: {other:?}"),
    }
    let wait = Duration::from_millis(200);
    let started = Instant::now();
    let timed = a.lock("pool-2").acquire(Some(wait)).await;
    assert!(matches!(timed, Err(LockError::Timeout(_))), "{timed:?}");
    assert!(started.elapsed() >= wait);
    let waiting = a.lock("pool-2");
    let (released, next) =
        tokio::join!(held.release(), waiting.acquire(Some(Duration::from_secs(5))));
    released.unwrap();
    next.expect("the connection came back").release().await.unwrap();
}
