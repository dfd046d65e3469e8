//! `/v1/admin/...`: list names and sessions, force-release a name or one hold. Every call needs
//! the admin credential and every force-release is logged with who did it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use lockserver_core::Command;
use lockserver_proto as proto;
use serde::Deserialize;

use super::{wire_hold, wire_kind, wire_mode, AdminAuth, PathArgs, QueryArgs, SharedState};
use crate::error::ApiError;

/// Page size of the name listing when `limit` is absent, and its maximum.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    after: Option<String>,
}

pub(crate) async fn list_locks(
    State(state): State<SharedState>,
    AdminAuth(principal): AdminAuth,
    QueryArgs(query): QueryArgs<ListQuery>,
) -> Result<Json<proto::AdminLocks>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::invalid(format!("limit must be between 1 and {MAX_PAGE}")));
    }
    let prefix = query.prefix.unwrap_or_else(|| principal.prefix.clone());
    principal.check_name(&prefix)?;
    let after = query.after;
    let (names, next) = state
        .node
        .read(move |table, now| table.list(&prefix, after.as_deref(), limit, now))
        .await?;
    let locks = names
        .iter()
        .filter_map(|view| {
            // Every listed name is in use, so it has a kind; `None` only describes a name
            // nobody uses, which the listing never returns.
            let kind = view.kind?;
            Some(proto::AdminName {
                name: view.name.as_str().to_string(),
                kind: wire_kind(kind),
                limit: view.limit,
                holders: view.holders.iter().map(wire_hold).collect(),
                waiters: view
                    .waiters
                    .iter()
                    .map(|waiter| proto::AdminWaiter {
                        owner: waiter.owner.to_string(),
                        mode: waiter.mode.map(wire_mode),
                        permits: waiter.permits,
                        waiting_ms: waiter.waiting_ms,
                    })
                    .collect(),
                last_token: view.last_token.map(|token| token.0),
            })
        })
        .collect();
    Ok(Json(proto::AdminLocks { locks, next }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReleaseQuery {
    #[serde(default)]
    lock_delay: bool,
}

pub(crate) async fn release_name(
    State(state): State<SharedState>,
    AdminAuth(principal): AdminAuth,
    path: PathArgs,
    QueryArgs(query): QueryArgs<ReleaseQuery>,
) -> Result<StatusCode, ApiError> {
    let name = path.name()?;
    principal.check_name(name.as_str())?;
    let command = Command::AdminReleaseName { name: name.clone(), lock_delay: query.lock_delay };
    state.node.propose(command).await??;
    tracing::info!(principal = principal.label, name = %name, lock_delay = query.lock_delay,
        "admin force-released a name");
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn release_hold(
    State(state): State<SharedState>,
    AdminAuth(principal): AdminAuth,
    path: PathArgs,
    QueryArgs(query): QueryArgs<ReleaseQuery>,
) -> Result<StatusCode, ApiError> {
    let hold_id = path.hold_id()?;
    let hold = state.node.read(move |table, now| table.hold(hold_id, now)).await?;
    let Some(hold) = hold else {
        return Err(ApiError::not_found("no live hold with that id"));
    };
    principal.check_name(hold.name.as_str())?;
    let command = Command::AdminReleaseHold { hold_id, lock_delay: query.lock_delay };
    state.node.propose(command).await??;
    tracing::info!(principal = principal.label, %hold_id, name = %hold.name,
        lock_delay = query.lock_delay, "admin force-released a hold");
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn list_sessions(
    State(state): State<SharedState>,
    AdminAuth(_principal): AdminAuth,
) -> Result<Json<proto::AdminSessions>, ApiError> {
    let views = state.node.read(|table, now| table.sessions(now)).await?;
    let sessions = views
        .iter()
        .map(|view| proto::AdminSession {
            session_id: view.session_id.to_string(),
            owner: view.owner.to_string(),
            ttl_ms: view.ttl_ms,
            expires_in_ms: view.expires_in_ms,
            holds: view.holds.iter().map(wire_hold).collect(),
            waiters: view.waiters as u64,
        })
        .collect();
    Ok(Json(proto::AdminSessions { sessions }))
}
