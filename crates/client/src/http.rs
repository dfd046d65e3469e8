//! The HTTP fallback transport: long-poll acquires, a TTL per hold renewed in the background,
//! release by id. For networks that do not pass WebSocket.
//!
//! Every acquire carries a `request_id`. A long wait is a chain of long polls (each at most a
//! minute) re-issued with the same `request_id`. When the outcome of a request is unknown (the
//! connection broke, or the caller dropped the future), the client releases by `request_id`,
//! which frees the hold or withdraws the waiter the request may have created.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lockserver_proto::{
    AcquireLock, AcquireSemaphore, CheckResponse, ErrorBody, ErrorCode, Hold, Kind,
};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::StatusCode;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::client::{millis_up, refusal, request_id, Settings, Spec};
use crate::error::LockError;
use crate::handle::{LostReason, LostSender, LostSignal};

/// A name is one path segment: everything but the unreserved characters is encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The longest single long poll; longer waits re-issue with the same `request_id`.
const POLL_CHUNK: Duration = Duration::from_secs(60);

/// A name (or hold id) as exactly one percent-encoded path segment (everything but the RFC 3986
/// unreserved characters is encoded), as the API's routes take it.
pub fn encode_segment(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT).to_string()
}

#[derive(Debug)]
pub(crate) struct Http {
    settings: Arc<Settings>,
    client: reqwest::Client,
    /// The renewal task of each live hold.
    renewals: Arc<Mutex<HashMap<String, AbortHandle>>>,
}

fn collection(kind: Kind) -> &'static str {
    match kind {
        Kind::Lock => "locks",
        Kind::Semaphore => "semaphores",
    }
}

