//! The file backend (feature `file`): OS file locks (`flock(2)`) in a directory, for processes
//! on one machine with no lock service at all.
//!
//! - **Files.** A name maps to `<dir>/<readable part>-<hash>.lock`: up to 48 bytes of the name's
//!   ASCII letters, digits, `-` and `_`, then the FNV-1a 64-bit hash of the whole UTF-8 name in
//!   hex. Any name of any length and script maps to a short, safe file name; the mapping is
//!   stable across versions. (Two names with the same hash would share one lock: more
//!   exclusion, never less.) Lock files are created on first use and **never deleted**: deleting
//!   a lock file after unlocking lets a waiter lock the deleted inode while a newcomer locks a
//!   fresh file of the same name, and both hold "the" lock.
//! - **Locks.** `flock` exclusive for locks and writers, shared for readers. `flock` locks belong
//!   to an open file description, so two providers in one process exclude each other as two
//!   processes do. The OS releases them when the process dies, even on `kill -9`.
//! - **Semaphores** of `n` tickets are `n` slot files `<base>.slot<i>`; a ticket is an
//!   exclusive lock on one of them. Every holder must use the same `n`.
//! - **Waits** block in the kernel (`flock` without `LOCK_NB`) on a blocking thread: no polling.
//!   A semaphore wait blocks on every slot at once and keeps the first it gets. A wait that times
//!   out or is dropped leaves its thread blocked until the lock frees, and that thread then lets
//!   the lock go at once.
//! - **Tokens and loss.** The OS has no monotonic counter for a lock, so `token()` is `None`
//!   (never a fake number). A file lock cannot be lost while the process lives, so the lost
//!   signal never fires.
//!
//! ```no_run
//! use std::time::Duration;
//! use lockserver_client::file::FileLockProvider;
//! use lockserver_client::{DistributedLock, LockHandle, LockProvider};
//!
//! # async fn run() -> Result<(), lockserver_client::LockError> {
//! let provider = FileLockProvider::new("/var/lock/myapp")?;
//! let lock = provider.create_lock("nightly-report");
//! let handle = lock.acquire(Some(Duration::from_secs(5))).await?;
//! // ... only one process on this machine runs this at a time ...
//! handle.release().await?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use tokio::sync::mpsc;

use crate::error::{validate_name, LockError};
use crate::fencing::FencingToken;
use crate::handle::{LostSender, LostSignal};
use crate::traits::{
    tried, DistributedLock, DistributedReaderWriterLock, DistributedSemaphore, LockHandle,
    LockProvider,
};

/// Makes file locks in one directory.
#[derive(Clone, Debug)]
pub struct FileLockProvider {
    dir: Arc<PathBuf>,
}

impl FileLockProvider {
    /// Locks in `dir` (created if missing).
    pub fn new(dir: impl AsRef<Path>) -> Result<FileLockProvider, LockError> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|err| {
            LockError::InvalidArgument(format!("cannot use {} for locks: {err}", dir.display()))
        })?;
        Ok(FileLockProvider { dir: Arc::new(dir) })
    }

    /// The lock file of `name` (slot files add `.slot<i>`).
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{}.lock", file_stem(name)))
    }
}

/// FNV-1a, 64 bits: small, stable, and the same on every platform.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// `<readable part>-<hash>`: see the module docs.
fn file_stem(name: &str) -> String {
    let readable: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(48)
        .collect();
    format!("{readable}-{:016x}", fnv1a64(name.as_bytes()))
}

impl LockProvider for FileLockProvider {
    type Lock = FileLock;
    type ReaderWriterLock = FileReaderWriterLock;
    type Semaphore = FileSemaphore;

    fn create_lock(&self, name: &str) -> FileLock {
        FileLock { provider: self.clone(), name: name.to_string() }
    }

    fn create_reader_writer_lock(&self, name: &str) -> FileReaderWriterLock {
        FileReaderWriterLock { provider: self.clone(), name: name.to_string() }
    }

