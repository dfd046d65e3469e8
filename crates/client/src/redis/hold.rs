//! [`RedisHandle`] and the task that keeps its lease: extends it every TTL/3 on every server
//! (a quorum must confirm), fires the lost signal when it cannot, and releases the hold when
//! the handle asks or is dropped.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::servers::Tally;
use super::{Granted, Held, Inner};
use crate::error::LockError;
use crate::fencing::FencingToken;
use crate::handle::{LostReason, LostSender, LostSignal};
use crate::traits::LockHandle;

/// What `release` sends to the hold's task: where to report the outcome.
type ReleaseRequest = oneshot::Sender<Result<(), LockError>>;

/// A held Redis lock, read lock, write lock or semaphore ticket.
///
/// Dropping it releases the hold promptly in the background (`Drop` only closes a channel);
/// [`release`](RedisHandle::release) releases it and reports the outcome. Stop working when
/// [`lost`](RedisHandle::lost) fires: the lease could not be extended and the servers may let
/// it go at any moment.
pub struct RedisHandle {
    name: String,
    token: Option<FencingToken>,
    lost: LostSignal,
    /// To the hold's task, which owns the lease. Sending a reply channel asks it to release
    /// and report; dropping this sender (the handle dropped) makes it release on its own.
    release: Option<oneshot::Sender<ReleaseRequest>>,
}

impl fmt::Debug for RedisHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisHandle")
            .field("name", &self.name)
            .field("token", &self.token)
            .field("lost", &self.lost.reason())
            .finish()
    }
}

impl RedisHandle {
    /// Starts the task that keeps the lease of a fresh grant.
    pub(crate) fn start(inner: Arc<Inner>, name: &str, granted: Granted) -> RedisHandle {
        let (lost_tx, lost) = LostSignal::pair();
        let (release_tx, release_rx) = oneshot::channel();
        let token = granted.token;
        // The task runs until the handle releases or is dropped (or the runtime shuts down,
        // and the hold then ends by its TTL). It owns the lease: nobody else extends it.
        tokio::spawn(keep_lease(inner, granted, lost_tx, lost.clone(), release_rx));
        RedisHandle { name: name.to_string(), token, lost, release: Some(release_tx) }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fencing token: `Some` only from a single instance that writes every command to
    /// disk before answering (`appendfsync always`); see the [module docs](super).
    pub fn token(&self) -> Option<FencingToken> {
        self.token
    }

    /// The lost-lock signal.
    pub fn lost(&self) -> LostSignal {
        self.lost.clone()
    }

    pub fn is_lost(&self) -> bool {
        self.lost.is_lost()
    }

    /// Releases the hold on every server and waits for the answers. Only this hold's own
    /// value is deleted, so a hold that expired and went to someone else stays theirs.
    ///
    /// `Err(Lost(..))` when the hold had been lost (expired, or given up at the local
    /// deadline); `Err(Connection(..))` when too few servers answered to confirm (the hold then
    /// ends by its TTL).
    pub async fn release(mut self) -> Result<(), LockError> {
        let Some(task) = self.release.take() else { return Ok(()) };
        let (reply_tx, reply_rx) = oneshot::channel();
        if task.send(reply_tx).is_err() {
            return Err(LockError::Connection("the hold's task has stopped".into()));
        }
        reply_rx.await.unwrap_or_else(|_| {
            Err(LockError::Connection("the hold's task stopped before the release".into()))
        })
    }
}

impl LockHandle for RedisHandle {
    fn token(&self) -> Option<FencingToken> {
        RedisHandle::token(self)
    }

    fn lost(&self) -> LostSignal {
        RedisHandle::lost(self)
    }

    async fn release(self) -> Result<(), LockError> {
        RedisHandle::release(self).await
    }
}

/// The outcome of one turn of the lease.
enum Turn {
    /// A quorum extended the hold; the round started at this instant.
    Extended(Instant),
    /// Too many servers said the value is gone: the hold has expired (or was taken over).
    Refused,
    /// No quorum either way (failures, timeouts): try again soon; the deadline decides.
    Unsure { connection_trouble: bool },
    /// The local deadline passed without a successful extension.
    DeadlinePassed,
}

async fn keep_lease(
    inner: Arc<Inner>,
    granted: Granted,
    lost: LostSender,
    lost_signal: LostSignal,
    mut release: oneshot::Receiver<ReleaseRequest>,
) {
    let Granted { held, started, mut deadline, .. } = granted;
    let mut next = if inner.auto_extend { started + inner.ttl / 3 } else { deadline };
    let mut connection_trouble = false;
    loop {
        let lease_running = !lost.is_lost();
        tokio::select! {
            request = &mut release => {
                let tally = inner.release_everywhere(&held, false).await;
                let outcome = release_outcome(&inner, &tally, lost_signal.reason());
                if let Ok(reply) = request {
                    let _ = reply.send(outcome);
                }
                return;
            }
            turn = take_turn(&inner, &held, next.min(deadline), deadline), if lease_running => {
                match turn {
                    Turn::Extended(round) => {
                        deadline = round + inner.validity();
                        next = round + inner.ttl / 3;
                        connection_trouble = false;
                    }
                    Turn::Refused => {
                        lost.fire(LostReason::Expired);
                        // Free it promptly where it still lingers.
                        inner.release_everywhere(&held, false).await;
                    }
                    Turn::Unsure { connection_trouble: trouble } => {
                        connection_trouble |= trouble;
                        next = Instant::now() + retry_gap(inner.ttl);
                    }
                    Turn::DeadlinePassed => lost.fire(if connection_trouble {
                        LostReason::ConnectionLost
                    } else {
                        LostReason::Expired
                    }),
                }
            }
        }
    }
}

/// Sleeps until `at`, then extends the hold (unless the deadline has passed, or the lease is
/// not to be extended).
async fn take_turn(inner: &Inner, held: &Held, at: Instant, deadline: Instant) -> Turn {
    tokio::time::sleep_until(at).await;
    let round = Instant::now();
    if round >= deadline || !inner.auto_extend {
        return Turn::DeadlinePassed;
    }
    let budget = inner.command_timeout.min(deadline - round);
    let tally = inner.extend_everywhere(held, budget).await;
    if inner.servers.has_quorum(&tally) && Instant::now() < round + inner.validity() {
        return Turn::Extended(round);
    }
    if inner.servers.too_many_refused(&tally) {
        return Turn::Refused;
    }
    Turn::Unsure { connection_trouble: tally.failed > 0 }
}

/// How soon a failed extension is tried again: often enough for several tries before the
/// deadline, rarely enough not to hammer a struggling server.
fn retry_gap(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

fn release_outcome(
    inner: &Inner,
    tally: &Tally,
    lost: Option<LostReason>,
) -> Result<(), LockError> {
    if let Some(reason) = lost {
        return Err(LockError::Lost(reason));
    }
    if inner.servers.has_quorum(tally) {
        return Ok(());
    }
    if inner.servers.too_many_refused(tally) {
        return Err(LockError::Lost(LostReason::Expired));
    }
    Err(inner.servers.unreachable(tally))
}
