//! The Redis backend (feature `redis`): the [traits](crate::LockProvider) over one Redis
//! server, or over several independent ones with the Redlock algorithm.
//!
//! - [`RedisLockProvider`] (built by [`RedisLockProviderBuilder`]) makes [`RedisLock`]s,
//!   [`RedisReaderWriterLock`]s and [`RedisSemaphore`]s; acquiring one gives a [`RedisHandle`].
//! - One server URL: a single instance. Several: Redlock, a grant needs a majority
//!   (N/2 + 1) of them.
//!
//! # A single instance
//!
//! ```no_run
//! use std::time::Duration;
//! use lockserver_client::redis::RedisLockProvider;
//! use lockserver_client::{LockError, LockHandle};
//!
//! # async fn run() -> Result<(), LockError> {
//! let redis = RedisLockProvider::connect("redis://127.0.0.1:6379").await?;
//! let handle = redis.lock("invoices").acquire(Some(Duration::from_secs(5))).await?;
//! // The lease (30 s by default) is extended in the background every 10 s while held.
//! if let Some(token) = handle.token() {
//!     // Only from a server with `appendonly yes` + `appendfsync always` (see below).
//!     println!("fencing token {token}");
//! }
//! handle.release().await?;
//! # Ok(()) }
//! ```
//!
//! # Redlock over three servers
//!
//! ```no_run
//! use std::time::Duration;
//! use lockserver_client::redis::RedisLockProvider;
//! use lockserver_client::{DistributedLock, LockError, LockHandle, LockProvider};
//!
//! # async fn run() -> Result<(), LockError> {
//! let redlock = RedisLockProvider::builder()
//!     .server("redis://10.0.0.1:6379")
//!     .server("redis://10.0.0.2:6379")
//!     .server("redis://10.0.0.3:6379")
//!     .ttl(Duration::from_secs(10))
//!     .build()
//!     .await?;
//! // The same code runs on any backend:
//! let handle = redlock.create_lock("nightly-report").acquire(None).await?;
//! assert!(handle.token().is_none()); // Redlock cannot give a monotonic token
//! let mut lost = handle.lost();
//! tokio::select! {
//!     reason = lost.wait() => eprintln!("lost the lock ({reason:?}): stop"),
//!     () = make_report() => handle.release().await?,
//! }
//! # Ok(()) }
//! # async fn make_report() {}
//! ```
//!
//! # How it works
//!
//! - **Values.** Every acquisition draws a 128-bit random value and stores it; extension and
//!   release are compare-and-pexpire / compare-and-delete Lua scripts on that value, so a stale
//!   handle (its lease expired, the name passed on) can never extend or release a newer hold.
//! - **Atomic scripts.** A grant is one script: the exclusive lock (= the reader-writer lock's
//!   writer) is a string key; readers and single-instance semaphore tickets are sorted sets of
//!   values scored by their expiry, purged, counted and added to inside the same script.
//! - **Quorum and validity.** Each attempt runs the script on every server at once. It is a
//!   grant when a majority said yes *and* the validity time, TTL − elapsed − drift (drift =
//!   TTL × 1 % + 2 ms), is still positive. Otherwise it is undone on every server — also the ones
//!   that timed out, which may have granted — and retried.
//! - **Leases.** The TTL (default 30 s) is extended every TTL/3 on every server; a quorum must
//!   confirm. The lost signal fires with [`LostReason::Expired`](crate::LostReason::Expired) when
//!   a quorum says the value is gone, and at the local deadline — start of the last confirmed
//!   round + TTL − drift, before any server can expire the key — with
//!   [`ConnectionLost`](crate::LostReason::ConnectionLost) when servers stopped answering.
//! - **Waiting.** A waiter subscribes to the name's channel, tries, and tries again when a
//!   release script publishes there, or after a fallback poll (default 500 ms) since a message
//!   can be missed. Under Redlock each retry waits a random delay first (default up to 50 ms)
//!   so contenders that split the vote do not collide again. There is no FIFO queue: a
//!   waiting writer holds back new readers (its marker is refreshed at each retry and lives
//!   about two fallback polls, so a writer that crashed while waiting blocks readers only that
//!   long), otherwise whoever retries first wins.
//! - **Errors.** When so many servers fail that no quorum is possible the acquire fails at
//!   once with [`LockError::Connection`] (outcome unknown; whatever it may have created is
//!   deleted by its value, best effort, or ends by its TTL). A bad URL is
//!   [`LockError::InvalidArgument`].
//!
//! # Fencing tokens
//!
//! A token is only worth anything if it never goes backwards. A single instance draws it with
//! `INCR` on one counter key, inside the grant script — but only when the server says, at
//! connect time, `appendonly yes` and `appendfsync always`: then the increment is on disk before
//! the grant is answered, and a restart cannot hand out a number twice. Without that (or when
//! `CONFIG` is refused), a crash can lose increments, so [`RedisHandle::token`] is `None`.
//! Redlock always answers `None`: the servers have no common counter, and a per-server one
//! moves independently on each, so no number drawn from them is monotonic across holders. A
//! failover to a replica (which copies asynchronously) can also lose increments; do not rely on
//! tokens from an instance that can fail over.
//!
//! # Keys
//!
//! With the default prefix `lockserver:`, for a name `N`: `lockserver:N:writer`,
//! `lockserver:N:readers`, `lockserver:N:tickets` (single-instance semaphore),
//! `lockserver:N:slot:I` (Redlock semaphore: slot `I` of the limit), `lockserver:fencing-token`,
//! and the channels `lockserver:N:lock-released` and `lockserver:N:semaphore-released`.
//! A lock and a semaphore of the same name are independent. Redis Cluster is not supported (a
//! script touches several keys); Redis 5 or later is (scripts read the server clock).
//!
//! A Redlock semaphore is a set of `limit` slots, each an ordinary Redlock lock: counting
//! holders per server and asking a majority is not safe (three holders can each find room on
//! a different two of three servers with a limit of two).

