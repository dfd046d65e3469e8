//! The PostgreSQL backend (feature `postgres`): the trait API over PostgreSQL advisory locks,
//! with fencing tokens, a lost-lock signal and a connection pool.
//!
//! ```no_run
//! use std::time::Duration;
//! use lockserver_client::postgres::{LockScope, PostgresLockProvider};
//! use lockserver_client::{DistributedLock, LockError, LockHandle, LockProvider};
//!
//! # async fn run() -> Result<(), LockError> {
//! let provider = PostgresLockProvider::builder()
//!     .connection_string("host=db.internal user=app dbname=app password=secret")
//!     .max_pool_size(16) // each held lock pins one connection
//!     .scope(LockScope::Session) // the default; Transaction behind PgBouncer
//!     .build()
//!     .await?;
//!
//! let handle = provider.create_lock("invoices").acquire(Some(Duration::from_secs(5))).await?;
//! let token = handle.token(); // Some: rises with every grant of the name
//! let mut lost = handle.lost(); // fires if the connection dies
//! # let _ = (token, &mut lost);
//! handle.release().await?; // or drop it: it is unlocked in the background
//!
//! let reader = provider.create_reader_writer_lock("cache").acquire_read(None).await?;
//! let ticket = provider.create_semaphore("gpu", 4).acquire(None).await?;
//! # let _ = (reader, ticket);
//! # Ok(()) }
//! ```
//!
//! # How it maps onto PostgreSQL
//!
//! - **Keys.** A name becomes a 64-bit advisory-lock key: the first 8 bytes of SHA-256 of its
//!   UTF-8 bytes, big-endian, as a signed integer ([`lock_key`]); in SQL,
//!   `('x' || left(encode(sha256(convert_to(name, 'UTF8')), 'hex'), 16))::bit(64)::bigint`.
//!   A lock and the reader-writer lock of the same name share the key (the lock is the write
//!   side). Names are checked like the server's: 1–255 bytes, no control characters.
//! - **Modes.** Exclusive: `pg_advisory_lock`; shared (readers): `pg_advisory_lock_shared`.
//!   PostgreSQL queues a new reader behind a waiting writer, so writers are not starved.
//! - **Scope** ([`LockScope`]). `Session` (default): the lock lives on the pinned connection's
//!   session until unlocked. `Transaction`: `BEGIN` and `pg_advisory_xact_lock` in a
//!   transaction the handle keeps open until release (`ROLLBACK`) — for poolers in transaction
//!   mode, where a session is not yours between transactions.
//! - **Waits** happen in the server, never by polling: `acquire(None)` blocks in
//!   `pg_advisory_lock` (with `lock_timeout` 0, whatever the server's default); a timed wait
//!   sets `SET LOCAL lock_timeout` for that one statement (it ends with the statement, nothing
//!   to reset) and maps SQLSTATE 55P03 to [`LockError::Timeout`]; a zero timeout tries once
//!   with `pg_try_advisory_lock` ([`LockError::Locked`]). An `acquire` future dropped mid-wait
//!   sends a cancel request and discards its connection, so it neither stays queued in the
//!   server nor leaks a late grant.
//! - **Fencing tokens.** The provider creates the sequence `lockserver_fencing_tokens` (CACHE 1,
//!   in the first schema of the `search_path`) at build; every grant draws `nextval` in the same
//!   message, after the lock statement, so a token is drawn only once the lock is held. Tokens
//!   rise across all holders of every name, readers included. Providers whose `search_path`
//!   resolves different sequences do not share tokens.
//! - **Semaphores** of N tickets are N exclusive slot keys ([`semaphore_slot_key`]: name, NUL,
//!   `semaphore`, NUL, slot number). A try takes the first free slot in one statement. A wait
//!   blocks in the server on one slot, a different one each round (round-robin from a random
//!   start), so that slot's release — even by a session that died — hands it over at once. A
//!   release of any other slot sends `NOTIFY lockserver_semaphore`; a listener connection per
//!   provider (opened by the first semaphore wait, outside the pool) wakes the waiter, which
//!   cancels its blocked statement and tries every slot. The only polling left is a recheck of
//!   every slot each `semaphore_recheck` (1 s by default), for a slot whose holder died without
//!   a NOTIFY while the waiter sat on another. Slots are not FIFO across waiters. All users of a
//!   name should agree on N (slots are keyed by number, so different N share the low slots).
//! - **Pooling.** At most `max_pool_size` connections are handed out at once (plus the
//!   semaphore listener); each held lock pins one until released, so a provider never re-enters
//!   its own lock. A wait for a free connection counts against the acquire's timeout; a try
//!   finds the pool full → [`LockError::Server`] with `limit_exceeded`.
//! - **Release and drop.** `release` unlocks and returns the connection to the pool. Dropping a
//!   handle does the same in the background (`Drop` only closes a channel). When an unlock
//!   cannot be confirmed, the connection is discarded instead: closing the session frees its
//!   advisory locks, so nothing leaks into the pool.
//! - **Lost locks.** A task per held lock watches its connection and sends `SELECT 1` every
//!   `keepalive_interval` (1 s). When the connection ends or a keepalive goes unanswered for 3
//!   intervals, the lost signal fires with [`LostReason::ConnectionLost`](crate::LostReason)
//!   and the connection is discarded. The keepalive also keeps an `idle_session_timeout` or
//!   `idle_in_transaction_session_timeout` from ending a holder's session.
//! - **Errors.** A connection failure is [`LockError::Connection`] (the outcome is unknown, and
//!   the connection involved is discarded so nothing stays held); a bad connection string or
//!   unknown database is [`LockError::InvalidArgument`]; a refused login or missing privilege
//!   is [`LockError::Auth`].
//!
//! Limits: TLS is not supported yet (the connection uses `NoTls`). After a network partition
//! the server frees a vanished client's locks only when it notices the dead socket (TCP
//! keepalives, `tcp_keepalives_idle` on the server); the client fires its lost signal within 3
//! keepalive intervals.

