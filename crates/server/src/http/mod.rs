//! The native HTTP API: the router, the shared state and the extractors every route uses.
//!
//! One file per route group: [`locks`] (locks and semaphores), [`sessions`], [`admin`] and
//! [`health`] (`/healthz`, `/readyz`, `/metrics`). Extractors here turn every malformed
//! input (path, query, body) into an `ApiError`, so no rejection of axum's own reaches a client.

pub(crate) mod admin;
pub(crate) mod health;
pub(crate) mod locks;
pub(crate) mod sessions;

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Query, RawPathParams, Request};
use axum::http::request::Parts;
use axum::routing::{delete, get, post};
use axum::Router;
use lockserver_core::{HoldId, HoldView, LockName, SessionId};
use lockserver_node::Node;
use lockserver_proto as proto;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::auth::{Authenticator, Principal};
use crate::config::Config;
use crate::delivery::ConnState;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// Everything a handler needs. One per server, shared by every connection.
#[derive(Debug)]
pub struct AppState {
    pub(crate) node: Node,
    pub(crate) auth: Authenticator,
    pub(crate) config: Config,
    pub(crate) metrics: Metrics,
    /// Flips to `true` once shutdown begins: waiting long polls answer `unavailable` and
    /// `/readyz` turns 503. Sent by `run`, watched by every waiting handler.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// The streaming sessions this node runs, attached or detached.
    pub(crate) sessions: crate::ws::Registry,
}

pub(crate) type SharedState = Arc<AppState>;

impl AppState {
    pub(crate) fn new(node: Node, config: Config, shutdown: watch::Receiver<bool>) -> AppState {
        let auth = Authenticator::new(config.secret.clone(), config.admin_secret.clone());
        AppState {
            node,
            auth,
            config,
            metrics: Metrics::default(),
            shutdown,
            sessions: crate::ws::Registry::default(),
        }
    }

    pub(crate) fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// Resolves once shutdown has begun (never, if the sender is gone without starting it).
pub(crate) async fn shutdown_started(mut shutdown: watch::Receiver<bool>) {
    if shutdown.wait_for(|started| *started).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Every route of API.md's native HTTP API.
pub fn router(state: SharedState) -> Router {
    let mut router = Router::new();
    if state.config.serves("lockserver-http") {
        router = router
            .route("/acquire", post(crate::compat::lockserver_http::acquire))
            .route("/release", post(crate::compat::lockserver_http::release));
    }
    if state.config.serves("rdlm") {
        use crate::compat::rdlm;
        router = router
            .route("/", get(rdlm::welcome))
            .route("/locks/{resource}", post(rdlm::acquire))
            .route("/locks/{resource}/{uid}", get(rdlm::get_lock).delete(rdlm::delete_lock))
            .route("/resources", get(rdlm::list_resources).delete(rdlm::delete_resources))
            .route("/resources/{resource}", get(rdlm::get_resource).delete(rdlm::delete_resource));
    }
    router
        .route(
            "/v1/locks/{name}",
            post(locks::acquire_lock).get(locks::lock_name).delete(locks::release_lock_by_request),
        )
        .route("/v1/locks/{name}/check", post(locks::check_lock))
        .route(
            "/v1/locks/{name}/{hold_id}",
            get(locks::get_lock_hold).delete(locks::release_lock_hold),
        )
        .route("/v1/locks/{name}/{hold_id}/renew", post(locks::renew_lock_hold))
        .route(
            "/v1/semaphores/{name}",
            post(locks::acquire_semaphore)
                .get(locks::semaphore_name)
                .delete(locks::release_semaphore_by_request),
        )
        .route("/v1/semaphores/{name}/check", post(locks::check_semaphore))
        .route(
            "/v1/semaphores/{name}/{hold_id}",
            get(locks::get_semaphore_hold).delete(locks::release_semaphore_hold),
        )
        .route("/v1/semaphores/{name}/{hold_id}/renew", post(locks::renew_semaphore_hold))
        .route("/v1/session", get(crate::ws::upgrade))
        .route("/v1/sessions", post(sessions::create))
        .route("/v1/sessions/{session_id}", get(sessions::show).delete(sessions::close))
        .route("/v1/sessions/{session_id}/keepalive", post(sessions::keepalive))
        .route("/v1/admin/locks", get(admin::list_locks))
        .route("/v1/admin/locks/{name}", delete(admin::release_name))
        .route("/v1/admin/holds/{hold_id}", delete(admin::release_hold))
        .route("/v1/admin/sessions", get(admin::list_sessions))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
}

// ----- extractors ---------------------------------------------------------------------------

/// A client-route caller (locks, semaphores, sessions).
pub(crate) struct ClientAuth(pub(crate) Principal);

impl FromRequestParts<SharedState> for ClientAuth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, ApiError> {
        state.auth.client(&parts.headers).map(ClientAuth)
    }
}

/// An admin-route caller.
pub(crate) struct AdminAuth(pub(crate) Principal);

impl FromRequestParts<SharedState> for AdminAuth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &SharedState) -> Result<Self, ApiError> {
        state.auth.admin(&parts.headers).map(AdminAuth)
    }
}

