//! The statements the backend sends, and how PostgreSQL's errors map onto [`LockError`].
//!
//! Every statement goes over the simple-query protocol: one round trip, no prepared statements
//! (so a pooler in transaction mode is fine), and several statements in one message run in
//! order inside one implicit transaction — which is what scopes `SET LOCAL lock_timeout` to
//! exactly one wait, and what orders the fencing token after the grant. Only integers (keys,
//! milliseconds, slot numbers) are ever put into the text.

use tokio_postgres::error::SqlState;
use tokio_postgres::SimpleQueryMessage;

use crate::error::LockError;
use lockserver_proto::ErrorCode;

/// The sequence every grant draws its fencing token from (in the first schema of the
/// connection's `search_path`; created at provider build).
pub(super) const TOKEN_SEQUENCE: &str = "lockserver_fencing_tokens";

/// The channel a released semaphore ticket is announced on; the payload is the semaphore's
/// name key ([`super::keys::lock_key`]) in decimal.
pub(super) const WAKEUP_CHANNEL: &str = "lockserver_semaphore";

pub(super) const KEEPALIVE: &str = "SELECT 1";

/// How long a held advisory lock lives: until its session ends or it is unlocked, or until the
/// transaction the handle keeps open ends.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum LockScope {
    /// `pg_advisory_lock`: held by the pinned connection's session (the default).
    #[default]
    Session,
    /// `pg_advisory_xact_lock` inside a transaction the handle keeps open until release. Use it
    /// behind a pooler in transaction mode (PgBouncer), where a session is not yours between
    /// transactions.
    Transaction,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Mode {
    Exclusive,
    Shared,
}

fn lock_function(scope: LockScope, mode: Mode, try_once: bool) -> String {
    let attempt = if try_once { "try_" } else { "" };
    let scope = match scope {
        LockScope::Session => "",
        LockScope::Transaction => "xact_",
    };
    let mode = match mode {
        Mode::Exclusive => "",
        Mode::Shared => "_shared",
    };
    format!("pg_{attempt}advisory_{scope}lock{mode}")
}

/// A transaction-scoped attempt opens its transaction in the same message.
fn begin(scope: LockScope) -> &'static str {
    match scope {
        LockScope::Session => "",
        LockScope::Transaction => "BEGIN; ",
    }
}

/// One try: a token (drawn only when the lock was taken: CASE evaluates its branch only then)
/// or NULL.
pub(super) fn try_lock(scope: LockScope, mode: Mode, key: i64) -> String {
    format!(
        "{}SELECT CASE WHEN {}({key}) THEN nextval('{TOKEN_SEQUENCE}') END",
        begin(scope),
        lock_function(scope, mode, true)
    )
}

/// A wait in the server up to `lock_timeout_ms` (0: no limit; it overrides any default the
/// server or role sets, so `acquire(None)` really waits forever). `SET LOCAL` ends with the
/// statement's transaction, so nothing needs resetting afterwards; a timeout fails the lock
/// statement with 55P03 and the token statement never runs.
pub(super) fn wait_lock(scope: LockScope, mode: Mode, key: i64, lock_timeout_ms: u32) -> String {
    format!(
        "{}SET LOCAL lock_timeout = {lock_timeout_ms}; SELECT {}({key}); \
         SELECT nextval('{TOKEN_SEQUENCE}')",
        begin(scope),
        lock_function(scope, mode, false)
    )
}

/// Tries the semaphore's slots in the given order and takes the first free one: CASE evaluates
/// its conditions in order and stops at the first true one, so at most one slot is taken.
/// Answers `'<slot> <token>'` or NULL.
pub(super) fn try_slots(scope: LockScope, slots: &[(u32, i64)]) -> String {
    let function = lock_function(scope, Mode::Exclusive, true);
    let mut sql = format!("{}SELECT CASE", begin(scope));
    for (slot, key) in slots {
        sql.push_str(&format!(
            " WHEN {function}({key}) THEN '{slot} ' || nextval('{TOKEN_SEQUENCE}')"
        ));
    }
    sql.push_str(" END");
    sql
}

/// Gives a held lock back. A session lock answers whether it was held (`t`); a transaction
/// lock ends with its transaction. A semaphore ticket also wakes the waiters of its semaphore
/// (NOTIFY is delivered when its own transaction commits: after the unlock).
pub(super) fn unlock(scope: LockScope, mode: Mode, key: i64, wake: Option<i64>) -> String {
    let mut sql = match (scope, mode) {
        (LockScope::Session, Mode::Exclusive) => format!("SELECT pg_advisory_unlock({key})"),
        (LockScope::Session, Mode::Shared) => format!("SELECT pg_advisory_unlock_shared({key})"),
        (LockScope::Transaction, _) => "ROLLBACK".to_string(),
    };
    if let Some(wake) = wake {
        sql.push_str(&format!("; SELECT pg_notify('{WAKEUP_CHANNEL}', '{wake}')"));
    }
    sql
}

