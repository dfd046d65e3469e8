//! The RDLM REST API (PyPI `rdlm` 0.4.2; client `rdlm-py` 0.2.0), COMPAT.md §2: long-poll
//! `POST /locks/{resource}`, HAL+JSON views, admin `/resources` routes with HTTP Basic.
//!
//! Each RDLM lock is an ordinary exclusive hold whose holder is `Rdlm(uid)`, the uid being its
//! hold id; its owner label is the JSON `{"title":…,"wait":…}` the request gave, so the title
//! and wait can be shown back. Better than the original: millisecond timers (`wait: 0` on a
//! busy resource is 408 at once), a waiter whose client disconnects is withdrawn, 400 for bad
//! types, `--public-url`, passwords may contain `:`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use lockserver_core::{
    Acquire, Command, HoldId, HoldView, Holder, LockName, Mode, Origin, ReleaseReason, Via, Wait,
    WaiterView, Want,
};
use serde_json::{json, Value};

use crate::delivery::DeliveryBody;
use crate::error::ApiError;
use crate::http::locks::grant;
use crate::http::{Conn, PathArgs, SharedState};

const HAL: &str = "application/hal+json";

/// A request refused before (or instead of) its work: the answer to send. Boxed, as a response
/// is large; `?` turns an `ApiError` into one.
struct Refused(Box<Response>);

impl From<Response> for Refused {
    fn from(response: Response) -> Refused {
        Refused(Box::new(response))
    }
}

impl From<ApiError> for Refused {
    fn from(err: ApiError) -> Refused {
        text(err.status(), err.to_string()).into()
    }
}

/// The handler's answer, refused or not.
fn answer(result: Result<Response, Refused>) -> Response {
    result.unwrap_or_else(|refused| *refused.0)
}

fn not_found() -> Refused {
    text(StatusCode::NOT_FOUND, "no such lock").into()
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body.into()).into_response()
}

fn hal(value: &Value) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, HAL)], value.to_string()).into_response()
}

fn unauthorized() -> Response {
    let mut response = text(StatusCode::UNAUTHORIZED, "Unauthorized");
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=Restricted"));
    response
}