mod acquire;
mod keys;
mod pool;
mod sql;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, oneshot};

pub use keys::{lock_key, semaphore_slot_key};
pub use sql::LockScope;
/// The driver, re-exported so a [`tokio_postgres::Config`] can be built and passed to
/// [`PostgresLockProviderBuilder::config`].
pub use tokio_postgres;

use crate::error::LockError;
use crate::fencing::FencingToken;
use crate::handle::LostSignal;
use crate::traits::{
    tried, DistributedLock, DistributedReaderWriterLock, DistributedSemaphore, LockHandle,
    LockProvider,
};
use pool::{Conn, Pool};
use sql::Mode;

/// The largest semaphore (a try names every slot in one statement).
pub const MAX_SEMAPHORE_COUNT: u32 = 1024;

/// Makes PostgreSQL-backed locks, reader-writer locks and semaphores. Cheap to clone (clones
/// share the pool).
#[derive(Clone)]
pub struct PostgresLockProvider {
    shared: Arc<Shared>,
}

/// What a provider and its clones, locks and waits share.
pub(crate) struct Shared {
    pool: Arc<Pool>,
    scope: LockScope,
    keepalive_interval: Duration,
    semaphore_recheck: Duration,
    /// NOTIFY wake-ups for semaphore waiters: the listener connection's driver sends, each
    /// waiting `acquire` subscribes for the duration of its wait.
    wakeups: broadcast::Sender<i64>,
    /// The listener connection (`LISTEN lockserver_semaphore`), opened by the first semaphore
    /// wait and reopened by a later one once it has ended. Closed when the provider and all its
    /// clones are dropped. A tokio mutex: opening it is awaited under the lock, so concurrent
    /// first waits open one listener.
    listener: tokio::sync::Mutex<Option<Conn>>,
}

impl Shared {
    /// Subscribes to semaphore wake-ups, opening the listener if needed. `None` when it cannot
    /// be opened: the waiter then relies on its blocked slot and the recheck.
    async fn listen(&self) -> Option<broadcast::Receiver<i64>> {
        let mut listener = self.listener.lock().await;
        if listener.as_ref().is_some_and(|conn| !conn.is_closed()) {
            return Some(self.wakeups.subscribe());
        }
        *listener = None;
        let conn = match Conn::open(self.pool.config(), Some(self.wakeups.clone())).await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(%error, "postgres semaphore listener: cannot connect");
                return None;
            }
        };
        let listen = format!("LISTEN {}", sql::WAKEUP_CHANNEL);
        if let Err(error) = conn.simple(&listen).await {
            tracing::warn!(error = %sql::error_text(&error), "postgres semaphore listener: LISTEN failed");
            conn.discard();
            return None;
        }
        *listener = Some(conn);
        Some(self.wakeups.subscribe())
    }
}

