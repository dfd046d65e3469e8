//! The log clock: starts at the highest committed `now_ms` and advances only by this process's
//! monotonic clock, so a restart or a wall-clock jump never moves log time backwards or forwards.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy)]
pub struct LogClock {
    base_ms: u64,
    started: Instant,
}

impl LogClock {
    pub fn start_at(base_ms: u64) -> LogClock {
        LogClock { base_ms, started: Instant::now() }
    }

    pub fn now_ms(&self) -> u64 {
        self.base_ms + self.started.elapsed().as_millis() as u64
    }
}

/// Wall-clock Unix ms, for display fields only.
pub fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64)
}