mod hold;
mod scripts;
mod servers;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;
use tokio::time::Instant;

pub use hold::RedisHandle;

use self::scripts::Keys;
use self::servers::{Call, Server, Servers, Tally};
use crate::client::millis_up;
use crate::error::{validate_name, LockError};
use crate::fencing::FencingToken;
use crate::traits::{
    tried, DistributedLock, DistributedReaderWriterLock, DistributedSemaphore, LockProvider,
};

/// The most slots a Redlock semaphore may have (each slot is a key on every server).
pub const MAX_REDLOCK_SEMAPHORE_LIMIT: u32 = 1024;

/// Configures a [`RedisLockProvider`].
///
/// ```no_run
/// # async fn run() -> Result<(), lockserver_client::LockError> {
/// use std::time::Duration;
/// use lockserver_client::redis::RedisLockProvider;
///
/// let redis = RedisLockProvider::builder()
///     .server("redis://:secret@cache.internal:6379/2")
///     .ttl(Duration::from_secs(10))
///     .key_prefix("billing:locks:")
///     .build()
///     .await?;
/// # drop(redis); Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisLockProviderBuilder {
    servers: Vec<String>,
    ttl: Duration,
    fallback_poll: Duration,
    retry_delay: Duration,
    command_timeout: Duration,
    key_prefix: String,
    auto_extend: bool,
}

impl fmt::Debug for RedisLockProviderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URLs may carry passwords: only their count is shown.
        f.debug_struct("RedisLockProviderBuilder")
            .field("servers", &self.servers.len())
            .field("ttl", &self.ttl)
            .field("fallback_poll", &self.fallback_poll)
            .field("retry_delay", &self.retry_delay)
            .field("command_timeout", &self.command_timeout)
            .field("key_prefix", &self.key_prefix)
            .field("auto_extend", &self.auto_extend)
            .finish()
    }
}

impl Default for RedisLockProviderBuilder {
    fn default() -> RedisLockProviderBuilder {
        RedisLockProviderBuilder {
            servers: Vec::new(),
            ttl: Duration::from_secs(30),
            fallback_poll: Duration::from_millis(500),
            retry_delay: Duration::from_millis(50),
            command_timeout: Duration::from_millis(500),
            key_prefix: "lockserver:".into(),
            auto_extend: true,
        }
    }
}

impl RedisLockProviderBuilder {
    /// Adds a server: `redis://[[user]:password@]host[:port][/db]` or `unix:///path`. TLS
    /// (`rediss://`) is not built in: `build` refuses it. One server is a single instance;
    /// three or five independent ones (not replicas of each other) are a Redlock.
    pub fn server(mut self, url: impl Into<String>) -> Self {
        self.servers.push(url.into());
        self
    }