impl fmt::Debug for PostgresLockProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresLockProvider")
            .field("scope", &self.shared.scope)
            .field("keepalive_interval", &self.shared.keepalive_interval)
            .finish_non_exhaustive()
    }
}

impl PostgresLockProvider {
    pub fn builder() -> PostgresLockProviderBuilder {
        PostgresLockProviderBuilder::default()
    }

    /// An exclusive lock.
    pub fn lock(&self, name: &str) -> PostgresLock {
        PostgresLock { shared: self.shared.clone(), name: name.to_string() }
    }

    /// A reader-writer lock (its write side is the lock of the same name).
    pub fn rw_lock(&self, name: &str) -> PostgresReaderWriterLock {
        PostgresReaderWriterLock { shared: self.shared.clone(), name: name.to_string() }
    }

    /// A semaphore of `max_count` tickets (1 to [`MAX_SEMAPHORE_COUNT`]; checked at acquire).
    pub fn semaphore(&self, name: &str, max_count: u32) -> PostgresSemaphore {
        PostgresSemaphore { shared: self.shared.clone(), name: name.to_string(), max_count }
    }

    pub fn scope(&self) -> LockScope {
        self.shared.scope
    }
}

/// Settings of a [`PostgresLockProvider`].
pub struct PostgresLockProviderBuilder {
    config: Option<Result<tokio_postgres::Config, LockError>>,
    max_pool_size: usize,
    scope: LockScope,
    keepalive_interval: Duration,
    semaphore_recheck: Duration,
}

impl Default for PostgresLockProviderBuilder {
    fn default() -> PostgresLockProviderBuilder {
        PostgresLockProviderBuilder {
            config: None,
            max_pool_size: 10,
            scope: LockScope::Session,
            keepalive_interval: Duration::from_secs(1),
            semaphore_recheck: Duration::from_secs(1),
        }
    }
}

impl fmt::Debug for PostgresLockProviderBuilder {
    // The configuration may hold a password: it is not printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresLockProviderBuilder")
            .field("max_pool_size", &self.max_pool_size)
            .field("scope", &self.scope)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("semaphore_recheck", &self.semaphore_recheck)
            .finish_non_exhaustive()
    }
}

impl PostgresLockProviderBuilder {
    /// A libpq-style connection string (`host=... user=... dbname=...`) or a
    /// `postgresql://user:password@host:port/dbname` URL. A malformed one fails `build` with
    /// [`LockError::InvalidArgument`].
    pub fn connection_string(mut self, connection_string: &str) -> Self {
        self.config = Some(connection_string.parse().map_err(|error| {
            LockError::InvalidArgument(format!(
                "bad postgres connection string: {}",
                sql::error_text(&error)
            ))
        }));
        self
    }

    /// A configuration built in code.
    pub fn config(mut self, config: tokio_postgres::Config) -> Self {
        self.config = Some(Ok(config));
        self
    }

    /// How many connections may be handed out at once (default 10): one per held lock, and
    /// one per acquire in progress.
    pub fn max_pool_size(mut self, max_pool_size: usize) -> Self {
        self.max_pool_size = max_pool_size;
        self
    }

    /// Session-level (default) or transaction-scoped locks.
    pub fn scope(mut self, scope: LockScope) -> Self {
        self.scope = scope;
        self
    }

    /// How often a held lock's connection is checked with `SELECT 1` (default 1 s); it is
    /// lost after 3 intervals without an answer.
    pub fn keepalive_interval(mut self, interval: Duration) -> Self {
        self.keepalive_interval = interval;
        self
    }

    /// How often a semaphore waiter tries every slot besides its NOTIFY wake-ups (default 1 s).
    pub fn semaphore_recheck(mut self, recheck: Duration) -> Self {
        self.semaphore_recheck = recheck;
        self
    }

