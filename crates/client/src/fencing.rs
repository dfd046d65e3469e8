//! Fencing tokens, and the rule a protected resource applies to them.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// The number every grant carries: strictly increasing per name and overall, across releases,
/// expiry and restarts (and below 2^53, so JavaScript reads it exactly).
///
/// Send it with every write to the resource the lock protects; the resource keeps the highest
/// token it has seen and refuses lower ones (see [`Fence`]). A paused or partitioned holder whose
/// lock has passed on then cannot overwrite the new holder's work.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct FencingToken(pub u64);

impl FencingToken {
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The resource-side rule: remember the highest token seen, refuse any lower one.
///
/// Equal tokens are admitted (one holder makes many writes). Thread-safe; share it behind an
/// `Arc` or a `static`.
///
/// ```
/// use lockserver_client::{Fence, FencingToken};
///
/// let fence = Fence::new();
/// assert!(fence.admit(FencingToken(7)).is_ok());
/// assert!(fence.admit(FencingToken(7)).is_ok()); // the same holder again
/// assert!(fence.admit(FencingToken(9)).is_ok()); // a newer holder
/// let stale = fence.admit(FencingToken(7)).unwrap_err(); // the old holder woke up late
/// assert_eq!(stale.highest, FencingToken(9));
/// ```
#[derive(Debug, Default)]
pub struct Fence {
    highest: AtomicU64,
}

/// A token lower than one the fence has already admitted.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct StaleToken {
    pub token: FencingToken,
    pub highest: FencingToken,
}

impl fmt::Display for StaleToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fencing token {} is stale: {} was already seen", self.token, self.highest)
    }
}

impl std::error::Error for StaleToken {}

impl Fence {
    pub const fn new() -> Fence {
        Fence { highest: AtomicU64::new(0) }
    }

    /// Starts from a highest token already seen (persisted by the resource).
    pub const fn starting_at(highest: FencingToken) -> Fence {
        Fence { highest: AtomicU64::new(highest.0) }
    }

    /// Admits `token` if it is at least the highest seen, and remembers it.
    pub fn admit(&self, token: FencingToken) -> Result<(), StaleToken> {
        let before = self.highest.fetch_max(token.0, Ordering::AcqRel);
        if token.0 >= before {
            Ok(())
        } else {
            Err(StaleToken { token, highest: FencingToken(before) })
        }
    }

    /// The highest token admitted so far (0 before any).
    pub fn highest(&self) -> FencingToken {
        FencingToken(self.highest.load(Ordering::Acquire))
    }
}
