//! The backend conformance suite against the file backend (flock in a directory), and its own
//! regression tests: no unlink-after-unlock race, names of any shape, the OS releasing a killed
//! holder's locks, and no fake fencing tokens.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::backend_suite::{self as suite, Caps};
use lockserver_client::file::FileLockProvider;
use lockserver_client::{DistributedLock, LockHandle, LockProvider};

fn providers(dir: &std::path::Path) -> (FileLockProvider, FileLockProvider, FileLockProvider) {
    let make = || FileLockProvider::new(dir).expect("provider");
    (make(), make(), make())
}

/// Polls (at most 10 s) until the kernel shows a process blocked in `flock` on `path`'s inode:
/// /proc/locks lists a waiter as `N: -> FLOCK ... <major>:<minor>:<inode> ...`.
async fn until_blocked_on(path: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let inode = format!(":{} ", std::fs::metadata(path).expect("lock file").ino());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let locks = std::fs::read_to_string("/proc/locks").expect("/proc/locks");
        if locks.lines().any(|line| line.contains("-> FLOCK") && line.contains(&inode)) {
            return;
        }
        assert!(Instant::now() < deadline, "nobody blocked on {}", path.display());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn file_backend_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = providers(dir.path());
    let caps = Caps { tokens: false };
    suite::exclusive(&a, &b, "f-exclusive", caps).await;
    suite::reader_writer(&a, &b, &c, "f-rw").await;
    suite::semaphore(&a, &b, &c, "f-sem").await;
    suite::drop_releases(&a, &b, "f-drop").await;
    suite::names_of_any_shape(&a, "f-names").await;
}

#[test]
fn file_backend_exclusive_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let locks = dir.path().to_str().unwrap().to_string();
    suite::contention(
        "file_backend_contention_child",
        "f-contention",
        3,
        40,
        &[("BACKEND_SUITE_FILE_DIR", &locks)],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn file_backend_contention_child() {
    let Some((name, cycles, dir)) = suite::contention_child_args() else { return };
    let locks = std::env::var("BACKEND_SUITE_FILE_DIR").expect("lock directory");
    let provider = FileLockProvider::new(locks).unwrap();
    suite::contention_child(&provider, &name, cycles, &dir).await;
}

/// Deleting a lock file after unlocking lets a waiter lock the deleted inode while a newcomer
/// locks a new file of the same name: two holders. Lock files must outlive their locks.
#[tokio::test(flavor = "multi_thread")]
async fn no_unlink_after_unlock_race_lock_files_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = providers(dir.path());
    let path = a.path_of("kept");
    let held = a.create_lock("kept").acquire(None).await.unwrap();
    let lock_b = b.create_lock("kept");
    let waiting = tokio::spawn(async move { lock_b.acquire(Some(Duration::from_secs(10))).await });
    until_blocked_on(&path).await; // b waits on the same inode as the holder
    held.release().await.unwrap();
    assert!(path.exists(), "the lock file survives its unlock");
    let b_holds = waiting.await.unwrap().expect("b gets it");
    // A newcomer must see b's lock on the same file, not a fresh one.
    assert!(c.create_lock("kept").try_acquire().await.unwrap().is_none(), "two holders");
    b_holds.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn file_locks_give_no_fake_tokens_and_are_never_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _, _) = providers(dir.path());
    let handle = a.create_lock("t").acquire(None).await.unwrap();
    assert_eq!(handle.token(), None, "the OS has no monotonic token: None, never a fake number");
    assert!(!handle.lost().is_lost());
    handle.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiter_is_woken_by_the_kernel_when_the_holder_releases() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, _) = providers(dir.path());
    let held = a.create_lock("wake").acquire(None).await.unwrap();
    let lock_b = b.create_lock("wake");
    let waiting = tokio::spawn(async move {
        let handle = lock_b.acquire(None).await;
        (Instant::now(), handle)
    });
    until_blocked_on(&a.path_of("wake")).await; // b is blocked in flock
    let released_at = Instant::now();
    held.release().await.unwrap();
    let (granted_at, handle) = waiting.await.unwrap();
    handle.expect("granted").release().await.unwrap();
    let lag = granted_at.saturating_duration_since(released_at);
    assert!(lag < Duration::from_secs(1), "woken {lag:?} after the release");
}

#[test]
fn a_killed_holders_locks_are_released_by_the_os() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["file_holder_child", "--exact", "--nocapture", "--test-threads", "1"])
        .env("FILE_HOLDER_DIR", dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("the child says when it holds the lock").unwrap();
        if line.contains("holding the lock") {
            break;
        }
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let provider = FileLockProvider::new(dir.path()).unwrap();
    runtime.block_on(async {
        assert!(provider.create_lock("held-by-child").try_acquire().await.unwrap().is_none());
    });
    child.kill().unwrap(); // SIGKILL: no clean-up in the child
    child.wait().unwrap();
    runtime.block_on(async {
        let lock = provider.create_lock("held-by-child");
        let handle = lock.acquire(Some(Duration::from_secs(5))).await.expect("freed by the OS");
        handle.release().await.unwrap();
    });
}

/// Runs only as a child of the test above: takes the lock and waits to be killed.
#[tokio::test(flavor = "multi_thread")]
async fn file_holder_child() {
    let Some(dir) = std::env::var_os("FILE_HOLDER_DIR") else { return };
    let provider = FileLockProvider::new(dir).unwrap();
    let _handle = provider.create_lock("held-by-child").acquire(None).await.unwrap();
    println!("holding the lock");
    std::future::pending::<()>().await;
}
