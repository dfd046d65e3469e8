//! One conformance suite for every backend of the client's trait API (Lockserver, PostgreSQL,
//! Redis, Redlock, files). Each backend's test file makes providers and calls these functions;
//! the functions only use the traits, so every backend is held to the same rules.
//!
//! Providers `a`, `b`, `c` stand for different clients (separate connections or sessions):
//! some backends (PostgreSQL advisory locks) are re-entrant within one connection, so the
//! suite never relies on a second acquire by the same provider being refused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lockserver_client::{
    DistributedLock, DistributedReaderWriterLock, DistributedSemaphore, LockError, LockHandle,
    LockProvider,
};

/// What a backend can promise.
#[derive(Clone, Copy, Debug)]
pub struct Caps {
    /// `token()` gives rising fencing tokens (otherwise it must be `None`, never a fake one).
    pub tokens: bool,
}

fn not_early(started: Instant, wait: Duration) {
    let took = started.elapsed();
    assert!(took >= wait, "gave up after {took:?}, before the {wait:?} wait");
    assert!(took < wait + Duration::from_secs(10), "gave up only after {took:?}");
}

/// Try, timed and unbounded waits on an exclusive lock; tokens rise (or are absent).
pub async fn exclusive<P: LockProvider>(a: &P, b: &P, name: &str, caps: Caps) {
    let first = a.create_lock(name).acquire(Some(Duration::ZERO)).await.expect("a free lock");
    let lock_b = b.create_lock(name);
    assert!(lock_b.try_acquire().await.expect("try").is_none(), "held: try gives None");
    match lock_b.acquire(Some(Duration::ZERO)).await {
        Err(LockError::Locked) => {}
        other => panic!("a zero timeout tries once and answers Locked: {other:?}"),
    }
    let wait = Duration::from_millis(300);
    let started = Instant::now();
    match lock_b.acquire(Some(wait)).await {
        Err(LockError::Timeout(_)) => not_early(started, wait),
        other => panic!("a timed wait on a held lock times out: {other:?}"),
    }
    let first_token = first.token();
    assert_eq!(first_token.is_some(), caps.tokens, "token() only where it can be monotonic");
    // An unbounded wait is granted when the holder releases (not before).
    let waiting = lock_b.acquire(None);
    tokio::pin!(waiting);
    let early = tokio::time::timeout(Duration::from_millis(100), &mut waiting).await;
    assert!(early.is_err(), "granted while still held");
    let (released, second) = tokio::join!(first.release(), async {
        tokio::time::timeout(Duration::from_secs(10), &mut waiting).await
    });
    released.expect("release");
    let second = second.expect("granted within 10 s of the release").expect("granted");
    if caps.tokens {
        assert!(second.token() > first_token, "tokens rise");
    } else {
        assert_eq!(second.token(), None);
    }
    second.release().await.expect("release");
}

/// Many readers or one writer. (Writer preference is backend-specific: Lockserver and Redis
/// hold back new readers behind a waiting writer, `flock` does not; their own tests cover it.)
pub async fn reader_writer<P: LockProvider>(a: &P, b: &P, c: &P, name: &str) {
    let r1 = a.create_reader_writer_lock(name).acquire_read(Some(Duration::ZERO)).await.unwrap();
    let r2 = b.create_reader_writer_lock(name).acquire_read(Some(Duration::ZERO)).await.unwrap();
    let rw_c = c.create_reader_writer_lock(name);
    assert!(rw_c.try_acquire_write().await.unwrap().is_none(), "readers exclude a writer");
    r1.release().await.unwrap();
    assert!(rw_c.try_acquire_write().await.unwrap().is_none(), "one reader still excludes");
    r2.release().await.unwrap();
    let w = rw_c.acquire_write(Some(Duration::from_secs(5))).await.expect("writer after readers");
    assert!(a.create_reader_writer_lock(name).try_acquire_read().await.unwrap().is_none());
    assert!(b.create_reader_writer_lock(name).try_acquire_write().await.unwrap().is_none());
    w.release().await.unwrap();
    let r = a.create_reader_writer_lock(name).acquire_read(Some(Duration::from_secs(5))).await;
    r.expect("reader after the writer").release().await.unwrap();
}

