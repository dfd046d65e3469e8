//! The key layout and the Lua scripts. Every grant, extension and release is one script, so
//! each check and the write it guards run atomically on the server: no check-then-act races.
//!
//! Times inside the scripts are the server's own clock (`TIME`, milliseconds), the clock that
//! runs the keys' `PX` expiries too.

use std::sync::LazyLock;

use ::redis::Script;

/// The keys and the wake-up channel of one name. Every key ends in a suffix that no other kind
/// of key ends in, so two names never share a key, whatever bytes they contain.
#[derive(Clone, Debug)]
pub(crate) struct Keys {
    prefix: String,
    name: String,
}

impl Keys {
    pub fn new(prefix: &str, name: &str) -> Keys {
        Keys { prefix: prefix.to_string(), name: name.to_string() }
    }

    /// A string: the exclusive holder's value (also the reader-writer lock's writer), or
    /// `wait:<value>` while a writer waits for readers to leave.
    pub fn writer(&self) -> String {
        format!("{}{}:writer", self.prefix, self.name)
    }

    /// A sorted set: reader values scored by their expiry (server milliseconds).
    pub fn readers(&self) -> String {
        format!("{}{}:readers", self.prefix, self.name)
    }

    /// A sorted set: a single-instance semaphore's holder values scored by their expiry.
    pub fn tickets(&self) -> String {
        format!("{}{}:tickets", self.prefix, self.name)
    }

    /// A string: the holder of one of a Redlock semaphore's slots.
    pub fn slot(&self, slot: u32) -> String {
        format!("{}{}:slot:{slot}", self.prefix, self.name)
    }

    /// Where the release scripts of the lock (exclusive, read or write) publish.
    pub fn lock_channel(&self) -> String {
        format!("{}{}:lock-released", self.prefix, self.name)
    }

    /// Where the release scripts of the semaphore publish.
    pub fn semaphore_channel(&self) -> String {
        format!("{}{}:semaphore-released", self.prefix, self.name)
    }
}

/// The fencing token counter (single durable instance only), shared by every name.
pub(crate) fn token_counter(prefix: &str) -> String {
    format!("{prefix}fencing-token")
}

/// Helpers every script that reads the clock or keeps a sorted set alive starts with.
const PRELUDE: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- A sorted set of holders lives as long as its last holder.
local function keep_alive(key, now)
  local top = redis.call('ZREVRANGE', key, 0, 0, 'WITHSCORES')
  if top[2] then
    redis.call('PEXPIRE', key, math.max(1, math.ceil(tonumber(top[2]) - now)))
  end
end
-- {1, token} for a grant; the token is 0 unless the caller asked to draw one.
local function granted(counter, draw)
  if draw == '1' then
    return {1, redis.call('INCR', counter)}
  end
  return {1, 0}
end
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

/// The exclusive lock and the writer of a reader-writer lock.
/// KEYS: writer, readers, token counter. ARGV: value, ttl ms, waiting-marker ms (0: none),
/// draw a token ("1"/"0"). Returns {1, token} or {0}.
///
/// A writer that waits for readers leaves `wait:<value>` in the writer key (for the marker
/// ms, refreshed at each retry), which holds back new readers: readers cannot starve it.
pub(crate) static WRITE_ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local writer = redis.call('GET', KEYS[1])
if writer and writer ~= 'wait:' .. ARGV[1] then
  return {0}
end
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) > 0 then
  if tonumber(ARGV[3]) > 0 then
    redis.call('SET', KEYS[1], 'wait:' .. ARGV[1], 'PX', ARGV[3])
  end
  return {0}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return granted(KEYS[3], ARGV[4])
"#,
    )
});

/// A reader. KEYS: writer, readers, token counter. ARGV: value, ttl ms, draw a token.
/// Refused while a writer holds the lock or waits for it.
pub(crate) static READ_ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0}
end
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
keep_alive(KEYS[2], now)
return granted(KEYS[3], ARGV[3])
"#,
    )
});

/// A single-instance semaphore ticket: purge the expired, check the count, add, in one step.
/// KEYS: tickets, token counter. ARGV: value, ttl ms, limit, draw a token.
pub(crate) static TICKET_ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return {0}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
keep_alive(KEYS[1], now)
return granted(KEYS[2], ARGV[4])
"#,
    )
});

/// One slot of a Redlock semaphore. KEYS: slot. ARGV: value, ttl ms.
pub(crate) static SLOT_ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, 0}
end
return {0}
"#,
    )
});

/// Compare-and-pexpire of a string key. KEYS: key. ARGV: value, ttl ms. Returns 1 or 0.
pub(crate) static KEY_EXTEND: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#,
    )
});

/// Extends a sorted-set member that has not expired yet. KEYS: set. ARGV: value, ttl ms.
pub(crate) static MEMBER_EXTEND: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then
  return 0
end
local now = now_ms()
if tonumber(score) <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
keep_alive(KEYS[1], now)
return 1
"#,
    )
});

/// Compare-and-delete of a string key, then a wake-up for the waiters.
/// KEYS: key. ARGV: value, also the waiting marker ("1"/"0"), channel.
/// Returns 1 if the hold itself was deleted, 0 otherwise (a marker counts as 0).
pub(crate) static KEY_RELEASE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] or (ARGV[2] == '1' and current == 'wait:' .. ARGV[1]) then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[3], 'released')
  if current == ARGV[1] then
    return 1
  end
end
return 0
"#,
    )
});

/// Removes a sorted-set member, then a wake-up. KEYS: set. ARGV: value, channel.
/// Returns 1 if the member was there and not expired yet.
pub(crate) static MEMBER_RELEASE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], 'released')
if tonumber(score) <= now_ms() then
  return 0
end
return 1
"#,
    )
});
