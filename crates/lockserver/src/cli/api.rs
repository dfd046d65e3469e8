//! Plain HTTP calls to the native API for `locks`, `release` and `status`: the base URL, the
//! right credential per route, and error bodies turned into clear messages.

use std::time::Duration;

use lockserver_proto::{ErrorBody, ErrorCode};
use serde_json::Value;

use super::{AdminArgs, CliError, ServerArgs};

/// How long one call may take (none of these routes waits on a lock).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which secret a route wants.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Credential {
    /// The health routes: none.
    None,
    /// Locks, semaphores, cluster: the client secret.
    Client,
    /// `/v1/admin/...`: the admin secret (falling back to the client secret).
    Admin,
}

#[derive(Debug)]
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    secret: Option<String>,
    admin_secret: Option<String>,
}

/// One answer: its status and body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) text: String,
}

impl Reply {
    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as `T`; a body that does not fit is a server error.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, CliError> {
        serde_json::from_str(&self.text).map_err(|err| {
            CliError::error(format!("{what}: unexpected answer from the server ({err})"))
        })
    }

    /// The error code of an API error body, if it has one.
    pub(crate) fn code(&self) -> Option<ErrorCode> {
        serde_json::from_str::<ErrorBody>(&self.text).ok().map(|body| body.error.code)
    }

    /// The server's own words: the error body's message, or the status and raw text.
    pub(crate) fn message(&self) -> String {
        match serde_json::from_str::<ErrorBody>(&self.text) {
            Ok(body) => format!("{} ({})", body.error.message, body.error.code),
            Err(_) => {
                let text = self.text.trim();
                if text.is_empty() {
                    format!("HTTP {}", self.status)
                } else {
                    format!("HTTP {}: {text}", self.status)
                }
            }
        }
    }
}

impl Api {
    pub(crate) fn new(server: &ServerArgs, admin: Option<&AdminArgs>) -> Result<Api, CliError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // The `lock` command's WebSocket never goes through a proxy; neither do these.
            .no_proxy()
            .build()
            .map_err(|err| CliError::error(format!("cannot set up HTTP: {err}")))?;
        Ok(Api {
            http,
            base: server.base().to_string(),
            secret: server.secret().map(str::to_string),
            admin_secret: admin.and_then(|admin| admin.secret(server)).map(str::to_string),
        })
    }

    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    pub(crate) async fn get(
        &self,
        path: &str,
        query: &[(&str, &str)],
        credential: Credential,
    ) -> Result<Reply, CliError> {
        self.send(reqwest::Method::GET, path, query, credential).await
    }

    pub(crate) async fn delete(
        &self,
        path: &str,
        query: &[(&str, &str)],
        credential: Credential,
    ) -> Result<Reply, CliError> {
        self.send(reqwest::Method::DELETE, path, query, credential).await
    }

    /// Sends one request. A failure to get an answer is an error (exit 2) that says whether
    /// the request may have taken effect.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        credential: Credential,
    ) -> Result<Reply, CliError> {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base));
        if !query.is_empty() {
            request = request.query(query);
        }
        let secret = match credential {
            Credential::None => None,
            Credential::Client => self.secret.as_deref(),
            Credential::Admin => self.admin_secret.as_deref(),
        };
        if let Some(secret) = secret {
            request = request.bearer_auth(secret);
        }
        let unreachable = |err: reqwest::Error| {
            let unknown = method != reqwest::Method::GET && !err.is_connect() && !err.is_builder();
            let outcome = if unknown { " (the outcome is unknown)" } else { "" };
            CliError::error(format!(
                "cannot reach the server at {}{outcome}: {}",
                self.base,
                chain(&err)
            ))
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(unreachable)?;
        Ok(Reply { status, text })
    }

    /// The error for an answer the caller did not expect; `what` says what was being done.
    pub(crate) fn refused(&self, what: &str, reply: &Reply, credential: Credential) -> CliError {
        let auth = matches!(reply.status, 401 | 403)
            || matches!(reply.code(), Some(ErrorCode::Unauthorized | ErrorCode::Forbidden));
        let message = match (auth, credential) {
            (true, Credential::Admin) => format!(
                "{what} needs the admin secret (--admin-secret or LOCKSERVER_ADMIN_SECRET): {}",
                reply.message()
            ),
            (true, _) => format!(
                "{what}: not authorized; give the client secret (--secret or LOCKSERVER_SECRET): \
                 {}",
                reply.message()
            ),
            (false, _) => format!("{what}: {}", reply.message()),
        };
        CliError::error(message)
    }
}

/// An error with its causes (`reqwest`'s own message leaves out "connection refused").
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A JSON value for a human: strings without quotes, `-` for null.
pub(crate) fn plain(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}
