//! Taking a lock or a ticket, and keeping it: the attempt, the wait, and the task that watches
//! a held lock's connection until it is released.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, oneshot};

use super::keys::{lock_key, semaphore_slot_key};
use super::pool::PooledConn;
use super::sql::{self, LockScope, Mode};
use super::{PostgresHandle, ReleaseReply, Shared, Wait};
use crate::error::{validate_name, LockError};
use crate::fencing::FencingToken;
use crate::handle::{LostReason, LostSender, LostSignal};

/// What a handle holds, for its unlock.
#[derive(Clone, Copy, Debug)]
struct Held {
    scope: LockScope,
    mode: Mode,
    key: i64,
    /// A semaphore ticket announces its release to the semaphore's waiters (its name key).
    wake: Option<i64>,
    /// A cancel request was sent on this connection while it waited; if it arrived only after
    /// the grant, it may still cancel one later statement (once).
    stray_cancel: bool,
}

/// The connection of an attempt in progress. Dropped before it finishes (the caller dropped
/// the `acquire` future, or an error left the connection in an unknown state), it cancels
/// whatever runs on it and discards it, so a wait abandoned mid-way neither stays queued in the
/// server nor leaks a late grant into the pool.
struct Attempt {
    conn: Option<PooledConn>,
    scope: LockScope,
}

impl Attempt {
    fn conn(&self) -> &PooledConn {
        self.conn.as_ref().expect("an attempt has its connection until it finishes")
    }

    fn finish(mut self) -> PooledConn {
        self.conn.take().expect("an attempt finishes once")
    }

    /// Leaves the connection holding nothing after a failed wait (ROLLBACK, or unlock-all for
    /// a wait that a cancel may have ended just after its grant). A second try absorbs a stray
    /// cancel; failing again, the connection is discarded.
    async fn clean(&mut self) -> Result<(), LockError> {
        let statement = sql::clean(self.scope);
        for _ in 0..2 {
            match self.conn().simple(statement).await {
                Ok(_) => return Ok(()),
                Err(error) if sql::is_cancelled(&error) => continue,
                Err(error) => return Err(sql::map_error(&error)),
            }
        }
        Err(LockError::Connection("the connection could not be cleaned after a wait".into()))
    }

    /// A transaction-scoped try that took nothing still has its transaction open.
    async fn after_miss(&mut self) -> Result<(), LockError> {
        match self.scope {
            LockScope::Session => Ok(()),
            LockScope::Transaction => self.clean().await,
        }
    }

    fn give_back(mut self) {
        if let Some(conn) = self.conn.take() {
            conn.give_back();
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.cancel_and_discard();
        }
    }
}

/// A lock (exclusive) or a read or write lock of a reader-writer lock.
pub(super) async fn acquire_lock(
    shared: &Arc<Shared>,
    name: &str,
    mode: Mode,
    timeout: Option<Duration>,
) -> Result<PostgresHandle, LockError> {
    validate_name(name)?;
    let key = lock_key(name);
    let scope = shared.scope;
    let wait = Wait::new(timeout);
    let mut attempt = Attempt { conn: Some(shared.pool.get(&wait).await?), scope };
    loop {
        let statement = match wait.lock_timeout_ms(None) {
            None => sql::try_lock(scope, mode, key),
            Some(lock_timeout_ms) => sql::wait_lock(scope, mode, key, lock_timeout_ms),
        };
        match attempt.conn().simple(&statement).await {
            Ok(messages) => match parse_token(sql::last_value(&messages))? {
                Some(token) => {
                    let held = Held { scope, mode, key, wake: None, stray_cancel: false };
                    return Ok(hold(shared, attempt.finish(), held, name, token));
                }
                None => {
                    attempt.after_miss().await?;
                    attempt.give_back();
                    return Err(wait.not_acquired());
                }
            },
            // The server's lock_timeout: wait again for whatever time is left (none left: the
            // next round is a last try).
            Err(error) if sql::is_lock_timeout(&error) => attempt.clean().await?,
            // Any other failure leaves the connection in an unknown state: returning drops the
            // attempt, which discards it.
            Err(error) => return Err(sql::map_error(&error)),
        }
    }
}