/// Leaves a connection holding nothing after a failed or abandoned attempt (a connection used
/// for an attempt holds no other lock, so "all" is exactly what the attempt may have taken).
pub(super) fn clean(scope: LockScope) -> &'static str {
    match scope {
        LockScope::Session => "SELECT pg_advisory_unlock_all()",
        LockScope::Transaction => "ROLLBACK",
    }
}

/// The first column of the last row the messages carry (`None`: no row, or NULL).
pub(super) fn last_value(messages: &[SimpleQueryMessage]) -> Option<&str> {
    messages.iter().rev().find_map(|message| match message {
        SimpleQueryMessage::Row(row) => Some(row.try_get(0).ok().flatten()),
        _ => None,
    })?
}

pub(super) fn is_lock_timeout(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
}

/// 57014: a cancel request ended the statement.
pub(super) fn is_cancelled(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&SqlState::QUERY_CANCELED)
}

/// Whether the server answered (the session is alive) rather than the connection failing.
pub(super) fn server_answered(error: &tokio_postgres::Error) -> bool {
    match error.as_db_error() {
        Some(db) => !matches!(db.severity(), "FATAL" | "PANIC"),
        None => false,
    }
}

/// Maps a driver error: authentication and privilege → `Auth`, a configuration the server
/// refuses (unknown database) → `InvalidArgument`, anything on the way → `Connection` (the
/// outcome is unknown; the caller drops that connection so nothing it held stays held).
pub(super) fn map_error(error: &tokio_postgres::Error) -> LockError {
    let Some(db) = error.as_db_error() else {
        let text = error_text(error);
        // The driver's own authentication failures (a password the server asked for and the
        // configuration lacks, an unsupported method) have no SQLSTATE.
        if error.to_string().starts_with("authentication error") {
            return LockError::Auth(text);
        }
        if error.to_string().starts_with("invalid configuration") {
            return LockError::InvalidArgument(text);
        }
        return LockError::Connection(text);
    };
    let code = db.code();
    let message = db.message().to_string();
    if code.code().starts_with("28") || code == &SqlState::INSUFFICIENT_PRIVILEGE {
        return LockError::Auth(message);
    }
    if code == &SqlState::INVALID_CATALOG_NAME {
        return LockError::InvalidArgument(message);
    }
    if code.code().starts_with("08") || matches!(db.severity(), "FATAL" | "PANIC") {
        return LockError::Connection(message);
    }
    if code.code().starts_with("53") || code.code().starts_with("57") {
        return LockError::Server { code: ErrorCode::Unavailable, message };
    }
    LockError::Server { code: ErrorCode::Internal, message }
}

/// The error with its causes ("error connecting to server: Connection refused ...").
pub(super) fn error_text(error: &tokio_postgres::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_name_the_right_functions() {
        assert_eq!(
            try_lock(LockScope::Session, Mode::Exclusive, -5),
            "SELECT CASE WHEN pg_try_advisory_lock(-5) THEN nextval('lockserver_fencing_tokens') END"
        );
        assert_eq!(
            wait_lock(LockScope::Transaction, Mode::Shared, 7, 300),
            "BEGIN; SET LOCAL lock_timeout = 300; SELECT pg_advisory_xact_lock_shared(7); \
             SELECT nextval('lockserver_fencing_tokens')"
        );
        assert!(try_lock(LockScope::Transaction, Mode::Shared, 1)
            .contains("pg_try_advisory_xact_lock_shared(1)"));
        assert_eq!(
            try_slots(LockScope::Session, &[(1, 11), (0, 10)]),
            "SELECT CASE WHEN pg_try_advisory_lock(11) THEN '1 ' || \
             nextval('lockserver_fencing_tokens') WHEN pg_try_advisory_lock(10) THEN '0 ' || \
             nextval('lockserver_fencing_tokens') END"
        );
        assert_eq!(
            unlock(LockScope::Session, Mode::Shared, 3, Some(9)),
            "SELECT pg_advisory_unlock_shared(3); SELECT pg_notify('lockserver_semaphore', '9')"
        );
        assert_eq!(unlock(LockScope::Transaction, Mode::Exclusive, 3, None), "ROLLBACK");
        assert_eq!(clean(LockScope::Session), "SELECT pg_advisory_unlock_all()");
    }
}