    /// Connects once (checking the address and the credentials), creates the fencing-token
    /// sequence if it is missing, and keeps that connection as the pool's first.
    pub async fn build(self) -> Result<PostgresLockProvider, LockError> {
        let mut config = self.config.unwrap_or_else(|| {
            Err(LockError::InvalidArgument("no postgres connection string".into()))
        })?;
        if self.max_pool_size == 0 {
            return Err(LockError::InvalidArgument("max_pool_size must be at least 1".into()));
        }
        if self.keepalive_interval.is_zero() || self.semaphore_recheck.is_zero() {
            return Err(LockError::InvalidArgument(
                "keepalive_interval and semaphore_recheck must be above zero".into(),
            ));
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(pool::DEFAULT_CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("lockserver-client");
        }
        let first = Conn::open(&config, None).await?;
        pool::ensure_token_sequence(&first).await?;
        let pool = Arc::new(Pool::new(config, self.max_pool_size, first));
        let (wakeups, _) = broadcast::channel(64);
        let shared = Shared {
            pool,
            scope: self.scope,
            keepalive_interval: self.keepalive_interval,
            semaphore_recheck: self.semaphore_recheck,
            wakeups,
            listener: tokio::sync::Mutex::new(None),
        };
        Ok(PostgresLockProvider { shared: Arc::new(shared) })
    }
}

/// How long an acquire may wait.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Wait {
    Try,
    Until { deadline: Instant, requested: Duration },
    Forever,
}

impl Wait {
    fn new(timeout: Option<Duration>) -> Wait {
        match timeout {
            None => Wait::Forever,
            Some(requested) if requested.is_zero() => Wait::Try,
            Some(requested) => match Instant::now().checked_add(requested) {
                Some(deadline) => Wait::Until { deadline, requested },
                None => Wait::Forever,
            },
        }
    }

    /// The `lock_timeout` (ms, 0 = none) of the next wait in the server, at most `cap`;
    /// `None` when the next statement must be a try (a try-lock, or no time left).
    fn lock_timeout_ms(&self, cap: Option<Duration>) -> Option<u32> {
        let limit = match self {
            Wait::Try => return None,
            Wait::Forever => match cap {
                None => return Some(0),
                Some(cap) => cap,
            },
            Wait::Until { deadline, .. } => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    return None;
                }
                cap.map_or(remaining, |cap| cap.min(remaining))
            }
        };
        // Rounded up (never early), at least 1 (0 would mean no limit), at most i32::MAX (a
        // longer wait runs as several).
        let millis = limit.as_nanos().div_ceil(1_000_000);
        Some(millis.clamp(1, i32::MAX as u128) as u32)
    }

    /// The error of an attempt that found the lock held when it could wait no longer.
    fn not_acquired(&self) -> LockError {
        match self {
            Wait::Until { requested, .. } => LockError::Timeout(*requested),
            Wait::Try | Wait::Forever => LockError::Locked,
        }
    }
}

/// The release request a handle sends to the task that keeps its lock, with where to answer.
pub(crate) type ReleaseReply = oneshot::Sender<Result<(), LockError>>;

/// A held PostgreSQL lock, read or write lock, or semaphore ticket.
///
/// Dropping it unlocks in the background; [`release`](PostgresHandle::release) unlocks and
/// reports the outcome. Send [`token`](PostgresHandle::token) with every write to the protected
/// resource and stop when [`lost`](PostgresHandle::lost) fires.
pub struct PostgresHandle {
    name: String,
    key: i64,
    token: FencingToken,
    lost: LostSignal,
    /// To the task that keeps the lock; dropped (closed) by `Drop`, which makes the task
    /// unlock in the background.
    release: Option<oneshot::Sender<ReleaseReply>>,
}

impl fmt::Debug for PostgresHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresHandle")
            .field("name", &self.name)
            .field("key", &self.key)
            .field("token", &self.token)
            .field("lost", &self.lost.reason())
            .finish()
    }
}