    /// Adds several servers.
    pub fn servers<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.servers.extend(urls.into_iter().map(Into::into));
        self
    }

    /// Each hold's lease (default 30 s, at least 100 ms): how long the servers keep a hold
    /// whose client died. It is extended every third of it while the handle lives.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long a waiter waits for a release message before it tries again anyway
    /// (default 500 ms): a message can be missed.
    pub fn fallback_poll(mut self, interval: Duration) -> Self {
        self.fallback_poll = interval;
        self
    }

    /// Redlock only: the most a waiter waits at random before a retry (default 50 ms), so
    /// contenders that split the vote do not collide again.
    pub fn retry_delay(mut self, max: Duration) -> Self {
        self.retry_delay = max;
        self
    }

    /// The longest wait for one server's answer (default 500 ms; within a grant attempt also
    /// at most the TTL). A server slower than that counts as failed for that round.
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// The prefix of every key and channel (default `lockserver:`).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Whether leases are extended while a handle lives (default yes). Without it a hold ends
    /// one TTL after its grant, and its lost signal fires (`Expired`) just before.
    pub fn auto_extend(mut self, extend: bool) -> Self {
        self.auto_extend = extend;
        self
    }

    /// Checks the settings, connects to the servers (a quorum of them must answer) and, for a
    /// single instance, asks whether it is durable enough for fencing tokens.
    pub async fn build(self) -> Result<RedisLockProvider, LockError> {
        if self.servers.is_empty() {
            return Err(LockError::InvalidArgument("no redis server given".into()));
        }
        if self.ttl < Duration::from_millis(100) {
            return Err(LockError::InvalidArgument("the ttl must be at least 100 ms".into()));
        }
        if self.ttl > Duration::from_secs(365 * 24 * 3600) {
            return Err(LockError::InvalidArgument("the ttl must be at most a year".into()));
        }
        if self.fallback_poll.is_zero() || self.command_timeout.is_zero() {
            return Err(LockError::InvalidArgument(
                "the fallback poll and the command timeout must be positive".into(),
            ));
        }
        let mut list = Vec::with_capacity(self.servers.len());
        for url in &self.servers {
            let server = Server::open(url, self.command_timeout)?;
            if list.iter().any(|known: &Server| known.addr == server.addr) {
                // The same server twice would count twice towards the quorum.
                return Err(LockError::InvalidArgument(format!(
                    "redis server {} is given twice",
                    server.addr
                )));
            }
            list.push(server);
        }
        let servers = Servers::new(list);
        let reachable = servers.ping_all(self.command_timeout).await;
        if servers.too_many_failed(&reachable) {
            return Err(servers.unreachable(&reachable));
        }
        let tokens = if servers.len() == 1 {
            servers.first().durable(self.command_timeout).await.map_err(LockError::Connection)?
        } else {
            false
        };
        let inner = Inner {
            servers,
            tokens,
            ttl: self.ttl,
            drift: self.ttl.mul_f64(0.01) + Duration::from_millis(2),
            fallback_poll: self.fallback_poll,
            retry_delay: self.retry_delay,
            command_timeout: self.command_timeout,
            prefix: self.key_prefix,
            auto_extend: self.auto_extend,
        };
        Ok(RedisLockProvider { inner: Arc::new(inner) })
    }
}

/// Locks, reader-writer locks and semaphores on Redis: a single instance, or Redlock over
/// several. Cheap to clone (clones share the connections).
#[derive(Clone, Debug)]
pub struct RedisLockProvider {
    inner: Arc<Inner>,
}

impl RedisLockProvider {
    pub fn builder() -> RedisLockProviderBuilder {
        RedisLockProviderBuilder::default()
    }

    /// A single instance with the default settings.
    pub async fn connect(url: &str) -> Result<RedisLockProvider, LockError> {
        RedisLockProvider::builder().server(url).build().await
    }

    /// An exclusive lock named `name` (the same lock as the writer of
    /// [`rw_lock(name)`](RedisLockProvider::rw_lock)).
    pub fn lock(&self, name: &str) -> RedisLock {
        RedisLock { inner: self.inner.clone(), name: name.to_string() }
    }

