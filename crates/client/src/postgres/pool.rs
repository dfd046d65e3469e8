//! Connections and the pool.
//!
//! Each connection has a driver task that owns the socket (tokio-postgres's `Connection`),
//! forwards NOTIFY wake-ups, and says when the connection has ended. The pool hands out at most
//! `max_size` connections at once; a held lock keeps its connection until it is released.
//! A connection comes back only when it is known to hold nothing: anything else is discarded —
//! its socket closed — and the server, ending that session, frees every advisory lock it held.

use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{broadcast, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tokio_postgres::{AsyncMessage, Client, Config, Connection, NoTls, SimpleQueryMessage};

use super::sql;
use super::Wait;
use crate::error::LockError;
use lockserver_proto::ErrorCode;

/// One open connection.
pub(super) struct Conn {
    client: Client,
    /// Turns `true` (or is dropped) when the driver task ends: the session is gone.
    ended: watch::Receiver<bool>,
    /// The driver task; aborting it closes the socket at once, even mid-statement.
    driver: AbortHandle,
}

impl Conn {
    /// Connects, and spawns the driver. `wakeups` receives the payload of every NOTIFY on
    /// [`sql::WAKEUP_CHANNEL`] (only the listener connection has it).
    pub(super) async fn open(
        config: &Config,
        wakeups: Option<broadcast::Sender<i64>>,
    ) -> Result<Conn, LockError> {
        let (client, connection) =
            config.connect(NoTls).await.map_err(|error| sql::map_error(&error))?;
        let (ended_tx, ended) = watch::channel(false);
        let driver = tokio::spawn(drive(connection, ended_tx, wakeups)).abort_handle();
        Ok(Conn { client, ended, driver })
    }

    pub(super) async fn simple(
        &self,
        statement: &str,
    ) -> Result<Vec<SimpleQueryMessage>, tokio_postgres::Error> {
        self.client.simple_query(statement).await
    }

    pub(super) fn is_closed(&self) -> bool {
        self.client.is_closed() || *self.ended.borrow()
    }

    /// Resolves when the connection has ended (the server closed it, or the socket broke).
    pub(super) fn ended(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut ended = self.ended.clone();
        async move {
            // An error means the driver is gone without saying so (aborted): ended too.
            let _ = ended.wait_for(|ended| *ended).await;
        }
    }

    /// Asks the server to stop the statement this connection is running (a separate
    /// connection to the postmaster; a no-op if nothing runs by the time it arrives).
    pub(super) async fn cancel(&self) {
        if let Err(error) = self.client.cancel_token().cancel_query(NoTls).await {
            tracing::debug!(error = %sql::error_text(&error), "postgres cancel request failed");
        }
    }

    /// Closes the socket now. The server ends the session (when it next looks at the socket:
    /// at once if the session is idle) and frees its advisory locks.
    pub(super) fn discard(self) {
        self.driver.abort();
    }

    /// Discards a connection that may be in the middle of a statement (an abandoned wait): a
    /// backend blocked on a lock does not notice a closed socket, so a cancel request goes
    /// first, or it would stay queued as a ghost waiter until granted.
    pub(super) fn cancel_and_discard(self) {
        let cancel = self.client.cancel_token();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = cancel.cancel_query(NoTls).await {
                    tracing::debug!(error = %sql::error_text(&error), "postgres cancel request failed");
                }
            });
        }
        self.discard();
    }
}

/// Drives a connection until it ends, then says so on `ended`.
async fn drive<S, T>(
    mut connection: Connection<S, T>,
    ended: watch::Sender<bool>,
    wakeups: Option<broadcast::Sender<i64>>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(notification))) => {
                let key = notification.payload().parse::<i64>();
                if let (Some(wakeups), Ok(key)) = (&wakeups, key) {
                    // No receiver (nobody waits right now) is fine.
                    let _ = wakeups.send(key);
                }
            }
            Some(Ok(_notice)) => {}
            Some(Err(error)) => {
                tracing::debug!(error = %sql::error_text(&error), "postgres connection ended");
                break;
            }
            None => break,
        }
    }
    ended.send_replace(true);
}

/// At most `max_size` connections handed out at once, and the idle ones.
pub(super) struct Pool {
    config: Config,
    max_size: usize,
    /// One permit per connection handed out; a [`PooledConn`] returns its permit when dropped.
    permits: Arc<Semaphore>,
    /// Connections known to hold nothing. Short critical sections only (never across .await).
    idle: Mutex<Vec<Conn>>,
}