impl PostgresHandle {
    fn new(
        name: String,
        key: i64,
        token: FencingToken,
        lost: LostSignal,
        release: oneshot::Sender<ReleaseReply>,
    ) -> PostgresHandle {
        PostgresHandle { name, key, token, lost, release: Some(release) }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The advisory-lock key held (for a semaphore ticket, its slot's key): what `pg_locks`
    /// shows, as `(classid << 32) | objid`.
    pub fn key(&self) -> i64 {
        self.key
    }

    /// The grant's fencing token.
    pub fn token(&self) -> FencingToken {
        self.token
    }

    /// The lost-lock signal.
    pub fn lost(&self) -> LostSignal {
        self.lost.clone()
    }

    pub fn is_lost(&self) -> bool {
        self.lost.is_lost()
    }

    /// Unlocks and waits for the server's answer. A lock whose connection was lost answers
    /// [`LockError::Lost`]; an unlock that could not be confirmed answers
    /// [`LockError::Connection`] (its connection was closed instead, which frees the lock).
    pub async fn release(mut self) -> Result<(), LockError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let sent = match self.release.take() {
            Some(release) => release.send(reply_tx).is_ok(),
            None => false,
        };
        if !sent {
            return Err(LockError::Lost(
                self.lost.reason().unwrap_or(crate::handle::LostReason::ConnectionLost),
            ));
        }
        match reply_rx.await {
            Ok(result) => result,
            Err(_) => Err(LockError::Connection("the lock's keeper task ended".into())),
        }
    }
}

impl LockHandle for PostgresHandle {
    fn token(&self) -> Option<FencingToken> {
        Some(self.token)
    }

    fn lost(&self) -> LostSignal {
        PostgresHandle::lost(self)
    }

    async fn release(self) -> Result<(), LockError> {
        PostgresHandle::release(self).await
    }
}

/// An exclusive lock (made by [`PostgresLockProvider::lock`]).
#[derive(Clone)]
pub struct PostgresLock {
    shared: Arc<Shared>,
    name: String,
}

/// A reader-writer lock (made by [`PostgresLockProvider::rw_lock`]).
#[derive(Clone)]
pub struct PostgresReaderWriterLock {
    shared: Arc<Shared>,
    name: String,
}

/// A semaphore (made by [`PostgresLockProvider::semaphore`]).
#[derive(Clone)]
pub struct PostgresSemaphore {
    shared: Arc<Shared>,
    name: String,
    max_count: u32,
}

macro_rules! debug_by_name {
    ($($kind:ident),*) => {$(
        impl fmt::Debug for $kind {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($kind)).field("name", &self.name).finish_non_exhaustive()
            }
        }
    )*};
}
debug_by_name!(PostgresLock, PostgresReaderWriterLock, PostgresSemaphore);

impl PostgresLock {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The advisory-lock key of this name ([`lock_key`]).
    pub fn key(&self) -> i64 {
        lock_key(&self.name)
    }

    /// Waits up to `timeout` (`None`: no deadline; `Some(ZERO)`: try once) for the lock.
    pub async fn acquire(&self, timeout: Option<Duration>) -> Result<PostgresHandle, LockError> {
        acquire::acquire_lock(&self.shared, &self.name, Mode::Exclusive, timeout).await
    }

    /// Takes the lock if it is free now; `None` if it is held.
    pub async fn try_acquire(&self) -> Result<Option<PostgresHandle>, LockError> {
        tried(self.acquire(Some(Duration::ZERO)).await)
    }
}

impl PostgresReaderWriterLock {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key(&self) -> i64 {
        lock_key(&self.name)
    }

    pub async fn acquire_read(
        &self,
        timeout: Option<Duration>,
    ) -> Result<PostgresHandle, LockError> {
        acquire::acquire_lock(&self.shared, &self.name, Mode::Shared, timeout).await
    }

    pub async fn try_acquire_read(&self) -> Result<Option<PostgresHandle>, LockError> {
        tried(self.acquire_read(Some(Duration::ZERO)).await)
    }

    pub async fn acquire_write(
        &self,
        timeout: Option<Duration>,
    ) -> Result<PostgresHandle, LockError> {
        acquire::acquire_lock(&self.shared, &self.name, Mode::Exclusive, timeout).await
    }

    pub async fn try_acquire_write(&self) -> Result<Option<PostgresHandle>, LockError> {
        tried(self.acquire_write(Some(Duration::ZERO)).await)
    }
}

