//! The original Lockserver's HTTP API (crate `lockserver` 0.1.3; PyPI `lockserver-client`):
//! `POST /acquire` and `POST /release`, identity = `owner`, plain-text answers that its clients
//! judge by status code alone (COMPAT.md §1).
//!
//! Better than the original: expiry exact to the millisecond, a fencing token on every grant
//! (`X-Lockserver-Token`), an optional server-side wait (`wait_ms`) instead of 200 ms polling,
//! and a secret with no default, compared in constant time.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use lockserver_core::command::MAX_DURATION_MS;
use lockserver_core::{Acquire, Command, HoldId, Holder, LockName, Mode, Origin, Via, Wait, Want};
use serde::Deserialize;

use crate::delivery::{ConnState, DeliveryBody};
use crate::error::ApiError;
use crate::http::locks::grant;
use crate::http::{Conn, SharedState};

/// The body of both routes. Unknown fields are ignored, as the original does.
#[derive(Deserialize)]
struct Body {
    resource: String,
    owner: String,
    /// Seconds; absent or null: no expiry.
    #[serde(default)]
    expire: Option<u64>,
    /// Extension: wait on the server up to this long (absent: answer at once, as the original).
    #[serde(default)]
    wait_ms: Option<u64>,
}

const LOCKED: &str = "ERR Resource is already locked";
const NOT_FOUND: &str = "ERR Resource not found";

fn text(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message)
        .into_response()
}

/// Why a request is refused before it reaches the lock table.
enum Refusal {
    Unauthorized,
    Forbidden,
    TooLarge(usize),
    Bad(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Unauthorized => text(StatusCode::UNAUTHORIZED, "Missing or invalid secret"),
            Refusal::Forbidden => text(StatusCode::FORBIDDEN, "Forbidden resource"),
            Refusal::TooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("the body is unreadable or larger than {limit} bytes"),
            )
                .into_response(),
            Refusal::Bad(message) => bad_request(message),
        }
    }
}

/// Reads the body (bounded by `--max-body-bytes`), authenticates (`X-LOCKSERVER-SECRET`, or
/// `Authorization: Bearer`), then parses the body.
async fn admit(
    state: &SharedState,
    headers: &HeaderMap,
    request: Request,
) -> Result<(LockName, Body), Refusal> {
    let limit = state.config.limits.max_body_bytes;
    let bytes = axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|_| Refusal::TooLarge(limit))?;
    let principal = state.auth.client(headers).map_err(|_| Refusal::Unauthorized)?;
    let body: Body = serde_json::from_slice(&bytes)
        .map_err(|err| Refusal::Bad(format!("invalid request body: {err}")))?;
    let name = LockName::new(&body.resource)
        .map_err(|err| Refusal::Bad(format!("invalid resource: {}", ApiError::from(err))))?;
    if principal.check_name(name.as_str()).is_err() {
        return Err(Refusal::Forbidden);
    }
    Ok((name, body))
}

/// A server-side failure (not the client's): the status and a short text.
fn failure(error: ApiError) -> Response {
    let status = error.status();
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("ERR {error}"))
        .into_response()
}

pub(crate) async fn acquire(
    State(state): State<SharedState>,
    Conn(conn): Conn,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let (name, body) = match admit(&state, &headers, request).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    let ttl_ms = match body.expire {
        None => None,
        Some(0) => return bad_request("expire must be at least 1 second".into()),
        Some(seconds) if seconds <= MAX_DURATION_MS / 1000 => Some(seconds * 1000),
        Some(_) => {
            return bad_request(format!(
                "expire must be at most {} seconds",
                MAX_DURATION_MS / 1000
            ))
        }
    };
    let wait = match body.wait_ms {
        None | Some(0) => Wait::Try,
        Some(ms) if ms <= state.config.max_wait_ms => Wait::For(ms),
        Some(ms) => {
            return bad_request(format!(
                "wait_ms {ms} is above this server's maximum of {}",
                state.config.max_wait_ms
            ))
        }
    };
    let owner: Arc<str> = body.owner.into();
    let command = Acquire {
        hold_id: HoldId::from_u128(rand::random::<u128>()),
        name,
        want: Want::Lock(Mode::Exclusive),
        owner: owner.clone(),
        holder: Holder::CompatOwner(owner),
        wait,
        ttl_ms,
        lock_delay_ms: 0,
        request_id: None,
        origin: Origin { boot: state.node.boot(), via: Via::Request(0) },
    };
    match grant(&state, command).await {
        Ok((hold, guard)) => granted(hold.token.0, guard, conn),
        // Every refusal is the surface's one "busy" answer.
        Err(
            ApiError::Locked(_)
            | ApiError::Timeout(_)
            | ApiError::Cancelled(_)
            | ApiError::Conflict(_)
            | ApiError::LimitExceeded(_),
        ) => text(StatusCode::CONFLICT, LOCKED),
        Err(ApiError::InvalidArgument(message)) => bad_request(message),
        Err(other) => failure(other),
    }
}

/// 200 `OK` with the fencing token; the body carries the guard until it is written.
fn granted(
    token: u64,
    guard: crate::delivery::HoldGuard,
    conn: Option<Arc<ConnState>>,
) -> Response {
    let body = DeliveryBody::new(Bytes::from_static(b"OK"), guard, conn);
    let mut response = Response::new(axum::body::Body::new(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert("x-lockserver-token", HeaderValue::from(token));
    response
}

pub(crate) async fn release(
    State(state): State<SharedState>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let (name, body) = match admit(&state, &headers, request).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    let command = Command::ReleaseOwned { name, owner: body.owner.into() };
    match state.node.propose(command).await {
        Ok(Ok(_)) => text(StatusCode::OK, "OK"),
        Ok(Err(lockserver_core::CoreError::NotFound(_))) => text(StatusCode::CONFLICT, NOT_FOUND),
        Ok(Err(lockserver_core::CoreError::Locked(_))) => text(StatusCode::CONFLICT, LOCKED),
        Ok(Err(other)) => failure(other.into()),
        Err(err) => failure(err.into()),
    }
}