/// One ticket of a semaphore of `max_count` slots.
///
/// A ticket is an exclusive advisory lock on one of `max_count` slot keys. A try takes the
/// first free slot in one statement. A wait blocks in the server on one slot (a different one
/// each round, round-robin from a random start), so a release of that slot — even by a session
/// that died — hands it over at once; a release of any other slot is announced with NOTIFY, and
/// the waiter then cancels its blocked statement and tries every slot again. The blocked wait
/// also ends every `semaphore_recheck` to try every slot: the only polling left, for a slot
/// freed without a NOTIFY (its holder's connection died) while the waiter sat on another one.
pub(super) async fn acquire_ticket(
    shared: &Arc<Shared>,
    name: &str,
    max_count: u32,
    timeout: Option<Duration>,
) -> Result<PostgresHandle, LockError> {
    validate_name(name)?;
    if max_count == 0 || max_count > super::MAX_SEMAPHORE_COUNT {
        return Err(LockError::InvalidArgument(format!(
            "a semaphore has 1 to {} tickets, not {max_count}",
            super::MAX_SEMAPHORE_COUNT
        )));
    }
    let scope = shared.scope;
    let wake = lock_key(name);
    let slots: Vec<i64> = (0..max_count).map(|slot| semaphore_slot_key(name, slot)).collect();
    let wait = Wait::new(timeout);
    // Subscribed before the first try, so a release between the try and the wait still wakes.
    let mut wakeups = match wait {
        Wait::Try => None,
        _ => shared.listen().await,
    };
    let mut attempt = Attempt { conn: Some(shared.pool.get(&wait).await?), scope };
    let start = rand::random::<u32>() % max_count;
    let mut round: u32 = 0;
    loop {
        let first = start.wrapping_add(round) % max_count;
        round = round.wrapping_add(1);
        let order: Vec<(u32, i64)> = (0..max_count)
            .map(|offset| (first + offset) % max_count)
            .map(|slot| (slot, slots[slot as usize]))
            .collect();
        match attempt.conn().simple(&sql::try_slots(scope, &order)).await {
            Ok(messages) => match parse_ticket(sql::last_value(&messages))? {
                Some((slot, token)) => {
                    let key = slots[slot as usize];
                    let held = Held {
                        scope,
                        mode: Mode::Exclusive,
                        key,
                        wake: Some(wake),
                        stray_cancel: false,
                    };
                    return Ok(hold(shared, attempt.finish(), held, name, token));
                }
                None => attempt.after_miss().await?,
            },
            // A cancel meant for the previous round's wait arrived late.
            Err(error) if sql::is_cancelled(&error) => attempt.clean().await?,
            // Any other failure leaves the connection in an unknown state: returning drops the
            // attempt, which discards it.
            Err(error) => return Err(sql::map_error(&error)),
        }
        let Some(lock_timeout_ms) = wait.lock_timeout_ms(Some(shared.semaphore_recheck)) else {
            attempt.give_back();
            return Err(wait.not_acquired());
        };
        let key = slots[first as usize];
        let statement = sql::wait_lock(scope, Mode::Exclusive, key, lock_timeout_ms);
        let (outcome, cancelled) = {
            let blocked = attempt.conn().simple(&statement);
            tokio::pin!(blocked);
            match &mut wakeups {
                None => (blocked.await, false),
                Some(wakeups) => tokio::select! {
                    outcome = &mut blocked => (outcome, false),
                    () = next_wakeup(wakeups, wake) => {
                        attempt.conn().cancel().await;
                        (blocked.await, true)
                    }
                },
            }
        };
        match outcome {
            Ok(messages) => match parse_token(sql::last_value(&messages))? {
                Some(token) => {
                    let held = Held {
                        scope,
                        mode: Mode::Exclusive,
                        key,
                        wake: Some(wake),
                        stray_cancel: cancelled,
                    };
                    return Ok(hold(shared, attempt.finish(), held, name, token));
                }
                None => return Err(LockError::Connection("the server answered no token".into())),
            },
            Err(error) if sql::is_lock_timeout(&error) || sql::is_cancelled(&error) => {
                attempt.clean().await?
            }
            // Any other failure leaves the connection in an unknown state: returning drops the
            // attempt, which discards it.
            Err(error) => return Err(sql::map_error(&error)),
        }
    }
}