/// A semaphore of 2 admits two holders, refuses a third, and admits it after a release.
pub async fn semaphore<P: LockProvider>(a: &P, b: &P, c: &P, name: &str) {
    let s_a = a.create_semaphore(name, 2);
    assert_eq!(s_a.max_count(), 2);
    let t1 = s_a.acquire(Some(Duration::ZERO)).await.expect("ticket 1");
    let t2 = b.create_semaphore(name, 2).acquire(Some(Duration::ZERO)).await.expect("ticket 2");
    let s_c = c.create_semaphore(name, 2);
    assert!(s_c.try_acquire().await.unwrap().is_none(), "full");
    let wait = Duration::from_millis(200);
    let started = Instant::now();
    assert!(matches!(s_c.acquire(Some(wait)).await, Err(LockError::Timeout(_))));
    not_early(started, wait);
    t1.release().await.unwrap();
    let t3 = s_c.acquire(Some(Duration::from_secs(5))).await.expect("a ticket after a release");
    t2.release().await.unwrap();
    t3.release().await.unwrap();
}

/// Dropping a handle releases it promptly (without blocking in `Drop`).
pub async fn drop_releases<P: LockProvider>(a: &P, b: &P, name: &str) {
    let handle = a.create_lock(name).acquire(None).await.expect("acquire");
    let started = Instant::now();
    drop(handle);
    assert!(started.elapsed() < Duration::from_millis(100), "Drop blocked");
    let next = b.create_lock(name).acquire(Some(Duration::from_secs(5))).await;
    next.expect("the dropped handle's lock is free").release().await.unwrap();
}

/// A bad name is refused or mapped safely: any length and script must not panic.
pub async fn names_of_any_shape<P: LockProvider>(a: &P, prefix: &str) {
    for name in [format!("{prefix}-ünïcødé-名前-🔒"), format!("{prefix}-{}", "x".repeat(200))]
    {
        let handle = a.create_lock(&name).acquire(Some(Duration::from_secs(5))).await;
        handle.expect("a long or non-ASCII name works").release().await.unwrap();
    }
}

/// The parent side of the cross-process contention test: runs `processes` copies of this test
/// binary's `child_test` (which calls [`contention_child`]), each doing `cycles` lock cycles,
/// and checks that no two ever held the lock at once and no increment was lost.
pub fn contention(
    child_test: &str,
    name: &str,
    processes: usize,
    cycles: usize,
    env: &[(&str, &str)],
) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("counter"), "0").unwrap();
    let exe = std::env::current_exe().expect("test binary");
    let children: Vec<_> = (0..processes)
        .map(|_| {
            let mut command = Command::new(&exe);
            command
                .args([child_test, "--exact", "--nocapture", "--test-threads", "1"])
                .env("BACKEND_SUITE_CHILD_DIR", dir.path())
                .env("BACKEND_SUITE_CHILD_NAME", name)
                .env("BACKEND_SUITE_CHILD_CYCLES", cycles.to_string());
            for (key, value) in env {
                command.env(key, value);
            }
            command.spawn().expect("spawn a contention child")
        })
        .collect();
    for mut child in children {
        let status = child.wait().expect("wait for a child");
        assert!(status.success(), "a contention child failed ({status}): two holders at once?");
    }
    let counter = std::fs::read_to_string(dir.path().join("counter")).unwrap();
    assert_eq!(counter.trim(), (processes * cycles).to_string(), "an increment was lost");
}

/// The child side: `None` when this process is not a contention child (the test then passes
/// as a no-op in the normal run), otherwise the lock name, cycle count and shared directory.
pub fn contention_child_args() -> Option<(String, usize, PathBuf)> {
    let dir = std::env::var_os("BACKEND_SUITE_CHILD_DIR")?;
    let name = std::env::var("BACKEND_SUITE_CHILD_NAME").expect("name");
    let cycles = std::env::var("BACKEND_SUITE_CHILD_CYCLES").expect("cycles").parse().unwrap();
    Some((name, cycles, PathBuf::from(dir)))
}

/// One child's cycles: acquire, mark "holding" (refusing if another holder's mark is there),
/// read-modify-write the counter, unmark, release.
pub async fn contention_child<P: LockProvider>(
    provider: &P,
    name: &str,
    cycles: usize,
    dir: &Path,
) {
    let lock = provider.create_lock(name);
    let marker = dir.join("holding");
    let counter = dir.join("counter");
    for _ in 0..cycles {
        let handle = lock.acquire(Some(Duration::from_secs(60))).await.expect("acquire");
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&marker)
            .expect("nobody else holds the lock (marker already present: two holders)");
        let value: usize = std::fs::read_to_string(&counter).unwrap().trim().parse().unwrap();
        tokio::task::yield_now().await;
        std::fs::write(&counter, (value + 1).to_string()).unwrap();
        std::fs::remove_file(&marker).unwrap();
        handle.release().await.expect("release");
    }
}