impl Http {
    pub(crate) fn new(settings: Arc<Settings>) -> Result<Http, LockError> {
        let client =
            reqwest::Client::builder().connect_timeout(settings.connect_timeout).build().map_err(
                |err| LockError::InvalidArgument(format!("cannot build the client: {err}")),
            )?;
        Ok(Http { settings, client, renewals: Arc::default() })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}{path}", self.settings.base());
        let builder = self.client.request(method, url);
        match &self.settings.secret {
            Some(secret) => builder.bearer_auth(secret),
            None => builder,
        }
    }

    /// Sends a request built by `make`, following leader hints (bounded). Returns the status
    /// and body of the final answer.
    async fn send(
        &self,
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<(StatusCode, Vec<u8>), LockError> {
        let mut hops = 0;
        loop {
            let response = make().send().await.map_err(LockError::connection)?;
            let status = response.status();
            let body = response.bytes().await.map_err(LockError::connection)?.to_vec();
            if status == StatusCode::SERVICE_UNAVAILABLE && hops < self.settings.max_redirects {
                if let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(&body) {
                    if let (ErrorCode::NotLeader, Some(leader)) = (error.code, &error.leader) {
                        hops += 1;
                        self.settings.follow_leader(leader);
                        continue;
                    }
                }
            }
            return Ok((status, body));
        }
    }

    pub(crate) async fn acquire(
        &self,
        spec: &Spec,
        timeout: Option<Duration>,
    ) -> Result<(Hold, LostSignal), LockError> {
        let request_id = request_id();
        let path = format!("/v1/{}/{}", collection(spec.kind), encode_segment(&spec.name));
        let ttl = spec.ttl.unwrap_or(self.settings.hold_ttl);
        let deadline = timeout.map(|t| Instant::now() + t);
        // If this future is dropped mid-request, give back what the request may have made.
        let mut cleanup = ReleaseByRequest {
            http: self.clone_light(),
            path: path.clone(),
            request_id: request_id.clone(),
            armed: true,
        };
        loop {
            let wait = match deadline {
                None => POLL_CHUNK,
                Some(deadline) => {
                    deadline.saturating_duration_since(Instant::now()).min(POLL_CHUNK)
                }
            };
            let body = self.acquire_body(spec, ttl, wait, &request_id);
            let sent = Instant::now();
            let result = self
                .send(|| {
                    self.request(reqwest::Method::POST, &path)
                        .timeout(wait + self.settings.connect_timeout + Duration::from_secs(5))
                        .json(&body)
                })
                .await;
            let (status, bytes) = match result {
                Ok(answer) => answer,
                Err(error) => {
                    // Outcome unknown: release whatever this request created, then report.
                    cleanup.armed = false;
                    self.release_by_request(&path, &request_id).await;
                    return Err(error);
                }
            };
            if status == StatusCode::CREATED {
                cleanup.armed = false;
                let hold: Hold = serde_json::from_slice(&bytes).map_err(|err| {
                    LockError::connection(format!("unreadable hold from the server: {err}"))
                })?;
                let lost = self.watch(&path, &hold, ttl, sent);
                return Ok((hold, lost));
            }
            let error = serde_json::from_slice::<ErrorBody>(&bytes).ok().map(|body| body.error);
            let code = error.as_ref().map(|e| e.code);
            let more_to_wait = deadline
                .is_none_or(|deadline| Instant::now() + Duration::from_millis(1) < deadline);
            if code == Some(ErrorCode::Timeout) && more_to_wait {
                continue;
            }
            cleanup.armed = false;
            return Err(match error {
                Some(detail) => refusal(Some(detail), timeout),
                None => LockError::Server {
                    code: ErrorCode::Internal,
                    message: format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)),
                },
            });
        }
    }

    fn acquire_body(
        &self,
        spec: &Spec,
        ttl: Duration,
        wait: Duration,
        request_id: &str,
    ) -> serde_json::Value {
        let owner = Some(self.settings.owner.clone());
        let wait_ms = Some(Some(millis_up(wait)));
        let ttl_ms = Some(Some(millis_up(ttl)));
        let lock_delay_ms = spec.lock_delay.map(millis_up);
        let request_id = Some(request_id.to_string());
        let body = match spec.kind {
            Kind::Lock => serde_json::to_value(AcquireLock {
                mode: spec.mode,
                owner,
                wait_ms,
                ttl_ms,
                session: None,
                lock_delay_ms,
                request_id,
            }),
            Kind::Semaphore => serde_json::to_value(AcquireSemaphore {
                limit: spec.limit.unwrap_or(0),
                permits: spec.permits,
                owner,
                wait_ms,
                ttl_ms,
                session: None,
                lock_delay_ms,
                request_id,
            }),
        };
        body.expect("acquire bodies serialize")
    }

    /// Starts the renewal of a granted hold and returns its lost signal. The local deadline is
    /// the send time of the last successful renewal (or of the acquire) + TTL − (round trip +
    /// TTL × drift + margin).
    fn watch(&self, path: &str, hold: &Hold, ttl: Duration, sent: Instant) -> LostSignal {
        let (lost_tx, lost) = LostSignal::pair();
        let url_path = format!("{path}/{}", hold.hold_id);
        let http = self.clone_light();
        let hold_id = hold.hold_id.clone();
        let task = tokio::spawn(async move {
            http.renew_loop(&url_path, ttl, sent, lost_tx).await;
        });
        self.renewals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hold_id, task.abort_handle());
        lost
    }

    async fn renew_loop(&self, path: &str, ttl: Duration, mut sent: Instant, lost: LostSender) {
        let settings = &self.settings;
        let safety =
            |round_trip: Duration| round_trip + ttl.mul_f64(settings.drift) + settings.lease_margin;
        let mut deadline = sent + ttl.saturating_sub(safety(Duration::ZERO));
        loop {
            let next = (sent + ttl / 3).min(deadline);
            tokio::time::sleep_until(next).await;
            if Instant::now() >= deadline {
                lost.fire(LostReason::LeaseDeadline);
                return;
            }
            let attempt = Instant::now();
            let result = self
                .send(|| {
                    self.request(reqwest::Method::POST, &format!("{path}/renew"))
                        .timeout(deadline.saturating_duration_since(attempt))
                        .json(&serde_json::json!({}))
                })
                .await;
            match result {
                Ok((StatusCode::OK, _)) => {
                    let round_trip = Instant::now().saturating_duration_since(attempt);
                    deadline = attempt + ttl.saturating_sub(safety(round_trip));
                    sent = attempt;
                }
                Ok((StatusCode::NOT_FOUND, _)) => {
                    lost.fire(LostReason::Expired);
                    return;
                }
                // Anything else: try again soon; the deadline decides.
                _ => sent = attempt,
            }
            if lost.is_lost() {
                return;
            }
        }
    }

    fn stop_renewing(&self, hold_id: &str) {
        if let Some(task) = self.renewals.lock().unwrap_or_else(|e| e.into_inner()).remove(hold_id)
        {
            task.abort();
        }
    }

    fn hold_path(hold: &Hold) -> String {
        format!("/v1/{}/{}/{}", collection(hold.kind), encode_segment(&hold.name), hold.hold_id)
    }

    pub(crate) async fn release(&self, hold: &Hold) -> Result<(), LockError> {
        self.stop_renewing(&hold.hold_id);
        let path = Http::hold_path(hold);
        let (status, bytes) = self.send(|| self.request(reqwest::Method::DELETE, &path)).await?;
        if status == StatusCode::NO_CONTENT {
            return Ok(());
        }
        let error = serde_json::from_slice::<ErrorBody>(&bytes).ok().map(|body| body.error);
        Err(refusal(error, None))
    }

    pub(crate) fn release_later(&self, hold: &Hold) {
        self.stop_renewing(&hold.hold_id);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to run the release on: the hold ends by its TTL.
            tracing::warn!(hold_id = %hold.hold_id, "dropped outside a runtime; the hold ends by its TTL");
            return;
        };
        let http = self.clone_light();
        let path = Http::hold_path(hold);
        runtime.spawn(async move {
            let _ = http.send(|| http.request(reqwest::Method::DELETE, &path)).await;
        });
    }

    async fn release_by_request(&self, path: &str, request_id: &str) {
        let owner = self.settings.owner.clone();
        let _ = self
            .send(|| {
                self.request(reqwest::Method::DELETE, path)
                    .query(&[("request_id", request_id), ("owner", owner.as_str())])
            })
            .await;
    }

    pub(crate) async fn check(&self, name: &str, token: u64) -> Result<bool, LockError> {
        let path = format!("/v1/locks/{}/check", encode_segment(name));
        let (status, bytes) = self
            .send(|| {
                self.request(reqwest::Method::POST, &path)
                    .json(&serde_json::json!({ "token": token }))
            })
            .await?;
        if status == StatusCode::OK {
            let answer: CheckResponse = serde_json::from_slice(&bytes)
                .map_err(|err| LockError::connection(format!("unreadable answer: {err}")))?;
            return Ok(answer.valid);
        }
        let error = serde_json::from_slice::<ErrorBody>(&bytes).ok().map(|body| body.error);
        Err(refusal(error, None))
    }

    /// A copy sharing the connection pool and settings (for background tasks).
    fn clone_light(&self) -> Http {
        Http {
            settings: self.settings.clone(),
            client: self.client.clone(),
            renewals: self.renewals.clone(),
        }
    }
}

/// Releases by `request_id` in the background if the acquire future is dropped mid-request.
struct ReleaseByRequest {
    http: Http,
    path: String,
    request_id: String,
    armed: bool,
}

impl Drop for ReleaseByRequest {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let http = self.http.clone_light();
        let path = std::mem::take(&mut self.path);
        let request_id = std::mem::take(&mut self.request_id);
        runtime.spawn(async move { http.release_by_request(&path, &request_id).await });
    }
}