    /// A reader-writer lock named `name`.
    pub fn rw_lock(&self, name: &str) -> RedisReaderWriterLock {
        RedisReaderWriterLock { inner: self.inner.clone(), name: name.to_string() }
    }

    /// A semaphore named `name` with `max_count` tickets. Every client must use the same
    /// `max_count` for a name (each checks its own).
    pub fn semaphore(&self, name: &str, max_count: u32) -> RedisSemaphore {
        RedisSemaphore { inner: self.inner.clone(), name: name.to_string(), max_count }
    }

    /// Whether handles carry fencing tokens (a single durable instance; see the module docs).
    pub fn has_fencing_tokens(&self) -> bool {
        self.inner.tokens
    }

    /// Whether this is Redlock (more than one server).
    pub fn is_redlock(&self) -> bool {
        self.inner.servers.len() > 1
    }
}

impl LockProvider for RedisLockProvider {
    type Lock = RedisLock;
    type ReaderWriterLock = RedisReaderWriterLock;
    type Semaphore = RedisSemaphore;

    fn create_lock(&self, name: &str) -> RedisLock {
        self.lock(name)
    }

    fn create_reader_writer_lock(&self, name: &str) -> RedisReaderWriterLock {
        self.rw_lock(name)
    }

    fn create_semaphore(&self, name: &str, max_count: u32) -> RedisSemaphore {
        self.semaphore(name, max_count)
    }
}

/// An exclusive lock (made by [`RedisLockProvider::lock`]).
#[derive(Clone, Debug)]
pub struct RedisLock {
    inner: Arc<Inner>,
    name: String,
}

impl RedisLock {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits up to `timeout` (`None`: no deadline; `Some(ZERO)`: try once) for the lock.
    pub async fn acquire(&self, timeout: Option<Duration>) -> Result<RedisHandle, LockError> {
        self.inner.acquire(&self.name, Want::Write, timeout).await
    }

    /// Takes the lock if it is free now; `None` if it is held.
    pub async fn try_acquire(&self) -> Result<Option<RedisHandle>, LockError> {
        tried(self.acquire(Some(Duration::ZERO)).await)
    }
}

/// A reader-writer lock (made by [`RedisLockProvider::rw_lock`]).
#[derive(Clone, Debug)]
pub struct RedisReaderWriterLock {
    inner: Arc<Inner>,
    name: String,
}

impl RedisReaderWriterLock {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn acquire_read(&self, timeout: Option<Duration>) -> Result<RedisHandle, LockError> {
        self.inner.acquire(&self.name, Want::Read, timeout).await
    }

    pub async fn try_acquire_read(&self) -> Result<Option<RedisHandle>, LockError> {
        tried(self.acquire_read(Some(Duration::ZERO)).await)
    }

    /// Waits for the write lock; while it waits, new readers are held back.
    pub async fn acquire_write(&self, timeout: Option<Duration>) -> Result<RedisHandle, LockError> {
        self.inner.acquire(&self.name, Want::Write, timeout).await
    }

    pub async fn try_acquire_write(&self) -> Result<Option<RedisHandle>, LockError> {
        tried(self.acquire_write(Some(Duration::ZERO)).await)
    }
}

/// A counting semaphore (made by [`RedisLockProvider::semaphore`]).
#[derive(Clone, Debug)]
pub struct RedisSemaphore {
    inner: Arc<Inner>,
    name: String,
    max_count: u32,
}

impl RedisSemaphore {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn max_count(&self) -> u32 {
        self.max_count
    }

    /// Takes one ticket, waiting up to `timeout`.
    pub async fn acquire(&self, timeout: Option<Duration>) -> Result<RedisHandle, LockError> {
        self.inner.acquire(&self.name, Want::Ticket { limit: self.max_count }, timeout).await
    }

    pub async fn try_acquire(&self) -> Result<Option<RedisHandle>, LockError> {
        tried(self.acquire(Some(Duration::ZERO)).await)
    }
}

impl DistributedLock for RedisLock {
    type Handle = RedisHandle;

    fn name(&self) -> &str {
        &self.name
    }

    async fn acquire(&self, timeout: Option<Duration>) -> Result<RedisHandle, LockError> {
        RedisLock::acquire(self, timeout).await
    }

    async fn try_acquire(&self) -> Result<Option<RedisHandle>, LockError> {
        RedisLock::try_acquire(self).await
    }
}

