//! The Redis backend of the client (feature `redis`) against real `redis-server` processes the
//! tests start themselves: the backend conformance suite on a durable single instance (fencing
//! tokens), a plain single instance and Redlock over three, then the rules that are Redis's own.

mod common;

use std::time::{Duration, Instant};

use common::backend_suite::{self as suite, Caps};
use common::redis_servers::{RedisServer, Resp};
use lockserver_client::redis::{RedisLockProvider, RedisLockProviderBuilder};
use lockserver_client::{LockError, LostReason};

fn builder(servers: &[&RedisServer]) -> RedisLockProviderBuilder {
    RedisLockProvider::builder().servers(servers.iter().map(|server| server.url()))
}

async fn provider(servers: &[&RedisServer]) -> RedisLockProvider {
    builder(servers).build().await.expect("a provider")
}

async fn conformance(servers: &[&RedisServer], prefix: &str, caps: Caps) {
    let (a, b, c) = (provider(servers).await, provider(servers).await, provider(servers).await);
    assert_eq!(a.has_fencing_tokens(), caps.tokens);
    suite::exclusive(&a, &b, &format!("{prefix}-exclusive"), caps).await;
    suite::reader_writer(&a, &b, &c, &format!("{prefix}-rw")).await;
    suite::semaphore(&a, &b, &c, &format!("{prefix}-sem")).await;
    suite::drop_releases(&a, &b, &format!("{prefix}-drop")).await;
    suite::names_of_any_shape(&a, &format!("{prefix}-names")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_single_durable_conformance() {
    let server = RedisServer::start_durable();
    conformance(&[&server], "durable", Caps { tokens: true }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_single_conformance() {
    let server = RedisServer::start();
    conformance(&[&server], "single", Caps { tokens: false }).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redlock_conformance() {
    let servers = [RedisServer::start(), RedisServer::start(), RedisServer::start()];
    conformance(&servers.iter().collect::<Vec<_>>(), "redlock", Caps { tokens: false }).await;
}

fn contention(servers: &[&RedisServer], name: &str) {
    let urls = servers.iter().map(|server| server.url()).collect::<Vec<_>>().join(",");
    suite::contention(
        "redis_backend_contention_child",
        name,
        3,
        20,
        &[("BACKEND_SUITE_REDIS_URLS", &urls)],
    );
}

#[test]
fn redis_single_durable_exclusive_across_processes() {
    let server = RedisServer::start_durable();
    contention(&[&server], "durable-contention");
}

#[test]
fn redis_single_exclusive_across_processes() {
    let server = RedisServer::start();
    contention(&[&server], "single-contention");
}

#[test]
fn redlock_exclusive_across_processes() {
    let servers = [RedisServer::start(), RedisServer::start(), RedisServer::start()];
    contention(&servers.iter().collect::<Vec<_>>(), "redlock-contention");
}

/// Runs only as a child of the tests above (a no-op otherwise).
#[tokio::test(flavor = "multi_thread")]
async fn redis_backend_contention_child() {
    let Some((name, cycles, dir)) = suite::contention_child_args() else { return };
    let urls = std::env::var("BACKEND_SUITE_REDIS_URLS").expect("server urls");
    let provider =
        RedisLockProvider::builder().servers(urls.split(',')).build().await.expect("provider");
    suite::contention_child(&provider, &name, cycles, &dir).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redlock_survives_one_of_three_servers_killed_mid_test() {
    let mut servers = [RedisServer::start(), RedisServer::start(), RedisServer::start()];
    let ttl = Duration::from_millis(600);
    let (holder, other) = {
        let all: Vec<&RedisServer> = servers.iter().collect();
        (builder(&all).ttl(ttl).build().await.unwrap(), provider(&all).await)
    };
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let handle = holder.lock("survivor").acquire(Some(Duration::ZERO)).await.expect("free");
    servers[0].kill_9();
    // Two TTLs and more: only extensions confirmed by the two survivors keep it held.
    let until = Instant::now() + ttl * 2 + Duration::from_millis(300);
    while Instant::now() < until {
        let probe = other.lock("survivor").try_acquire().await.expect("2 of 3 answer");
        assert!(probe.is_none(), "another client got a lock that is held");
        assert!(!handle.is_lost(), "lost with a quorum alive: {:?}", handle.lost().reason());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    handle.release().await.expect("released on 2 of 3");
    let newcomer = RedisLockProvider::builder().servers(urls).build().await.expect("2 of 3 up");
    let second =
        newcomer.lock("survivor").acquire(Some(Duration::from_secs(5))).await.expect("2 of 3");
    assert!(other.lock("survivor").try_acquire().await.unwrap().is_none());
    second.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn redlock_minority_fails_and_releases_what_it_got() {
    let mut servers = [RedisServer::start(), RedisServer::start(), RedisServer::start()];
    let redlock = provider(&servers.iter().collect::<Vec<_>>()).await;
    servers[0].kill_9();
    servers[1].kill_9();
    let survivor = &servers[2];
    let sets_before = survivor.calls("set");
    let started = Instant::now();
    match redlock.lock("minority").acquire(Some(Duration::from_secs(5))).await {
        Err(LockError::Connection(message)) => assert!(message.contains("2 of 3"), "{message}"),
        other => panic!("no quorum is possible: a connection error, not {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(4), "it waited for a quorum that cannot be");
    assert!(survivor.calls("set") > sets_before, "the survivor granted its part");
    assert_eq!(survivor.dbsize(), 0, "the survivor kept the minority's key");
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_handle_cannot_release_a_newer_hold() {
    let server = RedisServer::start();
    let short = builder(&[&server])
        .ttl(Duration::from_millis(300))
        .auto_extend(false)
        .build()
        .await
        .unwrap();
    let (newer_client, third) = (provider(&[&server]).await, provider(&[&server]).await);
    for kind in ["lock", "read", "ticket"] {
        let name = format!("stale-{kind}");
        let take = |provider: &RedisLockProvider, wait: Duration| {
            let (provider, name) = (provider.clone(), name.clone());
            async move {
                match kind {
                    "lock" => provider.lock(&name).acquire(Some(wait)).await,
                    // A writer is refused while the old reader (or its expiry) is there.
                    "read" => provider.rw_lock(&name).acquire_write(Some(wait)).await,
                    _ => provider.semaphore(&name, 1).acquire(Some(wait)).await,
                }
            }
        };
        let stale = match kind {
            "read" => short.rw_lock(&name).acquire_read(Some(Duration::ZERO)).await,
            _ => take(&short, Duration::ZERO).await,
        }
        .expect("free");
        let mut lost = stale.lost();
        let reason = tokio::time::timeout(Duration::from_secs(5), lost.wait()).await;
        assert_eq!(reason.expect("lost within 5 s"), Some(LostReason::Expired), "{kind}");
        let newer = take(&newer_client, Duration::from_secs(5)).await.expect("after the expiry");
        match stale.release().await {
            Err(LockError::Lost(_)) => {}
            other => panic!("{kind}: the stale handle's release answered {other:?}"),
        }
        let probe = take(&third, Duration::ZERO).await;
        assert!(matches!(probe, Err(LockError::Locked)), "{kind}: newer hold freed: {probe:?}");
        newer.release().await.expect("the newer hold is intact");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_is_extended_while_held() {
    let server = RedisServer::start();
    let ttl = Duration::from_millis(500);
    let holder = builder(&[&server]).ttl(ttl).build().await.unwrap();
    let other = provider(&[&server]).await;
    let lock = holder.lock("lease-lock").acquire(Some(Duration::ZERO)).await.unwrap();
    let read = holder.rw_lock("lease-rw").acquire_read(Some(Duration::ZERO)).await.unwrap();
    let ticket = holder.semaphore("lease-sem", 1).acquire(Some(Duration::ZERO)).await.unwrap();
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        assert!(other.lock("lease-lock").try_acquire().await.unwrap().is_none());
        assert!(other.rw_lock("lease-rw").try_acquire_write().await.unwrap().is_none());
        assert!(other.semaphore("lease-sem", 1).try_acquire().await.unwrap().is_none());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for handle in [lock, read, ticket] {
        assert!(!handle.is_lost(), "{handle:?}");
        handle.release().await.expect("still held after four TTLs");
    }
    assert!(other.lock("lease-lock").try_acquire().await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_signal_when_extension_fails() {
    let mut server = RedisServer::start();
    let ttl = Duration::from_secs(1);
    let holder = builder(&[&server]).ttl(ttl).build().await.unwrap();
    let handle = holder.lock("doomed").acquire(Some(Duration::ZERO)).await.unwrap();
    let mut lost = handle.lost();
    // Let an extension happen first (the key's remaining time goes back up), so the deadline
    // checked is the one an extension set, not the grant's.
    let pttl = || match server.command(&["PTTL", "lockserver:doomed:writer"]) {
        Resp::Int(ms) => ms,
        other => panic!("PTTL answered {other:?}"),
    };
    let (mut before, deadline) = (pttl(), Instant::now() + Duration::from_secs(5));
    loop {
        assert!(Instant::now() < deadline, "no extension within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = pttl();
        if now > before + 50 {
            break;
        }
        before = now;
    }
    server.kill_9();
    let killed = Instant::now();
    let reason = tokio::time::timeout(ttl * 3, lost.wait()).await.expect("the signal fires");
    let after = killed.elapsed();
    assert_eq!(reason, Some(LostReason::ConnectionLost));
    // The last confirmed extension started before the kill, so the local deadline (its start +
    // TTL − drift) comes before the server could have expired the key.
    assert!(after < ttl, "lost fired {after:?} after the kill, not within the {ttl:?} TTL");
    assert!(matches!(handle.release().await, Err(LockError::Lost(LostReason::ConnectionLost))));
}

#[tokio::test(flavor = "multi_thread")]
async fn blocking_acquire_wakes_on_release_without_polling() {
    let server = RedisServer::start();
    // A fallback poll far longer than the test: only the release message can wake the waiter.
    let poll = Duration::from_secs(30);
    let holder = provider(&[&server]).await;
    let waiter_provider = builder(&[&server]).fallback_poll(poll).build().await.unwrap();
    let handle = holder.lock("wake").acquire(Some(Duration::ZERO)).await.unwrap();
    let waiter = tokio::spawn(async move {
        let granted = waiter_provider.lock("wake").acquire(None).await;
        (granted, Instant::now())
    });
    // Wait until the waiter listens (the channel is part of the documented key layout).
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.command(&["PUBSUB", "NUMSUB", "lockserver:wake:lock-released"])
        != Resp::Array(vec![Resp::Bulk(Some("lockserver:wake:lock-released".into())), Resp::Int(1)])
    {
        assert!(Instant::now() < deadline, "the waiter never subscribed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!waiter.is_finished(), "granted while held");
    let released = Instant::now();
    handle.release().await.unwrap();
    let (granted, at) = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("woken well before the 30 s fallback poll")
        .unwrap();
    let took = at - released;
    assert!(took < Duration::from_secs(2), "granted {took:?} after the release");
    granted.expect("granted").release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_writer_holds_back_new_readers() {
    let server = RedisServer::start();
    let (a, b, c) =
        (provider(&[&server]).await, provider(&[&server]).await, provider(&[&server]).await);
    let marker = || match server.command(&["GET", "lockserver:queue:writer"]) {
        Resp::Bulk(value) => value.is_some_and(|value| value.starts_with("wait:")),
        other => panic!("GET answered {other:?}"),
    };
    let reader = a.rw_lock("queue").acquire_read(Some(Duration::ZERO)).await.unwrap();
    let writer = tokio::spawn(async move { b.rw_lock("queue").acquire_write(None).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !marker() {
        assert!(Instant::now() < deadline, "the waiting writer left no marker");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(c.rw_lock("queue").try_acquire_read().await.unwrap().is_none(), "reader barged");
    reader.release().await.unwrap();
    let writer = tokio::time::timeout(Duration::from_secs(5), writer).await.expect("granted");
    writer.unwrap().expect("the writer after the reader").release().await.unwrap();
    c.rw_lock("queue")
        .try_acquire_read()
        .await
        .unwrap()
        .expect("readers again")
        .release()
        .await
        .unwrap();
    // A writer that gives up takes its marker away: readers are not held back by nobody.
    let reader = a.rw_lock("queue").acquire_read(Some(Duration::ZERO)).await.unwrap();
    let gave_up = c.rw_lock("queue").acquire_write(Some(Duration::from_millis(300))).await;
    assert!(matches!(gave_up, Err(LockError::Timeout(_))), "{gave_up:?}");
    assert!(!marker(), "the marker outlived the writer's wait");
    let second_reader = c.rw_lock("queue").try_acquire_read().await.unwrap();
    second_reader.expect("a reader beside the first").release().await.unwrap();
    reader.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn no_fake_tokens_without_appendfsync_always() {
    let plain = RedisServer::start();
    let everysec = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "everysec"]);
    let no_config = RedisServer::start_with(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--rename-command",
        "CONFIG",
        "",
    ]);
    let durable =
        [RedisServer::start_durable(), RedisServer::start_durable(), RedisServer::start_durable()];
    let cases: [(&str, Vec<&RedisServer>); 4] = [
        ("no append-only file", vec![&plain]),
        ("appendfsync everysec", vec![&everysec]),
        ("CONFIG refused", vec![&no_config]),
        ("Redlock over durable servers", durable.iter().collect()),
    ];
    for (case, servers) in cases {
        let redis = provider(&servers).await;
        assert!(!redis.has_fencing_tokens(), "{case}");
        for _ in 0..2 {
            let handle = redis.lock("tokens").acquire(Some(Duration::ZERO)).await.unwrap();
            assert_eq!(handle.token(), None, "{case}: a token that could go backwards");
            handle.release().await.unwrap();
        }
    }
    // The control: the same code gets rising tokens from one durable server.
    let redis = provider(&[&durable[0]]).await;
    let first = redis.lock("tokens").acquire(Some(Duration::ZERO)).await.unwrap();
    let first_token = first.token().expect("a durable single instance gives tokens");
    first.release().await.unwrap();
    let second = redis.lock("tokens").acquire(Some(Duration::ZERO)).await.unwrap();
    assert!(second.token().expect("a token") > first_token);
    second.release().await.unwrap();
}

/// Script and subscription calls of `acquire(Some(ZERO))` on a held lock, per server.
async fn calls_of_a_zero_timeout(servers: &[&RedisServer], name: &str) -> Vec<(u64, u64)> {
    let (holder, other) = (provider(servers).await, provider(servers).await);
    let handle = holder.lock(name).acquire(Some(Duration::ZERO)).await.unwrap();
    let count = |server: &RedisServer| {
        (server.calls("evalsha") + server.calls("eval"), server.calls("subscribe"))
    };
    let before: Vec<_> = servers.iter().map(|server| count(server)).collect();
    let started = Instant::now();
    match other.lock(name).acquire(Some(Duration::ZERO)).await {
        Err(LockError::Locked) => {}
        other => panic!("a zero timeout on a held lock answers Locked, not {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2), "a try waited");
    let deltas = servers
        .iter()
        .zip(before)
        .map(|(server, (scripts, subscribes))| {
            let (scripts_now, subscribes_now) = count(server);
            (scripts_now - scripts, subscribes_now - subscribes)
        })
        .collect();
    handle.release().await.unwrap();
    deltas
}

#[tokio::test(flavor = "multi_thread")]
async fn zero_timeout_tries_once() {
    let single = RedisServer::start();
    assert_eq!(calls_of_a_zero_timeout(&[&single], "once").await, vec![(1, 0)]);
    let redlock = [RedisServer::start(), RedisServer::start(), RedisServer::start()];
    let servers: Vec<&RedisServer> = redlock.iter().collect();
    assert_eq!(calls_of_a_zero_timeout(&servers, "once").await, vec![(1, 0); 3]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_configurations_are_invalid_arguments() {
    let server = RedisServer::start();
    let cases = [
        ("a bad url", RedisLockProvider::builder().server("http://not-redis")),
        ("TLS, not built in", RedisLockProvider::builder().server("rediss://127.0.0.1:1")),
        ("no server", RedisLockProvider::builder()),
        ("a server twice", builder(&[&server, &server])),
        ("a tiny ttl", builder(&[&server]).ttl(Duration::from_millis(5))),
    ];
    for (case, builder) in cases {
        match builder.build().await {
            Err(LockError::InvalidArgument(_)) => {}
            other => panic!("{case}: {other:?}"),
        }
    }
    let redis = provider(&[&server]).await;
    let empty = redis.semaphore("empty", 0).acquire(None).await;
    assert!(matches!(empty, Err(LockError::InvalidArgument(_))), "{empty:?}");
    let bad_name = redis.lock("").acquire(None).await;
    assert!(matches!(bad_name, Err(LockError::InvalidName(_))), "{bad_name:?}");
}
