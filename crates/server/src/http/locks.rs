//! `/v1/locks/...` and `/v1/semaphores/...`: acquire (long poll), inspect, renew, release,
//! release by `request_id`, name state and `check`. The two kinds share every handler; the
//! route only fixes the kind.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use lockserver_core::{
    owner_label, Acquire, Command, Effect, HoldId, HoldView, Holder, LockName, Mode, Origin,
    RequestScope, Response as CoreResponse, SessionId, TtlChange, Via, Wait, WaitEnd, Want,
};
use lockserver_proto as proto;
use serde::Deserialize;

use super::{
    encode_segment, shutdown_started, wire_hold, wire_kind, ClientAuth, Conn, JsonBody, PathArgs,
    QueryArgs, SharedState,
};
use crate::auth::Principal;
use crate::delivery::{DeliveryBody, HoldGuard};
use crate::error::ApiError;

/// How long past its own deadline a waiting request trusts the node to answer it. Only a
/// bug could make the node miss a wait end; the request then fails instead of hanging.
const WAIT_SAFETY_MARGIN: Duration = Duration::from_secs(5);
/// How long a grant's answer waits for the `lost` events of the name's previous holders to be
/// written. The order is promised on healthy connections; a stuck one cannot hold others longer.
pub(crate) const LOST_FIRST_BOUND: Duration = Duration::from_secs(1);

/// The acquire fields both kinds share.
struct AcquireArgs {
    want: Want,
    owner: Option<String>,
    wait_ms: Option<Option<u64>>,
    ttl_ms: Option<Option<u64>>,
    session: Option<String>,
    lock_delay_ms: Option<u64>,
    request_id: Option<String>,
}

pub(crate) async fn acquire_lock(
    State(state): State<SharedState>,
    ClientAuth(principal): ClientAuth,
    path: PathArgs,
    Conn(conn): Conn,
    JsonBody(body): JsonBody<proto::AcquireLock>,
) -> Result<Response, ApiError> {
    let mode = match body.mode.unwrap_or_default() {
        proto::LockMode::Exclusive => Mode::Exclusive,
        proto::LockMode::Shared => Mode::Shared,
    };
    let args = AcquireArgs {
        want: Want::Lock(mode),
        owner: body.owner,
        wait_ms: body.wait_ms,
        ttl_ms: body.ttl_ms,
        session: body.session,
        lock_delay_ms: body.lock_delay_ms,
        request_id: body.request_id,
    };
    acquire(&state, &principal, path.name()?, args, conn).await
}

pub(crate) async fn acquire_semaphore(
    State(state): State<SharedState>,
    ClientAuth(principal): ClientAuth,
    path: PathArgs,
    Conn(conn): Conn,
    JsonBody(body): JsonBody<proto::AcquireSemaphore>,
) -> Result<Response, ApiError> {
    let args = AcquireArgs {
        want: Want::Semaphore { limit: body.limit, permits: body.permits.unwrap_or(1) },
        owner: body.owner,
        wait_ms: body.wait_ms,
        ttl_ms: body.ttl_ms,
        session: body.session,
        lock_delay_ms: body.lock_delay_ms,
        request_id: body.request_id,
    };
    acquire(&state, &principal, path.name()?, args, conn).await
}

async fn acquire(
    state: &SharedState,
    principal: &Principal,
    name: LockName,
    args: AcquireArgs,
    conn: Option<std::sync::Arc<crate::delivery::ConnState>>,
) -> Result<Response, ApiError> {
    principal.check_name(name.as_str())?;
    let max_wait_ms = state.config.max_wait_ms;
    let wait = match args.wait_ms {
        None | Some(Some(0)) => Wait::Try,
        Some(Some(ms)) if ms <= max_wait_ms => Wait::For(ms),
        Some(Some(ms)) => {
            return Err(ApiError::invalid(format!(
                "wait_ms {ms} is above this server's maximum of {max_wait_ms}; re-issue with the \
                 same request_id to wait longer"
            )))
        }
        Some(None) => {
            return Err(ApiError::invalid(format!(
                "wait_ms must be a number of ms (at most {max_wait_ms}) over HTTP"
            )))
        }
    };
    let holder = match &args.session {
        Some(text) => Holder::Session(text.parse::<SessionId>()?),
        None => Holder::Anonymous,
    };
    let ttl_ms = match args.ttl_ms {
        Some(explicit) => explicit,
        None if args.session.is_some() => None,
        None => Some(state.config.default_ttl_ms),
    };
    let command = Acquire {
        hold_id: HoldId::from_u128(rand::random::<u128>()),
        name,
        want: args.want,
        owner: owner_label(args.owner.as_deref().unwrap_or_default()),
        holder,
        wait,
        ttl_ms,
        lock_delay_ms: args.lock_delay_ms.unwrap_or(0),
        request_id: args.request_id.map(Into::into),
        origin: Origin { boot: state.node.boot(), via: Via::Request(0) },
    };
    let (hold, guard) = grant(state, command).await?;
    Ok(created(&hold, guard, conn))
}