impl DistributedReaderWriterLock for RedisReaderWriterLock {
    type ReadHandle = RedisHandle;
    type WriteHandle = RedisHandle;

    fn name(&self) -> &str {
        &self.name
    }

    async fn acquire_read(&self, timeout: Option<Duration>) -> Result<RedisHandle, LockError> {
        RedisReaderWriterLock::acquire_read(self, timeout).await
    }

    async fn try_acquire_read(&self) -> Result<Option<RedisHandle>, LockError> {
        RedisReaderWriterLock::try_acquire_read(self).await
    }

    async fn acquire_write(&self, timeout: Option<Duration>) -> Result<RedisHandle, LockError> {
        RedisReaderWriterLock::acquire_write(self, timeout).await
    }

    async fn try_acquire_write(&self) -> Result<Option<RedisHandle>, LockError> {
        RedisReaderWriterLock::try_acquire_write(self).await
    }
}

impl DistributedSemaphore for RedisSemaphore {
    type Handle = RedisHandle;

    fn name(&self) -> &str {
        &self.name
    }

    fn max_count(&self) -> u32 {
        self.max_count
    }

    async fn acquire(&self, timeout: Option<Duration>) -> Result<RedisHandle, LockError> {
        RedisSemaphore::acquire(self, timeout).await
    }

    async fn try_acquire(&self) -> Result<Option<RedisHandle>, LockError> {
        RedisSemaphore::try_acquire(self).await
    }
}

/// What an acquire asks for.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// The exclusive lock, or the reader-writer lock's writer (the same thing).
    Write,
    Read,
    Ticket {
        limit: u32,
    },
}

/// Where a hold lives on each server (the same key on all of them).
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// A string key holding the value (writer, Redlock semaphore slot).
    Key(String),
    /// A member of a sorted set (reader, single-instance semaphore ticket).
    Member(String),
}

/// One acquisition's hold: where, its value, and the channel its release wakes.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    target: Target,
    value: String,
    channel: String,
}

/// A successful attempt.
#[derive(Debug)]
pub(crate) struct Granted {
    held: Held,
    token: Option<FencingToken>,
    /// When the attempt started (the extension rounds count from there).
    started: Instant,
    /// started + TTL − drift: before any server can expire the hold.
    deadline: Instant,
}

/// Everything a provider's locks and handles share.
pub(crate) struct Inner {
    servers: Servers,
    /// Tokens are drawn only on a single durable instance.
    tokens: bool,
    ttl: Duration,
    /// TTL × 1 % + 2 ms: the bound on clock-rate differences between client and servers.
    drift: Duration,
    fallback_poll: Duration,
    retry_delay: Duration,
    command_timeout: Duration,
    prefix: String,
    auto_extend: bool,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLockProvider")
            .field("servers", &self.servers)
            .field("tokens", &self.tokens)
            .field("ttl", &self.ttl)
            .field("key_prefix", &self.prefix)
            .finish()
    }
}

impl Inner {
    /// How long a grant or an extension that started at some instant stays valid.
    fn validity(&self) -> Duration {
        self.ttl - self.drift
    }

    fn ttl_ms(&self) -> String {
        millis_up(self.ttl).to_string()
    }

    fn is_redlock(&self) -> bool {
        self.servers.len() > 1
    }

    /// How long a waiting writer's marker lives: it is refreshed at every retry, which comes
    /// at the latest after a fallback poll.
    fn marker_ttl(&self) -> Duration {
        self.fallback_poll * 2 + self.command_timeout + self.retry_delay
    }