/// The path's parameters, percent-decoded; each typed accessor validates its own.
pub(crate) struct PathArgs(RawPathParams);

impl<S: Send + Sync> FromRequestParts<S> for PathArgs {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        RawPathParams::from_request_parts(parts, state)
            .await
            .map(PathArgs)
            .map_err(|_| ApiError::invalid("the path is not valid percent-encoded UTF-8"))
    }
}

impl PathArgs {
    fn get(&self, key: &str) -> Result<&str, ApiError> {
        self.0
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| value)
            .ok_or(ApiError::Internal)
    }

    /// A parameter as given (percent-decoded), for surfaces with their own rules.
    pub(crate) fn raw(&self, key: &str) -> Option<&str> {
        self.get(key).ok()
    }

    pub(crate) fn name(&self) -> Result<LockName, ApiError> {
        LockName::new(self.get("name")?).map_err(ApiError::from)
    }

    pub(crate) fn hold_id(&self) -> Result<HoldId, ApiError> {
        self.get("hold_id")?.parse().map_err(ApiError::from)
    }

    pub(crate) fn session_id(&self) -> Result<SessionId, ApiError> {
        self.get("session_id")?.parse().map_err(ApiError::from)
    }
}

/// The connection's delivery state (absent when the router is called without our listener).
pub(crate) struct Conn(pub(crate) Option<Arc<ConnState>>);

impl<S: Send + Sync> FromRequestParts<S> for Conn {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Ok(Conn(parts.extensions.get::<Arc<ConnState>>().cloned()))
    }
}

/// A query string, with its errors as `invalid_argument`.
pub(crate) struct QueryArgs<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryArgs<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(value)| QueryArgs(value))
            .map_err(|err| ApiError::invalid(format!("bad query string: {}", err.body_text())))
    }
}

/// A JSON body (any content type; empty means `{}`), bounded by `--max-body-bytes`.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<SharedState> for JsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(request: Request, state: &SharedState) -> Result<Self, ApiError> {
        let limit = state.config.limits.max_body_bytes;
        let bytes = axum::body::to_bytes(request.into_body(), limit).await.map_err(|err| {
            let too_large = std::error::Error::source(&err)
                .is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::BodyTooLarge { limit }
            } else {
                ApiError::invalid("could not read the request body")
            }
        })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        serde_json::from_slice(text)
            .map(JsonBody)
            .map_err(|err| ApiError::invalid(format!("invalid JSON body: {err}")))
    }
}

// ----- wire conversions ---------------------------------------------------------------------

/// What `percent_encode` leaves alone in a path segment: RFC 3986 unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A name as one percent-encoded path segment.
pub(crate) fn encode_segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, SEGMENT).to_string()
}

pub(crate) fn wire_kind(kind: lockserver_core::Kind) -> proto::Kind {
    match kind {
        lockserver_core::Kind::Lock => proto::Kind::Lock,
        lockserver_core::Kind::Semaphore => proto::Kind::Semaphore,
    }
}

pub(crate) fn wire_mode(mode: lockserver_core::Mode) -> proto::LockMode {
    match mode {
        lockserver_core::Mode::Exclusive => proto::LockMode::Exclusive,
        lockserver_core::Mode::Shared => proto::LockMode::Shared,
    }
}

pub(crate) fn wire_hold(hold: &HoldView) -> proto::Hold {
    proto::Hold {
        name: hold.name.as_str().to_string(),
        hold_id: hold.hold_id.to_string(),
        kind: wire_kind(hold.kind),
        mode: hold.mode.map(wire_mode),
        permits: hold.permits,
        limit: hold.limit,
        owner: hold.owner.to_string(),
        session: hold.session().map(|id| id.to_string()),
        token: hold.token.0,
        granted_at_ms: hold.granted_at_ms,
        expires_in_ms: hold.expires_in_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_encode_as_one_segment() {
        assert_eq!(encode_segment("a/check"), "a%2Fcheck");
        assert_eq!(encode_segment("%"), "%25");
        assert_eq!(encode_segment("db-1_x.y~z"), "db-1_x.y~z");
        assert_eq!(encode_segment("ü"), "%C3%BC");
        assert_eq!(encode_segment("a b?#"), "a%20b%3F%23");
    }
}