/// Proposes `acquire` (its `origin` is set here) and, if it queues, waits for its grant: the
/// long poll of every HTTP surface. Returns the hold with the guard that releases it unless
/// the answer is written; a client that goes away while waiting drops the guard and withdraws.
pub(crate) async fn grant(
    state: &SharedState,
    mut acquire: Acquire,
) -> Result<(HoldView, HoldGuard), ApiError> {
    let node = &state.node;
    let wait = acquire.wait;
    // Registered before proposing, so a grant that comes the instant after queueing finds it.
    let mut inbox = (wait != Wait::Try).then(|| node.request_inbox());
    let via = Via::Request(inbox.as_ref().map_or_else(|| node.next_local_id(), |inbox| inbox.id));
    acquire.origin = Origin { boot: node.boot(), via };
    // From here until the answer is on the socket, dropping this guard cleans up.
    let mut guard = HoldGuard::waiting(node.clone(), acquire.hold_id);
    let outcome = match node.propose(Command::Acquire(acquire)).await {
        Ok(outcome) => outcome,
        // Outcome unknown: the guard releases whatever may have been created.
        Err(err) => return Err(err.into()),
    };
    let queued_id = match outcome {
        Err(refused) => {
            guard.disarm();
            state.metrics.acquire_refused(&refused);
            return Err(refused.into());
        }
        Ok(CoreResponse::Granted { hold, .. }) => {
            guard.retarget(hold.hold_id);
            guard.granted();
            state.metrics.granted_at_once();
            return Ok((hold, guard));
        }
        Ok(CoreResponse::Queued { hold_id, .. }) => hold_id,
        Ok(other) => {
            tracing::error!(response = ?other, "acquire answered with an unexpected response");
            return Err(ApiError::Internal);
        }
    };
    guard.retarget(queued_id);
    let (Some(inbox), Wait::For(wait_ms)) = (inbox.as_mut(), wait) else {
        tracing::error!("a try-lock was queued");
        return Err(ApiError::Internal);
    };
    state.metrics.queued();
    let safety = Duration::from_millis(wait_ms) + WAIT_SAFETY_MARGIN;
    let effect = tokio::select! {
        effect = &mut inbox.receiver => effect,
        () = shutdown_started(state.shutdown.clone()) => {
            return Err(ApiError::Unavailable("the server is shutting down".into()));
        }
        () = tokio::time::sleep(safety) => {
            tracing::error!(hold_id = %queued_id, "no answer from the node after the wait ended");
            return Err(ApiError::Timeout(format!("waited {wait_ms} ms without a grant")));
        }
    };
    let delivery = match effect {
        Ok(delivery) => delivery,
        Err(_closed) => {
            return Err(ApiError::Unavailable("the node dropped the waiting request".into()))
        }
    };
    if let Some(after) = &delivery.after {
        // The name's previous holders hear they lost it first (bounded: see LOST_FIRST_BOUND).
        let _ = tokio::time::timeout(LOST_FIRST_BOUND, after.passed()).await;
    }
    match delivery.effect {
        Effect::Granted { hold, .. } => {
            guard.granted();
            state.metrics.granted_after_wait();
            Ok((hold, guard))
        }
        Effect::WaitEnded { reason, .. } => {
            guard.disarm();
            state.metrics.wait_ended(reason);
            Err(wait_end_error(reason, wait_ms))
        }
        other => {
            tracing::error!(effect = ?other, "unexpected effect for a waiting request");
            Err(ApiError::Internal)
        }
    }
}