    async fn acquire(
        self: &Arc<Self>,
        name: &str,
        want: Want,
        timeout: Option<Duration>,
    ) -> Result<RedisHandle, LockError> {
        validate_name(name)?;
        if let Want::Ticket { limit } = want {
            if limit == 0 {
                return Err(LockError::InvalidArgument(
                    "a semaphore needs a limit of at least 1".into(),
                ));
            }
            if self.is_redlock() && limit > MAX_REDLOCK_SEMAPHORE_LIMIT {
                return Err(LockError::InvalidArgument(format!(
                    "a Redlock semaphore has at most {MAX_REDLOCK_SEMAPHORE_LIMIT} tickets"
                )));
            }
        }
        let keys = Keys::new(&self.prefix, name);
        let value = format!("{:032x}", rand::random::<u128>());
        // If this future is dropped mid-attempt, what the attempt may have created (or a
        // waiting writer's marker) is deleted in the background.
        let mut abandon = AbandonOnDrop { inner: self.clone(), current: None, marked: false };
        let result = self.acquire_loop(&keys, want, &value, timeout, &mut abandon).await;
        let leftover = abandon.current.take();
        match result {
            Ok(granted) => Ok(RedisHandle::start(self.clone(), name, granted)),
            Err(error) => {
                if let (Some(held), true) = (leftover, abandon.marked) {
                    // A writer that waited may have left its marker: take it away.
                    self.release_everywhere(&held, true).await;
                }
                Err(error)
            }
        }
    }

    async fn acquire_loop(
        &self,
        keys: &Keys,
        want: Want,
        value: &str,
        timeout: Option<Duration>,
        abandon: &mut AbandonOnDrop,
    ) -> Result<Granted, LockError> {
        let started = Instant::now();
        // A plain try first: no subscription, no writer's marker.
        if let Some(granted) = self.attempt(keys, want, value, None, abandon).await? {
            return Ok(granted);
        }
        let wait = match timeout {
            Some(wait) if wait.is_zero() => return Err(LockError::Locked),
            other => other,
        };
        let deadline = wait.map(|wait| started + wait);
        // Subscribe before trying again, so a release after that try cannot go unnoticed.
        let channel = match want {
            Want::Write | Want::Read => keys.lock_channel(),
            Want::Ticket { .. } => keys.semaphore_channel(),
        };
        let mut wakeups = self.servers.subscribe(&channel, self.command_timeout).await;
        loop {
            let marker = Some(self.marker_ttl());
            if let Some(granted) = self.attempt(keys, want, value, marker, abandon).await? {
                return Ok(granted);
            }
            let now = Instant::now();
            if let (Some(deadline), Some(wait)) = (deadline, wait) {
                if now >= deadline {
                    return Err(LockError::Timeout(wait));
                }
            }
            let poll = now + self.fallback_poll;
            wakeups.wait(deadline.map_or(poll, |deadline| deadline.min(poll))).await;
            if self.is_redlock() && !self.retry_delay.is_zero() {
                let delay = rand::thread_rng().gen_range(Duration::ZERO..=self.retry_delay);
                let until = Instant::now() + delay;
                tokio::time::sleep_until(deadline.map_or(until, |deadline| deadline.min(until)))
                    .await;
            }
        }
    }

    /// One attempt on every server. `Ok(None)`: held by others.
    async fn attempt(
        &self,
        keys: &Keys,
        want: Want,
        value: &str,
        marker: Option<Duration>,
        abandon: &mut AbandonOnDrop,
    ) -> Result<Option<Granted>, LockError> {
        let draw = if self.tokens { "1" } else { "0" }.to_string();
        let counter = scripts::token_counter(&self.prefix);
        let (held, call) = match want {
            Want::Ticket { limit } if self.is_redlock() => {
                return self.attempt_slots(keys, limit, value, abandon).await;
            }
            Want::Write => {
                abandon.marked |= marker.is_some();
                let marker_ms = marker.map_or(0, millis_up).to_string();
                let call = Call {
                    script: &scripts::WRITE_ACQUIRE,
                    keys: vec![keys.writer(), keys.readers(), counter],
                    args: vec![value.to_string(), self.ttl_ms(), marker_ms, draw],
                };
                (self.held(Target::Key(keys.writer()), value, keys.lock_channel()), call)
            }
            Want::Read => {
                let call = Call {
                    script: &scripts::READ_ACQUIRE,
                    keys: vec![keys.writer(), keys.readers(), counter],
                    args: vec![value.to_string(), self.ttl_ms(), draw],
                };
                (self.held(Target::Member(keys.readers()), value, keys.lock_channel()), call)
            }
            Want::Ticket { limit } => {
                let call = Call {
                    script: &scripts::TICKET_ACQUIRE,
                    keys: vec![keys.tickets(), counter],
                    args: vec![value.to_string(), self.ttl_ms(), limit.to_string(), draw],
                };
                let held =
                    self.held(Target::Member(keys.tickets()), value, keys.semaphore_channel());
                (held, call)
            }
        };
        abandon.current = Some(held.clone());
        self.attempt_on(held, &call).await
    }

