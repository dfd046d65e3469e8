//! `/v1/sessions`: open, keepalive, inspect and close a session over plain HTTP.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use lockserver_core::{Command, Response as CoreResponse, SessionId};
use lockserver_proto as proto;

use super::{wire_hold, ClientAuth, JsonBody, PathArgs, SharedState};
use crate::error::ApiError;

fn no_such_session() -> ApiError {
    ApiError::not_found("no live session with that id")
}

pub(crate) async fn create(
    State(state): State<SharedState>,
    ClientAuth(_principal): ClientAuth,
    JsonBody(body): JsonBody<proto::CreateSession>,
) -> Result<Response, ApiError> {
    let (min, max) = (state.config.min_session_ttl_ms, state.config.max_session_ttl_ms);
    if body.ttl_ms < min || body.ttl_ms > max {
        return Err(ApiError::invalid(format!("session ttl_ms must be between {min} and {max}")));
    }
    let session_id = SessionId::from_u128(rand::random::<u128>());
    let command = Command::OpenSession {
        session_id,
        ttl_ms: body.ttl_ms,
        owner: lockserver_core::owner_label(body.owner.as_deref().unwrap_or_default()),
    };
    let CoreResponse::Session { session_id, ttl_ms } = state.node.propose(command).await?? else {
        tracing::error!("open session answered with an unexpected response");
        return Err(ApiError::Internal);
    };
    let created = proto::SessionCreated { session_id: session_id.to_string(), ttl_ms };
    let mut response = (StatusCode::CREATED, Json(created)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/sessions/{session_id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

pub(crate) async fn keepalive(
    State(state): State<SharedState>,
    ClientAuth(_principal): ClientAuth,
    path: PathArgs,
) -> Result<Json<proto::SessionCreated>, ApiError> {
    let session_id = path.session_id()?;
    // Keepalives are coalesced: every keepalive arriving in one tick shares one command.
    match state.node.keep_alive(session_id).await? {
        Some(ttl_ms) => {
            Ok(Json(proto::SessionCreated { session_id: session_id.to_string(), ttl_ms }))
        }
        None => Err(no_such_session()),
    }
}

pub(crate) async fn show(
    State(state): State<SharedState>,
    ClientAuth(principal): ClientAuth,
    path: PathArgs,
) -> Result<Json<proto::SessionInfo>, ApiError> {
    let session_id = path.session_id()?;
    let view = state.node.read(move |table, now| table.session(session_id, now)).await?;
    let view = view.ok_or_else(no_such_session)?;
    let holds = view
        .holds
        .iter()
        .filter(|hold| principal.check_name(hold.name.as_str()).is_ok())
        .map(wire_hold)
        .collect();
    Ok(Json(proto::SessionInfo {
        session_id: view.session_id.to_string(),
        owner: view.owner.to_string(),
        ttl_ms: view.ttl_ms,
        expires_in_ms: view.expires_in_ms,
        holds,
        waiters: view.waiters as u64,
    }))
}

pub(crate) async fn close(
    State(state): State<SharedState>,
    ClientAuth(_principal): ClientAuth,
    path: PathArgs,
) -> Result<StatusCode, ApiError> {
    let session_id = path.session_id()?;
    state.node.propose(Command::CloseSession { session_id }).await??;
    Ok(StatusCode::NO_CONTENT)
}
