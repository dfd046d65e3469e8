//! The backend-neutral API (the shape of the `distributed-lock` crates): a provider makes named
//! locks, reader-writer locks and semaphores; acquiring one gives a handle with a fencing token
//! and a lost-lock signal. Code written against these traits runs on any backend.
//!
//! Timeouts: `None` waits without a deadline, `Some(Duration::ZERO)` tries once (and fails with
//! [`LockError::Locked`]), any other value waits up to that long (then [`LockError::Timeout`]).
//! `try_acquire` is the "try once" that answers `Ok(None)` instead of an error.

use std::future::Future;
use std::time::Duration;

use crate::error::LockError;
use crate::fencing::FencingToken;
use crate::handle::LostSignal;

/// A held lock, read lock, write lock or semaphore ticket. Dropping it releases it promptly
/// (in the background; `Drop` never blocks); [`release`](LockHandle::release) releases it and
/// reports the outcome.
pub trait LockHandle: Send + Sync + std::fmt::Debug + 'static {
    /// The grant's fencing token; `None` only for a backend that cannot give a monotonic one.
    fn token(&self) -> Option<FencingToken>;

    /// Fires when the hold is lost: the server said so, or the client's local lease deadline
    /// passed (whichever comes first).
    fn lost(&self) -> LostSignal;

    /// Releases the hold. An error means the release could not be confirmed; the hold then
    /// ends by its lease.
    fn release(self) -> impl Future<Output = Result<(), LockError>> + Send;
}

/// An exclusive lock.
pub trait DistributedLock: Send + Sync {
    type Handle: LockHandle;

    fn name(&self) -> &str;

    fn acquire(
        &self,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<Self::Handle, LockError>> + Send;

    fn try_acquire(&self) -> impl Future<Output = Result<Option<Self::Handle>, LockError>> + Send;
}

/// A reader-writer lock: many readers or one writer; a waiting writer holds back later readers.
pub trait DistributedReaderWriterLock: Send + Sync {
    type ReadHandle: LockHandle;
    type WriteHandle: LockHandle;

    fn name(&self) -> &str;

    fn acquire_read(
        &self,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<Self::ReadHandle, LockError>> + Send;

    fn try_acquire_read(
        &self,
    ) -> impl Future<Output = Result<Option<Self::ReadHandle>, LockError>> + Send;

    fn acquire_write(
        &self,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<Self::WriteHandle, LockError>> + Send;

    fn try_acquire_write(
        &self,
    ) -> impl Future<Output = Result<Option<Self::WriteHandle>, LockError>> + Send;
}

/// A counting semaphore of `max_count` tickets; each acquire takes one.
pub trait DistributedSemaphore: Send + Sync {
    type Handle: LockHandle;

    fn name(&self) -> &str;

    fn max_count(&self) -> u32;

    fn acquire(
        &self,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<Self::Handle, LockError>> + Send;

    fn try_acquire(&self) -> impl Future<Output = Result<Option<Self::Handle>, LockError>> + Send;
}

/// Makes the primitives of one backend by name.
pub trait LockProvider: Send + Sync {
    type Lock: DistributedLock;
    type ReaderWriterLock: DistributedReaderWriterLock;
    type Semaphore: DistributedSemaphore;

    fn create_lock(&self, name: &str) -> Self::Lock;

    fn create_reader_writer_lock(&self, name: &str) -> Self::ReaderWriterLock;

    fn create_semaphore(&self, name: &str, max_count: u32) -> Self::Semaphore;
}

/// The result of a try: `Locked` becomes `None`.
pub(crate) fn tried<T>(result: Result<T, LockError>) -> Result<Option<T>, LockError> {
    match result {
        Ok(handle) => Ok(Some(handle)),
        Err(LockError::Locked) => Ok(None),
        Err(other) => Err(other),
    }
}