    fn create_semaphore(&self, name: &str, max_count: u32) -> FileSemaphore {
        FileSemaphore { provider: self.clone(), name: name.to_string(), max_count }
    }
}

fn open(path: &Path) -> Result<File, LockError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|err| LockError::InvalidArgument(format!("cannot open {}: {err}", path.display())))
}

fn lock_error(path: &Path, errno: Errno) -> LockError {
    LockError::Server {
        code: lockserver_proto::ErrorCode::Internal,
        message: format!("flock({}) failed: {errno}", path.display()),
    }
}

/// Locks one of `paths` (all the same mode), waiting up to `timeout`.
async fn lock_any(
    paths: Vec<PathBuf>,
    shared: bool,
    timeout: Option<Duration>,
) -> Result<Flock<File>, LockError> {
    let (now, wait) = if shared {
        (FlockArg::LockSharedNonblock, FlockArg::LockShared)
    } else {
        (FlockArg::LockExclusiveNonblock, FlockArg::LockExclusive)
    };
    // First a try on each: no thread at all when a lock is free.
    for path in &paths {
        match Flock::lock(open(path)?, now) {
            Ok(locked) => return Ok(locked),
            Err((_, Errno::EWOULDBLOCK)) => {}
            Err((_, errno)) => return Err(lock_error(path, errno)),
        }
    }
    let wait_for = match timeout {
        Some(wait) if wait.is_zero() => return Err(LockError::Locked),
        other => other,
    };
    // Then block in the kernel, one thread per file; the first lock wins. A thread whose lock
    // comes after the winner (or after the caller gave up) finds the channel closed or the
    // winner taken and drops its lock at once.
    let (tx, mut rx) = mpsc::channel::<Result<Flock<File>, LockError>>(paths.len());
    for path in paths {
        let tx = tx.clone();
        let file = open(&path)?;
        tokio::task::spawn_blocking(move || {
            let outcome = Flock::lock(file, wait).map_err(|(_, errno)| lock_error(&path, errno));
            // A full or closed channel hands the lock back: dropping it unlocks.
            let _ = tx.try_send(outcome);
        });
    }
    drop(tx);
    let first = async {
        match rx.recv().await {
            Some(outcome) => {
                rx.close();
                outcome
            }
            None => Err(LockError::connection("every lock thread ended without an answer")),
        }
    };
    match wait_for {
        None => first.await,
        Some(wait) => match tokio::time::timeout(wait, first).await {
            Ok(outcome) => outcome,
            Err(_) => Err(LockError::Timeout(wait)),
        },
    }
}

/// A held file lock. Dropping it unlocks (closing the file); it is never lost.
pub struct FileHandle {
    lock: Option<Flock<File>>,
    _lost_tx: LostSender,
    lost: LostSignal,
}

impl fmt::Debug for FileHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileHandle").field("held", &self.lock.is_some()).finish()
    }
}

impl FileHandle {
    fn new(lock: Flock<File>) -> FileHandle {
        let (lost_tx, lost) = LostSignal::pair();
        FileHandle { lock: Some(lock), _lost_tx: lost_tx, lost }
    }
}

impl LockHandle for FileHandle {
    fn token(&self) -> Option<FencingToken> {
        None
    }

    fn lost(&self) -> LostSignal {
        self.lost.clone()
    }

    async fn release(mut self) -> Result<(), LockError> {
        if let Some(lock) = self.lock.take() {
            lock.unlock().map_err(|(_, errno)| LockError::Server {
                code: lockserver_proto::ErrorCode::Internal,
                message: format!("unlock failed: {errno}"),
            })?;
        }
        Ok(())
    }
}

/// An exclusive file lock.
#[derive(Clone, Debug)]
pub struct FileLock {
    provider: FileLockProvider,
    name: String,
}

impl DistributedLock for FileLock {
    type Handle = FileHandle;

    fn name(&self) -> &str {
        &self.name
    }