/// Until a NOTIFY for semaphore `wake` arrives (a lagging receiver may have missed one: wake
/// too). Never resolves once the listener is gone; the recheck then takes over.
async fn next_wakeup(wakeups: &mut broadcast::Receiver<i64>, wake: i64) {
    loop {
        match wakeups.recv().await {
            Ok(key) if key == wake => return,
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

fn parse_token(value: Option<&str>) -> Result<Option<FencingToken>, LockError> {
    let Some(value) = value else { return Ok(None) };
    value
        .parse::<u64>()
        .map(|token| Some(FencingToken(token)))
        .map_err(|_| LockError::Connection(format!("unexpected token from the server: {value}")))
}

fn parse_ticket(value: Option<&str>) -> Result<Option<(u32, FencingToken)>, LockError> {
    let Some(value) = value else { return Ok(None) };
    let unexpected =
        || LockError::Connection(format!("unexpected ticket from the server: {value}"));
    let (slot, token) = value.split_once(' ').ok_or_else(unexpected)?;
    let slot = slot.parse::<u32>().map_err(|_| unexpected())?;
    let token = token.parse::<u64>().map_err(|_| unexpected())?;
    Ok(Some((slot, FencingToken(token))))
}

/// Makes the handle of a grant and spawns the task that keeps it.
fn hold(
    shared: &Arc<Shared>,
    conn: PooledConn,
    held: Held,
    name: &str,
    token: FencingToken,
) -> PostgresHandle {
    let (lost_tx, lost) = LostSignal::pair();
    let (release_tx, release_rx) = oneshot::channel();
    tokio::spawn(keep(conn, held, lost_tx, release_rx, shared.keepalive_interval));
    PostgresHandle::new(name.to_string(), held.key, token, lost, release_tx)
}

/// The task that owns a held lock's connection, from the grant until the release.
///
/// It stops on a release request (answering it), on the handle's drop (the request channel
/// closes: it releases in the background), or when the connection is lost — it ended, or a
/// keepalive `SELECT 1` (every `interval`) went unanswered for 3 intervals. On a loss it fires
/// the lost signal and discards the connection (so the lock really is released, not merely
/// reported lost), then answers a later release with `Lost`.
async fn keep(
    conn: PooledConn,
    held: Held,
    lost: LostSender,
    mut requests: oneshot::Receiver<ReleaseReply>,
    interval: Duration,
) {
    let ended = conn.ended();
    tokio::pin!(ended);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let answer_within = interval * 3;
    let why = loop {
        tokio::select! {
            request = &mut requests => {
                let result = unlock(conn, held).await;
                if let Ok(reply) = request {
                    let _ = reply.send(result);
                }
                return;
            }
            () = &mut ended => break "the connection ended",
            _ = ticks.tick() => {
                match tokio::time::timeout(answer_within, conn.simple(sql::KEEPALIVE)).await {
                    Ok(Ok(_)) => {}
                    // The server answered with an error (an aborted transaction, a stray
                    // cancel): the session, and its locks, are alive.
                    Ok(Err(error)) if sql::server_answered(&error) && !conn.is_closed() => {}
                    Ok(Err(_)) => break "the keepalive failed",
                    Err(_) => break "the keepalive went unanswered",
                }
            }
        }
    };
    tracing::warn!(key = held.key, why, "postgres lock lost");
    lost.fire(LostReason::ConnectionLost);
    drop(conn);
    if let Ok(reply) = requests.await {
        let _ = reply.send(Err(LockError::Lost(LostReason::ConnectionLost)));
    }
}

/// Unlocks and returns the connection to the pool, or, when the unlock cannot be confirmed,
/// discards it (closing the session frees its advisory locks).
async fn unlock(conn: PooledConn, held: Held) -> Result<(), LockError> {
    let statement = sql::unlock(held.scope, held.mode, held.key, held.wake);
    let mut outcome = conn.simple(&statement).await;
    if held.stray_cancel && matches!(&outcome, Err(error) if sql::is_cancelled(error)) {
        outcome = conn.simple(&statement).await;
    }
    match outcome {
        Ok(messages) => {
            let confirmed = match held.scope {
                LockScope::Session => first_value(&messages) == Some("t"),
                LockScope::Transaction => true,
            };
            if confirmed {
                conn.give_back();
                Ok(())
            } else {
                drop(conn);
                Err(LockError::Lost(LostReason::ConnectionLost))
            }
        }
        Err(error) => {
            drop(conn);
            Err(LockError::Connection(format!(
                "unlock not confirmed ({}); the connection was closed instead",
                sql::error_text(&error)
            )))
        }
    }
}

/// The first column of the first row (the unlock's answer, before the NOTIFY's row).
fn first_value(messages: &[tokio_postgres::SimpleQueryMessage]) -> Option<&str> {
    messages.iter().find_map(|message| match message {
        tokio_postgres::SimpleQueryMessage::Row(row) => Some(row.try_get(0).ok().flatten()),
        _ => None,
    })?
}