impl PostgresSemaphore {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn max_count(&self) -> u32 {
        self.max_count
    }

    /// Takes one ticket, waiting up to `timeout`.
    pub async fn acquire(&self, timeout: Option<Duration>) -> Result<PostgresHandle, LockError> {
        acquire::acquire_ticket(&self.shared, &self.name, self.max_count, timeout).await
    }

    pub async fn try_acquire(&self) -> Result<Option<PostgresHandle>, LockError> {
        tried(self.acquire(Some(Duration::ZERO)).await)
    }
}

impl LockProvider for PostgresLockProvider {
    type Lock = PostgresLock;
    type ReaderWriterLock = PostgresReaderWriterLock;
    type Semaphore = PostgresSemaphore;

    fn create_lock(&self, name: &str) -> PostgresLock {
        self.lock(name)
    }

    fn create_reader_writer_lock(&self, name: &str) -> PostgresReaderWriterLock {
        self.rw_lock(name)
    }

    fn create_semaphore(&self, name: &str, max_count: u32) -> PostgresSemaphore {
        self.semaphore(name, max_count)
    }
}

impl DistributedLock for PostgresLock {
    type Handle = PostgresHandle;

    fn name(&self) -> &str {
        &self.name
    }

    async fn acquire(&self, timeout: Option<Duration>) -> Result<PostgresHandle, LockError> {
        PostgresLock::acquire(self, timeout).await
    }

    async fn try_acquire(&self) -> Result<Option<PostgresHandle>, LockError> {
        PostgresLock::try_acquire(self).await
    }
}

impl DistributedReaderWriterLock for PostgresReaderWriterLock {
    type ReadHandle = PostgresHandle;
    type WriteHandle = PostgresHandle;

    fn name(&self) -> &str {
        &self.name
    }

    async fn acquire_read(&self, timeout: Option<Duration>) -> Result<PostgresHandle, LockError> {
        PostgresReaderWriterLock::acquire_read(self, timeout).await
    }

    async fn try_acquire_read(&self) -> Result<Option<PostgresHandle>, LockError> {
        PostgresReaderWriterLock::try_acquire_read(self).await
    }

    async fn acquire_write(&self, timeout: Option<Duration>) -> Result<PostgresHandle, LockError> {
        PostgresReaderWriterLock::acquire_write(self, timeout).await
    }

    async fn try_acquire_write(&self) -> Result<Option<PostgresHandle>, LockError> {
        PostgresReaderWriterLock::try_acquire_write(self).await
    }
}

impl DistributedSemaphore for PostgresSemaphore {
    type Handle = PostgresHandle;

    fn name(&self) -> &str {
        &self.name
    }

    fn max_count(&self) -> u32 {
        self.max_count
    }

    async fn acquire(&self, timeout: Option<Duration>) -> Result<PostgresHandle, LockError> {
        PostgresSemaphore::acquire(self, timeout).await
    }

    async fn try_acquire(&self) -> Result<Option<PostgresHandle>, LockError> {
        PostgresSemaphore::try_acquire(self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_timeouts_round_up_and_never_mean_forever_by_accident() {
        assert!(Wait::new(Some(Duration::ZERO)).lock_timeout_ms(None).is_none());
        assert_eq!(Wait::new(None).lock_timeout_ms(None), Some(0));
        assert_eq!(Wait::new(None).lock_timeout_ms(Some(Duration::from_millis(500))), Some(500));
        let timed = Wait::new(Some(Duration::from_micros(10)));
        // Still time left: at least 1 ms (0 would disable the timeout). Or none left: a try.
        assert!(matches!(timed.lock_timeout_ms(None), Some(1) | None));
        let long = Wait::new(Some(Duration::from_secs(30 * 24 * 3600)));
        assert_eq!(long.lock_timeout_ms(None), Some(i32::MAX as u32));
        let capped = Wait::new(Some(Duration::from_secs(60)));
        assert_eq!(capped.lock_timeout_ms(Some(Duration::from_secs(1))), Some(1000));
        assert_eq!(
            Wait::new(Some(Duration::from_secs(2))).not_acquired(),
            LockError::Timeout(Duration::from_secs(2))
        );
        assert_eq!(Wait::Try.not_acquired(), LockError::Locked);
    }
}
