//! `GET /v1/session`: the streaming session over WebSocket (API.md "Streaming session").
//!
//! One connection is one session. The connection's task reads frames and runs the session
//! ([`session::Session`]); an [`outbox::Outbox`] task writes replies and events. When the
//! connection drops without a clean close, the same task keeps the session *detached*: its
//! waiters stay queued, its replies and events are buffered, until `hello{session_id}` on
//! another connection takes it over (the [`Registry`] finds its current owner) or it ends.
//!
//! - [`outbox`]: the write queue, write-before ordering of `lost` events, replay on failure.
//! - [`session`]: ops, effects, the attached and detached loops.
//! - this file: the upgrade route, the first request (`hello`: open or resume), the registry.

mod outbox;
mod session;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures_util::StreamExt;
use lockserver_core::{Command, Response as CoreResponse, SessionId};
use lockserver_proto::stream::close;
use lockserver_proto::{StreamOp, StreamReply, StreamRequest};
use tokio::sync::{mpsc, oneshot};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::{shutdown_started, ClientAuth, SharedState};
use outbox::{Out, Outbox};
use session::{Session, SessionSettings};

/// `ttl_ms` of a session whose `hello` gives none (API.md: 2000 on a single node).
const DEFAULT_SESSION_TTL_MS: u64 = 2_000;
/// The WebSocket read buffer (requests are small; a larger one costs a memset per read).
const READ_BUFFER_BYTES: usize = 4096;
/// How much tungstenite gathers before it writes to the socket. Its write buffer keeps the
/// largest capacity it ever reached, which doubling keeps below 2 × (this + the largest
/// frame): within 4 KiB for frames up to 1 KiB, so with the read buffer a connection's buffers stay
/// within 8 KiB. The default, 128 KiB, let one burst of replies leave tens of KiB behind on
/// every connection that had one.
const WRITE_BUFFER_BYTES: usize = 1024;
/// How long a clean end may take to write its last frames and close frame.
const CLOSE_BOUND: Duration = Duration::from_secs(1);

/// The upgrade: authenticated like every client route, then one session per connection.
pub(crate) async fn upgrade(
    State(state): State<SharedState>,
    ClientAuth(principal): ClientAuth,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::invalid(format!(
            "GET /v1/session is a WebSocket endpoint: {}",
            rejection.body_text().to_lowercase()
        ))
    })?;
    let limit = state.config.limits.max_body_bytes;
    Ok(upgrade
        // Small: tungstenite zero-fills its whole read buffer before every read.
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| serve(socket, state, principal)))
}

/// A takeover request: the current owner of a session sends it through the oneshot.
pub(crate) type Takeover = oneshot::Sender<Session>;

/// Who currently runs each session (attached or detached), so a `hello` can take it over.
#[derive(Clone, Debug, Default)]
pub(crate) struct Registry {
    owners: Arc<Mutex<Owners>>,
}

#[derive(Debug, Default)]
struct Owners {
    next_claim: u64,
    by_session: HashMap<SessionId, (u64, mpsc::UnboundedSender<Takeover>)>,
}

/// A registry entry held by the session that owns it; dropping it unregisters.
#[derive(Debug)]
pub(crate) struct Claim {
    registry: Registry,
    session_id: SessionId,
    claim: u64,
    pub(crate) control: mpsc::UnboundedReceiver<Takeover>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut owners = self.registry.lock();
        if owners.by_session.get(&self.session_id).is_some_and(|(claim, _)| *claim == self.claim) {
            owners.by_session.remove(&self.session_id);
        }
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Owners> {
        self.owners.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Registers `session_id` as ours, unless it has an owner: then that owner's channel.
    fn claim(&self, session_id: SessionId) -> Result<Claim, mpsc::UnboundedSender<Takeover>> {
        let mut owners = self.lock();
        if let Some((_, owner)) = owners.by_session.get(&session_id) {
            if !owner.is_closed() {
                return Err(owner.clone());
            }
        }
        owners.next_claim += 1;
        let claim = owners.next_claim;
        let (sender, control) = mpsc::unbounded_channel();
        owners.by_session.insert(session_id, (claim, sender));
        Ok(Claim { registry: self.clone(), session_id, claim, control })
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().by_session.len()
    }
}

/// One connection, from the first frame to the end of its part of the session.
async fn serve(socket: WebSocket, state: SharedState, principal: Principal) {
    let (sink, mut stream) = socket.split();
    let outbox = Outbox::start(sink);
    let heartbeat = Duration::from_millis(state.config.ws_heartbeat_ms);
    let shutdown = shutdown_started(state.shutdown.clone());
    tokio::pin!(shutdown);
    // The session is made by the first request: `hello` opens or resumes one; anything else
    // opens one with the defaults and is then served as its first request.
    let (session, first) = loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            () = tokio::time::sleep(2 * heartbeat) => {
                let reason = format!("no request within {} ms", 2 * heartbeat.as_millis());
                outbox.stop(Some(close_frame(close::NO_PONG, &reason)), true, CLOSE_BOUND).await;
                return;
            }
            () = &mut shutdown => {
                outbox.stop(Some(close_frame(close::RESTARTING, "server shutting down")), true,
                    CLOSE_BOUND).await;
                return;
            }
        };
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Binary(_))) => {
                outbox.push(session::error_out(None, session::binary_frame_error()));
                continue;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                outbox.stop(None, true, CLOSE_BOUND).await;
                return;
            }
        };
        let request = match session::parse(text.as_str()) {
            Ok(request) => request,
            Err((id, error)) => {
                outbox.push(session::error_out(id, error));
                continue;
            }
        };
        let settings = SessionSettings::new(&state, principal.clone());
        if request.op == Some(StreamOp::Hello) {
            let id = request.id.unwrap_or_default();
            match hello(&state, settings, &request).await {
                Ok((session, reply)) => {
                    outbox.push(Out::text(session::to_json(&reply)));
                    break (session, None);
                }
                Err(error) => outbox.push(session::error_out(Some(id), error)),
            }
        } else {
            let ttl_ms = default_ttl(&state);
            match open(&state, settings, ttl_ms, 0, String::new()).await {
                Ok(session) => break (session, Some(request)),
                Err(error) => outbox.push(session::error_out(request.id, error)),
            }
        }
    };
    session.run(outbox, stream, first).await;
}