pub(crate) fn wait_end_error(reason: WaitEnd, wait_ms: u64) -> ApiError {
    match reason {
        WaitEnd::Timeout => ApiError::Timeout(format!("waited {wait_ms} ms without a grant")),
        WaitEnd::Cancelled => ApiError::Cancelled("the waiting request was cancelled".into()),
        WaitEnd::Admin => ApiError::Cancelled("an admin force-released the name".into()),
        WaitEnd::SessionEnded => ApiError::Cancelled("the request's session ended".into()),
        WaitEnd::NodeGone => ApiError::Cancelled("the serving node restarted".into()),
        WaitEnd::Replaced => ApiError::Cancelled(
            "a retry with the same request_id took over this request's place".into(),
        ),
    }
}

/// 201 with `Location` and the hold; the body carries the guard until it is written.
fn created(
    hold: &HoldView,
    guard: HoldGuard,
    conn: Option<std::sync::Arc<crate::delivery::ConnState>>,
) -> Response {
    let route = match hold.kind {
        lockserver_core::Kind::Lock => "locks",
        lockserver_core::Kind::Semaphore => "semaphores",
    };
    let location = format!("/v1/{route}/{}/{}", encode_segment(hold.name.as_str()), hold.hold_id);
    let mut bytes = Vec::with_capacity(384);
    if serde_json::to_writer(&mut bytes, &wire_hold(hold)).is_err() {
        // Dropping the guard releases the hold nobody will hear about.
        return ApiError::Internal.into_response();
    }
    let mut response =
        Response::new(axum::body::Body::new(DeliveryBody::new(bytes.into(), guard, conn)));
    *response.status_mut() = StatusCode::CREATED;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(value) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, value);
    }
    response
}

// ----- one hold -----------------------------------------------------------------------------

/// The live hold `hold_id` of `name` with the route's kind, or 404.
async fn find_hold(
    state: &SharedState,
    principal: &Principal,
    path: &PathArgs,
    kind: lockserver_core::Kind,
) -> Result<HoldView, ApiError> {
    let name = path.name()?;
    principal.check_name(name.as_str())?;
    let hold_id = path.hold_id()?;
    let hold = state.node.read(move |table, now| table.hold(hold_id, now)).await?;
    match hold {
        Some(hold) if hold.name == name && hold.kind == kind => Ok(hold),
        _ => Err(no_such_hold(kind)),
    }
}

fn no_such_hold(kind: lockserver_core::Kind) -> ApiError {
    ApiError::not_found(format!("no live {} hold with that id on this name", kind.as_str()))
}

async fn get_hold(
    state: SharedState,
    principal: Principal,
    path: PathArgs,
    kind: lockserver_core::Kind,
) -> Result<Json<proto::Hold>, ApiError> {
    let hold = find_hold(&state, &principal, &path, kind).await?;
    Ok(Json(wire_hold(&hold)))
}

async fn renew(
    state: SharedState,
    principal: Principal,
    path: PathArgs,
    kind: lockserver_core::Kind,
    body: proto::Renew,
) -> Result<Json<proto::Hold>, ApiError> {
    let hold = find_hold(&state, &principal, &path, kind).await?;
    let ttl = match body.ttl_ms {
        None => TtlChange::Same,
        Some(None) => TtlChange::Unlimited,
        Some(Some(ms)) => TtlChange::Set(ms),
    };
    match state.node.propose(Command::Renew { hold_id: hold.hold_id, ttl }).await?? {
        CoreResponse::Renewed { hold } => Ok(Json(wire_hold(&hold))),
        other => {
            tracing::error!(response = ?other, "renew answered with an unexpected response");
            Err(ApiError::Internal)
        }
    }
}

