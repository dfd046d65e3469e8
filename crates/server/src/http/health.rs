//! `/healthz` (the process is up), `/readyz` (it can serve writes) and `/metrics`.
//! None needs a credential; none shows a lock name.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::SharedState;
use crate::error::ApiError;

pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub(crate) async fn readyz(State(state): State<SharedState>) -> Result<Json<Value>, ApiError> {
    if state.shutting_down() {
        return Err(ApiError::Unavailable("the server is shutting down".into()));
    }
    // A read goes through the node like every request: it fails when the node cannot serve.
    state.node.read(|_, _| ()).await?;
    Ok(Json(json!({"status": "ready"})))
}

pub(crate) async fn metrics(State(state): State<SharedState>) -> Result<Response, ApiError> {
    let stats = state.node.read(|table, _| table.stats()).await?;
    let mut response =
        state.metrics.render(stats, state.node.stats(), state.sessions.len()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}