fn default_ttl(state: &SharedState) -> u64 {
    let config = &state.config;
    DEFAULT_SESSION_TTL_MS.clamp(config.min_session_ttl_ms, config.max_session_ttl_ms)
}

pub(crate) fn close_frame(code: u16, reason: &str) -> CloseFrame {
    // A close reason is at most 123 bytes on the wire.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame { code, reason: reason[..end].to_string().into() }
}

/// `hello`: opens a session (`session_id` null or absent) or resumes one.
async fn hello(
    state: &SharedState,
    settings: SessionSettings,
    request: &StreamRequest,
) -> Result<(Session, StreamReply), ApiError> {
    let id = request.id.unwrap_or_default();
    let config = &state.config;
    let grace_ms = request.grace_ms.unwrap_or(0);
    if grace_ms > config.max_session_ttl_ms {
        return Err(ApiError::invalid(format!(
            "grace_ms must be at most {} (the longest session ttl)",
            config.max_session_ttl_ms
        )));
    }
    match &request.session_id {
        Some(Some(text)) => {
            let session_id: SessionId = text.parse()?;
            let mut session = resume(state, settings, session_id).await?;
            if request.grace_ms.is_some() {
                session.set_grace(grace_ms);
            }
            let reply = hello_reply(id, &session, true);
            Ok((session, reply))
        }
        _ => {
            let ttl_ms = match request.ttl_ms {
                None => default_ttl(state),
                Some(Some(ttl))
                    if (config.min_session_ttl_ms..=config.max_session_ttl_ms).contains(&ttl) =>
                {
                    ttl
                }
                Some(_) => {
                    return Err(ApiError::invalid(format!(
                        "session ttl_ms must be between {} and {}",
                        config.min_session_ttl_ms, config.max_session_ttl_ms
                    )))
                }
            };
            let owner = request.owner.clone().unwrap_or_default();
            let session = open(state, settings, ttl_ms, grace_ms, owner).await?;
            let reply = hello_reply(id, &session, false);
            Ok((session, reply))
        }
    }
}

/// The answer to `hello`: the session, its lease (just renewed) and its grace.
fn hello_reply(id: u64, session: &Session, resumed: bool) -> StreamReply {
    StreamReply {
        session_id: Some(session.id().to_string()),
        ttl_ms: Some(session.ttl_ms()),
        grace_ms: Some(session.grace_ms()),
        resumed: Some(resumed),
        lease_ms: Some(session.ttl_ms()),
        ..StreamReply::ok(id)
    }
}

/// Opens a new session in the table and registers it.
async fn open(
    state: &SharedState,
    settings: SessionSettings,
    ttl_ms: u64,
    grace_ms: u64,
    owner: String,
) -> Result<Session, ApiError> {
    let session_id = SessionId::from_u128(rand::random::<u128>());
    let owner: Arc<str> = owner.into();
    let command = Command::OpenSession { session_id, ttl_ms, owner: owner.clone() };
    let CoreResponse::Session { .. } = state.node.propose(command).await?? else {
        tracing::error!("open session answered with an unexpected response");
        return Err(ApiError::Internal);
    };
    let claim = state.sessions.claim(session_id).map_err(|_| {
        tracing::error!(%session_id, "a freshly drawn session id is already registered");
        ApiError::Internal
    })?;
    Ok(Session::new(settings, session_id, ttl_ms, grace_ms, owner, claim, Vec::new()))
}

/// Takes over a live session: from the task that runs it, or (after a restart, or for a
/// session opened over HTTP) from the table. Commits a keepalive first: resuming an ended
/// session answers `not_found`.
async fn resume(
    state: &SharedState,
    settings: SessionSettings,
    session_id: SessionId,
) -> Result<Session, ApiError> {
    let gone = || ApiError::not_found("no live session with that id (it has ended)");
    if state.node.keep_alive(session_id).await?.is_none() {
        return Err(gone());
    }
    // The owner may end between our look-up and its answer; then the entry is free.
    for _ in 0..3 {
        match state.sessions.claim(session_id) {
            Ok(claim) => {
                let view =
                    state.node.read(move |table, now| table.session(session_id, now)).await?;
                let view = view.ok_or_else(gone)?;
                let holds = view.holds.iter().map(|hold| hold.hold_id).collect();
                return Ok(Session::new(
                    settings,
                    session_id,
                    view.ttl_ms,
                    0,
                    view.owner.clone(),
                    claim,
                    holds,
                ));
            }
            Err(owner) => {
                let (sender, receiver) = oneshot::channel();
                if owner.send(sender).is_ok() {
                    if let Ok(mut session) = receiver.await {
                        session.adopt(settings);
                        return Ok(session);
                    }
                }
                tokio::task::yield_now().await;
            }
        }
    }
    Err(ApiError::Unavailable("the session is changing hands; retry the hello".into()))
}