    async fn acquire(&self, timeout: Option<Duration>) -> Result<FileHandle, LockError> {
        validate_name(&self.name)?;
        let path = self.provider.path_of(&self.name);
        lock_any(vec![path], false, timeout).await.map(FileHandle::new)
    }

    async fn try_acquire(&self) -> Result<Option<FileHandle>, LockError> {
        tried(self.acquire(Some(Duration::ZERO)).await)
    }
}

/// A reader-writer file lock (`flock` shared and exclusive). The OS decides who goes first
/// among waiters: Linux gives no writer preference.
#[derive(Clone, Debug)]
pub struct FileReaderWriterLock {
    provider: FileLockProvider,
    name: String,
}

impl FileReaderWriterLock {
    async fn acquire_mode(
        &self,
        shared: bool,
        timeout: Option<Duration>,
    ) -> Result<FileHandle, LockError> {
        validate_name(&self.name)?;
        let path = self.provider.path_of(&self.name);
        lock_any(vec![path], shared, timeout).await.map(FileHandle::new)
    }
}

impl DistributedReaderWriterLock for FileReaderWriterLock {
    type ReadHandle = FileHandle;
    type WriteHandle = FileHandle;

    fn name(&self) -> &str {
        &self.name
    }

    async fn acquire_read(&self, timeout: Option<Duration>) -> Result<FileHandle, LockError> {
        self.acquire_mode(true, timeout).await
    }

    async fn try_acquire_read(&self) -> Result<Option<FileHandle>, LockError> {
        tried(self.acquire_mode(true, Some(Duration::ZERO)).await)
    }

    async fn acquire_write(&self, timeout: Option<Duration>) -> Result<FileHandle, LockError> {
        self.acquire_mode(false, timeout).await
    }

    async fn try_acquire_write(&self) -> Result<Option<FileHandle>, LockError> {
        tried(self.acquire_mode(false, Some(Duration::ZERO)).await)
    }
}

/// The most slot files a file semaphore may have (one thread per slot while waiting).
pub const MAX_FILE_SEMAPHORE: u32 = 256;

/// A file semaphore: `max_count` slot files, a ticket is an exclusive lock on one.
#[derive(Clone, Debug)]
pub struct FileSemaphore {
    provider: FileLockProvider,
    name: String,
    max_count: u32,
}

impl DistributedSemaphore for FileSemaphore {
    type Handle = FileHandle;

    fn name(&self) -> &str {
        &self.name
    }

    fn max_count(&self) -> u32 {
        self.max_count
    }

    async fn acquire(&self, timeout: Option<Duration>) -> Result<FileHandle, LockError> {
        validate_name(&self.name)?;
        if self.max_count == 0 || self.max_count > MAX_FILE_SEMAPHORE {
            return Err(LockError::InvalidArgument(format!(
                "a file semaphore has 1 to {MAX_FILE_SEMAPHORE} tickets, not {}",
                self.max_count
            )));
        }
        let base = self.provider.path_of(&self.name);
        let slots = (0..self.max_count)
            .map(|slot| {
                let mut path = base.clone().into_os_string();
                path.push(format!(".slot{slot}"));
                PathBuf::from(path)
            })
            .collect();
        lock_any(slots, false, timeout).await.map(FileHandle::new)
    }

    async fn try_acquire(&self) -> Result<Option<FileHandle>, LockError> {
        tried(self.acquire(Some(Duration::ZERO)).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_stable_safe_file_names() {
        // Pinned: the mapping must not change between versions.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(file_stem("db"), format!("db-{:016x}", fnv1a64(b"db")));
        let odd = file_stem("../../etc/passwd ünï 名前");
        assert!(!odd.contains('/') && !odd.contains('.'), "{odd}");
        let long = file_stem(&"é".repeat(255));
        assert!(long.len() < 100, "{long}");
        assert_ne!(file_stem("a/b"), file_stem("a_b"), "different names, different files");
    }
}