    fn held(&self, target: Target, value: &str, channel: String) -> Held {
        Held { target, value: value.to_string(), channel }
    }

    /// A Redlock semaphore: look which slots are free where, then try those free on a quorum
    /// (in random order, so contenders spread out) until one is granted.
    async fn attempt_slots(
        &self,
        keys: &Keys,
        limit: u32,
        value: &str,
        abandon: &mut AbandonOnDrop,
    ) -> Result<Option<Granted>, LockError> {
        let slot_keys: Vec<String> = (0..limit).map(|slot| keys.slot(slot)).collect();
        let free = self.servers.free_counts(&slot_keys, self.command_timeout).await?;
        let mut candidates: Vec<usize> =
            (0..slot_keys.len()).filter(|&slot| free[slot] >= self.servers.quorum()).collect();
        candidates.shuffle(&mut rand::thread_rng());
        for slot in candidates {
            let key = slot_keys[slot].clone();
            let held = self.held(Target::Key(key.clone()), value, keys.semaphore_channel());
            abandon.current = Some(held.clone());
            let call = Call {
                script: &scripts::SLOT_ACQUIRE,
                keys: vec![key],
                args: vec![value.to_string(), self.ttl_ms()],
            };
            if let Some(granted) = self.attempt_on(held, &call).await? {
                return Ok(Some(granted));
            }
        }
        Ok(None)
    }

    /// Runs a grant script everywhere and decides: a quorum within the validity time is a
    /// grant; anything else is undone on every server.
    async fn attempt_on(&self, held: Held, call: &Call<'_>) -> Result<Option<Granted>, LockError> {
        let started = Instant::now();
        let deadline = started + self.validity();
        let tally = self.servers.grant(call, self.command_timeout.min(self.validity())).await;
        if self.servers.has_quorum(&tally) && Instant::now() < deadline {
            let token = self.tokens.then_some(FencingToken(tally.token));
            return Ok(Some(Granted { held, token, started, deadline }));
        }
        // A server that failed or timed out may still have granted: undo it everywhere.
        if tally.yes > 0 || tally.failed > 0 {
            self.release_everywhere(&held, false).await;
        }
        if self.servers.too_many_failed(&tally) {
            return Err(self.servers.unreachable(&tally));
        }
        Ok(None)
    }

    /// Compare-and-pexpire of the hold on every server.
    async fn extend_everywhere(&self, held: &Held, budget: Duration) -> Tally {
        let (script, key) = match &held.target {
            Target::Key(key) => (&*scripts::KEY_EXTEND, key),
            Target::Member(set) => (&*scripts::MEMBER_EXTEND, set),
        };
        let call =
            Call { script, keys: vec![key.clone()], args: vec![held.value.clone(), self.ttl_ms()] };
        self.servers.confirm(&call, budget).await
    }

    /// Compare-and-delete of the hold (and, if asked, of a waiting writer's marker) on every
    /// server; each deletion publishes a wake-up.
    async fn release_everywhere(&self, held: &Held, also_marker: bool) -> Tally {
        let call = match &held.target {
            Target::Key(key) => Call {
                script: &scripts::KEY_RELEASE,
                keys: vec![key.clone()],
                args: vec![
                    held.value.clone(),
                    if also_marker { "1" } else { "0" }.to_string(),
                    held.channel.clone(),
                ],
            },
            Target::Member(set) => Call {
                script: &scripts::MEMBER_RELEASE,
                keys: vec![set.clone()],
                args: vec![held.value.clone(), held.channel.clone()],
            },
        };
        self.servers.confirm(&call, self.command_timeout).await
    }
}

/// Deletes, in the background, what an acquire future dropped mid-way may have left: a grant
/// nobody will use, or a waiting writer's marker.
struct AbandonOnDrop {
    inner: Arc<Inner>,
    /// The hold the current attempt is after; `None` once the acquire has finished.
    current: Option<Held>,
    /// Whether a writer's attempt may have left a waiting marker.
    marked: bool,
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        let Some(held) = self.current.take() else { return };
        // Without a runtime the leftovers end by their TTL.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let inner = self.inner.clone();
        runtime.spawn(async move {
            inner.release_everywhere(&held, true).await;
        });
    }
}