/// The password of an `Authorization: Basic` header (any user name; `:` allowed in it).
fn basic_password(headers: &HeaderMap) -> Option<Vec<u8>> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let encoded = value.strip_prefix(b"Basic ").or_else(|| value.strip_prefix(b"basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim_ascii()).ok()?;
    let colon = decoded.iter().position(|byte| *byte == b':')?;
    Some(decoded[colon + 1..].to_vec())
}

/// Lock routes: open without a client secret, or with `--rdlm-open`; else the client secret as
/// a header (`X-LOCKSERVER-SECRET`, Bearer) or as a Basic password.
fn admit_client(state: &SharedState, headers: &HeaderMap) -> Result<(), Refused> {
    if !state.auth.client_auth_enabled() || state.config.rdlm_open {
        return Ok(());
    }
    if let Some(password) = basic_password(headers) {
        let ok = state.auth.is_client_secret(&password) || state.auth.is_admin_secret(&password);
        return if ok { Ok(()) } else { Err(unauthorized().into()) };
    }
    state.auth.client(headers).map(|_| ()).map_err(|_| unauthorized().into())
}

/// Admin routes: HTTP Basic, any user, the admin secret as password; 403 without one.
fn admit_admin(state: &SharedState, headers: &HeaderMap) -> Result<(), Refused> {
    if !state.auth.admin_enabled() {
        let refused = text(StatusCode::FORBIDDEN, "admin routes are off: no admin secret is set");
        return Err(refused.into());
    }
    match basic_password(headers) {
        Some(password) if state.auth.is_admin_secret(&password) => Ok(()),
        _ => Err(unauthorized().into()),
    }
}

/// A resource name of these routes: `[a-zA-Z0-9]+`.
fn resource(path: &PathArgs) -> Result<LockName, Refused> {
    let name = path.raw("resource").unwrap_or_default();
    if name.is_empty() || !name.bytes().all(|byte| byte.is_ascii_alphanumeric()) {
        return Err(text(StatusCode::BAD_REQUEST, "resource names are [a-zA-Z0-9]+").into());
    }
    LockName::new(name)
        .map_err(|err| text(StatusCode::BAD_REQUEST, ApiError::from(err).to_string()).into())
}

fn uid(path: &PathArgs) -> Option<HoldId> {
    path.raw("uid")?.parse().ok()
}

/// Seconds as RDLM clients send them: an integer, a float (truncated) or an integer string.
fn seconds(body: &Value, key: &str) -> Result<u64, String> {
    let value = body.get(key).ok_or_else(|| format!("{key} is required"))?;
    let parsed = match value {
        Value::Number(number) => number.as_u64().or_else(|| {
            number.as_f64().filter(|f| f.is_finite() && *f >= 0.0).map(|f| f.trunc() as u64)
        }),
        Value::String(text) => text.trim().parse::<u64>().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| format!("{key} must be a number of seconds, at least 0"))
}

/// The owner label that records an RDLM lock's title, wait and lifetime.
fn label(title: &Value, wait_s: u64, lifetime_s: u64) -> String {
    json!({"title": title, "wait": wait_s, "lifetime": lifetime_s}).to_string()
}

/// Title, wait and lifetime back from the label.
fn unlabel(owner: &str) -> (Value, u64, u64) {
    let value: Value = serde_json::from_str(owner).unwrap_or(Value::Null);
    let seconds = |key: &str| value[key].as_u64().unwrap_or(0);
    (value["title"].clone(), seconds("wait"), seconds("lifetime"))
}

pub(crate) async fn welcome() -> Response {
    text(StatusCode::OK, "Welcome on RDLM (served by Lockserver)\n")
}

pub(crate) async fn acquire(
    State(state): State<SharedState>,
    Conn(conn): Conn,
    path: PathArgs,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let name = match admit_client(&state, &headers).and_then(|()| resource(&path)) {
        Ok(name) => name,
        Err(refused) => return *refused.0,
    };
    let limit = state.config.limits.max_body_bytes;
    let Ok(bytes) = axum::body::to_bytes(request.into_body(), limit).await else {
        return text(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is over {limit} bytes"));
    };
    let body: Value = match serde_json::from_slice(&bytes) {
        Ok(body @ Value::Object(_)) => body,
        _ => return text(StatusCode::BAD_REQUEST, "the body must be a JSON object"),
    };
    let Some(title) = body.get("title").cloned() else {
        return text(StatusCode::BAD_REQUEST, "title is required");
    };
    let (wait_s, lifetime_s) = match (seconds(&body, "wait"), seconds(&body, "lifetime")) {
        (Ok(wait), Ok(lifetime)) => (wait, lifetime),
        (Err(message), _) | (_, Err(message)) => return text(StatusCode::BAD_REQUEST, message),
    };
    let max_wait_s = state.config.max_wait_ms / 1000;
    if wait_s > max_wait_s {
        return text(StatusCode::BAD_REQUEST, format!("wait must be at most {max_wait_s} s"));
    }
    if lifetime_s == 0 || lifetime_s > lockserver_core::command::MAX_DURATION_MS / 1000 {
        return text(StatusCode::BAD_REQUEST, "lifetime must be at least 1 s (and sane)");
    }
    let owner = label(&title, wait_s, lifetime_s);
    if owner.len() > lockserver_core::command::MAX_OWNER_BYTES {
        return text(StatusCode::BAD_REQUEST, "the title is too long");
    }
    let uid = HoldId::from_u128(rand::random::<u128>());
    let command = Acquire {
        hold_id: uid,
        name: name.clone(),
        want: Want::Lock(Mode::Exclusive),
        owner: Arc::from(owner),
        holder: Holder::Rdlm(uid),
        wait: if wait_s == 0 { Wait::Try } else { Wait::For(wait_s * 1000) },
        ttl_ms: Some(lifetime_s * 1000),
        lock_delay_ms: 0,
        request_id: None,
        origin: Origin { boot: state.node.boot(), via: Via::Request(0) },
    };
    match grant(&state, command).await {
        Ok((hold, guard)) => {
            let location =
                format!("{}/locks/{}/{}", base_url(&state, &headers), name, hold.hold_id);
            // The body (the lock's URL) carries the guard: a grant whose answer cannot be
            // written is released.
            let body = DeliveryBody::new(format!("{location}\n").into(), guard, conn);
            let mut response = Response::new(axum::body::Body::new(body));
            *response.status_mut() = StatusCode::CREATED;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            response
        }
        // Withdrawn by an admin (or a DELETE of the waiting lock).
        Err(ApiError::Cancelled(_)) => text(StatusCode::CONFLICT, "the waiting lock was deleted"),
        // Every other refusal is "not acquired within wait".
        Err(
            ApiError::Locked(_)
            | ApiError::Timeout(_)
            | ApiError::Conflict(_)
            | ApiError::LimitExceeded(_),
        ) => text(StatusCode::REQUEST_TIMEOUT, "wait ran out"),
        Err(ApiError::InvalidArgument(message)) => text(StatusCode::BAD_REQUEST, message),
        Err(other) => text(other.status(), other.to_string()),
    }
}

/// `http://host[:port]` for Location: `--public-url`, else the request's Host header.
fn base_url(state: &SharedState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.config.public_url {
        return url.trim_end_matches('/').to_string();
    }
    let host = headers.get(header::HOST).and_then(|host| host.to_str().ok()).unwrap_or("localhost");
    format!("http://{host}")
}

/// An RDLM lock of `name` with this uid, held or waiting.
enum Found {
    Active(HoldView),
    Waiting(WaiterView),
}

async fn find(
    state: &SharedState,
    name: &LockName,
    uid: HoldId,
) -> Result<Option<Found>, ApiError> {
    let name = name.clone();
    let found = state
        .node
        .read(move |table, now| match table.hold(uid, now) {
            Some(hold) => Some(Found::Active(hold)),
            None => table.waiter(uid, now).map(Found::Waiting),
        })
        .await?;
    Ok(found.filter(|found| match found {
        Found::Active(hold) => hold.name == name && hold.holder == Holder::Rdlm(uid),
        Found::Waiting(waiter) => waiter.name == name && waiter.holder == Holder::Rdlm(uid),
    }))
}

fn lock_object(name: &str, found: &Found) -> Value {
    match found {
        Found::Active(hold) => {
            let (title, wait, lifetime) = unlabel(&hold.owner);
            let lifetime_ms = hold.ttl_ms.unwrap_or(lifetime * 1000);
            json!({
                "uid": hold.hold_id.to_string(),
                "title": title,
                "wait": wait,
                "lifetime": lifetime,
                "active": true,
                "active_since": local_time(hold.granted_at_ms),
                "active_expires": local_time(hold.granted_at_ms + lifetime_ms),
                "_links": links(name, hold.hold_id),
            })
        }
        Found::Waiting(waiter) => {
            let (title, wait, lifetime) = unlabel(&waiter.owner);
            json!({
                "uid": waiter.hold_id.to_string(),
                "title": title,
                "wait": wait,
                "lifetime": lifetime,
                "active": false,
                "wait_since": local_time(waiter.since_wall_ms),
                "wait_expires": local_time(waiter.since_wall_ms + wait * 1000),
                "_links": links(name, waiter.hold_id),
            })
        }
    }
}

fn links(name: &str, uid: HoldId) -> Value {
    json!({
        "self": {"href": format!("/locks/{name}/{uid}")},
        "resource": {"href": format!("/resources/{name}")},
    })
}

/// The lock of a lock route: credential, resource, uid, then the lock itself (or 404).
async fn lock_target(
    state: &SharedState,
    path: &PathArgs,
    headers: &HeaderMap,
) -> Result<(LockName, Found), Refused> {
    admit_client(state, headers)?;
    let name = resource(path)?;
    let uid = uid(path).ok_or_else(not_found)?;
    let found = find(state, &name, uid).await?.ok_or_else(not_found)?;
    Ok((name, found))
}

pub(crate) async fn get_lock(
    State(state): State<SharedState>,
    path: PathArgs,
    headers: HeaderMap,
) -> Response {
    answer(
        lock_target(&state, &path, &headers)
            .await
            .map(|(name, found)| hal(&lock_object(name.as_str(), &found))),
    )
}

pub(crate) async fn delete_lock(
    State(state): State<SharedState>,
    path: PathArgs,
    headers: HeaderMap,
) -> Response {
    answer(
        async {
            let (_, found) = lock_target(&state, &path, &headers).await?;
            let command =
                Command::Release { hold_id: uid_of(&found), reason: ReleaseReason::Client };
            match state.node.propose(command).await.map_err(ApiError::from)? {
                Ok(_) => Ok(StatusCode::NO_CONTENT.into_response()),
                Err(lockserver_core::CoreError::NotFound(_)) => Err(not_found()),
                Err(err) => Err(ApiError::from(err).into()),
            }
        }
        .await,
    )
}

/// Every RDLM lock (active first, then waiters in FIFO order) of each name with one.
async fn rdlm_names(
    state: &SharedState,
    only: Option<LockName>,
) -> Result<Vec<(String, Vec<Found>)>, ApiError> {
    state
        .node
        .read(move |table, now| {
            let views = match &only {
                Some(name) => vec![table.name_view(name, now)],
                None => {
                    let mut all = Vec::new();
                    let mut after: Option<String> = None;
                    loop {
                        let (page, next) = table.list("", after.as_deref(), 1024, now);
                        all.extend(page);
                        match next {
                            Some(cursor) => after = Some(cursor),
                            None => break all,
                        }
                    }
                }
            };
            views
                .into_iter()
                .filter_map(|view| {
                    let mut locks: Vec<Found> = view
                        .holders
                        .into_iter()
                        .filter(|hold| matches!(hold.holder, Holder::Rdlm(_)))
                        .map(Found::Active)
                        .collect();
                    locks.extend(
                        view.waiters
                            .into_iter()
                            .filter(|waiter| matches!(waiter.holder, Holder::Rdlm(_)))
                            .map(Found::Waiting),
                    );
                    (!locks.is_empty()).then(|| (view.name.as_str().to_string(), locks))
                })
                .collect()
        })
        .await
        .map_err(ApiError::from)
}

fn uid_of(found: &Found) -> HoldId {
    match found {
        Found::Active(hold) => hold.hold_id,
        Found::Waiting(waiter) => waiter.hold_id,
    }
}

/// Releases the given locks (waiters answer 409); returns how many were still there. Waiters
/// go first, last in line first, so no release of a holder hands the lock to one of them.
async fn delete_all(state: &SharedState, locks: &[Found]) -> Result<usize, ApiError> {
    let mut deleted = 0;
    for found in locks.iter().rev() {
        let command = Command::Release { hold_id: uid_of(found), reason: ReleaseReason::Client };
        match state.node.propose(command).await? {
            Ok(_) => deleted += 1,
            Err(lockserver_core::CoreError::NotFound(_)) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(deleted)
}

pub(crate) async fn list_resources(
    State(state): State<SharedState>,
    headers: HeaderMap,
) -> Response {
    answer(
        async {
            admit_admin(&state, &headers)?;
            let resources: Vec<Value> = rdlm_names(&state, None)
                .await?
                .iter()
                .map(|(name, _)| {
                    let href = format!("/resources/{name}");
                    json!({"name": name, "_links": {"self": {"href": href}}})
                })
                .collect();
            Ok(hal(&json!({
                "_links": {"self": {"href": "/resources"}},
                "_embedded": {"resources": resources},
            })))
        }
        .await,
    )
}

pub(crate) async fn delete_resources(
    State(state): State<SharedState>,
    headers: HeaderMap,
) -> Response {
    answer(
        async {
            admit_admin(&state, &headers)?;
            let names = rdlm_names(&state, None).await?;
            for (_, locks) in &names {
                delete_all(&state, locks).await?;
            }
            tracing::info!(resources = names.len(), "admin deleted every RDLM lock");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        .await,
    )
}

/// An admin route's resource and its RDLM locks.
async fn resource_locks(
    state: &SharedState,
    path: &PathArgs,
    headers: &HeaderMap,
) -> Result<(LockName, Vec<Found>), Refused> {
    admit_admin(state, headers)?;
    let name = resource(path)?;
    let mut names = rdlm_names(state, Some(name.clone())).await?;
    Ok((name, names.pop().map(|(_, locks)| locks).unwrap_or_default()))
}

pub(crate) async fn get_resource(
    State(state): State<SharedState>,
    path: PathArgs,
    headers: HeaderMap,
) -> Response {
    answer(resource_locks(&state, &path, &headers).await.map(|(name, locks)| {
        let mut body = json!({
            "name": name.as_str(),
            "_links": {"self": {"href": format!("/resources/{name}")}},
        });
        if !locks.is_empty() {
            let locks: Vec<Value> =
                locks.iter().map(|found| lock_object(name.as_str(), found)).collect();
            body["_embedded"] = json!({"locks": locks});
        }
        hal(&body)
    }))
}

pub(crate) async fn delete_resource(
    State(state): State<SharedState>,
    path: PathArgs,
    headers: HeaderMap,
) -> Response {
    answer(async {
        let (name, locks) = resource_locks(&state, &path, &headers).await?;
        match delete_all(&state, &locks).await? {
            0 => Ok(text(StatusCode::NOT_FOUND, "no lock on this resource")),
            deleted => {
                tracing::info!(resource = %name, deleted, "admin deleted the RDLM locks of a resource");
                Ok(StatusCode::NO_CONTENT.into_response())
            }
        }
    }
    .await)
}

/// `YYYY-MM-DDTHH:MM:SS.ffffff` in UTC (the original printed server-local time without a zone;
/// clients read the first 19 characters).
fn local_time(unix_ms: u64) -> String {
    let days = (unix_ms / 86_400_000) as i64;
    let ms_of_day = unix_ms % 86_400_000;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (hours, minutes) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60);
    let (secs, millis) = (ms_of_day / 1000 % 60, ms_of_day % 1000);
    format!("{year:04}-{month:02}-{day:02}T{hours:02}:{minutes:02}:{secs:02}.{:06}", millis * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_the_original_did() {
        assert_eq!(local_time(0), "1970-01-01T00:00:00.000000");
        assert_eq!(local_time(1_763_800_000_123), "2025-11-22T08:26:40.123000");
        assert_eq!(local_time(951_782_400_000), "2000-02-29T00:00:00.000000");
    }

    #[test]
    fn seconds_accept_ints_truncated_floats_and_integer_strings() {
        let body = json!({"a": 5, "b": 2.9, "c": "7", "d": -1, "e": "x", "f": null});
        assert_eq!(seconds(&body, "a"), Ok(5));
        assert_eq!(seconds(&body, "b"), Ok(2));
        assert_eq!(seconds(&body, "c"), Ok(7));
        for bad in ["d", "e", "f", "missing"] {
            assert!(seconds(&body, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn basic_passwords_may_contain_colons() {
        let mut headers = HeaderMap::new();
        let encoded = base64::engine::general_purpose::STANDARD.encode("admin:pa:ss");
        headers.insert(header::AUTHORIZATION, format!("Basic {encoded}").parse().unwrap());
        assert_eq!(basic_password(&headers), Some(b"pa:ss".to_vec()));
    }
}
