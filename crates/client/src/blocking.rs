//! The blocking API, for code without an async runtime: the same client on a runtime of its
//! own (one worker thread, which also keeps the session alive between calls).
//!
//! Do not use it from inside an async runtime (its calls block the thread); use the async
//! [`Client`](crate::Client) there.
//!
//! ```no_run
//! use std::time::Duration;
//! use lockserver_client::blocking::Client;
//!
//! # fn main() -> Result<(), lockserver_client::LockError> {
//! let client = Client::builder().addr("127.0.0.1:8080").build()?;
//! let handle = client.lock("nightly-import").acquire(Some(Duration::from_secs(10)))?;
//! println!("token {}", handle.token());
//! handle.release()?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Runtime;

use crate::error::LockError;
use crate::fencing::FencingToken;
use crate::handle::{LostReason, LostSignal};
use crate::ClientBuilder;

/// The runtime and the async client; the last one gone closes the session cleanly.
struct Inner {
    runtime: Runtime,
    client: crate::Client,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let client = self.client.clone();
        self.runtime.block_on(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), client.close()).await;
        });
    }
}

/// A blocking Lockserver client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("blocking::Client").field(&self.inner.client).finish()
    }
}

/// Builds a blocking client from the same settings as the async one.
#[derive(Clone, Debug, Default)]
pub struct Builder {
    builder: ClientBuilder,
}

impl Builder {
    /// Changes the settings with the async builder's methods.
    pub fn configure(mut self, change: impl FnOnce(ClientBuilder) -> ClientBuilder) -> Self {
        self.builder = change(self.builder);
        self
    }

    pub fn addr(self, addr: impl Into<String>) -> Self {
        self.configure(|b| b.addr(addr))
    }

    pub fn secret(self, secret: impl Into<String>) -> Self {
        self.configure(|b| b.secret(secret))
    }

    pub fn owner(self, owner: impl Into<String>) -> Self {
        self.configure(|b| b.owner(owner))
    }

    pub fn from_env(self) -> Self {
        self.configure(ClientBuilder::from_env)
    }

    pub fn build(self) -> Result<Client, LockError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("lockserver-client")
            .enable_all()
            .build()
            .map_err(|err| LockError::connection(format!("cannot start a runtime: {err}")))?;
        let client = {
            let _entered = runtime.enter();
            self.builder.build()?
        };
        Ok(Client { inner: Arc::new(Inner { runtime, client }) })
    }
}

impl Client {
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Configured from `LOCKSERVER_ADDR`, `LOCKSERVER_SECRET`, `LOCKSERVER_OWNER`.
    pub fn from_env() -> Result<Client, LockError> {
        Builder::default().from_env().build()
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.inner.runtime.block_on(future)
    }

    pub fn lock(&self, name: impl Into<String>) -> Lock {
        Lock { client: self.clone(), lock: self.inner.client.lock(name) }
    }

    pub fn rw_lock(&self, name: impl Into<String>) -> ReaderWriterLock {
        ReaderWriterLock { client: self.clone(), lock: self.inner.client.rw_lock(name) }
    }

    pub fn semaphore(&self, name: impl Into<String>, limit: u32) -> Semaphore {
        Semaphore { client: self.clone(), semaphore: self.inner.client.semaphore(name, limit) }
    }

    /// Whether `token` is the token of a live hold of `name`.
    pub fn check(&self, name: &str, token: FencingToken) -> Result<bool, LockError> {
        self.block_on(self.inner.client.check(name, token))
    }

    /// Ends the session now; its holds are released at once.
    pub fn close(&self) {
        self.block_on(self.inner.client.close());
    }

    fn handle(&self, result: Result<crate::Handle, LockError>) -> Result<Handle, LockError> {
        result.map(|handle| Handle { client: self.clone(), handle: Some(handle) })
    }
}

/// A blocking exclusive lock.
#[derive(Debug)]
pub struct Lock {
    client: Client,
    lock: crate::Lock,
}

impl Lock {
    pub fn acquire(&self, timeout: Option<Duration>) -> Result<Handle, LockError> {
        self.client.handle(self.client.block_on(self.lock.acquire(timeout)))
    }

    pub fn try_acquire(&self) -> Result<Option<Handle>, LockError> {
        crate::traits::tried(self.acquire(Some(Duration::ZERO)))
    }
}

/// A blocking reader-writer lock.
#[derive(Debug)]
pub struct ReaderWriterLock {
    client: Client,
    lock: crate::ReaderWriterLock,
}

impl ReaderWriterLock {
    pub fn acquire_read(&self, timeout: Option<Duration>) -> Result<Handle, LockError> {
        self.client.handle(self.client.block_on(self.lock.acquire_read(timeout)))
    }

    pub fn try_acquire_read(&self) -> Result<Option<Handle>, LockError> {
        crate::traits::tried(self.acquire_read(Some(Duration::ZERO)))
    }

    pub fn acquire_write(&self, timeout: Option<Duration>) -> Result<Handle, LockError> {
        self.client.handle(self.client.block_on(self.lock.acquire_write(timeout)))
    }

    pub fn try_acquire_write(&self) -> Result<Option<Handle>, LockError> {
        crate::traits::tried(self.acquire_write(Some(Duration::ZERO)))
    }
}

/// A blocking semaphore.
#[derive(Debug)]
pub struct Semaphore {
    client: Client,
    semaphore: crate::Semaphore,
}

impl Semaphore {
    pub fn acquire(&self, timeout: Option<Duration>) -> Result<Handle, LockError> {
        self.client.handle(self.client.block_on(self.semaphore.acquire(timeout)))
    }

    pub fn acquire_many(
        &self,
        permits: u32,
        timeout: Option<Duration>,
    ) -> Result<Handle, LockError> {
        self.client.handle(self.client.block_on(self.semaphore.acquire_many(permits, timeout)))
    }

    pub fn try_acquire(&self) -> Result<Option<Handle>, LockError> {
        crate::traits::tried(self.acquire(Some(Duration::ZERO)))
    }
}

/// A blocking handle: dropping it releases the hold in the background.
pub struct Handle {
    client: Client,
    handle: Option<crate::Handle>,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("blocking::Handle").field(&self.handle).finish()
    }
}

impl Handle {
    fn inner(&self) -> &crate::Handle {
        self.handle.as_ref().expect("present until release or drop")
    }

    pub fn token(&self) -> FencingToken {
        self.inner().token()
    }

    pub fn hold_id(&self) -> &str {
        self.inner().hold_id()
    }

    pub fn name(&self) -> &str {
        self.inner().name()
    }

    pub fn lost(&self) -> LostSignal {
        self.inner().lost()
    }

    pub fn is_lost(&self) -> bool {
        self.inner().is_lost()
    }

    /// Blocks until the hold is lost (`Some(reason)`), released (`None`), or `timeout` passes
    /// (`None`).
    pub fn wait_lost(&self, timeout: Option<Duration>) -> Option<LostReason> {
        let mut lost = self.lost();
        self.client.block_on(async move {
            match timeout {
                Some(timeout) => tokio::time::timeout(timeout, lost.wait()).await.ok().flatten(),
                None => lost.wait().await,
            }
        })
    }

    pub fn release(mut self) -> Result<(), LockError> {
        let handle = self.handle.take().expect("present until release or drop");
        self.client.block_on(handle.release())
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            // Inside the runtime, so a background release can be spawned; never blocks.
            let _entered = self.client.inner.runtime.enter();
            drop(handle);
        }
    }
}