impl Pool {
    pub(super) fn new(config: Config, max_size: usize, first: Conn) -> Pool {
        Pool {
            config,
            max_size,
            permits: Arc::new(Semaphore::new(max_size)),
            idle: Mutex::new(vec![first]),
        }
    }

    pub(super) fn config(&self) -> &Config {
        &self.config
    }

    /// A connection for one attempt, waiting for a free one within `wait` (a try does not
    /// wait: a full pool is `limit_exceeded`, not `locked`).
    pub(super) async fn get(self: &Arc<Pool>, wait: &Wait) -> Result<PooledConn, LockError> {
        let permit = match wait {
            Wait::Try => self.permits.clone().try_acquire_owned().map_err(|_| self.exhausted())?,
            Wait::Until { deadline, requested } => {
                let acquire = self.permits.clone().acquire_owned();
                tokio::time::timeout_at((*deadline).into(), acquire)
                    .await
                    .map_err(|_| LockError::Timeout(*requested))?
                    .map_err(|_| self.exhausted())?
            }
            Wait::Forever => {
                self.permits.clone().acquire_owned().await.map_err(|_| self.exhausted())?
            }
        };
        let conn = match self.take_idle() {
            Some(conn) => conn,
            None => Conn::open(&self.config, None).await?,
        };
        Ok(PooledConn { conn: Some(conn), _permit: permit, pool: self.clone() })
    }

    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while let Some(conn) = idle.pop() {
            if !conn.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    fn exhausted(&self) -> LockError {
        LockError::Server {
            code: ErrorCode::LimitExceeded,
            message: format!("all {} pooled postgres connections are in use", self.max_size),
        }
    }
}

/// A connection taken from the pool. [`give_back`](PooledConn::give_back) returns it;
/// dropping it discards it (closes the socket), which is the safe default for a connection in
/// an unknown state.
pub(super) struct PooledConn {
    conn: Option<Conn>,
    _permit: OwnedSemaphorePermit,
    pool: Arc<Pool>,
}

impl PooledConn {
    fn conn(&self) -> &Conn {
        self.conn.as_ref().expect("a PooledConn has its connection until it is consumed")
    }

    pub(super) async fn simple(
        &self,
        statement: &str,
    ) -> Result<Vec<SimpleQueryMessage>, tokio_postgres::Error> {
        self.conn().simple(statement).await
    }

    pub(super) fn is_closed(&self) -> bool {
        self.conn().is_closed()
    }

    pub(super) fn ended(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.conn().ended()
    }

    pub(super) async fn cancel(&self) {
        self.conn().cancel().await;
    }

    /// Returns a connection that holds nothing to the idle list (before its permit is freed,
    /// so the next taker finds it).
    pub(super) fn give_back(mut self) {
        if let Some(conn) = self.conn.take() {
            if conn.is_closed() {
                return;
            }
            let mut idle = self.pool.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            idle.push(conn);
        }
    }

    pub(super) fn cancel_and_discard(mut self) {
        if let Some(conn) = self.conn.take() {
            conn.cancel_and_discard();
        }
    }
}

impl Drop for PooledConn {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.discard();
        }
    }
}

/// Makes sure the fencing-token sequence exists (with CACHE 1: a cached sequence hands each
/// session its own block of values, and tokens would no longer rise in grant order).
pub(super) async fn ensure_token_sequence(conn: &Conn) -> Result<(), LockError> {
    let seq = sql::TOKEN_SEQUENCE;
    let exists = format!("SELECT to_regclass('{seq}') IS NOT NULL");
    let messages = conn.simple(&exists).await.map_err(|error| sql::map_error(&error))?;
    if sql::last_value(&messages) != Some("t") {
        let create = format!("CREATE SEQUENCE IF NOT EXISTS {seq} AS bigint CACHE 1");
        if let Err(error) = conn.simple(&create).await {
            // Another provider creating it at the same moment loses with a duplicate: fine.
            let duplicate = error.code().is_some_and(|code| {
                code == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION
                    || code == &tokio_postgres::error::SqlState::DUPLICATE_TABLE
            });
            if !duplicate {
                return Err(sql::map_error(&error));
            }
        }
    }
    let cache = format!("SELECT seqcache FROM pg_sequence WHERE seqrelid = '{seq}'::regclass");
    let messages = conn.simple(&cache).await.map_err(|error| sql::map_error(&error))?;
    match sql::last_value(&messages) {
        Some("1") => Ok(()),
        other => Err(LockError::InvalidArgument(format!(
            "sequence {seq} must have CACHE 1 for fencing tokens to rise in grant order, \
             it has {}",
            other.unwrap_or("none")
        ))),
    }
}

/// How long a connection attempt may take when the connection string does not say.
pub(super) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