/// Releases a hold, or withdraws a waiting request, of this name.
async fn release_hold(
    state: SharedState,
    principal: Principal,
    path: PathArgs,
    kind: lockserver_core::Kind,
) -> Result<StatusCode, ApiError> {
    let name = path.name()?;
    principal.check_name(name.as_str())?;
    let hold_id = path.hold_id()?;
    // One command: the core checks that the id is live on this name and kind, then releases.
    state.node.propose(Command::ReleaseOf { name, kind, hold_id }).await??;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ByRequest {
    request_id: Option<String>,
    #[serde(default)]
    owner: Option<String>,
    /// For an acquire made with a session: its `request_id` is scoped to the session.
    #[serde(default)]
    session: Option<String>,
}

async fn release_by_request(
    state: SharedState,
    principal: Principal,
    path: PathArgs,
    query: ByRequest,
) -> Result<StatusCode, ApiError> {
    let name = path.name()?;
    principal.check_name(name.as_str())?;
    let Some(request_id) = query.request_id.filter(|id| !id.is_empty()) else {
        return Err(ApiError::invalid(
            "DELETE on a name needs ?request_id= (and the acquire's owner or session)",
        ));
    };
    let scope = match query.session {
        Some(text) => RequestScope::Holder(Holder::Session(text.parse::<SessionId>()?)),
        None => RequestScope::Label(query.owner.unwrap_or_default().into()),
    };
    let command = Command::ReleaseByRequest { name, scope, request_id: request_id.into() };
    state.node.propose(command).await??;
    Ok(StatusCode::NO_CONTENT)
}

async fn name_state(
    state: SharedState,
    principal: Principal,
    path: PathArgs,
    kind: lockserver_core::Kind,
) -> Result<Json<proto::NameState>, ApiError> {
    let name = path.name()?;
    principal.check_name(name.as_str())?;
    let view = state.node.read(move |table, now| table.name_view(&name, now)).await?;
    Ok(Json(proto::NameState {
        name: view.name.as_str().to_string(),
        kind: wire_kind(view.kind.unwrap_or(kind)),
        limit: view.limit,
        holders: view.holders.iter().map(wire_hold).collect(),
        waiters: view.waiters.len() as u64,
        last_token: view.last_token.map(|token| token.0),
    }))
}

async fn check(
    state: SharedState,
    principal: Principal,
    path: PathArgs,
    body: proto::CheckRequest,
) -> Result<Json<proto::CheckResponse>, ApiError> {
    let name = path.name()?;
    principal.check_name(name.as_str())?;
    let token = body.token;
    let valid = state.node.read(move |table, now| table.check(name.as_str(), token, now)).await?;
    Ok(Json(proto::CheckResponse { valid }))
}

// ----- the routes: one pair of thin handlers per operation ----------------------------------

use lockserver_core::Kind::{Lock, Semaphore};

macro_rules! kind_routes {
    ($kind:expr, $get:ident, $renew:ident, $release:ident, $by_request:ident, $name:ident, $check:ident) => {
        pub(crate) async fn $get(
            State(state): State<SharedState>,
            ClientAuth(principal): ClientAuth,
            path: PathArgs,
        ) -> Result<Json<proto::Hold>, ApiError> {
            get_hold(state, principal, path, $kind).await
        }

        pub(crate) async fn $renew(
            State(state): State<SharedState>,
            ClientAuth(principal): ClientAuth,
            path: PathArgs,
            JsonBody(body): JsonBody<proto::Renew>,
        ) -> Result<Json<proto::Hold>, ApiError> {
            renew(state, principal, path, $kind, body).await
        }

        pub(crate) async fn $release(
            State(state): State<SharedState>,
            ClientAuth(principal): ClientAuth,
            path: PathArgs,
        ) -> Result<StatusCode, ApiError> {
            release_hold(state, principal, path, $kind).await
        }

        pub(crate) async fn $by_request(
            State(state): State<SharedState>,
            ClientAuth(principal): ClientAuth,
            path: PathArgs,
            QueryArgs(query): QueryArgs<ByRequest>,
        ) -> Result<StatusCode, ApiError> {
            release_by_request(state, principal, path, query).await
        }

        pub(crate) async fn $name(
            State(state): State<SharedState>,
            ClientAuth(principal): ClientAuth,
            path: PathArgs,
        ) -> Result<Json<proto::NameState>, ApiError> {
            name_state(state, principal, path, $kind).await
        }

        pub(crate) async fn $check(
            State(state): State<SharedState>,
            ClientAuth(principal): ClientAuth,
            path: PathArgs,
            JsonBody(body): JsonBody<proto::CheckRequest>,
        ) -> Result<Json<proto::CheckResponse>, ApiError> {
            check(state, principal, path, body).await
        }
    };
}

kind_routes!(
    Lock,
    get_lock_hold,
    renew_lock_hold,
    release_lock_hold,
    release_lock_by_request,
    lock_name,
    check_lock
);
kind_routes!(
    Semaphore,
    get_semaphore_hold,
    renew_semaphore_hold,
    release_semaphore_hold,
    release_semaphore_by_request,
    semaphore_name,
    check_semaphore
);
