//! Handles of Lockserver holds, and the lost-lock signal every backend's handles share.

use std::fmt;
use std::sync::Arc;

use lockserver_proto::Hold;
use tokio::sync::watch;

use crate::client::Shared;
use crate::error::LockError;
use crate::fencing::FencingToken;
use crate::traits::LockHandle;

/// Why a hold was lost.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[non_exhaustive]
pub enum LostReason {
    /// Its TTL ran out on the server.
    Expired,
    /// Its session ended (lease ran out, or it could not be resumed after a disconnect).
    SessionEnded,
    /// An administrator force-released it.
    Admin,
    /// The server could not deliver the grant and gave it back.
    Undeliverable,
    /// The client's local lease deadline passed without a renewed lease: the server may release
    /// the hold at any moment after it, so the client stops trusting it first.
    LeaseDeadline,
    /// The backend's connection broke and the hold cannot be vouched for (PostgreSQL, Redis).
    ConnectionLost,
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LostReason::Expired => "expired",
            LostReason::SessionEnded => "session ended",
            LostReason::Admin => "force-released by an administrator",
            LostReason::Undeliverable => "grant undeliverable",
            LostReason::LeaseDeadline => "local lease deadline passed",
            LostReason::ConnectionLost => "connection lost",
        })
    }
}

impl From<lockserver_proto::stream::LostReason> for LostReason {
    fn from(reason: lockserver_proto::stream::LostReason) -> LostReason {
        use lockserver_proto::stream::LostReason as Wire;
        match reason {
            Wire::Expired => LostReason::Expired,
            Wire::Session => LostReason::SessionEnded,
            Wire::Admin => LostReason::Admin,
            Wire::Undeliverable => LostReason::Undeliverable,
        }
    }
}

/// The lost-lock signal of one hold: a watch channel that turns `Some(reason)` once, when the
/// hold is lost. Clone it freely (each clone sees the loss).
///
/// ```no_run
/// # async fn run(lock: lockserver_client::Lock) -> Result<(), lockserver_client::LockError> {
/// let handle = lock.acquire(None).await?;
/// let mut lost = handle.lost();
/// tokio::select! {
///     reason = lost.wait() => eprintln!("stopped: lock lost ({reason:?})"),
///     _ = do_the_work() => handle.release().await?,
/// }
/// # Ok(()) }
/// # async fn do_the_work() {}
/// ```
#[derive(Clone, Debug)]
pub struct LostSignal {
    rx: watch::Receiver<Option<LostReason>>,
}

/// The sending side, kept by the transport that watches the hold.
#[derive(Debug)]
pub(crate) struct LostSender {
    tx: watch::Sender<Option<LostReason>>,
}

impl LostSender {
    /// Marks the hold lost (the first reason wins).
    pub(crate) fn fire(&self, reason: LostReason) {
        self.tx.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(reason);
            true
        });
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.tx.borrow().is_some()
    }
}

impl LostSignal {
    pub(crate) fn pair() -> (LostSender, LostSignal) {
        let (tx, rx) = watch::channel(None);
        (LostSender { tx }, LostSignal { rx })
    }

    /// Whether the hold has been lost.
    pub fn is_lost(&self) -> bool {
        self.rx.borrow().is_some()
    }

    /// Why the hold was lost, if it was.
    pub fn reason(&self) -> Option<LostReason> {
        *self.rx.borrow()
    }

    /// Waits until the hold is lost and returns why; `None` once the hold ended without a loss
    /// (it was released), so a waiter never hangs on a finished hold.
    pub async fn wait(&mut self) -> Option<LostReason> {
        let result = self.rx.wait_for(Option::is_some).await.map(|reason| *reason);
        match result {
            Ok(reason) => reason,
            Err(_) => *self.rx.borrow(),
        }
    }

    /// The underlying watch receiver, for `select!` loops that prefer it.
    pub fn receiver(&self) -> watch::Receiver<Option<LostReason>> {
        self.rx.clone()
    }
}

/// A Lockserver hold: a lock, a read or write lock, or semaphore permits.
///
/// Keep it for as long as you use the resource. Dropping it releases the hold in the background;
/// [`release`](Handle::release) does the same and reports the outcome. Send
/// [`token`](Handle::token) with every write to the protected resource, and stop when
/// [`lost`](Handle::lost) fires.
pub struct Handle {
    hold: Hold,
    lost: LostSignal,
    shared: Arc<Shared>,
    released: bool,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("name", &self.hold.name)
            .field("hold_id", &self.hold.hold_id)
            .field("token", &self.hold.token)
            .field("lost", &self.lost.reason())
            .finish()
    }
}

impl Handle {
    pub(crate) fn new(hold: Hold, lost: LostSignal, shared: Arc<Shared>) -> Handle {
        Handle { hold, lost, shared, released: false }
    }

    /// The grant's fencing token.
    pub fn token(&self) -> FencingToken {
        FencingToken(self.hold.token)
    }

    /// The hold's id (what `release` and the admin routes use).
    pub fn hold_id(&self) -> &str {
        &self.hold.hold_id
    }

    pub fn name(&self) -> &str {
        &self.hold.name
    }

    /// The hold as the server granted it.
    pub fn hold(&self) -> &Hold {
        &self.hold
    }

    /// The lost-lock signal.
    pub fn lost(&self) -> LostSignal {
        self.lost.clone()
    }

    /// Whether the hold has been lost (the signal has fired).
    pub fn is_lost(&self) -> bool {
        self.lost.is_lost()
    }

    /// Releases the hold and waits for the server to confirm. Releasing a hold that was lost
    /// answers [`LockError::Lost`].
    pub async fn release(mut self) -> Result<(), LockError> {
        self.released = true;
        let result = self.shared.release(&self.hold).await;
        match (result, self.lost.reason()) {
            (Err(LockError::Server { code: lockserver_proto::ErrorCode::NotFound, .. }), lost) => {
                Err(LockError::Lost(lost.unwrap_or(LostReason::Expired)))
            }
            (result, _) => result,
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.released {
            self.shared.release_later(&self.hold);
        }
    }
}

impl LockHandle for Handle {
    fn token(&self) -> Option<FencingToken> {
        Some(Handle::token(self))
    }

    fn lost(&self) -> LostSignal {
        Handle::lost(self)
    }

    async fn release(self) -> Result<(), LockError> {
        Handle::release(self).await
    }
}
